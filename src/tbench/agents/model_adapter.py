"""The seed's model adapter: `ModelConfig`, `create_model_runner`. Lives beside the agents it creates so
`bench/` never imports `agents/`. Agents are registered by name → "module:Class" and imported lazily."""

from __future__ import annotations

import importlib
from typing import Literal

from pydantic import BaseModel, ConfigDict

from tbench.agents.base import ModelRunner
from tbench.errors import UserError

ModelType = Literal["claude-code", "ollama", "openai", "oracle", "nop"]

#: name → "module:Class". Adding an agent is one file plus one line here.
RUNNERS: dict[str, str] = {
    "oracle": "tbench.agents.oracle:OracleAgent",
    "nop": "tbench.agents.nop:NopAgent",
}

DEFAULT_MODEL = "claude-code"


class ModelConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    type: ModelType
    model: str | None = None
    """For ollama: "codellama:34b"; for claude-code: an optional model name."""
    endpoint: str | None = None

    @property
    def label(self) -> str:
        """How the model is named in results and episodes: the `--model` string, normalised."""
        return f"{self.type}:{self.model}" if self.model else self.type


def parse_model(spec: str, *, endpoint: str | None = None) -> ModelConfig:
    """`claude-code`, `claude-code:<model>`, `ollama:<name>` (the name may hold ':'), `oracle`, `nop`."""
    kind, _, rest = spec.strip().partition(":")
    if kind in ("oracle", "nop") and not rest:
        return ModelConfig(type=kind)
    if kind == "claude-code":
        return ModelConfig(type="claude-code", model=rest or None)
    if kind in ("ollama", "openai"):
        if not rest:
            raise UserError(
                f"{spec!r} names no model; write {kind}:<model>, e.g. {kind}:qwen2.5-coder:7b", field="--model"
            )
        return ModelConfig(type=kind, model=rest, endpoint=endpoint)
    raise UserError(f"unknown model {spec!r}; use claude-code[:<model>], ollama:<name>, oracle or nop", field="--model")


def create_model_runner(config: ModelConfig) -> ModelRunner:
    target = RUNNERS.get(config.type)
    if target is None:
        raise UserError(
            f"the {config.type!r} agent is not available in tbench {_version()}; available: "
            f"{', '.join(sorted(RUNNERS))}",
            field="--model",
        )
    module_name, _, cls_name = target.partition(":")
    cls = getattr(importlib.import_module(module_name), cls_name)
    runner: ModelRunner = cls(config) if _takes_config(cls) else cls()
    return runner


def _takes_config(cls: type) -> bool:
    import inspect

    return len(inspect.signature(cls).parameters) > 0


def _version() -> str:
    from tbench import __version__

    return __version__
