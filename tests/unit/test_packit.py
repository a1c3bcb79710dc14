"""PackIt codec: layout, round trip and every malformation."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from copra.abi.spec import NAME_MAX, PATH_MAX
from copra.kernel.packit import (
    HEADER_SIZE,
    MAGIC,
    PackItEntry,
    PackItError,
    check_paths,
    decode,
    encode,
)


def header(size: int = HEADER_SIZE, magic: bytes = MAGIC) -> bytes:
    return magic + struct.pack("<I", size)


def record(name: bytes, data: bytes, *, rtype: int = 1, name_len: int | None = None,
           file_size: int | None = None) -> bytes:
    nl = len(name) if name_len is None else name_len
    fs = len(data) if file_size is None else file_size
    return struct.pack("<HHQ", rtype, nl, fs) + name + data


def test_encode_single_file_has_upstream_layout() -> None:
    blob = encode([PackItEntry("/init", b"\x7fELF")])
    assert blob == b"PKIT" + b"\x08\0\0\0" + b"\x01\0" + b"\x05\0" + (4).to_bytes(8, "little") + (
        b"/init\x7fELF"
    )


def test_encode_no_entries_is_header_only() -> None:
    assert encode([]) == header()


def test_decode_header_only_returns_no_entries() -> None:
    assert decode(header()) == []


def test_decode_two_records_returns_them_in_order() -> None:
    blob = header() + record(b"a", b"1") + record(b"dir/b", b"")
    assert decode(blob) == [PackItEntry("a", b"1"), PackItEntry("dir/b", b"")]


def test_decode_larger_header_size_skips_extra_header_bytes() -> None:
    blob = header(12) + b"\xff" * 4 + record(b"x", b"y")
    assert decode(blob) == [PackItEntry("x", b"y")]


def test_decode_accepts_bytearray_and_memoryview() -> None:
    blob = encode([PackItEntry("f", b"data")])
    assert decode(bytearray(blob)) == decode(memoryview(blob)) == [PackItEntry("f", b"data")]


@pytest.mark.parametrize(
    ("blob", "message"),
    [
        (b"", "truncated header"),
        (b"PKI", "truncated header"),
        (header(magic=b"PKIX"), "bad magic"),
        (header(7), "smaller than 8"),
        (header(0), "smaller than 8"),
        (header(9), "beyond the archive"),
        (header() + b"\x01\x00\x01", "truncated record header"),
        (header() + record(b"a", b"", rtype=2), "unknown record type 2"),
        (header() + record(b"a", b"", rtype=0), "unknown record type 0"),
        (header() + record(b"", b"x", name_len=0), "zero name length"),
        (header() + record(b"ab", b"", name_len=3), "runs past the end"),
        (header() + record(b"\xff\xfe", b""), "not valid UTF-8"),
        (header() + record(b"a", b"xy", file_size=3), "claims 3 bytes, only 2 remain"),
        (header() + record(b"a", b"", file_size=2**64 - 1), "claims"),
        (header() + record(b"a", b"1") + record(b"a", b"2"), "duplicate path"),
        (header() + record(b"/a/b", b"1") + record(b"a//b/", b"2"), "duplicate path"),
        (header() + record(b"a", b"1") + record(b"a/b", b"2"), "passes through the file"),
        (header() + record(b"a/b", b"1") + record(b"a", b"2"), "is a directory of an earlier"),
        (header() + record(b"/", b""), "names no file"),
        (header() + record(b"//", b""), "names no file"),
        (header() + record(b"a\0b", b""), "NUL"),
        (header() + record(b"x" * (NAME_MAX + 1), b""), "component is 256 bytes"),
        (header() + record(b"a/" * (PATH_MAX // 2), b""), "limit 4095"),
    ],
)
def test_decode_malformed_archive_raises_packiterror(blob: bytes, message: str) -> None:
    with pytest.raises(PackItError, match=message):
        decode(blob)


def test_decode_error_message_names_the_record_offset() -> None:
    blob = header() + record(b"a", b"1") + record(b"b", b"", rtype=7)
    with pytest.raises(PackItError, match="record 1 at offset 22"):
        decode(blob)


def test_decode_dot_and_dotdot_are_ordinary_names() -> None:
    blob = header() + record(b"./..", b"1") + record(b"..", b"2")
    assert [e.path for e in decode(blob)] == ["./..", ".."]


def test_encode_duplicate_path_raises_packiterror() -> None:
    with pytest.raises(PackItError, match="duplicate path"):
        encode([PackItEntry("/a", b""), PackItEntry("a", b"")])


def test_encode_empty_path_raises_packiterror() -> None:
    with pytest.raises(PackItError, match="names no file"):
        encode([PackItEntry("", b"")])


def test_encode_lone_surrogate_raises_packiterror() -> None:
    with pytest.raises(PackItError, match="UTF-8"):
        encode([PackItEntry("\udcff", b"")])


_component = st.text(
    alphabet=st.characters(codec="utf-8", exclude_characters="/\0"),
    min_size=1,
    max_size=12,
)
_path = st.lists(_component, min_size=1, max_size=4).map(lambda parts: "/" + "/".join(parts))


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_path, st.binary(max_size=64), max_size=6))
def test_encode_then_decode_round_trips(files: dict[str, bytes]) -> None:
    # Drop entries whose path would pass through another entry's file.
    paths = sorted(files)
    keep = [p for p in paths if not any(p.startswith(q + "/") for q in paths if q != p)]
    entries = [PackItEntry(p, files[p]) for p in keep]
    assert decode(encode(entries)) == entries


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=96))
def test_decode_random_bytes_raises_only_packiterror(blob: bytes) -> None:
    with contextlib.suppress(PackItError):
        decode(blob)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=96))
def test_decode_random_body_after_valid_header_raises_only_packiterror(body: bytes) -> None:
    with contextlib.suppress(PackItError):
        decode(header() + body)


_VALID = encode([PackItEntry("/init", b"abc"), PackItEntry("/bin/hello", b"\0" * 9)])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, len(_VALID) - 1), st.integers(0, 255)), max_size=4),
       st.integers(0, len(_VALID)))
def test_decode_mutated_archive_raises_only_packiterror(
    flips: list[tuple[int, int]], cut: int
) -> None:
    blob = bytearray(_VALID)
    for index, value in flips:
        blob[index] = value
    with contextlib.suppress(PackItError):
        decode(bytes(blob[:cut]))


def test_check_paths_accepts_disjoint_paths() -> None:
    check_paths(["/init", "/bin/hello", "/bin/other", "/etc/init.services"])


def test_check_paths_file_used_as_directory_raises_packiterror() -> None:
    with pytest.raises(PackItError, match="passes through the file '/bin'"):
        check_paths(["/bin", "/bin/hello"])
