"""Trials on a Ray cluster (`tbench-overnight --executor ray`): one trial = one Ray task.

Every node that may run trials advertises the custom resource `tbench_containers` (how many containers it runs at
once) and has its own container engine at `DOCKER_HOST`. A trial asks for one slot, the task's CPUs and memory, and
runs `run_trial` in a scratch folder on its node; it returns its result and its trial folder (a tar.gz through Ray's
object store), which the orchestrator unpacks into the run folder. The orchestrator stays the only writer of run
state: it begins, finishes and retries every trial through the `TrialBook`, as the local executors do.

What a force-cancelled task or a lost node cannot clean up (its `finally` never runs), a sweep does: a small task
pinned to each node removes the run's containers by label — at start (resume) and at close — and a lost trial's
containers on every node right away. Ray never retries a trial itself (`max_retries=0`): a lost node is an
`infra_error`, retried by the grading policy. This module is imported only for `--executor ray`.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import shutil
import socket
import sys
import tarfile
import tempfile
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import ray.exceptions
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tbench import __version__
from tbench.agents.base import ModelRunner
from tbench.agents.model_adapter import create_model_runner
from tbench.bench.environments import EnvironmentFactory
from tbench.bench.trial import AGENT_GRACE_SEC, PHASE_SLACK_SEC, SETUP_TIMEOUT_SEC, run_trial
from tbench.errors import UserError
from tbench.fsutil import safe_name
from tbench.models.results import TrialResult
from tbench.models.task import Task
from tbench.models.trial import TrialSpec, WorkerJob, lost_result
from tbench.overnight.executor import TrialBook
from tbench.overnight.progress import Progress

RESOURCE = "tbench_containers"
"""The per-node custom resource: concurrent trial containers a node runs (`ray start --resources`)."""
POLL_SEC = 0.1
CAPACITY_EVERY_SEC = 2.0
SWEEP_TIMEOUT_SEC = 60.0
CONNECT_TIMEOUT_SEC = 5.0
SCRATCH = "tbench-ray"
"""Node-local folder (under the node's temp dir) where trials run before their folder travels back."""


# ---------------------------------------------------------------------------------------------- on the nodes

_ENVS: EnvironmentFactory | None = None
_RUNNERS: dict[str, ModelRunner] = {}


def _scratch_root(run_id: str) -> Path:
    return Path(tempfile.gettempdir()) / SCRATCH / safe_name(run_id)


def _pack(folder: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(str(folder), arcname=".")
    return buf.getvalue()


def _remote_trial(job_json: str) -> tuple[str, bytes, str]:
    """Run one trial in a scratch folder on this node; return its result, its folder (tar.gz) and the node."""
    global _ENVS
    job = WorkerJob.model_validate_json(job_json)
    spec = job.spec
    scratch = _scratch_root(spec.run_id) / f"{safe_name(spec.trial_id)}-{uuid.uuid4().hex[:8]}"
    local = spec.model_copy(
        update={"run_dir": scratch, "trial_dir": scratch / spec.trial_dir.relative_to(spec.run_dir)}
    )
    try:
        if _ENVS is None:
            _ENVS = EnvironmentFactory()
        label = job.model.label
        if label not in _RUNNERS:
            _RUNNERS[label] = create_model_runner(job.model)
        result = run_trial(local, _RUNNERS[label], _ENVS.create)
        return result.model_dump_json(), _pack(local.trial_dir), ray.get_runtime_context().get_node_id()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _remote_sweep(label: str, run_id: str | None) -> int:
    """Remove this node's containers carrying `label`; with `run_id`, also the run's scratch folders."""
    from tbench.bench.environments.docker import engine_client, remove_labelled

    if run_id is not None:
        shutil.rmtree(_scratch_root(run_id), ignore_errors=True)
    try:
        client = engine_client(timeout=30)
    except UserError:
        return 0
    try:
        return remove_labelled(client, label)
    finally:
        client.close()


def _remote_probe(paths: list[str], need_engine: bool) -> dict[str, Any]:
    """What this node offers: its engine (when container tasks need one), the suite's files, versions."""
    from tbench.bench.environments.docker import engine_client

    engine: str | None = None
    if need_engine:
        try:
            engine_client(timeout=15).close()
        except UserError as exc:
            engine = str(exc)
    return {
        "node_id": ray.get_runtime_context().get_node_id(),
        "engine_error": engine,
        "missing": [p for p in paths if not Path(p).exists()],
        "tbench": __version__,
        "python": f"{sys.version_info.major}.{sys.version_info.minor}",
    }


# ---------------------------------------------------------------------------------------------- the cluster


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str
    slots: float
    cpus: float
    memory_mb: float

    @property
    def name(self) -> str:
        return f"{self.address} ({self.node_id[:8]})"


def _check_reachable(address: str) -> None:
    """`ray.init` waits minutes on an address where nothing listens: try the GCS port first."""
    if address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"expected HOST:PORT of a Ray head (its GCS port, 6379 by default), got {address!r}",
                        field="ray_address")  # fmt: skip
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_SEC).close()
    except OSError as exc:
        raise UserError(
            f"no Ray cluster answers at {address} ({exc.strerror or type(exc).__name__}); start one with "
            "`ray start --head` (see docs/tbench/overnight-runs.md, 'Beyond one machine')",
            field="ray_address",
        ) from None


