"""The log file: every console line also lands in the RAM fs, bounded, never failing."""

from __future__ import annotations

import pytest

from copra.abi.spec import LOG_FILE_MAX, LOG_FILE_PATH, Errno
from copra.kernel.errors import SyscallError
from copra.kernel.logfile import LogFile
from copra.kernel.ramfs import RamFs


def contents(fs: RamFs, path: str = LOG_FILE_PATH) -> bytes:
    return fs.open(path).read(0, 1 << 30)


def new_log(limit: int = LOG_FILE_MAX, **fs_args: int) -> tuple[RamFs, LogFile, list[str]]:
    fs = RamFs(**fs_args)
    lines: list[str] = []
    return fs, LogFile(fs, lines.append, limit=limit), lines


def test_log_file_is_created_empty_in_its_own_directory() -> None:
    fs, _, lines = new_log()
    assert contents(fs) == b""
    assert [e.name for e in fs.opendir("/")] == ["Log"]
    assert lines == []


def test_each_line_reaches_the_console_and_the_file_with_a_newline() -> None:
    fs, log, lines = new_log()
    log("[init] hello")
    log("[kernel] é")
    assert lines == ["[init] hello", "[kernel] é"]
    assert contents(fs) == "[init] hello\n[kernel] é\n".encode()


def test_existing_log_directory_is_used() -> None:
    fs = RamFs()
    fs.mkdir("/Log")
    LogFile(fs, print)
    assert contents(fs) == b""


def test_existing_log_file_is_refused_with_eexist() -> None:
    fs = RamFs()
    fs.mkdir("/Log")
    fs.create(LOG_FILE_PATH)
    with pytest.raises(SyscallError) as info:
        LogFile(fs, print)
    assert info.value.errno is Errno.EEXIST


def test_line_that_would_pass_the_limit_goes_to_the_console_only_with_one_note() -> None:
    fs, log, lines = new_log(limit=16)
    log("0123456789")  # 11 bytes with the newline
    log("abcdefgh")  # would make 20
    log("ijklmnop")
    assert contents(fs) == b"0123456789\n"
    assert lines[:3] == ["0123456789", "abcdefgh", lines[2]]
    assert "takes no more lines" in lines[2]
    assert lines[3:] == ["ijklmnop"]
    assert log.dropped == 2


def test_truncating_the_file_makes_room_again() -> None:
    fs, log, _ = new_log(limit=16)
    log("0123456789")
    log("abcdefgh")
    fs.open(LOG_FILE_PATH).truncate(0)
    log("again")
    assert contents(fs) == b"again\n"


def test_after_unlink_lines_reach_the_console_only_and_a_new_file_takes_them() -> None:
    fs, log, lines = new_log()
    fs.unlink(LOG_FILE_PATH)
    log("lost")
    fs.create(LOG_FILE_PATH)
    log("kept")
    assert lines == ["lost", "kept"]
    assert contents(fs) == b"kept\n"
    assert log.dropped == 0


def test_full_ram_fs_drops_the_line_from_the_file_but_not_from_the_console() -> None:
    fs, log, lines = new_log(max_pages=1)
    log("x" * 4000)
    log("y" * 200)  # needs a second page
    assert lines[:2] == ["x" * 4000, "y" * 200]
    assert contents(fs) == b"x" * 4000 + b"\n"
    assert log.dropped == 1
