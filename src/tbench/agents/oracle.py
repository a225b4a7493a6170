"""`oracle`: runs the task's reference solution. A task the oracle fails is a broken task."""

from __future__ import annotations

from tbench.agents.base import AgentContext, AgentResult, ModelRunner
from tbench.agents.trajectory import TrajectoryRecorder
from tbench.bench.environments.base import Environment
from tbench.errors import FailureMode
from tbench.fsutil import tail
from tbench.models.common import Tokens, utcnow
from tbench.models.task import Task
from tbench.models.trajectory import ToolCallRecord, ToolResultRecord

RAW_OUTPUT = "oracle.txt"


class OracleAgent(ModelRunner):
    name = "oracle"

    def run_task(self, task: Task, env: Environment, ctx: AgentContext) -> AgentResult:
        trajectory = TrajectoryRecorder(
            ctx.logs_dir, agent=self.name, task_id=task.id, instruction=ctx.instruction, raw_output=RAW_OUTPUT
        )
        if task.solution is None:
            error = "task has no reference solution"
            trajectory.finish("agent_error", turns=0, tokens=Tokens(), error=error)
            return AgentResult(failure_mode=FailureMode.AGENT_ERROR, error=error)
        step = trajectory.step()
        step.tool_calls.append(ToolCallRecord(name="shell", arguments={"command": task.solution.command}))
        for copy in task.solution.copies:
            env.copy_in(copy)
        res = env.exec(task.solution.command, timeout_sec=ctx.timeout_sec, log_path=ctx.logs_dir / RAW_OUTPUT)
        step.tool_results.append(
            ToolResultRecord(
                name="shell",
                output=tail(res.output),
                is_error=res.exit_code != 0,
                exit_code=res.exit_code,
                duration_ms=res.duration_ms,
            )
        )
        step.finished_at = utcnow()
        if res.timed_out:
            result = AgentResult(turns=1, timed_out=True, error=f"solution ran past {ctx.timeout_sec:g}s")
            trajectory.finish("timeout", turns=1, tokens=Tokens(), error=result.error)
            return result
        if res.exit_code != 0:
            result = AgentResult(
                turns=1,
                failure_mode=FailureMode.AGENT_ERROR,
                error=f"solution exited {res.exit_code}: {tail(res.output, 300)}",
            )
            trajectory.finish("agent_error", turns=1, tokens=Tokens(), error=result.error)
            return result
        trajectory.finish("completed", turns=1, tokens=Tokens())
        return AgentResult(turns=1)
