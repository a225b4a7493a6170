"""The rules that turn test output into a verdict and a verdict into an outcome."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tbench.bench.trial import AgentResult, decide
from tbench.bench.verifier import Verdict, _no_verdict, is_pass, parse_pytest, read_rewards
from tbench.errors import BuildError, FailureMode, InfraError
from tbench.models.results import Summary, TrialResult

PYTEST_OUT = """\
============================= test session starts ==============================
collected 5 items

../tests/test_outputs.py ..sxF                                              [100%]

=========================== short test summary info ============================
PASSED ../tests/test_outputs.py::test_a
PASSED ../tests/test_outputs.py::test_b
SKIPPED [1] ../tests/test_outputs.py:9: no network
XFAIL ../tests/test_outputs.py::test_known - flaky upstream
FAILED ../tests/test_outputs.py::test_c - AssertionError: assert 1 == 2
==================== 1 failed, 2 passed, 1 skipped, 1 xfailed in 0.05s ====================
"""


def test_pytest_parser_counts_skip_and_xfail_as_passed() -> None:
    parsed = parse_pytest(PYTEST_OUT)
    assert parsed == {
        "../tests/test_outputs.py::test_a": "passed",
        "../tests/test_outputs.py::test_b": "passed",
        "[1]": "passed",
        "../tests/test_outputs.py::test_known": "passed",
        "../tests/test_outputs.py::test_c": "failed",
    }
    assert parse_pytest("collected 0 items\nno summary here") is None
    all_ok = PYTEST_OUT.replace("FAILED ../tests/test_outputs.py::test_c - AssertionError: assert 1 == 2\n", "")
    assert set((parse_pytest(all_ok) or {}).values()) == {"passed"}


def test_xpass_and_error_fail() -> None:
    out = "=== short test summary info ===\nXPASS t.py::a\nERROR t.py::b - boom\n=== 2 in 0.1s ==="
    assert parse_pytest(out) == {"t.py::a": "failed", "t.py::b": "failed"}


def test_reward_json_wins_over_txt(tmp_path: Path) -> None:
    (tmp_path / "reward.txt").write_text("0\n")
    (tmp_path / "reward.json").write_text(json.dumps({"correctness": 1, "style": 0.5}))
    rewards = read_rewards(tmp_path)
    assert rewards == {"correctness": 1.0, "style": 0.5}
    assert isinstance(rewards, dict) and not is_pass(rewards)
    assert is_pass({"reward": 1.0, "style": 0.0})  # the `reward` key decides when present
    assert is_pass({"a": 1, "b": 1})


@pytest.mark.parametrize(
    ("name", "content", "needle"),
    [
        ("reward.txt", "", "empty"),
        ("reward.txt", "yes", "not a number"),
        ("reward.txt", "nan", "reward.txt"),
        ("reward.json", "{", "not JSON"),
        ("reward.json", "[]", "non-empty object"),
        ("reward.json", '{"reward": true}', "not a finite number"),
    ],
)
def test_bad_reward_files(tmp_path: Path, name: str, content: str, needle: str) -> None:
    (tmp_path / name).write_text(content)
    result = read_rewards(tmp_path)
    assert isinstance(result, str) and needle in result


def test_missing_reward_is_parse_error_unless_setup_visibly_failed(tmp_path: Path) -> None:
    assert read_rewards(tmp_path) == "the tests wrote no /logs/verifier/reward.json or reward.txt"
    assert _no_verdict("Traceback ...", "no reward").failure_mode is FailureMode.PARSE_ERROR
    offline = "curl: (6) Could not resolve host: astral.sh\n"
    assert _no_verdict(offline, "no reward").failure_mode is FailureMode.INFRA_ERROR


PASS, FAIL = Verdict(passed=True), Verdict(passed=False)


@pytest.mark.parametrize(
    ("agent", "verdict", "error", "expected"),
    [
        (AgentResult(), PASS, None, ("pass", None)),
        (AgentResult(), FAIL, None, ("fail", None)),
        (AgentResult(timed_out=True), FAIL, None, ("timeout", FailureMode.AGENT_TIMEOUT)),
        (AgentResult(timed_out=True), PASS, None, ("pass", FailureMode.AGENT_TIMEOUT)),
        (AgentResult(failure_mode=FailureMode.AGENT_ERROR), FAIL, None, ("fail", FailureMode.AGENT_ERROR)),
        (AgentResult(failure_mode=FailureMode.INFRA_ERROR), None, None, ("error", FailureMode.INFRA_ERROR)),
        (AgentResult(), Verdict(timed_out=True), None, ("timeout", FailureMode.TEST_TIMEOUT)),
        (AgentResult(), Verdict(failure_mode=FailureMode.PARSE_ERROR), None, ("error", FailureMode.PARSE_ERROR)),
        (None, None, BuildError("bad Dockerfile"), ("error", FailureMode.BUILD_ERROR)),
        (None, None, InfraError("engine gone"), ("error", FailureMode.INFRA_ERROR)),
    ],
)
def test_outcome_rule(
    agent: AgentResult | None,
    verdict: Verdict | None,
    error: Exception | None,
    expected: tuple[str, FailureMode | None],
) -> None:
    status, mode, _ = decide(agent, verdict, error)  # type: ignore[arg-type]
    assert (status, mode) == expected


def _result(task: str, status: str, mode: FailureMode | None = None, ms: int = 1000) -> TrialResult:
    return TrialResult(
        trial_id=task,
        run_id="r",
        iteration=1,
        task_id=task,
        task_name=task,
        model="m",
        status=status,
        failure_mode=mode,
        duration_ms=ms,
        turns=2,
        tokens_used=10,  # type: ignore[arg-type]
        started_at="t",
        finished_at="t",
        trial_dir=task,
    )


def test_summary_excludes_infra_errors_from_pass_rate() -> None:
    results = [
        _result("a", "pass"),
        _result("b", "fail"),
        _result("c", "error", FailureMode.INFRA_ERROR),
        _result("d", "timeout", FailureMode.AGENT_TIMEOUT),
    ]
    s = Summary.of(results)
    assert (s.total, s.passed, s.failed, s.timeout, s.error, s.infra_errors) == (4, 1, 1, 1, 1, 1)
    assert s.pass_rate == pytest.approx(1 / 3)
    assert s.total_tokens == 40 and s.avg_turns == 2
    assert Summary.of([]).pass_rate is None  # nothing graded: no rate, never 0%
