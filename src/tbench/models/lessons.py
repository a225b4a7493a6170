"""Lessons, the delta operations that change them, and a run's learning settings — every file the Archivist
writes or reads goes through these models."""

from __future__ import annotations

import hashlib
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from tbench.models.common import Versioned

Scope = Literal["global", "suite", "category", "tool"]
LessonCategory = Literal[
    "heuristic", "anti_pattern", "tool_usage", "test_strategy", "infra", "prompting", "bugfix_pattern"
]
MemoryMode = Literal["off", "read", "learn"]
"""off: no lessons in prompts; read: inject, never change the store; learn: inject, credit and reflect."""

_WORD = re.compile(r"[a-z0-9]+")


def normalize(text: str) -> str:
    return " ".join(_WORD.findall(text.lower()))


def lesson_id(text: str) -> str:
    """Ids come from the normalised text, so the same answer applied twice gives the same store."""
    return "L" + hashlib.sha256(normalize(text).encode()).hexdigest()[:10]


class TaskCounts(BaseModel):
    """One task's evidence on a lesson: its graded trials with the lesson, and (as last seen) without it."""

    model_config = ConfigDict(extra="forbid")

    with_graded: int = Field(default=0, ge=0)
    with_passed: int = Field(default=0, ge=0)
    without_graded: int = Field(default=0, ge=0)
    without_passed: int = Field(default=0, ge=0)


