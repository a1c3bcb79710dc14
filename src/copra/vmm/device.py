"""Device models' events: guest port and MMIO ranges served by a process, not the VMM.

IO_EVENT_CREATE (a port range) and MMIO_EVENT_CREATE (a guest-physical range outside
RAM) make a ``DeviceEvent`` and route the range to it (``DeviceRouter``, one per VM).
When a guest vCPU accesses a routed range, VCPU_RUN does not return to the VMM: it
posts a ``DeviceAccess`` to the event and the calling thread waits (blocked, not
spinning) until the access is answered, then completes the instruction and runs on.
The event's holder (a device model, which the VMM gives the handle to) takes accesses
with READ (a ``DeviceAccess`` record, 32 bytes; it blocks while none waits; WAIT_MANY
sees READABLE) and answers each with WRITE (a ``DeviceAnswer``, 16 bytes: its ``seq``
and, for a read, the value); DEVICE_REPLY does both in one call, the answer first.
Upstream's design (coconut-facts 4): "the kernel ...
wakes the user thread waiting on the MMIO event object. User space emulates the
access and signals back, and the kernel finishes the instruction".

What an access is routed: one item (not a string instruction's batch) that lies wholly
inside one event's range; anything else goes to the VMM through the run page as before.
Ranges of one VM never overlap (EEXIST); an MMIO range may not touch guest RAM (EINVAL).

Invariants:
- every access posted is answered exactly once: by its holder's WRITE, or, when the
  event goes (its last handle closed, its holder's process ended), by the event with
  all ones, marked ``abandoned``: the vCPU then reports VcpuExit.DEVICE_GONE to its
  VMM once, and the guest goes on;
- an event's queue has READABLE exactly while an access waits to be taken; an
  access's own queue raises READABLE when it is answered;
- a closed event is out of its VM's routes before its accesses are abandoned, and
  ``post`` to a closed event refuses (the access then goes to the VMM);
- a holder blocked in READ leaves an offer (``_takers``); ``post`` of an access that
  finds none waiting before it hands it to the oldest such holder at once (copies its
  record out under the event lock, sets the holder's result and wakes it, as in
  objects/channel.py); a holder withdraws its offer when it runs again or its process
  ends;
- once its VM is released an event gets no access, and READ answers ENOTFOUND when
  none is left (READABLE stays raised: WAIT_MANY on it returns at once).

Locking: ``lock`` (class "vmm.device") guards an event's accesses and ``closed``;
READ copies out under it (so a failed copy loses nothing: the access stays waiting).
The router's routes are a tuple replaced whole under its own lock (same class, never
nested with an event's); vCPU threads read it without a lock.
"""

from __future__ import annotations

import itertools
import struct
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from copra.abi.spec import DEVICE_ACCESS, DEVICE_ANSWER, Errno, Signal
from copra.kernel import lockdep
from copra.kernel.errors import SyscallError, WouldBlock
from copra.kernel.objects import ObjectKind, StreamObject
from copra.kernel.usermem import UserPtr, check_buffer, copy_in, copy_out
from copra.kernel.waitqueue import WaitQueue

if TYPE_CHECKING:
    from copra.kernel.syscalls.table import Call
    from copra.kernel.thread import Thread

_ACCESS = struct.Struct("<QQIB3xII")
_ANSWER = struct.Struct("<IIQ")
assert _ACCESS.size == DEVICE_ACCESS.size and _ANSWER.size == DEVICE_ANSWER.size
PORTS: Final = 0x1_0000


@dataclass(eq=False)
class DeviceAccess:
    is_mmio: bool
    seq: int
    vcpu: int
    address: int
    size: int
    is_write: bool
    data: int  #: the value written; for a read, the answer once done
    done: bool = False
    abandoned: bool = False
    queue: WaitQueue = field(default_factory=WaitQueue)

    def answer(self, value: int, abandoned: bool = False) -> None:
        if self.done:
            return
        if not self.is_write:
            self.data = value & ((1 << (8 * self.size)) - 1)
        self.abandoned = abandoned
        self.done = True
        self.queue.raise_signals(Signal.READABLE)


def _record(access: DeviceAccess) -> bytes:
    """What READ copies out for ``access``."""
    return _ACCESS.pack(access.address, access.data if access.is_write else 0, access.size,
                        int(access.is_write), access.seq, access.vcpu)


