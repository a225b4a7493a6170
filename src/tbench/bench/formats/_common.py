"""Shared by the format loaders: parse a file, turn pydantic errors into one clear line."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from tbench.errors import UserError
from tbench.fsutil import id_problem, nfc

M = TypeVar("M", bound=BaseModel)


def read_structured(path: Path) -> Any:
    """Parse TOML / YAML / JSON by suffix; a syntax error becomes a UserError naming the file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read file ({exc})", path=path) from None
    try:
        if path.suffix == ".toml":
            return tomllib.loads(text)
        if path.suffix in (".yaml", ".yml"):
            return yaml.safe_load(text)
        return json.loads(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as exc:
        detail = str(exc).replace("\n", " ")
        raise UserError(f"not valid {path.suffix.lstrip('.').upper()} ({detail}); fix the syntax", path=path) from None


def validate(model: type[M], data: Any, path: Path, *, prefix: str = "") -> M:
    """Validate `data`; on failure name the first bad field, its value and what is expected."""
    if not isinstance(data, dict):
        raise UserError(f"expected a table/object at the top level, got {type(data).__name__}", path=path)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        field = f"{prefix}{loc}"
        value = err.get("input")
        shown = "" if err["type"] == "missing" else f" (got {value!r:.80})"
        more = f"; {exc.error_count() - 1} more problem(s)" if exc.error_count() > 1 else ""
        raise UserError(f"{err['msg']}{shown}{more}; fix this field", path=path, field=field) from None


def check_task_id(task_id: str, path: Path, field: str = "id") -> str:
    """The id NFC-normalised (so `ü` typed two ways is one id), or a UserError saying why it cannot be one."""
    task_id = nfc(task_id)
    problem = id_problem(task_id)
    if problem is not None:
        raise UserError(
            f"task id {task_id!r} is not allowed: {problem}; use letters, digits, '.', '_' or '-' "
            "(no path separators or control characters, not starting with '.')",
            path=path,
            field=field,
        )
    return task_id


def read_instruction(path: Path) -> str:
    if not path.is_file():
        raise UserError("missing instruction file; every task needs one", path=path)
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if not text:
        raise UserError("instruction is empty; write the task for the agent here", path=path)
    return text


def parse_memory_mb(value: int | float | str | None, path: Path, field: str) -> int | None:
    """`2048`, `"2G"`, `"512M"`, `"512Mi"` → MB."""
    if value is None:
        return None
    if isinstance(value, int | float):
        return int(value)
    text = value.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}
    try:
        if text and text[-1] in units:
            return max(1, int(float(text[:-1]) * units[text[-1]]))
        return int(float(text))
    except ValueError:
        raise UserError(f'cannot read memory size {value!r}; write e.g. 2048 or "2G"', path=path, field=field) from None
