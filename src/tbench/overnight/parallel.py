"""The parallel overnight runner (Phase 2): within an iteration, trials run in worker processes.

The orchestrator only schedules and books: it starts workers while RAM and disk allow, watches their
heartbeats, kills a worker that went silent (its container removed, the trial an `infra_error`, retried by
policy), and commits each result through the same `Run` bookkeeping as the sequential loop.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import ValidationError

from tbench.bench.tasks import Task, TrialResult, utcnow
from tbench.bench.trial import TrialSpec
from tbench.errors import FailureMode, InfraError
from tbench.fsutil import atomic_write_model
from tbench.overnight.progress import Progress
from tbench.overnight.resources import Budget
from tbench.overnight.state import IterationState
from tbench.overnight.worker import HEARTBEAT_FILE, JOB_FILE, OUTCOME_FILE, Heartbeat, WorkerJob, launch_command

if TYPE_CHECKING:
    from tbench.overnight.iterate import Run

POLL_SEC = 0.05
CANCEL_WAIT_SEC = 10.0


@dataclass
class Worker:
    """A long-lived worker process; it takes trial folders on stdin, one at a time."""

    proc: subprocess.Popen[str]

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Slot:
    task: Task
    spec: TrialSpec
    worker: Worker
    need_mb: int
    started: float = field(default_factory=time.time)


@dataclass
class Watchdog:
    heartbeat_timeout_sec: float = 60.0
    """A worker whose last beat is older than this is stuck (frozen, deadlocked)."""
    grace_sec: float = 60.0
    """Allowed past a phase's own budget before the worker counts as stuck."""

    def stuck(self, slot: Slot, now: float) -> str | None:
        try:
            hb = Heartbeat.model_validate_json((slot.spec.trial_dir / HEARTBEAT_FILE).read_text())
        except (OSError, ValidationError):
            hb = None
        last = hb.beat_at if hb else slot.started
        if now - last > self.heartbeat_timeout_sec:
            return f"worker silent for {now - last:.0f}s (phase {hb.phase if hb else 'starting'})"
        if hb and hb.phase_budget_sec is not None and now - hb.phase_started > hb.phase_budget_sec + self.grace_sec:
            return f"worker stuck in phase {hb.phase} for {now - hb.phase_started:.0f}s"
        return None


