"""Runs the task's own tests after the agent, and turns what they leave behind into a verdict.

TB2: `/logs/verifier/reward.json` (wins) or `reward.txt`; the test script's exit code is not the verdict.
TB1: pytest output parsed the way `tb` does. Seed JSON: exit code, or stdout compared with `expected`.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from tbench.bench.environments.base import Environment
from tbench.errors import FailureMode
from tbench.fsutil import tail
from tbench.models.layout import TEST_OUTPUT_FILE, VERIFIER_DIR
from tbench.models.task import Task

_PYTEST_LINE = re.compile(r"^(PASSED|FAILED|SKIPPED|XFAIL|XPASS|ERROR)\s+(\S+)")
_SUMMARY = re.compile(r"^=+ short test summary info =+\s*$")
_PASSING = {"PASSED", "SKIPPED", "XFAIL"}
# The verifier's own set-up could not fetch its tools: the verdict says nothing about the agent.
_SETUP_FAILED = re.compile(
    r"Could not resolve host|Temporary failure in name resolution|Failed to fetch|Network is unreachable|"
    r"self[- ]signed certificate|No matching distribution found|Failed to download|Connection refused|"
    r"curl: \(\d+\)|command not found: (uv|uvx|pytest)",
    re.IGNORECASE,
)


@dataclass
class Verdict:
    passed: bool | None = None
    """None: the tests gave no verdict (see failure_mode)."""
    rewards: dict[str, float] | None = None
    parser_results: dict[str, str] | None = None
    output: str = ""
    timed_out: bool = False
    failure_mode: FailureMode | None = None
    error: str | None = None


def parse_pytest(output: str) -> dict[str, str] | None:
    """Test name → "passed" | "failed" from pytest's short summary (needs `-rA`); None if there is none."""
    lines = output.splitlines()
    starts = [i for i, line in enumerate(lines) if _SUMMARY.match(line.strip())]
    if not starts:
        return None
    results: dict[str, str] = {}
    for line in lines[starts[-1] + 1 :]:
        if line.startswith("="):
            break
        m = _PYTEST_LINE.match(line.strip())
        if m:
            results[m.group(2)] = "passed" if m.group(1) in _PASSING else "failed"
    return results or None


def read_rewards(folder: Path) -> dict[str, float] | str:
    """Rewards from reward.json (a dict of finite numbers) or reward.txt (one number); a str is an error."""
    rjson, rtxt = folder / "reward.json", folder / "reward.txt"
    if rjson.is_file():
        try:
            data = json.loads(rjson.read_text())
        except json.JSONDecodeError as exc:
            return f"reward.json is not JSON: {exc}"
        if not isinstance(data, dict) or not data:
            return "reward.json must be a non-empty object of numbers"
        rewards: dict[str, float] = {}
        for key, value in data.items():
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                return f"reward.json: {key!r} is not a finite number ({value!r})"
            rewards[str(key)] = float(value)
        return rewards
    if rtxt.is_file():
        text = rtxt.read_text().strip()
        if not text:
            return "reward.txt is empty"
        try:
            value = float(text)
        except ValueError:
            return f"reward.txt holds {text[:40]!r}, not a number"
        return {"reward": value} if math.isfinite(value) else f"reward.txt holds {text!r}"
    return "the tests wrote no /logs/verifier/reward.json or reward.txt"


def is_pass(rewards: dict[str, float]) -> bool:
    """Full credit: the `reward` key when present, else every component."""
    if "reward" in rewards:
        return rewards["reward"] >= 1.0
    return min(rewards.values()) >= 1.0


def _no_verdict(output: str, why: str) -> Verdict:
    mode = FailureMode.INFRA_ERROR if _SETUP_FAILED.search(output) else FailureMode.PARSE_ERROR
    if mode is FailureMode.INFRA_ERROR:
        why += " — the test set-up could not fetch its tools (network?)"
    return Verdict(output=tail(output), failure_mode=mode, error=why)


def verify(task: Task, env: Environment, trial_dir: Path) -> Verdict:
    spec = task.verifier
    out_dir = trial_dir / VERIFIER_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    for copy in spec.copies:
        env.copy_in(copy)
    command = spec.command
    if spec.kind == "reward_file":
        command = f"mkdir -p /logs/verifier /logs/agent; {command}"
    if spec.seed is not None and spec.seed.type == "output":
        command = f"{command} 2>/dev/null"
    res = env.exec(command, timeout_sec=spec.timeout_sec, env=spec.env or None, log_path=out_dir / TEST_OUTPUT_FILE)
    if res.timed_out:
        return Verdict(output=tail(res.output), timed_out=True, error=f"tests ran past {spec.timeout_sec:g}s")
    if spec.kind == "reward_file":
        env.copy_out("/logs/verifier", trial_dir)
        rewards = read_rewards(out_dir)
        if isinstance(rewards, str):
            return _no_verdict(res.output, rewards)
        return Verdict(passed=is_pass(rewards), rewards=rewards, output=tail(res.output))
    if spec.kind == "pytest":
        parsed = parse_pytest(res.output)
        if parsed is None:
            return _no_verdict(res.output, "no pytest results in the test output (is -rA set?)")
        ok = all(v == "passed" for v in parsed.values())
        return Verdict(passed=ok, parser_results=parsed, rewards={"reward": float(ok)}, output=tail(res.output))
    seed = spec.seed
    assert seed is not None
    if seed.type == "output":
        ok = res.exit_code == 0 and res.output.strip() == (seed.expected or "").strip()
    else:
        ok = res.exit_code == 0
    return Verdict(passed=ok, rewards={"reward": float(ok)}, output=tail(res.output))
