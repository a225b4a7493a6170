"""Containers through the Docker Engine API (Docker, or podman's Docker-compatible service) via `DOCKER_HOST`.

Images are built once per distinct environment folder (the tag carries a hash of its content) and reused.
Each trial gets its own labelled container, removed at the end whatever happens; a crashed run's leftovers
are found by label and removed on resume. A multi-container task's services (from its compose file) are
started the same way, through the API, on a labelled per-trial network; no compose binary is used even where
one is installed. Each trial records the image ids (content digests) it ran in.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import docker
import docker.errors
import docker.utils
from filelock import FileLock

from tbench.bench.environments.base import Environment, ExecResult, OutputHook, OutputSink, TrialLabels, ms_since
from tbench.errors import BuildError, InfraError, UserError
from tbench.fsutil import ascii_slug, safe_name
from tbench.models.results import ImageRecord, TrialImages
from tbench.models.task import EnvironmentSpec, FileCopy, ServiceSpec, Task

LABEL_MANAGED = "tbench.managed"
LABEL_RUN = "tbench.run_id"
LABEL_TRIAL = "tbench.trial_id"
LABEL_TASK = "tbench.task_id"
LABEL_SERVICE = "tbench.service"

# Runs the command in its own session so a timeout can kill the whole process group; writes the group id.
_WRAP = (
    'p="$1"; c="$2"; '
    "if command -v setsid >/dev/null 2>&1; then "
    'exec setsid -w sh -c \'echo $$ > "$0"; exec sh -c "$1"\' "$p" "$c"; fi; '
    'echo $$ > "$p"; exec sh -c "$c"'
)
# OOM-kill counters of the container's memory cgroup (v1: memory.oom_control; v2: memory.events).
_OOM_PROBE = (
    "sed -n 's/^oom_kill //p' /sys/fs/cgroup/memory/memory.oom_control /sys/fs/cgroup/memory.events 2>/dev/null"
)
_KILL = 'g=$(cat "$1" 2>/dev/null) && { kill -9 "-$g" 2>/dev/null || kill -9 "$g"; }; rm -f "$1"'


def engine_client(timeout: float = 120.0) -> docker.DockerClient:
    """A client for `DOCKER_HOST`; an unreachable engine is the user's to fix, said in one line."""
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except Exception as exc:
        raise UserError(
            f"no container engine answers at DOCKER_HOST={host} ({type(exc).__name__}); start Docker, or "
            "podman's API service (`source scripts/engine.sh`), and set DOCKER_HOST"
        ) from None
    return client


