"""What a training run's trials say beyond the verdict (`DIR/analysis.json`): per profile, where its failures
cluster (by failure mode, task category and failing tool), which categories are clearly weak, and for each task
that flipped between two profiles, what their trajectories did differently.

Everything is read from the arm runs' own files (results.json, agent/trajectory.json); text taken from them is
redacted and cut short before it is stored, since the report shows it.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError

from tbench.bench.formats import load_suite
from tbench.errors import UserError
from tbench.fsutil import atomic_write_text
from tbench.models.common import Versioned, read_model, utcnow
from tbench.models.layout import ANALYSIS_FILE, RunLayout, TrialPaths
from tbench.models.results import TrialResult, tally
from tbench.models.run import RunConfig
from tbench.models.trajectory import Trajectory
from tbench.secrets import MASK, Redactor
from tbench.stats.inference import wilson
from tbench.trainer.readout import profile_trials
from tbench.trainer.schema import TrainerResult

__all__ = [
    "Analysis",
    "CategoryStat",
    "FailureCluster",
    "Flip",
    "FlipSide",
    "ProfileAnalysis",
    "ToolErrorCluster",
    "WeakCategory",
    "analysis_file",
    "analyze",
    "load_analysis",
    "short_text",
    "write_analysis",
]

UNCATEGORIZED = "uncategorized"
TEST_FAILURE = "test_failure"
"""The cluster of graded trials that ran to the tests' verdict and failed it (no failure mode)."""
EXAMPLE_CHARS = 200
MESSAGE_CHARS = 240
WEAK_GAP = 0.15
"""A weak category passes at least this much less often than the profile's other categories…"""
WEAK_MIN_GRADED = 3
"""…over at least this many graded trials, and its Wilson 95% upper bound is below the others' rate."""
MOST = 0.5
"""A task flipped when one profile passes it more than this share of graded trials and the other less."""
_KEYLIKE = re.compile(
    r"\b(?:sk-(?:ant-)?[A-Za-z0-9_-]{16,}|gh[pousr]_[A-Za-z0-9]{20,}|xox[abp]-[A-Za-z0-9-]{16,}|AKIA[A-Z0-9]{16})"
    r"|(?i:\bbearer\s+)[A-Za-z0-9._~+/=-]{16,}"
)
_SPACE = re.compile(r"\s+")


def analysis_file(folder: Path) -> Path:
    return folder / ANALYSIS_FILE


def write_analysis(folder: Path, analysis: Analysis) -> Path:
    path = analysis_file(folder)
    atomic_write_text(path, analysis.model_dump_json(indent=2))
    return path


def load_analysis(folder: Path) -> Analysis | None:
    """`DIR/analysis.json`, or None where it was not written yet (a wrong file is one line, as every file)."""
    path = analysis_file(folder)
    return read_model(path, Analysis, "an analysis.json") if path.is_file() else None


def short_text(text: str | None, limit: int = EXAMPLE_CHARS, redact: Redactor | None = None) -> str:
    """One line of at most `limit` characters, secrets masked (the environment's values and key-shaped words)."""
    if not text:
        return ""
    text = (redact or Redactor())(text)
    text = _KEYLIKE.sub(MASK, text)
    text = _SPACE.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# ---------------------------------------------------------------------------------------------- the file


class FailureCluster(BaseModel):
    mode: str
    """A failure mode (`agent_timeout`, `agent_error`, …), `test_failure` (the tests failed the agent's work),
    or an ungraded one (`infra_error`, `build_error`: shown, never counted against the profile)."""
    graded: bool
    trials: int
    tasks: list[str]
    example: str = ""
    """The error message or the test output's last lines of one trial (redacted, truncated)."""
    example_trial: str | None = None
    """That trial's folder, relative to the training folder."""


class CategoryStat(BaseModel):
    category: str
    tasks: list[str]
    graded: int
    passed: int
    rate: float | None


