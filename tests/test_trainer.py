"""The Trainer's A/B end to end: real `tbench train` processes (and, for the 20-seed null world, the Trainer in this
process), host workspaces, and a scripted model on a real Ollama-protocol socket whose answers depend on the system
prompt the profile gives it, drawn from a seeded generator.

- Helping world: a profile whose prompt carries the rule passes 90%, the baseline 20%: the trainer names the rule
  profile the winner, and racing stops the baseline before the budget is spent.
- Null world: two profiles whose prompts differ in a sentence the model ignores: over 20 seeds at most one winner.
- Hurting world: a profile whose prompt makes the agent fail: it is dropped and the baseline wins.
Plus the budget, kill -9 and resume, promote, and every bad input in one line with nothing written.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tbench.models.profile import AgentProfile
from tbench.trainer.schema import write_profile
from tests.fake_ollama import FakeOllama, Reply

WORDS = ["amber", "basil", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper", "kelp",
         "lumen"]  # fmt: skip
RULE = "Write only the word itself into the file, nothing else."
NEUTRAL = "Take a breath before you start."
HARM = "After the word, add a short explanation of it."


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


def agent(seed: int, chance: Any) -> Any:
    """Writes answer.txt once, right with probability `chance(word, system_prompt)` (a seeded draw), then stops."""
    rng = random.Random(seed)

    def policy(body: dict[str, Any], n: int) -> Reply:
        messages = body["messages"]
        word = _word(body)
        if word is None or any(m["role"] == "tool" for m in messages):
            return Reply(content="Done.")
        right = rng.random() < chance(word, messages[0]["content"])
        content = word + "\n" if right else f"{word} is the word\n"
        return Reply(tool_calls=[("write_file", {"path": "answer.txt", "content": content})])

    return policy


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


def _project(root: Path, **profiles: str | None) -> Path:
    for pid, text in profiles.items():
        write_profile(root / ".openagents/trainer/profiles" / f"{pid}.toml",
                      AgentProfile(id=pid, system_prompt_append=text))  # fmt: skip
    return root


def _plan(root: Path, suite: Path, profiles: list[str], *, k: int = 3, budget: int | None = None,
          extra: str = "") -> Path:  # fmt: skip
    lines = [f'suite = "{suite}"', 'model = "ollama:agent"', f"profiles = {json.dumps(profiles)}",
             f"trials_per_task = {k}", "seed = 1", extra]  # fmt: skip
    if budget is not None:
        lines += ["[budget]", f"trials = {budget}"]
    path = root / "plan.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def train(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from tbench.cli.app import main; main()", "train", *args],
        capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def _run(fake: FakeOllama, plan: Path, out: Path, root: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return train("run", str(plan), "--output", str(out), "--project-root", str(root), "--ollama-endpoint", fake.url,
                 "--model-option", "retries=0", *extra)  # fmt: skip


def _result(out: Path) -> dict[str, Any]:
    return dict(json.loads((out / "trainer.json").read_text()))


def _committed(out: Path) -> list[Path]:
    return sorted(out.glob("arms/*/iterations/*/*/result.json"))


def test_helping_world_the_better_profile_wins_and_racing_stops_the_worse(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", agent(1, lambda word, system: 0.9 if RULE in system else 0.2))
    root = _project(tmp_path, rule=RULE)
    plan = _plan(root, _suite(tmp_path / "words.json", 12), ["baseline", "rule"], k=4, budget=96)
    proc = _run(fake, plan, tmp_path / "out", root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = _result(tmp_path / "out")
    assert result["verdict"]["winner"] == "rule"
    low, _ = result["verdict"]["interval"]
    assert low > 0 and result["verdict"]["p_value"] < result["verdict"]["alpha"]
    dropped = [d for d in result["racing"] if d["action"] == "dropped"]
    assert [d["profile"] for d in dropped] == ["baseline"] and dropped[0]["round"] < 4
    assert result["spent"]["trials"] < 96  # racing stopped before the budget and before k rounds
    assert len(_committed(tmp_path / "out")) == result["spent"]["trials"]
    # the profile reached the model: the rule arm's requests carry the rule, the baseline's never do
    systems = [c["messages"][0]["content"] for c in fake.chats("agent")]
    with_rule = sum(RULE in s for s in systems)
    assert 0 < with_rule < len(systems)
    episodes = (tmp_path / "out/episodes.jsonl").read_text().splitlines()
    assert len(episodes) == result["spent"]["trials"]
    assert all((tmp_path / "out" / json.loads(e)["trial_dir"] / "result.json").is_file() for e in episodes)
    report = (tmp_path / "out/report.md").read_text()
    assert "rule is better than baseline" in report
    # nothing applied until promote; then --profile finds it
    promoted = train("promote", str(tmp_path / "out"), "--project-root", str(root), "--as", "tuned")
    assert promoted.returncode == 0, promoted.stderr
    assert RULE in (root / ".openagents/trainer/profiles/tuned.toml").read_text()
    assert _result(tmp_path / "out")["promoted"] == "tuned"


def test_hurting_world_the_harmful_profile_is_dropped_and_baseline_wins(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", agent(2, lambda word, system: 0.1 if HARM in system else 0.85))
    root = _project(tmp_path, harm=HARM)
    plan = _plan(root, _suite(tmp_path / "words.json", 12), ["baseline", "harm"], k=3)
    proc = _run(fake, plan, tmp_path / "out", root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = _result(tmp_path / "out")
    assert result["verdict"]["winner"] == "baseline"
    assert [d["profile"] for d in result["racing"] if d["action"] == "dropped"] == ["harm"]
    (harm,) = [p for p in result["profiles"] if p["id"] == "harm"]
    assert harm["stopped_at_round"] is not None and harm["pass_rate"] < 0.5


def test_null_world_claims_a_winner_in_at_most_one_of_20_seeds(fake: FakeOllama, tmp_path: Path) -> None:
    """Two profiles the model cannot tell apart, tasks of every difficulty; 20 seeds, racing on (k = 2). The
    rule's false-positive rate itself is measured over many more seeds in test_trainer_racing.py."""
    from rich.console import Console

    from tbench.models.model_settings import ChatOptions, ModelSettings
    from tbench.trainer.service import Trainer, TrainOptions

    root = _project(tmp_path, calm=NEUTRAL)
    suite = _suite(tmp_path / "words.json", 10)
    chances = dict(zip(WORDS, [0.0, 1.0, 0.5, 0.3, 0.7, 0.5, 0.9, 0.1, 0.5, 0.6], strict=False))
    winners = []
    settings = ModelSettings(ollama_endpoint=fake.url, options=ChatOptions(retries=0))
    for seed in range(20):
        fake.add_model("agent", agent(100 + seed, lambda word, system: chances[word]))
        plan = _plan(root, suite, ["baseline", "calm"], k=2)
        opts = TrainOptions(plan=plan, output=tmp_path / f"out-{seed}", project_root=root, models=settings)
        trainer = Trainer.create(opts, lambda line: None, Console(file=open(os.devnull, "w")))  # noqa: SIM115
        result = trainer.run()
        assert result.status == "completed" and result.spent.trials == 40
        winners.append(result.verdict.winner if result.verdict else None)
    print(f"\ntrainer null world: {sum(w is not None for w in winners)} winner(s) in 20 seeds: {winners}")
    assert sum(w is not None for w in winners) <= 1, winners
    # ... and it destroyed nothing: the project's profiles are as they were (nothing is applied without promote)
    assert sorted(p.name for p in (root / ".openagents/trainer/profiles").iterdir()) == ["calm.toml"]
    assert "Take a breath" in (root / ".openagents/trainer/profiles/calm.toml").read_text()


