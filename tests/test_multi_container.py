"""Multi-container tasks in a real engine: a TB2/Harbor `environment/docker-compose.yaml` and a TB1
`docker-compose.yaml` whose tests need a sidecar HTTP service built locally. Every service is built and
started through the Docker API on the trial's own network (no compose binary); the oracle passes, nop fails,
the images are recorded, and nothing is left behind — also after a kill -9."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tbench.bench.environments.docker import LABEL_RUN
from tests import taskfactory
from tests.conftest import BASE_IMAGE, run_cli

pytestmark = pytest.mark.container

SECRET = "sidecar-says-42"
FETCH = (
    "python3 -c \"import urllib.request as u; print(u.urlopen('http://api:8000/secret.txt').read().decode().strip())\""
)
SIDECAR_DOCKERFILE = f"""FROM {BASE_IMAGE}
RUN mkdir -p /srv && echo {SECRET} > /srv/secret.txt
CMD ["python3", "-m", "http.server", "8000", "--directory", "/srv"]
"""
HEALTHCHECK = """    healthcheck:
      test: ["CMD-SHELL", "python3 -c 'import urllib.request as u; u.urlopen(\\"http://127.0.0.1:8000/\\")'"]
      retries: 20
"""
TB2_TEST_SH = f"""#!/bin/bash
mkdir -p /logs/verifier
live=$({FETCH})
if [ -n "$live" ] && [ "$(cat /app/answer.txt 2>/dev/null)" = "$live" ]; then echo 1 > /logs/verifier/reward.txt
else echo 0 > /logs/verifier/reward.txt; fi
"""


def _tb2_compose_task(root: Path, name: str = "sidecar", solve_extra: str = "") -> Path:
    folder = taskfactory.tb2(root, name, solve=f"{solve_extra}{FETCH} > /app/answer.txt", test_sh=TB2_TEST_SH)
    env = folder / "environment"
    (env / "api").mkdir()
    (env / "api" / "Dockerfile").write_text(SIDECAR_DOCKERFILE)
    (env / "docker-compose.yaml").write_text(
        "services:\n  main:\n    build:\n      context: .\n    environment:\n      FROM_COMPOSE: main-env\n"
        "    depends_on: [api]\n"
        "  api:\n    build: ./api\n    ports: ['8000']\n" + HEALTHCHECK
    )
    return folder


def _tb1_compose_task(root: Path) -> Path:
    folder = root / "tb1-sidecar"
    (folder / "tests").mkdir(parents=True)
    (folder / "api").mkdir()
    (folder / "task.yaml").write_text(
        "instruction: Fetch the secret from http://api:8000/secret.txt into /app/answer.txt\n"
    )
    (folder / "Dockerfile").write_text(f"FROM {BASE_IMAGE}\nWORKDIR /app\n")
    (folder / "api" / "Dockerfile").write_text(SIDECAR_DOCKERFILE)
    (folder / "docker-compose.yaml").write_text(
        "services:\n  client:\n    build:\n      dockerfile: Dockerfile\n"
        "    image: ${T_BENCH_TASK_DOCKER_CLIENT_IMAGE_NAME}\n"
        "    container_name: ${T_BENCH_TASK_DOCKER_CLIENT_CONTAINER_NAME}\n"
        "    command: [sh, -c, sleep infinity]\n"
        "    volumes: ['${T_BENCH_TASK_LOGS_PATH}:${T_BENCH_CONTAINER_LOGS_PATH}']\n"
        "  api:\n    build:\n      context: ./api\n" + HEALTHCHECK
    )
    (folder / "solution.sh").write_text(f"{FETCH} > /app/answer.txt\n")
    (folder / "run-tests.sh").write_text(
        "python3 -m pytest -rA $TEST_DIR/test_outputs.py 2>&1 || python3 $TEST_DIR/test_outputs.py\n"
    )
    (folder / "tests" / "test_outputs.py").write_text(
        "import urllib.request\n\n"
        "def test_answer_matches_the_live_service():\n"
        "    live = urllib.request.urlopen('http://api:8000/secret.txt').read().decode().strip()\n"
        "    assert open('/app/answer.txt').read().strip() == live\n\n"
        "if __name__ == '__main__':\n"
        "    try:\n        test_answer_matches_the_live_service()\n"
        "        print('PASSED tests/test_outputs.py::test_answer_matches_the_live_service')\n"
        "    except Exception as e:\n"
        "        print('FAILED tests/test_outputs.py::test_answer_matches_the_live_service -', e)\n"
    )
    return folder


def _run(tmp_path: Path, suite: Path, model: str, *extra: str) -> tuple[Path, dict[str, dict[str, Any]]]:
    out = tmp_path / f"run-{model}-{time.monotonic_ns()}"
    proc = run_cli("--suite", str(suite), "--model", model, "--iterations", "1", "--output", str(out),
                   "--project-root", str(tmp_path), *extra)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "iterations/001/results.json").read_text())
    return out, {r["task_id"]: r for r in data["results"]}


def _left(engine: Any, run_id: str | None = None) -> tuple[list[Any], list[Any]]:
    label = f"{LABEL_RUN}={run_id}" if run_id else "tbench.managed=true"
    containers = engine.containers.list(all=True, filters={"label": label})
    networks = (
        [n for n in engine.networks.list() if (n.attrs.get("Labels") or {}).get(LABEL_RUN) == run_id] if run_id else []
    )
    return containers, networks


def test_tb2_compose_sidecar_oracle_passes_nop_fails_images_recorded(engine: Any, tmp_path: Path) -> None:
    _tb2_compose_task(tmp_path / "tasks")
    out, oracle = _run(tmp_path, tmp_path / "tasks", "oracle", "--run-id", "side-oracle")
    r = oracle["sidecar"]
    assert (r["status"], r["failure_mode"]) == ("pass", None), r["error_message"]
    images = r["images"]
    assert images["main"]["id"].startswith("sha256:") and images["main"]["base"] == BASE_IMAGE
    assert images["main"]["base_id"] == engine.images.get(BASE_IMAGE).id
    assert set(images["services"]) == {"api"} and images["services"]["api"]["id"].startswith("sha256:")
    assert images["services"]["api"]["id"] != images["main"]["id"]
    report = (out / "report.md").read_text()
    assert images["main"]["id"][:19] in report and images["services"]["api"]["id"][:19] in report
    _, nop = _run(tmp_path, tmp_path / "tasks", "nop", "--run-id", "side-nop")
    assert (nop["sidecar"]["status"], nop["sidecar"]["failure_mode"]) == ("fail", None)
    for run_id in ("side-oracle", "side-nop"):
        assert _left(engine, run_id) == ([], [])


def test_tb1_compose_with_a_sidecar_service_passes_with_oracle(engine: Any, tmp_path: Path) -> None:
    _tb1_compose_task(tmp_path / "tasks")
    _, oracle = _run(tmp_path, tmp_path / "tasks", "oracle", "--run-id", "tb1-side")
    r = oracle["tb1-sidecar"]
    assert (r["status"], r["failure_mode"]) == ("pass", None), (r["error_message"], r["verification_output"])
    assert set(r["images"]["services"]) == {"api"}
    _, nop = _run(tmp_path, tmp_path / "tasks", "nop", "--run-id", "tb1-side-nop")
    assert nop["tb1-sidecar"]["status"] == "fail"
    assert _left(engine, "tb1-side") == ([], [])


def test_kill_9_with_sidecars_running_then_resume_removes_them_and_their_network(engine: Any, tmp_path: Path) -> None:
    _tb2_compose_task(tmp_path / "tasks", "slow-sidecar", solve_extra="sleep 6; ")
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "from tbench.cli.app import iterate_main; iterate_main()"]
    proc = subprocess.Popen(
        [*cmd, "--suite", str(tmp_path / "tasks"), "--model", "oracle", "--iterations", "1", "--output", str(out),
         "--project-root", str(tmp_path), "--run-id", "k9side"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(_left(engine, "k9side")[0]) < 2:
        time.sleep(0.2)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    containers, networks = _left(engine, "k9side")
    services = {c.labels.get("tbench.service") for c in containers}
    assert len(containers) == 2 and "api" in services and len(networks) == 1  # main + sidecar, their network
    done = run_cli("--resume", str(out / "state.json"))
    assert done.returncode == 0, done.stderr
    assert "removed 2 container" in done.stdout
    assert _left(engine, "k9side") == ([], [])
    assert json.loads((out / "iterations/001/slow-sidecar/result.json").read_text())["status"] == "pass"
