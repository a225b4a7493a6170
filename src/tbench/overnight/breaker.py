"""The model-server circuit breaker: when the agent's model server (Ollama, an OpenAI-compatible server, the
Anthropic API behind Claude Code) fails K trials in a row, starting more trials only burns the night. The
breaker opens: no trial starts, the server is re-probed with capped exponential backoff, and trials go on as
soon as it answers. Trials the server failed are re-run, not charged to a retry (the run books that; this
module only keeps time). An outage longer than `max_outage_sec` ends the run, resumably.

Each outage is kept as an `Outage` in state.json, and from there in summary.json and the reports.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from tbench.models.common import utcnow
from tbench.models.results import TrialResult
from tbench.models.run import Outage

#: The longest wait between two probes.
PROBE_CAP_SEC = 60.0
#: A trial the server failed is re-run at most this many times for free; past it the retry policy applies,
#: so one task that crashes the server every time cannot keep a night going round in circles.
MAX_SERVER_RERUNS = 10

Probe = Callable[[str], str | None]
"""`probe(model_label)`: None when the model's server answers, else why not."""
Notify = Callable[[str], None]


@dataclass
class CircuitBreaker:
    after: int
    """Consecutive model-server failures that open the breaker."""
    max_outage_sec: float
    first_probe_sec: float
    probe: Probe
    notify: Notify
    outages: list[Outage] = field(default_factory=list)
    """The run's outages (state.json's list, appended to in place)."""
    clock: Callable[[], float] = time.time
    consecutive: int = 0
    _open: Outage | None = None
    _opened_at: float = 0.0
    _next_probe: float = 0.0
    _delay: float = 0.0

    @property
    def is_open(self) -> bool:
        return self._open is not None

    def record(self, result: TrialResult) -> None:
        """Count a finished trial: a model-server failure adds to the streak (K in a row opens the breaker);
        a trial the agent ran to its end resets it; an engine error says nothing about the server."""
        if result.model_server_down:
            self.consecutive += 1
            if self._open is not None:
                self._open.attempts_rerun += 1
            elif self.consecutive >= self.after:
                self._trip(result)
        elif result.is_graded:
            self.consecutive = 0

    def _trip(self, result: TrialResult) -> None:
        now = self.clock()
        self._open = Outage(
            model=result.model,
            cause=(result.error_message or "model server failed")[:500],
            started_at=utcnow(),
            attempts_rerun=self.consecutive,
        )
        self.outages.append(self._open)
        self._opened_at, self._delay = now, max(0.05, self.first_probe_sec)
        self._next_probe = now + self._delay
        self.notify(
            f"model server of {result.model} failed {self.consecutive} trial(s) in a row: pausing new trials, "
            f"probing in {self._delay:g}s (gives up after {self.max_outage_sec:g}s) — {self._open.cause}"
        )

    def hold(self) -> float:
        """Seconds before a trial may start: 0 when closed. While open, probe when due; close on an answer.
        Returns -1 once the outage has lasted past `max_outage_sec` (the caller stops the run)."""
        outage = self._open
        if outage is None:
            return 0.0
        now = self.clock()
        if now < self._next_probe:
            return self._next_probe - now
        outage.probes += 1
        why = self.probe(outage.model)
        now = self.clock()
        if why is None:
            self._close("recovered", now)
            self.notify(
                f"model server of {outage.model} answers again after {outage.duration_sec:.1f}s: resuming "
                f"({outage.attempts_rerun} failed attempt(s) to re-run, {outage.probes} probe(s))"
            )
            return 0.0
        if now - self._opened_at >= self.max_outage_sec:
            self._close("max_outage", now)
            return -1.0
        self._delay = min(PROBE_CAP_SEC, self._delay * 2)
        self._next_probe = now + self._delay
        self.notify(f"  probe {outage.probes}: still down ({why[:200]}); next probe in {self._delay:g}s")
        return self._delay

    def _close(self, how: str, now: float) -> None:
        outage = self._open
        if outage is None:
            return
        outage.ended_at = utcnow()
        outage.duration_sec = round(now - self._opened_at, 3)
        outage.ended = how  # type: ignore[assignment]
        self._open = None
        self.consecutive = 0

    def close_open(self) -> None:
        """The run stops (a signal, a STOP file) during an outage: record how long it lasted."""
        self._close("stopped", self.clock())


def close_stale(outages: list[Outage], last_saved: str) -> None:
    """Resume: an outage left open by a killed run ended when that run last saved its state."""
    for outage in outages:
        if outage.ended is None:
            outage.ended, outage.ended_at = "stopped", last_saved
            start, end = (datetime.fromisoformat(t) for t in (outage.started_at, last_saved))
            outage.duration_sec = round(max(0.0, (end - start).total_seconds()), 3)
