"""`tbench train envs|plan|run|status|report|promote`: the Trainer (the seed's `trainer:run`).

Registered on the main app by `register(app)`; bad input raises `UserError` (one line, exit 2). Nothing a training
run finds is applied to the project until `promote`."""

from __future__ import annotations

import signal
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from tbench.errors import UserError

if TYPE_CHECKING:
    from tbench.models.model_settings import ModelSettings
    from tbench.trainer.schema import TrainerResult

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)

ProjectRoot = Annotated[
    Path | None, typer.Option("--project-root", help="Where .openagents/ (profiles, episodes) lives [default: cwd]")
]
Folder = Annotated[Path, typer.Argument(help="The training folder (--output of `tbench train run`)")]
PlanArg = Annotated[Path, typer.Argument(help="PLAN.toml")]


def _say(text: str) -> None:
    console.print(text, markup=False, soft_wrap=True)


def _settings(
    ollama_endpoint: str | None, openai_endpoint: str | None, model_option: list[str] | None
) -> ModelSettings:
    from tbench.agents.model_adapter import model_settings_from_flags

    given: dict[str, Any] = {"ollama_endpoint": ollama_endpoint, "openai_endpoint": openai_endpoint,
                             "model_option": model_option}  # fmt: skip
    return model_settings_from_flags({k: v for k, v in given.items() if v is not None})


train = typer.Typer(
    rich_markup_mode=None,
    no_args_is_help=True,
    help="The Trainer: compare and evolve agent profiles.\n\nA/B with racing, power planning, evolution, promote.",
)


@train.command("envs")
def envs(
    paths: Annotated[
        list[Path] | None, typer.Argument(help="Suites to describe [default: the bundled examples]")
    ] = None,
) -> None:
    """Kinds of gym environment, and what each suite is."""
    from tbench.trainer.gym import envs_text

    _say(envs_text(list(paths or [])))


OllamaEndpoint = Annotated[str | None, typer.Option(help="Ollama server, URL or host[:port] [default: $OLLAMA_HOST]")]
OpenAIEndpoint = Annotated[
    str | None, typer.Option(help="OpenAI-compatible server for openai:<name> [default: $OPENAI_BASE_URL]")
]
ModelOption = Annotated[list[str] | None, typer.Option(help="Model call setting KEY=VALUE, repeatable [default: none]")]


@train.command("plan")
def plan(
    plan_file: PlanArg,
    project_root: ProjectRoot = None,
    effect: Annotated[float | None, typer.Option(help="Target effect in pp [default: the plan's power.effect]")] = None,
    ollama_endpoint: OllamaEndpoint = None,
    openai_endpoint: OpenAIEndpoint = None,
    model_option: ModelOption = None,
) -> None:
    """Trials per task the plan needs (power, from measured variance).

    Writes nothing."""
    from tbench.trainer.planning import plan_text, power_plan

    root = (project_root or Path.cwd()).resolve()
    settings = _settings(ollama_endpoint, openai_endpoint, model_option)
    _say(plan_text(power_plan(plan_file, root, settings, None if effect is None else effect / 100)))


