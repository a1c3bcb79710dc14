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
    #: the object is exclusive and already held (DUPLICATE of a VM or VCPU); SEND of an
    #: endpoint whose queue carries an endpoint (it could close a cycle)
    EBUSY = -6
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
    #: no longer holds the expected value; SEND (RECV) without BLOCK: the queue is full
    #: (empty)
    EAGAIN = -18
    ETIMEDOUT = -19  #: a wait's timeout passed first (FUTEX_WAIT)
    EOVERFLOW = -20  #: a WRITE to an event would carry its counter past EVENT_MAX
    #: RECV: the buffer or the handle array is too small for the next message, which
    #: stays queued; the ChannelMessage's sizes say what it needs
    EMSGSIZE = -21
    EPIPE = -22  #: SEND or RECV on a channel endpoint whose peer is closed (RECV: and empty)
    #: VCPU_RUN was kicked out before the guest needed user mode: its timeout passed,
    #: another thread closed the VCPU or its VM, the process is ending; call it again
    EINTR = -23
    UNKNOWN = -128  #: an internal error with no better code (counted by the kernel)


class SyscallClass(IntEnum):
    CORE = 0
    FILE = 1
    VMM = 2  # upstream named VM_OPEN and VM_CAPABILITIES but never numbered them: copra's
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
    # copra's channels: endpoints that carry bytes and move handles between processes.
    CHANNEL_CREATE = sysno(0, 0x1A)  # flags (0) -> (second << 32) | first endpoint handle
    SEND = sysno(0, 0x1B)  # endpoint, ChannelMessage, ChannelFlag -> 0
    RECV = sysno(0, 0x1C)  # endpoint, ChannelMessage, ChannelFlag -> bytes received
    DUPLICATE = sysno(0, 0x1D)  # handle, rights (or RIGHTS_SAME) -> a new handle
    REPLACE = sysno(0, 0x1E)  # handle, rights: the handle keeps only these rights
    EXEC_HANDLES = sysno(0, 0x1F)  # path, root, handle array, count, flags (0) -> task id
    BATCH = sysno(0, 0x20)  # BatchRecord array, count, BatchFlag -> records run
    # endpoint, ChannelMessage to send, ChannelMessage to receive into, flags (0) -> bytes
    CHANNEL_CALL = sysno(0, 0x21)
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
    # Class 2, the VMM interface: upstream's names, copra's numbers (docs/abi.md).
    VM_OPEN = sysno(2, 0)  # VM index -> VM handle (exclusive system-wide)
    VM_CAPABILITIES = sysno(2, 1)  # VM handle, VmCap index -> value
    VCPU_OPEN = sysno(2, 2)  # VM handle, vCPU index -> VCPU handle (exclusive)
    VCPU_RUN = sysno(2, 3)  # VCPU handle, timeout ns -> 0, the exit in the run page
    VM_SET_MSR_FILTER = sysno(2, 4)  # VM handle, MsrRange array, count: the MSRs user mode claims
    VM_MEMORY = sysno(2, 5)  # VM handle -> a handle on the guest's RAM (MMAP it)
    IO_EVENT_CREATE = sysno(2, 6)  # VM handle, first port, ports -> device event handle
    MMIO_EVENT_CREATE = sysno(2, 7)  # VM handle, guest-physical address, bytes -> handle
    IRQ_CREATE = sysno(2, 8)  # VM handle, APIC id, vector, IrqFlag -> IRQ handle
    IRQ_SIGNAL = sysno(2, 9)  # IRQ handle: assert it (the vector becomes pending)
    # device event, DeviceAnswer (or 0), DeviceAccess buffer -> bytes taken (32)
    DEVICE_REPLY = sysno(2, 0x0A)
    CAPABILITIES = sysno(3, 0)


class Capability(IntEnum):
    """Indices accepted by CAPABILITIES (class 3, index 0).

    copra adds no index of its own yet; an addition would take the next free index
    (upstream's stay as they are) and count in COUNT like upstream's.
    """

    #: the number of capability values after index 0 (upstream's meaning: 2 today)
    COUNT = 0
    VM_BITMAP = 1  #: bit n set: guest VM n exists and has not been released (VM_OPEN(n))
    FEATURES = 2  #: platform feature bitmap; bits 2:0 are the platform type


class PlatformType(IntEnum):
    """Bits 2:0 of Capability.FEATURES (upstream: 0 native, 1 SNP, 2 TDX partitioning)."""

    NATIVE = 0
    SNP = 1
    TDX = 2
    COPRA_KVM = 3  #: copra: the SVSM architecture emulated on ordinary KVM


