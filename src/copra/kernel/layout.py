"""The kernel image: where copra's ring-0 structures sit in the SVSM's physical memory.

Guest-physical layout (the kernel half maps [0, KERNEL_REGION) at KERNEL_BASE, no U bit)::

    0x0000  null page        never mapped
    0x1000  GDT              null, kernel code/data, user data/code (DPL 3), then one
                             64-bit TSS descriptor (two slots) per CPU
    0x2000  IDT              256 gates; vectors 0-31 DPL 0 (3 for #BP), 0x80 DPL 3
    0x3000  entry stubs      one 16-byte stub per gate: [push 0]; out STUB_PORT(v), al; hlt
    0x3400  zap stub         rewrites page-table entries from ring 0 (``zap_code``), so
                             that KVM's shadow MMU sees the write and drops what it
                             derived from them (docs/architecture.md)
    0x4000  per-CPU areas    MAX_CPUS blocks of PERCPU_SIZE, CPU i's at percpu_pa(i):
              +0x0000          its TSS: RSP0 and an I/O bitmap allowing only
                               spec.DOORBELL_PORT (104 + 8192 + 1 bytes, three pages)
              +0x3000          its kernel stack page: RSP0 for every exception taken at
                               CPL3 on that CPU, so the hardware frame the stub leaves
                               (error code, RIP, CS, RFLAGS, RSP, SS) is that CPU's own;
                               its low ZAP_LIST_BYTES hold the zap stub's work list
    0x24000 kernel PDPT, PD, PT, then the frame allocator's pool (KERNEL_REGION)

The kernel PT's slot WINDOW_SLOT + i is CPU i's window: the zap stub points it at the
page-table frame it rewrites (a supervisor, non-executable mapping of one page).

The image is laid out for MAX_CPUS whatever number of vCPUs a boot creates: the
launch layout does not depend on ``--cpus``. Stubs are shared (they are code and
the same on every CPU); everything a CPU writes in ring 0 is in its own area.

Invariants: every address here is page-aligned, below KERNEL_REGION, and the areas
are pairwise disjoint (``tests/unit/test_layout.py``). Nothing here is mutable.
"""

from __future__ import annotations

from typing import Final

from copra.abi.spec import PAGE_SIZE, SYSCALL_VECTOR
from copra.hw import x86

KERNEL_BASE: Final = 0xFFFF_FF80_0000_0000  # PML4 slot 511
KERNEL_PML4_SLOT: Final = 511
#: The most vCPUs one SVSM has (``copra run --cpus`` is capped here).
MAX_CPUS: Final = 8
GDT_PA: Final = 0x1000
IDT_PA: Final = 0x2000
STUB_PA: Final = 0x3000
PERCPU_PA: Final = 0x4000
PERCPU_SIZE: Final = 0x4000
TSS_OFFSET: Final = 0  # within a CPU's area
KSTACK_OFFSET: Final = 0x3000  # within a CPU's area: one page
KERNEL_PDPT_PA: Final = PERCPU_PA + MAX_CPUS * PERCPU_SIZE
KERNEL_PD_PA: Final = KERNEL_PDPT_PA + PAGE_SIZE
KERNEL_PT_PA: Final = KERNEL_PD_PA + PAGE_SIZE
KERNEL_REGION: Final = KERNEL_PT_PA + PAGE_SIZE  # frames below this are the kernel image
STUB_SIZE: Final = 16
EXCEPTION_PORT_BASE: Final = 0xA0  # stub of vector v (< 32) writes port 0xA0 + v
GATE80_PORT: Final = 0xDF
ZAP_STUB_PA: Final = STUB_PA + 0x400
ZAP_PORT: Final = 0xDE  #: the zap stub's ``out`` (ring 0 only: the TSS bitmap denies CPL3)
#: The zap stub's work list at the bottom of each CPU's kernel stack page: entries of
#: three u64 (window PTE, address in the window, count); exception frames use its top.
ZAP_ENTRY_BYTES: Final = 24
ZAP_LIST_ENTRIES: Final = 128
ZAP_LIST_BYTES: Final = ZAP_ENTRY_BYTES * ZAP_LIST_ENTRIES
#: The first kernel-PT slot used as a per-CPU window (beyond the image's own pages).
WINDOW_SLOT: Final = 256
#: MSR_LSTAR: the kernel half's first page, never mapped (a SYSCALL lands there on PVM).
SYSCALL_LANDING: Final = KERNEL_BASE
#: The limit of every CPU's TSS segment: the TSS, its I/O bitmap and the final 0xFF.
TSS_LIMIT: Final = x86.TSS_SIZE + x86.IO_BITMAP_BYTES
#: GDT slots: five segment descriptors, then two per CPU's TSS.
GDT_SLOTS: Final = 5 + 2 * MAX_CPUS

assert TSS_LIMIT < KSTACK_OFFSET and KSTACK_OFFSET + PAGE_SIZE == PERCPU_SIZE
assert ZAP_LIST_BYTES <= PAGE_SIZE - 512  # the top of the stack page stays for frames
assert KERNEL_REGION <= WINDOW_SLOT * PAGE_SIZE and WINDOW_SLOT + MAX_CPUS <= 512
assert GDT_SLOTS * 8 <= PAGE_SIZE and KERNEL_REGION <= 512 * PAGE_SIZE  # one PT maps it


