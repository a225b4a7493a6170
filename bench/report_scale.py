"""Episode-store queries at 1M trial records, and the report of a 100-iteration x 89-task run.

store   an episodes.jsonl of 11,236 episodes (112 runs x ~100 iterations, 4 models) with 89 trials each
        (1,000,004 trial records) is indexed by the real `EpisodeIndex.sync()`; the trials come from a
        generator instead of 11,236 results.json files (about 1 GB). Then each filtered query the CLI
        makes (rows newest first, limit 50, plus the matching count) is timed. Target < 100 ms.
report  a run folder of 100 iterations x 89 tasks (real results.json, trial folders with a 12-turn
        trajectory each, a baseline run set with baseline.json) is rendered by `tbench report`: report.md and
        report.html (and each iteration's trials.html). Target < 3 s. Each trial's trajectory page is
        written as the loop writes it, at commit, and timed apart.

  python bench/report_scale.py [--trials 1000000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tbench.bench.episode_store import EpisodeStore
from tbench.errors import FailureMode
from tbench.models.common import Tokens
from tbench.models.episode import Episode, EpisodeSummary, episode_status
from tbench.models.results import Summary, TerminalBenchResults, TrialResult
from tbench.models.run import RunConfig, RunState
from tbench.models.trajectory import Step, ToolCallRecord, ToolResultRecord, Trajectory
from tbench.report.pages import write_trajectory_page

TASKS = [f"task-{i:02d}" for i in range(89)]
MODELS = ["claude-code:sonnet", "ollama:qwen2.5-coder:7b", "ollama:llama3.1:8b", "claude-code:haiku"]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
CLI = [sys.executable, "-c", "from tbench.cli.app import main; main()"]
TURNS = 12


def _trajectory() -> str:
    """A plausible tool-loop trajectory: TURNS turns, each a shell call with a few lines of output."""
    steps = [
        Step(
            index=i + 1,
            started_at="2026-01-01T00:00:00.000Z",
            finished_at="2026-01-01T00:00:04.500Z",
            assistant_text=f"Step {i + 1}: checking the build output before changing anything.",
            tool_calls=[ToolCallRecord(id=f"c{i}", name="shell", arguments={"command": f"make test-{i} 2>&1 | tail"})],
            tool_results=[ToolResultRecord(call_id=f"c{i}", name="shell", output="ok\n" * 40, exit_code=0)],
            tokens=Tokens(input=3_000 + 500 * i, output=120),
            model_ms=3_900,
        )
        for i in range(TURNS)
    ]
    return Trajectory(
        agent="ollama", model="ollama:qwen2.5-coder:7b", task_id="task", instruction="Fix the build.",
        system_prompt="You are an autonomous software engineer.", started_at="2026-01-01T00:00:00.000Z",
        stop_reason="completed", turns=TURNS, steps=steps,
    ).model_dump_json()  # fmt: skip


TRAJECTORY = _trajectory()


def iso(t: datetime) -> str:
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


_PROTO = TrialResult(
    trial_id="-",
    run_id="-",
    iteration=1,
    task_id="-",
    task_name="-",
    model="-",
    status="pass",
    duration_ms=0,
    started_at="-",
    finished_at="-",
    trial_dir="-",
)


def trial(rng: random.Random, run_id: str, iteration: int, task: str, model: str, at: datetime) -> TrialResult:
    """One synthetic trial: per-task difficulty, 2% infra errors, some timeouts; tokens and cost."""
    p = (int(task[-2:]) * 37 % 97) / 97
    roll = rng.random()
    status, mode = ("pass", None) if roll < p else ("fail", None)
    if rng.random() < 0.05:
        status, mode = "timeout", FailureMode.AGENT_TIMEOUT
    if rng.random() < 0.02:
        status, mode = "error", FailureMode.INFRA_ERROR
    tokens = rng.randint(2_000, 90_000)
    return _PROTO.model_copy(  # a million model_construct calls would dominate the benchmark's own time
        update={
            "trial_id": f"{run_id}-{iteration:03d}-{task}",
            "run_id": run_id,
            "iteration": iteration,
            "task_id": task,
            "task_name": task,
            "model": model,
            "status": status,
            "failure_mode": mode,
            "duration_ms": rng.randint(20_000, 900_000),
            "tokens_used": tokens,
            "cost_usd": tokens * 3e-6,
            "started_at": iso(at),
            "finished_at": iso(at + timedelta(minutes=5)),
            "trial_dir": f"iterations/{iteration:03d}/{task}",
        }
    )


# ---------------------------------------------------------------- store


def episode_plan(n_trials: int) -> Iterator[tuple[str, int, str, datetime]]:
    """(run_id, iteration, model, finished) for enough episodes of 89 trials to reach n_trials."""
    n_episodes = -(-n_trials // len(TASKS))
    for k in range(n_episodes):
        run, iteration = divmod(k, 100)
        yield f"run-{run:04d}", iteration + 1, MODELS[run % len(MODELS)], T0 + timedelta(minutes=40 * k)


def bench_store(tmp: Path, n_trials: int) -> None:
    gym = tmp / "store" / ".openagents" / "gym"
    gym.mkdir(parents=True)
    lines = []
    for run_id, iteration, model, finished in episode_plan(n_trials):
        summary = Summary(total=89, passed=40, failed=49, pass_rate=40 / 89)
        lines.append(
            Episode(
                id=f"{run_id}-{iteration:03d}",
                run_id=run_id,
                iteration=iteration,
                model=model,
                suite_name="terminal-bench-2",
                suite_version="2.0",
                started_at=iso(finished - timedelta(minutes=40)),
                finished_at=iso(finished),
                status=episode_status(summary.pass_rate),
                summary=EpisodeSummary.of(summary),
                results_path=str(tmp / run_id / "iterations" / f"{iteration:03d}" / "results.json"),
            ).model_dump_json(by_alias=True)
        )
    (gym / "episodes.jsonl").write_text("\n".join(lines) + "\n")

    def trials_of(ep: Episode) -> list[TrialResult]:
        rng = random.Random(ep.id)
        at = datetime.fromisoformat(ep.finished_at) - timedelta(minutes=35)
        return [trial(rng, ep.run_id, ep.iteration, t, ep.model, at) for t in TASKS]

    from tbench.bench.episode_index import EpisodeIndex

    index = EpisodeIndex(gym, EpisodeStore(gym)._lock, trials_of=trials_of)
    t = time.perf_counter()
    added = index.sync()
    build = time.perf_counter() - t
    n = index.count("trials", None)
    size = sum(f.stat().st_size for f in gym.glob("index.sqlite*")) / 1e6
    print(f"store: indexed {added:,} episodes / {n:,} trial records in {build:.1f}s (index {size:.0f} MB)")

    last = datetime.fromisoformat(lines[-1].split('"finishedAt":"')[1].split('"')[0])
    month = iso(last - timedelta(days=30))
    queries: list[tuple[str, Callable[[], Any]]] = [
        ("sync, nothing new", index.sync),
        (
            "episodes --model M --since 30d",
            lambda: (index.episodes(model=MODELS[1], since=month, limit=50), index.count(model=MODELS[1], since=month)),
        ),
        (
            "episodes --run-id R",
            lambda: (index.episodes(run_id="run-0050", limit=50), index.count(run_id="run-0050")),
        ),
        (
            "trials --task T --model M",
            lambda: (
                index.trials(task_id="task-42", model=MODELS[2], limit=50),
                index.count("trials", task_id="task-42", model=MODELS[2]),
            ),
        ),
        (
            "trials --run-id R",
            lambda: (index.trials(run_id="run-0050", limit=50), index.count("trials", run_id="run-0050")),
        ),
        (
            "trials --status error --since 30d",
            lambda: (
                index.trials(status="error", since=month, limit=50),
                index.count("trials", status="error", since=month),
            ),
        ),
        (
            "trials --model M",
            lambda: (index.trials(model=MODELS[1], limit=50), index.count("trials", model=MODELS[1])),
        ),
        (
            "trials --task T --status fail",
            lambda: (
                index.trials(task_id="task-42", status="fail", limit=50),
                index.count("trials", task_id="task-42", status="fail"),
            ),
        ),
        (
            "trials --status fail",
            lambda: (index.trials(status="fail", limit=50), index.count("trials", status="fail")),
        ),
        (
            "trials --model M --status timeout",
            lambda: (
                index.trials(model=MODELS[0], status="timeout", limit=50),
                index.count("trials", model=MODELS[0], status="timeout"),
            ),
        ),
    ]
    worst = 0.0
    for name, query in queries:
        times = []
        for _ in range(7):
            t = time.perf_counter()
            query()
            times.append((time.perf_counter() - t) * 1000)
        worst = max(worst, max(times))
        print(f"  {name:36s} median {statistics.median(times):6.1f} ms   max {max(times):6.1f} ms")
    print(f"store: slowest filtered query {worst:.1f} ms (target < 100 ms): {'OK' if worst < 100 else 'MISSED'}")
    t = time.perf_counter()
    proc = subprocess.run(
        [
            *CLI,
            "episodes",
            "--trials",
            "--task",
            "task-42",
            "--model",
            MODELS[2],
            "--project-root",
            str(gym.parent.parent),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    print(
        f"store: `tbench episodes --trials --task T --model M` as a process: {(time.perf_counter() - t) * 1000:.0f} ms "
        f"(Python start-up and imports included); last line: {proc.stdout.strip().splitlines()[-1]}"
    )


# ---------------------------------------------------------------- report


def write_run(root: Path, run_dir: Path, run_id: str, iterations: int, models: list[str]) -> None:
    rng = random.Random(run_id)
    config = RunConfig(
        run_id=run_id,
        created_at=iso(T0),
        tbench_version="bench",
        suite="/nonexistent/suite",
        suite_name="terminal-bench-2",
        suite_version="2.0",
        task_ids=TASKS,
        model=models[0] if len(models) == 1 else "mixed",
        iterations=iterations,
        timeout_sec=3600,
        output=str(run_dir),
        project_root=str(root),
    )
    state = RunState.new(config)
    state.status = "completed"
    page_sec = 0.0
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
    for it in state.iterations:
        at = T0 + timedelta(hours=it.iteration)
        results = [trial(rng, run_id, it.iteration, t, m, at) for t in TASKS for m in models]
        folder = run_dir / "iterations" / f"{it.iteration:03d}"
        for r in results:
            trial_dir = run_dir / r.trial_dir
            (trial_dir / "verifier").mkdir(parents=True, exist_ok=True)
            (trial_dir / "agent").mkdir(exist_ok=True)
            (trial_dir / "trial.log").write_text("log\n")
            (trial_dir / "verifier" / "test-output.txt").write_text("out\n")
            (trial_dir / "agent" / "trajectory.json").write_text(TRAJECTORY)
        tb = TerminalBenchResults(
            suite_name=config.suite_name,
            suite_version=config.suite_version,
            model=config.model,
            run_id=run_id,
            iteration=it.iteration,
            timestamp=iso(at),
            started_at=iso(at),
            finished_at=iso(at + timedelta(minutes=50)),
            results=[TrialResult.model_validate(r.model_dump()) for r in results],
            summary=Summary.of(results),
        )
        (folder / "results.json").write_text(tb.model_dump_json(indent=2))
        it.status, it.started_at, it.finished_at = "done", tb.started_at, tb.finished_at
        t = time.perf_counter()
        for r in tb.results:  # what the loop does as each trial commits
            write_trajectory_page(run_dir, r)
        page_sec += time.perf_counter() - t
    (run_dir / "state.json").write_text(state.model_dump_json(indent=2))
    pages = list(run_dir.glob("iterations/*/*/trajectory.html"))
    size = sum(p.stat().st_size for p in pages)
    print(
        f"pages ({run_id}): {len(pages):,} trajectory pages of {TURNS} turns, {size / len(pages) / 1e3:.1f} kB each, "
        f"{page_sec / len(pages) * 1000:.1f} ms each to write at commit"
    )


def time_report(root: Path, run_dir: Path, label: str) -> float:
    t = time.perf_counter()
    proc = subprocess.run([*CLI, "report", str(run_dir)], capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(f"tbench report failed: {proc.stderr}")
    from tbench.report.run_report import regenerate

    regenerate(run_dir)  # warm: imports done
    t = time.perf_counter()
    regenerate(run_dir)
    inproc = time.perf_counter() - t
    html = (run_dir / "report.html").stat().st_size / 1e6
    trials = sum(p.stat().st_size for p in run_dir.glob("iterations/*/trials.html")) / 1e6
    print(
        f"report ({label}): `tbench report` {wall:.2f}s as a process (start-up and imports included), "
        f"{inproc:.2f}s in process; report.html {html:.1f} MB (+ {trials:.1f} MB in iterations/*/trials.html)"
    )
    return wall


def bench_report(tmp: Path) -> None:
    root = tmp / "project"
    write_run(root, tmp / "baseline-run", "baseline-run", 5, MODELS[:1])
    subprocess.run(
        [*CLI, "baseline", "set", str(tmp / "baseline-run"), "--project-root", str(root)],
        check=True,
        capture_output=True,
    )
    write_run(root, tmp / "big-run", "big-run", 100, MODELS[:1])
    wall = time_report(root, tmp / "big-run", "100 iterations x 89 tasks, 8,900 trials")
    print(f"report: {wall:.2f}s (target < 3 s): {'OK' if wall < 3 else 'MISSED'}")
    write_run(root, tmp / "mixed-run", "mixed-run", 100, MODELS[:2])
    time_report(root, tmp / "mixed-run", "2 models, 100 iterations x 89 tasks, 17,800 trials")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="write the data here and keep it")
    parser.add_argument("--only", choices=("store", "report"), help="run one of the two parts")
    args = parser.parse_args()
    tmp = args.keep or Path(tempfile.mkdtemp(prefix="tbench-report-scale-"))
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        if args.only != "report":
            bench_store(tmp, args.trials)
        if args.only != "store":
            bench_report(tmp)
    finally:
        if args.keep is None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
