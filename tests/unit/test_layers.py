"""The package layers import only downwards: abi <- hw <- kernel <- vmm <- attest <- cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "src" / "copra"
ALLOWED = {
    "abi": {"abi"},
    "hw": {"abi", "hw"},
    "kernel": {"abi", "hw", "kernel"},
    "vmm": {"abi", "hw", "kernel", "vmm"},
    "attest": {"abi", "hw", "kernel", "vmm", "attest"},
}


def copra_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    layers: set[str] = set()
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            parts = name.split(".")
            if parts[0] == "copra" and len(parts) > 1:
                layers.add(parts[1])
    return layers


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_layers_below(layer: str) -> None:
    offenders = {}
    for path in sorted((PACKAGE / layer).rglob("*.py")):
        bad = copra_imports(path) - ALLOWED[layer] - {"__init__"}
        bad.discard("__version__")
        if bad:
            offenders[str(path.relative_to(PACKAGE))] = sorted(bad)
    assert offenders == {}


def test_every_layer_is_known() -> None:
    packages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert packages - {"images"} <= set(ALLOWED)


def test_syscall_handlers_never_import_the_kernel_module() -> None:
    # Handlers get a narrow context (syscalls/table.py), so kernel.py may import the
    # table without an import cycle.
    for path in sorted((PACKAGE / "kernel" / "syscalls").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        modules = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert "copra.kernel.kernel" not in modules, path.name
