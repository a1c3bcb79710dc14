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
#define COPRA_ERRNO_EBUSY INT64_C(-6) /* the object is exclusive and already held (DUPLICATE of a VM or VCPU); SEND of an endpoint whose queue carries an endpoint (it could close a cycle) */
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
#define COPRA_ERRNO_EAGAIN INT64_C(-18) /* EXEC: a limit on tasks (system-wide) or on the caller's running or unreaped children is reached; try again once a task has ended or been reaped (WAIT); THREAD_CREATE: the process holds its limit of threads; FUTEX_WAIT: the word no longer holds the expected value; SEND (RECV) without BLOCK: the queue is full (empty) */
#define COPRA_ERRNO_ETIMEDOUT INT64_C(-19) /* a wait's timeout passed first (FUTEX_WAIT) */
#define COPRA_ERRNO_EOVERFLOW INT64_C(-20) /* a WRITE to an event would carry its counter past EVENT_MAX */
#define COPRA_ERRNO_EMSGSIZE INT64_C(-21) /* RECV: the buffer or the handle array is too small for the next message, which stays queued; the ChannelMessage's sizes say what it needs */
#define COPRA_ERRNO_EPIPE INT64_C(-22) /* SEND or RECV on a channel endpoint whose peer is closed (RECV: and empty) */
#define COPRA_ERRNO_EINTR INT64_C(-23) /* VCPU_RUN was kicked out before the guest needed user mode: its timeout passed, another thread closed the VCPU or its VM, the process is ending; call it again */
#define COPRA_ERRNO_UNKNOWN INT64_C(-128) /* an internal error with no better code (counted by the kernel) */

/* SyscallClass */
#define COPRA_SYSCALL_CLASS_CORE UINT64_C(0)
#define COPRA_SYSCALL_CLASS_FILE UINT64_C(1)
#define COPRA_SYSCALL_CLASS_VMM UINT64_C(2) /* upstream named VM_OPEN and VM_CAPABILITIES but never numbered them: copra's */
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
#define COPRA_SYS_CHANNEL_CREATE UINT64_C(0x1a) /* flags (0) -> (second << 32) | first endpoint handle */
#define COPRA_SYS_SEND UINT64_C(0x1b) /* endpoint, ChannelMessage, ChannelFlag -> 0 */
#define COPRA_SYS_RECV UINT64_C(0x1c) /* endpoint, ChannelMessage, ChannelFlag -> bytes received */
#define COPRA_SYS_DUPLICATE UINT64_C(0x1d) /* handle, rights (or RIGHTS_SAME) -> a new handle */
#define COPRA_SYS_REPLACE UINT64_C(0x1e) /* handle, rights: the handle keeps only these rights */
#define COPRA_SYS_EXEC_HANDLES UINT64_C(0x1f) /* path, root, handle array, count, flags (0) -> task id */
#define COPRA_SYS_BATCH UINT64_C(0x20) /* BatchRecord array, count, BatchFlag -> records run */
#define COPRA_SYS_CHANNEL_CALL UINT64_C(0x21)
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
#define COPRA_SYS_VM_OPEN UINT64_C(0x200000000) /* VM index -> VM handle (exclusive system-wide) */
#define COPRA_SYS_VM_CAPABILITIES UINT64_C(0x200000001) /* VM handle, VmCap index -> value */
#define COPRA_SYS_VCPU_OPEN UINT64_C(0x200000002) /* VM handle, vCPU index -> VCPU handle (exclusive) */
#define COPRA_SYS_VCPU_RUN UINT64_C(0x200000003) /* VCPU handle, timeout ns -> 0, the exit in the run page */
#define COPRA_SYS_VM_SET_MSR_FILTER UINT64_C(0x200000004) /* VM handle, MsrRange array, count: the MSRs user mode claims */
#define COPRA_SYS_VM_MEMORY UINT64_C(0x200000005) /* VM handle -> a handle on the guest's RAM (MMAP it) */
#define COPRA_SYS_IO_EVENT_CREATE UINT64_C(0x200000006) /* VM handle, first port, ports -> device event handle */
#define COPRA_SYS_MMIO_EVENT_CREATE UINT64_C(0x200000007) /* VM handle, guest-physical address, bytes -> handle */
#define COPRA_SYS_IRQ_CREATE UINT64_C(0x200000008) /* VM handle, APIC id, vector, IrqFlag -> IRQ handle */
#define COPRA_SYS_IRQ_SIGNAL UINT64_C(0x200000009) /* IRQ handle: assert it (the vector becomes pending) */
#define COPRA_SYS_DEVICE_REPLY UINT64_C(0x20000000a)
#define COPRA_SYS_CAPABILITIES UINT64_C(0x300000000)

