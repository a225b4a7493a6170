"""Errors a user can act on, and the failure taxonomy every trial is classified by.

A `UserError` is bad input (a file, a flag): the CLI prints its one line and exits 2.
A `TrialError` carries a `FailureMode`, so the loop can classify without parsing messages.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path


class UserError(Exception):
    """Bad input the user must fix: printed as one line, exit code 2."""

    def __init__(self, message: str, *, path: Path | str | None = None, field: str | None = None) -> None:
        where = ""
        if path is not None:
            where = f"{path}"
            if field:
                where += f": {field}"
            where += ": "
        elif field:
            where = f"{field}: "
        super().__init__(f"{where}{message}")


class FailureMode(StrEnum):
    """Why a trial did not simply run to a verdict. Kept apart from the outcome on purpose."""

    AGENT_TIMEOUT = "agent_timeout"
    TEST_TIMEOUT = "test_timeout"
    BUILD_ERROR = "build_error"
    AGENT_ERROR = "agent_error"
    INFRA_ERROR = "infra_error"
    PARSE_ERROR = "parse_error"


class TrialError(Exception):
    """An error inside one trial; `mode` says how it is counted and whether it may be retried."""

    mode: FailureMode = FailureMode.INFRA_ERROR

    def __init__(self, message: str, mode: FailureMode | None = None) -> None:
        super().__init__(message)
        if mode is not None:
            self.mode = mode


class BuildError(TrialError):
    mode = FailureMode.BUILD_ERROR


class InfraError(TrialError):
    """Engine, network or model-server trouble: says nothing about the agent; retryable."""

    mode = FailureMode.INFRA_ERROR


class AgentError(TrialError):
    mode = FailureMode.AGENT_ERROR


class VerifierParseError(TrialError):
    mode = FailureMode.PARSE_ERROR


#: Failure modes that say nothing about the agent: excluded from pass rates, retried by policy.
INFRA_MODES = frozenset({FailureMode.INFRA_ERROR})
