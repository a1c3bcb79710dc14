"""Open file and open directory objects: upstream's handle semantics and DirEnt."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.abi.spec import DIRENT, PAGE_SIZE, Errno, FileFlag, FileMode, FileType, SeekMode
from copra.kernel.errors import SyscallError
from copra.kernel.objects import ObjectKind
from copra.kernel.objects.directory import DIRENT_SIZE, DirEnt, OpenDirectory
from copra.kernel.objects.file import (
    OpenFile,
    decode_file_flags,
    decode_file_mode,
    decode_seek_mode,
)
from copra.kernel.ramfs import RamFs

RW = FileMode.READ | FileMode.WRITE
U64 = (1 << 64) - 1


def errno_of(call: object) -> Errno:
    assert callable(call)
    with pytest.raises(SyscallError) as info:
        call()
    return info.value.errno


def fs_with(path: str = "/f", data: bytes = b"") -> RamFs:
    fs = RamFs()
    fs.create(path).write(0, data)
    return fs


def efault(_: bytes) -> None:
    raise SyscallError(Errno.EFAULT, "copy-out faulted")


# -- argument decoding ------------------------------------------------------------


def test_decode_file_mode_unknown_bit_returns_einval() -> None:
    assert errno_of(lambda: decode_file_mode(16)) == Errno.EINVAL


def test_decode_file_mode_known_bits_pass() -> None:
    assert decode_file_mode(15) == FileMode.READ | FileMode.WRITE | FileMode.APPEND | FileMode.TRUNC


def test_decode_file_flags_unknown_bit_returns_einval() -> None:
    assert errno_of(lambda: decode_file_flags(2)) == Errno.EINVAL


def test_decode_seek_mode_unknown_value_returns_einval() -> None:
    assert errno_of(lambda: decode_seek_mode(3)) == Errno.EINVAL
    assert decode_seek_mode(2) == SeekMode.END


# -- open -----------------------------------------------------------------------------


def test_open_file_has_file_kind() -> None:
    assert OpenFile.open(fs_with(), "/f", FileMode.READ).kind == ObjectKind.FILE


def test_open_missing_file_returns_enotfound() -> None:
    assert errno_of(lambda: OpenFile.open(RamFs(), "/f", RW)) == Errno.ENOTFOUND


def test_open_directory_returns_eisdir() -> None:
    fs = RamFs()
    fs.mkdir("/d")
    assert errno_of(lambda: OpenFile.open(fs, "/d", FileMode.READ)) == Errno.EISDIR


def test_open_create_on_directory_returns_eisdir() -> None:
    fs = RamFs()
    fs.mkdir("/d")
    assert errno_of(lambda: OpenFile.open(fs, "/d", RW, FileFlag.CREATE)) == Errno.EISDIR


def test_open_unknown_mode_bits_returns_einval() -> None:
    assert errno_of(lambda: OpenFile.open(fs_with(), "/f", FileMode(32))) == Errno.EINVAL


def test_open_create_makes_read_write_handle_whatever_mode() -> None:
    fs = RamFs()
    handle = OpenFile.open(fs, "/new", FileMode(0), FileFlag.CREATE)
    assert handle.readable and handle.writable
    assert handle.write(b"hi") == 2


def test_open_create_existing_file_keeps_requested_access() -> None:
    handle = OpenFile.open(fs_with(data=b"x"), "/f", FileMode.READ, FileFlag.CREATE)
    assert handle.readable and not handle.writable


def test_open_mode_zero_can_neither_read_nor_write() -> None:
    handle = OpenFile.open(fs_with(data=b"x"), "/f", FileMode(0))
    assert errno_of(lambda: handle.read(1)) == Errno.EWRONLY
    assert errno_of(lambda: handle.write(b"y")) == Errno.ERDONLY


def test_open_trunc_empties_the_file() -> None:
    fs = fs_with(data=b"old contents")
    handle = OpenFile.open(fs, "/f", FileMode.WRITE | FileMode.TRUNC)
    assert handle.size == 0 and fs.pages_in_use == 0


def test_open_trunc_without_write_returns_erdonly_and_keeps_data() -> None:
    fs = fs_with(data=b"old")
    assert errno_of(lambda: OpenFile.open(fs, "/f", FileMode.READ | FileMode.TRUNC)) == (
        Errno.ERDONLY
    )
    assert fs.open("/f").size == 3


def test_open_create_trunc_without_write_succeeds_on_new_file() -> None:
    handle = OpenFile.open(RamFs(), "/f", FileMode.TRUNC, FileFlag.CREATE)
    assert handle.writable and handle.size == 0


def test_open_append_positions_at_eof_once() -> None:
    handle = OpenFile.open(fs_with(data=b"abc"), "/f", RW | FileMode.APPEND)
    assert handle.position == 3
    handle.seek(0, SeekMode.ABSOLUTE)
    handle.write(b"X")
    assert handle.file.read(0, 10) == b"Xbc"


# -- read / write ----------------------------------------------------------------------


def test_read_advances_position_and_returns_empty_at_eof() -> None:
    handle = OpenFile.open(fs_with(data=b"abcdef"), "/f", FileMode.READ)
    assert handle.read(4) == b"abcd"
    assert handle.read(4) == b"ef"
    assert handle.read(4) == b""
    assert handle.position == 6


def test_read_without_read_access_returns_ewronly() -> None:
    handle = OpenFile.open(fs_with(data=b"a"), "/f", FileMode.WRITE)
    assert errno_of(lambda: handle.read(1)) == Errno.EWRONLY


def test_write_without_write_access_returns_erdonly() -> None:
    handle = OpenFile.open(fs_with(), "/f", FileMode.READ)
    assert errno_of(lambda: handle.write(b"a")) == Errno.ERDONLY


def test_write_extends_file_and_advances_position() -> None:
    handle = OpenFile.open(fs_with(data=b"ab"), "/f", RW)
    handle.seek(1, SeekMode.ABSOLUTE)
    assert handle.write(b"XYZ") == 3
    assert handle.position == 4 and handle.file.read(0, 9) == b"aXYZ"


def test_read_copy_out_receives_the_data() -> None:
    handle = OpenFile.open(fs_with(data=b"abc"), "/f", FileMode.READ)
    seen: list[bytes] = []
    handle.read(2, seen.append)
    assert seen == [b"ab"] and handle.position == 2


def test_read_failed_copy_out_leaves_position_unchanged() -> None:
    handle = OpenFile.open(fs_with(data=b"abc"), "/f", FileMode.READ)
    assert errno_of(lambda: handle.read(2, efault)) == Errno.EFAULT
    assert handle.position == 0


def test_handles_have_independent_positions() -> None:
    fs = fs_with(data=b"0123456789")
    first = OpenFile.open(fs, "/f", FileMode.READ)
    second = OpenFile.open(fs, "/f", FileMode.READ)
    first.read(5)
    assert second.read(3) == b"012" and first.read(2) == b"56"


def test_handle_to_unlinked_file_keeps_working() -> None:
    fs = fs_with(data=b"abc")
    handle = OpenFile.open(fs, "/f", RW)
    fs.unlink("/f")
    handle.seek(0, SeekMode.END)
    handle.write(b"d")
    handle.seek(0, SeekMode.ABSOLUTE)
    assert handle.read(10) == b"abcd"


def test_write_after_other_handle_truncated_leaves_zero_gap() -> None:
    fs = fs_with(data=b"abcdef")
    stale = OpenFile.open(fs, "/f", RW)
    stale.seek(6, SeekMode.ABSOLUTE)
    OpenFile.open(fs, "/f", RW).truncate(2)
    assert stale.read(1) == b""
    stale.write(b"Z")
    assert fs.open("/f").read(0, 10) == b"ab\0\0\0\0Z"


# -- seek ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "offset", "whence", "expected"),
    [
        (0, 4, SeekMode.ABSOLUTE, 4),
        (0, 99, SeekMode.ABSOLUTE, 10),
        (0, U64, SeekMode.ABSOLUTE, 10),  # a "negative" offset is a huge u64: EOF
        (5, 3, SeekMode.RELATIVE, 8),
        (5, 30, SeekMode.RELATIVE, 10),
        (5, -2, SeekMode.RELATIVE, 3),
        (5, U64 - 1, SeekMode.RELATIVE, 3),  # -2 as raw register bits
        (5, -99, SeekMode.RELATIVE, 0),
        (5, 1 << 63, SeekMode.RELATIVE, 0),  # i64 minimum
        (5, 0, SeekMode.END, 10),
        (5, 3, SeekMode.END, 7),  # a positive offset moves back from EOF
        (5, 99, SeekMode.END, 0),
        (5, U64, SeekMode.END, 0),
    ],
)
def test_seek_follows_upstream_clamping(
    start: int, offset: int, whence: SeekMode, expected: int
) -> None:
    handle = OpenFile.open(fs_with(data=bytes(10)), "/f", FileMode.READ)
    handle.seek(start, SeekMode.ABSOLUTE)
    assert handle.seek(offset, whence) == expected
    assert handle.position == expected


# -- truncate ----------------------------------------------------------------------------


def test_truncate_shrinks_and_clamps_position() -> None:
    handle = OpenFile.open(fs_with(data=bytes(10)), "/f", RW)
    handle.seek(8, SeekMode.ABSOLUTE)
    assert handle.truncate(4) == 4
    assert handle.position == 4 and handle.size == 4


def test_truncate_keeps_position_before_new_size() -> None:
    handle = OpenFile.open(fs_with(data=bytes(10)), "/f", RW)
    handle.seek(2, SeekMode.ABSOLUTE)
    handle.truncate(4)
    assert handle.position == 2


def test_truncate_grow_returns_einval() -> None:
    handle = OpenFile.open(fs_with(data=bytes(10)), "/f", RW)
    assert errno_of(lambda: handle.truncate(11)) == Errno.EINVAL


def test_truncate_without_write_returns_erdonly() -> None:
    handle = OpenFile.open(fs_with(data=bytes(10)), "/f", FileMode.READ)
    assert errno_of(lambda: handle.truncate(0)) == Errno.ERDONLY


@settings(max_examples=80, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("read"), st.integers(0, 3 * PAGE_SIZE)),
            st.tuples(st.just("write"), st.integers(0, PAGE_SIZE + 3)),
            st.tuples(st.sampled_from(["abs", "rel", "end"]), st.integers(-(1 << 63), U64)),
            st.tuples(st.just("trunc"), st.integers(0, 2 * PAGE_SIZE)),
        ),
        max_size=15,
    )
)
def test_open_file_matches_a_model(ops: list[tuple[str, int]]) -> None:
    handle = OpenFile.open(RamFs(), "/f", RW, FileFlag.CREATE)
    model = bytearray()
    pos = 0
    for op, arg in ops:
        if op == "read":
            assert handle.read(arg) == bytes(model[pos : pos + arg])
            pos += len(model[pos : pos + arg])
        elif op == "write":
            data = bytes([len(model) % 251]) * arg
            model[pos : pos + arg] = data
            assert handle.write(data) == arg
            pos += arg
        elif op == "trunc":
            if arg > len(model):
                assert errno_of(lambda arg=arg: handle.truncate(arg)) == Errno.EINVAL
            else:
                del model[arg:]
                handle.truncate(arg)
                pos = min(pos, arg)
        else:
            raw = arg & U64
            if op == "abs":
                pos = min(raw, len(model))
                handle.seek(arg, SeekMode.ABSOLUTE)
            elif op == "rel":
                signed = raw - (1 << 64) if raw >> 63 else raw
                pos = min(max(pos + signed, 0), len(model))
                handle.seek(arg, SeekMode.RELATIVE)
            else:
                pos = max(len(model) - raw, 0)
                handle.seek(arg, SeekMode.END)
        assert handle.position == pos
    assert handle.file.read(0, len(model) + 1) == bytes(model)


# -- DirEnt ------------------------------------------------------------------------------


def test_dirent_encoding_matches_spec_layout() -> None:
    raw = DirEnt("hello", FileType.FILE, 0x1122334455667788).encode()
    assert len(raw) == DIRENT_SIZE == DIRENT.size == 272
    assert raw[:6] == b"hello\0" and raw[6:256] == bytes(250)
    assert raw[256] == FileType.FILE and raw[257:264] == bytes(7)
    assert struct.unpack_from("<Q", raw, 264)[0] == 0x1122334455667788


def test_dirent_directory_type_byte_is_one() -> None:
    assert DirEnt("d", FileType.DIRECTORY, 0).encode()[256] == 1


def test_dirent_long_name_is_cut_at_character_boundary() -> None:
    name = "a" + "€" * 100  # 1 + 300 bytes; "€" is 3 bytes
    raw = DirEnt(name, FileType.FILE, 0).encode()
    cut = raw[: raw.index(0)]
    assert len(cut) == 253 and cut.decode() == "a" + "€" * 84
    assert raw[255] == 0


def test_dirent_name_of_255_bytes_fits_with_nul() -> None:
    raw = DirEnt("x" * 255, FileType.FILE, 0).encode()
    assert raw[:255] == b"x" * 255 and raw[255] == 0


def test_dirent_decode_inverts_encode() -> None:
    entry = DirEnt("név", FileType.DIRECTORY, 0)
    assert DirEnt.decode(entry.encode()) == entry


def test_dirent_decode_wrong_size_raises_valueerror() -> None:
    with pytest.raises(ValueError, match="272"):
        DirEnt.decode(bytes(271))


# -- OpenDirectory -------------------------------------------------------------------------


def test_open_directory_has_directory_kind() -> None:
    assert OpenDirectory.open(RamFs(), "/").kind == ObjectKind.DIRECTORY


def test_readdir_returns_entries_then_empty() -> None:
    fs = RamFs()
    fs.create("/a").write(0, b"12345")
    fs.mkdir("/d")
    handle = OpenDirectory.open(fs, "/")
    assert handle.readdir(10) == [DirEnt("a", FileType.FILE, 5), DirEnt("d", FileType.DIRECTORY, 0)]
    assert handle.readdir(10) == []


def test_readdir_honours_count_and_keeps_a_cursor() -> None:
    fs = RamFs()
    for name in "abc":
        fs.create(name)
    handle = OpenDirectory.open(fs, "/")
    assert [e.name for e in handle.readdir(2)] == ["a", "b"]
    assert [e.name for e in handle.readdir(2)] == ["c"]
    assert handle.position == 3


def test_readdir_count_zero_returns_nothing_without_moving() -> None:
    fs = fs_with()
    handle = OpenDirectory.open(fs, "/")
    assert handle.readdir(0) == [] and handle.position == 0


def test_readdir_shows_the_opendir_snapshot() -> None:
    fs = fs_with("/a")
    handle = OpenDirectory.open(fs, "/")
    fs.unlink("/a")
    fs.create("/b")
    assert [e.name for e in handle.readdir(5)] == ["a"]


def test_readdir_reports_current_size_of_snapshotted_file() -> None:
    fs = fs_with("/a")
    handle = OpenDirectory.open(fs, "/")
    fs.open("/a").write(0, b"grown")
    assert handle.readdir(1)[0].size == 5


def test_readdir_copy_out_receives_encoded_entries() -> None:
    fs = fs_with("/a")
    fs.create("/b")
    handle = OpenDirectory.open(fs, "/")
    seen: list[bytes] = []
    handle.readdir(5, seen.append)
    assert len(seen[0]) == 2 * DIRENT_SIZE
    assert DirEnt.decode(seen[0][DIRENT_SIZE:]).name == "b"


def test_readdir_failed_copy_out_leaves_cursor_unchanged() -> None:
    handle = OpenDirectory.open(fs_with("/a"), "/")
    assert errno_of(lambda: handle.readdir(5, efault)) == Errno.EFAULT
    assert handle.position == 0 and len(handle.readdir(5)) == 1


def test_opendir_of_file_returns_enotdir() -> None:
    assert errno_of(lambda: OpenDirectory.open(fs_with(), "/f")) == Errno.ENOTDIR


def test_handles_of_one_directory_have_independent_cursors() -> None:
    fs = fs_with("/a")
    first = OpenDirectory.open(fs, "/")
    second = OpenDirectory.open(fs, "")
    first.readdir(1)
    assert len(second.readdir(1)) == 1