class Lesson(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str
    scope: Scope = "global"
    scope_value: str | None = None
    """The suite name, task category or tool name a non-global lesson applies to."""
    category: LessonCategory
    tags: list[str] = Field(default_factory=list)
    text: str
    """An "IF … THEN …" rule."""
    importance: float = Field(default=0.5, ge=0.0, le=1.0)
    helpful: int = Field(default=0, ge=0)
    """Trials it helped: passed where the task, without it, passes less than half the time (archivist/credit.py)."""
    harmful: int = Field(default=0, ge=0)
    """Trials it hurt: failed where the task, without it, passes more than half the time."""
    unchanged: int = Field(default=0, ge=0)
    """Trials that went as the task goes without it."""
    uncredited: int = Field(default=0, ge=0)
    """Trials it saw whose task had too few trials without it to judge against."""
    by_task: dict[str, TaskCounts] = Field(default_factory=dict)
    """Per credited task, the trials with the lesson and the counterfactual without it (archivist/credit.py reads
    it before retiring: how sure the counterfactual itself is)."""
    evidence_tasks: list[str] = Field(default_factory=list)
    """Task ids of the trials it was drawn from (what the held-out taint check reads)."""
    evidence: list[str] = Field(default_factory=list)
    """Trial ids the lesson was drawn from."""
    episodes: list[str] = Field(default_factory=list)
    """Episode ids (run-iteration) of that evidence."""
    source: str
    """Who made it: `reflection:<model>`, `import`, `merge`."""
    created_at: str
    updated_at: str
    last_used_at: str | None = None
    superseded_by: str | None = None
    retired_reason: str | None = None


class LessonFile(Versioned):
    """`lessons.json` (active lessons) and the export format."""

    schema_version: int = 1
    lessons: list[Lesson] = Field(default_factory=list)


# ---------------------------------------------------------------- delta operations

_RULE = re.compile(r"^\s*if\b.+\bthen\b.+", re.I | re.S)
_PLACEHOLDER = re.compile(r"\.\.\.|…|<[^>]*>")


def _rule_text(text: str) -> str:
    """A real "IF … THEN …" rule: small models copy the prompt's template ("IF ... THEN ...") verbatim."""
    text = " ".join(text.split())
    if not _RULE.match(text):
        raise ValueError('must read "IF <situation> THEN <action>"')
    if _PLACEHOLDER.search(text) or len(normalize(text).split()) < 6:
        raise ValueError("is a template placeholder, not a rule")
    return text


RuleText = Annotated[str, Field(min_length=10, max_length=400), AfterValidator(_rule_text)]


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid")

    evidence: list[str] = Field(min_length=1)
    """Trial ids (from those shown to the reflection model) that support the operation."""


class AddOp(_Op):
    op: Literal["ADD"]
    text: RuleText
    category: LessonCategory
    scope: Scope = "global"
    scope_value: str | None = None
    tags: list[str] = Field(default_factory=list, max_length=8)
    importance: float = Field(default=0.5, ge=0.0, le=1.0)


class UpdateOp(_Op):
    op: Literal["UPDATE"]
    id: str
    text: RuleText | None = None
    tags: list[str] | None = Field(default=None, max_length=8)
    importance: float | None = Field(default=None, ge=0.0, le=1.0)


class MergeOp(_Op):
    op: Literal["MERGE"]
    ids: list[str] = Field(min_length=2)
    text: RuleText
    tags: list[str] = Field(default_factory=list, max_length=8)


class RetireOp(_Op):
    op: Literal["RETIRE"]
    id: str
    reason: str = Field(min_length=3, max_length=300)


DeltaOp = Annotated[AddOp | UpdateOp | MergeOp | RetireOp, Field(discriminator="op")]


class OpOutcome(BaseModel):
    op: dict[str, object]
    applied: bool
    reason: str | None = None
    """Why it was rejected, or what it changed (`merged into L…`)."""
    lesson_id: str | None = None


CallStatus = Literal["planned", "answered", "applied", "skipped", "nothing_to_learn"]


class ReflectionCall(BaseModel):
    """One call to the reflection model: a cluster of trials, why it was chosen, the answer (written before any of
    it is applied, so a resume applies the recorded answer instead of asking again) and what was applied."""

    trigger: str
    """Why these trials: `regression`, `newly passing`, `new failure cluster: <mode>`, `rotation: <cluster>`."""
    trials: list[str]
    status: CallStatus = "planned"
    reason: str | None = None
    answer: str | None = None
    """The model's answer, cut to 8000 characters."""
    operations: list[OpOutcome] = Field(default_factory=list)


class ReflectionLog(BaseModel):
    """`iterations/NNN/reflection.json`: the plan of calls, each call's answer and what was applied."""

    run_id: str
    iteration: int
    model: str
    at: str
    status: Literal["applied", "skipped", "nothing_to_learn", "running"]
    reason: str | None = None
    trials: list[str] = Field(default_factory=list)
    """Trial ids shown (train tasks only), over all calls."""
    answer: str | None = None
    """The first call's answer (every call's is under `calls`)."""
    operations: list[OpOutcome] = Field(default_factory=list)
    """Every call's operations, in order."""
    calls: list[ReflectionCall] = Field(default_factory=list)
    budget_tokens: int | None = None
    """The `--reflect-budget` the plan was made under."""
    left_out: list[str] = Field(default_factory=list)
    """Trial ids that did not fit in the budget (they come first in a later night's rotation)."""


# ---------------------------------------------------------------- run settings


class LearningConfig(BaseModel):
    """A run's memory settings, kept in config.json so a resume learns the same way."""

    model_config = ConfigDict(extra="forbid")

    memory: MemoryMode = "off"
    reflect_model: str | None = None
    """`ollama:<name>`; None: the run's own model."""
    top_k: int = Field(default=3, ge=1, le=20)
    token_budget: int = Field(default=400, ge=20)
    holdout_fraction: float = Field(default=0.0, ge=0.0, lt=1.0)
    holdout_tasks: list[str] = Field(default_factory=list)
    """Task ids kept out of learning (never reflected on, never credited)."""
    control: bool = False
    """Run a no-memory arm on the held-out tasks, interleaved with the memory arm."""
    reflect_budget: int = Field(default=6000, ge=500)
    """Tokens of trial digests shown to the reflection model per iteration (`--reflect-budget`)."""


class SuiteSplit(BaseModel):
    model_config = ConfigDict(extra="forbid")

    fraction: float = Field(gt=0.0, lt=1.0)
    held_out: list[str] = Field(default_factory=list)
    known: list[str] = Field(default_factory=list)
    """Every task id the split has assigned (a task added to the suite later is assigned once, by the salt)."""


class HoldoutFile(Versioned):
    """`.openagents/memory/holdout.json`: the project's held-out split per suite, drawn once with a random salt and
    kept with the memory it protects — never drawn per run, so no run (another `--seed`, no `--holdout`) can
    learn from a task that another run's proof treats as unseen without that showing up as taint."""

    schema_version: int = 1
    salt: str
    suites: dict[str, SuiteSplit] = Field(default_factory=dict)


class Coverage(Versioned):
    """`.openagents/memory/coverage.json`: how often, and when last, each task's trials reached reflection, so
    each night's sample starts with the tasks reflected least (rotation over the nights)."""

    schema_version: int = 1
    suites: dict[str, dict[str, list[str]]] = Field(default_factory=dict)
    """suite → task id → timestamps of the reflections that saw it (the last 20)."""
