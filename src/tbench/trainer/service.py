"""The Trainer's A/B: agent profiles run interleaved on the same tasks, round by round, each profile's trials a
normal overnight run (`DIR/arms/<profile>/`: workers, retries, kill -9 and resume as for any run — no second
runner). Round r is every task once more for every active profile; after each round the paired statistics
(stats.inference.compare: bootstrap over tasks and an exact test) look at everything so far, spending only that
look's share of alpha (stats.power.look_alpha), and racing drops a profile that is significantly worse than the
leader. The verdict, the racing decisions and what was spent are in `DIR/trainer.json`.

Resume is `tbench train run --resume DIR`: each arm resumes from its own state.json (a trial is never run twice),
and a round's decisions — a pure function of the trials — are made again where the kill came before they were
written."""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from rich.console import Console

from tbench.agents.model_adapter import DEFAULT_MODEL, build_model_plan
from tbench.archivist.holdout import project_holdout
from tbench.bench.formats import load_suite
from tbench.errors import UserError
from tbench.fsutil import ascii_slug, atomic_write_model, atomic_write_text
from tbench.models.common import utcnow
from tbench.models.layout import ARMS_DIR, GYM_EPISODES_FILE, ProjectLayout, RunLayout
from tbench.models.model_settings import ModelSettings
from tbench.models.profile import AgentProfile
from tbench.models.results import TrialResult
from tbench.models.run import load_run
from tbench.overnight.executor import Executor, SequentialExecutor
from tbench.overnight.iterate import IterateOptions, Run, check_output, check_project_root
from tbench.stats.inference import task_mean_rate, wilson
from tbench.trainer.racing import active_at, final_verdict, racing_look
from tbench.trainer.readout import arm_dir, load_result, run_trials, trainer_file
from tbench.trainer.schema import (
    GymEpisode,
    ProfileResult,
    RacingDecision,
    Spent,
    TrainerResult,
    TrainingPlan,
    Verdict,
    find_profile,
    load_plan,
    load_profile,
    plan_text,
    profile_path,
    write_profile,
)

Notify = Callable[[str], None]
BASELINE_ID = "baseline"
"""A plan may name `baseline` without a profile file: the agent as it is."""


@dataclass(frozen=True)
class TrainOptions:
    """What the command line adds to a plan: where to write, the project, endpoints and model options."""

    plan: Path | None = None
    output: Path | None = None
    project_root: Path | None = None
    models: ModelSettings = field(default_factory=ModelSettings)
    stop_after_round: int | None = None
    reflect_model: str | None = None
    """`--reflect-model`: the evolution's reflection model, over the plan's `evolve.reflect_model`."""

    def read_plan(self, path: Path) -> TrainingPlan:
        """The plan file with the command line's overrides."""
        plan = load_plan(path)
        if self.reflect_model is None:
            return plan
        if plan.strategy != "evolve":
            raise UserError("only for plans with strategy = 'evolve' (an A/B reflects on nothing)",
                            field="reflect_model")  # fmt: skip
        return plan.model_copy(update={"evolve": plan.evolve.model_copy(update={"reflect_model": self.reflect_model})})


def reopen(folder: Path, opts: TrainOptions) -> tuple[Path, TrainerResult]:
    """A training folder to resume, checked against what the command line gives again: the same plan, project
    and reflection model, or one line saying which differs."""
    if folder.is_file() and folder.name == trainer_file(folder.parent).name:
        folder = folder.parent
    result = load_result(folder)
    if opts.plan is not None and plan_text(opts.read_plan(opts.plan)) != result.plan_toml:
        raise UserError("differs from the plan this training folder ran; resume without it, or start a new "
                        "--output", path=opts.plan)  # fmt: skip
    root = Path(result.project_root)
    if opts.project_root is not None and opts.project_root.resolve() != root:
        raise UserError(f"differs from this training's {root}; a resume keeps it", field="project_root")
    if opts.reflect_model is not None and opts.reflect_model != result.plan.evolve.reflect_model:
        raise UserError(f"differs from this training's {result.plan.evolve.reflect_model}; a resume keeps it",
                        field="reflect_model")  # fmt: skip
    result.status, result.stop_reason = "running", None
    return folder.resolve(), result


