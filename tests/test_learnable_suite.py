"""The bundled learnable suite (bench/learning_effect.py's suite) is gradable: every task's own check passes the
reference solution and fails an agent that does nothing, so a model's pass rate on it means something."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tbench.bench.formats import load_suite
from tests.conftest import EXAMPLES, run_cli

SUITE = EXAMPLES / "learnable-suite.json"


def test_suite_is_large_enough_and_sets_no_limits() -> None:
    tasks = load_suite(SUITE).tasks
    assert len(tasks) >= 12
    assert all(t.solution is not None for t in tasks)
    # the bench's --timeout and --max-turns apply only to tasks that set none
    assert all(t.agent_timeout_sec is None and t.max_turns is None for t in tasks)


@pytest.mark.parametrize(("model", "status"), [("oracle", "pass"), ("nop", "fail")])
def test_oracle_passes_every_task_and_nop_none(tmp_path: Path, model: str, status: str) -> None:
    out = tmp_path / "run"
    proc = run_cli("--suite", str(SUITE), "--model", model, "--iterations", "1", "--output", str(out),
                   "--project-root", str(tmp_path))  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = json.loads((out / "iterations/001/results.json").read_text())["results"]
    assert len(results) == len(load_suite(SUITE).tasks)
    assert {r["task_id"]: r["status"] for r in results} == {r["task_id"]: status for r in results}
