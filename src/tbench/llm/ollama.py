"""A thin layer over the official `ollama` client: preflight, streamed chat with retries, token accounting.

Why streamed: a stalled server shows up as silence between chunks (bounded by `request_timeout_sec`), and
the task deadline can cut a long generation short, where a single blocking response could hang a trial.
Failures that say nothing about the agent (connection refused, 5xx, a mid-stream `{"error"}` line, a stall)
are retried with backoff and then raised as `InfraError`, so the trial is an infra error, never an agent
failure.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

import httpx
import ollama
import pydantic

from tbench.errors import InfraError, UserError
from tbench.llm.chat import (
    ChatMessage,
    ChatReply,
    DeadlineExceeded,
    ModelInfo,
    RetryableError,
    ToolCall,
    ToolSpec,
    call_with_retries,
)
from tbench.models.common import Tokens
from tbench.models.model_settings import ChatOptions

DEFAULT_ENDPOINT = "http://localhost:11434"
PREFLIGHT_TIMEOUT_SEC = 10.0
CONNECT_TIMEOUT_SEC = 10.0
_RETRY_STATUS = frozenset({408, 429})
# A request goes out as headers then body: with Nagle's algorithm on, the body can wait ~40 ms for the ACK.
_NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]
TOOLS_CATALOGUE = "https://ollama.com/search?c=tools"


class _Retryable(RetryableError):
    """A failure of the server or the network that another attempt may not meet."""


class OllamaTransport:
    """One model on one Ollama server (`ChatTransport`). Each thread gets its own client, so parallel trials
    never share an HTTP connection or a per-call timeout."""

    def __init__(self, endpoint: str, model: str, options: ChatOptions | None = None) -> None:
        self.endpoint = endpoint
        self.model = model
        self.options = options or ChatOptions()
        self.label = f"ollama:{model}"
        self.num_ctx = self.options.num_ctx
        self._local = threading.local()

    # ------------------------------------------------------------------ preflight

    def preflight(self) -> ModelInfo:
        """Server reachable, model present, model able to call tools — or one clear UserError, in seconds."""
        client = ollama.Client(host=self.endpoint, timeout=httpx.Timeout(PREFLIGHT_TIMEOUT_SEC))
        try:
            show = client.show(self.model)
        except (ConnectionError, httpx.TransportError) as exc:
            raise UserError(
                f"cannot reach the Ollama server at {self.endpoint} ({_why(exc)}); start it (`ollama serve`) or "
                "point --ollama-endpoint (or OLLAMA_HOST) at a running one",
                field="ollama_endpoint",
            ) from None
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise UserError(
                    f"model {self.model!r} is not on the Ollama server at {self.endpoint}; pull it with "
                    f"`ollama pull {self.model}`{self._available(client)}",
                    field="model",
                ) from None
            raise UserError(
                f"the Ollama server at {self.endpoint} refused to describe {self.model!r}: {exc.error} "
                f"(HTTP {exc.status_code})",
                field="model",
            ) from None
        finally:
            client._client.close()
        caps = tuple(show.capabilities or ())
        if show.capabilities is not None and "tools" not in caps:
            raise UserError(
                f"model {self.model!r} cannot call tools (its capabilities: {', '.join(caps) or 'none'}); the "
                f"Ollama agent needs a tool-calling model such as qwen3, qwen2.5-coder, llama3.1 or gpt-oss "
                f"({TOOLS_CATALOGUE})",
                field="model",
            )
        context = _context_length(show.modelinfo or {})
        if context:
            self.num_ctx = min(self.options.num_ctx, context)
        return ModelInfo(name=self.model, context_length=context, capabilities=caps)

    @staticmethod
    def _available(client: ollama.Client) -> str:
        try:
            names = sorted(m.model for m in client.list().models if m.model)
        except Exception:  # the hint is optional; the error message stands without it
            return ""
        if not names:
            return " (the server has no models yet)"
        shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
        return f" (the server has: {shown})"

    # ------------------------------------------------------------------ chat

    def chat(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], *, deadline: float) -> ChatReply:
        wire_messages = [_to_wire(m) for m in messages]
        wire_tools = [
            {"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in tools
        ]
        return call_with_retries(
            lambda: self._once(wire_messages, wire_tools, deadline),
            retries=self.options.retries,
            backoff_sec=self.options.retry_backoff_sec,
            deadline=deadline,
            who=f"Ollama at {self.endpoint} for {self.model!r}",
        )

    def _client(self) -> ollama.Client:
        client: ollama.Client | None = getattr(self._local, "client", None)
        if client is None:
            client = ollama.Client(
                host=self.endpoint,
                timeout=httpx.Timeout(self.options.request_timeout_sec),
                transport=httpx.HTTPTransport(socket_options=_NODELAY),
            )
            self._local.client = client
        return client

    def _request_options(self) -> dict[str, Any]:
        o = self.options
        opts: dict[str, Any] = {"num_ctx": self.num_ctx}
        for key in ("temperature", "top_p", "seed", "num_predict"):
            if (value := getattr(o, key)) is not None:
                opts[key] = value
        return opts

    def _once(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]], deadline: float) -> ChatReply:
        client = self._client()
        remaining = max(0.1, deadline - time.monotonic())
        # The per-call bound: the task's remaining time or the stall limit, whichever is shorter. The client
        # is this thread's own, so setting its timeout cannot race with another trial.
        client._client.timeout = httpx.Timeout(
            min(self.options.request_timeout_sec, remaining + 1.0), connect=min(CONNECT_TIMEOUT_SEC, remaining)
        )
        t0 = time.monotonic()
        content: list[str] = []
        thinking: list[str] = []
        calls: list[ToolCall] = []
        final: ollama.ChatResponse | None = None
        stream: Iterator[ollama.ChatResponse] | None = None
        try:
            stream = client.chat(
                self.model,
                messages=messages,
                tools=tools,
                stream=True,
                options=self._request_options(),
                keep_alive=_keep_alive(self.options.keep_alive),
                think=self.options.think,
            )
            for part in stream:
                msg = part.message
                if msg.content:
                    content.append(msg.content)
                if msg.thinking:
                    thinking.append(msg.thinking)
                for call in msg.tool_calls or ():
                    calls.append(ToolCall(name=call.function.name, arguments=dict(call.function.arguments or {})))
                if part.done:
                    final = part
                if time.monotonic() > deadline:
                    raise DeadlineExceeded("the task's time ran out while the model was answering")
        except ollama.ResponseError as exc:
            status = exc.status_code
            if status == -1 or status >= 500 or status in _RETRY_STATUS:
                where = "mid-stream error" if status == -1 else f"HTTP {status}"
                raise _Retryable(f"{where}: {exc.error}") from None
            raise InfraError(f"Ollama at {self.endpoint} refused the request for {self.model!r}: {exc}") from None
        except (ConnectionError, httpx.TransportError) as exc:
            raise _Retryable(_why(exc)) from None
        except (json.JSONDecodeError, pydantic.ValidationError) as exc:
            raise _Retryable(f"malformed response: {str(exc).splitlines()[0]}") from None
        finally:
            if stream is not None and hasattr(stream, "close"):
                stream.close()
        if final is None:
            raise _Retryable("the response stream ended without its final (done) chunk")
        wall_ms = int((time.monotonic() - t0) * 1000)
        return ChatReply(
            message=ChatMessage(
                role="assistant",
                content="".join(content),
                tool_calls=calls,
                thinking="".join(thinking) or None,
            ),
            tokens=Tokens(input=final.prompt_eval_count or 0, output=final.eval_count or 0),
            done_reason=final.done_reason,
            wall_ms=wall_ms,
            server_ms=final.total_duration // 1_000_000 if final.total_duration is not None else None,
        )


def _to_wire(m: ChatMessage) -> dict[str, Any]:
    """Ollama's message shape: tool calls stay on the assistant message; a result names its tool."""
    out: dict[str, Any] = {"role": m.role, "content": m.content}
    if m.tool_calls:
        out["tool_calls"] = [{"function": {"name": c.name, "arguments": c.arguments}} for c in m.tool_calls]
    if m.tool_name:
        out["tool_name"] = m.tool_name
    return out


def _keep_alive(value: str | None) -> str | float | None:
    """A bare number means seconds (Ollama rejects unit-less duration strings)."""
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        return value


def _context_length(model_info: Any) -> int | None:
    for key, value in dict(model_info).items():
        if key.endswith(".context_length") and isinstance(value, int) and value > 0:
            return value
    return None


def _why(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    name = type(exc).__name__
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer within the time limit ({name})"
    if isinstance(exc, ConnectionError) and "Failed to connect" in text:
        return "connection refused"
    return f"{name}: {text}" if text else name
