"""`tbench` and `tbench-iterate`. Bad input: one line on stderr, exit 2. Ctrl-C / SIGTERM: state saved,
exit 130, resumable."""

from __future__ import annotations

import inspect
import os
import signal
import sys
import traceback
from collections.abc import Callable
from functools import partial
from importlib.resources import files
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any, TypeVar, cast

import typer
from rich.console import Console

from tbench import __version__
from tbench.cli.lessons_cmds import register as register_lessons_commands
from tbench.cli.report_cmds import register as register_report_commands
from tbench.cli.train_cmds import register as register_train_commands
from tbench.errors import UserError
from tbench.secrets import redact_url

if TYPE_CHECKING:
    from tbench.overnight.executor import Executor
    from tbench.overnight.iterate import Run
    from tbench.overnight.ray_executor import RayCluster

app = typer.Typer(
    rich_markup_mode=None,
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
SuiteOpt = Annotated[
    Path | None, typer.Option(help="Task folder, folder of tasks (TB2/TB1), or suite .json [required unless --resume]")
]
OutputOpt = Annotated[Path | None, typer.Option(help="Run folder [default: results/YYYYMMDD]")]
IterationsOpt = Annotated[int | None, typer.Option(help="How many times to run the suite [default: 10]")]
ModelOpt = Annotated[
    str | None,
    typer.Option(help="claude-code[:<model>], ollama:<name>, openai:<name>, oracle or nop [default: claude-code]"),
]
ResumeOpt = Annotated[Path | None, typer.Option(help="PATH/state.json of an interrupted run [default: a new run]")]
TimeoutOpt = Annotated[float | None, typer.Option(help="Agent time limit (s) for tasks that set none [default: 3600]")]
TimeoutMultiplierOpt = Annotated[
    float | None,
    typer.Option(help="Multiply every agent and verifier time limit a task sets, e.g. 2.7 for a slow local model "
                 "[default: 1]"),
]  # fmt: skip
AgentTimeoutOpt = Annotated[
    float | None, typer.Option(help="Agent time limit (s) for every task, overriding the task's own [default: none]")
]
SkipInvalidOpt = Annotated[
    bool,
    typer.Option("--skip-invalid", help="Run the valid tasks of a suite that has invalid ones (listed in the report)"),
]
MaxTurnsOpt = Annotated[int | None, typer.Option(help="Agent turn cap for tasks that set none [default: no cap]")]
RunIdOpt = Annotated[str | None, typer.Option(help="Run id [default: tbrun-YYYYMMDD-HHMMSS-xxxx]")]
TasksOpt = Annotated[
    list[str] | None, typer.Option(help="Only tasks whose id or name matches (glob, repeatable) [default: all]")
]
ProjectRootOpt = Annotated[Path | None, typer.Option(help="Where .openagents/gym lives [default: cwd]")]
DebugOpt = Annotated[bool, typer.Option(help="Show tracebacks")]
OllamaEndpointOpt = Annotated[
    str | None, typer.Option(help="Ollama server, URL or host[:port] [default: $OLLAMA_HOST or http://localhost:11434]")
]
OpenAIEndpointOpt = Annotated[
    str | None,
    typer.Option(
        help="OpenAI-compatible server for openai:<name>, e.g. http://127.0.0.1:8080/v1; the key comes from "
        "$OPENAI_API_KEY [default: $OPENAI_BASE_URL or https://api.openai.com/v1]"
    ),
]
ModelOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        help="Model call setting KEY=VALUE, repeatable: num_ctx, temperature, seed, keep_alive, ... [default: none]"
    ),
]
ValidationRateOpt = Annotated[
    float | None,
    typer.Option(help="Share of trials (0-1) run by Claude Code instead of --model, chosen per trial [default: 0]"),
]
SeedOpt = Annotated[
    int | None,
    typer.Option(
        help="Seed of the per-trial model choice (and of the model's sampler) [default: none; a random one, kept "
        "in config.json, when --claude-validation-rate needs it]"
    ),
]
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
    float | None,
    typer.Option(
        help="Share of tasks (0-1) held out of learning for the proof; drawn once per project and kept [default: 0]"
    ),
]
ReflectBudgetOpt = Annotated[
    int | None, typer.Option(help="Tokens of trials shown to the reflection model per iteration [default: 6000]")
]
ControlOpt = Annotated[bool, typer.Option("--control", help="Also run held-out tasks without memory, interleaved")]
UnsafeHostOpt = Annotated[
    bool,
    typer.Option(
        "--unsafe-host-agent", help="Let model agents run unconfined on the host for local tasks when bwrap is missing"
    ),
]


