"""The learning loop in three worlds, end to end: real `tbench-iterate` processes, host workspaces, and a scripted
model on a real Ollama-protocol socket whose agent answers depend on which lesson text is in its system prompt,
and which also answers the reflection requests.

- Planted effect: the agent solves a task only when a general rule is in its prompt; the reflection model proposes
  that rule after seeing failing trials. `--learn --holdout 0.5 --control` ends with a significant improvement on
  the held-out tasks, with a lesson that was learned, not imported.
- Null world: lessons change nothing (outcomes are drawn per task: always, never, or a coin). Over 20 seeds the proof
  claims an improvement in at most 1 (5%), and no lesson is retired for harm, though lessons are credited.
- Harmful lesson: an imported lesson that makes the agent fail tasks it passes without it is retired after 6 hurt
  trials (archivist/credit.py: P(harm) >= 0.99 at 6 hurts and no help).
"""

from __future__ import annotations

import json
import random
import re
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tbench.archivist.memory_service import MemoryStore
from tbench.models.lessons import Lesson, LessonFile, lesson_id
from tests.conftest import run_cli
from tests.fake_ollama import FakeOllama, Reply

WORDS = ["amber", "basil", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper", "kelp",
         "lumen"]  # fmt: skip
RULE = "IF a task asks to write a word into a file THEN write only that word and nothing else"
BAD = "IF a word must be written to a file THEN add a short explanation after the word"
NULL_RULES = [
    "IF a task asks to write a file THEN list the folder afterwards to see the file is there",
    "IF a word must be spelled exactly THEN copy its letters from the task text one by one",
    "IF the task names a file THEN create it in the current folder rather than elsewhere",
    "IF you write a file THEN print it back with cat to check what it holds",
    "IF a task is short THEN answer it in one step without exploring first",
    "IF a file may already exist THEN overwrite it instead of appending to it",
    "IF the instruction repeats a word THEN treat that word as the required content",
    "IF you are unsure about a file THEN read the task again before you write",
]


def _suite(path: Path, n: int) -> Path:
    tasks = [
        {
            "id": f"word-{i:02d}",
            "name": f"Write {w}",
            "description": f"Write the word {w} into the file answer.txt.",
            "solution": f"printf '%s\\n' {w} > answer.txt",
            "verification": {"type": "custom", "script": f'test "$(cat answer.txt)" = "{w}"'},
        }
        for i, w in enumerate(WORDS[:n])
    ]
    path.write_text(json.dumps({"name": "words", "version": "1", "tasks": tasks}))
    return path


def _word(body: dict[str, Any]) -> str | None:
    user = next((m["content"] for m in body["messages"] if m["role"] == "user"), "")
    m = re.search(r"Write the word (\w+) into", user)
    return m.group(1) if m else None


def _agent(decide: Any) -> Any:
    """An agent that writes answer.txt once — right or wrong as `decide(word, system_prompt)` says — then stops."""

    def policy(body: dict[str, Any], n: int) -> Reply:
        messages = body["messages"]
        word = _word(body)
        if word is None or any(m["role"] == "tool" for m in messages):
            return Reply(content="Done.")
        content = word + "\n" if decide(word, messages[0]["content"]) else f"{word} is the word\n"
        return Reply(tool_calls=[("write_file", {"path": "answer.txt", "content": content})])

    return policy


def _reflector(rules: list[str]) -> Any:
    """Answers a reflection request with ADD of the next rule, citing the first trial it was shown."""
    state = {"next": 0}

    def policy(body: dict[str, Any], n: int) -> Reply:
        shown = re.findall(r"## trial (\S+)", body["messages"][1]["content"])
        if not shown or state["next"] >= len(rules):
            return Reply(content='{"operations": []}')
        text = rules[state["next"] % len(rules)]
        state["next"] += 1
        op = {"op": "ADD", "text": text, "category": "heuristic", "evidence": [shown[0]]}
        return Reply(content=json.dumps({"operations": [op]}))

    return policy


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


def _iterate(fake: FakeOllama, suite: Path, out: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    proc = run_cli(
        "--suite", str(suite), "--model", "ollama:agent", "--ollama-endpoint", fake.url, "--output", str(out),
        "--project-root", str(root), "--model-option", "retries=0", *extra,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def _summary(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "summary.json").read_text()))