class RayCluster:
    """The driver's connection to a running cluster, checked before a run folder is made."""

    def __init__(self, address: str) -> None:
        self.address = address

    @classmethod
    def connect(cls, address: str | None) -> RayCluster:
        address = address or os.environ.get("RAY_ADDRESS") or "auto"
        _check_reachable(address)
        os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "error")
        try:
            with _quiet_stderr():  # the core's start-up warnings (no route to 8.8.8.8, ...) are not ours to show
                ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise UserError(f"cannot join the Ray cluster at {address}: {first}", field="ray_address") from None
        cluster = cls(address)
        if not cluster.nodes():
            ray.shutdown()
            raise UserError(
                f"no node of the Ray cluster at {address} offers a container engine: start each engine host with "
                f"`ray start ... --resources='{{\"{RESOURCE}\": N}}'` (N = containers it runs at once)",
                field="ray_address",
            )
        return cluster

    @staticmethod
    def nodes() -> list[Node]:
        """Alive nodes that take trials."""
        out = []
        for n in ray.nodes():  # type: ignore[no-untyped-call]
            res = n.get("Resources", {})
            if n.get("Alive") and res.get(RESOURCE, 0) > 0:
                out.append(
                    Node(
                        node_id=n["NodeID"],
                        address=str(n.get("NodeManagerAddress", "?")),
                        slots=float(res[RESOURCE]),
                        cpus=float(res.get("CPU", 0)),
                        memory_mb=float(res.get("memory", 0)) / 2**20,
                    )
                )
        return out

    def preflight(self, tasks: list[Task], default_task_mb: int) -> None:
        """Every node must have what its trials need: the engine, the suite at the same path, room for the
        largest task; one line naming the node and the fix otherwise."""
        nodes = self.nodes()
        for task in tasks:
            cpus, mb = trial_cpus(task), task.environment.memory_mb or default_task_mb
            if not any(n.cpus >= cpus and n.memory_mb >= mb for n in nodes):
                raise UserError(
                    f"task {task.id} needs {cpus:g} CPU(s) and {mb} MB, more than any node offers "
                    f"({', '.join(f'{n.name}: {n.cpus:g} CPU, {n.memory_mb:.0f} MB' for n in nodes)}); "
                    "start nodes with more --num-cpus/--memory, or lower --task-memory-mb",
                    field="ray_address",
                )
        need_engine = any(t.environment.kind == "docker" for t in tasks)
        paths = sorted({t.source for t in tasks})
        probe = ray.remote(_remote_probe)
        refs = {
            n.name: probe.options(num_cpus=0, max_retries=0, scheduling_strategy=_on(n)).remote(paths, need_engine)
            for n in nodes
        }
        for name, ref in refs.items():
            try:
                report = ray.get(ref, timeout=120)
            except Exception as exc:
                raise UserError(f"node {name} did not answer a probe: {_short(exc)}", field="ray_address") from None
            if report["tbench"] != __version__:
                raise UserError(
                    f"node {name} runs tbench {report['tbench']}, this driver {__version__}: install the same "
                    "version on every node",
                    field="ray_address",
                )
            if report["engine_error"]:
                raise UserError(f"node {name}: {report['engine_error']}", field="ray_address")
            if report["missing"]:
                raise UserError(
                    f"node {name} lacks {report['missing'][0]}: every node needs the suite at the same path "
                    "(a shared mount or a copy)",
                    field="ray_address",
                )

    def sweep(self, label: str, run_id: str | None = None) -> int:
        """Remove containers carrying `label` on every alive node; a node that does not answer is skipped (the
        next sweep, at resume or at the end, reaches it once it is back)."""
        sweep = ray.remote(_remote_sweep)
        refs = [
            sweep.options(num_cpus=0, max_retries=0, scheduling_strategy=_on(n)).remote(label, run_id)
            for n in self.nodes()
        ]
        removed = 0
        for ref in refs:
            with contextlib.suppress(Exception):
                removed += int(ray.get(ref, timeout=SWEEP_TIMEOUT_SEC))
        return removed

    def capacity(self) -> int:
        return int(sum(n.slots for n in self.nodes()))

    @staticmethod
    def shutdown() -> None:
        with contextlib.suppress(Exception):
            ray.shutdown()


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Send file descriptor 2 (C++ logging included) to a temporary file while Ray starts its driver."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def _on(node: Node) -> NodeAffinitySchedulingStrategy:
    return NodeAffinitySchedulingStrategy(node_id=node.node_id, soft=False)


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300]}" if text else type(exc).__name__