class ToolErrorCluster(BaseModel):
    tool: str
    errors: int
    calls: int
    trials: int
    """Trials in which this tool failed at least once."""
    example: str = ""
    example_trial: str | None = None


class WeakCategory(BaseModel):
    category: str
    graded: int
    passed: int
    rate: float
    others_graded: int
    others_passed: int
    others_rate: float
    """The profile's pass rate on its other categories."""
    upper: float
    """Wilson 95% upper bound of `rate`."""
    tasks: list[str]


class ProfileAnalysis(BaseModel):
    profile: str
    trials: int
    graded: int
    passed: int
    rate: float | None
    failures: list[FailureCluster] = Field(default_factory=list)
    """Largest first."""
    categories: list[CategoryStat] = Field(default_factory=list)
    tool_errors: list[ToolErrorCluster] = Field(default_factory=list)
    weak_categories: list[WeakCategory] = Field(default_factory=list)
    trajectories_missing: int = 0
    """Trials whose trajectory could not be read (their tool use is unknown)."""


class FlipSide(BaseModel):
    """One profile's trials of one task, averaged per trial."""

    profile: str
    trials: int
    graded: int
    passed: int
    rate: float
    turns: float
    tool_calls: dict[str, float]
    tool_errors: float
    tokens: float
    duration_s: float
    failure_modes: dict[str, int]
    last_message: str = ""
    """The last assistant message of a typical trial (a passing one on the side that mostly passes, a failing
    one on the other), redacted and truncated."""
    example_trial: str | None = None


class Flip(BaseModel):
    task_id: str
    category: str
    better: FlipSide
    worse: FlipSide
    differences: list[str]
    """What differed, largest first, in words."""


class Analysis(Versioned):
    schema_version: int = 1
    generated_at: str
    profiles: list[ProfileAnalysis]
    flips: list[Flip] = Field(default_factory=list)
    findings: list[str] = Field(default_factory=list)
    """The headlines, in words (report.md's "What the trials say")."""
    category_source: str
    """Where task categories came from: `suite` (the arm run's suite) or `none` (every task uncategorized)."""


# ---------------------------------------------------------------------------------------------- reading


@dataclass
class _TrialFacts:
    """What the analyzer reads from one trial's trajectory."""

    calls: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    first_error: dict[str, str] = field(default_factory=dict)
    last_message: str = ""
    read: bool = False


def _facts(run_dir: Path, r: TrialResult, redact: Redactor) -> _TrialFacts:
    facts = _TrialFacts()
    path = TrialPaths(run_dir / r.trial_dir).trajectory
    try:
        t = Trajectory.model_validate_json(path.read_bytes())
    except (OSError, ValidationError, ValueError):
        return facts
    facts.read = True
    for step in t.steps:
        for call in step.tool_calls:
            facts.calls[call.name] += 1
        for res in step.tool_results:
            if res.is_error:
                facts.errors[res.name] += 1
                facts.first_error.setdefault(res.name, short_text(res.output, EXAMPLE_CHARS, redact))
        if step.assistant_text.strip():
            facts.last_message = step.assistant_text
    facts.last_message = short_text(facts.last_message, MESSAGE_CHARS, redact)
    return facts


def _categories(folder: Path, result: TrainerResult) -> dict[str, str]:
    """Task id → category, from each arm run's suite (config.json), else from the plan's suite."""
    out: dict[str, str] = {}
    sources: list[tuple[str, list[str]]] = []
    for p in result.profiles:
        config_path = RunLayout(folder / p.run_dir).config
        if config_path.is_file():
            try:
                config = read_model(config_path, RunConfig, "a run's config.json")
            except UserError:
                continue
            sources.append((config.suite, config.task_globs))
    sources.append((result.plan.suite, result.plan.tasks))
    for suite, globs in dict.fromkeys((s, tuple(g)) for s, g in sources):
        try:
            loaded = load_suite(Path(suite), list(globs), skip_invalid=True)
        except (UserError, OSError):
            continue
        for task in loaded.tasks:
            out.setdefault(task.id, task.category or UNCATEGORIZED)
    return out


