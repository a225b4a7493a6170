"""`report.md` and `report.html` of a run: the seed's summary plus honest statistics, built once, written together.

`write_reports` is what the loop calls after every iteration; `regenerate` rebuilds both from a run folder
(`tbench report RUN_DIR`). Both measure the run against its baseline (runs.py) and say at the top when it is
significantly worse.
"""

from __future__ import annotations

import os
import re
import traceback
from pathlib import Path
from urllib.parse import quote

from tbench.archivist.proof import learning_markdown, learning_proof
from tbench.fsutil import atomic_write_text
from tbench.models.grading import rate_text
from tbench.models.layout import (
    AGENT_DIR,
    CONFIG_FILE,
    REPORT_HTML,
    REPORT_MD,
    TEST_OUTPUT_FILE,
    TRAJECTORY_FILE,
    TRAJECTORY_PAGE,
    VERIFIER_DIR,
)
from tbench.models.results import TerminalBenchResults, TrialResult
from tbench.models.run import RunConfig
from tbench.models.summary import IterationDelta, RunSummary
from tbench.report.markdown import render_markdown
from tbench.report.runs import load_run_folder, resolve_baseline
from tbench.report.view import MARK, GridRow, ImageLine, Report, TrialView
from tbench.stats.inference import (
    Interval,
    RunStats,
    by_model,
    cell_of,
    compare,
    iteration_stats,
    run_stats,
)
from tbench.stats.summaries import summarize_run

_URL_SAFE = re.compile(r"^[A-Za-z0-9._/-]*$")
_MD_ROWS = 25
"""Longest list report.md shows; report.html has them all."""


def _href(rel: str) -> str:
    return rel if _URL_SAFE.match(rel) else quote(rel)


def _trial_view(r: TrialResult, run_dir: str) -> TrialView:
    """Plain string paths and os.path here: this runs for every trial of the run (8,900 for 100 x 89)."""
    folder = r.trial_dir.rstrip("/")
    cell = cell_of(r)

    def link(rel: str) -> str | None:
        rel = f"{folder}/{rel}"
        return _href(rel) if os.path.exists(f"{run_dir}/{rel}") else None

    # Short: 8,900 of these are in report.html; the error itself is on the trial's page.
    title = f"{r.task_id} · {r.iteration} · {r.status}"
    if r.failure_mode:
        title += f" [{r.failure_mode}]"
    title += f" · {r.duration_ms / 1000:.0f}s"
    return TrialView(
        iteration=r.iteration,
        task_id=r.task_id,
        model=r.model,
        cell=cell,
        mark=MARK[cell],
        title=title,
        duration_s=r.duration_ms / 1000,
        failure_mode=r.failure_mode,
        tokens=r.tokens_used,
        cost_usd=r.cost_usd,
        log=_href(f"{folder}/trial.log"),
        page=link(TRAJECTORY_PAGE),
        tests=link(f"{VERIFIER_DIR}/{TEST_OUTPUT_FILE}"),
        trajectory=link(f"{AGENT_DIR}/{TRAJECTORY_FILE}"),
        agent=link(f"{AGENT_DIR}/"),
    )


def build_report(
    run_dir: Path,
    config: RunConfig,
    summary: RunSummary,
    deltas: list[IterationDelta],
    iterations: list[TerminalBenchResults],
) -> Report:
    trials = [r for it in iterations for r in it.results]
    stats = run_stats(trials)
    columns = sorted({it.iteration for it in iterations})
    col = {i: n for n, i in enumerate(columns)}
    views = [_trial_view(r, str(run_dir)) for r in trials]
    rows: dict[tuple[str, str], GridRow] = {}
    for t in stats.tasks:
        rows[(t.task_id, t.model)] = GridRow(
            t.task_id, t.model, t.passed, t.graded, t.rate, t.flaky, [[] for _ in columns]
        )
    by_iteration: dict[int, list[TrialView]] = {i: [] for i in columns}
    for v in views:
        rows[(v.task_id, v.model)].cells[col[v.iteration]].append(v)
        by_iteration[v.iteration].append(v)

    images: dict[tuple[str, str, str], ImageLine] = {}
    for r in trials:
        if r.images is None:
            continue
        for service, rec in [("main", r.images.main), *r.images.services.items()]:
            key = (r.task_id, service, rec.id)
            if key in images:
                images[key].trials += 1
            else:
                images[key] = ImageLine(r.task_id, service, rec.name, rec.id, rec.base, rec.base_id, 1)

    baseline, note = resolve_baseline(Path(config.project_root), run_id=config.run_id, suite_name=config.suite_name)
    vs_baseline = None
    if baseline is not None and trials:
        vs_baseline = compare(baseline.trials.trials, trials, label_a=baseline.trials.label, label_b=config.run_id)
    first_last = None
    if len(iterations) > 1:
        first, last = iterations[0], iterations[-1]
        first_last = compare(
            first.results, last.results, label_a=f"iteration {first.iteration}", label_b=f"iteration {last.iteration}"
        )
    report = Report(
        run_dir=run_dir,
        config=config,
        summary=summary,
        deltas=deltas,
        stats=stats,
        iterations=columns,
        grid=list(rows.values()),
        trials_by_iteration=by_iteration,
        baseline=baseline,
        baseline_note=note,
        vs_baseline=vs_baseline,
        first_last=first_last,
        learning=learning_markdown(summary.learning),
        images=list(images.values()),
    )
    if report.mixed:
        groups = by_model(trials)
        report.model_stats = {m: run_stats(rs) for m, rs in groups.items()}
        report.model_iterations = {m: iteration_stats(rs, m) for m, rs in groups.items()}
        (first_model, reference), *others = groups.items()
        report.model_comparisons = [compare(reference, rs, label_a=first_model, label_b=m) for m, rs in others]
    return report


