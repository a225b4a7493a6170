"""Where trials come from for reports and comparisons: run folders, iteration folders, `results.json` files,
and the baseline a project chose (`.openagents/gym/baseline.json`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tbench.bench.episode_store import EpisodeStore
from tbench.errors import UserError
from tbench.fsutil import atomic_write_model
from tbench.models.common import read_model, utcnow
from tbench.models.episode import BaselineChoice
from tbench.models.layout import IterationPaths, ProjectLayout, RunLayout
from tbench.models.results import TerminalBenchResults, TrialResult
from tbench.models.run import RunConfig, RunState, load_run
from tbench.models.summary import IterationDelta


@dataclass(frozen=True)
class RunFolder:
    """A run folder's finished iterations (those state.json marks done), read at the file boundary."""

    dir: Path
    config: RunConfig
    state: RunState
    iterations: list[TerminalBenchResults]
    deltas: list[IterationDelta]

    @property
    def trials(self) -> list[TrialResult]:
        return [r for it in self.iterations for r in it.results]


@dataclass(frozen=True)
class TrialSet:
    """Trials to compare, with a label a person recognises (`run-id` or `run-id@3`)."""

    label: str
    trials: list[TrialResult]
    suite_name: str


def read_results(path: Path) -> TerminalBenchResults:
    return read_model(path, TerminalBenchResults, "an iteration's results.json")


def load_run_folder(run_dir: Path) -> RunFolder:
    config, state = load_run(run_dir)
    layout = RunLayout(run_dir)
    iterations, deltas = [], []
    for it in state.iterations:
        paths = layout.iteration(it.iteration)
        if it.status != "done" or not paths.results.is_file():
            continue
        iterations.append(read_results(paths.results))
        if paths.delta.is_file():
            deltas.append(read_model(paths.delta, IterationDelta, "an iteration's delta.json"))
    return RunFolder(run_dir.resolve(), config, state, iterations, deltas)


def load_trial_set(path: Path) -> TrialSet:
    """A run folder (all finished iterations), an iteration folder, or a results.json."""
    if path.is_dir() and RunLayout(path).is_run():
        run = load_run_folder(path)
        if not run.iterations:
            raise UserError("this run has no finished iteration yet", path=path)
        return TrialSet(run.config.run_id, run.trials, run.config.suite_name)
    results = IterationPaths(path).results if path.is_dir() else path
    if not results.is_file():
        raise UserError("not a run folder, an iteration folder or a results.json", path=path)
    tb = read_results(results)
    return TrialSet(f"{tb.run_id}@{tb.iteration}", tb.results, tb.suite_name)


# ---------------------------------------------------------------- baseline


def baseline_path(project_root: Path) -> Path:
    return ProjectLayout(project_root).baseline


def set_baseline(project_root: Path, run_dir: Path, iteration: int | None = None) -> BaselineChoice:
    run = load_run_folder(run_dir)
    done = [it.iteration for it in run.iterations]
    if not done:
        raise UserError("this run has no finished iteration yet; a baseline needs one", path=run_dir)
    if iteration is not None and iteration not in done:
        raise UserError(f"iteration {iteration} is not finished in this run (finished: {done})", field="iteration")
    chosen = [it for it in run.iterations if iteration is None or it.iteration == iteration]
    if all(it.summary.pass_rate is None for it in chosen):
        raise UserError(
            "graded no trial (every one was an infra or build error); it cannot be a baseline", path=run_dir
        )
    choice = BaselineChoice(
        run_id=run.config.run_id,
        run_dir=str(run.dir),
        iteration=iteration,
        suite_name=run.config.suite_name,
        model=run.config.model,
        set_at=utcnow(),
    )
    atomic_write_model(baseline_path(project_root), choice)
    return choice


def read_baseline(project_root: Path) -> BaselineChoice | None:
    return EpisodeStore(ProjectLayout(project_root).gym_dir).baseline_choice()


@dataclass(frozen=True)
class Baseline:
    trials: TrialSet
    how: str
    """Why this is the baseline, for the report."""


def resolve_baseline(project_root: Path, *, run_id: str, suite_name: str) -> tuple[Baseline | None, str]:
    """The baseline for a run and a line saying which it is (or why there is none).

    Which episode is the baseline is `EpisodeStore.get_baseline`'s rule alone (the choice in baseline.json,
    else the latest `success` episode of the suite from another run); this only loads its trials — the whole
    chosen run when `tbench baseline set` named no iteration. Problems become the line, never an exception, so
    a missing baseline can never stop the report of an overnight run.
    """
    store = EpisodeStore(ProjectLayout(project_root).gym_dir)
    try:
        choice = store.baseline_choice()
        episode = store.get_baseline(suite_name=suite_name, exclude_run_id=run_id)
    except UserError as exc:
        return None, str(exc)
    chosen = choice is not None and choice.suite_name == suite_name
    if chosen and choice is not None and choice.run_id == run_id:
        return None, "this run is the baseline"
    if episode is None:
        if chosen and choice is not None:
            return None, f"the baseline set with `tbench baseline set` ({choice.run_id}) has no graded episode here"
        return None, "none yet; set one with `tbench baseline set RUN_DIR`"
    if chosen and choice is not None:
        source = Path(choice.run_dir)
        if choice.iteration is not None:
            source = RunLayout(source).iteration(choice.iteration).dir
        how, what = "set with `tbench baseline set`", "the baseline set with `tbench baseline set`"
    else:
        source = Path(episode.results_path)
        how = f"the latest successful episode `{episode.id}` (none set with `tbench baseline set`)"
        what = f"the latest successful episode {episode.id}"
    try:
        trials = load_trial_set(source)
    except UserError as exc:
        return None, f"{what} cannot be read: {exc}"
    return Baseline(trials, how), ""
