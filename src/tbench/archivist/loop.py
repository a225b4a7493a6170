"""The Archivist inside a run: what each trial is shown, credit after each trial, reflection at each iteration
boundary, and the held-out split with its no-memory control arm (the built-in proof)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tbench.archivist.context import Selection, select
from tbench.archivist.credit import Effect, credit
from tbench.archivist.holdout import tainted
from tbench.archivist.memory_service import MemoryStore
from tbench.archivist.service import reflect
from tbench.bench.episode_store import EpisodeStore
from tbench.errors import UserError
from tbench.fsutil import atomic_write_model
from tbench.llm.chat import ChatTransport
from tbench.models.common import read_model
from tbench.models.layout import ProjectLayout, RunLayout
from tbench.models.lessons import LearningConfig, Lesson, ReflectionLog
from tbench.models.results import CONTROL_SUFFIX, TrialResult, base_id, is_control
from tbench.models.task import Task

if TYPE_CHECKING:
    from tbench.models.model_settings import ModelSettings

LEARNING_FLAGS = ("learn", "memory", "reflect_model", "holdout", "control", "reflect_budget")


def learning_from_flags(given: dict[str, Any], task_ids: list[str] | None = None) -> LearningConfig:
    """Take the learning flags out of `given` into a `LearningConfig` (the split is made later, once the suite
    is known)."""
    flags = {k: given.pop(k) for k in LEARNING_FLAGS if k in given}
    memory = flags.get("memory")
    if flags.get("learn"):
        if memory not in (None, "learn"):
            raise UserError(f"--learn means --memory learn, not {memory}", field="learn")
        memory = "learn"
    memory = memory or "off"
    if memory not in ("off", "read", "learn"):
        raise UserError(f"expected off, read or learn (got {memory!r})", field="memory")
    holdout = float(flags.get("holdout") or 0.0)
    if not 0.0 <= holdout < 1.0:
        raise UserError(f"must be at least 0 and below 1 (got {holdout:g})", field="holdout_fraction")
    if flags.get("control") and holdout <= 0:
        raise UserError("needs held-out tasks to run on; add --holdout FRACTION", field="control")
    if flags.get("control") and memory == "off":
        raise UserError("compares memory against none; add --learn or --memory read", field="control")
    if holdout > 0 and memory == "off":
        raise UserError("holds tasks out of learning, but memory is off; add --learn or --memory read", field="holdout")
    if flags.get("reflect_model") and memory != "learn":
        raise UserError("only matters with --learn (or --memory learn)", field="reflect_model")
    budget = flags.get("reflect_budget")
    if budget is not None and memory != "learn":
        raise UserError("only matters with --learn (or --memory learn)", field="reflect_budget")
    if budget is not None and int(budget) < 500:
        raise UserError(f"must be at least 500 tokens (got {budget})", field="reflect_budget")
    return LearningConfig(
        memory=memory, reflect_model=flags.get("reflect_model"), holdout_fraction=holdout,
        control=bool(flags.get("control")), **({"reflect_budget": int(budget)} if budget is not None else {}),
    )  # fmt: skip


def with_control(tasks: list[Task], config: LearningConfig) -> list[Task]:
    """The run's task list: each held-out task followed by its no-memory twin when `--control` is on, so the two
    arms interleave."""
    if not config.control:
        return tasks
    held = set(config.holdout_tasks)
    out: list[Task] = []
    for t in tasks:
        out.append(t)
        if t.id in held:
            out.append(t.model_copy(update={"id": t.id + CONTROL_SUFFIX}))
    return out


def reflection_transport(spec: str, settings: ModelSettings) -> ChatTransport:
    """The reflection model, in the same forms as `--model` with the run's endpoints and model options; only
    chat-API models (`ollama:<name>`, `openai:<name>`) can reflect."""
    from tbench.agents.model_adapter import default_ollama_endpoint, normalize_endpoint, openai_base_url, parse_model

    config = parse_model(spec)
    options = settings.effective_options()
    if config.type == "openai" and config.model:
        from tbench.llm.openai_compat import OpenAICompatTransport

        return OpenAICompatTransport(openai_base_url(settings.openai_endpoint), config.model, options)
    if config.type == "ollama" and config.model:
        from tbench.llm.ollama import OllamaTransport

        endpoint = settings.ollama_endpoint
        return OllamaTransport(normalize_endpoint(endpoint) if endpoint else default_ollama_endpoint(), config.model,
                               options)  # fmt: skip
    raise UserError(
        f"{spec!r} cannot reflect: reflection needs a chat-API model; give --reflect-model ollama:<name> or "
        "openai:<name>",
        field="reflect_model",
    )


@dataclass
class Learning:
    """One run's memory: mode `off` makes every method a no-op."""

    config: LearningConfig
    store: MemoryStore
    suite_name: str
    suite_task_ids: frozenset[str]
    episodes: EpisodeStore
    transport_factory: Callable[[], ChatTransport] | None = None
    _snapshots: dict[int, list[Lesson]] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.config.memory != "off"

    def held_out(self, task_id: str) -> bool:
        return base_id(task_id) in self.config.holdout_tasks

    def inject(self, iteration: int, task: Task, tools: frozenset[str] | None = None) -> Selection:
        """Lessons for one trial, from the store as it stood when the iteration began (so every trial of an
        iteration, and a resumed one, draws from the same memory). A held-out trial never sees a lesson drawn
        from a held-out task."""
        if not self.active or is_control(task.id):
            return Selection([], None)
        if iteration not in self._snapshots:
            self._snapshots[iteration] = self.store.load()
        lessons = self._snapshots[iteration]
        exclude: frozenset[str] = frozenset()
        if self.held_out(task.id):
            held = set(self.config.holdout_tasks)
            exclude = frozenset(x.id for x in lessons if tainted(x, held, set(self.suite_task_ids)))
        return select(
            lessons, task, self.suite_name, datetime.now(UTC), top_k=self.config.top_k,
            token_budget=self.config.token_budget, tools=tools, exclude=exclude,
        )  # fmt: skip

    def after_trial(self, result: TrialResult) -> dict[str, Effect | None]:
        """Credit, in learn mode, for train trials only (held-out trials must not shape the memory), against the
        task's trials without each lesson across runs (archivist/credit.py)."""
        if self.config.memory != "learn" or self.held_out(result.task_id) or not result.lesson_ids:
            return {}
        try:
            history = self.episodes.index().history(
                task_id=result.task_id, model=result.model, suite_name=self.suite_name
            )
        except sqlite3.Error:
            history = []  # no usable index: no counterfactual, so no credit (never a guess)
        return credit(self.store, result, history)

    def after_iteration(
        self,
        run_dir: Path,
        run_id: str,
        iteration: int,
        results: list[TrialResult],
        suite_tasks: list[Task],
        previous: list[TrialResult] | None = None,
    ) -> ReflectionLog | None:
        """Reflect on the iteration's train trials. The log is saved as it goes (plan, each answer before it is
        applied); a resume finishes an interrupted reflection from it without asking the model again."""
        if self.config.memory != "learn" or self.transport_factory is None:
            return None
        path = RunLayout(run_dir).iteration(iteration).reflection
        log = read_model(path, ReflectionLog, "a reflection log") if path.is_file() else None
        if log is not None and log.status != "running":
            return log  # finished before an interruption: nothing to ask, nothing to apply twice
        train = [r for r in results if not self.held_out(r.task_id)]
        tasks = [t for t in suite_tasks if not self.held_out(t.id)]
        coverage = self.store.coverage(self.suite_name)
        log = reflect(
            self.store, self.transport_factory(), run_dir=run_dir, run_id=run_id, iteration=iteration,
            results=train, tasks=tasks, suite_tasks=suite_tasks,
            previous=[r for r in previous or [] if not self.held_out(r.task_id)], coverage=coverage,
            budget_tokens=self.config.reflect_budget, log=log, save=lambda x: atomic_write_model(path, x),
        )  # fmt: skip
        shown = {r.trial_id: r.task_id for r in train}
        self.store.record_coverage(self.suite_name, sorted({shown[t] for t in log.trials if t in shown}), log.at)
        return log


def open_learning(
    config: LearningConfig,
    project_root: Path,
    suite_name: str,
    run_model: str,
    settings: ModelSettings,
    suite_task_ids: list[str] | None = None,
    *,
    preflight: bool = False,
) -> Learning:
    """The run's `Learning`. With `preflight` (before any run folder exists) the lesson store is read and the
    reflection model asked whether it is there, so a damaged lessons.json or an absent model is one line now,
    not a surprise at the first trial or a skipped reflection at dawn."""
    factory: Callable[[], ChatTransport] | None = None
    store = MemoryStore.for_project(project_root)
    if preflight and config.memory != "off":
        store.load()
    if config.memory == "learn":
        spec = config.reflect_model or run_model
        transport = reflection_transport(spec, settings)  # fail fast
        if preflight:
            try:
                transport.preflight()
            except UserError as exc:
                detail = exc.message if exc.path is None else exc.render()
                raise UserError(f"the reflection model {spec}: {detail}", field="reflect_model") from None

        def factory() -> ChatTransport:
            return reflection_transport(spec, settings)

    return Learning(
        config, store, suite_name, frozenset(suite_task_ids or ()), EpisodeStore(ProjectLayout(project_root).gym_dir),
        factory,
    )  # fmt: skip
