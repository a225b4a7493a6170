"""Errors a user can act on, and the failure taxonomy every trial is classified by.

A `UserError` is bad input (a file, a flag): the CLI prints its one line and exits 2.
A `TrialError` carries a `FailureMode`, so the loop can classify without parsing messages.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import Any


class UserError(Exception):
    """Bad input the user must fix: printed as one line, exit code 2.

    `field` names what was wrong: an option or config field (`iterations`, `timeout_sec`), or a location inside
    `path` (`tasks.0.id`). The core never names CLI flags; the CLI renders the line with its own labels
    (`render(label)`), and `str()` shows the field as it is.
    """

    def __init__(self, message: str, *, path: Path | str | None = None, field: str | None = None) -> None:
        self.message = message
        self.path = path
        self.field = field
        super().__init__(self.render())

    def render(self, label: Callable[[str], str] | None = None) -> str:
        """The one line: `[path: ][field: ]message`, the field shown through `label` when given."""
        field = label(self.field) if label is not None and self.field else self.field
        where = ""
        if self.path is not None:
            where = f"{self.path}"
            if field:
                where += f": {field}"
            where += ": "
        elif field:
            where = f"{field}: "
        return f"{where}{self.message}"

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickle (worker processes) with message, path and field kept apart."""
        return (_rebuild_user_error, (type(self), self.message, self.path, self.field))


def _rebuild_user_error(cls: type[UserError], message: str, path: Path | str | None, field: str | None) -> UserError:
    return cls(message, path=path, field=field)


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


class ModelServerError(InfraError):
    """The agent's model server failed (refused, 5xx, stalled) after the transport's own retries. The run's
    circuit breaker counts these: the trial is re-run once the server answers, never charged to anyone."""


class AgentError(TrialError):
    mode = FailureMode.AGENT_ERROR


class VerifierParseError(TrialError):
    mode = FailureMode.PARSE_ERROR