class ParallelExecutor:
    def __init__(self, workers: int | str, budget: Budget, watchdog: Watchdog, progress: Progress) -> None:
        self.workers = workers
        self.budget = budget
        self.watchdog = watchdog
        self.progress = progress
        self.idle: list[Worker] = []

    def capacity(self) -> int:
        return self.budget.auto_workers() if self.workers == "auto" else int(self.workers)

    def __call__(self, run: Run, it: IterationState, tasks: list[Task]) -> None:
        queue: deque[tuple[Task, float]] = deque((t, 0.0) for t in tasks)
        running: dict[str, Slot] = {}
        self.progress.start_iteration(it.iteration, run.config.iterations, len(tasks))
        try:
            while running or (queue and not run.stop.reason):
                now = time.time()
                for slot in list(running.values()):
                    result = self._poll(run, slot, now)
                    if result is not None:
                        del running[slot.task.id]
                        self._finish(run, it, slot, result, queue)
                if run.stop.cancel:
                    self._cancel(run, running)
                    return
                self._launch(run, it, queue, running)
                self.progress.update(len(running), len(queue))
                time.sleep(POLL_SEC)
        except BaseException:
            self._cancel(run, running)
            raise
        finally:
            self.progress.end_iteration()

    def close(self) -> None:
        """End idle workers: closing stdin ends their loop."""
        for worker in self.idle:
            with contextlib.suppress(OSError):
                if worker.proc.stdin:
                    worker.proc.stdin.close()
        for worker in self.idle:
            try:
                worker.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._kill(worker)
        self.idle.clear()

    # ---------------------------------------------------------------- scheduling

    def _spawn(self, run: Run) -> Worker:
        logs = run.dir / "workers"
        logs.mkdir(exist_ok=True)
        log = (logs / f"worker-{time.time_ns()}.log").open("w")
        proc = subprocess.Popen(
            launch_command(),
            stdin=subprocess.PIPE,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # terminal Ctrl-C reaches the orchestrator only
        )
        log.close()
        return Worker(proc)

    def _assign(self, run: Run, trial_dir: Path) -> Worker:
        while self.idle:
            worker = self.idle.pop()
            if worker.alive() and self._send(worker, trial_dir):
                return worker
        worker = self._spawn(run)
        if not self._send(worker, trial_dir):
            raise InfraError("a new worker process died at once; see the run's workers/ logs")
        return worker

    @staticmethod
    def _send(worker: Worker, trial_dir: Path) -> bool:
        try:
            assert worker.proc.stdin is not None
            worker.proc.stdin.write(f"{trial_dir}\n")
            worker.proc.stdin.flush()
            return True
        except (OSError, ValueError):
            return False

    def _launch(self, run: Run, it: IterationState, queue: deque[tuple[Task, float]], running: dict[str, Slot]) -> None:
        while queue and not run.stop.reason and len(running) < self.capacity():
            now = time.time()
            index = next((i for i, (_, not_before) in enumerate(queue) if not_before <= now), None)
            if index is None:
                return  # only backed-off retries left
            task, _ = queue[index]
            free = self.budget.disk_free_mb(run.dir)
            if free < self.budget.min_free_disk_mb:
                run.stop.request(
                    f"disk guard: {free} MB free under {run.dir}, below {self.budget.min_free_disk_mb} MB", exit_code=1
                )
                return
            running_mb = sum(s.need_mb for s in running.values())
            if not self.budget.ram_allows(task, running_mb):
                return  # re-checked on the next poll, as trials finish
            del queue[index]
            spec = run.begin_trial(it, task)
            spec.trial_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_model(spec.trial_dir / JOB_FILE, WorkerJob.of(run.config, spec))
            worker = self._assign(run, spec.trial_dir)
            running[task.id] = Slot(task=task, spec=spec, worker=worker, need_mb=self.budget.need_mb(task))

    def _poll(self, run: Run, slot: Slot, now: float) -> TrialResult | None:
        outcome = slot.spec.trial_dir / OUTCOME_FILE
        if outcome.exists():
            with contextlib.suppress(OSError, ValidationError):
                result = TrialResult.model_validate_json(outcome.read_text())
                outcome.unlink()
                self.idle.append(slot.worker)
                return result
        rc = slot.worker.proc.poll()
        if rc is not None:
            run.envs.cleanup_trial(slot.spec.trial_id)
            return self._infra_result(slot, f"worker exited with {rc} before reporting a result")
        reason = self.watchdog.stuck(slot, now)
        if reason is None:
            return None
        self._kill(slot.worker)
        run.envs.cleanup_trial(slot.spec.trial_id)
        return self._infra_result(slot, reason)

    def _finish(
        self, run: Run, it: IterationState, slot: Slot, result: TrialResult, queue: deque[tuple[Task, float]]
    ) -> None:
        if run.finish_trial(it, slot.task, result):
            self.progress.trial_done(result)
        else:
            queue.append((slot.task, time.time() + run.retry_delay(it, slot.task)))

    @staticmethod
    def _infra_result(slot: Slot, message: str) -> TrialResult:
        spec = slot.spec
        return TrialResult(
            trial_id=spec.trial_id,
            run_id=spec.run_id,
            iteration=spec.iteration,
            task_id=spec.task.id,
            task_name=spec.task.name,
            model=spec.model_label,
            status="error",
            failure_mode=FailureMode.INFRA_ERROR,
            error_message=message,
            duration_ms=int((time.time() - slot.started) * 1000),
            started_at=utcnow(),
            finished_at=utcnow(),
            trial_dir=spec.trial_dir.relative_to(spec.run_dir).as_posix(),
        )

    # ---------------------------------------------------------------- stopping

    @staticmethod
    def _kill(worker: Worker) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()

    def _cancel(self, run: Run, running: dict[str, Slot]) -> None:
        """Second signal: stop the running trials now. Each worker gets SIGTERM (its environment is stopped),
        then SIGKILL; leftover containers are removed by label. The trials stay `running` in state.json and
        run again on resume."""
        for slot in running.values():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(slot.worker.proc.pid, signal.SIGTERM)
        deadline = time.time() + CANCEL_WAIT_SEC
        for slot in running.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                slot.worker.proc.wait(timeout=max(0.1, deadline - time.time()))
            if slot.worker.alive():
                self._kill(slot.worker)
            run.envs.cleanup_trial(slot.spec.trial_id)
        running.clear()
