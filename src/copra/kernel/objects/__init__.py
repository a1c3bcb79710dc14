"""Kernel objects: one module per kind, each a subclass of ``KernelObject``.

Every object carries a ``kind`` tag; the handle table's one checked lookup compares
it with the kind a syscall expects (no ``as_<kind>()`` downcasts). ``on_close`` runs
when the last handle to the object goes away (CLOSE or process exit) and releases
what the object holds.

Locking: each object kind states its own rule at the top of its module; objects may
be used by several threads of a process at once.
"""

from __future__ import annotations

from enum import Enum


class ObjectKind(Enum):
    LOG = "log"
    FILE = "file"
    DIRECTORY = "directory"


class KernelObject:
    """Base of every kernel object."""

    kind: ObjectKind

    def on_close(self) -> None:
        """Release what the object holds; called once, when its last handle goes."""
