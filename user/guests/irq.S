/*
 * irq: takes interrupts at vector 0x30 and returns from each with IRET.
 *
 * Loads its own GDT and IDT, then waits in `sti; hlt` until its handler has run
 * three times; the handler prints "tick N" and returns with `iret`. No device of a
 * PC raises vector 0x30: the VMM injects it (KVM_INTERRUPT). On PVM hosts KVM's
 * instruction emulator cannot run this guest's IRET (protected mode, CPL0), so the
 * VMM completes it. Exits with 3 (status 7).
 */
#include "common.S"

#define VECTOR 0x30

    .text
main:
    /* Mask the legacy 8259 PICs: a PC (QEMU's) has them, and their timer would
     * deliver IRQ 0 at a vector this guest has no gate for. */
    mov $0xff, %al
    out %al, $0x21
    out %al, $0xa1
    call load_gdt
    mov $VECTOR, %eax
    mov $handler, %edx
    call set_gate
    call load_idt
    print "irq: waiting for 3 interrupts\n"
1:  sti
    hlt
    cli
    cmpl $3, ticks
    jb 1b
    print "irq: done\n"
    mov $3, %eax
    ret

handler:
    push %eax
    incl ticks
    print "tick "
    mov ticks, %eax
    call put_dec
    call newline
    pop %eax
    iret

    .data
ticks:
    .long 0
