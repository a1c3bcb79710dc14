/*
 * The copra ABI: syscall numbers, errors, flags, limits and shared structures.
 *
 * generated from src/copra/abi/spec.py by copra.abi.gen; do not edit
 *
 * Every name is COPRA_<DECLARATION>_<MEMBER> for enums and flag sets and
 * COPRA_<CONSTANT> for constants, spelled as in the spec.
 */
#ifndef COPRA_ABI_H
#define COPRA_ABI_H

#include <stddef.h>
#include <stdint.h>

/* A syscall number: class in bits 63:32, index in bits 31:0 (upstream's scheme). */
#define COPRA_SYSNO(cls, index) ((((uint64_t)(cls)) << 32) | (uint64_t)(uint32_t)(index))

/* Errno: Status codes returned (negated, sign-extended to 64 bits) in rax. */
#define COPRA_ERRNO_EINVAL INT64_C(-1) /* an argument is malformed: unknown flag bits, bad mode, non-UTF-8 path */
#define COPRA_ERRNO_ENOSYS INT64_C(-2) /* the syscall number is not implemented (upstream answers EINVAL) */
#define COPRA_ERRNO_ENOMEM INT64_C(-3) /* out of physical frames or address space */
#define COPRA_ERRNO_EPERM INT64_C(-4) /* the handle lacks the right the operation needs */
#define COPRA_ERRNO_EFAULT INT64_C(-5) /* a user pointer range is unmapped, kernel-half, non-canonical or read-only */
#define COPRA_ERRNO_EBUSY INT64_C(-6) /* the object is exclusive and already held */
#define COPRA_ERRNO_ENOTFOUND INT64_C(-7) /* no such file, directory, handle or capability index */
#define COPRA_ERRNO_ENOTSUPP INT64_C(-8) /* the handle's object kind does not support the operation */
#define COPRA_ERRNO_EEXIST INT64_C(-9) /* create or mkdir of a name that exists */
#define COPRA_ERRNO_ERDONLY INT64_C(-10) /* write or truncate through a handle opened without WRITE */
#define COPRA_ERRNO_EWRONLY INT64_C(-11) /* read through a handle opened without READ */
#define COPRA_ERRNO_ENOTEMPTY INT64_C(-12) /* rmdir of a directory that still has entries */
#define COPRA_ERRNO_EISDIR INT64_C(-13) /* a file operation (unlink, open) named a directory */
#define COPRA_ERRNO_ENOTDIR INT64_C(-14) /* a directory operation (rmdir, opendir) named a file, or a path walks through a file */
#define COPRA_ERRNO_EMFILE INT64_C(-15) /* the process has reached its limit of open handles */
#define COPRA_ERRNO_ENOEXEC INT64_C(-16) /* EXEC found the file but it is not a loadable ELF64 x86-64 ET_EXEC image */
#define COPRA_ERRNO_ENAMETOOLONG INT64_C(-17) /* a path is longer than PATH_MAX or a name longer than NAME_MAX */
#define COPRA_ERRNO_EAGAIN INT64_C(-18) /* EXEC: a limit on tasks (system-wide) or on the caller's running or unreaped children is reached; try again once a task has ended or been reaped (WAIT); THREAD_CREATE: the process holds its limit of threads; FUTEX_WAIT: the word no longer holds the expected value */
#define COPRA_ERRNO_ETIMEDOUT INT64_C(-19) /* a wait's timeout passed first (FUTEX_WAIT) */
#define COPRA_ERRNO_EOVERFLOW INT64_C(-20) /* a WRITE to an event would carry its counter past EVENT_MAX */
#define COPRA_ERRNO_UNKNOWN INT64_C(-128) /* an internal error with no better code (counted by the kernel) */

/* SyscallClass */
#define COPRA_SYSCALL_CLASS_CORE UINT64_C(0)
#define COPRA_SYSCALL_CLASS_FILE UINT64_C(1)
#define COPRA_SYSCALL_CLASS_VMM UINT64_C(2) /* reserved: upstream never defined it */
#define COPRA_SYSCALL_CLASS_SYSINFO UINT64_C(3)

