"""An OpenAI-compatible chat server for tests, on 127.0.0.1: the stand-in for an LLM, speaking the real wire format
(`GET /v1/models`, `POST /v1/chat/completions` with `tool_calls` whose `arguments` are JSON strings, `usage`,
llama-server's `timings`, error bodies) over a real socket. A model's behaviour is a policy:
`(request body, call number) -> Answer`; the preflight's probe (the `record_word` tool) is answered separately.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Answer:
    content: str | None = ""
    tool_calls: Sequence[tuple[str, dict[str, Any]]] = ()
    prompt_tokens: int = 120
    completion_tokens: int = 15
    cached_tokens: int = 0
    """Of `prompt_tokens`, how many the server's prompt cache served (`prompt_tokens_details.cached_tokens`)."""
    status: int = 200


Policy = Callable[[dict[str, Any], int], Answer]
REAL_PROBE = Answer(content="", tool_calls=[("record_word", {"word": "ready"})])
TEXT_PROBE = Answer(content='```json\n{"name": "record_word", "arguments": {"word": "ready"}}\n```')


def scripted(*steps: Answer, then: Answer | None = None) -> Policy:
    final = then or Answer(content="Done.")

    def policy(body: dict[str, Any], n: int) -> Answer:
        return steps[n] if n < len(steps) else final

    return policy


@dataclass
class FakeOpenAI:
    models: dict[str, Policy] = field(default_factory=dict)
    probe: Answer = REAL_PROBE
    chats: list[dict[str, Any]] = field(default_factory=list)
    headers: list[dict[str, str]] = field(default_factory=list)
    _calls: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    def task_chats(self) -> list[dict[str, Any]]:
        """Chat bodies other than the preflight probe, in order."""
        with self._lock:
            return [b for b in self.chats if not _is_probe(b)]

    def answer(self, body: dict[str, Any]) -> Answer:
        if _is_probe(body):
            return self.probe
        model = str(body.get("model"))
        with self._lock:
            n = self._calls.get(model, 0)
            self._calls[model] = n + 1
        return self.models[model](body, n)

    def __enter__(self) -> FakeOpenAI:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-openai", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


def _is_probe(body: dict[str, Any]) -> bool:
    return any(t.get("function", {}).get("name") == "record_word" for t in body.get("tools") or ())


def completion(model: str, a: Answer) -> dict[str, Any]:
    calls = [
        {"id": uuid.uuid4().hex, "type": "function", "function": {"name": name, "arguments": json.dumps(args)}}
        for name, args in a.tool_calls
    ]
    message: dict[str, Any] = {"role": "assistant", "content": a.content}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:12]}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {
            "prompt_tokens": a.prompt_tokens,
            "completion_tokens": a.completion_tokens,
            "total_tokens": a.prompt_tokens + a.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": a.cached_tokens},
        },
        "timings": {"prompt_ms": 40.0, "predicted_ms": 60.0},
    }


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOpenAI
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        with self.fake._lock:
            self.fake.headers.append(dict(self.headers.items()))
        if self.path.rstrip("/") == "/v1/models":
            data = [{"id": name, "object": "model", "owned_by": "tests"} for name in self.fake.models]
            self._json(200, {"object": "list", "data": data})
        else:
            self._json(404, {"error": {"message": "not found", "type": "not_found_error"}})

    def do_POST(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(n) or b"{}")
        with self.fake._lock:
            self.fake.chats.append(body)
            self.fake.headers.append(dict(self.headers.items()))
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._json(404, {"error": {"message": "not found", "type": "not_found_error"}})
            return
        if body.get("model") not in self.fake.models:
            self._json(404, {"error": {"message": f"model {body.get('model')} not found", "type": "not_found"}})
            return
        a = self.fake.answer(body)
        if a.status != 200:
            self._json(a.status, {"error": {"message": f"scripted HTTP {a.status}", "type": "server_error"}})
            return
        self._json(200, completion(str(body["model"]), a))