BreakerAfterOpt = Annotated[
    int | None,
    typer.Option(help="Pause new trials after this many in a row failed by the model server [default: 3]"),
]
MaxOutageOpt = Annotated[
    float | None,
    typer.Option(help="Stop (resumably, exit 75) when the model server stays down this long (s) [default: 3600]"),
]
ProfileOpt = Annotated[
    str | None,
    typer.Option(
        help="Agent profile NAME from .openagents/trainer/profiles/NAME.toml (under --project-root): model, "
        "prompt, lesson policy, sampler, tools and limits; what it sets wins over the flags [default: none]"
    ),
]
NoBudgetHintOpt = Annotated[
    bool, typer.Option("--no-budget-hint", help="Do not tell the agent its time budget in its prompt")
]


def _option(name: str, annotation: Any, default: Any = None) -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)


#: Declared once, in --help order: `iterate` takes these, `overnight` takes these and OVERNIGHT_OPTIONS.
SHARED_OPTIONS: tuple[inspect.Parameter, ...] = (
    _option("suite", SuiteOpt),
    _option("output", OutputOpt),
    _option("iterations", IterationsOpt),
    _option("model", ModelOpt),
    _option("profile", ProfileOpt),
    _option("resume", ResumeOpt),
    _option("timeout", TimeoutOpt),
    _option("timeout_multiplier", TimeoutMultiplierOpt),
    _option("agent_timeout", AgentTimeoutOpt),
    _option("max_turns", MaxTurnsOpt),
    _option("run_id", RunIdOpt),
    _option("tasks", TasksOpt),
    _option("skip_invalid", SkipInvalidOpt, False),
    _option("project_root", ProjectRootOpt),
    _option("ollama_endpoint", OllamaEndpointOpt),
    _option("openai_endpoint", OpenAIEndpointOpt),
    _option("model_option", ModelOptionOpt),
    _option("claude_validation_rate", ValidationRateOpt),
    _option("seed", SeedOpt),
    _option("unsafe_host_agent", UnsafeHostOpt, False),
    _option("learn", LearnOpt, False),
    _option("memory", MemoryOpt),
    _option("reflect_model", ReflectModelOpt),
    _option("holdout", HoldoutOpt),
    _option("control", ControlOpt, False),
    _option("reflect_budget", ReflectBudgetOpt),
    _option("breaker_after", BreakerAfterOpt),
    _option("max_outage", MaxOutageOpt),
    _option("no_budget_hint", NoBudgetHintOpt, False),
)
OVERNIGHT_OPTIONS: tuple[inspect.Parameter, ...] = (
    _option(
        "workers",
        Annotated[
            str | None,
            typer.Option(help="Parallel trials: a number, or 'auto' (from free RAM and CPUs) [default: auto]"),
        ],
    ),
    _option(
        "executor",
        Annotated[
            str | None,
            typer.Option(help="Where trials run: local (worker processes) or ray (a Ray cluster) [default: local]"),
        ],
    ),
    _option(
        "ray_address",
        Annotated[
            str | None,
            typer.Option(help="Ray head HOST:PORT for --executor ray [default: $RAY_ADDRESS or this machine's]"),
        ],
    ),
    _option(
        "max_retries",
        Annotated[
            int | None,
            typer.Option(help="Retries of a trial that hit an infra error (never agent failures) [default: 2]"),
        ],
    ),
    _option(
        "retry_backoff",
        Annotated[
            float | None, typer.Option(help="First retry delay (s), doubling per retry, capped at 60 [default: 5]")
        ],
    ),
    _option(
        "stop_after_iteration",
        Annotated[
            int | None, typer.Option(help="Stop (resumably) once this iteration has finished [default: run all]")
        ],
    ),
    _option("memory_reserve_mb", Annotated[int, typer.Option(help="Free RAM never used by starting a trial")], 2048),
    _option("task_memory_mb", Annotated[int, typer.Option(help="Memory assumed for tasks that declare none")], 2048),
    _option("min_free_disk_mb", Annotated[int, typer.Option(help="Stop starting trials below this free disk")], 2048),
    _option("heartbeat_timeout", Annotated[float, typer.Option(help="Kill a worker silent this long (s)")], 60.0),
    _option(
        "stuck_grace", Annotated[float, typer.Option(help="Kill a worker this long past its phase's budget (s)")], 60.0
    ),
)
DEBUG_OPTION = _option("debug", DebugOpt, False)

