"""The project's test guest kernels (user/guests/*.S), built once per test session.

They are built from source by scripts/build-guest-kernels (gcc -m32 assembles, GNU ld
links); where gcc or ld is missing the tests that need them skip, saying which.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-guest-kernels"


def _builder() -> ModuleType:
    loader = importlib.machinery.SourceFileLoader("build_guest_kernels", str(SCRIPT))
    spec = importlib.util.spec_from_loader(loader.name, loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def build(out_dir: Path) -> dict[str, bytes]:
    """name -> ELF image of every guest kernel; skips the test if a tool is missing."""
    builder = _builder()
    tool = builder.missing_tool()
    if tool is not None:
        pytest.skip(f"{tool} is not installed: cannot build the test guest kernels")
    return {name: path.read_bytes() for name, path in builder.build(out_dir).items()}
