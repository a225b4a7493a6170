"""The seed's JSON suite (`TerminalBenchSuite`). A task whose `source_path` is a TB2 folder runs as that
TB2 task in a container; any other task runs in a fresh host workspace."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from tbench.bench.formats._common import check_task_id, read_structured, validate
from tbench.bench.formats.tb2 import is_tb2_task, load_tb2_task
from tbench.errors import UserError
from tbench.models.task import EnvironmentSpec, SeedVerification, SolutionSpec, Suite, Task, VerifierSpec

Invalid = tuple[str, UserError]
"""A task id (as far as it can be read) and why the task cannot run."""


class _Verification(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["test", "output", "custom"]
    command: str | None = None
    expected: str | None = None
    script: str | None = None

    @model_validator(mode="after")
    def _complete(self) -> _Verification:
        if self.type == "output" and (self.command is None or self.expected is None):
            raise ValueError("type 'output' needs both 'command' and 'expected'")
        if self.type == "custom" and not self.script:
            raise ValueError("type 'custom' needs 'script'")
        return self


class SeedTask(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    name: str = Field(min_length=1)
    description: str = Field(min_length=1)
    difficulty: Literal["easy", "medium", "hard", "expert"] = "medium"
    category: str = "uncategorized"
    verification: _Verification
    setup: list[str] = Field(default_factory=list)
    timeout_seconds: float | None = Field(default=None, gt=0)
    max_turns: int | None = Field(default=None, gt=0)
    tags: list[str] = Field(default_factory=list)
    files_to_modify: list[str] = Field(default_factory=list)
    hints: list[str] = Field(default_factory=list)
    source_path: str | None = None
    repository: str | None = None
    branch: str | None = None
    solution: str | None = None
    """tbench extension: a reference solution script, run by the `oracle` agent."""
    verification_timeout_seconds: float | None = Field(default=None, gt=0)
    """tbench extension: time limit for the verification command (default 600 s)."""


class SeedSuite(BaseModel):
    """The suite's own fields; its tasks are validated one by one (`load_seed_suite`), so every invalid task
    can be named at once and the valid ones run with `--skip-invalid`."""

    model_config = ConfigDict(extra="ignore")

    name: str = Field(min_length=1)
    version: str = "0"
    description: str = ""
    source_repo: str | None = None
    tasks: list[Any] = Field(min_length=1)


def _seed_task(t: SeedTask, path: Path, index: int) -> Task:
    field = f"tasks.{index}"
    check_task_id(t.id, path, f"{field}.id")
    if t.source_path:
        folder = Path(t.source_path)
        if not folder.is_absolute():
            folder = path.parent / folder
        if not folder.is_dir():
            raise UserError(f"source_path {t.source_path!r} is not a folder", path=path, field=f"{field}.source_path")
        if not is_tb2_task(folder):
            raise UserError(
                f"source_path {t.source_path!r} is not a TB2 task folder (no task.toml)",
                path=path,
                field=f"{field}.source_path",
            )
        task = load_tb2_task(folder, task_id=t.id, name=t.name)
        updates: dict[str, object] = {"tags": t.tags or task.tags, "hints": t.hints}
        if t.max_turns:
            updates["max_turns"] = t.max_turns
        return task.model_copy(update=updates)
    v = t.verification
    verifier_command = v.script if v.type == "custom" else v.command
    if v.type == "test" and not verifier_command:
        verifier_command = "python3 -m pytest tests/ -v --tb=short"
    return Task(
        id=t.id,
        name=t.name,
        instruction=t.description.strip(),
        format="seed",
        source=f"{path}#{field}",
        difficulty=t.difficulty,
        category=t.category,
        tags=list(t.tags),
        agent_timeout_sec=t.timeout_seconds,
        max_turns=t.max_turns,
        environment=EnvironmentSpec(kind="local"),
        verifier=VerifierSpec(
            kind="seed",
            timeout_sec=t.verification_timeout_seconds or 600.0,
            command=verifier_command or "",
            seed=SeedVerification(type=v.type, command=v.command, expected=v.expected, script=v.script),
        ),
        solution=SolutionSpec(command=t.solution) if t.solution else None,
        setup=list(t.setup),
        hints=list(t.hints),
        files_to_modify=list(t.files_to_modify),
        repository=_repository(t.repository, path),
        branch=t.branch,
    )


def _repository(value: str | None, suite_path: Path) -> str | None:
    """A relative repository path is relative to the suite file; anything else (a URL) is kept as it is."""
    if value is None or "://" in value or value.startswith("git@"):
        return value
    local = Path(value).expanduser()
    return str(local if local.is_absolute() else (suite_path.parent / local).resolve())


def seed_task_key(raw: Any, index: int) -> tuple[str, str]:
    """(id, name) of a raw task entry as far as they can be read without validating it, for `--tasks`."""
    if isinstance(raw, dict):
        tid, name = raw.get("id"), raw.get("name")
        tid = tid if isinstance(tid, str) and tid else f"tasks.{index}"
        return tid, name if isinstance(name, str) else tid
    return f"tasks.{index}", f"tasks.{index}"


def load_seed_suite(path: Path, wanted: Callable[[str, str], bool] | None = None) -> tuple[Suite, list[Invalid]]:
    """The suite with its valid tasks (those `wanted(id, name)` keeps), and every invalid one with its error."""
    raw = read_structured(path)
    suite = validate(SeedSuite, raw, path)
    tasks: list[Task] = []
    invalid: list[Invalid] = []
    seen: set[str] = set()
    for i, entry in enumerate(suite.tasks):
        tid, name = seed_task_key(entry, i)
        if wanted is not None and not wanted(tid, name):
            continue
        try:
            if not isinstance(entry, dict):
                raise UserError(f"expected an object, got {type(entry).__name__}", path=path, field=f"tasks.{i}")
            task = _seed_task(validate(SeedTask, entry, path, prefix=f"tasks.{i}."), path, i)
            if task.id in seen:
                raise UserError(f"duplicate task id {task.id!r}; ids must be unique", path=path, field=f"tasks.{i}.id")
        except UserError as exc:
            invalid.append((tid, exc))
            continue
        seen.add(task.id)
        tasks.append(task)
    return (
        Suite(name=suite.name, version=suite.version, description=suite.description, source=str(path), tasks=tasks),
        invalid,
    )