#: Core field names (UserError.field) whose flag is not `--` + the name with '-' for '_'.
FIELD_FLAGS = {
    "timeout_sec": "--timeout",
    "max_outage_sec": "--max-outage",
    "budget_hint": "--no-budget-hint",
    "agent_timeout_sec": "--agent-timeout",
    "retry_backoff_sec": "--retry-backoff",
    "holdout_fraction": "--holdout",
    "lesson_id": "LESSON_ID",
}
#: Option fields named by errors that carry a path: the path is that option's value (`--resume PATH`), so the
#: field is the flag. Any other field of an error with a path is a place inside that file and shown as it is.
PATH_OPTION_FIELDS = frozenset({"resume"})


def flag_for(field: str) -> str:
    """The CLI's name for a core field: `iterations` → `--iterations`, `timeout_sec` → `--timeout`; names that
    are not field names (`OLLAMA_HOST`, `--since`, `LESSON_ID`) are shown as they are."""
    if field in FIELD_FLAGS:
        return FIELD_FLAGS[field]
    if field.isidentifier() and field.islower():
        return "--" + field.replace("_", "-")
    return field


def error_line(exc: UserError) -> str:
    """A UserError as the user reads it, fields shown as flags: `--iterations: must be at least 1 (got 0)`."""
    if exc.path is None:
        return exc.render(flag_for)
    return exc.render(lambda field: flag_for(field) if field in PATH_OPTION_FIELDS else field)


F = TypeVar("F", bound=Callable[..., None])


def _options(*params: inspect.Parameter) -> Callable[[F], F]:
    """Give a command the options `params`: typer reads them from `inspect.signature`, which honours
    `__signature__`, and calls the command with them as keyword arguments."""

    def apply(command: F) -> F:
        cast(Any, command).__signature__ = inspect.Signature(list(params), return_annotation=None)
        return command

    return apply


def _settings(options: dict[str, Any]) -> dict[str, Any]:
    """Option values as settings for `_open_run`: None = not given (an off switch is not given)."""
    return {k: (v or None) if isinstance(v, bool) else v for k, v in options.items()}


def _notify(line: str) -> None:
    console.print(line, markup=False, soft_wrap=True)


#: Settings a resumed run may take (how the rest is executed, not what it measures; an endpoint only as the
#: same URL, to give back credentials config.json does not keep); the runner's own flags
#: (`--stop-after-iteration`, the resource and watchdog knobs, `--debug`) are never part of config.json.
RESUME_FLAGS = ("workers", "max_retries", "retry_backoff_sec", "ollama_endpoint", "openai_endpoint")
#: Field names the CLI gives core settings.
CORE_NAMES = {"timeout": "timeout_sec", "agent_timeout": "agent_timeout_sec", "max_outage": "max_outage_sec"}


