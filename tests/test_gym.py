"""Command-verified task folders (gyms) and the GymEnvironment registry (trainer/gym.py)."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from tbench.bench.formats import inspect_suite, load_suite
from tbench.errors import UserError
from tbench.trainer.gym import WIDTH, default_paths, describe, environment_kind, envs_text
from tests.conftest import EXAMPLES, run_cli

GYM = EXAMPLES / "command-gym"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def gym(root: Path, toml: str = 'kind = "command"\nverify = "test -f done.txt"\n') -> Path:
    write(root / "gym.toml", toml)
    return root


def task(root: Path, name: str, *, instruction: str = "Create done.txt.", toml: str | None = None) -> Path:
    folder = root / name
    write(folder / "instruction.md", instruction)
    write(folder / "solution.sh", "touch done.txt\n")
    if toml is not None:
        write(folder / "task.toml", toml)
    return folder


def trial_statuses(out: Path) -> dict[str, str]:
    results = sorted(out.glob("iterations/*/*/result.json"))
    return {(d := json.loads(p.read_text()))["task_id"]: d["status"] for p in results}


def test_gym_tasks_read_every_field(tmp_path: Path) -> None:
    root = gym(tmp_path / "g", 'kind = "command"\nname = "mine"\nverify = "python3 check.py"\ntimeout_sec = 30\n')
    a = task(root, "a", toml='category = "maths"\nagent_timeout_sec = 90\nverify = "test -s out.txt"\n')
    write(a / "files" / "in.txt", "1 2 3\n")
    b = task(root, "b")
    write(b / "check.py", "raise SystemExit(0)\n")
    (b / "solution.sh").unlink()
    suite = load_suite(root)
    assert suite.name == "mine" and [t.id for t in suite.tasks] == ["a", "b"]
    ta, tb = suite.tasks
    assert ta.format == "command" and ta.environment.kind == "local"
    assert ta.category == "maths" and tb.category == "uncategorized"
    assert ta.agent_timeout_sec == 90 and tb.agent_timeout_sec is None
    assert ta.verifier.command == "test -s out.txt" and tb.verifier.command == "python3 check.py"
    assert ta.verifier.seed is not None and ta.verifier.seed.type == "custom"
    assert ta.verifier.timeout_sec == 30
    assert ta.verifier.env["TASK_DIR"] == str(a.resolve()) and ta.verifier.env["GYM_DIR"] == str(root.resolve())
    assert len(ta.setup) == 1 and str((a / "files").resolve()) in ta.setup[0] and tb.setup == []
    assert [c.dest for c in tb.verifier.copies] == ["check.py"] and ta.verifier.copies == []
    assert ta.solution is not None and [c.src.name for c in ta.solution.copies] == ["solution.sh"]
    assert tb.solution is None


def test_broken_tasks_are_named_together_and_skippable(tmp_path: Path) -> None:
    root = gym(tmp_path / "g")
    task(root, "good")
    (root / "no-instruction").mkdir()
    task(root, "typo", toml='verfy = "true"\n')
    task(root, "_shared")  # not a task: a place for shared check code
    with pytest.raises(UserError) as err:
        load_suite(root)
    line = str(err.value)
    assert "\n" not in line and "2 invalid task(s)" in line and "--skip-invalid to run the other 1" in line
    assert "no-instruction: no-instruction/instruction.md: missing instruction file" in line
    assert "typo: typo/task.toml: verfy: Extra inputs are not permitted" in line
    suite = load_suite(root, skip_invalid=True)
    assert [t.id for t in suite.tasks] == ["good"]
    assert [s.id for s in suite.skipped] == ["no-instruction", "typo"]
    assert [t.id for t in load_suite(root, ["good"]).tasks] == ["good"]  # an unselected broken task never stops it


def test_a_task_without_any_verify_command_is_invalid(tmp_path: Path) -> None:
    root = gym(tmp_path / "g", 'kind = "command"\n')
    task(root, "checked", toml='verify = "true"\n')
    task(root, "unchecked")
    _, invalid = inspect_suite(root)
    assert [(s.id, "no verify command" in s.reason) for s in invalid] == [("unchecked", True)]


def test_bad_gym_toml_key_is_one_line_naming_file_and_field(tmp_path: Path) -> None:
    root = gym(tmp_path / "g", 'kind = "command"\nverify = "true"\ntimout_sec = 5\n')
    task(root, "a")
    with pytest.raises(UserError) as err:
        load_suite(root)
    assert err.value.field == "timout_sec" and Path(str(err.value.path)).name == "gym.toml"
    proc = run_cli("--suite", str(root), "--model", "oracle", "--iterations", "1", "--output", str(tmp_path / "o"))
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert "gym.toml" in line and "timout_sec" in line
    assert not (tmp_path / "o").exists()


def test_wrong_kind_in_gym_toml(tmp_path: Path) -> None:
    root = gym(tmp_path / "g", 'kind = "docker"\nverify = "true"\n')
    task(root, "a")
    with pytest.raises(UserError, match="kind") as err:
        load_suite(root)
    assert "'command'" in str(err.value)


def test_non_ascii_task_names_load_and_run(tmp_path: Path) -> None:
    """A folder written in NFD (as macOS does) is the NFC id; a path with spaces and umlauts survives the
    setup, solution and verify commands."""
    root = gym(tmp_path / "Übungs gym", 'kind = "command"\nverify = "grep -qx Grüße done.txt"\n')
    nfd = unicodedata.normalize("NFD", "zählen-ü")
    folder = task(root, nfd, instruction="Schreibe Grüße nach done.txt.", toml='name = "Wörter zählen"\n')
    write(folder / "solution.sh", "cat seed.txt > done.txt\n")
    write(folder / "files" / "seed.txt", "Grüße\n")
    (suite_task,) = load_suite(root).tasks
    assert suite_task.id == "zählen-ü" and suite_task.name == "Wörter zählen"
    assert [t.id for t in load_suite(root, ["Wörter*"]).tasks] == ["zählen-ü"]
    out = tmp_path / "out"
    proc = run_cli("--suite", str(root), "--model", "oracle", "--iterations", "1", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert trial_statuses(out) == {"zählen-ü": "pass"}


def test_one_task_folder_of_a_gym_loads_on_its_own() -> None:
    suite = load_suite(GYM / "fix-fizzbuzz")
    assert [t.id for t in suite.tasks] == ["fix-fizzbuzz"] and suite.tasks[0].format == "command"
    assert environment_kind(GYM / "fix-fizzbuzz").kind == "command"
    assert environment_kind(GYM / "fix-fizzbuzz" / "task.toml").kind == "command"


def test_bundled_gym_oracle_passes_and_nop_fails(tmp_path: Path) -> None:
    """The reference solutions pass, and the untouched workspace fails: every verify really checks."""
    for model, expected in (("oracle", "pass"), ("nop", "fail")):
        out = tmp_path / model
        proc = run_cli(
            "--suite", str(GYM), "--model", model, "--iterations", "1", "--output", str(out), cwd=tmp_path
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        assert trial_statuses(out) == dict.fromkeys(("count-words", "fix-fizzbuzz", "reverse-lines"), expected)
    workspace = tmp_path / "oracle" / "iterations" / "001" / "fix-fizzbuzz" / "workspace"
    assert not (workspace / ".tbench-solution.sh").exists()  # the oracle's copy of the solution is cleaned up


def test_environment_kind_of_each_bundled_example() -> None:
    kinds = {p.name: environment_kind(p).kind for p in default_paths()}
    assert kinds == {
        "command-gym": "command",
        "learnable-suite.json": "seed-json",
        "local-suite.json": "seed-json",
        "tb1": "tb1",
        "tb2": "tb2",
    }
    assert environment_kind(EXAMPLES / "tb2" / "hello-world").kind == "tb2"
    assert environment_kind(EXAMPLES / "tb1" / "word-count" / "task.yaml").kind == "tb1"


def test_describe_counts_tasks_categories_and_invalid(tmp_path: Path) -> None:
    info = describe(GYM)
    assert (info.kind, info.name, info.tasks) == ("command", "command-gym", 3)
    assert info.categories == {"file-operations": 1, "software-engineering": 1, "text-processing": 1}
    assert info.runs_on == ["host"] and info.invalid == []
    root = gym(tmp_path / "g")
    (root / "empty").mkdir()
    broken = describe(root)  # every task invalid: still described, not refused
    assert broken.tasks == 0 and [s.id for s in broken.invalid] == ["empty"]
    assert describe(EXAMPLES / "tb2").runs_on == ["containers"]


def test_envs_text_lists_kinds_and_every_bundled_example() -> None:
    text = envs_text([])
    assert all(len(line) <= WIDTH for line in text.splitlines() if not line.startswith("/")), text
    for kind in ("tb2", "tb1", "seed-json", "command"):
        assert f"\n  {kind} " in text
    blocks = {b.splitlines()[0]: b for b in text.split("\n\n")[1:]}
    expect = {"command-gym": "command", "learnable-suite.json": "seed-json", "tb1": "tb1", "tb2": "tb2"}
    for name, kind in expect.items():
        (block,) = [b for head, b in blocks.items() if head.endswith("/" + name)]
        assert f"kind {kind} · " in block, block
    assert "tasks: count-words, fix-fizzbuzz, reverse-lines" in blocks[str(GYM)]


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: p / "missing", "does not exist"),
        (lambda p: write(p / "README.md", "hi"), "not a suite: give a folder"),
        (lambda p: write(p / "data.json", '{"rows": []}'), 'a JSON suite is an object with a "tasks" list'),
        (lambda p: (p / "empty").mkdir() or p / "empty", "not a suite: no gym.toml"),
    ],
)
def test_envs_text_bad_path_is_one_line(tmp_path: Path, make: object, says: str) -> None:
    path = make(tmp_path)  # type: ignore[operator]
    with pytest.raises(UserError) as err:
        envs_text([GYM, path])
    assert says in str(err.value) and "\n" not in str(err.value)
    assert str(path) in str(err.value)


def test_envs_text_shows_a_gym_that_cannot_load(tmp_path: Path) -> None:
    root = gym(tmp_path / "g", 'kind = "command"\nverify = 3\n')
    task(root, "a")
    text = envs_text([root])
    block = " ".join(text.split("\n\n")[1].split())
    assert block.startswith(f"{root} kind command · cannot be loaded: {root / 'gym.toml'}: verify: "), block
