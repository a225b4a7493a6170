"""What one trial is asked to do (`TrialSpec`), and the files a worker process shares with the orchestrator:
`worker-job.json` (the spec plus the model to build the agent from) and `heartbeat.json`."""

from __future__ import annotations

import time
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from tbench.errors import FailureMode
from tbench.models.model_settings import ModelConfig
from tbench.models.results import TrialResult, error_result
from tbench.models.task import Task


class TrialSpec(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Task
    run_id: str
    iteration: int
    trial_id: str
    trial_dir: Path
    run_dir: Path
    """The run folder where it is now (never a path remembered from before a move)."""
    model_label: str
    default_timeout_sec: float
    max_turns: int | None = None
    system_prompt_append: str | None = None
    budget_hint: bool = True
    """Tell the agent its time budget (config.json's `budget_hint`)."""
    lesson_ids: tuple[str, ...] = ()
    """Ids of the lessons in `system_prompt_append`, recorded on the result."""
    tools: tuple[str, ...] | None = None
    """The only tools the agent may offer its model (a profile's `tools`); None: all of its own."""


class WorkerJob(BaseModel):
    """`worker-job.json`: everything a worker needs to run the trial, and nothing of the run it belongs to."""

    spec: TrialSpec
    model: ModelConfig


class Heartbeat(BaseModel):
    """`heartbeat.json`: a worker's phase, that phase's budget, and a beat every second."""

    pid: int
    phase: str
    phase_started: float
    """Epoch seconds."""
    phase_budget_sec: float | None
    beat_at: float


def lost_result(spec: TrialSpec, message: str, started: float) -> TrialResult:
    """A trial whose runner was lost (a dead or hung worker, a lost node): an infra error, retried by the grading
    policy. `started`: epoch seconds when it was handed out."""
    return error_result(
        mode=FailureMode.INFRA_ERROR,
        message=message,
        trial_id=spec.trial_id,
        run_id=spec.run_id,
        iteration=spec.iteration,
        task_id=spec.task.id,
        task_name=spec.task.name,
        model=spec.model_label,
        trial_dir=spec.trial_dir.relative_to(spec.run_dir).as_posix(),
        duration_ms=int((time.time() - started) * 1000),
    )
