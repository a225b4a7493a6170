"""`tbench report`, `compare`, `episodes` and `baseline`: reading finished work, never running any.

Registered on the main app by `register(app)`; bad input raises `UserError`, which the app's wrapper prints
as one line with exit 2.
"""

from __future__ import annotations

import json
import re
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from tbench.errors import UserError
from tbench.models.grading import rate_text

console = Console(highlight=False, width=1000)
"""Wide: long ids and paths are printed whole (a terminal wraps them) rather than cut with an ellipsis."""

ProjectRoot = Annotated[Path | None, typer.Option("--project-root", help="Where .openagents/gym lives [default: cwd]")]
_RELATIVE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_OUTCOMES = ("pass", "fail", "timeout", "error")


def _say(text: str) -> None:
    console.print(text, markup=False, soft_wrap=True)


def parse_since(text: str, now: datetime | None = None) -> str:
    """`7d`, `12h`, `30m`, or an ISO date/time (local time unless it names an offset) → the stored UTC format."""
    now = now or datetime.now(UTC)
    m = _RELATIVE.match(text.strip())
    if m:
        when = now - timedelta(**{_UNITS[m.group(2)]: int(m.group(1))})
    else:
        try:
            when = datetime.fromisoformat(text.strip())
        except ValueError:
            raise UserError(
                f"cannot read {text!r}; give e.g. 7d, 12h, 30m, 2026-11-20 or 2026-11-20T18:00", field="--since"
            ) from None
        if when.tzinfo is None:
            when = when.astimezone()  # naive: local time
    return when.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _gym(project_root: Path | None) -> Path:
    from tbench.models.layout import GYM_DIR

    return (project_root or Path.cwd()).resolve() / GYM_DIR


# ---------------------------------------------------------------- report


def report(run_dir: Annotated[Path, typer.Argument(help="A run folder (holds config.json and state.json)")]) -> None:
    """Rewrite a run's report.md and report.html from its files (statistics, charts, baseline verdict)."""
    from tbench.models.layout import REPORT_HTML, REPORT_MD
    from tbench.report.run_report import regenerate

    built = regenerate(run_dir)
    _say(built.headline[1].replace("`", ""))
    _say(f"Wrote {built.run_dir / REPORT_MD}")
    _say(f"Wrote {built.run_dir / REPORT_HTML}")


# ---------------------------------------------------------------- compare


def compare(
    run_a: Annotated[Path, typer.Argument(help="Run folder, iteration folder (RUN/iterations/003) or results.json")],
    run_b: Annotated[Path, typer.Argument(help="The same kinds; differences are B minus A")],
    resamples: Annotated[int, typer.Option(help="Bootstrap resamples")] = 10_000,
    seed: Annotated[int, typer.Option(help="Bootstrap seed (same inputs and seed, same interval)")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON")] = False,
) -> None:
    """Did B do better than A? Paired on common tasks: bootstrap interval and an exact test; a verdict."""
    from tbench.report.runs import load_trial_set
    from tbench.stats.inference import compare as compare_trials

    if resamples < 100:
        raise UserError(f"must be at least 100 (got {resamples})", field="--resamples")
    a, b = load_trial_set(run_a), load_trial_set(run_b)
    result = compare_trials(a.trials, b.trials, label_a=a.label, label_b=b.label, resamples=resamples, seed=seed)
    if as_json:
        sys.stdout.write(result.model_dump_json(indent=2) + "\n")
        return
    for name, side, infra in (("A", a, result.infra_a), ("B", b, result.infra_b)):
        _say(f"{name}: {side.label} ({side.suite_name}; {len(side.trials)} trials, {infra} infra errors left out)")
    if a.suite_name != b.suite_name:
        _say(f"note: different suites ({a.suite_name} vs {b.suite_name}); only common task ids are compared")
    for what, ids in (("only in A", result.only_a), ("only in B", result.only_b), ("no graded trial", result.ungraded)):
        if ids:
            _say(f"{what} (not compared): {', '.join(ids)}")
    changed = [d for d in result.per_task if d.diff != 0]
    if changed:
        table = Table("task", "A passed", "B passed", "change", box=None, pad_edge=False)
        for d in sorted(changed, key=lambda d: (d.diff, d.task_id)):
            table.add_row(
                d.task_id, f"{d.a_passed}/{d.a_graded}", f"{d.b_passed}/{d.b_graded}", f"{d.diff * 100:+.0f} pp"
            )
        console.print(table)
    _say(f"verdict: {result.verdict}")
    _say(f"  {result.details()}")
    _say(f"  ({result.resamples} paired bootstrap resamples over tasks then trials, seed {result.seed})")


# ---------------------------------------------------------------- episodes


def episodes(
    model: Annotated[str | None, typer.Option(help="Only this model label, e.g. oracle [default: all]")] = None,
    run_id: Annotated[str | None, typer.Option(help="Only this run [default: all]")] = None,
    since: Annotated[
        str | None, typer.Option(help="Finished at or after: 7d, 12h, 30m or an ISO date/time [default: any time]")
    ] = None,
    trials: Annotated[bool, typer.Option("--trials", help="List trials instead of episodes")] = False,
    task: Annotated[str | None, typer.Option(help="Only this task id (lists trials) [default: all]")] = None,
    status: Annotated[
        str | None, typer.Option(help="Only this outcome: pass, fail, timeout, error (lists trials) [default: all]")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first; 0 for all")] = 50,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (episodes as stored in episodes.jsonl)")] = False,
    project_root: ProjectRoot = None,
) -> None:
    """Query the episode store (and the trials behind it) through its index."""
    from tbench.bench.episode_store import EpisodeStore

    if status is not None and status not in _OUTCOMES:
        raise UserError(f"unknown outcome {status!r}; use one of {', '.join(_OUTCOMES)}", field="--status")
    if limit < 0:
        raise UserError(f"must be 0 (all) or more (got {limit})", field="--limit")
    gym = _gym(project_root)
    if not (gym / "episodes.jsonl").is_file():
        raise UserError("no episodes.jsonl here; pass the --project-root your runs used", path=gym)
    since_iso = parse_since(since) if since is not None else None
    index = EpisodeStore(gym).index()
    index.sync()
    cap = limit or None
    if trials or task is not None or status is not None:
        filters = {"model": model, "run_id": run_id, "task_id": task, "status": status, "since": since_iso}
        rows = index.trials(**filters, limit=cap)
        if as_json:
            sys.stdout.write(json.dumps([r.model_dump(mode="json") for r in rows], indent=2) + "\n")
            return
        table = Table("finished", "run", "it", "task", "model", "outcome", "mode", "time", "folder", box=None)
        for r in rows:
            table.add_row(
                r.finished_at[:19], r.run_id, str(r.iteration), r.task_id, r.model, r.status,
                r.failure_mode or "", f"{r.duration_ms / 1000:.1f}s", r.trial_path,
            )  # fmt: skip
        _print(table, len(rows), index.count("trials", **filters), "trial")
        return
    filters = {"model": model, "run_id": run_id, "since": since_iso}
    found = index.episodes(**filters, limit=cap)
    if as_json:
        sys.stdout.write("[" + ",\n".join(e.model_dump_json(by_alias=True) for e in found) + "]\n")
        return
    table = Table("finished", "episode", "model", "suite", "status", "passed", "rate", "ungraded", box=None)
    for e in found:
        s = e.summary
        graded = s.graded if s.graded is not None else s.total - s.infra_errors  # older episodes: no graded count
        table.add_row(
            e.finished_at[:19], e.id, e.model, e.suite_name, e.status, f"{s.passed}/{graded}",
            rate_text(s.pass_rate), str(s.infra_errors + s.build_errors),
        )  # fmt: skip
    _print(table, len(found), index.count("episodes", **filters), "episode")