/* Capability: Indices accepted by CAPABILITIES (class 3, index 0). */
#define COPRA_CAPABILITY_COUNT UINT64_C(0) /* the number of capability values after index 0 (upstream's meaning: 2 today) */
#define COPRA_CAPABILITY_VM_BITMAP UINT64_C(1) /* bit n set: guest VM n exists and has not been released (VM_OPEN(n)) */
#define COPRA_CAPABILITY_FEATURES UINT64_C(2) /* platform feature bitmap; bits 2:0 are the platform type */

/* PlatformType: Bits 2:0 of Capability.FEATURES (upstream: 0 native, 1 SNP, 2 TDX partitioning). */
#define COPRA_PLATFORM_TYPE_NATIVE UINT64_C(0)
#define COPRA_PLATFORM_TYPE_SNP UINT64_C(1)
#define COPRA_PLATFORM_TYPE_TDX UINT64_C(2)
#define COPRA_PLATFORM_TYPE_COPRA_KVM UINT64_C(3) /* copra: the SVSM architecture emulated on ordinary KVM */

/* VmCap: Indices accepted by VM_CAPABILITIES (class 2, index 1). */
#define COPRA_VM_CAP_COUNT UINT64_C(0) /* the number of values after index 0 */
#define COPRA_VM_CAP_VCPUS UINT64_C(1) /* vCPUs of the VM (VCPU_OPEN takes 0 to VCPUS - 1) */
#define COPRA_VM_CAP_MEMORY_SIZE UINT64_C(2) /* bytes of guest RAM: guest-physical [MEMORY_BASE, + MEMORY_SIZE) */
#define COPRA_VM_CAP_MEMORY_BASE UINT64_C(3) /* the guest-physical address of RAM's first byte (0 on copra) */
#define COPRA_VM_CAP_FEATURES UINT64_C(4) /* VmFeature bits */

/* VmFeature: Bits of VM_CAPABILITIES(vm, VmCap.FEATURES). */
#define COPRA_VM_FEATURE_KERNEL_X2APIC UINT64_C(0x1) /* the kernel answers the x2APIC MSRs, APIC_BASE and TSC_DEADLINE */
#define COPRA_VM_FEATURE_MSR_FILTER UINT64_C(0x2) /* VM_SET_MSR_FILTER claims MSRs for user mode */
#define COPRA_VM_FEATURE_PVH_BOOT UINT64_C(0x4) /* the kernel was loaded at boot; vCPU 0 starts at its PVH entry */

/* VcpuExit: RunPage.exit_reason: why VCPU_RUN returned (the payload's layout follows it). */
#define COPRA_VCPU_EXIT_NONE UINT64_C(0) /* no exit yet (the page was just mapped) */
#define COPRA_VCPU_EXIT_IO UINT64_C(1) /* port I/O: VcpuIo */
#define COPRA_VCPU_EXIT_MMIO UINT64_C(2) /* an access to guest-physical memory outside RAM: VcpuMmio */
#define COPRA_VCPU_EXIT_MSR_READ UINT64_C(3) /* RDMSR of an MSR user mode claimed: VcpuMsr, answer in data or error */
#define COPRA_VCPU_EXIT_MSR_WRITE UINT64_C(4) /* WRMSR of an MSR user mode claimed: VcpuMsr, answer error */
#define COPRA_VCPU_EXIT_CPUID UINT64_C(5) /* CPUID (hardware that traps it; KVM answers CPUID itself): VcpuCpuid */
#define COPRA_VCPU_EXIT_HLT UINT64_C(6) /* HLT: the vCPU waits for an interrupt; VCPU_RUN resumes after it */
#define COPRA_VCPU_EXIT_SHUTDOWN UINT64_C(7) /* a triple fault: the vCPU is dead, every VCPU_RUN reports it again */
#define COPRA_VCPU_EXIT_EMULATION_FAILURE UINT64_C(8) /* an instruction neither KVM nor copra can run: VcpuFailure */
#define COPRA_VCPU_EXIT_INTERNAL_ERROR UINT64_C(9) /* KVM stopped the vCPU (failed entry, internal error): VcpuFailure */
#define COPRA_VCPU_EXIT_DEVICE_GONE UINT64_C(10) /* a device model's event went away with this access unanswered: the guest got all ones (a read) and goes on; VcpuIo or VcpuMmio describes the access; no answer */

