"""Trial results and what is counted from them: `result.json` (one trial), `iterations/NNN/results.json`
(one iteration) and the graded tally every pass rate in tbench is computed by."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

from pydantic import BaseModel, Field, model_validator

from tbench.errors import FailureMode
from tbench.models.common import Tokens, Versioned, utcnow
from tbench.models.grading import Outcome, is_graded

CONTROL_SUFFIX = "--control"
"""A held-out task's no-memory twin (the learning proof's control arm) has the task's id plus this suffix."""


def base_id(task_id: str) -> str:
    return task_id.removesuffix(CONTROL_SUFFIX)


def is_control(task_id: str) -> bool:
    return task_id.endswith(CONTROL_SUFFIX)


class PhaseTimings(BaseModel):
    """Milliseconds spent in each phase; `None` where the phase did not run."""

    environment_ms: int | None = None
    setup_ms: int | None = None
    agent_ms: int | None = None
    verifier_ms: int | None = None
    teardown_ms: int | None = None


class ImageRecord(BaseModel):
    """An image a trial ran in, so its result can be reproduced ("which image was that?")."""

    name: str
    """The tag or reference the container was started from."""
    id: str
    """The image's content digest (`sha256:…`): the engine's image id."""
    repo_digest: str | None = None
    """The registry digest (`name@sha256:…`), where the image came from or went to a registry."""
    base: str | None = None
    """The Dockerfile's final `FROM` image (None for a prebuilt image)."""
    base_id: str | None = None
    """That base image's content digest, as the engine had it when the image was built or reused."""


class TrialImages(BaseModel):
    """The main container's image and, for multi-container tasks, each service's."""

    main: ImageRecord
    services: dict[str, ImageRecord] = Field(default_factory=dict)


class TrialResult(Versioned):
    """One task run once: the seed's `TerminalBenchResult` fields plus what a trial really needs."""

    schema_version: int = 1
    trial_id: str
    run_id: str
    iteration: int
    task_id: str
    task_name: str
    model: str
    status: Outcome
    """Decided by the task's tests only (error: the tests could not give a verdict)."""
    failure_mode: FailureMode | None = None
    error_message: str | None = None
    rewards: dict[str, float] | None = None
    parser_results: dict[str, str] | None = None
    duration_ms: int
    turns: int = 0
    tokens_used: int = 0
    tokens: Tokens = Field(default_factory=Tokens)
    cost_usd: float | None = None
    timings: PhaseTimings = Field(default_factory=PhaseTimings)
    verification_output: str = ""
    """Tail of the test output; the whole of it is in the trial folder."""
    attempts: int = 1
    """Times the trial was started (an interrupted start counts)."""
    retries: int = 0
    """Earlier attempts that ended ungraded (infra or build error) and were retried."""
    started_at: str
    finished_at: str
    trial_dir: str
    """Relative to the run folder."""
    lesson_ids: list[str] = Field(default_factory=list)
    """The Archivist's lessons this trial was shown (credited by its outcome)."""
    images: TrialImages | None = None
    """The images the trial ran in (container tasks; None on a host workspace or before the build)."""
    model_server_down: bool = False
    """An infra error of the agent's model server (refused, 5xx, stalled): counted by the circuit breaker and
    re-run once the server answers, without spending a retry."""

    @property
    def is_graded(self) -> bool:
        """Counts toward pass rates (the grading policy, models/grading.py)."""
        return is_graded(self.failure_mode)

    @property
    def is_infra(self) -> bool:
        """Engine, network or model-server trouble (one of the ungraded modes)."""
        return self.failure_mode == FailureMode.INFRA_ERROR

    @property
    def passed(self) -> bool:
        return self.status == "pass" and self.is_graded


def error_result(
    *,
    mode: FailureMode,
    message: str,
    trial_id: str,
    run_id: str,
    iteration: int,
    task_id: str,
    task_name: str,
    model: str,
    trial_dir: str,
    duration_ms: int = 0,
    started_at: str | None = None,
) -> TrialResult:
    """The one constructor of a result for a trial that never reached a verdict (a dead worker, a lost node)."""
    now = utcnow()
    return TrialResult(
        trial_id=trial_id,
        run_id=run_id,
        iteration=iteration,
        task_id=task_id,
        task_name=task_name,
        model=model,
        status="error",
        failure_mode=mode,
        error_message=message,
        duration_ms=duration_ms,
        started_at=started_at or now,
        finished_at=now,
        trial_dir=trial_dir,
    )


class _Counted(Protocol):
    @property
    def status(self) -> Outcome: ...
    @property
    def failure_mode(self) -> FailureMode | None: ...


