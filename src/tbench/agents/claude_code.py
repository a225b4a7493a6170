"""`claude-code[:<model>]`: the real Claude Code CLI, run headless where the task runs.

- Container tasks: the host's native `claude` binary is mounted read-only into the container (no per-trial
  install, no network needed for it); it is a glibc binary, so the task image must be glibc-based.
- Host-workspace tasks: the same binary, confined like every agent command (bubblewrap).
- When `ANTHROPIC_BASE_URL` points at the host's loopback (a local proxy, Ollama's Anthropic-compatible
  endpoint, a test stub), the container shares the host's network so that address means the same there.
- Credentials go to the CLI through its process environment only; whatever it prints is redacted before it
  reaches the trial folder. Its config lives in a fresh temporary folder inside the sandbox per trial.
- The `stream-json` output is parsed as it arrives: turns, tokens (cache included) and cost come from the
  final `result` event; `is_error` / `subtype` / `terminal_reason` decide the failure mode. An API error is
  an infra error, retried a bounded number of times when it struck before the agent touched anything.
"""

from __future__ import annotations

import collections
import contextlib
import ipaddress
import json
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import httpx

from tbench.agents.base import AgentContext, AgentNeeds, AgentResult, ModelRunner, require_confinement
from tbench.agents.prompts import claude_code_append_prompt
from tbench.agents.trajectory import TrajectoryRecorder
from tbench.bench.environments.base import Environment
from tbench.bench.environments.local import SYSTEM_DIRS
from tbench.errors import FailureMode, UserError
from tbench.models.common import Tokens, utcnow
from tbench.models.task import Task
from tbench.models.trajectory import Step, StopReason, ToolCallRecord, ToolResultRecord
from tbench.secrets import Redactor

if TYPE_CHECKING:
    from tbench.models.model_settings import ModelConfig

#: Which `claude` to use; default: the one on PATH (`npm install -g @anthropic-ai/claude-code`).
CLAUDE_BIN_ENV = "TBENCH_CLAUDE_BIN"
CONTAINER_BIN = "/opt/tbench/bin/claude"
RAW_OUTPUT = "claude-code.jsonl"
PROBE_TIMEOUT_SEC = 10.0
CREDENTIALS = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
#: Passed through from tbench's environment when set (credentials, endpoint, model and limit tuning).
PASSTHROUGH = (
    *CREDENTIALS,
    "ANTHROPIC_BASE_URL",
    "ANTHROPIC_CUSTOM_HEADERS",
    "ANTHROPIC_MODEL",
    "ANTHROPIC_SMALL_FAST_MODEL",
    "ANTHROPIC_DEFAULT_HAIKU_MODEL",
    "ANTHROPIC_DEFAULT_SONNET_MODEL",
    "ANTHROPIC_DEFAULT_OPUS_MODEL",
    "CLAUDE_CODE_SUBAGENT_MODEL",
    "API_TIMEOUT_MS",
    "CLAUDE_CODE_MAX_RETRIES",
    "CLAUDE_CODE_MAX_OUTPUT_TOKENS",
    "MAX_THINKING_TOKENS",
    "BASH_DEFAULT_TIMEOUT_MS",
    "BASH_MAX_TIMEOUT_MS",
    "BASH_MAX_OUTPUT_LENGTH",
)
FIXED_ENV = {
    "IS_SANDBOX": "1",  # bypassPermissions is refused as root unless the CLI knows it is sandboxed
    "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",  # no telemetry, update checks or error reports
    "DISABLE_AUTOUPDATER": "1",
}
# The prompt goes in on stdin (an instruction starting with "-" would be read as a flag); the config folder is
# fresh, inside the sandbox, and removed afterwards.
_COMMAND = (
    'cfg=$(mktemp -d 2>/dev/null || { d="/tmp/tbench-claude-$$"; mkdir -p "$d" && echo "$d"; }); '
    'export CLAUDE_CONFIG_DIR="$cfg"; '
    'printf "%s" "$TBENCH_INSTRUCTION" | "$TBENCH_CLAUDE" -p --output-format stream-json --verbose '
    '--permission-mode bypassPermissions --append-system-prompt "$TBENCH_APPEND"{extra}; '
    'rc=$?; rm -rf "$cfg"; exit $rc'
)