/* IoDirection */
#define COPRA_IO_DIRECTION_IN UINT64_C(0)
#define COPRA_IO_DIRECTION_OUT UINT64_C(1)

/* MsrFilterFlag: MsrRange.flags: which accesses of the range's MSRs come to user mode. */
#define COPRA_MSR_FILTER_FLAG_READ UINT64_C(0x1)
#define COPRA_MSR_FILTER_FLAG_WRITE UINT64_C(0x2)

/* IrqFlag: IRQ_CREATE's trigger mode: edge (0) or level (resampled at the guest's EOI). */
#define COPRA_IRQ_FLAG_EDGE UINT64_C(0x0)
#define COPRA_IRQ_FLAG_LEVEL UINT64_C(0x1)

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
#define COPRA_SIGNAL_READABLE UINT64_C(0x2) /* an event's counter is non-zero: a READ would not block; a channel endpoint's queue holds a message: a RECV would not block; a VCPU has an exit waiting for user mode's answer */
#define COPRA_SIGNAL_WRITABLE UINT64_C(0x4) /* an event's counter is below EVENT_MAX: a WRITE of 1 would succeed; a channel endpoint's peer is open and has room in its queue: a SEND would not block */
#define COPRA_SIGNAL_PEER_CLOSED UINT64_C(0x8) /* a channel endpoint's peer is closed (its queue may still hold messages) */

/* Right: The rights a handle grants (DUPLICATE and REPLACE take them; only ever reduced). */
#define COPRA_RIGHT_READ UINT64_C(0x1) /* READ, READDIR, RECV */
#define COPRA_RIGHT_WRITE UINT64_C(0x2) /* WRITE, TRUNCATE, SEND */
#define COPRA_RIGHT_MAP UINT64_C(0x4) /* MMAP of the object */
#define COPRA_RIGHT_WAIT UINT64_C(0x8) /* WAIT_MANY on the object's signals, JOIN */
#define COPRA_RIGHT_TRANSFER UINT64_C(0x10) /* the handle may be moved: SEND, EXEC_HANDLES */
#define COPRA_RIGHT_DUPLICATE UINT64_C(0x20) /* DUPLICATE may make another handle on the object */

/* ChannelFlag: SEND's and RECV's flags. */
#define COPRA_CHANNEL_FLAG_BLOCK UINT64_C(0x1) /* wait while the peer's queue is full (SEND) or the own queue empty (RECV) */

/* EventFlag: EVENT_CREATE's flags. */
#define COPRA_EVENT_FLAG_NONBLOCK UINT64_C(0x1) /* READ of a zero counter answers EAGAIN instead of blocking */

