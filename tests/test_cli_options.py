"""`iterate` and `overnight` share one declaration of their options; the core names fields, the CLI shows flags."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import pytest
import typer.main

from tbench.cli.app import OVERNIGHT_OPTIONS, SHARED_OPTIONS, app, error_line, flag_for
from tbench.errors import UserError

from .conftest import EXAMPLES, run_cli


def _params(name: str) -> dict[str, dict[str, Any]]:
    group = typer.main.get_command(app)
    command = group.commands[name]  # type: ignore[attr-defined]
    return {
        p.name: {
            "opts": p.opts,
            "secondary_opts": p.secondary_opts,
            "default": p.default,
            "help": getattr(p, "help", None),
            "is_flag": getattr(p, "is_flag", None),
            "multiple": getattr(p, "multiple", None),
        }
        for p in command.params
    }


def test_iterate_and_overnight_share_every_shared_option() -> None:
    iterate, overnight = _params("iterate"), _params("overnight")
    shared = [p.name for p in SHARED_OPTIONS] + ["debug"]
    assert list(iterate) == shared
    for name in shared:
        assert overnight[name] == iterate[name], name
    assert iterate["timeout"]["opts"] == ["--timeout"]
    assert iterate["learn"]["opts"] == ["--learn"] and iterate["learn"]["secondary_opts"] == []
    assert iterate["debug"]["secondary_opts"] == ["--no-debug"]


def test_overnight_adds_its_own_options() -> None:
    iterate, overnight = _params("iterate"), _params("overnight")
    extras = [p.name for p in OVERNIGHT_OPTIONS]
    assert extras == [
        "workers",
        "executor",
        "ray_address",
        "max_retries",
        "retry_backoff",
        "stop_after_iteration",
        "memory_reserve_mb",
        "task_memory_mb",
        "min_free_disk_mb",
        "heartbeat_timeout",
        "stuck_grace",
    ]
    assert list(overnight) == [p.name for p in SHARED_OPTIONS] + extras + ["debug"]
    assert not set(extras) & set(iterate)
    assert overnight["retry_backoff"]["opts"] == ["--retry-backoff"]
    assert overnight["memory_reserve_mb"]["default"] == 2048


@pytest.mark.parametrize(
    ("field", "flag"),
    [
        ("iterations", "--iterations"),
        ("max_turns", "--max-turns"),
        ("timeout_sec", "--timeout"),
        ("retry_backoff_sec", "--retry-backoff"),
        ("holdout_fraction", "--holdout"),
        ("lesson_id", "LESSON_ID"),
        ("OLLAMA_HOST", "OLLAMA_HOST"),
        ("--since", "--since"),
    ],
)
def test_flag_for(field: str, flag: str) -> None:
    assert flag_for(field) == flag


def test_user_error_keeps_its_parts_and_renders_with_labels() -> None:
    exc = UserError("must be at least 1 (got 0)", field="iterations")
    assert (exc.message, exc.path, exc.field) == ("must be at least 1 (got 0)", None, "iterations")
    assert str(exc) == "iterations: must be at least 1 (got 0)"
    assert error_line(exc) == "--iterations: must be at least 1 (got 0)"
    # a field of an error with a path is a place in that file, not an option...
    in_file = UserError("Extra inputs are not permitted", path="suite.json", field="timeout")
    assert error_line(in_file) == "suite.json: timeout: Extra inputs are not permitted"
    # ...unless that path is the option's value
    resumed = UserError("no such state file", path="/no/state.json", field="resume")
    assert error_line(resumed) == "/no/state.json: --resume: no such state file"
    copy = pickle.loads(pickle.dumps(exc))
    assert (type(copy), copy.message, copy.field, str(copy)) == (UserError, exc.message, exc.field, str(exc))


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--iterations", "0"], "tbench: error: --iterations: must be at least 1 (got 0)"),
        (["--timeout", "-1"], "tbench: error: --timeout: must be positive (got -1)"),
        (["--model", "oracle", "--max-turns", "0"], "tbench: error: --max-turns: must be at least 1 (got 0)"),
        (["--holdout", "1.5"], "tbench: error: --holdout: must be at least 0 and below 1 (got 1.5)"),
    ],
)
def test_core_field_errors_print_the_flag(tmp_path: Path, args: list[str], line: str) -> None:
    out = tmp_path / "x"
    proc = run_cli("--suite", str(EXAMPLES / "local-suite.json"), *args, "--output", str(out), timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.strip().splitlines() == [line]
    assert not out.exists()


def test_resume_error_with_a_path_prints_the_flag(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc = run_cli("--resume", str(state), timeout=120)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert proc.stderr.strip() == (
        f"tbench: error: {state}: --resume: no such run: no state.json here; give a run folder tbench wrote "
        "(or its state.json)"
    )
