"""Reflection.

Reflection: a model reads finished trials (trajectory digest, verdict, failure mode, test-output tail) and
answers with *delta operations* (ADD / UPDATE / MERGE / RETIRE, each citing trial ids). Deterministic code here
validates each operation, runs the leakage guard and applies it to the store — no model ever rewrites the whole
memory (ACE's "context collapse"). A bad or empty answer is logged and skipped, never fatal.

Credit is in credit.py: each lesson a trial saw is judged against the task's trials without it.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tbench.archivist.guard import LeakGuard
from tbench.archivist.memory_service import MemoryStore, absorb, find_duplicate
from tbench.errors import UserError
from tbench.fsutil import tail
from tbench.llm.chat import ChatMessage, ChatTransport
from tbench.models.common import utcnow
from tbench.models.layout import TrialPaths
from tbench.models.lessons import (
    AddOp,
    DeltaOp,
    Lesson,
    MergeOp,
    OpOutcome,
    ReflectionCall,
    ReflectionLog,
    UpdateOp,
    lesson_id,
)
from tbench.models.results import TrialResult
from tbench.models.task import Task
from tbench.models.trajectory import Trajectory

REFLECT_TIMEOUT_SEC = 600.0
_OPS: TypeAdapter[DeltaOp] = TypeAdapter(DeltaOp)

REFLECT_PROMPT = """\
You maintain a small memory of lessons for an autonomous coding agent that solves terminal tasks. Read the \
finished trials below and propose changes to the memory as JSON delta operations. Never restate the memory.

A lesson is a general rule "IF <situation> THEN <action>" that would help on OTHER tasks. Never name a task, \
never include a task-specific file path, never include an expected output or answer.

