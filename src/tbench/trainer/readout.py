"""Reading a training folder back: its trainer.json, and the trials of each profile from the profile's arm run
(`DIR/arms/<profile>/`, a normal run folder) — what the service decides on, and the report and analyzer show."""

from __future__ import annotations

from pathlib import Path

from tbench.errors import UserError
from tbench.models.common import read_model
from tbench.models.layout import ARMS_DIR, TRAINER_FILE, RunLayout
from tbench.models.results import TerminalBenchResults, TrialResult, is_control
from tbench.trainer.schema import TrainerResult


def trainer_file(folder: Path) -> Path:
    return folder / TRAINER_FILE


def arm_dir(folder: Path, profile_id: str) -> Path:
    return folder / ARMS_DIR / profile_id


def load_result(folder: Path) -> TrainerResult:
    """`DIR/trainer.json`, or one line saying `DIR` is not a training folder."""
    path = trainer_file(folder)
    if not folder.exists():
        raise UserError("does not exist; give the --output folder of `tbench train run`", path=folder)
    if not folder.is_dir():
        raise UserError("is not a folder; give the --output folder of `tbench train run`", path=folder)
    if not path.is_file():
        raise UserError(f"is not a training folder (no {TRAINER_FILE}); give the --output of `tbench train run`",
                        path=folder)  # fmt: skip
    return read_model(path, TrainerResult, "a trainer.json")


def run_trials(run_dir: Path) -> list[TrialResult]:
    """Every committed trial of a run folder, finished iterations and the unfinished one alike, in iteration
    order (control-arm trials left out)."""
    layout = RunLayout(run_dir)
    out: list[TrialResult] = []
    iterations = run_dir / "iterations"
    if not iterations.is_dir():
        return out
    for folder in sorted(p for p in iterations.iterdir() if p.is_dir() and p.name.isdigit()):
        path = layout.iteration(int(folder.name)).results
        if path.is_file():
            results = read_model(path, TerminalBenchResults, "an iteration's results.json")
            out.extend(r for r in results.results if not is_control(r.task_id))
    return out


def profile_trials(folder: Path, result: TrainerResult) -> dict[str, list[TrialResult]]:
    """Profile id → its trials, from each profile's arm run (A/B; for `evolve`, the confirmation arms)."""
    return {p.id: run_trials(folder / p.run_dir) for p in result.profiles}
