"""Any OpenAI-compatible chat server (llama.cpp's llama-server, vLLM, LM Studio, LocalAI, Ollama's /v1, OpenAI)
through the official `openai` client: preflight with a tool-call probe, chat with retries, token accounting.

Why a probe: these servers all accept `tools`, but whether a model's calls come back as structured `tool_calls`
depends on the server's chat template and tool parser. A server that returns them as text would make every
trial a slow, silent failure, so the preflight asks for one tiny call and refuses the run in one line, naming
the usual fix, when it does not get a real one.

Why not streamed (unlike the Ollama transport): each call is bounded by the task's remaining time and
`request_timeout_sec`, and the servers differ in how (and whether) they report usage in a stream; one
response per turn is what they all do the same way.
"""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any, cast

import openai
from openai.types.chat import ChatCompletion

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
from tbench.llm.text_calls import find_text_tool_calls
from tbench.models.common import Tokens
from tbench.models.model_settings import ChatOptions

DEFAULT_ENDPOINT = "https://api.openai.com/v1"
PREFLIGHT_TIMEOUT_SEC = 10.0
PROBE_TIMEOUT_SEC = 120.0
"""A CPU-only server needs several seconds for even the probe's short prompt."""
_RETRY_STATUS = frozenset({408, 409, 429})
PROBE_TOOL = ToolSpec(
    name="record_word",
    description="Record one word.",
    parameters={
        "type": "object",
        "properties": {"word": {"type": "string", "description": "The word to record."}},
        "required": ["word"],
    },
)
PROBE_MESSAGES = (
    ChatMessage(role="system", content="You are a function-calling assistant. Answer only by calling a tool."),
    ChatMessage(role="user", content='Call the record_word tool with the word "ready".'),
)
TEXT_CALLS_FIX = (
    "the server's chat template or tool parser does not turn them into tool_calls — llama.cpp: run llama-server "
    "with --jinja (and, for Qwen2.5-Coder, a --chat-template-file whose <tool_call> tags read [tool_call]); "
    "vLLM: --enable-auto-tool-choice --tool-call-parser hermes; LM Studio: a model marked for tool use"
)


class _Retryable(RetryableError):
    """A failure of the server or the network that another attempt may not meet."""


def api_key() -> str:
    """OPENAI_API_KEY from the environment, passed to the client and never stored; local servers need none,
    but the client insists on a value."""
    return os.environ.get("OPENAI_API_KEY") or "not-needed"


