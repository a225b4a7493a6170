"""The seed's EpisodeStore: one Episode (models/episode.py) per finished iteration, appended to
`.openagents/gym/episodes.jsonl`.

Appends take a file lock and skip an id already present, so a resumed run never records an iteration twice.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING

from filelock import FileLock
from pydantic import ValidationError

from tbench.models.episode import Episode
from tbench.models.layout import EPISODES_FILE

if TYPE_CHECKING:
    from tbench.bench.episode_index import EpisodeIndex


class EpisodeStore:
    def __init__(self, gym_dir: Path) -> None:
        self.gym_dir = gym_dir
        self.path = gym_dir / EPISODES_FILE
        self._lock = FileLock(str(gym_dir / ".episodes.lock"))

    def _read(self) -> list[Episode]:
        if not self.path.is_file():
            return []
        episodes = []
        with self.path.open(encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    episodes.append(Episode.model_validate_json(line))
                except ValidationError:
                    continue  # a torn last line from a crash elsewhere: skip, never fail the run
        return episodes

    def record(self, episode: Episode) -> bool:
        """Append `episode` unless its id is already stored. Returns True when it was written."""
        self.gym_dir.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if any(e.id == episode.id for e in self._read()):
                return False
            line = episode.model_dump_json(by_alias=True) + "\n"
            with self.path.open("a", encoding="utf-8") as fh:
                if fh.tell() > 0 and not self._ends_with_newline():
                    fh.write("\n")
                fh.write(line)
                fh.flush()
                os.fsync(fh.fileno())
            with contextlib.suppress(sqlite3.Error, OSError):  # derived data: the next query catches it up
                self.index().sync()
            return True

    def index(self) -> EpisodeIndex:
        """The SQLite query index over this store and its trials (episode_index.py), synced under this lock."""
        from tbench.bench.episode_index import EpisodeIndex

        return EpisodeIndex(self.gym_dir, self._lock)

    def _ends_with_newline(self) -> bool:
        with self.path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"

    def query(self, *, run_id: str | None = None, model: str | None = None) -> list[Episode]:
        return [
            e for e in self._read() if (run_id is None or e.run_id == run_id) and (model is None or e.model == model)
        ]

    def get_baseline(self, *, model: str | None = None, suite_name: str | None = None) -> Episode | None:
        """The most recent `success` episode (optionally for one model / suite); an episode that graded nothing
        (`no_graded_trials`) never qualifies."""
        matches = [
            e
            for e in self._read()
            if e.status == "success"
            and (model is None or e.model == model)
            and (suite_name is None or e.suite_name == suite_name)
        ]
        return max(matches, key=lambda e: e.finished_at, default=None)
