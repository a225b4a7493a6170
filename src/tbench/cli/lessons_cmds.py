"""`tbench lessons list|show|reflect|retire|export|import`: the Archivist's memory by hand.

Registered on the main app by `register(app)`; bad input raises `UserError` (one line, exit 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from tbench.errors import UserError

if TYPE_CHECKING:
    from tbench.archivist.memory_service import MemoryStore

console = Console(highlight=False, width=1000)
ProjectRoot = Annotated[
    Path | None, typer.Option("--project-root", help="Where .openagents/memory lives [default: cwd]")
]


def _say(text: str) -> None:
    console.print(text, markup=False, soft_wrap=True)


def _store(project_root: Path | None) -> MemoryStore:
    from tbench.archivist.memory_service import MemoryStore

    return MemoryStore.for_project((project_root or Path.cwd()).resolve())


lessons = typer.Typer(
    rich_markup_mode=None, help="The Archivist's lessons: list, inspect, reflect on a run, retire, export, import."
)


@lessons.command("list")
def list_lessons(
    project_root: ProjectRoot = None,
    retired: Annotated[bool, typer.Option("--retired", help="List the archive of retired lessons instead")] = False,
) -> None:
    """Active lessons, most important first."""
    store = _store(project_root)
    items = store.archive() if retired else store.load()
    if not items:
        _say("no retired lessons" if retired else f"no lessons yet in {store.root}")
        return
    taint = _taint(store)
    table = Table(
        "id", "category", "scope", "importance", "helped/hurt/same", "tainted by held-out",
        "text" if not retired else "retired because",
    )  # fmt: skip
    for x in sorted(items, key=lambda x: (-x.importance, x.id)):
        scope = x.scope + (f":{x.scope_value}" if x.scope_value else "")
        last = x.retired_reason or "" if retired else x.text
        counts = f"{x.helpful}/{x.harmful}/{x.unchanged}"
        table.add_row(x.id, x.category, scope, f"{x.importance:.2f}", counts, ", ".join(taint.get(x.id, [])) or "—",
                      last)  # fmt: skip
    console.print(table)


def _taint(store: MemoryStore) -> dict[str, list[str]]:
    """lesson id → the project's held-out tasks its evidence touches (holdout.json, every suite)."""
    from tbench.archivist.holdout import read_split, tainted

    split = read_split(store.root)
    if split is None:
        return {}
    out: dict[str, list[str]] = {}
    for suite in split.suites.values():
        held = set(suite.held_out)
        for x in [*store.load(), *store.archive()]:
            hit = tainted(x, held, set(suite.known))
            if hit:
                out[x.id] = sorted(set(out.get(x.id, [])) | hit)
    return out


@lessons.command("show")
def show(lesson_id: Annotated[str, typer.Argument(help="Lesson id")], project_root: ProjectRoot = None) -> None:
    """One lesson (active or archived) as JSON."""
    lesson = _store(project_root).get(lesson_id)
    if lesson is None:
        raise UserError(f"no lesson {lesson_id!r} (see `tbench lessons list`)", field="LESSON_ID")
    _say(lesson.model_dump_json(indent=2))


@lessons.command("retire")
def retire(
    lesson_id: Annotated[str, typer.Argument(help="Lesson id")],
    reason: Annotated[str, typer.Option(help="Why (kept in the archive)")] = "retired by hand",
    project_root: ProjectRoot = None,
) -> None:
    """Move a lesson to the archive; it is no longer injected."""
    lesson = _store(project_root).retire(lesson_id, reason)
    _say(f"retired {lesson.id}: {reason}")


@lessons.command("export")
def export(path: Annotated[Path, typer.Argument(help="JSON file to write")], project_root: ProjectRoot = None) -> None:
    """Write the active lessons to a file (share them, or back them up)."""
    n = _store(project_root).export(path)
    _say(f"exported {n} lesson(s) to {path}")


@lessons.command("import")
def import_(
    path: Annotated[Path, typer.Argument(help="A file from `tbench lessons export`")], project_root: ProjectRoot = None
) -> None:
    """Add the lessons of an export; near-duplicates of stored lessons are merged into them."""
    added, merged = _store(project_root).import_file(path)
    _say(f"imported {added} lesson(s), merged {merged} into existing ones")


@lessons.command("reflect")
def reflect_cmd(
    run: Annotated[Path, typer.Argument(help="Run folder (or its state.json)")],
    iteration: Annotated[int | None, typer.Option(help="Only this iteration [default: every finished one]")] = None,
    reflect_model: Annotated[
        str | None, typer.Option(help="ollama:<name> or openai:<name> [default: the run's]")
    ] = None,
    ollama_endpoint: Annotated[str | None, typer.Option(help="Ollama server [default: the run's]")] = None,
    project_root: Annotated[
        Path | None, typer.Option("--project-root", help="Where .openagents/memory lives [default: the run's]")
    ] = None,
) -> None:
    """Reflect on a finished run now: train trials only, the same delta operations and checks as `--learn`."""
    from tbench.archivist.holdout import read_split
    from tbench.archivist.loop import reflection_transport
    from tbench.archivist.memory_service import MemoryStore
    from tbench.archivist.service import reflect
    from tbench.bench.formats import load_suite
    from tbench.models.layout import STATE_FILE
    from tbench.models.results import base_id
    from tbench.report.runs import load_run_folder

    folder = load_run_folder(run.parent if run.name == STATE_FILE else run)
    config = folder.config
    held = set(config.learning.holdout_tasks)
    spec = reflect_model or config.learning.reflect_model or config.model
    settings = config.model_settings
    if ollama_endpoint:
        settings = settings.model_copy(update={"ollama_endpoint": ollama_endpoint})
    transport = reflection_transport(spec, settings)
    store = MemoryStore.for_project((project_root or Path(config.project_root)).resolve())
    split = read_split(store.root)
    if split is not None and config.suite_name in split.suites:  # the project's held-out tasks stay unseen too
        held |= set(split.suites[config.suite_name].held_out)
    suite_tasks = load_suite(Path(config.suite), skip_invalid=True).tasks
    train = [t for t in suite_tasks if t.id not in held]
    chosen = [it for it in folder.iterations if iteration is None or it.iteration == iteration]
    if not chosen:
        raise UserError(f"iteration {iteration} has not finished in this run", field="--iteration")
    for it in chosen:
        results = [r for r in it.results if base_id(r.task_id) not in held and r.task_id == base_id(r.task_id)]
        log = reflect(
            store, transport, run_dir=folder.dir, run_id=config.run_id, iteration=it.iteration, results=results,
            tasks=train, suite_tasks=suite_tasks,
        )  # fmt: skip
        applied = [o for o in log.operations if o.applied]
        _say(f"iteration {it.iteration}: {log.status}, {len(applied)} of {len(log.operations)} operation(s) applied"
             + (f" — {log.reason}" if log.reason else ""))  # fmt: skip
        for o in log.operations:
            if not o.applied:
                _say(f"  rejected {o.op.get('op', '?')}: {o.reason}")


def register(app: typer.Typer) -> None:
    app.add_typer(lessons, name="lessons")
