"""`--help` as a new user reads it: at 80 columns and in a pipe, every option name whole, every default shown."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from typing import Any

import pytest
import typer.main

from tbench.cli.app import app


def _commands() -> list[tuple[list[str], Any]]:
    """Every command of `tbench` (groups walked), with the words that reach it."""
    root = typer.main.get_command(app)
    out: list[tuple[list[str], Any]] = []

    def walk(words: list[str], cmd: Any) -> None:
        out.append((words, cmd))
        if hasattr(cmd, "commands"):  # a group (typer's own click, duck-typed)
            for name, sub in sorted(cmd.commands.items()):
                walk([*words, name], sub)

    walk([], root)
    return out


COMMANDS = _commands()


def _help(words: list[str]) -> str:
    """`tbench WORDS --help` in a real process, stdout a pipe, an 80-column terminal."""
    env = {**os.environ, "COLUMNS": "80", "TERM": "xterm-256color"}
    env.pop("NO_COLOR", None)
    proc = subprocess.run(
        [sys.executable, "-c", "from tbench.cli.app import main; main()", *words, "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _blocks(text: str) -> dict[str, str]:
    """Option name → its help block (the lines from the option up to the next one), whitespace collapsed."""
    blocks: dict[str, str] = {}
    current: str | None = None
    for line in text.splitlines():
        m = re.match(r"^  (--[a-z0-9-]+)", line)
        if m:
            current = m.group(1)
            blocks[current] = line
        elif current is not None and line.startswith("   "):
            blocks[current] += " " + line.strip()
        else:
            current = None
    return {k: " ".join(v.split()) for k, v in blocks.items()}


@pytest.mark.parametrize(("words", "cmd"), COMMANDS, ids=[" ".join(w) or "tbench" for w, _ in COMMANDS])
def test_help_shows_every_option_whole_with_its_default(words: list[str], cmd: Any) -> None:
    text = _help(words)
    assert "…" not in text, text
    assert all(len(line) <= 80 for line in text.splitlines()), text
    assert "\x1b[" not in text  # a pipe gets no colour codes
    blocks = _blocks(text)
    for param in cmd.params:
        if param.param_type_name != "option" or param.hidden:
            continue
        name = max(param.opts, key=len)
        assert name in blocks, f"{' '.join(words)}: {name} missing or cut in:\n{text}"
        block = blocks[name]
        if param.is_flag and not param.secondary_opts:
            continue  # a plain switch: off unless given
        assert "[default:" in block or "[required" in block, f"{' '.join(words)} {name}: no default shown: {block}"
        assert " ;" not in block and "[]" not in block, block
