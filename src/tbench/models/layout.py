"""The one owner of where things are: every path under `results/<run>/` and `<project-root>/.openagents/` is
derived here, so no other module spells a file name.

```
results/<run>/config.json state.json summary.json report.md report.html STOP workers/
results/<run>/iterations/NNN/results.json delta.json reflection.json trials.html
results/<run>/iterations/NNN/<task>/result.json trajectory.html agent/trajectory.json verifier/test-output.txt …
results/<run>/iterations/NNN/_retries/<task>.N  _interrupted/<task>.N  _outage/<task>.N
                                                                            (earlier attempts, kept for inspection)
<project-root>/.openagents/gym/episodes.jsonl baseline.json
<project-root>/.openagents/memory/lessons.json archive.jsonl
```
A run folder holds no absolute path that a resume trusts: everything is found from the folder itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tbench.fsutil import child_path, safe_name

CONFIG_FILE = "config.json"
STATE_FILE = "state.json"
SUMMARY_FILE = "summary.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
STOP_FILE = "STOP"
WORKERS_DIR = "workers"
RETRIES_DIR = "_retries"
INTERRUPTED_DIR = "_interrupted"
OUTAGE_DIR = "_outage"
"""Attempts failed by the model server, set aside and re-run without spending a retry."""
RESULTS_FILE = "results.json"
DELTA_FILE = "delta.json"
REFLECTION_FILE = "reflection.json"
RESULT_FILE = "result.json"
"""A trial's commit marker: written last, atomically, by the orchestrator alone."""
AGENT_DIR = "agent"
TRAJECTORY_FILE = "trajectory.json"
VERIFIER_DIR = "verifier"
TEST_OUTPUT_FILE = "test-output.txt"
JOB_FILE = "worker-job.json"
HEARTBEAT_FILE = "heartbeat.json"
OUTCOME_FILE = "worker-result.json"
TRAJECTORY_PAGE = "trajectory.html"
"""A trial's readable trajectory, written when the trial commits; linked from report.html's grid."""
TRIALS_PAGE = "trials.html"
"""An iteration's table of trials with links to their files (kept out of report.html so it stays small)."""

GYM_DIR = Path(".openagents") / "gym"
MEMORY_DIR = Path(".openagents") / "memory"
EPISODES_FILE = "episodes.jsonl"
BASELINE_FILE = "baseline.json"
LESSONS_FILE = "lessons.json"
ARCHIVE_FILE = "archive.jsonl"
HOLDOUT_FILE = "holdout.json"
COVERAGE_FILE = "coverage.json"
TRAINER_DIR = Path(".openagents") / "trainer"
PROFILES_DIR = "profiles"
TRAINER_FILE = "trainer.json"
"""A training run's result (trainer/schema.py `TrainerResult`)."""
ANALYSIS_FILE = "analysis.json"
"""A training run's failure analysis (trainer/analyzer.py `Analysis`)."""
GYM_EPISODES_FILE = "episodes.jsonl"
ARMS_DIR = "arms"
"""A training run's profile runs: `DIR/arms/<profile>/`, each a normal run folder."""
EVALS_DIR = "evals"
"""An evolution's evaluation runs: `DIR/evals/<n>-<candidate>/`."""


@dataclass(frozen=True)
class TrialPaths:
    """One trial's folder."""

    dir: Path

    @property
    def result(self) -> Path:
        return self.dir / RESULT_FILE

    @property
    def agent_dir(self) -> Path:
        return self.dir / AGENT_DIR

    @property
    def trajectory(self) -> Path:
        return self.dir / AGENT_DIR / TRAJECTORY_FILE

    @property
    def verifier_dir(self) -> Path:
        return self.dir / VERIFIER_DIR

    @property
    def test_output(self) -> Path:
        return self.dir / VERIFIER_DIR / TEST_OUTPUT_FILE

    @property
    def page(self) -> Path:
        return self.dir / TRAJECTORY_PAGE

    @property
    def job(self) -> Path:
        return self.dir / JOB_FILE

    @property
    def heartbeat(self) -> Path:
        return self.dir / HEARTBEAT_FILE

    @property
    def outcome(self) -> Path:
        return self.dir / OUTCOME_FILE


@dataclass(frozen=True)
class IterationPaths:
    dir: Path

    @property
    def results(self) -> Path:
        return self.dir / RESULTS_FILE

    @property
    def delta(self) -> Path:
        return self.dir / DELTA_FILE

    @property
    def reflection(self) -> Path:
        return self.dir / REFLECTION_FILE

    @property
    def trials_page(self) -> Path:
        return self.dir / TRIALS_PAGE

    def trial(self, task_id: str) -> TrialPaths:
        """The task's trial folder; its name is made safe and proved to stay inside the iteration folder."""
        return TrialPaths(child_path(self.dir, task_id))

    def aside(self, kind: str, task_id: str, n: int) -> Path:
        """Where attempt `n` of a trial is kept once set aside (`_retries`, `_interrupted`)."""
        return self.dir / kind / f"{safe_name(task_id)}.{n}"


@dataclass(frozen=True)
class RunLayout:
    """A run folder, wherever it is now (a moved folder is found from itself)."""

    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / CONFIG_FILE

    @property
    def state(self) -> Path:
        return self.dir / STATE_FILE

    @property
    def summary(self) -> Path:
        return self.dir / SUMMARY_FILE

    @property
    def report_md(self) -> Path:
        return self.dir / REPORT_MD

    @property
    def report_html(self) -> Path:
        return self.dir / REPORT_HTML

    @property
    def stop_file(self) -> Path:
        return self.dir / STOP_FILE

    @property
    def workers_dir(self) -> Path:
        return self.dir / WORKERS_DIR

    def iteration(self, i: int) -> IterationPaths:
        return IterationPaths(self.dir / "iterations" / f"{i:03d}")

    def trial(self, i: int, task_id: str) -> TrialPaths:
        return self.iteration(i).trial(task_id)

    def relative(self, path: Path) -> str:
        """How results name a path inside the run folder (relative, so the folder can move)."""
        return path.relative_to(self.dir).as_posix()

    def is_run(self) -> bool:
        return self.config.is_file() and self.state.is_file()


@dataclass(frozen=True)
class ProjectLayout:
    """`<project-root>/.openagents/`: the episode store, the baseline, the lesson store."""

    root: Path

    @property
    def gym_dir(self) -> Path:
        return self.root / GYM_DIR

    @property
    def episodes(self) -> Path:
        return self.root / GYM_DIR / EPISODES_FILE

    @property
    def baseline(self) -> Path:
        return self.root / GYM_DIR / BASELINE_FILE

    @property
    def memory_dir(self) -> Path:
        return self.root / MEMORY_DIR

    @property
    def trainer_dir(self) -> Path:
        return self.root / TRAINER_DIR

    @property
    def profiles_dir(self) -> Path:
        return self.root / TRAINER_DIR / PROFILES_DIR
