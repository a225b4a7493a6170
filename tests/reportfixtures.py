"""Seed-JSON suites for report tests, run for real by `tbench-iterate` in a host workspace, and a runner for
the `tbench` app as a real process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import run_cli


def tbench(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """`tbench …` as a user runs it: a real process, real exit code."""
    return subprocess.run(
        [sys.executable, "-c", "from tbench.cli.app import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_suite(path: Path, name: str, tasks: list[dict[str, Any]]) -> Path:
    base = {"description": "report test task", "timeout_seconds": 30, "verification_timeout_seconds": 30}
    path.write_text(json.dumps({"name": name, "version": "1", "tasks": [{**base, **t} for t in tasks]}))
    return path


def ok_task(task_id: str) -> dict[str, Any]:
    """The oracle passes it, `nop` fails it."""
    return {
        "id": task_id,
        "name": task_id,
        "solution": "echo ok > out.txt",
        "verification": {"type": "custom", "script": 'test "$(cat out.txt)" = ok'},
    }


def counter_task(task_id: str, counter: Path, rule: str) -> dict[str, Any]:
    """Passes or fails by a counter kept outside the workspace: outcomes vary across trials, reproducibly.
    `rule` is a shell arithmetic test on $n, the number of earlier trials of this task."""
    script = f"n=$(cat {counter} 2>/dev/null || echo 0); echo $((n + 1)) > {counter}; [ $(( {rule} )) -ne 0 ]"
    return {"id": task_id, "name": task_id, "solution": "true", "verification": {"type": "custom", "script": script}}


def iterate(suite: Path, out: Path, root: Path, model: str, iterations: int, run_id: str) -> Path:
    proc = run_cli(
        "--suite", str(suite), "--model", model, "--iterations", str(iterations),
        "--output", str(out), "--project-root", str(root), "--run-id", run_id,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return out
