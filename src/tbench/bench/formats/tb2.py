"""Terminal-Bench 2 / Harbor task folders: `task.toml`, `instruction.md`, `environment/`, `solution/`, `tests/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from tbench.bench.formats._common import (
    check_task_id,
    parse_memory_mb,
    read_instruction,
    read_structured,
    validate,
)
from tbench.bench.formats.compose import find_compose, load_compose
from tbench.errors import UserError
from tbench.models.task import EnvironmentSpec, FileCopy, ServiceSpec, SolutionSpec, Task, VerifierSpec

REWARD_DIR = "/logs/verifier"


class _Section(BaseModel):
    # Harbor's schema grows often; unknown keys are accepted, known ones are typed.
    model_config = ConfigDict(extra="allow")


class _TaskSection(_Section):
    name: str | None = None
    description: str | None = None


class _Verifier(_Section):
    timeout_sec: float = Field(default=600.0, gt=0)
    env: dict[str, str] = Field(default_factory=dict)


class _Agent(_Section):
    timeout_sec: float | None = Field(default=None, gt=0)


class _Environment(_Section):
    build_timeout_sec: float = Field(default=600.0, gt=0)
    docker_image: str | None = None
    cpus: float | None = Field(default=None, gt=0)
    memory_mb: int | None = Field(default=None, gt=0)
    memory: str | int | None = None
    network_mode: Literal["public", "no-network", "allowlist"] | None = None
    allow_internet: bool | None = None
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None


class _Metadata(_Section):
    difficulty: str | None = None
    category: str | None = None
    tags: list[str] = Field(default_factory=list)


class TaskToml(_Section):
    version: str | None = None
    task: _TaskSection = Field(default_factory=_TaskSection)
    metadata: _Metadata = Field(default_factory=_Metadata)
    verifier: _Verifier = Field(default_factory=_Verifier)
    agent: _Agent = Field(default_factory=_Agent)
    environment: _Environment = Field(default_factory=_Environment)


def is_tb2_task(folder: Path) -> bool:
    return (folder / "task.toml").is_file()


def _difficulty(value: str | None) -> Any:
    v = (value or "unknown").lower()
    return v if v in ("easy", "medium", "hard", "expert") else "unknown"


def load_tb2_task(folder: Path, *, task_id: str | None = None, name: str | None = None) -> Task:
    toml_path = folder / "task.toml"
    cfg = validate(TaskToml, read_structured(toml_path), toml_path)
    env = cfg.environment
    env_dir = folder / "environment"
    build_dir: Path | None = env_dir if (env_dir / "Dockerfile").is_file() else None
    dockerfile, main_service = "Dockerfile", None
    services: list[ServiceSpec] = []
    compose = find_compose(env_dir)
    extra_env: dict[str, str] = {}
    workdir = env.workdir
    if compose is not None:
        main, services = load_compose(compose, ("main",))
        main_service, extra_env, workdir = main.name, main.env, env.workdir or main.working_dir
        if main.build_dir is not None:
            build_dir, dockerfile = main.build_dir, main.dockerfile
    if build_dir is None and not env.docker_image:
        raise UserError("missing environment/Dockerfile (and no [environment] docker_image)", path=folder)
    test_sh = folder / "tests" / "test.sh"
    if not test_sh.is_file():
        raise UserError("missing tests/test.sh; the verdict comes from the task's own tests", path=folder)
    if env.network_mode is not None:
        network = "no-network" if env.network_mode == "no-network" else "public"
    else:
        network = "no-network" if env.allow_internet is False else "public"
    solve = folder / "solution" / "solve.sh"
    return Task(
        id=check_task_id(task_id or folder.name, toml_path, "folder name"),
        name=name or cfg.task.name or folder.name,
        instruction=read_instruction(folder / "instruction.md"),
        format="tb2",
        source=str(folder),
        difficulty=_difficulty(cfg.metadata.difficulty),
        category=cfg.metadata.category or "uncategorized",
        tags=list(cfg.metadata.tags),
        agent_timeout_sec=cfg.agent.timeout_sec,
        environment=EnvironmentSpec(
            kind="docker",
            build_dir=build_dir,
            dockerfile=dockerfile,
            docker_image=env.docker_image,
            build_timeout_sec=env.build_timeout_sec,
            cpus=env.cpus,
            memory_mb=env.memory_mb or parse_memory_mb(env.memory, toml_path, "environment.memory"),
            network_mode=network,
            env={**extra_env, **env.env},
            workdir=workdir,
            main_service=main_service,
            services=services,
        ),
        verifier=VerifierSpec(
            kind="reward_file",
            timeout_sec=cfg.verifier.timeout_sec,
            copies=[FileCopy(src=folder / "tests", dest="/tests")],
            command="bash /tests/test.sh",
            env=dict(cfg.verifier.env),
        ),
        solution=SolutionSpec(
            copies=[FileCopy(src=folder / "solution", dest="/solution")], command="bash /solution/solve.sh"
        )
        if solve.is_file()
        else None,
    )
