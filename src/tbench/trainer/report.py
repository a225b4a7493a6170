"""`DIR/report.md` and `DIR/report.html` of a training run: the profiles side by side, the task-by-profile matrix,
the verdict in words, racing decisions, the budget, the evolution tree and the analyzer's findings.

Both are laid out from one `TrainerView`, so they say the same thing; the page is self-contained (no script, no
network), escapes everything through jinja2's autoescaping, and shares the run report's look
(report/templates/_page.css.j2). Nothing here computes a verdict: it words the one trainer.json holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape

from tbench.fsutil import atomic_write_text
from tbench.models.grading import rate_text
from tbench.models.layout import REPORT_HTML, REPORT_MD, TRAJECTORY_PAGE, TrialPaths
from tbench.models.results import TrialResult, tally
from tbench.stats.inference import Comparison
from tbench.trainer.analyzer import Analysis, Flip
from tbench.trainer.readout import profile_trials
from tbench.trainer.schema import Candidate, ProfileResult, TrainerResult

__all__ = ["TrainerView", "build_view", "render_trainer_html", "render_trainer_markdown", "write_trainer_reports"]

_URL_SAFE = re.compile(r"^[A-Za-z0-9._/-]*$")
FLIP_MARK = "⇄"
_TESTS = {"mcnemar": "McNemar", "sign": "sign"}
_MD_FLIPS = 10
"""Most flipped tasks report.md details; report.html has them all."""


def _href(rel: str) -> str:
    return rel if _URL_SAFE.match(rel) else quote(rel)


def pp(x: float | None) -> str:
    return "—" if x is None else f"{x * 100:+.1f} pp"


def money(x: float | None, digits: int = 4) -> str:
    return "—" if x is None else f"${x:.{digits}f}"


def interval_text(iv: tuple[float, float] | None, *, points: bool = False) -> str:
    if iv is None:
        return "—"
    if points:
        return f"{iv[0] * 100:+.1f} to {iv[1] * 100:+.1f} pp"
    return f"{rate_text(iv[0])} to {rate_text(iv[1])}"


def p_words(p: float | None) -> str:
    """A p-value as a chance a user can picture."""
    if p is None:
        return "no test was run"
    if p >= 0.5:
        chance = "more often than not"
    elif p >= 0.01:
        chance = f"about 1 time in {max(2, round(1 / p))}"
    else:
        chance = "less than 1 time in 100"
    return (
        f"p = {p:.3g}: if the profiles were equally good, a difference at least this large would turn up by chance "
        f"{chance}"
    )


# ---------------------------------------------------------------------------------------------- the view


@dataclass
class Cell:
    passed: int
    graded: int
    trials: int
    kind: str
    """pass (mostly passes) | fail (mostly fails) | mixed | infra (nothing graded) | none (not run)."""

    @property
    def text(self) -> str:
        if self.trials == 0:
            return "—"
        if self.graded == 0:
            return f"0/0 ({self.trials} not graded)"
        return f"{self.passed}/{self.graded}"


@dataclass
class MatrixRow:
    task_id: str
    cells: list[Cell]
    flip: bool
    split: str = ""
    """`held out` for a task of the held-out split (evolve)."""
    anchor: str = ""
    """The id of the task's flip details in report.html."""


@dataclass
class ProfileColumn:
    p: ProfileResult
    report: str | None
    """The arm run's own report.html, relative to the training folder (None: not written yet)."""
    racing: str

    @property
    def bar(self) -> float:
        return 0.0 if self.p.pass_rate is None else max(0.0, min(1.0, self.p.pass_rate))


@dataclass
class TreeNode:
    c: Candidate
    children: list[TreeNode] = field(default_factory=list)
    best: bool = False
    proposed: bool = False


@dataclass
class TrainerView:
    folder: Path
    result: TrainerResult
    analysis: Analysis | None
    title: str
    verdict_kind: str
    """good (a winner) | neutral (no difference shown) | pending (no verdict yet)."""
    verdict: str
    verdict_details: list[str]
    columns: list[ProfileColumn]
    profile_ids: list[str]
    matrix: list[MatrixRow]
    budget: list[tuple[str, str, str]]
    """(what, spent, budget)."""
    comparisons: list[str]
    tree: list[TreeNode]
    confirmation: str | None
    flips_by_task: dict[str, list[Flip]]


