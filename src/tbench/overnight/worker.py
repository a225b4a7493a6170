"""A worker process runs trials one at a time (the seed's `overnight-worker`).

The orchestrator writes `worker-job.json` into a trial folder and sends the folder's path on the worker's
stdin. The worker reports progress in `heartbeat.json` (its phase, that phase's budget, and a beat every
second) and leaves `worker-result.json`; the orchestrator alone commits `result.json`. A worker dies with
its orchestrator (PR_SET_PDEATHSIG), so a kill -9 of the orchestrator never leaves a worker writing into a
run being resumed.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

from tbench.agents.base import ModelRunner
from tbench.agents.model_adapter import create_model_runner
from tbench.bench.environments import EnvironmentFactory
from tbench.bench.trial import run_trial
from tbench.fsutil import atomic_write_model
from tbench.models.layout import TrialPaths
from tbench.models.trial import Heartbeat, WorkerJob
from tbench.proc import die_with_parent

BEAT_EVERY_SEC = 1.0


class _Beater:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.phase: str = "starting"
        self.budget: float | None = None
        self.started = time.time()
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def set_phase(self, phase: str, budget_sec: float | None) -> None:
        with self._lock:
            self.phase, self.budget, self.started = phase, budget_sec, time.time()
        self.beat()

    def beat(self) -> None:
        with self._lock:
            hb = Heartbeat(
                pid=os.getpid(),
                phase=self.phase,
                phase_started=self.started,
                phase_budget_sec=self.budget,
                beat_at=time.time(),
            )
        atomic_write_model(self.path, hb)

    def run(self) -> None:
        while not self._stop.wait(BEAT_EVERY_SEC):
            self.beat()

    def stop(self) -> None:
        self._stop.set()


def _on_term(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds run_trial's finally: the environment is stopped


def main() -> int:
    """Serve trials until stdin closes: one trial folder per line, each with its `worker-job.json`.

    A long-lived worker pays for interpreter start-up and the engine connection once, not per trial."""
    signal.signal(signal.SIGTERM, _on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C belongs to the orchestrator's graceful stop
    envs = EnvironmentFactory()
    runners: dict[str, ModelRunner] = {}
    for line in sys.stdin:
        paths = TrialPaths(Path(line.strip()))
        job = WorkerJob.model_validate_json(paths.job.read_text())
        beater = _Beater(paths.heartbeat)
        beater.beat()
        threading.Thread(target=beater.run, daemon=True).start()
        try:
            label = job.model.label
            if label not in runners:
                runners[label] = create_model_runner(job.model)
            result = run_trial(job.spec, runners[label], envs.create, on_phase=beater.set_phase)
        except KeyboardInterrupt:
            return 130
        finally:
            beater.stop()
        atomic_write_model(paths.outcome, result)
    return 0


def launch_command() -> list[str]:
    return [sys.executable, "-m", "tbench.overnight.worker"]


if __name__ == "__main__":
    die_with_parent()
    sys.exit(main())
