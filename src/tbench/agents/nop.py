"""`nop`: does nothing. A task the nop agent passes is a broken task."""

from __future__ import annotations

from tbench.agents.base import AgentContext, AgentResult, ModelRunner
from tbench.agents.trajectory import TrajectoryRecorder
from tbench.bench.environments.base import Environment
from tbench.models.common import Tokens
from tbench.models.task import Task


class NopAgent(ModelRunner):
    name = "nop"

    def run_task(self, task: Task, env: Environment, ctx: AgentContext) -> AgentResult:
        recorder = TrajectoryRecorder(ctx.logs_dir, agent=self.name, task_id=task.id, instruction=ctx.instruction)
        recorder.finish("completed", turns=0, tokens=Tokens())
        return AgentResult(turns=0)
