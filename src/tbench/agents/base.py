"""The agent contract: given a task and a started environment, act inside it until done or out of time.

An agent never decides the verdict; the verifier does. It reports what it spent (turns, tokens, cost) and
whether it ran out of time or failed on its own. The context and result types live in `bench.trial` so the
core never imports agents.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from tbench.bench.environments.base import Environment
from tbench.bench.tasks import Task
from tbench.bench.trial import AgentContext, AgentResult

__all__ = ["AgentContext", "AgentResult", "ModelRunner"]


class ModelRunner(ABC):
    """The seed's `ModelRunner`: `run_task(task, workspace)`, here with the trial's environment."""

    name: str = "agent"

    @abstractmethod
    def run_task(self, task: Task, env: Environment, ctx: AgentContext) -> AgentResult: ...

    def preflight(self) -> None:
        """Fail fast, before the first iteration, when the agent cannot possibly run (raise UserError)."""
        return None
