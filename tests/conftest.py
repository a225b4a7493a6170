"""Shared fixtures. Container tests need an engine at DOCKER_HOST; under CI (any `CI` but empty, `false` or `0`)
a missing engine fails them instead of skipping (they are mandatory there)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "src" / "tbench" / "examples"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
BASE_IMAGE = "localhost/tbench-base:bookworm"


def ci_mandatory(environ: dict[str, str] | None = None) -> bool:
    """Whether tests that need the engine, the real LLM, the claude CLI or a browser must fail rather than skip
    without it: under CI, i.e. any `CI` other than unset, empty, `false` or `0` (`CI=1` and `CI=True` count)."""
    value = (os.environ if environ is None else environ).get("CI", "")
    return value.strip().lower() not in ("", "false", "0")


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 600, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `tbench-iterate` as a user would: a real process, real exit code (`env`: the whole environment)."""
    return subprocess.run(
        [sys.executable, "-c", "from tbench.cli.app import iterate_main; iterate_main()", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


@pytest.fixture(scope="session")
def engine() -> Iterator[object]:
    """A docker SDK client for the engine at DOCKER_HOST with the base image present."""
    import docker

    try:
        client = docker.from_env(timeout=120)
        client.ping()
        client.images.get(BASE_IMAGE)
    except Exception as exc:
        if ci_mandatory():
            pytest.fail(f"container engine or base image missing under CI: {exc}")
        pytest.skip(f"no container engine with {BASE_IMAGE}: {exc} (run: source scripts/engine.sh)")
    yield client
    client.close()
