"""Every format in a real container engine (podman's Docker API here, Docker for users): pass, fail, agent
timeout, test timeout, build error — plus limits, labels, clean-up and kill -9 recovery."""

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

from tbench.bench.environments.base import TrialLabels
from tbench.bench.environments.docker import LABEL_RUN, DockerEnvironment, build_image
from tbench.bench.formats import load_suite
from tbench.models.task import FileCopy
from tests import taskfactory
from tests.conftest import EXAMPLES, run_cli

pytestmark = pytest.mark.container


def _run(tmp_path: Path, suite: Path | str, model: str = "oracle", *extra: str) -> dict[str, dict[str, Any]]:
    out = tmp_path / f"run-{model}-{time.monotonic_ns()}"
    proc = run_cli(
        "--suite",
        str(suite),
        "--model",
        model,
        "--iterations",
        "1",
        "--output",
        str(out),
        "--project-root",
        str(tmp_path),
        *extra,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    data = json.loads((out / "iterations/001/results.json").read_text())
    results = {r["task_id"]: r for r in data["results"]}
    for r in results.values():
        r["_dir"] = out / r["trial_dir"]
    return results


def _no_containers(engine: Any, run_id: str | None = None) -> list[Any]:
    label = f"{LABEL_RUN}={run_id}" if run_id else "tbench.managed=true"
    return list(engine.containers.list(all=True, filters={"label": label}))


def test_bundled_tb2_examples_pass_with_oracle_and_fail_with_nop(engine: Any, tmp_path: Path) -> None:
    results = _run(tmp_path, EXAMPLES / "tb2")
    assert {k: v["status"] for k, v in results.items()} == {
        "hello-world": "pass",
        "fix-median": "pass",
        "csv-report": "pass",
    }
    csv = results["csv-report"]
    assert csv["rewards"] == {"reward": 1.0, "header": 1.0}  # reward.json read, several keys
    assert (csv["_dir"] / "verifier" / "reward.json").is_file()
    assert "passed" in (results["hello-world"]["_dir"] / "verifier" / "test-output.txt").read_text()
    timings = results["hello-world"]["timings"]
    assert all(timings[k] is not None for k in ("environment_ms", "agent_ms", "verifier_ms", "teardown_ms"))
    nop = _run(tmp_path, EXAMPLES / "tb2", "nop")
    assert {v["status"] for v in nop.values()} == {"fail"}
    assert nop["csv-report"]["rewards"] == {"reward": 0.0, "header": 0.0}
    assert _no_containers(engine) == []


def test_tb2_outcomes(engine: Any, tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    taskfactory.tb2(root, "passes")
    taskfactory.tb2(root, "fails", solve="echo wrong > /app/out.txt")
    taskfactory.tb2(root, "agent-timeout", solve="sleep 120; echo ok > /app/out.txt", agent_timeout=2)
    taskfactory.tb2(root, "late-but-right", solve="echo ok > /app/out.txt; sleep 120", agent_timeout=2)
    taskfactory.tb2(root, "test-timeout", test_sh="#!/bin/bash\nsleep 120\n", test_timeout=2)
    taskfactory.tb2(root, "build-error", dockerfile_extra="RUN echo broken >&2 && exit 7")
    taskfactory.tb2(root, "no-reward", test_sh="#!/bin/bash\necho 'forgot the reward'\n")
    taskfactory.tb2(
        root, "offline-verifier", test_sh="#!/bin/bash\necho 'curl: (6) Could not resolve host: astral.sh'\nexit 1\n"
    )
    taskfactory.tb2(root, "tests-hidden", solve="test -e /tests && exit 9; echo ok > /app/out.txt")
    t0 = time.monotonic()
    res = _run(tmp_path, root)
    got = {k: (v["status"], v["failure_mode"]) for k, v in res.items()}
    assert got == {
        "passes": ("pass", None),
        "fails": ("fail", None),
        "agent-timeout": ("timeout", "agent_timeout"),
        "late-but-right": ("pass", "agent_timeout"),
        "test-timeout": ("timeout", "test_timeout"),
        "build-error": ("error", "build_error"),
        "no-reward": ("error", "parse_error"),
        "offline-verifier": ("error", "infra_error"),
        "tests-hidden": ("pass", None),
    }
    assert time.monotonic() - t0 < 240  # the 120 s sleeps were cut at their limits
    assert "exit 7" in res["build-error"]["error_message"] or "broken" in res["build-error"]["error_message"]
    assert (res["build-error"]["_dir"] / "build.log").is_file()
    assert "forgot the reward" in res["no-reward"]["verification_output"]
    assert _no_containers(engine) == []


def test_tb1_outcomes(engine: Any, tmp_path: Path) -> None:
    root = tmp_path / "tb1"
    taskfactory.tb1(root, "passes")
    taskfactory.tb1(root, "fails", solve="echo nope > /app/out.txt")
    taskfactory.tb1(root, "agent-timeout", solve="sleep 120", agent_timeout=2)
    taskfactory.tb1(root, "test-timeout", run_tests="sleep 120", test_timeout=2)
    taskfactory.tb1(root, "build-error", dockerfile_extra="RUN exit 5")
    taskfactory.tb1(root, "no-summary", run_tests="echo 'nothing parsed'")
    res = _run(tmp_path, root)
    got = {k: (v["status"], v["failure_mode"]) for k, v in res.items()}
    assert got == {
        "passes": ("pass", None),
        "fails": ("fail", None),
        "agent-timeout": ("timeout", "agent_timeout"),
        "test-timeout": ("timeout", "test_timeout"),
        "build-error": ("error", "build_error"),
        "no-summary": ("error", "parse_error"),
    }
    assert res["passes"]["parser_results"] == {
        "../tests/test_outputs.py::test_out": "passed",
        "../tests/test_outputs.py::test_exists": "passed",
    } or set(res["passes"]["parser_results"].values()) == {"passed"}
    assert res["fails"]["parser_results"] and "failed" in res["fails"]["parser_results"].values()
    bundled = _run(tmp_path, EXAMPLES / "tb1")
    assert bundled["word-count"]["status"] == "pass"


def test_seed_json_with_tb2_source_paths(engine: Any, tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    taskfactory.tb2(root, "real-pass")
    taskfactory.tb2(root, "real-timeout", solve="sleep 120", agent_timeout=2)
    taskfactory.tb2(root, "real-build-error", dockerfile_extra="RUN false")
    taskfactory.tb2(root, "real-test-timeout", test_sh="#!/bin/bash\nsleep 120\n", test_timeout=2)
    tasks = [
        {
            "id": f"seed-{name}",
            "name": name,
            "description": "see instruction.md",
            "difficulty": "easy",
            "category": "c",
            "verification": {"type": "test", "command": "cd /app && pytest tests/ -v"},
            "source_path": f"tasks/{name}",
        }
        for name in ("real-pass", "real-timeout", "real-build-error", "real-test-timeout")
    ]
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"name": "seed", "version": "2.0.0", "tasks": tasks}))
    res = _run(tmp_path, suite)
    assert {k: (v["status"], v["failure_mode"]) for k, v in res.items()} == {
        "seed-real-pass": ("pass", None),
        "seed-real-timeout": ("timeout", "agent_timeout"),
        "seed-real-build-error": ("error", "build_error"),
        "seed-real-test-timeout": ("timeout", "test_timeout"),
    }
    nop = _run(tmp_path, suite, "nop", "--tasks", "seed-real-pass")
    assert nop["seed-real-pass"]["status"] == "fail"


