"""Pages beside report.html, so it stays small however many trials a run has: each trial's readable
trajectory (`<trial>/trajectory.html`, written once, when the trial commits) and each iteration's table of
trials (`iterations/NNN/trials.html`). Every link in them is relative to the run folder (a `<base>` element),
so a moved run folder keeps working.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from pydantic import ValidationError

from tbench.fsutil import atomic_write_text, tail
from tbench.models.layout import REPORT_HTML, TrialPaths
from tbench.models.results import TrialResult
from tbench.models.trajectory import Step, Trajectory

#: A tool output longer than this is cut in the page (the whole of it is in the agent's raw output).
OUTPUT_CHARS = 20_000
TEST_TAIL_CHARS = 8_000


@cache
def _env() -> Environment:
    return Environment(loader=PackageLoader("tbench.report", "templates"), autoescape=select_autoescape(["j2"]))


@dataclass
class TurnView:
    index: int
    step: Step
    seconds: float | None
    calls: list[tuple[str, str, str | None, Any]]
    """(tool name, arguments as JSON, output or None, its result record)"""


def _seconds(step: Step) -> float | None:
    if step.started_at and step.finished_at:
        try:
            start, end = (datetime.fromisoformat(t) for t in (step.started_at, step.finished_at))
        except ValueError:
            return None
        return max(0.0, (end - start).total_seconds())
    return None if step.model_ms is None else step.model_ms / 1000


def _turns(trajectory: Trajectory) -> list[TurnView]:
    out = []
    for step in trajectory.steps:
        by_id = {r.call_id: r for r in step.tool_results if r.call_id}
        calls = []
        for n, call in enumerate(step.tool_calls):
            result = by_id.get(call.id) if call.id else None
            if result is None and n < len(step.tool_results) and not step.tool_results[n].call_id:
                result = step.tool_results[n]  # paired by order (Ollama)
            args = json.dumps(call.arguments, indent=2, ensure_ascii=False)
            output = None if result is None else tail(result.output, OUTPUT_CHARS)
            calls.append((call.name, args, output, result))
        out.append(TurnView(step.index, step, _seconds(step), calls))
    return out


def _read_trajectory(path: Path) -> tuple[Trajectory | None, str | None]:
    if not path.is_file():
        return None, "no trajectory was recorded for this trial"
    try:
        return Trajectory.model_validate_json(path.read_bytes()), None
    except (OSError, ValidationError, ValueError) as exc:
        return None, f"agent/trajectory.json could not be read: {str(exc).splitlines()[0]}"


def trajectory_page(run_dir: Path, result: TrialResult) -> str:
    """The page of one committed trial: verdict and test output tail first, then every turn, tool calls and
    their outputs folded, tokens and time per turn."""
    folder = result.trial_dir.rstrip("/")
    paths = TrialPaths(run_dir / folder)
    trajectory, problem = _read_trajectory(paths.trajectory)
    files = [
        (label, f"{folder}/{rel}")
        for label, rel, path in (
            ("trial.log", "trial.log", paths.dir / "trial.log"),
            ("test output", "verifier/test-output.txt", paths.test_output),
            ("trajectory.json", "agent/trajectory.json", paths.trajectory),
            ("agent/", "agent/", paths.agent_dir),
            ("result.json", "result.json", paths.result),
        )
        if path.exists()
    ]
    return (
        _env()
        .get_template("trajectory.html.j2")
        .render(
            r=result,
            t=trajectory,
            problem=problem,
            turns=_turns(trajectory) if trajectory else [],
            base=Markup("../" * len(Path(folder).parts)),
            report=REPORT_HTML,
            files=files,
            test_tail=tail(result.verification_output, TEST_TAIL_CHARS),
        )
    )


def write_trajectory_page(run_dir: Path, result: TrialResult) -> Path:
    path = TrialPaths(run_dir / result.trial_dir).page
    atomic_write_text(path, trajectory_page(run_dir, result))
    return path


def write_missing_pages(run_dir: Path, results: list[TrialResult]) -> int:
    """`tbench report` on a run from before pages existed (or one whose pages were deleted)."""
    n = 0
    for r in results:
        if not TrialPaths(run_dir / r.trial_dir).page.exists() and (run_dir / r.trial_dir).is_dir():
            write_trajectory_page(run_dir, r)
            n += 1
    return n


def trials_page(run_id: str, iteration: int, headline: str, rows: Markup, mixed: bool) -> str:
    return (
        _env()
        .get_template("trials.html.j2")
        .render(run_id=run_id, iteration=iteration, headline=headline, rows=rows, mixed=mixed, report=REPORT_HTML)
    )
