"""`tbench` and `tbench-iterate`. Bad input: one line on stderr, exit 2. Ctrl-C / SIGTERM: state saved,
exit 130, resumable."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from importlib.resources import files
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer
from rich.console import Console

from tbench import __version__
from tbench.errors import UserError

app = typer.Typer(
    name="tbench",
    help="Run Terminal-Bench suites overnight in real containers; record, compare and learn.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=False, highlight=False)
err_console = Console(stderr=True, highlight=False)
DEBUG = bool(os.environ.get("TBENCH_DEBUG"))


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def iterate(
    suite: Annotated[Path | None, typer.Option(help="Task folder, folder of tasks (TB2/TB1), or suite .json")] = None,
    output: Annotated[Path | None, typer.Option(help="Run folder (default results/YYYYMMDD)")] = None,
    iterations: Annotated[int | None, typer.Option(help="How many times to run the suite [default: 10]")] = None,
    model: Annotated[
        str | None, typer.Option(help="claude-code[:<model>], ollama:<name>, oracle or nop [default: claude-code]")
    ] = None,
    resume: Annotated[Path | None, typer.Option(help="PATH/state.json of an interrupted run")] = None,
    timeout: Annotated[
        float | None, typer.Option(help="Agent time limit (s) for tasks that set none [default: 3600]")
    ] = None,
    max_turns: Annotated[int | None, typer.Option(help="Agent turn cap for tasks that set none")] = None,
    run_id: Annotated[str | None, typer.Option(help="Run id (default tbrun-YYYYMMDD-HHMMSS-xxxx)")] = None,
    tasks: Annotated[
        list[str] | None, typer.Option(help="Only tasks whose id or name matches (glob, repeatable)")
    ] = None,
    project_root: Annotated[Path | None, typer.Option(help="Where .openagents/gym lives (default: cwd)")] = None,
    debug: Annotated[bool, typer.Option(help="Show tracebacks")] = False,
) -> None:
    """Run a suite N times in order, recording each iteration as an Episode (the seed's tbench-iterate)."""
    global DEBUG
    DEBUG = DEBUG or debug
    from tbench.agents.model_adapter import DEFAULT_MODEL
    from tbench.overnight.iterate import IterateOptions, Run

    def notify(line: str) -> None:
        console.print(line, markup=False, soft_wrap=True)

    if resume is not None:
        given = {
            "--suite": suite,
            "--output": output,
            "--iterations": iterations,
            "--model": model,
            "--timeout": timeout,
            "--max-turns": max_turns,
            "--run-id": run_id,
            "--tasks": tasks,
            "--project-root": project_root,
        }
        clash = [flag for flag, value in given.items() if value is not None]
        if clash:
            raise UserError(
                f"a resumed run keeps the settings in its config.json; drop {', '.join(clash)}", field="--resume"
            )
        run = Run.resume(resume, notify)
        notify(f"Resuming {run.config.run_id} in {run.dir}")
    else:
        if suite is None:
            raise UserError("missing; give --suite PATH (or --resume PATH/state.json)", field="--suite")
        run = Run.create(
            IterateOptions(
                suite=suite,
                output=output,
                iterations=10 if iterations is None else iterations,
                model=model or DEFAULT_MODEL,
                timeout_sec=3600.0 if timeout is None else timeout,
                max_turns=max_turns,
                run_id=run_id,
                tasks=tuple(tasks or ()),
                project_root=project_root,
            ),
            notify,
        )
        notify(
            f"Run {run.config.run_id}: {len(run.tasks)} task(s) x {run.config.iterations} iteration(s), "
            f"model {run.config.model} → {run.dir}"
        )
    try:
        run.execute()
    except KeyboardInterrupt:
        err_console.print(
            f"interrupted; state saved. Resume with: tbench-iterate --resume {run.dir / 'state.json'}",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    notify(f"Done. Report: {run.dir / 'report.md'}")


app.command("iterate")(iterate)


@app.command()
def examples() -> None:
    """Print the paths of the bundled example suites."""
    root = Path(str(files("tbench") / "examples"))
    for name in ("local-suite.json", "tb2", "tb1"):
        path = root / name
        if path.exists():
            console.print(str(path), markup=False)


@app.command()
def version() -> None:
    """Print the tbench version."""
    console.print(__version__)


def _run(typer_app: typer.Typer) -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rc = typer_app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except UserError as exc:
        if DEBUG:
            traceback.print_exc()
        err_console.print(f"tbench: error: {exc}", markup=False, soft_wrap=True)
        sys.exit(2)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.exit(130)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # click usage errors carry their own exit code
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            sys.exit(exc.exit_code)
        raise


def main() -> None:
    _run(app)


def iterate_main() -> None:
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command()(iterate)
    _run(single)