def profile_result(
    pid: str, profile: AgentProfile, run_dir: str, trials: list[TrialResult], dropped: RacingDecision | None = None
) -> ProfileResult:
    """One profile's line in trainer.json, from its trials (`run_dir`: relative to the training folder)."""
    graded = [t for t in trials if t.is_graded]
    passed = sum(t.passed for t in graded)
    w = wilson(passed, len(graded))
    cost = round(sum(t.cost_usd or 0.0 for t in trials), 6)
    return ProfileResult(
        id=pid,
        profile=profile,
        run_dir=run_dir,
        rounds=len({t.iteration for t in trials}),
        trials=len(trials),
        graded_trials=len(graded),
        passed=passed,
        pass_rate=task_mean_rate(trials),
        interval=None if w is None else (w.low, w.high),
        cost_usd=cost,
        cost_per_pass=cost / passed if passed and cost else None,
        tokens=sum(t.tokens_used for t in trials),
        stopped_at_round=dropped.round if dropped else None,
        stop_reason=dropped.reason if dropped else None,
    )


def episodes_of(environment: str, pid: str, run_dir: str, trials: list[TrialResult]) -> list[GymEpisode]:
    """The GymEpisodes of one run folder's trials (`run_dir`: relative to the training folder)."""
    return [
        GymEpisode(
            id=t.trial_id,
            environment=environment,
            profile=pid,
            task_id=t.task_id,
            round=t.iteration,
            status="pass" if t.passed else ("error" if not t.is_graded else "fail"),
            failure_mode=None if t.failure_mode is None else str(t.failure_mode),
            graded=t.is_graded,
            trial_dir=f"{run_dir}/{t.trial_dir}",
            duration_ms=t.duration_ms,
            cost_usd=t.cost_usd,
            input_tokens=t.tokens.input,
            output_tokens=t.tokens.output,
            turns=t.turns,
        )
        for t in trials
    ]


def save_training(folder: Path, result: TrainerResult, episodes: list[GymEpisode]) -> None:
    """trainer.json and episodes.jsonl, each written whole (atomically)."""
    result.updated_at = utcnow()
    atomic_write_text(folder / GYM_EPISODES_FILE, "".join(json.dumps(e.model_dump()) + "\n" for e in episodes))
    atomic_write_model(trainer_file(folder), result)


def resolve_profiles(project_root: Path, ids: list[str]) -> list[AgentProfile]:
    """The plan's profiles from `.openagents/trainer/profiles/`; `baseline` needs no file."""
    out = []
    for pid in ids:
        try:
            out.append(find_profile(project_root, pid, field="profiles"))
        except UserError:
            if pid != BASELINE_ID:
                raise
            out.append(AgentProfile(id=BASELINE_ID, source="baseline"))
    return out


def glob_escape(task_id: str) -> str:
    """A task id as a `--tasks` glob that matches only itself."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in task_id)


@dataclass
class Selection:
    """The plan's tasks: those the profiles are compared on, and the held-out ones kept apart."""

    environment: str
    tasks: list[str]
    holdout: list[str]


def preflight_models(specs: list[str], settings: ModelSettings, plan: TrainingPlan) -> None:
    """Every model the plan will run, checked before anything is written (a bad name, a server that is down,
    a model it does not serve): one line now, not an arm that fails after another arm ran."""
    tasks = load_suite(Path(plan.suite), plan.tasks).tasks
    for spec in dict.fromkeys(specs):
        build_model_plan(spec, settings).preflight(tasks)


def select_tasks(plan: TrainingPlan, project_root: Path) -> Selection:
    suite = load_suite(Path(plan.suite), plan.tasks)
    ids = [t.id for t in suite.tasks]
    held = project_holdout(ProjectLayout(project_root).memory_dir, suite.name, ids, plan.split.holdout)
    used = [t for t in ids if t not in set(held)]
    if not used:
        raise UserError("leaves no task outside the held-out split; lower split.holdout", field="split.holdout")
    return Selection(suite.name, used, held)


