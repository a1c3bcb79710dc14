"""x86 segment descriptors: the 8-byte GDT entry and the unpacked form KVM takes.

A code or data descriptor (Intel SDM vol. 3A, 3.4.5 "Segment Descriptors", figure 3-8)
packs base (32 bits), limit (20 bits, in bytes or 4 KiB units by G), type (4 bits), S,
DPL, P, AVL, L, D/B and G. ``Descriptor.limit`` is always in bytes, as the processor
uses it (and as struct kvm_segment holds it): with G set the 20-bit field f stands for
``(f << 12) | 0xFFF``. Only legacy 8-byte descriptors are handled; 16-byte system
descriptors of long mode (TSS, LDT, call gates) are not.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

TYPE_ACCESSED: Final = 1 << 0
TYPE_CODE: Final = 1 << 3  #: with S = 1: a code segment (else data)
TYPE_CODE_READABLE: Final = 1 << 1
TYPE_CODE_CONFORMING: Final = 1 << 2
TYPE_DATA_WRITABLE: Final = 1 << 1
TYPE_DATA_EXPAND_DOWN: Final = 1 << 2
#: With S = 0: a 32-bit TSS, busy (SDM 3A, table 3-2).
TYPE_TSS32_BUSY: Final = 0xB


@dataclass(frozen=True)
class Descriptor:
    base: int
    limit: int  #: in bytes: the last valid offset
    type: int
    s: int  #: 1: code or data; 0: system
    dpl: int
    present: int
    avl: int = 0
    l: int = 0  # noqa: E741 - the SDM's name
    db: int = 0
    g: int = 0

    def encode(self) -> int:
        """The 8-byte descriptor. The limit must be expressible with the given G."""
        if self.g:
            if self.limit & 0xFFF != 0xFFF or self.limit >> 12 > 0xFFFFF:
                raise ValueError(f"limit {self.limit:#x} is not expressible in 4 KiB units")
            field = self.limit >> 12
        else:
            if self.limit > 0xFFFFF:
                raise ValueError(f"limit {self.limit:#x} needs G = 1")
            field = self.limit
        if not 0 <= self.base <= 0xFFFF_FFFF:
            raise ValueError(f"base {self.base:#x} does not fit 32 bits")
        access = ((self.type & 0xF) | (self.s & 1) << 4 | (self.dpl & 3) << 5
                  | (self.present & 1) << 7)
        flags = (self.avl & 1) | (self.l & 1) << 1 | (self.db & 1) << 2 | (self.g & 1) << 3
        return ((field & 0xFFFF) | (self.base & 0xFFFFFF) << 16 | access << 40
                | (field >> 16) << 48 | flags << 52 | (self.base >> 24) << 56)

    @classmethod
    def decode(cls, raw: int) -> Descriptor:
        field = (raw & 0xFFFF) | ((raw >> 48) & 0xF) << 16
        base = ((raw >> 16) & 0xFFFFFF) | ((raw >> 56) & 0xFF) << 24
        access = (raw >> 40) & 0xFF
        flags = (raw >> 52) & 0xF
        g = (flags >> 3) & 1
        return cls(base=base, limit=(field << 12) | 0xFFF if g else field, type=access & 0xF,
                   s=(access >> 4) & 1, dpl=(access >> 5) & 3, present=access >> 7,
                   avl=flags & 1, l=(flags >> 1) & 1, db=(flags >> 2) & 1, g=g)

    @property
    def is_code(self) -> bool:
        return bool(self.s and self.type & TYPE_CODE)

    @property
    def is_writable_data(self) -> bool:
        return bool(self.s and not self.type & TYPE_CODE and self.type & TYPE_DATA_WRITABLE)


#: The flat 32-bit segments of the PVH entry state (base 0, limit 4 GiB - 1).
FLAT_CODE32: Final = Descriptor(base=0, limit=0xFFFF_FFFF, type=0xB, s=1, dpl=0, present=1,
                                db=1, g=1)
FLAT_DATA32: Final = Descriptor(base=0, limit=0xFFFF_FFFF, type=0x3, s=1, dpl=0, present=1,
                                db=1, g=1)
