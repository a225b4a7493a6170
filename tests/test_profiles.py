"""`--profile NAME`: an agent profile (.openagents/trainer/profiles/NAME.toml) reaches every agent type. Checked on the
real requests the fake model servers receive (Ollama, OpenAI-compatible) and the real Claude Code CLI sends to the
Anthropic stub: system prompt, sampler settings, tools offered, turn cap and model name; config.json keeps the
profile so a resume runs the same agent; bad profiles are one line, exit 2, nothing written."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tbench.agents.model_adapter import model_settings_from_flags
from tbench.archivist.memory_service import MemoryStore
from tbench.errors import UserError
from tbench.models.lessons import LearningConfig, Lesson, LessonFile, lesson_id
from tbench.models.model_settings import ModelSettings
from tbench.models.profile import AgentProfile
from tbench.models.run import RunConfig
from tbench.overnight.iterate import IterateOptions, apply_profile
from tests.conftest import ci_mandatory, run_cli
from tests.fake_anthropic import FakeAnthropic, Turn, bash, scripted
from tests.fake_ollama import FakeOllama, Reply
from tests.fake_openai import Answer, FakeOpenAI

PROMPT = "PROFILE-7f3: check your work by running the tests before you finish."
LESSON = "IF a task asks to write a word into a file THEN write only that word and nothing else"


def _suite(tmp_path: Path) -> Path:
    """One host-workspace task without a turn cap of its own (so the profile's applies)."""
    task = {
        "id": "hello",
        "name": "hello",
        "description": "Write the word hello into the file answer.txt.",
        "verification": {"type": "custom", "script": 'test "$(cat answer.txt)" = hello'},
        "timeout_seconds": 60,
    }
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"name": "profiles", "version": "1", "tasks": [task]}))
    return path


def _profile(root: Path, name: str, body: str) -> Path:
    path = root / ".openagents/trainer/profiles" / f"{name}.toml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'id = "{name}"\n{body}')
    return path


