"""The model-server circuit breaker end to end: a real `tbench-iterate` / `tbench-overnight` against an
Ollama-protocol server on 127.0.0.1 that goes down mid-run (every request a 500) and comes back. No trial is
lost, none is left graded as an infra error, no trial starts while the server is down, and the outage is in
state.json, the live output, summary.json and both reports."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tbench.models.results import TrialResult
from tbench.overnight.breaker import CircuitBreaker
from tests.fake_ollama import FakeOllama, Reply, last_tool_result

CLI = {
    "iterate": [sys.executable, "-c", "from tbench.cli.app import iterate_main; iterate_main()"],
    "overnight": [sys.executable, "-c", "from tbench.cli.app import overnight_main; overnight_main()"],
}
FAST = ["--model-option", "retries=1", "--model-option", "retry_backoff_sec=0.01", "--breaker-after", "2"]
TASKS = 3


def _suite(root: Path) -> Path:
    tasks = [
        {
            "id": f"write-{i}",
            "name": f"Write file {i}",
            "description": f"Run exactly: printf 'ok {i}\\n' > out{i}.txt",
            "verification": {"type": "custom", "script": f"test \"$(cat out{i}.txt)\" = 'ok {i}'"},
            "timeout_seconds": 60,
            "max_turns": 5,
            "solution": f"printf 'ok {i}\\n' > out{i}.txt",
        }
        for i in range(TASKS)
    ]
    path = root / "suite.json"
    path.write_text(json.dumps({"name": "outage-suite", "version": "1", "tasks": tasks}))
    return path


def _solver(body: dict[str, Any], n: int) -> Reply:
    """Runs the command the task names, then says it is done."""
    if last_tool_result(body) is not None:
        return Reply(content="Done.")
    task = next(m["content"] for m in body["messages"] if m["role"] == "user")
    command = re.search(r"Run exactly: (.*)", task)
    if command is None:
        return Reply(content="ok")  # the circuit breaker's probe
    return Reply(tool_calls=[("shell", {"command": command.group(1)})])


class Outage:
    """Takes the server down once `after_chats` chat requests have been answered, and brings it back once it
    has refused `probes` descriptions of the model (the breaker's probes): the outage ends on the breaker's
    schedule, not on a clock, so a slow machine cannot end it before the breaker has opened."""

    def __init__(self, fake: FakeOllama, after_chats: int, probes: int | None) -> None:
        self.fake, self.after_chats, self.probes = fake, after_chats, probes
        self.chats_while_down = 0
        self.timeline: list[tuple[float, str]] = []
        self._done = threading.Event()
        self._t0 = time.monotonic()

    def _count(self, path: str) -> int:
        with self.fake._lock:
            return sum(1 for r in self.fake.requests if r.path == path)

    def _mark(self, what: str) -> None:
        self.timeline.append((time.monotonic() - self._t0, what))

    def run(self) -> None:
        while self._count("/api/chat") < self.after_chats and not self._done.wait(0.02):
            pass
        chats, shows = self._count("/api/chat"), self._count("/api/show")
        self.fake.down.set()
        self._mark("server down")
        while self.probes is not None and self._count("/api/show") - shows < self.probes:
            if self._done.wait(0.02):
                return
        if self.probes is not None:
            self.chats_while_down = self._count("/api/chat") - chats
            self.fake.down.clear()
            self._mark(f"server up (after refusing {self.probes} probe(s))")

    def __enter__(self) -> Outage:
        threading.Thread(target=self.run, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()


@pytest.fixture
def fake() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        server.add_model("solver", _solver)
        yield server


def _cli(runner: str, fake: FakeOllama, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [*CLI[runner], "--model", "ollama:solver", "--ollama-endpoint", fake.url, *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600)


def _results(out: Path) -> list[TrialResult]:
    return [TrialResult.model_validate_json(p.read_text()) for p in sorted(out.glob("iterations/*/*/result.json"))]


@pytest.mark.parametrize(
    ("runner", "workers", "extra"),
    [("iterate", 1, []), ("overnight", 2, ["--workers", "2", "--retry-backoff", "0.3", "--max-retries", "0"])],
)
def test_server_down_mid_run_pauses_then_every_trial_is_run(
    fake: FakeOllama, tmp_path: Path, runner: str, workers: int, extra: list[str]
) -> None:
    out = tmp_path / "run"
    args = ["--suite", str(_suite(tmp_path)), "--iterations", "2", "--output", str(out)]
    with Outage(fake, after_chats=2, probes=1 if runner == "iterate" else 2) as outage:
        proc = _cli(runner, fake, *args, "--project-root", str(tmp_path), *FAST, *extra)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # No trial lost, none graded as an infra error, none charged a retry.
    results = _results(out)
    assert sorted((r.iteration, r.task_id) for r in results) == [(i, f"write-{t}") for i in (1, 2) for t in range(3)]
    assert all((r.status, r.failure_mode, r.retries) == ("pass", None, 0) for r in results), results
    for it in ("001", "002"):
        summary = json.loads((out / "iterations" / it / "results.json").read_text())["summary"]
        assert (summary["graded"], summary["passed"], summary["infra_errors"]) == (3, 3, 0)
    rerun = [r for r in results if r.attempts > 1]
    assert rerun and all(list(out.glob(f"iterations/*/_outage/{r.task_id}.*")) for r in rerun)
    # While the server was down, no trial started past the breaker: at most K + workers - 1 attempts failed
    # there, each one call plus one retry.
    assert 0 < outage.chats_while_down <= (2 + workers - 1) * 2
    # The pause is recorded and reported.
    state = json.loads((out / "state.json").read_text())
    (o,) = state["outages"]
    assert o["ended"] == "recovered" and o["model"] == "ollama:solver" and o["probes"] >= 2
    assert "HTTP 500" in o["cause"] and o["attempts_rerun"] >= 2 and o["duration_sec"] > 0
    assert "pausing new trials" in proc.stdout and "answers again" in proc.stdout
    assert json.loads((out / "summary.json").read_text())["outages"][0]["ended"] == "recovered"
    assert "## Model-server outages" in (out / "report.md").read_text()
    assert 'id="outages"' in (out / "report.html").read_text()
    print(f"\n[{runner}] timeline (s since start):")
    for at, what in outage.timeline:
        print(f"  {at:6.2f} {what}")
    print(f"  outage in state.json: {o['started_at']} → {o['ended_at']}, {o['duration_sec']}s, {o['probes']} probes")
    for line in proc.stdout.splitlines():
        print("  |", line)


def test_an_outage_past_max_outage_stops_resumably_then_resume_finishes(fake: FakeOllama, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["--suite", str(_suite(tmp_path)), "--iterations", "1", "--output", str(out)]
    with Outage(fake, after_chats=2, probes=None):
        proc = _cli(
            "overnight", fake, *args, "--project-root", str(tmp_path), *FAST,
            "--workers", "1", "--retry-backoff", "0.2", "--max-outage", "1",
        )  # fmt: skip
    assert proc.returncode == 75, proc.stdout + proc.stderr
    assert "max_outage_sec=1" in proc.stderr and "--resume" in proc.stderr
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "stopped" and state["outages"][0]["ended"] == "max_outage"
    assert all(r.failure_mode is None for r in _results(out))  # nothing burnt as an infra error
    fake.down.clear()
    resumed = subprocess.run(
        [*CLI["overnight"], "--resume", str(out / "state.json")], capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    results = _results(out)
    assert len(results) == TASKS and all((r.status, r.failure_mode) == ("pass", None) for r in results)
    assert "run stopped: past the outage limit" in (out / "report.md").read_text()


def _result(down: bool, graded: bool = True) -> TrialResult:
    return TrialResult(
        trial_id="t", run_id="r", iteration=1, task_id="x", task_name="x", model="ollama:m",
        status="error" if down or not graded else "pass", failure_mode="infra_error" if down or not graded else None,
        error_message="HTTP 500", duration_ms=1, started_at="2026-01-01T00:00:00Z",
        finished_at="2026-01-01T00:00:01Z", trial_dir="x", model_server_down=down,
    )  # fmt: skip


def test_breaker_counts_only_consecutive_server_failures_and_backs_off_its_probes() -> None:
    now = [0.0]
    answers = iter(["refused", "refused", "refused", "refused", None])
    lines: list[str] = []
    b = CircuitBreaker(3, 1000.0, 1.0, lambda _m: next(answers), lines.append, clock=lambda: now[0])
    b.record(_result(True))
    b.record(_result(True))
    b.record(_result(False))  # a graded trial: the server answered, the streak is over
    b.record(_result(True))
    b.record(_result(False, graded=False))  # an engine error says nothing about the server
    b.record(_result(True))
    assert not b.is_open and b.hold() == 0
    b.record(_result(True))
    assert b.is_open and b.hold() == pytest.approx(1.0)
    delays = []
    for _ in range(4):
        now[0] += b.hold()
        delays.append(b.hold())
    assert delays == [2.0, 4.0, 8.0, 16.0]
    now[0] += 16.0
    assert b.hold() == 0 and not b.is_open and b.outages[0].ended == "recovered" and b.outages[0].probes == 5
