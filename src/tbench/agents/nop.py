"""`nop`: does nothing. A task the nop agent passes is a broken task."""

from __future__ import annotations

from tbench.agents.base import AgentContext, AgentResult, ModelRunner
from tbench.bench.environments.base import Environment
from tbench.bench.tasks import Task


class NopAgent(ModelRunner):
    name = "nop"

    def run_task(self, task: Task, env: Environment, ctx: AgentContext) -> AgentResult:
        return AgentResult(turns=0)
