"""Names from task files never escape the results folder; writes are all-or-nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tbench.fsutil import atomic_write_text, child_path, safe_name


@pytest.mark.parametrize("name", ["../../etc/passwd", "/abs/path", "..", ".", "a/../../b", "名前", "", "x\0y"])
def test_child_path_stays_inside(tmp_path: Path, name: str) -> None:
    path = child_path(tmp_path, name)
    assert path.resolve().is_relative_to(tmp_path.resolve())
    assert path.parent == tmp_path and "/" not in safe_name(name) and safe_name(name) not in ("", ".", "..")


def test_atomic_write_replaces_whole_file(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new")
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]  # no temp files left