def find_claude() -> Path:
    configured = os.environ.get(CLAUDE_BIN_ENV)
    found = configured or shutil.which("claude")
    if not found or not Path(found).exists():
        raise UserError(
            f"the claude CLI is not installed ({'not at ' + configured if configured else 'not on PATH'}); install "
            f"it with `npm install -g @anthropic-ai/claude-code` or point {CLAUDE_BIN_ENV} at it",
            field="model",
        )
    return Path(found).resolve()


def is_native(path: Path) -> bool:
    with path.open("rb") as fh:
        return fh.read(4) == b"\x7fELF"


def is_loopback_url(url: str | None) -> bool:
    if not url:
        return False
    try:
        host = urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass
class _Attempt:
    """What one run of the CLI produced."""

    result: dict[str, Any] | None = None
    used_tools: bool = False
    api_error: str | None = None
    """Text of a synthetic assistant message the CLI emits for an API failure."""
    assistant_messages: int = 0
    other_lines: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=40))


class StreamParser:
    """Reads the CLI's stream-json as it arrives: every line is redacted and appended to the raw log; events
    become trajectory steps (one per assistant message, tool results attached by `tool_use_id`)."""

    def __init__(self, raw: IO[str], redact: Redactor, trajectory: TrajectoryRecorder) -> None:
        self.raw = raw
        self.redact = redact
        self.trajectory = trajectory
        self.attempt = _Attempt()
        self._buf = b""
        self._steps: dict[str, Step] = {}
        self._by_tool_use: dict[str, Step] = {}

    def feed(self, chunk: bytes) -> None:
        """Never raises: it runs on the environment's output thread."""
        self._buf += chunk
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            with contextlib.suppress(Exception):
                self._line(line.decode("utf-8", errors="replace"))

    def close(self) -> _Attempt:
        if self._buf.strip():
            with contextlib.suppress(Exception):
                self._line(self._buf.decode("utf-8", errors="replace"))
        self._buf = b""
        self.raw.flush()
        return self.attempt

    def _line(self, text: str) -> None:
        text = text.rstrip("\r")
        if not text.strip():
            return
        self.raw.write(self.redact(text) + "\n")
        event: Any = None
        if text.lstrip().startswith("{"):
            with contextlib.suppress(json.JSONDecodeError):
                event = json.loads(text)
        if not isinstance(event, dict):
            self.attempt.other_lines.append(self.redact(text))
            return
        kind = event.get("type")
        if kind == "assistant":
            self._assistant(event)
        elif kind == "user":
            self._user(event)
        elif kind == "result":
            self.attempt.result = event
        elif kind == "system" and event.get("subtype") == "init" and not self.trajectory.data.model:
            self.trajectory.data.model = event.get("model")

    def _assistant(self, event: dict[str, Any]) -> None:
        message = event.get("message") or {}
        if message.get("model") == "<synthetic>" and event.get("error"):
            self.attempt.api_error = _text_of(message.get("content")) or str(event.get("error"))
            return
        key = str(message.get("id") or event.get("uuid") or len(self._steps))
        step = self._steps.get(key)
        if step is None:
            step = self.trajectory.step(started_at=event.get("timestamp") or utcnow())
            self._steps[key] = step
            self.attempt.assistant_messages += 1
        for block in message.get("content") or []:
            btype = block.get("type")
            if btype == "text":
                step.assistant_text += block.get("text", "")
            elif btype == "thinking":
                step.thinking = (step.thinking or "") + block.get("thinking", "")
            elif btype == "tool_use":
                self.attempt.used_tools = True
                step.tool_calls.append(
                    ToolCallRecord(id=block.get("id"), name=block.get("name", "?"), arguments=block.get("input") or {})
                )
                if block.get("id"):
                    self._by_tool_use[block["id"]] = step
        step.finished_at = event.get("timestamp") or utcnow()

    def _user(self, event: dict[str, Any]) -> None:
        content = (event.get("message") or {}).get("content")
        if not isinstance(content, list):
            return
        for block in content:
            if not isinstance(block, dict) or block.get("type") != "tool_result":
                continue
            call_id = block.get("tool_use_id")
            step = self._by_tool_use.get(call_id or "")
            if step is None:
                continue
            name = next((c.name for c in step.tool_calls if c.id == call_id), "?")
            step.tool_results.append(
                ToolResultRecord(
                    call_id=call_id,
                    name=name,
                    output=_text_of(block.get("content")),
                    is_error=bool(block.get("is_error")),
                )
            )
            step.finished_at = event.get("timestamp") or utcnow()
        self.trajectory.save()


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(str(b.get("text", "")) for b in content if isinstance(b, dict) and b.get("type") == "text")
    return "" if content is None else json.dumps(content)