/* BatchFlag: BATCH's flags. */
#define COPRA_BATCH_FLAG_STOP_ON_ERROR UINT64_C(0x1) /* stop after the first record whose result is an error (it is written back too) */

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
#define COPRA_BATCH_MAX UINT64_C(64) /* The most records one BATCH runs. */
#define COPRA_EVENT_MAX UINT64_C(0xfffffffffffffffe) /* The largest value an event's counter holds (eventfd's); WRITE past it is EOVERFLOW. */
#define COPRA_RIGHTS_SAME UINT64_C(0xffffffff) /* DUPLICATE's rights argument that keeps the rights of the original handle. */
#define COPRA_CHANNEL_MAX_BYTES UINT64_C(0x10000) /* The most bytes one channel message carries. */
#define COPRA_CHANNEL_MAX_HANDLES UINT64_C(64) /* The most handles one channel message (or one EXEC_HANDLES) moves. */
#define COPRA_CHANNEL_QUEUE_MAX UINT64_C(64) /* The most messages queued towards one endpoint; SEND beyond waits or answers EAGAIN. */
#define COPRA_EXIT_STATUS_SHIFT UINT64_C(16) /* Exit status packing, as upstream: Exited(c) -> c << 16 with c the low 16 bits of EXIT's argument; killed by a CPU exception -> (vector << 8) | 1. */
#define COPRA_KILLED_BY_EXCEPTION UINT64_C(1)
#define COPRA_RUN_PAGE_VERSION UINT64_C(1) /* The run page's layout version (RunPage.version); a layout that grows gets a new one. */
#define COPRA_RUN_PAGE_PAYLOAD UINT64_C(16) /* Where the exit payload (one of the Vcpu* structures, by exit_reason) starts in the run page. */
#define COPRA_RUN_PAGE_PAYLOAD_SIZE UINT64_C(64) /* Bytes the payload area holds. */
#define COPRA_RUN_PAGE_IO_DATA UINT64_C(2048) /* Where a port access's data lies in the run page, and how many bytes it holds at most (a longer string access comes in several exits of at most this many bytes). */
#define COPRA_RUN_PAGE_IO_DATA_SIZE UINT64_C(2048)
/* GUEST_REGISTERS: The guest registers in RunPage.regs, in this order (KVM's struct kvm_regs). rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13, r14, r15, rip, rflags */
#define COPRA_REGS_DIRTY UINT64_C(1) /* RunPage.regs_dirty: VCPU_RUN loads the guest's registers from RunPage.regs first. */
#define COPRA_MSR_FILTER_MAX_RANGES UINT64_C(16) /* The most ranges VM_SET_MSR_FILTER takes, and MSRs per range. */
#define COPRA_MSR_RANGE_MAX_MSRS UINT64_C(0x3000)
#define COPRA_GUEST_RAM_SVSM_BASE UINT64_C(0x400000000) /* Where a guest's RAM appears in the SVSM's physical address space (guest n at GUEST_RAM_SVSM_BASE + n * GUEST_RAM_SVSM_STRIDE): MMAP of VM_MEMORY maps those frames. */
#define COPRA_GUEST_RAM_SVSM_STRIDE UINT64_C(0x100000000)

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
	uint32_t handle; /* a thread, process, event or channel endpoint handle with the WAIT right */
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

/* One syscall of BATCH's array. */
struct copra_batch_record {
	uint64_t number; /* the syscall number, as in rax */
	uint64_t args[5]; /* its arguments, as in rdi, rsi, r8, r9, r10 */
	uint64_t user_data; /* the caller's own; the kernel never reads or changes it */
	int64_t result; /* written by BATCH: what rax would hold (-errno on error) */
};
_Static_assert(sizeof(struct copra_batch_record) == 64, "copra_batch_record: size");
_Static_assert(_Alignof(struct copra_batch_record) == 8, "copra_batch_record: alignment");
_Static_assert(offsetof(struct copra_batch_record, number) == 0, "copra_batch_record.number: offset");
_Static_assert(offsetof(struct copra_batch_record, args) == 8, "copra_batch_record.args: offset");
_Static_assert(offsetof(struct copra_batch_record, user_data) == 48, "copra_batch_record.user_data: offset");
_Static_assert(offsetof(struct copra_batch_record, result) == 56, "copra_batch_record.result: offset");

/* What SEND sends and RECV receives: bytes and handles, each with its length. */
struct copra_channel_message {
	uint64_t data; /* address of the bytes (SEND: read from; RECV: written to) */
	uint64_t handles; /* address of a u32 array of handle ids (SEND: moved out; RECV: the new ids written) */
	uint32_t data_len; /* SEND: bytes to send; RECV: the buffer's capacity in, the message's bytes out (also on EMSGSIZE) */
	uint32_t handle_count; /* SEND: handles to move; RECV: the array's capacity in, the message's handles out (also on EMSGSIZE) */
};
_Static_assert(sizeof(struct copra_channel_message) == 24, "copra_channel_message: size");
_Static_assert(_Alignof(struct copra_channel_message) == 8, "copra_channel_message: alignment");
_Static_assert(offsetof(struct copra_channel_message, data) == 0, "copra_channel_message.data: offset");
_Static_assert(offsetof(struct copra_channel_message, handles) == 8, "copra_channel_message.handles: offset");
_Static_assert(offsetof(struct copra_channel_message, data_len) == 16, "copra_channel_message.data_len: offset");
_Static_assert(offsetof(struct copra_channel_message, handle_count) == 20, "copra_channel_message.handle_count: offset");