/* Sys: Syscall numbers: (class << 32) | index. */
#define COPRA_SYS_EXIT UINT64_C(0x0)
#define COPRA_SYS_MMAP UINT64_C(0x1)
#define COPRA_SYS_MUNMAP UINT64_C(0x2)
#define COPRA_SYS_MRESIZE UINT64_C(0x3)
#define COPRA_SYS_EXEC UINT64_C(0x4)
#define COPRA_SYS_WAIT UINT64_C(0x5) /* copra: wait for a child and read its status (upstream has none) */
#define COPRA_SYS_CLOSE UINT64_C(0xa)
#define COPRA_SYS_THREAD_CREATE UINT64_C(0x10) /* entry, stack top, argument, FS base -> thread handle */
#define COPRA_SYS_THREAD_EXIT UINT64_C(0x11) /* code: ends the calling thread (the last: the process) */
#define COPRA_SYS_JOIN UINT64_C(0x12) /* thread or process handle -> its code or status, once it ended */
#define COPRA_SYS_FUTEX_WAIT UINT64_C(0x13) /* address, expected u32, timeout ns: sleep while equal */
#define COPRA_SYS_FUTEX_WAKE UINT64_C(0x14) /* address, count -> threads woken */
#define COPRA_SYS_PROCESS_OPEN UINT64_C(0x15) /* task id of a child -> process handle */
#define COPRA_SYS_EVENT_CREATE UINT64_C(0x16) /* EventFlag -> event handle (READ/WRITE 8 bytes) */
#define COPRA_SYS_WAIT_MANY UINT64_C(0x17) /* WaitItem array, count, timeout ns -> items ready */
#define COPRA_SYS_CLOCK UINT64_C(0x18) /* -> monotonic nanoseconds */
#define COPRA_SYS_SLEEP UINT64_C(0x19) /* nanoseconds */
#define COPRA_SYS_OPEN UINT64_C(0x100000000)
#define COPRA_SYS_READ UINT64_C(0x100000001)
#define COPRA_SYS_WRITE UINT64_C(0x100000002)
#define COPRA_SYS_SEEK UINT64_C(0x100000003)
#define COPRA_SYS_TRUNCATE UINT64_C(0x100000004)
#define COPRA_SYS_UNLINK UINT64_C(0x100000005)
#define COPRA_SYS_OPENDIR UINT64_C(0x100000006)
#define COPRA_SYS_READDIR UINT64_C(0x100000007)
#define COPRA_SYS_MKDIR UINT64_C(0x100000008)
#define COPRA_SYS_RMDIR UINT64_C(0x100000009)
#define COPRA_SYS_CAPABILITIES UINT64_C(0x300000000)

/* Capability: Indices accepted by CAPABILITIES (class 3, index 0). */
#define COPRA_CAPABILITY_COUNT UINT64_C(0) /* the number of capability values after index 0 (upstream's meaning: 2 today) */
#define COPRA_CAPABILITY_VM_BITMAP UINT64_C(1) /* bit n set: VM n can be opened (0 on copra today: no guest VMs yet) */
#define COPRA_CAPABILITY_FEATURES UINT64_C(2) /* platform feature bitmap; bits 2:0 are the platform type */

/* PlatformType: Bits 2:0 of Capability.FEATURES (upstream: 0 native, 1 SNP, 2 TDX partitioning). */
#define COPRA_PLATFORM_TYPE_NATIVE UINT64_C(0)
#define COPRA_PLATFORM_TYPE_SNP UINT64_C(1)
#define COPRA_PLATFORM_TYPE_TDX UINT64_C(2)
#define COPRA_PLATFORM_TYPE_COPRA_KVM UINT64_C(3) /* copra: the SVSM architecture emulated on ordinary KVM */

