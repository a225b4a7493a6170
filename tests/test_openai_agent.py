"""The OpenAI-compatible path: the official `openai` client and the shared tool loop against an OpenAI-protocol
server on 127.0.0.1 (the LLM's stand-in), real host workspaces (bubblewrap), real `tbench-iterate`; plus the
recogniser of tool calls written as text, which serves both transports."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tbench.agents.model_adapter import create_model_runner
from tbench.agents.openai_agent import OpenAIAgent
from tbench.llm.text_calls import find_text_tool_calls
from tbench.models.model_settings import ModelConfig
from tbench.models.trajectory import Trajectory
from tests.conftest import EXAMPLES, run_cli
from tests.fake_openai import TEXT_PROBE, Answer, FakeOpenAI, scripted

LOCAL_SUITE = EXAMPLES / "local-suite.json"
NAMES = {"shell", "read_file", "write_file"}
HELLO = "printf 'Hello, world!\\n' > hello.txt"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def _run(
    tmp_path: Path, endpoint: str, model: str, *extra: str, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / f"run-{uuid.uuid4().hex[:8]}"
    proc = run_cli(
        "--suite", str(LOCAL_SUITE), "--tasks", "hello-file", "--model", f"openai:{model}",
        "--openai-endpoint", endpoint, "--iterations", "1", "--output", str(out), "--project-root", str(tmp_path),
        *extra, env=env,
    )  # fmt: skip
    return proc, out


def _result(out: Path) -> dict[str, Any]:
    (r,) = json.loads((out / "iterations/001/results.json").read_text())["results"]
    assert isinstance(r, dict)
    return r


def _trajectory(out: Path) -> Trajectory:
    return Trajectory.model_validate_json((out / "iterations/001/hello-file/agent/trajectory.json").read_text())


@pytest.mark.parametrize(
    "content",
    [
        '<tool_call>\n{"name": "shell", "arguments": {"command": "ls"}}\n</tool_call>',
        '[tool_call]\n{"name": "shell", "arguments": {"command": "ls"}}\n[/tool_call]',
        'I will list the files.\n```json\n{"name": "shell", "arguments": {"command": "ls"}}\n```',
        '{"name": "shell", "arguments": "{\\"command\\": \\"ls\\"}"}',
        '<tool_call>{"name": "shell", "parameters": {"command": "ls"}}',  # unclosed tag, `parameters` spelling
        '[{"type": "function", "function": {"name": "shell", "arguments": {"command": "ls"}}}]',
    ],
)
def test_tool_calls_written_as_text_are_recognised(content: str) -> None:
    (call,) = find_text_tool_calls(content, NAMES)
    assert (call.name, call.arguments) == ("shell", {"command": "ls"})
    assert call.id and call.id.startswith("text-")


@pytest.mark.parametrize(
    "content",
    [
        None,
        "",
        "Run `ls` to see the files.",
        '```json\n{"name": "rm_rf", "arguments": {}}\n```',  # not one of the tools
        '```json\n{"rows": 3, "name": "report"}\n```',  # JSON that is not a call
        "<tool_call>not json</tool_call>",
    ],
)
def test_text_that_is_not_a_tool_call_is_left_alone(content: str | None) -> None:
    assert find_text_tool_calls(content, NAMES) == []


def test_text_calls_and_null_content_drive_the_loop_through_the_openai_client(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.models["qwen-coder"] = scripted(
        Answer(content="```json\n" + json.dumps({"name": "shell", "arguments": {"command": HELLO}}) + "\n```"),
        Answer(content=None, tool_calls=[("shell", {"command": "cat hello.txt"})], cached_tokens=100),
        then=Answer(content=None),
    )
    secret = "sk-test-" + uuid.uuid4().hex
    proc, out = _run(tmp_path, fake.url, "qwen-coder", env={**os.environ, "OPENAI_API_KEY": secret})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = _result(out)
    assert (r["status"], r["failure_mode"], r["model"], r["turns"]) == ("pass", None, "openai:qwen-coder", 3)
    assert r["tokens"] == {"input": 3 * 120 - 100, "output": 3 * 15, "cache_read": 100, "cache_write": 0}
    chats = fake.task_chats()
    assert len(chats) == 3 and chats[0]["tool_choice"] == "auto"
    history = chats[2]["messages"]
    assert [m["role"] for m in history] == ["system", "user", "assistant", "tool", "assistant", "tool"]
    lifted, result = history[2], history[3]
    assert lifted["tool_calls"][0]["function"]["name"] == "shell"
    assert json.loads(lifted["tool_calls"][0]["function"]["arguments"]) == {"command": HELLO}
    assert result["tool_call_id"] == lifted["tool_calls"][0]["id"]
    assert history[4]["content"] == "" and history[4]["tool_calls"][0]["id"] == history[5]["tool_call_id"]
    assert "Hello, world!" in history[5]["content"]
    assert all({k.lower(): v for k, v in h.items()}["authorization"] == f"Bearer {secret}" for h in fake.headers)
    traj = _trajectory(out)
    assert traj.agent == "openai" and traj.stop_reason == "completed"
    assert [c.name for s in traj.steps for c in s.tool_calls] == ["shell", "shell"]
    assert traj.steps[0].server_ms == 100  # llama-server's `timings`
    config = (out / "config.json").read_text()
    assert json.loads(config)["model_settings"]["openai_endpoint"] == fake.url
    for path in [*out.rglob("*"), *tmp_path.rglob("*")]:
        if path.is_file():
            assert secret.encode() not in path.read_bytes(), path


def test_a_model_repeating_one_command_is_told_so_and_stops_at_the_turn_cap(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.models["looper"] = scripted(then=Answer(tool_calls=[("shell", {"command": "ls /nonexistent"})]))
    proc, out = _run(tmp_path, fake.url, "looper")  # hello-file sets max_turns = 10
    assert proc.returncode == 0, proc.stderr
    r = _result(out)
    assert (r["status"], r["turns"]) == ("fail", 10)
    traj = _trajectory(out)
    assert traj.stop_reason == "max_turns" and len(fake.task_chats()) == 10
    notes = ["identical shell calls in a row" in s.tool_results[0].output for s in traj.steps]
    assert notes == [False, False] + [True] * 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_preflight_reports_each_problem_in_one_line(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.models["m"] = scripted()
    cases = [
        (f"http://127.0.0.1:{_free_port()}/v1", "m", "cannot reach the OpenAI-compatible server"),
        (fake.url, "missing", "model 'missing' is not served at"),
    ]
    for endpoint, model, expected in cases:
        proc, _ = _run(tmp_path, endpoint, model)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        assert expected in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    fake.probe = TEXT_PROBE
    proc, _ = _run(tmp_path, fake.url, "m")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "wrote its tool call as text, not as tool_calls" in proc.stderr and "--jinja" in proc.stderr
    fake.probe = Answer(content="Sure! The word is ready.")
    proc, _ = _run(tmp_path, fake.url, "m")
    assert proc.returncode == 2 and "did not call the probe tool" in proc.stderr, proc.stderr
    assert fake.task_chats() == []  # no trial ever started


def test_endpoint_comes_from_openai_base_url_and_gets_v1(fake: FakeOpenAI, tmp_path: Path) -> None:
    fake.models["m"] = scripted(Answer(tool_calls=[("shell", {"command": HELLO})]))
    base = fake.url.removesuffix("/v1")
    out = tmp_path / "run"
    proc = run_cli(
        "--suite", str(LOCAL_SUITE), "--tasks", "hello-file", "--model", "openai:m", "--iterations", "1",
        "--output", str(out), "--project-root", str(tmp_path), env={**os.environ, "OPENAI_BASE_URL": base},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert _result(out)["status"] == "pass"
    assert json.loads((out / "config.json").read_text())["model_settings"]["openai_endpoint"] == fake.url


def test_agent_object_is_registered_for_openai() -> None:
    runner = create_model_runner(ModelConfig(type="openai", model="m", endpoint="http://127.0.0.1:1/v1"))
    assert isinstance(runner, OpenAIAgent) and runner.transport.label == "openai:m"