/* The page MMAP of a VCPU handle maps (shared by kernel and user mode; docs/abi.md). */
struct copra_run_page {
	uint32_t version; /* kernel, at VCPU_OPEN: RUN_PAGE_VERSION */
	uint32_t exit_reason; /* kernel, when VCPU_RUN returns 0: a VcpuExit */
	uint32_t regs_dirty; /* user: REGS_DIRTY to load regs at the next VCPU_RUN; kernel clears it; other values are EINVAL */
	uint32_t _pad; /* zero */
	uint8_t payload[64]; /* the exit's data: the Vcpu* structure of exit_reason */
	uint64_t regs[18]; /* kernel, at every return: the guest's GUEST_REGISTERS */
	uint8_t _reserved[1824]; /* zero; later versions grow into it */
	uint8_t io_data[2048]; /* VcpuIo's data: kernel (OUT) or user (IN) */
};
_Static_assert(sizeof(struct copra_run_page) == 4096, "copra_run_page: size");
_Static_assert(_Alignof(struct copra_run_page) == 8, "copra_run_page: alignment");
_Static_assert(offsetof(struct copra_run_page, version) == 0, "copra_run_page.version: offset");
_Static_assert(offsetof(struct copra_run_page, exit_reason) == 4, "copra_run_page.exit_reason: offset");
_Static_assert(offsetof(struct copra_run_page, regs_dirty) == 8, "copra_run_page.regs_dirty: offset");
_Static_assert(offsetof(struct copra_run_page, _pad) == 12, "copra_run_page._pad: offset");
_Static_assert(offsetof(struct copra_run_page, payload) == 16, "copra_run_page.payload: offset");
_Static_assert(offsetof(struct copra_run_page, regs) == 80, "copra_run_page.regs: offset");
_Static_assert(offsetof(struct copra_run_page, _reserved) == 224, "copra_run_page._reserved: offset");
_Static_assert(offsetof(struct copra_run_page, io_data) == 2048, "copra_run_page.io_data: offset");

/* The payload of VcpuExit.IO. OUT: io_data holds the items; IN: user mode writes them. */
struct copra_vcpu_io {
	uint16_t port; /* kernel */
	uint8_t size; /* kernel: bytes per item, 1, 2 or 4 */
	uint8_t direction; /* kernel: IoDirection */
	uint32_t count; /* kernel: items in io_data (size * count bytes) */
	uint8_t _reserved[56]; /* zero */
};
_Static_assert(sizeof(struct copra_vcpu_io) == 64, "copra_vcpu_io: size");
_Static_assert(_Alignof(struct copra_vcpu_io) == 4, "copra_vcpu_io: alignment");
_Static_assert(offsetof(struct copra_vcpu_io, port) == 0, "copra_vcpu_io.port: offset");
_Static_assert(offsetof(struct copra_vcpu_io, size) == 2, "copra_vcpu_io.size: offset");
_Static_assert(offsetof(struct copra_vcpu_io, direction) == 3, "copra_vcpu_io.direction: offset");
_Static_assert(offsetof(struct copra_vcpu_io, count) == 4, "copra_vcpu_io.count: offset");
_Static_assert(offsetof(struct copra_vcpu_io, _reserved) == 8, "copra_vcpu_io._reserved: offset");

/* The payload of VcpuExit.MMIO. */
struct copra_vcpu_mmio {
	uint64_t address; /* kernel: guest-physical */
	uint32_t length; /* kernel: 1 to 8 bytes */
	uint8_t is_write; /* kernel */
	uint8_t _pad[3]; /* zero */
	uint64_t data; /* kernel (write) or user (read): little-endian, length bytes */
	uint8_t _reserved[40]; /* zero */
};
_Static_assert(sizeof(struct copra_vcpu_mmio) == 64, "copra_vcpu_mmio: size");
_Static_assert(_Alignof(struct copra_vcpu_mmio) == 8, "copra_vcpu_mmio: alignment");
_Static_assert(offsetof(struct copra_vcpu_mmio, address) == 0, "copra_vcpu_mmio.address: offset");
_Static_assert(offsetof(struct copra_vcpu_mmio, length) == 8, "copra_vcpu_mmio.length: offset");
_Static_assert(offsetof(struct copra_vcpu_mmio, is_write) == 12, "copra_vcpu_mmio.is_write: offset");
_Static_assert(offsetof(struct copra_vcpu_mmio, _pad) == 13, "copra_vcpu_mmio._pad: offset");
_Static_assert(offsetof(struct copra_vcpu_mmio, data) == 16, "copra_vcpu_mmio.data: offset");
_Static_assert(offsetof(struct copra_vcpu_mmio, _reserved) == 24, "copra_vcpu_mmio._reserved: offset");

