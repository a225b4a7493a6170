"""What the tool-calling loop and a model server say to each other, independent of the wire protocol.

The loop (`agents/tool_loop.py`) speaks only these types; a transport (`llm/ollama.py`,
`llm/openai_compat.py`) maps them to its requests, retries what is worth retrying, and raises
`ModelServerError` (an `InfraError`) when the server stays broken — so adding a protocol never means copying
the loop.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from tbench.errors import ModelServerError
from tbench.models.common import Tokens

R = TypeVar("R")


@dataclass(frozen=True)
class ToolSpec:
    name: str
    description: str
    parameters: dict[str, Any]
    """JSON schema of the arguments object."""


@dataclass(frozen=True)
class ToolCall:
    name: str
    arguments: dict[str, Any]
    id: str | None = None
    """Protocols that pair calls and results by id keep it; Ollama pairs them by order and `tool_name`."""


@dataclass
class ChatMessage:
    role: str
    """system | user | assistant | tool"""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_name: str | None = None
    """On a tool result: the tool it answers."""
    tool_call_id: str | None = None
    thinking: str | None = None


@dataclass
class ChatReply:
    message: ChatMessage
    tokens: Tokens
    done_reason: str | None = None
    wall_ms: int = 0
    """Time the call took as seen by the agent (transfer included)."""
    server_ms: int | None = None
    """Time the server says it spent (Ollama: total_duration) — the model's own time."""


@dataclass(frozen=True)
class ModelInfo:
    name: str
    context_length: int | None = None
    capabilities: tuple[str, ...] = ()


class RetryableError(Exception):
    """A failure of the server or the network that another attempt may not meet."""


def call_with_retries(once: Callable[[], R], *, retries: int, backoff_sec: float, deadline: float, who: str) -> R:
    """`once()` until it succeeds, retrying RetryableError with exponential backoff; InfraError when the
    retries are spent or the next retry would start past `deadline` (one policy for every transport)."""
    attempt = 0
    while True:
        if time.monotonic() >= deadline:
            raise DeadlineExceeded("the task's time ran out before the model answered")
        try:
            return once()
        except RetryableError as exc:
            if attempt >= retries:
                raise ModelServerError(f"{who} failed after {attempt + 1} attempt(s): {exc}") from None
            delay = backoff_sec * 2**attempt
            if time.monotonic() + delay >= deadline:
                raise ModelServerError(f"{who} failed and the task's time ran out before a retry: {exc}") from None
            time.sleep(delay)
            attempt += 1


class DeadlineExceeded(Exception):
    """The task's time ran out while waiting for the model."""


class ChatTransport(Protocol):
    """One model on one server. Must be safe to call from several threads at once (parallel trials)."""

    label: str

    def preflight(self) -> ModelInfo:
        """Raise UserError (one clear line) when the server is unreachable or the model unusable."""
        ...

    def chat(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], *, deadline: float) -> ChatReply:
        """One model turn. Raises InfraError when retries are spent, DeadlineExceeded past `deadline`
        (a `time.monotonic()` value)."""
        ...
