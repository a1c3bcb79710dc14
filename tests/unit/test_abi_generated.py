"""The generated Rust and C views of the ABI agree with spec.py and with upstream."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from copra.abi import gen, spec
from copra.abi.spec import Errno, Field, FileMode, MapFlag, SeekMode, Struct, Sys

REPO = Path(__file__).resolve().parents[2]

#: Upstream COCONUT-SVSM numbers (syscall/src/def.rs, call.rs, obj.rs at f4bc4bcd;
#: MMFlags from PR #927), written out here on purpose rather than read from spec.py.
UPSTREAM_SYSCALLS = {
    "EXIT": 0x0,
    "MMAP": 0x1,
    "MUNMAP": 0x2,
    "MRESIZE": 0x3,
    "EXEC": 0x4,
    "CLOSE": 0xA,
    "OPEN": 0x1_0000_0000,
    "READ": 0x1_0000_0001,
    "WRITE": 0x1_0000_0002,
    "SEEK": 0x1_0000_0003,
    "TRUNCATE": 0x1_0000_0004,
    "UNLINK": 0x1_0000_0005,
    "OPENDIR": 0x1_0000_0006,
    "READDIR": 0x1_0000_0007,
    "MKDIR": 0x1_0000_0008,
    "RMDIR": 0x1_0000_0009,
    "CAPABILITIES": 0x3_0000_0000,
}
UPSTREAM_ERRORS = {
    "EINVAL": -1,
    "ENOSYS": -2,
    "ENOMEM": -3,
    "EPERM": -4,
    "EFAULT": -5,
    "EBUSY": -6,
    "ENOTFOUND": -7,
    "ENOTSUPP": -8,
    "EEXIST": -9,
    "ERDONLY": -10,
    "EWRONLY": -11,
    "UNKNOWN": -128,
}


@pytest.mark.parametrize("rel", [gen.RUST_PATH, gen.C_PATH], ids=str)
def test_committed_file_matches_regenerated_output(rel: Path) -> None:
    committed = (REPO / rel).read_text(encoding="utf-8")
    assert committed == gen.outputs()[rel], f"{rel} is stale: run python -m copra.abi.gen"


@pytest.mark.parametrize("rel", [gen.RUST_PATH, gen.C_PATH], ids=str)
def test_generated_file_says_it_is_generated(rel: Path) -> None:
    head = gen.outputs()[rel].splitlines()[:5]
    assert any(gen.GENERATED_LINE in line for line in head)


def test_spec_keeps_upstream_syscall_numbers() -> None:
    assert {name: int(Sys[name]) for name in UPSTREAM_SYSCALLS} == UPSTREAM_SYSCALLS


def test_spec_keeps_upstream_error_codes() -> None:
    assert {name: int(Errno[name]) for name in UPSTREAM_ERRORS} == UPSTREAM_ERRORS


def test_spec_keeps_upstream_flags_and_dirent_layout() -> None:
    assert (FileMode.READ, FileMode.WRITE, FileMode.APPEND, FileMode.TRUNC) == (1, 2, 4, 8)
    assert (SeekMode.ABSOLUTE, SeekMode.RELATIVE, SeekMode.END) == (0, 1, 2)
    assert [int(f) for f in MapFlag] == [1, 2, 4, 8, 16, 32]
    offsets = {f.name: f.offset for f in spec.DIRENT.fields}
    assert (spec.DIRENT.size, offsets["file_type"], offsets["size"]) == (272, 256, 264)


def test_rust_output_spells_values_as_upstream() -> None:
    rust = gen.outputs()[gen.RUST_PATH]
    assert "    OPEN = 0x1_0000_0000," in rust
    assert "    CAPABILITIES = 0x3_0000_0000," in rust
    assert "    ENOSYS = -2," in rust
    assert "const _: () = assert!(core::mem::size_of::<DirEnt>() == 272);" in rust
    assert "const _: () = assert!(core::mem::offset_of!(DirEnt, size) == 264);" in rust


def test_rust_output_carries_the_spec_comments() -> None:
    rust = gen.outputs()[gen.RUST_PATH]
    doc = "    /// the syscall number is not implemented (upstream answers EINVAL)"
    assert f"{doc}\n    ENOSYS = -2," in rust


def test_c_header_compiles_and_holds_upstream_values(tmp_path: Path) -> None:
    cc = shutil.which("gcc")
    if cc is None:
        pytest.skip("gcc not installed")
    checks = [
        f'_Static_assert(COPRA_SYS_{n} == UINT64_C({v:#x}), "{n}");'
        for n, v in UPSTREAM_SYSCALLS.items()
    ]
    checks += [
        f'_Static_assert(COPRA_ERRNO_{n} == INT64_C({v}), "{n}");'
        for n, v in UPSTREAM_ERRORS.items()
    ]
    checks += [
        '_Static_assert(COPRA_SYSNO(1, 7) == COPRA_SYS_READDIR, "SYSNO");',
        '_Static_assert(COPRA_MAP_FLAG_ANONYMOUS == 16, "MapFlag");',
        '_Static_assert(sizeof(struct copra_dir_ent) == 272, "DirEnt");',
        '_Static_assert(offsetof(struct copra_dir_ent, size) == 264, "DirEnt.size");',
    ]
    source = tmp_path / "check.c"
    source.write_text(
        '#include "copra/abi.h"\n#include "copra/abi.h"\n' + "\n".join(checks) + "\n",
        encoding="utf-8",
    )
    result = subprocess.run(
        [
            cc,
            "-std=c11",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pedantic",
            "-fsyntax-only",
            "-I",
            str(REPO / "include"),
            str(source),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_generator_refuses_a_struct_with_implicit_padding() -> None:
    gap = Struct("Gap", 16, (Field("a", "u8", 0), Field("b", "u64", 8)))
    with pytest.raises(ValueError, match="gap before b"):
        gen._layout(gap)


def test_generator_refuses_a_misaligned_field() -> None:
    bad = Struct("Bad", 16, (Field("a", "u32", 0), Field("b", "u64", 4), Field("c", "u32", 12)))
    with pytest.raises(ValueError, match="not 8-aligned"):
        gen._layout(bad)


def test_generator_refuses_a_struct_whose_fields_miss_the_declared_size() -> None:
    short = Struct("Short", 16, (Field("a", "u64", 0),))
    with pytest.raises(ValueError, match="declared size 16"):
        gen._layout(short)


def test_generator_refuses_an_unknown_field_type() -> None:
    odd = Struct("Odd", 8, (Field("a", "f64", 0),))
    with pytest.raises(ValueError, match="unsupported field type"):
        gen._layout(odd)


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    assert gen.main(["--root", str(tmp_path)]) == 0  # writes both files
    assert gen.main(["--root", str(tmp_path), "--check"]) == 0
    (tmp_path / gen.C_PATH).write_text("/* edited */\n", encoding="utf-8")
    assert gen.main(["--root", str(tmp_path), "--check"]) == 1
