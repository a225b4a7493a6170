"""A task's compose file (TB2/Harbor `environment/docker-compose.yaml`, TB1 `docker-compose.yaml`) read into
the main service plus sidecars (`ServiceSpec`), which the Docker environment builds and starts itself through
the engine's API on a per-trial network — no compose binary is used, so tasks run the same on a machine
without one.

Only what changes what a test sees is taken: build context and Dockerfile, image, environment, command,
entrypoint, working directory, healthcheck and start order. Keys that only matter to a long-lived deployment
(ports, restart, container names, named volumes) are ignored; a key tbench cannot honour (a bind mount of a
host folder, a privileged or host-network service) is refused in one line, never silently dropped.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbench.bench.formats._common import read_structured
from tbench.errors import UserError
from tbench.models.task import ServiceSpec

COMPOSE_NAMES = ("docker-compose.yaml", "docker-compose.yml", "compose.yaml", "compose.yml")
#: Keys that matter only to a long-lived deployment, or that tbench sets itself.
IGNORED = frozenset(
    {"container_name", "ports", "expose", "restart", "networks", "labels", "logging", "stdin_open", "tty",
     "init", "hostname", "deploy", "mem_limit", "cpus", "platform", "pull_policy", "profiles", "extra_hosts"}
)  # fmt: skip
TAKEN = frozenset(
    {"build", "image", "environment", "env_file", "command", "entrypoint", "working_dir", "healthcheck",
     "depends_on", "volumes"}
)  # fmt: skip
_UNSET_VAR = re.compile(r"\$\{[^}]*\}")


@dataclass(frozen=True)
class MainService:
    name: str
    build_dir: Path | None
    dockerfile: str
    image: str | None
    env: dict[str, str]
    working_dir: str | None


def find_compose(folder: Path) -> Path | None:
    return next((folder / n for n in COMPOSE_NAMES if (folder / n).is_file()), None)


def _words(value: Any, path: Path, where: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return shlex.split(value)
    if isinstance(value, list) and all(isinstance(v, str | int | float) for v in value):
        return [str(v) for v in value]
    raise UserError(f"expected a string or a list of strings, got {value!r}", path=path, field=where)


def _env(value: Any, path: Path, where: str) -> dict[str, str]:
    if value is None:
        return {}
    if isinstance(value, dict):
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    if isinstance(value, list):
        out = {}
        for item in value:
            key, _, val = str(item).partition("=")
            out[key] = val
        return out
    raise UserError(f"expected a mapping or a list of KEY=VALUE, got {value!r}", path=path, field=where)


def _env_files(value: Any, base: Path, path: Path, where: str) -> dict[str, str]:
    files = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    out: dict[str, str] = {}
    for name in files:
        f = base / str(name if isinstance(name, str) else name.get("path", ""))
        if not f.is_file():
            raise UserError(f"env_file {f} does not exist", path=path, field=where)
        for line in f.read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, val = line.partition("=")
                out[key.strip()] = val.strip().strip("'\"")
    return out


def _build(value: Any, base: Path, path: Path, where: str) -> tuple[Path, str]:
    if isinstance(value, str):
        context, dockerfile = value, "Dockerfile"
    elif isinstance(value, dict):
        context, dockerfile = str(value.get("context", ".")), str(value.get("dockerfile", "Dockerfile"))
    else:
        raise UserError(f"expected a path or a mapping with context/dockerfile, got {value!r}", path=path, field=where)
    folder = (base / context).resolve()
    if not (folder / dockerfile).is_file():
        raise UserError(f"build context {folder} has no {dockerfile}", path=path, field=where)
    return folder, dockerfile


def _healthcheck(value: Any, path: Path, where: str) -> tuple[str | None, float]:
    if not isinstance(value, dict) or value.get("disable"):
        return None, 60.0
    test = value.get("test")
    if isinstance(test, list):
        if not test or test[0] == "NONE":
            return None, 60.0
        words = [str(t) for t in test]
        command = words[1] if words[0] == "CMD-SHELL" and len(words) > 1 else shlex.join(words[1:] or words)
    elif isinstance(test, str):
        command = test
    else:
        raise UserError(f"healthcheck.test must be a string or a list, got {test!r}", path=path, field=where)
    retries = int(value.get("retries", 30) or 30)
    return command, float(max(60, retries * 2))


def _check_volumes(value: Any, path: Path, where: str) -> None:
    """Named volumes (a database's data folder) are fine: each trial starts empty anyway. A bind mount of a host
    folder would share state between trials and is refused."""
    for item in value or []:
        source = item.split(":", 1)[0] if isinstance(item, str) else str((item or {}).get("source", ""))
        kind = "" if isinstance(item, str) else str((item or {}).get("type", "volume"))
        if (":" not in str(item) and isinstance(item, str)) or _UNSET_VAR.match(source):
            continue  # an anonymous volume, or a harness's own log mount (TB1's ${T_BENCH_...} paths)
        if kind == "bind" or source.startswith(("/", ".", "~", "$")):
            raise UserError(
                f"bind mounts of host folders are not supported ({item!r}); copy the files into the image "
                "in its Dockerfile instead",
                path=path,
                field=where,
            )


def _order(services: dict[str, dict[str, Any]], path: Path) -> list[str]:
    """Sidecars in start order: each after what it depends on."""
    done: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in done:
            return
        if name in visiting:
            raise UserError(f"depends_on has a cycle through {name!r}", path=path, field=f"services.{name}")
        visiting.add(name)
        deps = services[name].get("depends_on") or []
        for dep in deps if isinstance(deps, list) else list(deps):
            if dep not in services:
                raise UserError(f"depends on unknown service {dep!r}", path=path, field=f"services.{name}.depends_on")
            visit(dep)
        visiting.discard(name)
        done.append(name)

    for name in services:
        visit(name)
    return done


def load_compose(path: Path, main_names: tuple[str, ...]) -> tuple[MainService, list[ServiceSpec]]:
    """The main service (the first of `main_names` present) and the sidecars in start order."""
    data = read_structured(path)
    services = data.get("services") if isinstance(data, dict) else None
    if not isinstance(services, dict) or not services:
        raise UserError("has no services", path=path, field="services")
    main_name = next((n for n in main_names if n in services), None)
    if main_name is None:
        raise UserError(
            f"needs a main service named {' or '.join(repr(n) for n in main_names)} (where the agent and the "
            f"tests run); it has {', '.join(map(str, services))}",
            path=path,
            field="services",
        )
    base = path.parent
    parsed: dict[str, dict[str, Any]] = {}
    for name, svc in services.items():
        where = f"services.{name}"
        if not isinstance(svc, dict):
            raise UserError(f"expected a mapping, got {svc!r}", path=path, field=where)
        unknown = sorted(k for k in svc if k not in TAKEN and k not in IGNORED)
        if unknown:
            raise UserError(
                f"uses {', '.join(unknown)}, which tbench cannot honour; run this task with another harness or "
                "drop it with --tasks",
                path=path,
                field=where,
            )
        _check_volumes(svc.get("volumes"), path, f"{where}.volumes")
        parsed[str(name)] = svc
    order = _order(parsed, path)

    def image_of(svc: dict[str, Any]) -> str | None:
        image = svc.get("image")
        return None if image is None or _UNSET_VAR.search(str(image)) else str(image)

    def spec_of(name: str) -> dict[str, Any]:
        svc, where = parsed[name], f"services.{name}"
        out: dict[str, Any] = {"image": image_of(svc), "build_dir": None, "dockerfile": "Dockerfile"}
        if "build" in svc:
            out["build_dir"], out["dockerfile"] = _build(svc["build"], base, path, f"{where}.build")
        elif out["image"] is None:
            raise UserError("has neither build nor image", path=path, field=where)
        env = _env_files(svc.get("env_file"), base, path, f"{where}.env_file")
        env.update(_env(svc.get("environment"), path, f"{where}.environment"))
        out["env"] = {k: v for k, v in env.items() if not _UNSET_VAR.search(v)}
        out["working_dir"] = svc.get("working_dir")
        return out

    m = spec_of(main_name)
    main = MainService(main_name, m["build_dir"], m["dockerfile"], m["image"], m["env"], m["working_dir"])
    sidecars = []
    for name in order:
        if name == main_name:
            continue
        s, svc, where = spec_of(name), parsed[name], f"services.{name}"
        check, check_timeout = _healthcheck(svc.get("healthcheck"), path, f"{where}.healthcheck")
        sidecars.append(
            ServiceSpec(
                name=name,
                build_dir=s["build_dir"],
                dockerfile=s["dockerfile"],
                image=s["image"],
                env=s["env"],
                command=_words(svc.get("command"), path, f"{where}.command"),
                entrypoint=_words(svc.get("entrypoint"), path, f"{where}.entrypoint"),
                working_dir=s["working_dir"],
                healthcheck=check,
                healthcheck_timeout_sec=check_timeout,
            )
        )
    return main, sidecars