def _tokens(usage: dict[str, Any]) -> Tokens:
    return Tokens(
        input=int(usage.get("input_tokens") or 0),
        output=int(usage.get("output_tokens") or 0),
        cache_read=int(usage.get("cache_read_input_tokens") or 0),
        cache_write=int(usage.get("cache_creation_input_tokens") or 0),
    )


def _cost(result: dict[str, Any], other_lines: Sequence[str]) -> float | None:
    """The CLI prices tokens from its own table, and still prices models it does not know (local ones): such
    a cost means nothing, so it is dropped."""
    value = result.get("total_cost_usd")
    if not isinstance(value, int | float):
        return None
    usage = result.get("modelUsage") or {}
    unknown = any(isinstance(u, dict) and u.get("costBasis") == "unknown" for u in usage.values())
    if unknown or any("unrecognized_model" in line for line in other_lines):
        return None
    return float(value)


class ClaudeCodeAgent(ModelRunner):
    name = "claude-code"
    tools = ("Bash", "Read", "Write", "Edit", "Glob", "Grep")
    #: Whole-run retries after an API error that struck before any tool ran (a clean restart is possible).
    api_retries = 2
    retry_backoff_sec: tuple[float, ...] = (10.0, 30.0)

    def __init__(self, config: ModelConfig) -> None:
        self.config = config
        self._binary: Path | None = None

    @property
    def binary(self) -> Path:
        if self._binary is None:
            self._binary = find_claude()
        return self._binary

    @staticmethod
    def base_url() -> str | None:
        return os.environ.get("ANTHROPIC_BASE_URL") or None

    def preflight(self, tasks: Sequence[Task] = ()) -> None:
        require_confinement(self.name, tasks, unsafe=self.config.unsafe_host_agent)
        if not any(os.environ.get(k) for k in CREDENTIALS):
            raise UserError(
                f"Claude Code needs credentials in the environment: set {' or '.join(CREDENTIALS)} "
                "(they are passed to the CLI, never written to disk)",
                field="model",
            )
        binary = self.binary
        docker_tasks = [t for t in tasks if t.environment.kind == "docker"]
        if docker_tasks and not is_native(binary):
            raise UserError(
                f"{binary} is not Claude Code's native binary, so it cannot be mounted into task containers; "
                "install a current version with `npm install -g @anthropic-ai/claude-code` (without "
                "--ignore-scripts or --omit=optional)",
                field="model",
            )
        try:
            probe = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise UserError(f"{binary} cannot run: {exc}", field="model") from None
        if probe.returncode != 0:
            why = (probe.stderr or probe.stdout).strip().splitlines()[-1:] or [f"exit {probe.returncode}"]
            raise UserError(f"`{binary} --version` failed: {why[0]}", field="model")
        offline = [t.id for t in docker_tasks if t.environment.network_mode == "no-network"]
        if offline and not is_loopback_url(self.base_url()):
            raise UserError(
                f"task(s) {', '.join(offline[:5])} have no network, so Claude Code inside them cannot reach "
                f"{self.base_url() or 'the Anthropic API'}; point ANTHROPIC_BASE_URL at a proxy on this host's "
                "loopback, or leave those tasks out with --tasks",
                field="model",
            )

    def probe(self) -> str | None:
        """Whether the Anthropic API answers: any HTTP reply below 500 to `GET /v1/models` counts (no tokens
        are spent); a refused connection, a timeout or a 5xx does not."""
        url = (self.base_url() or "https://api.anthropic.com").rstrip("/") + "/v1/models"
        headers = {"anthropic-version": "2023-06-01"}
        if key := os.environ.get("ANTHROPIC_API_KEY"):
            headers["x-api-key"] = key
        try:
            status = httpx.get(url, headers=headers, timeout=PROBE_TIMEOUT_SEC).status_code
        except httpx.HTTPError as exc:
            return f"{url}: {type(exc).__name__}: {exc}"
        return f"{url}: HTTP {status}" if status >= 500 else None

    def environment_needs(self, task: Task) -> AgentNeeds:
        if task.environment.kind == "docker":
            return AgentNeeds(
                ro_mounts=((str(self.binary), CONTAINER_BIN),),
                host_network=is_loopback_url(self.base_url()),
            )
        # A confined host workspace sees the system folders only: a `claude` installed elsewhere (~/.local) is
        # mounted read-only, its folder with it.
        real = self.binary.resolve()
        system = any(real.is_relative_to(d) for d in SYSTEM_DIRS if not os.path.islink(d))
        mounts = () if system else ((str(real.parent), str(real.parent)),)
        return AgentNeeds(ro_mounts=mounts, allow_unconfined=self.config.unsafe_host_agent)

    def _exec_env(self, env: Environment, ctx: AgentContext, append: str) -> dict[str, str]:
        out = {k: v for k in PASSTHROUGH if (v := os.environ.get(k))}
        out.update(FIXED_ENV)
        out["TBENCH_INSTRUCTION"] = ctx.instruction
        out["TBENCH_APPEND"] = append
        out["TBENCH_CLAUDE"] = CONTAINER_BIN if env.task.environment.kind == "docker" else str(self.binary.resolve())
        return out

    def _command(self, ctx: AgentContext) -> str:
        extra = ""
        if ctx.max_turns:
            extra += f" --max-turns {int(ctx.max_turns)}"
        if self.config.model:
            extra += " --model " + shlex.quote(self.config.model)
        if ctx.tools is not None:  # the CLI's built-in tool set, narrowed (`--allowedTools` only skips prompts)
            extra += " --tools " + shlex.quote(",".join(ctx.tools))
        return _COMMAND.replace("{extra}", extra)

    def run_task(self, task: Task, env: Environment, ctx: AgentContext) -> AgentResult:
        deadline = time.monotonic() + ctx.timeout_sec
        redact = Redactor()
        append = claude_code_append_prompt(ctx.system_prompt_append, ctx.budget_sec)
        trajectory = TrajectoryRecorder(
            ctx.logs_dir,
            agent=self.name,
            model=self.config.model,
            task_id=task.id,
            instruction=ctx.instruction,
            system_prompt=append,
            raw_output=RAW_OUTPUT,
            redact=redact,
        )
        exec_env = self._exec_env(env, ctx, append)
        command = self._command(ctx)
        total = _Totals()
        with (ctx.logs_dir / RAW_OUTPUT).open("a", encoding="utf-8") as raw:
            for attempt_no in range(1, self.api_retries + 2):
                if attempt_no > 1:
                    raw.write(json.dumps({"type": "tbench", "event": "retry", "attempt": attempt_no}) + "\n")
                parser = StreamParser(raw, redact, trajectory)
                remaining = deadline - time.monotonic()
                res = env.exec(
                    command, timeout_sec=max(1.0, remaining), env=exec_env, confined=True, on_output=parser.feed
                )
                attempt = parser.close()
                total.add(attempt)
                if res.timed_out:
                    return total.finish(trajectory, redact, "timeout", error=f"ran out of time ({ctx.timeout_sec:g}s)")
                verdict = _classify(attempt, res.exit_code, env.task.environment.kind)
                if verdict.mode is FailureMode.INFRA_ERROR and verdict.retryable and not attempt.used_tools:
                    delay = self.retry_backoff_sec[min(attempt_no - 1, len(self.retry_backoff_sec) - 1)]
                    if attempt_no <= self.api_retries and time.monotonic() + delay < deadline - 5:
                        time.sleep(delay)
                        continue
                return total.finish(
                    trajectory, redact, verdict.stop, verdict.mode, verdict.error, model_server_down=verdict.retryable
                )
        raise AssertionError("unreachable: the last attempt always returns")


