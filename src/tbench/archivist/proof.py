"""The built-in proof, as a report section: held-out pass rate per iteration for the memory arm and the
no-memory control arm, and the paired verdict (the report's own `compare`: bootstrap interval plus exact test)
over every held-out trial so far. Train-task pass rates prove nothing (lessons were drawn from them)."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from tbench.archivist.loop import REFLECTION_FILE, base_id, is_control
from tbench.archivist.schema import LearningConfig, ReflectionLog
from tbench.bench.tasks import TerminalBenchResults, TrialResult
from tbench.report.stats import compare


def _rate(rs: list[TrialResult]) -> str:
    graded = [r for r in rs if r.status != "error"]
    if not graded:
        return "—"
    passed = sum(r.status == "pass" for r in graded)
    return f"{passed}/{len(graded)} ({passed / len(graded):.0%})"


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
        ctl = [r.model_copy(update={"task_id": base_id(r.task_id)}) for r in it.results if is_control(r.task_id)]
        memory_arm += mem
        control_arm += ctl
        status, applied = "—", "—"
        path = run_dir / "iterations" / f"{it.iteration:03d}" / REFLECTION_FILE
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
