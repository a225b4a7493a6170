"""Small shared parts of the file schemas: timestamps, token counts, and the schema-version check every
versioned file gets on read."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from tbench.errors import UserError


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Tokens(BaseModel):
    input: int = 0
    output: int = 0
    cache_read: int = 0
    cache_write: int = 0

    @property
    def total(self) -> int:
        return self.input + self.output + self.cache_read + self.cache_write


class NewerSchemaError(UserError):
    """A file written by a newer tbench: one clear line, not a validation dump."""


class Versioned(BaseModel):
    """A file with a `schema_version`: the field's default is the version this tbench writes and the newest it
    reads; older versions are read as they are (every change so far only added or widened fields)."""

    schema_version: int = 1

    @model_validator(mode="before")
    @classmethod
    def _not_newer(cls, data: Any) -> Any:
        if isinstance(data, dict):
            found = data.get("schema_version", 1)
            current = cls.model_fields["schema_version"].default
            if isinstance(found, int) and found > current:
                raise NewerSchemaError(
                    f"written by a newer tbench ({cls.__name__} schema_version {found}; this tbench reads up to "
                    f"{current}); upgrade tbench to read it"
                )
        return data


M = TypeVar("M", bound=BaseModel)


def read_model(path: Path, cls: type[M], what: str) -> M:
    """Read and validate one file; anything wrong is a one-line UserError naming the file (and field)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read ({exc.strerror})", path=path) from None
    try:
        return cls.model_validate_json(data)
    except NewerSchemaError as exc:
        raise UserError(str(exc), path=path) from None
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise UserError(f"not {what} ({where + ': ' if where else ''}{err['msg']})", path=path) from None
