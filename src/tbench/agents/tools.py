"""The tool-calling agent's tools — shell, read_file, write_file — carried out through `Environment.exec`, so
they act inside the trial's container (or, confined, in its host workspace) exactly as the agent's own shell
would: same user, same working directory, same limits. Nothing is read or written from the host side.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from tbench.bench.environments.base import Environment
from tbench.llm.chat import ToolCall, ToolSpec

DEFAULT_COMMAND_TIMEOUT_SEC = 120
MAX_COMMAND_TIMEOUT_SEC = 900
DEFAULT_OUTPUT_BUDGET = 12_000
"""Characters of tool output the model sees per call (about 3-4k tokens); the rest is cut from the middle."""
DEFAULT_READ_LINES = 2000
_WRITE_CHUNK = 96 * 1024
"""Base64 bytes per exec: stays under Linux's 128 KiB limit on one environment string."""
_HOUSEKEEPING_TIMEOUT_SEC = 60.0

SHELL = ToolSpec(
    name="shell",
    description=(
        "Run a bash command in the working directory and return its exit code and output (stdout and stderr "
        "together; long output is cut in the middle). The command is killed at its time limit. Non-interactive "
        "only: no editors, pagers or prompts."
    ),
    parameters={
        "type": "object",
        "properties": {
            "command": {"type": "string", "description": "The bash command line to run."},
            "timeout_sec": {
                "type": "integer",
                "description": f"Time limit in seconds (default {DEFAULT_COMMAND_TIMEOUT_SEC}, "
                f"at most {MAX_COMMAND_TIMEOUT_SEC}).",
            },
        },
        "required": ["command"],
    },
)
READ_FILE = ToolSpec(
    name="read_file",
    description="Read a text file. Returns its lines from `offset` (1-based, default 1), at most `limit` lines.",
    parameters={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path, relative to the working directory or absolute."},
            "offset": {"type": "integer", "description": "First line to return (1-based)."},
            "limit": {"type": "integer", "description": f"Most lines to return (default {DEFAULT_READ_LINES})."},
        },
        "required": ["path"],
    },
)
WRITE_FILE = ToolSpec(
    name="write_file",
    description="Create or overwrite a text file with exactly `content`; missing parent folders are created.",
    parameters={
        "type": "object",
        "properties": {
            "path": {"type": "string", "description": "File path, relative to the working directory or absolute."},
            "content": {"type": "string", "description": "The whole new content of the file."},
        },
        "required": ["path", "content"],
    },
)
TOOLS = (SHELL, READ_FILE, WRITE_FILE)


@dataclass(frozen=True)
class ToolOutcome:
    text: str
    """What goes back to the model."""
    is_error: bool = False
    exit_code: int | None = None
    duration_ms: int = 0


def clip(text: str, budget: int) -> str:
    """Keep the head and (mostly) the tail: errors and summaries are usually at the end."""
    if len(text) <= budget:
        return text
    head = budget // 4
    tail = budget - head
    return f"{text[:head]}\n[… {len(text) - budget} characters cut …]\n{text[-tail:]}"


class ToolError(Exception):
    """Bad arguments from the model: reported back to it, never fatal."""


