"""A stub of the Anthropic Messages API for the real Claude Code CLI (`ANTHROPIC_BASE_URL`), on 127.0.0.1: the
stand-in for the LLM only. It answers `POST /v1/messages` with real SSE streaming (reference §3.6):
message_start, content_block_start/delta/stop (text_delta, input_json_delta), message_delta, message_stop —
or an HTTP error with Anthropic's error body.

The agent loop's requests (those that offer tools) follow a script `(request body, call number) -> Turn |
ApiError`; any side request the CLI makes without tools gets a short text answer.
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
class Turn:
    text: str = ""
    tool_uses: Sequence[tuple[str, dict[str, Any]]] = ()
    input_tokens: int = 1000
    output_tokens: int = 50
    cache_read_input_tokens: int = 200
    cache_creation_input_tokens: int = 30


@dataclass(frozen=True)
class ApiError:
    status: int = 500
    type: str = "api_error"
    message: str = "Internal server error (stub)"


Script = Callable[[dict[str, Any], int], "Turn | ApiError"]


def scripted(*turns: Turn | ApiError, then: Turn | ApiError | None = None) -> Script:
    final = then or Turn(text="Done.")

    def script(body: dict[str, Any], n: int) -> Turn | ApiError:
        return turns[n] if n < len(turns) else final

    return script


def bash(command: str) -> tuple[str, dict[str, Any]]:
    return ("Bash", {"command": command, "description": "run a command"})


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: dict[str, Any] = field(default_factory=dict)

    @property
    def is_agent_turn(self) -> bool:
        return bool(self.body.get("tools"))


class FakeAnthropic:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[Request] = []
        self.turns = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self._server is not None
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def agent_requests(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.is_agent_turn]

    def __enter__(self) -> FakeAnthropic:
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def _json(self, status: int, payload: Any) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "stub: no route"}})

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(n) or b"{}")
                except json.JSONDecodeError:
                    body = {}
                req = Request(self.path, dict(self.headers.items()), body if isinstance(body, dict) else {})
                with stub._lock:
                    stub.requests.append(req)
                if not self.path.split("?")[0].endswith("/v1/messages"):
                    self._json(404, {"type": "error", "error": {"type": "not_found_error", "message": "stub"}})
                    return
                if req.is_agent_turn:
                    with stub._lock:
                        turn_no = stub.turns
                        stub.turns += 1
                    action = stub.script(req.body, turn_no)
                else:
                    action = Turn(text="ok", input_tokens=10, output_tokens=1, cache_read_input_tokens=0,
                                  cache_creation_input_tokens=0)  # fmt: skip
                if isinstance(action, ApiError):
                    self._json(
                        action.status, {"type": "error", "error": {"type": action.type, "message": action.message}}
                    )
                    return
                self._stream(str(req.body.get("model") or "claude-stub"), action)

            def _event(self, name: str, data: dict[str, Any]) -> None:
                self.wfile.write(f"event: {name}\ndata: {json.dumps(data)}\n\n".encode())
                self.wfile.flush()

            def _stream(self, model: str, turn: Turn) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("request-id", f"req_{uuid.uuid4().hex[:12]}")
                self.end_headers()
                self.close_connection = True
                self._event(
                    "message_start",
                    {
                        "type": "message_start",
                        "message": {
                            "id": f"msg_{uuid.uuid4().hex[:16]}",
                            "type": "message",
                            "role": "assistant",
                            "model": model,
                            "content": [],
                            "stop_reason": None,
                            "stop_sequence": None,
                            "usage": {
                                "input_tokens": turn.input_tokens,
                                "output_tokens": 1,
                                "cache_read_input_tokens": turn.cache_read_input_tokens,
                                "cache_creation_input_tokens": turn.cache_creation_input_tokens,
                            },
                        },
                    },
                )
                index = 0
                if turn.text:
                    self._block(index, {"type": "text", "text": ""}, {"type": "text_delta", "text": turn.text})
                    index += 1
                for name, args in turn.tool_uses:
                    block = {"type": "tool_use", "id": f"toolu_{uuid.uuid4().hex[:20]}", "name": name, "input": {}}
                    self._block(index, block, {"type": "input_json_delta", "partial_json": json.dumps(args)})
                    index += 1
                stop = "tool_use" if turn.tool_uses else "end_turn"
                self._event(
                    "message_delta",
                    {
                        "type": "message_delta",
                        "delta": {"stop_reason": stop, "stop_sequence": None},
                        "usage": {"output_tokens": turn.output_tokens},
                    },
                )
                self._event("message_stop", {"type": "message_stop"})

            def _block(self, index: int, start: dict[str, Any], delta: dict[str, Any]) -> None:
                self._event(
                    "content_block_start", {"type": "content_block_start", "index": index, "content_block": start}
                )
                self._event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": delta})
                self._event("content_block_stop", {"type": "content_block_stop", "index": index})

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name="fake-anthropic", daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
