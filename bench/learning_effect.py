"""The learning loop with a real model, measured: Qwen2.5-Coder-1.5B-Instruct on llama-server (the real-LLM
tier's server, `scripts/local-llm.sh build` first) is both the agent and the reflection model of
`tbench-iterate --learn --holdout H --control` on the bundled learnable suite
(`src/tbench/examples/learnable-suite.json`: small host-workspace tasks that a weak model fails for a few
recurring, general reasons). It prints, whatever they are: per-iteration held-out pass rates of the memory arm
and of the no-memory control arm, train pass rates, what each reflection did, the report's held-out verdict,
summary.json's `learning` object when the Archivist writes one, the lessons in the store, and wall times.

    nice -n 10 python bench/learning_effect.py [--iterations 3] [--seed 1] [--timeout 120] [--max-turns 6]
        [--tasks GLOB ...]

The run folder and the project root (with `.openagents/memory/`) are kept and printed, so every figure can be
checked against the files. One model server at a time: it waits for the lock the real-LLM tests take.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout
from pydantic import ValidationError

from real_llm import _healthy, _port  # the same server helpers (this folder is on sys.path when run)
from tbench.models.layout import LESSONS_FILE, ProjectLayout, RunLayout
from tbench.models.lessons import LessonFile, ReflectionLog
from tbench.models.results import TerminalBenchResults, TrialResult, base_id, tally
from tbench.models.run import RunConfig

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local-llm.sh"
SUITE = ROOT / "src" / "tbench" / "examples" / "learnable-suite.json"
MODEL = "qwen2.5-coder-1.5b"
READY_TIMEOUT_SEC = 180.0
CONTEXT_TOKENS = 16384
"""The reflection prompt digests up to 12 trajectories; the server's default 8192 can be too small for it."""


def _cache() -> Path:
    return Path(os.environ.get("TBENCH_LLM_CACHE") or Path.home() / ".cache/tbench/llm")


def _rate(rs: list[TrialResult]) -> str:
    """Counted by the grading policy (models/results.tally): passed/graded, ungraded trials named apart."""
    t = tally(rs)
    if t.rate is None:
        return "no graded trial" if rs else "-"
    return f"{t.passed}/{t.graded} ({t.rate:.0%})" + (f", {t.ungraded} not graded" if t.ungraded else "")


def _section(markdown: str, prefix: str) -> list[str]:
    """The lines of the `## <prefix>…` section, heading included, up to the next `## ` heading."""
    out: list[str] = []
    for line in markdown.splitlines():
        if line.startswith("## "):
            if out:
                break
            if line[3:].startswith(prefix):
                out.append(line)
        elif out:
            out.append(line)
    while out and not out[-1].strip():
        out.pop()
    return out


def _iterate(args: argparse.Namespace, url: str, run_dir: Path, project: Path, log: Path) -> int:
    cmd = [
        sys.executable, "-c", "from tbench.cli.app import iterate_main; iterate_main()",
        "--suite", str(SUITE), "--model", f"openai:{MODEL}", "--openai-endpoint", url,
        "--learn", "--holdout", str(args.holdout), "--control", "--seed", str(args.seed),
        "--iterations", str(args.iterations), "--timeout", str(args.timeout), "--max-turns", str(args.max_turns),
        "--output", str(run_dir),
        "--project-root", str(project),
        "--model-option", f"temperature={args.temperature}", "--model-option", f"num_ctx={CONTEXT_TOKENS}",
        "--model-option", f"num_predict={args.num_predict}", "--model-option", "request_timeout_sec=900",
    ]  # fmt: skip
    for glob in args.tasks:
        cmd += ["--tasks", glob]
    if shutil.which("bwrap") is None:
        print("bubblewrap (bwrap) is missing: the agent runs unconfined (--unsafe-host-agent)")
        cmd.append("--unsafe-host-agent")
    with log.open("wb") as fh:
        proc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, check=False, env=os.environ.copy())
    return proc.returncode


