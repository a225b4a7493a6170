"""`oracle`: runs the task's reference solution. A task the oracle fails is a broken task."""

from __future__ import annotations

from tbench.agents.base import AgentContext, AgentResult, ModelRunner
from tbench.bench.environments.base import Environment
from tbench.bench.tasks import Task
from tbench.errors import FailureMode
from tbench.fsutil import tail


class OracleAgent(ModelRunner):
    name = "oracle"

    def run_task(self, task: Task, env: Environment, ctx: AgentContext) -> AgentResult:
        if task.solution is None:
            return AgentResult(failure_mode=FailureMode.AGENT_ERROR, error="task has no reference solution")
        for copy in task.solution.copies:
            env.copy_in(copy)
        res = env.exec(task.solution.command, timeout_sec=ctx.timeout_sec, log_path=ctx.logs_dir / "oracle.txt")
        if res.timed_out:
            return AgentResult(turns=1, timed_out=True, error=f"solution ran past {ctx.timeout_sec:g}s")
        if res.exit_code != 0:
            return AgentResult(
                turns=1,
                failure_mode=FailureMode.AGENT_ERROR,
                error=f"solution exited {res.exit_code}: {tail(res.output, 300)}",
            )
        return AgentResult(turns=1)