def _overnight(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from tbench.cli.app import overnight_main; overnight_main()", *args],
        capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip


def _result(out: Path, iteration: int = 1) -> dict[str, Any]:
    return dict(json.loads((out / f"iterations/{iteration:03d}/hello/result.json").read_text()))


def _assistant_turns(messages: list[dict[str, Any]]) -> int:
    return sum(1 for m in messages if m["role"] == "assistant")


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


def _tool_agent(turns: int) -> Any:
    """Turn 1 calls read_file (not offered by the profile), turn 2 writes the answer, then shell forever."""
    if turns == 0:
        return ("read_file", {"path": "answer.txt"})
    if turns == 1:
        return ("write_file", {"path": "answer.txt", "content": "hello\n"})
    return ("shell", {"command": "true"})


def test_ollama_requests_carry_the_profile(ollama: FakeOllama, tmp_path: Path) -> None:
    ollama.add_model("profiled", lambda body, n: Reply(tool_calls=[_tool_agent(_assistant_turns(body["messages"]))]))
    _profile(
        tmp_path, "terse",
        f'model = "ollama:profiled"\nsystem_prompt_append = "{PROMPT}"\nmemory = "read"\ntop_k = 2\n'
        'token_budget = 120\nmax_turns = 3\ntemperature = 0.2\ntop_p = 0.9\nnum_predict = 256\n'
        'tools = ["shell", "write_file"]\ntimeout_multiplier = 2.0\nnotes = "for the test"\n',
    )  # fmt: skip
    lessons = tmp_path / "lessons.json"
    now = "2026-12-01T00:00:00.000Z"
    lesson = Lesson(id=lesson_id(LESSON), category="heuristic", text=LESSON, importance=0.9, source="import",
                    created_at=now, updated_at=now)  # fmt: skip
    lessons.write_text(LessonFile(lessons=[lesson]).model_dump_json())
    MemoryStore.for_project(tmp_path).import_file(lessons)
    out = tmp_path / "run"
    proc = run_cli(
        "--suite", str(_suite(tmp_path)), "--iterations", "1", "--output", str(out), "--project-root", str(tmp_path),
        "--model", "ollama:not-served", "--ollama-endpoint", ollama.url, "--model-option", "retries=0",
        "--model-option", "temperature=0.9", "--timeout-multiplier", "1.5", "--profile", "terse",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "profile terse" in proc.stdout
    chats = ollama.chats()
    assert [c["model"] for c in chats] == ["profiled"] * 3  # the profile's model, not --model; the turn cap: 3
    for chat in chats:
        assert [t["function"]["name"] for t in chat["tools"]] == ["shell", "write_file"]
        opts = chat["options"]
        assert (opts["temperature"], opts["top_p"], opts["num_predict"]) == (0.2, 0.9, 256)  # profile over flag
    system = chats[0]["messages"][0]["content"]
    assert PROMPT in system and LESSON in system and system.index(PROMPT) < system.index(LESSON)
    assert "- write_file:" in system and "- read_file:" not in system  # the prompt lists only the offered tools
    refused = next(m for m in chats[1]["messages"] if m["role"] == "tool")
    assert refused["content"].startswith("error: unknown tool 'read_file'; the tools are shell, write_file\n")
    assert refused["content"].endswith(" of 3m 00s]")  # the task's 60 s x --timeout-multiplier 1.5 x the profile's 2
    r = _result(out)
    assert (r["status"], r["turns"], r["lesson_ids"]) == ("pass", 3, [lesson.id])
    traj = json.loads((out / "iterations/001/hello/agent/trajectory.json").read_text())
    assert traj["stop_reason"] == "max_turns"
    config = json.loads((out / "config.json").read_text())
    assert config["profile"]["id"] == "terse" and config["profile"]["tools"] == ["shell", "write_file"]
    assert (config["model"], config["max_turns"], config["timeout_multiplier"]) == ("ollama:profiled", 3, 3.0)
    learning = config["learning"]
    assert (learning["memory"], learning["top_k"], learning["token_budget"]) == ("read", 2, 120)
    options = config["model_settings"]["options"]
    assert (options["temperature"], options["top_p"], options["num_predict"], options["retries"]) == (0.2, 0.9, 256, 0)


def test_openai_requests_carry_the_profile_and_resume_keeps_it(tmp_path: Path) -> None:
    def policy(body: dict[str, Any], n: int) -> Answer:
        turns = _assistant_turns(body["messages"])
        return Answer(content="Done.") if turns else Answer(tool_calls=[_tool_agent(1)])

    _profile(tmp_path, "sampled", f'system_prompt_append = "{PROMPT}"\ntop_p = 0.5\nnum_predict = 128\n'
             'temperature = 0.0\ntools = ["write_file", "shell"]\n')  # fmt: skip
    _profile(tmp_path, "other", "temperature = 1.0\n")
    out = tmp_path / "run"
    env = {**os.environ, "OPENAI_API_KEY": "sk-test-" + uuid.uuid4().hex}
    with FakeOpenAI(models={"coder": policy}) as fake:
        common = ("--openai-endpoint", fake.url, "--workers", "1")
        proc = _overnight(
            "--suite", str(_suite(tmp_path)), "--iterations", "2", "--output", str(out), "--project-root",
            str(tmp_path), "--model", "openai:coder", "--profile", "sampled", "--stop-after-iteration", "1",
            "--model-option", "retries=0", *common, env=env,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stdout + proc.stderr
        first = len(fake.task_chats())
        assert first == 2 and json.loads((out / "state.json").read_text())["status"] == "stopped"
        changed = _overnight("--resume", str(out / "state.json"), "--profile", "other", *common, env=env)
        assert changed.returncode == 2 and changed.stderr.count("\n") == 1
        assert "--profile cannot change on --resume" in changed.stderr
        resumed = _overnight("--resume", str(out / "state.json"), *common, env=env)
        assert resumed.returncode == 0, resumed.stdout + resumed.stderr
        chats = fake.task_chats()
    assert len(chats) == 4  # two turns in each iteration, the second after the resume
    for chat in chats:
        assert (chat["top_p"], chat["max_tokens"], chat["temperature"]) == (0.5, 128, 0.0)
        assert [t["function"]["name"] for t in chat["tools"]] == ["shell", "write_file"]
        assert PROMPT in chat["messages"][0]["content"]
    assert [_result(out, i)["status"] for i in (1, 2)] == ["pass", "pass"]
    config = json.loads((out / "config.json").read_text())
    assert config["profile"]["id"] == "sampled" and config["model"] == "openai:coder"


@pytest.fixture
def claude_cli() -> str:
    path = shutil.which("claude")
    if path is None:
        if ci_mandatory():
            pytest.fail("the claude CLI is missing under CI (scripts/test installs it)")
        pytest.skip("the claude CLI is not installed: npm install -g @anthropic-ai/claude-code")
    return path


def test_claude_code_gets_the_profiles_prompt_turns_model_and_tools(claude_cli: str, tmp_path: Path) -> None:
    _profile(tmp_path, "cc", f'model = "claude-code:claude-profile-model"\nsystem_prompt_append = "{PROMPT}"\n'
             'max_turns = 2\ntools = ["Bash", "Write"]\n')  # fmt: skip
    out = tmp_path / "run"
    with FakeAnthropic(scripted(then=Turn(tool_uses=[bash("true")]))) as stub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))}
        env.update(ANTHROPIC_BASE_URL=stub.url, ANTHROPIC_API_KEY="sk-ant-api03-" + uuid.uuid4().hex,
                   CLAUDE_CODE_MAX_RETRIES="0")  # fmt: skip
        proc = run_cli(
            "--suite", str(_suite(tmp_path)), "--iterations", "1", "--output", str(out), "--project-root",
            str(tmp_path), "--model", "claude-code", "--profile", "cc", env=env,
        )  # fmt: skip
        requests = stub.agent_requests()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(requests) == 2  # the profile's turn cap, honoured by the CLI itself
    for request in requests:
        assert request.body["model"] == "claude-profile-model"
        assert sorted(t["name"] for t in request.body["tools"]) == ["Bash", "Write"]
        assert PROMPT in json.dumps(request.body["system"])
    r = _result(out)
    assert (r["status"], r["failure_mode"], r["model"]) == ("fail", "agent_error", "claude-code:claude-profile-model")
    assert "Reached maximum number of turns (2)" in r["error_message"]


