"""Run folders written from a plan, as `tbench-iterate` lays them out (config.json, state.json,
iterations/NNN/results.json, trial folders with trial.log). For what real agents here cannot produce on
demand: seeded noise, many tasks, infra errors, several models in one run."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

from tbench.errors import FailureMode
from tbench.models.results import Summary, TerminalBenchResults, TrialResult
from tbench.models.run import RunConfig, RunState

Outcome = tuple[str, FailureMode | None]
PASS: Outcome = ("pass", None)
FAIL: Outcome = ("fail", None)
TIMEOUT: Outcome = ("timeout", FailureMode.AGENT_TIMEOUT)
ERROR: Outcome = ("error", FailureMode.AGENT_ERROR)  # graded (an agent crash); build errors are not
INFRA: Outcome = ("error", FailureMode.INFRA_ERROR)


def trial(
    run_id: str,
    iteration: int,
    task: str,
    outcome: Outcome,
    *,
    model: str = "m",
    tokens: int = 0,
    cost: float | None = None,
) -> TrialResult:
    status, mode = outcome
    return TrialResult.model_validate(
        {
            "trial_id": f"{run_id}-{iteration:03d}-{task}",
            "run_id": run_id,
            "iteration": iteration,
            "task_id": task,
            "task_name": task,
            "model": model,
            "status": status,
            "failure_mode": mode,
            "duration_ms": 1000 + 37 * iteration + len(task),
            "tokens_used": tokens,
            "cost_usd": cost,
            "started_at": f"2026-11-20T10:{iteration % 60:02d}:00.000Z",
            "finished_at": f"2026-11-20T10:{iteration % 60:02d}:30.000Z",
            "trial_dir": f"iterations/{iteration:03d}/{task}" + ("" if model == "m" else f"-{model}"),
        }
    )


def write_run(
    run_dir: Path,
    project_root: Path,
    run_id: str,
    trials_of: Callable[[int], list[TrialResult]],
    *,
    iterations: int,
    tasks: list[str],
    model: str = "m",
    suite_name: str = "synthetic",
) -> Path:
    """A completed run whose iteration i holds `trials_of(i)`; each trial folder gets a trial.log."""
    config = RunConfig(
        run_id=run_id,
        created_at="2026-11-20T10:00:00.000Z",
        tbench_version="test",
        suite=str(run_dir / "suite.json"),
        suite_name=suite_name,
        suite_version="1",
        task_ids=tasks,
        model=model,
        iterations=iterations,
        timeout_sec=60,
        output=str(run_dir),
        project_root=str(project_root),
    )
    state = RunState.new(config)
    state.status = "completed"
    run_dir.mkdir(parents=True)
    (run_dir / "config.json").write_text(config.model_dump_json(indent=2))
    for it in state.iterations:
        results = trials_of(it.iteration)
        for r in results:
            (run_dir / r.trial_dir).mkdir(parents=True, exist_ok=True)
            (run_dir / r.trial_dir / "trial.log").write_text(f"{r.trial_id} {r.status}\n")
        tb = TerminalBenchResults(
            suite_name=suite_name,
            suite_version="1",
            model=model,
            run_id=run_id,
            iteration=it.iteration,
            timestamp="2026-11-20T11:00:00.000Z",
            started_at="2026-11-20T10:00:00.000Z",
            finished_at="2026-11-20T11:00:00.000Z",
            results=results,
            summary=Summary.of(results),
        )
        (run_dir / "iterations" / f"{it.iteration:03d}" / "results.json").write_text(tb.model_dump_json())
        it.status = "done"
    (run_dir / "state.json").write_text(state.model_dump_json(indent=2))
    return run_dir


def noisy_run(
    run_dir: Path, project_root: Path, run_id: str, rates: list[float], *, iterations: int, seed: int
) -> Path:
    """Task i passes each trial with probability rates[i], drawn from a seeded generator."""
    rng = random.Random(seed)
    tasks = [f"t{i:02d}" for i in range(len(rates))]

    def trials_of(i: int) -> list[TrialResult]:
        return [trial(run_id, i, t, PASS if rng.random() < p else FAIL) for t, p in zip(tasks, rates, strict=True)]

    return write_run(run_dir, project_root, run_id, trials_of, iterations=iterations, tasks=tasks)
