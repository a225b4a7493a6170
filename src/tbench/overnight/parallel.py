"""The parallel overnight runner (Phase 2): within an iteration, trials run in worker processes.

The orchestrator only schedules and books: it starts workers while RAM and disk allow, watches their
heartbeats, kills a worker that went silent (its container removed, the trial an `infra_error`, retried by
policy), and commits each result through the run's `TrialBook`, as the sequential executor does.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import ValidationError

from tbench.errors import InfraError
from tbench.fsutil import atomic_write_model
from tbench.models.layout import RunLayout, TrialPaths
from tbench.models.results import TrialResult
from tbench.models.task import Task
from tbench.models.trial import Heartbeat, TrialSpec, lost_result
from tbench.overnight.executor import TrialBook
from tbench.overnight.progress import Progress
from tbench.overnight.resources import Budget
from tbench.overnight.worker import launch_command

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
            hb = Heartbeat.model_validate_json(TrialPaths(slot.spec.trial_dir).heartbeat.read_text())
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

    def run_iteration(self, book: TrialBook, iteration: int, tasks: Sequence[Task]) -> None:
        queue: deque[tuple[Task, float]] = deque((t, 0.0) for t in tasks)
        running: dict[str, Slot] = {}
        self.progress.start_iteration(iteration, book.iterations_planned, len(tasks))
        try:
            while running or (queue and not book.stop.reason):
                now = time.time()
                for slot in list(running.values()):
                    result = self._poll(book, slot, now)
                    if result is not None:
                        del running[slot.task.id]
                        self._finish(book, iteration, slot, result, queue)
                if book.stop.cancel:
                    self._cancel(book, running)
                    return
                self._launch(book, iteration, queue, running)
                self.progress.update(len(running), len(queue))
                time.sleep(POLL_SEC)
        except BaseException:
            self._cancel(book, running)
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

    def _spawn(self, book: TrialBook) -> Worker:
        logs = RunLayout(book.run_dir).workers_dir
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

    def _assign(self, book: TrialBook, trial_dir: Path) -> Worker:
        while self.idle:
            worker = self.idle.pop()
            if worker.alive() and self._send(worker, trial_dir):
                return worker
        worker = self._spawn(book)
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

    def _launch(
        self, book: TrialBook, iteration: int, queue: deque[tuple[Task, float]], running: dict[str, Slot]
    ) -> None:
        self.progress.held = book.hold() > 0 if queue else False
        while queue and not book.stop.reason and len(running) < self.capacity() and not self.progress.held:
            now = time.time()
            index = next((i for i, (_, not_before) in enumerate(queue) if not_before <= now), None)
            if index is None:
                return  # only backed-off retries left
            task, _ = queue[index]
            free = self.budget.disk_free_mb(book.run_dir)
            if free < self.budget.min_free_disk_mb:
                book.stop.request(
                    f"disk guard: {free} MB free under {book.run_dir}, below {self.budget.min_free_disk_mb} MB",
                    exit_code=1,
                )
                return
            running_mb = sum(s.need_mb for s in running.values())
            if not self.budget.ram_allows(task, running_mb):
                return  # re-checked on the next poll, as trials finish
            del queue[index]
            spec = book.begin_trial(iteration, task)
            paths = TrialPaths(spec.trial_dir)
            paths.dir.mkdir(parents=True, exist_ok=True)
            atomic_write_model(paths.job, book.worker_job(spec))
            worker = self._assign(book, paths.dir)
            running[task.id] = Slot(task=task, spec=spec, worker=worker, need_mb=self.budget.need_mb(task))

    def _poll(self, book: TrialBook, slot: Slot, now: float) -> TrialResult | None:
        outcome = TrialPaths(slot.spec.trial_dir).outcome
        if outcome.exists():
            with contextlib.suppress(OSError, ValidationError):
                result = TrialResult.model_validate_json(outcome.read_text())
                outcome.unlink()
                self.idle.append(slot.worker)
                return result
        rc = slot.worker.proc.poll()
        if rc is not None:
            book.cleanup_trial(slot.spec.trial_id)
            return self._lost(slot, f"worker exited with {rc} before reporting a result")
        reason = self.watchdog.stuck(slot, now)
        if reason is None:
            return None
        self._kill(slot.worker)
        book.cleanup_trial(slot.spec.trial_id)
        return self._lost(slot, reason)

    def _finish(
        self, book: TrialBook, iteration: int, slot: Slot, result: TrialResult, queue: deque[tuple[Task, float]]
    ) -> None:
        if book.finish_trial(iteration, slot.task, result):
            self.progress.trial_done(result)
        else:
            queue.append((slot.task, time.time() + book.retry_delay(iteration, slot.task)))

    @staticmethod
    def _lost(slot: Slot, message: str) -> TrialResult:
        """A trial whose worker died or hung: an infra error, retried by the grading policy."""
        return lost_result(slot.spec, message, slot.started)

    # ---------------------------------------------------------------- stopping

    @staticmethod
    def _kill(worker: Worker) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait()

    def _cancel(self, book: TrialBook, running: dict[str, Slot]) -> None:
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
            book.cleanup_trial(slot.spec.trial_id)
        running.clear()