def trial_cpus(task: Task) -> float:
    return task.environment.cpus or 1.0


def trial_budget_sec(spec: TrialSpec) -> float:
    """The longest a trial may take before its task is force-cancelled (run_trial owns the real timeouts)."""
    task = spec.task
    agent = task.agent_timeout_sec or spec.default_timeout_sec
    return (
        task.environment.build_timeout_sec + SETUP_TIMEOUT_SEC + agent + AGENT_GRACE_SEC + task.verifier.timeout_sec
        + 3 * PHASE_SLACK_SEC
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- the executor


@dataclass
class _Slot:
    task: Task
    spec: TrialSpec
    ref: Any
    started: float = field(default_factory=time.time)


class RayExecutor:
    """Keeps as many trials submitted as the cluster has `tbench_containers` slots; Ray places them."""

    def __init__(self, cluster: RayCluster, run_id: str, progress: Progress, default_task_mb: int) -> None:
        self.cluster = cluster
        self.run_id = run_id
        self.progress = progress
        self.default_task_mb = default_task_mb
        self._remote = ray.remote(_remote_trial)
        self._capacity = cluster.capacity()
        self._capacity_at = time.time()

    def sweep_run(self) -> int:
        from tbench.bench.environments.docker import LABEL_RUN

        return self.cluster.sweep(f"{LABEL_RUN}={self.run_id}", self.run_id)

    def capacity(self) -> int:
        now = time.time()
        if now - self._capacity_at > CAPACITY_EVERY_SEC:
            self._capacity, self._capacity_at = self.cluster.capacity(), now
        return max(self._capacity, 1)

    def run_iteration(self, book: TrialBook, iteration: int, tasks: Sequence[Task]) -> None:
        queue: deque[tuple[Task, float]] = deque((t, 0.0) for t in tasks)
        running: dict[str, _Slot] = {}
        self.progress.start_iteration(iteration, book.iterations_planned, len(tasks))
        try:
            while running or (queue and not book.stop.reason):
                if book.stop.cancel:
                    self._cancel(running)
                    return
                self._collect(book, iteration, running, queue)
                self._launch(book, iteration, queue, running)
                self.progress.update(len(running), len(queue))
        except BaseException:
            self._cancel(running)
            raise
        finally:
            self.progress.end_iteration()

    def close(self) -> None:
        """The end-of-run sweep on every node, then leave the cluster."""
        with contextlib.suppress(Exception):
            self.sweep_run()
        self.cluster.shutdown()

    def _launch(
        self, book: TrialBook, iteration: int, queue: deque[tuple[Task, float]], running: dict[str, _Slot]
    ) -> None:
        held = book.hold() > 0 if queue else False  # the circuit breaker: no new trial while the model server is down
        while queue and not book.stop.reason and len(running) < self.capacity() and not held:
            now = time.time()
            index = next((i for i, (_, not_before) in enumerate(queue) if not_before <= now), None)
            if index is None:
                return
            task, _ = queue[index]
            del queue[index]
            spec = book.begin_trial(iteration, task)
            job = book.worker_job(spec)
            mb = task.environment.memory_mb or self.default_task_mb
            ref = self._remote.options(
                num_cpus=trial_cpus(task),
                memory=mb * 2**20,
                resources={RESOURCE: 1},
                max_retries=0,
                retry_exceptions=False,
                name=f"tbench-trial:{spec.trial_id}",
            ).remote(job.model_dump_json())
            running[task.id] = _Slot(task=task, spec=spec, ref=ref)

    def _collect(
        self, book: TrialBook, iteration: int, running: dict[str, _Slot], queue: deque[tuple[Task, float]]
    ) -> None:
        if not running:
            time.sleep(POLL_SEC)
            return
        by_ref = {slot.ref: slot for slot in running.values()}
        ready, _ = ray.wait(list(by_ref), num_returns=len(by_ref), timeout=POLL_SEC)
        now = time.time()
        done: list[tuple[_Slot, TrialResult]] = [(by_ref[ref], self._receive(by_ref[ref])) for ref in ready]
        for slot in running.values():
            if slot.ref not in ready and now - slot.started > trial_budget_sec(slot.spec):
                ray.cancel(slot.ref, force=True)
                self._sweep_trial(slot)
                done.append((slot, _lost(slot, f"trial ran past its budget of {trial_budget_sec(slot.spec):.0f}s")))
        for slot, result in done:
            del running[slot.task.id]
            if book.finish_trial(iteration, slot.task, result):
                self.progress.trial_done(result)
            else:
                queue.append((slot.task, time.time() + book.retry_delay(iteration, slot.task)))

    def _receive(self, slot: _Slot) -> TrialResult:
        """The trial's result, its folder unpacked into the run folder; a lost node or worker is an infra error."""
        try:
            result_json, tar, _node = ray.get(slot.ref)
            result = TrialResult.model_validate_json(result_json)
            _unpack(tar, slot.spec.trial_dir)
            return result
        except Exception as exc:
            self._sweep_trial(slot)
            return _lost(slot, f"lost on the Ray cluster: {_short(exc)}")

    def _sweep_trial(self, slot: _Slot) -> None:
        from tbench.bench.environments.docker import trial_label

        self.cluster.sweep(trial_label(slot.spec.trial_id))

    def _cancel(self, running: dict[str, _Slot]) -> None:
        """Second signal: force-cancel running trials (their `finally` never runs) and sweep their containers;
        they stay `running` in state.json and run again on resume."""
        for slot in running.values():
            with contextlib.suppress(Exception):
                ray.cancel(slot.ref, force=True)
        for slot in running.values():
            with contextlib.suppress(Exception):
                self._sweep_trial(slot)
        running.clear()


def _unpack(tar: bytes, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(tar), mode="r:gz") as archive:
        archive.extractall(dest, filter="data")


def _lost(slot: _Slot, message: str) -> TrialResult:
    spec = slot.spec
    spec.trial_dir.mkdir(parents=True, exist_ok=True)
    (spec.trial_dir / "ray-error.txt").write_text(message + "\n", encoding="utf-8")
    return lost_result(spec, message, slot.started)