def _open_run(
    settings: dict[str, Any], resume: Path | None, preflight: Callable[[list[Any]], None] | None = None, **defaults: Any
) -> Run:
    """Create a run from `settings` (flag name → value, None = not given), or resume one. A resumed run keeps
    its config.json: the flags in RESUME_FLAGS may change, any other is refused rather than silently ignored."""
    from tbench.agents.model_adapter import DEFAULT_MODEL, model_settings_from_flags
    from tbench.archivist.loop import learning_from_flags
    from tbench.overnight.iterate import IterateOptions, Run

    given = {CORE_NAMES.get(k, k): v for k, v in settings.items() if v is not None}
    if resume is not None:
        refused = [name for name in given if name not in RESUME_FLAGS]
        if refused:
            allowed = ", ".join(flag_for(n) for n in RESUME_FLAGS)
            raise UserError(
                f"{', '.join(flag_for(n) for n in refused)} cannot change on --resume: the run keeps what its "
                f"config.json says so all its iterations measure the same thing (you may change {allowed}, "
                "--stop-after-iteration, the resource flags and --debug); start a new run to change it",
                field="resume",
            )
        run = Run.resume(resume, _notify, given, preflight)
        changed = ", ".join(f"{flag_for(k)} {redact_url(str(v))}" for k, v in given.items())
        _notify(f"Resuming {run.config.run_id} in {run.dir}" + (f" with {changed}" if changed else ""))
        return run
    if settings["suite"] is None:
        raise UserError("missing; give --suite PATH (or --resume PATH/state.json)", field="suite")
    if "profile" in given:  # read before anything is written: an unknown or broken profile is one line
        from tbench.trainer.schema import find_profile

        given["profile"] = find_profile(given.get("project_root") or Path.cwd(), given["profile"])
    given["models"] = model_settings_from_flags(given)
    given["learning"] = learning_from_flags(given)
    opts = IterateOptions(
        **{
            "iterations": 10,
            "model": DEFAULT_MODEL,
            "timeout_sec": 3600.0,
            **defaults,
            **{k: v for k, v in given.items() if k != "no_budget_hint"},
            "budget_hint": not given.get("no_budget_hint"),
            "tasks": tuple(given.get("tasks") or ()),
        }
    )
    run = Run.create(opts, _notify, preflight)
    _notify(
        f"Run {run.config.run_id}: {len(run.tasks)} task(s) x {run.config.iterations} iteration(s), "
        f"model {run.config.model}"
        + (f", profile {run.config.profile.id}" if run.config.profile is not None else "")
        + f" → {run.dir}"
    )
    return run


def _resume_hint(run: Run) -> str:
    return f"Resume with: tbench-{run.config.runner} --resume {run.dir / 'state.json'}"


def _done(run: Run) -> None:
    """The last line of a finished run; a run that graded nothing says so and exits 1 (its figures are empty)."""
    if run.graded_nothing():
        err_console.print(
            f"tbench: no trial was graded: every trial ended in an infra or build error, so this run says nothing "
            f"about the agent (see {run.dir / 'report.md'})",
            markup=False,
            soft_wrap=True,
        )
        raise typer.Exit(1)
    _notify(f"Done. Report: {run.dir / 'report.md'}")


@_options(*SHARED_OPTIONS, DEBUG_OPTION)
def iterate(**options: Any) -> None:
    """Run a suite N times in order, recording each iteration as an Episode (the seed's tbench-iterate)."""
    global DEBUG
    DEBUG = DEBUG or options.pop("debug")
    resume = options.pop("resume")
    run = _open_run(_settings(options), resume)
    try:
        state = run.execute()
    except KeyboardInterrupt:
        err_console.print(f"interrupted; state saved. {_resume_hint(run)}", markup=False, soft_wrap=True)
        raise typer.Exit(130) from None
    if state.status != "completed":
        err_console.print(f"stopped: {run.stop.reason}; state saved. {_resume_hint(run)}", markup=False, soft_wrap=True)
        raise typer.Exit(run.stop.exit_code)
    _done(run)


@_options(*SHARED_OPTIONS, *OVERNIGHT_OPTIONS, DEBUG_OPTION)
def overnight(**options: Any) -> None:
    """Run a suite N times with trials in parallel worker processes or on a Ray cluster; survives kill -9
    (`--resume`)."""
    global DEBUG
    DEBUG = DEBUG or options.pop("debug")
    resume = options.pop("resume")
    extra = {p.name: options.pop(p.name) for p in OVERNIGHT_OPTIONS}
    settings = _settings(options)
    settings.update(
        workers=_parse_workers(extra["workers"]),
        executor=_parse_executor(extra["executor"], extra["ray_address"], extra["workers"]),
        ray_address=extra["ray_address"],
        max_retries=extra["max_retries"],
        retry_backoff_sec=extra["retry_backoff"],
    )
    kind, address = settings["executor"] or "local", extra["ray_address"]
    if resume is not None:
        from tbench.models.run import load_run

        config, _ = load_run(resume)
        kind, address = config.executor, config.ray_address
    if kind == "ray" and settings["suite"] is not None:
        settings["suite"] = settings["suite"].resolve()  # task paths are read on every node: make them absolute
    cluster = _ray_cluster(address) if kind == "ray" else None  # before any run folder is made
    try:
        preflight = None if cluster is None else partial(cluster.preflight, default_task_mb=extra["task_memory_mb"])
        run = _open_run(settings, resume, preflight, runner="overnight", workers="auto", max_retries=2)
        executor = _executor(run, cluster, extra)
    except BaseException:
        if cluster is not None:
            cluster.shutdown()
        raise
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
        state = run.execute(stop_after_iteration=extra["stop_after_iteration"])
    finally:
        executor.close()
    if state.status == "completed":
        _done(run)
        return
    err_console.print(f"stopped: {run.stop.reason}; state saved. {_resume_hint(run)}", markup=False, soft_wrap=True)
    raise typer.Exit(run.stop.exit_code)