@dataclass
class _Verdict:
    mode: FailureMode | None = None
    error: str | None = None
    stop: StopReason = "completed"
    retryable: bool = False


def _classify(attempt: _Attempt, exit_code: int | None, env_kind: str) -> _Verdict:
    r = attempt.result
    if r is None:
        tail = " | ".join(list(attempt.other_lines)[-3:]) or "no output"
        hint = ""
        if exit_code in (126, 127) and env_kind == "docker":
            hint = " (could the binary run in this image? Claude Code needs a glibc-based image)"
        error = f"Claude Code ended without a result (exit {exit_code}){hint}: {tail}"
        return _Verdict(FailureMode.INFRA_ERROR, error, "infra_error")
    subtype = r.get("subtype")
    terminal = r.get("terminal_reason")
    detail = str(r.get("result") or "; ".join(map(str, r.get("errors") or [])) or subtype)
    if subtype == "error_max_turns" or terminal == "max_turns":
        return _Verdict(FailureMode.AGENT_ERROR, f"Claude Code reached its turn cap: {detail}", "max_turns")
    if r.get("is_error") and (
        terminal == "api_error"
        or r.get("api_error_status") is not None
        or attempt.api_error is not None
        or detail.startswith("API Error")
    ):
        status = r.get("api_error_status")
        return _Verdict(
            FailureMode.INFRA_ERROR,
            f"Claude Code API error{f' (HTTP {status})' if status else ''}: {detail}",
            "infra_error",
            retryable=True,
        )
    if r.get("is_error") or subtype not in (None, "success"):
        return _Verdict(FailureMode.AGENT_ERROR, f"Claude Code failed ({subtype}): {detail}", "agent_error")
    return _Verdict()