def test_planted_effect_is_learned_and_proved_on_held_out_tasks(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", _agent(lambda word, system: RULE in system))
    fake.add_model("reflector", _reflector([RULE]))
    suite, out = _suite(tmp_path / "words.json", 12), tmp_path / "run"
    _iterate(fake, suite, out, tmp_path, "--iterations", "3", "--learn", "--reflect-model", "ollama:reflector",
             "--holdout", "0.5", "--control")  # fmt: skip
    learning = _summary(out)["learning"]
    held = learning["holdout_tasks"]
    assert len(held) == 6 and learning["contaminated_lessons"] == []
    rates = [(it["memory"]["rate"], it["control"]["rate"]) for it in learning["iterations"]]
    assert rates == [(0.0, 0.0), (1.0, 0.0), (1.0, 0.0)]  # nothing known at first; then the lesson, learned, helps
    assert learning["verdict"] == "improved" and learning["interval"][0] > 0 and learning["p_value"] < 0.05
    (lesson,) = MemoryStore.for_project(tmp_path).load()
    assert lesson.text == RULE and lesson.source == "reflection:ollama:reflector"  # learned, not imported
    assert set(lesson.evidence_tasks).isdisjoint(held)  # drawn from train tasks only
    report = (out / "report.md").read_text()
    assert "Contaminated lessons: 0." in report and "**Held-out verdict, memory vs no memory:** improved" in report


def test_null_world_claims_nothing_and_retires_nothing(fake: FakeOllama, tmp_path: Path) -> None:
    suite = _suite(tmp_path / "words.json", 12)
    rng = random.Random(0)

    def decide(word: str, system: str) -> bool:  # the prompt plays no part: always, never, or a coin per trial
        kind = WORDS.index(word) % 3
        return kind == 0 or (kind == 2 and rng.random() < 0.5)

    fake.add_model("agent", _agent(decide))
    fake.add_model("reflector", _reflector(NULL_RULES))
    verdicts = []
    for seed in range(20):  # one project: its held-out split, lessons and trial history carry over night to night
        rng.seed(seed)
        out = tmp_path / f"run-{seed:02d}"
        _iterate(fake, suite, out, tmp_path, "--iterations", "1", "--learn", "--reflect-model", "ollama:reflector",
                 "--holdout", "0.5", "--control", "--seed", str(seed))  # fmt: skip
        verdicts.append(_summary(out)["learning"]["verdict"])
    assert sum(v == "improved" for v in verdicts) <= 1, verdicts
    store = MemoryStore.for_project(tmp_path)
    lessons = [*store.load(), *store.archive()]
    assert len(lessons) == len(NULL_RULES)  # the memory grew as proposed ...
    assert not [x.id for x in lessons if (x.retired_reason or "").startswith("harmful")]  # ... and lost nothing
    credited = sum(x.helpful + x.harmful + x.unchanged for x in lessons)
    print(f"\nnull world: verdicts {dict(Counter(verdicts))}; lessons {len(lessons)}; credited trials: helped "
          f"{sum(x.helpful for x in lessons)}, hurt {sum(x.harmful for x in lessons)}, unchanged "
          f"{sum(x.unchanged for x in lessons)}, uncredited {sum(x.uncredited for x in lessons)}")  # fmt: skip
    assert credited > 50, credited  # credit really ran: the claim "never retired" is not vacuous


def test_a_harmful_lesson_is_retired_within_six_hurt_trials(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", _agent(lambda word, system: BAD not in system))
    fake.add_model("reflector", _reflector([]))
    suite = _suite(tmp_path / "words.json", 8)
    _iterate(fake, suite, tmp_path / "before", tmp_path, "--iterations", "2")  # the tasks pass without the lesson
    now = "2026-12-01T00:00:00.000Z"
    bad = Lesson(id=lesson_id(BAD), category="heuristic", text=BAD, importance=0.9, source="import", created_at=now,
                 updated_at=now)  # fmt: skip
    export = tmp_path / "bad.json"
    export.write_text(LessonFile(lessons=[bad]).model_dump_json())
    imported = subprocess.run(
        [sys.executable, "-c", "from tbench.cli.app import main; main()", "lessons", "import", str(export),
         "--project-root", str(tmp_path)], capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert imported.returncode == 0, imported.stderr
    out = tmp_path / "with"
    _iterate(fake, suite, out, tmp_path, "--iterations", "1", "--learn", "--reflect-model", "ollama:reflector")
    results = json.loads((out / "iterations/001/results.json").read_text())["results"]
    assert all(r["lesson_ids"] == [bad.id] and r["status"] == "fail" for r in results)  # it hurt every trial
    store = MemoryStore.for_project(tmp_path)
    assert store.load() == []
    (gone,) = store.archive()
    assert gone.id == bad.id and gone.harmful == 6 and gone.helpful == 0
    assert (gone.retired_reason or "").startswith("harmful: hurt 6 trial(s)")
