"""The layout's one rule, checked on the source: imports point down the stages (docs/DESIGN.md).

    contract -> evaluation -> training -> model_export -> index_builder -> service -> demo -> cli

A package imports only from packages to its left; within a package, modules import each other without a circle.
Imports inside functions count as well: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ["contract", "evaluation", "training", "model_export", "index_builder", "service", "demo", "cli"]
# What the torch-free stages must never import: a service image has no torch, the contract is read by every stage.
HEAVY = {"contract": {"torch", "onnx", "faiss", "onnxruntime", "fastapi", "redis"},
         "evaluation": {"torch", "onnx", "faiss", "onnxruntime", "fastapi", "redis"},
         "index_builder": {"torch"}, "service": {"torch"}}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def project_modules() -> dict[str, set[str]]:
    """module name (package.module) -> the modules it imports."""
    return {".".join(path.relative_to(ROOT).with_suffix("").parts): imported_modules(path)
            for layer in LAYERS for path in sorted((ROOT / layer).rglob("*.py"))}


GRAPH = project_modules()


@pytest.mark.parametrize("layer", LAYERS)
def test_a_stage_imports_only_the_stages_below_it(layer):
    allowed = set(LAYERS[: LAYERS.index(layer) + 1])
    upward = sorted(f"{module} imports {target}" for module, targets in GRAPH.items() if module.split(".")[0] == layer
                    for target in targets if target.split(".")[0] in set(LAYERS) - allowed)
    assert upward == []


@pytest.mark.parametrize("layer", sorted(HEAVY))
def test_torch_free_stages_stay_torch_free(layer):
    heavy = sorted(f"{module} imports {target}" for module, targets in GRAPH.items() if module.split(".")[0] == layer
                   for target in targets if target.split(".")[0] in HEAVY[layer])
    assert heavy == []


def test_no_import_circle():
    inside = {module: {target for target in targets if target in GRAPH} for module, targets in GRAPH.items()}
    done: set[str] = set()

    def circle_from(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return [*path[path.index(module):], module]
        if module in done:
            return None
        for target in sorted(inside[module]):
            found = circle_from(target, [*path, module])
            if found:
                return found
        done.add(module)
        return None

    circles = [circle for module in sorted(inside) if (circle := circle_from(module, []))]
    assert circles == []
