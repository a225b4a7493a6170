"""Load any supported suite: a TB2 task folder or folder of them, a TB1 task folder or folder of them, the
seed's JSON suite file, or a command-verified task folder (`gym.toml`, see command_folder.py). `--tasks` globs
select tasks by id or name *before* tasks are validated, so a broken task the run does not select never stops
it; every invalid selected task is named in one error, or left out and recorded with `skip_invalid`."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Sequence
from pathlib import Path

from tbench.bench.formats._common import read_structured
from tbench.bench.formats.command_folder import GYM_FILE, is_command_folder, is_gym_task, load_command_folder
from tbench.bench.formats.seed_json import Invalid, load_seed_suite
from tbench.bench.formats.tb1 import is_tb1_task, load_tb1_task
from tbench.bench.formats.tb2 import is_tb2_task, load_tb2_task
from tbench.errors import UserError
from tbench.fsutil import nfc
from tbench.models.task import SkippedTask, Suite, Task

__all__ = ["inspect_suite", "load_suite", "select_tasks"]


def _load_folder_task(folder: Path) -> Task | None:
    if is_tb2_task(folder):
        return load_tb2_task(folder)
    if is_tb1_task(folder):
        return load_tb1_task(folder)
    return None


def _matcher(globs: Sequence[str]) -> Callable[[str, str], bool] | None:
    if not globs:
        return None
    pats = [nfc(g) for g in globs]
    return lambda tid, name: any(fnmatch.fnmatchcase(nfc(tid), g) or fnmatch.fnmatchcase(name, g) for g in pats)


def _folder_name(folder: Path) -> str:
    """A TB2 task's `[task] name` for `--tasks`, read without validating the task (the folder name if none)."""
    if is_tb2_task(folder):
        try:
            data = read_structured(folder / "task.toml")
        except UserError:
            return folder.name
        name = (data.get("task") or {}).get("name") if isinstance(data, dict) else None
        return name if isinstance(name, str) else folder.name
    return folder.name


def _reason(exc: UserError, root: Path) -> str:
    """The error with its path shown inside the suite (`ünï/task.toml: …`), not as a long absolute path; an
    error in the suite file itself shows only its field (`tasks.3.id: …`)."""
    if exc.path is not None and Path(exc.path).is_file() and Path(exc.path).suffix == ".json":
        return UserError(exc.message, field=exc.field).render()
    if exc.path is not None:
        path = Path(exc.path)
        with_path = path.relative_to(root) if path.is_relative_to(root) and path != root else path
        return UserError(exc.message, path=with_path, field=exc.field).render()
    return exc.render()


def _load_folder(path: Path, wanted: Callable[[str, str], bool] | None) -> tuple[Suite, list[Invalid]]:
    """A task folder, or a folder of them: the selected valid tasks and every selected invalid one."""
    single = _load_folder_task(path)
    if single is not None:
        return Suite(name=single.id, version="0", source=str(path), tasks=[single]), []
    children = [c for c in sorted(path.iterdir()) if c.is_dir() and (is_tb2_task(c) or is_tb1_task(c))]
    if not children:
        raise UserError("no tasks found: no task.toml (TB2) or task.yaml (TB1) here or one level down", path=path)
    found: list[Task] = []
    invalid: list[Invalid] = []
    for child in children:
        if wanted is not None and not wanted(child.name, _folder_name(child)):
            continue
        try:
            task = _load_folder_task(child)
        except UserError as exc:
            invalid.append((nfc(child.name), exc))
            continue
        if task is not None:
            found.append(task)
    return Suite(name=path.name, version="0", source=str(path), tasks=found), invalid


def _load_gym(path: Path, wanted: Callable[[str, str], bool] | None) -> tuple[Suite, list[Invalid]]:
    """A gym, or one task folder of a gym given on its own (the gym with only that task)."""
    if is_command_folder(path):
        return load_command_folder(path, wanted)
    only = nfc(path.name)
    suite, invalid = load_command_folder(
        path.parent, lambda tid, name: tid == only and (wanted is None or wanted(tid, name))
    )
    return suite.model_copy(update={"name": only, "source": str(path)}), invalid


def _read_any(path: Path, wanted: Callable[[str, str], bool] | None) -> tuple[Suite, list[Invalid], Path]:
    """The suite at `path` in whichever format it is, its invalid tasks, and the folder reasons are shown
    relative to."""
    if not path.exists():
        raise UserError(
            "does not exist; give a task folder, a folder of tasks, a command task folder or a suite .json", path=path
        )
    root = path.parent if path.is_file() else path
    if path.is_file():
        if path.name in ("task.toml", "task.yaml", GYM_FILE):
            path = path.parent
        elif path.suffix == ".json":
            return (*load_seed_suite(path, wanted), root)
        else:
            raise UserError("not a suite: expected a .json suite file, a task folder or a gym.toml", path=path)
    if is_command_folder(path) or is_gym_task(path):
        return (*_load_gym(path, wanted), path if is_command_folder(path) else path.parent)
    return (*_load_folder(path, wanted), root)


def inspect_suite(path: Path) -> tuple[Suite, list[SkippedTask]]:
    """Every valid task of the suite at `path` and every invalid one with its reason, without refusing a suite
    whose tasks are all invalid (for listing environments). A suite that cannot be read at all is a UserError."""
    suite, invalid, root = _read_any(path, None)
    return suite, [SkippedTask(id=tid, reason=_reason(exc, root)) for tid, exc in invalid]


def load_suite(path: Path, tasks: Sequence[str] = (), *, skip_invalid: bool = False) -> Suite:
    """Detect the format of `path` and load the tasks `tasks` (globs over id or name; empty: all) selects.

    Every invalid selected task is named in one UserError; with `skip_invalid` they are left out instead and
    listed in `Suite.skipped`. A selection that matches nothing, or leaves no valid task, is an error."""
    suite, invalid, root = _read_any(path, _matcher(tasks))
    if invalid and not skip_invalid:
        listed = "; ".join(f"{tid}: {_reason(exc, root)}" for tid, exc in invalid)
        valid = f"; give --skip-invalid to run the other {len(suite.tasks)}" if suite.tasks else ""
        raise UserError(f"{len(invalid)} invalid task(s): {listed}{valid}", path=path)
    if not suite.tasks and not invalid:
        raise UserError(f"no task matches {' '.join(tasks)!r}", field="tasks")
    if not suite.tasks:
        raise UserError("every selected task is invalid; nothing to run", path=path)
    skipped = [SkippedTask(id=tid, reason=_reason(exc, root)) for tid, exc in invalid]
    suite = suite.model_copy(update={"skipped": skipped})
    return select_tasks(suite, list(tasks)) if tasks else suite


def select_tasks(suite: Suite, globs: list[str] | None) -> Suite:
    """Keep tasks whose id or name matches any glob; a selection that matches nothing is an error."""
    if not globs:
        return suite
    match = _matcher(globs)
    assert match is not None
    chosen = [t for t in suite.tasks if match(t.id, t.name)]
    if not chosen:
        ids = ", ".join(t.id for t in suite.tasks[:8])
        raise UserError(f"no task matches {' '.join(globs)!r} (tasks include: {ids})", field="tasks")
    return suite.model_copy(update={"tasks": chosen})
