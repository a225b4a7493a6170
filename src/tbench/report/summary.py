"""`delta.json` (an iteration against the one before) and `summary.json` (the whole run)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from tbench.bench.tasks import ModelSummary, Outcome, TerminalBenchResults, TrialResult, summarize_by_model

Change = Literal["improved", "regressed", "unchanged"]


class TaskDelta(BaseModel):
    task_id: str
    previous: Outcome
    current: Outcome
    change: Change


class IterationDelta(BaseModel):
    """Per-task change on the tasks both iterations ran; infra errors are left out, not counted as changes."""

    iteration: int
    previous_iteration: int
    pass_rate: float
    previous_pass_rate: float
    pass_rate_change: float
    improved: list[str] = Field(default_factory=list)
    regressed: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    excluded_infra: list[str] = Field(default_factory=list)
    tasks: list[TaskDelta] = Field(default_factory=list)


def _graded(r: TrialResult) -> bool:
    return not r.is_infra


def compute_delta(previous: TerminalBenchResults, current: TerminalBenchResults) -> IterationDelta:
    prev = {r.task_id: r for r in previous.results}
    delta = IterationDelta(
        iteration=current.iteration,
        previous_iteration=previous.iteration,
        pass_rate=current.summary.pass_rate,
        previous_pass_rate=previous.summary.pass_rate,
        pass_rate_change=round(current.summary.pass_rate - previous.summary.pass_rate, 6),
    )
    for cur in current.results:
        before = prev.get(cur.task_id)
        if before is None:
            continue
        if not (_graded(cur) and _graded(before)):
            delta.excluded_infra.append(cur.task_id)
            continue
        was, now = before.status == "pass", cur.status == "pass"
        change: Change = "improved" if now and not was else "regressed" if was and not now else "unchanged"
        getattr(delta, change).append(cur.task_id)
        delta.tasks.append(TaskDelta(task_id=cur.task_id, previous=before.status, current=cur.status, change=change))
    return delta


class IterationLine(BaseModel):
    iteration: int
    pass_rate: float
    passed: int
    total: int
    timeout: int
    error: int
    infra_errors: int
    avg_duration_ms: float
    total_tokens: int
    started_at: str
    finished_at: str


class TaskLine(BaseModel):
    task_id: str
    runs: int
    passed: int
    pass_rate: float
    outcomes: list[Outcome]
    """One per iteration, in order."""
    flaky: bool


class RunSummary(BaseModel):
    schema_version: int = 1
    run_id: str
    suite_name: str
    suite_version: str
    model: str
    status: str
    iterations_planned: int
    iterations_completed: int
    iterations: list[IterationLine]
    mean_pass_rate: float | None
    best_iteration: int | None
    worst_iteration: int | None
    total_trials: int
    total_tokens: int
    total_cost_usd: float
    tasks: list[TaskLine]
    flaky_tasks: list[str]
    by_model: dict[str, ModelSummary] = Field(default_factory=dict)
    """Pass rates per model over the whole run (several with --claude-validation-rate)."""


def summarize_run(
    *, run_id: str, model: str, status: str, planned: int, iterations: list[TerminalBenchResults]
) -> RunSummary:
    lines = [
        IterationLine(
            iteration=it.iteration,
            pass_rate=it.summary.pass_rate,
            passed=it.summary.passed,
            total=it.summary.total,
            timeout=it.summary.timeout,
            error=it.summary.error,
            infra_errors=it.summary.infra_errors,
            avg_duration_ms=it.summary.avg_duration_ms,
            total_tokens=it.summary.total_tokens,
            started_at=it.started_at,
            finished_at=it.finished_at,
        )
        for it in iterations
    ]
    per_task: dict[str, list[TrialResult]] = {}
    for it in iterations:
        for r in it.results:
            per_task.setdefault(r.task_id, []).append(r)
    tasks = []
    for task_id, results in per_task.items():
        graded = [r for r in results if _graded(r)]
        passed = sum(r.status == "pass" for r in graded)
        tasks.append(
            TaskLine(
                task_id=task_id,
                runs=len(graded),
                passed=passed,
                pass_rate=round(passed / len(graded), 6) if graded else 0.0,
                outcomes=[r.status for r in results],
                flaky=0 < passed < len(graded),
            )
        )
    rates = [(line.pass_rate, line.iteration) for line in lines]
    first = iterations[0] if iterations else None
    return RunSummary(
        run_id=run_id,
        suite_name=first.suite_name if first else "",
        suite_version=first.suite_version if first else "",
        model=model,
        status=status,
        iterations_planned=planned,
        iterations_completed=len(iterations),
        iterations=lines,
        mean_pass_rate=round(sum(r for r, _ in rates) / len(rates), 6) if rates else None,
        best_iteration=max(rates)[1] if rates else None,
        worst_iteration=min(rates)[1] if rates else None,
        total_trials=sum(len(it.results) for it in iterations),
        total_tokens=sum(it.summary.total_tokens for it in iterations),
        total_cost_usd=round(sum(it.summary.total_cost_usd for it in iterations), 6),
        tasks=tasks,
        flaky_tasks=[t.task_id for t in tasks if t.flaky],
        by_model=summarize_by_model([r for it in iterations for r in it.results]),
    )
