"""Evolution (`strategy = "evolve"`, trainer/evolution.py) in scripted worlds: a model on a real Ollama-protocol
socket whose agent solves a task only when a rule is in its system prompt, a reflection model that proposes text
after seeing trials, host workspaces (a JSON suite verified by a shell command).

- Planted effect: from a weak seed, gepa finds the rule; the candidate passes the held-out confirmation.
- Null world: no prompt changes anything; nothing is proposed.
- Harmful rule: the child does worse on the minibatch, is rejected, and is not proposed.
- Leakage: what the reflection model receives carries none of the tests' or solutions' text.
- kill -9 at a random moment, then resume: no trial of a candidate on a task runs twice.
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
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tbench.errors import UserError
from tbench.models.model_settings import ChatOptions, ModelSettings
from tbench.trainer.evolution import Evolver, open_training
from tbench.trainer.readout import load_result
from tbench.trainer.schema import TrainerResult, load_profile
from tbench.trainer.service import TrainOptions
from tests.fake_ollama import FakeOllama, Reply

WORDS = ["amber", "basil", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper", "kelp",
         "lumen"]  # fmt: skip
RULE = "Write only the requested word into the file, with nothing else."
HARM = "After the word, add a short explanation of it in the same file."
SECRET = "checksum phrase zebra quartz 4417"
"""Printed by every task's verification when it fails: test text the reflection model must never see."""


def _suite(path: Path, n: int = 12) -> Path:
    tasks = [
        {
            "id": f"word-{i:02d}",
            "name": f"Write {w}",
            "description": f"Write the word {w} into the file answer.txt.",
            "solution": f"printf '%s\\n' {w} > answer.txt",
            "verification": {
                "type": "custom",
                "script": f'test "$(cat answer.txt)" = "{w}" || {{ echo "{SECRET} for {w}"; exit 1; }}',
            },
        }
        for i, w in enumerate(WORDS[:n])
    ]
    path.write_text(json.dumps({"name": "words", "version": "1", "tasks": tasks}))
    return path


def _agent(decide: Any) -> Any:
    """Writes answer.txt once — right or wrong as `decide(word, system_prompt)` says — then stops."""

    def policy(body: dict[str, Any], n: int) -> Reply:
        messages = body["messages"]
        user = next((m["content"] for m in messages if m["role"] == "user"), "")
        m = re.search(r"Write the word (\w+) into", user)
        if m is None or any(x["role"] == "tool" for x in messages):
            return Reply(content="Done.")
        word = m.group(1)
        content = word + "\n" if decide(word, messages[0]["content"]) else f"{word} is the word\n"
        return Reply(tool_calls=[("write_file", {"path": "answer.txt", "content": content})])

    return policy


def _reflector(text: str | None) -> Any:
    """After seeing a failing trial, proposes `text` (None: proposes nothing new)."""

    def policy(body: dict[str, Any], n: int) -> Reply:
        prompt = body["messages"][-1]["content"]
        if text is None or "verdict: fail" not in prompt:
            return Reply(content="I have nothing to add.")
        return Reply(content=f"Here is the new text:\n```\n{text}\n```")

    return policy


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


