"""The seed's model adapter: `ModelConfig`, `create_model_runner`. Lives beside the agents it creates so
`bench/` never imports `agents/`. Agents are registered by name → "module:Class" and imported lazily.

Also which model runs each trial (`ModelPlan`): `--model` for all of them, or — with
`--claude-validation-rate R` — Claude Code for a reproducible fraction R of them, chosen per trial from
`--seed`, the iteration and the task id, so a resumed run (or another worker) picks the same model again.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import os
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from tbench.agents.base import ModelRunner
from tbench.errors import UserError
from tbench.models.model_settings import ChatOptions, ModelConfig, ModelSettings
from tbench.models.task import Task

#: name → "module:Class". Adding an agent is one file plus one line here.
RUNNERS: dict[str, str] = {
    "oracle": "tbench.agents.oracle:OracleAgent",
    "nop": "tbench.agents.nop:NopAgent",
    "ollama": "tbench.agents.ollama_agent:OllamaAgent",
    "openai": "tbench.agents.openai_agent:OpenAIAgent",
    "claude-code": "tbench.agents.claude_code:ClaudeCodeAgent",
}

DEFAULT_MODEL = "claude-code"
DEFAULT_OLLAMA_ENDPOINT = "http://localhost:11434"
OLLAMA_PORT = 11434


def parse_model(
    spec: str,
    *,
    endpoint: str | None = None,
    options: ChatOptions | None = None,
    unsafe_host_agent: bool = False,
) -> ModelConfig:
    """`claude-code`, `claude-code:<model>`, `ollama:<name>` (the name may hold ':'), `oracle`, `nop`."""
    kind, _, rest = spec.strip().partition(":")
    extra: dict[str, object] = {"unsafe_host_agent": unsafe_host_agent}
    if kind in ("oracle", "nop") and not rest:
        return ModelConfig(type=kind, **extra)
    if kind == "claude-code":
        return ModelConfig(type="claude-code", model=rest or None, **extra)
    if kind in ("ollama", "openai"):
        if not rest:
            raise UserError(
                f"{spec!r} names no model; write {kind}:<model>, e.g. {kind}:qwen2.5-coder:7b", field="model"
            )
        return ModelConfig(type=kind, model=rest, endpoint=endpoint, options=options or ChatOptions(), **extra)
    raise UserError(
        f"unknown model {spec!r}; use claude-code[:<model>], ollama:<name>, openai:<name>, oracle or nop",
        field="model",
    )


def parse_model_options(items: Sequence[str]) -> ChatOptions:
    """`--model-option KEY=VALUE` (repeatable) into validated `ChatOptions`."""
    values: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"expected KEY=VALUE, got {item!r}", field="model_option")
        values[key.strip()] = value.strip()
    try:
        return ChatOptions.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "?"
        valid = ", ".join(ChatOptions.model_fields)
        raise UserError(f"{key}: {err['msg']} (options: {valid})", field="model_option") from None


def normalize_endpoint(value: str, *, default_port: int = OLLAMA_PORT, field: str = "ollama_endpoint") -> str:
    """`host`, `host:port` or a URL into a URL, the way Ollama's own client reads OLLAMA_HOST; a bind-all
    address (0.0.0.0, often set for `ollama serve`) means this machine."""
    text = value.strip().rstrip("/")
    if not text:
        raise UserError("is empty", field=field)
    has_scheme = "://" in text
    try:
        parts = urlsplit(text if has_scheme else f"http://{text}")
        port = parts.port
    except ValueError as exc:
        raise UserError(f"{value!r} is not a URL or host[:port] ({exc})", field=field) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"{value!r} is not an http(s) URL or host[:port]", field=field)
    host = parts.hostname
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"
    if ":" in host:
        host = f"[{host}]"
    if port is None and not has_scheme:
        port = default_port
    netloc = f"{host}:{port}" if port is not None else host
    if parts.username:  # credentials are kept for the server (and redacted in every file: secrets.py)
        netloc = f"{parts.netloc.rpartition('@')[0]}@{netloc}"
    return f"{parts.scheme}://{netloc}{parts.path}"


#: `--flag` names (as settings keys) that make up `ModelSettings`.
MODEL_FLAGS = (
    "ollama_endpoint",
    "openai_endpoint",
    "model_option",
    "claude_validation_rate",
    "seed",
    "unsafe_host_agent",
)


def model_settings_from_flags(given: dict[str, Any]) -> ModelSettings:
    """Take the model flags out of `given` (flag name → value, absent when not given) into `ModelSettings`."""
    flags = {k: given.pop(k) for k in MODEL_FLAGS if k in given}
    rate = flags.get("claude_validation_rate")
    if rate is not None and not 0.0 <= float(rate) <= 1.0:
        raise UserError(f"must be between 0 and 1 (got {rate:g})", field="claude_validation_rate")
    return ModelSettings(
        ollama_endpoint=flags.get("ollama_endpoint"),
        openai_endpoint=flags.get("openai_endpoint"),
        options=parse_model_options(flags.get("model_option") or ()),
        claude_validation_rate=float(rate or 0.0),
        seed=flags.get("seed"),
        unsafe_host_agent=bool(flags.get("unsafe_host_agent")),
    )


def default_ollama_endpoint() -> str:
    """OLLAMA_HOST when set (as Ollama's own tools do), else http://localhost:11434."""
    env = os.environ.get("OLLAMA_HOST", "").strip()
    return normalize_endpoint(env, field="OLLAMA_HOST") if env else DEFAULT_OLLAMA_ENDPOINT


def openai_base_url(flag: str | None) -> str:
    """`--openai-endpoint`, else OPENAI_BASE_URL, else OpenAI's own API. A URL with no path gets `/v1`, where
    llama-server, vLLM, LM Studio and Ollama all serve the API."""
    field = "openai_endpoint" if flag else "OPENAI_BASE_URL"
    value = (flag or os.environ.get("OPENAI_BASE_URL") or "").strip()
    if not value:
        from tbench.llm.openai_compat import DEFAULT_ENDPOINT

        return DEFAULT_ENDPOINT
    url = normalize_endpoint(value, default_port=80, field=field)
    return url if urlsplit(url).path not in ("", "/") else url.rstrip("/") + "/v1"


def choose_model(seed: int, rate: float, iteration: int, task_id: str) -> bool:
    """True when this trial goes to the validation model: a hash of (seed, iteration, task) against `rate`,
    so the choice is reproducible and independent of run order and worker count."""
    if rate <= 0:
        return False
    digest = hashlib.sha256(f"{seed}:{iteration}:{task_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


def model_config_for(label: str, settings: ModelSettings) -> ModelConfig:
    """A trial's model, rebuilt from its label and the run's settings (worker processes do this)."""
    return parse_model(
        label,
        endpoint=settings.openai_endpoint if label.startswith("openai:") else settings.ollama_endpoint,
        options=settings.effective_options(),
        unsafe_host_agent=settings.unsafe_host_agent,
    )


class ModelPlan:
    """The models of one run and their runners (one per model, created lazily and reused)."""

    def __init__(self, primary: ModelConfig, settings: ModelSettings) -> None:
        self.primary = primary
        self.settings = settings
        self.validation: ModelConfig | None = None
        if settings.claude_validation_rate > 0:
            self.validation = ModelConfig(type="claude-code", unsafe_host_agent=settings.unsafe_host_agent)
        self._runners: dict[str, ModelRunner] = {}

    @property
    def configs(self) -> list[ModelConfig]:
        return [self.primary] + ([self.validation] if self.validation else [])

    def choose(self, iteration: int, task_id: str) -> ModelConfig:
        s = self.settings
        if (
            self.validation is not None
            and s.seed is not None
            and choose_model(s.seed, s.claude_validation_rate, iteration, task_id)
        ):
            return self.validation
        return self.primary

    def runner(self, config: ModelConfig | str) -> ModelRunner:
        label = config if isinstance(config, str) else config.label
        if label not in self._runners:
            by_label = {c.label: c for c in self.configs}
            self._runners[label] = create_model_runner(by_label.get(label) or model_config_for(label, self.settings))
        return self._runners[label]

    def preflight(self, tasks: Sequence[Task]) -> None:
        for config in self.configs:
            self.runner(config).preflight(tasks)


def build_model_plan(spec: str, settings: ModelSettings) -> ModelPlan:
    """Validate `--model` with its settings; a validation rate without a seed gets a random one, kept in
    config.json so the run (and its resume) stay reproducible."""
    kind = parse_model(spec).type
    if settings.claude_validation_rate > 0:
        if kind == "claude-code":
            raise UserError(
                "sends a share of trials to Claude Code, but --model is already claude-code; use it with another "
                "model, e.g. --model ollama:qwen2.5-coder:32b",
                field="claude_validation_rate",
            )
        if settings.seed is None:
            settings = settings.model_copy(update={"seed": secrets.randbelow(2**31)})
    if settings.ollama_endpoint:
        settings = settings.model_copy(update={"ollama_endpoint": normalize_endpoint(settings.ollama_endpoint)})
    elif kind == "ollama":
        settings = settings.model_copy(update={"ollama_endpoint": default_ollama_endpoint()})
    if kind == "openai":
        settings = settings.model_copy(update={"openai_endpoint": openai_base_url(settings.openai_endpoint)})
    primary = model_config_for(spec, settings)
    base_url = os.environ.get("ANTHROPIC_BASE_URL") or None
    if base_url and (primary.type == "claude-code" or settings.claude_validation_rate > 0):
        settings = settings.model_copy(update={"anthropic_base_url": base_url})
    return ModelPlan(primary, settings)


def create_model_runner(config: ModelConfig) -> ModelRunner:
    target = RUNNERS.get(config.type)
    if target is None:
        raise UserError(
            f"the {config.type!r} agent is not available in tbench {_version()}; available: "
            f"{', '.join(sorted(RUNNERS))}",
            field="model",
        )
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    runner: ModelRunner = cls(config) if _takes_config(cls) else cls()
    return runner


def agent_tools(config: ModelConfig) -> frozenset[str]:
    """The tools of the agent `config` names, from its class (imported, not built)."""
    target = RUNNERS.get(config.type)
    if target is None:
        return frozenset()
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    return frozenset(getattr(cls, "tools", ()))


def _takes_config(cls: type) -> bool:
    return len(inspect.signature(cls).parameters) > 0


def _version() -> str:
    from tbench import __version__

    return __version__
