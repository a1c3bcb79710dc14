"""The launch measurement of a copra boot: what the emulated SNP firmware is shown.

SNP measures a guest page by page as the hypervisor feeds it in (SNP firmware ABI,
SNP_LAUNCH_UPDATE and PAGE_INFO; :class:`copra.hw.snp.LaunchMeasurement`). copra's
kernel is Python on the host, not pages in guest memory, so what stands for "the
image" is a fixed launch layout of two parts, measured as NORMAL pages in this order:

1. **The identity page** at GPA :data:`IDENTITY_GPA` (0x0, below the GDT): one 4 KiB
   page that names the kernel and the machine it is given (little-endian)::

       0x00  magic "COPRA-ID"                   8 bytes
       0x08  layout version (1)                 u32
       0x0C  reserved, 0                        u32
       0x10  SVSM memory size in bytes          u64
       0x18  boot archive size in bytes         u64
       0x20  archive base GPA                   u64
       0x28  version string length             u16
       0x2A  copra version string (UTF-8), then zeros to the end of the page

2. **The boot archive** (the PackIt bytes the RAM fs is populated from) at GPA
   :data:`ARCHIVE_GPA` (1 MiB), page by page in address order, the last page
   zero-padded, as if a loader had copied it there.

The chaining is SNP's: each page's PAGE_INFO carries the digest so far, so the
identity page binds every archive page measured after it, and the order and the GPAs
are part of the value. The identity page records the archive's exact length, so
trailing zero bytes, which would vanish in the padding of the last page, still change
the measurement.

Same version, memory size and archive bytes give the same digest; the archive is
deterministic for the same config and programs (:mod:`copra.kernel.image`). What is
*not* in it: the Python source of the kernel (only its version string: the host
computes the digest anyway, so a hash of the sources would prove nothing more), the
GDT/IDT/TSS and stubs the kernel builds (fixed by the version), and the run's
timeout. docs/attestation.md has the argument.

Stateless; safe from any thread.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Final

from copra import __version__
from copra.hw.snp import PAGE_SIZE, LaunchMeasurement, SnpFirmware, SnpGuest
from copra.kernel.svsm_vm import DEFAULT_MEMORY

IDENTITY_MAGIC: Final = b"COPRA-ID"
LAYOUT_VERSION: Final = 1
IDENTITY_GPA: Final = 0x0
ARCHIVE_GPA: Final = 0x10_0000
_IDENTITY: Final = struct.Struct("<8sIIQQQH")


def identity_page(archive_size: int, memory: int = DEFAULT_MEMORY,
                  version: str = __version__) -> bytes:
    """The 4 KiB identity page (layout in the module docstring)."""
    name = version.encode("utf-8")
    if _IDENTITY.size + len(name) > PAGE_SIZE:
        raise ValueError("the version string does not fit the identity page")
    if not 0 < memory < 1 << 64 or not 0 <= archive_size < 1 << 64:
        raise ValueError("memory and archive sizes are u64, memory > 0")
    head = _IDENTITY.pack(IDENTITY_MAGIC, LAYOUT_VERSION, 0, memory, archive_size,
                          ARCHIVE_GPA, len(name))
    return (head + name).ljust(PAGE_SIZE, b"\0")


def launch_pages(archive: bytes, memory: int = DEFAULT_MEMORY,
                 version: str = __version__) -> Iterator[tuple[int, bytes]]:
    """(GPA, data) pieces of a boot in measurement order; each is measured as NORMAL
    pages from its page-aligned GPA."""
    yield IDENTITY_GPA, identity_page(len(archive), memory, version)
    if archive:
        yield ARCHIVE_GPA, bytes(archive)


def measure_boot(archive: bytes, memory: int = DEFAULT_MEMORY,
                 version: str = __version__) -> bytes:
    """The 48-byte MEASUREMENT a boot of ``archive`` with ``memory`` bytes reports."""
    digest = LaunchMeasurement()
    for gpa, data in launch_pages(archive, memory, version):
        digest.update_data(gpa, data)
    return digest.digest


def launch_guest(firmware: SnpFirmware, archive: bytes, memory: int = DEFAULT_MEMORY,
                 version: str = __version__) -> SnpGuest:
    """Launch a guest on ``firmware``, measure the boot into it and finish the launch:
    the firmware-side twin of :func:`measure_boot` (same pages, same order)."""
    guest = firmware.launch_start()
    for gpa, data in launch_pages(archive, memory, version):
        guest.launch_update(gpa, data)
    guest.launch_finish()
    return guest