Answer with one JSON object and nothing else:
{"operations": [
  {"op": "ADD", "text": "IF an install command stops to ask for confirmation THEN rerun it with its \
non-interactive flag such as -y", "category": "<one of: heuristic, anti_pattern, tool_usage, \
test_strategy, infra, prompting, bugfix_pattern>", "scope": "global", "tags": ["<tag>"], "importance": 0.5, \
"evidence": ["<trial id>"]},
  {"op": "UPDATE", "id": "<lesson id>", "text": "IF <situation> THEN <action>", "evidence": ["<trial id>"]},
  {"op": "MERGE", "ids": ["<lesson id>", "<lesson id>"], "text": "IF <situation> THEN <action>", \
"evidence": ["<trial id>"]},
  {"op": "RETIRE", "id": "<lesson id>", "reason": "<why>", "evidence": ["<trial id>"]}
]}
The ADD rule above is only an example of the form: write your own rule from the trials. Replace every <...> \
with real content. Every operation cites as evidence the trial ids it is drawn from. \
Propose at most 3 operations; {"operations": []} is a fine answer when there is nothing general to learn."""


# ---------------------------------------------------------------- what the model is shown


def trial_digest(run_dir: Path, result: TrialResult, task: Task, *, max_steps: int = 8) -> str:
    """A short account of one trial: the task, the last steps of its trajectory, verdict and test tail."""
    lines = [
        f"## trial {result.trial_id}",
        f"task instruction: {tail(task.instruction, 600)}",
        f"category: {task.category}; outcome: {result.status}; failure mode: {result.failure_mode or 'none'}; "
        f"turns: {result.turns}",
    ]
    path = TrialPaths(run_dir / result.trial_dir).trajectory
    if path.is_file():
        try:
            traj = Trajectory.model_validate_json(path.read_text())
        except (ValidationError, UserError):  # unreadable or from a newer tbench: reflect without it
            traj = None
        if traj is not None:
            lines.append(f"agent stop reason: {traj.stop_reason}")
            for step in traj.steps[-max_steps:]:
                if step.assistant_text.strip():
                    lines.append(f"- said: {tail(step.assistant_text.strip(), 200)}")
                for call in step.tool_calls:
                    lines.append(f"- called {call.name}: {tail(json.dumps(call.arguments), 200)}")
                for res in step.tool_results:
                    lines.append(f"  -> exit {res.exit_code}: {tail(res.output, 200)}")
    if result.error_message:
        lines.append(f"error: {tail(result.error_message, 300)}")
    lines.append(f"test output tail:\n{tail(result.verification_output, 600)}")
    return "\n".join(lines)


def parse_answer(content: str) -> list[Any]:
    """The list of raw operations in the answer; ValueError when there is no JSON object with `operations`."""
    text = content.strip()
    fence = re.search(r"```(?:json)?\s*(.*?)```", text, re.S)
    if fence:
        text = fence.group(1).strip()
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end <= start:
        raise ValueError("no JSON object in the answer")
    data = json.loads(text[start : end + 1])
    if not isinstance(data, dict) or not isinstance(data.get("operations"), list):
        raise ValueError('the answer has no "operations" list')
    return list(data["operations"])


# ---------------------------------------------------------------- applying


class Applier:
    """Applies validated operations to the active lessons, one at a time, each accepted or rejected with why."""

    def __init__(self, guard: LeakGuard, trial_tasks: dict[str, str], episode: str, source: str) -> None:
        """`trial_tasks`: the trials shown (id → task id); evidence must cite them."""
        self.guard, self.trial_tasks, self.episode, self.source = guard, trial_tasks, episode, source

    def apply(self, raw: Any, active: list[Lesson], retired: list[Lesson]) -> OpOutcome:
        shown = raw if isinstance(raw, dict) else {"value": raw}
        try:
            op = _OPS.validate_python(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            return OpOutcome(op=shown, applied=False, reason=f"invalid: {where}: {err['msg']}")
        unknown = [e for e in op.evidence if e not in self.trial_tasks]
        if unknown:
            return OpOutcome(op=shown, applied=False, reason=f"evidence names trials not shown: {unknown}")
        leak = self.guard.check_all(self._texts(op))
        if leak:
            return OpOutcome(op=shown, applied=False, reason=f"leakage: {leak}")
        if isinstance(op, AddOp):
            return self._add(op, shown, active)
        by_id = {x.id: x for x in active}
        if isinstance(op, MergeOp):
            return self._merge(op, shown, by_id, active, retired)
        target = by_id.get(op.id)
        if target is None:
            return OpOutcome(op=shown, applied=False, reason=f"no active lesson {op.id}")
        if isinstance(op, UpdateOp):
            target.text = op.text if op.text is not None else target.text
            target.tags = op.tags if op.tags is not None else target.tags
            target.importance = op.importance if op.importance is not None else target.importance
        else:
            target.retired_reason = op.reason
            retired.append(target)
        self._cite(target, op.evidence)
        return OpOutcome(op=shown, applied=True, lesson_id=target.id)

    def _merge(
        self, op: MergeOp, shown: dict[str, Any], by_id: dict[str, Lesson], active: list[Lesson], retired: list[Lesson]
    ) -> OpOutcome:
        parts = [by_id[i] for i in dict.fromkeys(op.ids) if i in by_id]
        if len(parts) < 2 or len(parts) != len(set(op.ids)):
            return OpOutcome(op=shown, applied=False, reason=f"merge needs 2+ distinct active lessons: {op.ids}")
        new_id = lesson_id(op.text)
        survivor = next((p for p in parts if p.id == new_id), None)
        # The merged text may be one part's own text: that part is the merged lesson (it must not be retired as
        # superseded by itself); otherwise a new lesson takes the parts in.
        merged = survivor or self._new(op.text, parts[0].category, op.tags, 0.5, "merge")
        merged.text, merged.tags = op.text.strip(), sorted(set(merged.tags) | set(op.tags))
        for p in parts:
            if p is merged:
                continue
            absorb(merged, p)
            p.superseded_by = merged.id
            p.retired_reason = f"merged into {merged.id}"
            retired.append(p)
        self._cite(merged, op.evidence)
        if survivor is None:
            active.append(merged)
        return OpOutcome(op=shown, applied=True, lesson_id=merged.id)

    @staticmethod
    def _texts(op: DeltaOp) -> list[str]:
        if isinstance(op, AddOp | MergeOp):
            return [op.text, " ".join(op.tags)]
        if isinstance(op, UpdateOp):
            return [op.text or "", " ".join(op.tags or [])]
        return []

    def _new(self, text: str, category: Any, tags: list[str], importance: float, source: str) -> Lesson:
        now = utcnow()
        return Lesson(
            id=lesson_id(text), category=category, tags=sorted(set(tags)), text=text.strip(),
            importance=importance, source=source, created_at=now, updated_at=now,
        )  # fmt: skip

    def _cite(self, lesson: Lesson, evidence: list[str]) -> None:
        lesson.evidence = sorted(set(lesson.evidence) | set(evidence))
        lesson.evidence_tasks = sorted(set(lesson.evidence_tasks) | {self.trial_tasks[e] for e in evidence})
        lesson.episodes = sorted(set(lesson.episodes) | {self.episode})
        lesson.updated_at = utcnow()

    def _add(self, op: AddOp, shown: dict[str, Any], active: list[Lesson]) -> OpOutcome:
        twin = next((x for x in active if x.id == lesson_id(op.text)), None) or find_duplicate(active, op.text)
        if twin is not None:  # a near-duplicate strengthens the stored rule instead of adding another
            twin.tags = sorted(set(twin.tags) | set(op.tags))
            twin.importance = max(twin.importance, op.importance)
            self._cite(twin, op.evidence)
            return OpOutcome(op=shown, applied=True, lesson_id=twin.id, reason=f"merged into duplicate {twin.id}")
        lesson = self._new(op.text, op.category, op.tags, op.importance, self.source)
        lesson.scope, lesson.scope_value = op.scope, op.scope_value
        self._cite(lesson, op.evidence)
        active.append(lesson)
        return OpOutcome(op=shown, applied=True, lesson_id=lesson.id)


MAX_TRIALS_PER_CALL = 8


def _cluster_key(r: TrialResult) -> str:
    return str(r.failure_mode) if r.failure_mode else ("pass" if r.status == "pass" else "fail")


def plan_calls(
    results: list[TrialResult],
    previous: list[TrialResult],
    coverage: dict[str, list[str]],
    digests: dict[str, str],
    budget_tokens: int,
    categories: dict[str, str] | None = None,
) -> tuple[list[ReflectionCall], list[str]]:
    """Which trials reach reflection, in which calls, under a token budget.

    Events first — tasks that passed in the previous iteration and fail now (`regression`), a failure mode no
    failing trial had in the previous iteration (`new failure cluster`), tasks that newly pass — then the other
    failing trials by cluster (failure mode and category), the clusters whose tasks were reflected least often (and
    longest ago) over the nights first; passing trials last. Groups are packed into calls of up to
    `MAX_TRIALS_PER_CALL` trials, a cluster kept together. Returns the calls and the trials left out."""
    before = {r.task_id: r for r in previous if r.is_graded}
    fail_modes_before = {_cluster_key(r) for r in previous if r.is_graded and r.status != "pass"}
    graded = [r for r in results if r.is_graded]
    calls: list[tuple[str, list[TrialResult]]] = []
    taken: set[str] = set()

    def add(trigger: str, rs: list[TrialResult]) -> None:
        rs = [r for r in rs if r.trial_id not in taken]
        if rs:
            calls.append((trigger, rs))
            taken.update(r.trial_id for r in rs)

    failing = [r for r in graded if r.status != "pass"]
    add("regression", [r for r in failing if before.get(r.task_id) and before[r.task_id].status == "pass"])
    if previous:
        for mode in sorted({_cluster_key(r) for r in failing} - fail_modes_before):
            add(f"new failure cluster: {mode}", [r for r in failing if _cluster_key(r) == mode])
    add("newly passing", [r for r in graded if r.status == "pass" and r.task_id in before
                          and before[r.task_id].status != "pass"])  # fmt: skip

    def seen(r: TrialResult) -> tuple[int, str]:
        stamps = coverage.get(r.task_id, [])
        return len(stamps), max(stamps, default="")

    clusters: dict[str, list[TrialResult]] = {}
    for r in sorted((r for r in failing if r.trial_id not in taken), key=seen):
        clusters.setdefault(f"{_cluster_key(r)} / {(categories or {}).get(r.task_id, 'uncategorized')}", []).append(r)
    for name, rs in sorted(clusters.items(), key=lambda kv: (seen(kv[1][0]), kv[0])):
        add(f"rotation: {name}", rs)
    add("passing", sorted((r for r in graded if r.status == "pass"), key=seen))

    # Pack the groups in order into calls of at most MAX_TRIALS_PER_CALL trials, a group never split across
    # calls unless it alone is larger; everything under the budget, what does not fit is left out.
    planned: list[ReflectionCall] = []
    left: list[str] = []
    used = 0
    for trigger, rs in calls:
        fitting: list[str] = []
        for r in rs:
            cost = len(digests[r.trial_id]) // 4 + 1
            if used + cost > budget_tokens:
                left.append(r.trial_id)
                continue
            fitting.append(r.trial_id)
            used += cost
        while fitting:
            last = planned[-1] if planned else None
            if last is not None and len(last.trials) + len(fitting) <= MAX_TRIALS_PER_CALL:
                last.trials += fitting
                last.trigger += f"; {trigger}"
                break
            planned.append(ReflectionCall(trigger=trigger, trials=fitting[:MAX_TRIALS_PER_CALL]))
            fitting = fitting[MAX_TRIALS_PER_CALL:]
    return planned, left


def reflect(
    store: MemoryStore,
    transport: ChatTransport,
    *,
    run_dir: Path,
    run_id: str,
    iteration: int,
    results: list[TrialResult],
    tasks: list[Task],
    suite_tasks: list[Task],
    previous: list[TrialResult] | None = None,
    coverage: dict[str, list[str]] | None = None,
    budget_tokens: int = 6000,
    log: ReflectionLog | None = None,
    save: Callable[[ReflectionLog], None] | None = None,
) -> ReflectionLog:
    """Reflection over `results` (train trials only: the caller filters), in the calls `plan_calls` makes. Each
    answer is saved (`save`) before it is applied; given the `log` of an interrupted reflection, recorded answers
    are applied without asking again and only calls never answered are asked. Never raises for a bad model."""
    by_id = {t.id: t for t in tasks}
    mine = [r for r in results if r.task_id in by_id]
    by_trial = {r.trial_id: r for r in mine}
    digests = {r.trial_id: trial_digest(run_dir, r, by_id[r.task_id]) for r in mine if r.is_graded}
    keep = save or (lambda _: None)
    if log is None or not log.calls:
        calls, left = plan_calls(
            mine, [r for r in previous or [] if r.task_id in by_id], coverage or {}, digests, budget_tokens,
            {t.id: t.category for t in tasks},
        )  # fmt: skip
        log = ReflectionLog(
            run_id=run_id, iteration=iteration, model=transport.label, at=utcnow(), status="running",
            trials=[t for c in calls for t in c.trials], calls=calls, budget_tokens=budget_tokens, left_out=left,
        )  # fmt: skip
        if not calls:
            log.status, log.reason = "nothing_to_learn", "no graded train trials"
            keep(log)
            return log
        keep(log)
    guard = LeakGuard.of(suite_tasks, [by_trial[t] for t in log.trials if t in by_trial], run_dir)
    for call in log.calls:
        if call.status == "planned":
            _ask(store, transport, call, [by_trial[t] for t in call.trials if t in by_trial], digests)
            keep(log)
        if call.status == "answered":
            _apply(store, call, guard, by_trial, f"{run_id}-{iteration:03d}", f"reflection:{transport.label}")
            keep(log)
    log.operations = [o for c in log.calls for o in c.operations]
    log.answer = next((c.answer for c in log.calls if c.answer), None)
    if any(o.applied for o in log.operations):
        log.status, log.reason = "applied", None
    elif any(c.status == "nothing_to_learn" for c in log.calls) and not log.operations:
        log.status, log.reason = "nothing_to_learn", "the model proposed no operations"
    else:
        log.status = "skipped"
        log.reason = "; ".join(dict.fromkeys(c.reason for c in log.calls if c.reason)) or "every operation was rejected"
    keep(log)
    return log


def _ask(
    store: MemoryStore, transport: ChatTransport, call: ReflectionCall, shown: list[TrialResult],
    digests: dict[str, str],
) -> None:  # fmt: skip
    memory = "\n".join(f"- {x.id} [{x.category}] {x.text}" for x in store.load()) or "(empty)"
    body = "\n\n".join(digests[r.trial_id] for r in shown)
    messages = [
        ChatMessage(role="system", content=REFLECT_PROMPT),
        ChatMessage(
            role="user",
            content=f"# Current memory\n{memory}\n\n# Why these trials\n{call.trigger}\n\n# Finished trials\n{body}",
        ),
    ]
    try:
        reply = transport.chat(messages, [], deadline=time.monotonic() + REFLECT_TIMEOUT_SEC)
    except Exception as exc:  # server down, deadline, a client surprise: reflection is never fatal
        call.status, call.reason = "skipped", f"{type(exc).__name__}: {tail(str(exc), 300)}"
        return
    call.answer, call.status = tail(reply.message.content, 8000), "answered"


def _apply(
    store: MemoryStore, call: ReflectionCall, guard: LeakGuard, by_trial: dict[str, TrialResult], episode: str,
    source: str,
) -> None:  # fmt: skip
    try:
        raw_ops = parse_answer(call.answer or "")
    except ValueError as exc:
        call.status, call.reason = "skipped", f"ValueError: {exc}"
        return
    if not raw_ops:
        call.status, call.reason = "nothing_to_learn", "the model proposed no operations"
        return
    shown = {t: by_trial[t].task_id for t in call.trials if t in by_trial}
    applier = Applier(guard, shown, episode, source)

    def change(active: list[Lesson], retired: list[Lesson]) -> list[OpOutcome]:
        return [applier.apply(raw, active, retired) for raw in raw_ops]

    call.operations = store.transact(change)
    call.status = "applied" if any(o.applied for o in call.operations) else "skipped"
    if call.status == "skipped":
        call.reason = "every operation was rejected"
