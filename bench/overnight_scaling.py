"""Phase 2 figures for `tbench-overnight`, measured through the real CLI (worker processes, real engine).

efficiency  agent-bound trials (the oracle sleeps S s; real TB2 agents take minutes) at 4 and 8 workers:
            ideal wall time (tasks x S / workers) divided by the measured wall time of a steady-state
            iteration (targets >= 0.9, >= 0.8); the first iteration's figure, which includes starting
            the worker processes, is printed beside it
rerun       trials re-run after a kill -9 of the orchestrator at a random moment, then --resume
            (target <= number of workers), over several kills
rate        iterations per hour on a 10-task TB2 suite with 4 workers and the oracle agent (target >= 100)

  source scripts/engine.sh && scripts/build-base-image.sh && python bench/overnight_scaling.py
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BASE = "localhost/tbench-base:bookworm"
OVERNIGHT = [sys.executable, "-c", "from tbench.cli.app import overnight_main; overnight_main()"]


def tb2_suite(root: Path, n: int, solve: str) -> Path:
    for i in range(n):
        t = root / f"task{i:02d}"
        (t / "environment").mkdir(parents=True)
        (t / "solution").mkdir()
        (t / "tests").mkdir()
        (t / "task.toml").write_text("[agent]\ntimeout_sec = 300\n[environment]\nmemory_mb = 256\n")
        (t / "instruction.md").write_text("write ok to /app/out.txt")
        (t / "environment" / "Dockerfile").write_text(f"FROM {BASE}\nWORKDIR /app\n")
        (t / "solution" / "solve.sh").write_text(f"{solve}\necho ok > /app/out.txt\n")
        (t / "tests" / "test.sh").write_text(
            'test "$(cat /app/out.txt)" = ok && echo 1 > /logs/verifier/reward.txt '
            "|| echo 0 > /logs/verifier/reward.txt\n"
        )
    return root


def run(args: list[str]) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([*OVERNIGHT, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"tbench-overnight failed: {proc.stderr[-800:]}")
    return time.perf_counter() - t0


def iteration_walls(out: Path) -> list[float]:
    walls = []
    for path in sorted(out.glob("iterations/*/results.json")):
        data = json.loads(path.read_text())
        walls.append(_ts(data["finished_at"]) - _ts(data["started_at"]))
    return walls


def _ts(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def efficiency(tmp: Path, workers: int, sleep: float, rounds: int) -> float:
    """Steady state: the second iteration (the first also pays for starting the worker processes)."""
    n = workers * rounds
    suite = tb2_suite(tmp / f"eff{workers}", n, f"sleep {sleep}")
    out = tmp / f"eff-run{workers}"
    run(
        [
            "--suite",
            str(suite),
            "--model",
            "oracle",
            "--iterations",
            "2",
            "--workers",
            str(workers),
            "--output",
            str(out),
            "--project-root",
            str(tmp),
            "--memory-reserve-mb",
            "512",
        ]
    )
    first, wall = iteration_walls(out)
    ideal = n * sleep / workers
    print(
        f"efficiency @ {workers} workers: {n} trials x {sleep:g}s sleep, ideal {ideal:.1f}s, "
        f"measured {wall:.1f}s (first iteration {first:.1f}s) -> {ideal / wall:.2f} ({ideal / first:.2f})"
    )
    return ideal / wall


def reruns_after_kill(tmp: Path, workers: int, kills: int, seed: int) -> list[int]:
    suite = tb2_suite(tmp / "kill", workers * 3, "sleep 2")
    rng = random.Random(seed)
    counts = []
    for k in range(kills):
        out = tmp / f"kill-run{k}"
        proc = subprocess.Popen(
            [
                *OVERNIGHT,
                "--suite",
                str(suite),
                "--model",
                "oracle",
                "--iterations",
                "1",
                "--workers",
                str(workers),
                "--output",
                str(out),
                "--project-root",
                str(tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(rng.uniform(2.0, 6.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        run(["--resume", str(out / "state.json")])
        state = json.loads((out / "state.json").read_text())
        reran = sum(1 for t in state["iterations"][0]["trials"].values() if t["attempts"] > 1)
        counts.append(reran)
    print(f"trials re-run after kill -9 ({workers} workers, {kills} kills): {counts} (max {max(counts)})")
    return counts


def rate(tmp: Path, iterations: int) -> float:
    suite = tb2_suite(tmp / "rate", 10, "true")
    out = tmp / "rate-run"
    run(
        [
            "--suite",
            str(suite),
            "--model",
            "oracle",
            "--iterations",
            str(iterations),
            "--workers",
            "4",
            "--output",
            str(out),
            "--project-root",
            str(tmp),
            "--memory-reserve-mb",
            "512",
        ]
    )
    walls = iteration_walls(out)
    per_hour = 3600 / (sum(walls) / len(walls))
    print(
        f"iterations per hour (10 TB2 tasks, 4 workers, oracle): mean iteration {sum(walls) / len(walls):.1f}s "
        f"-> {per_hour:.0f}/h"
    )
    return per_hour


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sleep", type=float, default=30.0, help="agent sleep per trial for the efficiency runs")
    ap.add_argument("--rounds", type=int, default=2, help="trials per worker in the efficiency runs")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        e4 = efficiency(tmp, 4, args.sleep, args.rounds)
        e8 = efficiency(tmp, 8, args.sleep, args.rounds)
        counts = reruns_after_kill(tmp, 4, args.kills, seed=5)
        r = rate(tmp, args.iterations)
    ok = e4 >= 0.9 and e8 >= 0.8 and max(counts) <= 4 and r >= 100
    print(
        f"targets: eff4>=0.9 {e4:.2f}, eff8>=0.8 {e8:.2f}, reruns<=4 {max(counts)}, rate>=100 {r:.0f}: "
        f"{'OK' if ok else 'MISSED'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
