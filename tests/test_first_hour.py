"""What a new user hits in the first hour (issue 11), each tried as they would: real `tbench-iterate` and
`tbench-overnight` processes on real suites, host workspaces and (for image tags) the real container engine."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from tbench.bench.formats import load_suite
from tbench.errors import UserError
from tests import taskfactory
from tests.conftest import EXAMPLES, run_cli
from tests.fake_ollama import FakeOllama, scripted

OVERNIGHT = [sys.executable, "-c", "from tbench.cli.app import overnight_main; overnight_main()"]
UNICODE_ID = "ünïcødé-flood"


def overnight(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*OVERNIGHT, *args], capture_output=True, text=True, timeout=timeout)


def one_error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tbench: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


def seed_suite(path: Path, tasks: list[dict[str, Any]]) -> Path:
    base = {"description": "touch done", "verification": {"type": "custom", "script": "test -f done"}}
    path.write_text(json.dumps({"name": "first-hour", "version": "1", "tasks": [{**base, **t} for t in tasks]}))
    return path


def ok(task_id: str, **extra: Any) -> dict[str, Any]:
    return {"id": task_id, "name": task_id, "solution": "touch done", **extra}


def tb2_folder(root: Path, names: list[str]) -> Path:
    for name in names:
        taskfactory.tb2(root, name)
    return root


# ---------------------------------------------------------------- 2. non-ASCII task ids


def test_a_non_ascii_task_folder_loads_with_its_seven_siblings(tmp_path: Path) -> None:
    from tbench.fsutil import ascii_slug

    decomposed = unicodedata.normalize("NFD", UNICODE_ID)  # typed on a Mac: the same id, other code points
    suite = tb2_folder(tmp_path / "suite", [decomposed, *(f"task-{i}" for i in range(7))])
    loaded = load_suite(suite)
    assert len(loaded.tasks) == 8 and UNICODE_ID in [t.id for t in loaded.tasks]  # NFC-normalised
    slug = ascii_slug(UNICODE_ID)
    assert slug.isascii() and slug.startswith("unic") and slug != ascii_slug("ünïcødé-flöod")
    assert ascii_slug("task-1") == "task-1"  # ASCII ids keep their names


@pytest.mark.parametrize(
    ("task_id", "why"),
    [
        ("", "at least 1 character"),
        (".hidden", "starts with '.'"),
        ("a/b", "path separator"),
        ("a\u0007b", "control character"),
    ],
)
def test_bad_task_ids_are_still_refused(tmp_path: Path, task_id: str, why: str) -> None:
    with pytest.raises(UserError, match=why):
        load_suite(seed_suite(tmp_path / "s.json", [ok(task_id)]))


def test_a_non_ascii_task_runs_in_a_container(engine: Any, tmp_path: Path) -> None:
    from tbench.fsutil import ascii_slug

    suite = tb2_folder(tmp_path / "suite", [UNICODE_ID, "plain"])
    out = tmp_path / "run"
    proc = run_cli("--suite", str(suite), "--model", "oracle", "--iterations", "1", "--output", str(out),
                   "--project-root", str(tmp_path), "--tasks", UNICODE_ID)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "iterations/001" / UNICODE_ID / "result.json").read_text())
    assert result["task_id"] == UNICODE_ID and result["status"] == "pass", result
    tags = [t for image in engine.images.list() for t in image.tags]
    assert any(t.split("/")[-1].startswith(ascii_slug(UNICODE_ID).lower() + ":") for t in tags), tags


# ---------------------------------------------------------------- 3. invalid tasks


def _broken_folder_suite(tmp_path: Path) -> Path:
    suite = tb2_folder(tmp_path / "suite", ["good-a", "good-b", "bad-toml", "no-tests"])
    (suite / "bad-toml" / "task.toml").write_text("[verifier\ntimeout_sec = 1\n")
    (suite / "no-tests" / "tests" / "test.sh").unlink()
    return suite


def test_every_invalid_task_is_named_in_one_error_and_nothing_is_written(tmp_path: Path) -> None:
    suite = _broken_folder_suite(tmp_path)
    out = tmp_path / "run"
    line = one_error_line(run_cli("--suite", str(suite), "--model", "oracle", "--output", str(out),
                                  "--project-root", str(tmp_path)))  # fmt: skip
    assert "2 invalid task(s)" in line and "bad-toml: bad-toml/task.toml: not valid TOML" in line, line
    assert "no-tests: " in line and "missing tests/test.sh" in line and "--skip-invalid" in line, line
    assert not out.exists() and not (tmp_path / ".openagents").exists()


def test_tasks_not_selected_are_not_validated(tmp_path: Path) -> None:
    suite = _broken_folder_suite(tmp_path)
    picked = load_suite(suite, ["good-*"])
    assert [t.id for t in picked.tasks] == ["good-a", "good-b"] and picked.skipped == []


def test_skip_invalid_runs_the_rest_and_records_what_it_skipped(tmp_path: Path) -> None:
    suite = seed_suite(
        tmp_path / "s.json",
        [ok("fine-1"), {"id": "no-verify", "name": "x", "verification": {"type": "output"}}, ok("fine-2"),
         ok("../escape")],
    )  # fmt: skip
    out = tmp_path / "run"
    refused = one_error_line(run_cli("--suite", str(suite), "--model", "oracle", "--iterations", "1",
                                     "--output", str(out), "--project-root", str(tmp_path)))  # fmt: skip
    assert "2 invalid task(s)" in refused and "no-verify" in refused and "../escape" in refused
    proc = run_cli("--suite", str(suite), "--model", "oracle", "--iterations", "1", "--output", str(out),
                   "--project-root", str(tmp_path), "--skip-invalid")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["skip_invalid"] is True and config["task_ids"] == ["fine-1", "fine-2"]
    skipped = {s["id"]: s["reason"] for s in config["skipped_tasks"]}
    assert set(skipped) == {"no-verify", "../escape"} and "path separator" in skipped["../escape"]
    report = (out / "report.md").read_text()
    assert "Skipped 2 invalid task(s) (--skip-invalid): no-verify (" in report
    assert "Skipped 2 invalid task(s)" in (out / "report.html").read_text()


# ---------------------------------------------------------------- 4 and 5. resume: safe flags, a moved folder


def _stopped_run(tmp_path: Path) -> Path:
    suite = seed_suite(tmp_path / "s.json", [ok("t1"), ok("t2")])
    out = tmp_path / "run"
    first = overnight("--suite", str(suite), "--model", "oracle", "--iterations", "2", "--output", str(out),
                      "--project-root", str(tmp_path), "--stop-after-iteration", "1", "--workers", "1")  # fmt: skip
    assert first.returncode == 0 and "--stop-after-iteration 1 reached" in first.stderr, first.stderr
    return out


def test_resume_takes_the_safe_flags_and_refuses_the_others_by_name(tmp_path: Path) -> None:
    out = _stopped_run(tmp_path)
    state_before = (out / "state.json").read_text()
    line = one_error_line(overnight("--resume", str(out / "state.json"), "--model", "nop", "--workers", "2"))
    assert "--model cannot change on --resume" in line and "--workers" in line, line
    assert (out / "state.json").read_text() == state_before
    proc = overnight("--resume", str(out / "state.json"), "--workers", "2", "--max-retries", "1",
                     "--retry-backoff", "1", "--no-debug", "--heartbeat-timeout", "90")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "with --workers 2, --max-retries 1, --retry-backoff 1" in proc.stdout
    config = json.loads((out / "config.json").read_text())
    assert (config["workers"], config["max_retries"], config["retry_backoff_sec"]) == (2, 1, 1.0)
    assert json.loads((out / "state.json").read_text())["status"] == "completed"


def test_a_moved_run_folder_resumes_in_parallel(tmp_path: Path) -> None:
    out = _stopped_run(tmp_path)
    moved = tmp_path / "elsewhere" / "moved-run"
    moved.parent.mkdir()
    shutil.move(str(out), str(moved))
    proc = overnight("--resume", str(moved / "state.json"), "--workers", "2")
    assert proc.returncode == 0 and "Done." in proc.stdout, proc.stderr
    for i in (1, 2):
        results = json.loads((moved / f"iterations/00{i}/results.json").read_text())
        assert results["summary"]["passed"] == 2 and results["summary"]["infra_errors"] == 0, results["summary"]
    assert not out.exists()


# ---------------------------------------------------------------- 6. bad paths


def test_bad_paths_are_one_line_before_anything_runs(tmp_path: Path) -> None:
    suite = seed_suite(tmp_path / "s.json", [ok("t1")])
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    common = ["--suite", str(suite), "--model", "oracle", "--iterations", "1"]
    below = one_error_line(run_cli(*common, "--output", str(a_file / "run"), "--project-root", str(tmp_path)))
    assert f"is below the file {a_file}" in below
    is_file = one_error_line(run_cli(*common, "--output", str(a_file), "--project-root", str(tmp_path)))
    assert "is a file, not a folder" in is_file and "--resume" not in is_file
    out = tmp_path / "run"
    root = one_error_line(run_cli(*common, "--output", str(out), "--project-root", str(a_file)))
    assert "is a file; --project-root" in root and not out.exists()
    proc = subprocess.run([sys.executable, "-c", "from tbench.cli.app import main; main()", "report",
                           str(tmp_path / "nonexistent")], capture_output=True, text=True, timeout=60)  # fmt: skip
    report = one_error_line(proc)
    assert "no such run" in report and "--resume" not in report


# ---------------------------------------------------------------- 7. late failures caught in preflight


def test_preflight_refuses_what_would_fail_later(tmp_path: Path) -> None:
    suite = seed_suite(tmp_path / "s.json", [ok("t1")])
    out = tmp_path / "run"
    common = ["--suite", str(suite), "--model", "oracle", "--iterations", "1", "--output", str(out),
              "--project-root", str(tmp_path)]  # fmt: skip
    memory = tmp_path / ".openagents" / "memory"
    memory.mkdir(parents=True)
    (memory / "lessons.json").write_text("{not json")
    corrupt = one_error_line(run_cli(*common, "--memory", "read"))
    assert "lessons.json" in corrupt
    (memory / "lessons.json").unlink()
    with FakeOllama() as server:
        server.add_model("present", scripted())
        absent = one_error_line(run_cli(*common, "--learn", "--reflect-model", "ollama:absent",
                                        "--ollama-endpoint", server.url))  # fmt: skip
    assert "--reflect-model" in absent and "'absent' is not on the Ollama server" in absent, absent
    holdout = one_error_line(run_cli(*common, "--holdout", "0.5"))
    assert "--holdout" in holdout and "memory is off" in holdout
    assert not out.exists()


# ---------------------------------------------------------------- 12. time limits


def test_timeout_multiplier_and_agent_timeout_reach_every_task(tmp_path: Path) -> None:
    suite = seed_suite(
        tmp_path / "s.json",
        [ok("slow", solution="sleep 3; touch done", timeout_seconds=2, verification_timeout_seconds=30)],
    )
    common = ["--suite", str(suite), "--model", "oracle", "--iterations", "1", "--project-root", str(tmp_path)]
    plain = run_cli(*common, "--output", str(tmp_path / "plain"))
    assert plain.returncode == 0, plain.stderr
    res = json.loads((tmp_path / "plain/iterations/001/slow/result.json").read_text())
    assert res["failure_mode"] == "agent_timeout"  # the task's own 2 s
    longer = run_cli(*common, "--output", str(tmp_path / "longer"), "--timeout-multiplier", "5")
    assert longer.returncode == 0, longer.stderr
    res = json.loads((tmp_path / "longer/iterations/001/slow/result.json").read_text())
    assert res["status"] == "pass" and res["failure_mode"] is None  # 2 s x 5
    config = json.loads((tmp_path / "longer/config.json").read_text())
    assert config["timeout_multiplier"] == 5.0 and config["agent_timeout_sec"] is None
    assert "task limits x5 (--timeout-multiplier)" in (tmp_path / "longer/report.md").read_text()
    override = run_cli(*common, "--output", str(tmp_path / "override"), "--agent-timeout", "20")
    assert override.returncode == 0, override.stderr
    res = json.loads((tmp_path / "override/iterations/001/slow/result.json").read_text())
    assert res["status"] == "pass"
    assert "agent 20s for every task (--agent-timeout)" in (tmp_path / "override/report.md").read_text()
    assert "agent 20s for every task" in (tmp_path / "override/report.html").read_text()
    bad = one_error_line(run_cli(*common, "--output", str(tmp_path / "bad"), "--timeout-multiplier", "0"))
    assert "--timeout-multiplier: must be positive" in bad


def test_time_limits_apply_to_agent_and_verifier() -> None:
    from tbench.models.task import TimeLimits

    (task,) = load_suite(EXAMPLES / "tb2", ["hello-world"]).tasks
    scaled = TimeLimits(multiplier=2.7).apply(task)
    assert scaled.verifier.timeout_sec == pytest.approx(task.verifier.timeout_sec * 2.7)
    assert task.agent_timeout_sec is not None and scaled.agent_timeout_sec == pytest.approx(
        task.agent_timeout_sec * 2.7
    )
    fixed = TimeLimits(multiplier=2.0, agent_timeout_sec=42).apply(task)
    assert fixed.agent_timeout_sec == 42 and fixed.verifier.timeout_sec == task.verifier.timeout_sec * 2


# ---------------------------------------------------------------- 10. local-mode confinement


def test_a_confined_agent_sees_only_its_own_workspace(tmp_path: Path) -> None:
    """A model agent (real tool loop; the LLM a stand-in on a real socket) that tries to read the run's
    config.json (relative and absolute), the suite file with its reference solution, the previous iteration's
    solved workspace and a file in the user's home: none of them exists for it, while programs still run."""
    from tbench.bench.environments.local import confinement

    if not confinement().available:
        pytest.skip(f"no working bubblewrap here: {confinement().reason}")
    marker = "REFERENCE-SOLUTION-" + "7f3a"
    suite = seed_suite(tmp_path / "suite.json", [ok("probe", solution=f"echo {marker} > done")])
    out = tmp_path / "run"
    home_secret = Path.home() / f".tbench-first-hour-{tmp_path.name}"
    home_secret.write_text("home-secret-contents\n")
    sibling = out / "iterations/001/probe/workspace"
    probes = [
        "cat ../../../../config.json",
        f"cat {out / 'config.json'}",
        f"cat {suite}",
        f"ls {sibling}",
        f"cat {home_secret}",
    ]
    command = " ; ".join(f"{{ {p} ; }} >> probe.txt 2>&1" for p in probes)
    command += f" ; ls -A {tmp_path} > above.txt 2>&1"  # only the bare path down to the workspace
    command += " ; ls /usr/bin/env > system.txt && echo written > own.txt && touch done"

    def policy(body: dict[str, Any], n: int) -> Any:
        from tests.fake_ollama import Reply

        return Reply(tool_calls=[("shell", {"command": command})]) if n % 2 == 0 else Reply(content="Done.")

    try:
        with FakeOllama() as server:
            server.add_model("prober", policy)
            proc = run_cli("--suite", str(suite), "--model", "ollama:prober", "--ollama-endpoint", server.url,
                           "--iterations", "2", "--output", str(out), "--project-root", str(tmp_path))  # fmt: skip
    finally:
        home_secret.unlink(missing_ok=True)
    assert proc.returncode == 0, proc.stderr
    for i in (1, 2):
        ws = out / f"iterations/00{i}/probe/workspace"
        found = (ws / "probe.txt").read_text()
        # iteration 1's `ls` of iteration 1's workspace lists its own; from iteration 2 it does not exist
        assert found.count("No such file or directory") == len(probes) - (i == 1), found
        assert (ws / "above.txt").read_text() == "run\n"
        for secret in (marker, "run_id", "home-secret-contents", "suite.json", *(("probe.txt",) if i == 2 else ())):
            assert secret not in found.replace(str(suite), "").replace(str(tmp_path), ""), (secret, found)
        assert (ws / "own.txt").read_text() == "written\n" and (ws / "system.txt").read_text().strip()
        result = json.loads((out / f"iterations/00{i}/probe/result.json").read_text())
        assert result["status"] == "pass", result