def test_container_gets_limits_labels_network_and_is_removed(engine: Any, tmp_path: Path) -> None:
    folder = taskfactory.tb2(tmp_path, "limits", environment='cpus = 1.5\nmemory_mb = 300\nnetwork_mode = "no-network"')
    (task,) = load_suite(folder).tasks
    env = DockerEnvironment(
        task, TrialLabels(run_id="lim-run", trial_id="lim-1", task_id="limits"), tmp_path / "t", engine
    )
    env.start()
    try:
        info = env.container.attrs if env.container else {}
        env.container.reload()
        info = env.container.attrs
        assert info["HostConfig"]["Memory"] == 300 * 1024 * 1024
        assert info["HostConfig"]["NanoCpus"] == 1_500_000_000
        assert info["HostConfig"]["NetworkMode"] == "none"
        assert info["Config"]["Labels"]["tbench.run_id"] == "lim-run"
        assert env.workdir == "/app"
        res = env.exec("echo hi; pwd; exit 4", timeout_sec=30)
        assert (res.exit_code, res.output.split()) == (4, ["hi", "/app"])
        t0 = time.monotonic()
        res = env.exec("sleep 300 & sleep 300; echo never", timeout_sec=1.5)
        assert res.timed_out and res.exit_code is None and time.monotonic() - t0 < 20
        left = env.exec("ps -eo args | grep -c '^sleep 300' || true", timeout_sec=30)
        assert left.output.strip() == "0"  # the whole process tree was killed
        bg = env.exec("(sleep 300 &) ; echo started", timeout_sec=30)  # a daemon holding the stream
        assert bg.exit_code == 0 and not bg.timed_out and "started" in bg.output
        src = tmp_path / "payload"
        src.mkdir()
        (src / "f.txt").write_text("data")
        env.copy_in(FileCopy(src=src, dest="/opt/payload"))
        assert env.exec("cat /opt/payload/f.txt", timeout_sec=30).output == "data"
        assert env.copy_out("/opt/payload", tmp_path / "back")
        assert (tmp_path / "back" / "payload" / "f.txt").read_text() == "data"
        assert not env.copy_out("/no/such/file", tmp_path / "back")
    finally:
        env.stop()
    assert _no_containers(engine, "lim-run") == []


