"""`tbench` and `tbench-iterate`. Bad input: one line on stderr, exit 2. Ctrl-C / SIGTERM: state saved,
exit 130, resumable."""

from __future__ import annotations

import os
import signal
import sys
import traceback
from collections.abc import Callable
from importlib.resources import files
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from tbench import __version__
from tbench.cli.lessons_cmds import register as register_lessons_commands
from tbench.cli.report_cmds import register as register_report_commands
from tbench.errors import UserError

if TYPE_CHECKING:
    from tbench.overnight.iterate import Run

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


# Options shared by `iterate` and `overnight` (the overnight runner takes every iterate flag).
SuiteOpt = Annotated[Path | None, typer.Option(help="Task folder, folder of tasks (TB2/TB1), or suite .json")]
OutputOpt = Annotated[Path | None, typer.Option(help="Run folder (default results/YYYYMMDD)")]
IterationsOpt = Annotated[int | None, typer.Option(help="How many times to run the suite [default: 10]")]
ModelOpt = Annotated[
    str | None,
    typer.Option(help="claude-code[:<model>], ollama:<name>, openai:<name>, oracle or nop [default: claude-code]"),
]
ResumeOpt = Annotated[Path | None, typer.Option(help="PATH/state.json of an interrupted run")]
TimeoutOpt = Annotated[float | None, typer.Option(help="Agent time limit (s) for tasks that set none [default: 3600]")]
MaxTurnsOpt = Annotated[int | None, typer.Option(help="Agent turn cap for tasks that set none")]
RunIdOpt = Annotated[str | None, typer.Option(help="Run id (default tbrun-YYYYMMDD-HHMMSS-xxxx)")]
TasksOpt = Annotated[list[str] | None, typer.Option(help="Only tasks whose id or name matches (glob, repeatable)")]
ProjectRootOpt = Annotated[Path | None, typer.Option(help="Where .openagents/gym lives (default: cwd)")]
DebugOpt = Annotated[bool, typer.Option(help="Show tracebacks")]
OllamaEndpointOpt = Annotated[
    str | None, typer.Option(help="Ollama server, URL or host[:port] [default: $OLLAMA_HOST or http://localhost:11434]")
]
OpenAIEndpointOpt = Annotated[
    str | None,
    typer.Option(
        help="OpenAI-compatible server for openai:<name>, e.g. http://127.0.0.1:8080/v1 [default: "
        "$OPENAI_BASE_URL or https://api.openai.com/v1]; the key comes from $OPENAI_API_KEY"
    ),
]
ModelOptionOpt = Annotated[
    list[str] | None,
    typer.Option(help="Model call setting KEY=VALUE, repeatable: num_ctx, temperature, seed, keep_alive, ..."),
]
ValidationRateOpt = Annotated[
    float | None, typer.Option(help="Share of trials (0-1) run by Claude Code instead of --model, chosen per trial")
]
SeedOpt = Annotated[int | None, typer.Option(help="Seed of the per-trial model choice (and of the model's sampler)")]
LearnOpt = Annotated[
    bool, typer.Option("--learn", help="Reflect between iterations and inject lessons (= --memory learn)")
]
MemoryOpt = Annotated[
    str | None, typer.Option(help="Lessons: off, read (inject only) or learn (inject, credit, reflect) [default: off]")
]
ReflectModelOpt = Annotated[
    str | None, typer.Option(help="Reflection model, ollama:<name> or openai:<name> [default: --model]")
]
HoldoutOpt = Annotated[
    float | None, typer.Option(help="Share of tasks (0-1) held out of learning, drawn from --seed, for the proof")
]
ControlOpt = Annotated[bool, typer.Option("--control", help="Also run held-out tasks without memory, interleaved")]
UnsafeHostOpt = Annotated[
    bool,
    typer.Option(
        "--unsafe-host-agent", help="Let model agents run unconfined on the host for local tasks when bwrap is missing"
    ),
]


def _notify(line: str) -> None:
    console.print(line, markup=False, soft_wrap=True)