def _reflection(layout: RunLayout, i: int) -> ReflectionLog | None:
    path = layout.iteration(i).reflection
    try:
        return ReflectionLog.model_validate_json(path.read_text()) if path.is_file() else None
    except ValidationError:
        return None


def _print_rates(layout: RunLayout, held: set[str], iterations: list[TerminalBenchResults]) -> None:
    print(f"{'iteration':>9}  {'held-out, memory':<18} {'held-out, no memory':<20} {'train':<14} reflection")
    all_mem: list[TrialResult] = []
    all_ctl: list[TrialResult] = []
    for it in iterations:
        mem = [r for r in it.results if r.task_id in held]
        trn = [r for r in it.results if r.task_id not in held]
        all_mem += mem
        all_ctl += it.control_results
        rlog = _reflection(layout, it.iteration)
        reflection = "-"
        if rlog is not None:
            applied = sum(o.applied for o in rlog.operations)
            reflection = f"{rlog.status}: {applied} op(s) applied, {len(rlog.operations) - applied} rejected"
            reflection += f" ({rlog.reason})" if rlog.reason else ""
        print(f"{it.iteration:>9}  {_rate(mem):<18} {_rate(it.control_results):<20} {_rate(trn):<14} {reflection}")
    print(f"{'all':>9}  {_rate(all_mem):<18} {_rate(all_ctl):<20}\n")
    for it in iterations:
        rlog = _reflection(layout, it.iteration)
        for o in rlog.operations if rlog else []:
            what = o.op.get("text") or o.op.get("id") or o.op.get("ids")
            verdict = "applied" if o.applied else f"rejected: {o.reason}"
            print(f"  reflection {it.iteration}: {o.op.get('op')} {what!r} -> {verdict}")


def _print_lessons(project: Path) -> None:
    path = ProjectLayout(project).memory_dir / LESSONS_FILE
    if not path.is_file():
        print("\nlessons in the store at the end: 0 (no lessons.json)")
        return
    try:
        lessons = LessonFile.model_validate_json(path.read_text()).lessons
    except ValidationError as exc:
        print(f"\nlessons.json unreadable by this version: {exc.errors()[0]['msg']}")
        return
    print(f"\nlessons in the store at the end: {len(lessons)}")
    for lesson in lessons:
        print(f"  {lesson.id} [{lesson.category}, importance {lesson.importance:.2f}, helpful {lesson.helpful}, "
              f"harmful {lesson.harmful}] {lesson.text}")  # fmt: skip


def _print_figures(run_dir: Path, project: Path) -> None:
    layout = RunLayout(run_dir)
    config = RunConfig.model_validate_json(layout.config.read_text())
    held = set(config.learning.holdout_tasks)
    iterations: list[TerminalBenchResults] = []
    for i in range(1, config.iterations + 1):
        path = layout.iteration(i).results
        if path.is_file():
            iterations.append(TerminalBenchResults.model_validate_json(path.read_text()))
    if not held:  # a later Archivist may keep the split with the memory: the control arm names it too
        held = {base_id(r.task_id) for it in iterations for r in it.control_results}
    train = sorted({r.task_id for it in iterations for r in it.results} - held)
    print(f"held-out tasks ({len(held)}): {', '.join(sorted(held))}")
    print(f"train tasks ({len(train)}): {', '.join(train)}\n")
    _print_rates(layout, held, iterations)
    if layout.report_md.is_file():
        section = _section(layout.report_md.read_text(), "Learning")
        print("\nreport.md, learning section:" if section else "\nreport.md has no Learning section")
        for line in section:
            print(f"  {line}")
    if layout.summary.is_file():
        summary: dict[str, Any] = json.loads(layout.summary.read_text())
        if isinstance(summary.get("learning"), dict):
            print("\nsummary.json learning:")
            print(json.dumps(summary["learning"], indent=2))
    _print_lessons(project)


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--seed", type=int, default=1, help="held-out split and the model's sampler seed")
    ap.add_argument("--tasks", action="append", default=[], metavar="GLOB", help="only these tasks (repeatable)")
    ap.add_argument("--timeout", type=float, default=120.0, help="agent time limit per trial (s)")
    ap.add_argument("--max-turns", type=int, default=6, help="agent turn cap per trial")
    ap.add_argument("--holdout", type=float, default=0.5)
    ap.add_argument("--temperature", type=float, default=0.2)
    ap.add_argument("--num-predict", type=int, default=512, help="most tokens per model answer")
    ap.add_argument("--output", type=Path, help="where the run folder and project root go (default: a new temp dir)")
    args = ap.parse_args()
    if args.iterations < 1 or args.max_turns < 1 or args.timeout <= 0 or not 0 < args.holdout < 1:
        ap.exit(2, "learning_effect: --iterations >= 1, --max-turns >= 1, --timeout > 0 and 0 < --holdout < 1\n")
    return args