class DeviceEvent(StreamObject):
    """A port or MMIO range of one guest, served by whoever holds the handle."""

    def __init__(self, router: DeviceRouter, is_mmio: bool, base: int, size: int) -> None:
        super().__init__()
        self.router = router
        self.is_mmio = is_mmio
        self.base = base
        self.end = base + size  #: exclusive
        self.lock = lockdep.lock("vmm.device")
        self.closed = False
        self.vm_gone = False  #: the VM was released: READ answers ENOTFOUND once drained
        self._waiting: deque[DeviceAccess] = deque()
        self._taken: dict[int, DeviceAccess] = {}
        #: Holders blocked in READ that ``post`` gives an access directly, oldest first.
        self._takers: deque[tuple[Thread, Callable[[bytes], None], Callable[[Thread], None]]] \
            = deque()
        self.queue = WaitQueue()
        self.accesses = 0

    def covers(self, address: int, size: int) -> bool:
        return self.base <= address and address + size <= self.end

    def wait_queue(self) -> WaitQueue:
        return self.queue

    # --- the vCPU side ---------------------------------------------------------------

    def post(self, access: DeviceAccess) -> bool:
        """Queue an access for the holder; False if the event is closed. A holder blocked
        in READ (or DEVICE_REPLY) gets it at once: its record is copied into the
        holder's buffer here and the holder only returns to user mode when woken."""
        with self.lock:
            if self.closed:
                return False
            self._waiting.append(access)
            self.accesses += 1
            if len(self._waiting) == 1 and not (self._takers and self._hand_over(access)):
                self.queue.raise_signals(Signal.READABLE)
            return True

    def _hand_over(self, access: DeviceAccess) -> bool:
        """Give ``access``, the only one waiting, to the oldest blocked holder (lock
        held); True if taken. A failed copy is that holder's answer; the access waits."""
        while self._takers:
            thread, deliver, wake = self._takers.popleft()
            if thread.process.ending:
                continue
            try:
                deliver(_record(access))
            except SyscallError as e:
                thread.result = int(e.errno)
                wake(thread)
                return False
            except Exception:  # its own dispatch will meet it again
                wake(thread)
                return False
            self._waiting.popleft()
            self._taken[access.seq] = access
            thread.result = _ACCESS.size
            wake(thread)
            return True
        return False

    def _offer(self, c: Call, deliver: Callable[[bytes], None]) -> Callable[[], int | None]:
        """The calling thread blocks in READ: ``post`` may complete it. Its ``withdraw``."""
        taker = (c.thread, deliver, c.kernel.wake)
        with self.lock:
            self._takers.append(taker)

        def withdraw() -> int | None:
            thread = taker[0]
            with self.lock:
                try:
                    self._takers.remove(taker)
                except ValueError:  # a post took it: it set the result
                    result, thread.result = thread.result, None
                    return result
                return None

        return withdraw

    # --- the holder's side -------------------------------------------------------------

    def read_stream(self, c: Call, buf: UserPtr, length: int) -> int:
        if length < _ACCESS.size:
            raise SyscallError(Errno.EINVAL, f"a device event is read {_ACCESS.size} bytes "
                                             f"at a time, not {length}")
        p = c.process
        with p.mem_lock:
            check_buffer(p.space, buf, _ACCESS.size, write=True, usable=_ACCESS.size)
        return self._take(c, buf)

    def _take(self, c: Call, buf: UserPtr) -> int:
        """READ's work once ``buf`` has been checked: take the oldest waiting access
        into it, or block with an offer for ``post``."""
        p = c.process

        def deliver(record: bytes) -> None:
            with p.mem_lock:
                copy_out(p.space, buf, record)

        while True:
            with self.lock:
                if self._waiting:
                    access = self._waiting[0]
                    deliver(_record(access))
                    self._waiting.popleft()
                    self._taken[access.seq] = access
                    if not self._waiting and not self.vm_gone:
                        self.queue.clear_signals(Signal.READABLE)
                    return _ACCESS.size
                if self.vm_gone:
                    raise SyscallError(Errno.ENOTFOUND, "the event's VM was released")
            if not c.kernel.wait_for(c.thread, self.queue, Signal.READABLE):
                c.thread.withdraw = self._offer(c, deliver)
                raise WouldBlock

    def write_stream(self, c: Call, buf: UserPtr, length: int) -> int:
        if length != _ANSWER.size:
            raise SyscallError(Errno.EINVAL, f"a device event is answered with "
                                             f"{_ANSWER.size} bytes, not {length}")
        p = c.process
        with p.mem_lock:
            raw = copy_in(p.space, buf, _ANSWER.size)
        seq, pad, value = _ANSWER.unpack(raw)
        if pad:
            raise SyscallError(Errno.EINVAL, "DeviceAnswer padding is not zero")
        with self.lock:
            access = self._taken.pop(seq, None)
        if access is None:
            raise SyscallError(Errno.EINVAL, f"no access {seq} was taken from this event")
        access.answer(value)
        return _ANSWER.size

    def reply(self, c: Call, answer: UserPtr, buf: UserPtr) -> int:
        """DEVICE_REPLY: WRITE the DeviceAnswer at ``answer`` (unless 0), then READ the
        next access into ``buf``, blocking. The vCPU the answer wakes runs on this CPU
        next (a sync wake-up, kernel/scheduler.py): this thread blocks right after,
        until that vCPU's guest makes its next access. Dispatched again after a
        wake-up, it only takes (``half_done``)."""
        thread, cpu = c.thread, c.cpu
        p = c.process
        with p.mem_lock:  # EFAULT before the answer goes
            check_buffer(p.space, buf, _ACCESS.size, write=True, usable=_ACCESS.size)
        if answer.addr and not thread.half_done:
            with c.kernel.sync_wake(cpu):
                self.write_stream(c, answer, _ANSWER.size)
            thread.half_done = True
        try:
            taken = self._take(c, buf)  # ``buf`` checked above
        except WouldBlock:
            raise
        except BaseException:
            c.kernel.unsync(cpu)
            raise
        c.kernel.unsync(cpu)
        return taken

    def vm_released(self) -> None:
        """Its VM is gone: no access will come; a holder's READ answers ENOTFOUND (READABLE
        stays raised so that a waiting holder wakes and sees it)."""
        with self.lock:
            self.vm_gone = True
            self.queue.raise_signals(Signal.READABLE)

    def on_close(self) -> None:
        """The holder is gone: unroute, then answer everything with all ones."""
        self.router.remove(self)
        with self.lock:
            self.closed = True
            self._takers.clear()
            left = list(self._waiting) + list(self._taken.values())
            self._waiting.clear()
            self._taken.clear()
            self.queue.clear_signals(Signal.READABLE)
        for access in left:
            access.answer(-1, abandoned=True)