def _project(tmp_path: Path, **plan: Any) -> Path:
    """A project with the weak seed profile and an evolve plan; returns the plan file."""
    profiles = tmp_path / ".openagents/trainer/profiles"
    profiles.mkdir(parents=True)
    # the project's held-out split with a fixed salt (a project draws one at random): the same train, validation
    # and held-out tasks on every run of these tests
    memory = tmp_path / ".openagents/memory"
    memory.mkdir(parents=True)
    (memory / "holdout.json").write_text(json.dumps({"schema_version": 1, "salt": "5eed5eed", "suites": {}}))
    (profiles / "weak.toml").write_text('id = "weak"\nsystem_prompt_append = "Be quick."\n')
    suite = _suite(tmp_path / "words.json", int(plan.pop("n", 12)))
    fields = {"suite": str(suite), "model": "ollama:agent", "profiles": ["weak"], "strategy": "evolve",
              "trials_per_task": 1, "seed": 3, **plan}  # fmt: skip
    lines = [f"{k} = {json.dumps(v)}" for k, v in fields.items() if not isinstance(v, dict)]
    for table, values in ((k, v) for k, v in fields.items() if isinstance(v, dict)):
        lines += [f"[{table}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    path = tmp_path / "plan.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


PLAN: dict[str, Any] = {
    "split": {"holdout": 0.5, "validation": 0.5},
    "evolve": {"reflect_model": "ollama:reflector", "minibatch": 3, "max_candidates": 3},
    "budget": {"trials": 60},
}


def _settings(fake: FakeOllama) -> ModelSettings:
    return ModelSettings(ollama_endpoint=fake.url, options=ChatOptions(retries=0))


def _evolve(fake: FakeOllama, tmp_path: Path, **plan: Any) -> tuple[TrainerResult, Path]:
    plan_file = _project(tmp_path, **{**PLAN, **plan})
    out = tmp_path / "train"
    opts = TrainOptions(plan=plan_file, output=out, project_root=tmp_path, models=_settings(fake))
    evolver = open_training(opts, lambda line: None)
    assert isinstance(evolver, Evolver)
    return evolver.run(), out


def _reflection_prompts(fake: FakeOllama) -> list[str]:
    return [body["messages"][-1]["content"] for body in fake.chats("reflector")]


def test_planted_rule_is_found_and_confirmed_on_held_out_tasks(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", _agent(lambda word, system: RULE in system))
    fake.add_model("reflector", _reflector(RULE))
    result, out = _evolve(fake, tmp_path)
    tree = result.evolution
    assert tree is not None and result.status == "completed", result.stop_reason
    assert len(result.holdout_tasks) == 6 and len(result.train_tasks) == 3 and len(result.validation_tasks) == 3
    assert set(result.holdout_tasks).isdisjoint(result.train_tasks + result.validation_tasks)
    seed, child = tree.candidates[0], tree.candidates[1]
    assert seed.id == "weak" and seed.validation_rate == 0.0
    assert child.accepted and child.parent == "weak" and child.profile.system_prompt_append == RULE
    assert child.parent_score == 0.0 and child.score == 3.0 and child.validation_rate == 1.0
    assert tree.best == child.id and tree.confirmed and tree.proposed == child.id
    assert tree.confirmation is not None and tree.confirmation.comparison.verdict == "improved"
    assert result.verdict is not None and result.verdict.winner == child.id
    written = load_profile(out / "profiles" / f"{child.id}.toml")
    assert written.source == "trainer" and written.parent == "weak" and written.system_prompt_append == RULE
    assert not (tmp_path / f".openagents/trainer/profiles/{child.id}.toml").exists()  # promote's job, not ours
    assert tree.reflection_calls >= 1 and (out / "reflections.jsonl").is_file()
    assert result.budget.trials is not None and result.spent.trials <= result.budget.trials
    arms = {p.id: p for p in result.profiles}
    assert arms["weak"].pass_rate == 0.0 and arms[child.id].pass_rate == 1.0


def test_no_prompt_helps_nothing_is_proposed(fake: FakeOllama, tmp_path: Path) -> None:
    rng = random.Random(5)

    def decide(word: str, system: str) -> bool:  # the prompt plays no part: always, never, or a coin
        kind = WORDS.index(word) % 3
        return kind == 0 or (kind == 2 and rng.random() < 0.5)

    fake.add_model("agent", _agent(decide))
    fake.add_model("reflector", _reflector(RULE))
    result, _ = _evolve(fake, tmp_path)
    tree = result.evolution
    assert tree is not None and result.status == "completed"
    assert len(tree.candidates) > 1  # proposals were made and judged ...
    assert not tree.confirmed and tree.proposed is None  # ... and none is proposed
    assert result.verdict is not None and result.verdict.winner is None


def test_a_harmful_rule_is_rejected_on_the_minibatch(fake: FakeOllama, tmp_path: Path) -> None:
    failing: set[str] = set()  # one training task fails without the rule, so the seed's minibatch is not perfect
    fake.add_model("agent", _agent(lambda word, system: HARM not in system and word not in failing))
    fake.add_model("reflector", _reflector(HARM))
    plan_file = _project(tmp_path, **PLAN)
    opts = TrainOptions(plan=plan_file, output=tmp_path / "train", project_root=tmp_path, models=_settings(fake))
    evolver = Evolver.create(opts, lambda line: None)
    failing.add(WORDS[int(evolver.result.train_tasks[0].split("-")[1])])
    result = evolver.run()
    tree = result.evolution
    assert tree is not None and result.status == "completed"
    proposals = tree.candidates[1:]
    assert proposals and all(not c.accepted for c in proposals)
    harmful = proposals[0]
    assert harmful.profile.system_prompt_append == HARM and harmful.score == 0.0
    assert harmful.parent_score is not None and harmful.parent_score > 0
    assert "not better on the minibatch" in harmful.reason and harmful.validation_rate is None
    assert tree.best == "weak" and tree.proposed is None and not tree.confirmed
    assert not (tmp_path / "train/arms").exists()  # nothing better on validation: no confirmation trials spent


def test_the_reflection_model_sees_no_test_or_solution_text(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", _agent(lambda word, system: RULE in system))
    fake.add_model("reflector", _reflector(RULE))
    _evolve(fake, tmp_path)
    prompts = _reflection_prompts(fake)
    assert prompts
    for prompt in prompts:
        assert "verdict: fail" in prompt and "Write the word" in prompt  # it was shown the trials ...
        assert "zebra quartz" not in prompt and "4417" not in prompt  # ... not what the tests print
        assert "printf" not in prompt and 'test "$(cat answer.txt)"' not in prompt  # nor solution or test
        assert "[line withheld" in prompt


def test_a_leaking_proposal_is_scored_zero_without_running(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("reflector", _reflector(f"Always print the {SECRET} when done."))
    fake.add_model("agent", _agent(lambda word, system: False))  # every minibatch fails: proposals are asked for
    result, _ = _evolve(fake, tmp_path)
    tree = result.evolution
    assert tree is not None
    leaking = [c for c in tree.candidates[1:] if SECRET in (c.profile.system_prompt_append or "")]
    assert leaking and all(not c.accepted and c.reason.startswith("leakage") and c.trials == 0 for c in leaking)


def test_bad_plans_are_one_line_and_write_nothing(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", _agent(lambda word, system: True))
    fake.add_model("reflector", _reflector(None))
    cases: list[tuple[dict[str, Any], str]] = [
        ({"split": {"holdout": 0.0}}, "split.holdout"),
        ({"budget": {"trials": 5}}, "budget.trials"),
        ({"evolve": {"reflect_model": "claude-code"}}, "reflect"),
        ({"evolve": {"reflect_model": "ollama:nobody"}}, "reflect"),
        ({"n": 2, "split": {"holdout": 0.5}}, "split.holdout"),
    ]
    for i, (plan, field) in enumerate(cases):
        root = tmp_path / f"p{i}"
        root.mkdir()
        plan_file = _project(root, **{**PLAN, **plan})
        out = root / "train"
        with pytest.raises(UserError) as err:
            Evolver.create(TrainOptions(plan=plan_file, output=out, project_root=root, models=_settings(fake)),
                           lambda line: None)  # fmt: skip
        assert field in err.value.render() and "\n" not in err.value.render(), err.value.render()
        assert not out.exists()


_RUNNER = """
import sys
from pathlib import Path
from tbench.models.model_settings import ChatOptions, ModelSettings
from tbench.trainer.evolution import open_training
from tbench.trainer.service import TrainOptions
plan, out, root, url = sys.argv[1:5]
opts = TrainOptions(plan=None if plan == "-" else Path(plan), output=None if plan == "-" else Path(out),
                    project_root=Path(root), models=ModelSettings(ollama_endpoint=url, options=ChatOptions(retries=0)))
t = open_training(opts, print, resume=Path(out) if plan == "-" else None)
print("STATUS", t.run().status)
"""


def _spawn(plan: str, out: Path, root: Path, fake: FakeOllama) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"), os.environ.get(
        "PYTHONPATH", "")])}  # fmt: skip
    return subprocess.Popen([sys.executable, "-c", _RUNNER, plan, str(out), str(root), fake.url],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=root)  # fmt: skip


def test_kill_and_resume_runs_no_trial_twice(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", _agent(lambda word, system: RULE in system))
    fake.add_model("reflector", _reflector(RULE))
    plan_file = _project(tmp_path, **PLAN)
    out = tmp_path / "train"
    proc = _spawn(str(plan_file), out, tmp_path, fake)
    deadline = time.monotonic() + 60
    while not (out / "trainer.json").is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    moment = random.Random().uniform(0.2, 3.0)  # a random moment after the folder exists
    time.sleep(moment)
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    first, _ = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, first  # it was killed mid-run, not finished
    print(f"killed {moment:.2f}s after trainer.json appeared; {len(list(out.glob('evals/*/iterations')))} evals")
    resumed = _spawn("-", out, tmp_path, fake)
    text, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "STATUS completed" in text, text
    result = load_result(out)
    assert result.evolution is not None and result.evolution.confirmed
    files = sorted(out.glob("**/trials/*/result.json")) or sorted(out.glob("**/result.json"))
    trials = [json.loads(p.read_text()) for p in files if "iterations" in p.parts]
    index = json.loads((out / "evals/index.json").read_text())["entries"]
    digest = {e["folder"].split("/")[1]: e["digest"] for e in index}
    ids = Counter(t["trial_id"] for t in trials)
    assert trials and max(ids.values()) == 1  # one result file per trial
    runs = Counter(
        (digest.get(p.relative_to(out).parts[1], p.relative_to(out).parts[1]), json.loads(p.read_text())["task_id"],
         json.loads(p.read_text())["iteration"], p.relative_to(out).parts[0])
        for p in files if "iterations" in p.parts
    )  # fmt: skip
    assert max(runs.values()) == 1, [k for k, v in runs.items() if v > 1]  # no candidate ran a task twice
    assert result.spent.trials == len(trials)


def test_reflect_model_flag_overrides_the_plan_and_a_resume_keeps_it(fake: FakeOllama, tmp_path: Path) -> None:
    fake.add_model("agent", _agent(lambda word, system: False))
    fake.add_model("reflector", _reflector(RULE))
    plan_file = _project(tmp_path, **{**PLAN, "evolve": {**PLAN["evolve"], "reflect_model": "ollama:nobody"}})
    out = tmp_path / "train"
    opts = TrainOptions(plan=plan_file, output=out, project_root=tmp_path, models=_settings(fake),
                        reflect_model="ollama:reflector")  # fmt: skip
    evolver = Evolver.create(opts, lambda line: None)  # "nobody" is not served: the flag's model is the one used
    assert evolver.result.plan.evolve.reflect_model == "ollama:reflector"
    with pytest.raises(UserError, match="reflect_model: differs from this training's ollama:reflector"):
        Evolver.resume(out, TrainOptions(models=_settings(fake), reflect_model="ollama:agent"), lambda line: None)
