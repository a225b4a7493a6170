"""The package map (docs/tbench/README.md) holds: no package imports one above it or beside it, and no import
cycle between files. Every import counts — module level, inside functions, under TYPE_CHECKING — since each is a
dependency a reader must follow. Run with `-s` to see the package graph."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tbench"

#: Bottom to top. A package may import only packages in lower layers (and itself).
LAYERS: list[set[str]] = [
    {"tbench", "errors", "fsutil", "proc", "secrets"},
    {"models"},
    {"stats"},
    {"bench", "llm"},
    {"agents"},
    {"archivist"},
    {"report"},
    {"overnight"},
    {"trainer"},
    {"cli"},
]
LAYER = {pkg: n for n, layer in enumerate(LAYERS) for pkg in layer}


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "tbench"


def imports_of(path: Path, module: str) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name.split(".")[0] == "tbench"}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = module.split(".")[: len(module.split(".")) - node.level + (1 if is_pkg else 0)]
                base = ".".join([*anchor, *([base] if base else [])])
            if base.split(".")[0] != "tbench":
                continue
            for a in node.names:  # `from tbench.models import layout` imports the module tbench.models.layout
                out.add(f"{base}.{a.name}" if (SRC.parent / f"{base}.{a.name}".replace(".", "/")).exists() or
                        (SRC.parent / (f"{base}.{a.name}".replace(".", "/") + ".py")).exists() else base)  # fmt: skip
    return out


def graph() -> dict[str, set[str]]:
    files = [p for p in SRC.rglob("*.py") if "examples" not in p.relative_to(SRC).parts]
    known = {module_name(p) for p in files}
    out: dict[str, set[str]] = {}
    for p in files:
        mod = module_name(p)
        out[mod] = {m for m in imports_of(p, mod) if m in known and m != mod}
    return out


def package_graph(g: dict[str, set[str]]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for mod, deps in g.items():
        out[package_of(mod)] |= {package_of(d) for d in deps} - {package_of(mod)}
    return out


def find_cycle(g: dict[str, set[str]]) -> list[str] | None:
    """One import cycle between files, or None (packages' __init__ re-exports count like any import)."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        stack.append(n)
        for d in sorted(g.get(n, ())):
            if state.get(d) == 1:
                return [*stack[stack.index(d) :], d]
            if d not in state and (found := visit(d)):
                return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(g):
        if n not in state and (found := visit(n)):
            return found
    return None


def test_every_package_has_a_layer() -> None:
    assert set(package_graph(graph())) - set(LAYER) == set()


def test_no_package_imports_one_above_or_beside_it() -> None:
    g = graph()
    pg = package_graph(g)
    print("\npackage graph (bottom to top):")
    for layer in LAYERS:
        for pkg in sorted(layer):
            if pkg in pg:
                print(f"  {pkg:10} -> {', '.join(sorted(pg[pkg])) or '(nothing)'}")
    wrong = sorted(
        f"{mod} imports {dep}"
        for mod, deps in g.items()
        for dep in deps
        if package_of(dep) != package_of(mod) and LAYER[package_of(dep)] >= LAYER[package_of(mod)]
    )
    assert wrong == []


def test_models_imports_only_the_base_layer() -> None:
    g = graph()
    outside = sorted(
        f"{m} imports {d}"
        for m, deps in g.items()
        if package_of(m) == "models"
        for d in deps
        if package_of(d) not in ("models", *LAYERS[0])
    )
    assert outside == []


def test_no_import_cycle_between_files() -> None:
    assert find_cycle(graph()) is None


def test_the_checks_can_fail() -> None:
    """The cycle finder and the layer rule see what they are meant to see (so a pass means something)."""
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
    assert LAYER["cli"] > LAYER["trainer"] > LAYER["overnight"] > LAYER["report"] > LAYER["models"]
