"""The syscall table: every class's rows joined (table.py says what a row is).

Each class is a module with its own table: core.py (class 0; BATCH, also class 0,
in batch.py; channels.py has its channel and handle-move calls), fs.py (class 1),
info.py (class 3). Adding a class is adding a module and its table here; a class
that lives in another layer (the VMM's) registers its table at boot instead.

Locking: the table is immutable after import.
"""

from __future__ import annotations

from copra.kernel.syscalls import batch, channels, core, fs, info
from copra.kernel.syscalls.table import Call, Services, Status, SyscallSpec

SYSCALLS: dict[int, SyscallSpec] = {**core.TABLE, **batch.TABLE, **channels.TABLE, **fs.TABLE,
                                    **info.TABLE}
assert len(SYSCALLS) == (len(core.TABLE) + len(batch.TABLE) + len(channels.TABLE)
                         + len(fs.TABLE) + len(info.TABLE))

__all__ = ["SYSCALLS", "Call", "Services", "Status", "SyscallSpec"]