/* The payload of VcpuExit.MSR_READ and MSR_WRITE. */
struct copra_vcpu_msr {
	uint32_t index; /* kernel: the MSR (ECX) */
	uint8_t error; /* user: 1 injects #GP instead of completing; 0 or 1 only */
	uint8_t _pad[3]; /* zero */
	uint64_t data; /* kernel (MSR_WRITE: the value) or user (MSR_READ: the answer) */
	uint8_t _reserved[48]; /* zero */
};
_Static_assert(sizeof(struct copra_vcpu_msr) == 64, "copra_vcpu_msr: size");
_Static_assert(_Alignof(struct copra_vcpu_msr) == 8, "copra_vcpu_msr: alignment");
_Static_assert(offsetof(struct copra_vcpu_msr, index) == 0, "copra_vcpu_msr.index: offset");
_Static_assert(offsetof(struct copra_vcpu_msr, error) == 4, "copra_vcpu_msr.error: offset");
_Static_assert(offsetof(struct copra_vcpu_msr, _pad) == 5, "copra_vcpu_msr._pad: offset");
_Static_assert(offsetof(struct copra_vcpu_msr, data) == 8, "copra_vcpu_msr.data: offset");
_Static_assert(offsetof(struct copra_vcpu_msr, _reserved) == 16, "copra_vcpu_msr._reserved: offset");

/* The payload of VcpuExit.CPUID. */
struct copra_vcpu_cpuid {
	uint32_t leaf; /* kernel (EAX) */
	uint32_t subleaf; /* kernel (ECX) */
	uint32_t eax; /* user: the answer */
	uint32_t ebx; /* user */
	uint32_t ecx; /* user */
	uint32_t edx; /* user */
	uint8_t _reserved[40]; /* zero */
};
_Static_assert(sizeof(struct copra_vcpu_cpuid) == 64, "copra_vcpu_cpuid: size");
_Static_assert(_Alignof(struct copra_vcpu_cpuid) == 4, "copra_vcpu_cpuid: alignment");
_Static_assert(offsetof(struct copra_vcpu_cpuid, leaf) == 0, "copra_vcpu_cpuid.leaf: offset");
_Static_assert(offsetof(struct copra_vcpu_cpuid, subleaf) == 4, "copra_vcpu_cpuid.subleaf: offset");
_Static_assert(offsetof(struct copra_vcpu_cpuid, eax) == 8, "copra_vcpu_cpuid.eax: offset");
_Static_assert(offsetof(struct copra_vcpu_cpuid, ebx) == 12, "copra_vcpu_cpuid.ebx: offset");
_Static_assert(offsetof(struct copra_vcpu_cpuid, ecx) == 16, "copra_vcpu_cpuid.ecx: offset");
_Static_assert(offsetof(struct copra_vcpu_cpuid, edx) == 20, "copra_vcpu_cpuid.edx: offset");
_Static_assert(offsetof(struct copra_vcpu_cpuid, _reserved) == 24, "copra_vcpu_cpuid._reserved: offset");

