"""The seed's iteration loop: run the suite N times in order, recording results, deltas and one Episode per
iteration; resumable after any crash. Trials are run by an executor (overnight/executor.py: one at a time here,
or worker processes) through the `TrialBook` methods below; this module alone books them."""

from __future__ import annotations

import dataclasses
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Literal

from tbench import __version__
from tbench.agents.base import ModelRunner
from tbench.agents.model_adapter import (
    ModelPlan,
    agent_tools,
    build_model_plan,
    model_config_for,
    normalize_endpoint,
    openai_base_url,
    parse_model,
)
from tbench.archivist.holdout import project_holdout
from tbench.archivist.loop import open_learning, with_control
from tbench.archivist.proof import learning_proof
from tbench.bench.environments import EnvironmentFactory
from tbench.bench.episode_store import EpisodeStore
from tbench.bench.formats import load_suite
from tbench.errors import UserError
from tbench.fsutil import SAFE_ID, atomic_write_model
from tbench.models.common import read_model, utcnow
from tbench.models.grading import rate_text, retries_allowed
from tbench.models.layout import INTERRUPTED_DIR, OUTAGE_DIR, RETRIES_DIR, ProjectLayout, RunLayout
from tbench.models.lessons import LearningConfig
from tbench.models.model_settings import ModelSettings
from tbench.models.profile import AgentProfile
from tbench.models.results import Summary, TerminalBenchResults, TrialResult, base_id, is_control
from tbench.models.run import IterationState, RunConfig, RunState, load_run
from tbench.models.summary import IterationDelta
from tbench.models.task import Task
from tbench.models.trial import TrialSpec, WorkerJob
from tbench.overnight.breaker import MAX_SERVER_RERUNS, CircuitBreaker, close_stale
from tbench.overnight.executor import Executor, SequentialExecutor, StopControl
from tbench.overnight.profile import LESSON_FIELDS, SAMPLER_FIELDS, check_profile_tools
from tbench.report.pages import write_trajectory_page
from tbench.report.run_report import write_reports
from tbench.secrets import MASK, redact_url
from tbench.stats.summaries import compute_delta, delta_baseline, episode_of, summarize_run

Notify = Callable[[str], None]
Preflight = Callable[[list[Task]], None]
"""An executor's own check of where trials will run (a cluster's nodes); replaces the local engine check."""

OUTAGE_EXIT = 75
"""Exit status of a run stopped because its model server stayed down past the limit (EX_TEMPFAIL: resume it
once the server is back)."""


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
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    max_retries: int = 0
    retry_backoff_sec: float = 5.0
    models: ModelSettings = field(default_factory=ModelSettings)
    """Endpoints, model options, --claude-validation-rate, --seed, --unsafe-host-agent."""
    learning: LearningConfig = field(default_factory=LearningConfig)
    """--memory, --reflect-model, --holdout, --control; the held-out split is drawn in `Run.create`."""
    breaker_after: int = 3
    max_outage_sec: float = 3600.0
    budget_hint: bool = True
    skip_invalid: bool = False
    timeout_multiplier: float = 1.0
    agent_timeout_sec: float | None = None
    profile: AgentProfile | None = None
    """`--profile NAME`: applied over the other options by `Run.create` (overnight/profile.py)."""


def apply_profile(opts: IterateOptions, profile: AgentProfile) -> IterateOptions:
    """`opts` with `profile` applied: its model replaces `--model`, its max turns `--max-turns`, its timeout
    multiplier multiplies the run's; lesson policy and sampler settings replace the run's one by one. A tool
    list that names a tool the agent lacks is refused (field `profile`)."""
    model = profile.model or opts.model
    if profile.model is not None:
        try:
            parse_model(profile.model)
        except UserError as exc:
            raise UserError(f"{profile.id}: model: {exc.message}", field="profile") from None
    check_profile_tools(profile, model, validation=opts.models.claude_validation_rate > 0)
    sampler = {k: v for k in SAMPLER_FIELDS if (v := getattr(profile, k)) is not None}
    lessons = {k: v for k in LESSON_FIELDS if (v := getattr(profile, k)) is not None}
    return dataclasses.replace(
        opts,
        model=model,
        max_turns=profile.max_turns if profile.max_turns is not None else opts.max_turns,
        timeout_multiplier=opts.timeout_multiplier * profile.timeout_multiplier,
        learning=opts.learning.model_copy(update=lessons),
        models=opts.models.model_copy(update={"options": opts.models.options.model_copy(update=sampler)}),
        profile=profile,
    )