def _print(table: Table, shown: int, total: int, noun: str) -> None:
    from tbench.bench.episode_index import COUNT_CAP

    if not total:
        _say(f"no {noun} matches")
        return
    console.print(table)
    of = f"more than {COUNT_CAP:,}" if total > COUNT_CAP else f"{total}"
    more = f"; --limit 0 shows all {of}" if shown < total else ""
    _say(f"{shown} of {of} {noun}(s), newest first{more}")


# ---------------------------------------------------------------- baseline

baseline_app = typer.Typer(
    rich_markup_mode=None, help="The run that reports and the overnight verdict measure against.", no_args_is_help=True
)


@baseline_app.command("set")
def baseline_set(
    run_dir: Annotated[Path, typer.Argument(help="A finished (or partly finished) run folder")],
    iteration: Annotated[
        int | None, typer.Option(help="Only this iteration of the run [default: all finished]")
    ] = None,
    project_root: ProjectRoot = None,
) -> None:
    """Make RUN_DIR the baseline (stored in .openagents/gym/baseline.json)."""
    from tbench.report.runs import baseline_path, set_baseline

    root = (project_root or Path.cwd()).resolve()
    choice = set_baseline(root, run_dir, iteration)
    which = f"iteration {choice.iteration}" if choice.iteration is not None else "all finished iterations"
    _say(f"Baseline: {choice.run_id} ({which}; {choice.suite_name}, model {choice.model})")
    _say(f"Stored in {baseline_path(root)}")


@baseline_app.command("show")
def baseline_show(project_root: ProjectRoot = None) -> None:
    """Print the baseline, or what reports use when none is set."""
    from tbench.report.runs import baseline_path, read_baseline

    root = (project_root or Path.cwd()).resolve()
    choice = read_baseline(root)
    if choice is None:
        _say(f"No baseline set ({baseline_path(root)} does not exist).")
        _say("Reports use the latest successful episode of the same suite from another run; set one with:")
        _say("  tbench baseline set RUN_DIR [--iteration N]")
        return
    which = f"iteration {choice.iteration}" if choice.iteration is not None else "all finished iterations"
    _say(f"Baseline: {choice.run_id} ({which})")
    _say(f"  run folder: {choice.run_dir}")
    _say(f"  suite: {choice.suite_name}; model: {choice.model}; set at {choice.set_at}")
    if not Path(choice.run_dir).is_dir():
        _say("  warning: that run folder is gone; reports will say so until you set another baseline")


def register(app: typer.Typer) -> None:
    app.command("report")(report)
    app.command("compare")(compare)
    app.command("episodes")(episodes)
    app.add_typer(baseline_app, name="baseline")