class OpenAICompatTransport:
    """One model on one OpenAI-compatible server (`ChatTransport`); each thread gets its own client."""

    def __init__(self, endpoint: str, model: str, options: ChatOptions | None = None) -> None:
        self.endpoint = endpoint
        self.model = model
        self.options = options or ChatOptions()
        self.label = f"openai:{model}"
        self.num_ctx = self.options.num_ctx
        self._local = threading.local()

    def _client(self) -> openai.OpenAI:
        client: openai.OpenAI | None = getattr(self._local, "client", None)
        if client is None:
            client = openai.OpenAI(
                base_url=self.endpoint,
                api_key=api_key(),
                max_retries=0,  # retried here, within the task's deadline
                timeout=self.options.request_timeout_sec,
            )
            self._local.client = client
        return client

    # ------------------------------------------------------------------ preflight

    def preflight(self) -> ModelInfo:
        """Server reachable, model listed in /v1/models, and a real `tool_calls` answer to a tiny probe — or one
        clear UserError."""
        client = self._client()
        try:
            listed = [m.id for m in client.models.list(timeout=PREFLIGHT_TIMEOUT_SEC)]
        except openai.APIConnectionError as exc:
            raise UserError(
                f"cannot reach the OpenAI-compatible server at {self.endpoint} ({_why(exc)}); start it or point "
                "--openai-endpoint (or OPENAI_BASE_URL) at a running one, e.g. http://127.0.0.1:8080/v1",
                field="openai_endpoint",
            ) from None
        except openai.AuthenticationError:
            raise UserError(
                f"the server at {self.endpoint} refused the API key (HTTP 401); set OPENAI_API_KEY to a valid key",
                field="openai_endpoint",
            ) from None
        except openai.APIStatusError as exc:
            raise UserError(
                f"the server at {self.endpoint} did not list its models (HTTP {exc.status_code} from /models); is "
                "this an OpenAI-compatible base URL (usually ending in /v1)?",
                field="openai_endpoint",
            ) from None
        if self.model not in listed:
            shown = ", ".join(listed[:10]) + (", …" if len(listed) > 10 else "")
            raise UserError(
                f"model {self.model!r} is not served at {self.endpoint} (it lists: {shown or 'no models'})",
                field="model",
            )
        self._probe(client)
        return ModelInfo(name=self.model, capabilities=("tools",))

    def _probe(self, client: openai.OpenAI) -> None:
        try:
            reply = self._once(
                client, list(PROBE_MESSAGES), [PROBE_TOOL], time.monotonic() + PROBE_TIMEOUT_SEC, probe=True
            )
        except (_Retryable, InfraError) as exc:
            raise UserError(
                f"the tool-call probe to {self.model!r} at {self.endpoint} failed: {exc}", field="model"
            ) from None
        msg = reply.message
        if any(c.name == PROBE_TOOL.name for c in msg.tool_calls):
            return
        if find_text_tool_calls(msg.content, {PROBE_TOOL.name}):
            raise UserError(
                f"{self.model!r} at {self.endpoint} wrote its tool call as text, not as tool_calls: {TEXT_CALLS_FIX}",
                field="model",
            )
        said = " ".join(msg.content.split())[:120] or "an empty message"
        raise UserError(
            f"{self.model!r} at {self.endpoint} did not call the probe tool (it answered {said!r}); the model or "
            "server may not support tool calling",
            field="model",
        )

    # ------------------------------------------------------------------ chat

    def chat(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], *, deadline: float) -> ChatReply:
        client = self._client()
        return call_with_retries(
            lambda: self._once(client, messages, tools, deadline),
            retries=self.options.retries,
            backoff_sec=self.options.retry_backoff_sec,
            deadline=deadline,
            who=f"{self.endpoint} for {self.model!r}",
        )

    def _request(self, probe: bool) -> dict[str, Any]:
        o = self.options
        extra: dict[str, Any] = {}
        if probe:
            extra = {"temperature": 0, "max_tokens": 64}
        else:
            if o.temperature is not None:
                extra["temperature"] = o.temperature
            if o.top_p is not None:
                extra["top_p"] = o.top_p
            if o.num_predict is not None:
                extra["max_tokens"] = o.num_predict
        if o.seed is not None:
            extra["seed"] = o.seed
        return extra

    def _once(
        self,
        client: openai.OpenAI,
        messages: Sequence[ChatMessage],
        tools: Sequence[ToolSpec],
        deadline: float,
        *,
        probe: bool = False,
    ) -> ChatReply:
        remaining = max(0.1, deadline - time.monotonic())
        t0 = time.monotonic()
        try:
            request: dict[str, Any] = {
                "model": self.model,
                "messages": [_to_wire(m) for m in messages],
                "tools": [
                    {
                        "type": "function",
                        "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                    }
                    for t in tools
                ],
                "tool_choice": "auto",
                "timeout": min(self.options.request_timeout_sec, remaining + 1.0),
                **self._request(probe),
            }
            resp = cast(ChatCompletion, client.chat.completions.create(**request))
        except openai.APITimeoutError:
            if time.monotonic() >= deadline:
                raise DeadlineExceeded("the task's time ran out while the model was answering") from None
            raise _Retryable("no answer within the time limit") from None
        except openai.APIConnectionError as exc:
            raise _Retryable(_why(exc)) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status >= 500 or status in _RETRY_STATUS:
                raise _Retryable(f"HTTP {status}: {_body(exc)}") from None
            raise InfraError(
                f"{self.endpoint} refused the request for {self.model!r}: HTTP {status}: {_body(exc)}"
            ) from None
        except openai.APIResponseValidationError as exc:
            raise _Retryable(f"malformed response: {exc}") from None
        return _reply(resp, int((time.monotonic() - t0) * 1000))


def _reply(resp: ChatCompletion, wall_ms: int) -> ChatReply:
    if not resp.choices:
        raise _Retryable("the response has no choices")
    choice = resp.choices[0]
    msg = choice.message
    calls: list[ToolCall] = []
    for tc in msg.tool_calls or ():
        fn = getattr(tc, "function", None)
        if fn is None:
            continue
        calls.append(ToolCall(name=fn.name, arguments=_arguments(fn.arguments), id=tc.id or _new_id()))
    return ChatReply(
        message=ChatMessage(
            role="assistant",
            content=msg.content or "",
            tool_calls=calls,
            thinking=getattr(msg, "reasoning_content", None) or None,
        ),
        tokens=_tokens(resp),
        done_reason=choice.finish_reason,
        wall_ms=wall_ms,
        server_ms=_server_ms(resp),
    )


def _tokens(resp: ChatCompletion) -> Tokens:
    """`prompt_tokens` counts the server's prompt-cache hits too (llama-server, vLLM, OpenAI report them in
    `prompt_tokens_details.cached_tokens`); they are kept apart as `cache_read`, as for Claude."""
    usage = resp.usage
    if usage is None:
        return Tokens()
    details = usage.prompt_tokens_details
    cached = min(usage.prompt_tokens, (details.cached_tokens or 0) if details else 0)
    return Tokens(input=usage.prompt_tokens - cached, output=usage.completion_tokens, cache_read=cached)


def _arguments(raw: str | None) -> dict[str, Any]:
    """`arguments` is a JSON string (sometimes indented, sometimes empty); anything that is not an object goes
    to the tool as-is under `_raw`, where the tool reports the missing argument back to the model."""
    if not raw or not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"_raw": raw}
    return value if isinstance(value, dict) else {"_raw": raw}


