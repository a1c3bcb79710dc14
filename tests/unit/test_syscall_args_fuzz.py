"""Hypothesis fuzzing of syscall arguments against the real handlers, without KVM.

The kernel runs over a fake VM: guest memory is a bytearray, the frame
allocator and page tables are the real ones, and the vCPU's registers are a plain
``KvmRegs``. A process gets a few mapped pages (some holding valid paths) and every
example issues a sequence of syscalls with drawn numbers and arguments, then ends
the process. Properties: the dispatcher never raises, every answer is a success or
a documented error code, the kernel counts no internal error, and frames, handles
and objects return to their baseline.
"""

from __future__ import annotations

import contextlib

from fake_vm import FakeVm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copra.abi.spec import (
    MMAP_BASE,
    PAGE_SIZE,
    USER_END,
    USER_START,
    Errno,
    FileMode,
    MapFlag,
    Sys,
)
from copra.kernel import packit
from copra.kernel.cpu import Next
from copra.kernel.errors import SyscallError
from copra.kernel.frames import FrameOwner
from copra.kernel.kernel import Kernel
from copra.kernel.objects import KernelObject
from copra.kernel.objects.log import Log
from copra.kernel.process import Process
from copra.kernel.ramfs import FramePageStore, RamFs
from copra.kernel.thread import ThreadState

DATA = USER_START  # one page of paths and buffers
BUF = DATA + PAGE_SIZE  # one writable page
PATHS = [b"/etc/a\0", b"/etc\0", b"/new\0", b"/\0", b"\xff\xfe\0", b"/etc/a/x\0"]


VM = FakeVm()
FS = RamFs(store=FramePageStore(VM.frames))  # type: ignore[arg-type]
FS.populate(packit.encode([packit.PackItEntry("/etc/a", b"0123456789" * 100)]))
KERNEL = Kernel(VM, FS, lambda line: None)  # type: ignore[arg-type]

#: Calls that end the caller or start code need running CPUs: the e2e fuzzer and
#: tests/e2e/test_threads.py cover them. Calls that block are taken back (below).
PROCESS_CALLS = {int(Sys.EXIT), int(Sys.EXEC), int(Sys.WAIT), int(Sys.THREAD_CREATE),
                 int(Sys.THREAD_EXIT)}
NUMBERS = st.one_of(
    st.sampled_from([int(s) for s in Sys if s not in PROCESS_CALLS]),
    st.integers(0, 2**64 - 1),
).filter(lambda n: n not in PROCESS_CALLS)
POINTERS = st.one_of(
    st.sampled_from([DATA + sum(len(p) for p in PATHS[:i]) for i in range(len(PATHS))]),
    st.sampled_from([BUF, BUF + PAGE_SIZE - 8, DATA - 1, 0, 0xDEAD0000, USER_END - 1,
                     USER_END, 0xFFFF_8000_0000_0000, 0x8000_0000_0000, 2**64 - 1,
                     MMAP_BASE]),
    st.integers(0, 2**64 - 1),
)
SMALL = st.one_of(st.integers(0, 8), st.sampled_from([PAGE_SIZE, 272, 2**32, 2**63, 2**64 - 1]))
FLAGS = st.one_of(st.integers(0, 63), st.sampled_from([
    int(MapFlag.READ | MapFlag.ANONYMOUS), int(MapFlag.READ | MapFlag.WRITE | MapFlag.ANONYMOUS),
    int(FileMode.READ | FileMode.WRITE)]), st.integers(0, 2**64 - 1))
ARGS = st.tuples(st.one_of(SMALL, POINTERS), st.one_of(POINTERS, SMALL),
                 st.one_of(SMALL, POINTERS), st.one_of(SMALL, POINTERS), FLAGS)
ERRORS = {int(e) & (2**64 - 1) for e in Errno}


def new_process() -> Process:
    log = Log("fuzz", lambda line: None)
    proc = Process(99, "fuzz", 0, VM.frames, {}, log, FS.root)
    proc.map_anonymous(DATA, 1, writable=False, executable=False)
    proc.map_anonymous(BUF, 1, writable=True, executable=False)
    pa = proc.space.lookup(DATA)
    assert pa is not None
    VM.memory.write(pa & 0x000F_FFFF_FFFF_F000, b"".join(PATHS))
    proc.start_at(DATA, tid=proc.pid).state = ThreadState.RUNNING  # as if on a CPU
    KERNEL.processes[proc.pid] = proc
    return proc


def baseline() -> tuple[int, int, int]:
    return (VM.frames.free_count, VM.frames.used[FrameOwner.USER],
            sum(KernelObject.live.values()))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(calls=st.lists(st.tuples(NUMBERS, ARGS), min_size=1, max_size=12))
def test_random_syscalls_answer_documented_codes_and_leak_nothing(
        calls: list[tuple[int, tuple[int, int, int, int, int]]]) -> None:
    before = baseline()
    proc = new_process()
    regs = VM.cpus[0].regs
    for number, (a0, a1, a2, a3, a4) in calls:
        regs.rax, regs.rdi, regs.rsi, regs.r8, regs.r9, regs.r10 = number, a0, a1, a2, a3, a4
        thread = proc.threads[0]
        if KERNEL.dispatch(VM.cpus[0], thread) is Next.LEAVE:  # type: ignore[arg-type]
            # It blocked (a READ of an empty event): no one will wake it here, so take
            # it back as a CPU would after a wake-up that found nothing to do.
            assert thread.state is ThreadState.BLOCKED, hex(number)
            if thread.waiter is not None:
                thread.waiter.cancel()
            thread.state, thread.retry, thread.deadline = ThreadState.RUNNING, False, None
            continue
        result = regs.rax
        assert result < 2**63 or result in ERRORS, (hex(number), hex(result))
        assert result != int(Errno.UNKNOWN) & (2**64 - 1)
    KERNEL.exit_process(proc, 0)
    KERNEL.processes.pop(proc.pid, None)
    VM.flush_quarantine()  # the ended process's frames wait for an invalidation
    for remove in (FS.unlink, FS.rmdir):  # what OPEN with CREATE or MKDIR may have made
        with contextlib.suppress(SyscallError):
            remove("/new")
    assert KERNEL.counters["internal_errors"] == 0
    assert baseline()[1:] == before[1:]