def _int_arg(args: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = args.get(key, default)
    if value is None or value == "":
        return default
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise ToolError(f"{key} must be an integer, got {value!r}") from None
    return max(lo, min(hi, n))


def _str_arg(args: dict[str, Any], key: str, *, allow_empty: bool = False) -> str:
    value = args.get(key)
    if not isinstance(value, str) or (not value and not allow_empty):
        raise ToolError(f"missing or non-text argument {key!r}")
    return value


class Toolbox:
    """Runs the model's tool calls in one trial's environment, within the task's deadline."""

    def __init__(
        self,
        env: Environment,
        *,
        deadline: float,
        output_budget: int = DEFAULT_OUTPUT_BUDGET,
        allowed: Sequence[str] | None = None,
    ) -> None:
        self.env = env
        self.deadline = deadline
        self.budget = output_budget
        self.specs: tuple[ToolSpec, ...] = tuple(t for t in TOOLS if allowed is None or t.name in allowed)
        """The tools offered to the model (an agent profile may narrow them); a call to any other is refused."""

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def run(self, call: ToolCall) -> ToolOutcome:
        t0 = time.monotonic()
        try:
            if self.remaining() <= 0:
                raise ToolError("the task's time is up")
            offered = [t.name for t in self.specs]
            if call.name not in offered:
                raise ToolError(f"unknown tool {call.name!r}; the tools are {', '.join(offered)}")
            if call.name == SHELL.name:
                outcome = self._shell(call.arguments)
            elif call.name == READ_FILE.name:
                outcome = self._read(call.arguments)
            elif call.name == WRITE_FILE.name:
                outcome = self._write(call.arguments)
            else:
                raise AssertionError(f"offered tool {call.name!r} has no implementation")
        except ToolError as exc:
            outcome = ToolOutcome(text=f"error: {exc}", is_error=True)
        return ToolOutcome(outcome.text, outcome.is_error, outcome.exit_code, int((time.monotonic() - t0) * 1000))

    def _exec(self, command: str, timeout: float, env: dict[str, str] | None = None) -> tuple[int | None, str, bool]:
        res = self.env.exec(command, timeout_sec=max(1.0, min(timeout, self.remaining())), env=env, confined=True)
        return res.exit_code, res.output, res.timed_out

    def _shell(self, args: dict[str, Any]) -> ToolOutcome:
        command = _str_arg(args, "command")
        limit = _int_arg(args, "timeout_sec", DEFAULT_COMMAND_TIMEOUT_SEC, 1, MAX_COMMAND_TIMEOUT_SEC)
        effective = max(1.0, min(limit, self.remaining()))
        code, output, timed_out = self._exec(command, effective)
        if timed_out:
            return ToolOutcome(
                text=f"timed out: the command was killed after {effective:.0f}s; output so far:\n"
                f"{clip(output, self.budget)}",
                is_error=True,
            )
        return ToolOutcome(text=f"exit code: {code}\n{clip(output, self.budget)}", is_error=code != 0, exit_code=code)

    def _read(self, args: dict[str, Any]) -> ToolOutcome:
        path = _str_arg(args, "path")
        start = _int_arg(args, "offset", 1, 1, 1 << 31)
        count = _int_arg(args, "limit", DEFAULT_READ_LINES, 1, 100_000)
        script = (
            'f="$TBENCH_PATH"; if [ ! -f "$f" ]; then '
            'if [ -d "$f" ]; then echo "$f is a directory" >&2; else echo "no such file: $f" >&2; fi; exit 2; fi; '
            'wc -l < "$f"; tail -n +"$TBENCH_START" -- "$f" | head -n "$TBENCH_LIMIT"'
        )
        env = {"TBENCH_PATH": path, "TBENCH_START": str(start), "TBENCH_LIMIT": str(count)}
        code, output, timed_out = self._exec(script, _HOUSEKEEPING_TIMEOUT_SEC, env)
        if timed_out or code != 0:
            return ToolOutcome(text=f"error: {output.strip() or 'could not read ' + path}", is_error=True)
        total_text, _, body = output.partition("\n")
        total = int(total_text.strip()) if total_text.strip().isdigit() else None
        shown = body.count("\n") + (0 if body.endswith("\n") or not body else 1)
        note = ""
        if total is not None and (start > 1 or start + shown - 1 < total):
            note = f"[lines {start}-{start + shown - 1} of {total}; use offset/limit for more]\n"
        return ToolOutcome(text=note + clip(body, self.budget), exit_code=0)

    def _write(self, args: dict[str, Any]) -> ToolOutcome:
        path = _str_arg(args, "path")
        content = _str_arg(args, "content", allow_empty=True)
        data = base64.b64encode(content.encode("utf-8")).decode("ascii")
        chunks = [data[i : i + _WRITE_CHUNK] for i in range(0, len(data), _WRITE_CHUNK)] or [""]
        for i, chunk in enumerate(chunks):
            redirect = ">" if i == 0 else ">>"
            script = (
                'f="$TBENCH_PATH"; '
                + ('mkdir -p -- "$(dirname -- "$f")" && ' if i == 0 else "")
                + f'printf %s "$TBENCH_DATA" | base64 -d {redirect} "$f"'
            )
            env = {"TBENCH_PATH": path, "TBENCH_DATA": chunk}
            code, output, timed_out = self._exec(script, _HOUSEKEEPING_TIMEOUT_SEC, env)
            if timed_out or code != 0:
                why = output.strip() or ("timed out" if timed_out else f"exit {code}")
                return ToolOutcome(text=f"error: could not write {path}: {why}", is_error=True, exit_code=code)
        return ToolOutcome(text=f"wrote {len(content.encode('utf-8'))} bytes to {path}", exit_code=0)
