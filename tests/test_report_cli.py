"""`tbench report`, `compare`, `episodes` and `baseline` on real runs (tbench-iterate in host workspaces) and
on run folders written from seeded plans; real processes, real exit codes."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from tbench.stats.inference import Comparison
from tests.reportfixtures import counter_task, iterate, ok_task, tbench, write_suite
from tests.synthetic import noisy_run


@dataclass(frozen=True)
class Runs:
    root: Path
    oracle: Path
    oracle_again: Path
    nop: Path


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Runs:
    """An 8-task suite the oracle always passes and `nop` always fails; the nop run comes after a baseline."""
    tmp = tmp_path_factory.mktemp("report-cli")
    suite = write_suite(tmp / "eight.json", "eight", [ok_task(f"task-{i}") for i in range(8)])
    oracle = iterate(suite, tmp / "oracle", tmp, "oracle", 1, "oracle-run")
    oracle_again = iterate(suite, tmp / "oracle2", tmp, "oracle", 1, "oracle-run-2")
    set_ = tbench("baseline", "set", str(oracle), "--project-root", str(tmp))
    assert set_.returncode == 0, set_.stderr
    nop = iterate(suite, tmp / "nop", tmp, "nop", 2, "nop-run")
    return Runs(tmp, oracle, oracle_again, nop)


def verdict(proc_stdout: str) -> str:
    (line,) = [x for x in proc_stdout.splitlines() if x.startswith("verdict: ")]
    return line.removeprefix("verdict: ")


def test_compare_claims_a_real_difference(runs: Runs) -> None:
    better = tbench("compare", str(runs.nop), str(runs.oracle))
    assert better.returncode == 0, better.stderr
    assert verdict(better.stdout) == "improved"
    # 8 tasks, nop 2 trials each vs oracle 1: a sign test over 8 tasks all one way, p = 2/256
    assert "exact sign test p = 0.00781" in better.stdout and "+100.0 pp" in better.stdout
    worse = tbench("compare", str(runs.oracle), str(runs.nop / "iterations" / "002"))
    assert verdict(worse.stdout) == "regressed" and "exact McNemar p = 0.00781" in worse.stdout
    same = tbench("compare", str(runs.oracle), str(runs.oracle_again), "--json")
    result = Comparison.model_validate_json(same.stdout)
    assert result.verdict == "no significant change" and result.tasks == 8 and result.tied_tasks == 8


def test_compare_does_not_mistake_noise_from_real_runs_for_a_change(tmp_path: Path) -> None:
    """12 tasks whose tests pass by a pattern over the trial count: two runs of the same process whose
    outcomes differ task by task. Reproducible, so the verdict is fixed; it must not claim a change."""
    counters = tmp_path / "counters"
    counters.mkdir()
    tasks = [counter_task(f"n{i:02d}", counters / f"n{i}", f"(n * 5 + {3 * i}) % 7 < 4") for i in range(12)]
    suite = write_suite(tmp_path / "noisy.json", "noisy", tasks)
    a = iterate(suite, tmp_path / "a", tmp_path, "oracle", 3, "noise-a")
    b = iterate(suite, tmp_path / "b", tmp_path, "oracle", 3, "noise-b")
    proc = tbench("compare", str(a), str(b), "--json")
    assert proc.returncode == 0, proc.stderr
    result = Comparison.model_validate_json(proc.stdout)
    assert result.improved_tasks + result.regressed_tasks >= 4  # the runs really differ, task by task
    assert result.verdict == "no significant change"


def test_compare_on_seeded_noise_and_a_seeded_real_change(tmp_path: Path) -> None:
    rates = [0.1, 0.3, 0.5, 0.7, 0.9] * 12  # 60 tasks
    a = noisy_run(tmp_path / "a", tmp_path, "a", rates, iterations=3, seed=1)
    b = noisy_run(tmp_path / "b", tmp_path, "b", rates, iterations=3, seed=2)
    better = noisy_run(tmp_path / "c", tmp_path, "c", [min(1.0, r + 0.3) for r in rates], iterations=3, seed=3)
    noise = tbench("compare", str(a), str(b))
    assert noise.returncode == 0, noise.stderr
    assert verdict(noise.stdout) == "no significant change"
    assert verdict(tbench("compare", str(a), str(better)).stdout) == "improved"
    assert verdict(tbench("compare", str(better), str(a)).stdout) == "regressed"
    # same inputs and seed: the same interval, to the digit
    assert (
        tbench("compare", str(a), str(b), "--seed", "5").stdout
        == tbench("compare", str(a), str(b), "--seed", "5").stdout
    )


def test_reports_say_at_the_top_when_a_run_is_worse_than_the_baseline(runs: Runs) -> None:
    md = (runs.nop / "report.md").read_text()  # written by the loop itself
    title, blank, banner = md.splitlines()[:3]
    assert title == "# tbench run `nop-run`" and blank == ""
    assert banner.startswith("> **⚠ Significantly worse than the baseline `oracle-run`, set with `tbench baseline set`")
    assert "## Statistics" in md and "| regressed task | baseline | this run | change |" in md
    assert "| task-0 | 1/1 | 0/2 | -100 pp |" in md
    html = (runs.nop / "report.html").read_text()
    assert 'id="verdict" class="banner bad"' in html and "Significantly worse than the baseline" in html
    assert not (runs.nop / "report-error.txt").exists()
    (runs.nop / "report.html").unlink()
    proc = tbench("report", str(runs.nop))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Significantly worse than the baseline oracle-run")
    assert (runs.nop / "report.html").is_file() and (runs.nop / "report.md").read_text().splitlines()[2] == banner
    oracle_md = (runs.oracle_again / "report.md").read_text()
    # run before any baseline was set: the seed's rule, the latest successful episode of another run
    assert oracle_md.splitlines()[2].startswith(
        "> No significant change against the baseline `oracle-run@1`, the latest successful episode `oracle-run-001`"
    )


def test_baseline_show_and_set(runs: Runs, tmp_path: Path) -> None:
    shown = tbench("baseline", "show", "--project-root", str(runs.root))
    assert shown.returncode == 0 and "Baseline: oracle-run (all finished iterations)" in shown.stdout
    stored = json.loads((runs.root / ".openagents/gym/baseline.json").read_text())
    assert stored["run_id"] == "oracle-run" and stored["run_dir"] == str(runs.oracle) and stored["iteration"] is None
    none = tbench("baseline", "show", "--project-root", str(tmp_path))
    assert none.returncode == 0 and none.stdout.startswith("No baseline set")
    one = tbench("baseline", "set", str(runs.nop), "--iteration", "2", "--project-root", str(tmp_path))
    assert one.returncode == 0 and "Baseline: nop-run (iteration 2;" in one.stdout
    bad = tbench("baseline", "set", str(runs.nop), "--iteration", "7", "--project-root", str(tmp_path))
    assert bad.returncode == 2 and bad.stderr.strip() == (
        "tbench: error: --iteration: iteration 7 is not finished in this run (finished: [1, 2])"
    )


def test_episodes_queries_the_store(runs: Runs) -> None:
    root = str(runs.root)
    oracle = tbench("episodes", "--project-root", root, "--model", "oracle")
    assert oracle.returncode == 0, oracle.stderr
    assert "oracle-run-001" in oracle.stdout and "oracle-run-2-001" in oracle.stdout and "nop-run" not in oracle.stdout
    assert oracle.stdout.strip().endswith("2 of 2 episode(s), newest first")
    as_json = json.loads(tbench("episodes", "--project-root", root, "--run-id", "nop-run", "--json").stdout)
    assert [e["id"] for e in as_json] == ["nop-run-002", "nop-run-001"] and as_json[0]["summary"]["passRate"] == 0.0
    fails = json.loads(tbench("episodes", "--project-root", root, "--status", "fail", "--json", "--limit", "0").stdout)
    assert len(fails) == 16 and {t["run_id"] for t in fails} == {"nop-run"}
    assert all((Path(t["trial_path"]) / "trial.log").is_file() for t in fails)
    one = tbench("episodes", "--project-root", root, "--trials", "--task", "task-3", "--limit", "1")
    assert "1 of 4 trial(s), newest first; --limit 0 shows all 4" in one.stdout
    future = tbench("episodes", "--project-root", root, "--since", "2999-01-01")
    assert future.returncode == 0 and future.stdout.strip() == "no episode matches"
    recent = tbench("episodes", "--project-root", root, "--since", "1d")
    assert "4 of 4 episode(s)" in recent.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("episodes", "--status", "great"), "--status: unknown outcome 'great'; use one of pass, fail, timeout, error"),
        (("episodes", "--since", "last tuesday"), "--since: cannot read 'last tuesday'"),
        (("episodes", "--limit", "-1"), "--limit: must be 0 (all) or more (got -1)"),
        (("compare", "{nop}", "{nop}", "--resamples", "10"), "--resamples: must be at least 100 (got 10)"),
        (("compare", "{root}", "{nop}"), "not a run folder, an iteration folder or a results.json"),
        (("report", "{root}/nothing"), "no such run"),
        (("baseline", "set", "{root}"), "no such run"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(runs: Runs, args: tuple[str, ...], message: str) -> None:
    filled = [a.format(root=runs.root, nop=runs.nop) for a in args]
    proc = tbench(*filled, *(["--project-root", str(runs.root)] if args[0] == "episodes" else []))
    assert proc.returncode == 2, proc.stdout
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("tbench: error: ") and message in proc.stderr


def test_episodes_without_a_store_says_where_it_looked(tmp_path: Path) -> None:
    proc = tbench("episodes", "--project-root", str(tmp_path))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"tbench: error: {tmp_path}/.openagents/gym: no episodes.jsonl here; pass the --project-root your runs used"
    )


def test_a_run_stopped_before_its_first_iteration_still_gets_both_reports(runs: Runs, tmp_path: Path) -> None:
    """The loop writes the reports at every stop, also before anything finished; nothing may fail there."""
    from tbench.models.run import RunConfig, RunState
    from tbench.report.run_report import write_reports
    from tbench.stats.summaries import summarize_run

    config = RunConfig.model_validate_json((runs.nop / "config.json").read_text())
    config = config.model_copy(update={"run_id": "early", "output": str(tmp_path)})
    (tmp_path / "config.json").write_text(config.model_dump_json())
    (tmp_path / "state.json").write_text(RunState.new(config).model_dump_json())
    summary = summarize_run(run_id="early", model="nop", status="interrupted", planned=2, iterations=[])
    write_reports(tmp_path, summary, [], [])
    assert not (tmp_path / "report-error.txt").exists()
    md = (tmp_path / "report.md").read_text()
    assert md.splitlines()[2] == (
        "> Baseline: `oracle-run`, set with `tbench baseline set`; no finished iteration to compare with it yet."
    )
    assert "No graded trial yet." in md
    assert 'class="banner none"' in (tmp_path / "report.html").read_text()
    proc = tbench("report", str(tmp_path))
    assert proc.returncode == 0 and "no finished iteration to compare with it yet" in proc.stdout


def test_a_run_that_passes_most_tasks_becomes_the_automatic_baseline(tmp_path: Path) -> None:
    """5 of 8 tasks passed (62.5%, above the seed's 0.5): the next run's report measures against it, found by
    `EpisodeStore.get_baseline` (the one rule the reports use)."""
    broken = [{**ok_task(f"hard-{i}"), "solution": "true"} for i in range(3)]  # the oracle fails these
    suite = write_suite(tmp_path / "mixed.json", "mixed", [ok_task(f"task-{i}") for i in range(5)] + broken)
    iterate(suite, tmp_path / "first", tmp_path, "oracle", 1, "typical")
    episodes = (tmp_path / ".openagents/gym/episodes.jsonl").read_text()
    assert json.loads(episodes)["status"] == "success" and json.loads(episodes)["summary"]["passRate"] == 0.625
    second = iterate(suite, tmp_path / "second", tmp_path, "oracle", 1, "again")
    header = (second / "report.md").read_text().splitlines()[2]
    assert header.startswith("> No significant change against the baseline `typical@1`"), header
    assert "the latest successful episode `typical-001`" in header
