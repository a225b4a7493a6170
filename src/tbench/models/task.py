"""Task and Suite (the seed's `terminal-bench.ts`): every task format (Terminal-Bench 2 / Harbor, Terminal-Bench 1,
the seed's JSON suite, command-verified task folders) is loaded into one `Task`, so nothing downstream knows which
format a task came from."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from tbench.models.common import Frozen

Difficulty = Literal["easy", "medium", "hard", "expert", "unknown"]
TaskFormat = Literal["tb2", "tb1", "seed", "command"]

DEFAULT_AGENT_TIMEOUT_SEC = 3600.0
DEFAULT_TEST_TIMEOUT_SEC = 600.0


class ServiceSpec(Frozen):
    """A sidecar container of a multi-container task (a database, an HTTP service): started before the main
    container on the trial's own network, where the main container reaches it by `name`."""

    name: str
    build_dir: Path | None = None
    """Build context; None: `image` is used as it is."""
    dockerfile: str = "Dockerfile"
    image: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    command: list[str] | None = None
    """None: the image's own CMD."""
    entrypoint: list[str] | None = None
    working_dir: str | None = None
    healthcheck: str | None = None
    """A shell command run inside the service until it succeeds, before the main container starts."""
    healthcheck_timeout_sec: float = 60.0


class EnvironmentSpec(Frozen):
    """Where a task runs: a container built from `build_dir` (or `docker_image`), or a host workspace."""

    kind: Literal["docker", "local"]
    build_dir: Path | None = None
    """Docker build context; its content keys the image cache."""
    dockerfile: str = "Dockerfile"
    docker_image: str | None = None
    """Prebuilt image; when it cannot be found or pulled, the task is built from `build_dir`."""
    build_timeout_sec: float = 600.0
    cpus: float | None = None
    memory_mb: int | None = None
    network_mode: Literal["public", "no-network"] = "public"
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None
    """Working directory for agent and tests; `None` takes the image's WORKDIR."""
    main_service: str | None = None
    """The compose service the agent and tests run in (`main` in TB2/Harbor, `client` in TB1), when the task has
    a compose file; its name is the main container's host name on the trial's network."""
    services: list[ServiceSpec] = Field(default_factory=list)
    """Sidecars from the compose file, in start order (dependencies first)."""


class FileCopy(Frozen):
    """A host file or folder copied into the environment at `dest`."""

    src: Path
    dest: str


class SeedVerification(Frozen):
    """The seed's verification block: `test` and `custom` pass on exit 0, `output` compares stdout."""

    type: Literal["test", "output", "custom"]
    command: str | None = None
    expected: str | None = None
    script: str | None = None


class VerifierSpec(Frozen):
    """How the task's own tests decide the verdict."""

    kind: Literal["reward_file", "pytest", "seed"]
    timeout_sec: float = DEFAULT_TEST_TIMEOUT_SEC
    copies: list[FileCopy] = Field(default_factory=list)
    """Copied in only after the agent has finished, so the agent never sees the tests."""
    command: str = ""
    env: dict[str, str] = Field(default_factory=dict)
    seed: SeedVerification | None = None


class SolutionSpec(Frozen):
    """The task's reference solution, run by the `oracle` agent."""

    copies: list[FileCopy] = Field(default_factory=list)
    command: str


class Task(Frozen):
    id: str
    """Unique within the suite and safe as a folder name."""
    name: str
    instruction: str
    format: TaskFormat
    source: str
    """File or folder the task was loaded from, for error messages and reports."""
    difficulty: Difficulty = "unknown"
    category: str = "uncategorized"
    tags: list[str] = Field(default_factory=list)
    agent_timeout_sec: float | None = None
    """`None`: the run's `--timeout` applies."""
    max_turns: int | None = None
    environment: EnvironmentSpec
    verifier: VerifierSpec
    solution: SolutionSpec | None = None
    setup: list[str] = Field(default_factory=list)
    """Shell commands run in the environment before the agent (seed JSON tasks)."""
    hints: list[str] = Field(default_factory=list)
    files_to_modify: list[str] = Field(default_factory=list)
    repository: str | None = None
    branch: str | None = None


class SkippedTask(Frozen):
    """A task of the suite left out by `--skip-invalid`, and why (recorded in config.json and the report)."""

    id: str
    reason: str


class Suite(Frozen):
    name: str
    version: str = "0"
    description: str = ""
    source: str
    tasks: list[Task]
    skipped: list[SkippedTask] = Field(default_factory=list)
    """Invalid tasks left out (only with `skip_invalid`)."""


class TimeLimits(Frozen):
    """`--timeout-multiplier F` and `--agent-timeout S` (Harbor's names) over the limits a task sets."""

    multiplier: float = Field(default=1.0, gt=0)
    """Applied to every agent and verifier limit a task sets (not to `--timeout`, which is already the user's)."""
    agent_timeout_sec: float | None = Field(default=None, gt=0)
    """Overrides the agent limit of every task, multiplier or not."""

    def apply(self, task: Task) -> Task:
        if self.multiplier == 1.0 and self.agent_timeout_sec is None:
            return task
        agent = task.agent_timeout_sec * self.multiplier if task.agent_timeout_sec is not None else None
        if self.agent_timeout_sec is not None:
            agent = self.agent_timeout_sec
        verifier = task.verifier.model_copy(update={"timeout_sec": task.verifier.timeout_sec * self.multiplier})
        return task.model_copy(update={"agent_timeout_sec": agent, "verifier": verifier})

    def describe(self, default_sec: float) -> str:
        """The line a report's header shows."""
        agent = (
            f"agent {self.agent_timeout_sec:g}s for every task (--agent-timeout)"
            if self.agent_timeout_sec is not None
            else f"agent: the task's own limit, else {default_sec:g}s (--timeout)"
        )
        return f"{agent}; task limits x{self.multiplier:g} (--timeout-multiplier)"
