"""A query index over the episode store: `index.sqlite` beside `episodes.jsonl`, derived from it.

`episodes.jsonl` stays the source of truth (the seed's append-only format). Scanning it and every
`results.json` behind it does not answer in 100 ms once a million trials are stored, so the index keeps one
row per episode and one per trial, with the columns queries filter on. It is kept in step under the store's
file lock: `EpisodeStore.record()` syncs it after each append, and every query first reads the bytes appended
since the last sync. A missing, damaged, replaced or outdated index is rebuilt from the JSONL, so deleting
it is always safe.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from filelock import FileLock
from pydantic import BaseModel, ValidationError

from tbench.errors import FailureMode
from tbench.models.episode import Episode
from tbench.models.grading import Outcome, is_graded
from tbench.models.results import TerminalBenchResults, TrialResult

INDEX_FILE = "index.sqlite"
SCHEMA_VERSION = "7"  # 6: pass_rate may be NULL (an episode that graded nothing); 7: trials.lesson_ids
_HEAD_BYTES = 1024
_ANALYSIS_ROWS = 1000
COUNT_CAP = 10_000
"""`count` stops here: counting every match of a broad filter over a million rows costs more than it tells."""

TrialsOf = Callable[[Episode], Sequence[TrialResult]]


def trials_from_results(episode: Episode) -> list[TrialResult]:
    """The trials behind an episode, read from its results.json; none when that file is gone or unreadable."""
    try:
        return TerminalBenchResults.model_validate_json(Path(episode.results_path).read_bytes()).results
    except (OSError, ValidationError):
        return []


class TrialRecord(BaseModel):
    """One indexed trial: the fields queries filter on, and where its folder is."""

    trial_id: str
    episode_id: str
    run_id: str
    iteration: int
    task_id: str
    model: str
    status: Outcome
    failure_mode: FailureMode | None
    duration_ms: int
    tokens_used: int
    cost_usd: float | None
    started_at: str
    finished_at: str
    trial_path: str
    """Absolute path of the trial folder (result.json, trial.log, agent/, verifier/)."""


class PastTrial(BaseModel):
    """A trial as the Archivist's credit reads it from the index."""

    trial_id: str
    status: Outcome
    failure_mode: FailureMode | None
    lesson_ids: list[str]

    @property
    def is_graded(self) -> bool:
        return is_graded(self.failure_mode)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS episodes (
    id TEXT PRIMARY KEY, run_id TEXT NOT NULL, iteration INTEGER NOT NULL, model TEXT NOT NULL,
    suite_name TEXT NOT NULL, status TEXT NOT NULL, pass_rate REAL, finished_at TEXT NOT NULL,
    trials INTEGER NOT NULL, line TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS episodes_by_model ON episodes (model, finished_at);
CREATE INDEX IF NOT EXISTS episodes_by_run ON episodes (run_id, iteration);
CREATE INDEX IF NOT EXISTS episodes_by_time ON episodes (finished_at);
CREATE INDEX IF NOT EXISTS episodes_by_suite ON episodes (suite_name, status, finished_at);
CREATE TABLE IF NOT EXISTS trials (
    trial_id TEXT NOT NULL, episode_id TEXT NOT NULL, run_id TEXT NOT NULL, iteration INTEGER NOT NULL,
    task_id TEXT NOT NULL, model TEXT NOT NULL, status TEXT NOT NULL, failure_mode TEXT,
    duration_ms INTEGER NOT NULL, tokens_used INTEGER NOT NULL, cost_usd REAL,
    started_at TEXT NOT NULL, finished_at TEXT NOT NULL, trial_path TEXT NOT NULL,
    lesson_ids TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS trials_by_model ON trials (model, finished_at);
CREATE INDEX IF NOT EXISTS trials_by_model_status ON trials (model, status, finished_at);
CREATE INDEX IF NOT EXISTS trials_by_task ON trials (task_id, model, status, finished_at);
CREATE INDEX IF NOT EXISTS trials_by_run ON trials (run_id, iteration);
CREATE INDEX IF NOT EXISTS trials_by_status ON trials (status, finished_at);
CREATE INDEX IF NOT EXISTS trials_by_time ON trials (finished_at);
"""
_TRIAL_COLUMNS = tuple(TrialRecord.model_fields)


class EpisodeIndex:
    """Queries over episodes and their trials. Pass the store's own lock (`EpisodeStore.index()` does)."""

    def __init__(self, gym_dir: Path, lock: FileLock, *, trials_of: TrialsOf = trials_from_results) -> None:
        self.gym_dir = gym_dir
        self.jsonl = gym_dir / "episodes.jsonl"
        self.path = gym_dir / INDEX_FILE
        self._lock = lock
        self._trials_of = trials_of

    # ------------------------------------------------------------------ keeping in step

    def sync(self) -> int:
        """Index what was appended to episodes.jsonl since the last sync; returns how many episodes were added."""
        with self._lock, self._connect() as db:
            size = self.jsonl.stat().st_size if self.jsonl.is_file() else 0
            consumed = int(self._meta(db, "jsonl_bytes") or 0)
            if size < consumed or (consumed and self._meta(db, "jsonl_head") != self._head(consumed)):
                self._clear(db)  # the JSONL was replaced or cut: start over
                consumed = 0
            if size == consumed:
                return 0
            with self.jsonl.open("rb") as fh:
                fh.seek(consumed)
                chunk = fh.read(size - consumed)
            end = chunk.rfind(b"\n") + 1  # a torn last line waits until it is complete
            added = sum(self._add(db, line) for line in chunk[:end].splitlines() if line.strip())
            consumed += end
            self._set_meta(db, jsonl_bytes=str(consumed), jsonl_head=self._head(consumed))
            if added:  # sampled statistics, so the planner picks the narrowest index (a few ms)
                db.execute(f"PRAGMA analysis_limit = {_ANALYSIS_ROWS}")
                db.execute("ANALYZE")
            db.commit()
            return added

    def rebuild(self) -> int:
        """Forget everything and index the whole JSONL again."""
        with self._lock:
            with self._connect() as db:
                self._clear(db)
                db.commit()
            return self.sync()

    def _add(self, db: sqlite3.Connection, line: bytes) -> int:
        try:
            ep = Episode.model_validate_json(line)
        except ValidationError:
            return 0  # damaged line: skipped, as EpisodeStore skips it
        trials = self._trials_of(ep)
        cur = db.execute(
            "INSERT OR IGNORE INTO episodes VALUES (?,?,?,?,?,?,?,?,?,?)",
            (
                ep.id,
                ep.run_id,
                ep.iteration,
                ep.model,
                ep.suite_name,
                ep.status,
                ep.summary.pass_rate,
                ep.finished_at,
                len(trials),
                line.decode("utf-8", "replace").strip(),
            ),
        )
        if cur.rowcount != 1:
            return 0  # an id stored twice: the first one counts, as in EpisodeStore.record
        run_dir = str(Path(ep.results_path).parent.parent.parent)
        db.executemany(
            f"INSERT INTO trials ({','.join(_TRIAL_COLUMNS)}, lesson_ids) "
            f"VALUES ({','.join('?' * (len(_TRIAL_COLUMNS) + 1))})",
            (
                (
                    t.trial_id,
                    ep.id,
                    t.run_id,
                    t.iteration,
                    t.task_id,
                    t.model,
                    t.status,
                    t.failure_mode,
                    t.duration_ms,
                    t.tokens_used,
                    t.cost_usd,
                    t.started_at,
                    t.finished_at,
                    f"{run_dir}/{t.trial_dir}",
                    json.dumps(t.lesson_ids),
                )
                for t in trials
            ),
        )
        return 1

    def _head(self, consumed: int) -> str:
        with self.jsonl.open("rb") as fh:
            return hashlib.sha256(fh.read(min(consumed, _HEAD_BYTES))).hexdigest()

    @staticmethod
    def _meta(db: sqlite3.Connection, key: str) -> str | None:
        row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    @staticmethod
    def _set_meta(db: sqlite3.Connection, **values: str) -> None:
        db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)", values.items())

    @staticmethod
    def _clear(db: sqlite3.Connection) -> None:
        db.execute("DELETE FROM episodes")
        db.execute("DELETE FROM trials")
        db.execute("DELETE FROM meta WHERE key != 'schema'")

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        """An open index; one that is not a database or has another schema version is made anew."""
        self.gym_dir.mkdir(parents=True, exist_ok=True)
        try:
            db = self._open()
        except sqlite3.DatabaseError:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            db = self._open()
        try:
            yield db
        finally:
            db.close()

    def _open(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30)
        try:
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")
            db.executescript(_SCHEMA)
            if self._meta(db, "schema") != SCHEMA_VERSION:  # another layout: drop it, the JSONL refills it
                db.executescript("DROP TABLE episodes; DROP TABLE trials; DROP TABLE meta;" + _SCHEMA)
                self._set_meta(db, schema=SCHEMA_VERSION)
                db.commit()
        except BaseException:
            db.close()
            raise
        return db

    # ------------------------------------------------------------------ queries

    def episodes(
        self,
        *,
        model: str | None = None,
        run_id: str | None = None,
        suite_name: str | None = None,
        status: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> list[Episode]:
        """Newest first. `status` is success, partial or failed; `since` an ISO-8601 UTC time (vs `finishedAt`)."""
        where, args = _where(model=model, run_id=run_id, suite_name=suite_name, status=status, since=since)
        sql = f"SELECT line FROM episodes {where} ORDER BY finished_at DESC, id DESC{_limit(limit)}"
        with self._connect() as db:
            return [Episode.model_validate_json(line) for (line,) in db.execute(sql, args)]

    def trials(
        self,
        *,
        model: str | None = None,
        run_id: str | None = None,
        task_id: str | None = None,
        status: str | None = None,
        since: str | None = None,
        limit: int | None = None,
    ) -> list[TrialRecord]:
        """Newest first. `status` is an outcome (pass, fail, timeout, error); `since` is compared with finished_at."""
        where, args = _where(model=model, run_id=run_id, task_id=task_id, status=status, since=since)
        sql = f"SELECT {','.join(_TRIAL_COLUMNS)} FROM trials {where} ORDER BY finished_at DESC{_limit(limit)}"
        with self._connect() as db:
            return [
                TrialRecord.model_validate(dict(zip(_TRIAL_COLUMNS, row, strict=True))) for row in db.execute(sql, args)
            ]

    def history(self, *, task_id: str, model: str, suite_name: str) -> list[PastTrial]:
        """Every indexed trial of one task by one model in one suite, across runs (oldest first): what a lesson's
        effect on the task is judged against."""
        sql = (
            "SELECT t.trial_id, t.status, t.failure_mode, t.lesson_ids FROM trials t "
            "JOIN episodes e ON e.id = t.episode_id WHERE t.task_id = ? AND t.model = ? AND e.suite_name = ? "
            "ORDER BY t.finished_at"
        )
        with self._connect() as db:
            return [
                PastTrial(trial_id=tid, status=st, failure_mode=fm, lesson_ids=json.loads(ids))
                for tid, st, fm, ids in db.execute(sql, (task_id, model, suite_name))
            ]

    def count(self, table: str = "episodes", cap: int | None = COUNT_CAP, /, **filters: str | None) -> int:
        """How many episodes (or trials, with table='trials') match the same filters as the queries; past `cap`
        it stops at cap + 1, which reads "more than cap" (None: count all)."""
        if table not in ("episodes", "trials"):
            raise ValueError(f"no such table {table!r}")
        where, args = _where(**filters)
        sql = f"SELECT COUNT(*) FROM (SELECT 1 FROM {table} {where}{_limit(None if cap is None else cap + 1)})"
        with self._connect() as db:
            return int(db.execute(sql, args).fetchone()[0])


_FILTERS = frozenset({"model", "run_id", "suite_name", "task_id", "status", "since"})


def _where(**filters: str | None) -> tuple[str, list[Any]]:
    clauses, args = [], []
    for column, value in filters.items():
        if column not in _FILTERS:
            raise ValueError(f"no such filter {column!r}")
        if value is None:
            continue
        clauses.append("finished_at >= ?" if column == "since" else f"{column} = ?")
        args.append(value)
    return ("WHERE " + " AND ".join(clauses) if clauses else ""), args


def _limit(limit: int | None) -> str:
    return "" if limit is None else f" LIMIT {int(limit)}"
