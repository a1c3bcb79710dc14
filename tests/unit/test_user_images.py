"""The shipped user images: well-formed static ELF programs, reproducible from user/.

Every image is checked with pyelftools against what the copra loader needs (ELF64
x86-64 ET_EXEC, no interpreter or dynamic section, nothing to relocate, segments in
the user range, entry in an executable segment). Where cargo and gcc are installed
the workspace is rebuilt into a temporary directory with scripts/build-user-images
and must give the same bytes (the C images only with the gcc the manifest records).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from elftools.elf.constants import P_FLAGS
from elftools.elf.elffile import ELFFile

from copra.abi.spec import PAGE_SIZE, USER_MAP_END, USER_START
from copra.kernel.image import check_program, foreign_program_hint

REPO = Path(__file__).resolve().parents[2]
IMAGES = REPO / "src" / "copra" / "images"
MANIFEST = json.loads((IMAGES / "manifest.json").read_text(encoding="utf-8"))
NAMES = sorted(MANIFEST["images"])
#: Segments must end below the stack's guard page, where the loader stops accepting them.
USER_IMAGE_END = USER_MAP_END
#: Programs whose whole point is a privileged or faulting instruction.
HOSTILE = {"fault-gp", "fault-ud", "fault-de", "fault-kernel-write"}
#: Programs that try other ways into the kernel on purpose (docs/abi.md lists the answers).
PROBES_ENTRIES = {"priv-probe"}
EXPECTED = {
    "init",
    "hello",
    "fault-wild-write",
    "fault-kernel-write",
    "fault-ud",
    "fault-loop",
    "fault-gp",
    "fault-de",
    "badsys",
    "syscall-bench",
    "preempt-storm",
    "priv-probe",
    "heap-stress",
    "heap-misuse",
    "lib-check",
    "c-hello",
    "c-heap-bench",
}


def _elf(name: str) -> ELFFile:
    return ELFFile(io.BytesIO((IMAGES / f"{name}.elf").read_bytes()))


def test_every_expected_program_is_shipped() -> None:
    assert set(NAMES) >= EXPECTED


def test_manifest_lists_exactly_the_shipped_files() -> None:
    assert {p.stem for p in IMAGES.glob("*.elf")} == set(NAMES)


def test_shipped_guest_kernels_match_the_manifest_and_are_pvh_kernels() -> None:
    from copra.vmm.pvh import parse_kernel

    assert sorted(MANIFEST["guests"]) == ["demo"]
    assert {p.stem for p in (IMAGES / "guests").glob("*.elf")} == set(MANIFEST["guests"])
    for name, entry in MANIFEST["guests"].items():
        data = (IMAGES / "guests" / f"{name}.elf").read_bytes()
        assert hashlib.sha256(data).hexdigest() == entry["sha256"]
        parse_kernel(data)  # raises unless it is a loadable PVH kernel


@pytest.mark.parametrize("name", NAMES)
def test_manifest_hash_matches_image(name: str) -> None:
    data = (IMAGES / f"{name}.elf").read_bytes()
    assert hashlib.sha256(data).hexdigest() == MANIFEST["images"][name]["sha256"]


@pytest.mark.parametrize("name", NAMES)
def test_image_is_elf64_x86_64_executable(name: str) -> None:
    elf = _elf(name)
    assert elf.elfclass == 64
    assert elf.little_endian
    assert elf["e_machine"] == "EM_X86_64"
    assert elf["e_type"] == "ET_EXEC"


@pytest.mark.parametrize("name", NAMES)
def test_image_is_statically_linked(name: str) -> None:
    types = {seg["p_type"] for seg in _elf(name).iter_segments()}
    assert "PT_INTERP" not in types
    assert "PT_DYNAMIC" not in types


@pytest.mark.parametrize("name", NAMES)
def test_image_has_nothing_left_to_relocate(name: str) -> None:
    kinds = {sec["sh_type"] for sec in _elf(name).iter_sections()}
    assert not kinds & {"SHT_REL", "SHT_RELA", "SHT_DYNAMIC", "SHT_DYNSYM"}


@pytest.mark.parametrize("name", NAMES)
def test_entry_is_inside_an_executable_load_segment(name: str) -> None:
    elf = _elf(name)
    entry = elf["e_entry"]
    assert any(
        seg["p_type"] == "PT_LOAD"
        and seg["p_flags"] & P_FLAGS.PF_X
        and seg["p_vaddr"] <= entry < seg["p_vaddr"] + seg["p_memsz"]
        for seg in elf.iter_segments()
    )


@pytest.mark.parametrize("name", NAMES)
def test_load_segments_lie_in_the_user_range(name: str) -> None:
    loads = [s for s in _elf(name).iter_segments() if s["p_type"] == "PT_LOAD"]
    assert loads
    for seg in loads:
        assert seg["p_vaddr"] >= USER_START
        assert seg["p_vaddr"] + seg["p_memsz"] <= USER_IMAGE_END
        assert seg["p_filesz"] <= seg["p_memsz"]
        assert seg["p_vaddr"] % PAGE_SIZE == seg["p_offset"] % PAGE_SIZE


@pytest.mark.parametrize("name", NAMES)
def test_no_segment_is_both_writable_and_executable(name: str) -> None:
    wx = P_FLAGS.PF_W | P_FLAGS.PF_X
    assert all((s["p_flags"] & wx) != wx for s in _elf(name).iter_segments())


def _instructions(name: str) -> list[str]:
    objdump = shutil.which("objdump")
    if objdump is None:
        pytest.skip("objdump not installed")
    out = subprocess.run(
        [objdump, "-d", "-M", "intel", "--no-show-raw-insn", str(IMAGES / f"{name}.elf")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [" ".join(line.split("\t", 1)[1].split()) for line in out.splitlines() if "\t" in line]


PRIVILEGED = re.compile(
    r"^(hlt|cli|sti|in|ins[bwd]?|outs[bwd]?|lgdt|lidt|lldt|ltr|wrmsr|rdmsr|invlpg|"
    r"swapgs|sysret|iretq|wbinvd|mov cr\d|mov \w+,cr\d)\b"
)


@pytest.mark.parametrize("name", sorted(set(NAMES) - HOSTILE))
def test_program_uses_no_privileged_instruction(name: str) -> None:
    bad = [i for i in _instructions(name) if PRIVILEGED.match(i)]
    assert bad == []


@pytest.mark.parametrize("name", sorted(set(NAMES) - PROBES_ENTRIES))
def test_program_enters_the_kernel_only_through_the_two_entries(name: str) -> None:
    instructions = _instructions(name)
    outs = {i for i in instructions if i.startswith("out ")}
    ints = {i for i in instructions if re.match(r"^int \w", i)}
    assert outs <= {"out 0xe0,al"}
    assert ints <= {"int 0x80"}
    assert not any(i in ("syscall", "sysenter") for i in instructions)


def _workspace_with_a_new_crate(tmp_path: Path) -> Path:
    """A copy of user/ with a program added as docs/user-library.md says: a crate with
    the doc's example as its main.rs, depending on libcopra by path, its binary target
    with test = false and bench = false, listed in the workspace members. Cargo.lock is
    left as it is: the recipe does not ask for a lock-file update."""
    user = tmp_path / "user"
    shutil.copytree(REPO / "user", user, ignore=shutil.ignore_patterns("target"))
    doc = (REPO / "docs" / "user-library.md").read_text(encoding="utf-8")
    example = re.search(r"```rust\n(.*?)```", doc, re.S)
    assert example is not None and "declare_main!(main)" in example.group(1)
    crate = user / "motd"
    (crate / "src").mkdir(parents=True)
    (crate / "src" / "main.rs").write_text(example.group(1))
    (crate / "Cargo.toml").write_text(
        '[package]\nname = "motd"\nversion.workspace = true\nedition.workspace = true\n'
        '[[bin]]\nname = "motd"\npath = "src/main.rs"\ntest = false\nbench = false\n'
        '[dependencies]\nlibcopra = { path = "../libcopra" }\n')
    manifest = user / "Cargo.toml"
    text = manifest.read_text()
    members = re.search(r"members = \[(.*?)\]", text)
    assert members is not None
    manifest.write_text(text.replace(members.group(0), f'members = [{members.group(1)}, "motd"]'))
    return user


def test_images_are_reproducible_and_a_crate_added_as_documented_builds(tmp_path: Path) -> None:
    """One build of the workspace plus one crate added by docs/user-library.md's recipe:
    the shipped images come out byte for byte, and the new program builds (no manual
    Cargo.lock update) into a loadable copra program."""
    if shutil.which("cargo") is None:
        pytest.skip("cargo not installed")
    rustc = subprocess.run(
        ["rustc", "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    if rustc != MANIFEST["rustc"]:
        pytest.skip(f"images were built by {MANIFEST['rustc']!r}, this is {rustc!r}")
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed: cannot build the C programs")
    user = _workspace_with_a_new_crate(tmp_path)
    out = tmp_path / "images"
    result = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "build-user-images"),
            "--user-dir",
            str(user),
            "--target-dir",
            str(tmp_path / "target"),
            "--out-dir",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    built = sorted(p.stem for p in out.glob("*.elf"))
    assert built == sorted([*NAMES, "motd"])
    rebuilt = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
    # C images depend on gcc too: compare them only when it is the recorded one.
    compared = [n for n in NAMES if not n.startswith("c-") or rebuilt["cc"] == MANIFEST["cc"]]
    differing = [
        n for n in compared
        if (out / f"{n}.elf").read_bytes() != (IMAGES / f"{n}.elf").read_bytes()
    ]
    assert differing == [], "rebuild the images with scripts/build-user-images"
    # The shipped guest kernels depend on gcc (the assembler) and ld.
    assert sorted(rebuilt["guests"]) == sorted(MANIFEST["guests"])
    if rebuilt["cc"] == MANIFEST["cc"] and rebuilt["ld"] == MANIFEST["ld"]:
        assert rebuilt["guests"] == MANIFEST["guests"], "rebuild with scripts/build-user-images"
    motd = (out / "motd.elf").read_bytes()
    check_program("motd", motd)
    assert foreign_program_hint("motd", motd) is None


def test_portable_build_refuses_to_replace_the_shipped_images(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build-user-images"), "--entry", "int80",
         "--target-dir", str(tmp_path), "--out-dir", str(IMAGES)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert "must not replace the shipped images" in result.stderr
    assert list(tmp_path.iterdir()) == []  # refused before cargo ran


def test_partial_build_refuses_to_replace_the_shipped_images(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "build-user-images"), "--bin", "hello",
         "--target-dir", str(tmp_path), "--out-dir", str(IMAGES)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 2
    assert "--bin must not replace the shipped images" in result.stderr


def test_shipped_manifest_records_the_doorbell_entry() -> None:
    assert MANIFEST["entry"] == "doorbell"
