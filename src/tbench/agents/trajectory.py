"""One trajectory format for every agent: `agent/trajectory.json` in each trial folder.

Whatever produced it (the Ollama tool loop, Claude Code's stream, the oracle's script), a trajectory is a
list of steps — what the assistant said, the tools it called, what they returned, when, and at what token
cost — so the Archivist reads one shape. The agent's raw output sits beside it (`raw_output` names the file).
Everything is passed through the run's `Redactor` on the way to disk.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from tbench.bench.tasks import Tokens, utcnow
from tbench.fsutil import atomic_write_text
from tbench.secrets import Redactor

TRAJECTORY_FILE = "trajectory.json"
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


class Trajectory(BaseModel):
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


class TrajectoryRecorder:
    """Builds a trajectory step by step and saves it (atomically, redacted) whenever asked — after every turn,
    so a trial cut short still leaves what happened."""

    def __init__(
        self,
        logs_dir: Path,
        *,
        agent: str,
        task_id: str,
        instruction: str,
        model: str | None = None,
        system_prompt: str | None = None,
        raw_output: str | None = None,
        redact: Redactor | None = None,
    ) -> None:
        self.path = logs_dir / TRAJECTORY_FILE
        self.redact = redact or Redactor()
        self.data = Trajectory(
            agent=agent,
            model=model,
            task_id=task_id,
            instruction=instruction,
            system_prompt=system_prompt,
            started_at=utcnow(),
            raw_output=raw_output,
        )

    def step(self, *, started_at: str | None = None) -> Step:
        s = Step(index=len(self.data.steps) + 1, started_at=started_at or utcnow())
        self.data.steps.append(s)
        return s

    def finish(
        self,
        stop_reason: StopReason,
        *,
        turns: int,
        tokens: Tokens,
        cost_usd: float | None = None,
        error: str | None = None,
    ) -> None:
        d = self.data
        d.stop_reason, d.turns, d.tokens, d.cost_usd, d.error = stop_reason, turns, tokens, cost_usd, error
        d.finished_at = utcnow()
        self.save(final=True)

    def save(self, *, final: bool = False) -> None:
        """Checkpoints mid-run are renamed into place without fsync (cheap per turn); the final save is durable."""
        text = self.redact(self.data.model_dump_json(indent=2)) + "\n"
        if final:
            atomic_write_text(self.path, text)
            return
        tmp = self.path.with_name(f".{self.path.name}.partial")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, self.path)


def monotonic_ms(t0: float) -> int:
    return int((time.monotonic() - t0) * 1000)