/* The payload of VcpuExit.EMULATION_FAILURE and INTERNAL_ERROR. */
struct copra_vcpu_failure {
	uint32_t code; /* kernel: KVM's suberror, or the hardware entry-failure reason */
	uint32_t insn_length; /* kernel: bytes of insn that are valid (0 to 15) */
	uint8_t insn[16]; /* kernel: the instruction's bytes */
	uint8_t _reserved[40]; /* zero */
};
_Static_assert(sizeof(struct copra_vcpu_failure) == 64, "copra_vcpu_failure: size");
_Static_assert(_Alignof(struct copra_vcpu_failure) == 4, "copra_vcpu_failure: alignment");
_Static_assert(offsetof(struct copra_vcpu_failure, code) == 0, "copra_vcpu_failure.code: offset");
_Static_assert(offsetof(struct copra_vcpu_failure, insn_length) == 4, "copra_vcpu_failure.insn_length: offset");
_Static_assert(offsetof(struct copra_vcpu_failure, insn) == 8, "copra_vcpu_failure.insn: offset");
_Static_assert(offsetof(struct copra_vcpu_failure, _reserved) == 24, "copra_vcpu_failure._reserved: offset");

/* One range of VM_SET_MSR_FILTER's array. */
struct copra_msr_range {
	uint32_t flags; /* MsrFilterFlag: the accesses claimed */
	uint32_t base; /* the first MSR of the range */
	uint32_t count; /* MSRs in the range, 1 to MSR_RANGE_MAX_MSRS */
	uint32_t _pad; /* zero */
	uint64_t bitmap; /* user address of (count + 7) / 8 bytes: bit i claims base + i */
};
_Static_assert(sizeof(struct copra_msr_range) == 24, "copra_msr_range: size");
_Static_assert(_Alignof(struct copra_msr_range) == 8, "copra_msr_range: alignment");
_Static_assert(offsetof(struct copra_msr_range, flags) == 0, "copra_msr_range.flags: offset");
_Static_assert(offsetof(struct copra_msr_range, base) == 4, "copra_msr_range.base: offset");
_Static_assert(offsetof(struct copra_msr_range, count) == 8, "copra_msr_range.count: offset");
_Static_assert(offsetof(struct copra_msr_range, _pad) == 12, "copra_msr_range._pad: offset");
_Static_assert(offsetof(struct copra_msr_range, bitmap) == 16, "copra_msr_range.bitmap: offset");

/* What READ of a device event takes: one guest access in the event's range. */
struct copra_device_access {
	uint64_t address; /* the port (IO event) or guest-physical address (MMIO event) */
	uint64_t data; /* the value written (a write), else 0; little-endian */
	uint32_t size; /* bytes: 1, 2 or 4 (port), 1 to 8 (MMIO) */
	uint8_t is_write; /* 1: OUT or a store; 0: IN or a load */
	uint8_t _pad[3]; /* zero */
	uint32_t seq; /* names the access in its DeviceAnswer */
	uint32_t vcpu; /* the vCPU that made it */
};
_Static_assert(sizeof(struct copra_device_access) == 32, "copra_device_access: size");
_Static_assert(_Alignof(struct copra_device_access) == 8, "copra_device_access: alignment");
_Static_assert(offsetof(struct copra_device_access, address) == 0, "copra_device_access.address: offset");
_Static_assert(offsetof(struct copra_device_access, data) == 8, "copra_device_access.data: offset");
_Static_assert(offsetof(struct copra_device_access, size) == 16, "copra_device_access.size: offset");
_Static_assert(offsetof(struct copra_device_access, is_write) == 20, "copra_device_access.is_write: offset");
_Static_assert(offsetof(struct copra_device_access, _pad) == 21, "copra_device_access._pad: offset");
_Static_assert(offsetof(struct copra_device_access, seq) == 24, "copra_device_access.seq: offset");
_Static_assert(offsetof(struct copra_device_access, vcpu) == 28, "copra_device_access.vcpu: offset");

/* What WRITE of a device event gives: completes the access it names. */
struct copra_device_answer {
	uint32_t seq; /* the DeviceAccess.seq answered */
	uint32_t _pad; /* zero */
	uint64_t data; /* a read's value (little-endian; size bytes used) */
};
_Static_assert(sizeof(struct copra_device_answer) == 16, "copra_device_answer: size");
_Static_assert(_Alignof(struct copra_device_answer) == 8, "copra_device_answer: alignment");
_Static_assert(offsetof(struct copra_device_answer, seq) == 0, "copra_device_answer.seq: offset");
_Static_assert(offsetof(struct copra_device_answer, _pad) == 4, "copra_device_answer._pad: offset");
_Static_assert(offsetof(struct copra_device_answer, data) == 8, "copra_device_answer.data: offset");

#endif /* COPRA_ABI_H */
