"""`report.md`: what a person reads in the morning."""

from __future__ import annotations

from tbench.models.grading import NO_GRADED_TRIAL, rate_text
from tbench.models.run import Outage
from tbench.models.summary import IterationDelta, RunSummary

_MARK = {"pass": "✓", "fail": "✗", "timeout": "⏱", "error": "!"}


def outage_text(o: Outage) -> str:
    """One outage as both reports print it."""
    length = "still down" if o.duration_sec is None else f"{o.duration_sec:.1f}s"
    how = {"recovered": "server answered again", "max_outage": "run stopped: past the outage limit",
           "stopped": "run stopped during it", None: "ongoing"}[o.ended]  # fmt: skip
    return (
        f"{o.started_at} for {length} ({how}); model {o.model}; {o.probes} probe(s); "
        f"{o.attempts_rerun} failed attempt(s) re-run — cause: {o.cause}"
    )


def outage_lines(summary: RunSummary) -> list[str]:
    if not summary.outages:
        return []
    total = sum(o.duration_sec or 0.0 for o in summary.outages)
    out = [
        "## Model-server outages",
        "",
        f"The run paused {len(summary.outages)} time(s), {total:.1f}s in all: no trial started while the model "
        "server was down; the trials it failed were re-run, not counted.",
        "",
    ]
    out += [f"- {outage_text(o)}" for o in summary.outages]
    return [*out, ""]


def render_markdown(summary: RunSummary, deltas: list[IterationDelta]) -> str:
    s = summary
    out = [
        f"# tbench run `{s.run_id}`",
        "",
        f"- Suite: **{s.suite_name}** {s.suite_version}",
        f"- Model: **{s.model}**",
        f"- Status: {s.status}; iterations {s.iterations_completed}/{s.iterations_planned}",
    ]
    if s.mean_pass_rate is not None:
        out.append(
            f"- Mean pass rate: **{s.mean_pass_rate:.1%}** (best iteration {s.best_iteration}, "
            f"worst {s.worst_iteration})"
        )
    elif s.iterations:
        out.append(f"- Mean pass rate: **{NO_GRADED_TRIAL}** — every trial ended in an infra or build error")
    out += [
        f"- Trials: {s.total_trials} ({s.graded_trials} graded, {s.ungraded_trials} not graded); "
        f"tokens: {s.total_tokens}; cost: ${s.total_cost_usd:.4f}",
        "",
    ]
    out += outage_lines(summary)
    out += [
        "## Iterations",
        "",
        "| # | pass rate | passed/graded | timeout | error | infra | build | avg duration |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for line in s.iterations:
        out.append(
            f"| {line.iteration} | {rate_text(line.pass_rate)} | {line.passed}/{line.graded} | {line.timeout} | "
            f"{line.error} | {line.infra_errors} | {line.build_errors} | {line.avg_duration_ms / 1000:.1f}s |"
        )
    if len(s.by_model) > 1:
        out += [
            "",
            "## By model",
            "",
            "| model | trials | passed | not graded | pass rate | tokens | cost |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, m in s.by_model.items():
            out.append(
                f"| {name} | {m.total} | {m.passed} | {m.infra_errors + m.build_errors} | {rate_text(m.pass_rate)} "
                f"| {m.total_tokens} | ${m.total_cost_usd:.4f} |"
            )
    if deltas:
        out += ["", "## Changes between iterations", ""]
        for d in deltas:
            change = NO_GRADED_TRIAL if d.pass_rate_change is None else f"{d.pass_rate_change:+.1%}"
            out.append(
                f"- {d.previous_iteration} → {d.iteration}: {change}; "
                f"improved: {', '.join(d.improved) or '—'}; regressed: {', '.join(d.regressed) or '—'}"
            )
    if s.tasks:
        iters = [line.iteration for line in s.iterations]
        out += [
            "",
            "## Tasks",
            "",
            "| task | " + " | ".join(str(i) for i in iters) + " | pass rate |",
            "|---|" + "---|" * (len(iters) + 1),
        ]
        for t in s.tasks:
            marks = " | ".join(_MARK[o] for o in t.outcomes)
            out.append(f"| {t.task_id}{' (flaky)' if t.flaky else ''} | {marks} | {rate_text(t.pass_rate, 0)} |")
        out += ["", "✓ pass · ✗ fail · ⏱ timeout · ! error (infra and build errors are not graded: see below)"]
    if s.flaky_tasks:
        out += ["", f"Flaky tasks (passed in some iterations, failed in others): {', '.join(s.flaky_tasks)}"]
    return "\n".join(out) + "\n"