/* FileMode */
#define COPRA_FILE_MODE_READ UINT64_C(0x1)
#define COPRA_FILE_MODE_WRITE UINT64_C(0x2)
#define COPRA_FILE_MODE_APPEND UINT64_C(0x4)
#define COPRA_FILE_MODE_TRUNC UINT64_C(0x8)

/* FileFlag */
#define COPRA_FILE_FLAG_CREATE UINT64_C(0x1)

/* SeekMode */
#define COPRA_SEEK_MODE_ABSOLUTE UINT64_C(0)
#define COPRA_SEEK_MODE_RELATIVE UINT64_C(1)
#define COPRA_SEEK_MODE_END UINT64_C(2)

/* FileType */
#define COPRA_FILE_TYPE_FILE UINT64_C(0)
#define COPRA_FILE_TYPE_DIRECTORY UINT64_C(1)

/* MapFlag: MMAP flags (upstream's draft values; ANONYMOUS replaces "handle 0 means anonymous"). */
#define COPRA_MAP_FLAG_READ UINT64_C(0x1)
#define COPRA_MAP_FLAG_WRITE UINT64_C(0x2)
#define COPRA_MAP_FLAG_EXEC UINT64_C(0x4)
#define COPRA_MAP_FLAG_PRIVATE UINT64_C(0x8)
#define COPRA_MAP_FLAG_ANONYMOUS UINT64_C(0x10)
#define COPRA_MAP_FLAG_FIXED UINT64_C(0x20)

/* Signal: Observable states of kernel objects, for WAIT_MANY (each kind raises some). */
#define COPRA_SIGNAL_ENDED UINT64_C(0x1) /* a thread or process has ended (for good) */
#define COPRA_SIGNAL_READABLE UINT64_C(0x2) /* an event's counter is non-zero: a READ would not block */
#define COPRA_SIGNAL_WRITABLE UINT64_C(0x4) /* an event's counter is below EVENT_MAX: a WRITE of 1 would succeed */

/* EventFlag: EVENT_CREATE's flags. */
#define COPRA_EVENT_FLAG_NONBLOCK UINT64_C(0x1) /* READ of a zero counter answers EAGAIN instead of blocking */

/* Entry: How user mode enters the kernel. Both reach the same dispatcher with the same registers. */
#define COPRA_ENTRY_INT80 UINT64_C(0) /* ``int 0x80`` (CD 80): upstream's entry, through the IDT gate or a #UD trap */
#define COPRA_ENTRY_DOORBELL UINT64_C(1) /* ``out DOORBELL_PORT, al``: copra's fast path, the TSS I/O bitmap allows it */

