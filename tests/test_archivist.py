"""The Archivist: reflection through a scripted model on a real Ollama-protocol socket, the store under
concurrent writers and kill -9, retrieval on a labelled set, credit, the held-out split, and the lessons reaching
the real requests of the next iteration (`tbench-iterate --learn`)."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from tbench.archivist.context import estimate_tokens, rank, select
from tbench.archivist.credit import HARM_CONFIDENCE, credit, judge, p_harm, p_worse
from tbench.archivist.guard import LeakGuard
from tbench.archivist.holdout import split_holdout
from tbench.archivist.memory_service import MemoryStore
from tbench.archivist.service import reflect
from tbench.bench.episode_index import PastTrial
from tbench.bench.formats import load_suite
from tbench.errors import FailureMode
from tbench.llm.ollama import OllamaTransport
from tbench.models.lessons import HoldoutFile, Lesson, LessonFile, SuiteSplit, lesson_id
from tbench.models.model_settings import ChatOptions
from tbench.models.results import TrialResult
from tests.conftest import EXAMPLES, ci_mandatory, run_cli
from tests.fake_ollama import FakeOllama, Fault, Reply, scripted
from tests.synthetic import FAIL, PASS, trial

LOCAL_SUITE = EXAMPLES / "local-suite.json"
TASKS = load_suite(LOCAL_SUITE).tasks
FAST = ChatOptions(retries=0, request_timeout_sec=30)
RULE_A = "IF a task names an output file THEN write it and print the file back before finishing"
RULE_B = "IF a numeric answer is required THEN recompute it with a second independent command"


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


def _ops(*ops: dict[str, Any]) -> Reply:
    return Reply(content=json.dumps({"operations": list(ops)}))


def _add(text: str, evidence: str, **extra: Any) -> dict[str, Any]:
    return {"op": "ADD", "text": text, "category": "heuristic", "evidence": [evidence], **extra}


def _results(run: str = "r", iteration: int = 1) -> list[TrialResult]:
    return [trial(run, iteration, "hello-file", FAIL), trial(run, iteration, "sum-numbers", PASS)]


def _reflect(store: MemoryStore, fake: FakeOllama, model: str, tmp_path: Path, results: list[TrialResult]) -> Any:
    return reflect(
        store, OllamaTransport(fake.url, model, FAST), run_dir=tmp_path, run_id="r", iteration=results[0].iteration,
        results=results, tasks=TASKS, suite_tasks=TASKS,
    )  # fmt: skip


def _content(lessons: list[Lesson]) -> list[tuple[Any, ...]]:
    return sorted((x.id, x.text, x.category, tuple(x.tags), x.importance, tuple(x.evidence)) for x in lessons)


# ---------------------------------------------------------------- reflection and delta ops


def test_delta_ops_are_applied_exactly_and_reproducibly(fake: FakeOllama, tmp_path: Path) -> None:
    t1, t2 = "r-001-hello-file", "r-001-sum-numbers"
    fake.add_model("reflector", scripted(_ops(_add(RULE_A, t1, tags=["files"]), _add(RULE_B, t2, importance=0.7))))
    stores = [MemoryStore(tmp_path / f"mem{i}") for i in (1, 2)]
    for store in stores:
        fake.models["reflector:latest"].calls = 0
        log = _reflect(store, fake, "reflector", tmp_path, _results())
        assert log.status == "applied" and [o.applied for o in log.operations] == [True, True]
    a, b = (s.load() for s in stores)
    assert _content(a) == _content(b)  # same answer, same store
    by_id = {x.id: x for x in a}
    assert by_id[lesson_id(RULE_A)].tags == ["files"] and by_id[lesson_id(RULE_A)].evidence == [t1]
    assert by_id[lesson_id(RULE_B)].importance == 0.7 and by_id[lesson_id(RULE_B)].episodes == ["r-001"]
    # the model saw the trials, and answered with ops only: UPDATE, MERGE and RETIRE on the next round
    shown = fake.chats("reflector")[0]["messages"][1]["content"]
    assert f"## trial {t1}" in shown and "Create a file named hello.txt" in shown

    merged_text = "IF a task asks for output THEN produce it and verify it with an independent command"
    third = "IF a command is interactive THEN pass the non-interactive flag such as -y"
    ida, idb = lesson_id(RULE_A), lesson_id(RULE_B)
    t3 = "r-002-hello-file"
    fake.add_model(
        "reflector2",
        scripted(
            _ops(
                {"op": "UPDATE", "id": ida, "importance": 0.9, "evidence": [t3]},
                _add(third, t3, category="tool_usage"),
            ),
            _ops({"op": "MERGE", "ids": [ida, idb], "text": merged_text, "evidence": [t3]}),
            _ops({"op": "RETIRE", "id": lesson_id(third), "reason": "superseded by the sandbox", "evidence": [t3]}),
        ),
    )
    store = stores[0]
    for _ in range(3):
        assert _reflect(store, fake, "reflector2", tmp_path, _results(iteration=2)).status == "applied"
    active = store.load()
    assert [x.text for x in active] == [merged_text]
    merged = active[0]
    assert merged.evidence == sorted([t1, t2, t3]) and merged.importance == 0.9 and merged.source == "merge"
    archived = {x.id: x for x in store.archive()}
    assert archived[ida].superseded_by == merged.id == archived[idb].superseded_by
    assert archived[lesson_id(third)].retired_reason == "superseded by the sandbox"


_T1 = "r-001-hello-file"
_GOOD = {"op": "ADD", "text": "IF tests fail THEN read them", "category": "heuristic", "evidence": [_T1]}


@pytest.mark.parametrize(
    ("answer", "why"),
    [
        ("I think the agent should be more careful.", "no JSON object"),
        ('{"lessons": []}', 'no "operations" list'),
        (json.dumps({"operations": [{**_GOOD, "category": "magic"}]}), "invalid: ADD.category"),
        (json.dumps({"operations": [{**_GOOD, "evidence": []}]}), "invalid: ADD.evidence"),
        (json.dumps({"operations": [{**_GOOD, "evidence": ["other-trial"]}]}), "evidence names trials not shown"),
        (json.dumps({"operations": [{"op": "RETIRE", "id": "Lnope", "reason": "old", "evidence": [_T1]}]}),
         "no active lesson Lnope"),
        (json.dumps({"operations": [{"op": "REWRITE_ALL", "evidence": [_T1]}]}), "invalid"),
        (json.dumps({"operations": [{**_GOOD, "text": "IF ... THEN ..."}]}), "template placeholder"),
        (json.dumps({"operations": [{**_GOOD, "text": "Always read the tests carefully first"}]}), "IF <situation>"),
    ],
)  # fmt: skip
def test_malformed_answers_are_logged_and_skipped(fake: FakeOllama, tmp_path: Path, answer: str, why: str) -> None:
    store = MemoryStore(tmp_path / "mem")
    fake.add_model("ok", scripted(_ops(_add(RULE_A, "r-001-hello-file"))))
    _reflect(store, fake, "ok", tmp_path, _results())
    before = store.lessons_path.read_bytes()
    fake.add_model("bad", scripted(Reply(content=answer)))
    log = _reflect(store, fake, "bad", tmp_path, _results())
    reasons = [log.reason or ""] + [o.reason or "" for o in log.operations]
    assert log.status == "skipped" and any(why in r for r in reasons), reasons
    assert store.lessons_path.read_bytes() == before


def test_a_dead_or_empty_reflection_model_is_never_fatal(fake: FakeOllama, tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "mem")
    fake.add_model("down", scripted(then=Fault("http500")))  # type: ignore[arg-type]
    log = _reflect(store, fake, "down", tmp_path, _results())
    assert log.status == "skipped" and "HTTP 500" in (log.reason or "")
    fake.add_model("quiet", scripted(_ops()))
    log = _reflect(store, fake, "quiet", tmp_path, _results())
    assert (log.status, log.reason) == ("nothing_to_learn", "the model proposed no operations")
    assert store.load() == []


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("IF working on hello-file THEN write the greeting first", "names a task"),
        ("IF the task is fix-median THEN sort the list first", "names a task"),
        ("IF you see numbers.txt THEN sum with awk before writing", "task-specific path"),
        ("IF a stats.py median is wrong THEN average the middle two", "task-specific path"),
        ("IF asked for a greeting THEN write 'Hello, world!' exactly", "quotes the solution of task hello-file"),
    ],
)
def test_leakage_guard_rejects_task_names_paths_and_expected_outputs(
    fake: FakeOllama, tmp_path: Path, text: str, why: str
) -> None:
    store = MemoryStore(tmp_path / "mem")
    fake.add_model("leaky", scripted(_ops(_add(text, "r-001-hello-file"), _add(RULE_A, "r-001-hello-file"))))
    log = _reflect(store, fake, "leaky", tmp_path, _results())
    rejected, kept = log.operations
    assert not rejected.applied and why in (rejected.reason or "") and kept.applied
    assert [x.text for x in store.load()] == [RULE_A]
    assert LeakGuard.of(TASKS, []).check(RULE_B) is None  # a general rule passes


def test_near_duplicates_are_merged_not_added(fake: FakeOllama, tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "mem")
    twin = RULE_A.replace("THEN", "then") + "."
    fake.add_model("dup", scripted(_ops(_add(RULE_A, "r-001-hello-file"), _add(twin, "r-001-sum-numbers", tags=["x"]))))
    log = _reflect(store, fake, "dup", tmp_path, _results())
    assert [o.applied for o in log.operations] == [True, True] and "duplicate" in (log.operations[1].reason or "")
    (only,) = store.load()
    assert only.evidence == ["r-001-hello-file", "r-001-sum-numbers"] and only.tags == ["x"]
    export = tmp_path / "export.json"
    assert store.export(export) == 1
    other = MemoryStore(tmp_path / "other")
    assert other.import_file(export) == (1, 0) and other.import_file(export) == (0, 1)
    assert len(other.load()) == 1


_REFLECT_IN_CHILD = """
import sys
from pathlib import Path
from tbench.archivist.memory_service import MemoryStore
from tbench.archivist.service import reflect
from tbench.bench.formats import load_suite
from tbench.models.model_settings import ChatOptions
from tbench.llm.ollama import OllamaTransport
from tests.synthetic import FAIL, trial
tasks = load_suite(Path(sys.argv[3])).tasks
reflect(MemoryStore(Path(sys.argv[1])), OllamaTransport(sys.argv[2], "staller", ChatOptions(retries=0)),
        run_dir=Path(sys.argv[1]), run_id="r", iteration=2, results=[trial("r", 2, "hello-file", FAIL)],
        tasks=tasks, suite_tasks=tasks)
