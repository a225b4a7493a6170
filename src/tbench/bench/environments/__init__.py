"""Environments behind one base class, created by `EnvironmentFactory` (which owns the engine client)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tbench.bench.environments.base import Environment, ExecResult, TrialLabels
from tbench.bench.environments.local import LocalEnvironment
from tbench.models.task import Task

__all__ = ["Environment", "EnvironmentFactory", "ExecResult", "TrialLabels"]


class EnvironmentFactory:
    """Makes the right environment per task; connects to the container engine only when a task needs it."""

    def __init__(self) -> None:
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            from tbench.bench.environments.docker import engine_client

            self._client = engine_client()
        return self._client

    def preflight(self, tasks: list[Task]) -> None:
        """Raise UserError now, not at 3 a.m., when container tasks have no engine to run on."""
        if any(t.environment.kind == "docker" for t in tasks):
            _ = self.client

    def create(self, task: Task, labels: TrialLabels, trial_dir: Path) -> Environment:
        if task.environment.kind == "local":
            return LocalEnvironment(task, labels, trial_dir)
        from tbench.bench.environments.docker import DockerEnvironment

        return DockerEnvironment(task, labels, trial_dir, self.client)

    def cleanup_run(self, run_id: str) -> int:
        """Remove containers a crashed run left behind; 0 when no engine is in use."""
        if self._client is None:
            return 0
        from tbench.bench.environments.docker import remove_run_containers

        return remove_run_containers(self._client, run_id)

    def cleanup_trial(self, trial_id: str) -> int:
        """Remove the containers of one trial whose worker was killed; 0 when no engine is in use."""
        if self._client is None:
            return 0
        from tbench.bench.environments.docker import remove_labelled, trial_label

        return remove_labelled(self._client, trial_label(trial_id))