@dataclass
class _Totals:
    turns: int = 0
    tokens: Tokens = field(default_factory=Tokens)
    cost: float | None = None
    priced: bool = True

    def add(self, attempt: _Attempt) -> None:
        r = attempt.result
        if r is None:
            self.turns += attempt.assistant_messages
            return
        self.turns += int(r.get("num_turns") or 0)
        t = _tokens(r.get("usage") or {})
        self.tokens = Tokens(
            input=self.tokens.input + t.input,
            output=self.tokens.output + t.output,
            cache_read=self.tokens.cache_read + t.cache_read,
            cache_write=self.tokens.cache_write + t.cache_write,
        )
        cost = _cost(r, attempt.other_lines)
        if cost is None:
            self.priced = False
        else:
            self.cost = (self.cost or 0.0) + cost

    def finish(
        self,
        trajectory: TrajectoryRecorder,
        redact: Redactor,
        stop: StopReason,
        mode: FailureMode | None = None,
        error: str | None = None,
        *,
        model_server_down: bool = False,
    ) -> AgentResult:
        error = redact(error) if error else None
        cost = self.cost if self.priced else None
        trajectory.finish(stop, turns=self.turns, tokens=self.tokens, cost_usd=cost, error=error)
        return AgentResult(
            turns=self.turns,
            tokens=self.tokens,
            cost_usd=cost,
            timed_out=stop == "timeout",
            failure_mode=mode,
            error=error,
            model_server_down=model_server_down,
        )