def _mode(r: TrialResult) -> str:
    if r.failure_mode is not None:
        return str(r.failure_mode)
    return TEST_FAILURE


def _example(r: TrialResult, redact: Redactor) -> str:
    if r.failure_mode is None:
        lines = [ln for ln in r.verification_output.splitlines() if ln.strip()]
        return short_text(" / ".join(lines[-3:]), EXAMPLE_CHARS, redact)
    return short_text(r.error_message, EXAMPLE_CHARS, redact)


def _link(run_dir: str, r: TrialResult) -> str:
    return f"{run_dir.rstrip('/')}/{r.trial_dir.rstrip('/')}"


# ---------------------------------------------------------------------------------------------- per profile


def _profile(
    pid: str,
    run_dir: str,
    trials: list[TrialResult],
    facts: dict[str, _TrialFacts],
    category: dict[str, str],
    redact: Redactor,
) -> ProfileAnalysis:
    t = tally(trials)
    out = ProfileAnalysis(profile=pid, trials=t.trials, graded=t.graded, passed=t.passed, rate=t.rate)
    clusters: dict[str, list[TrialResult]] = defaultdict(list)
    for r in trials:
        if not r.passed:
            clusters[_mode(r)].append(r)
    for mode, rs in sorted(clusters.items(), key=lambda kv: (-len(kv[1]), kv[0])):
        example = next((r for r in rs if _example(r, redact)), rs[0])
        out.failures.append(
            FailureCluster(
                mode=mode,
                graded=rs[0].is_graded,
                trials=len(rs),
                tasks=sorted({r.task_id for r in rs}),
                example=_example(example, redact),
                example_trial=_link(run_dir, example),
            )
        )
    by_cat: dict[str, list[TrialResult]] = defaultdict(list)
    for r in trials:
        by_cat[category.get(r.task_id, UNCATEGORIZED)].append(r)
    for cat, rs in sorted(by_cat.items()):
        ct = tally(rs)
        out.categories.append(
            CategoryStat(
                category=cat,
                tasks=sorted({r.task_id for r in rs}),
                graded=ct.graded,
                passed=ct.passed,
                rate=ct.rate,
            )
        )
    out.weak_categories = _weak(out.categories)
    calls: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    failing_trials: Counter[str] = Counter()
    first: dict[str, tuple[str, str]] = {}
    for r in trials:
        f = facts[r.trial_id]
        out.trajectories_missing += not f.read
        calls.update(f.calls)
        errors.update(f.errors)
        for tool, n in f.errors.items():
            failing_trials[tool] += n > 0
            if tool not in first and f.first_error.get(tool):
                first[tool] = (f.first_error[tool], _link(run_dir, r))
    for tool, n in sorted(errors.items(), key=lambda kv: (-kv[1], kv[0])):
        text, where = first.get(tool, ("", None))
        out.tool_errors.append(
            ToolErrorCluster(
                tool=tool, errors=n, calls=calls[tool], trials=failing_trials[tool], example=text, example_trial=where
            )
        )
    return out


def _weak(categories: list[CategoryStat]) -> list[WeakCategory]:
    """Categories that pass clearly less often than the profile's others: a gap of WEAK_GAP or more, on
    WEAK_MIN_GRADED graded trials or more, with the category's Wilson upper bound below the others' rate."""
    graded = sum(c.graded for c in categories)
    passed = sum(c.passed for c in categories)
    out = []
    for c in categories:
        og, op = graded - c.graded, passed - c.passed
        if c.graded < WEAK_MIN_GRADED or og == 0 or c.rate is None:
            continue
        others = op / og
        interval = wilson(c.passed, c.graded)
        if interval is None or others - c.rate < WEAK_GAP or interval.high >= others:
            continue
        out.append(
            WeakCategory(
                category=c.category,
                graded=c.graded,
                passed=c.passed,
                rate=c.rate,
                others_graded=og,
                others_passed=op,
                others_rate=round(others, 6),
                upper=round(interval.high, 6),
                tasks=c.tasks,
            )
        )
    return sorted(out, key=lambda w: w.rate - w.others_rate)


