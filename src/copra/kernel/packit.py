"""The PackIt archive codec: the boot image format the RAM fs is populated from.

Format (upstream ``coconut-svsm/packit``; all integers little-endian, no padding):

    header  magic "PKIT" (50 4B 49 54), u32 header_size (8 today)
    record  u16 type (1 = file), u16 name_len (> 0), u64 file_size,
            name_len bytes of UTF-8 path, file_size bytes of data
    ...     records follow each other until the data ends; there is no trailer

Records start at ``header_size``: a larger header is skipped, which leaves room to
grow it (upstream's decoder ignores the field and always starts at byte 8; writers
emit 8, so the two agree on every archive upstream produces).

What :func:`decode` guarantees about its result, so populating an empty fs from it
cannot fail: every path obeys the fs rules of :mod:`copra.kernel.paths` (UTF-8, at
least one non-empty component, ``PATH_MAX``/``NAME_MAX``); no two entries name the
same file once empty components are dropped (``a//b`` is ``/a/b``); and no entry's
path passes through another entry's file (``/a`` and ``/a/b`` together). Every
violation, and every truncation, raises :class:`PackItError` with the byte offset;
no other exception escapes (a hypothesis test holds it to that).

Locking: pure functions over immutable inputs; no state, no locking.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

from copra.kernel.errors import SyscallError
from copra.kernel.paths import split_file_path

MAGIC = b"PKIT"
HEADER = struct.Struct("<4sI")
RECORD = struct.Struct("<HHQ")
HEADER_SIZE = HEADER.size  # 8
RECORD_TYPE_FILE = 1
MAX_NAME_LEN = 0xFFFF


class PackItError(Exception):
    """The archive (or the entries to encode) is malformed; the message says where."""


@dataclass(frozen=True)
class PackItEntry:
    """One file of an archive: its path inside the fs and its contents."""

    path: str
    data: bytes


class _PathChecker:
    """Tracks the paths seen so far and rejects duplicates and file/dir conflicts."""

    def __init__(self) -> None:
        self._files: set[tuple[str, ...]] = set()
        self._dirs: set[tuple[str, ...]] = set()

    def add(self, path: str, where: str) -> None:
        try:
            components = split_file_path(path)
        except SyscallError as exc:
            raise PackItError(f"{where}: invalid path {path!r}: {exc.message}") from None
        if components in self._files:
            raise PackItError(f"{where}: duplicate path {path!r}")
        if components in self._dirs:
            raise PackItError(f"{where}: path {path!r} is a directory of an earlier entry")
        for depth in range(1, len(components)):
            prefix = components[:depth]
            if prefix in self._files:
                raise PackItError(
                    f"{where}: path {path!r} passes through the file "
                    f"{'/' + '/'.join(prefix)!r} of an earlier entry"
                )
        self._files.add(components)
        self._dirs.update(components[:depth] for depth in range(1, len(components)))


def check_paths(paths: Iterable[str]) -> None:
    """Apply :func:`decode`'s path rules to ``paths`` (for tools that build archives)."""
    checker = _PathChecker()
    for index, path in enumerate(paths):
        checker.add(path, f"entry {index}")


def encode(entries: Iterable[PackItEntry]) -> bytes:
    """Pack ``entries`` in order into an archive that :func:`decode` accepts."""
    out = bytearray(HEADER.pack(MAGIC, HEADER_SIZE))
    checker = _PathChecker()
    for index, entry in enumerate(entries):
        checker.add(entry.path, f"entry {index}")
        name = entry.path.encode("utf-8")
        if len(name) > MAX_NAME_LEN:  # unreachable while PATH_MAX < 64 KiB; kept as a guard
            raise PackItError(f"entry {index}: path is {len(name)} bytes, limit {MAX_NAME_LEN}")
        data = bytes(entry.data)
        out += RECORD.pack(RECORD_TYPE_FILE, len(name), len(data))
        out += name
        out += data
    return bytes(out)


def decode(archive: bytes | bytearray | memoryview) -> list[PackItEntry]:
    """Unpack and validate a whole archive; raises :class:`PackItError` on any defect."""
    data = bytes(archive)
    if len(data) < HEADER.size:
        raise PackItError(f"truncated header: {len(data)} bytes, need {HEADER.size}")
    magic, header_size = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        raise PackItError(f"bad magic {magic!r}, expected {MAGIC!r}")
    if header_size < HEADER_SIZE:
        raise PackItError(f"header_size {header_size} is smaller than {HEADER_SIZE}")
    if header_size > len(data):
        raise PackItError(f"header_size {header_size} is beyond the archive ({len(data)} bytes)")

    entries: list[PackItEntry] = []
    checker = _PathChecker()
    offset = header_size
    while offset < len(data):
        where = f"record {len(entries)} at offset {offset}"
        if len(data) - offset < RECORD.size:
            raise PackItError(
                f"{where}: truncated record header "
                f"({len(data) - offset} bytes left, need {RECORD.size})"
            )
        rtype, name_len, file_size = RECORD.unpack_from(data, offset)
        if rtype != RECORD_TYPE_FILE:
            raise PackItError(f"{where}: unknown record type {rtype}")
        if name_len == 0:
            raise PackItError(f"{where}: zero name length")
        name_start = offset + RECORD.size
        name_end = name_start + name_len
        if name_end > len(data):
            raise PackItError(f"{where}: name of {name_len} bytes runs past the end of the archive")
        try:
            path = data[name_start:name_end].decode("utf-8", errors="strict")
        except UnicodeDecodeError as exc:
            raise PackItError(f"{where}: name is not valid UTF-8 ({exc.reason})") from None
        data_end = name_end + file_size
        if data_end > len(data):
            raise PackItError(
                f"{where}: file {path!r} claims {file_size} bytes, "
                f"only {len(data) - name_end} remain"
            )
        checker.add(path, where)
        entries.append(PackItEntry(path, data[name_end:data_end]))
        offset = data_end
    return entries
