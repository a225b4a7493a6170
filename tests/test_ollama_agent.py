"""The Ollama path end to end: the real `ollama` client and the tool loop against an Ollama-protocol server on
127.0.0.1 (the LLM's stand-in), real containers and real host workspaces (bubblewrap), real `tbench-iterate`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tbench.agents.ollama_agent import OllamaAgent
from tbench.bench.environments import EnvironmentFactory
from tbench.bench.formats import load_suite, select_tasks
from tbench.bench.trial import run_trial
from tbench.errors import InfraError, UserError
from tbench.llm.chat import ChatMessage
from tbench.llm.ollama import OllamaTransport
from tbench.models.model_settings import ChatOptions, ModelConfig
from tbench.models.trajectory import Trajectory
from tbench.models.trial import TrialSpec
from tests.conftest import EXAMPLES, run_cli
from tests.fake_ollama import FakeOllama, Fault, Reply, last_tool_result, scripted

LOCAL_SUITE = EXAMPLES / "local-suite.json"
FAST_RETRIES = ["--model-option", "retries=2", "--model-option", "retry_backoff_sec=0.01"]


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


def _run(
    tmp_path: Path, fake: FakeOllama, model: str, suite: Path, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / f"run-{uuid.uuid4().hex[:8]}"
    proc = run_cli(
        "--suite",
        str(suite),
        "--model",
        f"ollama:{model}",
        "--ollama-endpoint",
        fake.url,
        "--iterations",
        "1",
        "--output",
        str(out),
        "--project-root",
        str(tmp_path),
        *extra,
        env=env,
    )
    return proc, out


def _results(out: Path) -> dict[str, dict[str, Any]]:
    data = json.loads((out / "iterations/001/results.json").read_text())
    return {r["task_id"]: r for r in data["results"]}


def _trajectory(out: Path, task: str) -> Trajectory:
    return Trajectory.model_validate_json((out / "iterations/001" / task / "agent/trajectory.json").read_text())


def _fix_median(body: dict[str, Any], n: int) -> Reply:
    """A model that reads the file, writes a fix only once it has seen the bug, runs a check, and stops."""
    seen = last_tool_result(body)
    if n == 0:
        return Reply(tool_calls=[("read_file", {"path": "/app/stats.py"})], prompt_eval_count=300, eval_count=12)
    if n == 1:
        if not (seen and seen.get("tool_name") == "read_file" and "def median" in seen.get("content", "")):
            return Reply(content="I could not read the file.")
        fixed = (
            "def median(xs):\n    s = sorted(xs)\n    n = len(s)\n    m = n // 2\n"
            "    return s[m] if n % 2 else (s[m - 1] + s[m]) / 2\n"
        )
        return Reply(tool_calls=[("write_file", {"path": "stats.py", "content": fixed})], prompt_eval_count=400)
    if n == 2:
        check = "python3 -c 'from stats import median; print(median([1, 2, 3, 4]))'"
        return Reply(tool_calls=[("shell", {"command": check})], prompt_eval_count=500)
    ok = seen is not None and "2.5" in seen.get("content", "")
    return Reply(content="Fixed: median averages the middle pair." if ok else "Check failed.", eval_count=9)


@pytest.mark.container
def test_scripted_model_solves_a_bundled_tb2_task_in_a_container(engine: Any, fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("coder:7b", _fix_median)
    secret = "ollama-key-" + uuid.uuid4().hex
    env = {**os.environ, "OLLAMA_API_KEY": secret, "ANTHROPIC_API_KEY": "sk-ant-" + uuid.uuid4().hex}
    proc, out = _run(
        tmp_path,
        fake,
        "coder:7b",
        EXAMPLES / "tb2",
        "--tasks",
        "fix-median",
        "--model-option",
        "temperature=0",
        "--model-option",
        "num_ctx=16384",
        "--seed",
        "7",
        env=env,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = _results(out)["fix-median"]
    assert (result["status"], result["failure_mode"], result["model"]) == ("pass", None, "ollama:coder:7b")
    assert result["turns"] == 4
    assert result["tokens"] == {"input": 300 + 400 + 500 + 100, "output": 12 + 20 + 20 + 9, "cache_read": 0,
                                "cache_write": 0}  # fmt: skip
    chats = fake.chats("coder:7b")
    assert len(chats) == 4
    assert chats[0]["options"] == {"num_ctx": 16384, "temperature": 0.0, "seed": 7}
    assert [t["function"]["name"] for t in chats[0]["tools"]] == ["shell", "read_file", "write_file"]
    history = chats[3]["messages"]
    assert [m["role"] for m in history] == ["system", "user"] + ["assistant", "tool"] * 3
    assert history[2]["tool_calls"][0]["function"] == {"name": "read_file", "arguments": {"path": "/app/stats.py"}}
    assert [m["tool_name"] for m in history if m["role"] == "tool"] == ["read_file", "write_file", "shell"]
    assert "2.5" in history[-1]["content"] and history[-1]["content"].startswith("exit code: 0")
    headers = {k.lower(): v for k, v in fake.requests[-1].headers.items()}
    assert headers.get("authorization") == f"Bearer {secret}"  # the key was used, in memory only
    traj = _trajectory(out, "fix-median")
    assert traj.agent == "ollama" and traj.stop_reason == "completed" and len(traj.steps) == 4
    assert [c.name for s in traj.steps for c in s.tool_calls] == ["read_file", "write_file", "shell"]
    assert traj.steps[0].tool_results[0].output.startswith("[lines") is False
    assert "def median" in traj.steps[0].tool_results[0].output
    raw = (out / "iterations/001/fix-median/agent/ollama-chat.jsonl").read_text().splitlines()
    assert len(raw) == 4 and json.loads(raw[-1])["content"].startswith("Fixed")
    config = json.loads((out / "config.json").read_text())
    assert config["model_settings"]["ollama_endpoint"] == fake.url
    assert config["model_settings"]["options"]["temperature"] == 0.0
    _assert_no_secret(out, tmp_path, [secret, env["ANTHROPIC_API_KEY"]])


def _assert_no_secret(*roots_and_secrets: Any) -> None:
    *roots, secrets = roots_and_secrets
    for root in roots:
        for path in Path(root).rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                for secret in secrets:
                    assert secret.encode() not in data, f"{secret[:8]}… written to {path}"


def test_a_model_that_never_calls_tools_fails_cleanly(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("chatty", scripted(then=Reply(content="You should create hello.txt with echo.")))
    proc, out = _run(tmp_path, fake, "chatty", LOCAL_SUITE, "--tasks", "hello-file")
    assert proc.returncode == 0, proc.stderr
    r = _results(out)["hello-file"]
    assert (r["status"], r["failure_mode"], r["turns"]) == ("fail", None, 1)
    assert _trajectory(out, "hello-file").stop_reason == "completed"


@pytest.mark.parametrize(
    ("model", "fault", "why"),
    [
        ("always-500", Fault("http500"), "HTTP 500"),
        ("broken-stream", Fault("midstream"), "mid-stream error"),
        ("staller", Fault("stall", seconds=30), "no answer within the time limit"),
        ("dropper", Fault("drop"), "RemoteProtocolError"),
    ],
)
def test_server_faults_become_infra_errors_after_bounded_retries(
    fake: FakeOllama, tmp_path: Path, model: str, fault: Fault, why: str
) -> None:
    fake.add_model(model, scripted(then=fault))  # type: ignore[arg-type]
    proc, out = _run(
        tmp_path, fake, model, LOCAL_SUITE, "--tasks", "hello-file", *FAST_RETRIES,
        "--model-option", "request_timeout_sec=1", "--breaker-after", "1", "--max-outage", "1",
    )  # fmt: skip
    # The model server failed the trial: the run pauses (the circuit breaker), the probe's chat fails too,
    # and past --max-outage the run stops, resumably, with nothing burnt as an infra error.
    assert proc.returncode == 75 and "stayed down" in proc.stderr and "--resume" in proc.stderr, proc.stderr
    (outage,) = json.loads((out / "state.json").read_text())["outages"]
    assert outage["ended"] == "max_outage" and outage["probes"] >= 1
    assert "after 3 attempt(s)" in outage["cause"] and why in outage["cause"]
    assert len(fake.chats(model)) == 3 * (1 + outage["probes"])  # one try plus two retries, per attempt or probe
    assert not (out / "iterations/001/hello-file").exists()  # set aside, to run again on resume
    assert not (out / "iterations/001/_outage/hello-file.1/verifier").exists()  # the tests never ran
    assert not (out / "iterations/001/results.json").exists()  # nothing committed


def test_a_transient_fault_is_retried_and_the_trial_goes_on(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model(
        "flaky",
        scripted(
            Fault("http500"),
            Fault("midstream"),
            Reply(tool_calls=[("shell", {"command": "printf 'Hello, world!\\n' > hello.txt"})]),
        ),
    )
    proc, out = _run(tmp_path, fake, "flaky", LOCAL_SUITE, "--tasks", "hello-file", *FAST_RETRIES)
    assert proc.returncode == 0, proc.stderr
    r = _results(out)["hello-file"]
    assert (r["status"], r["failure_mode"], r["turns"]) == ("pass", None, 2)
    assert len(fake.chats("flaky")) == 4


@pytest.mark.parametrize("hint", [True, False])
def test_the_agent_is_told_its_budget_and_each_turns_time_left(fake: FakeOllama, tmp_path: Path, hint: bool) -> None:
    fake.add_model(
        "timed",
        scripted(
            Reply(tool_calls=[("shell", {"command": "true"}), ("shell", {"command": "true"})]),
            Reply(tool_calls=[("shell", {"command": "printf 'Hello, world!\\n' > hello.txt"})]),
        ),
    )
    flags = () if hint else ("--no-budget-hint",)
    proc, out = _run(tmp_path, fake, "timed", LOCAL_SUITE, "--tasks", "hello-file", *flags)
    assert proc.returncode == 0, proc.stderr
    assert json.loads((out / "config.json").read_text())["budget_hint"] is hint
    last = fake.chats("timed")[-1]["messages"]
    system, tools = last[0]["content"], [m["content"] for m in last if m["role"] == "tool"]
    assert ("You have 1m 00s of wall-clock time" in system) is hint  # hello-file's own 60 s
    # each turn's results end with the clock: on the last result of the turn only
    assert [bool(re.search(r"\[time left: \d+s of 1m 00s\]$", t)) for t in tools] == [False, hint, hint]
    assert _results(out)["hello-file"]["status"] == "pass"
    assert "--no-budget-hint" in run_cli("--help").stdout


def test_turn_cap_and_per_command_timeout(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model(
        "looper",
        scripted(
            Reply(tool_calls=[("shell", {"command": "sleep 60; echo never", "timeout_sec": 1})]),
            then=Reply(tool_calls=[("shell", {"command": "true"})]),
        ),
    )
    t0 = time.monotonic()
    # hello-file sets max_turns 10 itself, which wins over --max-turns (a cap for tasks that set none)
    proc, out = _run(tmp_path, fake, "looper", LOCAL_SUITE, "--tasks", "hello-file", "--max-turns", "3")
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 50  # the 60 s sleep was cut at its 1 s limit
    r = _results(out)["hello-file"]
    assert (r["status"], r["failure_mode"], r["turns"]) == ("fail", "agent_error", 10)
    assert "turn cap (10)" in r["error_message"]
    traj = _trajectory(out, "hello-file")
    assert traj.stop_reason == "max_turns"
    first = traj.steps[0].tool_results[0]
    assert first.is_error and first.output.startswith("timed out") and "never" not in first.output


def test_old_tool_outputs_are_trimmed_to_fit_the_context(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("big-output", scripted(then=Reply(tool_calls=[("shell", {"command": "seq 1 20000"})])))
    proc, _ = _run(
        tmp_path, fake, "big-output", LOCAL_SUITE, "--tasks", "hello-file",
        "--model-option", "num_ctx=8192", "--model-option", "num_predict=1024",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    chats = fake.chats("big-output")
    assert len(chats) == 10  # the task's own turn cap
    budget = (8192 - 1024) * 3  # characters: what the loop allows itself for this context
    sizes = [sum(len(m.get("content", "")) for m in c["messages"]) for c in chats]
    assert max(sizes) <= budget, sizes
    last = chats[-1]["messages"]
    results = [m for m in last if m["role"] == "tool"]
    assert len(results) == 9
    assert all(m["content"].startswith("[trimmed]") for m in results[:-3])  # the oldest were emptied
    assert all("\n20000\n" in m["content"] for m in results[-3:])  # the newest keep their tails
    assert "[trimmed] (cut to fit the context)" in results[-2]["content"]
    assert last[0]["role"] == "system" and last[1]["content"].startswith("Create a file named hello.txt")


def test_preflight_rejects_missing_model_model_without_tools_and_dead_server(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("gemma3:4b", scripted(), tools=False)
    fake.add_model("qwen3:8b", scripted())
    cases = [
        ("nope:1b", fake.url, "model 'nope:1b' is not on the Ollama server", "ollama pull nope:1b"),
        ("gemma3:4b", fake.url, "cannot call tools", "completion, vision"),
        ("qwen3:8b", "http://127.0.0.1:9", "cannot reach the Ollama server at http://127.0.0.1:9", "--ollama-endpoint"),
    ]
    for model, endpoint, needle, hint in cases:
        out = tmp_path / f"out-{model}"
        t0 = time.monotonic()
        proc = run_cli(
            "--suite", str(LOCAL_SUITE), "--model", f"ollama:{model}", "--ollama-endpoint", endpoint,
            "--output", str(out), "--project-root", str(tmp_path),
        )  # fmt: skip
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and hint in lines[0], proc.stderr
        assert time.monotonic() - t0 < 30 and not out.exists()
    assert "the server has: gemma3:4b, qwen3:8b" in run_cli(
        "--suite", str(LOCAL_SUITE), "--model", "ollama:nope", "--ollama-endpoint", fake.url,
        "--output", str(tmp_path / "x"), "--project-root", str(tmp_path),
    ).stderr  # fmt: skip
    assert fake.chats() == []  # nothing was ever asked of a model


def test_lessons_reach_the_system_prompt_and_endpoint_defaults_to_ollama_host(
    fake: FakeOllama, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake.add_model("coder", scripted(Reply(content="ok")))
    monkeypatch.setenv("OLLAMA_HOST", fake.url.removeprefix("http://"))
    from tbench.agents.model_adapter import build_model_plan
    from tbench.models.model_settings import ModelSettings

    plan = build_model_plan("ollama:coder", ModelSettings())
    assert plan.primary.endpoint == fake.url and plan.settings.ollama_endpoint == fake.url
    (task,) = select_tasks(load_suite(LOCAL_SUITE), ["hello-file"]).tasks
    agent = plan.runner(plan.primary)
    agent.preflight([task])
    spec = TrialSpec(
        task=task, run_id="r", iteration=1, trial_id="r-1", trial_dir=tmp_path / "t", run_dir=tmp_path,
        model_label=plan.primary.label, default_timeout_sec=60, system_prompt_append="LESSON-42: check your work",
    )  # fmt: skip
    result = run_trial(spec, agent, EnvironmentFactory().create)
    assert result.turns == 1
    system = fake.chats("coder")[0]["messages"][0]["content"]
    assert system.rstrip().endswith("LESSON-42: check your work") and "# Lessons from earlier runs" in system
    assert "LESSON-42" in (tmp_path / "t/agent/trajectory.json").read_text()


def test_transport_gives_up_on_a_dead_server_and_respects_the_deadline() -> None:
    transport = OllamaTransport("http://127.0.0.1:9", "m", ChatOptions(retries=1, retry_backoff_sec=0.01))
    msgs = [ChatMessage(role="user", content="hi")]
    with pytest.raises(InfraError, match="after 2 attempt"):
        transport.chat(msgs, [], deadline=time.monotonic() + 30)
    with pytest.raises(UserError, match="cannot reach"):
        transport.preflight()


def test_agent_commands_on_the_host_cannot_write_outside_the_workspace(fake: FakeOllama, tmp_path: Path) -> None:
    canary = Path.home() / f".tbench-canary-{uuid.uuid4().hex}"
    tmp_canary = tmp_path / "tmp-canary.txt"
    canary.write_text("original\n")
    tmp_canary.write_text("original\n")
    try:
        fake.add_model(
            "escaper",
            scripted(
                # the home is private (a write lands nowhere), the system read-only
                Reply(tool_calls=[("shell", {"command": f"echo pwned > {canary}; echo pwned > /etc/tbench-canary"})]),
                Reply(tool_calls=[("write_file", {"path": f"/etc/{canary.name}", "content": "pwned"})]),
                Reply(tool_calls=[("shell", {"command": f"echo pwned > {tmp_canary}; cat {tmp_canary}"})]),
                Reply(tool_calls=[("shell", {"command": "printf 'Hello, world!\\n' > hello.txt"})]),
            ),
        )
        proc, out = _run(tmp_path, fake, "escaper", LOCAL_SUITE, "--tasks", "hello-file")
        assert proc.returncode == 0, proc.stderr
        assert canary.read_text() == "original\n" and tmp_canary.read_text() == "original\n"
        r = _results(out)["hello-file"]
        assert r["status"] == "pass"  # the workspace itself stayed writable
        steps = _trajectory(out, "hello-file").steps
        assert steps[0].tool_results[0].is_error and "Read-only file system" in steps[0].tool_results[0].output
        assert steps[1].tool_results[0].is_error and "could not write" in steps[1].tool_results[0].output
    finally:
        canary.unlink(missing_ok=True)


def test_without_a_sandbox_model_agents_need_the_explicit_unsafe_flag(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model(
        "coder", scripted(Reply(tool_calls=[("shell", {"command": "printf 'Hello, world!\\n' > hello.txt"})]))
    )
    env = {**os.environ, "TBENCH_BWRAP": ""}
    proc, out = _run(tmp_path, fake, "coder", LOCAL_SUITE, "--tasks", "hello-file", env=env)
    assert proc.returncode == 2 and not out.exists()
    assert "unconfined" in proc.stderr and "--unsafe-host-agent" in proc.stderr
    oracle = run_cli(
        "--suite", str(LOCAL_SUITE), "--model", "oracle", "--iterations", "1", "--output", str(tmp_path / "o"),
        "--project-root", str(tmp_path), env=env,
    )  # fmt: skip
    assert oracle.returncode == 0, oracle.stderr  # the task's own solution needs no sandbox
    proc, out = _run(tmp_path, fake, "coder", LOCAL_SUITE, "--tasks", "hello-file", "--unsafe-host-agent", env=env)
    assert proc.returncode == 0, proc.stderr
    assert _results(out)["hello-file"]["status"] == "pass"
    assert json.loads((out / "config.json").read_text())["model_settings"]["unsafe_host_agent"] is True


def test_agent_object_is_registered_for_ollama() -> None:
    from tbench.agents.model_adapter import create_model_runner

    runner = create_model_runner(ModelConfig(type="ollama", model="x:1b", endpoint="http://127.0.0.1:1"))
    assert isinstance(runner, OllamaAgent) and runner.config.options.num_ctx == 32768


def test_a_runner_built_without_preflight_still_fits_the_models_context(fake: FakeOllama, tmp_path: Path) -> None:
    """Worker processes build their own runner from config.json and never run the preflight."""
    from tbench.agents.model_adapter import create_model_runner, model_config_for
    from tbench.models.model_settings import ModelSettings

    fake.add_model("small-ctx", scripted(Reply(content="nothing to do")), context_length=4096)
    agent = create_model_runner(model_config_for("ollama:small-ctx", ModelSettings(ollama_endpoint=fake.url)))
    (task,) = select_tasks(load_suite(LOCAL_SUITE), ["hello-file"]).tasks
    spec = TrialSpec(
        task=task, run_id="w", iteration=1, trial_id="w-1", trial_dir=tmp_path / "t", run_dir=tmp_path,
        model_label="ollama:small-ctx", default_timeout_sec=60,
    )  # fmt: skip
    result = run_trial(spec, agent, EnvironmentFactory().create)
    assert (result.status, result.turns) == ("fail", 1)
    assert fake.chats("small-ctx")[0]["options"]["num_ctx"] == 4096  # capped at the model's trained context


@pytest.mark.parametrize(("model", "steps"), [("oracle", 1), ("nop", 0)])
def test_oracle_and_nop_write_the_same_trajectory_format(tmp_path: Path, model: str, steps: int) -> None:
    out = tmp_path / model
    proc = run_cli(
        "--suite", str(LOCAL_SUITE), "--tasks", "sum-numbers", "--model", model, "--iterations", "1",
        "--output", str(out), "--project-root", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    traj = _trajectory(out, "sum-numbers")
    assert (traj.agent, traj.stop_reason, len(traj.steps)) == (model, "completed", steps)
    if steps:
        call, result = traj.steps[0].tool_calls[0], traj.steps[0].tool_results[0]
        assert call.name == "shell" and "awk" in call.arguments["command"] and result.exit_code == 0
        assert traj.raw_output == "oracle.txt"
