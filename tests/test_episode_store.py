"""EpisodeStore: append under a lock, never duplicate, query, baseline."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from tbench.bench.episode_store import EpisodeStore
from tbench.models.episode import Episode, EpisodeSummary, episode_status


def make(i: int, *, run: str = "r1", model: str = "oracle", rate: float = 1.0, finished: str = "") -> Episode:
    return Episode(
        id=f"{run}-{i:03d}",
        run_id=run,
        iteration=i,
        model=model,
        suite_name="s",
        suite_version="1",
        started_at="2026-01-01T00:00:00Z",
        finished_at=finished or f"2026-01-01T00:{i:02d}:00Z",
        status=episode_status(rate),
        summary=EpisodeSummary(total=4, passed=int(4 * rate), failed=4 - int(4 * rate), pass_rate=rate),
        results_path=f"/x/{i}",
    )


def test_record_query_baseline(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "gym")
    assert store.get_baseline() is None
    assert store.record(make(1, rate=1.0))
    assert store.record(make(2, rate=0.5))
    assert store.record(make(1, run="r2", model="nop", rate=0.0))
    assert not store.record(make(1))  # same id: never written twice
    assert [e.id for e in store.query(run_id="r1")] == ["r1-001", "r1-002"]
    assert [e.id for e in store.query(model="nop")] == ["r2-001"]
    assert store.get_baseline() is not None and store.get_baseline().id == "r1-001"  # type: ignore[union-attr]
    assert store.get_baseline(model="nop") is None
    line = json.loads((tmp_path / "gym" / "episodes.jsonl").read_text().splitlines()[0])
    assert {"runId", "startedAt", "resultsPath", "suiteName", "suiteVersion"} <= set(line)
    assert line["summary"]["passRate"] == 1.0


def test_status_thresholds() -> None:
    assert [episode_status(r) for r in (1.0, 0.8, 0.79, 0.3, 0.29, 0.0)] == [
        "success",
        "success",
        "partial",
        "partial",
        "failed",
        "failed",
    ]


def test_torn_line_is_skipped(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path)
    store.record(make(1))
    with (tmp_path / "episodes.jsonl").open("a") as fh:
        fh.write('{"id": "half')  # a crash mid-append elsewhere
    assert store.record(make(2))
    assert [e.id for e in store.query()] == ["r1-001", "r1-002"]


def _writer(gym: str, start: int) -> None:
    store = EpisodeStore(Path(gym))
    for i in range(start, start + 20):
        store.record(make(i % 30))  # overlapping ids across processes


def test_concurrent_writers_never_duplicate(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), s)) for s in (0, 10, 20)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    ids = [e.id for e in EpisodeStore(tmp_path).query()]
    assert len(ids) == len(set(ids)) == 30
