"""`config.json` (what was asked, no secrets) and `state.json` (how far it got), both written atomically.

`state.json` is rewritten after every trial; a trial's own `result.json` is its commit marker, so a kill
between the two loses nothing and runs nothing twice to completion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

from tbench.errors import UserError
from tbench.fsutil import atomic_write_model
from tbench.models.common import Versioned, read_model, utcnow
from tbench.models.grading import Outcome
from tbench.models.layout import CONFIG_FILE, STATE_FILE
from tbench.models.lessons import LearningConfig
from tbench.models.model_settings import ModelSettings
from tbench.models.profile import AgentProfile
from tbench.models.task import SkippedTask, TimeLimits


class RunConfig(Versioned):
    schema_version: int = 1
    run_id: str
    created_at: str
    tbench_version: str
    suite: str
    """Absolute path of the suite, re-read on resume."""
    suite_name: str
    suite_version: str
    task_globs: list[str] = Field(default_factory=list)
    task_ids: list[str]
    """The selected tasks, in run order."""
    model: str
    iterations: int = Field(gt=0)
    timeout_sec: float = Field(gt=0)
    """Agent time limit for tasks that set none of their own."""
    max_turns: int | None = None
    output: str
    project_root: str
    model_settings: ModelSettings = Field(default_factory=ModelSettings)
    """Endpoints, model options, validation rate and seed (never keys or tokens)."""
    runner: Literal["iterate", "overnight"] = "iterate"
    workers: int | Literal["auto"] = 1
    executor: Literal["local", "ray"] = "local"
    """Where trials run: local worker processes, or tasks on a Ray cluster (`--executor ray`)."""
    ray_address: str | None = None
    """The Ray head given with --ray-address (None: $RAY_ADDRESS or a cluster on this machine)."""
    max_retries: int = Field(default=0, ge=0)
    """Infra-error retries per trial; agent failures and timeouts are never retried."""
    retry_backoff_sec: float = Field(default=5.0, ge=0)
    learning: LearningConfig = Field(default_factory=LearningConfig)
    """--memory / --learn / --reflect-model / --holdout / --control (the Archivist)."""
    breaker_after: int = Field(default=3, ge=1)
    """Consecutive trials failed by the model server that pause the run (the circuit breaker)."""
    max_outage_sec: float = Field(default=3600.0, gt=0)
    """A pause longer than this stops the run, resumably."""
    budget_hint: bool = True
    """The agent is told its wall-clock budget (off: --no-budget-hint)."""
    skip_invalid: bool = False
    """--skip-invalid: invalid tasks were left out (listed in `skipped_tasks`) instead of refusing the suite."""
    skipped_tasks: list[SkippedTask] = Field(default_factory=list)
    timeout_multiplier: float = Field(default=1.0, gt=0)
    """--timeout-multiplier: applied to every agent and verifier limit a task sets."""
    agent_timeout_sec: float | None = Field(default=None, gt=0)
    """--agent-timeout: the agent limit of every task."""
    profile: AgentProfile | None = None
    """--profile NAME, as it was when the run began (already applied to the fields above: model, max_turns,
    timeout_multiplier, learning, model_settings.options); its prompt text and tools reach every trial."""

    @property
    def time_limits(self) -> TimeLimits:
        return TimeLimits(multiplier=self.timeout_multiplier, agent_timeout_sec=self.agent_timeout_sec)


TrialStatus = Literal["pending", "running", "done"]


class TrialState(BaseModel):
    status: TrialStatus = "pending"
    attempts: int = 0
    """Times the trial was started; more than one means an earlier start was interrupted."""
    retries: int = 0
    """Attempts set aside after an infra error."""
    outcome: Outcome | None = None
    trial_dir: str | None = None
    server_reruns: int = 0
    """Attempts set aside because the model server failed: re-run without spending a retry."""


class Outage(BaseModel):
    """A pause of the run while the model server did not answer (the circuit breaker was open)."""

    model: str
    cause: str
    """The failure that opened the breaker (the last trial's error)."""
    started_at: str
    ended_at: str | None = None
    duration_sec: float | None = None
    ended: Literal["recovered", "max_outage", "stopped"] | None = None
    """None while the outage lasts."""
    probes: int = 0
    attempts_rerun: int = 0
    """Trial attempts the server failed around the outage, set aside and run again."""


class IterationState(BaseModel):
    iteration: int
    status: Literal["pending", "running", "done"] = "pending"
    started_at: str | None = None
    finished_at: str | None = None
    episode_id: str | None = None
    trials: dict[str, TrialState] = Field(default_factory=dict)


class RunState(Versioned):
    schema_version: int = 1
    run_id: str
    status: Literal["running", "interrupted", "stopped", "completed"] = "running"
    started_at: str
    updated_at: str
    resumes: int = 0
    iterations: list[IterationState]
    outages: list[Outage] = Field(default_factory=list)
    """Model-server outages the run waited through (or stopped at)."""

    @classmethod
    def new(cls, config: RunConfig) -> RunState:
        now = utcnow()
        return cls(
            run_id=config.run_id,
            started_at=now,
            updated_at=now,
            iterations=[
                IterationState(iteration=i, trials={t: TrialState() for t in config.task_ids})
                for i in range(1, config.iterations + 1)
            ],
        )

    def save(self, run_dir: Path) -> None:
        self.updated_at = utcnow()
        atomic_write_model(run_dir / STATE_FILE, self)


def load_run(state_path: Path, field: str | None = None) -> tuple[RunConfig, RunState]:
    """Read a run folder (for `--resume`: `field` names the option); anything unreadable is a one-line
    UserError."""
    if state_path.is_dir():
        state_path = state_path / STATE_FILE
    if not state_path.is_file():
        raise UserError(
            "no such run: no state.json here; give a run folder tbench wrote (or its state.json)",
            path=state_path,
            field=field,
        )
    config_path = state_path.parent / CONFIG_FILE
    if not config_path.is_file():
        raise UserError("config.json is missing beside state.json; this is not a tbench run folder", path=config_path)
    config = read_model(config_path, RunConfig, "a tbench run config")
    state = read_model(state_path, RunState, "a tbench run state")
    if state.run_id != config.run_id:
        raise UserError(f"run id {state.run_id!r} does not match config.json ({config.run_id!r})", path=state_path)
    return config, state