def content_hash(folder: Path, dockerfile: str) -> str:
    """Hash of every file's relative path, mode and bytes under the build context."""
    h = hashlib.sha256(dockerfile.encode())
    for path in sorted(p for p in folder.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(folder).as_posix()
        h.update(b"\0" + rel.encode() + b"\0")
        if path.is_symlink():
            h.update(b"L" + os.readlink(path).encode())
            continue
        h.update(oct(path.stat().st_mode & 0o777).encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:16]


def image_tag(task: Task, service: ServiceSpec | None = None) -> str:
    build_dir, dockerfile = _context(task, service)
    name = ascii_slug(task.id).lower() + (f"-{safe_name(service.name).lower()}" if service else "")
    return f"tbench/{name}:{content_hash(build_dir, dockerfile)}"


def _context(task: Task, service: ServiceSpec | None) -> tuple[Path, str]:
    spec = service or task.environment
    assert spec.build_dir is not None
    return spec.build_dir, spec.dockerfile


_FROM = re.compile(r"^\s*FROM\s+(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", re.IGNORECASE | re.MULTILINE)


def final_base(build_dir: Path, dockerfile: str) -> str | None:
    """The image the Dockerfile's last stage starts FROM (a stage name resolved to that stage's own base)."""
    try:
        text = (build_dir / dockerfile).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    stages: dict[str, str] = {}
    last = None
    for m in _FROM.finditer(text):
        last = stages.get(m.group(1).lower(), m.group(1))
        if m.group(2):
            stages[m.group(2).lower()] = last
    return last


def image_record(client: docker.DockerClient, name: str, base: str | None) -> ImageRecord:
    """What a trial ran in: the image's content digest and its base's, as the engine has them now."""
    image = client.images.get(name)
    base_id = None
    if base and base != "scratch":
        with contextlib.suppress(docker.errors.DockerException):
            base_id = client.images.get(base).id
    digests = image.attrs.get("RepoDigests") or []
    return ImageRecord(name=name, id=image.id, repo_digest=digests[0] if digests else None, base=base, base_id=base_id)


def label_value(text: str) -> str:
    """A label's value: an ASCII form of an id (task ids may hold any letter), safe in engine filters."""
    return ascii_slug(text, max_len=200)


def trial_label(trial_id: str) -> str:
    """The `key=value` filter that finds a trial's containers."""
    return f"{LABEL_TRIAL}={label_value(trial_id)}"


def _lock_dir() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tbench" / "locks"
    base.mkdir(parents=True, exist_ok=True)
    return base


def build_image(client: docker.DockerClient, task: Task, log_path: Path, service: ServiceSpec | None = None) -> str:
    """Build (or reuse) the task's image (or one service's); a failing Dockerfile is a BuildError, a slow one
    an InfraError."""
    spec = task.environment
    build_dir, dockerfile = _context(task, service)
    tag = image_tag(task, service)
    with FileLock(str(_lock_dir() / (safe_name(tag) + ".lock"))):
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(tag)
            return tag
        deadline = time.monotonic() + spec.build_timeout_sec
        api = docker.APIClient(**docker.utils.kwargs_from_env(), timeout=int(spec.build_timeout_sec) + 5)
        log_path.parent.mkdir(parents=True, exist_ok=True)
        error: str | None = None
        try:
            with log_path.open("w", encoding="utf-8") as log:
                stream: Iterator[dict[str, Any]] = api.build(
                    path=str(build_dir),
                    dockerfile=dockerfile,
                    tag=tag,
                    rm=True,
                    forcerm=True,
                    decode=True,
                    labels={LABEL_MANAGED: "true"},
                )
                for chunk in stream:
                    if "stream" in chunk:
                        log.write(str(chunk["stream"]))
                    if "error" in chunk or "errorDetail" in chunk:
                        error = str(chunk.get("error") or chunk.get("errorDetail"))
                        log.write(f"ERROR: {error}\n")
                    if time.monotonic() > deadline:
                        raise InfraError(f"image build exceeded build_timeout_sec={spec.build_timeout_sec:g}")
        except docker.errors.BuildError as exc:
            error = str(exc)
        except docker.errors.APIError as exc:
            error = str(exc.explanation or exc)
        except (OSError, docker.errors.DockerException) as exc:  # read timeout, broken connection
            if time.monotonic() > deadline:
                raise InfraError(f"image build exceeded build_timeout_sec={spec.build_timeout_sec:g}") from exc
            raise InfraError(f"engine failed during build: {exc}") from exc
        finally:
            api.close()
        if error is None:
            try:
                client.images.get(tag)
            except docker.errors.ImageNotFound:
                error = "build finished but produced no image"
        if error is not None:
            raise BuildError(f"image build failed: {error.strip()[-500:]} (log: {log_path.name})")
        return tag


def resolve_image(client: docker.DockerClient, task: Task, log_path: Path) -> str:
    spec = task.environment
    if spec.docker_image:
        with contextlib.suppress(docker.errors.ImageNotFound):
            client.images.get(spec.docker_image)
            return spec.docker_image
        try:
            client.images.pull(spec.docker_image)
            return spec.docker_image
        except docker.errors.APIError as exc:
            if spec.build_dir is None:
                raise InfraError(f"cannot pull {spec.docker_image}: {exc.explanation or exc}") from exc
    return build_image(client, task, log_path)


def remove_labelled(client: docker.DockerClient, label: str) -> int:
    """Remove every container carrying `label` ("key=value"), sidecars included, then the trials' networks.
    Returns how many containers were removed."""
    removed = 0
    for container in client.containers.list(all=True, filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound):
            container.remove(force=True)
            removed += 1
    for network in client.networks.list(filters={"label": label}):
        with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
            network.remove()
    return removed


def remove_run_containers(client: docker.DockerClient, run_id: str) -> int:
    """Remove every container a run left behind (after kill -9)."""
    return remove_labelled(client, f"{LABEL_RUN}={run_id}")


def _tar_of(copy: FileCopy) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(str(copy.src), arcname=Path(copy.dest).name)
    return buf.getvalue()


class DockerEnvironment(Environment):
    def __init__(self, task: Task, labels: TrialLabels, trial_dir: Path, client: docker.DockerClient) -> None:
        super().__init__(task, labels, trial_dir)
        self.client = client
        self.container: Any = None
        self.sidecars = Sidecars(client, task, self._labels(), self._name)

    def _labels(self) -> dict[str, str]:
        return {
            LABEL_MANAGED: "true",
            LABEL_RUN: self.labels.run_id,
            LABEL_TRIAL: label_value(self.labels.trial_id),
            LABEL_TASK: label_value(self.labels.task_id),
        }

    def _name(self, part: str = "") -> str:
        return f"tbench-{ascii_slug(self.labels.trial_id)[:60]}{part}-{uuid.uuid4().hex[:6]}"

    def start(self) -> None:
        spec: EnvironmentSpec = self.task.environment
        tag = resolve_image(self.client, self.task, self.trial_dir / "build.log")
        main = image_record(self.client, tag, None if spec.docker_image == tag else _base_of(spec))
        self.images = TrialImages(main=main)
        kwargs: dict[str, Any] = {
            "entrypoint": ["sleep", "infinity"],
            "command": [],
            "detach": True,
            "init": True,  # PID 1 reaps the orphans a killed command leaves
            "labels": self._labels(),
            "environment": dict(spec.env),
            "name": self._name(),
        }
        if spec.services:
            if self.needs.host_network:
                raise InfraError(
                    "this agent needs the host's network (its model endpoint is on this host's loopback), "
                    "which a multi-container task's own network excludes; serve the model on an address the "
                    "containers can reach"
                )
            self.images.services = self.sidecars.start(self.trial_dir / "build.log")
            kwargs.update(self.sidecars.main_network_kwargs())
        elif self.needs.host_network:  # the agent's model endpoint is on the host's loopback
            kwargs["network_mode"] = "host"
        elif spec.network_mode == "no-network":
            kwargs["network_mode"] = "none"
        if self.needs.ro_mounts:
            kwargs["volumes"] = {host: {"bind": inside, "mode": "ro"} for host, inside in self.needs.ro_mounts}
        if spec.cpus:
            kwargs["nano_cpus"] = int(spec.cpus * 1e9)
        if spec.memory_mb:
            kwargs["mem_limit"] = f"{spec.memory_mb}m"
        if spec.workdir:
            kwargs["working_dir"] = spec.workdir
        try:
            image = self.client.images.get(tag)
            self.container = self.client.containers.run(tag, **kwargs)
            self.workdir = spec.workdir or image.attrs["Config"].get("WorkingDir") or "/"
        except docker.errors.DockerException as exc:
            raise InfraError(f"cannot start container: {exc}") from exc

    def exec(
        self,
        command: str,
        *,
        timeout_sec: float,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        confined: bool = False,  # a container is the confinement
        on_output: OutputHook | None = None,
    ) -> ExecResult:
        t0 = time.monotonic()
        api = self.client.api
        pidfile = f"/tmp/.tbench-exec-{uuid.uuid4().hex}"
        try:
            exec_id = api.exec_create(
                self.container.id,
                ["sh", "-c", _WRAP, "tbench", pidfile, command],
                environment=env or None,
                workdir=self.workdir,
                stdout=True,
                stderr=True,
            )["Id"]
            stream = api.exec_start(exec_id, stream=True, demux=False)
        except docker.errors.DockerException as exc:
            raise InfraError(f"exec failed: {exc}") from exc
        sink = OutputSink(log_path, on_chunk=on_output)

        def pump() -> None:
            with contextlib.suppress(Exception):
                for chunk in stream:
                    sink.write(chunk)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        deadline = t0 + timeout_sec
        next_poll = t0 + 0.5
        while reader.is_alive():
            reader.join(timeout=min(0.1, max(0.0, deadline - time.monotonic())))
            now = time.monotonic()
            if not reader.is_alive():
                break
            if now >= deadline:
                timed_out = True
                break
            if now >= next_poll:  # a background child may hold the stream open after the command ended
                next_poll = now + 0.5
                if not self._exec_running(exec_id):
                    reader.join(timeout=1.0)
                    break
        if timed_out:
            self._kill(pidfile)
            reader.join(timeout=5)
        with contextlib.suppress(Exception):
            stream.close()
        exit_code = None if timed_out else self._exit_code(exec_id)
        if exit_code == 137:  # SIGKILL: the memory limit, or the container itself went away
            self._raise_if_killed_by_infra()
        return ExecResult(exit_code=exit_code, output=sink.close(), timed_out=timed_out, duration_ms=ms_since(t0))

    def _raise_if_killed_by_infra(self) -> None:
        """An OOM kill or a dead container says nothing about the agent: raise InfraError (retried)."""
        try:
            self.container.reload()
        except docker.errors.DockerException as exc:
            raise InfraError(f"container vanished: {exc}") from exc
        state = self.container.attrs.get("State", {})
        if state.get("Status") != "running":
            raise InfraError(f"container stopped (status {state.get('Status')}, OOMKilled={state.get('OOMKilled')})")
        probe = self.container.exec_run(["sh", "-c", _OOM_PROBE])
        counts = [int(n) for n in probe.output.decode(errors="replace").split() if n.isdigit()]
        if counts and max(counts) > 0:
            limit = self.task.environment.memory_mb
            raise InfraError(f"out of memory: the kernel killed a process (memory limit {limit or '?'} MB)")

    def _exec_running(self, exec_id: str) -> bool:
        try:
            return bool(self.client.api.exec_inspect(exec_id).get("Running"))
        except docker.errors.DockerException:
            return False

    def _exit_code(self, exec_id: str) -> int | None:
        for _ in range(50):
            try:
                info = self.client.api.exec_inspect(exec_id)
            except docker.errors.DockerException as exc:
                raise InfraError(f"exec inspect failed: {exc}") from exc
            if not info.get("Running"):
                code = info.get("ExitCode")
                return int(code) if code is not None else None
            time.sleep(0.05)
        return None

    def _kill(self, pidfile: str) -> None:
        with contextlib.suppress(docker.errors.DockerException):
            self.container.exec_run(["sh", "-c", _KILL, "tbench", pidfile])

    def copy_in(self, copy: FileCopy) -> None:
        parent = str(Path(copy.dest).parent)
        data = _tar_of(copy)
        try:
            try:
                ok = self.container.put_archive(parent, data)
            except docker.errors.NotFound:  # Docker wants the parent to exist (podman creates it)
                self.container.exec_run(["mkdir", "-p", parent])
                ok = self.container.put_archive(parent, data)
        except docker.errors.DockerException as exc:
            raise InfraError(f"copy into container failed: {exc}") from exc
        if not ok:
            raise InfraError(f"copy of {copy.src.name} into {copy.dest} was refused")

    def copy_out(self, path: str, dest_dir: Path) -> bool:
        try:
            bits, _ = self.container.get_archive(path)
            data = b"".join(bits)
        except docker.errors.NotFound:
            return False
        except docker.errors.DockerException as exc:
            raise InfraError(f"copy out of container failed: {exc}") from exc
        dest_dir.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            tar.extractall(dest_dir, filter="data")
        return True

    def stop(self) -> None:
        if self.container is not None:
            with contextlib.suppress(docker.errors.DockerException):
                self.container.remove(force=True)
            self.container = None
        self.sidecars.stop()


def _base_of(spec: EnvironmentSpec | ServiceSpec) -> str | None:
    return final_base(spec.build_dir, spec.dockerfile) if spec.build_dir is not None else None


class Sidecars:
    """A multi-container task's services: each built (or pulled) and started on the trial's own network,
    reachable by its service name, healthy before the main container starts; removed with the trial (and,
    after a kill -9, by label on resume, like the main container)."""

    def __init__(self, client: docker.DockerClient, task: Task, labels: dict[str, str], name: Callable[[str], str]):
        self.client, self.task, self.labels, self.name = client, task, labels, name
        self.network: Any = None
        self.containers: dict[str, Any] = {}

    def start(self, log_path: Path) -> dict[str, ImageRecord]:
        spec = self.task.environment
        try:
            self.network = self.client.networks.create(
                self.name("-net"), driver="bridge", labels=self.labels, internal=spec.network_mode == "no-network"
            )
        except docker.errors.DockerException as exc:
            raise InfraError(f"cannot create the trial's network: {exc}") from exc
        images: dict[str, ImageRecord] = {}
        for service in spec.services:
            tag = self._image(service, log_path)
            images[service.name] = image_record(self.client, tag, _base_of(service) if service.build_dir else None)
            kwargs: dict[str, Any] = {
                "detach": True,
                "labels": {**self.labels, LABEL_SERVICE: service.name},
                "environment": dict(service.env),
                "name": self.name(f"-{safe_name(service.name)[:20]}"),
                "network": self.network.name,
                "hostname": service.name,
            }
            if service.command is not None:
                kwargs["command"] = service.command
            if service.entrypoint is not None:
                kwargs["entrypoint"] = service.entrypoint
            if service.working_dir:
                kwargs["working_dir"] = service.working_dir
            try:
                container = self.client.containers.create(tag, **kwargs)
                self.containers[service.name] = container
                self._alias(container, service.name)
                container.start()
            except docker.errors.DockerException as exc:
                raise InfraError(f"cannot start service {service.name!r}: {exc}") from exc
            self._wait_healthy(service, container)
        return images

    def _image(self, service: ServiceSpec, log_path: Path) -> str:
        if service.build_dir is not None:
            return build_image(self.client, self.task, log_path, service)
        assert service.image is not None
        with contextlib.suppress(docker.errors.ImageNotFound):
            self.client.images.get(service.image)
            return service.image
        try:
            self.client.images.pull(service.image)
        except docker.errors.APIError as exc:
            raise InfraError(
                f"cannot pull {service.image} for service {service.name!r}: {exc.explanation or exc}"
            ) from exc
        return service.image

    def _alias(self, container: Any, alias: str) -> None:
        """The service's name as a DNS alias on the trial's network (where the engine has DNS there)."""
        assert self.network is not None
        with contextlib.suppress(docker.errors.DockerException):
            self.network.disconnect(container)
        self.network.connect(container, aliases=[alias])

    def _wait_healthy(self, service: ServiceSpec, container: Any) -> None:
        """Running, and — where the compose file has a healthcheck — passing it, within its time."""
        deadline = time.monotonic() + service.healthcheck_timeout_sec
        while True:
            container.reload()
            status = container.attrs.get("State", {}).get("Status")
            if status not in ("running", "created", "configured"):
                logs = container.logs(tail=20).decode(errors="replace").strip()
                raise BuildError(f"service {service.name!r} exited ({status}) at start: {logs[-300:]}")
            if status == "running":
                if service.healthcheck is None:
                    return
                if container.exec_run(["sh", "-c", service.healthcheck]).exit_code == 0:
                    return
            if time.monotonic() > deadline:
                raise InfraError(
                    f"service {service.name!r} did not become healthy within {service.healthcheck_timeout_sec:g}s"
                )
            time.sleep(0.5)

    def main_network_kwargs(self) -> dict[str, Any]:
        """The main container joins the trial's network under its service name, and gets every service's
        address in /etc/hosts too, so names resolve even where the engine's network has no DNS."""
        assert self.network is not None
        hosts = {}
        for name, container in self.containers.items():
            container.reload()
            nets = container.attrs.get("NetworkSettings", {}).get("Networks", {})
            ip = (nets.get(self.network.name) or {}).get("IPAddress")
            if ip:
                hosts[name] = ip
        main = self.task.environment.main_service or "main"
        return {"network": self.network.name, "hostname": main, "extra_hosts": hosts}

    def stop(self) -> None:
        for container in reversed(list(self.containers.values())):
            with contextlib.suppress(docker.errors.DockerException):
                container.remove(force=True)
        self.containers.clear()
        if self.network is not None:
            with contextlib.suppress(docker.errors.DockerException):
                self.network.remove()
            self.network = None
