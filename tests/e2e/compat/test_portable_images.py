"""Compatibility: the portable build of copra's programs enters the kernel by int 0x80 only.

``scripts/build-user-images --entry int80`` builds the workspace with libcopra's
cargo feature ``int80-entry`` (docs/user-library.md). ``init`` and ``hello`` are built
that way once per module into a temporary directory; they must contain no doorbell
instruction and must run under copra without a single doorbell syscall, as they would
have to on upstream, where the doorbell port is a #GP.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from copra.kernel.kernel import ENTRY_COUNTERS, Entry

REPO = Path(__file__).resolve().parents[3]
SERVICES = "/etc/init.services"


@pytest.fixture(scope="module")
def portable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("cargo") is None:
        pytest.skip("cargo is not installed: cannot build the portable images")
    tmp = tmp_path_factory.mktemp("portable")
    out = tmp / "images"
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build-user-images"), "--entry", "int80",
         "--bin", "init", "--bin", "hello", "--target-dir", str(tmp / "target"),
         "--out-dir", str(out)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return out


def test_portable_manifest_records_the_int80_entry(portable: Path) -> None:
    manifest = json.loads((portable / "manifest.json").read_text(encoding="utf-8"))
    assert manifest["entry"] == "int80"
    assert set(manifest["images"]) == {"init", "hello"}


@pytest.mark.parametrize("name", ["init", "hello"])
def test_portable_program_has_no_doorbell_instruction(portable: Path, name: str) -> None:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump is not installed")
    listing = subprocess.run([objdump, "-d", "-M", "intel", str(portable / f"{name}.elf")],
                             capture_output=True, text=True, check=True).stdout
    assert not re.search(r"\bout\s+0xe0", listing)
    assert re.search(r"\bint\s+0x80", listing)


def test_portable_init_and_hello_run_with_int80_only(boot: Any, portable: Path) -> None:
    run = boot((portable / "init.elf").read_bytes(), {
        "/bin/hello": (portable / "hello.elf").read_bytes(),
        SERVICES: b"/bin/hello\n",
    })
    assert run.result.status == 0, run.lines
    assert "Hello from a copra service" in run.task_lines("hello")
    assert run.kernel.counters[ENTRY_COUNTERS[Entry.DOORBELL]] == 0
    assert run.kernel.counters[ENTRY_COUNTERS[Entry.INT80]] > 0
