"""The seed's iteration loop (Phase 1): run the suite N times in order, one trial at a time, recording
results, deltas and one Episode per iteration; resumable after any crash."""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from tbench import __version__
from tbench.agents.base import ModelRunner
from tbench.agents.model_adapter import (
    ModelPlan,
    ModelSettings,
    build_model_plan,
    create_model_runner,
    model_config_for,
)
from tbench.archivist.loop import base_id, open_learning, split_holdout, with_control
from tbench.archivist.schema import LearningConfig
from tbench.bench.environments import EnvironmentFactory
from tbench.bench.episode_store import Episode, EpisodeModelSummary, EpisodeStore, EpisodeSummary, episode_status
from tbench.bench.formats import load_suite, select_tasks
from tbench.bench.tasks import Summary, Task, TerminalBenchResults, TrialResult, utcnow
from tbench.bench.trial import TrialSpec, run_trial
from tbench.errors import UserError
from tbench.fsutil import SAFE_ID, atomic_write_model, child_path
from tbench.overnight.state import CONFIG_FILE, IterationState, RunConfig, RunState, load_run
from tbench.report.run_report import write_reports
from tbench.report.summary import IterationDelta, compute_delta, summarize_run

GYM_DIR = Path(".openagents") / "gym"
Notify = Callable[[str], None]
Executor = Callable[["Run", IterationState, list[Task]], None]


def build_runner(config: RunConfig, model_label: str) -> ModelRunner:
    """The agent for one trial of this run (worker processes build their own)."""
    return create_model_runner(model_config_for(model_label, config.model_settings))


def run_sequential(run: Run, it: IterationState, tasks: list[Task]) -> None:
    """Phase 1: one trial at a time, in the orchestrator's own process."""
    for task in tasks:
        if run.stop.reason:
            return
        while True:
            spec = run.begin_trial(it, task)
            result = run_trial(spec, run.models.runner(spec.model_label), run.envs.create)
            if run.finish_trial(it, task, result):
                break
            time.sleep(run.retry_delay(it, task))


@dataclass(frozen=True)
class IterateOptions:
    suite: Path
    output: Path | None = None
    iterations: int = 10
    model: str = "claude-code"
    timeout_sec: float = 3600.0
    max_turns: int | None = None
    run_id: str | None = None
    tasks: tuple[str, ...] = ()
    project_root: Path | None = None
    runner: Literal["iterate", "overnight"] = "iterate"
    workers: int | Literal["auto"] = 1
    max_retries: int = 0
    retry_backoff_sec: float = 5.0
    models: ModelSettings = field(default_factory=ModelSettings)
    """Endpoints, model options, --claude-validation-rate, --seed, --unsafe-host-agent."""
    learning: LearningConfig = field(default_factory=LearningConfig)
    """--memory, --reflect-model, --holdout, --control; the held-out split is drawn in `Run.create`."""


@dataclass
class StopControl:
    """Why the run should stop starting trials. Signals, the STOP file, --stop-after-iteration and the disk
    guard all land here; `cancel` (a second signal) also ends running trials."""

    reason: str | None = None
    exit_code: int = 0
    cancel: bool = False

    def request(self, reason: str, exit_code: int = 0) -> None:
        if self.reason is None:
            self.reason, self.exit_code = reason, exit_code


STOP_FILE = "STOP"


def new_run_id() -> str:
    return f"tbrun-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


def iteration_dir(run_dir: Path, i: int) -> Path:
    return run_dir / "iterations" / f"{i:03d}"


