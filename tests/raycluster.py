"""A real Ray cluster on this machine, inside a network namespace of its own (used by tests and bench/).

Ray rewrites a loopback node address to the machine's routable one and listens on every interface, so it is
never started on the host's network: `ip netns add` gives a namespace with only `lo` (Ray then falls back to
127.0.0.1), and every Ray process — nodes and drivers — runs inside it through `ip netns exec`. The podman API is
a unix socket, reachable from the namespace. Each node is its own process group (kill -9 one node alone), and
teardown kills exactly the processes inside the namespace, then deletes it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

PORT = 6390
OBJECT_STORE_BYTES = 100 * 2**20
NODE_MEMORY_BYTES = 2 * 2**30


class ClusterUnavailable(RuntimeError):
    pass


class NetnsRayCluster:
    def __init__(self) -> None:
        self.ns = f"tbr-{uuid.uuid4().hex[:8]}"
        self.temp = Path(tempfile.mkdtemp(prefix="tbr-", dir="/tmp"))  # short: Ray's unix sockets live here
        self.nodes: dict[str, int] = {}
        """Node tag → the process group of its `ray start`."""
        self.address = f"127.0.0.1:{PORT}"

    def __enter__(self) -> NetnsRayCluster:
        if shutil.which("ray") is None:
            raise ClusterUnavailable("the ray CLI is missing: pip install -e '.[ray]'")
        if os.geteuid() != 0 or shutil.which("ip") is None:
            raise ClusterUnavailable("needs root and iproute2 (ip netns) to make a network namespace")
        try:
            subprocess.run(["ip", "netns", "add", self.ns], check=True, capture_output=True, text=True)
            subprocess.run(self.prefix(["ip", "link", "set", "lo", "up"]), check=True, capture_output=True, text=True)
        except subprocess.CalledProcessError as exc:
            self.close()
            raise ClusterUnavailable(f"ip netns failed: {exc.stderr.strip()}") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def prefix(self, cmd: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.ns, *cmd]

    def start_node(self, tag: str, slots: int | None = 2, cpus: int = 4, head: bool = False) -> None:
        """`ray start` one node; `slots` is its tbench_containers resource (None: the node offers none)."""
        resources: dict[str, float] = {f"tbtag_{tag}": 1}
        if slots is not None:
            resources["tbench_containers"] = slots
        cmd = [
            "ray",
            "start",
            *(["--head", f"--port={PORT}", "--include-dashboard=false"] if head else [f"--address={self.address}"]),
            f"--num-cpus={cpus}",
            f"--resources={json.dumps(resources)}",
            f"--object-store-memory={OBJECT_STORE_BYTES}",
            f"--memory={NODE_MEMORY_BYTES}",
            "--disable-usage-stats",
            *([f"--temp-dir={self.temp}"] if head else []),
        ]
        env = {
            **os.environ,
            "RAY_health_check_period_ms": "1000",
            "RAY_health_check_failure_threshold": "3",
            "RAY_health_check_timeout_ms": "1000",
        }
        proc = subprocess.Popen(
            self.prefix(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
            start_new_session=True,
        )  # fmt: skip
        out, _ = proc.communicate(timeout=120)
        if proc.returncode != 0:
            raise ClusterUnavailable(f"ray start ({tag}) failed: {out.strip()[-800:]}")
        self.nodes[tag] = proc.pid

    def kill_node(self, tag: str) -> None:
        """kill -9 every process of one node (its raylet, workers and agents)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.nodes.pop(tag), signal.SIGKILL)

    def alive_nodes(self) -> int:
        script = "import ray; ray.init(address='%s', log_to_driver=False); print(sum(n['Alive'] for n in ray.nodes()))"
        out = subprocess.run(
            self.prefix(["python3", "-c", script % self.address]), capture_output=True, text=True, timeout=120
        )
        return int(out.stdout.strip().splitlines()[-1])

    def wait_nodes(self, n: int, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self.alive_nodes() != n:
            if time.monotonic() > deadline:
                raise ClusterUnavailable(f"cluster never had {n} alive node(s)")
            time.sleep(1)

    def close(self) -> None:
        """Kill what runs in the namespace (only our Ray processes and drivers), then delete it."""
        for _ in range(3):
            listed = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True)
            pids = [int(p) for p in listed.stdout.split()]
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)
        subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        shutil.rmtree(self.temp, ignore_errors=True)