def arm_run_id(folder: Path, suffix: str) -> str:
    """The run id of one of a training folder's runs: safe for engines and run ids whatever the folder is called
    (spaces, non-ASCII letters)."""
    return ascii_slug(f"{folder.name}-{suffix}", max_len=100)


def new_training_id() -> str:
    return f"train-{datetime.now().strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"


class ArmRunner:
    """Runs one profile's trials as a normal run folder, a round (iteration) at a time: created on first use,
    resumed after, so a kill at any moment loses nothing and runs nothing twice."""

    def __init__(self, workers: int, notify: Notify, console: Console) -> None:
        self.workers = workers
        self.notify = notify
        self.console = console
        self.current: Run | None = None
        self.stop_reason: str | None = None
        self.exit_code = 0

    def request_stop(self, reason: str, exit_code: int = 130) -> None:
        if self.stop_reason is None:
            self.stop_reason, self.exit_code = reason, exit_code
        if self.current is not None:
            self.current.stop.request(reason, exit_code=exit_code)

    def advance(self, folder: Path, options: Callable[[], IterateOptions], upto: int, *, prefix: str) -> bool:
        """Run iterations up to `upto` in `folder` (`options()` makes a new run there); True when they are all
        done, False when the run stopped short (a signal, a model-server outage: `stop_reason`)."""
        layout = RunLayout(folder)
        label = lambda line: self.notify(f"[{prefix}] {line}")  # noqa: E731
        if layout.is_run():
            _, state = load_run(layout.state, field="resume")
            if all(it.status == "done" for it in state.iterations if it.iteration <= upto):
                return True
            run = Run.resume(layout.state, label)
        else:
            run = Run.create(options(), label)
        run.executor = self._executor(run)
        self.current = run
        if self.stop_reason is not None:
            run.stop.request(self.stop_reason, exit_code=self.exit_code)
        try:
            state = run.execute(stop_after_iteration=upto)
        finally:
            run.executor.close()
            self.current = None
        done = all(it.status == "done" for it in state.iterations if it.iteration <= upto)
        if not done and self.stop_reason is None:
            self.stop_reason, self.exit_code = run.stop.reason or "the run stopped", run.stop.exit_code
        return done

    def _executor(self, run: Run) -> Executor:
        if self.workers <= 1:
            return SequentialExecutor(run.envs)
        from tbench.overnight.parallel import ParallelExecutor, Watchdog
        from tbench.overnight.progress import Progress
        from tbench.overnight.resources import Budget

        progress = Progress(self.console, run.config.iterations, str(self.workers))
        return ParallelExecutor(self.workers, Budget(), Watchdog(), progress)