class Run:
    """A run folder being filled: config, state, the suite's selected tasks, the agent and environments."""

    def __init__(
        self,
        run_dir: Path,
        config: RunConfig,
        state: RunState,
        tasks: list[Task],
        models: ModelPlan,
        envs: EnvironmentFactory,
        notify: Notify,
    ) -> None:
        self.dir = run_dir
        self.config = config
        self.state = state
        self.tasks = tasks
        self.models = models
        self.envs = envs
        self.notify = notify
        self.store = EpisodeStore(Path(config.project_root) / GYM_DIR)
        self.executor: Executor = run_sequential
        self.stop = StopControl()
        self.learning = open_learning(
            config.learning, Path(config.project_root), config.suite_name, config.model, config.model_settings
        )

    # ------------------------------------------------------------------ set-up

    @classmethod
    def create(cls, opts: IterateOptions, notify: Notify) -> Run:
        """Validate everything first; only then make the run folder, so bad input writes nothing."""
        if opts.iterations < 1:
            raise UserError(f"must be at least 1 (got {opts.iterations})", field="--iterations")
        if opts.timeout_sec <= 0:
            raise UserError(f"must be positive (got {opts.timeout_sec:g})", field="--timeout")
        if opts.workers != "auto" and opts.workers < 1:
            raise UserError(f"must be at least 1 or 'auto' (got {opts.workers})", field="--workers")
        if opts.max_retries < 0:
            raise UserError(f"must be 0 or more (got {opts.max_retries})", field="--max-retries")
        if opts.max_turns is not None and opts.max_turns < 1:
            raise UserError(f"must be at least 1 (got {opts.max_turns})", field="--max-turns")
        run_id = opts.run_id or new_run_id()
        if not SAFE_ID.match(run_id):
            raise UserError(f"{run_id!r} is not allowed: use letters, digits, '.', '_' or '-'", field="--run-id")
        suite = select_tasks(load_suite(opts.suite), list(opts.tasks))
        models = build_model_plan(opts.model, opts.models)
        output = opts.output or Path("results") / datetime.now().strftime("%Y%m%d")
        if output.exists() and (not output.is_dir() or any(output.iterdir())):
            raise UserError(
                f"already exists; resume it with --resume {output / 'state.json'} or choose another --output",
                path=output,
            )
        envs = EnvironmentFactory()
        envs.preflight(suite.tasks)
        models.preflight(suite.tasks)
        project_root = (opts.project_root or Path.cwd()).resolve()
        learning = opts.learning.model_copy(
            update={"holdout_tasks": split_holdout([t.id for t in suite.tasks], opts.learning.holdout_fraction,
                                                   models.settings.seed or 0)}
        )  # fmt: skip
        open_learning(learning, project_root, suite.name, models.primary.label, models.settings)  # fail fast
        tasks = with_control(suite.tasks, learning)
        config = RunConfig(
            run_id=run_id,
            created_at=utcnow(),
            tbench_version=__version__,
            suite=str(opts.suite.resolve()),
            suite_name=suite.name,
            suite_version=suite.version,
            task_globs=list(opts.tasks),
            task_ids=[t.id for t in tasks],
            model=models.primary.label,
            model_settings=models.settings,
            iterations=opts.iterations,
            timeout_sec=opts.timeout_sec,
            max_turns=opts.max_turns,
            output=str(output.resolve()),
            project_root=str(project_root),
            runner=opts.runner,
            workers=opts.workers,
            max_retries=opts.max_retries,
            retry_backoff_sec=opts.retry_backoff_sec,
            learning=learning,
        )
        output = output.resolve()
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_model(output / CONFIG_FILE, config)
        state = RunState.new(config)
        state.save(output)
        return cls(output, config, state, tasks, models, envs, notify)

    @classmethod
    def resume(cls, state_path: Path, notify: Notify) -> Run:
        config, state = load_run(state_path)
        run_dir = (state_path.parent if state_path.name.endswith(".json") else state_path).resolve()
        suite = load_suite(Path(config.suite))
        by_id = {t.id: t for t in with_control(suite.tasks, config.learning)}
        missing = [base_id(t) for t in config.task_ids if t not in by_id]
        if missing:
            raise UserError(f"tasks of this run are gone from the suite: {', '.join(missing)}", path=config.suite)
        tasks = [by_id[t] for t in config.task_ids]
        models = ModelPlan(model_config_for(config.model, config.model_settings), config.model_settings)
        envs = EnvironmentFactory()
        envs.preflight(tasks)
        models.preflight(tasks)
        removed = envs.cleanup_run(config.run_id)
        if removed:
            notify(f"removed {removed} container(s) left behind by the interrupted run")
        if (run_dir / STOP_FILE).exists():
            (run_dir / STOP_FILE).unlink()
            notify(f"removed {run_dir / STOP_FILE} left by the previous stop")
        state.resumes += 1
        state.status = "running"
        state.save(run_dir)
        return cls(run_dir, config, state, tasks, models, envs, notify)

    # ------------------------------------------------------------------ the loop

    def execute(self, stop_after_iteration: int | None = None) -> RunState:
        """Run every unfinished iteration in order. Stops early (state `stopped`, resumable) when asked to."""
        try:
            for it in self.state.iterations:
                if it.status == "done":
                    continue
                if self.stop.reason:
                    break
                if not self._run_iteration(it):
                    break  # stopped inside the iteration
                if stop_after_iteration is not None and it.iteration >= stop_after_iteration:
                    self.stop.request(f"--stop-after-iteration {stop_after_iteration} reached")
                if (self.dir / STOP_FILE).exists():
                    self.stop.request(f"{self.dir / STOP_FILE} found")
            done = all(it.status == "done" for it in self.state.iterations)
            self.state.status = "completed" if done else "stopped"
        except BaseException:
            self.state.status = "interrupted"
            raise
        finally:
            self.state.save(self.dir)
            self.write_summary()
        return self.state

    def _run_iteration(self, it: IterationState) -> bool:
        """Run the iteration's unfinished trials; True when it finished (False: stopped inside it)."""
        self.notify(f"=== Iteration {it.iteration}/{self.config.iterations} ===")
        if it.started_at is None:
            it.started_at = utcnow()
        it.status = "running"
        self.state.save(self.dir)
        pending = [task for task in self.tasks if not self._already_done(it, task)]
        self.executor(self, it, pending)
        if not all(ts.status == "done" for ts in it.trials.values()):
            return False
        self._finish_iteration(it)
        return True

    def trial_dir(self, it: IterationState, task: Task) -> Path:
        return child_path(iteration_dir(self.dir, it.iteration), task.id)

    def _already_done(self, it: IterationState, task: Task) -> bool:
        ts = it.trials[task.id]
        if ts.status == "running" and self._committed(self.trial_dir(it, task)):
            ts.status, ts.outcome = "done", self._load_result(self.trial_dir(it, task)).status  # killed after commit
        return ts.status == "done"

    def _move_aside(self, it: IterationState, trial_dir: Path, folder: str, n: int) -> None:
        aside = iteration_dir(self.dir, it.iteration) / folder / f"{trial_dir.name}.{n}"
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(aside, ignore_errors=True)
        trial_dir.rename(aside)

    def begin_trial(self, it: IterationState, task: Task) -> TrialSpec:
        """Mark the trial running (state saved) and give it a clean folder; an interrupted attempt's folder is
        kept aside under `_interrupted/` for inspection."""
        ts = it.trials[task.id]
        trial_dir = self.trial_dir(it, task)
        if trial_dir.exists():
            self._move_aside(it, trial_dir, "_interrupted", ts.attempts)
        ts.status, ts.attempts = "running", ts.attempts + 1
        ts.trial_dir = trial_dir.relative_to(self.dir).as_posix()
        self.state.save(self.dir)
        lessons = self.learning.inject(it.iteration, task)
        return TrialSpec(
            task=task,
            run_id=self.config.run_id,
            iteration=it.iteration,
            trial_id=f"{self.config.run_id}-{it.iteration:03d}-{task.id}",
            trial_dir=trial_dir,
            run_dir=self.dir,
            model_label=self.models.choose(it.iteration, base_id(task.id)).label,  # both arms: one model
            default_timeout_sec=self.config.timeout_sec,
            max_turns=self.config.max_turns,
            system_prompt_append=lessons.text,
            lesson_ids=tuple(lessons.ids),
        )

    def finish_trial(self, it: IterationState, task: Task, result: TrialResult) -> bool:
        """Commit `result`, or — for an infra error with retries left — set the attempt aside under `_retries/`
        and leave the trial pending. Returns True when committed."""
        ts = it.trials[task.id]
        trial_dir = self.trial_dir(it, task)
        if result.is_infra and ts.retries < self.config.max_retries:
            ts.retries += 1
            if trial_dir.exists():
                self._move_aside(it, trial_dir, "_retries", ts.retries)
            ts.status = "pending"
            self.state.save(self.dir)
            self.notify(
                f"  {task.id}: infra error, retry {ts.retries}/{self.config.max_retries}: {result.error_message}"
            )
            return False
        result.attempts, result.retries = ts.attempts, ts.retries
        atomic_write_model(trial_dir / "result.json", result)  # the commit marker
        ts.status, ts.outcome = "done", result.status
        self.state.save(self.dir)
        self._write_results(it, final=False)
        history = [p.trials[task.id].outcome for p in self.state.iterations if p.iteration < it.iteration]
        self.learning.after_trial(result, [h for h in history if h is not None])
        extra = f" [{result.failure_mode}]" if result.failure_mode else ""
        self.notify(f"  {task.id}: {result.status}{extra} ({result.duration_ms / 1000:.1f}s)")
        return True

    def retry_delay(self, it: IterationState, task: Task) -> float:
        """Exponential backoff for the next attempt of an infra-failed trial, capped at 60 s."""
        n = it.trials[task.id].retries
        return 0.0 if n == 0 else min(60.0, self.config.retry_backoff_sec * 2 ** (n - 1))

    @staticmethod
    def _committed(trial_dir: Path) -> bool:
        return (trial_dir / "result.json").is_file()

    @staticmethod
    def _load_result(trial_dir: Path) -> TrialResult:
        return TrialResult.model_validate_json((trial_dir / "result.json").read_text())

    def _results_of(self, it: IterationState) -> list[TrialResult]:
        out = []
        for task in self.tasks:
            trial_dir = child_path(iteration_dir(self.dir, it.iteration), task.id)
            if it.trials[task.id].status == "done" and self._committed(trial_dir):
                out.append(self._load_result(trial_dir))
        return out

    def _write_results(self, it: IterationState, *, final: bool) -> TerminalBenchResults:
        results = self._results_of(it)
        now = utcnow()
        tb = TerminalBenchResults(
            suite_name=self.config.suite_name,
            suite_version=self.config.suite_version,
            model=self.config.model,
            run_id=self.config.run_id,
            iteration=it.iteration,
            timestamp=now,
            started_at=it.started_at or now,
            finished_at=(it.finished_at or now) if final else now,
            results=results,
            summary=Summary.of(results),
        )
        atomic_write_model(iteration_dir(self.dir, it.iteration) / "results.json", tb)
        return tb

    def _finish_iteration(self, it: IterationState) -> None:
        it.finished_at = it.finished_at or utcnow()
        results = self._write_results(it, final=True)
        if it.iteration > 1:
            previous = self.load_iteration(it.iteration - 1)
            if previous is not None:
                atomic_write_model(
                    iteration_dir(self.dir, it.iteration) / "delta.json", compute_delta(previous, results)
                )
        episode_id = f"{self.config.run_id}-{it.iteration:03d}"
        self.store.record(
            Episode(
                id=episode_id,
                run_id=self.config.run_id,
                iteration=it.iteration,
                model=self.config.model,
                suite_name=self.config.suite_name,
                suite_version=self.config.suite_version,
                started_at=results.started_at,
                finished_at=results.finished_at,
                status=episode_status(results.summary.pass_rate),
                summary=EpisodeSummary.of(results.summary),
                results_path=str(iteration_dir(self.dir, it.iteration) / "results.json"),
                by_model={k: EpisodeModelSummary(**v.model_dump()) for k, v in results.summary.by_model.items()},
            )
        )
        reflection = self.learning.after_iteration(
            self.dir,
            self.config.run_id,
            it.iteration,
            results.results,
            [t for t in self.tasks if t.id == base_id(t.id)],
        )
        if reflection is not None:
            applied = sum(o.applied for o in reflection.operations)
            self.notify(
                f"Reflection ({reflection.model}): {reflection.status}, {applied} operation(s) applied"
                + (f" — {reflection.reason}" if reflection.reason else "")
            )
        it.episode_id, it.status = episode_id, "done"
        self.state.save(self.dir)
        self.write_summary()
        s = results.summary
        self.notify(f"Iteration {it.iteration}: {s.passed}/{s.total} passed ({s.pass_rate:.1%})")

    # ------------------------------------------------------------------ outputs

    def load_iteration(self, i: int) -> TerminalBenchResults | None:
        path = iteration_dir(self.dir, i) / "results.json"
        if not path.is_file():
            return None
        return TerminalBenchResults.model_validate_json(path.read_text())

    def write_summary(self) -> None:
        done = [it.iteration for it in self.state.iterations if it.status == "done"]
        iterations = [r for i in done if (r := self.load_iteration(i)) is not None]
        summary = summarize_run(
            run_id=self.config.run_id,
            model=self.config.model,
            status=self.state.status,
            planned=self.config.iterations,
            iterations=iterations,
        )
        deltas: list[IterationDelta] = []
        for i in done:
            path = iteration_dir(self.dir, i) / "delta.json"
            if path.is_file():
                deltas.append(IterationDelta.model_validate_json(path.read_text()))
        atomic_write_model(self.dir / "summary.json", summary)
        write_reports(self.dir, summary, deltas, iterations)  # report.md and report.html
