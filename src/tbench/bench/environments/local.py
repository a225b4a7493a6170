"""A fresh workspace folder on the host per trial, for seed-JSON tasks that name no container.

An agent's commands (`exec(confined=True)`) run under bubblewrap and see only what programs need to run —
the system folders read-only (`SYSTEM_DIRS`), a private /tmp and an empty private home — plus their own
workspace, writable, and any read-only file the agent declared (`AgentNeeds.ro_mounts`). The run folder, the
suite file (with its tests and reference solutions) and other trials' workspaces do not exist in there; the
process namespace is private and credentials are dropped from the environment. The task's own commands
(setup, tests, the oracle's reference solution) run as the suite wrote them.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from tbench.bench.environments.base import Environment, ExecResult, OutputHook, OutputSink, ms_since
from tbench.bench.environments.worktree import add_worktree, remove_worktree
from tbench.errors import InfraError, TrialError
from tbench.models.task import FileCopy
from tbench.proc import die_with_parent
from tbench.secrets import without_secrets

#: Path of the bubblewrap binary; empty disables confinement (then model agents need --unsafe-host-agent).
BWRAP_ENV = "TBENCH_BWRAP"


@dataclass(frozen=True)
class Confinement:
    bwrap: str | None
    """A bubblewrap that works on this machine, or None."""
    reason: str = ""
    """Why there is none."""

    @property
    def available(self) -> bool:
        return self.bwrap is not None


def confinement() -> Confinement:
    """Whether agent commands can be confined on this host (probed once per configured binary)."""
    return _probe(os.environ.get(BWRAP_ENV))


@functools.cache
def _probe(configured: str | None) -> Confinement:
    if configured == "":
        return Confinement(None, f"confinement is switched off ({BWRAP_ENV} is empty)")
    path = configured or shutil.which("bwrap")
    if not path:
        return Confinement(None, "bubblewrap (bwrap) is not installed; on Debian/Ubuntu: apt-get install bubblewrap")
    try:
        with tempfile.TemporaryDirectory(prefix="tbench-bwrap-probe-") as ws:  # the same mounts a trial gets
            probe = subprocess.run(
                [path, *_bwrap_args(ws, ws), "touch", "inside"], capture_output=True, text=True, timeout=20, check=False
            )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Confinement(None, f"{path} cannot run: {exc}")
    if probe.returncode != 0:
        why = (probe.stderr.strip().splitlines() or [f"exit {probe.returncode}"])[-1]
        return Confinement(None, f"{path} does not work here ({why}); user namespaces may be disabled")
    return Confinement(path)


#: Folders a confined command sees (read-only, where they exist): what programs need to run, nothing of
#: the user's (no home, no /tmp, no /work or wherever the run folder lives).
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/var/lib")


def _system_mounts() -> list[str]:
    args: list[str] = []
    for path in SYSTEM_DIRS:
        if os.path.islink(path):  # merged /usr: /bin -> usr/bin
            args += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            args += ["--ro-bind", path, path]
    return args


def _bwrap_args(workspace: str, chdir: str, ro_mounts: tuple[tuple[str, str], ...] = ()) -> list[str]:
    home = os.environ.get("HOME", "")
    private_home = ["--tmpfs", home] if home.startswith("/") and home != "/" else []
    extra = [arg for host, inside in ro_mounts for arg in ("--ro-bind", host, inside)]
    return [
        *_system_mounts(),
        "--tmpfs", "/tmp",
        *private_home,
        *extra,
        "--bind", workspace, workspace,
        "--dev", "/dev",
        "--proc", "/proc",
        "--unshare-pid",
        "--die-with-parent",
        "--chdir", chdir,
    ]  # fmt: skip


class LocalEnvironment(Environment):
    """Commands run with the workspace as working directory, each in its own process group so a timeout
    kills everything it started."""

    def start(self) -> None:
        self._live: set[int] = set()
        self.workspace = self.trial_dir / "workspace"
        if self.workspace.exists():
            shutil.rmtree(self.workspace)
        self._repo: Path | None = None
        if self.task.repository:  # a git worktree per trial, removed in stop()
            self.workspace.parent.mkdir(parents=True, exist_ok=True)
            self._repo = add_worktree(self.task.repository, self.task.branch, self.workspace)
        else:
            self.workspace.mkdir(parents=True)
        self.workdir = str(self.workspace)

    def _host_path(self, path: str) -> Path:
        target = (self.workspace / path.lstrip("/")).resolve()
        if not target.is_relative_to(self.workspace.resolve()):
            raise ValueError(f"{path} escapes the workspace")
        return target

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
        t0 = time.monotonic()
        argv = ["bash", "-c", command]
        inherited: dict[str, str] = dict(os.environ)
        if confined:
            inherited = without_secrets(inherited)
            jail = confinement()
            if jail.bwrap is not None:
                ws = str(self.workspace.resolve())
                argv = [jail.bwrap, *_bwrap_args(ws, ws, self.needs.ro_mounts), *argv]
            elif not self.needs.allow_unconfined:
                raise InfraError(f"refusing to run an agent command unconfined on the host: {jail.reason}")
        proc = subprocess.Popen(
            argv,
            cwd=self.workspace,
            env={**inherited, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,  # a killed worker takes its host commands with it
        )
        self._live.add(proc.pid)
        sink = OutputSink(log_path, on_chunk=on_output)
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for chunk in iter(lambda: os.read(stdout.fileno(), 65536), b""):
                sink.write(chunk)

        reader = threading.Thread(target=pump, daemon=True)
        reader.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout_sec)
        except subprocess.TimeoutExpired:
            timed_out = True
        finally:
            # The group may outlive its leader (background children holding the pipe): end it either way.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            self._live.discard(proc.pid)
            reader.join(timeout=5)
            stdout.close()
        return ExecResult(
            exit_code=None if timed_out else proc.returncode,
            output=sink.close(),
            timed_out=timed_out,
            duration_ms=ms_since(t0),
        )

    def copy_in(self, copy: FileCopy) -> None:
        target = self._host_path(copy.dest)
        target.parent.mkdir(parents=True, exist_ok=True)
        if copy.src.is_dir():
            shutil.copytree(copy.src, target, dirs_exist_ok=True)
        else:
            shutil.copy2(copy.src, target)

    def copy_out(self, path: str, dest_dir: Path) -> bool:
        source = self._host_path(path)
        if not source.exists():
            return False
        dest_dir.mkdir(parents=True, exist_ok=True)
        if source.is_dir():
            shutil.copytree(source, dest_dir / source.name, dirs_exist_ok=True)
        else:
            shutil.copy2(source, dest_dir / source.name)
        return True

    def stop(self) -> None:
        """Kill what is still running (an agent thread cut short by Ctrl-C). A plain workspace stays for
        inspection; a git worktree is removed so the repository does not collect stale entries."""
        for pgid in list(getattr(self, "_live", ())):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
        repo = getattr(self, "_repo", None)
        if repo is not None:
            self._repo = None
            with contextlib.suppress(TrialError):
                remove_worktree(repo, self.workspace)