class VmCap(IntEnum):
    """Indices accepted by VM_CAPABILITIES (class 2, index 1)."""

    COUNT = 0  #: the number of values after index 0
    VCPUS = 1  #: vCPUs of the VM (VCPU_OPEN takes 0 to VCPUS - 1)
    MEMORY_SIZE = 2  #: bytes of guest RAM: guest-physical [MEMORY_BASE, + MEMORY_SIZE)
    MEMORY_BASE = 3  #: the guest-physical address of RAM's first byte (0 on copra)
    FEATURES = 4  #: VmFeature bits


class VmFeature(IntFlag):
    """Bits of VM_CAPABILITIES(vm, VmCap.FEATURES)."""

    KERNEL_X2APIC = 1  #: the kernel answers the x2APIC MSRs, APIC_BASE and TSC_DEADLINE
    MSR_FILTER = 2  #: VM_SET_MSR_FILTER claims MSRs for user mode
    PVH_BOOT = 4  #: the kernel was loaded at boot; vCPU 0 starts at its PVH entry


class VcpuExit(IntEnum):
    """RunPage.exit_reason: why VCPU_RUN returned (the payload's layout follows it)."""

    NONE = 0  #: no exit yet (the page was just mapped)
    IO = 1  #: port I/O: VcpuIo
    MMIO = 2  #: an access to guest-physical memory outside RAM: VcpuMmio
    MSR_READ = 3  #: RDMSR of an MSR user mode claimed: VcpuMsr, answer in data or error
    MSR_WRITE = 4  #: WRMSR of an MSR user mode claimed: VcpuMsr, answer error
    CPUID = 5  #: CPUID (hardware that traps it; KVM answers CPUID itself): VcpuCpuid
    HLT = 6  #: HLT: the vCPU waits for an interrupt; VCPU_RUN resumes after it
    SHUTDOWN = 7  #: a triple fault: the vCPU is dead, every VCPU_RUN reports it again
    EMULATION_FAILURE = 8  #: an instruction neither KVM nor copra can run: VcpuFailure
    INTERNAL_ERROR = 9  #: KVM stopped the vCPU (failed entry, internal error): VcpuFailure
    #: a device model's event went away with this access unanswered: the guest got all
    #: ones (a read) and goes on; VcpuIo or VcpuMmio describes the access; no answer
    DEVICE_GONE = 10


class IoDirection(IntEnum):
    IN = 0
    OUT = 1


class MsrFilterFlag(IntFlag):
    """MsrRange.flags: which accesses of the range's MSRs come to user mode."""

    READ = 1
    WRITE = 2


class IrqFlag(IntFlag):
    """IRQ_CREATE's trigger mode: edge (0) or level (resampled at the guest's EOI)."""

    EDGE = 0
    LEVEL = 1


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
    #: an event's counter is non-zero: a READ would not block; a channel endpoint's
    #: queue holds a message: a RECV would not block; a VCPU has an exit waiting for
    #: user mode's answer
    READABLE = 2
    #: an event's counter is below EVENT_MAX: a WRITE of 1 would succeed; a channel
    #: endpoint's peer is open and has room in its queue: a SEND would not block
    WRITABLE = 4
    PEER_CLOSED = 8  #: a channel endpoint's peer is closed (its queue may still hold messages)


class Right(IntFlag):
    """The rights a handle grants (DUPLICATE and REPLACE take them; only ever reduced)."""

    READ = 1  #: READ, READDIR, RECV
    WRITE = 2  #: WRITE, TRUNCATE, SEND
    MAP = 4  #: MMAP of the object
    WAIT = 8  #: WAIT_MANY on the object's signals, JOIN
    TRANSFER = 16  #: the handle may be moved: SEND, EXEC_HANDLES
    DUPLICATE = 32  #: DUPLICATE may make another handle on the object


class ChannelFlag(IntFlag):
    """SEND's and RECV's flags."""

    BLOCK = 1  #: wait while the peer's queue is full (SEND) or the own queue empty (RECV)


class EventFlag(IntFlag):
    """EVENT_CREATE's flags."""

    NONBLOCK = 1  #: READ of a zero counter answers EAGAIN instead of blocking


class BatchFlag(IntFlag):
    """BATCH's flags."""

    #: stop after the first record whose result is an error (it is written back too)
    STOP_ON_ERROR = 1


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
#: The most records one BATCH runs.
BATCH_MAX = 64
#: The largest value an event's counter holds (eventfd's); WRITE past it is EOVERFLOW.
EVENT_MAX = (1 << 64) - 2
#: DUPLICATE's rights argument that keeps the rights of the original handle.
RIGHTS_SAME = 0xFFFF_FFFF
#: The most bytes one channel message carries.
CHANNEL_MAX_BYTES = 64 * 1024
#: The most handles one channel message (or one EXEC_HANDLES) moves.
CHANNEL_MAX_HANDLES = 64
#: The most messages queued towards one endpoint; SEND beyond waits or answers EAGAIN.
CHANNEL_QUEUE_MAX = 64

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
        Field("handle", "u32", 0, "a thread, process, event or channel endpoint handle "
                                  "with the WAIT right"),
        Field("signals", "u32", 4, "the Signal bits waited for (non-zero)"),
        Field("ready", "u32", 8, "written by WAIT_MANY: those of them raised"),
        Field("_pad", "u32", 12, "zero"),
    ),
    "One (handle, signals) pair of WAIT_MANY's array.",
)