def _open_run(settings: dict[str, Any], resume: Path | None, **defaults: Any) -> Run:
    """Create a run from `settings` (flag name → value, None = not given), or resume one; a resumed run
    keeps its config.json, so any setting given with --resume is refused rather than silently ignored."""
    from tbench.agents.model_adapter import DEFAULT_MODEL, model_settings_from_flags
    from tbench.archivist.loop import learning_from_flags
    from tbench.overnight.iterate import IterateOptions, Run

    if resume is not None:
        clash = [f"--{name.replace('_', '-')}" for name, value in settings.items() if value is not None]
        if clash:
            raise UserError(
                f"a resumed run keeps the settings in its config.json; drop {', '.join(clash)}", field="--resume"
            )
        run = Run.resume(resume, _notify)
        _notify(f"Resuming {run.config.run_id} in {run.dir}")
        return run
    if settings["suite"] is None:
        raise UserError("missing; give --suite PATH (or --resume PATH/state.json)", field="--suite")
    given = {k: v for k, v in settings.items() if v is not None}
    given["models"] = model_settings_from_flags(given)
    given["learning"] = learning_from_flags(given)
    opts = IterateOptions(
        **{
            "iterations": 10,
            "model": DEFAULT_MODEL,
            "timeout_sec": 3600.0,
            **defaults,
            **{("timeout_sec" if k == "timeout" else k): v for k, v in given.items()},
            "tasks": tuple(given.get("tasks") or ()),
        }
    )
    run = Run.create(opts, _notify)
    _notify(
        f"Run {run.config.run_id}: {len(run.tasks)} task(s) x {run.config.iterations} iteration(s), "
        f"model {run.config.model} → {run.dir}"
    )
    return run


def _resume_hint(run: Run) -> str:
    return f"Resume with: tbench-{run.config.runner} --resume {run.dir / 'state.json'}"


def iterate(
    suite: SuiteOpt = None,
    output: OutputOpt = None,
    iterations: IterationsOpt = None,
    model: ModelOpt = None,
    resume: ResumeOpt = None,
    timeout: TimeoutOpt = None,
    max_turns: MaxTurnsOpt = None,
    run_id: RunIdOpt = None,
    tasks: TasksOpt = None,
    project_root: ProjectRootOpt = None,
    ollama_endpoint: OllamaEndpointOpt = None,
    openai_endpoint: OpenAIEndpointOpt = None,
    model_option: ModelOptionOpt = None,
    claude_validation_rate: ValidationRateOpt = None,
    seed: SeedOpt = None,
    unsafe_host_agent: UnsafeHostOpt = False,
    learn: LearnOpt = False,
    memory: MemoryOpt = None,
    reflect_model: ReflectModelOpt = None,
    holdout: HoldoutOpt = None,
    control: ControlOpt = False,
    debug: DebugOpt = False,
) -> None:
    """Run a suite N times in order, recording each iteration as an Episode (the seed's tbench-iterate)."""
    global DEBUG
    DEBUG = DEBUG or debug
    settings = {k: v for k, v in locals().items() if k not in ("resume", "debug")}
    settings.update(unsafe_host_agent=unsafe_host_agent or None, learn=learn or None, control=control or None)
    run = _open_run(settings, resume)
    try:
        run.execute()
    except KeyboardInterrupt:
        err_console.print(f"interrupted; state saved. {_resume_hint(run)}", markup=False, soft_wrap=True)
        raise typer.Exit(130) from None
    _notify(f"Done. Report: {run.dir / 'report.md'}")


