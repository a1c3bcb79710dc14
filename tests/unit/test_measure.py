"""The launch measurement of a boot and `copra measure`."""

from __future__ import annotations

import hashlib
import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

from copra import __version__
from copra.attest.measure import (
    ARCHIVE_GPA,
    IDENTITY_GPA,
    identity_page,
    launch_guest,
    launch_pages,
    measure_boot,
)
from copra.cli import main
from copra.hw.snp import SnpFirmware
from copra.kernel.image import build_boot_archive, demo_config_path, packaged_program
from copra.kernel.svsm_vm import DEFAULT_MEMORY

ARCHIVE = b"PKIT" + bytes(4) + bytes(range(256)) * 20  # 5128 bytes: two pages


def _reference(pages: list[tuple[int, bytes]]) -> bytes:
    """SNP's PAGE_INFO chaining written out from the firmware ABI, independently."""
    digest = bytes(48)
    for gpa, page in pages:
        info = (digest + hashlib.sha384(page).digest() + struct.pack("<HB", 0x70, 1)
                + bytes(5) + struct.pack("<Q", gpa))
        digest = hashlib.sha384(info).digest()
    return digest


def test_measurement_follows_page_info_chaining_over_identity_then_archive() -> None:
    padded = ARCHIVE.ljust(2 * 4096, b"\0")
    expected = _reference([
        (IDENTITY_GPA, identity_page(len(ARCHIVE))),
        (ARCHIVE_GPA, padded[:4096]),
        (ARCHIVE_GPA + 4096, padded[4096:]),
    ])
    assert measure_boot(ARCHIVE) == expected


def test_identity_page_records_version_memory_and_archive_size() -> None:
    page = identity_page(5128, 64 << 20, "9.8.7")
    assert len(page) == 4096
    magic, layout, reserved, memory, size, base, name_len = struct.unpack_from("<8sIIQQQH", page)
    assert (magic, layout, reserved) == (b"COPRA-ID", 1, 0)
    assert (memory, size, base) == (64 << 20, 5128, ARCHIVE_GPA)
    assert page[0x2A:0x2A + name_len] == b"9.8.7"
    assert page[0x2A + name_len:] == bytes(4096 - 0x2A - name_len)


def test_same_inputs_give_the_same_measurement() -> None:
    assert measure_boot(ARCHIVE) == measure_boot(bytes(ARCHIVE))


@pytest.mark.parametrize("change", ["archive byte", "trailing zero", "memory", "version"])
def test_any_input_change_changes_the_measurement(change: str) -> None:
    archive, memory, version = ARCHIVE, DEFAULT_MEMORY, __version__
    if change == "archive byte":
        archive = ARCHIVE[:-1] + b"\x01"
    elif change == "trailing zero":
        archive = ARCHIVE + b"\0"  # hidden by the last page's padding, not by the identity
    elif change == "memory":
        memory = 128 << 20
    else:
        version = __version__ + ".post1"
    assert measure_boot(archive, memory, version) != measure_boot(ARCHIVE)


def test_launch_pages_put_the_identity_first() -> None:
    pages = list(launch_pages(ARCHIVE))
    assert [gpa for gpa, _ in pages] == [IDENTITY_GPA, ARCHIVE_GPA]


def test_emulated_firmware_measures_the_same_value(tmp_path: Path) -> None:
    chip = SnpFirmware.create(tmp_path / "chip", key_size=2048)
    guest = launch_guest(chip, ARCHIVE, 128 << 20)
    assert guest.running
    assert guest.measurement == measure_boot(ARCHIVE, 128 << 20)


def test_copra_measure_prints_the_measurement_of_the_run_inputs(tmp_path: Path) -> None:
    prog = tmp_path / "demo.elf"
    prog.write_bytes(packaged_program("persist-demo"))
    extra = tmp_path / "motd"
    extra.write_text("hi\n")
    args = ["--init", str(prog), "--file", f"{extra}=/etc/motd"]
    result = CliRunner().invoke(main, ["measure", *args])
    assert result.exit_code == 0, result.output
    archive = build_boot_archive(None, prog, (f"{extra}=/etc/motd",))
    assert result.output == measure_boot(archive, DEFAULT_MEMORY).hex() + "\n"
    assert len(result.output.strip()) == 96


def test_copra_measure_memory_option_changes_the_value() -> None:
    runner = CliRunner()
    default = runner.invoke(main, ["measure"]).output
    smaller = runner.invoke(main, ["measure", "--memory", "128"]).output
    assert default != smaller
    # no --init or --config: the demo's image, as `copra run` boots it
    demo = build_boot_archive(demo_config_path(), None, ())
    assert smaller.strip() == measure_boot(demo, 128 << 20).hex()


def test_copra_measure_bad_file_option_fails_in_one_line() -> None:
    result = CliRunner().invoke(main, ["measure", "--file", "nodest"])
    assert result.exit_code == 1
    assert "SRC=DEST" in result.output
