"""Which lessons a trial sees.

1. Only lessons that apply: active, and in scope — `suite` lessons in their suite, `category` lessons on tasks of
   their category, `tool` lessons only for agents that have that tool, `global` everywhere.
2. Only relevant ones: relevance is BM25 (`bm25s`) of the lesson's text, tags and category against the task's
   instruction, category and tags, scaled so the best lesson is 1. A lesson below `RELEVANCE_FLOOR` (0.2 of the
   best, and 0 when it shares no term with the task) is never shown, however important.
3. Ranked by score = 0.4·importance + 0.3·recency + 0.3·relevance (the Archivist spec's default weights; recency
   halves every 7 days since the lesson was last changed or used), ties by id.
4. The top 3 under a 400-token budget: the literature finds 1-3 lessons beat more.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from tbench.models.lessons import Lesson
from tbench.models.task import Task

WEIGHTS = (0.4, 0.3, 0.3)
"""importance, recency, relevance"""
RECENCY_HALF_LIFE_DAYS = 7.0
RELEVANCE_FLOOR = 0.2


@dataclass(frozen=True)
class Selection:
    ids: list[str]
    text: str | None
    """Rendered for `system_prompt_append`; None when no lesson applies."""


def estimate_tokens(text: str) -> int:
    return len(text) // 4 + 1


def applies(lesson: Lesson, task: Task, suite_name: str, tools: frozenset[str] | None = None) -> bool:
    """In scope; `tools` None means the agent's tools are unknown (a tool lesson then applies)."""
    if lesson.superseded_by or lesson.retired_reason:
        return False
    if lesson.scope == "suite":
        return lesson.scope_value in (None, suite_name)
    if lesson.scope == "category":
        return lesson.scope_value in (None, task.category)
    if lesson.scope == "tool":
        return lesson.scope_value is None or tools is None or lesson.scope_value in tools
    return True


def _tokens(texts: list[str]) -> list[list[str]]:
    import bm25s  # half a second of imports (scipy): only once lessons are ranked, never at start-up

    out = bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)
    return [list(t) for t in out]


def relevance(lessons: list[Lesson], query: str) -> list[float]:
    """BM25 scores scaled to 0-1 (the best lesson 1); all 0 when nothing matches."""
    if not lessons:
        return []
    corpus = _tokens([f"{x.text} {' '.join(x.tags)} {x.category}" for x in lessons])
    if not any(corpus):
        return [0.0] * len(lessons)
    import bm25s

    retriever = bm25s.BM25()
    retriever.index(corpus, show_progress=False)
    (q,) = _tokens([query])
    if not q:
        return [0.0] * len(lessons)
    scores = [float(s) for s in retriever.get_scores(q)]
    top = max(scores)
    return [s / top if top > 0 else 0.0 for s in scores]


def _age_days(lesson: Lesson, now: datetime) -> float:
    stamp = max(lesson.updated_at, lesson.last_used_at or "")
    then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return max(0.0, (now - then).total_seconds() / 86400)


def rank(
    lessons: list[Lesson],
    task: Task,
    suite_name: str,
    now: datetime,
    weights: tuple[float, float, float] = WEIGHTS,
    *,
    tools: frozenset[str] | None = None,
    floor: float = RELEVANCE_FLOOR,
) -> list[tuple[float, Lesson]]:
    """Applicable lessons at or above the relevance floor, best first (ties by id, so the order is reproducible)."""
    pool = [x for x in lessons if applies(x, task, suite_name, tools)]
    query = f"{task.instruction} {task.category} {' '.join(task.tags)}"
    rel = relevance(pool, query)
    w_imp, w_rec, w_rel = weights
    scored = [
        (w_imp * x.importance + w_rec * math.pow(0.5, _age_days(x, now) / RECENCY_HALF_LIFE_DAYS) + w_rel * r, x)
        for x, r in zip(pool, rel, strict=True)
        if r > 0 and r >= floor
    ]
    return sorted(scored, key=lambda p: (-p[0], p[1].id))


def select(
    lessons: list[Lesson],
    task: Task,
    suite_name: str,
    now: datetime,
    *,
    top_k: int = 3,
    token_budget: int = 400,
    tools: frozenset[str] | None = None,
    exclude: frozenset[str] = frozenset(),
) -> Selection:
    """`exclude`: lesson ids this trial must not see (on a held-out task: lessons drawn from held-out tasks)."""
    chosen: list[Lesson] = []
    used = 0
    for _, lesson in rank([x for x in lessons if x.id not in exclude], task, suite_name, now, tools=tools):
        cost = estimate_tokens(lesson.text) + 4
        if len(chosen) >= top_k:
            break
        if used + cost > token_budget:
            continue
        chosen.append(lesson)
        used += cost
    if not chosen:
        return Selection([], None)
    return Selection([x.id for x in chosen], "\n".join(f"- {x.text}" for x in chosen))
