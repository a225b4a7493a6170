"""`tbench-iterate` end to end on host-workspace tasks: real processes, real files, real exit codes."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tbench.models.results import TerminalBenchResults, TrialResult
from tests.conftest import EXAMPLES, run_cli


def test_bundled_local_suite_runs_and_records(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli(
        "--suite",
        str(EXAMPLES / "local-suite.json"),
        "--model",
        "oracle",
        "--iterations",
        "2",
        "--output",
        str(out),
        "--project-root",
        str(tmp_path),
        "--run-id",
        "demo",
    )
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "oracle" and config["iterations"] == 2
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "completed"
    for i in (1, 2):
        res = TerminalBenchResults.model_validate_json((out / f"iterations/00{i}/results.json").read_text())
        assert res.summary.total == 4 and res.summary.passed == 4 and res.summary.pass_rate == 1.0
        for r in res.results:
            assert r.status == "pass" and r.failure_mode is None
            assert (out / r.trial_dir / "result.json").is_file()
            assert (out / r.trial_dir / "verifier" / "test-output.txt").is_file()
    assert not (out / "iterations/001/delta.json").exists()
    delta = json.loads((out / "iterations/002/delta.json").read_text())
    assert delta["pass_rate_change"] == 0 and sorted(delta["unchanged"]) == sorted(config["task_ids"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["iterations_completed"] == 2 and summary["mean_pass_rate"] == 1.0
    assert "| fix-median | ✓ | ✓ | 100% |" in (out / "report.md").read_text()
    episodes = [json.loads(x) for x in (tmp_path / ".openagents/gym/episodes.jsonl").read_text().splitlines()]
    assert [e["id"] for e in episodes] == ["demo-001", "demo-002"]
    assert episodes[0]["suiteName"] == "tbench-local-examples" and episodes[0]["status"] == "success"


def test_nop_agent_fails_every_task_and_delta_sees_regressions(tmp_path: Path) -> None:
    out = tmp_path / "nop"
    proc = run_cli(
        "--suite",
        str(EXAMPLES / "local-suite.json"),
        "--model",
        "nop",
        "--iterations",
        "1",
        "--output",
        str(out),
        "--project-root",
        str(tmp_path),
        "--tasks",
        "hello-*",
    )
    assert proc.returncode == 0, proc.stderr
    res = json.loads((out / "iterations/001/results.json").read_text())
    assert res["summary"]["total"] == 1  # tasks not selected never count
    assert res["results"][0]["status"] == "fail"


def _suite(tmp_path: Path, tasks: list[dict[str, object]]) -> Path:
    path = tmp_path / "suite.json"
    path.write_text(json.dumps({"name": "t", "version": "1", "tasks": tasks}))
    return path


def _task(task_id: str, solution: str, script: str = "test -f done", **extra: object) -> dict[str, object]:
    return {
        "id": task_id,
        "name": task_id,
        "description": "touch done",
        "solution": solution,
        "verification": {"type": "custom", "script": script},
        **extra,
    }


def test_agent_and_test_timeouts_and_setup_failure(tmp_path: Path) -> None:
    suite = _suite(
        tmp_path,
        [
            _task("slow-agent", "sleep 30; touch done", timeout_seconds=1),
            _task("slow-tests", "touch done", script="sleep 30", verification_timeout_seconds=1),
            _task("bad-setup", "touch done", setup=["exit 3"]),
            _task("agent-crash", "exit 4"),
        ],
    )
    t0 = time.monotonic()
    proc = run_cli(
        "--suite",
        str(suite),
        "--model",
        "oracle",
        "--iterations",
        "1",
        "--output",
        str(tmp_path / "o"),
        "--project-root",
        str(tmp_path),
    )
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - t0 < 25  # the 30 s sleeps were killed at their limits
    res = {r["task_id"]: r for r in json.loads((tmp_path / "o/iterations/001/results.json").read_text())["results"]}
    assert (res["slow-agent"]["status"], res["slow-agent"]["failure_mode"]) == ("timeout", "agent_timeout")
    assert (res["slow-tests"]["status"], res["slow-tests"]["failure_mode"]) == ("timeout", "test_timeout")
    assert (res["bad-setup"]["status"], res["bad-setup"]["failure_mode"]) == ("error", "build_error")
    assert (res["agent-crash"]["status"], res["agent-crash"]["failure_mode"]) == ("fail", "agent_error")
    assert "exit 3" in res["bad-setup"]["error_message"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--suite", "/no/such/suite"], "/no/such/suite: does not exist"),
        (["--suite", "{examples}/local-suite.json", "--model", "gpt-9"], "--model: unknown model 'gpt-9'"),
        (["--suite", "{examples}/local-suite.json", "--model", "ollama:"], "names no model"),
        (["--suite", "{examples}/local-suite.json", "--model", "oracle", "--claude-validation-rate", "2"], "between 0"),
        (["--suite", "{examples}/local-suite.json", "--model", "oracle", "--model-option", "num_ctx=x"], "num_ctx"),
        (["--suite", "{examples}/local-suite.json", "--model", "oracle", "--run-id", "../x"], "--run-id"),
        (["--suite", "{examples}/local-suite.json", "--model", "oracle", "--iterations", "0"], "--iterations"),
        (["--suite", "{examples}/local-suite.json", "--model", "oracle", "--tasks", "zzz"], "no task matches"),
        (["--suite", "{bad}"], "not valid JSON"),
        (["--resume", "/no/state.json"], "--resume: no such run"),
        (["--resume", "/no/state.json", "--iterations", "3"], "--iterations cannot change on --resume"),
        ([], "--suite: missing"),
    ],
)
def test_bad_input_is_one_line_exit_2_nothing_written(tmp_path: Path, args: list[str], needle: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{nope")
    out = tmp_path / "out"
    args = [a.format(examples=EXAMPLES, bad=bad) for a in args]
    proc = (
        run_cli(*args, "--output", str(out), "--project-root", str(tmp_path))
        if "--resume" not in args
        else run_cli(*args)
    )
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tbench: error: ") and needle in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists() and not (tmp_path / ".openagents").exists()


def test_existing_run_folder_is_never_overwritten(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "--suite",
        str(EXAMPLES / "local-suite.json"),
        "--model",
        "oracle",
        "--iterations",
        "1",
        "--output",
        str(out),
        "--project-root",
        str(tmp_path),
    ]
    assert run_cli(*args).returncode == 0
    before = (out / "config.json").read_text()
    proc = run_cli(*args)
    assert proc.returncode == 2 and "--resume" in proc.stderr and "is an earlier run" in proc.stderr
    assert (out / "config.json").read_text() == before


def _trial_results(out: Path) -> list[TrialResult]:
    return [TrialResult.model_validate_json(p.read_text()) for p in sorted(out.glob("iterations/*/*/result.json"))]


def test_kill_9_then_resume_loses_nothing_and_runs_nothing_twice(tmp_path: Path) -> None:
    """SIGKILL at random moments (bounded), resume each time: one result per (iteration, task), one episode
    per iteration, no trial completed twice."""
    tasks = [_task(f"t{i}", "sleep 0.4; touch done") for i in range(4)]
    suite = _suite(tmp_path, tasks)
    out = tmp_path / "run"
    cmd = [sys.executable, "-c", "from tbench.cli.app import iterate_main; iterate_main()"]
    first = [
        *cmd,
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
        "--run-id",
        "killme",
    ]
    resume = [*cmd, "--resume", str(out / "state.json")]
    rng = random.Random(7)
    kills = 0
    args = first
    for _ in range(6):
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if args is first:  # the random moments start once the run exists (a loaded machine starts slowly)
            deadline = time.monotonic() + 120
            while not (out / "state.json").exists() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        time.sleep(rng.uniform(0.6, 2.5))
        if proc.poll() is not None:
            break
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        kills += 1
        args = resume
    final = subprocess.run(resume, capture_output=True, text=True, timeout=120)
    assert final.returncode == 0, final.stderr
    assert kills >= 2
    results = _trial_results(out)
    keys = [(r.iteration, r.task_id) for r in results]
    assert sorted(keys) == sorted({(i, f"t{t}") for i in (1, 2, 3) for t in range(4)})
    for aside in out.glob("iterations/*/_interrupted/*"):
        assert not (aside / "result.json").exists()  # interrupted attempts never completed
    episodes = [json.loads(x)["id"] for x in (tmp_path / ".openagents/gym/episodes.jsonl").read_text().splitlines()]
    assert episodes == ["killme-001", "killme-002", "killme-003"]
    state = json.loads((out / "state.json").read_text())
    assert state["status"] == "completed" and state["resumes"] >= 1  # a kill may land before a resume is saved
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_trials"] == 12 and summary["mean_pass_rate"] == 1.0


def test_sigterm_saves_state_and_exits_130(tmp_path: Path) -> None:
    suite = _suite(tmp_path, [_task(f"t{i}", "sleep 1; touch done") for i in range(3)])
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "from tbench.cli.app import iterate_main; iterate_main()",
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
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "--resume" in err
    assert json.loads((out / "state.json").read_text())["status"] == "interrupted"
    done = run_cli("--resume", str(out / "state.json"))
    assert done.returncode == 0, done.stderr
    assert len(_trial_results(out)) == 3


def test_container_task_without_engine_is_one_clear_line(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            "from tbench.cli.app import iterate_main; iterate_main()",
            "--suite",
            str(EXAMPLES / "tb2"),
            "--model",
            "oracle",
            "--output",
            str(out),
            "--project-root",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "no container engine answers at DOCKER_HOST=unix://" in proc.stderr
    assert not out.exists()