@train.command("run")
def run(
    plan_file: Annotated[Path | None, typer.Argument(help="PLAN.toml [required unless --resume]")] = None,
    output: Annotated[Path | None, typer.Option(help="Training folder [default: results/train-...]")] = None,
    resume: Annotated[Path | None, typer.Option(help="Resume the training folder DIR [default: a new one]")] = None,
    project_root: ProjectRoot = None,
    ollama_endpoint: OllamaEndpoint = None,
    openai_endpoint: OpenAIEndpoint = None,
    model_option: ModelOption = None,
    reflect_model: Annotated[
        str | None, typer.Option(help="evolve: reflection model, ollama:<name> or openai:<name> [default: the plan's]")
    ] = None,
    stop_after_round: Annotated[
        int | None, typer.Option(help="Stop (resumably) after this round [default: run all]")
    ] = None,
) -> None:
    """Run a plan: A/B with racing, or evolution.

    Profiles run interleaved, round by round, through the overnight runner; kill it and --resume DIR."""
    from tbench.trainer.evolution import open_training
    from tbench.trainer.service import TrainOptions, headline

    settings = _settings(ollama_endpoint, openai_endpoint, model_option)
    opts = TrainOptions(plan=plan_file, output=output, project_root=project_root, models=settings,
                        reflect_model=reflect_model)  # fmt: skip
    if resume is not None and output is not None:
        raise UserError("give either --resume DIR or --output DIR, not both", field="output")
    trainer = open_training(opts, _say, resume=resume)
    _say(f"Training {trainer.folder.name}: {', '.join(trainer.result.plan.profiles)} on "
         f"{len(trainer.result.tasks)} task(s) -> {trainer.folder}")  # fmt: skip

    def on_signal(signum: int, frame: FrameType | None) -> None:
        trainer.request_stop(f"{signal.Signals(signum).name} received", exit_code=130)
        err_console.print("stopping: no new trials; running ones finish.")

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    result = trainer.run(stop_after_round=stop_after_round)
    _write_reports(trainer.folder, result)
    _say(headline(result))
    if result.status == "stopped":
        err_console.print(f"stopped: {result.stop_reason}; resume with: tbench train run --resume {trainer.folder}",
                          markup=False, soft_wrap=True)  # fmt: skip
        raise typer.Exit(trainer.exit_code or 1)
    _say(f"Report: {trainer.folder / 'report.md'}")


def _write_reports(folder: Path, result: TrainerResult) -> tuple[Path, Path]:
    from tbench.trainer.analyzer import analyze, write_analysis
    from tbench.trainer.report import write_trainer_reports

    analysis = analyze(folder, result)
    write_analysis(folder, analysis)
    return write_trainer_reports(folder, result, analysis)


@train.command("status")
def status(folder: Folder) -> None:
    """Where a training run stands.

    Rounds, each profile's rate, racing, the verdict so far."""
    from tbench.trainer.readout import load_result
    from tbench.trainer.service import headline

    result = load_result(folder)
    _say(f"{folder}: {result.plan.strategy}, round {result.rounds_done}/{result.rounds_planned}, {headline(result)}")
    for p in result.profiles:
        rate = "n/a" if p.pass_rate is None else f"{p.pass_rate:.1%}"
        stopped = f", dropped after round {p.stopped_at_round}" if p.stopped_at_round else ""
        _say(f"  {p.id}: {rate} ({p.passed}/{p.graded_trials} graded, {p.trials} trials){stopped}")
    for d in result.racing:
        if d.action == "dropped":
            _say(f"  racing: {d.profile} dropped after round {d.round} (p = {d.p_value:.3g} at alpha {d.alpha:.3g})")
    if result.verdict is not None:
        _say(f"verdict: {result.verdict.sentence}")
    if result.evolution is not None:
        ev = result.evolution
        _say(f"evolution: {len(ev.candidates)} candidate(s), best {ev.best or 'none'}, "
             f"proposed {ev.proposed or 'none'}")  # fmt: skip
    if result.stop_reason:
        _say(f"stopped: {result.stop_reason}")


@train.command("report")
def report(folder: Folder) -> None:
    """Write report.md and report.html."""
    from tbench.trainer.readout import load_result

    md, html = _write_reports(folder, load_result(folder))
    _say(f"{md}\n{html}")


@train.command("promote")
def promote(
    folder: Folder,
    project_root: ProjectRoot = None,
    as_name: Annotated[str | None, typer.Option("--as", help="Profile id to write it as [default: its own]")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite a different profile of that id")] = False,
) -> None:
    """Write the winner where --profile finds it.

    To .openagents/trainer/profiles/<id>.toml; nothing else the Trainer does touches the project."""
    from tbench.trainer.service import promote_winner

    path, profile_id = promote_winner(folder, project_root, as_name, force=force)
    _say(f"promoted {profile_id} -> {path}\nuse it with: tbench-overnight --profile {profile_id} ...")


def register(app: typer.Typer) -> None:
    app.add_typer(train, name="train")
