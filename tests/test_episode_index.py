"""The SQLite index beside episodes.jsonl: kept in step by record(), caught up by queries, rebuilt when the
JSONL changes under it, and never able to fail a run. Real files, real runs' results.json."""

from __future__ import annotations

from pathlib import Path

from tbench.bench.episode_store import EpisodeStore
from tbench.models.episode import Episode, EpisodeSummary
from tbench.models.results import Summary
from tests.synthetic import FAIL, INFRA, PASS, TIMEOUT, trial, write_run


def episode_for(run_dir: Path, run_id: str, iteration: int, model: str, finished: str) -> Episode:
    summary = Summary(total=3, passed=1, failed=1, pass_rate=0.5)
    return Episode(
        id=f"{run_id}-{iteration:03d}",
        run_id=run_id,
        iteration=iteration,
        model=model,
        suite_name="synthetic",
        suite_version="1",
        started_at=finished,
        finished_at=finished,
        status="partial",
        summary=EpisodeSummary.of(summary),
        results_path=str(run_dir / "iterations" / f"{iteration:03d}" / "results.json"),
    )


def make_run(tmp: Path, run_id: str, iterations: int = 2) -> Path:
    outcomes = {"a": PASS, "b": FAIL, "c": TIMEOUT, "d": INFRA}
    return write_run(
        tmp / run_id,
        tmp,
        run_id,
        lambda i: [trial(run_id, i, task, o) for task, o in outcomes.items()],
        iterations=iterations,
        tasks=list(outcomes),
    )


def test_record_indexes_episodes_and_their_trials(tmp_path: Path) -> None:
    store = EpisodeStore(tmp_path / "gym")
    run = make_run(tmp_path, "run1")
    assert store.record(episode_for(run, "run1", 1, "oracle", "2026-11-20T10:00:00.000Z"))
    assert store.record(episode_for(run, "run1", 2, "nop", "2026-11-21T10:00:00.000Z"))
    index = store.index()
    assert index.sync() == 0  # record() already brought it up to date
    assert [e.id for e in index.episodes()] == ["run1-002", "run1-001"]  # newest first
    assert [e.id for e in index.episodes(model="oracle")] == ["run1-001"]
    assert [e.id for e in index.episodes(since="2026-11-21T00:00:00.000Z")] == ["run1-002"]
    assert index.count(run_id="run1") == 2 and index.count(run_id="other") == 0
    trials = index.trials(task_id="c")
    assert [(r.iteration, r.status, r.failure_mode) for r in trials] == [
        (2, "timeout", "agent_timeout"),
        (1, "timeout", "agent_timeout"),
    ]
    assert Path(trials[0].trial_path) == run / "iterations" / "002" / "c"
    assert (Path(trials[0].trial_path) / "trial.log").is_file()
    assert index.count("trials", status="error") == 2 and index.count("trials") == 8
    assert len(index.trials(limit=3)) == 3
    # the seed's API is untouched
    assert [e.id for e in store.query(model="nop")] == ["run1-002"]


def test_queries_catch_up_with_lines_appended_by_others(tmp_path: Path) -> None:
    gym = tmp_path / "gym"
    run = make_run(tmp_path, "run1", iterations=3)
    gym.mkdir()
    lines = [episode_for(run, "run1", i, "m", f"2026-11-2{i}T10:00:00.000Z") for i in (1, 2, 3)]
    jsonl = gym / "episodes.jsonl"
    jsonl.write_text(lines[0].model_dump_json(by_alias=True) + "\n")
    index = EpisodeStore(gym).index()
    assert index.sync() == 1
    # a torn line (a writer mid-append) is left for later, not skipped for good
    whole = lines[1].model_dump_json(by_alias=True) + "\n"
    with jsonl.open("a") as fh:
        fh.write(whole[:40])
    assert index.sync() == 0 and index.count() == 1
    with jsonl.open("a") as fh:
        fh.write(whole[40:] + "not json\n" + lines[2].model_dump_json(by_alias=True) + "\n")
    assert index.sync() == 2 and index.count() == 3 and index.count("trials") == 12


def test_a_replaced_jsonl_or_a_damaged_index_is_rebuilt(tmp_path: Path) -> None:
    gym = tmp_path / "gym"
    store = EpisodeStore(gym)
    run = make_run(tmp_path, "run1")
    for i in (1, 2):
        store.record(episode_for(run, "run1", i, "m", f"2026-11-2{i}T10:00:00.000Z"))
    # someone rewrites the JSONL with different, shorter content
    (gym / "episodes.jsonl").write_text(
        episode_for(run, "run1", 2, "other", "2026-11-22T10:00:00.000Z").model_dump_json(by_alias=True) + "\n"
    )
    index = store.index()
    assert index.sync() == 1
    assert [(e.id, e.model) for e in index.episodes()] == [("run1-002", "other")]
    assert index.count("trials") == 4
    # a damaged index file is replaced, not an error
    (gym / "index.sqlite").write_bytes(b"this is not a database" * 100)
    for suffix in ("-wal", "-shm"):
        (gym / f"index.sqlite{suffix}").unlink(missing_ok=True)
    assert [e.id for e in store.index().episodes()] == []  # empty until the next sync
    assert store.index().sync() == 1 and store.index().count() == 1
    assert store.index().rebuild() == 1


def test_missing_results_and_duplicate_ids_do_not_break_the_index(tmp_path: Path) -> None:
    gym = tmp_path / "gym"
    gym.mkdir()
    ghost = episode_for(tmp_path / "moved-away", "ghost", 1, "m", "2026-11-20T10:00:00.000Z")
    line = ghost.model_dump_json(by_alias=True) + "\n"
    (gym / "episodes.jsonl").write_text(line + line)
    index = EpisodeStore(gym).index()
    assert index.sync() == 1
    assert index.count() == 1 and index.count("trials") == 0


def test_record_succeeds_when_the_index_cannot_be_written(tmp_path: Path) -> None:
    gym = tmp_path / "gym"
    (gym / "index.sqlite").mkdir(parents=True)  # not a file: sqlite cannot open it
    store = EpisodeStore(gym)
    run = make_run(tmp_path, "run1")
    assert store.record(episode_for(run, "run1", 1, "m", "2026-11-20T10:00:00.000Z"))
    assert [e.id for e in store.query()] == ["run1-001"]
