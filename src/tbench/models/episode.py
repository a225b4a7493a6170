"""The seed's Episode: one per finished iteration, a line of `.openagents/gym/episodes.jsonl`. Field names are
the seed's (camelCase on disk), so the file matches what the TypeScript tool wrote."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict
from pydantic.alias_generators import to_camel

from tbench.models.common import Versioned
from tbench.models.results import Summary

EpisodeStatus = Literal["success", "partial", "failed", "no_graded_trials"]
"""success: pass rate > 0.5 (the seed's rule); partial: above 0 and at most 0.5; failed: nothing passed;
no_graded_trials: every trial ended ungraded (infra
or build errors), so the iteration says nothing about the agent — its passRate is null and it is never a
baseline."""


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")


class EpisodeSummary(_Camel):
    total: int
    passed: int
    failed: int
    timeout: int = 0
    error: int = 0
    infra_errors: int = 0
    build_errors: int = 0
    graded: int | None = None
    """None in episodes written before graded counts were kept."""
    pass_rate: float | None
    avg_turns: float = 0.0
    avg_duration_ms: float = 0.0
    total_tokens: int = 0
    total_cost_usd: float = 0.0

    @classmethod
    def of(cls, s: Summary) -> EpisodeSummary:
        return cls.model_validate(s.model_dump(include=set(cls.model_fields)))


class EpisodeModelSummary(_Camel):
    """One model's share of an iteration (`byModel` on disk)."""

    total: int
    passed: int
    infra_errors: int = 0
    build_errors: int = 0
    graded: int | None = None
    pass_rate: float | None
    total_tokens: int = 0
    total_cost_usd: float = 0.0


class Episode(_Camel):
    id: str
    run_id: str
    iteration: int
    model: str
    suite_name: str
    suite_version: str
    started_at: str
    finished_at: str
    status: EpisodeStatus
    summary: EpisodeSummary
    results_path: str
    by_model: dict[str, EpisodeModelSummary] = {}
    """Which model ran which share of the trials (several with --claude-validation-rate)."""
    tags: list[str] = []
    notes: str | None = None


def episode_status(pass_rate: float | None) -> EpisodeStatus:
    """The seed's `passRate > 0.5 ? "success" : "failed"`, with the failures split: `partial` when some graded
    trial passed, `failed` when none did; None (nothing graded): `no_graded_trials`."""
    if pass_rate is None:
        return "no_graded_trials"
    if pass_rate > 0.5:
        return "success"
    if pass_rate > 0:
        return "partial"
    return "failed"


class BaselineChoice(Versioned):
    """`baseline.json`: the run (or one iteration of it) that reports and `compare` measure against."""

    schema_version: int = 1
    run_id: str
    run_dir: str
    """Absolute."""
    iteration: int | None = None
    """None: every finished iteration of the run."""
    suite_name: str
    model: str
    set_at: str
