"""The tool-calling agent loop, written once for every chat-API model.

A turn: fit the history into the context, ask the model (through a `ChatTransport`), keep its reply — tool
calls included — in the history, run each tool call in the trial's environment, and send each result back
with its tool's name. The loop ends when the model answers without a tool call, at the turn cap, or at the
task's deadline. Subclasses only say which transport to use (`OllamaAgent`, `OpenAIAgent`). A call the model
wrote as text instead of a structured call is lifted out of its reply (`llm/text_calls.py`), for every transport.
"""

from __future__ import annotations

import json
import threading
import time
from abc import abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tbench.agents.base import AgentContext, AgentNeeds, AgentResult, ModelRunner, require_confinement
from tbench.agents.prompts import time_left_note, tool_agent_system_prompt
from tbench.agents.tools import Toolbox, clip
from tbench.agents.trajectory import TrajectoryRecorder
from tbench.bench.environments.base import Environment
from tbench.errors import FailureMode, InfraError, ModelServerError, UserError
from tbench.llm.chat import ChatMessage, ChatReply, ChatTransport, DeadlineExceeded, ToolCall, ToolSpec
from tbench.llm.text_calls import find_text_tool_calls
from tbench.models.common import Tokens, utcnow
from tbench.models.task import Task
from tbench.models.trajectory import Step, StopReason, ToolCallRecord, ToolResultRecord
from tbench.secrets import Redactor

if TYPE_CHECKING:
    from tbench.models.model_settings import ModelConfig

#: Rough characters per token, on the safe side for code and logs; used only to decide when to trim.
CHARS_PER_TOKEN = 3.0
#: Tokens kept free for the model's answer when `num_predict` is not set.
ANSWER_RESERVE_TOKENS = 4096
#: The newest tool results are never emptied, only shortened if nothing else is left to trim.
KEEP_RECENT_RESULTS = 2
TRIMMED = "[trimmed]"
#: From this many identical calls in a row on, each result tells the model it is repeating itself.
REPEAT_NOTE_AFTER = 3
#: The circuit breaker's probe chat must answer within this.
PROBE_DEADLINE_SEC = 60.0


def lift_text_calls(msg: ChatMessage, tools: Sequence[ToolSpec]) -> bool:
    """A reply with no structured call but a call written as text (Hermes tags, fenced or bare JSON) gets
    that call, so a model whose server does not parse its calls still acts instead of ending the episode."""
    if msg.tool_calls:
        return False
    msg.tool_calls = find_text_tool_calls(msg.content, {t.name for t in tools})
    return bool(msg.tool_calls)


def _size(m: ChatMessage) -> int:
    size = len(m.content) + 16
    for call in m.tool_calls:
        size += len(call.name) + len(json.dumps(call.arguments, ensure_ascii=False)) + 16
    return size


