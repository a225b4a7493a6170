"""Loading and validating the three task formats."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tbench.bench.formats import load_suite, select_tasks
from tbench.errors import UserError
from tests.conftest import EXAMPLES


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def tb2_task(root: Path, name: str = "t1", toml: str | None = None) -> Path:
    folder = root / name
    write(folder / "task.toml", toml if toml is not None else "[agent]\ntimeout_sec = 30\n")
    write(folder / "instruction.md", "do it")
    write(folder / "environment" / "Dockerfile", "FROM scratch\n")
    write(folder / "tests" / "test.sh", "echo 1 > /logs/verifier/reward.txt\n")
    write(folder / "solution" / "solve.sh", "true\n")
    return folder


def test_bundled_tb2_suite_reads_every_field() -> None:
    suite = load_suite(EXAMPLES / "tb2")
    by_id = {t.id: t for t in suite.tasks}
    assert set(by_id) == {"hello-world", "fix-median", "csv-report"}
    hw = by_id["hello-world"]
    assert hw.format == "tb2"
    assert hw.name == "tbench/hello-world"
    assert hw.agent_timeout_sec == 120.0
    assert hw.verifier.timeout_sec == 60.0
    assert hw.environment.memory_mb == 512
    assert hw.environment.cpus == 1
    assert hw.environment.network_mode == "no-network"
    assert hw.difficulty == "easy" and hw.category == "file-operations"
    assert by_id["fix-median"].environment.memory_mb == 1024  # memory = "1G"
    assert hw.solution is not None and hw.solution.command == "bash /solution/solve.sh"
    assert [c.dest for c in hw.verifier.copies] == ["/tests"]


def test_tb1_task_reads_yaml_and_compose() -> None:
    suite = load_suite(EXAMPLES / "tb1" / "word-count")
    (task,) = suite.tasks
    assert task.format == "tb1"
    assert task.agent_timeout_sec == 120 and task.verifier.timeout_sec == 60
    assert task.verifier.kind == "pytest"
    assert task.verifier.env == {"TEST_DIR": "/tests"}
    assert task.instruction.startswith("Count the words")


def test_seed_suite_and_task_selection() -> None:
    suite = load_suite(EXAMPLES / "local-suite.json")
    assert suite.name == "tbench-local-examples" and suite.version == "1.0.0"
    assert all(t.environment.kind == "local" for t in suite.tasks)
    picked = select_tasks(suite, ["fix-*", "Hello file"])
    assert [t.id for t in picked.tasks] == ["hello-file", "fix-median"]
    with pytest.raises(UserError, match="no task matches"):
        select_tasks(suite, ["nothing-*"])


def test_seed_source_path_runs_as_tb2(tmp_path: Path) -> None:
    tb2_task(tmp_path / "tasks", "real-task")
    suite = {
        "name": "s",
        "version": "1",
        "tasks": [
            {
                "id": "real-task",
                "name": "Real",
                "description": "x",
                "difficulty": "hard",
                "category": "c",
                "verification": {"type": "test", "command": "cd /app && pytest tests/ -v"},
                "timeout_seconds": 900,
                "max_turns": 100,
                "tags": ["a"],
                "source_path": "tasks/real-task",
            }
        ],
    }
    path = write(tmp_path / "suite.json", json.dumps(suite))
    (task,) = load_suite(path).tasks
    assert task.format == "tb2" and task.environment.kind == "docker"
    assert task.max_turns == 100 and task.tags == ["a"]


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[agent\ntimeout_sec = 3", "not valid TOML"),
        ("[agent]\ntimeout_sec = -1\n", "agent.timeout_sec"),
        ("[verifier]\ntimeout_sec = 'soon'\n", "verifier.timeout_sec"),
        ("[environment]\nnetwork_mode = 'sometimes'\n", "environment.network_mode"),
        ("[environment]\nmemory = 'lots'\n", "environment.memory"),
    ],
)
def test_malformed_task_toml_names_file_and_field(tmp_path: Path, toml: str, needle: str) -> None:
    folder = tb2_task(tmp_path, toml=toml)
    with pytest.raises(UserError) as err:
        load_suite(folder)
    assert str(folder / "task.toml") in str(err.value)
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_missing_instruction_and_tests(tmp_path: Path) -> None:
    folder = tb2_task(tmp_path)
    (folder / "instruction.md").unlink()
    with pytest.raises(UserError, match="missing instruction"):
        load_suite(folder)
    folder = tb2_task(tmp_path, "t2")
    (folder / "tests" / "test.sh").unlink()
    with pytest.raises(UserError, match=r"tests/test\.sh"):
        load_suite(folder)


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("instruction: [unclosed", "not valid YAML"),
        ("difficulty: easy\n", "instruction"),
        ("instruction: x\nmax_agent_timeout_sec: zero\n", "max_agent_timeout_sec"),
        ("instruction: x\nparser_name: swebench\n", "parser_name"),
    ],
)
def test_malformed_task_yaml(tmp_path: Path, yaml_text: str, needle: str) -> None:
    folder = tmp_path / "t"
    write(folder / "task.yaml", yaml_text)
    write(folder / "Dockerfile", "FROM scratch\n")
    write(folder / "run-tests.sh", "true\n")
    with pytest.raises(UserError) as err:
        load_suite(folder)
    assert needle in str(err.value) and "task.yaml" in str(err.value)


def test_tb1_compose_sidecars_are_read_in_start_order(tmp_path: Path) -> None:
    folder = tmp_path / "t"
    write(folder / "task.yaml", "instruction: x\n")
    write(folder / "Dockerfile", "FROM scratch\n")
    write(folder / "run-tests.sh", "true\n")
    write(
        folder / "docker-compose.yaml",
        "services:\n  client: {build: ., environment: [A=1]}\n  web: {image: nginx, depends_on: [db]}\n"
        "  db: {image: postgres, environment: {POSTGRES_PASSWORD: x}, volumes: ['data:/var/lib/postgresql'],"
        " healthcheck: {test: [CMD, pg_isready]}}\n",
    )
    (task,) = load_suite(folder).tasks
    env = task.environment
    assert env.main_service == "client" and env.env == {"A": "1"}
    assert [s.name for s in env.services] == ["db", "web"]  # dependencies first
    assert env.services[0].healthcheck == "pg_isready" and env.services[0].env == {"POSTGRES_PASSWORD": "x"}


@pytest.mark.parametrize(
    ("compose", "needle"),
    [
        ("services:\n  main: {build: .}\n  db: {image: pg, privileged: true}\n", "services.db: uses privileged"),
        ("services:\n  main: {build: .}\n  db: {image: pg, volumes: ['./data:/data']}\n", "bind mounts"),
        ("services:\n  app: {build: .}\n", "needs a main service named 'main'"),
        ("services:\n  main: {build: .}\n  db: {image: pg, depends_on: [cache]}\n", "unknown service 'cache'"),
        ("services:\n  main: {build: ./nowhere}\n", "has no Dockerfile"),
    ],
)
def test_tb2_compose_that_cannot_be_honoured_is_refused_in_one_line(tmp_path: Path, compose: str, needle: str) -> None:
    folder = tmp_path / "t"
    write(folder / "task.toml", "[verifier]\ntimeout_sec = 5\n")
    write(folder / "instruction.md", "x")
    write(folder / "tests" / "test.sh", "true\n")
    write(folder / "environment" / "Dockerfile", "FROM scratch\n")
    write(folder / "environment" / "docker-compose.yaml", compose)
    with pytest.raises(UserError, match=needle) as err:
        load_suite(folder)
    assert "docker-compose.yaml" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("suite", "needle"),
    [
        ('{"name": "s", "tasks": [', "not valid JSON"),
        ('{"name": "s", "tasks": []}', "tasks"),
        (
            '{"name": "s", "tasks": [{"id": "a", "name": "A", "description": "d", '
            '"verification": {"type": "output", "command": "cat x"}}]}',
            "expected",
        ),
        (
            '{"name": "s", "tasks": [{"id": "a", "name": "A", "description": "d", "verification": {"type": "diff"}}]}',
            "tasks.0.verification.type",
        ),
        (
            '{"name": "s", "tasks": [{"id": "a", "name": "A", "description": "d", "timeout_seconds": "long", '
            '"verification": {"type": "test"}}]}',
            "tasks.0.timeout_seconds",
        ),
        ("[1, 2]", "top level"),
    ],
)
def test_malformed_suite_json(tmp_path: Path, suite: str, needle: str) -> None:
    path = write(tmp_path / "suite.json", suite)
    with pytest.raises(UserError) as err:
        load_suite(path)
    assert needle in str(err.value) and str(path) in str(err.value)


@pytest.mark.parametrize("bad_id", ["../../etc", "a/b", ".hidden", "", "x" * 200, "a b"])
def test_task_ids_that_could_escape_are_refused(tmp_path: Path, bad_id: str) -> None:
    suite = {
        "name": "s",
        "tasks": [
            {"id": bad_id, "name": "n", "description": "d", "verification": {"type": "custom", "script": "true"}}
        ],
    }
    path = write(tmp_path / "suite.json", json.dumps(suite))
    with pytest.raises(UserError, match=r"tasks\.0\.id"):
        load_suite(path)


def test_duplicate_ids_and_missing_paths(tmp_path: Path) -> None:
    task = {"id": "a", "name": "n", "description": "d", "verification": {"type": "custom", "script": "true"}}
    path = write(tmp_path / "suite.json", json.dumps({"name": "s", "tasks": [task, task]}))
    with pytest.raises(UserError, match="duplicate task id"):
        load_suite(path)
    with pytest.raises(UserError, match="does not exist"):
        load_suite(tmp_path / "nope")
    with pytest.raises(UserError, match="no tasks found"):
        load_suite(tmp_path)