# ---------------------------------------------------------------------------------------------- flips


def _side(
    pid: str, run_dir: str, trials: list[TrialResult], facts: dict[str, _TrialFacts], mostly_passes: bool
) -> FlipSide:
    t = tally(trials)
    n = len(trials)
    tools: Counter[str] = Counter()
    for r in trials:
        tools.update(facts[r.trial_id].calls)
    typical = [r for r in trials if r.passed == mostly_passes and r.is_graded] or trials
    pick = typical[-1]
    return FlipSide(
        profile=pid,
        trials=n,
        graded=t.graded,
        passed=t.passed,
        rate=t.rate or 0.0,
        turns=round(sum(r.turns for r in trials) / n, 2),
        tool_calls={k: round(v / n, 2) for k, v in sorted(tools.items())},
        tool_errors=round(sum(sum(facts[r.trial_id].errors.values()) for r in trials) / n, 2),
        tokens=round(sum(r.tokens_used for r in trials) / n, 1),
        duration_s=round(sum(r.duration_ms for r in trials) / n / 1000, 2),
        failure_modes=dict(Counter(_mode(r) for r in trials if not r.passed)),
        last_message=facts[pick.trial_id].last_message,
        example_trial=_link(run_dir, pick),
    )


def _differs(a: float, b: float, *, ratio: float = 1.5, floor: float = 1.0) -> bool:
    """Worth a line: the larger is at least `ratio` times the smaller and they differ by `floor` or more."""
    lo, hi = sorted((a, b))
    return hi - lo >= floor and (lo == 0 or hi / lo >= ratio)


def _differences(b: FlipSide, w: FlipSide) -> list[str]:
    lines: list[tuple[float, str]] = []

    def add(weight: float, what: str, bv: str, wv: str) -> None:
        lines.append((weight, f"{what}: {b.profile} {bv} vs {w.profile} {wv}"))

    if _differs(b.turns, w.turns):
        add(abs(b.turns - w.turns) / max(b.turns, w.turns), "turns per trial", f"{b.turns:g}", f"{w.turns:g}")
    for tool in sorted(set(b.tool_calls) | set(w.tool_calls)):
        bc, wc = b.tool_calls.get(tool, 0.0), w.tool_calls.get(tool, 0.0)
        if _differs(bc, wc):
            add(abs(bc - wc) / max(bc, wc), f"`{tool}` calls per trial", f"{bc:g}", f"{wc:g}")
    if _differs(b.tool_errors, w.tool_errors):
        weight = abs(b.tool_errors - w.tool_errors) / max(b.tool_errors, w.tool_errors)
        add(weight, "tool errors per trial", f"{b.tool_errors:g}", f"{w.tool_errors:g}")
    if _differs(b.tokens, w.tokens, floor=100):
        add(abs(b.tokens - w.tokens) / max(b.tokens, w.tokens), "tokens per trial", f"{b.tokens:,.0f}",
            f"{w.tokens:,.0f}")  # fmt: skip
    if _differs(b.duration_s, w.duration_s, floor=5):
        weight = abs(b.duration_s - w.duration_s) / max(b.duration_s, w.duration_s)
        add(weight, "duration per trial", f"{b.duration_s:g} s", f"{w.duration_s:g} s")
    if b.failure_modes != w.failure_modes and w.failure_modes:
        modes = ", ".join(f"{m} x{n}" for m, n in sorted(w.failure_modes.items(), key=lambda kv: -kv[1]))
        lines.append((0.5, f"how {w.profile} failed: {modes}"))
    return [text for _, text in sorted(lines, key=lambda x: -x[0])]


