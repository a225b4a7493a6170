"""Small file-system helpers: atomic writes and names that cannot escape a folder."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import unicodedata
from pathlib import Path

from pydantic import BaseModel

_SAFE = re.compile(r"[^\w.-]+")
"""Anything but (Unicode) letters, digits, '_', '.' and '-'."""
_NOT_ASCII_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
"""Run ids: ASCII, as they name containers and images directly."""
MAX_ID_LEN = 128
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


def id_problem(value: str) -> str | None:
    """Why `value` (NFC-normalised) cannot be a task id, or None when it can: Unicode letters and digits, '.',
    '_' and '-', not starting with '.' or '-', at most 128 characters — so it is safe as a folder name."""
    if not value:
        return "it is empty"
    if any(unicodedata.category(c).startswith("C") for c in value):
        return "it contains a control character"
    if "/" in value or "\\" in value:
        return "it contains a path separator"
    if value[0] in ".-":
        return f"it starts with {value[0]!r}"
    if len(value) > MAX_ID_LEN:
        return f"it is longer than {MAX_ID_LEN} characters"
    bad = sorted({c for c in value if not (c.isalnum() or c in "._-")})
    if bad:
        return f"it contains {' '.join(repr(c) for c in bad)}"
    return None


def nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def safe_name(name: str, *, max_len: int = 80) -> str:
    """A folder name made from untrusted text: no separators, no dot-dot, never empty. A valid task id
    (Unicode letters and digits included) is kept as it is."""
    slug = _SAFE.sub("_", nfc(name)).strip("._-")[:max_len]
    if not slug:
        slug = "task_" + hashlib.sha256(name.encode()).hexdigest()[:12]
    return slug


def ascii_slug(name: str, *, max_len: int = 60) -> str:
    """An ASCII name for what an engine names (image tags, container names, labels): the text with accents
    dropped and anything else replaced, plus a hash of the original whenever that changed it, so two ids
    that differ only outside ASCII never share a name. ASCII-safe text is kept as it is."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    slug = _NOT_ASCII_SAFE.sub("_", plain).strip("._-")
    if slug == name and len(slug) <= max_len:
        return slug
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{slug[: max_len - 9].rstrip('._-')}-{digest}" if slug else f"id-{digest}"


def child_path(root: Path, *parts: str) -> Path:
    """`root/parts…` with each part made safe, and proved to stay under `root`."""
    path = root.joinpath(*(safe_name(p) for p in parts))
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"path {path} escapes {root}")
    return path


def tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]
