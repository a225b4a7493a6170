"""`delta.json` (an iteration against the one before it that graded anything) and `summary.json` (the whole
run). Pass rates are over graded trials; None (JSON null) where nothing was graded."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from tbench.models.common import Versioned
from tbench.models.grading import Outcome
from tbench.models.results import ModelSummary
from tbench.models.run import Outage

Change = Literal["improved", "regressed", "unchanged"]


class TaskDelta(BaseModel):
    task_id: str
    previous: Outcome
    current: Outcome
    change: Change


class IterationDelta(Versioned):
    """Per-task change on the tasks both iterations graded; ungraded trials (infra, build) are left out and
    listed in `excluded_infra`, not counted as changes."""

    schema_version: int = 2
    iteration: int
    previous_iteration: int
    """The latest earlier iteration that graded a trial (an iteration that graded nothing is never a baseline)."""
    pass_rate: float | None
    previous_pass_rate: float | None
    pass_rate_change: float | None
    improved: list[str] = Field(default_factory=list)
    regressed: list[str] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    excluded_infra: list[str] = Field(default_factory=list)
    """Tasks left out because either side's trial was not graded (infra or build error)."""
    tasks: list[TaskDelta] = Field(default_factory=list)


class IterationLine(BaseModel):
    iteration: int
    pass_rate: float | None
    passed: int
    total: int
    timeout: int
    error: int
    infra_errors: int
    build_errors: int = 0
    graded: int = 0
    avg_duration_ms: float
    total_tokens: int
    started_at: str
    finished_at: str


class TaskLine(BaseModel):
    task_id: str
    runs: int
    """Graded trials."""
    passed: int
    pass_rate: float | None
    outcomes: list[Outcome]
    """One per iteration, in order."""
    flaky: bool
    ungraded: int = 0
    """Trials not graded (infra or build error)."""


class ArmRate(BaseModel):
    passed: int
    graded: int
    ungraded: int = 0
    rate: float | None


class LearningIteration(BaseModel):
    iteration: int
    memory: ArmRate
    """Held-out tasks with lessons."""
    control: ArmRate | None
    """Held-out tasks without lessons (`--control`); None without a control arm."""
    operations_applied: int | None
    reflection: str | None
    """The reflection's status (and reason); None when none ran."""


class LearningSummary(BaseModel):
    """The built-in proof as data: what report.md's learning section says, for tools to read."""

    memory: str
    holdout_tasks: list[str]
    control: bool
    iterations: list[LearningIteration]
    verdict: str | None
    """improved | regressed | no significant change | no common tasks | refused (contaminated); None: no proof."""
    diff: float | None = None
    """Mean per-task held-out pass rate, memory minus no memory."""
    interval: tuple[float, float] | None = None
    """Paired bootstrap 95% interval of `diff`."""
    p_value: float | None = None
    test: str | None = None
    contaminated_lessons: list[str] = Field(default_factory=list)
    """Lessons a held-out trial was shown whose evidence touches a held-out task (the proof is refused if any)."""
    sentence: str | None = None


class RunSummary(Versioned):
    schema_version: int = 2
    run_id: str
    suite_name: str
    suite_version: str
    model: str
    status: str
    iterations_planned: int
    iterations_completed: int
    iterations: list[IterationLine]
    mean_pass_rate: float | None
    """Mean over iterations that graded a trial; None when none did."""
    best_iteration: int | None
    worst_iteration: int | None
    total_trials: int
    total_tokens: int
    total_cost_usd: float
    tasks: list[TaskLine]
    flaky_tasks: list[str]
    by_model: dict[str, ModelSummary] = Field(default_factory=dict)
    """Pass rates per model over the whole run (several with --claude-validation-rate)."""
    graded_trials: int = 0
    ungraded_trials: int = 0
    """Infra and build errors: shown and counted, never graded."""
    learning: LearningSummary | None = None
    """The Archivist's held-out proof (None with memory off)."""
    outages: list[Outage] = Field(default_factory=list)
    """Pauses while the model server was down (from state.json)."""
