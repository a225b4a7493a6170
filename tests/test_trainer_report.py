"""The training report and its analyzer on training folders built here as `tbench train run` lays them out:
`DIR/trainer.json` plus one real run folder per profile (`DIR/arms/<id>/`: config.json, state.json,
iterations/NNN/results.json, trial folders with agent/trajectory.json). Planted failures, weak categories, tool
errors and flips must be found; report.md must say the verdict, matrix and racing rows; report.html is opened in
the real headless Chromium (no console error, nothing remote, every link resolving, no overflow at phone width)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote

import pytest

from tbench.errors import FailureMode
from tbench.models.common import Tokens
from tbench.models.profile import AgentProfile
from tbench.models.results import TrialResult, tally
from tbench.models.trajectory import Step, ToolCallRecord, ToolResultRecord, Trajectory
from tbench.report.run_report import regenerate
from tbench.stats.inference import compare, wilson
from tbench.trainer.analyzer import Analysis, analyze, load_analysis, write_analysis
from tbench.trainer.readout import load_result
from tbench.trainer.report import write_trainer_reports
from tbench.trainer.schema import (
    Budget,
    Candidate,
    EvolutionTree,
    PairVerdict,
    ProfileResult,
    RacingDecision,
    Spent,
    TrainerResult,
    TrainingPlan,
    Verdict,
    plan_text,
)
from tests.browser import Chromium, find_chromium
from tests.conftest import ROOT, ci_mandatory
from tests.synthetic import write_run

ARTIFACTS = ROOT / "test-artifacts"
SECRET = "sk-live-0123456789abcdefghij"
TS = "2026-11-20T10:00:00.000Z"


@dataclass
class Spec:
    """One planted trial: its outcome and what its trajectory did."""

    status: str = "pass"
    mode: FailureMode | None = None
    turns: int = 4
    tokens: int = 2_000
    cost: float = 0.002
    duration_ms: int = 20_000
    tools: list[tuple[str, str | None]] = field(default_factory=lambda: [("shell", None), ("write_file", None)])
    """(tool, error output or None) per call."""
    last: str = "Done: the tests pass."
    test_output: str = "1 passed"
    error: str | None = None


def ok(**kw: object) -> Spec:
    return Spec(**kw)  # type: ignore[arg-type]


def failed(**kw: object) -> Spec:
    base: dict[str, object] = {"status": "fail", "test_output": "FAILED test_out.py::test_value - assert 1 == 2",
                               "last": "I think it works now."}  # fmt: skip
    return Spec(**{**base, **kw})  # type: ignore[arg-type]


def timed_out(**kw: object) -> Spec:
    base: dict[str, object] = {"status": "timeout", "mode": FailureMode.AGENT_TIMEOUT, "turns": 30,
                               "error": "agent timed out after 60 s", "duration_ms": 60_000}  # fmt: skip
    return Spec(**{**base, **kw})  # type: ignore[arg-type]


def write_trajectory(path: Path, task: str, spec: Spec) -> None:
    steps = []
    for n, (tool, err) in enumerate(spec.tools):
        call = ToolCallRecord(id=f"c{n}", name=tool, arguments={"command": "make test"})
        res = ToolResultRecord(call_id=f"c{n}", name=tool, output=err or "ok", is_error=err is not None)
        steps.append(Step(index=n, started_at=TS, assistant_text=f"step {n}", tool_calls=[call], tool_results=[res]))
    steps.append(Step(index=len(steps), started_at=TS, assistant_text=spec.last))
    t = Trajectory(
        agent="ollama",
        model="m",
        task_id=task,
        instruction="do it",
        started_at=TS,
        stop_reason="completed",
        turns=spec.turns,
        tokens=Tokens(input=spec.tokens),
        steps=steps,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(t.model_dump_json())


def write_arm(
    folder: Path, pid: str, plan: dict[str, list[Spec]], categories: dict[str, str], *, rounds: int | None = None
) -> list[TrialResult]:
    """`DIR/arms/<pid>/`: a completed run whose round i holds each task's i-th planted trial, with trajectories,
    test output and its suite (carrying the categories) where config.json says it is."""
    run_dir = folder / "arms" / pid
    tasks = list(plan)
    n = rounds or max(len(v) for v in plan.values())
    made: dict[int, list[TrialResult]] = {}
    for i in range(1, n + 1):
        made[i] = []
        for task, specs in plan.items():
            if i > len(specs):
                continue
            s = specs[i - 1]
            made[i].append(
                TrialResult(
                    trial_id=f"{pid}-{i:03d}-{task}",
                    run_id=pid,
                    iteration=i,
                    task_id=task,
                    task_name=task,
                    model="m",
                    status=s.status,  # type: ignore[arg-type]
                    failure_mode=s.mode,
                    error_message=s.error,
                    duration_ms=s.duration_ms,
                    turns=s.turns,
                    tokens_used=s.tokens,
                    cost_usd=s.cost,
                    verification_output=s.test_output,
                    started_at=TS,
                    finished_at=TS,
                    trial_dir=f"iterations/{i:03d}/{task}",
                )
            )
    write_run(run_dir, folder, pid, made.__getitem__, iterations=n, tasks=tasks)
    suite = [{"id": t, "name": t, "description": "x", "category": categories.get(t, "uncategorized"),
              "verification": {"type": "custom", "script": "true"}} for t in tasks]  # fmt: skip
    (run_dir / "suite.json").write_text(json.dumps({"name": "planted", "version": "1", "tasks": suite}))
    for i, rs in made.items():
        for r in rs:
            spec = plan[r.task_id][i - 1]
            write_trajectory(run_dir / r.trial_dir / "agent" / "trajectory.json", r.task_id, spec)
            (run_dir / r.trial_dir / "verifier").mkdir(exist_ok=True)
            (run_dir / r.trial_dir / "verifier" / "test-output.txt").write_text(spec.test_output)
    return [r for rs in made.values() for r in rs]


def profile_result(pid: str, trials: list[TrialResult], *, stopped: int | None = None, why: str | None = None,
                   prompt: str | None = None) -> ProfileResult:  # fmt: skip
    t = tally(trials)
    per_task: dict[str, list[TrialResult]] = {}
    for r in trials:
        per_task.setdefault(r.task_id, []).append(r)
    rates = [x for x in (tally(rs).rate for rs in per_task.values()) if x is not None]
    iv = wilson(t.passed, t.graded)
    cost = round(sum(r.cost_usd or 0 for r in trials), 6)
    return ProfileResult(
        id=pid,
        profile=AgentProfile(id=pid, system_prompt_append=prompt),
        run_dir=f"arms/{pid}",
        rounds=max(r.iteration for r in trials),
        trials=t.trials,
        graded_trials=t.graded,
        passed=t.passed,
        pass_rate=sum(rates) / len(rates) if rates else None,
        interval=None if iv is None else (iv.low, iv.high),
        cost_usd=cost,
        cost_per_pass=cost / t.passed if t.passed else None,
        tokens=sum(r.tokens_used for r in trials),
        stopped_at_round=stopped,
        stop_reason=why,
    )


def pair(ref: str, a: list[TrialResult], pid: str, b: list[TrialResult]) -> PairVerdict:
    return PairVerdict(reference=ref, profile=pid, alpha=0.05, comparison=compare(a, b, label_a=ref, label_b=pid))


def verdict_of(v: PairVerdict, *, winner: bool) -> Verdict:
    c = v.comparison
    better = (c.label_b if (c.diff or 0) > 0 else c.label_a) if winner else None
    return Verdict(
        winner=better,
        reference=v.reference,
        against=c.label_b if better in (None, c.label_a) else c.label_a,
        diff=c.diff,
        interval=None if c.interval is None else (c.interval.low, c.interval.high),
        p_value=c.p_value,
        test=c.test,
        alpha=0.05,
        sentence=c.sentence(),
    )


def trainer_result(folder: Path, profiles: list[ProfileResult], tasks: list[str], **kw: object) -> TrainerResult:
    strategy = str(kw.pop("strategy", "ab"))
    plan = TrainingPlan(
        suite=str(folder / "suite.json"),
        profiles=[p.id for p in profiles][: 1 if strategy == "evolve" else None],
        strategy=strategy,  # type: ignore[arg-type]
        trials_per_task=3,
        budget=Budget(trials=200, usd=5.0),
    )
    spent = Spent(trials=sum(p.trials for p in profiles), usd=round(sum(p.cost_usd for p in profiles), 6))
    data: dict[str, object] = {
        "plan": plan,
        "plan_file": str(folder / "plan.toml"),
        "plan_toml": plan_text(plan),
        "project_root": str(folder),
        "model": "ollama:qwen2.5-coder:7b",
        "status": "completed",
        "started_at": TS,
        "updated_at": TS,
        "environment": "planted",
        "tasks": tasks,
        "profiles": profiles,
        "rounds_planned": 3,
        "rounds_done": 3,
        "spent": spent,
        "budget": plan.budget,
        **kw,
    }
    result = TrainerResult.model_validate(data)
    (folder / "trainer.json").write_text(result.model_dump_json(indent=2))
    return load_result(folder)  # read back as the CLI reads it


# ---------------------------------------------------------------------------------------------- worlds

CATS = {**{f"files-{x}": "files" for x in "abcd"}, **{f"net-{x}": "network" for x in "abcdef"}}
NET = [t for t in CATS if t.startswith("net")]
TASKS = list(CATS)


def leaky_curl() -> list[tuple[str, str | None]]:
    """A failing call whose output carries the API key (as `env` or a verbose curl prints it)."""
    out = f"curl: (7) Failed to connect to api.example.com port 443\n> Authorization: Bearer {SECRET}\n" + "x" * 900
    return [("shell", None), ("shell", out), ("shell", out)]


def ab_with_winner(folder: Path) -> tuple[TrainerResult, Analysis]:
    """baseline fails every network task (timeouts and curl errors); terse-v2 passes them: a clear winner."""
    base: dict[str, list[Spec]] = {}
    terse: dict[str, list[Spec]] = {}
    for t in TASKS:
        if t.startswith("net"):
            base[t] = [timed_out(tools=leaky_curl(), last=f"Still retrying curl with key {SECRET}")] * 2 + [
                failed(turns=28, tokens=40_000, tools=leaky_curl(), last="I could not reach the server.")
            ]
            terse[t] = [ok(turns=5, tokens=3_000, last="Used the local mirror; tests pass.")] * 3
        else:
            base[t] = [ok(), ok(), failed()] if t == "files-d" else [ok()] * 3
            terse[t] = [ok(turns=3, tokens=1_500)] * 3
    bt, tt = write_arm(folder, "baseline", base, CATS), write_arm(folder, "terse-v2", terse, CATS)
    v = pair("baseline", bt, "terse-v2", tt)
    assert v.comparison.verdict == "improved"  # six tasks better, none worse: the exact test can say so
    racing = [RacingDecision(round=r, profile="terse-v2", against="baseline", action="kept", diff=v.comparison.diff,
                             p_value=0.5 / r, alpha=0.0125 * r, reason="not worse at this look")
              for r in (1, 2)]  # fmt: skip
    result = trainer_result(
        folder,
        [profile_result("baseline", bt), profile_result("terse-v2", tt, prompt="Be terse.")],
        TASKS,
        comparisons=[v],
        verdict=verdict_of(v, winner=True),
        racing=racing,
    )
    return result, analyze(folder, result)


# ---------------------------------------------------------------------------------------------- analyzer


def test_analyzer_finds_planted_clusters_weak_category_tool_errors_and_flips(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    _, a = ab_with_winner(tmp_path)
    assert a.category_source == "suite"
    base = next(p for p in a.profiles if p.profile == "baseline")
    modes = {c.mode: (c.trials, c.tasks) for c in base.failures}
    assert modes == {"agent_timeout": (12, NET), "test_failure": (7, ["files-d", *NET])}
    assert base.failures[0].mode == "agent_timeout" and base.failures[0].example == "agent timed out after 60 s"
    assert "assert 1 == 2" in next(c.example for c in base.failures if c.mode == "test_failure")
    assert {c.category: (c.passed, c.graded) for c in base.categories} == {"files": (11, 12), "network": (0, 18)}
    assert [w.category for w in base.weak_categories] == ["network"]
    weak = base.weak_categories[0]
    assert (weak.passed, weak.graded, weak.others_passed, weak.others_graded) == (0, 18, 11, 12)
    # shell failed twice in each of the 18 network trials; its example is cut short and carries no key
    [shell] = base.tool_errors
    assert (shell.tool, shell.errors, shell.trials, shell.calls) == ("shell", 36, 18, 54 + 12)
    assert len(shell.example) <= 200 and "Failed to connect" in shell.example
    terse = next(p for p in a.profiles if p.profile == "terse-v2")
    assert terse.failures == [] and terse.weak_categories == [] and terse.tool_errors == []
    # every network task flipped; files-d (2/3 against 3/3) did not
    assert sorted(f.task_id for f in a.flips) == NET
    f = a.flips[0]
    assert (f.better.profile, f.worse.profile, f.category) == ("terse-v2", "baseline", "network")
    assert (f.better.turns, round(f.worse.turns, 2)) == (5, round((30 + 30 + 28) / 3, 2))
    assert f.worse.failure_modes == {"agent_timeout": 2, "test_failure": 1}
    assert f.worse.last_message == "I could not reach the server."  # the last failing trial's
    assert any(d.startswith("turns per trial: terse-v2 5 vs baseline") for d in f.differences)
    assert any("tool errors per trial" in d for d in f.differences)
    assert any("`shell` calls per trial" in d for d in f.differences)
    assert any("network" in x and "0/18" in x for x in a.findings)
    assert any("6 task(s) pass mostly with terse-v2 and fail mostly with baseline" in x for x in a.findings)
    dumped = a.model_dump_json()
    assert SECRET not in dumped and "[REDACTED]" in dumped
    assert load_analysis(tmp_path) is None
    write_analysis(tmp_path, a)
    assert load_analysis(tmp_path) == a  # DIR/analysis.json reads back


def test_analyzer_without_a_readable_suite_or_trajectories_falls_back(tmp_path: Path) -> None:
    result, _ = ab_with_winner(tmp_path)
    for suite in tmp_path.glob("arms/*/suite.json"):
        suite.unlink()
    for t in tmp_path.glob("arms/baseline/iterations/*/*/agent/trajectory.json"):
        t.write_text("{not json")
    a = analyze(tmp_path, result)
    assert a.category_source == "none"
    base = a.profiles[0]
    assert [c.category for c in base.categories] == ["uncategorized"] and base.weak_categories == []
    assert base.tool_errors == [] and base.trajectories_missing == 30
    assert len(a.flips) == 6  # flips come from results, not trajectories


# ---------------------------------------------------------------------------------------------- report.md


def test_report_md_of_an_ab_with_a_winner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    result, a = ab_with_winner(tmp_path)
    md_path, html_path = write_trainer_reports(tmp_path, result, a)
    md = md_path.read_text()
    assert html_path == tmp_path / "report.html" and md_path == tmp_path / "report.md"
    assert "**terse-v2 is better than baseline: +" in md
    assert "p = " in md and "if the profiles were equally good" in md
    assert "| net-a ⇄ | 0/3 | 3/3 |" in md and "| files-d | 2/3 | 3/3 |" in md
    assert "| 1 | `terse-v2` | `baseline` | kept |" in md and "| 2 | `terse-v2` | `baseline` | kept |" in md
    assert "| cost per pass |" in md and "| trials | 60 | 200 |" in md
    assert "| racing | ran every round | ran every round |" in md
    assert "### Flipped tasks" in md and "Weak categories" in md and "`network`: 0/18" in md
    assert SECRET not in md and SECRET not in html_path.read_text()


def test_report_md_says_no_difference_shown(tmp_path: Path) -> None:
    same = {t: [ok(), failed(), ok()] for t in TASKS}
    at, bt = write_arm(tmp_path, "baseline", same, CATS), write_arm(tmp_path, "twin", same, CATS)
    v = pair("baseline", at, "twin", bt)
    assert v.comparison.verdict == "no significant change"
    result = trainer_result(
        tmp_path, [profile_result("baseline", at), profile_result("twin", bt)], TASKS,
        comparisons=[v], verdict=verdict_of(v, winner=False),
    )  # fmt: skip
    md = write_trainer_reports(tmp_path, result, analyze(tmp_path, result))[0].read_text()
    assert "**No difference shown between baseline and twin: +0.0 pp" in md
    assert "which includes no difference at all" in md and "does not prove them equal" in md
    assert "⇄" not in md.split("## Racing")[0].split("## Tasks by profile")[1]  # no task flipped
    assert "None: racing made no decision." in md


def test_report_md_of_racing_drops(tmp_path: Path) -> None:
    good = {t: [ok()] * 3 for t in TASKS}
    bad = {t: [failed(), failed()] for t in TASKS}
    gt = write_arm(tmp_path, "baseline", good, CATS)
    mt = write_arm(tmp_path, "middling", {t: [ok(), failed(), ok()] for t in TASKS}, CATS)
    bt = write_arm(tmp_path, "sloppy", bad, CATS, rounds=2)
    v_bad, v_mid = pair("baseline", gt, "sloppy", bt), pair("baseline", gt, "middling", mt)
    racing = [
        RacingDecision(round=1, profile="sloppy", against="baseline", action="kept", diff=-1.0, p_value=0.0156,
                       alpha=0.0083, reason="worse, but not yet at this look's alpha"),
        RacingDecision(round=2, profile="sloppy", against="baseline", action="dropped", diff=-1.0, p_value=0.0156,
                       alpha=0.0167, reason="significantly worse: p below this look's alpha"),
        RacingDecision(round=2, profile="middling", against="baseline", action="kept", diff=-0.33, p_value=0.25,
                       alpha=0.0167, reason="not shown worse"),
    ]  # fmt: skip
    profiles = [
        profile_result("baseline", gt),
        profile_result("middling", mt),
        profile_result("sloppy", bt, stopped=2, why="dropped by racing: significantly worse than baseline"),
    ]
    result = trainer_result(tmp_path, profiles, TASKS, comparisons=[v_mid, v_bad], racing=racing,
                            verdict=verdict_of(v_mid, winner=True))  # fmt: skip
    md = write_trainer_reports(tmp_path, result, analyze(tmp_path, result))[0].read_text()
    assert "| 2 | `sloppy` | `baseline` | dropped | -100.0 pp | 0.0156 | 0.0167 | significantly worse" in md
    assert "| 1 | `sloppy` | `baseline` | kept |" in md
    assert "stopped after round 2: dropped by racing" in md
    assert "| rounds | 3 | 3 | 2 |" in md
    assert "| net-a ⇄ | 3/3 | 2/3 | 0/2 |" in md  # baseline against sloppy: a flip, marked
    assert "**baseline is better than middling" in md


def evolve_world(folder: Path) -> TrainerResult:
    hold = [f"hold-{n}" for n in range(1, 7)]
    cats = {t: "holdout" for t in hold}
    seed = write_arm(folder, "seed", {t: [failed(), failed(), ok()] for t in hold}, cats)
    best = write_arm(folder, "seed-g3", {t: [ok(), ok(), ok()] for t in hold}, cats)
    conf = pair("seed", seed, "seed-g3", best)
    assert conf.comparison.verdict == "improved"  # confirmed on the held-out tasks
    prof = AgentProfile(id="x")
    cands = [
        Candidate(id="seed", parent=None, profile=prof, accepted=True, reason="the seed profile", validation_rate=0.3),
        Candidate(id="seed-g1", parent="seed", profile=prof.model_copy(update={"system_prompt_append": "Run tests."}),
                  minibatch=["t1", "t2", "t3"], parent_score=1.0, score=2.0, accepted=True,
                  reason="better on the minibatch", validation_rate=0.55, trials=9),
        Candidate(id="seed-g2", parent="seed", profile=prof, minibatch=["t4", "t5", "t6"], parent_score=1.0,
                  score=1.0, accepted=False, reason="not better on the minibatch <tie>", trials=3),
        Candidate(id="seed-g3", parent="seed-g1", profile=prof, minibatch=["t1", "t4", "t6"], parent_score=2.0,
                  score=3.0, accepted=True, reason="better on the minibatch", validation_rate=0.8, trials=9),
    ]  # fmt: skip
    tree = EvolutionTree(seed_profile="seed", reflect_model="ollama:qwen3:8b", candidates=cands, best="seed-g3",
                         confirmation=conf, confirmed=True, proposed="seed-g3")  # fmt: skip
    return trainer_result(
        folder, [profile_result("seed", seed), profile_result("seed-g3", best)], ["t1", "t2", "t3", "t4", "t5", "t6"],
        strategy="evolve", evolution=tree, holdout_tasks=hold, verdict=verdict_of(conf, winner=True),
    )  # fmt: skip


def test_report_md_of_an_evolution_shows_the_tree(tmp_path: Path) -> None:
    result = evolve_world(tmp_path)
    md = write_trainer_reports(tmp_path, result, analyze(tmp_path, result))[0].read_text()
    tree = md.split("## Evolution")[1].split("## What the trials say")[0]
    lines = [ln for ln in tree.splitlines() if ln.lstrip().startswith("- `")]
    assert lines[0].startswith("- `seed`: accepted")
    assert lines[1].startswith("  - `seed-g1`: accepted — better on the minibatch; minibatch 1 → 2; validation 55.0%")
    assert lines[2].startswith("    - `seed-g3` **(best)** **(proposed)**: accepted")
    assert lines[3].startswith("  - `seed-g2`: rejected — not better on the minibatch &lt;tie>; minibatch 1 → 1")
    assert "Confirmed on the held-out tasks: seed-g3 against seed" in tree
    assert "Proposed for `tbench train promote`: `seed-g3`." in tree
    assert "| hold-1 ⇄ (held out) | 1/3 | 3/3 |" in md  # the seed fails it mostly, the winner passes it
    assert "**seed-g3 is better than seed" in md


# ---------------------------------------------------------------------------------------------- report.html


@pytest.fixture(scope="module")
def chromium() -> Iterator[str]:
    binary = find_chromium()
    if binary is None:
        if ci_mandatory():
            pytest.fail("chromium is missing under CI (scripts/test installs it: apt-get install -y chromium)")
        pytest.skip("no chromium (apt-get install -y chromium)")
    yield binary


def visible(browser: Chromium, selector: str) -> bool:
    return bool(browser.evaluate(f"(() => {{ const e = document.querySelector({selector!r}); "
                                 "return !!e && e.offsetWidth > 0 && e.offsetHeight > 0; })()"))  # fmt: skip


def overflow(browser: Chromium, width: int) -> int:
    """How far the page is wider than a `width`-pixel viewport (0: it fits)."""
    browser.send("Emulation.setDeviceMetricsOverride",
                 {"width": width, "height": 800, "deviceScaleFactor": 1, "mobile": True})  # fmt: skip
    return int(browser.evaluate("document.documentElement.scrollWidth - window.innerWidth"))


def test_report_html_of_an_ab_in_chromium(chromium: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    result, a = ab_with_winner(tmp_path)
    for p in result.profiles:
        regenerate(tmp_path / p.run_dir)  # each arm's own report.html and trial pages, as the runner writes them
    html = write_trainer_reports(tmp_path, result, a)[1]
    with Chromium(chromium) as browser:
        log = browser.open(html)
        assert log.console_errors == [] and log.exceptions == [] and log.remote_requests == []
        assert visible(browser, "#verdict") and visible(browser, "table.matrix")
        verdict = browser.evaluate("document.querySelector('#verdict').innerText")
        assert verdict.startswith("terse-v2 is better than baseline: +")
        rows = browser.evaluate("Array.from(document.querySelectorAll('table.matrix tbody tr')).map(r => r.innerText)")
        assert len(rows) == 10 and sum("⇄" in r for r in rows) == 6
        assert browser.evaluate("document.querySelectorAll('table.matrix td.c.fail').length") == 6
        assert browser.evaluate("document.querySelectorAll('table.racing tbody tr').length") == 2
        assert browser.evaluate("document.querySelectorAll('#findings li').length") >= 4
        hrefs = [h for h in browser.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => "
                                             "a.getAttribute('href'))")]  # fmt: skip
        local = [h.split("#")[0] for h in hrefs if not h.startswith("#")]
        assert "arms/baseline/report.html" in local and "arms/terse-v2/report.html" in local
        assert any(h.endswith("/trajectory.html") for h in local)
        assert [h for h in local if not (tmp_path / unquote(h)).exists()] == []
        anchors = [h[1:] for h in hrefs if h.startswith("#")]
        assert all(browser.evaluate(f"!!document.getElementById({x!r})") for x in anchors), anchors
        assert overflow(browser, 1280) <= 0
        assert overflow(browser, 360) <= 0  # phone width: wide tables scroll inside their box, the page does not
        assert visible(browser, "#verdict") and visible(browser, "table.matrix")
        shot = browser.screenshot(ARTIFACTS / "trainer-report-ab.png")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert SECRET not in html.read_text()


def test_report_html_of_an_evolution_in_chromium(chromium: str, tmp_path: Path) -> None:
    result = evolve_world(tmp_path)
    (tmp_path / "arms" / "seed" / "report.html").write_text("<!doctype html><title>arm</title>")
    html = write_trainer_reports(tmp_path, result, analyze(tmp_path, result))[1]
    text = html.read_text()
    assert "&lt;tie&gt;" in text and "<tie>" not in text  # escaped
    with Chromium(chromium) as browser:
        log = browser.open(html)
        assert log.console_errors == [] and log.exceptions == [] and log.remote_requests == []
        assert visible(browser, "#verdict") and visible(browser, "ul.tree")
        assert browser.evaluate("document.querySelectorAll('ul.tree li').length") == 4
        nested = browser.evaluate("document.querySelector('ul.tree > li > ul > li > ul > li code').innerText")
        assert nested == "seed-g3"  # seed → seed-g1 → seed-g3
        assert browser.evaluate("document.querySelectorAll('ul.tree li.rejected').length") == 1
        assert "Confirmed on the held-out tasks" in browser.evaluate(
            "document.querySelector('#confirmation').innerText"
        )
        assert "not written yet" in browser.evaluate("document.querySelector('table.side').innerText")
        assert overflow(browser, 360) <= 0
        browser.screenshot(ARTIFACTS / "trainer-report-evolve.png")


def test_report_of_a_run_just_started_says_no_verdict_yet(tmp_path: Path) -> None:
    """Before any round finished: no arm has results, no verdict, no analysis — both reports still render."""
    empty = ProfileResult(id="baseline", profile=AgentProfile(id="baseline"), run_dir="arms/baseline", rounds=0,
                          trials=0, graded_trials=0, passed=0, pass_rate=None)  # fmt: skip
    other = empty.model_copy(update={"id": "terse-v2", "run_dir": "arms/terse-v2"})
    result = trainer_result(tmp_path, [empty, other], TASKS, status="running", rounds_done=0)
    md_path, html_path = write_trainer_reports(tmp_path, result, None)
    md = md_path.read_text()
    assert "**No verdict yet (running; 0 of 3 round(s) run).**" in md
    assert "No trial has finished yet." in md and "| pass rate | no graded trial | no graded trial |" in md
    assert "What the trials say" not in md
    html = html_path.read_text()
    assert 'class="banner pending"' in html and 'id="analysis"' not in html
