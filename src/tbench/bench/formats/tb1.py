"""Terminal-Bench 1 task folders: `task.yaml`, `Dockerfile` / `docker-compose.yaml` (service `client` plus any
sidecars), `solution.sh`, `run-tests.sh`, `tests/`. Scored by parsing pytest output the way `tb` does."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from tbench.bench.formats._common import check_task_id, read_structured, validate
from tbench.bench.formats.compose import find_compose, load_compose
from tbench.errors import UserError
from tbench.models.task import EnvironmentSpec, FileCopy, ServiceSpec, SolutionSpec, Task, VerifierSpec


class TaskYaml(BaseModel):
    model_config = ConfigDict(extra="allow")

    instruction: str = Field(min_length=1)
    difficulty: Literal["easy", "medium", "hard", "unknown"] = "unknown"
    category: str = "software_engineering"
    tags: list[str] = Field(default_factory=list)
    parser_name: Literal["pytest"] = "pytest"
    max_agent_timeout_sec: float = Field(default=360.0, gt=0)
    max_test_timeout_sec: float = Field(default=60.0, gt=0)


def is_tb1_task(folder: Path) -> bool:
    return (folder / "task.yaml").is_file()


def load_tb1_task(folder: Path) -> Task:
    yaml_path = folder / "task.yaml"
    cfg = validate(TaskYaml, read_structured(yaml_path), yaml_path)
    build_dir, dockerfile, main_service = folder, "Dockerfile", None
    services: list[ServiceSpec] = []
    env: dict[str, str] = {}
    compose = find_compose(folder)
    if compose is not None:
        main, services = load_compose(compose, ("client",))
        main_service, env = main.name, main.env
        if main.build_dir is not None:
            build_dir, dockerfile = main.build_dir, main.dockerfile
    if not (build_dir / dockerfile).is_file():
        raise UserError(f"missing {dockerfile}", path=build_dir)
    if not (folder / "run-tests.sh").is_file():
        raise UserError("missing run-tests.sh; the verdict comes from the task's own tests", path=folder)
    copies = [FileCopy(src=folder / "run-tests.sh", dest="/tests/run-tests.sh")]
    if (folder / "tests").is_dir():
        copies.append(FileCopy(src=folder / "tests", dest="/tests"))
    solution = folder / "solution.sh"
    return Task(
        id=check_task_id(folder.name, yaml_path, "folder name"),
        name=folder.name,
        instruction=cfg.instruction.strip(),
        format="tb1",
        source=str(folder),
        difficulty=cfg.difficulty,
        category=cfg.category,
        tags=list(cfg.tags),
        agent_timeout_sec=cfg.max_agent_timeout_sec,
        environment=EnvironmentSpec(
            kind="docker",
            build_dir=build_dir,
            dockerfile=dockerfile,
            env=env,
            main_service=main_service,
            services=services,
        ),
        verifier=VerifierSpec(
            kind="pytest",
            timeout_sec=cfg.max_test_timeout_sec,
            copies=copies,
            command="bash /tests/run-tests.sh",
            env={"TEST_DIR": "/tests"},
        ),
        solution=SolutionSpec(copies=[FileCopy(src=solution, dest="/solution.sh")], command="bash /solution.sh")
        if solution.is_file()
        else None,
    )
