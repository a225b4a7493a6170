"""Reflection and credit.

Reflection: a model reads finished trials (trajectory digest, verdict, failure mode, test-output tail) and
answers with *delta operations* (ADD / UPDATE / MERGE / RETIRE, each citing trial ids). Deterministic code here
validates each operation, runs the leakage guard and applies it to the store — no model ever rewrites the whole
memory (ACE's "context collapse"). A bad or empty answer is logged and skipped, never fatal.

Credit: after each trial, every lesson it saw is judged against that task's own history (see `credit`).
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter, ValidationError

from tbench.archivist.memory_service import MemoryStore, absorb, find_duplicate
from tbench.errors import UserError
from tbench.fsutil import tail
from tbench.llm.chat import ChatMessage, ChatTransport
from tbench.models.common import utcnow
from tbench.models.grading import Outcome
from tbench.models.layout import TrialPaths
from tbench.models.lessons import (
    AddOp,
    DeltaOp,
    Lesson,
    MergeOp,
    OpOutcome,
    ReflectionLog,
    UpdateOp,
    lesson_id,
)
from tbench.models.results import TrialResult
from tbench.models.task import SolutionSpec, Task
from tbench.models.trajectory import Trajectory

REFLECT_TIMEOUT_SEC = 600.0
MAX_TRIALS_SHOWN = 12
_OPS: TypeAdapter[DeltaOp] = TypeAdapter(DeltaOp)

REFLECT_PROMPT = """\
You maintain a small memory of lessons for an autonomous coding agent that solves terminal tasks. Read the \
finished trials below and propose changes to the memory as JSON delta operations. Never restate the memory.

A lesson is a general rule "IF <situation> THEN <action>" that would help on OTHER tasks. Never name a task, \
never include a task-specific file path, never include an expected output or answer.

