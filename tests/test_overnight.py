"""`tbench-overnight`: trials in parallel worker processes; heartbeats, retries, stops and kill -9 recovery,
all against a real container engine and real processes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tbench.models.task import Task
from tbench.overnight.resources import Budget
from tests import taskfactory
from tests.conftest import EXAMPLES

OVERNIGHT = [sys.executable, "-c", "from tbench.cli.app import overnight_main; overnight_main()"]
ITERATE = [sys.executable, "-c", "from tbench.cli.app import iterate_main; iterate_main()"]


def _cli(cmd: list[str], *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=timeout)


def _outcomes(out: Path) -> dict[tuple[int, str], tuple[str, str | None]]:
    found = {}
    for path in out.glob("iterations/*/*/result.json"):
        r = json.loads(path.read_text())
        key = (r["iteration"], r["task_id"])
        assert key not in found
        found[key] = (r["status"], r["failure_mode"])
    return found


def _containers(engine: Any, run_id: str) -> list[Any]:
    return list(engine.containers.list(all=True, filters={"label": f"tbench.run_id={run_id}"}))


def _mixed_suite(root: Path) -> Path:
    taskfactory.tb2(root, "passes")
    taskfactory.tb2(root, "fails", solve="echo wrong > /app/out.txt")
    taskfactory.tb2(root, "agent-timeout", solve="sleep 60", agent_timeout=2)
    taskfactory.tb2(root, "test-timeout", test_sh="#!/bin/bash\nsleep 60\n", test_timeout=2)
    taskfactory.tb2(root, "build-error", dockerfile_extra="RUN exit 4")
    taskfactory.tb2(root, "slowish", solve="sleep 1; echo ok > /app/out.txt")
    return root


@pytest.mark.container
def test_parallel_results_equal_sequential(engine: Any, tmp_path: Path) -> None:
    suite = _mixed_suite(tmp_path / "tasks")
    common = ["--suite", str(suite), "--model", "oracle", "--iterations", "2", "--project-root", str(tmp_path)]
    seq = _cli(ITERATE, *common, "--output", str(tmp_path / "seq"))
    par = _cli(OVERNIGHT, *common, "--output", str(tmp_path / "par"), "--workers", "4")
    assert seq.returncode == 0 and par.returncode == 0, seq.stderr + par.stderr
    expected = _outcomes(tmp_path / "seq")
    assert len(expected) == 12
    assert _outcomes(tmp_path / "par") == expected
    for run in ("seq", "par"):
        summary = json.loads((tmp_path / run / "summary.json").read_text())
        # 2 of the 5 graded trials pass; build-error never reached the agent and is not graded
        assert [i["pass_rate"] for i in summary["iterations"]] == [0.4, 0.4]
        assert [(i["graded"], i["build_errors"]) for i in summary["iterations"]] == [(5, 1), (5, 1)]


def test_parallel_equals_sequential_on_host_tasks(tmp_path: Path) -> None:
    common = ["--suite", str(EXAMPLES / "local-suite.json"), "--iterations", "2", "--project-root", str(tmp_path)]
    for model in ("oracle", "nop"):
        seq = _cli(ITERATE, *common, "--model", model, "--output", str(tmp_path / f"seq-{model}"))
        par = _cli(OVERNIGHT, *common, "--model", model, "--output", str(tmp_path / f"par-{model}"), "--workers", "3")
        assert seq.returncode == 0 and par.returncode == 0, seq.stderr + par.stderr
        assert _outcomes(tmp_path / f"par-{model}") == _outcomes(tmp_path / f"seq-{model}")
        assert len(_outcomes(tmp_path / f"par-{model}")) == 8


@pytest.mark.container
def test_sigkill_orchestrator_at_random_moments_then_resume(engine: Any, tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    for i in range(5):
        taskfactory.tb2(root, f"t{i}", solve=f"sleep {0.5 + i * 0.3:.1f}; echo ok > /app/out.txt")
    out = tmp_path / "run"
    first = [
        *OVERNIGHT,
        "--suite",
        str(root),
        "--model",
        "oracle",
        "--iterations",
        "3",
        "--workers",
        "3",
        "--output",
        str(out),
        "--project-root",
        str(tmp_path),
        "--run-id",
        "night",
    ]
    resume = [*OVERNIGHT, "--resume", str(out / "state.json")]
    rng = random.Random(11)
    kills, args = 0, first
    for _ in range(8):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if args is first:  # the random moments start once the run exists (a loaded machine starts slowly)
            deadline = time.monotonic() + 120
            while not (out / "state.json").exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(rng.uniform(1.0, 4.0))
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        args = resume
    final = subprocess.run(resume, capture_output=True, text=True, timeout=600)
    assert final.returncode == 0, final.stderr
    assert kills >= 3
    outcomes = _outcomes(out)
    assert set(outcomes) == {(i, f"t{t}") for i in (1, 2, 3) for t in range(5)}
    assert set(outcomes.values()) == {("pass", None)}
    assert _containers(engine, "night") == []
    for aside in out.glob("iterations/*/_interrupted/*"):
        assert not (aside / "result.json").exists()
    episodes = [json.loads(x)["id"] for x in (tmp_path / ".openagents/gym/episodes.jsonl").read_text().splitlines()]
    assert episodes == ["night-001", "night-002", "night-003"]
    time.sleep(0.5)
    stray = subprocess.run(["pgrep", "-f", f"tbench.overnight.worker {out}"], capture_output=True, text=True)
    assert stray.stdout.strip() == ""  # workers died with their orchestrator


def _wait_for(path: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.1)


@pytest.mark.container
def test_frozen_worker_is_killed_and_its_trial_retried(engine: Any, tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    taskfactory.tb2(root, "freeze-me", solve="sleep 4; echo ok > /app/out.txt")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            *OVERNIGHT,
            "--suite",
            str(root),
            "--model",
            "oracle",
            "--iterations",
            "1",
            "--workers",
            "2",
            "--output",
            str(out),
            "--project-root",
            str(tmp_path),
            "--run-id",
            "frozen",
            "--max-retries",
            "1",
            "--retry-backoff",
            "0",
            "--heartbeat-timeout",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    heartbeat = out / "iterations/001/freeze-me/heartbeat.json"
    _wait_for(heartbeat)
    while json.loads(heartbeat.read_text())["phase"] != "agent":
        time.sleep(0.1)
    os.kill(json.loads(heartbeat.read_text())["pid"], signal.SIGSTOP)  # a hung worker: no more beats
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "worker silent" in stdout
    result = json.loads((out / "iterations/001/freeze-me/result.json").read_text())
    assert (result["status"], result["retries"], result["attempts"]) == ("pass", 1, 2)
    first = out / "iterations/001/_retries/freeze-me.1"
    assert first.is_dir() and not (first / "result.json").exists()
    assert _containers(engine, "frozen") == []
    summary = json.loads((out / "iterations/001/results.json").read_text())["summary"]
    assert summary["retries"] == 1


@pytest.mark.container
def test_engine_failure_mid_trial_is_retried_and_counted(engine: Any, tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    taskfactory.tb2(root, "victim", solve="sleep 5; echo ok > /app/out.txt")
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            *OVERNIGHT,
            "--suite",
            str(root),
            "--model",
            "oracle",
            "--iterations",
            "1",
            "--workers",
            "1",
            "--output",
            str(out),
            "--project-root",
            str(tmp_path),
            "--run-id",
            "enginefail",
            "--max-retries",
            "2",
            "--retry-backoff",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not _containers(engine, "enginefail"):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(1.5)
    for c in _containers(engine, "enginefail"):
        c.remove(force=True)  # the engine loses the container under the running agent
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    result = json.loads((out / "iterations/001/victim/result.json").read_text())
    assert (result["status"], result["retries"]) == ("pass", 1)
    assert "infra error, retry 1/2" in stdout


@pytest.mark.container
def test_out_of_memory_is_an_infra_error_retried_then_excluded(engine: Any, tmp_path: Path) -> None:
    root = tmp_path / "tasks"
    taskfactory.tb2(
        root,
        "hog",
        solve="python3 -c 'x = bytearray(400 * 1024 * 1024)' && echo ok > /app/out.txt",
        environment="memory_mb = 64",
    )
    taskfactory.tb2(root, "fine")
    out = tmp_path / "run"
    done = _cli(
        OVERNIGHT,
        "--suite",
        str(root),
        "--model",
        "oracle",
        "--iterations",
        "1",
        "--workers",
        "2",
        "--output",
        str(out),
        "--project-root",
        str(tmp_path),
        "--max-retries",
        "1",
        "--retry-backoff",
        "0",
    )
    assert done.returncode == 0, done.stderr
    hog = json.loads((out / "iterations/001/hog/result.json").read_text())
    assert (hog["status"], hog["failure_mode"], hog["retries"]) == ("error", "infra_error", 1)
    # the kernel usually kills the hog itself; if it picks the container's init, the container is gone instead
    assert "out of memory" in hog["error_message"] or "container" in hog["error_message"], hog["error_message"]
    summary = json.loads((out / "iterations/001/results.json").read_text())["summary"]
    assert (summary["infra_errors"], summary["pass_rate"], summary["retries"]) == (1, 1.0, 1)


def _slow_local_suite(tmp_path: Path, n: int, sleep: float) -> Path:
    tasks = [
        {
            "id": f"t{i}",
            "name": f"t{i}",
            "description": "touch done",
            "solution": f"sleep {sleep}; touch done",
            "verification": {"type": "custom", "script": "test -f done"},
        }
        for i in range(n)
    ]
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"name": "slow", "version": "1", "tasks": tasks}))
    return path


def test_stop_after_iteration_and_stop_file_then_resume(tmp_path: Path) -> None:
    suite = _slow_local_suite(tmp_path, 3, 0.1)
    out = tmp_path / "run"
    first = _cli(
        OVERNIGHT,
        "--suite",
        str(suite),
        "--model",
        "oracle",
        "--iterations",
        "3",
        "--output",
        str(out),
        "--project-root",
        str(tmp_path),
        "--stop-after-iteration",
        "1",
    )
    assert first.returncode == 0, first.stderr
    assert "--stop-after-iteration 1 reached" in first.stderr and "--resume" in first.stderr
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "stopped" and [i["status"] for i in state["iterations"]] == ["done", "pending", "pending"]
    (out / "STOP").touch()
    second = _cli(OVERNIGHT, "--resume", str(out / "state.json"))  # a STOP left from before is cleared on resume
    assert second.returncode == 0 and "removed" in second.stdout
    assert json.loads((out / "state.json").read_text())["status"] == "completed"
    assert len(_outcomes(out)) == 9


def test_stop_file_stops_at_the_iteration_boundary(tmp_path: Path) -> None:
    suite = _slow_local_suite(tmp_path, 2, 1.0)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            *OVERNIGHT,
            "--suite",
            str(suite),
            "--model",
            "oracle",
            "--iterations",
            "4",
            "--output",
            str(out),
            "--project-root",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(out / "state.json")
    (out / "STOP").touch()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "STOP found" in err
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "stopped"
    assert [i["status"] for i in state["iterations"]][:1] == ["done"] and state["iterations"][-1]["status"] == "pending"


def test_first_signal_lets_running_trials_finish_second_cancels(tmp_path: Path) -> None:
    suite = _slow_local_suite(tmp_path, 4, 3.0)
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            *OVERNIGHT,
            "--suite",
            str(suite),
            "--model",
            "oracle",
            "--iterations",
            "1",
            "--workers",
            "2",
            "--output",
            str(out),
            "--project-root",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _wait_for(out / "iterations/001/t1/heartbeat.json")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "SIGINT received" in err
    state = json.loads((out / "state.json").read_text())
    trials = state["iterations"][0]["trials"]
    assert sorted(t for t, v in trials.items() if v["status"] == "done") == ["t0", "t1"]  # finished, not cut
    assert trials["t2"]["status"] == "pending" and state["status"] == "stopped"
    # second signal: running trials are cancelled and run again on resume
    proc = subprocess.Popen(
        [*OVERNIGHT, "--resume", str(out / "state.json")], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    _wait_for(out / "iterations/001/t3/heartbeat.json")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130
    trials = json.loads((out / "state.json").read_text())["iterations"][0]["trials"]
    assert trials["t2"]["status"] == "running" and trials["t3"]["status"] == "running"
    done = _cli(OVERNIGHT, "--resume", str(out / "state.json"))
    assert done.returncode == 0, done.stderr
    final = json.loads((out / "state.json").read_text())["iterations"][0]["trials"]
    assert final["t3"]["attempts"] == 2 and final["t0"]["attempts"] == 1
    assert len(_outcomes(out)) == 4


def test_disk_guard_stops_starting_trials(tmp_path: Path) -> None:
    suite = _slow_local_suite(tmp_path, 2, 0.1)
    out = tmp_path / "run"
    proc = _cli(
        OVERNIGHT,
        "--suite",
        str(suite),
        "--model",
        "oracle",
        "--iterations",
        "1",
        "--output",
        str(out),
        "--project-root",
        str(tmp_path),
        "--min-free-disk-mb",
        str(10**12),
    )
    assert proc.returncode == 1 and "disk guard" in proc.stderr
    assert _outcomes(out) == {}
    assert _cli(OVERNIGHT, "--resume", str(out / "state.json")).returncode == 0
    assert len(_outcomes(out)) == 2


def test_ram_budget_never_starts_a_trial_past_the_reserve() -> None:
    import psutil

    total_mb = psutil.virtual_memory().total // (1024 * 1024)
    budget = Budget(default_task_mb=512, reserve_mb=1024)
    task = Task.model_validate(
        {
            "id": "big",
            "name": "big",
            "instruction": "x",
            "format": "seed",
            "source": "t",
            "environment": {"kind": "docker", "memory_mb": total_mb},
            "verifier": {"kind": "seed"},
        }
    )
    small = task.model_copy(update={"environment": task.environment.model_copy(update={"memory_mb": 16})})
    assert budget.need_mb(task) == total_mb
    assert not budget.ram_allows(task, running_mb=100)  # would dip below the reserve
    assert budget.ram_allows(task, running_mb=0)  # alone, it may run
    assert budget.ram_allows(small, running_mb=100)
    assert not budget.ram_allows(small, running_mb=total_mb)  # commitments already fill the machine
    assert 1 <= budget.auto_workers() <= 4 * (os.cpu_count() or 1)
    assert Budget(default_task_mb=10**9).auto_workers() == 1


def test_bad_overnight_flags_exit_2(tmp_path: Path) -> None:
    for args, needle in (
        (["--workers", "many"], "--workers"),
        (["--workers", "0"], "--workers"),
        (["--max-retries", "-1"], "--max-retries"),
    ):
        proc = _cli(
            OVERNIGHT,
            "--suite",
            str(EXAMPLES / "local-suite.json"),
            "--model",
            "oracle",
            "--output",
            str(tmp_path / "x"),
            *args,
        )
        assert proc.returncode == 2 and needle in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
        assert not (tmp_path / "x").exists()


def test_repository_tasks_get_a_worktree_per_trial_removed_afterwards(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=repo,
            check=True,
            capture_output=True,
            text=True,
        ).stdout

    git("init", "-q", "-b", "main")
    (repo / "greeting.txt").write_text("hello\n")
    git("add", ".")
    git("commit", "-qm", "main")
    git("checkout", "-q", "-b", "feature")
    (repo / "greeting.txt").write_text("hello from feature\n")
    git("commit", "-qam", "feature")
    git("checkout", "-q", "main")
    task = {
        "id": "wt",
        "name": "wt",
        "description": "append ok",
        "repository": "repo",
        "branch": "feature",
        "solution": "grep -q feature greeting.txt && echo ok >> greeting.txt",
        "verification": {"type": "custom", "script": "tail -1 greeting.txt | grep -qx ok"},
    }
    suite = tmp_path / "suite.json"
    suite.write_text(json.dumps({"name": "wt", "tasks": [task, {**task, "id": "wt2", "name": "wt2"}]}))
    out = tmp_path / "run"
    done = _cli(
        OVERNIGHT,
        "--suite",
        str(suite),
        "--model",
        "oracle",
        "--iterations",
        "2",
        "--workers",
        "2",
        "--output",
        str(out),
        "--project-root",
        str(tmp_path),
    )
    assert done.returncode == 0, done.stderr
    assert set(_outcomes(out).values()) == {("pass", None)} and len(_outcomes(out)) == 4
    assert git("worktree", "list").count("\n") == 1  # only the main checkout is left
    assert not list(out.glob("iterations/*/*/workspace"))
    assert (repo / "greeting.txt").read_text() == "hello\n"  # the source checkout is untouched
