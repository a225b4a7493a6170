"""Load any supported suite: a TB2 task folder or folder of them, a TB1 task folder or folder of them, or
the seed's JSON suite file. `--tasks` globs select tasks by id or name."""

from __future__ import annotations

import fnmatch
from pathlib import Path

from tbench.bench.formats.seed_json import load_seed_suite
from tbench.bench.formats.tb1 import is_tb1_task, load_tb1_task
from tbench.bench.formats.tb2 import is_tb2_task, load_tb2_task
from tbench.errors import UserError
from tbench.models.task import Suite, Task

__all__ = ["load_suite", "select_tasks"]


def _load_folder_task(folder: Path) -> Task | None:
    if is_tb2_task(folder):
        return load_tb2_task(folder)
    if is_tb1_task(folder):
        return load_tb1_task(folder)
    return None


def load_suite(path: Path) -> Suite:
    """Detect the format of `path` and load every task, validating as it goes."""
    if not path.exists():
        raise UserError("does not exist; give a task folder, a folder of tasks, or a suite .json", path=path)
    if path.is_file():
        if path.name in ("task.toml", "task.yaml"):
            path = path.parent
        elif path.suffix == ".json":
            return load_seed_suite(path)
        else:
            raise UserError("not a suite: expected a .json suite file or a task folder", path=path)
    single = _load_folder_task(path)
    if single is not None:
        return Suite(name=single.id, version="0", source=str(path), tasks=[single])
    tasks = [t for child in sorted(p for p in path.iterdir() if p.is_dir()) if (t := _load_folder_task(child))]
    if not tasks:
        raise UserError("no tasks found: no task.toml (TB2) or task.yaml (TB1) here or one level down", path=path)
    return Suite(name=path.name, version="0", source=str(path), tasks=tasks)


def select_tasks(suite: Suite, globs: list[str] | None) -> Suite:
    """Keep tasks whose id or name matches any glob; a selection that matches nothing is an error."""
    if not globs:
        return suite
    chosen = [
        t for t in suite.tasks if any(fnmatch.fnmatchcase(t.id, g) or fnmatch.fnmatchcase(t.name, g) for g in globs)
    ]
    if not chosen:
        ids = ", ".join(t.id for t in suite.tasks[:8])
        raise UserError(f"no task matches {' '.join(globs)!r} (tasks include: {ids})", field="tasks")
    return suite.model_copy(update={"tasks": chosen})
