"""The built-in proof, as a report section: held-out pass rate per iteration for the memory arm and the
no-memory control arm, and the paired verdict (the report's own `compare`: bootstrap interval plus exact test)
over every held-out trial so far. Train-task pass rates prove nothing (lessons were drawn from them)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from tbench.models.grading import NO_GRADED_TRIAL
from tbench.models.layout import RunLayout
from tbench.models.lessons import LearningConfig, ReflectionLog
from tbench.models.results import TerminalBenchResults, TrialResult, base_id, tally
from tbench.stats.inference import compare


def _rate(rs: list[TrialResult]) -> str:
    """The grading policy's tally, as the headline tables count (ungraded trials shown apart)."""
    t = tally(rs)
    if t.rate is None:
        return NO_GRADED_TRIAL if rs else "—"
    text = f"{t.passed}/{t.graded} ({t.rate:.0%})"
    return text + (f", {t.ungraded} not graded" if t.ungraded else "")


def learning_markdown(run_dir: Path, config: LearningConfig, iterations: list[TerminalBenchResults]) -> list[str]:
    if config.memory == "off":
        return []
    held = set(config.holdout_tasks)
    out = ["## Learning (Archivist)", "", f"Memory: `{config.memory}`."]
    if held:
        out.append(f"Held-out tasks (never learned from): {', '.join(sorted(held))}.")
    rows = [
        "| iteration | held-out, memory | held-out, no memory | ops applied | reflection |",
        "|---|---|---|---|---|",
    ]
    memory_arm: list[TrialResult] = []
    control_arm: list[TrialResult] = []
    for it in iterations:
        mem = [r for r in it.results if r.task_id in held]
        ctl = [r.model_copy(update={"task_id": base_id(r.task_id)}) for r in it.control_results]
        memory_arm += mem
        control_arm += ctl
        status, applied = "—", "—"
        path = RunLayout(run_dir).iteration(it.iteration).reflection
        if path.is_file():
            try:
                log = ReflectionLog.model_validate_json(path.read_text())
                status = log.status + (f" ({log.reason})" if log.reason else "")
                applied = str(sum(o.applied for o in log.operations))
            except ValidationError:
                status = "unreadable"
        rows.append(
            f"| {it.iteration} | {_rate(mem) if held else '—'} | {_rate(ctl) if config.control else '—'} "
            f"| {applied} | {status} |"
        )
    out += ["", *rows, ""]
    if config.control and memory_arm and control_arm:
        verdict = compare(control_arm, memory_arm, label_a="no memory", label_b="memory")
        out += [f"**Held-out verdict, memory vs no memory:** {verdict.sentence()}", ""]
    elif held and not config.control:
        out += ["No control arm (`--control`): the held-out rate has no same-night baseline to be compared with.", ""]
    return out
