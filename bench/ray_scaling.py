"""`tbench-overnight --executor ray` figures, through the real CLI, on a real Ray cluster started inside a network
namespace of its own (tests/raycluster.py; needs root and `pip install -e '.[ray]'`).

overhead    per-trial wall time, one trial at a time: a one-slot Ray node against one local worker process, on
            the same near-empty TB2 tasks (oracle agent); the difference is what Ray adds per trial (scheduling,
            the task's worker, the trial folder's trip through the object store)
rate        trials per hour with 4 trials at once: local workers, one Ray node with 4 slots, two Ray nodes with
            2 slots each. All nodes are on this machine and share its cores, so a second node adds no compute
            here: the figure shows what the second raylet costs, not what a second machine would give.

Figures come from the second (steady) iteration: images built, workers warm.

  source scripts/engine.sh && scripts/build-base-image.sh && python bench/ray_scaling.py [--tasks 12]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.raycluster import NetnsRayCluster

from overnight_scaling import OVERNIGHT, iteration_walls, tb2_suite


def overnight(cluster: NetnsRayCluster, suite: Path, out: Path, flags: list[str]) -> float:
    """Seconds of the steady iteration (the second of two)."""
    args = ["--suite", str(suite), "--model", "oracle", "--iterations", "2", "--output", str(out)]
    proc = subprocess.run(
        cluster.prefix([*OVERNIGHT, *args, "--project-root", str(out.parent), *flags]), capture_output=True, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"tbench-overnight failed: {proc.stderr[-800:]}")
    return iteration_walls(out)[1]


def on_ray(tmp: Path, suite: Path, name: str, nodes: list[int]) -> float:
    with NetnsRayCluster() as cluster:
        for i, slots in enumerate(nodes):
            cluster.start_node(f"n{i}", slots=slots, head=i == 0)
        ray = ["--executor", "ray", "--ray-address", cluster.address, "--task-memory-mb", "256"]
        return overnight(cluster, suite, tmp / name, ray)


def local(tmp: Path, suite: Path, name: str, workers: int) -> float:
    with NetnsRayCluster() as ns:  # the same namespace set-up, no Ray: like for like
        return overnight(ns, suite, tmp / name, ["--workers", str(workers)])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=12)
    n = parser.parse_args().tasks
    with tempfile.TemporaryDirectory(prefix="tbench-bench-ray-") as tmp_name:
        tmp = Path(tmp_name)
        suite = tb2_suite(tmp / "suite", n, "true")
        serial_local = local(tmp, suite, "local-1", 1) / n
        serial_ray = on_ray(tmp, suite, "ray-1x1", [1]) / n
        print(f"overhead: {serial_local:.2f} s/trial with 1 local worker, {serial_ray:.2f} s/trial on a 1-slot Ray "
              f"node: Ray adds {serial_ray - serial_local:+.2f} s per trial ({n} trials)")  # fmt: skip
        for name, wall in (
            ("4 local workers", local(tmp, suite, "local-4", 4)),
            ("1 Ray node x 4 slots", on_ray(tmp, suite, "ray-1x4", [4])),
            ("2 Ray nodes x 2 slots", on_ray(tmp, suite, "ray-2x2", [2, 2])),
        ):
            print(f"rate: {name:<22} {n / wall * 3600:7.0f} trials/hour ({n} trials in {wall:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
