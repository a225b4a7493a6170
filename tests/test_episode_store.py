"""EpisodeStore: append under a lock, never duplicate, query, baseline."""

from __future__ import annotations

import json
import multiprocessing
from pathlib import Path

from tbench.bench.episode_store import EpisodeStore
from tbench.fsutil import atomic_write_model
from tbench.models.episode import BaselineChoice, Episode, EpisodeSummary, episode_status


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
    """The seed's rule: success above 0.5; the rest split into partial (something passed) and failed."""
    rates = (1.0, 0.8, 0.6, 0.51, 0.5, 0.3, 0.01, 0.0, None)
    assert [episode_status(r) for r in rates] == [
        "success",
        "success",
        "success",
        "success",
        "partial",
        "partial",
        "partial",
        "failed",
        "no_graded_trials",
    ]


def test_get_baseline_honours_baseline_set(tmp_path: Path) -> None:
    """`tbench baseline set` wins over the latest success, for its suite; a run is never its own baseline."""
    store = EpisodeStore(tmp_path / "gym")
    store.record(make(1, run="good", rate=1.0, finished="2026-01-01T01:00:00Z"))
    store.record(make(1, run="chosen", rate=0.25, finished="2026-01-01T00:01:00Z"))
    store.record(make(2, run="chosen", rate=0.5, finished="2026-01-01T00:02:00Z"))
    assert store.get_baseline().id == "good-001"  # type: ignore[union-attr]
    choice = BaselineChoice(
        run_id="chosen", run_dir=str(tmp_path / "chosen"), suite_name="s", model="oracle", set_at="x"
    )
    atomic_write_model(tmp_path / "gym" / "baseline.json", choice)
    assert store.get_baseline().id == "chosen-002"  # type: ignore[union-attr]  # its latest iteration
    atomic_write_model(tmp_path / "gym" / "baseline.json", choice.model_copy(update={"iteration": 1}))
    assert store.get_baseline(suite_name="s").id == "chosen-001"  # type: ignore[union-attr]
    assert store.get_baseline(exclude_run_id="chosen") is None
    assert store.get_baseline(suite_name="other") is None  # a choice for another suite does not apply
    assert store.get_baseline(model="nop") is None


def test_a_typical_agent_gets_an_automatic_baseline(tmp_path: Path) -> None:
    """5 of 8 passed (62.5%): a success by the seed's rule, so the next run's report measures against it."""
    store = EpisodeStore(tmp_path / "gym")
    store.record(make(1, run="typical", rate=0.625))
    store.record(make(1, run="weak", rate=0.5, finished="2026-01-02T00:00:00Z"))
    assert store.get_baseline(suite_name="s", exclude_run_id="next").id == "typical-001"  # type: ignore[union-attr]
    assert store.get_baseline(suite_name="s", exclude_run_id="typical") is None


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