Answer with one JSON object and nothing else:
{"operations": [
  {"op": "ADD", "text": "IF <situation> THEN <action>", "category": "<one of: heuristic, anti_pattern, tool_usage, \
test_strategy, infra, prompting, bugfix_pattern>", "scope": "global", "tags": ["<tag>"], "importance": 0.5, \
"evidence": ["<trial id>"]},
  {"op": "UPDATE", "id": "<lesson id>", "text": "IF <situation> THEN <action>", "evidence": ["<trial id>"]},
  {"op": "MERGE", "ids": ["<lesson id>", "<lesson id>"], "text": "IF <situation> THEN <action>", \
"evidence": ["<trial id>"]},
  {"op": "RETIRE", "id": "<lesson id>", "reason": "<why>", "evidence": ["<trial id>"]}
]}
Replace every <...> with real content. Every operation cites as evidence the trial ids it is drawn from. \
Propose at most 3 operations; {"operations": []} is a fine answer when there is nothing general to learn."""


# ---------------------------------------------------------------- leakage guard

_PATH = re.compile(r"(?:~|\.{0,2})/?(?:[\w.-]+/)+[\w.-]+|\b[\w-]+\.[a-z][a-z0-9]{0,4}\b")
_QUOTED = re.compile(r"""["'`]([^"'`]{4,})["'`]""")
_GENERIC_PATHS = {"/tmp", "/dev/null", "/usr/bin", "/bin/sh", "/bin/bash", "e.g", "i.e", "etc."}


@dataclass(frozen=True)
class LeakGuard:
    """Rejects lesson text that carries a task id or name, a path or file name from a task's instruction, or a
    quoted literal from its instruction, tests, reference solution or test output: lessons must transfer, not
    memorise answers."""

    names: frozenset[str]
    paths: frozenset[str]
    literals: frozenset[str]

    @classmethod
    def of(cls, tasks: list[Task], results: list[TrialResult]) -> LeakGuard:
        names = {t.id.lower() for t in tasks} | {t.name.lower() for t in tasks if len(t.name) >= 4}
        paths: set[str] = set()
        literals: set[str] = set()
        for t in tasks:
            paths |= {p.lower() for p in _PATH.findall(t.instruction)} | {p.lower() for p in t.files_to_modify}
            literals |= {q.strip().lower() for q in _QUOTED.findall(t.instruction) if len(q.strip()) >= 4}
            seed = t.verifier.seed
            if seed and seed.expected and len(seed.expected.strip()) >= 3:
                literals.add(seed.expected.strip().lower())
            for source in (seed.script if seed else None, seed.command if seed else None, t.solution):
                text = source.command if isinstance(source, SolutionSpec) else source
                literals |= {q.strip().lower() for q in _QUOTED.findall(text or "") if len(q.strip()) >= 4}
        for r in results:
            literals |= {q.strip().lower() for q in _QUOTED.findall(r.verification_output) if len(q.strip()) >= 6}
        return cls(frozenset(names), frozenset(paths - _GENERIC_PATHS), frozenset(literals))

    def check(self, text: str) -> str | None:
        low = text.lower()
        for name in sorted(self.names):
            if re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", low):
                return f"names a task ({name!r})"
        for path in sorted(self.paths):
            if path in low:
                return f"carries a task-specific path ({path!r})"
        for literal in sorted(self.literals):
            if literal in low:
                return f"carries a literal expected output ({literal[:40]!r})"
        return None


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

    def __init__(self, guard: LeakGuard, trial_ids: set[str], episode: str, source: str) -> None:
        self.guard, self.trial_ids, self.episode, self.source = guard, trial_ids, episode, source

    def apply(self, raw: Any, active: list[Lesson], retired: list[Lesson]) -> OpOutcome:
        shown = raw if isinstance(raw, dict) else {"value": raw}
        try:
            op = _OPS.validate_python(raw)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = ".".join(str(p) for p in err["loc"])
            return OpOutcome(op=shown, applied=False, reason=f"invalid: {where}: {err['msg']}")
        unknown = [e for e in op.evidence if e not in self.trial_ids]
        if unknown:
            return OpOutcome(op=shown, applied=False, reason=f"evidence names trials not shown: {unknown}")
        for text in self._texts(op):
            leak = self.guard.check(text)
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
        merged = self._new(op.text, parts[0].category, op.tags, 0.5, "merge")
        for p in parts:
            absorb(merged, p)
            p.superseded_by = merged.id
            p.retired_reason = f"merged into {merged.id}"
            retired.append(p)
        self._cite(merged, op.evidence)
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
) -> ReflectionLog:
    """One reflection over `results` (train trials only: the caller filters). Never raises for a bad model."""
    by_id = {t.id: t for t in tasks}
    shown = [r for r in results if r.task_id in by_id and r.status != "error"][:MAX_TRIALS_SHOWN]
    log = ReflectionLog(
        run_id=run_id, iteration=iteration, model=transport.label, at=utcnow(), status="nothing_to_learn",
        trials=[r.trial_id for r in shown],
    )  # fmt: skip
    if not shown:
        log.reason = "no graded train trials"
        return log
    current = store.load()
    memory = "\n".join(f"- {x.id} [{x.category}] {x.text}" for x in current) or "(empty)"
    body = "\n\n".join(trial_digest(run_dir, r, by_id[r.task_id]) for r in shown)
    messages = [
        ChatMessage(role="system", content=REFLECT_PROMPT),
        ChatMessage(role="user", content=f"# Current memory\n{memory}\n\n# Finished trials\n{body}"),
    ]
    try:
        reply = transport.chat(messages, [], deadline=time.monotonic() + REFLECT_TIMEOUT_SEC)
        log.answer = tail(reply.message.content, 8000)
        raw_ops = parse_answer(reply.message.content)
    except Exception as exc:  # server down, deadline, not JSON, a client surprise: reflection is never fatal
        log.status, log.reason = "skipped", f"{type(exc).__name__}: {tail(str(exc), 300)}"
        return log
    if not raw_ops:
        log.reason = "the model proposed no operations"
        return log
    applier = Applier(
        LeakGuard.of(suite_tasks, shown), {r.trial_id for r in shown}, f"{run_id}-{iteration:03d}",
        f"reflection:{transport.label}",
    )  # fmt: skip

    def change(active: list[Lesson], retired: list[Lesson]) -> list[OpOutcome]:
        return [applier.apply(raw, active, retired) for raw in raw_ops]

    log.operations = store.transact(change)
    log.status = "applied" if any(o.applied for o in log.operations) else "skipped"
    if log.status == "skipped":
        log.reason = "every operation was rejected"
    return log


# ---------------------------------------------------------------- credit

HELPFUL_STEP = 0.1
HARMFUL_STEP = 0.15
RETIRE_MIN_HARMFUL = 3


def judge(outcome: Outcome, history: list[Outcome]) -> str | None:
    """`helpful`, `harmful` or None, from the outcome against the task's own earlier graded outcomes.

    Baseline p = (passes + 1) / (graded + 2). A pass where p ≤ 0.5 (the task usually failed) is helpful; a
    fail or timeout where p ≥ 0.5 (the task usually passed) is harmful; an expected outcome or an error (no
    verdict) says nothing."""
    if outcome == "error":
        return None
    graded = [h for h in history if h != "error"]
    p = (sum(h == "pass" for h in graded) + 1) / (len(graded) + 2)
    if outcome == "pass" and p <= 0.5:
        return "helpful"
    if outcome in ("fail", "timeout") and p >= 0.5:
        return "harmful"
    return None


def credit(store: MemoryStore, lesson_ids: list[str], outcome: Outcome, history: list[Outcome]) -> str | None:
    """Move the counts and importance of the lessons a trial saw; retire the persistently harmful."""
    verdict = judge(outcome, history)
    if not lesson_ids:
        return verdict

    def change(active: list[Lesson], retired: list[Lesson]) -> None:
        now = utcnow()
        for lesson in active:
            if lesson.id not in lesson_ids:
                continue
            lesson.last_used_at = now
            if verdict == "helpful":
                lesson.helpful += 1
                lesson.importance = round(min(1.0, lesson.importance + HELPFUL_STEP), 4)
            elif verdict == "harmful":
                lesson.harmful += 1
                lesson.importance = round(max(0.0, lesson.importance - HARMFUL_STEP), 4)
                if lesson.harmful >= RETIRE_MIN_HARMFUL and lesson.harmful > 2 * lesson.helpful:
                    lesson.retired_reason = f"harmful in {lesson.harmful} trials, helpful in {lesson.helpful}"
                    retired.append(lesson)

    store.transact(change)
    return verdict
