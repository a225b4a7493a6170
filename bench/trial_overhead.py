"""Per-trial harness overhead against the engine's floor.

Measures, in one process against the engine at DOCKER_HOST, with a warm image:
  raw   — containers.run + exec `true` + remove(force), the least any container trial can cost;
  trial — a whole tbench trial (oracle agent) of a task whose solution and tests do almost nothing:
          container start, solution copy + exec, tests copy + exec, reward copy-out, removal, result.
Prints both means and their ratio (target ≤ 2.0x).

    source scripts/engine.sh && scripts/build-base-image.sh && python bench/trial_overhead.py [--n 20]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import docker

from tbench.agents.oracle import OracleAgent
from tbench.bench.environments import EnvironmentFactory
from tbench.bench.environments.docker import build_image
from tbench.bench.formats import load_suite
from tbench.bench.trial import run_trial
from tbench.models.trial import TrialSpec

BASE = "localhost/tbench-base:bookworm"


def make_task(root: Path) -> Path:
    folder = root / "overhead"
    (folder / "environment").mkdir(parents=True)
    (folder / "solution").mkdir()
    (folder / "tests").mkdir()
    (folder / "task.toml").write_text(
        '[agent]\ntimeout_sec = 60\n[verifier]\ntimeout_sec = 60\n[environment]\nnetwork_mode = "no-network"\n'
    )
    (folder / "instruction.md").write_text("Write ok to /app/out.txt")
    (folder / "environment" / "Dockerfile").write_text(f"FROM {BASE}\nWORKDIR /app\n")
    (folder / "solution" / "solve.sh").write_text("echo ok > /app/out.txt\n")
    (folder / "tests" / "test.sh").write_text("echo 1 > /logs/verifier/reward.txt\n")
    return folder


def raw_cycle(client: docker.DockerClient, image: str) -> float:
    t0 = time.perf_counter()
    c = client.containers.run(
        image,
        entrypoint=["sleep", "infinity"],
        command=[],
        detach=True,
        init=True,
        network_mode="none",
        labels={"tbench.bench": "raw"},
    )
    c.exec_run(["true"])
    c.remove(force=True)
    return time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20, help="cycles of each kind (interleaved)")
    args = ap.parse_args()
    factory = EnvironmentFactory()
    client = factory.client
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (task,) = load_suite(make_task(root)).tasks
        image = build_image(client, task, root / "build.log")  # warm the image: builds are not measured
        raw_cycle(client, image)
        raws, trials, phases = [], [], []
        agent = OracleAgent()
        for i in range(args.n):
            raws.append(raw_cycle(client, image))
            spec = TrialSpec(
                task=task,
                run_id="bench",
                iteration=1,
                trial_id=f"bench-{i}",
                trial_dir=root / "run" / f"t{i}",
                run_dir=root / "run",
                model_label="oracle",
                default_timeout_sec=60,
            )
            t0 = time.perf_counter()
            result = run_trial(spec, agent, factory.create)
            trials.append(time.perf_counter() - t0)
            if result.status != "pass":
                print(f"trial {i} did not pass: {result.status} {result.error_message}", file=sys.stderr)
                return 1
            phases.append(result.timings)
    raw, trial = statistics.mean(raws), statistics.mean(trials)
    print(f"engine: {client.version().get('Version', '?')} ({client.api.base_url}), n={args.n}")
    print(f"raw create+exec+remove cycle: mean {raw * 1000:.0f} ms (median {statistics.median(raws) * 1000:.0f})")
    print(f"tbench oracle trial (warm):   mean {trial * 1000:.0f} ms (median {statistics.median(trials) * 1000:.0f})")
    for name in ("environment_ms", "agent_ms", "verifier_ms", "teardown_ms"):
        values = [getattr(p, name) or 0 for p in phases]
        print(f"  {name:<15} mean {statistics.mean(values):.0f} ms")
    ratio = trial / raw
    print(f"overhead ratio trial/raw: {ratio:.2f}x (target <= 2.0x) {'OK' if ratio <= 2.0 else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
