"""Records an agent's trajectory (schema: models/trajectory.py) step by step into the trial's `agent/` folder.
Everything is passed through the run's `Redactor` on the way to disk."""

from __future__ import annotations

import os
import time
from pathlib import Path

from tbench.fsutil import atomic_write_text
from tbench.models.common import Tokens, utcnow
from tbench.models.layout import TRAJECTORY_FILE
from tbench.models.trajectory import Step, StopReason, Trajectory
from tbench.secrets import Redactor


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
