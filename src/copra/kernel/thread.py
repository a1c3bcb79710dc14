"""A thread: one flow of user execution in a process, the unit the scheduler runs.

A thread owns its CPU state (``context``: the general registers, the FS base and the
XSAVE-managed state, kernel/cpu.py's ``UserContext``) and its run state; everything
else — the address space, mappings, handles, children — is its process's
(kernel/process.py), shared by all of its threads. A thread is also a kernel object:
THREAD_CREATE returns a handle on it; the handle's WAIT right lets JOIN wait
for its end and read its ``code``. Closing the handle does not stop the thread.

Run states::

    RUNNABLE --picked by a CPU--> RUNNING --preempted--> RUNNABLE
    RUNNING --blocks in a syscall--> BLOCKED --woken--> RUNNABLE
    any --its process ends (or THREAD_EXIT)--> EXITED (final)

Invariants:
- a RUNNING thread is the current thread of exactly one CPU (``cpu``), and its
  context is loaded there (its XSAVE state once its CPL3 code runs: ``Cpu.enter``);
  any other thread's registers are saved in its context,
  and its XSAVE state too, or still held by the vCPU it left (``Cpu.park``), which
  gives it up when another CPU loads the context (``Cpu.fetch``): any CPU may load
  it next;
- a RUNNABLE thread is in the scheduler's run queue or one CPU's mailbox, exactly
  once; no other is;
- a BLOCKED thread has a syscall to finish: when woken it is dispatched again
  with the same registers (``retry``); what it waits on is its ``waiter``'s
  registrations (kernel/waitqueue.py), cancelled before that dispatch;
- ``tid`` is unique for the kernel's life; a thread belongs to one process forever;
- ``ended_queue`` raises Signal.ENDED once, when the thread is EXITED for good and
  ``code`` is set (THREAD_EXIT's code; the process's status when the process ended);
- a BLOCKED thread's syscall may instead be completed by its waker (a SEND into the
  RECV it blocked in: ``withdraw`` is then set): the waker, under the lock of the
  object waited on, does what the dispatch would have done and sets ``result``;
  the thread's CPU calls ``withdraw`` before anything else when it picks it up
  (kernel.py's ``resume``), which ends the offer and returns ``result`` if a waker
  took it (rax gets it, the syscall is not dispatched again);
- ``half_done`` is set only during a two-step syscall (CHANNEL_CALL, DEVICE_REPLY)
  whose first step is done: dispatched again, it does not repeat it;
- ``deadline`` is set only while a syscall of the thread waits with a timeout
  (monotonic seconds); ``resumed`` is True only while a blocked syscall is being
  dispatched again.

Locking: ``state``, ``cpu``, ``last_cpu``, ``queued_on``, ``retry`` and
``wake_pending`` belong to the scheduler
and change only under its lock (kernel/scheduler.py), ``retry`` also by the thread's
own CPU while it is RUNNING; the context is
touched only by the CPU the thread runs on, or by anyone while the thread is
neither RUNNING nor RUNNABLE-and-picked (it is then saved and unshared).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING

from copra.kernel.cpu import UserContext
from copra.kernel.objects import KernelObject, ObjectKind
from copra.kernel.waitqueue import WaitQueue

if TYPE_CHECKING:
    from copra.kernel.process import Process
    from copra.kernel.scheduler import Waiter


class ThreadState(Enum):
    RUNNABLE = "runnable"
    RUNNING = "running"
    BLOCKED = "blocked"
    EXITED = "exited"


class Thread(KernelObject):
    kind = ObjectKind.THREAD

    def __init__(self, tid: int, process: Process, context: UserContext) -> None:
        super().__init__()
        self.tid = tid
        self.process = process
        self.context = context
        self.state = ThreadState.RUNNABLE
        #: The CPU whose current thread this is (RUNNING), else None.
        self.cpu: int | None = None
        #: The CPU it ran on last (None before it first ran): where a wake-up sends it
        #: if that CPU is idle (scheduler.py).
        self.last_cpu: int | None = None
        #: While RUNNABLE: -1 in the scheduler's shared queue, i in CPU i's mailbox.
        self.queued_on: int | None = None
        #: Woken while RUNNING, before it blocked: it must not block (scheduler.py).
        self.wake_pending = False
        #: Its registrations on the wait queues it waits on (created at its first wait).
        self.waiter: Waiter | None = None
        #: A syscall to dispatch again before the thread next runs (it blocked in it).
        self.retry = False
        #: True while that syscall is being dispatched again (its handler may look at
        #: what woke it: ``waiter.fired``).
        self.resumed = False
        #: When the waiting syscall times out (time.monotonic()), or None.
        self.deadline: float | None = None
        #: While BLOCKED in a syscall a waker may complete: ends that offer, under the
        #: lock of the object waited on, and answers the result if a waker took it.
        self.withdraw: Callable[[], int | None] | None = None
        #: The value for rax a waker completed the blocked syscall with.
        self.result: int | None = None
        #: The first step of a two-step syscall is done (not repeated when dispatched again).
        self.half_done = False
        self.ended_queue = WaitQueue()
        self.code: int | None = None
        self.syscalls = 0

    def wait_queue(self) -> WaitQueue:
        return self.ended_queue

    @property
    def name(self) -> str:
        return f"{self.process.name} (pid {self.process.pid}, thread {self.tid})"

    def __repr__(self) -> str:
        return f"<Thread {self.tid} of {self.process.name} {self.state.value}>"
