"""The C side of the user library: include/copra/copra.h against libcopra.a's exports.

Every function the header declares is defined with C linkage by the library (its
Rust source, user/libcopra-c, or libcopra's memory functions), and every function the
library exports is declared; the header compiles as strict freestanding C11 on its
own. The program that calls all of it under copra is tests/e2e/test_c_programs.py.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HEADER = REPO / "include" / "copra" / "copra.h"
SOURCES = [REPO / "user" / "libcopra-c" / "src" / "lib.rs",
           REPO / "user" / "libcopra" / "src" / "mem.rs"]

_DECLARED = re.compile(r"^(?:_Noreturn\s+)?[\w\s]+?[\s*](\w+)\(", re.MULTILINE)
_EXPORTED = re.compile(
    r"#\[(?:cfg_attr\(not\(test\), )?unsafe\(no_mangle\)\)?\]\s*"
    r"pub (?:unsafe )?extern \"C\" fn (\w+)"
)


def declared() -> set[str]:
    text = re.sub(r"/\*.*?\*/", "", HEADER.read_text(encoding="utf-8"), flags=re.DOTALL)
    return {m.group(1) for m in _DECLARED.finditer(text) if not m.group(0).startswith("#")}


def exported() -> set[str]:
    names = set()
    for source in SOURCES:
        names |= set(_EXPORTED.findall(source.read_text(encoding="utf-8")))
    return names - {"bcmp"}  # what compilers call for memcmp() == 0; not for programs


def test_header_declares_the_heap_and_a_wrapper_per_syscall() -> None:
    names = declared()
    assert {"malloc", "free", "calloc", "realloc", "aligned_alloc"} <= names
    assert {"copra_open", "copra_read", "copra_write", "copra_mmap", "copra_exec",
            "copra_wait", "copra_capabilities"} <= names


def test_every_declared_function_is_exported_and_every_export_declared() -> None:
    assert declared() == exported()


def test_header_compiles_as_strict_freestanding_c11(tmp_path: Path) -> None:
    gcc = shutil.which("gcc")
    if gcc is None:
        pytest.skip("gcc not installed")
    source = tmp_path / "uses.c"
    source.write_text('#include "copra/copra.h"\n'
                      "int main(void) { struct copra_heap_stats s; copra_heap_stats(&s);\n"
                      "  return (int)s.in_use + (int)(malloc(1) != 0); }\n", encoding="utf-8")
    result = subprocess.run(
        [gcc, "-std=c11", "-pedantic", "-Wall", "-Wextra", "-Werror", "-ffreestanding",
         f"-I{REPO / 'include'}", "-c", str(source), "-o", str(tmp_path / "uses.o")],
        capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
