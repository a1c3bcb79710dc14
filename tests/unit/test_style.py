"""The style tools run as tests: ruff on the whole tree, mypy --strict on the package."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=False,
                          timeout=300)


def test_ruff_finds_nothing() -> None:
    # Run as a module of this interpreter, as mypy is: `venv/bin/pytest` from an
    # unactivated venv has no ruff on PATH, but its interpreter has the package.
    if importlib.util.find_spec("ruff") is None:
        pytest.fail("ruff is not installed: pip install -e '.[test]'")
    out = run(sys.executable, "-m", "ruff", "check", "src", "tests", "bench")
    assert out.returncode == 0, out.stdout + out.stderr


def test_mypy_strict_finds_nothing() -> None:
    out = run(sys.executable, "-m", "mypy", "--strict", "src/copra")
    assert out.returncode == 0, out.stdout + out.stderr
