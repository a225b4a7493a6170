"""report.html in a real headless Chromium (Debian's `chromium`, installed by scripts/test): it loads from
disk with no console error and no network request, its plotly charts render, every link it holds resolves,
and a screenshot lands in test-artifacts/. Mandatory under CI."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote

import pytest

from tbench.models.results import TrialResult
from tests.browser import Chromium, find_chromium
from tests.conftest import ROOT, ci_mandatory
from tests.reportfixtures import counter_task, iterate, ok_task, tbench, write_suite
from tests.synthetic import FAIL, INFRA, PASS, TIMEOUT, trial, write_run

ARTIFACTS = ROOT / "test-artifacts"
LINKS = "Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))"


@pytest.fixture(scope="module")
def chromium() -> Iterator[str]:
    binary = find_chromium()
    if binary is None:
        if ci_mandatory():
            pytest.fail("chromium is missing under CI (scripts/test installs it: apt-get install -y chromium)")
        pytest.skip("no chromium (apt-get install -y chromium)")
    yield binary


def count(browser: Chromium, selector: str) -> int:
    return int(browser.evaluate(f"document.querySelectorAll({selector!r}).length"))


def assert_links_resolve(browser: Chromium, run_dir: Path) -> list[str]:
    hrefs = [h for h in browser.evaluate(LINKS) if not h.startswith("#")]
    missing = [h for h in hrefs if not (run_dir / unquote(h)).exists()]
    assert hrefs and not missing, missing[:5]
    return hrefs


def test_report_of_a_real_run_renders_in_chromium(chromium: str, tmp_path: Path) -> None:
    counter = tmp_path / "alternating.count"
    suite = write_suite(
        tmp_path / "mixed.json",
        "mixed-outcomes",
        [
            ok_task("always"),
            {"id": "never", "name": "never", "solution": "true", "verification": {"type": "custom", "script": "false"}},
            counter_task("alternating", counter, "n % 2 == 0"),
            {**ok_task("slow"), "timeout_seconds": 1, "solution": "sleep 5; echo ok > out.txt"},
            {**ok_task("bad-setup"), "setup": ["exit 3"]},
        ],
    )
    run = iterate(suite, tmp_path / "run", tmp_path, "oracle", 3, "html-run")
    trajectory = run / "iterations" / "003" / "always" / "agent" / "trajectory.json"
    trajectory.write_text('{"steps": []}\n')
    proc = tbench("report", str(run))
    assert proc.returncode == 0, proc.stderr

    with Chromium(chromium) as browser:
        log = browser.open(run / "report.html")
        browser.wait_for("document.querySelectorAll('#chart-durations .main-svg').length > 0")
        assert log.console_errors == [] and log.exceptions == []
        assert log.remote_requests == []  # self-contained: nothing but the file itself
        # charts drawn by plotly after its script ran: the band and the line of the trend, the duration boxes
        assert count(browser, "#chart-trend .scatterlayer .trace") == 2
        assert count(browser, "#chart-trend .scatterlayer .trace path.js-line") >= 1
        assert count(browser, "#chart-durations .boxlayer .trace") == 1
        assert count(browser, "#chart-cost") == 0  # the oracle reports no tokens or cost
        grid = {c: count(browser, f"table.grid a.m.{c}") for c in ("pass", "fail", "timeout", "error", "infra")}
        # bad-setup never reached the agent: a build error, shown apart and never graded (models/grading.py)
        assert grid == {"pass": 5, "fail": 4, "timeout": 3, "error": 0, "infra": 3}
        flaky = browser.evaluate("document.querySelector('#flaky table').innerText")
        assert "alternating" in flaky and "always" not in flaky
        hrefs = assert_links_resolve(browser, run)
        cells = browser.evaluate(
            "Array.from(document.querySelectorAll('table.grid a.m')).map(a => a.getAttribute('href'))"
        )
        pages = sorted(p.relative_to(run).as_posix() for p in run.glob("iterations/*/*/trajectory.html"))
        assert len(pages) == 15 and sorted(cells) == pages  # every cell opens its trial's own page
        assert "iterations/003/trials.html" in hrefs
        shot = browser.screenshot(ARTIFACTS / "report-local-run.png")
        # an iteration's table of trials: a page of its own, every link in it resolving from the run folder
        log = browser.open(run / "iterations" / "002" / "trials.html")
        assert log.console_errors == [] and log.exceptions == [] and log.remote_requests == []
        links = browser.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        assert links and all(Path(unquote(h.removeprefix("file://"))).exists() for h in links), links
        assert any(h.endswith("iterations/002/slow/trial.log") for h in links)
        # a trial's page: the verdict, the test output's tail and the turns
        log = browser.open(run / "iterations" / "002" / "never" / "trajectory.html")
        assert log.console_errors == [] and log.exceptions == [] and log.remote_requests == []
        assert "fail" in browser.evaluate("document.querySelector('#verdict').innerText")
        assert count(browser, ".turn") >= 1
        links = browser.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        assert all(Path(unquote(h.removeprefix("file://")).split("#")[0]).exists() for h in links), links
        # the trajectory that was broken after the fact: the page says so instead of failing
        (run / "iterations" / "003" / "always" / "trajectory.html").unlink()
        assert tbench("report", str(run)).returncode == 0
        browser.open(run / "iterations" / "003" / "always" / "trajectory.html")
        assert "could not be read" in browser.evaluate("document.querySelector('#trajectory').innerText")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000


def mixed_plan(run_id: str, tasks: list[str], models: list[str], seed: int) -> dict[int, list[TrialResult]]:
    rng = random.Random(seed)
    plan: dict[int, list[TrialResult]] = {}
    for i in range(1, 9):
        plan[i] = []
        for n, task in enumerate(tasks):
            for m, model in enumerate(models):
                roll = rng.random()
                outcome = INFRA if roll < 0.03 else TIMEOUT if roll < 0.08 else PASS if roll < 0.3 + 0.04 * n else FAIL
                tokens = rng.randint(1_000, 50_000)
                plan[i].append(
                    trial(run_id, i, task, outcome, model=model, tokens=tokens, cost=tokens * (1 + m) * 1e-6)
                )
    return plan


def test_report_of_a_mixed_model_run_splits_by_model(chromium: str, tmp_path: Path) -> None:
    tasks = [f"task-{i:02d}" for i in range(16)]
    base_plan = mixed_plan("base", tasks, ["claude-code"], 1)
    write_run(tmp_path / "base", tmp_path, "base", base_plan.__getitem__, iterations=8, tasks=tasks)
    assert tbench("baseline", "set", str(tmp_path / "base"), "--project-root", str(tmp_path)).returncode == 0
    plan = mixed_plan("mixed", tasks, ["claude-code", "ollama:qwen3:8b"], 2)
    run = write_run(tmp_path / "mixed", tmp_path, "mixed", plan.__getitem__, iterations=8, tasks=tasks, model="mixed")
    proc = tbench("report", str(run))
    assert proc.returncode == 0, proc.stderr
    md = (run / "report.md").read_text()
    assert "### By model" in md and "| claude-code | 128 |" in md and "| ollama:qwen3:8b | 128 |" in md

    with Chromium(chromium) as browser:
        log = browser.open(run / "report.html")
        browser.wait_for("document.querySelectorAll('#chart-cost .main-svg').length > 0")
        assert log.console_errors == [] and log.exceptions == [] and log.remote_requests == []
        assert count(browser, "#chart-trend .scatterlayer .trace") == 4  # band and line per model
        assert count(browser, "#chart-cost .barlayer .trace") == 2
        assert count(browser, "#chart-durations .boxlayer .trace") == 2
        assert count(browser, "#models table tbody tr") == 2
        assert count(browser, "table.grid tbody tr") == 32  # a row per task and model
        infra = sum(r.failure_mode == "infra_error" for rs in plan.values() for r in rs)
        assert infra > 0 and count(browser, "table.grid a.m.infra") == infra
        assert "baseline" in browser.evaluate("document.querySelector('#verdict').innerText")
        assert_links_resolve(browser, run)
        browser.screenshot(ARTIFACTS / "report-mixed-models.png")
    assert (ARTIFACTS / "report-mixed-models.png").stat().st_size > 20_000


def test_trajectory_page_of_a_tool_loop_trial_shows_turns_folded_calls_tokens_and_time(
    chromium: str, tmp_path: Path
) -> None:
    from tests.conftest import EXAMPLES, run_cli
    from tests.fake_ollama import FakeOllama, Reply, scripted

    with FakeOllama() as fake:
        fake.add_model(
            "pager",
            scripted(
                Reply(content="Looking first.", tool_calls=[("shell", {"command": "echo <b>not-html</b>; ls"})]),
                Reply(tool_calls=[("shell", {"command": "printf 'Hello, world!\\n' > hello.txt"})], eval_count=33),
            ),
        )
        out = tmp_path / "run"
        proc = run_cli(
            "--suite", str(EXAMPLES / "local-suite.json"), "--tasks", "hello-file", "--model", "ollama:pager",
            "--ollama-endpoint", fake.url, "--iterations", "1", "--output", str(out), "--project-root", str(tmp_path),
        )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    page = out / "iterations" / "001" / "hello-file" / "trajectory.html"
    assert 'href="iterations/001/hello-file/trajectory.html"' in (out / "report.html").read_text()
    with Chromium(chromium) as browser:
        log = browser.open(page)
        assert log.console_errors == [] and log.exceptions == [] and log.remote_requests == []
        assert count(browser, ".turn") == 3  # two tool turns and the final answer
        assert count(browser, "details.call") == 2 and count(browser, "details.call[open]") == 0  # folded
        text = browser.evaluate("document.querySelector('#trajectory').innerText")
        assert "Looking first." in text and "tokens in 100 / out 33" in text and "Turn 1" in text
        assert count(browser, "#trajectory b") == 2  # only the page's own bold text: tool output is escaped
        output = browser.evaluate("document.querySelector('details.call pre.out').textContent")
        assert "<b>not-html</b>" in output and "[time left:" in output
        assert "pass" in browser.evaluate("document.querySelector('#verdict').innerText")
        browser.screenshot(ARTIFACTS / "trajectory-page.png")
