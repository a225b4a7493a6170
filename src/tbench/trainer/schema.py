"""The Trainer's files: agent profiles (TOML, `.openagents/trainer/profiles/<id>.toml`), training plans (TOML),
the trial records of a training run (`GymEpisode`, `DIR/episodes.jsonl`) and its result (`DIR/trainer.json`).
Every file is validated where it is read: a wrong field is one line naming file, field and value (exit 2)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import BaseModel, ConfigDict, Field, model_validator

from tbench.bench.formats._common import read_structured, validate
from tbench.errors import UserError
from tbench.fsutil import atomic_write_text
from tbench.models.common import Versioned
from tbench.models.layout import ProjectLayout
from tbench.models.profile import AgentProfile, ProfileSource
from tbench.stats.inference import Comparison

__all__ = [
    "AgentProfile",
    "Budget",
    "Candidate",
    "EvalEntry",
    "EvalIndex",
    "EvolutionTree",
    "GymEpisode",
    "PairVerdict",
    "ProfileResult",
    "ProfileSource",
    "RacingDecision",
    "Spent",
    "Split",
    "TrainerResult",
    "TrainingPlan",
    "load_plan",
    "load_profile",
    "profile_path",
    "write_profile",
]

Strategy = Literal["ab", "evolve"]
Objective = Literal["max_pass_rate", "min_cost_per_pass", "pareto"]
TrainerStatus = Literal["running", "completed", "stopped", "budget_exhausted", "interrupted"]


# ---------------------------------------------------------------------------------------------- profiles


def profile_path(project_root: Path, profile_id: str) -> Path:
    return ProjectLayout(project_root).profiles_dir / f"{profile_id}.toml"


def load_profile(path: Path) -> AgentProfile:
    """One profile file; its `id` must match the file name (what `--profile NAME` looks up)."""
    if not path.is_file():
        raise UserError("no such profile file; write it, or list the profiles with `tbench train envs`", path=path)
    profile = validate(AgentProfile, read_structured(path), path)
    if profile.id != path.stem:
        raise UserError(f"id {profile.id!r} differs from the file name {path.stem!r}; make them one", path=path)
    return profile


def find_profile(project_root: Path, profile_id: str, *, field: str = "profile") -> AgentProfile:
    """The profile `profile_id` of the project, or one line saying which profiles there are."""
    path = profile_path(project_root, profile_id)
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.toml")) if path.parent.is_dir() else []
        listed = f"; profiles here: {', '.join(known)}" if known else ""
        raise UserError(f"unknown profile {profile_id!r}: {path} does not exist{listed}", field=field)
    return load_profile(path)


def write_profile(path: Path, profile: AgentProfile) -> None:
    """The profile as readable TOML (fields left at their defaults are left out)."""
    data = profile.model_dump(exclude_none=True, exclude_defaults=True)
    data = {"id": profile.id, **data}
    atomic_write_text(path, tomli_w.dumps(data, multiline_strings=True))


# ---------------------------------------------------------------------------------------------- plans


class Budget(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trials: int | None = Field(default=None, ge=1)
    """Most trials to run, all profiles together (infra retries not counted)."""
    usd: float | None = Field(default=None, gt=0)
    """Most dollars to spend, all profiles together (trials' recorded cost)."""


class Split(BaseModel):
    model_config = ConfigDict(extra="forbid")

    holdout: float = Field(default=0.0, ge=0.0, lt=1.0)
    """Share of the suite's tasks held out: the project's split (.openagents/memory/holdout.json), the one the
    Archivist keeps unseen. `evolve` confirms its winner there; `ab` leaves them out."""
    validation: float = Field(default=0.5, gt=0.0, lt=1.0)
    """`evolve`: share of the other tasks used for validation (the rest are the training minibatches)."""


class Power(BaseModel):
    model_config = ConfigDict(extra="forbid")

    effect: float = Field(default=0.05, gt=0.0, lt=1.0)
    """The difference in pass rate the plan is after (0.05 = 5 pp)."""
    power: float = Field(default=0.8, gt=0.0, lt=1.0)


class Evolve(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reflect_model: str | None = None
    """The model that proposes new prompts (`ollama:<name>`, `openai:<name>`); None: the plan's model."""
    minibatch: int = Field(default=3, ge=1)
    """Training tasks per proposal (GEPA's minibatch)."""
    max_candidates: int = Field(default=8, ge=1)
    """Most proposals to evaluate."""


class TrainingPlan(BaseModel):
    """`PLAN.toml`. Endpoints come from the command line, as for `tbench-iterate`."""

    model_config = ConfigDict(extra="forbid")

    suite: str
    """Any suite `tbench-iterate` accepts (relative paths are relative to the plan file)."""
    tasks: list[str] = Field(default_factory=list)
    """`--tasks` globs; empty: every task."""
    model: str | None = None
    """The agent for profiles that name none (`--model` syntax)."""
    profiles: list[str] = Field(min_length=1)
    """Profile ids; the first is the reference the others are compared with."""
    strategy: Strategy = "ab"
    objective: Objective = "max_pass_rate"
    trials_per_task: int = Field(default=3, ge=1, le=100)
    """k: the most trials of each profile on each task (racing may stop a profile sooner)."""
    racing: bool = True
    """Stop a profile early once it is significantly worse (alpha spent over the rounds)."""
    alpha: float = Field(default=0.05, gt=0.0, lt=0.5)
    seed: int = 0
    timeout_sec: float = Field(default=3600.0, gt=0)
    workers: int = Field(default=1, ge=1)
    budget: Budget = Field(default_factory=Budget)
    split: Split = Field(default_factory=Split)
    power: Power = Field(default_factory=Power)
    evolve: Evolve = Field(default_factory=Evolve)

    @model_validator(mode="after")
    def _profiles(self) -> TrainingPlan:
        if len(set(self.profiles)) != len(self.profiles):
            raise ValueError("a profile is listed twice")
        if self.strategy == "ab" and len(self.profiles) < 2:
            raise ValueError("an A/B plan needs at least two profiles")
        if self.strategy == "evolve" and len(self.profiles) != 1:
            raise ValueError("an evolve plan starts from exactly one profile (the seed)")
        return self


def load_plan(path: Path) -> TrainingPlan:
    if not path.is_file():
        what = "is a folder, not a plan file" if path.is_dir() else "no such plan file"
        raise UserError(f"{what}; give a PLAN.toml (see docs/tbench/trainer.md)", path=path)
    if path.suffix != ".toml":
        raise UserError("a plan is a .toml file", path=path)
    data = read_structured(path)
    plan = validate(TrainingPlan, data, path)
    suite = Path(plan.suite).expanduser()
    if not suite.is_absolute():
        suite = (path.parent / suite).resolve()
    return plan.model_copy(update={"suite": str(suite)})


def plan_text(plan: TrainingPlan) -> str:
    """The plan as TOML (kept in trainer.json, and how a resume checks the plan did not change)."""
    return tomli_w.dumps(plan.model_dump(exclude_none=True))


def parse_plan_text(text: str) -> TrainingPlan:
    data: dict[str, Any] = tomllib.loads(text)
    return TrainingPlan.model_validate(data)


# ---------------------------------------------------------------------------------------------- results


class GymEpisode(BaseModel):
    """One profile's trial on one task (`DIR/episodes.jsonl`), linking the trial folder."""

    id: str
    """The trial id."""
    environment: str
    """The gym environment (suite) id."""
    profile: str
    task_id: str
    round: int
    """The A/B round (the arm run's iteration), or the evaluation's iteration."""
    status: Literal["pass", "fail", "error"]
    failure_mode: str | None = None
    graded: bool
    trial_dir: str
    """Relative to the training folder."""
    duration_ms: int
    cost_usd: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    turns: int | None = None


class ProfileResult(BaseModel):
    id: str
    profile: AgentProfile
    run_dir: str
    """The profile's arm: a normal tbench run folder, relative to the training folder."""
    rounds: int
    """Rounds (trials per task) run."""
    trials: int
    graded_trials: int
    passed: int
    pass_rate: float | None
    """Mean per-task pass rate over graded trials; None when nothing was graded."""
    interval: tuple[float, float] | None = None
    """Wilson 95% interval of the pooled pass rate."""
    cost_usd: float = 0.0
    cost_per_pass: float | None = None
    tokens: int = 0
    stopped_at_round: int | None = None
    """Racing stopped this profile after this round."""
    stop_reason: str | None = None


class PairVerdict(BaseModel):
    """A profile against the reference on the tasks both graded (stats.inference.compare)."""

    reference: str
    profile: str
    alpha: float
    """The level this comparison was tested at (alpha shared over profiles and spent over rounds)."""
    comparison: Comparison

    @property
    def verdict(self) -> str:
        return self.comparison.verdict


class Verdict(BaseModel):
    winner: str | None
    """A profile id, or None when no difference is shown."""
    reference: str
    against: str | None
    """The profile the winner was tested against (or the challenger when there is no winner)."""
    diff: float | None
    """Pass-rate difference, winner (or challenger) minus the other, as a fraction."""
    interval: tuple[float, float] | None
    p_value: float | None
    test: str | None
    alpha: float
    sentence: str


class RacingDecision(BaseModel):
    round: int
    profile: str
    against: str
    action: Literal["dropped", "kept"]
    diff: float | None
    p_value: float
    alpha: float
    """The share of alpha this look spent."""
    reason: str


class Spent(BaseModel):
    trials: int = 0
    usd: float = 0.0


class Candidate(BaseModel):
    """One profile the evolution proposed or started from."""

    id: str
    parent: str | None
    profile: AgentProfile
    minibatch: list[str] = Field(default_factory=list)
    parent_score: float | None = None
    """The parent's summed pass rate on the minibatch."""
    score: float | None = None
    """This candidate's summed pass rate on the minibatch."""
    accepted: bool
    reason: str
    validation_rate: float | None = None
    """Mean pass rate on the validation tasks (accepted candidates)."""
    trials: int = 0
    iteration: int | None = None
    """The gepa iteration that proposed it (None: the seed)."""
    index: int | None = None
    """Its place in gepa's candidate pool (accepted candidates; the seed is 0)."""
    parent_scores: list[float] = Field(default_factory=list)
    """The parent's pass rate on each minibatch task."""
    scores: list[float] = Field(default_factory=list)
    """This candidate's pass rate on each minibatch task."""


class EvolutionTree(BaseModel):
    seed_profile: str
    reflect_model: str
    candidates: list[Candidate] = Field(default_factory=list)
    best: str | None = None
    """The candidate with the best validation rate."""
    confirmation: PairVerdict | None = None
    """The best candidate against its parent on the held-out tasks."""
    confirmed: bool = False
    proposed: str | None = None
    """The candidate proposed for `tbench train promote` (confirmed on held-out tasks), or None."""
    reflection_calls: int = 0
    """Calls to the reflection model (each recorded in `DIR/reflections.jsonl`)."""
    search_done: bool = False
    """gepa's search has ended; what is left is the held-out confirmation."""
    search_ended: str | None = None
    """Why the search ended (budget, max_candidates, no proposal)."""
    note: str | None = None
    """Why nothing was confirmed, when nothing was."""


class EvalEntry(BaseModel):
    """One evaluation run of the evolution (`DIR/evals/<n>-<digest>/`): a candidate's trials on some tasks."""

    n: int
    folder: str
    """Relative to the training folder."""
    candidate: str
    digest: str
    """The candidate profile's digest: the evaluation cache's key, with the task and k."""
    tasks: list[str]
    k: int


class EvalIndex(BaseModel):
    """`DIR/evals/index.json`: every evaluation started, written before its run folder exists."""

    entries: list[EvalEntry] = Field(default_factory=list)


class TrainerResult(Versioned):
    """`DIR/trainer.json`: what the training run found, rewritten after every round."""

    schema_version: int = 1
    plan: TrainingPlan
    plan_file: str
    plan_toml: str
    """The plan as run; a resume refuses a changed plan."""
    project_root: str
    model: str
    status: TrainerStatus
    started_at: str
    updated_at: str
    environment: str
    tasks: list[str]
    """The tasks the profiles were compared on (A/B) or trained and validated on (evolve)."""
    holdout_tasks: list[str] = Field(default_factory=list)
    train_tasks: list[str] = Field(default_factory=list)
    validation_tasks: list[str] = Field(default_factory=list)
    profiles: list[ProfileResult] = Field(default_factory=list)
    comparisons: list[PairVerdict] = Field(default_factory=list)
    verdict: Verdict | None = None
    racing: list[RacingDecision] = Field(default_factory=list)
    rounds_planned: int
    rounds_done: int = 0
    spent: Spent = Field(default_factory=Spent)
    budget: Budget = Field(default_factory=Budget)
    evolution: EvolutionTree | None = None
    pareto_front: list[str] = Field(default_factory=list)
    """Profiles no other profile beats on both pass rate and cost per pass (objective `pareto`)."""
    cost_note: str | None = None
    """objective `min_cost_per_pass`: which of the profiles not shown to differ in pass rate costs least per pass."""
    stop_reason: str | None = None
    promoted: str | None = None
    """The profile `tbench train promote` wrote, once it has."""
