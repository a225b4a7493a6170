"""The Ollama agent's own overhead per turn, model time excluded (target < 50 ms).

Runs the real OllamaAgent (real `ollama` client, NDJSON over a socket) against the tests' Ollama-protocol server
on 127.0.0.1, in a host workspace, for N turns; each turn the scripted model calls `shell` with a command
that prints ~9 kB (`seq 1 2000`), so the history grows and context trimming runs as in a real episode.

Per turn:  overhead = (agent-side time of the model call - time the server says it spent)
                    + (time between model calls - time inside the tool's env.exec)
i.e. request building and JSON over HTTP, stream parsing, context fitting, trajectory and log writes, and tool
dispatch — everything the agent adds beyond the model and the command itself.

    python bench/ollama_turn_overhead.py [--turns 100] [--num-ctx 32768]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.fake_ollama

from tests.fake_ollama import FakeOllama, Reply, scripted

from tbench.agents.ollama_agent import OllamaAgent
from tbench.bench.environments.base import TrialLabels
from tbench.bench.environments.local import LocalEnvironment, confinement
from tbench.bench.formats import load_suite, select_tasks
from tbench.bench.trial import AgentContext
from tbench.llm.chat import ChatMessage, ChatReply, ChatTransport, ModelInfo, ToolSpec
from tbench.models.model_settings import ChatOptions, ModelConfig
from tbench.models.trajectory import Trajectory

SUITE = Path(__file__).resolve().parents[1] / "src" / "tbench" / "examples" / "local-suite.json"
TARGET_MS = 50.0


class Timed:
    """Wraps a transport to time each model call from the agent's side."""

    def __init__(self, inner: ChatTransport) -> None:
        self.inner = inner
        self.label = inner.label
        self.num_ctx = getattr(inner, "num_ctx", 32768)
        self.calls: list[tuple[float, float, int | None]] = []

    def preflight(self) -> ModelInfo:
        return self.inner.preflight()

    def chat(self, messages: Sequence[ChatMessage], tools: Sequence[ToolSpec], *, deadline: float) -> ChatReply:
        t0 = time.perf_counter()
        reply = self.inner.chat(messages, tools, deadline=deadline)
        self.calls.append((t0, time.perf_counter(), reply.server_ms))
        return reply


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--turns", type=int, default=100)
    ap.add_argument("--num-ctx", type=int, default=32768)
    args = ap.parse_args()
    print(f"confinement: {'bubblewrap' if confinement().available else 'none (--unsafe-host-agent semantics)'}")
    with FakeOllama() as fake, tempfile.TemporaryDirectory() as tmp:
        fake.add_model("bench", scripted(then=Reply(tool_calls=[("shell", {"command": "seq 1 2000"})])))
        config = ModelConfig(
            type="ollama",
            model="bench",
            endpoint=fake.url,
            options=ChatOptions(num_ctx=args.num_ctx),
            unsafe_host_agent=True,
        )
        agent = OllamaAgent(config)
        agent.preflight()
        timed = Timed(agent.transport)
        agent._transport = timed
        (task,) = select_tasks(load_suite(SUITE), ["hello-file"]).tasks
        env = LocalEnvironment(task, TrialLabels("bench", "bench-1", task.id), Path(tmp) / "trial")
        env.start()
        logs = Path(tmp) / "trial" / "agent"
        logs.mkdir(parents=True)
        ctx = AgentContext(instruction=task.instruction, timeout_sec=3600, max_turns=args.turns, logs_dir=logs)
        t0 = time.perf_counter()
        result = agent.run_task(task, env, ctx)
        wall = time.perf_counter() - t0
        env.stop()
        traj = Trajectory.model_validate_json((logs / "trajectory.json").read_text())
    tools_ms = [sum(r.duration_ms or 0 for r in s.tool_results) for s in traj.steps]
    overheads: list[float] = []
    for i, (start, end, server_ms) in enumerate(timed.calls):
        call = (end - start) * 1000 - (server_ms or 0)
        gap = ((timed.calls[i + 1][0] if i + 1 < len(timed.calls) else start + wall) - end) * 1000
        between = gap - tools_ms[i] if i + 1 < len(timed.calls) else 0.0
        overheads.append(call + max(0.0, between))
    model_ms = sum(s or 0 for _, _, s in timed.calls)
    n = result.turns
    q = statistics.quantiles(overheads, n=20)
    print(f"turns: {n} (stop: {traj.stop_reason}); wall {wall:.2f}s; tool exec {sum(tools_ms) / n:.1f} ms/turn; "
          f"model (server-reported) {model_ms / n:.1f} ms/turn")  # fmt: skip
    print(
        f"agent overhead per turn: mean {statistics.fmean(overheads):.1f} ms, median {statistics.median(overheads):.1f}"
        f" ms, p95 {q[18]:.1f} ms, max {max(overheads):.1f} ms; first 10 turns {statistics.fmean(overheads[:10]):.1f}"
        f" ms, last 10 {statistics.fmean(overheads[-10:]):.1f} ms"
    )
    print(f"history at the end: {len(fake.chats('bench')[-1]['messages'])} messages; target < {TARGET_MS:g} ms: "
          f"{'met' if statistics.fmean(overheads) < TARGET_MS else 'NOT met'}")  # fmt: skip


if __name__ == "__main__":
    main()