"""


def test_a_kill_during_reflection_loses_nothing_already_stored(fake: FakeOllama, tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "mem")
    fake.add_model("ok", scripted(_ops(_add(RULE_A, "r-001-hello-file"), _add(RULE_B, "r-001-sum-numbers"))))
    _reflect(store, fake, "ok", tmp_path, _results())
    before = store.lessons_path.read_bytes()
    fake.add_model("staller", scripted(then=Fault("stall", seconds=60)))  # type: ignore[arg-type]
    child = subprocess.Popen(
        [sys.executable, "-c", _REFLECT_IN_CHILD, str(store.root), fake.url, str(LOCAL_SUITE)],
        cwd=Path(__file__).resolve().parents[1],
    )
    try:
        deadline = time.monotonic() + 60
        while not fake.chats("staller") and time.monotonic() < deadline and child.poll() is None:
            time.sleep(0.05)
        assert fake.chats("staller"), "the child never asked the reflection model"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert store.lessons_path.read_bytes() == before
    assert len(store.load()) == 2
    assert store.retire(lesson_id(RULE_B), "test").id == lesson_id(RULE_B)  # the lock is free again


def _credit_many(root: str, lid: str, n: int) -> None:
    for _ in range(n):
        r = trial("r", 2, "hello-file", PASS)
        r.lesson_ids = [lid]
        credit(MemoryStore(Path(root)), r, [_past("fail"), _past("fail")])


def test_concurrent_writers_lose_no_update(tmp_path: Path) -> None:
    store = MemoryStore(tmp_path / "mem")
    now = "2026-11-20T10:00:00.000Z"
    lesson = Lesson(id="L1", category="heuristic", text=RULE_A, source="t", created_at=now, updated_at=now)
    store.transact(lambda active, retired: active.append(lesson))
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_credit_many, args=(str(store.root), "L1", 15)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    (after,) = store.load()
    assert after.helpful == 60 and after.importance == 1.0


# ---------------------------------------------------------------- retrieval


def _lesson(text: str, category: str = "heuristic", tags: list[str] | None = None, importance: float = 0.5) -> Lesson:
    now = "2026-11-20T10:00:00.000Z"
    return Lesson(
        id=lesson_id(text), category=category, text=text, tags=tags or [], importance=importance, source="t",  # type: ignore[arg-type]
        created_at=now, updated_at=now,
    )  # fmt: skip


LABELLED = {
    "hello-file": _lesson(
        "IF asked to create a file with given content THEN check the file content byte for byte, "
        "including the trailing newline",
        tags=["file", "newline"],
    ),
    "sum-numbers": _lesson("IF integers must be summed from a file THEN use awk to sum every line", tags=["sum"]),
    "fix-median": _lesson(
        "IF a function has a bug THEN write a failing test, fix the function, rerun the tests",
        "bugfix_pattern",
        ["bug", "function"],
    ),
    "count-errors": _lesson(
        "IF counting lines of a log THEN grep the pattern and count matching log lines", tags=["log", "grep"]
    ),
}
DISTRACTOR = _lesson("IF a package install prompts THEN pass -y to apt-get", "tool_usage", ["apt"], importance=0.9)


def test_retrieval_puts_the_relevant_lesson_first() -> None:
    lessons = [*LABELLED.values(), DISTRACTOR]
    now = datetime(2026, 11, 21, tzinfo=UTC)
    for task in TASKS:
        ranked = rank(lessons, task, "local", now)
        assert ranked[0][1].id == LABELLED[task.id].id, (task.id, [(round(s, 3), x.text[:30]) for s, x in ranked])
    sel = select(lessons, TASKS[0], "local", now, top_k=2, token_budget=1000)
    assert sel.ids[0] == LABELLED[TASKS[0].id].id and len(sel.ids) == 2 and sel.text is not None
    tight = select(lessons, TASKS[0], "local", now, top_k=3, token_budget=30)  # the best one is too long for it
    assert tight.ids and LABELLED[TASKS[0].id].id not in tight.ids
    assert sum(estimate_tokens(x.text) + 4 for x in lessons if x.id in tight.ids) <= 30
    scoped = _lesson("IF in another suite THEN do something else entirely", importance=1.0)
    scoped.scope, scoped.scope_value = "suite", "other-suite"
    assert scoped.id not in select([scoped, DISTRACTOR], TASKS[0], "local", now).ids


# ---------------------------------------------------------------- credit and the split


def _past(status: str, *lessons: str, mode: FailureMode | None = None) -> PastTrial:
    return PastTrial(trial_id=f"old-{uuid.uuid4().hex[:6]}", status=status, failure_mode=mode, lesson_ids=list(lessons))


def test_credit_judges_a_lesson_against_its_task_without_it(tmp_path: Path) -> None:
    fail2, pass2 = [_past("fail"), _past("fail")], [_past("pass"), _past("pass")]
    assert judge(True, []) is None and judge(False, [_past("pass")]) is None  # too thin: no credit, never a prior
    assert judge(True, [_past("error", mode=FailureMode.INFRA_ERROR)] * 5) is None  # ungraded trials do not count
    assert judge(True, fail2) == "helped" and judge(False, pass2) == "hurt"
    assert judge(False, fail2) == "unchanged" and judge(True, pass2) == "unchanged"  # went as it goes without
    assert judge(False, [_past("pass"), _past("fail")]) == "unchanged"  # a coin-flip task says nothing
    assert p_harm(0, 5) < HARM_CONFIDENCE <= p_harm(0, 6) and p_harm(1, 6) < HARM_CONFIDENCE  # 6 hurts, no help

    store = MemoryStore(tmp_path / "mem")
    a, b = _lesson(RULE_A, importance=0.5), _lesson(RULE_B, importance=0.5)
    store.transact(lambda active, retired: active.extend([a, b]))

    def seen(outcome: tuple[str, FailureMode | None], *ids: str) -> TrialResult:
        r = trial("r", 2, "hello-file", outcome)
        r.lesson_ids = list(ids)
        return r

    history = [_past("fail"), _past("fail", a.id), _past("pass", a.id, b.id)]  # without a: 1 trial; without b: 2
    assert credit(store, seen(PASS, a.id, b.id), history) == {a.id: None, b.id: "helped"}
    got = {x.id: x for x in store.load()}
    assert (got[a.id].uncredited, got[a.id].helpful) == (1, 0) and got[a.id].last_used_at is not None
    assert (got[b.id].helpful, got[b.id].importance) == (1, 0.6)
    passing = [_past("pass")] * 4
    for _ in range(8):  # b now hurts a task that passes without it: retired once P(harm) >= 0.99
        credit(store, seen(FAIL, b.id), passing)
    assert b.id in {x.id for x in store.load()}  # one help earlier: 8 hurts are not yet enough (6 would be alone)
    credit(store, seen(FAIL, b.id), passing)
    assert [x.id for x in store.load()] == [a.id]
    (gone,) = store.archive()
    assert (
        gone.id == b.id and gone.harmful == 9 and gone.retired_reason.startswith("harmful: hurt 9 trial(s), helped 1")
    )
    assert credit(store, seen(("error", FailureMode.INFRA_ERROR), a.id), passing) == {}  # ungraded: no credit


def test_a_lucky_counterfactual_never_retires_a_lesson_on_a_coin_flip_task(tmp_path: Path) -> None:
    """A coin-flip task that passed twice before the lesson existed: with the lesson it goes on flipping. Each
    failure reads "hurt" against p0 = 1, but the counterfactual is two trials: the lesson stays."""
    store = MemoryStore(tmp_path / "mem")
    lesson = _lesson(RULE_A, importance=0.5)
    store.transact(lambda active, retired: active.append(lesson))
    lucky = [_past("pass"), _past("pass")]
    for i in range(40):
        r = trial("r", 2 + i, "hello-file", PASS if i % 2 else FAIL)
        r.lesson_ids = [lesson.id]
        credit(store, r, lucky)
    (kept,) = store.load()
    assert (kept.harmful, kept.helpful, kept.unchanged) == (20, 0, 20)  # the trial counts alone would retire it
    assert p_harm(0, 20) >= HARM_CONFIDENCE and p_worse(kept) < 0.9
    assert kept.by_task["hello-file"].model_dump() == {
        "with_graded": 40, "with_passed": 20, "without_graded": 2, "without_passed": 2,
    }  # fmt: skip


def test_holdout_split_is_reproducible_and_never_empty_or_total() -> None:
    ids = [f"t{i}" for i in range(10)]
    assert split_holdout(ids, 0.3, 7) == split_holdout(list(reversed(ids)), 0.3, 7)
    assert len(split_holdout(ids, 0.3, 7)) == 3 and split_holdout(ids, 0.3, 7) != split_holdout(ids, 0.3, 8)
    assert len(split_holdout(ids, 0.01, 1)) == 1 and len(split_holdout(ids, 0.99, 1)) == 9
    assert split_holdout(ids, 0.0, 1) == []


# ---------------------------------------------------------------- end to end through tbench-iterate


def _cite_first_trial(body: dict[str, Any], n: int) -> Reply:
    trials = re.findall(r"## trial (\S+)", body["messages"][1]["content"])
    return _ops(_add(RULE_A, trials[0], tags=["file"]))


def _coder_that_heeds_the_lesson(body: dict[str, Any], n: int) -> Reply:
    """Solves hello-file only when the lesson is in its system prompt (and it has not yet acted)."""
    messages = body["messages"]
    heeds = RULE_A in messages[0]["content"] and "hello.txt" in messages[1]["content"]
    if heeds and not any(m["role"] == "tool" for m in messages):
        return Reply(tool_calls=[("write_file", {"path": "hello.txt", "content": "Hello, world!\n"})])
    return Reply(content="Done.")


def _iterate(tmp_path: Path, fake: FakeOllama, *extra: str) -> tuple[subprocess.CompletedProcess[str], Path]:
    out = tmp_path / f"run-{uuid.uuid4().hex[:6]}"
    proc = run_cli(
        "--suite", str(LOCAL_SUITE), "--model", "ollama:coder", "--ollama-endpoint", fake.url,
        "--output", str(out), "--project-root", str(tmp_path), "--model-option", "retries=0", *extra,
    )  # fmt: skip
    return proc, out


def _systems(fake: FakeOllama) -> list[str]:
    return [b["messages"][0]["content"] for b in fake.chats("coder")]


def test_learned_lessons_reach_the_next_iterations_requests_and_not_with_memory_off(
    fake: FakeOllama, tmp_path: Path
) -> None:
    fake.add_model("coder", _coder_that_heeds_the_lesson)
    fake.add_model("reflector", _cite_first_trial)
    proc, out = _iterate(tmp_path, fake, "--iterations", "2", "--learn", "--reflect-model", "ollama:reflector",
                         "--tasks", "hello-file", "--tasks", "sum-numbers")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    systems = [s for s in _systems(fake)]
    assert len(systems) == 5 and not any(RULE_A in s for s in systems[:2]) and all(RULE_A in s for s in systems[2:])
    r2 = json.loads((out / "iterations/002/hello-file/result.json").read_text())
    r1 = json.loads((out / "iterations/001/hello-file/result.json").read_text())
    assert (r1["lesson_ids"], r2["lesson_ids"]) == ([], [lesson_id(RULE_A)])
    assert (r1["status"], r2["status"]) == ("fail", "pass")
    log = json.loads((out / "iterations/001/reflection.json").read_text())
    assert log["status"] == "applied" and log["model"] == "ollama:reflector"
    (lesson,) = MemoryStore.for_project(tmp_path).load()
    # one trial of each task without the lesson (iteration 1) is too thin a counterfactual: no credit either way
    assert (lesson.helpful, lesson.harmful, lesson.uncredited, lesson.importance) == (0, 0, 2, 0.5)
    assert "## Learning (Archivist)" in (out / "report.md").read_text()
    again = _tbench("lessons", "reflect", str(out), "--iteration", "1", "--project-root", "elsewhere", cwd=tmp_path)
    assert again.returncode == 0 and "iteration 1: applied, 1 of 1 operation(s) applied" in again.stdout, again.stderr
    assert [x.text for x in MemoryStore.for_project(tmp_path / "elsewhere").load()] == [RULE_A]

    fake.requests.clear()
    proc, out = _iterate(tmp_path, fake, "--iterations", "1", "--memory", "off", "--tasks", "hello-file")
    assert proc.returncode == 0, proc.stderr
    assert _systems(fake) and not any(RULE_A in s for s in _systems(fake))
    fake.requests.clear()
    store_before = MemoryStore.for_project(tmp_path).lessons_path.read_bytes()
    proc, out = _iterate(tmp_path, fake, "--iterations", "1", "--memory", "read", "--tasks", "hello-file")
    assert proc.returncode == 0, proc.stderr
    assert all(RULE_A in s for s in _systems(fake)) and not fake.chats("reflector")
    assert MemoryStore.for_project(tmp_path).lessons_path.read_bytes() == store_before  # read never writes


def test_holdout_keeps_held_out_trials_out_and_control_arm_runs_without_memory(
    fake: FakeOllama, tmp_path: Path
) -> None:
    fake.add_model("coder", _coder_that_heeds_the_lesson)
    fake.add_model("reflector", _cite_first_trial)
    ids = [t.id for t in TASKS]
    held = ["count-errors", "hello-file"]  # the project's stored split: the lesson's own task is held out
    split = HoldoutFile(
        salt="test", suites={"tbench-local-examples": SuiteSplit(fraction=0.5, held_out=held, known=ids)}
    )
    (tmp_path / ".openagents/memory").mkdir(parents=True)
    (tmp_path / ".openagents/memory/holdout.json").write_text(split.model_dump_json())
    proc, out = _iterate(tmp_path, fake, "--iterations", "2", "--learn", "--reflect-model", "ollama:reflector",
                         "--holdout", "0.5", "--seed", "11", "--control")  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["learning"]["holdout_tasks"] == held
    assert config["task_ids"] == [x for t in ids for x in ([t, f"{t}--control"] if t in held else [t])]
    for body in fake.chats("reflector"):  # the reflection model never saw a held-out trial
        shown = body["messages"][1]["content"]
        assert not any(f"-{t}" in shown for t in held)
        assert not any(t.instruction[:40] in shown for t in TASKS if t.id in held)
    for t in held:
        mem = json.loads((out / f"iterations/002/{t}/result.json").read_text())
        ctl = json.loads((out / f"iterations/002/{t}--control/result.json").read_text())
        assert mem["lesson_ids"] == [lesson_id(RULE_A)] and ctl["lesson_ids"] == []
        traj = json.loads((out / f"iterations/002/{t}--control/agent/trajectory.json").read_text())
        assert RULE_A not in traj["system_prompt"]
    (lesson,) = MemoryStore.for_project(tmp_path).load()
    assert set(lesson.evidence) <= {f"{config['run_id']}-00{i}-{t}" for t in ids if t not in held for i in (1, 2)}
    assert lesson.helpful == 0  # credit from train trials only, and never without a counterfactual
    report = (out / "report.md").read_text()
    assert "Contaminated lessons: 0." in report
    assert "| 1 | 0/2 (0%) | 0/2 (0%) | 1 | applied |" in report  # no lessons yet in iteration 1
    assert "| 2 | 1/2 (50%) | 0/2 (0%) | 1 | applied |" in report  # hello-file passes with the lesson only
    assert "**Held-out verdict, memory vs no memory:** no significant change: +25.0 pp" in report  # 2 tasks: too few


# ---------------------------------------------------------------- CLI


def _tbench(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from tbench.cli.app import main; main()", *args],
        cwd=cwd, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_lessons_cli_and_bad_flags_are_one_line_exit_2(fake: FakeOllama, tmp_path: Path) -> None:
    store = MemoryStore.for_project(tmp_path)
    a, b = _lesson(RULE_A, importance=0.8), _lesson(RULE_B)
    store.transact(lambda active, retired: active.extend([a, b]))
    listed = _tbench("lessons", "list", cwd=tmp_path)
    assert listed.returncode == 0 and a.id in listed.stdout and listed.stdout.index(a.id) < listed.stdout.index(b.id)
    shown = _tbench("lessons", "show", b.id, cwd=tmp_path)
    assert Lesson.model_validate_json(shown.stdout).text == RULE_B
    assert _tbench("lessons", "retire", b.id, "--reason", "wrong", cwd=tmp_path).returncode == 0
    assert b.id in _tbench("lessons", "list", "--retired", cwd=tmp_path).stdout
    assert _tbench("lessons", "export", "out.json", cwd=tmp_path).returncode == 0
    assert [x.id for x in LessonFile.model_validate_json((tmp_path / "out.json").read_text()).lessons] == [a.id]
    other = tmp_path / "other"
    other.mkdir()
    imported = _tbench("lessons", "import", str(tmp_path / "out.json"), cwd=other)
    assert imported.returncode == 0 and "imported 1" in imported.stdout
    for args, message in [
        (("lessons", "show", "Lnope"), "no lesson 'Lnope'"),
        (("lessons", "import", "missing.json"), "no such file"),
    ]:
        bad = _tbench(*args, cwd=tmp_path)
        assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and message in bad.stderr
    fake.add_model("coder", scripted(then=Reply(content="Done.")))
    for extra, message in [
        (("--control",), "--control: needs held-out tasks"),
        (("--holdout", "1.5"), "--holdout: must be at least 0 and below 1"),
        (("--memory", "sometimes"), "--memory: expected off, read or learn"),
        (("--learn", "--reflect-model", "claude-code"), "--reflect-model: 'claude-code' cannot reflect"),
        (("--reflect-model", "ollama:x"), "--reflect-model: only matters with --learn"),
    ]:
        proc, out = _iterate(tmp_path, fake, "--iterations", "1", *extra)
        assert proc.returncode == 2 and message in proc.stderr and proc.stderr.strip().count("\n") == 0, proc.stderr
        assert not out.exists()


def test_claude_code_gets_the_lessons_in_its_appended_system_prompt(fake: FakeOllama, tmp_path: Path) -> None:
    """Reflection by a chat model (the stand-in Ollama); the agent is the real Claude Code CLI against the
    Anthropic API stub: iteration 2's requests carry the lesson, iteration 1's and a --memory off run's do not."""
    if shutil.which("claude") is None:
        if ci_mandatory():
            pytest.fail("the claude CLI is missing under CI")
        pytest.skip("the claude CLI is not installed")
    from tests.fake_anthropic import FakeAnthropic, Turn
    from tests.fake_anthropic import scripted as anthropic_script

    fake.add_model("reflector", _cite_first_trial)
    key = "sk-ant-api03-" + uuid.uuid4().hex
    with FakeAnthropic(anthropic_script(then=Turn(text="I will not do anything."))) as stub:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE_CODE_"))}
        env.update(ANTHROPIC_BASE_URL=stub.url, ANTHROPIC_API_KEY=key, CLAUDE_CODE_MAX_RETRIES="0")

        def iterate(*extra: str) -> list[str]:
            stub.requests.clear()
            out = tmp_path / f"run-{uuid.uuid4().hex[:6]}"
            proc = run_cli(
                "--suite", str(LOCAL_SUITE), "--model", "claude-code", "--tasks", "hello-file", "--output", str(out),
                "--project-root", str(tmp_path), "--ollama-endpoint", fake.url, *extra, env=env,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stdout + proc.stderr
            return [json.dumps(r.body.get("system")) for r in stub.agent_requests()]

        systems = iterate("--iterations", "2", "--learn", "--reflect-model", "ollama:reflector")
        assert len(systems) == 2 and RULE_A not in systems[0] and RULE_A in systems[1]
        assert "# Lessons from earlier runs" in systems[1]
        off = iterate("--iterations", "1", "--memory", "off")
        assert off and not any(RULE_A in s for s in off)
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert key.encode() not in path.read_bytes(), f"the API key was written to {path}"


def test_overnight_workers_receive_the_lessons(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("coder", _coder_that_heeds_the_lesson)
    fake.add_model("reflector", _cite_first_trial)
    out = tmp_path / "night"
    proc = subprocess.run(
        [sys.executable, "-c", "from tbench.cli.app import overnight_main; overnight_main()", "--suite",
         str(LOCAL_SUITE), "--model", "ollama:coder", "--ollama-endpoint", fake.url, "--output", str(out),
         "--project-root", str(tmp_path), "--iterations", "2", "--workers", "2", "--learn", "--reflect-model",
         "ollama:reflector", "--tasks", "hello-file", "--tasks", "sum-numbers"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads((out / "iterations/002/hello-file/result.json").read_text())
    assert (r["lesson_ids"], r["status"]) == ([lesson_id(RULE_A)], "pass")
    assert "Reflection (ollama:reflector): applied, 1 operation(s) applied" in proc.stdout


def test_an_openai_compatible_model_can_reflect(tmp_path: Path) -> None:
    from tbench.archivist.loop import reflection_transport
    from tbench.models.model_settings import ModelSettings
    from tests.fake_openai import Answer, FakeOpenAI
    from tests.fake_openai import scripted as openai_script

    store = MemoryStore(tmp_path / "mem")
    answer = json.dumps({"operations": [_add(RULE_B, "r-001-sum-numbers")]})
    with FakeOpenAI() as server:
        server.models["small"] = openai_script(Answer(content=f"```json\n{answer}\n```"))
        settings = ModelSettings(openai_endpoint=server.url, options=FAST)
        log = reflect(
            store, reflection_transport("openai:small", settings), run_dir=tmp_path, run_id="r", iteration=1,
            results=_results(), tasks=TASKS, suite_tasks=TASKS,
        )  # fmt: skip
        (body,) = server.task_chats()
    assert (log.status, log.model) == ("applied", "openai:small")
    assert [x.text for x in store.load()] == [RULE_B] and "## trial r-001-sum-numbers" in json.dumps(body)
