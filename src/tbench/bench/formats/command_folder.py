"""Command-verified task folders ("gyms"): a folder with `gym.toml` at its root and one sub-folder per task.

    gym.toml          kind = "command"; name, verify, timeout_sec, ... (GymToml)
    <task>/instruction.md   what the agent is asked (required)
    <task>/files/     copied into the workspace before the agent
    <task>/solution.sh      the oracle's reference solution (optional)
    <task>/task.toml  per-task overrides (TaskOverrides)
    <task>/<other>    verifier files (a check script): copied into the workspace only after the agent

Tasks run in a fresh host workspace, like the seed JSON's; the `verify` command runs there after the agent and
its exit code is the verdict (0 = pass), with `GYM_DIR` and `TASK_DIR` set to the absolute folders. Sub-folders
whose names start with `.` or `_` are not tasks (a place for shared check code)."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tbench.bench.formats._common import check_task_id, read_instruction, read_structured, validate
from tbench.errors import UserError
from tbench.fsutil import nfc
from tbench.models.task import (
    DEFAULT_TEST_TIMEOUT_SEC,
    EnvironmentSpec,
    FileCopy,
    SeedVerification,
    SolutionSpec,
    Suite,
    Task,
    VerifierSpec,
)

GYM_FILE = "gym.toml"
TASK_FILE = "task.toml"
INSTRUCTION_FILE = "instruction.md"
SOLUTION_FILE = "solution.sh"
FILES_DIR = "files"
#: Not verifier files: everything else in a task folder is copied in for the verify command.
RESERVED = frozenset({TASK_FILE, INSTRUCTION_FILE, SOLUTION_FILE, FILES_DIR})
#: Where the oracle's solution is copied in the workspace (and removed again once it has run).
SOLUTION_DEST = ".tbench-solution.sh"

Difficulty = Literal["easy", "medium", "hard", "expert", "unknown"]
Invalid = tuple[str, UserError]


class _Shared(BaseModel):
    """Fields a gym sets for every task and a task may override. Unknown keys are an error: a typo in
    `verify` must not silently leave a task with no check."""

    model_config = ConfigDict(extra="forbid")

    verify: str | None = Field(default=None, min_length=1)
    """Shell command run in the workspace after the agent; exit 0 = pass."""
    timeout_sec: float | None = Field(default=None, gt=0)
    """Time limit of the verify command (default 600 s)."""
    agent_timeout_sec: float | None = Field(default=None, gt=0)
    """The agent's time limit; unset: the run's `--timeout`."""
    max_turns: int | None = Field(default=None, gt=0)
    category: str | None = Field(default=None, min_length=1)
    difficulty: Difficulty | None = None


class GymToml(_Shared):
    kind: Literal["command"]
    name: str | None = Field(default=None, min_length=1)
    version: str = "0"
    description: str = ""


class TaskOverrides(_Shared):
    name: str | None = Field(default=None, min_length=1)
    tags: list[str] = Field(default_factory=list)
    hints: list[str] = Field(default_factory=list)


def is_command_folder(path: Path) -> bool:
    return (path / GYM_FILE).is_file()


def is_gym_task(folder: Path) -> bool:
    """A task folder inside a gym (given on its own, it runs as a one-task gym)."""
    return (
        folder.is_dir()
        and not folder.name.startswith((".", "_"))
        and is_command_folder(folder.parent)
        and not is_command_folder(folder)
    )


def task_folders(root: Path) -> list[Path]:
    return [c for c in sorted(root.iterdir()) if c.is_dir() and not c.name.startswith((".", "_"))]


def read_gym(root: Path) -> GymToml:
    path = root / GYM_FILE
    return validate(GymToml, read_structured(path), path)


def _overrides(folder: Path) -> TaskOverrides:
    path = folder / TASK_FILE
    return validate(TaskOverrides, read_structured(path), path) if path.is_file() else TaskOverrides()


def task_name(folder: Path) -> str:
    """The task's `name` for `--tasks`, read without validating the task (the folder name if none)."""
    try:
        name = _overrides(folder).name
    except UserError:
        return nfc(folder.name)
    return name or nfc(folder.name)


def load_command_task(folder: Path, gym: GymToml) -> Task:
    """Errors name `folder` as given (shown relative to the suite); the task's own paths are absolute, since
    its setup and verify commands run with the workspace as working directory."""
    here = folder.resolve()
    toml_path = folder / TASK_FILE
    own = _overrides(folder)
    instruction = read_instruction(folder / INSTRUCTION_FILE)
    verify = own.verify or gym.verify
    if verify is None:
        raise UserError(f"no verify command: set `verify` in {GYM_FILE} or in the task's {TASK_FILE}", path=folder)
    files = folder / FILES_DIR
    if files.exists() and not files.is_dir():
        raise UserError(f"{FILES_DIR} must be a folder (copied into the workspace)", path=files)
    checks = [c for c in sorted(here.iterdir()) if c.name not in RESERVED]
    solution = here / SOLUTION_FILE
    return Task(
        id=check_task_id(folder.name, toml_path, "folder name"),
        name=own.name or nfc(folder.name),
        instruction=instruction,
        format="command",
        source=str(here),
        difficulty=own.difficulty or gym.difficulty or "unknown",
        category=own.category or gym.category or "uncategorized",
        tags=list(own.tags),
        agent_timeout_sec=own.agent_timeout_sec or gym.agent_timeout_sec,
        max_turns=own.max_turns or gym.max_turns,
        environment=EnvironmentSpec(kind="local"),
        verifier=VerifierSpec(
            kind="seed",
            timeout_sec=own.timeout_sec or gym.timeout_sec or DEFAULT_TEST_TIMEOUT_SEC,
            copies=[FileCopy(src=c, dest=c.name) for c in checks],
            command=verify,
            env={"GYM_DIR": str(here.parent), "TASK_DIR": str(here)},
            seed=SeedVerification(type="custom", script=verify),
        ),
        solution=SolutionSpec(
            copies=[FileCopy(src=solution, dest=SOLUTION_DEST)],
            command=f"trap 'rm -f {SOLUTION_DEST}' EXIT; bash {SOLUTION_DEST}",
        )
        if solution.is_file()
        else None,
        setup=[f"cp -R -- {shlex.quote(str(here / FILES_DIR))}/. ."] if files.is_dir() else [],
        hints=list(own.hints),
    )


def load_command_folder(root: Path, wanted: Callable[[str, str], bool] | None = None) -> tuple[Suite, list[Invalid]]:
    """The gym's selected valid tasks and every selected invalid one; a bad gym.toml is an error of its own."""
    gym = read_gym(root)
    folders = task_folders(root)
    if not folders:
        raise UserError(f"no tasks: a gym needs one sub-folder per task, each with {INSTRUCTION_FILE}", path=root)
    tasks: list[Task] = []
    invalid: list[Invalid] = []
    seen: set[str] = set()
    for folder in folders:
        tid = nfc(folder.name)
        if wanted is not None and not wanted(tid, task_name(folder)):
            continue
        try:
            task = load_command_task(folder, gym)
            if task.id in seen:
                raise UserError(f"duplicate task id {task.id!r} (the same name written two ways)", path=folder)
        except UserError as exc:
            invalid.append((tid, exc))
            continue
        seen.add(task.id)
        tasks.append(task)
    name = gym.name or nfc(root.resolve().name)
    suite = Suite(name=name, version=gym.version, description=gym.description, source=str(root), tasks=tasks)
    return suite, invalid
