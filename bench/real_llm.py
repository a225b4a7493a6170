"""Figures for the real local model (`scripts/local-llm.sh build` first): server start-up, the OpenAI preflight
(model list + tool-call probe), and N runs of the bundled host task `hello-file` through the real OpenAIAgent —
pass rate, turns, tokens, wall time per run, and the server's own prompt/generation speed.

    python bench/real_llm.py [--runs 3] [--temperature 0.7]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "local-llm.sh"
SUITE = ROOT / "src" / "tbench" / "examples" / "local-suite.json"
MODEL = "qwen2.5-coder-1.5b"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as resp:
            return bool(resp.status == 200)
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--temperature", type=float, default=0.7)
    args = ap.parse_args()

    from tbench.llm.openai_compat import OpenAICompatTransport
    from tbench.models.model_settings import ChatOptions

    port = _port()
    t0 = time.monotonic()
    server = subprocess.Popen(
        [str(SCRIPT), "serve", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        while not _healthy(port):
            if server.poll() is not None or time.monotonic() - t0 > 120:
                print("llama-server did not start (run scripts/local-llm.sh build)", file=sys.stderr)
                return 1
            time.sleep(0.2)
        print(f"server ready: {time.monotonic() - t0:.1f} s")
        url = f"http://127.0.0.1:{port}/v1"
        t1 = time.monotonic()
        OpenAICompatTransport(url, MODEL, ChatOptions()).preflight()
        print(f"preflight (models + tool-call probe): {time.monotonic() - t1:.1f} s")
        walls: list[float] = []
        passed = 0
        for i in range(args.runs):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "run"
                t2 = time.monotonic()
                proc = subprocess.run(
                    [sys.executable, "-c", "from tbench.cli.app import iterate_main; iterate_main()",
                     "--suite", str(SUITE), "--tasks", "hello-file", "--model", f"openai:{MODEL}",
                     "--openai-endpoint", url, "--iterations", "1", "--output", str(out), "--project-root", tmp,
                     "--model-option", f"temperature={args.temperature}", "--model-option", "num_ctx=8192",
                     "--model-option", "num_predict=300", "--seed", str(i)],
                    capture_output=True, text=True, check=False, env=os.environ.copy(),
                )  # fmt: skip
                wall = time.monotonic() - t2
                if proc.returncode != 0:
                    print(proc.stderr, file=sys.stderr)
                    return 1
                (r,) = json.loads((out / "iterations/001/results.json").read_text())["results"]
                passed += r["status"] == "pass"
                walls.append(wall)
                tok = r["tokens"]
                print(
                    f"run {i + 1}: {r['status']}, {r['turns']} turn(s), tokens {tok['input']} in / {tok['output']} "
                    f"out, {wall:.1f} s (tbench-iterate, process start included)"
                )
        print(f"hello-file: {passed}/{args.runs} passed; wall median {statistics.median(walls):.1f} s")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            metrics = resp.read().decode()
        for line in metrics.splitlines():
            if line.startswith(("llamacpp:prompt_tokens_seconds", "llamacpp:predicted_tokens_seconds")):
                print(line)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
