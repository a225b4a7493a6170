"""What a report shows, laid out once for both renderers: `run_report.build_report` measures and fills a
`Report`; report.md (run_report) and report.html (html.py) only lay it out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tbench.models.common import utcnow
from tbench.models.run import RunConfig
from tbench.models.summary import IterationDelta, RunSummary
from tbench.report.runs import Baseline
from tbench.stats.inference import Cell, Comparison, IterationStat, RunStats, TaskDiff

MARK: dict[Cell, str] = {"pass": "✓", "fail": "✗", "timeout": "T", "error": "!", "infra": "∅"}
"""Cell marks for HTML (common fonts lack report.md's ⏱); the colour says the same."""


@dataclass(slots=True)
class TrialView:
    """One trial as the report shows it; paths are relative to the run folder, ready for href."""

    iteration: int
    task_id: str
    model: str
    cell: Cell
    mark: str
    title: str
    duration_s: float
    failure_mode: str | None
    tokens: int
    cost_usd: float | None
    log: str
    page: str | None
    """The trial's trajectory page, where it was written."""
    tests: str | None
    trajectory: str | None
    agent: str | None


@dataclass(slots=True)
class ImageLine:
    """One image trials of a task ran in (the main container's or a service's), with its base."""

    task_id: str
    service: str
    """`main` for the container the agent and tests ran in, else the compose service's name."""
    name: str
    id: str
    base: str | None
    base_id: str | None
    trials: int

    @staticmethod
    def short(digest: str | None) -> str:
        """`sha256:0123456789ab` — enough to tell images apart and to find one with `docker image ls`."""
        return "—" if not digest else digest[:19]


@dataclass(slots=True)
class GridRow:
    task_id: str
    model: str
    passed: int
    graded: int
    rate: float | None
    flaky: bool
    cells: list[list[TrialView]]
    """One list per iteration column (empty: the task did not run in it)."""


@dataclass
class Report:
    run_dir: Path
    config: RunConfig
    summary: RunSummary
    deltas: list[IterationDelta]
    stats: RunStats
    iterations: list[int]
    grid: list[GridRow]
    trials_by_iteration: dict[int, list[TrialView]]
    baseline: Baseline | None
    baseline_note: str
    vs_baseline: Comparison | None
    first_last: Comparison | None
    model_stats: dict[str, RunStats] = field(default_factory=dict)
    """Only for runs with more than one model."""
    model_iterations: dict[str, list[IterationStat]] = field(default_factory=dict)
    model_comparisons: list[Comparison] = field(default_factory=list)
    images: list[ImageLine] = field(default_factory=list)
    """Distinct images per task and service, in task order."""
    learning: list[str] = field(default_factory=list)
    """The Archivist's section (held-out arms and verdict), markdown lines; empty without memory."""
    generated_at: str = field(default_factory=utcnow)

    @property
    def settings(self) -> list[str]:
        """Header lines for what the run was asked beyond suite and model: time limits, skipped tasks."""
        c = self.config
        out = [f"Time limits: {c.time_limits.describe(c.timeout_sec)}"]
        if c.skipped_tasks:
            listed = "; ".join(f"{t.id} ({t.reason})" for t in c.skipped_tasks)
            out.append(f"Skipped {len(c.skipped_tasks)} invalid task(s) (--skip-invalid): {listed}")
        return out

    @property
    def mixed(self) -> bool:
        return len(self.stats.models) > 1

    @property
    def regressions(self) -> list[TaskDiff]:
        """Tasks that pass less often than in the baseline, worst first."""
        if self.vs_baseline is None:
            return []
        return sorted((d for d in self.vs_baseline.per_task if d.diff < 0), key=lambda d: (d.diff, d.task_id))

    @property
    def headline(self) -> tuple[str, str]:
        """(css class, sentence) for the top of both reports."""
        c = self.vs_baseline
        if self.baseline is None:
            return "none", f"Baseline: {self.baseline_note}."
        if c is None:
            label = self.baseline.trials.label
            return "none", f"Baseline: `{label}`, {self.baseline.how}; no finished iteration to compare with it yet."
        where = f"the baseline `{c.label_a}`, {self.baseline.how}"
        if c.verdict == "regressed":
            return "bad", f"Significantly worse than {where}: {c.details()}."
        if c.verdict == "improved":
            return "good", f"Significantly better than {where}: {c.details()}."
        return "same", f"No significant change against {where}: {c.details()}."