@pytest.mark.parametrize(
    ("name", "body", "expected"),
    [
        ("missing", None, "--profile: unknown profile 'missing'"),
        ("typo", "temprature = 0.2\n", "temprature: Extra inputs are not permitted"),
        ("wrong", 'temperature = "hot"\n', "temperature: Input should be a valid number"),
        ("browser", 'tools = ["shell", "browser"]\n',
         "--profile: browser: tool(s) 'browser' are not tools of the ollama agent; its tools are read_file, shell, "
         "write_file"),
    ],
)  # fmt: skip
def test_a_bad_profile_is_one_line_and_writes_nothing(
    ollama: FakeOllama, tmp_path: Path, name: str, body: str | None, expected: str
) -> None:
    ollama.add_model("agent", lambda body, n: Reply(content="Done."))
    _profile(tmp_path, "good", "")
    if body is not None:
        _profile(tmp_path, name, body)
    out = tmp_path / "run"
    proc = run_cli(
        "--suite", str(_suite(tmp_path)), "--output", str(out), "--project-root", str(tmp_path),
        "--model", "ollama:agent", "--ollama-endpoint", ollama.url, "--profile", name,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.count("\n") == 1 and expected in proc.stderr, proc.stderr
    if body is None:
        assert "profiles here: good" in proc.stderr
    assert not out.exists() and not ollama.chats()


def test_apply_profile_keeps_what_the_profile_leaves_out(tmp_path: Path) -> None:
    models = model_settings_from_flags({"model_option": ["temperature=0.7", "num_predict=64"]})
    opts = IterateOptions(
        suite=tmp_path, model="ollama:a", max_turns=9, timeout_multiplier=2.0, models=models,
        learning=LearningConfig(memory="learn", top_k=5),
    )  # fmt: skip
    baseline = apply_profile(opts, AgentProfile(id="baseline"))
    assert (baseline.model, baseline.max_turns, baseline.timeout_multiplier) == ("ollama:a", 9, 2.0)
    assert baseline.models.options == models.options and baseline.learning == opts.learning
    some = apply_profile(opts, AgentProfile(id="p", top_p=0.8, top_k=1, timeout_multiplier=1.5))
    assert (some.models.options.temperature, some.models.options.top_p, some.models.options.num_predict) == (
        0.7, 0.8, 64,
    )  # fmt: skip
    assert (some.learning.memory, some.learning.top_k, some.timeout_multiplier) == ("learn", 1, 3.0)
    assert some.profile is not None and some.profile.id == "p"


def test_a_config_written_before_profiles_still_loads() -> None:
    old = {
        "run_id": "r", "created_at": "2026-01-01T00:00:00Z", "tbench_version": "0.1", "suite": "/s", "suite_name": "s",
        "suite_version": "1", "task_ids": ["t"], "model": "oracle", "iterations": 1, "timeout_sec": 60.0,
        "output": "/o", "project_root": "/p",
    }  # fmt: skip
    assert RunConfig.model_validate(old).profile is None
    with_profile = RunConfig.model_validate({**old, "profile": {"id": "x", "max_turns": 4}})
    assert with_profile.profile == AgentProfile(id="x", max_turns=4)


def test_a_profile_model_or_tool_list_the_run_cannot_use_is_refused(tmp_path: Path) -> None:
    opts = IterateOptions(suite=tmp_path, model="ollama:a")
    with pytest.raises(UserError) as bad_model:
        apply_profile(opts, AgentProfile(id="p", model="gpt-9"))
    assert bad_model.value.field == "profile" and "p: model: unknown model 'gpt-9'" in bad_model.value.message
    mixed = IterateOptions(suite=tmp_path, model="ollama:a", models=ModelSettings(claude_validation_rate=0.5))
    with pytest.raises(UserError) as both:  # Claude Code runs some trials too, and has no `shell`
        apply_profile(mixed, AgentProfile(id="p", tools=["shell"]))
    assert "not tools of the claude-code agent; its tools are Bash, Edit, Glob, Grep, Read, Write" in both.value.message
    assert apply_profile(mixed, AgentProfile(id="p", max_turns=2)).max_turns == 2
