"""The grading policy, black-box: real `tbench-iterate` / `tbench-overnight` processes and the files they write.

- An iteration whose every trial is an infra error graded nothing: its pass rate is null (never 0.0) in
  results.json, summary.json, delta.json, the episode and the reports, and the run says so and exits 1.
- A task whose image fails to build is a `build_error`: retried (once at most), never graded, counted apart.
- The `--control` arm (held-out tasks without memory) stays out of the headline results and pass rate; it is
  kept in `control_results` and reported in the learning section.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import taskfactory
from tests.conftest import EXAMPLES, run_cli

LOCAL_SUITE = EXAMPLES / "local-suite.json"
LOCAL_TASK_IDS = [t["id"] for t in json.loads(LOCAL_SUITE.read_text())["tasks"]]
OVERNIGHT = [sys.executable, "-c", "from tbench.cli.app import overnight_main; overnight_main()"]
CONTROL = "--control"


@dataclass
class Finished:
    """One finished CLI run: the process and the folders it wrote."""

    proc: subprocess.CompletedProcess[str]
    out: Path
    project_root: Path

    @property
    def output(self) -> str:
        return self.proc.stdout + self.proc.stderr

    def json(self, rel: str) -> Any:
        return json.loads((self.out / rel).read_text())

    def episodes(self) -> list[dict[str, Any]]:
        lines = (self.project_root / ".openagents/gym/episodes.jsonl").read_text().splitlines()
        return [json.loads(x) for x in lines if x.strip()]


def _tables(markdown: str) -> list[list[list[str]]]:
    """The markdown tables of `markdown`, each as rows of stripped cells (header first, separator dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*markdown.splitlines(), ""]:
        s = line.strip()
        if s.startswith("|") and s.endswith("|"):
            cells = [c.strip() for c in s[1:-1].split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    return tables


def _section(markdown: str, heading_prefix: str) -> str:
    """The text under the first heading that starts with `heading_prefix`, up to the next heading of its level."""
    lines = markdown.splitlines()
    level = len(heading_prefix) - len(heading_prefix.lstrip("#"))
    for i, line in enumerate(lines):
        if line.startswith(heading_prefix):
            body = []
            for nxt in lines[i + 1 :]:
                m = re.match(r"^(#+)\s", nxt)
                if m and len(m.group(1)) <= level:
                    break
                body.append(nxt)
            return "\n".join(body)
    raise AssertionError(f"no {heading_prefix!r} heading in report.md")


ZERO_RATE = re.compile(r"(?<![\d.])[+-]?0\.0%")
NOTHING_GRADED = re.compile(r"graded nothing|no trial was graded|no graded trial", re.IGNORECASE)


# --------------------------------------------------------------------------- A. an all-infra iteration


INFRA_TASKS = ["gone-1", "gone-2"]


@pytest.fixture(scope="module")
def all_infra(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Finished]:
    """Two iterations of a suite whose every trial is an infra error: each task names a prebuilt image that cannot
    be pulled (no registry answers) and has no Dockerfile to build instead. (A model server that answers 500 to
    everything no longer gives infra errors: the circuit breaker pauses the night instead, tests/test_outage.py.)"""
    root = tmp_path_factory.mktemp("all-infra")
    suite, out = root / "suite", root / "run"
    for name in INFRA_TASKS:
        folder = taskfactory.tb2(suite, name, environment='docker_image = "localhost/tbench-gone:never"')
        (folder / "environment" / "Dockerfile").unlink()
    proc = run_cli(
        "--suite", str(suite), "--model", "oracle", "--iterations", "2", "--output", str(out),
        "--project-root", str(root), "--run-id", "allinfra", timeout=300,
    )  # fmt: skip
    assert (out / "iterations/001/results.json").is_file(), proc.stdout + proc.stderr
    yield Finished(proc, out, root)


@pytest.mark.container
def test_all_infra_iteration_results_have_a_null_pass_rate(all_infra: Finished) -> None:
    res = all_infra.json("iterations/001/results.json")
    assert {r["failure_mode"] for r in res["results"]} == {"infra_error"}
    summary = res["summary"]
    assert summary["pass_rate"] is None, f"pass_rate of an iteration that graded nothing: {summary['pass_rate']!r}"
    assert summary.get("graded") == 0, summary
    assert summary["infra_errors"] == len(INFRA_TASKS) == len(res["results"]), summary


@pytest.mark.container
def test_all_infra_run_summary_has_null_rates_and_no_best_or_worst(all_infra: Finished) -> None:
    summary = all_infra.json("summary.json")
    assert summary["iterations"], summary
    rates = [i["pass_rate"] for i in summary["iterations"]]
    assert rates == [None] * len(rates), rates
    assert summary["mean_pass_rate"] is None, summary["mean_pass_rate"]
    assert summary["best_iteration"] is None and summary["worst_iteration"] is None, (
        summary["best_iteration"],
        summary["worst_iteration"],
    )


@pytest.mark.container
def test_all_infra_episodes_say_no_graded_trials(all_infra: Finished) -> None:
    episodes = all_infra.episodes()
    assert episodes
    for e in episodes:
        assert e["status"] == "no_graded_trials", (e["id"], e["status"])
        assert "passRate" in e["summary"] and e["summary"]["passRate"] is None, (e["id"], e["summary"])


@pytest.mark.container
def test_all_infra_delta_has_no_zero_pass_rate(all_infra: Finished) -> None:
    path = all_infra.out / "iterations/002/delta.json"
    if not path.exists():
        return  # a delta between two ungraded iterations may be left out
    delta = json.loads(path.read_text())
    assert delta["pass_rate"] is None, f"delta pass_rate: {delta['pass_rate']!r}"
    assert delta["pass_rate_change"] is None, f"delta pass_rate_change: {delta['pass_rate_change']!r}"


@pytest.mark.container
def test_all_infra_report_md_says_no_graded_trial_and_shows_no_zero_rate(all_infra: Finished) -> None:
    report = (all_infra.out / "report.md").read_text()
    assert "no graded trial" in report.lower()
    for line in report.splitlines():
        if "pass rate" in line.lower() and not line.lstrip().startswith("|"):
            assert not ZERO_RATE.search(line), f"report.md shows a 0.0% pass rate: {line!r}"
    for table in _tables(report):
        header = [c.lower() for c in table[0]]
        if "pass rate" not in header:
            continue
        col = header.index("pass rate")
        for row in table[1:]:
            if col < len(row):
                assert not ZERO_RATE.search(row[col]), f"report.md table shows a 0.0% pass rate: {row!r}"


@pytest.mark.container
def test_all_infra_report_html_says_no_graded_trial(all_infra: Finished) -> None:
    html = all_infra.out / "report.html"
    assert html.is_file()
    assert "no graded trial" in html.read_text().lower()


@pytest.mark.container
def test_all_infra_run_exits_1_and_says_nothing_was_graded(all_infra: Finished) -> None:
    assert all_infra.proc.returncode == 1, (all_infra.proc.returncode, all_infra.output[-2000:])
    lines = [ln for ln in all_infra.output.splitlines() if NOTHING_GRADED.search(ln)]
    assert lines, f"no line says nothing was graded:\n{all_infra.output[-2000:]}"
    assert "Traceback" not in all_infra.output


# --------------------------------------------------------------------------- B. a build error is not graded


@pytest.fixture(scope="module")
def build_error_run(engine: Any, tmp_path_factory: pytest.TempPathFactory) -> Finished:
    root = tmp_path_factory.mktemp("build-error")
    suite = root / "tasks"
    suite.mkdir()
    shutil.copytree(EXAMPLES / "tb2" / "hello-world", suite / "hello-world")
    taskfactory.tb2(suite, "broken-build", dockerfile_extra="RUN false")
    out = root / "run"
    proc = subprocess.run(
        [
            *OVERNIGHT, "--suite", str(suite), "--model", "oracle", "--iterations", "1", "--workers", "1",
            "--max-retries", "3", "--retry-backoff", "0.1", "--output", str(out), "--project-root", str(root),
        ],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert (out / "iterations/001/results.json").is_file(), proc.stdout + proc.stderr
    return Finished(proc, out, root)


@pytest.mark.container
def test_build_error_is_retried_once_and_left_out_of_the_pass_rate(build_error_run: Finished) -> None:
    proc = build_error_run.proc
    assert proc.returncode == 0, proc.stdout + proc.stderr
    res = build_error_run.json("iterations/001/results.json")
    by_id = {r["task_id"]: r for r in res["results"]}
    assert set(by_id) == {"hello-world", "broken-build"}
    assert by_id["hello-world"]["status"] == "pass"
    assert by_id["broken-build"]["failure_mode"] == "build_error"
    summary = res["summary"]
    assert summary["pass_rate"] == 1.0, f"a build error was graded: pass_rate {summary['pass_rate']!r}"
    assert summary.get("graded") == 1, summary
    assert summary.get("build_errors") == 1, summary
    assert by_id["broken-build"]["retries"] == 1, by_id["broken-build"]


@pytest.mark.container
def test_build_error_is_named_in_report_md(build_error_run: Finished) -> None:
    report = (build_error_run.out / "report.md").read_text()
    assert "broken-build" in report
    assert "build error" in report.lower(), "report.md never says 'build error'"


# --------------------------------------------------------------------------- C. the control arm is not headline


@pytest.fixture(scope="module")
def control_run(tmp_path_factory: pytest.TempPathFactory) -> Finished:
    root = tmp_path_factory.mktemp("control")
    out = root / "run"
    proc = run_cli(
        "--suite", str(LOCAL_SUITE), "--model", "oracle", "--memory", "read", "--holdout", "0.5", "--control",
        "--seed", "1", "--iterations", "2", "--output", str(out), "--project-root", str(root), "--run-id", "ctl",
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return Finished(proc, out, root)


def _held_out(run: Finished) -> list[str]:
    held = run.json("config.json")["learning"]["holdout_tasks"]
    assert held and len(held) < len(LOCAL_TASK_IDS), held
    return list(held)


def test_control_trials_are_kept_apart_from_results(control_run: Finished) -> None:
    held = _held_out(control_run)
    for i in (1, 2):
        res = control_run.json(f"iterations/00{i}/results.json")
        ids = [r["task_id"] for r in res["results"]]
        assert not [t for t in ids if t.endswith(CONTROL)], f"control trials in results[]: {ids}"
        assert sorted(ids) == sorted(LOCAL_TASK_IDS)
        control = res.get("control_results")
        assert control, "no control_results list"
        assert sorted(r["task_id"] for r in control) == sorted(t + CONTROL for t in held)
        assert res["summary"]["total"] == len(res["results"]) == len(LOCAL_TASK_IDS), res["summary"]


def test_control_arm_is_not_counted_in_the_printed_headline(control_run: Finished) -> None:
    lines = re.findall(r"Iteration (\d+): (\d+)/(\d+) passed", control_run.proc.stdout)
    assert [n for n, _, _ in lines] == ["1", "2"], control_run.proc.stdout
    for n, _passed, total in lines:
        assert int(total) == len(LOCAL_TASK_IDS), f"iteration {n} headline counts {total} trials"


def test_control_arm_is_not_in_the_episode_summary(control_run: Finished) -> None:
    episodes = control_run.episodes()
    assert [e["id"] for e in episodes] == ["ctl-001", "ctl-002"]
    for e in episodes:
        assert e["summary"]["total"] == len(LOCAL_TASK_IDS), (e["id"], e["summary"])


def test_control_arm_is_not_in_the_delta(control_run: Finished) -> None:
    delta = control_run.json("iterations/002/delta.json")
    ids = [t["task_id"] for t in delta["tasks"]] + delta["improved"] + delta["regressed"] + delta["unchanged"]
    assert ids, delta
    assert not [t for t in ids if t.endswith(CONTROL)], f"control ids in delta.json: {ids}"


def test_control_arm_is_still_reported_in_the_learning_section(control_run: Finished) -> None:
    report = (control_run.out / "report.md").read_text()
    learning = _section(report, "## Learning")
    assert "no memory" in learning.lower(), learning
    for task in _held_out(control_run):
        assert task in learning, (task, learning)


# --------------------------------------------------------------------------- D. the policy table, versions, episodes


def test_the_policy_table_grades_what_the_agent_did_and_retries_what_may_pass() -> None:
    from tbench.errors import FailureMode
    from tbench.models.grading import GRADING_POLICY, is_graded, retries_allowed

    assert set(GRADING_POLICY) == {None, *FailureMode}  # every mode has a rule
    graded = {m for m, r in GRADING_POLICY.items() if r.graded}
    assert graded == {
        None, FailureMode.AGENT_TIMEOUT, FailureMode.AGENT_ERROR, FailureMode.TEST_TIMEOUT, FailureMode.PARSE_ERROR
    }  # fmt: skip
    assert not is_graded(FailureMode.BUILD_ERROR) and not is_graded(FailureMode.INFRA_ERROR)
    assert retries_allowed(FailureMode.INFRA_ERROR, 3) == 3
    assert retries_allowed(FailureMode.BUILD_ERROR, 3) == 1  # a build that fails for good costs one more build
    assert retries_allowed(FailureMode.BUILD_ERROR, 0) == 0  # never more than the run allows
    assert retries_allowed(FailureMode.AGENT_TIMEOUT, 3) == retries_allowed(None, 3) == 0


def test_a_file_from_a_newer_tbench_is_one_clear_line(tmp_path: Path) -> None:
    out = tmp_path / "run"
    proc = run_cli(
        "--suite", str(LOCAL_SUITE), "--model", "oracle", "--iterations", "1", "--tasks", "hello-file",
        "--output", str(out), "--project-root", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    results = out / "iterations/001/results.json"
    data = json.loads(results.read_text())
    assert data["schema_version"] == 2
    results.write_text(json.dumps({**data, "schema_version": 99}))
    report = subprocess.run(
        [sys.executable, "-c", "from tbench.cli.app import main; main()", "report", str(out)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert report.returncode == 2, report.stdout + report.stderr
    lines = report.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in report.stderr, report.stderr
    assert str(results) in lines[0] and "newer tbench" in lines[0] and "schema_version 99" in lines[0]


@pytest.mark.container
def test_an_episode_that_graded_nothing_is_indexed_and_listed(all_infra: Finished) -> None:
    proc = subprocess.run(
        [sys.executable, "-c", "from tbench.cli.app import main; main()", "episodes",
         "--project-root", str(all_infra.project_root)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("no_graded_trials") == 2, proc.stdout
    assert "no graded trial" in proc.stdout and "0.0%" not in proc.stdout