/* ARG_REGISTERS: rdi, rsi, r8, r9, r10 */
#define COPRA_RESULT_REGISTER "rax"
/* CLOBBERED_REGISTERS: rcx, r11 */
#define COPRA_DOORBELL_PORT UINT64_C(0xe0) /* The single I/O port user mode may write; the write is a syscall. */
#define COPRA_SYSCALL_VECTOR UINT64_C(0x80) /* The interrupt vector of the upstream entry. */
#define COPRA_ERROR_THRESHOLD UINT64_C(0xfffffffffffff000) /* Errors are returned as -errno; any rax above this value (as u64) is an error. */
#define COPRA_PAGE_SIZE UINT64_C(4096)
#define COPRA_PATH_MAX UINT64_C(4096) /* bytes including the terminating NUL */
#define COPRA_NAME_MAX UINT64_C(255) /* bytes of one path component */
#define COPRA_HANDLE_LOG UINT64_C(0) /* every task's log/stdout */
#define COPRA_LOG_FILE_PATH "/Log/logfile" /* Every line of the log (each task's, prefix included, and the kernel's) is also appended to this RAM-fs file, created at boot before the archive is unpacked (upstream's ``Log/logfile``); programs may OPEN and READ it. */
#define COPRA_LOG_FILE_MAX UINT64_C(0x100000) /* copra keeps the log file at most this many bytes; later lines reach the console only. */
#define COPRA_MAX_HANDLES UINT64_C(1024) /* default per-process limit on open handles (EMFILE beyond it); an image configuration may set another (``limits.handles``, docs/images.md) */
#define COPRA_USER_START UINT64_C(0x1000) /* User address space: [USER_START, USER_END), upstream's [0, 2^47) less what copra keeps unmapped: page 0 (a NULL pointer faults) and the top page below 2^47. Program segments may lie anywhere in [USER_START, USER_MAP_END). Everything above is the kernel's. */
#define COPRA_USER_END UINT64_C(0x7ffffffff000)
#define COPRA_USER_STACK_SIZE UINT64_C(0x10000)
#define COPRA_USER_STACK_TOP UINT64_C(0x7ffffffff000) /* the stack occupies [USER_STACK_TOP - USER_STACK_SIZE, USER_STACK_TOP) */
#define COPRA_USER_INITIAL_RSP UINT64_C(0x7fffffffeff8)
#define COPRA_USER_INITIAL_RFLAGS UINT64_C(0x202)
#define COPRA_MMAP_BASE UINT64_C(0x100000000000) /* Where MMAP places mappings when no hint is given (searching upward). */
#define COPRA_USER_STACK_GUARD UINT64_C(4096) /* One unmapped guard page below the stack: an overflow faults instead of running into a mapping. Program segments and MMAP both end at or below USER_MAP_END. */
#define COPRA_USER_MAP_END UINT64_C(0x7ffffffee000)
#define COPRA_TLS_TCB_SIZE UINT64_C(64) /* Thread-local storage (x86-64 psABI variant II): a thread's FS base points at its thread control block (TCB) of TLS_TCB_SIZE bytes, the TLS block (the PT_TLS template: .tdata copied, .tbss zeroed) lies just below it. Word 0 of the TCB points to itself (%fs:0), word 1 holds TLS_TCB_MAGIC, the rest is zero and reserved. EXEC gives the first thread such a block (docs/abi.md); libcopra builds one for each thread it spawns. */
#define COPRA_TLS_TCB_MAGIC UINT64_C(0x4243546172706f63) /* "copraTCB", little-endian */
#define COPRA_TIMEOUT_NEVER UINT64_C(0xffffffffffffffff) /* The timeout (FUTEX_WAIT, WAIT_MANY) that means "no timeout". */
#define COPRA_WAIT_MANY_MAX UINT64_C(64) /* The most (handle, signals) items one WAIT_MANY takes. */
#define COPRA_EVENT_MAX UINT64_C(0xfffffffffffffffe) /* The largest value an event's counter holds (eventfd's); WRITE past it is EOVERFLOW. */
#define COPRA_EXIT_STATUS_SHIFT UINT64_C(16) /* Exit status packing, as upstream: Exited(c) -> c << 16 with c the low 16 bits of EXIT's argument; killed by a CPU exception -> (vector << 8) | 1. */
#define COPRA_KILLED_BY_EXCEPTION UINT64_C(1)

/* One entry filled by READDIR (upstream's layout). */
struct copra_dir_ent {
	uint8_t name[256]; /* NUL-terminated UTF-8, cut at a character boundary (255 B) */
	uint8_t file_type; /* FileType */
	uint8_t _pad[7]; /* zero */
	uint64_t size; /* bytes; 0 for directories */
};
_Static_assert(sizeof(struct copra_dir_ent) == 272, "copra_dir_ent: size");
_Static_assert(_Alignof(struct copra_dir_ent) == 8, "copra_dir_ent: alignment");
_Static_assert(offsetof(struct copra_dir_ent, name) == 0, "copra_dir_ent.name: offset");
_Static_assert(offsetof(struct copra_dir_ent, file_type) == 256, "copra_dir_ent.file_type: offset");
_Static_assert(offsetof(struct copra_dir_ent, _pad) == 257, "copra_dir_ent._pad: offset");
_Static_assert(offsetof(struct copra_dir_ent, size) == 264, "copra_dir_ent.size: offset");

