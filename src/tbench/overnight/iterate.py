"""The seed's iteration loop (Phase 1): run the suite N times in order, one trial at a time, recording
results, deltas and one Episode per iteration; resumable after any crash."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from tbench import __version__
from tbench.agents.base import ModelRunner
from tbench.agents.model_adapter import create_model_runner, parse_model
from tbench.bench.environments import EnvironmentFactory
from tbench.bench.episode_store import Episode, EpisodeStore, EpisodeSummary, episode_status
from tbench.bench.formats import load_suite, select_tasks
from tbench.bench.tasks import Summary, Task, TerminalBenchResults, TrialResult, utcnow
from tbench.bench.trial import TrialSpec, run_trial
from tbench.errors import UserError
from tbench.fsutil import SAFE_ID, atomic_write_model, atomic_write_text, child_path
from tbench.overnight.state import CONFIG_FILE, IterationState, RunConfig, RunState, load_run
from tbench.report.markdown import render_markdown
from tbench.report.summary import IterationDelta, compute_delta, summarize_run

GYM_DIR = Path(".openagents") / "gym"
Notify = Callable[[str], None]


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
        runner: ModelRunner,
        envs: EnvironmentFactory,
        notify: Notify,
    ) -> None:
        self.dir = run_dir
        self.config = config
        self.state = state
        self.tasks = tasks
        self.runner = runner
        self.envs = envs
        self.notify = notify
        self.store = EpisodeStore(Path(config.project_root) / GYM_DIR)

    # ------------------------------------------------------------------ set-up

    @classmethod
    def create(cls, opts: IterateOptions, notify: Notify) -> Run:
        """Validate everything first; only then make the run folder, so bad input writes nothing."""
        if opts.iterations < 1:
            raise UserError(f"must be at least 1 (got {opts.iterations})", field="--iterations")
        if opts.timeout_sec <= 0:
            raise UserError(f"must be positive (got {opts.timeout_sec:g})", field="--timeout")
        if opts.max_turns is not None and opts.max_turns < 1:
            raise UserError(f"must be at least 1 (got {opts.max_turns})", field="--max-turns")
        run_id = opts.run_id or new_run_id()
        if not SAFE_ID.match(run_id):
            raise UserError(f"{run_id!r} is not allowed: use letters, digits, '.', '_' or '-'", field="--run-id")
        suite = select_tasks(load_suite(opts.suite), list(opts.tasks))
        model = parse_model(opts.model)
        runner = create_model_runner(model)
        output = opts.output or Path("results") / datetime.now().strftime("%Y%m%d")
        if output.exists() and (not output.is_dir() or any(output.iterdir())):
            raise UserError(
                f"already exists; resume it with --resume {output / 'state.json'} or choose another --output",
                path=output,
            )
        envs = EnvironmentFactory()
        envs.preflight(suite.tasks)
        runner.preflight()
        project_root = (opts.project_root or Path.cwd()).resolve()
        config = RunConfig(
            run_id=run_id,
            created_at=utcnow(),
            tbench_version=__version__,
            suite=str(opts.suite.resolve()),
            suite_name=suite.name,
            suite_version=suite.version,
            task_globs=list(opts.tasks),
            task_ids=[t.id for t in suite.tasks],
            model=model.label,
            iterations=opts.iterations,
            timeout_sec=opts.timeout_sec,
            max_turns=opts.max_turns,
            output=str(output.resolve()),
            project_root=str(project_root),
        )
        output = output.resolve()
        output.mkdir(parents=True, exist_ok=True)
        atomic_write_model(output / CONFIG_FILE, config)
        state = RunState.new(config)
        state.save(output)
        return cls(output, config, state, suite.tasks, runner, envs, notify)

    @classmethod
    def resume(cls, state_path: Path, notify: Notify) -> Run:
        config, state = load_run(state_path)
        run_dir = (state_path.parent if state_path.name.endswith(".json") else state_path).resolve()
        suite = load_suite(Path(config.suite))
        by_id = {t.id: t for t in suite.tasks}
        missing = [t for t in config.task_ids if t not in by_id]
        if missing:
            raise UserError(f"tasks of this run are gone from the suite: {', '.join(missing)}", path=config.suite)
        tasks = [by_id[t] for t in config.task_ids]
        runner = create_model_runner(parse_model(config.model))
        envs = EnvironmentFactory()
        envs.preflight(tasks)
        runner.preflight()
        removed = envs.cleanup_run(config.run_id)
        if removed:
            notify(f"removed {removed} container(s) left behind by the interrupted run")
        state.resumes += 1
        state.status = "running"
        state.save(run_dir)
        return cls(run_dir, config, state, tasks, runner, envs, notify)

    # ------------------------------------------------------------------ the loop

    def execute(self) -> RunState:
        try:
            for it in self.state.iterations:
                if it.status != "done":
                    self._run_iteration(it)
            self.state.status = "completed"
        except BaseException:
            self.state.status = "interrupted"
            raise
        finally:
            self.state.save(self.dir)
            self.write_summary()
        return self.state

    def _run_iteration(self, it: IterationState) -> None:
        n = self.config.iterations
        self.notify(f"=== Iteration {it.iteration}/{n} ===")
        if it.started_at is None:
            it.started_at = utcnow()
        it.status = "running"
        self.state.save(self.dir)
        for task in self.tasks:
            ts = it.trials[task.id]
            trial_dir = child_path(iteration_dir(self.dir, it.iteration), task.id)
            if ts.status == "done" or (ts.status == "running" and self._committed(trial_dir)):
                if ts.status != "done":  # killed after result.json was written, before state was
                    ts.status, ts.outcome = "done", self._load_result(trial_dir).status
                continue
            if trial_dir.exists():  # an interrupted attempt: keep it aside for inspection, start clean
                aside = iteration_dir(self.dir, it.iteration) / "_interrupted" / f"{trial_dir.name}.{ts.attempts}"
                aside.parent.mkdir(parents=True, exist_ok=True)
                shutil.rmtree(aside, ignore_errors=True)
                trial_dir.rename(aside)
            ts.status, ts.attempts = "running", ts.attempts + 1
            ts.trial_dir = trial_dir.relative_to(self.dir).as_posix()
            self.state.save(self.dir)
            result = run_trial(
                TrialSpec(
                    task=task,
                    run_id=self.config.run_id,
                    iteration=it.iteration,
                    trial_id=f"{self.config.run_id}-{it.iteration:03d}-{task.id}",
                    trial_dir=trial_dir,
                    run_dir=self.dir,
                    model_label=self.config.model,
                    default_timeout_sec=self.config.timeout_sec,
                    max_turns=self.config.max_turns,
                ),
                self.runner,
                self.envs.create,
            )
            result.attempts = ts.attempts
            atomic_write_model(trial_dir / "result.json", result)  # the commit marker
            ts.status, ts.outcome = "done", result.status
            self.state.save(self.dir)
            self._write_results(it, final=False)
            extra = f" [{result.failure_mode}]" if result.failure_mode else ""
            self.notify(f"  {task.id}: {result.status}{extra} ({result.duration_ms / 1000:.1f}s)")
        self._finish_iteration(it)

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
            )
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
        atomic_write_text(self.dir / "report.md", render_markdown(summary, deltas))