def test_image_is_built_once_per_content(engine: Any, tmp_path: Path) -> None:
    a = load_suite(taskfactory.tb2(tmp_path / "a", "same", dockerfile_extra="RUN echo v1 > /v")).tasks[0]
    b = load_suite(taskfactory.tb2(tmp_path / "b", "same", dockerfile_extra="RUN echo v1 > /v")).tasks[0]
    c = load_suite(taskfactory.tb2(tmp_path / "c", "same", dockerfile_extra="RUN echo v2 > /v")).tasks[0]
    tag_a = build_image(engine, a, tmp_path / "a.log")
    t0 = time.monotonic()
    assert build_image(engine, b, tmp_path / "b.log") == tag_a
    assert time.monotonic() - t0 < 5 and not (tmp_path / "b.log").exists()  # reused, not rebuilt
    assert build_image(engine, c, tmp_path / "c.log") != tag_a


def test_kill_9_mid_trial_then_resume_leaves_no_container(engine: Any, tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    for i in range(3):
        taskfactory.tb2(root, f"slow{i}", solve="sleep 4; echo ok > /app/out.txt")
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "from tbench.cli.app import iterate_main; iterate_main()"]
    proc = subprocess.Popen(
        [
            *cmd,
            "--suite",
            str(root),
            "--model",
            "oracle",
            "--iterations",
            "2",
            "--output",
            str(out),
            "--project-root",
            str(tmp_path),
            "--run-id",
            "k9",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not _no_containers(engine, "k9"):
        time.sleep(0.2)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert _no_containers(engine, "k9"), "a container should be left behind by the killed run"
    state = json.loads((out / "state.json").read_text())
    assert state["iterations"][0]["trials"]["slow0"]["status"] == "running"
    done = run_cli("--resume", str(out / "state.json"))
    assert done.returncode == 0, done.stderr
    assert "removed 1 container" in done.stdout
    assert _no_containers(engine, "k9") == []
    results = sorted(out.glob("iterations/*/*/result.json"))
    assert len(results) == 6
    assert all(json.loads(p.read_text())["status"] == "pass" for p in results)
    first = json.loads((out / "iterations/001/slow0/result.json").read_text())
    assert first["attempts"] == 2
    episodes = (tmp_path / ".openagents/gym/episodes.jsonl").read_text().splitlines()
    assert [json.loads(e)["id"] for e in episodes] == ["k9-001", "k9-002"]
