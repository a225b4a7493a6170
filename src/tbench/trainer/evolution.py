"""The Trainer's evolution (`strategy = "evolve"`): GEPA (the `gepa` package) over one text, the seed profile's
`system_prompt_append`. A candidate is that text on top of the seed profile; evaluating it is `trials_per_task`
trials of the candidate profile on the batch's tasks, a normal run folder per evaluation (`DIR/evals/<n>-<digest>/`,
through the A/B's `ArmRunner`: kill -9 and resume as for any run). gepa picks parents from its Pareto front over
the validation tasks, asks the reflection model for a child after showing it the parent's trials on a training
minibatch, keeps the child only when it does strictly better on that minibatch, then scores it on every validation
task.

Winner's curse: the best candidate on validation was picked on noisy scores, so before it is proposed it is
confirmed against the seed on the project's held-out tasks — an A/B of the two profiles (`DIR/arms/<id>/`), judged
by the paired test at the plan's alpha. Only an `improved` verdict proposes it for `tbench train promote`.

What the reflection model reads (instruction, the trial's tool calls and errors, verdict, test-output tail) passes
the Archivist's leakage guard line by line, so no test or solution text reaches it; a proposed prompt that names a
task or quotes one is scored 0 without running.

Resume: gepa keeps its state in `DIR/gepa/` (saved at each iteration's start) and replays the iteration a kill cut
short; the evaluation cache (`DIR/evals/index.json`, keyed by profile digest, task and k) and the recorded
reflection answers (`DIR/reflections.jsonl`) make that replay cost no trial and no model call."""

from __future__ import annotations

import hashlib
import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rich.console import Console

from tbench.agents.model_adapter import DEFAULT_MODEL
from tbench.archivist.guard import LeakGuard
from tbench.archivist.loop import reflection_transport
from tbench.bench.formats import load_suite
from tbench.errors import UserError
from tbench.fsutil import atomic_write_model, tail
from tbench.llm.chat import ChatMessage, ChatTransport
from tbench.models.common import read_model, utcnow
from tbench.models.layout import ARMS_DIR, EVALS_DIR, TrialPaths
from tbench.models.model_settings import ModelSettings
from tbench.models.profile import AgentProfile
from tbench.models.results import TrialResult
from tbench.models.task import Task
from tbench.models.trajectory import Trajectory
from tbench.overnight.iterate import IterateOptions, check_output, check_project_root
from tbench.stats.inference import compare
from tbench.trainer.readout import load_result, run_trials
from tbench.trainer.schema import (
    Candidate,
    EvalEntry,
    EvalIndex,
    EvolutionTree,
    PairVerdict,
    ProfileResult,
    Spent,
    TrainerResult,
    TrainingPlan,
    Verdict,
    load_plan,
    plan_text,
    write_profile,
)
from tbench.trainer.service import (
    ArmRunner,
    Notify,
    Trainer,
    Training,
    TrainOptions,
    arm_run_id,
    episodes_of,
    glob_escape,
    new_training_id,
    preflight_models,
    profile_result,
    reopen,
    resolve_profiles,
    save_training,
    select_tasks,
)

COMPONENT = "system_prompt_append"
"""The one text gepa evolves."""
GEPA_DIR = "gepa"
PROFILES_DIR = "profiles"
REFLECTIONS_FILE = "reflections.jsonl"
INDEX_FILE = "index.json"
REFLECT_TIMEOUT_SEC = 600.0
WITHHELD = "[line withheld: it quotes a task's tests or solution]"

REFLECT_TEMPLATE = """\
You improve the extra system-prompt text of an autonomous coding agent that solves terminal tasks. The text it \
has now:
```
<curr_param>
```
Below are finished trials with that text: each task's instruction, what the agent did, the verdict and the end \
of the test output.
```
<side_info>
```
Write the new extra system-prompt text: short, general rules that would help on OTHER tasks too — keep what \
still helps, fix what made trials fail. Never name a task, never include a task-specific file path, an expected \
output or an answer. Answer with the whole new text inside one ``` block."""


class _Stopped(BaseException):
    """The search must end now (a signal, a stopped evaluation run, the trial budget): gepa's state is kept."""


class _BudgetOut(BaseException):
    """The next evaluation would spend trials the budget keeps for the held-out confirmation."""


@dataclass
class Costs:
    """What a plan's search and confirmation cost in trials, from the split's sizes."""

    k: int
    train: int
    validation: int
    holdout: int
    minibatch: int

    @property
    def seed(self) -> int:
        return self.k * self.validation

    @property
    def proposal(self) -> int:
        """A parent and a child on a minibatch, and the child on every validation task."""
        return self.k * (2 * self.minibatch + self.validation)

    @property
    def confirmation(self) -> int:
        return 2 * self.k * self.holdout

    @property
    def least(self) -> int:
        return self.seed + self.proposal + self.confirmation