def percpu_pa(cpu: int) -> int:
    if not 0 <= cpu < MAX_CPUS:
        raise ValueError(f"CPU {cpu} is outside 0..{MAX_CPUS - 1}")
    return PERCPU_PA + cpu * PERCPU_SIZE


def tss_pa(cpu: int) -> int:
    return percpu_pa(cpu) + TSS_OFFSET


def kstack_pa(cpu: int) -> int:
    """The first byte of CPU ``cpu``'s kernel stack page."""
    return percpu_pa(cpu) + KSTACK_OFFSET


def kstack_top_pa(cpu: int) -> int:
    return kstack_pa(cpu) + PAGE_SIZE


def tss_selector(cpu: int) -> int:
    """The GDT selector of CPU ``cpu``'s TSS descriptor (after the five segments)."""
    return x86.SEL_TSS + 16 * cpu


def stub_vectors() -> list[int]:
    return [*range(32), SYSCALL_VECTOR]


def stub_port(vector: int) -> int:
    return GATE80_PORT if vector == SYSCALL_VECTOR else EXCEPTION_PORT_BASE + vector


def stub_code(vector: int) -> bytes:
    """The ring-0 entry stub of one vector: at most three instructions."""
    code = b"" if vector in x86.VECTORS_WITH_ERROR_CODE else b"\x6a\x00"  # push 0
    code += bytes((0xE6, stub_port(vector)))  # out port, al
    code += b"\xf4"  # hlt: never reached, Python resumes at CPL3
    assert len(code) <= STUB_SIZE
    return code


def window_va(cpu: int) -> int:
    """The kernel-half address of CPU ``cpu``'s window page (kernel PT slot WINDOW_SLOT + cpu)."""
    return KERNEL_BASE + (WINDOW_SLOT + percpu_index(cpu)) * PAGE_SIZE


def window_pte_va(cpu: int) -> int:
    """The kernel-half address of the kernel-PT entry that maps CPU ``cpu``'s window."""
    return KERNEL_BASE + KERNEL_PT_PA + (WINDOW_SLOT + percpu_index(cpu)) * 8


def percpu_index(cpu: int) -> int:
    if not 0 <= cpu < MAX_CPUS:
        raise ValueError(f"CPU {cpu} is outside 0..{MAX_CPUS - 1}")
    return cpu


def zap_code() -> bytes:
    """The zap stub, run at CPL0 with rsi = its work list, rdx = entries (>= 1) and
    rbx = the address of this CPU's window PTE. For each entry (window PTE value,
    address in the window, count) it maps the window at a page-table frame, then
    writes zeros over ``count`` entries (already zero: the host cleared them) or, with
    count 0, rewrites the table's first two bytes with themselves. Either is a guest
    write to a page table KVM's shadow MMU write-protects: it drops the shadow entries
    written (a two-byte write it treats as misaligned: the whole shadow page) and
    flushes every vCPU's TLB. Then ``out ZAP_PORT`` exits; nothing returns through
    ring 0 (Python resumes the user context)."""
    code = bytes.fromhex(
        "488b0e"      # next: mov rcx, [rsi]      window PTE value
        "48890b"      #       mov [rbx], rcx      map the window at the table
        "488b7e08"    #       mov rdi, [rsi+8]    address in the window
        "0f013f"      #       invlpg [rdi]        (where ring 0 runs natively)
        "488b4e10"    #       mov rcx, [rsi+16]   count
        "4885c9"      #       test rcx, rcx
        "7407"        #       jz whole
        "31c0"        #       xor eax, eax
        "f348ab"      #       rep stosq
        "eb06"        #       jmp step
        "668b07"      # whole: mov ax, [rdi]
        "668907"      #        mov [rdi], ax
        "4883c618"    # step: add rsi, 24
        "48ffca"      #       dec rdx
        "75d4"        #       jnz next
    ) + bytes((0xE6, ZAP_PORT, 0xF4))  # out ZAP_PORT, al; hlt
    return code


def zap_exit_rip() -> int:
    """The RIP the zap stub's ``out`` leaves (its ``hlt``)."""
    return KERNEL_BASE + ZAP_STUB_PA + len(zap_code()) - 1


def stub_exit_rips() -> dict[int, int]:
    """Port -> the RIP a stub's ``out`` to it leaves (the ``hlt`` after it)."""
    return {
        stub_port(v): KERNEL_BASE + STUB_PA + i * STUB_SIZE + len(stub_code(v)) - 1
        for i, v in enumerate(stub_vectors())
    }


def port_vectors() -> dict[int, int]:
    return {stub_port(v): v for v in stub_vectors()}


assert STUB_PA + len(stub_vectors()) * STUB_SIZE <= ZAP_STUB_PA
assert ZAP_STUB_PA + len(zap_code()) <= STUB_PA + PAGE_SIZE