#: Endpoint settings whose URL credentials config.json does not keep: a resume takes them again (same URL).
ENDPOINTS = ("ollama_endpoint", "openai_endpoint")
#: Settings a resume may change: how the rest of the run is executed, not what it measures.
RESUMABLE_SETTINGS = frozenset({"workers", "max_retries", "retry_backoff_sec", *ENDPOINTS})


def check_output(output: Path) -> None:
    """`--output` must be a new or empty folder: not a file, not below one, not a run (that is `--resume`)."""
    if output.exists():
        if not output.is_dir():
            raise UserError("is a file, not a folder; choose another --output", path=output)
        if RunLayout(output).is_run():
            raise UserError(
                f"is an earlier run; resume it with --resume {output / 'state.json'} or choose another --output",
                path=output,
            )
        if any(output.iterdir()):
            raise UserError("already exists and is not empty; choose another --output", path=output)
        return
    _check_ancestors(output, "--output")


def check_project_root(root: Path) -> None:
    """`--project-root` must be a folder (made if missing), not a file or below one."""
    if root.exists():
        if not root.is_dir():
            raise UserError("is a file; --project-root is the folder that holds .openagents/", path=root)
        return
    _check_ancestors(root, "--project-root")


def _check_ancestors(path: Path, what: str) -> None:
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise UserError(f"is below the file {parent}; choose another {what}", path=path)
            return


def _with_endpoints(config: RunConfig, given: dict[str, str]) -> RunConfig:
    """A resumed run's endpoints: the same URLs as before, their credentials (which config.json does not keep)
    given again on the command line."""
    settings = config.model_settings
    for key, value in given.items():
        url = normalize_endpoint(value, field=key) if key == "ollama_endpoint" else openai_base_url(value)
        stored = getattr(settings, key)
        if stored is None or redact_url(url) != redact_url(stored):
            raise UserError(
                f"differs from this run's {redact_url(stored or 'none')}; a resumed run keeps it", field=key
            )
        settings = settings.model_copy(update={key: url})
    for key in ENDPOINTS:
        value = getattr(settings, key)
        if value is not None and MASK in value:
            raise UserError(
                f"{value}: config.json does not keep its credentials; give this option again, with them, to resume",
                field=key,
            )
    return config.model_copy(update={"model_settings": settings})


