"""The exceptions a syscall handler raises.

A handler that cannot complete raises :class:`SyscallError` carrying an
:class:`~copra.abi.spec.Errno`; only the syscall dispatcher turns it into ``rax``.
Nothing else in the kernel maps errors to numbers. A handler whose thread must wait
raises :class:`WouldBlock` (the syscall is dispatched again when the thread is
woken); one after which the calling thread no longer runs (EXIT, THREAD_EXIT, its
process ending under it) raises :class:`ThreadEnded`.

Invariants: ``errno`` is always an ``Errno`` member; the message is for logs and
tests, never shown to user mode.

Locking: instances are immutable after construction; no locking needed.
"""

from __future__ import annotations

from copra.abi.spec import Errno


class SyscallError(Exception):
    """A syscall failed with ``errno``; ``message`` says why (for logs and tests)."""

    def __init__(self, errno: Errno, message: str = "") -> None:
        self.errno: Errno = Errno(errno)
        self.message: str = message or self.errno.name
        super().__init__(f"{self.errno.name}: {self.message}")

    def __reduce__(self) -> tuple[type[SyscallError], tuple[Errno, str]]:
        return (SyscallError, (self.errno, self.message))


class WouldBlock(Exception):
    """Raised by a handler whose thread must wait; the syscall is retried on wake."""


class ThreadEnded(Exception):
    """Raised by a handler after which the calling thread no longer runs."""
