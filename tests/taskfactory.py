"""Builds small real task folders (TB2, TB1) in a temp dir for container tests. Every Dockerfile starts
from the locally built base image, so images build offline and, keyed by content, once per session."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import BASE_IMAGE

PASSING_TEST_SH = """#!/bin/bash
mkdir -p /logs/verifier
if [ "$(cat /app/out.txt 2>/dev/null)" = "ok" ]; then echo 1 > /logs/verifier/reward.txt
else echo 0 > /logs/verifier/reward.txt; fi
exit 3  # the exit code is not the verdict
"""


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def tb2(
    root: Path,
    name: str,
    *,
    solve: str = "echo ok > /app/out.txt",
    test_sh: str = PASSING_TEST_SH,
    dockerfile_extra: str = "",
    agent_timeout: float = 60,
    test_timeout: float = 60,
    environment: str = "",
) -> Path:
    folder = root / name
    _write(
        folder / "task.toml",
        f"""version = "1.0"
[metadata]
difficulty = "easy"
category = "test"
[verifier]
timeout_sec = {test_timeout}
[agent]
timeout_sec = {agent_timeout}
[environment]
build_timeout_sec = 300
{environment}
""",
    )
    _write(folder / "instruction.md", f"Task {name}: write ok to /app/out.txt")
    _write(folder / "environment" / "Dockerfile", f"FROM {BASE_IMAGE}\nWORKDIR /app\n{dockerfile_extra}\n")
    _write(folder / "solution" / "solve.sh", f"#!/bin/bash\n{solve}\n", 0o755)
    _write(folder / "tests" / "test.sh", test_sh, 0o755)
    return folder


def tb1(
    root: Path,
    name: str,
    *,
    solve: str = "echo ok > /app/out.txt",
    run_tests: str = "cd /app && python3 -m pytest $TEST_DIR/test_outputs.py -rA -p no:cacheprovider",
    dockerfile_extra: str = "",
    agent_timeout: float = 60,
    test_timeout: float = 60,
) -> Path:
    folder = root / name
    _write(
        folder / "task.yaml",
        f"""instruction: write ok to /app/out.txt
difficulty: easy
category: test
max_agent_timeout_sec: {agent_timeout}
max_test_timeout_sec: {test_timeout}
""",
    )
    _write(folder / "Dockerfile", f"FROM {BASE_IMAGE}\nWORKDIR /app\n{dockerfile_extra}\n")
    _write(folder / "docker-compose.yaml", "services:\n  client:\n    build: {dockerfile: Dockerfile}\n")
    _write(folder / "solution.sh", f"#!/bin/bash\n{solve}\n", 0o755)
    _write(folder / "run-tests.sh", f"#!/bin/bash\n{run_tests}\n", 0o755)
    _write(
        folder / "tests" / "test_outputs.py",
        "from pathlib import Path\n\n\ndef test_out():\n    assert Path('/app/out.txt').read_text().strip() == 'ok'\n"
        "\n\ndef test_exists():\n    assert Path('/app').is_dir()\n",
    )
    return folder
