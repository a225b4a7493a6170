"""The seed's EpisodeStore: one Episode (models/episode.py) per finished iteration, appended to
`.openagents/gym/episodes.jsonl`, and the one rule for which episode is the baseline (`get_baseline`).

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

from tbench.errors import UserError
from tbench.models.common import read_model
from tbench.models.episode import BaselineChoice, Episode
from tbench.models.layout import BASELINE_FILE, EPISODES_FILE

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

    def baseline_choice(self) -> BaselineChoice | None:
        """`baseline.json` beside the store (written by `tbench baseline set`), or None when none was set."""
        path = self.gym_dir / BASELINE_FILE
        if not path.is_file():
            return None
        try:
            return read_model(path, BaselineChoice, "a baseline.json")
        except UserError as exc:
            raise UserError(f"{exc}; set it again with `tbench baseline set`") from None

    def get_baseline(
        self, *, model: str | None = None, suite_name: str | None = None, exclude_run_id: str | None = None
    ) -> Episode | None:
        """The baseline episode. The run chosen with `tbench baseline set` wins where it matches `model` and
        `suite_name` (its chosen iteration, else its latest graded episode); otherwise the seed's rule, the most
        recent `success` episode. `exclude_run_id` leaves a run out (a run is never its own baseline); an
        episode that graded nothing (`no_graded_trials`) never qualifies."""
        choice = self.baseline_choice()
        if (
            choice is not None
            and (model is None or choice.model == model)
            and (suite_name is None or choice.suite_name == suite_name)
        ):
            if choice.run_id == exclude_run_id:
                return None
            chosen = [
                e
                for e in self._matching(run_id=choice.run_id)
                if e.status != "no_graded_trials" and (choice.iteration is None or e.iteration == choice.iteration)
            ]
            return chosen[0] if chosen else None
        found = self._matching(model=model, suite_name=suite_name, status="success", exclude_run_id=exclude_run_id)
        return found[0] if found else None

    def _matching(
        self,
        *,
        model: str | None = None,
        suite_name: str | None = None,
        status: str | None = None,
        run_id: str | None = None,
        exclude_run_id: str | None = None,
    ) -> list[Episode]:
        """Matching episodes newest first — only the newest one outside `exclude_run_id` unless `run_id` is
        given. Through the index (a scan of a large episodes.jsonl would cost a report a good part of its
        time), else by reading the JSONL."""
        if not self.path.is_file():
            return []
        filters = {"model": model, "suite_name": suite_name, "status": status, "run_id": run_id}
        try:
            index = self.index()
            index.sync()
            limit = None
            if run_id is None:
                own = index.count("episodes", None, **{**filters, "run_id": exclude_run_id}) if exclude_run_id else 0
                limit = own + 1
            found = index.episodes(model=model, suite_name=suite_name, status=status, run_id=run_id, limit=limit)
        except sqlite3.Error:
            found = sorted(
                (e for e in self._read() if all(v is None or getattr(e, k) == v for k, v in filters.items())),
                key=lambda e: (e.finished_at, e.id),
                reverse=True,
            )
        return [e for e in found if exclude_run_id is None or e.run_id != exclude_run_id]
