"""How many trials may run at once: free RAM against each task's memory need, CPU count, a RAM reserve,
and a disk guard. Read fresh before every trial start (psutil)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import psutil

from tbench.models.task import Task

MB = 1024 * 1024


@dataclass(frozen=True)
class Budget:
    default_task_mb: int = 2048
    """Memory assumed for a task that declares none (TB2 task.toml `memory_mb` / `memory`)."""
    reserve_mb: int = 2048
    """Free RAM never to be dipped into by starting a trial."""
    min_free_disk_mb: int = 2048
    max_auto_workers: int = 16

    def need_mb(self, task: Task) -> int:
        return task.environment.memory_mb or self.default_task_mb

    def auto_workers(self) -> int:
        """--workers auto: as many as RAM allows, at most 4 per CPU (trials mostly wait on a model) and a cap."""
        vm = psutil.virtual_memory()
        by_ram = max(1, int((vm.available / MB - self.reserve_mb) // self.default_task_mb))
        return max(1, min(by_ram, 4 * (os.cpu_count() or 1), self.max_auto_workers))

    def ram_allows(self, task: Task, running_mb: int) -> bool:
        """Starting `task` keeps free RAM above the reserve, and what running trials may still claim fits too.
        With nothing running the first trial always starts (else a big task could never run)."""
        if running_mb == 0:
            return True
        vm = psutil.virtual_memory()
        need = self.need_mb(task)
        return (vm.available / MB - need >= self.reserve_mb) and (running_mb + need <= vm.total / MB - self.reserve_mb)

    def disk_free_mb(self, path: Path) -> int:
        return int(shutil.disk_usage(path).free // MB)
