"""The house: data flows one way through the package's floors, and no two modules import each other.

Every ``import`` in the package is read (lazy imports inside functions and ``TYPE_CHECKING`` blocks too),
so a shortcut up the flow fails here rather than in a review.
"""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "stylespace"

# The floors of docs/architecture.md: a module may import its own floor's packages and those below.
FLOORS = {
    "progress": 0, "utils": 0,
    "data": 1,
    "models": 2,
    "training": 3, "evaluation": 3, "embeddings": 3, "inference": 3, "ray_embedding": 3, "text": 3,
    "index": 4, "compat": 4, "descriptors": 4, "audit": 4,
    "recommend": 5,
    "service": 6, "report": 6,
    "cli": 7, "__main__": 8, "__init__": 8,
}


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        found[name] = path
    return found


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The package modules ``path`` imports (``from pkg import sub`` counts as importing ``pkg.sub``)."""
    is_package = path.name == "__init__.py"
    here = name if is_package else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "stylespace")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here.split(".")[: len(here.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "stylespace":
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in modules else target)
    found.discard(name)
    return found


def _floor(module: str) -> tuple[str, int | None]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    return top, FLOORS.get(top)


def test_every_package_has_a_floor():
    tops = {_floor(m)[0] for m in _modules()}
    assert not [t for t in tops if t not in FLOORS], "add the new package to FLOORS and docs/architecture.md"


def test_no_module_imports_from_above_its_floor():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        top, floor = _floor(name)
        for target in _imports(path, name, modules):
            target_top, target_floor = _floor(target)
            if target_top != top and target_floor is not None and floor is not None and target_floor > floor:
                upward.append(f"{name} imports {target} ({target_top} is above {top})")
    assert not upward, "\n".join(upward)


def test_no_two_modules_import_each_other():
    modules = _modules()
    edges = {name: _imports(path, name, modules) for name, path in modules.items()}
    mutual = sorted({tuple(sorted((a, b))) for a, targets in edges.items() for b in targets
                     if a in edges.get(b, ()) and not (a.startswith(b + ".") or b.startswith(a + "."))})
    # a package's __init__ re-exporting its own modules, and those modules importing siblings through
    # the package, is not a cycle between two modules
    assert not mutual, "\n".join(f"{a} <-> {b}" for a, b in mutual)


def test_docs_architecture_lists_the_same_floors():
    """docs/architecture.md's floor table says what FLOORS says, package by package."""
    import re

    doc = (PACKAGE.parents[1] / "docs" / "architecture.md").read_text(encoding="utf-8")
    documented = {}
    for floor, packages in re.findall(r"^\|\s*(\d+)\s*\|([^|]+)\|", doc, flags=re.MULTILINE):
        for name in re.findall(r"`([\w_]+)`", packages):
            documented[name] = int(floor)
    assert documented == FLOORS
