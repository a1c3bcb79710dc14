"""Build C programs in the suite the way upstream COCONUT-SVSM builds its user programs.

Upstream (commit f4bc4bcd, PR #1155) links user crates with rust-lld's defaults and
``-no-pie``: the first PT_LOAD, read-only and holding the ELF headers, sits at lld's
x86-64 image base 0x200000, and segments follow at file offsets that are not
page-aligned but congruent to their addresses. Before mid-2026 a linker script put
text at 0x10000; GNU ld's default for a static non-PIE program is 0x400000. The
programs here are C (``upstream.h``: ``int 0x80`` only, no libc, no crt) compiled by
gcc like upstream's target (freestanding, PIC code, no red zone, no SSE) and linked:

- ``Layout.LLD``: by rust-lld (``rustc --print sysroot``/lib/rustlib/*/bin) or
  ``ld.lld``, with its defaults and optionally ``--image-base``;
- ``Layout.GNU_LD``: by GNU ld through gcc, with its defaults (``-z separate-code``)
  and optionally ``-Ttext-segment``.

A missing tool skips the test that needs it, saying which tool; nothing is cached
outside the test's temporary directory.
"""

from __future__ import annotations

import enum
import glob
import os
import shutil
import subprocess
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
INCLUDE = HERE.parents[2] / "include"

CFLAGS = (
    "-std=c11", "-O2", "-Wall", "-ffreestanding", "-fPIC",
    "-fno-stack-protector", "-fno-asynchronous-unwind-tables", "-fno-unwind-tables",
    "-fcf-protection=none", "-fno-tree-loop-distribute-patterns",
    "-mno-red-zone", "-mgeneral-regs-only",
)


class Layout(enum.Enum):
    LLD = "rust-lld"  #: upstream's linker today
    GNU_LD = "GNU ld"


def gcc() -> str:
    path = shutil.which("gcc")
    if path is None:
        pytest.skip("gcc is not installed: cannot build upstream-style C programs")
    return path


def lld() -> list[str]:
    """The command that runs lld as a GNU-style linker."""
    path = shutil.which("ld.lld")
    if path is not None:
        return [path]
    rustc = shutil.which("rustc")
    if rustc is not None:
        sysroot = subprocess.run([rustc, "--print", "sysroot"], capture_output=True,
                                 text=True, check=False).stdout.strip()
        found = sorted(glob.glob(os.path.join(sysroot, "lib", "rustlib", "*", "bin", "rust-lld")))
        if sysroot and found:
            return [found[0], "-flavor", "gnu"]
    pytest.skip("neither ld.lld nor rustc's rust-lld is installed: cannot link as upstream")


def build(source: str, out_dir: Path, layout: Layout, base: int | None = None,
          defines: tuple[str, ...] = ()) -> bytes:
    """Compile ``source`` (a file beside this module) and link it static, non-PIE."""
    cc = gcc()
    stem = f"{Path(source).stem}-{layout.name.lower()}-{base or 0:x}" + "".join(
        f"-{d.lower()}" for d in defines)
    obj, exe = out_dir / f"{stem}.o", out_dir / stem
    _run([cc, *CFLAGS, *(f"-D{d}" for d in defines), f"-I{INCLUDE}", f"-I{HERE}",
          "-c", str(HERE / source), "-o", str(obj)])
    if layout is Layout.LLD:
        extra = [f"--image-base={base:#x}"] if base is not None else []
        _run([*lld(), "-static", "-no-pie", "--entry=_start", *extra, str(obj), "-o", str(exe)])
    else:
        extra = [f"-Wl,-Ttext-segment={base:#x}"] if base is not None else []
        _run([cc, "-nostdlib", "-static", "-no-pie", *extra, str(obj), "-o", str(exe)])
    return exe.read_bytes()


def _run(argv: list[str]) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} failed:\n{result.stderr[-4000:]}")
