"""The GymEnvironment registry: every suite format tbench loads is an environment the trainer can train on.

Each kind says how it is recognised (`detect`) and loads through the one suite loader (bench.formats), so a
new kind is a loader plus an entry here, and every runner (tbench-iterate, overnight, resume, the trainer)
takes it at once. `tbench train envs [PATH...]` prints `envs_text`."""

from __future__ import annotations

import json
import textwrap
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import ClassVar

from tbench.bench.formats import inspect_suite, load_suite
from tbench.bench.formats.command_folder import GYM_FILE, is_command_folder, is_gym_task
from tbench.bench.formats.tb1 import is_tb1_task
from tbench.bench.formats.tb2 import is_tb2_task
from tbench.errors import UserError
from tbench.models.common import Frozen
from tbench.models.task import SkippedTask, Suite

#: The bundled example suites, listed by `tbench train envs` when no path is given.
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "examples"
WIDTH = 80


def _children(path: Path) -> list[Path]:
    return [c for c in sorted(path.iterdir()) if c.is_dir()] if path.is_dir() else []


class GymEnvironment:
    """One kind of environment: its id, what it is, and how a path is recognised as one."""

    kind: ClassVar[str]
    description: ClassVar[str]
    recognised_by: ClassVar[str]
    """How `detect` tells this kind from the others, for `tbench train envs`."""

    def detect(self, path: Path) -> bool:
        raise NotImplementedError

    def load(self, path: Path, tasks: Sequence[str] = (), *, skip_invalid: bool = False) -> Suite:
        """The suite's tasks, as tbench-iterate loads them (the same loader, the same errors)."""
        return load_suite(path, tasks, skip_invalid=skip_invalid)


class Tb2Environment(GymEnvironment):
    kind = "tb2"
    description = "Terminal-Bench 2 / Harbor tasks, run in containers"
    recognised_by = "a folder with task.toml (or a folder of them; TB1 tasks beside them load too)"

    def detect(self, path: Path) -> bool:
        if path.is_file():
            return path.name == "task.toml" and not is_gym_task(path.parent)
        return is_tb2_task(path) or any(is_tb2_task(c) for c in _children(path))


class Tb1Environment(GymEnvironment):
    kind = "tb1"
    description = "Terminal-Bench 1 tasks, run in containers, scored by pytest"
    recognised_by = "a folder with task.yaml (or a folder of them)"

    def detect(self, path: Path) -> bool:
        if path.is_file():
            return path.name == "task.yaml"
        return is_tb1_task(path) or any(is_tb1_task(c) for c in _children(path))


class SeedJsonEnvironment(GymEnvironment):
    kind = "seed-json"
    description = "the seed's JSON suite: host workspace or TB2 tasks in one file"
    recognised_by = 'a .json file whose top level has a "tasks" list'

    def detect(self, path: Path) -> bool:
        if not (path.is_file() and path.suffix == ".json"):
            return False
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            return False
        return isinstance(data, dict) and isinstance(data.get("tasks"), list)


class CommandEnvironment(GymEnvironment):
    kind = "command"
    description = "a folder of host tasks, each checked by a command (exit 0 = pass)"
    recognised_by = f'a folder with {GYM_FILE} (kind = "command"), one sub-folder per task'

    def detect(self, path: Path) -> bool:
        if path.is_file():
            return path.name == GYM_FILE or (path.name == "task.toml" and is_gym_task(path.parent))
        return is_command_folder(path) or is_gym_task(path)


#: Every kind, in the order `environment_kind` tries them: a gym's tasks may hold task.toml files, so the
#: command kind goes before TB2.
KINDS: tuple[GymEnvironment, ...] = (
    CommandEnvironment(),
    Tb2Environment(),
    Tb1Environment(),
    SeedJsonEnvironment(),
)
#: The order they are listed in.
LISTED = ("tb2", "tb1", "seed-json", "command")


def kinds() -> list[GymEnvironment]:
    by_id = {k.kind: k for k in KINDS}
    return [by_id[k] for k in LISTED]


