"""What keeps the Archivist honest besides credit: a reflection answer is recorded before it is applied (a resume
applies it without asking again), MERGE keeps the merged lesson, retrieval has a relevance floor and honours
scope, the held-out split is stable per project and its taint is enforced and shown, and reflection covers every
failing train task over the nights under its budget, events first."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tbench.archivist.context import select
from tbench.archivist.holdout import project_holdout, tainted
from tbench.archivist.loop import open_learning
from tbench.archivist.memory_service import MemoryStore
from tbench.archivist.service import MAX_TRIALS_PER_CALL, plan_calls, reflect
from tbench.bench.formats import load_suite
from tbench.errors import UserError
from tbench.llm.ollama import OllamaTransport
from tbench.models.lessons import LearningConfig, Lesson, ReflectionLog, lesson_id
from tbench.models.model_settings import ChatOptions, ModelSettings
from tbench.models.results import TrialResult
from tests.conftest import EXAMPLES
from tests.fake_ollama import FakeOllama, Reply, scripted
from tests.synthetic import FAIL, PASS, TIMEOUT, trial

TASKS = load_suite(EXAMPLES / "local-suite.json").tasks
RULE = "IF a task names an output file THEN write it and print the file back before finishing"
OTHER = "IF a numeric answer is required THEN recompute it with a second independent command"
NOW = "2026-11-20T10:00:00.000Z"


def _lesson(text: str, **extra: Any) -> Lesson:
    return Lesson(id=lesson_id(text), category="heuristic", text=text, source="t", created_at=NOW, updated_at=NOW,
                  **extra)  # fmt: skip


class _Killed(Exception):
    pass


def test_a_recorded_answer_is_applied_on_resume_without_asking_again(tmp_path: Path) -> None:
    results = [trial("r", 1, "hello-file", FAIL), trial("r", 1, "sum-numbers", PASS)]
    answer = json.dumps({"operations": [{"op": "ADD", "text": RULE, "category": "heuristic",
                                         "evidence": ["r-001-hello-file"]}]})  # fmt: skip
    store = MemoryStore(tmp_path / "mem")
    saved: list[ReflectionLog] = []

    def save_then_die(log: ReflectionLog) -> None:
        saved.append(log.model_copy(deep=True))
        if any(c.status == "answered" for c in log.calls):
            raise _Killed  # killed right after the answer reached the disk, before it was applied

    with FakeOllama() as fake:
        fake.add_model("reflector", scripted(Reply(content=answer)))
        transport = OllamaTransport(fake.url, "reflector", ChatOptions(retries=0, request_timeout_sec=30))
        kw: dict[str, Any] = {"run_dir": tmp_path, "run_id": "r", "iteration": 1, "results": results,
                              "tasks": TASKS, "suite_tasks": TASKS}  # fmt: skip
        with pytest.raises(_Killed):
            reflect(store, transport, save=save_then_die, **kw)
        assert store.load() == [] and len(fake.chats("reflector")) == 1
        log = reflect(store, transport, log=saved[-1], **kw)  # the resume
        assert len(fake.chats("reflector")) == 1  # not asked again
    assert log.status == "applied" and [x.text for x in store.load()] == [RULE]
    assert log.calls[0].answer == answer and log.calls[0].status == "applied"


def test_merge_into_one_parts_own_text_keeps_the_merged_lesson(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "mem")
    a, b = _lesson(RULE, evidence=["r-001-hello-file"]), _lesson(OTHER, evidence=["r-001-sum-numbers"])
    store.transact(lambda active, retired: active.extend([a, b]))
    merge = {"op": "MERGE", "ids": [a.id, b.id], "text": RULE, "evidence": ["r-002-hello-file"]}
    with FakeOllama() as fake:
        fake.add_model("reflector", scripted(Reply(content=json.dumps({"operations": [merge]}))))
        log = reflect(
            store, OllamaTransport(fake.url, "reflector", ChatOptions(retries=0)), run_dir=tmp_path, run_id="r",
            iteration=2, results=[trial("r", 2, "hello-file", FAIL)], tasks=TASKS, suite_tasks=TASKS,
        )  # fmt: skip
    assert log.status == "applied"
    (kept,) = store.load()
    assert kept.id == a.id and kept.text == RULE and set(kept.evidence) >= {"r-001-hello-file", "r-001-sum-numbers"}
    (gone,) = store.archive()
    assert gone.id == b.id and gone.superseded_by == a.id


def test_retrieval_has_a_relevance_floor_and_honours_tool_scope() -> None:
    now = datetime(2026, 11, 20, 12, tzinfo=UTC)
    task = next(t for t in TASKS if t.id == "hello-file")
    unrelated = _lesson("IF kubernetes pods crashloop THEN inspect their events", importance=1.0)
    assert unrelated.id not in select([unrelated], task, "local", now).ids  # however important: never relevant
    bash = _lesson("IF a file must be created THEN use the Write tool rather than Bash heredocs", importance=0.9)
    bash.scope, bash.scope_value = "tool", "Write"
    assert select([bash], task, "local", now, tools=frozenset({"Bash", "Write"})).ids == [bash.id]
    assert select([bash], task, "local", now, tools=frozenset({"shell", "write_file"})).ids == []


def test_the_held_out_split_is_stable_per_project_and_its_taint_is_enforced(tmp_path: Path) -> None:
    ids = [f"t{i:02d}" for i in range(10)]
    memory = tmp_path / ".openagents/memory"
    first = project_holdout(memory, "s", ids, 0.3)
    assert len(first) == 3 and project_holdout(memory, "s", ids[::-1], 0.3) == first  # no seed enters it
    with pytest.raises(UserError, match=r"held-out split of suite 's' is 0.3"):
        project_holdout(memory, "s", ids, 0.5)
    grown = project_holdout(memory, "s", [*ids, "t10", "t11"], 0.3)
    assert set(first) <= set(grown)  # a task added later never reshuffles the split

    held = sorted(t.id for t in TASKS)[:2]
    memory_dir = tmp_path / "p" / ".openagents/memory"
    store = MemoryStore(memory_dir)
    dirty = _lesson(RULE, evidence=[f"old-001-{held[0]}"])  # drawn from a held-out task, evidence_tasks unrecorded
    clean = _lesson("IF a file is named in the task THEN write that file and print it back", evidence_tasks=[
        next(t.id for t in TASKS if t.id not in held)])  # fmt: skip
    store.transact(lambda active, retired: active.extend([dirty, clean]))
    assert tainted(dirty, set(held), {t.id for t in TASKS}) == {held[0]}
    config = LearningConfig(memory="read", holdout_fraction=0.5, holdout_tasks=held)
    learning = open_learning(config, tmp_path / "p", "local", "oracle", ModelSettings(), [t.id for t in TASKS])
    shown = {task.id: learning.inject(1, task).ids for task in TASKS}
    assert not any(dirty.id in shown[t] for t in held)  # never on a held-out trial ...
    assert any(dirty.id in ids for t, ids in shown.items() if t not in held)  # ... though it is on train tasks
    (memory_dir / "holdout.json").write_text(json.dumps({"schema_version": 1, "salt": "x", "suites": {
        "tbench-local-examples": {"fraction": 0.5, "held_out": held, "known": [t.id for t in TASKS]}}}))  # fmt: skip
    listed = subprocess.run(
        [sys.executable, "-c", "from tbench.cli.app import main; main()", "lessons", "list", "--project-root",
         str(tmp_path / "p")], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert listed.returncode == 0, listed.stderr
    row = next(line for line in listed.stdout.splitlines() if dirty.id in line)
    assert held[0] in row and "—" in next(line for line in listed.stdout.splitlines() if clean.id in line)


def _night(i: int, outcomes: dict[str, tuple[str, Any]]) -> list[TrialResult]:
    return [trial("r", i, t, o) for t, o in outcomes.items()]


def test_reflection_covers_every_failing_task_over_the_nights_events_first_under_budget() -> None:
    tasks = [f"t{i:02d}" for i in range(30)]
    today = _night(2, {t: FAIL for t in tasks} | {"t00": TIMEOUT})
    yesterday = _night(1, {t: FAIL for t in tasks} | {"t05": PASS})
    digests = {r.trial_id: "x" * 400 for r in today}  # 101 tokens each
    calls, left = plan_calls(today, yesterday, {}, digests, budget_tokens=1100)
    assert calls[0].trigger.startswith("regression") and calls[0].trials[0] == "r-002-t05"
    assert "new failure cluster: agent_timeout" in calls[0].trigger  # a mode yesterday did not have
    shown = [t for c in calls for t in c.trials]
    assert len(shown) == 10 and len(left) == 20 and all(len(c.trials) <= MAX_TRIALS_PER_CALL for c in calls)
    coverage: dict[str, list[str]] = {}
    reached: set[str] = set()
    for night in range(4):  # rotation: the least-reflected tasks come first each night
        calls, _ = plan_calls(_night(night, {t: FAIL for t in tasks}), [], coverage, {
            f"r-{night:03d}-{t}": "x" * 400 for t in tasks}, budget_tokens=1100)  # fmt: skip
        for c in calls:
            for tid in c.trials:
                task = tid.split("-", 2)[2]
                reached.add(task)
                coverage.setdefault(task, []).append(f"2026-12-0{night + 1}")
    assert reached == set(tasks)  # every failing train task reached reflection within 3 nights of 10