def _executor(run: Run, cluster: RayCluster | None, extra: dict[str, Any]) -> Executor:
    from tbench.overnight.parallel import ParallelExecutor, Watchdog
    from tbench.overnight.progress import Progress
    from tbench.overnight.resources import Budget

    if cluster is not None:
        from tbench.overnight.ray_executor import RayExecutor

        progress = Progress(console, run.config.iterations, f"ray:{cluster.capacity()}")
        ray_executor = RayExecutor(cluster, run.config.run_id, progress, extra["task_memory_mb"])
        removed = ray_executor.sweep_run()  # what a killed driver left on any node
        if removed:
            _notify(f"removed {removed} container(s) left on the cluster's nodes by the interrupted run")
        return ray_executor
    budget = Budget(
        default_task_mb=extra["task_memory_mb"],
        reserve_mb=extra["memory_reserve_mb"],
        min_free_disk_mb=extra["min_free_disk_mb"],
    )
    progress = Progress(console, run.config.iterations, str(run.config.workers))
    watchdog = Watchdog(extra["heartbeat_timeout"], extra["stuck_grace"])
    return ParallelExecutor(run.config.workers, budget, watchdog, progress)


def _ray_cluster(address: str | None) -> RayCluster:
    """Join the Ray cluster (only now is Ray imported); a missing install is the user's to fix, in one line."""
    try:
        from tbench.overnight.ray_executor import RayCluster
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] != "ray":
            raise
        raise UserError("Ray is not installed: pip install 'tbench[ray]' (on the driver and every node)",
                        field="executor") from None  # fmt: skip
    return RayCluster.connect(address)


def _parse_executor(value: str | None, ray_address: str | None, workers: str | None) -> str | None:
    if value not in (None, "local", "ray"):
        raise UserError(f"expected local or ray, got {value!r}", field="executor")
    if ray_address is not None and value != "ray":
        raise UserError("only with --executor ray", field="ray_address")
    if value == "ray" and workers is not None:
        raise UserError(
            "not with --executor ray: each node's tbench_containers resource sets its trials", field="workers"
        )
    return value


def _parse_workers(value: str | None) -> int | str | None:
    if value is None or value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UserError(f"expected a number or 'auto', got {value!r}", field="workers") from None


app.command("iterate")(iterate)
app.command("overnight")(overnight)


@app.command()
def examples() -> None:
    """Print the paths of the bundled example suites."""
    root = Path(str(files("tbench") / "examples"))
    for name in ("local-suite.json", "tb2", "tb1", "command-gym"):
        path = root / name
        if path.exists():
            console.print(str(path), markup=False)


@app.command()
def version() -> None:
    """Print the tbench version."""
    console.print(__version__)


register_report_commands(app)  # report, compare, episodes, baseline (cli/report_cmds.py)
register_lessons_commands(app)  # lessons list|show|reflect|retire|export|import (cli/lessons_cmds.py)
register_train_commands(app)  # train envs|plan|run|status|report|promote (cli/train_cmds.py)


def _run(typer_app: typer.Typer) -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        rc = typer_app(standalone_mode=False)
        if isinstance(rc, int) and rc:
            sys.exit(rc)
    except UserError as exc:
        if DEBUG:
            traceback.print_exc()
        err_console.print(f"tbench: error: {error_line(exc)}", markup=False, soft_wrap=True)
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
    single = typer.Typer(rich_markup_mode=None, add_completion=False, pretty_exceptions_enable=False)
    single.command()(command)
    _run(single)


def iterate_main() -> None:
    _single(iterate)


def overnight_main() -> None:
    _single(overnight)