# ---------------------------------------------------------------- 9. credentials in an endpoint URL


def test_endpoint_credentials_are_used_never_written_and_asked_again_on_resume(tmp_path: Path) -> None:
    from tests.fake_ollama import Reply

    password = "pw-" + tmp_path.name[-6:] + "x" * 8
    suite = seed_suite(tmp_path / "s.json", [ok("t1"), ok("t2")])
    out = tmp_path / "run"

    def policy(body: dict[str, Any], n: int) -> Any:  # per conversation: parallel trials share the server
        if body["messages"][-1]["role"] == "tool":
            return Reply(content="Done.")
        return Reply(tool_calls=[("shell", {"command": "touch done"})])

    with FakeOllama() as server:
        server.add_model("m", policy)
        url = server.url.replace("http://", f"http://user:{password}@")
        first = overnight("--suite", str(suite), "--model", "ollama:m", "--ollama-endpoint", url, "--iterations", "2",
                          "--output", str(out), "--project-root", str(tmp_path), "--workers", "2",
                          "--stop-after-iteration", "1")  # fmt: skip
        assert first.returncode == 0, first.stderr
        config = json.loads((out / "config.json").read_text())
        assert config["model_settings"]["ollama_endpoint"] == url.replace(password, "[REDACTED]")
        missing = one_error_line(overnight("--resume", str(out / "state.json")))
        assert "--ollama-endpoint" in missing and "does not keep its credentials" in missing, missing
        other = one_error_line(overnight("--resume", str(out / "state.json"), "--ollama-endpoint", "http://x:y@h:1"))
        assert "--ollama-endpoint: differs from this run's" in other and password not in other
        second = overnight("--resume", str(out / "state.json"), "--ollama-endpoint", url)
        assert second.returncode == 0, second.stderr
    results = [json.loads(p.read_text()) for p in out.glob("iterations/*/*/result.json")]
    assert len(results) == 4 and all(r["status"] == "pass" for r in results)
    for text in (first.stdout, first.stderr, second.stdout, second.stderr, missing, other):
        assert password not in text
    for path in [*out.rglob("*"), *(tmp_path / ".openagents").rglob("*")]:
        if path.is_file():
            assert password.encode() not in path.read_bytes(), f"the endpoint's password was written to {path}"