/* The user library's heap statistics (libcopra `heap::stats`, C `copra_heap_stats`).  Not a kernel structure: it passes between libcopra and a C program linked with it, and is declared here so that both languages take one layout. */
struct copra_heap_stats {
	uint64_t in_use; /* bytes in live blocks, counted at their usable size */
	uint64_t peak_in_use; /* the most in_use has been */
	uint64_t mapped; /* bytes the heap holds from the kernel, its tables included */
	uint64_t peak_mapped; /* the most mapped has been */
	uint64_t retained; /* of mapped: empty slabs, freed large blocks kept for reuse */
	uint64_t metadata; /* of mapped: the heap's own tables */
	uint64_t live_blocks; /* blocks handed out and not freed */
	uint64_t allocations; /* blocks handed out since the start */
	uint64_t frees; /* blocks given back since the start */
	uint64_t maps; /* MMAP calls the heap made */
	uint64_t unmaps; /* MUNMAP calls the heap made */
	uint64_t resizes; /* MRESIZE calls the heap made */
	uint64_t failures; /* allocations that found no memory */
};
_Static_assert(sizeof(struct copra_heap_stats) == 104, "copra_heap_stats: size");
_Static_assert(_Alignof(struct copra_heap_stats) == 8, "copra_heap_stats: alignment");
_Static_assert(offsetof(struct copra_heap_stats, in_use) == 0, "copra_heap_stats.in_use: offset");
_Static_assert(offsetof(struct copra_heap_stats, peak_in_use) == 8, "copra_heap_stats.peak_in_use: offset");
_Static_assert(offsetof(struct copra_heap_stats, mapped) == 16, "copra_heap_stats.mapped: offset");
_Static_assert(offsetof(struct copra_heap_stats, peak_mapped) == 24, "copra_heap_stats.peak_mapped: offset");
_Static_assert(offsetof(struct copra_heap_stats, retained) == 32, "copra_heap_stats.retained: offset");
_Static_assert(offsetof(struct copra_heap_stats, metadata) == 40, "copra_heap_stats.metadata: offset");
_Static_assert(offsetof(struct copra_heap_stats, live_blocks) == 48, "copra_heap_stats.live_blocks: offset");
_Static_assert(offsetof(struct copra_heap_stats, allocations) == 56, "copra_heap_stats.allocations: offset");
_Static_assert(offsetof(struct copra_heap_stats, frees) == 64, "copra_heap_stats.frees: offset");
_Static_assert(offsetof(struct copra_heap_stats, maps) == 72, "copra_heap_stats.maps: offset");
_Static_assert(offsetof(struct copra_heap_stats, unmaps) == 80, "copra_heap_stats.unmaps: offset");
_Static_assert(offsetof(struct copra_heap_stats, resizes) == 88, "copra_heap_stats.resizes: offset");
_Static_assert(offsetof(struct copra_heap_stats, failures) == 96, "copra_heap_stats.failures: offset");

/* One (handle, signals) pair of WAIT_MANY's array. */
struct copra_wait_item {
	uint32_t handle; /* a thread, process or event handle with the WAIT right */
	uint32_t signals; /* the Signal bits waited for (non-zero) */
	uint32_t ready; /* written by WAIT_MANY: those of them raised */
	uint32_t _pad; /* zero */
};
_Static_assert(sizeof(struct copra_wait_item) == 16, "copra_wait_item: size");
_Static_assert(_Alignof(struct copra_wait_item) == 4, "copra_wait_item: alignment");
_Static_assert(offsetof(struct copra_wait_item, handle) == 0, "copra_wait_item.handle: offset");
_Static_assert(offsetof(struct copra_wait_item, signals) == 4, "copra_wait_item.signals: offset");
_Static_assert(offsetof(struct copra_wait_item, ready) == 8, "copra_wait_item.ready: offset");
_Static_assert(offsetof(struct copra_wait_item, _pad) == 12, "copra_wait_item._pad: offset");

#endif /* COPRA_ABI_H */