class Trainer:
    """A training folder being filled, round by round."""

    def __init__(
        self,
        folder: Path,
        result: TrainerResult,
        profiles: list[AgentProfile],
        settings: ModelSettings,
        notify: Notify,
        console: Console | None = None,
    ) -> None:
        self.folder = folder
        self.result = result
        self.plan = result.plan
        self.profiles = {p.id: p for p in profiles}
        self.settings = settings
        self.notify = notify
        self.console = console or Console(stderr=True)
        self.arms = ArmRunner(result.plan.workers, notify, self.console)
        """Runs the arms (the CLI's signal handler stops the one in progress through `request_stop`)."""
        self.stop_reason: str | None = None
        self.exit_code = 0
        self._trials: dict[str, list[TrialResult]] = {}

    # ------------------------------------------------------------------ set-up

    @classmethod
    def create(cls, opts: TrainOptions, notify: Notify, console: Console | None = None) -> Trainer:
        """Validate the plan, its profiles, suite, model and budget; only then write the training folder."""
        if opts.plan is None:
            raise UserError("missing; give PLAN.toml (or --resume DIR)", field="PLAN")
        plan = opts.read_plan(opts.plan)
        output = opts.output or Path("results") / new_training_id()
        check_output(output)
        root = (opts.project_root or Path.cwd()).resolve()
        check_project_root(root)
        profiles = resolve_profiles(root, plan.profiles)
        for p in profiles:
            if (p.model or plan.model) is None:
                raise UserError(f"profile {p.id!r} names no model and neither does the plan; set `model`",
                                path=opts.plan, field="model")  # fmt: skip
        preflight_models([p.model or plan.model or DEFAULT_MODEL for p in profiles], opts.models, plan)
        selection = select_tasks(plan, root)
        need = len(selection.tasks) * len(profiles)
        if plan.budget.trials is not None and plan.budget.trials < need:
            raise UserError(
                f"{plan.budget.trials} trials cannot cover one trial per task for every profile "
                f"({len(selection.tasks)} tasks x {len(profiles)} profiles = {need}); raise budget.trials",
                path=opts.plan,
                field="budget.trials",
            )
        now = utcnow()
        result = TrainerResult(
            plan=plan,
            plan_file=str(opts.plan.resolve()),
            plan_toml=plan_text(plan),
            project_root=str(root),
            model=plan.model or ", ".join(dict.fromkeys(p.model for p in profiles if p.model)),
            status="running",
            started_at=now,
            updated_at=now,
            environment=selection.environment,
            tasks=selection.tasks,
            holdout_tasks=selection.holdout,
            rounds_planned=plan.trials_per_task,
            budget=plan.budget,
        )
        folder = output.resolve()
        (folder / ARMS_DIR).mkdir(parents=True, exist_ok=True)
        trainer = cls(folder, result, profiles, opts.models, notify, console)
        trainer.save()
        return trainer

    @classmethod
    def resume(cls, folder: Path, opts: TrainOptions, notify: Notify, console: Console | None = None) -> Trainer:
        """Go on with a training folder; a plan given again must be the one it ran."""
        folder, result = reopen(folder, opts)
        root = Path(result.project_root)
        profiles = [r.profile for r in result.profiles] or resolve_profiles(root, result.plan.profiles)
        trainer = cls(folder, result, profiles, opts.models, notify, console)
        trainer.save()
        return trainer

    # ------------------------------------------------------------------ the rounds

    def request_stop(self, reason: str, exit_code: int = 130) -> None:
        if self.stop_reason is None:
            self.stop_reason, self.exit_code = reason, exit_code
        self.arms.request_stop(reason, exit_code)

    def run(self, stop_after_round: int | None = None) -> TrainerResult:
        """Run every round not yet done; decide after each; the verdict at the end."""
        try:
            for r in range(1, self.plan.trials_per_task + 1):
                active = self.active(r)
                if len(active) < 2:
                    break
                if self.result.rounds_done >= r:
                    continue
                if not self._budget_allows(r, active):
                    break
                for pid in active if r % 2 else list(reversed(active)):  # interleaved: neither arm always first
                    if not self._advance(pid, r):
                        break
                if self.stop_reason is not None:
                    break
                self._decide(r)
                self.result.rounds_done = r
                self.save()
                if stop_after_round is not None and r >= stop_after_round:
                    self.stop_reason = f"stop after round {stop_after_round} reached"
                    break
            if self.stop_reason is None:
                self.result.status = "budget_exhausted" if self.result.status == "budget_exhausted" else "completed"
                self._final()
            else:
                self.result.status = "stopped"
                self.result.stop_reason = self.stop_reason
        except BaseException:
            self.result.status = "interrupted"
            raise
        finally:
            self.save()
        return self.result

    def active(self, round_: int) -> list[str]:
        """Profiles still racing at `round_` (the plan's order)."""
        return active_at(self.plan, self.result.racing, round_)

    def _budget_allows(self, r: int, active: list[str]) -> bool:
        need = len(self.result.tasks) * len(active)
        spent = self.result.spent
        budget = self.plan.budget
        left = self._remaining_this_round(r, active)
        if budget.trials is not None and spent.trials + left > budget.trials:
            self._exhausted(
                f"round {r} needs {left} more trial(s); {budget.trials - spent.trials} left of budget.trials"
            )
            return False
        if budget.usd is not None and spent.trials:
            per_trial = spent.usd / spent.trials
            estimate = per_trial * left
            if spent.usd + estimate > budget.usd:
                self._exhausted(
                    f"round {r} would cost about ${estimate:.2f} ({need} trials at ${per_trial:.4f}); "
                    f"${budget.usd - spent.usd:.2f} left of budget.usd"
                )
                return False
        return True

    def _remaining_this_round(self, r: int, active: list[str]) -> int:
        """Trials round r still has to run (a resumed round has some done)."""
        total = 0
        for pid in active:
            done = sum(1 for t in self._arm_trials(pid) if t.iteration == r)
            total += len(self.result.tasks) - done
        return total

    def _exhausted(self, why: str) -> None:
        self.result.status = "budget_exhausted"
        self.result.stop_reason = f"budget exhausted: {why}"
        self.notify(f"Budget exhausted: {why}")

    def _arm_options(self, profile: AgentProfile) -> IterateOptions:
        plan = self.plan
        return IterateOptions(
            suite=Path(plan.suite),
            output=arm_dir(self.folder, profile.id),
            iterations=plan.trials_per_task,
            model=profile.model or plan.model or DEFAULT_MODEL,
            timeout_sec=plan.timeout_sec,
            run_id=arm_run_id(self.folder, profile.id),
            tasks=tuple(glob_escape(t) for t in self.result.tasks),
            project_root=Path(self.result.project_root),
            runner="overnight",
            workers=plan.workers,
            max_retries=2,
            models=self.settings,
            profile=profile,
        )

    def _advance(self, pid: str, r: int) -> bool:
        """Bring profile `pid`'s arm to round `r`; False when it stopped short (a signal, an outage)."""
        try:
            done = self.arms.advance(arm_dir(self.folder, pid), lambda: self._arm_options(self.profiles[pid]), r,
                                     prefix=pid)  # fmt: skip
        finally:
            self._trials.pop(pid, None)
            self._count_spent()
            self.save()
        if not done and self.stop_reason is None:
            self.stop_reason, self.exit_code = self.arms.stop_reason or "the arm run stopped", self.arms.exit_code
        return done

    # ------------------------------------------------------------------ decisions

    def _arm_trials(self, pid: str) -> list[TrialResult]:
        if pid not in self._trials:
            self._trials[pid] = run_trials(arm_dir(self.folder, pid))
        return self._trials[pid]

    def _count_spent(self) -> None:
        trials = [t for pid in self.plan.profiles for t in self._arm_trials(pid)]
        self.result.spent = Spent(trials=len(trials), usd=round(sum(t.cost_usd or 0.0 for t in trials), 6))

    def _all_trials(self) -> dict[str, list[TrialResult]]:
        return {pid: self._arm_trials(pid) for pid in self.plan.profiles}

    def _decide(self, r: int) -> None:
        """Racing after round r (racing.py); a round decided before a kill is not decided again."""
        if any(d.round == r for d in self.result.racing):
            return
        decisions = racing_look(self._all_trials(), self.plan, r, self.active(r))
        self.result.racing.extend(decisions)
        for d in decisions:
            if d.action == "dropped":
                self.notify(f"Racing: {d.profile} dropped after round {r}, worse than {d.against} "
                            f"(p = {d.p_value:.3g} at alpha {d.alpha:.3g})")  # fmt: skip

    def _final(self) -> None:
        verdict, comparisons = final_verdict(self._all_trials(), self.plan, self.result.racing, self.result.rounds_done)
        self.result.verdict, self.result.comparisons = verdict, comparisons
        self.notify(f"Verdict: {verdict.sentence}")
        profiles = self.profile_results()
        self.result.pareto_front = pareto_front(profiles)
        self.result.cost_note = cost_note(profiles, verdict) if self.plan.objective == "min_cost_per_pass" else None
        if self.result.cost_note:
            self.notify(self.result.cost_note)

    # ------------------------------------------------------------------ outputs

    def profile_results(self) -> list[ProfileResult]:
        out = []
        for pid in self.plan.profiles:
            dropped = [d for d in self.result.racing if d.profile == pid and d.action == "dropped"]
            out.append(profile_result(pid, self.profiles[pid], f"{ARMS_DIR}/{pid}", self._arm_trials(pid),
                                      dropped[0] if dropped else None))  # fmt: skip
        return out

    def save(self) -> None:
        self.result.profiles = self.profile_results()
        env = self.result.environment
        episodes = [e for pid in self.plan.profiles
                    for e in episodes_of(env, pid, f"{ARMS_DIR}/{pid}", self._arm_trials(pid))]  # fmt: skip
        save_training(self.folder, self.result, episodes)


