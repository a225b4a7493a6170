"""Credit with a counterfactual: did a lesson change how its task turns out?

A trial that saw lesson L on task T is judged against T's graded trials by the same model in the same suite that
did *not* see L — across runs, from the episode store's index — never against a fixed prior:

- fewer than `MIN_COUNTERFACTUAL` such trials: no credit (the evidence is too thin; counted as `uncredited`);
- else with p0 = their pass rate: a pass where p0 < 1/2 **helped**, a failure where p0 > 1/2 **hurt**, anything
  else (the task went as it goes without the lesson) is **unchanged**.

Each lesson keeps its counts, and the estimate of its harm is a Beta-Binomial: among the trials it changed, the
share it hurt is q ~ Beta(1 + hurt, 1 + helped). A lesson is retired for harm only when P(q > 1/2) ≥
`HARM_CONFIDENCE` (0.99) — at the fastest after 6 hurt trials and no helped one; every helped trial pushes that
further. A lesson that changes nothing gathers only `unchanged` and is never retired for harm.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb
from typing import Literal

from tbench.archivist.memory_service import MemoryStore
from tbench.bench.episode_index import PastTrial
from tbench.models.common import utcnow
from tbench.models.lessons import Lesson
from tbench.models.results import TrialResult

MIN_COUNTERFACTUAL = 2
"""Graded trials of the task without the lesson needed before a trial of it may credit the lesson."""
HARM_CONFIDENCE = 0.99
HELPFUL_STEP = 0.1
HARMFUL_STEP = 0.15

Effect = Literal["helped", "hurt", "unchanged"]


def judge(passed: bool, without: Sequence[PastTrial]) -> Effect | None:
    """The effect of a lesson on one graded trial, against the task's graded trials without it (None: too thin)."""
    graded = [t for t in without if t.is_graded]
    if len(graded) < MIN_COUNTERFACTUAL:
        return None
    p0 = sum(t.status == "pass" for t in graded) / len(graded)
    if passed and p0 < 0.5:
        return "helped"
    if not passed and p0 > 0.5:
        return "hurt"
    return "unchanged"


def p_harm(helped: int, hurt: int) -> float:
    """P(q > 1/2) for q ~ Beta(1 + hurt, 1 + helped): for integer parameters, P(Binomial(n, 1/2) ≤ hurt) with
    n = hurt + helped + 1."""
    n = hurt + helped + 1
    return float(sum(comb(n, i) for i in range(hurt + 1)) / 2**n)


def harmful(lesson: Lesson) -> bool:
    return p_harm(lesson.helpful, lesson.harmful) >= HARM_CONFIDENCE


def credit(store: MemoryStore, result: TrialResult, history: Sequence[PastTrial]) -> dict[str, Effect | None]:
    """Judge each lesson `result` saw against `history` (the task's indexed trials) and move its counts; retire
    the lessons whose harm is now shown. Ungraded trials (infra, build) credit nothing. Returns lesson → effect."""
    if not result.lesson_ids or not result.is_graded:
        return {}
    passed = result.status == "pass"
    effects = {
        lid: judge(passed, [t for t in history if lid not in t.lesson_ids and t.trial_id != result.trial_id])
        for lid in result.lesson_ids
    }

    def change(active: list[Lesson], retired: list[Lesson]) -> None:
        now = utcnow()
        for lesson in active:
            if lesson.id not in effects:
                continue
            lesson.last_used_at = now
            effect = effects[lesson.id]
            if effect is None:
                lesson.uncredited += 1
            elif effect == "unchanged":
                lesson.unchanged += 1
            elif effect == "helped":
                lesson.helpful += 1
                lesson.importance = round(min(1.0, lesson.importance + HELPFUL_STEP), 4)
            else:
                lesson.harmful += 1
                lesson.importance = round(max(0.0, lesson.importance - HARMFUL_STEP), 4)
                if harmful(lesson):
                    lesson.retired_reason = (
                        f"harmful: hurt {lesson.harmful} trial(s), helped {lesson.helpful}, unchanged "
                        f"{lesson.unchanged}; P(harm) = {p_harm(lesson.helpful, lesson.harmful):.3f}"
                    )
                    retired.append(lesson)

    store.transact(change)
    return effects
