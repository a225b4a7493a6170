"""The built-in proof: held-out pass rate per iteration for the memory arm and the no-memory control arm, and the
paired verdict (the statistics layer's `compare`: bootstrap interval plus exact test) over every held-out trial so
far — as data (`LearningSummary`, in summary.json) and as the report's learning section. Train-task pass rates
prove nothing (lessons were drawn from them). The proof is refused when a held-out trial was shown a lesson drawn
from a held-out task (contamination)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from tbench.archivist.holdout import tainted
from tbench.archivist.memory_service import MemoryStore
from tbench.errors import UserError
from tbench.models.grading import NO_GRADED_TRIAL
from tbench.models.layout import RunLayout
from tbench.models.lessons import Lesson, ReflectionLog
from tbench.models.results import TerminalBenchResults, TrialResult, base_id, tally
from tbench.models.run import RunConfig
from tbench.models.summary import ArmRate, LearningIteration, LearningSummary
from tbench.stats.inference import compare


def _arm(rs: list[TrialResult]) -> ArmRate:
    t = tally(rs)
    return ArmRate(passed=t.passed, graded=t.graded, ungraded=t.ungraded, rate=t.rate)


def _reflection(run_dir: Path, iteration: int) -> tuple[int | None, str | None]:
    path = RunLayout(run_dir).iteration(iteration).reflection
    if not path.is_file():
        return None, None
    try:
        log = ReflectionLog.model_validate_json(path.read_text())
    except (ValidationError, UserError):
        return None, "unreadable"
    return sum(o.applied for o in log.operations), log.status + (f" ({log.reason})" if log.reason else "")


def _lessons(project_root: Path) -> dict[str, Lesson]:
    store = MemoryStore.for_project(project_root)
    try:
        return {x.id: x for x in [*store.archive(), *store.load()]}
    except UserError:
        return {}


def learning_proof(run_dir: Path, config: RunConfig, iterations: list[TerminalBenchResults]) -> LearningSummary | None:
    lc = config.learning
    if lc.memory == "off":
        return None
    held = set(lc.holdout_tasks)
    lessons = _lessons(Path(config.project_root))
    suite_ids = {base_id(t) for t in config.task_ids}
    rows: list[LearningIteration] = []
    memory_arm: list[TrialResult] = []
    control_arm: list[TrialResult] = []
    shown: set[str] = set()
    for it in iterations:
        mem = [r for r in it.results if r.task_id in held]
        ctl = [r.model_copy(update={"task_id": base_id(r.task_id)}) for r in it.control_results]
        memory_arm += mem
        control_arm += ctl
        shown |= {lid for r in mem for lid in r.lesson_ids}
        applied, status = _reflection(run_dir, it.iteration)
        rows.append(
            LearningIteration(
                iteration=it.iteration,
                memory=_arm(mem),
                control=_arm(ctl) if lc.control else None,
                operations_applied=applied,
                reflection=status,
            )
        )
    contaminated = sorted(lid for lid in shown if lid in lessons and tainted(lessons[lid], held, suite_ids))
    proof = LearningSummary(
        memory=lc.memory, holdout_tasks=sorted(held), control=lc.control, iterations=rows, verdict=None,
        contaminated_lessons=contaminated,
    )  # fmt: skip
    if contaminated:
        proof.verdict = "refused (contaminated)"
        proof.sentence = (
            f"refused: held-out trials were shown {len(contaminated)} lesson(s) drawn from held-out tasks "
            f"({', '.join(contaminated)}); retire them (`tbench lessons retire ID`) and run again"
        )
    elif lc.control and memory_arm and control_arm:
        c = compare(control_arm, memory_arm, label_a="no memory", label_b="memory")
        proof.verdict, proof.diff, proof.p_value, proof.test = c.verdict, c.diff, c.p_value, c.test
        proof.interval = (c.interval.low, c.interval.high) if c.interval else None
        proof.sentence = c.sentence()
    return proof


def _rate(a: ArmRate | None) -> str:
    if a is None:
        return "—"
    if a.rate is None:
        return NO_GRADED_TRIAL if a.ungraded else "—"
    return f"{a.passed}/{a.graded} ({a.rate:.0%})" + (f", {a.ungraded} not graded" if a.ungraded else "")


def learning_markdown(proof: LearningSummary | None) -> list[str]:
    if proof is None:
        return []
    out = ["## Learning (Archivist)", "", f"Memory: `{proof.memory}`."]
    if proof.holdout_tasks:
        out.append(f"Held-out tasks (never learned from): {', '.join(proof.holdout_tasks)}.")
        out.append(f"Contaminated lessons: {len(proof.contaminated_lessons)}.")
    rows = [
        "| iteration | held-out, memory | held-out, no memory | ops applied | reflection |",
        "|---|---|---|---|---|",
    ]
    for row in proof.iterations:
        mem = _rate(row.memory) if proof.holdout_tasks else "—"
        applied = "—" if row.operations_applied is None else str(row.operations_applied)
        rows.append(f"| {row.iteration} | {mem} | {_rate(row.control)} | {applied} | {row.reflection or '—'} |")
    out += ["", *rows, ""]
    if proof.sentence:
        out += [f"**Held-out verdict, memory vs no memory:** {proof.sentence}", ""]
    elif proof.holdout_tasks and not proof.control:
        out += ["No control arm (`--control`): the held-out rate has no same-night baseline to be compared with.", ""]
    return out