def pareto_front(profiles: list[ProfileResult]) -> list[str]:
    """Profiles no other beats on pass rate and cost per pass at once (no cost recorded counts as free)."""

    def point(p: ProfileResult) -> tuple[float, float]:
        return (p.pass_rate or 0.0, -(p.cost_per_pass or 0.0))

    return [
        p.id
        for p in profiles
        if not any(point(q)[0] >= point(p)[0] and point(q)[1] >= point(p)[1] and point(q) != point(p) for q in profiles)
    ]


def cost_note(profiles: list[ProfileResult], verdict: Verdict) -> str | None:
    """Among the profiles the verdict does not separate (all of them when there is no winner; only the winner
    otherwise), the one that costs least per pass. The pass-rate verdict is never overruled by cost."""
    tied = [p for p in profiles if p.cost_per_pass is not None and (verdict.winner in (None, p.id))]
    if verdict.winner is not None or len(tied) < 2:
        return None
    cheapest = min(tied, key=lambda p: p.cost_per_pass or 0.0)
    return (f"min_cost_per_pass: no pass-rate difference is shown; {cheapest.id} costs least per pass "
            f"(${cheapest.cost_per_pass:.4f})")  # fmt: skip


def headline(result: TrainerResult) -> str:
    rates = ", ".join(
        f"{p.id} {'n/a' if p.pass_rate is None else f'{p.pass_rate:.1%}'} ({p.graded_trials} graded)"
        for p in result.profiles
    )
    return f"{result.status}: {rates}; {result.spent.trials} trials, ${result.spent.usd:.2f}"


