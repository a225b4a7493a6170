"""Live progress for the overnight runner: iteration i/N, trials done/running/queued, pass rate so far,
ETA. A rich status line on a terminal; on a pipe or file only the plain per-trial lines (the loop's notify)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.live import Live
from rich.text import Text

from tbench.models.results import TrialResult, is_control


class Progress:
    def __init__(self, console: Console, total_iterations: int, workers_label: str) -> None:
        self.console = console
        self.total_iterations = total_iterations
        self.workers_label = workers_label
        self.live: Live | None = None
        self.iteration = 0
        self.in_iteration = 0
        self.done = 0
        self.running = 0
        self.queued = 0
        self.passed = 0
        self.graded = 0
        self.durations: list[float] = []
        self.held = False
        """No trial starts: the model server is down (the circuit breaker is open)."""
        self.t0 = time.monotonic()

    def start_iteration(self, iteration: int, total: int, n_trials: int) -> None:
        self.iteration, self.total_iterations, self.in_iteration, self.done = iteration, total, n_trials, 0
        if self.console.is_terminal and self.live is None:
            self.live = Live(self._render(), console=self.console, refresh_per_second=4, transient=True)
            self.live.start()

    def trial_done(self, result: TrialResult) -> None:
        self.done += 1
        self.durations.append(result.duration_ms / 1000)
        if is_control(result.task_id):
            return  # the learning proof's control arm is no part of the agent's own rate
        if result.is_graded:
            self.graded += 1
            self.passed += result.status == "pass"

    def update(self, running: int, queued: int) -> None:
        self.running, self.queued = running, queued
        if self.live is not None:
            self.live.update(self._render())

    def end_iteration(self) -> None:
        if self.live is not None:
            self.live.stop()
            self.live = None

    def eta_sec(self) -> float | None:
        if not self.durations:
            return None
        mean = sum(self.durations) / len(self.durations)
        parallel = max(1, self.running)
        left = self.running + self.queued + (self.total_iterations - self.iteration) * self.in_iteration
        return mean * left / parallel

    def _render(self) -> Text:
        rate = f"{self.passed / self.graded:.0%}" if self.graded else "-"
        eta = self.eta_sec()
        eta_text = "-" if eta is None else time.strftime("%H:%M:%S", time.gmtime(eta))
        return Text(
            f"iteration {self.iteration}/{self.total_iterations} · done {self.done}/{self.in_iteration} · "
            f"running {self.running} · queued {self.queued} · pass rate so far {rate} · "
            f"workers {self.workers_label} · ETA {eta_text}"
            + (" · PAUSED: model server down, probing" if self.held else "")
        )
