"""Task, Suite and Result schemas (the seed's `terminal-bench.ts`).

Every task format (Terminal-Bench 2 / Harbor, Terminal-Bench 1, the seed's JSON suite) is loaded into one
`Task`, so nothing downstream knows which format a task came from.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tbench.errors import INFRA_MODES, FailureMode

Difficulty = Literal["easy", "medium", "hard", "expert", "unknown"]
TaskFormat = Literal["tb2", "tb1", "seed"]
Outcome = Literal["pass", "fail", "timeout", "error"]

DEFAULT_AGENT_TIMEOUT_SEC = 3600.0
DEFAULT_TEST_TIMEOUT_SEC = 600.0


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class EnvironmentSpec(_Frozen):
    """Where a task runs: a container built from `build_dir` (or `docker_image`), or a host workspace."""

    kind: Literal["docker", "local"]
    build_dir: Path | None = None
    """Docker build context; its content keys the image cache."""
    dockerfile: str = "Dockerfile"
    docker_image: str | None = None
    """Prebuilt image; when it cannot be found or pulled, the task is built from `build_dir`."""
    build_timeout_sec: float = 600.0
    cpus: float | None = None
    memory_mb: int | None = None
    network_mode: Literal["public", "no-network"] = "public"
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    """Working directory for agent and tests; `None` takes the image's WORKDIR."""


class FileCopy(_Frozen):
    """A host file or folder copied into the environment at `dest`."""

    src: Path
    dest: str


class SeedVerification(_Frozen):
    """The seed's verification block: `test` and `custom` pass on exit 0, `output` compares stdout."""

    type: Literal["test", "output", "custom"]
    command: str | None = None
    expected: str | None = None
    script: str | None = None


class VerifierSpec(_Frozen):
    """How the task's own tests decide the verdict."""

    kind: Literal["reward_file", "pytest", "seed"]
    timeout_sec: float = DEFAULT_TEST_TIMEOUT_SEC
    copies: list[FileCopy] = Field(default_factory=list)
    """Copied in only after the agent has finished, so the agent never sees the tests."""
    command: str = ""
    env: dict[str, str] = Field(default_factory=dict)
    seed: SeedVerification | None = None


class SolutionSpec(_Frozen):
    """The task's reference solution, run by the `oracle` agent."""

    copies: list[FileCopy] = Field(default_factory=list)
    command: str


class Task(_Frozen):
    id: str
    """Unique within the suite and safe as a folder name."""
    name: str
    instruction: str
    format: TaskFormat
    source: str
    """File or folder the task was loaded from, for error messages and reports."""
    difficulty: Difficulty = "unknown"
    category: str = "uncategorized"
    tags: list[str] = Field(default_factory=list)
    agent_timeout_sec: float | None = None
    """`None`: the run's `--timeout` applies."""
    max_turns: int | None = None
    environment: EnvironmentSpec
    verifier: VerifierSpec
    solution: SolutionSpec | None = None
    setup: list[str] = Field(default_factory=list)
    """Shell commands run in the environment before the agent (seed JSON tasks)."""
    hints: list[str] = Field(default_factory=list)
    files_to_modify: list[str] = Field(default_factory=list)
    repository: str | None = None
    branch: str | None = None


class Suite(_Frozen):
    name: str
    version: str = "0"
    description: str = ""
    source: str
    tasks: list[Task]


# ---------------------------------------------------------------- results


class Tokens(BaseModel):
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write


class PhaseTimings(BaseModel):
    """Milliseconds spent in each phase; `None` where the phase did not run."""

    environment_ms: int | None = None
    setup_ms: int | None = None
    agent_ms: int | None = None
    verifier_ms: int | None = None
    teardown_ms: int | None = None


class TrialResult(BaseModel):
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
    """Earlier attempts that ended in an infra error and were retried."""
    started_at: str
    finished_at: str
    trial_dir: str
    """Relative to the run folder."""
    lesson_ids: list[str] = Field(default_factory=list)
    """The Archivist's lessons this trial was shown (credited by its outcome)."""

    @property
    def is_infra(self) -> bool:
        """An infra failure says nothing about the agent: left out of every pass rate, retried by policy."""
        return self.failure_mode in INFRA_MODES


def _graded_rate(results: list[TrialResult]) -> tuple[int, int, float]:
    """(passed, infra errors, pass rate over graded trials) — the one pass-rate rule for every summary."""
    infra = sum(1 for r in results if r.is_infra)
    passed = sum(1 for r in results if r.status == "pass")
    graded = len(results) - infra
    return passed, infra, round(passed / graded, 6) if graded else 0.0


class ModelSummary(BaseModel):
    """One model's share of the trials: runs that mix models (`--claude-validation-rate`) compare them here."""

    total: int = 0
    passed: int = 0
    infra_errors: int = 0
    pass_rate: float = 0.0
    """Over graded trials (infra errors excluded), as for the whole."""
    total_tokens: int = 0
    total_cost_usd: float = 0.0


def summarize_by_model(results: list[TrialResult]) -> dict[str, ModelSummary]:
    groups: dict[str, list[TrialResult]] = {}
    for r in results:
        groups.setdefault(r.model, []).append(r)
    out: dict[str, ModelSummary] = {}
    for model in sorted(groups):
        rs = groups[model]
        passed, infra, rate = _graded_rate(rs)
        out[model] = ModelSummary(
            total=len(rs),
            passed=passed,
            infra_errors=infra,
            pass_rate=rate,
            total_tokens=sum(r.tokens_used for r in rs),
            total_cost_usd=round(sum(r.cost_usd or 0.0 for r in rs), 6),
        )
    return out


class Summary(BaseModel):
    """Counts over trials that ran; tasks not run never count. Infra errors are excluded from pass_rate."""

    total: int = 0
    passed: int = 0
    failed: int = 0
    timeout: int = 0
    error: int = 0
    infra_errors: int = 0
    retries: int = 0
    pass_rate: float = 0.0
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
        passed, infra, rate = _graded_rate(results)
        return cls(
            total=n,
            passed=passed,
            failed=count["fail"],
            timeout=count["timeout"],
            error=count["error"],
            infra_errors=infra,
            retries=sum(r.retries for r in results),
            pass_rate=rate,
            avg_duration_ms=round(sum(r.duration_ms for r in results) / n, 1),
            avg_turns=round(sum(r.turns for r in results) / n, 3),
            total_tokens=sum(r.tokens_used for r in results),
            total_cost_usd=round(sum(r.cost_usd or 0.0 for r in results), 6),
            by_model=summarize_by_model(results),
        )


class TerminalBenchResults(BaseModel):
    """`iterations/NNN/results.json`."""

    schema_version: int = 1
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