class Training(Protocol):
    """What the CLI drives: an A/B (`Trainer`) or an evolution (`trainer.evolution.Evolver`)."""

    folder: Path
    result: TrainerResult
    exit_code: int

    def request_stop(self, reason: str, exit_code: int = 130) -> None: ...

    def run(self, stop_after_round: int | None = None) -> TrainerResult: ...


def promote_winner(folder: Path, project_root: Path | None, as_name: str | None, *, force: bool) -> tuple[Path, str]:
    """Write the training's winner (A/B: the verdict's winner; evolve: the candidate confirmed on held-out tasks)
    to the project's profiles; nothing else the Trainer does touches them."""
    result = load_result(folder)
    root = (project_root or Path(result.project_root)).resolve()
    if result.status not in ("completed", "budget_exhausted"):
        raise UserError(f"the training is {result.status}, not finished; resume it first (tbench train run "
                        f"--resume {folder})", path=folder)  # fmt: skip
    if result.evolution is not None:
        proposed = result.evolution.proposed
        if proposed is None:
            raise UserError("nothing to promote: no evolved profile was confirmed on the held-out tasks", path=folder)
        profile = load_profile(folder / "profiles" / f"{proposed}.toml")
    else:
        winner = result.verdict.winner if result.verdict else None
        if winner is None:
            why = result.verdict.sentence if result.verdict else "no verdict"
            raise UserError(f"nothing to promote: {why}", path=folder)
        profile = next(p.profile for p in result.profiles if p.id == winner)
    new_id = as_name or profile.id
    try:
        profile = AgentProfile.model_validate({**profile.model_dump(), "id": new_id})
    except ValueError:
        raise UserError(f"{new_id!r} is not a profile id: use letters, digits, '.', '_' or '-'", field="as") from None
    path = profile_path(root, new_id)
    if path.exists() and load_profile(path).digest() != profile.digest() and not force:
        raise UserError("exists and sets the agent up differently; give --as NAME, or --force to overwrite",
                        path=path)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    write_profile(path, profile)
    result.promoted = new_id
    atomic_write_model(trainer_file(folder), result)
    return path, new_id