class Tally(BaseModel):
    """The one graded-rate rule: counts of a group of trials, and its pass rate over graded trials only."""

    trials: int = 0
    graded: int = 0
    passed: int = 0
    infra_errors: int = 0
    build_errors: int = 0
    rate: float | None = None
    """passed / graded; None when nothing was graded."""

    @property
    def ungraded(self) -> int:
        return self.trials - self.graded

    @property
    def flaky(self) -> bool:
        """The one flaky rule: passed in some graded trials and failed in others."""
        return 0 < self.passed < self.graded


def tally(results: Iterable[_Counted]) -> Tally:
    t = Tally()
    for r in results:
        t.trials += 1
        if is_graded(r.failure_mode):
            t.graded += 1
            t.passed += r.status == "pass"
        elif r.failure_mode == FailureMode.BUILD_ERROR:
            t.build_errors += 1
        else:
            t.infra_errors += 1
    t.rate = round(t.passed / t.graded, 6) if t.graded else None
    return t


class ModelSummary(BaseModel):
    """One model's share of the trials: runs that mix models (`--claude-validation-rate`) compare them here."""

    total: int = 0
    passed: int = 0
    infra_errors: int = 0
    build_errors: int = 0
    graded: int = 0
    pass_rate: float | None = None
    """Over graded trials, as for the whole; None when none was graded."""
    total_tokens: int = 0
    total_cost_usd: float = 0.0


def summarize_by_model(results: list[TrialResult]) -> dict[str, ModelSummary]:
    groups: dict[str, list[TrialResult]] = {}
    for r in results:
        groups.setdefault(r.model, []).append(r)
    out: dict[str, ModelSummary] = {}
    for model in sorted(groups):
        rs = groups[model]
        t = tally(rs)
        out[model] = ModelSummary(
            total=t.trials,
            passed=t.passed,
            infra_errors=t.infra_errors,
            build_errors=t.build_errors,
            graded=t.graded,
            pass_rate=t.rate,
            total_tokens=sum(r.tokens_used for r in rs),
            total_cost_usd=round(sum(r.cost_usd or 0.0 for r in rs), 6),
        )
    return out


class Summary(BaseModel):
    """Counts over the agent's own trials that ran (tasks not run never count; the control arm never does).
    `pass_rate` is over graded trials; None when nothing was graded."""

    total: int = 0
    passed: int = 0
    failed: int = 0
    timeout: int = 0
    error: int = 0
    infra_errors: int = 0
    build_errors: int = 0
    graded: int = 0
    retries: int = 0
    pass_rate: float | None = None
    avg_duration_ms: float = 0.0
    avg_turns: float = 0.0
    total_tokens: int = 0
    total_cost_usd: float = 0.0
    by_model: dict[str, ModelSummary] = Field(default_factory=dict)
    """Which model ran how many of these trials, and how each did."""

    @classmethod
    def of(cls, results: list[TrialResult]) -> Summary:
        n = len(results)
        if n == 0:
            return cls()
        count = {s: sum(1 for r in results if r.status == s) for s in ("pass", "fail", "timeout", "error")}
        t = tally(results)
        return cls(
            total=n,
            passed=t.passed,
            failed=count["fail"],
            timeout=count["timeout"],
            error=count["error"],
            infra_errors=t.infra_errors,
            build_errors=t.build_errors,
            graded=t.graded,
            retries=sum(r.retries for r in results),
            pass_rate=t.rate,
            avg_duration_ms=round(sum(r.duration_ms for r in results) / n, 1),
            avg_turns=round(sum(r.turns for r in results) / n, 3),
            total_tokens=sum(r.tokens_used for r in results),
            total_cost_usd=round(sum(r.cost_usd or 0.0 for r in results), 6),
            by_model=summarize_by_model(results),
        )


class TerminalBenchResults(Versioned):
    """`iterations/NNN/results.json`. `results` and `summary` are the agent's own trials; the no-memory control
    arm of the learning proof is kept apart in `control_results` and enters no headline figure."""

    schema_version: int = 2
    suite_name: str
    suite_version: str
    model: str
    run_id: str
    iteration: int
    timestamp: str
    started_at: str
    finished_at: str
    results: list[TrialResult]
    summary: Summary
    control_results: list[TrialResult] = Field(default_factory=list)

    @model_validator(mode="after")
    def _control_apart(self) -> TerminalBenchResults:
        """Files of schema 1 kept control trials in `results`: move them where they belong."""
        if any(is_control(r.task_id) for r in self.results):
            self.control_results = [*self.control_results, *(r for r in self.results if is_control(r.task_id))]
            self.results = [r for r in self.results if not is_control(r.task_id)]
        return self