class IoEvent(DeviceEvent):
    kind = ObjectKind.IO_EVENT


class MmioEvent(DeviceEvent):
    kind = ObjectKind.MMIO_EVENT


class DeviceRouter:
    """One VM's ranges and the events that serve them."""

    def __init__(self, ram_size: int) -> None:
        self.ram_size = ram_size
        self._lock = lockdep.lock("vmm.device")
        self.io: tuple[DeviceEvent, ...] = ()
        self.mmio: tuple[DeviceEvent, ...] = ()
        self._seq = itertools.count(1)

    def create(self, is_mmio: bool, base: int, size: int) -> DeviceEvent:
        limit = 1 << 52 if is_mmio else PORTS
        if not 0 < size <= limit or base + size > limit:
            what = "guest-physical addresses" if is_mmio else "ports"
            raise SyscallError(Errno.EINVAL, f"range {base:#x}+{size:#x} is not a range of {what}")
        if is_mmio and base < self.ram_size:
            raise SyscallError(Errno.EINVAL, f"MMIO range {base:#x}+{size:#x} overlaps guest "
                                             f"RAM [0, {self.ram_size:#x})")
        event = (MmioEvent if is_mmio else IoEvent)(self, is_mmio, base, size)
        with self._lock:
            routes = self.mmio if is_mmio else self.io
            for other in routes:
                if base < other.end and other.base < base + size:
                    raise SyscallError(Errno.EEXIST, f"range {base:#x}+{size:#x} overlaps "
                                                     f"{other.base:#x}-{other.end - 1:#x}")
            if is_mmio:
                self.mmio = (*routes, event)
            else:
                self.io = (*routes, event)
        return event

    def release(self) -> None:
        """The VM is released: tell every event (their holders' READs end)."""
        with self._lock:
            events = self.io + self.mmio
            self.io = self.mmio = ()
        for event in events:
            event.vm_released()

    def remove(self, event: DeviceEvent) -> None:
        with self._lock:
            self.io = tuple(e for e in self.io if e is not event)
            self.mmio = tuple(e for e in self.mmio if e is not event)

    def route(self, is_mmio: bool, vcpu: int, address: int, size: int, is_write: bool,
              data: int) -> DeviceAccess | None:
        """The access, posted to the event whose range holds it; None: nobody serves it."""
        for event in self.mmio if is_mmio else self.io:
            if event.covers(address, size):
                access = DeviceAccess(is_mmio, next(self._seq) & 0xFFFF_FFFF, vcpu, address,
                                      size, is_write, data)
                return access if event.post(access) else None
        return None
