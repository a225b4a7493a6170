"""Under CI the container, real-LLM, Claude Code and browser tests are mandatory: any `CI` value but empty,
`false` or `0` turns a missing part into a failure, so `CI=1` or `CI=True` cannot skip them and pass."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, ci_mandatory


@pytest.mark.parametrize(
    ("value", "mandatory"),
    [("true", True), ("True", True), ("1", True), ("yes", True), ("", False), ("false", False), ("0", False)],
)
def test_ci_values(value: str, mandatory: bool) -> None:
    assert ci_mandatory({"CI": value}) is mandatory
    assert ci_mandatory({}) is False


@pytest.mark.parametrize(("value", "rc"), [("1", 1), ("True", 1), ("false", 0)])
def test_engine_missing_under_ci_fails_the_run(tmp_path: Path, value: str, rc: int) -> None:
    """A real pytest run of a test that needs the engine, the engine's socket pointing nowhere."""
    probe = tmp_path / "test_probe.py"
    probe.write_text("def test_needs_engine(engine):\n    assert engine is not None\n")
    env = {
        **os.environ,
        "CI": value,
        "DOCKER_HOST": f"unix://{tmp_path / 'no-engine.sock'}",
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "src")]),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest", str(probe)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == rc, proc.stdout + proc.stderr
    assert ("1 error" if rc else "1 skipped") in proc.stdout  # pytest.fail in a fixture: an error