BATCH_RECORD = Struct(
    "BatchRecord",
    64,
    (
        Field("number", "u64", 0, "the syscall number, as in rax"),
        Field("args", "u64[5]", 8, "its arguments, as in rdi, rsi, r8, r9, r10"),
        Field("user_data", "u64", 48, "the caller's own; the kernel never reads or changes it"),
        Field("result", "i64", 56, "written by BATCH: what rax would hold (-errno on error)"),
    ),
    "One syscall of BATCH's array.",
)


#: The run page's layout version (RunPage.version); a layout that grows gets a new one.
RUN_PAGE_VERSION = 1
#: Where the exit payload (one of the Vcpu* structures, by exit_reason) starts in the run page.
RUN_PAGE_PAYLOAD = 16
#: Bytes the payload area holds.
RUN_PAGE_PAYLOAD_SIZE = 64
#: Where a port access's data lies in the run page, and how many bytes it holds at most
#: (a longer string access comes in several exits of at most this many bytes).
RUN_PAGE_IO_DATA = 2048
RUN_PAGE_IO_DATA_SIZE = 2048
#: The guest registers in RunPage.regs, in this order (KVM's struct kvm_regs).
GUEST_REGISTERS: tuple[str, ...] = (
    "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11",
    "r12", "r13", "r14", "r15", "rip", "rflags")
#: RunPage.regs_dirty: VCPU_RUN loads the guest's registers from RunPage.regs first.
REGS_DIRTY = 1
#: The most ranges VM_SET_MSR_FILTER takes, and MSRs per range.
MSR_FILTER_MAX_RANGES = 16
MSR_RANGE_MAX_MSRS = 0x3000
#: Where a guest's RAM appears in the SVSM's physical address space (guest n at
#: GUEST_RAM_SVSM_BASE + n * GUEST_RAM_SVSM_STRIDE): MMAP of VM_MEMORY maps those frames.
GUEST_RAM_SVSM_BASE = 0x4_0000_0000
GUEST_RAM_SVSM_STRIDE = 0x1_0000_0000

RUN_PAGE = Struct(
    "RunPage",
    4096,
    (
        Field("version", "u32", 0, "kernel, at VCPU_OPEN: RUN_PAGE_VERSION"),
        Field("exit_reason", "u32", 4, "kernel, when VCPU_RUN returns 0: a VcpuExit"),
        Field("regs_dirty", "u32", 8, "user: REGS_DIRTY to load regs at the next VCPU_RUN; "
                                      "kernel clears it; other values are EINVAL"),
        Field("_pad", "u32", 12, "zero"),
        Field("payload", "u8[64]", 16, "the exit's data: the Vcpu* structure of exit_reason"),
        Field("regs", "u64[18]", 80, "kernel, at every return: the guest's GUEST_REGISTERS"),
        Field("_reserved", "u8[1824]", 224, "zero; later versions grow into it"),
        Field("io_data", "u8[2048]", 2048, "VcpuIo's data: kernel (OUT) or user (IN)"),
    ),
    "The page MMAP of a VCPU handle maps (shared by kernel and user mode; docs/abi.md).",
)

VCPU_IO = Struct(
    "VcpuIo",
    64,
    (
        Field("port", "u16", 0, "kernel"),
        Field("size", "u8", 2, "kernel: bytes per item, 1, 2 or 4"),
        Field("direction", "u8", 3, "kernel: IoDirection"),
        Field("count", "u32", 4, "kernel: items in io_data (size * count bytes)"),
        Field("_reserved", "u8[56]", 8, "zero"),
    ),
    "The payload of VcpuExit.IO. OUT: io_data holds the items; IN: user mode writes them.",
)

VCPU_MMIO = Struct(
    "VcpuMmio",
    64,
    (
        Field("address", "u64", 0, "kernel: guest-physical"),
        Field("length", "u32", 8, "kernel: 1 to 8 bytes"),
        Field("is_write", "u8", 12, "kernel"),
        Field("_pad", "u8[3]", 13, "zero"),
        Field("data", "u64", 16, "kernel (write) or user (read): little-endian, length bytes"),
        Field("_reserved", "u8[40]", 24, "zero"),
    ),
    "The payload of VcpuExit.MMIO.",
)