def _acquire(lock: FileLock) -> bool:
    """One model server at a time on this machine (the real-LLM tests take the same lock)."""
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"waiting for {lock.lock_file}: another real-LLM run holds the model server", flush=True)
            t0 = time.monotonic()
            lock.acquire(timeout=3600)
            print(f"lock acquired after {time.monotonic() - t0:.0f} s", flush=True)
    except Timeout:
        print("learning_effect: another model server held the lock for an hour", file=sys.stderr)
        return False
    return True


def main() -> int:
    args = _args()
    cache = _cache()
    if not all(p.exists() for p in (cache / "build-server/bin/llama-server", cache / "model/qwen25-bracket.jinja")):
        print(f"learning_effect: no local LLM in {cache}; run: scripts/local-llm.sh build", file=sys.stderr)
        return 2
    base = args.output or Path(tempfile.mkdtemp(prefix="tbench-learning-effect-"))
    if base.exists() and any(base.iterdir()):
        print(f"learning_effect: --output {base} is not empty; give a new folder", file=sys.stderr)
        return 2
    run_dir, project, log = base / "run", base / "project", base / "iterate.log"
    project.mkdir(parents=True, exist_ok=True)

    lock = FileLock(str(cache / ".serve.lock"))
    if not _acquire(lock):
        return 1
    port = _port()
    t0 = time.monotonic()
    env = {**os.environ, "TBENCH_LLM_CTX": str(CONTEXT_TOKENS)}
    with (base / "llama-server.log").open("wb") as fh:
        server = subprocess.Popen([str(SCRIPT), "serve", str(port)], stdout=fh, stderr=subprocess.STDOUT, env=env,
                                  start_new_session=True)  # fmt: skip
    try:
        while not _healthy(port):
            if server.poll() is not None or time.monotonic() - t0 > READY_TIMEOUT_SEC:
                print(f"learning_effect: llama-server did not start; see {base / 'llama-server.log'}", file=sys.stderr)
                return 1
            time.sleep(0.3)
        print(f"server ready: {time.monotonic() - t0:.1f} s (context {CONTEXT_TOKENS} tokens)")
        t1 = time.monotonic()
        rc = _iterate(args, f"http://127.0.0.1:{port}/v1", run_dir, project, log)
        wall = time.monotonic() - t1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
        lock.release()
    print(f"tbench-iterate: exit {rc}, wall {wall / 60:.1f} min ({args.iterations} iteration(s), seed {args.seed}, "
          f"holdout {args.holdout}, timeout {args.timeout:g} s, max turns {args.max_turns}, "
          f"temperature {args.temperature})")  # fmt: skip
    print(f"run folder: {run_dir}\nproject root: {project}\nlog: {log}\n")
    if not RunLayout(run_dir).config.is_file():
        print(log.read_text()[-3000:], file=sys.stderr)
        return 1
    _print_figures(run_dir, project)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