def fit_context(messages: list[ChatMessage], budget_chars: int) -> int:
    """Trim old tool traffic, oldest first, until the history fits; returns how many parts were trimmed.

    Trimming goes down to 3/4 of the budget, so it happens rarely (each trim invalidates the server's prompt
    cache from that point on). The system prompt and the task are never touched."""
    total = sum(_size(m) for m in messages)
    if total <= budget_chars:
        return 0
    target = int(budget_chars * 0.75)
    results = [i for i, m in enumerate(messages) if m.role == "tool"]
    protected = set(results[-KEEP_RECENT_RESULTS:])
    last_assistant = max((i for i, m in enumerate(messages) if m.role == "assistant"), default=-1)
    trimmed = 0
    for i, m in enumerate(messages):
        if total <= target:
            break
        if m.role == "tool" and i not in protected and not m.content.startswith(TRIMMED):
            before = _size(m)
            m.content = f"{TRIMMED} {m.tool_name or 'tool'} output removed to fit the context ({len(m.content)} chars)"
            total -= before - _size(m)
            trimmed += 1
        elif m.role == "assistant" and i != last_assistant:
            before = _size(m)
            if _shrink_arguments(m):
                total -= before - _size(m)
                trimmed += 1
    if total > budget_chars:  # still too big: shorten what is left, newest results included
        for i in sorted(protected):
            m = messages[i]
            keep = max(500, len(m.content) // 4)
            if len(m.content) > keep + 100:
                before = _size(m)
                m.content = clip(m.content, keep) + f"\n{TRIMMED} (cut to fit the context)"
                total -= before - _size(m)
                trimmed += 1
    return trimmed


def _shrink_arguments(m: ChatMessage) -> bool:
    """Long string arguments (a write_file's content) of an old call are replaced by their length."""
    changed = False
    for call in m.tool_calls:
        for key, value in call.arguments.items():
            if isinstance(value, str) and len(value) > 400 and not value.startswith(TRIMMED):
                call.arguments[key] = f"{TRIMMED} {len(value)} chars"
                changed = True
    return changed


class ToolLoopAgent(ModelRunner):
    """A chat model driving shell/read_file/write_file tools in the trial's environment."""

    name = "tool-loop"
    tools = ("shell", "read_file", "write_file")
    raw_output_file = "chat.jsonl"

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._transport: ChatTransport | None = None
        self._described = False
        self._lock = threading.Lock()

    @abstractmethod
    def make_transport(self) -> ChatTransport: ...

    @property
    def transport(self) -> ChatTransport:
        if self._transport is None:
            self._transport = self.make_transport()
        return self._transport

    @property
    def num_ctx(self) -> int:
        return int(getattr(self.transport, "num_ctx", self.config.options.num_ctx))

    def preflight(self, tasks: Sequence[Task] = ()) -> None:
        require_confinement(self.name, tasks, unsafe=self.config.unsafe_host_agent)
        self.transport.preflight()
        self._described = True

    def _describe(self) -> None:
        """A runner built without a preflight (a worker process) still learns the model's context size once; a
        server that has gone away since the run started is an infra error."""
        with self._lock:
            if self._described:
                return
            try:
                self.transport.preflight()
            except UserError as exc:
                raise ModelServerError(exc.message) from None
            self._described = True

    def probe(self) -> str | None:
        """The model is described, then asked one short question: a server that lists its models while its
        runner crashes on every chat (Ollama's 500 "llama runner process has terminated") is still down."""
        try:
            self.transport.preflight()
            self.transport.chat(
                [ChatMessage(role="user", content="Reply with the word ok.")], [],
                deadline=time.monotonic() + PROBE_DEADLINE_SEC,
            )  # fmt: skip
        except UserError as exc:
            return exc.message
        except Exception as exc:  # a probe reports; it never ends the run
            return f"{type(exc).__name__}: {exc}"
        return None

    def environment_needs(self, task: Task) -> AgentNeeds:
        return AgentNeeds(allow_unconfined=self.config.unsafe_host_agent)

    def context_budget_chars(self) -> int:
        reserve = self.config.options.num_predict or ANSWER_RESERVE_TOKENS
        tokens = max(1024, self.num_ctx - min(reserve, self.num_ctx // 2))
        return int(tokens * CHARS_PER_TOKEN)

    def run_task(self, task: Task, env: Environment, ctx: AgentContext) -> AgentResult:
        self._describe()
        return _Episode(self, task, env, ctx).run()


class _Episode:
    """One task, one conversation."""

    def __init__(self, agent: ToolLoopAgent, task: Task, env: Environment, ctx: AgentContext) -> None:
        self.agent = agent
        self.ctx = ctx
        self.deadline = time.monotonic() + ctx.timeout_sec
        self.tools = Toolbox(env, deadline=self.deadline, allowed=ctx.tools)
        self.redact = Redactor()
        system = tool_agent_system_prompt(
            env.workdir, ctx.system_prompt_append, ctx.budget_sec, [t.name for t in self.tools.specs]
        )
        self.messages = [ChatMessage(role="system", content=system), ChatMessage(role="user", content=ctx.instruction)]
        self.raw_path: Path = ctx.logs_dir / agent.raw_output_file
        self.trajectory = TrajectoryRecorder(
            ctx.logs_dir,
            agent=agent.name,
            model=agent.config.label,
            task_id=task.id,
            instruction=ctx.instruction,
            system_prompt=system,
            raw_output=agent.raw_output_file,
            redact=self.redact,
        )
        self.tokens = Tokens()
        self.turns = 0
        self._last_call: tuple[str, str] | None = None
        self._repeats = 0

    def run(self) -> AgentResult:
        budget = self.agent.context_budget_chars()
        max_turns = self.ctx.max_turns
        try:
            while True:
                if max_turns is not None and self.turns >= max_turns:
                    return self._end("max_turns", FailureMode.AGENT_ERROR, f"stopped at the turn cap ({max_turns})")
                if time.monotonic() >= self.deadline:
                    return self._end("timeout", error=f"ran out of time ({self.ctx.timeout_sec:g}s)")
                fit_context(self.messages, budget)
                step = self.trajectory.step()
                reply = self.agent.transport.chat(self.messages, self.tools.specs, deadline=self.deadline)
                self.turns += 1
                lift_text_calls(reply.message, self.tools.specs)
                self._record_reply(step, reply)
                self.messages.append(reply.message)
                if not reply.message.tool_calls:
                    step.finished_at = utcnow()
                    return self._end("completed")
                calls = reply.message.tool_calls
                for i, call in enumerate(calls):
                    outcome = self.tools.run(call)
                    text = outcome.text + self._repeat_note(call)
                    if i == len(calls) - 1 and self.ctx.budget_sec is not None:
                        text += time_left_note(self.deadline - time.monotonic(), self.ctx.budget_sec)
                    self.messages.append(
                        ChatMessage(role="tool", content=text, tool_name=call.name, tool_call_id=call.id)
                    )
                    step.tool_results.append(
                        ToolResultRecord(
                            call_id=call.id,
                            name=call.name,
                            output=text,
                            is_error=outcome.is_error,
                            exit_code=outcome.exit_code,
                            duration_ms=outcome.duration_ms,
                        )
                    )
                step.finished_at = utcnow()
                self.trajectory.save()
        except DeadlineExceeded as exc:
            return self._end("timeout", error=str(exc))
        except InfraError as exc:
            down = isinstance(exc, ModelServerError)
            return self._end("infra_error", FailureMode.INFRA_ERROR, str(exc), model_server_down=down)

    def _repeat_note(self, call: ToolCall) -> str:
        """Small models repeat a command whose result cannot change until the turn cap; saying so in the
        result sometimes breaks the loop (and the cap still ends it cleanly when it does not)."""
        key = (call.name, json.dumps(call.arguments, sort_keys=True, ensure_ascii=False))
        self._repeats = self._repeats + 1 if key == self._last_call else 1
        self._last_call = key
        if self._repeats < REPEAT_NOTE_AFTER:
            return ""
        return (
            f"\n[note: {self._repeats} identical {call.name} calls in a row; repeating it is unlikely to "
            "help. Try something different, or reply without a tool call if the task is done.]"
        )

    def _record_reply(self, step: Step, reply: ChatReply) -> None:
        t = reply.tokens
        self.tokens = Tokens(
            input=self.tokens.input + t.input,
            output=self.tokens.output + t.output,
            cache_read=self.tokens.cache_read + t.cache_read,
        )
        msg = reply.message
        step.assistant_text = msg.content
        step.thinking = msg.thinking
        step.tool_calls = [ToolCallRecord(id=c.id, name=c.name, arguments=dict(c.arguments)) for c in msg.tool_calls]
        step.tokens = reply.tokens
        step.model_ms = reply.wall_ms
        step.server_ms = reply.server_ms
        line = {
            "turn": self.turns,
            "at": utcnow(),
            "content": msg.content,
            "thinking": msg.thinking,
            "tool_calls": [{"name": c.name, "arguments": c.arguments} for c in msg.tool_calls],
            "done_reason": reply.done_reason,
            "tokens": reply.tokens.model_dump(),
            "wall_ms": reply.wall_ms,
            "server_ms": reply.server_ms,
        }
        with self.raw_path.open("a", encoding="utf-8") as fh:
            fh.write(self.redact(json.dumps(line, ensure_ascii=False)) + "\n")

    def _end(
        self,
        reason: StopReason,
        mode: FailureMode | None = None,
        error: str | None = None,
        *,
        model_server_down: bool = False,
    ) -> AgentResult:
        error = self.redact(error) if error else None
        self.trajectory.finish(reason, turns=self.turns, tokens=self.tokens, error=error)
        return AgentResult(
            turns=self.turns,
            tokens=self.tokens,
            cost_usd=None,
            timed_out=reason == "timeout",
            failure_mode=mode,
            error=error,
            model_server_down=model_server_down,
        )
