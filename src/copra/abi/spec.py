"""The copra syscall ABI: the one source of truth.

Everything user mode and the kernel must agree on is declared here as data: syscall
numbers, error codes, flag sets, limits, the user address-space layout and the layout
of every structure shared between user and kernel. The kernel imports these
definitions; the Rust user library (``user/libcopra/src/abi.rs``) and the C header
(``include/copra/abi.h``) are generated from them by :mod:`copra.abi.gen`, and a test
fails when a generated copy is stale.

Numbers follow COCONUT-SVSM where upstream defined them (``syscall/src/def.rs`` and
``call.rs`` at upstream commit f4bc4bcd); every copra addition or deviation is listed in
docs/abi.md beside upstream's behaviour.

This module holds no logic: only declarations.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, IntFlag


def sysno(cls: int, index: int) -> int:
    """A syscall number: class in bits 63:32, index in bits 31:0 (upstream's scheme)."""
    return (cls << 32) | index


class Errno(IntEnum):
    """Status codes returned (negated, sign-extended to 64 bits) in rax.

    The first twelve are upstream's values. copra produces each one for a specific,
    documented condition; docs/abi.md lists them per syscall.
    """

    EINVAL = -1  #: an argument is malformed: unknown flag bits, bad mode, non-UTF-8 path
    ENOSYS = -2  #: the syscall number is not implemented (upstream answers EINVAL)
    ENOMEM = -3  #: out of physical frames or address space
    EPERM = -4  #: the handle lacks the right the operation needs
    EFAULT = -5  #: a user pointer range is unmapped, kernel-half, non-canonical or read-only
    EBUSY = -6  #: the object is exclusive and already held
    ENOTFOUND = -7  #: no such file, directory, handle or capability index
    ENOTSUPP = -8  #: the handle's object kind does not support the operation
    EEXIST = -9  #: create or mkdir of a name that exists
    ERDONLY = -10  #: write or truncate through a handle opened without WRITE
    EWRONLY = -11  #: read through a handle opened without READ
    # copra additions (upstream answers UNKNOWN for these conditions).
    ENOTEMPTY = -12  #: rmdir of a directory that still has entries
    EISDIR = -13  #: a file operation (unlink, open) named a directory
    #: a directory operation (rmdir, opendir) named a file, or a path walks through a file
    ENOTDIR = -14
    EMFILE = -15  #: the process has reached its limit of open handles
    ENOEXEC = -16  #: EXEC found the file but it is not a loadable ELF64 x86-64 ET_EXEC image
    ENAMETOOLONG = -17  #: a path is longer than PATH_MAX or a name longer than NAME_MAX
    #: EXEC: a limit on tasks (system-wide) or on the caller's running or unreaped
    #: children is reached; try again once a task has ended or been reaped (WAIT);
    #: THREAD_CREATE: the process holds its limit of threads; FUTEX_WAIT: the word
    #: no longer holds the expected value
    EAGAIN = -18
    ETIMEDOUT = -19  #: a wait's timeout passed first (FUTEX_WAIT)
    EOVERFLOW = -20  #: a WRITE to an event would carry its counter past EVENT_MAX
    UNKNOWN = -128  #: an internal error with no better code (counted by the kernel)


class SyscallClass(IntEnum):
    CORE = 0
    FILE = 1
    VMM = 2  # reserved: upstream never defined it
    SYSINFO = 3


class Sys(IntEnum):
    """Syscall numbers: (class << 32) | index."""

    EXIT = sysno(0, 0)
    MMAP = sysno(0, 1)
    MUNMAP = sysno(0, 2)
    MRESIZE = sysno(0, 3)
    EXEC = sysno(0, 4)
    WAIT = sysno(0, 5)  # copra: wait for a child and read its status (upstream has none)
    CLOSE = sysno(0, 10)
    # copra's threads and synchronisation; class 0 indices from 0x10 up, so that the
    # indices upstream may still give its own class-0 calls stay free.
    THREAD_CREATE = sysno(0, 0x10)  # entry, stack top, argument, FS base -> thread handle
    THREAD_EXIT = sysno(0, 0x11)  # code: ends the calling thread (the last: the process)
    JOIN = sysno(0, 0x12)  # thread or process handle -> its code or status, once it ended
    FUTEX_WAIT = sysno(0, 0x13)  # address, expected u32, timeout ns: sleep while equal
    FUTEX_WAKE = sysno(0, 0x14)  # address, count -> threads woken
    PROCESS_OPEN = sysno(0, 0x15)  # task id of a child -> process handle
    EVENT_CREATE = sysno(0, 0x16)  # EventFlag -> event handle (READ/WRITE 8 bytes)
    WAIT_MANY = sysno(0, 0x17)  # WaitItem array, count, timeout ns -> items ready
    CLOCK = sysno(0, 0x18)  # -> monotonic nanoseconds
    SLEEP = sysno(0, 0x19)  # nanoseconds
    OPEN = sysno(1, 0)
    READ = sysno(1, 1)
    WRITE = sysno(1, 2)
    SEEK = sysno(1, 3)
    TRUNCATE = sysno(1, 4)
    UNLINK = sysno(1, 5)
    OPENDIR = sysno(1, 6)
    READDIR = sysno(1, 7)
    MKDIR = sysno(1, 8)
    RMDIR = sysno(1, 9)
    CAPABILITIES = sysno(3, 0)


class Capability(IntEnum):
    """Indices accepted by CAPABILITIES (class 3, index 0).

    copra adds no index of its own yet; an addition would take the next free index
    (upstream's stay as they are) and count in COUNT like upstream's.
    """

    #: the number of capability values after index 0 (upstream's meaning: 2 today)
    COUNT = 0
    VM_BITMAP = 1  #: bit n set: VM n can be opened (0 on copra today: no guest VMs yet)
    FEATURES = 2  #: platform feature bitmap; bits 2:0 are the platform type


class PlatformType(IntEnum):
    """Bits 2:0 of Capability.FEATURES (upstream: 0 native, 1 SNP, 2 TDX partitioning)."""

    NATIVE = 0
    SNP = 1
    TDX = 2
    COPRA_KVM = 3  #: copra: the SVSM architecture emulated on ordinary KVM


class FileMode(IntFlag):
    READ = 1
    WRITE = 2
    APPEND = 4
    TRUNC = 8


class FileFlag(IntFlag):
    CREATE = 1


class SeekMode(IntEnum):
    ABSOLUTE = 0
    RELATIVE = 1
    END = 2


class FileType(IntEnum):
    FILE = 0
    DIRECTORY = 1


class MapFlag(IntFlag):
    """MMAP flags (upstream's draft values; ANONYMOUS replaces "handle 0 means anonymous")."""

    READ = 1
    WRITE = 2
    EXEC = 4
    PRIVATE = 8
    ANONYMOUS = 16
    FIXED = 32


class Signal(IntFlag):
    """Observable states of kernel objects, for WAIT_MANY (each kind raises some)."""

    ENDED = 1  #: a thread or process has ended (for good)
    READABLE = 2  #: an event's counter is non-zero: a READ would not block
    WRITABLE = 4  #: an event's counter is below EVENT_MAX: a WRITE of 1 would succeed


class EventFlag(IntFlag):
    """EVENT_CREATE's flags."""

    NONBLOCK = 1  #: READ of a zero counter answers EAGAIN instead of blocking


class Entry(IntEnum):
    """How user mode enters the kernel. Both reach the same dispatcher with the same registers."""

    INT80 = 0  #: ``int 0x80`` (CD 80): upstream's entry, through the IDT gate or a #UD trap
    DOORBELL = 1  #: ``out DOORBELL_PORT, al``: copra's fast path, the TSS I/O bitmap allows it


# Registers, in argument order. rdx is not an argument (upstream's convention).
ARG_REGISTERS: tuple[str, ...] = ("rdi", "rsi", "r8", "r9", "r10")
RESULT_REGISTER = "rax"
CLOBBERED_REGISTERS: tuple[str, ...] = ("rcx", "r11")

#: The single I/O port user mode may write; the write is a syscall.
DOORBELL_PORT = 0xE0
#: The interrupt vector of the upstream entry.
SYSCALL_VECTOR = 0x80

#: Errors are returned as -errno; any rax above this value (as u64) is an error.
ERROR_THRESHOLD = (1 << 64) - 0x1000

PAGE_SIZE = 4096
PATH_MAX = 4096  #: bytes including the terminating NUL
NAME_MAX = 255  #: bytes of one path component
HANDLE_LOG = 0  #: every task's log/stdout
#: Every line of the log (each task's, prefix included, and the kernel's) is also
#: appended to this RAM-fs file, created at boot before the archive is unpacked
#: (upstream's ``Log/logfile``); programs may OPEN and READ it.
LOG_FILE_PATH = "/Log/logfile"
#: copra keeps the log file at most this many bytes; later lines reach the console only.
LOG_FILE_MAX = 1 << 20
#: default per-process limit on open handles (EMFILE beyond it); an image
#: configuration may set another (``limits.handles``, docs/images.md)
MAX_HANDLES = 1024

#: User address space: [USER_START, USER_END), upstream's [0, 2^47) less what copra keeps
#: unmapped: page 0 (a NULL pointer faults) and the top page below 2^47. Program
#: segments may lie anywhere in [USER_START, USER_MAP_END). Everything above is the kernel's.
USER_START = 0x0000_0000_0000_1000
USER_END = 0x0000_7FFF_FFFF_F000
USER_STACK_SIZE = 64 * 1024
USER_STACK_TOP = USER_END  #: the stack occupies [USER_STACK_TOP - USER_STACK_SIZE, USER_STACK_TOP)
USER_INITIAL_RSP = USER_STACK_TOP - 8
USER_INITIAL_RFLAGS = 0x202
#: Where MMAP places mappings when no hint is given (searching upward).
MMAP_BASE = 0x0000_1000_0000_0000
#: One unmapped guard page below the stack: an overflow faults instead of running into
#: a mapping. Program segments and MMAP both end at or below USER_MAP_END.
USER_STACK_GUARD = PAGE_SIZE
USER_MAP_END = USER_STACK_TOP - USER_STACK_SIZE - USER_STACK_GUARD

#: Thread-local storage (x86-64 psABI variant II): a thread's FS base points at its
#: thread control block (TCB) of TLS_TCB_SIZE bytes, the TLS block (the PT_TLS template:
#: .tdata copied, .tbss zeroed) lies just below it. Word 0 of the TCB points to itself
#: (%fs:0), word 1 holds TLS_TCB_MAGIC, the rest is zero and reserved. EXEC gives the
#: first thread such a block (docs/abi.md); libcopra builds one for each thread it spawns.
TLS_TCB_SIZE = 64
TLS_TCB_MAGIC = 0x4243_5461_7270_6F63  #: "copraTCB", little-endian

#: The timeout (FUTEX_WAIT, WAIT_MANY) that means "no timeout".
TIMEOUT_NEVER = (1 << 64) - 1
#: The most (handle, signals) items one WAIT_MANY takes.
WAIT_MANY_MAX = 64
#: The largest value an event's counter holds (eventfd's); WRITE past it is EOVERFLOW.
EVENT_MAX = (1 << 64) - 2

#: Exit status packing, as upstream: Exited(c) -> c << 16 with c the low 16 bits of
#: EXIT's argument; killed by a CPU exception -> (vector << 8) | 1.
EXIT_STATUS_SHIFT = 16
KILLED_BY_EXCEPTION = 1


@dataclass(frozen=True)
class Field:
    name: str
    ctype: str  #: one of u8 u16 u32 u64 i64, or "u8[N]"
    offset: int
    doc: str = ""


@dataclass(frozen=True)
class Struct:
    name: str
    size: int
    fields: tuple[Field, ...]
    doc: str = ""


DIRENT = Struct(
    "DirEnt",
    272,
    (
        Field("name", "u8[256]", 0, "NUL-terminated UTF-8, cut at a character boundary (255 B)"),
        Field("file_type", "u8", 256, "FileType"),
        Field("_pad", "u8[7]", 257, "zero"),
        Field("size", "u64", 264, "bytes; 0 for directories"),
    ),
    "One entry filled by READDIR (upstream's layout).",
)

HEAP_STATS = Struct(
    "HeapStats",
    104,
    (
        Field("in_use", "u64", 0, "bytes in live blocks, counted at their usable size"),
        Field("peak_in_use", "u64", 8, "the most in_use has been"),
        Field("mapped", "u64", 16, "bytes the heap holds from the kernel, its tables included"),
        Field("peak_mapped", "u64", 24, "the most mapped has been"),
        Field("retained", "u64", 32, "of mapped: empty slabs, freed large blocks kept for reuse"),
        Field("metadata", "u64", 40, "of mapped: the heap's own tables"),
        Field("live_blocks", "u64", 48, "blocks handed out and not freed"),
        Field("allocations", "u64", 56, "blocks handed out since the start"),
        Field("frees", "u64", 64, "blocks given back since the start"),
        Field("maps", "u64", 72, "MMAP calls the heap made"),
        Field("unmaps", "u64", 80, "MUNMAP calls the heap made"),
        Field("resizes", "u64", 88, "MRESIZE calls the heap made"),
        Field("failures", "u64", 96, "allocations that found no memory"),
    ),
    "The user library's heap statistics (libcopra `heap::stats`, C `copra_heap_stats`).\n\n"
    "Not a kernel structure: it passes between libcopra and a C program linked with it,\n"
    "and is declared here so that both languages take one layout.",
)

WAIT_ITEM = Struct(
    "WaitItem",
    16,
    (
        Field("handle", "u32", 0, "a thread, process or event handle with the WAIT right"),
        Field("signals", "u32", 4, "the Signal bits waited for (non-zero)"),
        Field("ready", "u32", 8, "written by WAIT_MANY: those of them raised"),
        Field("_pad", "u32", 12, "zero"),
    ),
    "One (handle, signals) pair of WAIT_MANY's array.",
)

STRUCTS: tuple[Struct, ...] = (DIRENT, HEAP_STATS, WAIT_ITEM)