def overnight(
    suite: SuiteOpt = None,
    output: OutputOpt = None,
    iterations: IterationsOpt = None,
    model: ModelOpt = None,
    resume: ResumeOpt = None,
    timeout: TimeoutOpt = None,
    max_turns: MaxTurnsOpt = None,
    run_id: RunIdOpt = None,
    tasks: TasksOpt = None,
    project_root: ProjectRootOpt = None,
    ollama_endpoint: OllamaEndpointOpt = None,
    openai_endpoint: OpenAIEndpointOpt = None,
    model_option: ModelOptionOpt = None,
    claude_validation_rate: ValidationRateOpt = None,
    seed: SeedOpt = None,
    unsafe_host_agent: UnsafeHostOpt = False,
    learn: LearnOpt = False,
    memory: MemoryOpt = None,
    reflect_model: ReflectModelOpt = None,
    holdout: HoldoutOpt = None,
    control: ControlOpt = False,
    workers: Annotated[
        str | None, typer.Option(help="Parallel trials: a number, or 'auto' (from free RAM and CPUs) [default: auto]")
    ] = None,
    max_retries: Annotated[
        int | None, typer.Option(help="Retries of a trial that hit an infra error (never agent failures) [default: 2]")
    ] = None,
    retry_backoff: Annotated[
        float | None, typer.Option(help="First retry delay (s), doubling per retry, capped at 60 [default: 5]")
    ] = None,
    stop_after_iteration: Annotated[
        int | None, typer.Option(help="Stop (resumably) once this iteration has finished")
    ] = None,
    memory_reserve_mb: Annotated[int, typer.Option(help="Free RAM never used by starting a trial")] = 2048,
    task_memory_mb: Annotated[int, typer.Option(help="Memory assumed for tasks that declare none")] = 2048,
    min_free_disk_mb: Annotated[int, typer.Option(help="Stop starting trials below this free disk")] = 2048,
    heartbeat_timeout: Annotated[float, typer.Option(help="Kill a worker silent this long (s)")] = 60.0,
    stuck_grace: Annotated[float, typer.Option(help="Kill a worker this long past its phase's budget (s)")] = 60.0,
    debug: DebugOpt = False,
) -> None:
    """Run a suite N times with trials in parallel worker processes; survives kill -9 (`--resume`)."""
    global DEBUG
    DEBUG = DEBUG or debug
    from tbench.overnight.parallel import ParallelExecutor, Watchdog
    from tbench.overnight.progress import Progress
    from tbench.overnight.resources import Budget

    settings = {
        "suite": suite, "output": output, "iterations": iterations, "model": model, "timeout": timeout,
        "max_turns": max_turns, "run_id": run_id, "tasks": tasks, "project_root": project_root,
        "workers": _parse_workers(workers), "max_retries": max_retries,
        "retry_backoff_sec": retry_backoff,
        "ollama_endpoint": ollama_endpoint, "openai_endpoint": openai_endpoint, "model_option": model_option,
        "claude_validation_rate": claude_validation_rate, "seed": seed,
        "unsafe_host_agent": unsafe_host_agent or None,
        "learn": learn or None, "memory": memory, "reflect_model": reflect_model, "holdout": holdout,
        "control": control or None,
    }  # fmt: skip
    run = _open_run(settings, resume, runner="overnight", workers="auto", max_retries=2)
    budget = Budget(default_task_mb=task_memory_mb, reserve_mb=memory_reserve_mb, min_free_disk_mb=min_free_disk_mb)
    progress = Progress(console, run.config.iterations, str(run.config.workers))
    executor = ParallelExecutor(run.config.workers, budget, Watchdog(heartbeat_timeout, stuck_grace), progress)
    run.executor = executor

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if run.stop.reason is None:
            run.stop.request(f"{signal.Signals(signum).name} received", exit_code=130)
            err_console.print("stopping: no new trials; running ones finish. Signal again to cancel them.")
        else:
            run.stop.cancel = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    try:
        state = run.execute(stop_after_iteration=stop_after_iteration)
    finally:
        executor.close()
    if state.status == "completed":
        _notify(f"Done. Report: {run.dir / 'report.md'}")
        return
    err_console.print(f"stopped: {run.stop.reason}; state saved. {_resume_hint(run)}", markup=False, soft_wrap=True)
    raise typer.Exit(run.stop.exit_code)


def _parse_workers(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UserError(f"expected a number or 'auto', got {value!r}", field="--workers") from None


app.command("iterate")(iterate)
app.command("overnight")(overnight)


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


register_report_commands(app)  # report, compare, episodes, baseline (cli/report_cmds.py)
register_lessons_commands(app)  # lessons list|show|reflect|retire|export|import (cli/lessons_cmds.py)


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
    except Exception as exc:  # usage errors (typer's vendored click, or click) print themselves
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise


def main() -> None:
    _run(app)


def _single(command: Callable[..., None]) -> None:
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command()(command)
    _run(single)


def iterate_main() -> None:
    _single(iterate)


def overnight_main() -> None:
    _single(overnight)
