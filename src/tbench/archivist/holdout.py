"""The held-out split, stable per project, and the taint it implies.

The split lives with the memory (`.openagents/memory/holdout.json`): drawn once per suite from a random salt,
reused by every later run whatever its `--seed`, extended (by the same salt) when the suite gains tasks. A lesson
whose evidence touches a held-out task is *tainted*: it is never shown on a held-out trial, `tbench lessons list`
marks it, and the learning proof counts what a held-out trial was shown that it should not have been.
"""

from __future__ import annotations

import hashlib
import secrets
from pathlib import Path

from filelock import FileLock

from tbench.errors import UserError
from tbench.fsutil import atomic_write_model
from tbench.models.common import read_model
from tbench.models.layout import HOLDOUT_FILE
from tbench.models.lessons import HoldoutFile, Lesson, SuiteSplit


def split_holdout(task_ids: list[str], fraction: float, seed: int | str) -> list[str]:
    """A reproducible held-out set: tasks ordered by a hash of (seed, id), the first round(fraction·n) of them,
    at least one when fraction > 0 and never all."""
    if fraction <= 0 or not task_ids:
        return []
    n = min(len(task_ids) - 1, max(1, round(fraction * len(task_ids))))
    order = sorted(task_ids, key=lambda t: hashlib.sha256(f"{seed}:{t}".encode()).hexdigest())
    return sorted(order[:n])


def _held(salt: str, task_id: str, fraction: float) -> bool:
    return int(hashlib.sha256(f"{salt}:{task_id}".encode()).hexdigest()[:8], 16) < fraction * 16**8


def read_split(memory_dir: Path) -> HoldoutFile | None:
    path = memory_dir / HOLDOUT_FILE
    return read_model(path, HoldoutFile, "a held-out split") if path.is_file() else None


def project_holdout(memory_dir: Path, suite_name: str, task_ids: list[str], fraction: float) -> list[str]:
    """The suite's held-out tasks among `task_ids`, drawn on first use and stored; `fraction` must match what is
    stored (a different one is refused: it would reshuffle what earlier proofs treated as unseen)."""
    if fraction <= 0:
        return []
    memory_dir.mkdir(parents=True, exist_ok=True)
    path = memory_dir / HOLDOUT_FILE
    with FileLock(str(memory_dir / ".holdout.lock"), timeout=60):
        data = read_split(memory_dir) or HoldoutFile(salt=secrets.token_hex(8))
        split = data.suites.get(suite_name)
        if split is None:
            split = SuiteSplit(fraction=fraction, held_out=split_holdout(task_ids, fraction, data.salt), known=[])
            split.known = sorted(task_ids)
        elif abs(split.fraction - fraction) > 1e-9:
            raise UserError(
                f"this project's held-out split of suite {suite_name!r} is {split.fraction:g} ({path}); give "
                f"--holdout {split.fraction:g}, or remove that file to draw a new split (lessons drawn from the old "
                "held-out tasks then show as tainted)",
                field="holdout_fraction",
            )
        new = [t for t in task_ids if t not in set(split.known)]
        if new:
            split.held_out = sorted({*split.held_out, *(t for t in new if _held(data.salt, t, fraction))})
            split.known = sorted({*split.known, *new})
        if new or suite_name not in data.suites:
            data.suites[suite_name] = split
            atomic_write_model(path, data)
    return sorted(t for t in split.held_out if t in set(task_ids))


def evidence_tasks(lesson: Lesson, task_ids: set[str]) -> set[str]:
    """The tasks a lesson was drawn from: recorded on newer lessons; for older ones read off the evidence trial ids
    (`<run>-NNN-<task>`), longest task id first."""
    found = set(lesson.evidence_tasks)
    by_length = sorted(task_ids, key=len, reverse=True)
    for trial in lesson.evidence:
        match = next((t for t in by_length if trial.endswith(f"-{t}")), None)
        if match:
            found.add(match)
    return found


def tainted(lesson: Lesson, held_out: set[str], task_ids: set[str]) -> set[str]:
    """The held-out tasks a lesson's evidence touches (empty: clean)."""
    return evidence_tasks(lesson, task_ids | held_out) & held_out
