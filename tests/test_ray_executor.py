"""`tbench-overnight --executor ray`: trials on a real two-node Ray cluster, started inside a network namespace
these tests create (tests/raycluster.py), each node reaching the podman API through its unix socket. Same outcomes
as local workers; kill -9 of a worker node and of the driver, then resume; clear errors before any run folder."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from tests import taskfactory
from tests.raycluster import ClusterUnavailable, NetnsRayCluster
from tests.test_overnight import OVERNIGHT, _containers, _mixed_suite, _outcomes

pytestmark = [pytest.mark.ray, pytest.mark.container]


def _unavailable(why: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"Ray tests are mandatory under CI=true: {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def cluster() -> Iterator[NetnsRayCluster]:
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        _unavailable("ray is not installed (pip install -e '.[ray]')")
    try:
        with NetnsRayCluster() as c:
            c.start_node("head", slots=2, head=True)
            c.start_node("node2", slots=2)
            yield c
    except ClusterUnavailable as exc:
        _unavailable(str(exc))


def _in(cluster: NetnsRayCluster, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cluster.prefix([*OVERNIGHT, *args]), capture_output=True, text=True, timeout=timeout)


def _ray(cluster: NetnsRayCluster) -> list[str]:
    return ["--executor", "ray", "--ray-address", cluster.address, "--task-memory-mb", "256"]


def test_ray_gives_the_outcomes_of_local_workers(engine: Any, cluster: NetnsRayCluster, tmp_path: Path) -> None:
    suite = _mixed_suite(tmp_path / "tasks")
    common = ["--suite", str(suite), "--model", "oracle", "--iterations", "1", "--project-root", str(tmp_path)]
    local = _in(cluster, *common, "--output", str(tmp_path / "local"), "--workers", "4")
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:  # the cluster has 2 + 2 tbench_containers slots: never more containers than that
        while not stop.wait(0.2):
            running = {"label": "tbench.run_id=on-ray", "status": "running"}
            with contextlib.suppress(docker.errors.APIError):  # a container removed while being listed
                seen.append(len(engine.containers.list(sparse=True, filters=running)))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        ray = _in(cluster, *common, *_ray(cluster), "--output", str(tmp_path / "ray"), "--run-id", "on-ray")
    finally:
        stop.set()
        watcher.join()
    assert local.returncode == 0 and ray.returncode == 0, local.stderr + ray.stderr
    expected = _outcomes(tmp_path / "local")
    assert len(expected) == 6
    assert _outcomes(tmp_path / "ray") == expected
    assert seen and max(seen) <= 4
    config = json.loads((tmp_path / "ray" / "config.json").read_text())
    assert (config["executor"], config["ray_address"]) == ("ray", cluster.address)
    # each trial's folder came back from its node: logs, the agent's and the verifier's files
    passed = tmp_path / "ray" / "iterations" / "001" / "passes"
    assert (passed / "trial.log").is_file() and (passed / "verifier").is_dir()
    local_files = {p.name for p in (tmp_path / "local" / "iterations" / "001" / "passes").iterdir()}
    assert {p.name for p in passed.iterdir()} == local_files - {"worker-job.json", "heartbeat.json"}
    assert _containers(engine, "on-ray") == []
    assert "network_util" not in ray.stderr and "Traceback" not in ray.stderr


def test_ray_errors_exit_2_before_a_run_folder(cluster: NetnsRayCluster, tmp_path: Path) -> None:
    suite = taskfactory.tb2(tmp_path / "tasks", "t")
    base = ["--suite", str(suite), "--model", "oracle", "--iterations", "1"]
    cases: list[tuple[list[str], str]] = [
        (["--executor", "ray", "--ray-address", "127.0.0.1:1"], "no Ray cluster answers at 127.0.0.1:1"),
        (["--executor", "ray", "--ray-address", "nonsense"], "expected HOST:PORT"),
        (["--ray-address", cluster.address], "--ray-address: only with --executor ray"),
        (["--executor", "ray", "--workers", "2"], "--workers: not with --executor ray"),
        (["--executor", "spark"], "--executor: expected local or ray"),
        (["--executor", "ray", "--ray-address", cluster.address, "--task-memory-mb", "999999"], "than any node offers"),
    ]
    for i, (flags, message) in enumerate(cases):
        out = tmp_path / f"out{i}"
        proc = _in(cluster, *base, *flags, "--output", str(out))
        assert proc.returncode == 2, (flags, proc.stdout, proc.stderr)
        assert message in proc.stderr and proc.stderr.count("\n") == 1, (flags, proc.stderr)
        assert not out.exists()
    # Ray missing from the driver: a fake `ray` package that fails to import, as a machine without the extra would
    fake = tmp_path / "noray" / "ray"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ModuleNotFoundError(\"No module named 'ray'\", name='ray')\n")
    env = {**os.environ, "PYTHONPATH": f"{fake.parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.run(
        [*OVERNIGHT, *base, *_ray(cluster), "--output", str(tmp_path / "x")], capture_output=True, text=True, env=env
    )
    assert proc.returncode == 2 and "Ray is not installed: pip install 'tbench[ray]'" in proc.stderr, proc.stderr
    assert not (tmp_path / "x").exists()


def test_no_node_with_a_container_engine_is_refused(tmp_path: Path) -> None:
    try:
        import ray  # noqa: F401
    except ModuleNotFoundError:
        _unavailable("ray is not installed (pip install -e '.[ray]')")
    suite = taskfactory.tb2(tmp_path / "tasks", "t")
    try:
        with NetnsRayCluster() as bare:
            bare.start_node("head", slots=None, cpus=1, head=True)
            proc = subprocess.run(
                bare.prefix([*OVERNIGHT, "--suite", str(suite), "--model", "oracle", "--executor", "ray",
                             "--ray-address", bare.address, "--output", str(tmp_path / "out")]),
                capture_output=True, text=True, timeout=300,
            )  # fmt: skip
    except ClusterUnavailable as exc:
        _unavailable(str(exc))
    assert proc.returncode == 2, proc.stderr
    assert "no node of the Ray cluster at" in proc.stderr and "tbench_containers" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_nothing_imports_ray_unless_asked(tmp_path: Path) -> None:
    code = (
        "import sys; import tbench.cli.app, tbench.overnight.iterate, tbench.overnight.parallel; "
        "from tbench.cli.app import overnight_main\n"
        "try:\n    overnight_main()\nexcept SystemExit:\n    pass\n"
        "assert 'ray' not in sys.modules, 'ray was imported'"
    )
    from tests.conftest import EXAMPLES

    args = ["--suite", str(EXAMPLES / "local-suite.json"), "--model", "oracle", "--iterations", "1"]
    proc = subprocess.run(
        [sys.executable, "-c", code, *args, "--output", str(tmp_path / "o"), "--project-root", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "o" / "summary.json").is_file()


def _wait(predicate: Any, what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"never: {what}"
        time.sleep(0.2)


def test_kill_9_of_a_node_and_of_the_driver_then_resume(engine: Any, cluster: NetnsRayCluster, tmp_path: Path) -> None:
    """Last in this file: it takes node2 away (and brings it back for whoever comes next)."""
    root = tmp_path / "tasks"
    for i in range(6):
        taskfactory.tb2(root, f"t{i}", solve="sleep 4; echo ok > /app/out.txt")
    out = tmp_path / "run"
    args = ["--suite", str(root), "--model", "oracle", "--iterations", "2", "--output", str(out)]
    driver = subprocess.Popen(
        cluster.prefix([*OVERNIGHT, *args, *_ray(cluster), "--project-root", str(tmp_path), "--run-id", "ray-kill",
                        "--retry-backoff", "0"]),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # 4 slots, 6 trials: once 4 containers run, both nodes hold trials
        _wait(lambda: len(_containers(engine, "ray-kill")) >= 4, "4 trials running at once")
        cluster.kill_node("node2")
        _wait(lambda: any(out.glob("iterations/*/_retries/*/ray-error.txt")), "a lost trial set aside for a retry")
        os.kill(driver.pid, signal.SIGKILL)  # `ip netns exec` execs: this is the driver itself
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    lost = next(out.glob("iterations/*/_retries/*/ray-error.txt")).read_text()
    assert "lost on the Ray cluster" in lost
    cluster.wait_nodes(1)
    resumed = _in(cluster, "--resume", str(out / "state.json"))
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    outcomes = _outcomes(out)
    assert set(outcomes) == {(i, f"t{t}") for i in (1, 2) for t in range(6)}
    assert set(outcomes.values()) == {("pass", None)}
    assert _containers(engine, "ray-kill") == []
    state = json.loads((out / "state.json").read_text())
    assert state["resumes"] == 1
    assert sum(ts["retries"] for it in state["iterations"] for ts in it["trials"].values()) >= 1
    for aside in out.glob("iterations/*/_interrupted/*"):
        assert not (aside / "result.json").exists()
    episodes = [json.loads(x)["id"] for x in (tmp_path / ".openagents/gym/episodes.jsonl").read_text().splitlines()]
    assert episodes == ["ray-kill-001", "ray-kill-002"]
    cluster.start_node("node2", slots=2)