# ---------------------------------------------------------------- markdown


def _pct(x: float | None) -> str:
    return rate_text(x)


def _ci(interval: Interval | None) -> str:
    return "—" if interval is None else f"[{interval.low:.1%}, {interval.high:.1%}]"


def _money(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"${x:.{digits}f}"


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:,.0f}"


def render_report_markdown(report: Report) -> str:
    """The seed's report.md with the baseline verdict under the title and a statistics section after it."""
    seed = render_markdown(report.summary, report.deltas)
    title, _, rest = seed.partition("\n")
    kind, sentence = report.headline
    banner = {"bad": "> **⚠ ", "good": "> **", "same": "> ", "none": "> "}[kind]
    banner += sentence + ("**" if kind in ("bad", "good") else "")
    settings = [f"- {line}" for line in report.settings]
    out = [title, "", banner, "", *settings, rest.rstrip("\n"), "", *_stats_markdown(report), ""]
    out += report.learning
    return "\n".join(out)


def _ungraded_line(s: RunStats) -> str:
    """Infra and build errors: counted and shown, never graded (models/grading.py)."""
    o = s.overall
    share = o.infra_errors / o.trials if o.trials else 0.0
    infra = o.infra_errors - o.build_errors
    return (
        f"- Not graded: {o.infra_errors} of {o.trials} trials ({share:.1%}) — {infra} infra error(s), "
        f"{o.build_errors} build error(s) — left out of every pass rate; retried attempts: {s.retries}"
    )