def test_budget_in_trials_is_honoured(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", agent(3, lambda word, system: 0.5))
    root = _project(tmp_path, calm=NEUTRAL)
    plan = _plan(root, _suite(tmp_path / "words.json", 8), ["baseline", "calm"], k=5, budget=40)
    proc = _run(fake, plan, tmp_path / "out", root)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = _result(tmp_path / "out")
    assert result["status"] == "budget_exhausted" and "budget" in result["stop_reason"]
    assert result["spent"]["trials"] == 32 <= 40  # two rounds of 16; a third would pass the budget
    assert result["rounds_done"] == 2 and result["verdict"] is not None


def test_kill_9_then_resume_loses_nothing_and_runs_nothing_twice(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", agent(4, lambda word, system: 0.5))
    root = _project(tmp_path, calm=NEUTRAL)
    plan = _plan(root, _suite(tmp_path / "words.json", 8), ["baseline", "calm"], k=3, extra="workers = 2")
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "from tbench.cli.app import main; main()", "train", "run", str(plan),
           "--output", str(out), "--project-root", str(root), "--ollama-endpoint", fake.url,
           "--model-option", "retries=0"]  # fmt: skip
    rng = random.Random(7)
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 60
    while not _committed(out) and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(rng.uniform(0.2, 1.5))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = {p.parent.relative_to(out).as_posix() for p in _committed(out)}
    resumed = train("run", "--resume", str(out), "--ollama-endpoint", fake.url, "--model-option", "retries=0")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    result = _result(out)
    after = [p.parent.relative_to(out).as_posix() for p in _committed(out)]
    assert before <= set(after)  # nothing committed before the kill was lost (or run again: same folders)
    assert len(after) == len(set(after)) == result["spent"]["trials"] == 48
    ids = [json.loads(line)["id"] for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) == 48
    assert result["status"] == "completed" and result["rounds_done"] == 3


def test_bad_input_is_one_line_exit_2_and_writes_nothing(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", agent(0, lambda word, system: 0.5))
    root = _project(tmp_path, calm=NEUTRAL)
    suite = _suite(tmp_path / "words.json", 6)
    out = tmp_path / "out"

    def refused(plan: Path, *want: str) -> None:
        proc = _run(fake, plan, out, root)
        assert proc.returncode == 2, proc.stdout + proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and all(w in lines[0] for w in want), proc.stderr
        assert "Traceback" not in proc.stderr and not out.exists()

    refused(_plan(root, suite, ["baseline", "nosuch"]), "unknown profile 'nosuch'", "calm")
    refused(_plan(root, suite, ["baseline", "calm"], budget=5), "budget.trials", "6 tasks x 2 profiles = 12")
    refused(_plan(root, suite, ["baseline", "calm"], extra="colour = 3"), "plan.toml", "colour")
    (root / ".openagents/trainer/profiles/bad.toml").write_text('id = "bad"\ntemprature = 0.2\n')
    refused(_plan(root, suite, ["baseline", "bad"]), "bad.toml", "temprature")
    (root / ".openagents/trainer/profiles/bad.toml").write_text('id = "bad"\nmax_turns = "many"\n')
    refused(_plan(root, suite, ["baseline", "bad"]), "bad.toml", "max_turns")
    refused(_plan(root, suite, ["baseline"]), "at least two profiles")
    proc = _run(fake, _plan(root, suite, ["baseline", "calm"]), out, root, "--reflect-model", "ollama:agent")
    assert proc.returncode == 2 and "--reflect-model: only for plans with strategy = 'evolve'" in proc.stderr
    assert not out.exists()
    down = train("run", str(_plan(root, suite, ["baseline", "calm"])), "--output", str(out), "--project-root",
                 str(root), "--ollama-endpoint", "http://127.0.0.1:9")  # fmt: skip
    assert down.returncode == 2 and "cannot reach the Ollama server" in down.stderr and not out.exists()
    proc = train("run", str(tmp_path / "nope.toml"), "--output", str(out))
    assert proc.returncode == 2 and "no such plan file" in proc.stderr and not out.exists()


def test_resume_refuses_a_changed_plan_and_promote_refuses_no_winner(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", agent(5, lambda word, system: 0.5))
    root = _project(tmp_path, calm=NEUTRAL)
    plan = _plan(root, _suite(tmp_path / "words.json", 6), ["baseline", "calm"], k=1)
    out = tmp_path / "out"
    assert _run(fake, plan, out, root).returncode == 0
    assert _result(out)["verdict"]["winner"] is None  # 6 tasks, k = 1: the exact test cannot reach alpha
    proc = train("promote", str(out), "--project-root", str(root))
    assert proc.returncode == 2 and "nothing to promote" in proc.stderr
    plan.write_text(plan.read_text().replace("trials_per_task = 1", "trials_per_task = 2"))
    proc = train("run", str(plan), "--resume", str(out), "--ollama-endpoint", fake.url)
    assert proc.returncode == 2 and "differs from the plan" in proc.stderr
    status = train("status", str(out))
    assert status.returncode == 0 and "no difference shown" in status.stdout
