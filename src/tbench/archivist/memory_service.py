"""The lesson store: `<project-root>/.openagents/memory/lessons.json` (active lessons) and `archive.jsonl`
(retired and superseded ones, append-only).

Every change is one transaction under a file lock: read, change, write atomically (temp file, fsync, rename).
A kill at any point leaves the previous or the new store, never half of one; the archive is appended before
the store is rewritten, so a retired lesson is never lost (at worst it shows in both until the next write).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from filelock import FileLock
from pydantic import ValidationError

from tbench.errors import UserError
from tbench.fsutil import atomic_write_model
from tbench.models.common import read_model, utcnow
from tbench.models.layout import ARCHIVE_FILE, COVERAGE_FILE, LESSONS_FILE, ProjectLayout
from tbench.models.lessons import Coverage, Lesson, LessonFile, normalize

#: Token-set overlap at or above which two lessons count as the same rule.
DUPLICATE_JACCARD = 0.8

T = TypeVar("T")


def similarity(a: str, b: str) -> float:
    sa, sb = set(normalize(a).split()), set(normalize(b).split())
    return len(sa & sb) / len(sa | sb) if sa | sb else 1.0


def find_duplicate(lessons: list[Lesson], text: str, skip: set[str] | None = None) -> Lesson | None:
    for lesson in lessons:
        if (skip is None or lesson.id not in skip) and similarity(lesson.text, text) >= DUPLICATE_JACCARD:
            return lesson
    return None


def absorb(into: Lesson, other: Lesson) -> None:
    """Fold a near-duplicate into `into`: evidence and tags unite, counts add, importance keeps the higher."""
    into.evidence = sorted(set(into.evidence) | set(other.evidence))
    into.episodes = sorted(set(into.episodes) | set(other.episodes))
    into.tags = sorted(set(into.tags) | set(other.tags))
    into.helpful += other.helpful
    into.harmful += other.harmful
    into.importance = max(into.importance, other.importance)
    into.updated_at = utcnow()


class MemoryStore:
    """Safe for several processes at once: every read-modify-write holds `.lock`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.lessons_path = root / LESSONS_FILE
        self.archive_path = root / ARCHIVE_FILE
        self._lock = FileLock(str(root / ".lock"), timeout=120)

    @classmethod
    def for_project(cls, project_root: Path) -> MemoryStore:
        return cls(ProjectLayout(project_root).memory_dir)

    # ------------------------------------------------------------------ reading

    def load(self) -> list[Lesson]:
        if not self.lessons_path.is_file():
            return []
        return read_model(self.lessons_path, LessonFile, "a lesson store").lessons

    def archive(self) -> list[Lesson]:
        if not self.archive_path.is_file():
            return []
        out: list[Lesson] = []
        for line in self.archive_path.read_text().splitlines():
            if line.strip():
                try:
                    out.append(Lesson.model_validate_json(line))
                except ValidationError:
                    continue  # a torn last line after a crash: the line was never committed
        return out

    def get(self, lesson_id: str) -> Lesson | None:
        for lesson in self.load() + self.archive()[::-1]:
            if lesson.id == lesson_id:
                return lesson
        return None

    # ------------------------------------------------------------------ writing

    @contextmanager
    def locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            yield

    def transact(self, change: Callable[[list[Lesson], list[Lesson]], T]) -> T:
        """`change(active, retired_out)` edits `active` in place and appends lessons it retires to `retired_out`."""
        with self.locked():
            active = self.load()
            retired: list[Lesson] = []
            out = change(active, retired)
            if retired:
                self._append_archive(retired)
            gone = {lesson.id for lesson in retired}
            atomic_write_model(self.lessons_path, LessonFile(lessons=[x for x in active if x.id not in gone]))
            return out

    def _append_archive(self, lessons: list[Lesson]) -> None:
        with self.archive_path.open("a", encoding="utf-8") as fh:
            for lesson in lessons:
                fh.write(lesson.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def retire(self, lesson_id: str, reason: str) -> Lesson:
        def change(active: list[Lesson], retired: list[Lesson]) -> Lesson:
            for lesson in active:
                if lesson.id == lesson_id:
                    lesson.retired_reason, lesson.updated_at = reason, utcnow()
                    retired.append(lesson)
                    return lesson
            raise UserError(f"no active lesson {lesson_id!r} (see `tbench lessons list`)", field="lesson_id")

        return self.transact(change)

    # ------------------------------------------------------------------ reflection coverage

    def coverage(self, suite_name: str) -> dict[str, list[str]]:
        """task id → when its trials reached reflection (coverage.json)."""
        path = self.root / COVERAGE_FILE
        if not path.is_file():
            return {}
        return read_model(path, Coverage, "a reflection coverage file").suites.get(suite_name, {})

    def record_coverage(self, suite_name: str, task_ids: list[str], at: str) -> None:
        if not task_ids:
            return
        path = self.root / COVERAGE_FILE
        with self.locked():
            data = read_model(path, Coverage, "a reflection coverage file") if path.is_file() else Coverage()
            suite = data.suites.setdefault(suite_name, {})
            for t in task_ids:
                stamps = suite.setdefault(t, [])
                if at not in stamps:
                    stamps.append(at)
                del stamps[:-20]
            atomic_write_model(path, data)

    # ------------------------------------------------------------------ export / import

    def export(self, path: Path) -> int:
        lessons = self.load()
        atomic_write_model(path, LessonFile(lessons=lessons))
        return len(lessons)

    def import_file(self, path: Path) -> tuple[int, int]:
        """Add the lessons of an export; near-duplicates of stored ones are folded in. Returns (added, merged)."""
        if not path.is_file():
            raise UserError("no such file", path=path)
        try:
            incoming = LessonFile.model_validate_json(path.read_text()).lessons
        except ValidationError as exc:
            raise UserError(f"not a lesson export ({exc.errors()[0]['msg']})", path=path) from None

        def change(active: list[Lesson], retired: list[Lesson]) -> tuple[int, int]:
            added = merged = 0
            for lesson in incoming:
                twin = next((x for x in active if x.id == lesson.id), None) or find_duplicate(active, lesson.text)
                if twin is not None:
                    absorb(twin, lesson)
                    merged += 1
                else:
                    active.append(lesson.model_copy(update={"source": f"import:{lesson.source}"}))
                    added += 1
            return added, merged

        return self.transact(change)