def _stats_markdown(report: Report) -> list[str]:
    s = report.stats
    out = ["## Statistics", ""]
    if s.pass_at_1 is None:
        if s.overall.trials:
            return [*out, _ungraded_line(s), "", "No graded trial: these results say nothing about the agent."]
        return [*out, "No graded trial yet."]
    graded_tasks = sum(1 for t in s.tasks if t.graded)
    out.append(
        f"- pass@1 (mean per-task pass rate): **{s.pass_at_1:.1%}**, 95% CI {_ci(s.pass_at_1_interval)} "
        f"(bootstrap over {graded_tasks} tasks, then trials; {s.overall.graded} graded trials)"
    )
    out.append(_ungraded_line(s))
    if s.infra_tasks:
        out.append("  - by task: " + ", ".join(f"{t} ({n})" for t, n in s.infra_tasks.items()))
    out += [
        "",
        "| iteration | pass rate | 95% Wilson CI | passed/graded | not graded |",
        "|---|---|---|---|---|",
    ]
    out += [
        f"| {i.iteration} | {_pct(i.rate.rate)} | {_ci(i.rate.interval)} | {i.rate.passed}/{i.rate.graded} | "
        f"{i.rate.infra_errors} |"
        for i in s.iterations
    ]
    if s.pass_k:
        out += ["", "| k | pass@k | pass^k | tasks |", "|---|---|---|---|"]
        out += [f"| {p.k} | {p.pass_at_k:.1%} | {p.pass_hat_k:.1%} | {p.tasks} |" for p in s.pass_k]
    out += ["", "### Flaky tasks", ""]
    if s.flaky:
        out += ["| task | model | passed/graded | pass rate |", "|---|---|---|---|"]
        out += [f"| {t.task_id} | {t.model} | {t.passed}/{t.graded} | {_pct(t.rate)} |" for t in s.flaky[:_MD_ROWS]]
        if len(s.flaky) > _MD_ROWS:
            out.append(f"\n{len(s.flaky) - _MD_ROWS} more in {REPORT_HTML}.")
    else:
        out.append("None: every task passed always or never.")
    out += ["", "### Against the baseline", ""]
    if report.vs_baseline is None:
        out.append(report.headline[1])
    else:
        out.append(report.headline[1])
        if report.regressions:
            out += ["", "| regressed task | baseline | this run | change |", "|---|---|---|---|"]
            out += [
                f"| {d.task_id} | {d.a_passed}/{d.a_graded} | {d.b_passed}/{d.b_graded} | {d.diff * 100:+.0f} pp |"
                for d in report.regressions[:_MD_ROWS]
            ]
            if len(report.regressions) > _MD_ROWS:
                out.append(f"\n{len(report.regressions) - _MD_ROWS} more in {REPORT_HTML}.")
    if report.first_last is not None:
        out += ["", "### First against last iteration", "", report.first_last.sentence() + "."]
    c = s.cost
    out += [
        "",
        "### Tokens and cost",
        "",
        "| | total | per trial | per pass |",
        "|---|---|---|---|",
        f"| tokens | {c.tokens:,} | {_num(c.tokens_per_trial)} | {_num(c.tokens_per_pass)} |",
        f"| cost | {_money(c.cost_usd)} | {_money(c.cost_per_trial)} | {_money(c.cost_per_pass)} |",
    ]
    if c.cost_usd is not None and c.cost_known < c.trials:
        out.append(f"\nCost known for {c.cost_known} of {c.trials} trials.")
    if report.mixed:
        out += [
            "",
            "### By model",
            "",
            "| model | trials | pass@1 | 95% CI | infra | tokens | cost |",
            "|---|---|---|---|---|---|---|",
        ]
        for m, ms in report.model_stats.items():
            out.append(
                f"| {m} | {ms.overall.trials} | {_pct(ms.pass_at_1)} | {_ci(ms.pass_at_1_interval)} | "
                f"{ms.overall.infra_errors} | {ms.cost.tokens:,} | {_money(ms.cost.cost_usd)} |"
            )
        out += ["", *(f"- {cmp.sentence()}" for cmp in report.model_comparisons)]
    out += _images_markdown(report)
    out += ["", f"Charts, the full grid and links to every trial's logs: [{REPORT_HTML}]({REPORT_HTML})"]
    return out


def _images_markdown(report: Report) -> list[str]:
    """Which image each task ran in, so a result can be reproduced."""
    if not report.images:
        return []
    out = [
        "",
        "### Images",
        "",
        "| task | service | image | id | base | base id | trials |",
        "|---|---|---|---|---|---|---|",
    ]
    out += [
        f"| {i.task_id} | {i.service} | `{i.name}` | `{i.short(i.id)}` | {f'`{i.base}`' if i.base else '—'} | "
        f"`{i.short(i.base_id)}` | {i.trials} |"
        for i in report.images
    ]
    return out


# ---------------------------------------------------------------- writing


def _write(report: Report) -> None:
    from tbench.report.html import render_html, write_trials_pages  # plotly and jinja2 load only when needed

    write_trials_pages(report)
    atomic_write_text(report.run_dir / REPORT_MD, render_report_markdown(report))
    atomic_write_text(report.run_dir / REPORT_HTML, render_html(report))


def write_reports(
    run_dir: Path, summary: RunSummary, deltas: list[IterationDelta], iterations: list[TerminalBenchResults]
) -> None:
    """Both reports, from the loop. A bug here must not end an overnight run: the seed's report.md is written
    instead, with the error in `report-error.txt`."""
    try:
        config = RunConfig.model_validate_json((run_dir / CONFIG_FILE).read_bytes())
        _write(build_report(run_dir, config, summary, deltas, iterations))
    except Exception:
        atomic_write_text(run_dir / "report-error.txt", traceback.format_exc())
        atomic_write_text(
            run_dir / REPORT_MD,
            render_markdown(summary, deltas) + "\n(statistics and report.html failed: see report-error.txt)\n",
        )
        return
    (run_dir / "report-error.txt").unlink(missing_ok=True)


def regenerate(run_dir: Path) -> Report:
    """`tbench report RUN_DIR`: rebuild both reports from the files (errors propagate as UserError)."""
    run = load_run_folder(run_dir)
    summary = summarize_run(
        run_id=run.config.run_id,
        model=run.config.model,
        status=run.state.status,
        planned=run.config.iterations,
        iterations=run.iterations,
    ).model_copy(update={"outages": run.state.outages})
    summary.learning = learning_proof(run.dir, run.config, run.iterations)
    from tbench.report.pages import write_missing_pages

    write_missing_pages(run.dir, [r for it in run.iterations for r in it.results])
    report = build_report(run.dir, run.config, summary, run.deltas, run.iterations)
    _write(report)
    return report