def _server_ms(resp: ChatCompletion) -> int | None:
    """llama-server reports its own time in a non-standard `timings` object; other servers report none."""
    timings = (resp.model_extra or {}).get("timings")
    if isinstance(timings, dict):
        total = float(timings.get("prompt_ms") or 0) + float(timings.get("predicted_ms") or 0)
        return int(total) if total > 0 else None
    return None


def _new_id() -> str:
    return f"call-{uuid.uuid4().hex[:16]}"


def _to_wire(m: ChatMessage) -> dict[str, Any]:
    """OpenAI's message shape: calls carry ids, results answer them by id. Content is never null: some servers
    (llama-cpp-python) answer HTTP 500 to an assistant message with `"content": null`."""
    out: dict[str, Any] = {"role": m.role, "content": m.content or ""}
    if m.role == "assistant" and m.tool_calls:
        out["tool_calls"] = [
            {
                "id": c.id or f"call-{i}",
                "type": "function",
                "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)},
            }
            for i, c in enumerate(m.tool_calls)
        ]
    if m.role == "tool":
        out["tool_call_id"] = m.tool_call_id or "call-0"
    return out


def _body(exc: openai.APIStatusError) -> str:
    text = str(exc.message or "").strip()
    return " ".join(text.split())[:300] or "no details"


def _why(exc: BaseException) -> str:
    cause = exc.__cause__ or exc.__context__
    text = str(cause or exc).strip().splitlines()
    if "refused" in " ".join(text).lower():
        return "connection refused"
    return f"{type(cause or exc).__name__}: {text[0]}" if text else type(exc).__name__
