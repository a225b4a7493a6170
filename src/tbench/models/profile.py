"""An agent profile: how the agent is set up for a run — model, extra system prompt, lesson policy, sampler,
tools, turn and time limits. The Trainer compares and evolves profiles; `--profile NAME` runs one. Kept in
config.json (`RunConfig.profile`) so a resume runs the same agent. The TOML files and their loader are in
trainer/schema.py; this module is only the shape, so the run layer can carry it."""

from __future__ import annotations

import hashlib
import json
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from tbench.fsutil import SAFE_ID
from tbench.models.lessons import MemoryMode

ProfileSource = Literal["manual", "trainer", "baseline"]

#: The fields that change what the agent does (not its name, lineage or notes): a profile's `digest`.
BEHAVIOUR_FIELDS = (
    "model",
    "system_prompt_append",
    "memory",
    "top_k",
    "token_budget",
    "max_turns",
    "temperature",
    "top_p",
    "num_predict",
    "tools",
    "timeout_multiplier",
)


class AgentProfile(BaseModel):
    """`.openagents/trainer/profiles/<id>.toml`. A field left out keeps the run's own setting; a profile with
    only `id` is the baseline (the agent as it is)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    parent: str | None = None
    model: str | None = None
    """`--model` syntax (`ollama:qwen2.5-coder:7b`, `claude-code:sonnet`); None: the plan's or the run's."""
    system_prompt_append: str | None = None
    """Appended to the agent's system prompt (before any lessons)."""
    memory: MemoryMode | None = None
    """off | read | learn; None: the run's `--memory`."""
    top_k: int | None = Field(default=None, ge=1, le=20)
    """Lessons injected per trial."""
    token_budget: int | None = Field(default=None, ge=20)
    """Tokens of lessons injected per trial."""
    max_turns: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0)
    top_p: float | None = Field(default=None, gt=0, le=1)
    num_predict: int | None = Field(default=None, ge=1)
    """Most tokens per model reply."""
    tools: list[str] | None = None
    """The tools the tool-loop agents may use (a subset of theirs); None: all of them."""
    timeout_multiplier: float = Field(default=1.0, gt=0)
    """Multiplies the run's `--timeout-multiplier`."""
    notes: str = ""
    source: ProfileSource = "manual"

    @field_validator("id", "parent")
    @classmethod
    def _safe_id(cls, value: str | None) -> str | None:
        if value is not None and not SAFE_ID.match(value):
            raise ValueError(f"{value!r} is not a profile id: use letters, digits, '.', '_' or '-'")
        return value

    @field_validator("tools")
    @classmethod
    def _tools(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value:
            raise ValueError("an empty tool list leaves the agent nothing to do; leave `tools` out for all tools")
        return value

    def is_baseline(self) -> bool:
        """Nothing set but the id: the agent as it is."""
        return self.digest() == AgentProfile(id="baseline").digest()

    def digest(self) -> str:
        """A short hash of what the profile makes the agent do: two profiles with one digest are one agent."""
        payload = json.dumps(self.model_dump(include=set(BEHAVIOUR_FIELDS)), sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]