def new_run_id() -> str:
    return f"tbrun-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class Run:
    """A run folder being filled: config, state, the suite's selected tasks, the agent and environments.

    Committed results are kept in memory as they commit (a resume rebuilds them once from disk), so booking a
    trial never re-reads its iteration."""

    def __init__(
        self,
        layout: RunLayout,
        config: RunConfig,
        state: RunState,
        tasks: list[Task],
        models: ModelPlan,
        envs: EnvironmentFactory,
        notify: Notify,
    ) -> None:
        self.layout = layout
        self.dir = layout.dir
        self.config = config
        self.state = state
        self.tasks = tasks
        self.models = models
        self.envs = envs
        self.notify = notify
        self.store = EpisodeStore(ProjectLayout(Path(config.project_root)).gym_dir)
        self.executor: Executor = SequentialExecutor(envs)
        self._stop = StopControl()
        self.learning = open_learning(
            config.learning, Path(config.project_root), config.suite_name, config.model, config.model_settings,
            [t.id for t in tasks if not is_control(t.id)],
        )  # fmt: skip
        self._iterations = {it.iteration: it for it in state.iterations}
        self._committed: dict[int, dict[str, TrialResult]] = {}
        """iteration → task id → committed result, for unfinished iterations."""
        self._finished: dict[int, TerminalBenchResults] = {}
        """Finished iterations' results.json, read at most once."""
        self._deltas: dict[int, IterationDelta] = {}
        """Finished iterations' delta.json, where one was written."""
        for it in state.iterations:
            if it.status != "done":
                self._committed[it.iteration] = self._read_committed(it)
        self.breaker = CircuitBreaker(
            after=config.breaker_after,
            max_outage_sec=config.max_outage_sec,
            first_probe_sec=config.retry_backoff_sec,
            probe=lambda label: self.models.runner(label).probe(),
            notify=notify,
            outages=state.outages,
        )
        self._server_reruns: set[tuple[int, str]] = set()
        """Trials set aside for a model-server failure: they start again without a retry's backoff."""

    # ------------------------------------------------------------------ set-up

    @classmethod
    def create(cls, opts: IterateOptions, notify: Notify, preflight: Preflight | None = None) -> Run:
        """Validate everything first; only then make the run folder, so bad input writes nothing."""
        if opts.profile is not None:
            opts = apply_profile(opts, opts.profile)
        if opts.iterations < 1:
            raise UserError(f"must be at least 1 (got {opts.iterations})", field="iterations")
        if opts.timeout_sec <= 0:
            raise UserError(f"must be positive (got {opts.timeout_sec:g})", field="timeout_sec")
        if opts.workers != "auto" and opts.workers < 1:
            raise UserError(f"must be at least 1 or 'auto' (got {opts.workers})", field="workers")
        if opts.max_retries < 0:
            raise UserError(f"must be 0 or more (got {opts.max_retries})", field="max_retries")
        if opts.breaker_after < 1:
            raise UserError(f"must be at least 1 (got {opts.breaker_after})", field="breaker_after")
        if opts.max_outage_sec <= 0:
            raise UserError(f"must be positive (got {opts.max_outage_sec:g})", field="max_outage_sec")
        if opts.max_turns is not None and opts.max_turns < 1:
            raise UserError(f"must be at least 1 (got {opts.max_turns})", field="max_turns")
        if opts.timeout_multiplier <= 0:
            raise UserError(f"must be positive (got {opts.timeout_multiplier:g})", field="timeout_multiplier")
        if opts.agent_timeout_sec is not None and opts.agent_timeout_sec <= 0:
            raise UserError(f"must be positive (got {opts.agent_timeout_sec:g})", field="agent_timeout_sec")
        run_id = opts.run_id or new_run_id()
        if not SAFE_ID.match(run_id):
            raise UserError(f"{run_id!r} is not allowed: use letters, digits, '.', '_' or '-'", field="run_id")
        output = opts.output or Path("results") / datetime.now().strftime("%Y%m%d")
        check_output(output)
        project_root = (opts.project_root or Path.cwd()).resolve()
        check_project_root(project_root)
        suite = load_suite(opts.suite, opts.tasks, skip_invalid=opts.skip_invalid)
        for skipped in suite.skipped:
            notify(f"skipping invalid task {skipped.id}: {skipped.reason}")
        models = build_model_plan(opts.model, opts.models)
        envs = EnvironmentFactory()
        (preflight or envs.preflight)(suite.tasks)
        models.preflight(suite.tasks)
        task_ids = [t.id for t in suite.tasks]
        open_learning(opts.learning, project_root, suite.name, models.primary.label, models.settings, preflight=True)
        memory_dir = ProjectLayout(project_root).memory_dir
        held = project_holdout(memory_dir, suite.name, task_ids, opts.learning.holdout_fraction)
        learning = opts.learning.model_copy(update={"holdout_tasks": held})
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
            executor=opts.executor,
            ray_address=opts.ray_address,
            max_retries=opts.max_retries,
            retry_backoff_sec=opts.retry_backoff_sec,
            learning=learning,
            breaker_after=opts.breaker_after,
            max_outage_sec=opts.max_outage_sec,
            budget_hint=opts.budget_hint,
            skip_invalid=opts.skip_invalid,
            skipped_tasks=list(suite.skipped),
            timeout_multiplier=opts.timeout_multiplier,
            agent_timeout_sec=opts.agent_timeout_sec,
            profile=opts.profile,
        )
        layout = RunLayout(output.resolve())
        layout.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_model(layout.config, config)
        state = RunState.new(config)
        state.save(layout.dir)
        return cls(layout, config, state, tasks, models, envs, notify)

    @classmethod
    def resume(
        cls,
        state_path: Path,
        notify: Notify,
        changes: dict[str, object] | None = None,
        preflight: Preflight | None = None,
    ) -> Run:
        """Resume the run; `changes` may set the `RESUMABLE_SETTINGS` (recorded in config.json), nothing else."""
        config, state = load_run(state_path, field="resume")
        layout = RunLayout((state_path.parent if state_path.name.endswith(".json") else state_path).resolve())
        changes = dict(changes or {})
        config = _with_endpoints(config, {k: str(changes.pop(k)) for k in ENDPOINTS if k in changes})
        if changes:
            refused = sorted(set(changes) - RESUMABLE_SETTINGS)
            if refused:
                raise UserError(f"cannot change {', '.join(refused)} on resume", field="resume")
            config = RunConfig.model_validate({**config.model_dump(), **changes})
            if config.workers != "auto" and config.workers < 1:
                raise UserError(f"must be at least 1 or 'auto' (got {config.workers})", field="workers")
        base_ids = list(dict.fromkeys(base_id(t) for t in config.task_ids))
        try:  # only this run's tasks are loaded; a sibling broken since is none of its business
            suite = load_suite(Path(config.suite), base_ids, skip_invalid=True)
        except UserError as exc:
            raise UserError(f"the suite of this run cannot be loaded: {exc}", field="resume") from None
        by_id = {t.id: t for t in with_control(suite.tasks, config.learning)}
        missing = [base_id(t) for t in config.task_ids if t not in by_id]
        if missing:
            why = {s.id: s.reason for s in suite.skipped}
            listed = ", ".join(f"{t} ({why[t]})" if t in why else t for t in dict.fromkeys(missing))
            raise UserError(f"tasks of this run are gone from the suite or invalid now: {listed}", path=config.suite)
        tasks = [by_id[t] for t in config.task_ids]
        models = ModelPlan(model_config_for(config.model, config.model_settings), config.model_settings)
        envs = EnvironmentFactory()
        (preflight or envs.preflight)(tasks)
        models.preflight(tasks)
        removed = envs.cleanup_run(config.run_id)
        if removed:
            notify(f"removed {removed} container(s) left behind by the interrupted run")
        if layout.stop_file.exists():
            layout.stop_file.unlink()
            notify(f"removed {layout.stop_file} left by the previous stop")
        close_stale(state.outages, state.updated_at)
        if changes:
            atomic_write_model(layout.config, config)
        state.resumes += 1
        state.status = "running"
        state.save(layout.dir)
        return cls(layout, config, state, tasks, models, envs, notify)

    # ------------------------------------------------------------------ the loop

    def execute(self, stop_after_iteration: int | None = None) -> RunState:
        """Run every unfinished iteration in order. Stops early (state `stopped`, resumable) when asked to."""
        try:
            for it in self.state.iterations:
                if it.status == "done":
                    continue
                if self._stop.reason:
                    break
                if not self._run_iteration(it):
                    break  # stopped inside the iteration
                if stop_after_iteration is not None and it.iteration >= stop_after_iteration:
                    self._stop.request(f"--stop-after-iteration {stop_after_iteration} reached")
                if self.layout.stop_file.exists():
                    self._stop.request(f"{self.layout.stop_file} found")
            done = all(it.status == "done" for it in self.state.iterations)
            self.state.status = "completed" if done else "stopped"
        except BaseException:
            self.state.status = "interrupted"
            raise
        finally:
            self.breaker.close_open()
            self.state.save(self.dir)
            self.write_summary()
        return self.state

    def graded_nothing(self) -> bool:
        """At least one iteration finished and none of them graded a trial: the night says nothing."""
        done = self.finished_iterations()
        return bool(done) and all(r.summary.pass_rate is None for r in done)

    def _run_iteration(self, it: IterationState) -> bool:
        """Run the iteration's unfinished trials; True when it finished (False: stopped inside it)."""
        self.notify(f"=== Iteration {it.iteration}/{self.config.iterations} ===")
        if it.started_at is None:
            it.started_at = utcnow()
        it.status = "running"
        self.state.save(self.dir)
        pending = [task for task in self.tasks if it.trials[task.id].status != "done"]
        self.executor.run_iteration(self, it.iteration, pending)
        if not all(ts.status == "done" for ts in it.trials.values()):
            return False
        self._finish_iteration(it)
        return True

    def _read_committed(self, it: IterationState) -> dict[str, TrialResult]:
        """Resume: the committed trials of an unfinished iteration, read once. A trial killed after its commit
        (result.json written, state.json not yet) counts as done."""
        out: dict[str, TrialResult] = {}
        for task_id, ts in it.trials.items():
            paths = self.layout.trial(it.iteration, task_id)
            if ts.status in ("done", "running") and paths.result.is_file():
                result = read_model(paths.result, TrialResult, "a trial's result.json")
                ts.status, ts.outcome = "done", result.status
                out[task_id] = result
        return out

    # ------------------------------------------------------------------ the TrialBook (what executors call)

    @property
    def stop(self) -> StopControl:
        return self._stop

    @property
    def run_dir(self) -> Path:
        return self.dir

    @property
    def iterations_planned(self) -> int:
        return self.config.iterations

    def _move_aside(self, iteration: int, task_id: str, kind: str, n: int) -> None:
        trial_dir = self.layout.trial(iteration, task_id).dir
        aside = self.layout.iteration(iteration).aside(kind, task_id, n)
        aside.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(aside, ignore_errors=True)
        trial_dir.rename(aside)

    def begin_trial(self, iteration: int, task: Task) -> TrialSpec:
        """Mark the trial running (state saved) and give it a clean folder; an interrupted attempt's folder is
        kept aside under `_interrupted/` for inspection."""
        ts = self._iterations[iteration].trials[task.id]
        paths = self.layout.trial(iteration, task.id)
        if paths.dir.exists():
            self._move_aside(iteration, task.id, INTERRUPTED_DIR, ts.attempts)
        ts.status, ts.attempts = "running", ts.attempts + 1
        ts.trial_dir = self.layout.relative(paths.dir)
        self.state.save(self.dir)
        label = self.models.choose(iteration, base_id(task.id)).label  # both arms: one model
        tools = agent_tools(model_config_for(label, self.config.model_settings))
        profile = self.config.profile
        offered = tuple(profile.tools) if profile is not None and profile.tools is not None else None
        if offered is not None:
            tools = tools & frozenset(offered)
        lessons = self.learning.inject(iteration, task, tools)
        append = lessons.text
        own = (profile.system_prompt_append or "").strip() if profile is not None else ""
        if own:  # the profile's text, then the lessons'
            append = own + ("\n\n" + lessons.text.strip() if lessons.text and lessons.text.strip() else "")
        return TrialSpec(
            task=self.config.time_limits.apply(task),
            run_id=self.config.run_id,
            iteration=iteration,
            trial_id=f"{self.config.run_id}-{iteration:03d}-{task.id}",
            trial_dir=paths.dir,
            run_dir=self.dir,
            model_label=label,
            default_timeout_sec=self.config.timeout_sec,
            max_turns=self.config.max_turns,
            system_prompt_append=append,
            budget_hint=self.config.budget_hint,
            lesson_ids=tuple(lessons.ids),
            tools=offered,
        )

    def finish_trial(self, iteration: int, task: Task, result: TrialResult) -> bool:
        """Commit `result`, or set the attempt aside and leave the trial pending: under `_outage/` when the
        model server failed it (re-run without spending a retry; the circuit breaker counts it), under
        `_retries/` for an ungraded failure the grading policy retries, with retries left. True when committed."""
        it = self._iterations[iteration]
        ts = it.trials[task.id]
        paths = self.layout.trial(iteration, task.id)
        self.breaker.record(result)
        if result.model_server_down and ts.server_reruns < MAX_SERVER_RERUNS:
            ts.server_reruns += 1
            if paths.dir.exists():
                self._move_aside(iteration, task.id, OUTAGE_DIR, ts.server_reruns)
            ts.status = "pending"
            self._server_reruns.add((iteration, task.id))
            self.state.save(self.dir)
            self.notify(f"  {task.id}: model server failed, re-run when it answers: {result.error_message}")
            return False
        self._server_reruns.discard((iteration, task.id))
        allowed = retries_allowed(result.failure_mode, self.config.max_retries)
        if ts.retries < allowed:
            ts.retries += 1
            if paths.dir.exists():
                self._move_aside(iteration, task.id, RETRIES_DIR, ts.retries)
            ts.status = "pending"
            self.state.save(self.dir)
            mode = str(result.failure_mode).replace("_", " ")
            self.notify(f"  {task.id}: {mode}, retry {ts.retries}/{allowed}: {result.error_message}")
            return False
        result.attempts, result.retries = ts.attempts, ts.retries
        atomic_write_model(paths.result, result)  # the commit marker
        self._write_page(result)
        self._committed.setdefault(iteration, {})[task.id] = result
        ts.status, ts.outcome = "done", result.status
        self.state.save(self.dir)
        self._write_results(it, final=False)
        self.learning.after_trial(result)
        extra = f" [{result.failure_mode}]" if result.failure_mode else ""
        self.notify(f"  {task.id}: {result.status}{extra} ({result.duration_ms / 1000:.1f}s)")
        return True

    def _write_page(self, result: TrialResult) -> None:
        """The trial's readable page, once, at its commit; a failure here is noted, never fatal."""
        try:
            write_trajectory_page(self.dir, result)
        except Exception as exc:  # a report bug must not end an overnight run
            self.notify(f"  {result.task_id}: trajectory page not written: {type(exc).__name__}: {exc}")

    def retry_delay(self, iteration: int, task: Task) -> float:
        """Exponential backoff for the next attempt of a retried trial, capped at 60 s; none for a trial the
        model server failed (`hold` keeps it waiting while the server is down)."""
        if (iteration, task.id) in self._server_reruns:
            return 0.0
        n = self._iterations[iteration].trials[task.id].retries
        return 0.0 if n == 0 else min(60.0, self.config.retry_backoff_sec * 2 ** (n - 1))

    def hold(self) -> float:
        """Seconds before another trial may start: 0, or — while the model server is down — until the
        breaker's next probe (run here, when due). Past `max_outage_sec` the run is stopped, resumably."""
        if not self.breaker.is_open:
            return 0.0
        outage = self.state.outages[-1]
        probes = outage.probes
        wait = self.breaker.hold()
        if wait < 0:
            self._stop.request(
                f"the model server of {outage.model} stayed down for {outage.duration_sec:g}s, past "
                f"max_outage_sec={self.config.max_outage_sec:g}; resume once it answers",
                exit_code=OUTAGE_EXIT,
            )
            wait = 0.0
        if outage.probes != probes:
            self.state.save(self.dir)  # each probe (and the end of the outage) is in state.json
        return wait

    def worker_job(self, spec: TrialSpec) -> WorkerJob:
        return WorkerJob(spec=spec, model=model_config_for(spec.model_label, self.config.model_settings))

    def runner(self, spec: TrialSpec) -> ModelRunner:
        return self.models.runner(spec.model_label)

    def cleanup_trial(self, trial_id: str) -> None:
        self.envs.cleanup_trial(trial_id)

    # ------------------------------------------------------------------ iteration outputs

    def _write_results(self, it: IterationState, *, final: bool) -> TerminalBenchResults:
        committed = self._committed.get(it.iteration, {})
        ordered = [committed[t.id] for t in self.tasks if t.id in committed]
        own = [r for r in ordered if not is_control(r.task_id)]
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
            results=own,
            summary=Summary.of(own),
            control_results=[r for r in ordered if is_control(r.task_id)],
        )
        atomic_write_model(self.layout.iteration(it.iteration).results, tb)
        return tb

    def _finish_iteration(self, it: IterationState) -> None:
        it.finished_at = it.finished_at or utcnow()
        results = self._write_results(it, final=True)
        paths = self.layout.iteration(it.iteration)
        previous = delta_baseline(self.finished_iterations(), results)
        if previous is not None:
            self._deltas[it.iteration] = compute_delta(previous, results)
            atomic_write_model(paths.delta, self._deltas[it.iteration])
        episode_id = f"{self.config.run_id}-{it.iteration:03d}"
        self.store.record(episode_of(results, episode_id=episode_id, results_path=str(paths.results)))
        before = [r for r in self.finished_iterations() if r.iteration < it.iteration]
        reflection = self.learning.after_iteration(
            self.dir,
            self.config.run_id,
            it.iteration,
            results.results,
            [t for t in self.tasks if not is_control(t.id)],
            previous=before[-1].results if before else None,
        )
        if reflection is not None:
            applied = sum(o.applied for o in reflection.operations)
            self.notify(
                f"Reflection ({reflection.model}): {reflection.status}, {applied} operation(s) applied"
                + (f" — {reflection.reason}" if reflection.reason else "")
            )
        it.episode_id, it.status = episode_id, "done"
        self._finished[it.iteration] = results
        self._committed.pop(it.iteration, None)
        self.state.save(self.dir)
        self.write_summary()
        self.notify(f"Iteration {it.iteration}: {headline(results.summary)}")

    # ------------------------------------------------------------------ run outputs

    def finished_iterations(self) -> list[TerminalBenchResults]:
        out = []
        for it in self.state.iterations:
            if it.status != "done":
                continue
            if it.iteration not in self._finished:
                path = self.layout.iteration(it.iteration).results
                if not path.is_file():
                    continue
                self._finished[it.iteration] = read_model(path, TerminalBenchResults, "an iteration's results.json")
                delta = self.layout.iteration(it.iteration).delta
                if delta.is_file():
                    self._deltas[it.iteration] = read_model(delta, IterationDelta, "an iteration's delta.json")
            out.append(self._finished[it.iteration])
        return out

    def write_summary(self) -> None:
        iterations = self.finished_iterations()
        summary = summarize_run(
            run_id=self.config.run_id,
            model=self.config.model,
            status=self.state.status,
            planned=self.config.iterations,
            iterations=iterations,
        )
        summary = summary.model_copy(update={"outages": list(self.state.outages)})
        summary.learning = learning_proof(self.dir, self.config, iterations)
        atomic_write_model(self.layout.summary, summary)
        deltas = [self._deltas[r.iteration] for r in iterations if r.iteration in self._deltas]
        write_reports(self.dir, summary, deltas, iterations)  # report.md and report.html


def headline(s: Summary) -> str:
    """`7/8 passed (87.5%)` over graded trials, with ungraded trials named apart; or that nothing was graded."""
    apart = [f"{n} {what}" for n, what in ((s.infra_errors, "infra error(s)"), (s.build_errors, "build error(s)")) if n]
    note = f"; not graded: {', '.join(apart)}" if apart else ""
    if s.pass_rate is None:
        return f"no graded trial of {s.total}{note}"
    return f"{s.passed}/{s.graded} passed ({rate_text(s.pass_rate)}){note}"
