"""Small file-system helpers: atomic writes and names that cannot escape a folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
from pathlib import Path

from pydantic import BaseModel

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_UMASK = os.umask(0o022)
os.umask(_UMASK)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file in the same folder, fsync, rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; results are as readable as any file the user writes
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)


def atomic_write_model(path: Path, model: BaseModel, *, by_alias: bool = False) -> None:
    atomic_write_text(path, model.model_dump_json(indent=2, by_alias=by_alias) + "\n")


def safe_name(name: str, *, max_len: int = 80) -> str:
    """A folder name made from untrusted text: no separators, no dot-dot, never empty."""
    slug = _SAFE.sub("_", name).strip("._-")[:max_len]
    if not slug:
        slug = "task_" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return slug


def child_path(root: Path, *parts: str) -> Path:
    """`root/parts…` with each part made safe, and proved to stay under `root`."""
    path = root.joinpath(*(safe_name(p) for p in parts))
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"path {path} escapes {root}")
    return path


def tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]
