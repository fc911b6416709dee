"""The package's folders follow the pipeline: no module imports from a later stage, and no two
modules import each other (directly or around a loop), counting imports inside functions too."""

from __future__ import annotations

import ast
from pathlib import Path

import neurosteer

PACKAGE = Path(neurosteer.__file__).parent
STAGES = ("util", "model", "metrics", "discovery", "interventions", "evaluation", "inspection", "export", "runs", "cli")
"""Sub-packages in the order data flows; each may import only from itself and the ones before it."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The neurosteer modules ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("neurosteer"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("neurosteer"))
    return found


def stage(module: str) -> int | None:
    parts = module.split(".")
    return STAGES.index(parts[1]) if len(parts) > 1 and parts[1] in STAGES else None


def graph() -> dict[str, set[str]]:
    known = modules()
    return {name: imports(path, set(known)) for name, path in known.items()}


def test_every_module_lives_in_a_stage():
    loose = [name for name in modules() if name != "neurosteer" and stage(name) is None]
    assert loose == [], f"modules outside the stage folders: {loose}"


def test_no_module_imports_from_a_later_stage():
    upward = [
        (name, target)
        for name, targets in graph().items()
        if name != "neurosteer"
        for target in targets
        if stage(target) is None or stage(target) > stage(name)
    ]
    assert upward == [], f"imports against the pipeline (or of the package root): {upward}"


def test_no_import_loops():
    edges = graph()
    state: dict[str, int] = {}
    loops = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            if state.get(target) == 1:
                loops.append([*trail[trail.index(target) :], target] if target in trail else [node, target])
            elif target not in state:
                visit(target, [*trail, target])
        state[node] = 2

    for start in sorted(edges):
        if start not in state:
            visit(start, [start])
    assert loops == [], f"import loops: {loops}"
