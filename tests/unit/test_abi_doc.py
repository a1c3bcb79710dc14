"""docs/abi.md documents every syscall and every error code of the ABI source."""

from __future__ import annotations

from pathlib import Path

import pytest

from copra.abi.spec import Errno, Sys
from copra.kernel.syscalls import SYSCALLS
from copra.vmm.service import TABLE as VMM_TABLE

DOC = (Path(__file__).resolve().parents[2] / "docs" / "abi.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("sys", list(Sys), ids=lambda s: s.name)
def test_every_syscall_has_a_section_with_its_number(sys: Sys) -> None:
    cls, index = sys >> 32, sys & 0xFFFF_FFFF
    number = f"0x{cls}_0000_{index:04x}" if cls else f"{sys:#x}"
    assert f"**{sys.name}** `{number.upper().replace('0X', '0x')}`" in DOC


@pytest.mark.parametrize("errno", list(Errno), ids=lambda e: e.name)
def test_every_error_code_is_in_the_table(errno: Errno) -> None:
    assert f"| {errno.name} | −{-errno.value} |" in DOC


def test_every_documented_syscall_is_in_the_kernel_table() -> None:
    # The VMM's class registers itself at boot (Kernel.register_class).
    assert {int(s) for s in Sys} == set(SYSCALLS) | set(VMM_TABLE)