VCPU_MSR = Struct(
    "VcpuMsr",
    64,
    (
        Field("index", "u32", 0, "kernel: the MSR (ECX)"),
        Field("error", "u8", 4, "user: 1 injects #GP instead of completing; 0 or 1 only"),
        Field("_pad", "u8[3]", 5, "zero"),
        Field("data", "u64", 8, "kernel (MSR_WRITE: the value) or user (MSR_READ: the answer)"),
        Field("_reserved", "u8[48]", 16, "zero"),
    ),
    "The payload of VcpuExit.MSR_READ and MSR_WRITE.",
)

VCPU_CPUID = Struct(
    "VcpuCpuid",
    64,
    (
        Field("leaf", "u32", 0, "kernel (EAX)"),
        Field("subleaf", "u32", 4, "kernel (ECX)"),
        Field("eax", "u32", 8, "user: the answer"),
        Field("ebx", "u32", 12, "user"),
        Field("ecx", "u32", 16, "user"),
        Field("edx", "u32", 20, "user"),
        Field("_reserved", "u8[40]", 24, "zero"),
    ),
    "The payload of VcpuExit.CPUID.",
)

VCPU_FAILURE = Struct(
    "VcpuFailure",
    64,
    (
        Field("code", "u32", 0, "kernel: KVM's suberror, or the hardware entry-failure reason"),
        Field("insn_length", "u32", 4, "kernel: bytes of insn that are valid (0 to 15)"),
        Field("insn", "u8[16]", 8, "kernel: the instruction's bytes"),
        Field("_reserved", "u8[40]", 24, "zero"),
    ),
    "The payload of VcpuExit.EMULATION_FAILURE and INTERNAL_ERROR.",
)

DEVICE_ACCESS = Struct(
    "DeviceAccess",
    32,
    (
        Field("address", "u64", 0, "the port (IO event) or guest-physical address (MMIO event)"),
        Field("data", "u64", 8, "the value written (a write), else 0; little-endian"),
        Field("size", "u32", 16, "bytes: 1, 2 or 4 (port), 1 to 8 (MMIO)"),
        Field("is_write", "u8", 20, "1: OUT or a store; 0: IN or a load"),
        Field("_pad", "u8[3]", 21, "zero"),
        Field("seq", "u32", 24, "names the access in its DeviceAnswer"),
        Field("vcpu", "u32", 28, "the vCPU that made it"),
    ),
    "What READ of a device event takes: one guest access in the event's range.",
)

DEVICE_ANSWER = Struct(
    "DeviceAnswer",
    16,
    (
        Field("seq", "u32", 0, "the DeviceAccess.seq answered"),
        Field("_pad", "u32", 4, "zero"),
        Field("data", "u64", 8, "a read's value (little-endian; size bytes used)"),
    ),
    "What WRITE of a device event gives: completes the access it names.",
)

MSR_RANGE = Struct(
    "MsrRange",
    24,
    (
        Field("flags", "u32", 0, "MsrFilterFlag: the accesses claimed"),
        Field("base", "u32", 4, "the first MSR of the range"),
        Field("count", "u32", 8, "MSRs in the range, 1 to MSR_RANGE_MAX_MSRS"),
        Field("_pad", "u32", 12, "zero"),
        Field("bitmap", "u64", 16, "user address of (count + 7) / 8 bytes: bit i claims base + i"),
    ),
    "One range of VM_SET_MSR_FILTER's array.",
)

CHANNEL_MESSAGE = Struct(
    "ChannelMessage",
    24,
    (
        Field("data", "u64", 0, "address of the bytes (SEND: read from; RECV: written to)"),
        Field("handles", "u64", 8, "address of a u32 array of handle ids (SEND: moved out; "
                                   "RECV: the new ids written)"),
        Field("data_len", "u32", 16, "SEND: bytes to send; RECV: the buffer's capacity in, "
                                     "the message's bytes out (also on EMSGSIZE)"),
        Field("handle_count", "u32", 20, "SEND: handles to move; RECV: the array's capacity "
                                         "in, the message's handles out (also on EMSGSIZE)"),
    ),
    "What SEND sends and RECV receives: bytes and handles, each with its length.",
)

STRUCTS: tuple[Struct, ...] = (DIRENT, HEAP_STATS, WAIT_ITEM, BATCH_RECORD, CHANNEL_MESSAGE,
                               RUN_PAGE, VCPU_IO, VCPU_MMIO, VCPU_MSR, VCPU_CPUID, VCPU_FAILURE,
                               MSR_RANGE, DEVICE_ACCESS, DEVICE_ANSWER)
