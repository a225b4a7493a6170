"""One trajectory format for every agent: `agent/trajectory.json` in each trial folder.

Whatever produced it (the Ollama tool loop, Claude Code's stream, the oracle's script), a trajectory is a list of
steps — what the assistant said, the tools it called, what they returned, when, and at what token cost — so the
Archivist and the reports read one shape. The agent's raw output sits beside it (`raw_output` names the file).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from tbench.models.common import Tokens, Versioned

StopReason = Literal["completed", "max_turns", "timeout", "agent_error", "infra_error", "running"]


class ToolCallRecord(BaseModel):
    id: str | None = None
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class ToolResultRecord(BaseModel):
    call_id: str | None = None
    name: str
    output: str
    is_error: bool = False
    exit_code: int | None = None
    duration_ms: int | None = None


class Step(BaseModel):
    index: int
    started_at: str
    finished_at: str | None = None
    assistant_text: str = ""
    thinking: str | None = None
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    tool_results: list[ToolResultRecord] = Field(default_factory=list)
    tokens: Tokens | None = None
    """This step's model call, where the agent reports it per call (Claude Code reports totals only)."""
    model_ms: int | None = None
    """Wall time of the model call as the agent saw it."""
    server_ms: int | None = None
    """Time the model server reports it spent on the call."""


class Trajectory(Versioned):
    schema_version: int = 1
    agent: str
    """oracle | nop | ollama | claude-code"""
    model: str | None = None
    task_id: str
    instruction: str
    system_prompt: str | None = None
    """The system prompt the agent sent (or appended), lessons included."""
    started_at: str
    finished_at: str | None = None
    stop_reason: StopReason = "running"
    error: str | None = None
    turns: int = 0
    tokens: Tokens = Field(default_factory=Tokens)
    cost_usd: float | None = None
    raw_output: str | None = None
    """File name, beside trajectory.json, of the agent's own raw output."""
    steps: list[Step] = Field(default_factory=list)