def _flips(
    trials: dict[str, list[TrialResult]],
    run_dirs: dict[str, str],
    facts: dict[str, dict[str, _TrialFacts]],
    category: dict[str, str],
) -> list[Flip]:
    by_task = {pid: _group(rs) for pid, rs in trials.items()}
    out = []
    for pa, pb in combinations(list(trials), 2):
        for task in sorted(set(by_task[pa]) & set(by_task[pb])):
            ta, tb = tally(by_task[pa][task]), tally(by_task[pb][task])
            if ta.rate is None or tb.rate is None:
                continue
            if ta.rate > MOST > tb.rate:
                better, worse = pa, pb
            elif tb.rate > MOST > ta.rate:
                better, worse = pb, pa
            else:
                continue
            b = _side(better, run_dirs[better], by_task[better][task], facts[better], True)
            w = _side(worse, run_dirs[worse], by_task[worse][task], facts[worse], False)
            out.append(
                Flip(
                    task_id=task,
                    category=category.get(task, UNCATEGORIZED),
                    better=b,
                    worse=w,
                    differences=_differences(b, w),
                )
            )
    return out


def _group(trials: list[TrialResult]) -> dict[str, list[TrialResult]]:
    out: dict[str, list[TrialResult]] = defaultdict(list)
    for r in trials:
        out[r.task_id].append(r)
    return out


# ---------------------------------------------------------------------------------------------- findings


def _pct(x: float) -> str:
    return f"{x * 100:.0f}%"


def _findings(profiles: list[ProfileAnalysis], flips: list[Flip]) -> list[str]:
    out = []
    for p in profiles:
        failed = [c for c in p.failures if c.graded]
        total = sum(c.trials for c in failed)
        if failed:
            top = failed[0]
            out.append(
                f"{p.profile}: {top.trials} of its {total} graded failure(s) are `{top.mode}` "
                f"({len(top.tasks)} task(s): {', '.join(top.tasks[:5])}{', …' if len(top.tasks) > 5 else ''})"
            )
        for w in p.weak_categories:
            out.append(
                f"{p.profile}: category `{w.category}` passes {w.passed}/{w.graded} ({_pct(w.rate)}) against "
                f"{_pct(w.others_rate)} on its other categories"
            )
        if p.tool_errors:
            t = p.tool_errors[0]
            out.append(f"{p.profile}: tool `{t.tool}` failed {t.errors} of {t.calls} call(s), in {t.trials} trial(s)")
    pairs: dict[tuple[str, str], list[str]] = defaultdict(list)
    for f in flips:
        pairs[(f.better.profile, f.worse.profile)].append(f.task_id)
    for (better, worse), tasks in pairs.items():
        out.append(
            f"{len(tasks)} task(s) pass mostly with {better} and fail mostly with {worse}: "
            f"{', '.join(tasks[:5])}{', …' if len(tasks) > 5 else ''}"
        )
    return out


# ---------------------------------------------------------------------------------------------- entry point


def analyze(folder: Path, result: TrainerResult) -> Analysis:
    """The analysis of a training folder (what `DIR/analysis.json` holds); reads, never writes."""
    redact = Redactor()
    trials = profile_trials(folder, result)
    run_dirs = {p.id: p.run_dir for p in result.profiles}
    category = _categories(folder, result)
    facts = {pid: {r.trial_id: _facts(folder / run_dirs[pid], r, redact) for r in rs} for pid, rs in trials.items()}
    profiles = [_profile(pid, run_dirs[pid], rs, facts[pid], category, redact) for pid, rs in trials.items()]
    flips = _flips(trials, run_dirs, facts, category)
    return Analysis(
        generated_at=utcnow(),
        profiles=profiles,
        flips=flips,
        findings=_findings(profiles, flips),
        category_source="suite" if category else "none",
    )
