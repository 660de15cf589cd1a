"""The package's layers only point down: no import cycle, no import of a higher layer (read from the source).

Every ``import`` and ``from … import`` of a ``mura`` module counts — at the top of a file, inside
a function, or under ``TYPE_CHECKING`` — so a lazy import cannot hide a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"

# Lowest first. A module may import its own layer and those below, never one above.
LAYERS: list[tuple[str, ...]] = [
    ("mura", "mura.errors"),  # the package (its version) and the error types
    ("mura.config", "mura.settings"),  # params.yaml as typed sections; the MURA_* runtime settings
    ("mura.stage", "mura.tracking", "mura.deploy", "mura.parallel"),  # the shell: logging, seeds, MLflow, servers, workers
    ("mura.data",),
    ("mura.modeling",),
    ("mura.evaluation",),
    ("mura.runtime",),  # what a served process needs: loading, runners, the ensemble's answer, the pyfunc
    ("mura.operations",),  # metrics, audit, profiles and drift, server logging
    ("mura.packaging",),  # register, export, the precision check, the model card
    ("mura.apps", "mura.integrations"),  # the HTTP apps and the DICOM node
    ("mura.api", "mura.cli", "mura.workspace"),  # entry points
]


def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / "mura").rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, known: set[str]) -> set[str]:
    """The ``mura`` modules ``path`` imports (a ``from pkg import name`` of a submodule counts as that submodule)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "mura" and node.level == 0:
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                found.add(full if full in known else node.module)
        elif isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "mura"}
    return found


def _rank(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or (prefix != "mura" and module.startswith(prefix + ".")):
                best = rank
    if best is None:
        pytest.fail(f"{module} is in no layer: add it to LAYERS in {Path(__file__).name}")
    return best


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, set(modules)) - {name} for name, path in modules.items()}


def test_every_module_has_a_layer() -> None:
    for module in _graph():
        _rank(module)


def test_no_module_imports_a_higher_layer() -> None:
    upward = sorted(
        f"{module} (layer {_rank(module)}) imports {target} (layer {_rank(target)})"
        for module, targets in _graph().items()
        for target in targets
        if _rank(target) > _rank(module)
    )
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles = []

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph.get(module, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*path[path.index(target) :], target]))
            elif target not in state:
                visit(target, [*path, target])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_function_level_and_type_checking_imports(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from mura.apps import web\n"
        "def f():\n    from mura.evaluation.ensemble import run_ensemble\n    import mura.cli\n"
    )
    known = {"mura.apps", "mura.apps.web", "mura.evaluation.ensemble", "mura.cli"}
    assert _imports(source, known) == {"mura.apps.web", "mura.evaluation.ensemble", "mura.cli"}
