"""`--model` forms, model options, endpoints, the per-trial model choice, redaction and context trimming."""

from __future__ import annotations

import pytest

from tbench.agents.model_adapter import (
    build_model_plan,
    choose_model,
    normalize_endpoint,
    parse_model,
    parse_model_options,
)
from tbench.agents.tool_loop import TRIMMED, fit_context
from tbench.errors import UserError
from tbench.llm.chat import ChatMessage, ToolCall
from tbench.models.model_settings import ModelSettings
from tbench.secrets import MASK, Redactor, without_secrets


@pytest.mark.parametrize(
    ("spec", "label", "kind", "model"),
    [
        ("claude-code", "claude-code", "claude-code", None),
        ("claude-code:claude-sonnet-4-5", "claude-code:claude-sonnet-4-5", "claude-code", "claude-sonnet-4-5"),
        ("ollama:codellama:34b", "ollama:codellama:34b", "ollama", "codellama:34b"),
        ("ollama:hf.co/org/repo:Q4_K_M", "ollama:hf.co/org/repo:Q4_K_M", "ollama", "hf.co/org/repo:Q4_K_M"),
        (" oracle ", "oracle", "oracle", None),
        ("nop", "nop", "nop", None),
    ],
)
def test_model_forms(spec: str, label: str, kind: str, model: str | None) -> None:
    config = parse_model(spec)
    assert (config.label, config.type, config.model) == (label, kind, model)


def test_model_options_are_validated_into_one_line_errors() -> None:
    opts = parse_model_options(["num_ctx=65536", "temperature=0.2", "keep_alive=30m", "seed=3", "think=false"])
    assert (opts.num_ctx, opts.temperature, opts.keep_alive, opts.seed, opts.think) == (65536, 0.2, "30m", 3, False)
    with pytest.raises(UserError, match=r"model_option: num_ctx: .*options: num_ctx, temperature"):
        parse_model_options(["num_ctx=lots"])
    with pytest.raises(UserError, match="model_option: bogus: Extra inputs are not permitted"):
        parse_model_options(["bogus=1"])
    with pytest.raises(UserError, match="expected KEY=VALUE"):
        parse_model_options(["num_ctx"])


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("gpu-server", "http://gpu-server:11434"),
        ("gpu-server:8080", "http://gpu-server:8080"),
        ("0.0.0.0", "http://127.0.0.1:11434"),
        ("http://gpu-server", "http://gpu-server"),
        ("https://ollama.example.com/proxy/", "https://ollama.example.com/proxy"),
        ("[::1]:11434", "http://[::1]:11434"),
    ],
)
def test_endpoints_are_read_like_ollama_host(given: str, url: str) -> None:
    assert normalize_endpoint(given) == url


def test_bad_endpoint_and_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(UserError, match="ollama_endpoint"):
        normalize_endpoint("ftp://x")
    monkeypatch.delenv("OLLAMA_HOST", raising=False)
    plan = build_model_plan("ollama:qwen3:8b", ModelSettings())
    assert plan.primary.endpoint == "http://localhost:11434"
    monkeypatch.setenv("OLLAMA_HOST", "10.0.0.5")
    assert build_model_plan("ollama:qwen3:8b", ModelSettings()).primary.endpoint == "http://10.0.0.5:11434"
    explicit = build_model_plan("ollama:qwen3:8b", ModelSettings(ollama_endpoint="box:1234"))
    assert explicit.primary.endpoint == explicit.settings.ollama_endpoint == "http://box:1234"


def test_validation_choice_is_reproducible_and_close_to_the_rate() -> None:
    draws = [choose_model(42, 0.1, i, f"task-{t}") for i in range(1, 11) for t in range(200)]
    assert draws == [choose_model(42, 0.1, i, f"task-{t}") for i in range(1, 11) for t in range(200)]
    assert 150 <= sum(draws) <= 250  # 2000 draws at 10%
    assert draws != [choose_model(43, 0.1, i, f"task-{t}") for i in range(1, 11) for t in range(200)]
    assert not any(choose_model(42, 0.0, 1, f"t{t}") for t in range(100))
    assert all(choose_model(42, 1.0, 1, f"t{t}") for t in range(100))


def test_model_plan_splits_trials_and_keeps_the_seed() -> None:
    plan = build_model_plan("ollama:qwen3:8b", ModelSettings(claude_validation_rate=0.3))
    assert plan.settings.seed is not None  # drawn once, stored in config.json for resumes
    assert plan.settings.effective_options().seed == plan.settings.seed  # also seeds the sampler
    labels = {plan.choose(i, f"t{t}").label for i in range(1, 4) for t in range(30)}
    assert labels == {"ollama:qwen3:8b", "claude-code"}
    with pytest.raises(UserError, match=r"claude_validation_rate: .*already claude-code"):
        build_model_plan("claude-code", ModelSettings(claude_validation_rate=0.1))
    single = build_model_plan("oracle", ModelSettings(seed=5))
    assert {single.choose(1, f"t{t}").label for t in range(30)} == {"oracle"}


def test_redactor_masks_every_secret_of_the_environment() -> None:
    env = {"ANTHROPIC_API_KEY": "sk-ant-0123456789", "GITHUB_TOKEN": "ghp_abcdefghij", "HOME": "/root",
           "SHORT_TOKEN": "x", "MAX_THINKING_TOKENS": "4096"}  # fmt: skip
    redact = Redactor(environ=env)
    text = "key=sk-ant-0123456789 gh=ghp_abcdefghij home=/root n=4096 x"
    assert redact(text) == f"key={MASK} gh={MASK} home=/root n=4096 x"
    assert without_secrets(env) == {"HOME": "/root", "MAX_THINKING_TOKENS": "4096"}


def test_fit_context_trims_oldest_tool_traffic_and_never_the_task() -> None:
    msgs = [ChatMessage("system", "S" * 100), ChatMessage("user", "the task")]
    for i in range(6):
        msgs.append(ChatMessage("assistant", "", [ToolCall("write_file", {"path": "f", "content": "c" * 5000})]))
        msgs.append(ChatMessage("tool", f"result {i} " + "r" * 5000, tool_name="shell"))
    assert fit_context(msgs, 200_000) == 0
    trimmed = fit_context(msgs, 30_000)
    assert trimmed > 0
    total = sum(len(m.content) + sum(len(str(c.arguments)) for c in m.tool_calls) for m in msgs)
    assert total <= 30_000
    assert msgs[0].content == "S" * 100 and msgs[1].content == "the task"
    tool_results = [m for m in msgs if m.role == "tool"]
    assert tool_results[0].content.startswith(TRIMMED) and tool_results[-1].content.startswith("result 5")
    assert msgs[-2].tool_calls[0].arguments["content"] == "c" * 5000  # the newest call is left whole
