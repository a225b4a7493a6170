"""One base class for every place a trial can run. Adding an environment is one new file behind it."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from tbench.models.results import TrialImages
from tbench.models.task import FileCopy, Task


@dataclass(frozen=True)
class ExecResult:
    exit_code: int | None
    """`None` when the command was killed at its timeout."""
    output: str
    """stdout and stderr interleaved (the tail, when very long; the whole is in `log_path`)."""
    timed_out: bool
    duration_ms: int


@dataclass(frozen=True)
class TrialLabels:
    """Who a trial's resources belong to: containers carry these as labels, for clean-up after a crash."""

    run_id: str
    trial_id: str
    task_id: str


OutputHook = Callable[[bytes], None]


@dataclass(frozen=True)
class AgentNeeds:
    """What an agent asks of its environment before it starts. Generic on purpose, so `bench/` never knows
    which agent asked: a read-only file from the host (e.g. the `claude` binary), the host's network (to reach
    a model endpoint on the host's loopback), or consent to run confined commands bare where no sandbox exists
    (`--unsafe-host-agent`)."""

    ro_mounts: tuple[tuple[str, str], ...] = ()
    """(host path, path inside the environment) pairs, mounted read-only (in a container, or in the sandbox of a
    confined host workspace)."""
    host_network: bool = False
    allow_unconfined: bool = False


class Environment(ABC):
    """A fresh place for one trial. `start` may raise `BuildError` / `InfraError`; `stop` never raises."""

    def __init__(self, task: Task, labels: TrialLabels, trial_dir: Path) -> None:
        self.task = task
        self.labels = labels
        self.trial_dir = trial_dir
        self.workdir = "/"
        self.needs = AgentNeeds()
        self.images: TrialImages | None = None
        """Set by `start` where the environment is an image: what the trial ran in."""

    def prepare(self, needs: AgentNeeds) -> None:
        """Record what the agent needs; called once, before `start`."""
        self.needs = needs

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def exec(
        self,
        command: str,
        *,
        timeout_sec: float,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        confined: bool = False,
        on_output: OutputHook | None = None,
    ) -> ExecResult:
        """Run a shell command in `workdir`, killing it (and its children) at `timeout_sec`.

        `confined`: the command is an agent's — it must not touch anything outside the trial's own place (a
        container always is; a host workspace needs a sandbox). `on_output` sees every chunk as it arrives,
        e.g. to parse or redact a stream before anything reaches the disk."""

    @abstractmethod
    def copy_in(self, copy: FileCopy) -> None: ...

    @abstractmethod
    def copy_out(self, path: str, dest_dir: Path) -> bool:
        """Copy a file or folder out into `dest_dir`; False when it does not exist."""

    @abstractmethod
    def stop(self) -> None: ...

    def __enter__(self) -> Environment:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class OutputSink:
    """Collects a command's output: everything to an optional log file, a bounded tail in memory."""

    def __init__(self, log_path: Path | None, keep_bytes: int = 1 << 20, on_chunk: OutputHook | None = None) -> None:
        self.keep = keep_bytes
        self.buf = bytearray()
        self.fh = None
        self.on_chunk = on_chunk
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            self.fh = log_path.open("ab")

    def write(self, chunk: bytes) -> None:
        if self.on_chunk is not None:
            self.on_chunk(chunk)
        if self.fh is not None:
            self.fh.write(chunk)
            self.fh.flush()
        self.buf += chunk
        if len(self.buf) > 2 * self.keep:
            del self.buf[: len(self.buf) - self.keep]

    def close(self) -> str:
        if self.fh is not None:
            self.fh.close()
            self.fh = None
        return self.buf[-self.keep :].decode("utf-8", errors="replace")


def ms_since(t0: float) -> int:
    return int((time.monotonic() - t0) * 1000)