def split_tasks(tasks: list[str], validation: float, seed: int) -> tuple[list[str], list[str]]:
    """The non-held-out tasks into train (minibatches) and validation, drawn by the plan's seed."""
    if len(tasks) < 2:
        raise UserError(f"leaves {len(tasks)} task(s) outside the held-out split; evolve needs at least one train "
                        "and one validation task: lower split.holdout or add tasks", field="split.holdout")  # fmt: skip
    order = sorted(tasks)
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(len(order) * validation)), len(order) - 1)
    return sorted(order[n_val:]), sorted(order[:n_val])


def text_digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass
class _Pending:
    """The proposal of the gepa iteration in progress, filled in from gepa's events."""

    iteration: int
    parent_index: int | None = None
    minibatch: list[str] = field(default_factory=list)
    parent_scores: list[float] = field(default_factory=list)
    text: str | None = None
    scores: list[float] = field(default_factory=list)
    validation_rate: float | None = None
    index: int | None = None


class Evolver:
    """An evolution's training folder being filled: gepa's search, then the held-out confirmation."""

    def __init__(
        self,
        folder: Path,
        result: TrainerResult,
        seed: AgentProfile,
        suite_tasks: list[Task],
        settings: ModelSettings,
        notify: Notify,
        console: Console | None = None,
    ) -> None:
        self.folder = folder
        self.result = result
        self.plan: TrainingPlan = result.plan
        self.seed = seed
        self.tasks = {t.id: t for t in suite_tasks}
        self.settings = settings
        self.notify = notify
        self.console = console or Console(stderr=True)
        self.arms = ArmRunner(result.plan.workers, notify, self.console)
        self.stop_reason: str | None = None
        self.exit_code = 0
        self.index = self._load_index()
        self._trials: dict[str, list[TrialResult]] = {}
        """Trials of finished evaluation folders (they never change)."""
        self._reflections = self._load_reflections()
        self._transport: ChatTransport | None = None
        self._pending: _Pending | None = None
        self._stop_after: int | None = None
        self._secrets: LeakGuard | None = None
        self._guard: LeakGuard | None = None

    @property
    def tree(self) -> EvolutionTree:
        assert self.result.evolution is not None
        return self.result.evolution

    # ------------------------------------------------------------------ set-up

    @classmethod
    def create(cls, opts: TrainOptions, notify: Notify, console: Console | None = None) -> Evolver:
        """Validate the plan, the seed profile, models, split and budget; only then write the training folder."""
        if opts.plan is None:
            raise UserError("missing; give PLAN.toml (or --resume DIR)", field="PLAN")
        plan = opts.read_plan(opts.plan)
        if plan.strategy != "evolve":
            raise UserError(f"strategy is {plan.strategy!r}; this runs `evolve` plans", path=opts.plan,
                            field="strategy")  # fmt: skip
        if plan.split.holdout <= 0:
            raise UserError("is 0: an evolve plan confirms its winner on held-out tasks; set split.holdout (e.g. "
                            "0.3)", path=opts.plan, field="split.holdout")  # fmt: skip
        output = opts.output or Path("results") / new_training_id()
        check_output(output)
        root = (opts.project_root or Path.cwd()).resolve()
        check_project_root(root)
        (seed,) = resolve_profiles(root, plan.profiles)
        model = seed.model or plan.model
        if model is None:
            raise UserError(f"profile {seed.id!r} names no model and neither does the plan; set `model`",
                            path=opts.plan, field="model")  # fmt: skip
        preflight_models([model], opts.models, plan)
        spec = plan.evolve.reflect_model or model
        transport = reflection_transport(spec, opts.models)
        try:
            transport.preflight()
        except UserError as exc:
            detail = exc.message if exc.path is None else exc.render()
            raise UserError(f"the reflection model {spec}: {detail}", field="evolve.reflect_model") from None
        selection = select_tasks(plan, root)
        if not selection.holdout:
            raise UserError(f"holds out no task of {len(selection.tasks)}; raise split.holdout", path=opts.plan,
                            field="split.holdout")  # fmt: skip
        train, validation = split_tasks(selection.tasks, plan.split.validation, plan.seed)
        costs = _costs(plan, train, validation, selection.holdout)
        if plan.budget.trials is not None and plan.budget.trials < costs.least:
            raise UserError(
                f"{plan.budget.trials} trials cannot cover the seed on {len(validation)} validation task(s), one "
                f"proposal and the held-out confirmation on {len(selection.holdout)} task(s) at k = {costs.k} "
                f"({costs.least} trials); raise budget.trials",
                path=opts.plan,
                field="budget.trials",
            )
        suite = load_suite(Path(plan.suite), plan.tasks)
        now = utcnow()
        result = TrainerResult(
            plan=plan,
            plan_file=str(opts.plan.resolve()),
            plan_toml=plan_text(plan),
            project_root=str(root),
            model=model,
            status="running",
            started_at=now,
            updated_at=now,
            environment=selection.environment,
            tasks=train + validation,
            holdout_tasks=selection.holdout,
            train_tasks=train,
            validation_tasks=validation,
            rounds_planned=plan.trials_per_task,
            budget=plan.budget,
            evolution=EvolutionTree(
                seed_profile=seed.id,
                reflect_model=spec,
                candidates=[
                    Candidate(id=seed.id, parent=None, profile=seed, accepted=True, reason="the seed", index=0)
                ],
            ),
        )
        folder = output.resolve()
        (folder / EVALS_DIR).mkdir(parents=True, exist_ok=True)
        evolver = cls(folder, result, seed, suite.tasks, opts.models, notify, console)
        evolver.save()
        return evolver

    @classmethod
    def resume(cls, folder: Path, opts: TrainOptions, notify: Notify, console: Console | None = None) -> Evolver:
        """Go on with an evolution's folder; a plan given again must be the one it ran."""
        folder, result = reopen(folder, opts)
        if result.evolution is None or result.plan.strategy != "evolve":
            raise UserError("is an A/B training folder, not an evolution", path=folder)
        seed = result.evolution.candidates[0].profile
        suite = load_suite(Path(result.plan.suite), result.plan.tasks)
        evolver = cls(folder, result, seed, suite.tasks, opts.models, notify, console)
        evolver.save()
        return evolver

    # ------------------------------------------------------------------ running

    def request_stop(self, reason: str, exit_code: int = 130) -> None:
        if self.stop_reason is None:
            self.stop_reason, self.exit_code = reason, exit_code
        self.arms.request_stop(reason, exit_code)

    def run(self, stop_after_round: int | None = None) -> TrainerResult:
        """The search (unless it ended before a resume), then the confirmation; `stop_after_round` stops
        (resumably) after that many gepa iterations."""
        self._stop_after = stop_after_round
        try:
            if not self.tree.search_done:
                self._search()
            if self.stop_reason is None:
                self._confirm()
            if self.stop_reason is None:
                self.result.status = "completed"
            else:
                self.result.status, self.result.stop_reason = "stopped", self.stop_reason
        except _Stopped:
            self.result.status = "stopped"
            self.result.stop_reason = self.stop_reason or self.arms.stop_reason or "the evaluation run stopped"
            if self.stop_reason is None:
                self.stop_reason, self.exit_code = self.result.stop_reason, self.arms.exit_code or 1
        except BaseException:
            self.result.status = "interrupted"
            raise
        finally:
            self.save()
        return self.result

    def _search(self) -> None:
        from gepa.api import optimize

        adapter: Any = _Adapter(self)  # duck-typed: gepa's Protocols are generic over types we do not name
        recorder: Any = _Recorder(self)
        stopper: Any = self._should_stop
        reflect_lm: Any = self._reflect
        plan, tree = self.plan, self.tree
        costs = _costs(plan, self.result.train_tasks, self.result.validation_tasks, self.result.holdout_tasks)
        budget = plan.budget.trials
        calls = (
            budget - costs.confirmation
            if budget is not None
            else costs.seed + plan.evolve.max_candidates * costs.proposal
        )
        try:
            optimize(
                seed_candidate={COMPONENT: self.seed.system_prompt_append or ""},
                trainset=list(self.result.train_tasks),
                valset=list(self.result.validation_tasks),
                adapter=adapter,
                reflection_lm=reflect_lm,
                reflection_prompt_template=REFLECT_TEMPLATE,
                candidate_selection_strategy="pareto",
                frontier_type="instance",
                reflection_minibatch_size=costs.minibatch,
                max_metric_calls=calls,
                stop_callbacks=[stopper],
                callbacks=[recorder],
                run_dir=str(self.folder / GEPA_DIR),
                seed=plan.seed,
                use_merge=False,
                raise_on_exception=True,
                display_progress_bar=False,
            )
        except _BudgetOut:
            tree.search_ended = tree.search_ended or "budget.trials: what is left is kept for the confirmation"
        if self.stop_reason is not None:
            return
        self._drop_pending(f"not decided: the search ended ({tree.search_ended or 'gepa stopped'})")
        tree.search_ended = tree.search_ended or "gepa's metric-call budget (from budget.trials) is spent"
        tree.search_done = True
        scored = [c for c in tree.candidates if c.accepted and c.validation_rate is not None]
        best = max(scored, key=lambda c: (c.validation_rate or 0.0, -(c.index or 0)), default=None)
        tree.best = best.id if best is not None else None
        self.notify(f"Search ended ({tree.search_ended}): {len(tree.candidates) - 1} proposal(s), best on "
                    f"validation {tree.best}")  # fmt: skip
        self.save()

    def _should_stop(self, state: Any) -> bool:
        """gepa's stop callback, looked at before each iteration."""
        tree = self.tree
        if self.stop_reason is not None:
            return True
        done = int(state.i) + 1
        if self._stop_after is not None and done >= self._stop_after:
            self.stop_reason = f"stop after round {self._stop_after} reached"
            return True
        if len(tree.candidates) - 1 >= self.plan.evolve.max_candidates:
            tree.search_ended = f"max_candidates ({self.plan.evolve.max_candidates}) proposals evaluated"
            return True
        usd = self.plan.budget.usd
        if usd is not None and self.result.spent.usd >= usd:
            tree.search_ended = f"budget.usd (${usd:.2f}) spent"
            return True
        return False

    # ------------------------------------------------------------------ evaluations

    def candidate_profile(self, text: str) -> AgentProfile:
        """The seed with `text` as its prompt addition (the seed itself for the seed's text)."""
        if text == (self.seed.system_prompt_append or ""):
            return self.seed
        base = self.seed.model_copy(update={COMPONENT: text or None})
        digest = base.digest()
        known = next((c.profile for c in self.tree.candidates if c.profile.digest() == digest), None)
        if known is not None:
            return known
        parent = self._pending.parent_index if self._pending is not None else None
        return AgentProfile.model_validate(
            {
                **self.seed.model_dump(),
                "id": f"{self.seed.id}-{digest[:8]}",
                "parent": self._id_of(parent) or self.seed.id,
                COMPONENT: text or None,
                "source": "trainer",
                "notes": f"evolved from {self._id_of(parent) or self.seed.id} by tbench train (gepa)",
            }
        )

    def proposal_leak(self, text: str) -> str | None:
        """Why a proposed prompt may not be tried: it names a task or quotes what the agent is never shown."""
        if self._guard is None:
            self._guard = LeakGuard.of(list(self.tasks.values()), [])
        return self._guard.check(text)

    def trials_for(self, profile: AgentProfile, task_ids: Sequence[str]) -> dict[str, list[TrialResult]]:
        """`k` trials of `profile` on each task, run only where no evaluation has them (the cache)."""
        k, digest = self.plan.trials_per_task, profile.digest()
        mine = [e for e in self.index.entries if e.digest == digest and e.k == k]
        have = {t: e for e in mine for t in e.tasks}
        missing = [t for t in dict.fromkeys(task_ids) if t not in have]
        if missing:
            self._charge(len(missing) * k)
            n = len(self.index.entries) + 1
            entry = EvalEntry(n=n, folder=f"{EVALS_DIR}/{n:03d}-{digest}", candidate=profile.id, digest=digest,
                              tasks=missing, k=k)  # fmt: skip
            self.index.entries.append(entry)
            self._save_index()  # before the run folder exists: a kill after it finds the folder again
            have.update({t: entry for t in missing})
        out: dict[str, list[TrialResult]] = {}
        for n in dict.fromkeys(have[t].n for t in task_ids):
            entry = self.index.entries[n - 1]
            trials = self._entry_trials(entry, profile)
            for t in entry.tasks:
                out[t] = [r for r in trials if r.task_id == t]
        return out

    def _charge(self, trials: int) -> None:
        budget = self.plan.budget.trials
        if budget is None:
            return
        costs = _costs(self.plan, self.result.train_tasks, self.result.validation_tasks, self.result.holdout_tasks)
        left = budget - costs.confirmation - self._eval_trials()
        if trials > left:
            self.tree.search_ended = (f"budget.trials: the next evaluation needs {trials} trial(s), {max(left, 0)} "
                                      f"left before the {costs.confirmation} kept for the confirmation")  # fmt: skip
            raise _BudgetOut

    def _entry_trials(self, entry: EvalEntry, profile: AgentProfile) -> list[TrialResult]:
        if entry.folder in self._trials:
            return self._trials[entry.folder]
        folder = self.folder / entry.folder

        def options() -> IterateOptions:
            return self._options(profile, folder, entry.tasks, arm_run_id(self.folder, f"e{entry.n:03d}"))

        try:
            done = self.arms.advance(folder, options, entry.k, prefix=f"eval {entry.n} {profile.id}")
        finally:
            self._count_spent()
            self.save()
        if not done:
            raise _Stopped
        trials = run_trials(folder)
        self._trials[entry.folder] = trials
        return trials

    def _options(self, profile: AgentProfile, folder: Path, tasks: Sequence[str], run_id: str) -> IterateOptions:
        plan = self.plan
        return IterateOptions(
            suite=Path(plan.suite),
            output=folder,
            iterations=plan.trials_per_task,
            model=profile.model or plan.model or DEFAULT_MODEL,
            timeout_sec=plan.timeout_sec,
            run_id=run_id,
            tasks=tuple(glob_escape(t) for t in tasks),
            project_root=Path(self.result.project_root),
            runner="overnight",
            workers=plan.workers,
            max_retries=2,
            models=self.settings,
            profile=profile,
        )

    # ------------------------------------------------------------------ what the reflection model reads

    def reflective_record(self, trial: TrialResult, run_dir: Path) -> dict[str, str]:
        """One trial as gepa shows it to the reflection model, every line through the leakage guard."""
        if self._secrets is None:
            self._secrets = LeakGuard.secrets_of(list(self.tasks.values()))
        task = self.tasks.get(trial.task_id)
        instruction = tail(task.instruction, 400) if task is not None else trial.task_id
        verdict = (f"verdict: {trial.status}; failure mode: {trial.failure_mode or 'none'}; turns: {trial.turns}"
                   + (f"\nerror: {tail(trial.error_message, 300)}" if trial.error_message else ""))  # fmt: skip
        record = {
            "Task": instruction,
            "What the agent did": trajectory_digest(run_dir, trial),
            "Feedback": f"{verdict}\ntest output (end):\n{tail(trial.verification_output, 600).strip() or '(none)'}",
        }
        return {key: self._secrets.redact(value, WITHHELD) for key, value in record.items()}

    def _reflect(self, prompt: str) -> str:
        """gepa's reflection LM: one chat call on the run's endpoints, recorded; a prompt asked before (a replay
        after a resume) gets the recorded answer without a call."""
        key = text_digest(prompt)
        if key in self._reflections:
            return self._reflections[key]
        if self._transport is None:
            self._transport = reflection_transport(self.tree.reflect_model, self.settings)
        at = utcnow()
        try:
            reply = self._transport.chat([ChatMessage(role="user", content=prompt)], [],
                                         deadline=time.monotonic() + REFLECT_TIMEOUT_SEC)  # fmt: skip
        except Exception as exc:  # gepa drops this iteration's proposal and goes on
            self._record_reflection({"key": key, "at": at, "model": self.tree.reflect_model, "prompt": prompt,
                                     "error": f"{type(exc).__name__}: {tail(str(exc), 300)}"})  # fmt: skip
            raise
        answer = reply.message.content
        self._record_reflection({"key": key, "at": at, "model": self.tree.reflect_model, "prompt": prompt,
                                 "answer": answer})  # fmt: skip
        self._reflections[key] = answer
        return answer

    def _record_reflection(self, row: dict[str, Any]) -> None:
        with (self.folder / REFLECTIONS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        self.tree.reflection_calls += 1
        self.save()

    def _load_reflections(self) -> dict[str, str]:
        path = self.folder / REFLECTIONS_FILE
        out: dict[str, str] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:  # a line cut short by a kill
                    continue
                if isinstance(row, dict) and isinstance(row.get("answer"), str):
                    out[str(row["key"])] = row["answer"]
        return out

    # ------------------------------------------------------------------ the tree (from gepa's events)

    def _id_of(self, index: int | None) -> str | None:
        if index is None:
            return None
        return next((c.id for c in self.tree.candidates if c.index == index), None)

    def begin_iteration(self, iteration: int) -> None:
        """A new gepa iteration; records of this iteration or later are from a timeline a kill cut short (gepa
        replays from its last saved state), so they go."""
        self.tree.candidates = [c for c in self.tree.candidates if c.iteration is None or c.iteration < iteration]
        self._pending = _Pending(iteration)

    def finish_proposal(self, accepted: bool, reason: str) -> None:
        p = self._pending
        if p is None or p.text is None:
            return
        profile = self.candidate_profile(p.text)
        if profile is self.seed:  # the reflection gave the seed's text back: a no-op, named apart from the seed
            profile = self.seed.model_copy(update={"id": f"{self.seed.id}-{profile.digest()[:8]}", "source": "trainer"})
        parent = self._id_of(p.parent_index) or self.seed.id
        profile = profile.model_copy(update={"parent": parent})
        twin = next((i for i, c in enumerate(self.tree.candidates) if c.id == profile.id), None)
        if twin is not None and (self.tree.candidates[twin].accepted or not accepted):
            self.notify(f"Proposal {profile.id} again (cached, no trials): {reason}")
            self._pending = _Pending(p.iteration)
            return
        if twin is not None:  # rejected before, accepted now (another parent's minibatch): one record, the later
            del self.tree.candidates[twin]
        self.tree.candidates.append(
            Candidate(
                id=profile.id,
                parent=parent,
                profile=profile,
                minibatch=p.minibatch,
                parent_score=sum(p.parent_scores) if p.parent_scores else None,
                score=sum(p.scores) if p.scores else None,
                accepted=accepted,
                reason=reason,
                validation_rate=p.validation_rate if accepted else None,
                trials=self._candidate_trials(profile),
                iteration=p.iteration,
                index=p.index if accepted else None,
                parent_scores=p.parent_scores,
                scores=p.scores,
            )
        )
        (self.folder / PROFILES_DIR).mkdir(parents=True, exist_ok=True)
        write_profile(self.folder / PROFILES_DIR / f"{profile.id}.toml", profile)
        verb = "accepted" if accepted else "rejected"
        self.notify(f"Proposal {len(self.tree.candidates) - 1} ({profile.id}) {verb}: {reason}")
        self._pending = _Pending(p.iteration)
        self.save()

    def _drop_pending(self, reason: str) -> None:
        if self._pending is not None and self._pending.text is not None and self._pending.scores:
            self.finish_proposal(False, reason)
        self._pending = None

    def seed_validated(self, rate: float) -> None:
        seed = self.tree.candidates[0]
        self.tree.candidates[0] = seed.model_copy(update={"validation_rate": rate,
                                                          "trials": self._candidate_trials(self.seed)})  # fmt: skip
        self.save()

    def _candidate_trials(self, profile: AgentProfile) -> int:
        digest = profile.digest()
        return sum(len(run_trials(self.folder / e.folder)) for e in self.index.entries if e.digest == digest)

    # ------------------------------------------------------------------ the held-out confirmation

    def _confirm(self) -> None:
        tree = self.tree
        best = next((c for c in tree.candidates if c.id == tree.best), None)
        seed_rate = tree.candidates[0].validation_rate
        if best is None or best.id == self.seed.id or (best.validation_rate or 0.0) <= (seed_rate or 0.0):
            tree.confirmed, tree.proposed = False, None
            tree.note = "no candidate did better than the seed on the validation tasks; nothing to confirm"
            self._no_verdict(tree.note)
            return
        arms = {self.seed.id: self.seed, best.id: best.profile}
        for r in range(1, self.plan.trials_per_task + 1):
            order = list(arms) if r % 2 else list(reversed(arms))
            for pid in order:
                folder = self.folder / ARMS_DIR / pid

                def options(pid: str = pid, folder: Path = folder) -> IterateOptions:
                    return self._options(arms[pid], folder, self.result.holdout_tasks, arm_run_id(self.folder, pid))

                try:
                    done = self.arms.advance(folder, options, r, prefix=f"confirm {pid}")
                finally:
                    self._count_spent()
                    self.save()
                if not done:
                    raise _Stopped
        seed_trials, best_trials = (run_trials(self.folder / ARMS_DIR / pid) for pid in arms)
        comparison = compare(seed_trials, best_trials, label_a=self.seed.id, label_b=best.id, alpha=self.plan.alpha)
        pair = PairVerdict(reference=self.seed.id, profile=best.id, alpha=self.plan.alpha, comparison=comparison)
        tree.confirmation = pair
        tree.confirmed = comparison.verdict == "improved"
        tree.proposed = best.id if tree.confirmed else None
        tree.note = None if tree.confirmed else f"the held-out confirmation found {comparison.verdict}"
        self.result.comparisons = [pair]
        what = f"{best.id} vs {self.seed.id} on {comparison.tasks} held-out task(s)"
        diff = "n/a" if comparison.diff is None else f"{comparison.diff * 100:+.1f} pp"
        p = f"{diff}, p = {comparison.p_value:.3g}"
        sentence = (
            f"{best.id} is confirmed better than {self.seed.id} on the held-out tasks ({p})"
            if tree.confirmed
            else f"{what}: {comparison.verdict} ({p}); nothing is proposed"
        )
        self.result.verdict = Verdict(
            winner=best.id if tree.confirmed else None,
            reference=self.seed.id,
            against=self.seed.id if tree.confirmed else best.id,
            diff=comparison.diff,
            interval=None if comparison.interval is None else (comparison.interval.low, comparison.interval.high),
            p_value=comparison.p_value,
            test=comparison.test,
            alpha=self.plan.alpha,
            sentence=sentence,
        )
        self.notify(f"Verdict: {sentence}")

    def _no_verdict(self, why: str) -> None:
        self.result.verdict = Verdict(winner=None, reference=self.seed.id, against=None, diff=None, interval=None,
                                      p_value=None, test=None, alpha=self.plan.alpha, sentence=why)  # fmt: skip
        self.notify(f"Verdict: {why}")

    # ------------------------------------------------------------------ files

    def _load_index(self) -> EvalIndex:
        path = self.folder / EVALS_DIR / INDEX_FILE
        return read_model(path, EvalIndex, "an evaluation index") if path.is_file() else EvalIndex()

    def _save_index(self) -> None:
        atomic_write_model(self.folder / EVALS_DIR / INDEX_FILE, self.index)

    def _run_folders(self) -> list[tuple[str, str]]:
        """(profile id, folder relative to the training folder) of every run: evaluations, then the arms."""
        out = [(e.candidate, e.folder) for e in self.index.entries]
        arms = self.folder / ARMS_DIR
        if arms.is_dir():
            out += [(p.name, f"{ARMS_DIR}/{p.name}") for p in sorted(arms.iterdir()) if p.is_dir()]
        return out

    def _eval_trials(self) -> int:
        return sum(len(run_trials(self.folder / e.folder)) for e in self.index.entries)

    def _count_spent(self) -> None:
        trials = [t for _, rel in self._run_folders() for t in run_trials(self.folder / rel)]
        self.result.spent = Spent(trials=len(trials), usd=round(sum(t.cost_usd or 0.0 for t in trials), 6))

    def profile_results(self) -> list[ProfileResult]:
        """The confirmation arms (the seed and the best candidate on the held-out tasks)."""
        profiles = {c.id: c.profile for c in self.tree.candidates}
        arms = self.folder / ARMS_DIR
        folders = sorted(p for p in arms.iterdir() if p.is_dir()) if arms.is_dir() else []
        return [profile_result(f.name, profiles.get(f.name, AgentProfile(id=f.name)), f"{ARMS_DIR}/{f.name}",
                               run_trials(f)) for f in folders]  # fmt: skip

    def save(self) -> None:
        self.result.profiles = self.profile_results()
        episodes = [e for pid, rel in self._run_folders()
                    for e in episodes_of(self.result.environment, pid, rel, run_trials(self.folder / rel))]  # fmt: skip
        save_training(self.folder, self.result, episodes)


def open_training(opts: TrainOptions, notify: Notify, *, resume: Path | None = None) -> Training:
    """A new training run from `opts.plan`, or `resume` (a training folder): an A/B (`Trainer`) or an evolution,
    as the plan says. Here, not in service.py, because this module builds on that one."""
    if resume is not None:
        strategy = load_result(resume.parent if resume.is_file() else resume).plan.strategy
    else:
        if opts.plan is None:
            raise UserError("missing; give PLAN.toml (or --resume DIR)", field="PLAN")
        strategy = load_plan(opts.plan).strategy
    cls: type[Trainer] | type[Evolver] = Evolver if strategy == "evolve" else Trainer
    return cls.resume(resume, opts, notify) if resume is not None else cls.create(opts, notify)


def _costs(plan: TrainingPlan, train: list[str], validation: list[str], holdout: list[str]) -> Costs:
    return Costs(plan.trials_per_task, len(train), len(validation), len(holdout),
                 min(plan.evolve.minibatch, len(train)))  # fmt: skip


def trajectory_digest(run_dir: Path, trial: TrialResult, *, max_steps: int = 8) -> str:
    """What the agent did: its last tool calls, the failing results among them, why it stopped."""
    path = TrialPaths(run_dir / trial.trial_dir).trajectory
    if not path.is_file():
        return "(no trajectory)"
    try:
        traj = Trajectory.model_validate_json(path.read_text())
    except (ValueError, UserError):
        return "(unreadable trajectory)"
    lines = []
    for step in traj.steps[-max_steps:]:
        for call in step.tool_calls:
            lines.append(f"- called {call.name}: {tail(json.dumps(call.arguments), 200)}")
        for res in step.tool_results:
            if res.exit_code not in (0, None):
                lines.append(f"  -> exit {res.exit_code}: {tail(res.output.strip(), 200)}")
    if not lines:
        lines.append("- no tool calls")
    lines.append(f"stopped: {traj.stop_reason}")
    return "\n".join(lines)


@dataclass
class _Adapter:
    """gepa's adapter (duck-typed GEPAAdapter): batches are task ids, a candidate is {COMPONENT: text}."""

    evolver: Evolver
    propose_new_texts: ClassVar[None] = None
    """gepa reads it: None means its own proposer, with our reflection LM and prompt template."""

    def evaluate(self, batch: list[str], candidate: dict[str, str], capture_traces: bool = False) -> Any:
        from gepa.core.adapter import EvaluationBatch

        ev = self.evolver
        text = candidate[COMPONENT]
        profile = ev.candidate_profile(text)
        nominal = ev.plan.trials_per_task * len(batch)
        leak = None if profile is ev.seed else ev.proposal_leak(text)
        if leak is not None:
            shown: list[dict[str, Any]] = [{"task": t, "trials": [], "error": f"not run: the prompt {leak}"}
                                           for t in batch]  # fmt: skip
            return EvaluationBatch(outputs=[{"task": t, "rate": 0.0} for t in batch], scores=[0.0] * len(batch),
                                   trajectories=shown if capture_traces else None,
                                   num_metric_calls=nominal)  # fmt: skip
        trials = ev.trials_for(profile, batch)
        scores: list[float] = []
        outputs: list[dict[str, Any]] = []
        trajectories: list[dict[str, Any]] = []
        for t in batch:
            mine = trials.get(t, [])
            graded = [r for r in mine if r.is_graded]
            rate = sum(r.passed for r in graded) / len(graded) if graded else 0.0
            errors = [r.error_message for r in mine if not r.is_graded and r.error_message]
            scores.append(rate)
            outputs.append({"task": t, "rate": rate, "trials": [r.trial_id for r in mine]})
            trajectories.append({"task": t, "trials": [r.trial_id for r in mine],
                                 "error": "; ".join(errors) or (None if mine else "no trial ran")})  # fmt: skip
        return EvaluationBatch(outputs=outputs, scores=scores, trajectories=trajectories if capture_traces else None,
                               num_metric_calls=nominal)  # fmt: skip

    def make_reflective_dataset(
        self, candidate: dict[str, str], eval_batch: Any, components_to_update: list[str]
    ) -> dict[str, list[dict[str, str]]]:
        ev = self.evolver
        profile = ev.candidate_profile(candidate[COMPONENT])
        digest = profile.digest()
        folders = {t: ev.folder / e.folder for e in ev.index.entries if e.digest == digest for t in e.tasks}
        records: list[dict[str, str]] = []
        for traj in eval_batch.trajectories or []:
            task = str(traj["task"])
            run_dir = folders.get(task)
            shown = 0
            if run_dir is not None:
                for trial in ev._trials.get(str(run_dir.relative_to(ev.folder)), []):
                    if trial.task_id == task and trial.trial_id in traj["trials"]:
                        records.append(ev.reflective_record(trial, run_dir))
                        shown += 1
            if not shown:
                instruction = ev.tasks[task].instruction if task in ev.tasks else task
                record: dict[str, str] = {"Task": tail(instruction, 400), "What the agent did": "(nothing ran)",
                          "Feedback": f"score 0: {traj.get('error') or 'no trial'}"}  # fmt: skip
                records.append({k: LeakGuard.secrets_of([ev.tasks[task]]).redact(v, WITHHELD) if task in ev.tasks
                                else v for k, v in record.items()})  # fmt: skip
        return {c: records for c in components_to_update}


@dataclass
class _Recorder:
    """gepa callbacks → the evolution tree in trainer.json (parent, child text, minibatch scores, the decision,
    the validation rate)."""

    evolver: Evolver

    def on_iteration_start(self, event: Any) -> None:
        self.evolver.begin_iteration(int(event["iteration"]))

    def _pending(self, event: Any) -> _Pending | None:
        p = self.evolver._pending
        return p if p is not None and p.iteration == int(event["iteration"]) else None

    def on_candidate_selected(self, event: Any) -> None:
        if (p := self._pending(event)) is not None:
            p.parent_index = int(event["candidate_idx"])

    def on_minibatch_sampled(self, event: Any) -> None:
        if (p := self._pending(event)) is not None:
            train = self.evolver.result.train_tasks
            p.minibatch = [train[i] for i in event["minibatch_ids"]]

    def on_evaluation_end(self, event: Any) -> None:
        if (p := self._pending(event)) is None:
            return
        if event["candidate_idx"] is None:
            p.scores = [float(s) for s in event["scores"]]
        elif event["candidate_idx"] == p.parent_index:
            p.parent_scores = [float(s) for s in event["scores"]]

    def on_proposal_end(self, event: Any) -> None:
        if (p := self._pending(event)) is not None:
            p.text = str(event["new_instructions"].get(COMPONENT, ""))

    def on_valset_evaluated(self, event: Any) -> None:
        if int(event["candidate_idx"]) == 0:
            self.evolver.seed_validated(float(event["average_score"]))
        elif (p := self._pending(event)) is not None:
            p.validation_rate, p.index = float(event["average_score"]), int(event["candidate_idx"])

    def on_candidate_accepted(self, event: Any) -> None:
        if (p := self._pending(event)) is not None:
            p.index = int(event["new_candidate_idx"])
            self.evolver.finish_proposal(True, "better than its parent on the minibatch")

    def on_candidate_rejected(self, event: Any) -> None:
        if (p := self._pending(event)) is not None:
            text = p.text or ""
            leak = None if text == (self.evolver.seed.system_prompt_append or "") else self.evolver.proposal_leak(text)
            scores = f"{float(event['old_score']):g} -> {float(event['new_score']):g}"
            why = f"leakage: the prompt {leak}" if leak else f"not better on the minibatch ({scores})"
            self.evolver.finish_proposal(False, why)
