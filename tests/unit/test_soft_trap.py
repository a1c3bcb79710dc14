"""A preemption right after an ``int3`` waits (a bounded number of kicks) for the #BP.

KVM does not report software exceptions in ``kvm_vcpu_events`` and PVM hosts move RIP
past ``int3`` before delivering the #BP; loading another thread then would drop it
and the process would run on past its ``int3`` (seen: preempt-storm's int3 child
exiting instead of being killed). Runs the real kernel over the fake VM (no KVM).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fake_vm import FakeVm

from copra.abi.spec import USER_START
from copra.hw.x86 import PTE_ADDR_MASK
from copra.kernel.kernel import SOFT_TRAP_DEFERRALS, Kernel
from copra.kernel.objects.log import Log
from copra.kernel.process import Process
from copra.kernel.ramfs import FramePageStore, RamFs
from copra.kernel.thread import Thread

CODE = USER_START
#: nop; int3; nop; nop; int 3; nop
TEXT = b"\x90\xcc\x90\x90\xcd\x03\x90"


@pytest.fixture
def kernel() -> Iterator[Kernel]:
    vm = FakeVm(pages=64)
    yield Kernel(vm, RamFs(store=FramePageStore(vm.frames)), lambda line: None)  # type: ignore[arg-type]


@pytest.fixture
def thread(kernel: Kernel) -> Thread:
    proc = Process(7, "t", 0, kernel.vm.frames, {}, Log("t", lambda line: None), kernel.fs.root)
    proc.map_anonymous(CODE, 1, writable=False, executable=True)
    entry = proc.space.lookup(CODE)
    assert entry is not None
    kernel.vm.memory.write(entry & PTE_ADDR_MASK, TEXT)
    return proc.start_at(CODE, tid=proc.pid)


def test_kick_right_after_int3_keeps_the_thread_on_its_cpu(kernel: Kernel,
                                                            thread: Thread) -> None:
    assert kernel._soft_trap_may_be_queued(thread, CODE + 2)
    assert kernel.counters["preemptions_after_int3"] == 1


def test_kick_right_after_the_two_byte_int_3_keeps_the_thread_too(kernel: Kernel,
                                                                   thread: Thread) -> None:
    assert kernel._soft_trap_may_be_queued(thread, CODE + 6)


def test_kick_elsewhere_preempts(kernel: Kernel, thread: Thread) -> None:
    assert not kernel._soft_trap_may_be_queued(thread, CODE + 1)
    assert not kernel._soft_trap_may_be_queued(thread, CODE + 4)
    assert not kernel._soft_trap_may_be_queued(thread, 0x10)  # unmapped: nothing to read


def test_a_thread_parked_after_int3_bytes_is_preempted_after_a_bounded_wait(
        kernel: Kernel, thread: Thread) -> None:
    waits = [kernel._soft_trap_may_be_queued(thread, CODE + 2)
             for _ in range(SOFT_TRAP_DEFERRALS + 1)]
    assert waits == [True] * SOFT_TRAP_DEFERRALS + [False]
    assert kernel._soft_trap_may_be_queued(thread, CODE + 2)  # the count starts again