def environment_kind(path: Path) -> GymEnvironment:
    """Which kind of environment `path` is; a UserError for a missing path or one that is no suite."""
    if not path.exists():
        raise UserError("does not exist; give a suite: a task folder, a folder of tasks, a gym or a .json", path=path)
    for kind in KINDS:
        if kind.detect(path):
            return kind
    if path.is_file() and path.suffix == ".json":
        raise UserError('not a suite: a JSON suite is an object with a "tasks" list (or fix its syntax)', path=path)
    if path.is_file():
        raise UserError(f"not a suite: give a folder, a .json suite file or a {GYM_FILE}", path=path)
    raise UserError(
        f"not a suite: no {GYM_FILE}, task.toml or task.yaml here or one folder down, and it is no .json", path=path
    )


class EnvironmentInfo(Frozen):
    """What `tbench train envs` shows of one path."""

    kind: str
    path: str
    name: str
    """The suite's name."""
    tasks: int
    """Valid tasks."""
    task_ids: list[str]
    invalid: list[SkippedTask]
    """Tasks that cannot run, each with its reason."""
    categories: dict[str, int]
    """Valid tasks per category."""
    runs_on: list[str]
    """Where its valid tasks run: "host" (a fresh workspace) and/or "containers" (needs an engine)."""


def describe(path: Path) -> EnvironmentInfo:
    """The kind and tasks of the suite at `path`; a suite that cannot be read at all is a UserError."""
    kind = environment_kind(path)
    suite, invalid = inspect_suite(path)
    return EnvironmentInfo(
        kind=kind.kind,
        path=str(path),
        name=suite.name,
        tasks=len(suite.tasks),
        task_ids=[t.id for t in suite.tasks],
        invalid=invalid,
        categories=dict(sorted(Counter(t.category for t in suite.tasks).items())),
        runs_on=sorted({"host" if t.environment.kind == "local" else "containers" for t in suite.tasks}),
    )


def _fill(label: str, text: str, indent: int = 2) -> list[str]:
    head = " " * indent + label
    return textwrap.wrap(
        text,
        WIDTH,
        initial_indent=head,
        subsequent_indent=" " * len(head),
        break_long_words=False,
        break_on_hyphens=False,
    )


def _fill_items(label: str, items: list[str], indent: int = 2) -> list[str]:
    """`items` joined by commas, wrapped between items only (a "name (3)" never splits)."""
    head = " " * indent + label
    lines: list[str] = []
    line = head
    for i, item in enumerate(items):
        piece = item + ("," if i < len(items) - 1 else "")
        if len(line) > len(head) and len(line) + 1 + len(piece) > WIDTH:
            lines.append(line)
            line = " " * len(head) + piece
        else:
            line += ("" if len(line) == len(head) else " ") + piece
    lines.append(line)
    return lines


def _kinds_text() -> list[str]:
    listed = kinds()
    col = max(len(k.kind) for k in listed) + 2
    lines = ["Environment kinds tbench knows:"]
    for k in listed:
        lines += _fill(k.kind.ljust(col), f"{k.description}; recognised by {k.recognised_by}.")
    return lines


def _info_text(info: EnvironmentInfo) -> list[str]:
    noun = "task" if info.tasks == 1 else "tasks"
    where = f" · runs on {' and '.join(info.runs_on)}" if info.runs_on else ""
    lines = [info.path, *_fill("", f"kind {info.kind} · suite {info.name} · {info.tasks} {noun}{where}")]
    if info.categories:
        lines += _fill_items("categories: ", [f"{c} ({n})" for c, n in info.categories.items()])
    if info.task_ids:
        lines += _fill_items("tasks: ", info.task_ids)
    for bad in info.invalid:
        lines += _fill("invalid: ", f"{bad.id}: {bad.reason}")
    return lines


def default_paths() -> list[Path]:
    """The bundled examples that are a suite of some kind."""
    found: list[Path] = []
    for path in sorted(EXAMPLES_DIR.iterdir()):
        if any(k.detect(path) for k in KINDS):
            found.append(path)
    return found


def envs_text(paths: list[Path]) -> str:
    """The text of `tbench train envs [PATH...]`: the kinds tbench knows, then each path's kind and tasks
    (default: the bundled examples). A path that is no suite is a UserError before anything is shown; a path
    of a known kind that cannot be loaded (a broken gym.toml) is shown with its one-line reason."""
    chosen = paths or default_paths()
    found = [(path, environment_kind(path)) for path in chosen]
    lines = _kinds_text()
    for path, kind in found:
        lines.append("")
        try:
            lines += _info_text(describe(path))
        except UserError as exc:
            lines += [str(path), *_fill("", f"kind {kind.kind} · cannot be loaded: {exc.render()}")]
    return "\n".join(lines) + "\n"
