"""A real model end to end: Qwen2.5-Coder-1.5B-Instruct (Q4_K_M) behind llama.cpp's llama-server on 127.0.0.1,
driven through `tbench-iterate --model openai:…` on a bundled task in a real container.

`scripts/local-llm.sh build` (run by scripts/test) builds the server and assembles the model into a cache; this
module starts the server from there. Only the plumbing is asserted — tool calls executed in the container,
results and tokens recorded, trajectory saved — never that a 1.5B model solves the task: its outcome is written
to test-artifacts/realllm.jsonl. Mandatory under CI, like the container tests.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from filelock import FileLock

from tbench.models.trajectory import Trajectory
from tests.conftest import EXAMPLES, ROOT, ci_mandatory, run_cli

SCRIPT = ROOT / "scripts" / "local-llm.sh"
MODEL = "qwen2.5-coder-1.5b"
ARTIFACTS = ROOT / "test-artifacts"
READY_TIMEOUT_SEC = 120.0
AGENT_TIMEOUT_SEC = 900.0
"""The bundled task gives its agent 120 s; a 2-core CPU model that shares the machine with other test runs can
need more for the preflight probe and a few turns, and a timeout would say nothing about the plumbing."""
SERVE_LOCK_TIMEOUT_SEC = 1800.0

pytestmark = [pytest.mark.realllm, pytest.mark.container]


def _cache() -> Path:
    return Path(os.environ.get("TBENCH_LLM_CACHE") or Path.home() / ".cache/tbench/llm")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="module")
def llm_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """llama-server with the patched template on a free port; stopped (its process group) at the end."""
    cache = _cache()
    built = [cache / "build-server/bin/llama-server", cache / "model/qwen25-bracket.jinja"]
    if not all(p.exists() for p in built):
        why = f"no local LLM in {cache} (run: scripts/local-llm.sh build)"
        if ci_mandatory():
            pytest.fail(f"{why} under CI")
        pytest.skip(why)
    # One model server at a time on this machine: two test runs (a developer's and CI's) sharing 2 cores would
    # each slow the other several-fold.
    lock = FileLock(str(cache / ".serve.lock"), timeout=SERVE_LOCK_TIMEOUT_SEC)
    lock.acquire()
    port = _free_port()
    log = tmp_path_factory.mktemp("llm") / "llama-server.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [str(SCRIPT), "serve", str(port)], stdout=fh, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        t0 = time.monotonic()
        while not _healthy(port):
            if proc.poll() is not None or time.monotonic() - t0 > READY_TIMEOUT_SEC:
                pytest.fail(f"llama-server did not come up: {log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.5)
        print(f"llama-server ready in {time.monotonic() - t0:.1f} s on port {port}")
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        lock.release()


def test_a_real_model_drives_a_bundled_task_in_a_container(engine: Any, llm_server: str, tmp_path: Path) -> None:
    suite = tmp_path / "suite"
    shutil.copytree(EXAMPLES / "tb2" / "hello-world", suite / "hello-world")
    toml = suite / "hello-world" / "task.toml"
    limit = f"[agent]\ntimeout_sec = {AGENT_TIMEOUT_SEC}"
    toml.write_text(toml.read_text().replace("[agent]\ntimeout_sec = 120.0", limit))
    assert limit in toml.read_text()
    out = tmp_path / "run"
    t0 = time.monotonic()
    proc = run_cli(
        "--suite", str(suite), "--tasks", "hello-world", "--model", f"openai:{MODEL}",
        "--openai-endpoint", llm_server, "--iterations", "1", "--max-turns", "6", "--output", str(out),
        "--project-root", str(tmp_path), "--model-option", "temperature=0", "--model-option", "num_predict=300",
        "--model-option", "num_ctx=8192", "--seed", "1",
    )  # fmt: skip
    wall = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (r,) = json.loads((out / "iterations/001/results.json").read_text())["results"]
    assert r["model"] == f"openai:{MODEL}" and r["failure_mode"] in (None, "agent_error"), r
    assert 1 <= r["turns"] <= 6
    assert r["tokens"]["input"] > 0 and r["tokens"]["output"] > 0
    agent_dir = out / "iterations/001/hello-world/agent"
    traj = Trajectory.model_validate_json((agent_dir / "trajectory.json").read_text())
    assert traj.agent == "openai" and traj.model == f"openai:{MODEL}" and len(traj.steps) == r["turns"]
    assert traj.stop_reason in ("completed", "max_turns")
    calls = [c for s in traj.steps for c in s.tool_calls]
    results = [t for s in traj.steps for t in s.tool_results]
    assert calls, "the model made no tool call at all"
    assert len(results) == len(calls)  # every call was carried out and answered
    shell = [t for t in results if t.name == "shell"]
    assert all(t.output.startswith(("exit code:", "timed out")) for t in shell)  # ran through Environment.exec
    assert all(s.tokens is not None and s.tokens.input > 0 for s in traj.steps)
    raw = (agent_dir / "openai-chat.jsonl").read_text().splitlines()
    assert len(raw) == r["turns"]
    ARTIFACTS.mkdir(exist_ok=True)
    record = {
        "task": "hello-world",
        "model": r["model"],
        "status": r["status"],
        "turns": r["turns"],
        "stop_reason": traj.stop_reason,
        "tokens": r["tokens"],
        "calls": [{"name": c.name, "arguments": c.arguments} for c in calls],
        "wall_s": round(wall, 1),
    }
    with (ARTIFACTS / "realllm.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(record) + "\n")
    print(f"real model outcome: {json.dumps(record)}")
