"""IRQ objects: a device model's interrupt line into one guest APIC, like Linux's eventfd
bound to a KVM irqfd (upstream's agreed design: "an IRQ object similar to Linux eventfd,
which can be bound to a specific APIC").

IRQ_CREATE (VM handle, target APIC id, vector, edge or level) makes an ``IrqObject``;
its holder asserts it with IRQ_SIGNAL or with WRITE of 8 bytes (a non-zero u64, as
eventfd's write; 0 changes nothing). Each assertion puts the vector in the target
APIC's IRR (``X2Apic.raise_fixed``: TMR set for level, cleared for edge); the model's
``notify`` then wakes the vCPU if it is halted, or kicks it out of KVM_RUN when another
host thread runs it (vmm/irq.py), so the handler runs promptly.

Level-triggered IRQs are resampled as KVM's irqfd resamplefd is: when the guest's EOI
retires the vector (TMR set), every level IRQ object of that APIC and vector counts one
resample and raises READABLE; READ of 8 bytes takes the count (blocking while it is 0)
and clears READABLE, and the device re-asserts if its line is still active. An edge
IRQ has no resample: READ answers ENOTSUPP.

Storms: IRR holds one request per vector, so signals that find it pending merge
(the model counts them, ``ApicCounters.coalesced``), and a vCPU already kicked is not
kicked again (vmm/irq.py): a model that signals in a loop costs its own CPU time and one
exit of the guest per interrupt the guest actually takes (docs/apic.md).

A signal or a READ after the VM was released answers ENOTFOUND ("the VM was
released", as VCPU_RUN and VCPU_OPEN do then), and a READ waiting for a resample is
woken to answer it; the object itself stays valid until its handles go.
IRQ objects are not exclusive: the VMM creates them and gives them to device models.

Invariants: ``resamples`` and READABLE agree (READABLE exactly while it is non-zero);
a level object is in its VcpuIrq's listener list from creation until ``on_close``.

Locking: the bus lock ("vmm.apic") around the model's calls and the listener lists
and ``resamples``; the wait queue's after it.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Final

from copra.abi.spec import Errno, Signal
from copra.kernel import wakeq
from copra.kernel.errors import SyscallError, WouldBlock
from copra.kernel.objects import ObjectKind, StreamObject
from copra.kernel.usermem import UserPtr, check_buffer, copy_in, copy_out
from copra.kernel.waitqueue import WaitQueue

if TYPE_CHECKING:
    from copra.kernel.syscalls.table import Call
    from copra.vmm.irq import VcpuIrq
    from copra.vmm.vm import GuestVm

_U64: Final = struct.Struct("<Q")
FIRST_VECTOR: Final = 16  #: vectors 0-15 are illegal for fixed interrupts (SDM 11.5.2)


class IrqObject(StreamObject):
    kind = ObjectKind.IRQ

    def __init__(self, guest: GuestVm, target: VcpuIrq, vector: int, level: bool) -> None:
        super().__init__()
        self.guest = guest
        self.target = target
        self.vector = vector
        self.level = level
        self.queue = WaitQueue()
        self.resamples = 0  #: EOIs of the vector since the last READ (level only)
        self.signals = 0
        if level:
            with target.bus.lock:
                target.listen(vector, self)

    def wait_queue(self) -> WaitQueue:
        return self.queue

    def signal(self) -> None:
        """Assert the line: the vector becomes pending on the target APIC."""
        if not self.guest.available:
            raise SyscallError(Errno.ENOTFOUND, "the VM was released")
        with self.target.bus.lock:
            self.signals += 1
            self.target.apic.raise_fixed(self.vector, level=self.level)
        # The vCPU's host thread, just woken or kicked, needs the GIL to inject: give it
        # up once now rather than at the end of this syscall (about 60-90 us less from
        # signal to handler when the guest runs: docs/performance.md).
        wakeq.flush()  # the wake-up of a halted vCPU's thread, deferred, goes out first
        time.sleep(0)

    def resampled(self) -> None:
        """The guest's EOI retired the vector (bus lock held)."""
        self.resamples += 1
        if self.resamples == 1:
            self.queue.raise_signals(Signal.READABLE)

    def read_stream(self, c: Call, buf: UserPtr, length: int) -> int:
        if not self.level:
            raise SyscallError(Errno.ENOTSUPP, "an edge-triggered IRQ has no resample to read")
        if length < _U64.size:
            raise SyscallError(Errno.EINVAL, f"an IRQ is read 8 bytes at a time, not {length}")
        p = c.process
        with p.mem_lock:
            check_buffer(p.space, buf, _U64.size, write=True, usable=_U64.size)
        while True:
            if not self.guest.available:
                raise SyscallError(Errno.ENOTFOUND, "the VM was released")
            with self.target.bus.lock:
                count = self.resamples
                if count:
                    with p.mem_lock:
                        copy_out(p.space, buf, _U64.pack(count))
                    self.resamples = 0
                    self.queue.clear_signals(Signal.READABLE)
                    return _U64.size
                self.queue.clear_signals(Signal.READABLE)  # a wake-up with nothing to take
            if not c.kernel.wait_for(c.thread, self.queue, Signal.READABLE):
                raise WouldBlock

    def write_stream(self, c: Call, buf: UserPtr, length: int) -> int:
        if length != _U64.size:
            raise SyscallError(Errno.EINVAL, f"an IRQ is written 8 bytes, not {length}")
        p = c.process
        with p.mem_lock:
            (value,) = _U64.unpack(copy_in(p.space, buf, _U64.size))
        if value:
            self.signal()
        return _U64.size

    def on_close(self) -> None:
        if self.level:
            with self.target.bus.lock:
                self.target.unlisten(self.vector, self)