def _verdict(result: TrainerResult) -> tuple[str, str, list[str]]:
    v = result.verdict
    if v is None:
        return (
            "pending",
            f"No verdict yet ({result.status}; {result.rounds_done} of {result.rounds_planned} round(s) run).",
            [],
        )
    other = v.against or "the other profile"
    evidence = f"{pp(v.diff)} in pass rate (95% interval {interval_text(v.interval, points=True)})"
    test = f" by the exact {_TESTS.get(v.test, v.test)} test" if v.test else ""
    details = [f"{p_words(v.p_value)}{test}; a difference is claimed only below {v.alpha:.3g}."]
    if v.sentence:
        details.append(v.sentence)
    if v.winner is not None:
        loser = v.against if v.against != v.winner else v.reference
        return "good", f"{v.winner} is better than {loser}: {evidence}.", details
    includes = ""
    if v.interval is not None and v.interval[0] <= 0 <= v.interval[1]:
        includes = ", which includes no difference at all"
    headline = f"No difference shown between {v.reference} and {other}: {evidence}{includes}."
    details.append(
        "This does not prove them equal: a difference smaller than the interval allows may still be there; "
        "more trials per task narrow it (`tbench train plan` sizes them)."
    )
    return "neutral", headline, details


def _racing_text(p: ProfileResult) -> str:
    if p.stopped_at_round is None:
        return "ran every round"
    return f"stopped after round {p.stopped_at_round}" + (f": {p.stop_reason}" if p.stop_reason else "")


def _cell(trials: list[TrialResult]) -> Cell:
    t = tally(trials)
    if not trials:
        kind = "none"
    elif t.rate is None:
        kind = "infra"
    elif t.rate > 0.5:
        kind = "pass"
    elif t.rate < 0.5:
        kind = "fail"
    else:
        kind = "mixed"
    return Cell(passed=t.passed, graded=t.graded, trials=t.trials, kind=kind)


def _tree(result: TrainerResult) -> list[TreeNode]:
    evo = result.evolution
    if evo is None:
        return []
    nodes = {c.id: TreeNode(c, best=c.id == evo.best, proposed=c.id == evo.proposed) for c in evo.candidates}
    roots: list[TreeNode] = []
    for c in evo.candidates:
        parent = nodes.get(c.parent) if c.parent and c.parent != c.id else None
        (parent.children if parent else roots).append(nodes[c.id])
    return roots


def _comparison_line(c: Comparison, alpha: float) -> str:
    return f"{c.label_b} against {c.label_a} (tested at {alpha:g}): {c.sentence()}"


def build_view(folder: Path, result: TrainerResult, analysis: Analysis | None) -> TrainerView:
    trials = profile_trials(folder, result)
    ids = [p.id for p in result.profiles]
    columns = []
    for p in result.profiles:
        arm_report = folder / p.run_dir / REPORT_HTML
        columns.append(
            ProfileColumn(
                p=p,
                report=_href(f"{p.run_dir.rstrip('/')}/{REPORT_HTML}") if arm_report.is_file() else None,
                racing=_racing_text(p),
            )
        )
    flips: dict[str, list[Flip]] = {}
    for f in analysis.flips if analysis else []:
        flips.setdefault(f.task_id, []).append(f)
    seen = set(result.tasks) | set(result.holdout_tasks)
    extra = sorted({r.task_id for rs in trials.values() for r in rs} - seen)
    holdout = set(result.holdout_tasks)
    matrix: list[MatrixRow] = []
    for task in [*result.tasks, *(t for t in result.holdout_tasks if t not in result.tasks), *extra]:
        cells = [_cell([r for r in trials.get(pid, []) if r.task_id == task]) for pid in ids]
        if all(c.kind == "none" for c in cells):
            continue
        split = "held out" if task in holdout else ""
        matrix.append(MatrixRow(task, cells, flip=task in flips, split=split, anchor=f"flip-{len(matrix) + 1}"))
    b = result.budget
    budget = [
        ("trials", f"{result.spent.trials:,}", "no limit" if b.trials is None else f"{b.trials:,}"),
        ("dollars", money(result.spent.usd, 2), "no limit" if b.usd is None else money(b.usd, 2)),
    ]
    kind, verdict, details = _verdict(result)
    evo = result.evolution
    confirmation = None
    if evo is not None and evo.confirmation is not None:
        confirmation = (
            f"{'Confirmed' if evo.confirmed else 'Not confirmed'} on the held-out tasks: "
            f"{_comparison_line(evo.confirmation.comparison, evo.confirmation.alpha)}"
        )
    elif evo is not None:
        confirmation = "No candidate reached the held-out confirmation."
    return TrainerView(
        folder=folder,
        result=result,
        analysis=analysis,
        title=folder.resolve().name,
        verdict_kind=kind,
        verdict=verdict,
        verdict_details=details,
        columns=columns,
        profile_ids=ids,
        matrix=matrix,
        budget=budget,
        comparisons=[_comparison_line(c.comparison, c.alpha) for c in result.comparisons],
        tree=_tree(result),
        confirmation=confirmation,
        flips_by_task=flips,
    )


