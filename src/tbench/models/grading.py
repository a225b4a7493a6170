"""The grading policy: for each failure mode, whether the trial is graded (counts toward pass rates), whether
it is retried and how often, and how reports show it. Every count in tbench (results.json, summary.json,
delta.json, episodes, reports, the learning proof, the retry loop) reads this one table.

A trial is graded when the agent ran and the task's own tests could speak to what it did — a failure the agent
caused (timeout, crash, unparseable test output after its work) counts against it. A trial whose environment
could not be built, or whose engine or model server failed, says nothing about the agent: it is shown and
counted apart, retried where the cause may pass, and never graded. Where no trial was graded, a pass rate is
`None` (JSON null), never 0.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from tbench.errors import FailureMode

Outcome = Literal["pass", "fail", "timeout", "error"]


class GradingRule(BaseModel):
    model_config = ConfigDict(frozen=True)

    graded: bool
    """Counts toward pass rates (as a failure, unless the tests passed)."""
    retried: bool
    """Retried by policy, up to the run's `max_retries`."""
    max_retries: int | None = None
    """A cap below the run's `max_retries` (None: the run's own)."""
    shown_as: str
    """How reports name it."""


#: Keyed by failure mode; `None` is a trial that ran to the tests' verdict.
GRADING_POLICY: dict[FailureMode | None, GradingRule] = {
    None: GradingRule(graded=True, retried=False, shown_as="pass / fail"),
    FailureMode.AGENT_TIMEOUT: GradingRule(graded=True, retried=False, shown_as="timeout"),
    FailureMode.AGENT_ERROR: GradingRule(graded=True, retried=False, shown_as="agent error"),
    FailureMode.TEST_TIMEOUT: GradingRule(graded=True, retried=False, shown_as="test timeout"),
    FailureMode.PARSE_ERROR: GradingRule(graded=True, retried=False, shown_as="verifier parse error"),
    # A build that failed on the network may pass a minute later; one that fails for good costs one more build.
    FailureMode.BUILD_ERROR: GradingRule(
        graded=False, retried=True, max_retries=1, shown_as="build error (not graded)"
    ),
    FailureMode.INFRA_ERROR: GradingRule(graded=False, retried=True, shown_as="infra error (not graded)"),
}

NO_GRADED_TRIAL = "no graded trial"
"""What reports print where a pass rate is None."""


def rule(mode: FailureMode | None) -> GradingRule:
    return GRADING_POLICY[mode]


def is_graded(mode: FailureMode | None) -> bool:
    return GRADING_POLICY[mode].graded


def retries_allowed(mode: FailureMode | None, run_max_retries: int) -> int:
    """How many times a trial that ended in `mode` may be retried in a run allowing `run_max_retries`."""
    r = GRADING_POLICY[mode]
    if not r.retried:
        return 0
    return run_max_retries if r.max_retries is None else min(r.max_retries, run_max_retries)


def rate_text(rate: float | None, digits: int = 1) -> str:
    """A pass rate as reports print it: `62.5%`, or `no graded trial`."""
    return NO_GRADED_TRIAL if rate is None else f"{rate * 100:.{digits}f}%"
