"""An Ollama-protocol HTTP server for tests, on 127.0.0.1: the stand-in for an LLM, speaking the real wire format
(reference §1.1) over a real socket — NDJSON streaming with chunked transfer, whole tool calls in one chunk,
the 404 / 400 error bodies, a mid-stream `{"error"}` line, 500s, stalls and dropped connections.

A model's behaviour is a policy: `(request body, call number) -> Reply | Fault`.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal


@dataclass(frozen=True)
class Reply:
    content: str = ""
    tool_calls: Sequence[tuple[str, dict[str, Any]]] = ()
    prompt_eval_count: int = 100
    eval_count: int = 20
    total_duration_ns: int = 1_000_000


@dataclass(frozen=True)
class Fault:
    kind: Literal["http500", "midstream", "stall", "drop"]
    seconds: float = 0.0
    """For `stall`: how long the server goes silent after the headers."""


Policy = Callable[[dict[str, Any], int], "Reply | Fault"]


def scripted(*steps: Reply | Fault, then: Reply | None = None) -> Policy:
    """Answer call i with steps[i]; afterwards `then` (default: a final answer without tool calls)."""
    final = then or Reply(content="Done.")

    def policy(body: dict[str, Any], n: int) -> Reply | Fault:
        return steps[n] if n < len(steps) else final

    return policy


@dataclass
class FakeModel:
    name: str
    policy: Policy
    capabilities: tuple[str, ...] = ("completion", "tools")
    context_length: int = 32768
    calls: int = 0


@dataclass
class Recorded:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)


class FakeOllama:
    def __init__(self) -> None:
        self.models: dict[str, FakeModel] = {}
        self.requests: list[Recorded] = []
        self._lock = threading.Lock()
        self._closing = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self.down = threading.Event()
        """While set, the whole server is down: every request gets the 500 a crashed llama runner gives."""

    def add_model(self, name: str, policy: Policy, *, tools: bool = True, context_length: int = 32768) -> FakeModel:
        caps = ("completion", "tools") if tools else ("completion", "vision")
        model = FakeModel(name if ":" in name else f"{name}:latest", policy, caps, context_length)
        self.models[model.name] = model
        return model

    def chats(self, model: str | None = None) -> list[dict[str, Any]]:
        """Bodies of the /api/chat requests (for one model), in order."""
        names = {model, f"{model}:latest"} if model else None
        with self._lock:
            return [
                r.body
                for r in self.requests
                if r.path == "/api/chat" and (names is None or r.body.get("model") in names)
            ]

    def _find(self, name: str) -> FakeModel | None:
        return self.models.get(name) or self.models.get(f"{name}:latest")

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeOllama:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-ollama", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # ------------------------------------------------------------------ payloads

    @staticmethod
    def _now() -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime())

    def _tag(self, m: FakeModel) -> dict[str, Any]:
        return {
            "name": m.name,
            "model": m.name,
            "modified_at": self._now(),
            "size": 4_683_087_332,
            "digest": "f" * 64,
            "details": {
                "parent_model": "",
                "format": "gguf",
                "family": "qwen2",
                "families": ["qwen2"],
                "parameter_size": "7.6B",
                "quantization_level": "Q4_K_M",
            },
        }

    def _show(self, m: FakeModel) -> dict[str, Any]:
        return {
            "modelfile": f"FROM {m.name}",
            "parameters": "",
            "template": "{{ .Prompt }}",
            "details": self._tag(m)["details"],
            "model_info": {"general.architecture": "qwen2", "qwen2.context_length": m.context_length},
            "capabilities": list(m.capabilities),
            "modified_at": self._now(),
        }

    def _chunk(self, m: FakeModel, message: dict[str, Any]) -> dict[str, Any]:
        return {"model": m.name, "created_at": self._now(), "message": message, "done": False}

    def _final(self, m: FakeModel, r: Reply, *, whole: bool = False) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": r.content if whole else ""}
        return {
            "model": m.name,
            "created_at": self._now(),
            "message": message,
            "done": True,
            "done_reason": "stop",
            "total_duration": r.total_duration_ns,
            "load_duration": 1000,
            "prompt_eval_count": r.prompt_eval_count,
            "prompt_eval_duration": r.total_duration_ns // 2,
            "eval_count": r.eval_count,
            "eval_duration": r.total_duration_ns // 2,
        }


class _Handler(BaseHTTPRequestHandler):
    fake: FakeOllama

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # as Go's net/http (Ollama) does: no 40 ms delayed-ACK stalls

    def log_message(self, format: str, *args: Any) -> None:
        return None

    def _json(self, status: int, payload: Any) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        n = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(n) if n else b""
        try:
            body = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            body = {}
        return body if isinstance(body, dict) else {}

    def _record(self, body: dict[str, Any]) -> None:
        with self.fake._lock:
            self.fake.requests.append(Recorded(self.path, dict(self.headers.items()), body))

    def _down(self) -> bool:
        if not self.fake.down.is_set():
            return False
        self._json(500, {"error": "llama runner process has terminated: exit status 2"})
        return True

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self) -> None:
        self._record({})
        if self._down():
            return
        if self.path == "/":
            data = b"Ollama is running"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        elif self.path == "/api/version":
            self._json(200, {"version": "0.33.0-fake"})
        elif self.path == "/api/tags":
            self._json(200, {"models": [self.fake._tag(m) for m in self.fake.models.values()]})
        else:
            self._json(404, {"error": "404 page not found"})

    def do_POST(self) -> None:
        body = self._body()
        self._record(body)
        if self._down():
            return
        if self.path == "/api/show":
            name = str(body.get("model") or body.get("name") or "")
            model = self.fake._find(name)
            if model is None:
                self._json(404, {"error": f"model '{name}' not found"})
                return
            self._json(200, self.fake._show(model))
        elif self.path == "/api/chat":
            self._chat(body)
        else:
            self._json(404, {"error": "404 page not found"})

    def _chat(self, body: dict[str, Any]) -> None:
        name = str(body.get("model") or "")
        if not name:
            self._json(400, {"error": "model is required"})
            return
        model = self.fake._find(name)
        if model is None:
            self._json(404, {"error": f'model "{name}" not found, try pulling it first'})
            return
        if body.get("tools") and "tools" not in model.capabilities:
            self._json(400, {"error": f"registry.ollama.ai/library/{model.name} does not support tools"})
            return
        with self.fake._lock:
            n = model.calls
            model.calls += 1
        action = model.policy(body, n)
        if isinstance(action, Fault) and action.kind == "http500":
            self._json(500, {"error": "llama runner process has terminated: signal: killed"})
            return
        stream = body.get("stream", True) is not False
        if not stream:
            assert isinstance(action, Reply), "non-streamed faults other than 500 are not modelled"
            self._json(200, self.fake._final(model, action, whole=True))
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/x-ndjson")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if isinstance(action, Fault):
            self._fault(model, action)
            return
        for piece in _pieces(action.content):
            self._line(self.fake._chunk(model, {"role": "assistant", "content": piece}))
        if action.tool_calls:
            calls = [
                {"function": {"index": i, "name": tool, "arguments": args}}
                for i, (tool, args) in enumerate(action.tool_calls)
            ]
            self._line(self.fake._chunk(model, {"role": "assistant", "content": "", "tool_calls": calls}))
        self._line(self.fake._final(model, action))
        self._end()

    def _fault(self, model: FakeModel, fault: Fault) -> None:
        self._line(self.fake._chunk(model, {"role": "assistant", "content": "Let me"}))
        if fault.kind == "midstream":
            self._line({"error": "an error was encountered while running the model: unexpected EOF"})
            self._end()
        elif fault.kind == "stall":
            self.fake._closing.wait(fault.seconds)
            self.close_connection = True
        elif fault.kind == "drop":
            self.close_connection = True
            self.wfile.flush()
            self.connection.shutdown(2)

    def _line(self, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode() + b"\n"
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _end(self) -> None:
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def _pieces(text: str, n: int = 3) -> list[str]:
    if not text:
        return []
    size = max(1, len(text) // n)
    return [text[i : i + size] for i in range(0, len(text), size)]


def last_tool_result(body: dict[str, Any]) -> dict[str, Any] | None:
    """The newest `role: tool` message of a chat request."""
    for msg in reversed(body.get("messages") or []):
        if msg.get("role") == "tool":
            return dict(msg)
    return None
