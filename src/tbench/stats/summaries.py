"""The figures tbench writes: `delta.json` (an iteration against the latest earlier one that graded anything),
`summary.json` (the whole run) and an episode's summary — all from the grading policy's tally."""

from __future__ import annotations

from collections.abc import Sequence

from tbench.models.episode import Episode, EpisodeModelSummary, EpisodeSummary, episode_status
from tbench.models.grading import Outcome
from tbench.models.results import TerminalBenchResults, TrialResult, summarize_by_model, tally
from tbench.models.summary import Change, IterationDelta, IterationLine, RunSummary, TaskDelta, TaskLine


def delta_baseline(
    earlier: Sequence[TerminalBenchResults], current: TerminalBenchResults
) -> TerminalBenchResults | None:
    """The iteration a delta compares with: the latest earlier one that graded a trial (one that graded nothing
    is never a baseline)."""
    graded = [r for r in earlier if r.iteration < current.iteration and r.summary.pass_rate is not None]
    return max(graded, key=lambda r: r.iteration, default=None)


def compute_delta(previous: TerminalBenchResults, current: TerminalBenchResults) -> IterationDelta:
    prev = {r.task_id: r for r in previous.results}
    now_rate, was_rate = current.summary.pass_rate, previous.summary.pass_rate
    delta = IterationDelta(
        iteration=current.iteration,
        previous_iteration=previous.iteration,
        pass_rate=now_rate,
        previous_pass_rate=was_rate,
        pass_rate_change=round(now_rate - was_rate, 6) if now_rate is not None and was_rate is not None else None,
    )
    for cur in current.results:
        before = prev.get(cur.task_id)
        if before is None:
            continue
        if not (cur.is_graded and before.is_graded):
            delta.excluded_infra.append(cur.task_id)
            continue
        was, now = before.status == "pass", cur.status == "pass"
        change: Change = "improved" if now and not was else "regressed" if was and not now else "unchanged"
        getattr(delta, change).append(cur.task_id)
        delta.tasks.append(TaskDelta(task_id=cur.task_id, previous=before.status, current=cur.status, change=change))
    return delta


def task_lines(results: Sequence[TrialResult]) -> list[TaskLine]:
    """The one per-task line (first-seen order): graded runs, passes, rate, the flaky rule, every outcome."""
    per_task: dict[str, list[TrialResult]] = {}
    for r in results:
        per_task.setdefault(r.task_id, []).append(r)
    lines = []
    for task_id, rs in per_task.items():
        t = tally(rs)
        outcomes: list[Outcome] = [r.status for r in rs]
        lines.append(
            TaskLine(
                task_id=task_id,
                runs=t.graded,
                passed=t.passed,
                pass_rate=t.rate,
                outcomes=outcomes,
                flaky=t.flaky,
                ungraded=t.ungraded,
            )
        )
    return lines


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
            build_errors=it.summary.build_errors,
            graded=it.summary.graded,
            avg_duration_ms=it.summary.avg_duration_ms,
            total_tokens=it.summary.total_tokens,
            started_at=it.started_at,
            finished_at=it.finished_at,
        )
        for it in iterations
    ]
    trials = [r for it in iterations for r in it.results]
    tasks = task_lines(trials)
    rates = [(line.pass_rate, line.iteration) for line in lines if line.pass_rate is not None]
    first = iterations[0] if iterations else None
    whole = tally(trials)
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
        total_trials=len(trials),
        total_tokens=sum(it.summary.total_tokens for it in iterations),
        total_cost_usd=round(sum(it.summary.total_cost_usd for it in iterations), 6),
        tasks=tasks,
        flaky_tasks=[t.task_id for t in tasks if t.flaky],
        by_model=summarize_by_model(trials),
        graded_trials=whole.graded,
        ungraded_trials=whole.ungraded,
    )


def episode_of(results: TerminalBenchResults, *, episode_id: str, results_path: str) -> Episode:
    """The Episode of a finished iteration: its summary is the iteration's own (control arm excluded)."""
    s = results.summary
    return Episode(
        id=episode_id,
        run_id=results.run_id,
        iteration=results.iteration,
        model=results.model,
        suite_name=results.suite_name,
        suite_version=results.suite_version,
        started_at=results.started_at,
        finished_at=results.finished_at,
        status=episode_status(s.pass_rate),
        summary=EpisodeSummary.of(s),
        results_path=results_path,
        by_model={k: EpisodeModelSummary(**v.model_dump()) for k, v in s.by_model.items()},
    )
