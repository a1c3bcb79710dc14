"""Resource limits, like RLIMIT: how much one process, and the system, may hold.

Without them one process could take every frame and starve the rest, make mappings
until the host runs out of memory, or spawn children (reaped or not) without end.
The values come from the image configuration's ``limits`` object (kernel/image.py,
docs/images.md) and travel BootConfig -> Kernel -> Process; the defaults and the
reasons for them are in docs/abi.md ("Limits").

- ``frames``: the private frames a process holds (image, stack, anonymous and
  private file mappings, zero pages past a file's end) plus its page tables;
  ``FrameAccount`` (kernel/frames.py) answers OutOfMemory, ENOMEM to the caller;
- ``mappings``: a process's regions (image segments, stack, MMAPs); ``Process``
  answers ENOMEM (MMAP, EXEC, and a MUNMAP that would split a region);
- ``handles``: a process's open handles; ``HandleTable`` answers EMFILE;
- ``children``: a process's children still running; ``Kernel.spawn``, EAGAIN;
- ``unreaped``: a process's children that ended and were not yet WAITed for;
  ``Kernel.spawn``, EAGAIN;
- ``tasks``: processes system-wide, running or unreaped; ``Kernel.spawn``, EAGAIN
  (at boot, /init itself counts);
- ``threads``: a process's threads that have not ended; ``Kernel.create_thread``,
  EAGAIN (THREAD_CREATE);
- ``metadata``: host bytes the RAM fs's names, nodes and OPENDIR snapshots may take
  (kernel/budget.py), ENOMEM beyond; None: one eighth of the SVSM's memory.

RAM-fs frames that a read-only file mapping shares are not charged to the process:
the file holds them. Every check happens before the call changes anything.

Invariants of :class:`Limits`: every value is an int in ``[1, MAX_LIMIT]``; ``frames``
may instead be None, meaning ``DEFAULT_FRAME_SHARE`` of the frame pool, and
``metadata`` None, meaning the budget's default.

Locking: immutable values; no locking.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from fractions import Fraction

from copra.abi.spec import MAX_HANDLES

#: The share of the frame pool one process may hold when ``frames`` is not configured.
DEFAULT_FRAME_SHARE = Fraction(3, 4)
DEFAULT_MAPPINGS = 4096
DEFAULT_HANDLES = MAX_HANDLES
DEFAULT_CHILDREN = 64
DEFAULT_UNREAPED = 64
DEFAULT_TASKS = 256
DEFAULT_THREADS = 128
#: The largest value any limit takes (handle ids and task ids are u32).
MAX_LIMIT = (1 << 32) - 1


@dataclass(frozen=True)
class Limits:
    """The limits of one boot (see the module docstring for what each one counts)."""

    #: frames per process; None: DEFAULT_FRAME_SHARE of the pool (``frame_limit``)
    frames: int | None = None
    mappings: int = DEFAULT_MAPPINGS
    handles: int = DEFAULT_HANDLES
    children: int = DEFAULT_CHILDREN
    unreaped: int = DEFAULT_UNREAPED
    tasks: int = DEFAULT_TASKS
    threads: int = DEFAULT_THREADS
    #: host bytes of RAM-fs metadata; None: ``budget.default_metadata_limit``
    metadata: int | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in ("frames", "metadata"):
                continue
            if type(value) is not int or not 1 <= value <= MAX_LIMIT:
                raise ValueError(f"limit {f.name} must be an integer in [1, {MAX_LIMIT}], "
                                 f"not {value!r}")

    def frame_limit(self, pool: int) -> int:
        """The frames one process may hold, with ``pool`` frames in the allocator."""
        if self.frames is not None:
            return self.frames
        share = DEFAULT_FRAME_SHARE  # integer arithmetic: Fraction's is slow (every EXEC)
        return max(1, pool * share.numerator // share.denominator)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))


DEFAULT_LIMITS = Limits()
