"""How an iteration's trials get run. An executor sees the run only through `TrialBook` — begin a trial,
finish it, how long to wait before a retry or before any trial (the model-server circuit breaker), clean up
after a trial it lost, and whether to stop — so executors (one at a time in this process, worker processes,
later a cluster) never reach into the run's bookkeeping."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tbench.agents.base import ModelRunner
from tbench.bench.environments import EnvironmentFactory
from tbench.bench.trial import run_trial
from tbench.models.results import TrialResult
from tbench.models.task import Task
from tbench.models.trial import TrialSpec, WorkerJob

HOLD_POLL_SEC = 1.0
"""While the run is held, how often a waiting executor asks again (a stop request is seen this soon)."""


@dataclass
class StopControl:
    """Why the run should stop starting trials. Signals, the STOP file, --stop-after-iteration and the disk
    guard all land here; `cancel` (a second signal) also ends running trials."""

    reason: str | None = None
    exit_code: int = 0
    cancel: bool = False

    def request(self, reason: str, exit_code: int = 0) -> None:
        if self.reason is None:
            self.reason, self.exit_code = reason, exit_code


class TrialBook(Protocol):
    """What an executor may ask of the run it serves."""

    @property
    def stop(self) -> StopControl: ...

    @property
    def run_dir(self) -> Path:
        """The run folder (worker logs go under it; the disk guard watches its file system)."""
        ...

    @property
    def iterations_planned(self) -> int: ...

    def begin_trial(self, iteration: int, task: Task) -> TrialSpec:
        """Mark the trial running (saved) and give it a clean folder."""
        ...

    def finish_trial(self, iteration: int, task: Task, result: TrialResult) -> bool:
        """Commit `result`, or set the attempt aside for a retry; True when committed."""
        ...

    def retry_delay(self, iteration: int, task: Task) -> float: ...

    def hold(self) -> float:
        """Seconds to wait before starting any trial: 0 normally; while the model server is down (the circuit
        breaker is open), until its next probe, which the book runs itself when due."""
        ...

    def worker_job(self, spec: TrialSpec) -> WorkerJob:
        """What a process elsewhere needs to run `spec` (the spec and the model to build the agent from)."""
        ...

    def runner(self, spec: TrialSpec) -> ModelRunner:
        """The agent for `spec`, built in this process."""
        ...

    def cleanup_trial(self, trial_id: str) -> None:
        """Remove whatever a lost trial left running (its containers, by label)."""
        ...


class Executor(Protocol):
    def run_iteration(self, book: TrialBook, iteration: int, tasks: Sequence[Task]) -> None:
        """Run `tasks` (the iteration's unfinished trials) until each is committed or the book says stop."""
        ...

    def close(self) -> None: ...


class SequentialExecutor:
    """Phase 1: one trial at a time, in the orchestrator's own process."""

    def __init__(self, envs: EnvironmentFactory) -> None:
        self.envs = envs

    def run_iteration(self, book: TrialBook, iteration: int, tasks: Sequence[Task]) -> None:
        for task in tasks:
            while not book.stop.reason:
                wait = book.hold()
                if book.stop.reason:
                    break  # the model server stayed down past the outage limit
                if wait > 0:
                    time.sleep(min(wait, HOLD_POLL_SEC))
                    continue
                spec = book.begin_trial(iteration, task)
                result = run_trial(spec, book.runner(spec), self.envs.create)
                if book.finish_trial(iteration, task, result):
                    break
                time.sleep(book.retry_delay(iteration, task))
            if book.stop.reason:
                return

    def close(self) -> None:
        return None
