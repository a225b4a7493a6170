"""A fresh workspace folder on the host per trial, for seed-JSON tasks that name no container."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

from tbench.bench.environments.base import Environment, ExecResult, OutputSink, ms_since
from tbench.bench.tasks import FileCopy


class LocalEnvironment(Environment):
    """Commands run with the workspace as working directory, each in its own process group so a timeout
    kills everything it started."""

    def start(self) -> None:
        self._live: set[int] = set()
        self.workspace = self.trial_dir / "workspace"
        if self.workspace.exists():
            shutil.rmtree(self.workspace)
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
    ) -> ExecResult:
        t0 = time.monotonic()
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=self.workspace,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._live.add(proc.pid)
        sink = OutputSink(log_path)
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
        """Kill what is still running (an agent thread cut short by Ctrl-C); the workspace stays for inspection."""
        for pgid in list(getattr(self, "_live", ())):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
