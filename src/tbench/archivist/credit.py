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

The per-trial judgement trusts the counterfactual's pass rate p0 as if it were known. Once a lesson is in use its
task rarely runs without it again, so p0 stays what a few early trials showed: a coin-flip task that happened to
pass twice makes every later failure look "hurt". So a retirement also needs the counterfactual to be sure:
per task, the pass rate with the lesson and without it get Beta(1 + passed, 1 + failed) posteriors, and the
lesson must be worse — the with-lesson-weighted mean difference below zero — with probability ≥ 0.99 as well
(`p_worse`). Two early passes never carry that alone; a task that passed 16 times without it and fails with it
does.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb
from typing import Literal

from tbench.archivist.memory_service import MemoryStore
from tbench.bench.episode_index import PastTrial
from tbench.models.common import utcnow
from tbench.models.lessons import Lesson, TaskCounts
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


def p_worse(lesson: Lesson, draws: int = 20_000, seed: int = 0) -> float:
    """P(the lesson lowers the pass rate): per task, with- and without-lesson rates drawn from their Beta
    posteriors, their differences averaged with the weight of the trials that saw the lesson. Lessons credited
    before tasks were counted (no `by_task`) are judged by the trial counts alone (1.0 here)."""
    counts = [c for c in lesson.by_task.values() if c.with_graded and c.without_graded]
    if not counts:
        return 1.0
    import numpy as np

    rng = np.random.default_rng(seed)
    total = sum(c.with_graded for c in counts)
    diff = np.zeros(draws)
    for c in counts:
        with_ = rng.beta(1 + c.with_passed, 1 + c.with_graded - c.with_passed, draws)
        without = rng.beta(1 + c.without_passed, 1 + c.without_graded - c.without_passed, draws)
        diff += (c.with_graded / total) * (with_ - without)
    return float((diff < 0).mean())


def harmful(lesson: Lesson) -> bool:
    return p_harm(lesson.helpful, lesson.harmful) >= HARM_CONFIDENCE and p_worse(lesson) >= HARM_CONFIDENCE


def credit(store: MemoryStore, result: TrialResult, history: Sequence[PastTrial]) -> dict[str, Effect | None]:
    """Judge each lesson `result` saw against `history` (the task's indexed trials) and move its counts; retire
    the lessons whose harm is now shown. Ungraded trials (infra, build) credit nothing. Returns lesson → effect."""
    if not result.lesson_ids or not result.is_graded:
        return {}
    passed = result.status == "pass"
    without = {
        lid: [t for t in history if lid not in t.lesson_ids and t.trial_id != result.trial_id and t.is_graded]
        for lid in result.lesson_ids
    }
    effects = {lid: judge(passed, without[lid]) for lid in result.lesson_ids}

    def change(active: list[Lesson], retired: list[Lesson]) -> None:
        now = utcnow()
        for lesson in active:
            if lesson.id not in effects:
                continue
            lesson.last_used_at = now
            effect = effects[lesson.id]
            if effect is not None:
                seen = lesson.by_task.setdefault(result.task_id, TaskCounts())
                seen.with_graded += 1
                seen.with_passed += passed
                seen.without_graded = len(without[lesson.id])  # as the index holds it now (never summed twice)
                seen.without_passed = sum(t.status == "pass" for t in without[lesson.id])
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
                        f"{lesson.unchanged}; P(harm) = {p_harm(lesson.helpful, lesson.harmful):.3f}, "
                        f"P(worse than without it) = {p_worse(lesson):.3f}"
                    )
                    retired.append(lesson)

    store.transact(change)
    return effects
