"""The agent contract: given a task and a started environment, act inside it until done or out of time.

An agent never decides the verdict; the verifier does. It reports what it spent (turns, tokens, cost) and
whether it ran out of time or failed on its own. The context and result types live in `bench.trial` so the
core never imports agents.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

from tbench.bench.environments.base import AgentNeeds, Environment
from tbench.bench.environments.local import confinement
from tbench.bench.trial import AgentContext, AgentResult
from tbench.errors import UserError
from tbench.models.task import Task

__all__ = ["AgentContext", "AgentNeeds", "AgentResult", "ModelRunner"]


class ModelRunner(ABC):
    """The seed's `ModelRunner`: `run_task(task, workspace)`, here with the trial's environment."""

    name: str = "agent"
    tools: tuple[str, ...] = ()
    """The tools the agent's model can call (a lesson scoped to a tool is shown only where it exists)."""

    @abstractmethod
    def run_task(self, task: Task, env: Environment, ctx: AgentContext) -> AgentResult: ...

    def preflight(self, tasks: Sequence[Task] = ()) -> None:
        """Fail fast, before the first iteration, when the agent cannot possibly run (raise UserError)."""
        return None

    def probe(self) -> str | None:
        """Whether the model server answers now (the circuit breaker's re-probe): None when it does, else why
        not. An agent without a model server always answers."""
        try:
            self.preflight(())
        except UserError as exc:
            return exc.message
        except Exception as exc:  # a probe reports; it never ends the run
            return f"{type(exc).__name__}: {exc}"
        return None

    def environment_needs(self, task: Task) -> AgentNeeds:
        return AgentNeeds()


def require_confinement(agent: str, tasks: Sequence[Task], *, unsafe: bool) -> None:
    """A model agent on host-workspace tasks needs a sandbox, or the user's explicit `--unsafe-host-agent`."""
    local = [t.id for t in tasks if t.environment.kind == "local"]
    if not local or unsafe:
        return
    jail = confinement()
    if jail.available:
        return
    shown = ", ".join(local[:5]) + (", …" if len(local) > 5 else "")
    raise UserError(
        f"the {agent} agent would run its commands on this host unconfined for local task(s) {shown}: "
        f"{jail.reason}. Install bubblewrap, or accept the risk with --unsafe-host-agent",
        field="model",
    )
