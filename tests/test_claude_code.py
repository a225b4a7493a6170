"""The Claude Code path with the real CLI (`npm install -g @anthropic-ai/claude-code`) against a stub of the Anthropic
Messages API on 127.0.0.1 (the LLM's stand-in, real SSE): in real containers and confined host workspaces."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest

from tbench.agents.claude_code import ClaudeCodeAgent
from tbench.agents.model_adapter import choose_model
from tbench.bench.environments import EnvironmentFactory
from tbench.bench.formats import load_suite, select_tasks
from tbench.bench.trial import run_trial
from tbench.models.model_settings import ModelConfig
from tbench.models.results import TrialResult
from tbench.models.task import Task
from tbench.models.trajectory import Trajectory
from tbench.models.trial import TrialSpec
from tests.conftest import EXAMPLES, ci_mandatory, run_cli
from tests.fake_anthropic import ApiError, FakeAnthropic, Turn, bash, scripted

KEY = "sk-ant-api03-" + uuid.uuid4().hex + uuid.uuid4().hex


@pytest.fixture(scope="module", autouse=True)
def claude_cli() -> str:
    path = shutil.which("claude")
    if path is None:
        if ci_mandatory():
            pytest.fail("the claude CLI is missing under CI (scripts/test installs it)")
        pytest.skip("the claude CLI is not installed: npm install -g @anthropic-ai/claude-code")
    return path


def _env(stub: FakeAnthropic, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))}
    env.update(ANTHROPIC_BASE_URL=stub.url, ANTHROPIC_API_KEY=KEY, CLAUDE_CODE_MAX_RETRIES="0", **extra)
    return env


def _cli(tmp_path: Path, stub: FakeAnthropic, suite: Path, *extra: str) -> tuple[Any, Path]:
    out = tmp_path / f"run-{uuid.uuid4().hex[:8]}"
    proc = run_cli(
        "--suite", str(suite), "--iterations", "1", "--output", str(out), "--project-root", str(tmp_path), *extra,
        env=_env(stub),
    )  # fmt: skip
    return proc, out


def _result(out: Path, task: str, iteration: int = 1) -> dict[str, Any]:
    return dict(json.loads((out / f"iterations/{iteration:03d}/{task}/result.json").read_text()))


def _no_key_anywhere(*roots: Path) -> None:
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file():
                assert KEY.encode() not in path.read_bytes(), f"the API key was written to {path}"


def _suite(tmp_path: Path, **task: Any) -> Path:
    """A one-task host-workspace suite without a turn cap of its own (so --max-turns applies)."""
    body = {
        "id": "hello",
        "name": "hello",
        "description": "Create hello.txt containing exactly: Hello, world!",
        "verification": {"type": "custom", "script": "test \"$(cat hello.txt)\" = 'Hello, world!'"},
        "timeout_seconds": 120,
        **task,
    }
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"name": "claude-tests", "version": "1", "tasks": [body]}))
    return path


@pytest.mark.container
def test_scripted_bash_call_solves_a_bundled_task_in_a_container(engine: Any, tmp_path: Path) -> None:
    script = scripted(
        Turn(tool_uses=[bash("printf 'Hello, world!\\n' > /app/hello.txt && env | grep ^ANTHROPIC_API_KEY")]),
        Turn(text="Created /app/hello.txt."),
    )
    with FakeAnthropic(script) as stub:
        proc, out = _cli(tmp_path, stub, EXAMPLES / "tb2", "--tasks", "hello-world", "--model", "claude-code")
        requests = stub.agent_requests()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = _result(out, "hello-world")
    assert (r["status"], r["failure_mode"], r["model"], r["turns"]) == ("pass", None, "claude-code", 2)
    # tokens and cost come from the CLI's final `result` event (two stub turns of 1000/50/200/30 tokens)
    assert r["tokens"] == {"input": 2000, "output": 100, "cache_read": 400, "cache_write": 60}
    raw = (out / "iterations/001/hello-world/agent/claude-code.jsonl").read_text().splitlines()
    final = json.loads(raw[-1])
    assert final["type"] == "result" and not final["is_error"]
    assert r["cost_usd"] == pytest.approx(final["total_cost_usd"]) and r["cost_usd"] > 0
    assert final["usage"]["cache_read_input_tokens"] == r["tokens"]["cache_read"]
    # the CLI ran in the container (host network to reach the stub on 127.0.0.1), with the key in memory only
    assert len(requests) == 2 and all(q.headers.get("x-api-key") == KEY for q in requests)
    system = json.dumps(requests[0].body.get("system"))
    assert "running unattended as a benchmark agent" in system
    assert "# Time budget" in system and "You have 2m 00s of wall-clock time" in system  # the task's 120 s
    assert "Bash" in [t.get("name") for t in requests[0].body["tools"]]
    traj = Trajectory.model_validate_json((out / "iterations/001/hello-world/agent/trajectory.json").read_text())
    assert traj.agent == "claude-code" and traj.stop_reason == "completed" and len(traj.steps) == 2
    call, result = traj.steps[0].tool_calls[0], traj.steps[0].tool_results[0]
    assert call.name == "Bash" and "hello.txt" in call.arguments["command"] and result.call_id == call.id
    assert result.output == "ANTHROPIC_API_KEY=[REDACTED]"  # the agent printed the key; it was masked
    assert traj.steps[1].assistant_text == "Created /app/hello.txt."
    assert (traj.tokens.input, traj.cost_usd) == (2000, r["cost_usd"])
    config = json.loads((out / "config.json").read_text())
    assert config["model_settings"]["anthropic_base_url"] == stub.url
    _no_key_anywhere(out, tmp_path / ".openagents")


def _in_process(
    tmp_path: Path, task: Task, agent: ClaudeCodeAgent, name: str, lesson: str | None = None
) -> TrialResult:
    spec = TrialSpec(
        task=task, run_id="cc", iteration=1, trial_id=f"cc-{name}", trial_dir=tmp_path / name, run_dir=tmp_path,
        model_label="claude-code", default_timeout_sec=120, system_prompt_append=lesson,
    )  # fmt: skip
    return run_trial(spec, agent, EnvironmentFactory().create)


def _agent() -> ClaudeCodeAgent:
    agent = ClaudeCodeAgent(ModelConfig(type="claude-code"))
    agent.retry_backoff_sec = (0.1,)
    return agent


@pytest.mark.container
def test_api_errors_are_infra_errors_retried_only_while_nothing_was_done(
    engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (task,) = select_tasks(load_suite(EXAMPLES / "tb2"), ["hello-world"]).tasks
    with FakeAnthropic(scripted(then=ApiError(500))) as stub:
        for k, v in _env(stub).items():
            monkeypatch.setenv(k, v)
        result = _in_process(tmp_path, task, _agent(), "always-500", lesson="LESSON-7: read the task twice")
        requests = stub.agent_requests()
    assert (result.status, result.failure_mode) == ("error", "infra_error")
    assert result.error_message and "API error (HTTP 500)" in result.error_message
    assert len(requests) == 3  # one run plus two clean restarts, then it gives up
    assert "LESSON-7: read the task twice" in json.dumps(requests[0].body.get("system"))  # the lessons hook
    assert result.model_server_down  # an API error: the circuit breaker counts it, the trial is re-run
    assert not (tmp_path / "always-500/verifier").exists()
    raw = (tmp_path / "always-500/agent/claude-code.jsonl").read_text()
    assert raw.count('"event": "retry"') == 2

    with FakeAnthropic(scripted(Turn(tool_uses=[bash("true")]), then=ApiError(529, "overloaded_error"))) as stub:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", stub.url)
        result = _in_process(tmp_path, task, _agent(), "late-error")
        requests = stub.agent_requests()
    assert (result.status, result.failure_mode) == ("error", "infra_error")
    assert len(requests) == 2  # a tool had run: no restart on a dirty environment
    _no_key_anywhere(tmp_path)


def test_max_turns_is_an_agent_failure_and_host_commands_stay_confined(tmp_path: Path) -> None:
    canary = Path.home() / f".tbench-canary-{uuid.uuid4().hex}"
    canary.write_text("original\n")
    try:
        attack = f"echo pwned > {canary}; echo pwned > /etc/tbench-canary"  # a private home; the system is read-only
        script = scripted(Turn(tool_uses=[bash(attack)]), then=Turn(tool_uses=[bash("true")]))
        with FakeAnthropic(script) as stub:
            proc, out = _cli(tmp_path, stub, _suite(tmp_path), "--model", "claude-code", "--max-turns", "3")
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert canary.read_text() == "original\n"
    finally:
        canary.unlink(missing_ok=True)
    r = _result(out, "hello")
    assert (r["status"], r["failure_mode"]) == ("fail", "agent_error")
    assert "Reached maximum number of turns (3)" in r["error_message"]
    final = json.loads((out / "iterations/001/hello/agent/claude-code.jsonl").read_text().splitlines()[-1])
    assert (final["subtype"], final["terminal_reason"]) == ("error_max_turns", "max_turns")
    assert r["turns"] == final["num_turns"]  # the CLI's own count (it counts the refused fourth turn too)
    traj = Trajectory.model_validate_json((out / "iterations/001/hello/agent/trajectory.json").read_text())
    assert traj.stop_reason == "max_turns" and len(traj.steps) == 3
    denied = traj.steps[0].tool_results[0]
    assert denied.is_error and "Read-only file system" in denied.output
    _no_key_anywhere(out)


def test_claude_validation_rate_mixes_models_reproducibly_and_reports_split(tmp_path: Path) -> None:
    tasks = [t.id for t in load_suite(EXAMPLES / "local-suite.json").tasks]
    seed = next(
        s for s in range(100) if len({choose_model(s, 0.5, i, t) for i in (1, 2) for t in tasks}) == 2
    )  # a seed whose draw gives both models, so the split is visible
    with FakeAnthropic(scripted(then=Turn(text="I will not do anything."))) as stub:
        proc, out = _cli(
            tmp_path, stub, EXAMPLES / "local-suite.json", "--model", "oracle", "--iterations", "2",
            "--claude-validation-rate", "0.5", "--seed", str(seed),
        )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    expected = {(i, t): "claude-code" if choose_model(seed, 0.5, i, t) else "oracle" for i in (1, 2) for t in tasks}
    got = {(i, t): _result(out, t, i)["model"] for i in (1, 2) for t in tasks}
    assert got == expected
    for (i, t), model in got.items():
        assert _result(out, t, i)["status"] == ("pass" if model == "oracle" else "fail")
    n_claude = sum(m == "claude-code" for m in got.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["by_model"]["oracle"]["pass_rate"] == 1.0
    assert summary["by_model"]["claude-code"] == {
        "total": n_claude, "passed": 0, "infra_errors": 0, "build_errors": 0, "graded": n_claude, "pass_rate": 0.0,
        "total_tokens": n_claude * 1280,
        "total_cost_usd": summary["by_model"]["claude-code"]["total_cost_usd"],
    }  # fmt: skip
    report = (out / "report.md").read_text()
    assert "## By model" in report and "| oracle | " in report and "| claude-code | " in report
    episodes = [json.loads(x) for x in (tmp_path / ".openagents/gym/episodes.jsonl").read_text().splitlines()]
    for ep in episodes:
        split = {m: s["total"] for m, s in ep["byModel"].items()}
        assert split == {
            m: c
            for m in ("claude-code", "oracle")
            if (c := sum(1 for (i, _), v in got.items() if i == ep["iteration"] and v == m))
        }
    config = json.loads((out / "config.json").read_text())["model_settings"]
    assert (config["claude_validation_rate"], config["seed"]) == (0.5, seed)
    resumed = run_cli("--resume", str(out / "state.json"), env=_env(stub))
    assert resumed.returncode == 0, resumed.stderr  # a finished run resumes to nothing, same settings
    _no_key_anywhere(out, tmp_path / ".openagents")


def test_credentials_and_binary_are_checked_before_anything_is_written(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN",
                                                            "CLAUDE_CODE_OAUTH_TOKEN")}  # fmt: skip
    suite = str(EXAMPLES / "local-suite.json")
    proc = run_cli("--suite", suite, "--output", str(tmp_path / "a"), "--project-root", str(tmp_path), env=env)
    assert proc.returncode == 2 and "Claude Code needs credentials" in proc.stderr and not (tmp_path / "a").exists()
    env.update(ANTHROPIC_API_KEY=KEY, TBENCH_CLAUDE_BIN=str(tmp_path / "no-claude"))
    proc = run_cli("--suite", suite, "--output", str(tmp_path / "b"), "--project-root", str(tmp_path), env=env)
    assert proc.returncode == 2 and "claude CLI is not installed" in proc.stderr and not (tmp_path / "b").exists()
    _no_key_anywhere(tmp_path)


def test_the_time_limit_kills_claude_code_and_its_commands(tmp_path: Path) -> None:
    marker = f"tbench-sleep-{uuid.uuid4().hex[:8]}"
    script = scripted(then=Turn(tool_uses=[bash(f"sleep 300 # {marker}")]))
    with FakeAnthropic(script) as stub:
        proc, out = _cli(tmp_path, stub, _suite(tmp_path, timeout_seconds=8), "--model", "claude-code")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = _result(out, "hello")
    assert (r["status"], r["failure_mode"]) == ("timeout", "agent_timeout")
    assert r["timings"]["agent_ms"] < 60_000
    leftovers = [p for p in Path("/proc").glob("[0-9]*") if marker.encode() in _cmdline(p)]
    assert leftovers == []  # the sandbox's whole process tree is gone
    traj = Trajectory.model_validate_json((out / "iterations/001/hello/agent/trajectory.json").read_text())
    assert traj.stop_reason == "timeout" and traj.steps[0].tool_calls[0].name == "Bash"


def _cmdline(proc_dir: Path) -> bytes:
    try:
        return (proc_dir / "cmdline").read_bytes()
    except OSError:
        return b""


def test_custom_headers_and_url_credentials_never_reach_a_file(tmp_path: Path) -> None:
    """ANTHROPIC_CUSTOM_HEADERS reaches the API but is a secret: the agent prints it (whole and one header's
    value alone) and the endpoint URL carries credentials; neither lands in anything the run writes or prints."""
    header_value = "hv-" + uuid.uuid4().hex
    headers = f"X-Tenant: {header_value}\nX-Other: plain"
    password = "pw-" + uuid.uuid4().hex
    leak = bash("echo \"$ANTHROPIC_CUSTOM_HEADERS\"; printenv ANTHROPIC_CUSTOM_HEADERS | head -1 | cut -d' ' -f2; env")
    with FakeAnthropic(scripted(Turn(tool_uses=[leak]), then=Turn(text="done"))) as stub:
        secret_url = stub.url.replace("http://", f"http://tenant:{password}@")
        env = {**_env(stub, ANTHROPIC_CUSTOM_HEADERS=headers), "ANTHROPIC_BASE_URL": secret_url}
        out = tmp_path / "run"
        proc = run_cli("--suite", str(_suite(tmp_path)), "--iterations", "1", "--output", str(out),
                       "--project-root", str(tmp_path), "--model", "claude-code", env=env)  # fmt: skip
        requests = stub.agent_requests()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert requests and requests[0].headers.get("X-Tenant") == header_value  # it was passed to Claude Code
    raw = (out / "iterations/001/hello/agent/claude-code.jsonl").read_text()
    assert "[REDACTED]" in raw  # the agent did print it
    config = json.loads((out / "config.json").read_text())
    assert config["model_settings"]["anthropic_base_url"] == secret_url.replace(password, "[REDACTED]")
    for text in (proc.stdout, proc.stderr):
        assert header_value not in text and password not in text
    for path in [*out.rglob("*"), *(tmp_path / ".openagents").rglob("*")]:
        if path.is_file():
            data = path.read_bytes()
            assert header_value.encode() not in data, f"a custom header's value was written to {path}"
            assert password.encode() not in data, f"the endpoint's password was written to {path}"
    _no_key_anywhere(out)