def trial_href(folder: Path, rel: str | None) -> str | None:
    """A trial's page where it was written, else its folder (relative to the training folder)."""
    if rel is None:
        return None
    paths = TrialPaths(folder / rel)
    if paths.page.is_file():
        return _href(f"{rel}/{TRAJECTORY_PAGE}")
    return _href(rel) if paths.dir.exists() else None


# ---------------------------------------------------------------------------------------------- report.md


def md(text: object) -> str:
    """Text from files, safe in a markdown table cell: no pipes, no line breaks, no raw HTML."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;").replace("\n", " ")


def _tree_md(nodes: list[TreeNode], depth: int = 0) -> list[str]:
    out = []
    for n in nodes:
        c = n.c
        state = "accepted" if c.accepted else "rejected"
        scores = ""
        if c.score is not None or c.parent_score is not None:
            scores = f"; minibatch {_score(c.parent_score)} → {_score(c.score)}"
        validation = "" if c.validation_rate is None else f"; validation {rate_text(c.validation_rate)}"
        marks = "".join([" **(best)**" if n.best else "", " **(proposed)**" if n.proposed else ""])
        out.append(
            f"{'  ' * depth}- `{md(c.id)}`{marks}: {state} — {md(c.reason)}{scores}{validation}; {c.trials} trial(s)"
        )
        out += _tree_md(n.children, depth + 1)
    return out


def _score(x: float | None) -> str:
    return "—" if x is None else f"{x:g}"


def render_trainer_markdown(view: TrainerView) -> str:
    r = view.result
    plan = r.plan
    out = [
        f"# tbench train `{md(view.title)}`",
        "",
        f"- Strategy: **{plan.strategy}** ({plan.objective}); environment **{md(r.environment)}**; "
        f"model **{md(r.model)}**",
        f"- Status: {r.status}; rounds {r.rounds_done}/{r.rounds_planned}; updated {r.updated_at}"
        + (f"; stopped: {md(r.stop_reason)}" if r.stop_reason else ""),
        f"- Tasks: {len(r.tasks)} compared" + (f", {len(r.holdout_tasks)} held out" if r.holdout_tasks else ""),
        "",
        "## Verdict",
        "",
        f"**{md(view.verdict)}**",
        "",
        *[f"- {md(d)}" for d in view.verdict_details],
    ]
    if r.promoted:
        out += ["", f"Promoted: `{md(r.promoted)}`."]
    out += ["", "## Profiles", "", "| | " + " | ".join(f"`{md(c.p.id)}`" for c in view.columns) + " |"]
    out.append("|---|" + "---|" * len(view.columns))
    rows: list[tuple[str, list[str]]] = [
        ("graded trials", [f"{c.p.graded_trials} of {c.p.trials}" for c in view.columns]),
        ("passed", [str(c.p.passed) for c in view.columns]),
        ("pass rate", [rate_text(c.p.pass_rate) for c in view.columns]),
        ("95% interval", [interval_text(c.p.interval) for c in view.columns]),
        ("cost", [money(c.p.cost_usd) for c in view.columns]),
        ("cost per pass", [money(c.p.cost_per_pass) for c in view.columns]),
        ("tokens", [f"{c.p.tokens:,}" for c in view.columns]),
        ("rounds", [str(c.p.rounds) for c in view.columns]),
        ("racing", [md(c.racing) for c in view.columns]),
        ("run report", [f"[report.html]({c.report})" if c.report else "not written yet" for c in view.columns]),
    ]
    out += [f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows]
    out += ["", "## Budget", "", "| | spent | budget |", "|---|---|---|"]
    out += [f"| {what} | {spent} | {limit} |" for what, spent, limit in view.budget]
    out += ["", "## Tasks by profile", ""]
    if view.matrix:
        out.append("| task | " + " | ".join(f"`{md(p)}`" for p in view.profile_ids) + " |")
        out.append("|---|" + "---|" * len(view.profile_ids))
        for row in view.matrix:
            label = md(row.task_id) + (f" {FLIP_MARK}" if row.flip else "") + (f" ({row.split})" if row.split else "")
            out.append(f"| {label} | " + " | ".join(c.text for c in row.cells) + " |")
        legend = "passed/graded trials per task"
        if any(row.flip for row in view.matrix):
            legend += f"; {FLIP_MARK}: the task flipped (one profile passes it mostly, another fails it mostly)"
        out += ["", legend + "."]
    else:
        out.append("No trial has finished yet.")
    out += ["", "## Racing decisions", ""]
    if r.racing:
        out += ["| round | profile | against | action | diff | p | alpha of this look | reason |",
                "|---|---|---|---|---|---|---|---|"]  # fmt: skip
        for d in r.racing:
            out.append(
                f"| {d.round} | `{md(d.profile)}` | `{md(d.against)}` | {d.action} | {pp(d.diff)} | {d.p_value:.3g} "
                f"| {d.alpha:.3g} | {md(d.reason)} |"
            )
    else:
        out.append("None: racing " + ("made no decision." if plan.racing else "was off for this plan."))
    if view.comparisons:
        out += ["", "## Comparisons", "", *[f"- {md(c)}" for c in view.comparisons]]
    if r.evolution is not None:
        evo = r.evolution
        out += ["", "## Evolution", "", f"Seed `{md(evo.seed_profile)}`, reflection by {md(evo.reflect_model)}.", ""]
        out += _tree_md(view.tree) or ["No candidate yet."]
        if view.confirmation:
            out += ["", md(view.confirmation)]
        if evo.proposed:
            out += ["", f"Proposed for `tbench train promote`: `{md(evo.proposed)}`."]
    out += _analysis_md(view)
    return "\n".join(out) + "\n"


def _analysis_md(view: TrainerView) -> list[str]:
    a = view.analysis
    if a is None:
        return []
    out = ["", "## What the trials say", ""]
    out += [f"- {md(f)}" for f in a.findings] or ["Nothing stands out."]
    for p in a.profiles:
        out += ["", f"### `{md(p.profile)}`", ""]
        if p.failures:
            out += ["| failure | trials | tasks | example |", "|---|---|---|---|"]
            for c in p.failures:
                mode = c.mode if c.graded else f"{c.mode} (not graded)"
                out.append(f"| {mode} | {c.trials} | {md(', '.join(c.tasks))} | {md(c.example) or '—'} |")
        else:
            out.append("No failed trial.")
        if p.weak_categories:
            out += ["", "Weak categories:", ""]
            out += [
                f"- `{md(w.category)}`: {w.passed}/{w.graded} ({rate_text(w.rate)}, at most {rate_text(w.upper)}) "
                f"against {w.others_passed}/{w.others_graded} ({rate_text(w.others_rate)}) on the others"
                for w in p.weak_categories
            ]
        if p.tool_errors:
            out += ["", "| tool | errors | calls | trials | example |", "|---|---|---|---|---|"]
            out += [
                f"| `{md(t.tool)}` | {t.errors} | {t.calls} | {t.trials} | {md(t.example) or '—'} |"
                for t in p.tool_errors
            ]
    if a.flips:
        out += ["", "### Flipped tasks", ""]
        for f in a.flips[:_MD_FLIPS]:
            b, w = f.better, f.worse
            out.append(
                f"- **{md(f.task_id)}** ({md(f.category)}): `{md(b.profile)}` {b.passed}/{b.graded}, "
                f"`{md(w.profile)}` {w.passed}/{w.graded}"
            )
            out += [f"  - {md(d)}" for d in f.differences]
            for s in (b, w):
                if s.last_message:
                    out.append(f"  - last message of `{md(s.profile)}`: “{md(s.last_message)}”")
        if len(a.flips) > _MD_FLIPS:
            out.append(f"- … and {len(a.flips) - _MD_FLIPS} more in report.html")
    return out


# ---------------------------------------------------------------------------------------------- report.html


@cache
def _env() -> Environment:
    env = Environment(loader=PackageLoader("tbench.report", "templates"), autoescape=select_autoescape(["j2"]))
    env.filters["pct"] = lambda x, digits=1: rate_text(x, digits)
    env.filters["pp"] = pp
    env.filters["money"] = money
    env.filters["code"] = _code
    env.filters["interval"] = interval_text
    return env


def _code(text: str) -> Markup:
    """Escape, then show `backticked` names as <code> (sentences shared with report.md)."""
    return Markup(re.sub(r"`([^`]+)`", r"<code>\1</code>", str(escape(text))))


def render_trainer_html(view: TrainerView) -> str:
    return (
        _env()
        .get_template("trainer.html.j2")
        .render(
            v=view, r=view.result, a=view.analysis, flip_mark=FLIP_MARK, trial=lambda rel: trial_href(view.folder, rel)
        )
    )


def write_trainer_reports(folder: Path, result: TrainerResult, analysis: Analysis | None) -> tuple[Path, Path]:
    """Write `DIR/report.md` and `DIR/report.html` (atomically) and return their paths."""
    view = build_view(folder, result, analysis)
    md_path, html_path = folder / REPORT_MD, folder / REPORT_HTML
    atomic_write_text(md_path, render_trainer_markdown(view))
    atomic_write_text(html_path, render_trainer_html(view))
    return md_path, html_path
