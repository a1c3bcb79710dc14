/*
 * apic: an interrupt-driven guest of the kernel's x2APIC (docs/apic.md).
 *
 * Enables x2APIC mode, then, each time waiting in `sti; hlt` (the vCPU sleeps in the
 * SVSM until an interrupt is pending) for its handler, which ends with EOI and IRET:
 *   1. a self IPI (SELF IPI register, vector 0x41);
 *   2. the APIC timer in one-shot mode (1 ms), vector 0x40;
 *   3. the timer in periodic mode (200 us) until 10 ticks, then stopped;
 *   4. the timer in TSC-deadline mode (RDTSC + 1 ms);
 *   5. two NMI IPIs to itself, one after the other's handler has returned (the SVSM
 *      completes the handler's IRET, and so must end NMI blocking);
 *   6. bad accesses: a reserved ICR bit and a reserved register (#GP, counted by the
 *      #GP handler, which skips the 2-byte WRMSR/RDMSR), an IPI with the illegal
 *      vector 5 (no delivery; ESR send and receive illegal vector, and the LVT error
 *      interrupt at vector 0x42).
 * Prints what it saw, exits with 0x11 (status 0x23). Under QEMU+KVM on PVM hosts the
 * IRETs stop it (emulation failure); copra completes them.
 */
#include "common.S"

#define V_TIMER 0x40
#define V_SELF  0x41
#define V_ERROR 0x42

/* wrmsr_imm msr, value: WRMSR of a 32-bit value (edx = 0); clobbers eax, ecx, edx. */
.macro wrmsr_imm msr, value
    mov $\msr, %ecx
    mov $\value, %eax
    xor %edx, %edx
    wrmsr
.endm

/* wait_for counter, n: sleep in `sti; hlt` until the counter reaches n (checked with
 * interrupts off; `sti; hlt` takes no interrupt between the two). */
.macro wait_for counter, n
1:  cli
    cmpl $\n, \counter
    jae 2f
    sti
    hlt
    jmp 1b
2:  sti
.endm

    .text
main:
    mov $0xff, %al          /* mask the legacy 8259 PICs (QEMU has them) */
    out %al, $0x21
    out %al, $0xa1
    call load_gdt
    mov $V_TIMER, %eax
    mov $timer_handler, %edx
    call set_gate
    mov $V_SELF, %eax
    mov $self_handler, %edx
    call set_gate
    mov $V_ERROR, %eax
    mov $error_handler, %edx
    call set_gate
    mov $13, %eax
    mov $gp_handler, %edx
    call set_gate
    mov $2, %eax
    mov $nmi_handler, %edx
    call set_gate
    call load_idt

    /* x2APIC mode: IA32_APIC_BASE |= EN | EXTD; software enable, spurious 0xff. */
    mov $0x1b, %ecx
    rdmsr
    or $0xc00, %eax
    wrmsr
    wrmsr_imm 0x80f, 0x1ff
    mov $0x802, %ecx
    rdmsr
    print "apic: x2APIC id "
    call put_dec
    call newline

    /* 1. self IPI */
    wrmsr_imm 0x83f, V_SELF
    wait_for selfs, 1
    print "apic: self IPI taken\n"

    /* 2. one-shot timer, divide by 1, 1 ms at the 1 GHz APIC clock */
    wrmsr_imm 0x83e, 0xb
    wrmsr_imm 0x832, V_TIMER
    wrmsr_imm 0x838, 1000000
    wait_for ticks, 1
    print "apic: one-shot timer fired\n"

    /* 3. periodic, 200 us, ten ticks, then stopped */
    wrmsr_imm 0x832, V_TIMER | (1 << 17)
    wrmsr_imm 0x838, 200000
    wait_for ticks, 11
    wrmsr_imm 0x838, 0
    print "apic: periodic timer ticked 10 times\n"

    /* 4. TSC deadline, 1 ms worth of TSC ahead (the guest's TSC is its own clock) */
    wrmsr_imm 0x832, V_TIMER | (2 << 17)
    rdtsc
    add $1000000, %eax
    adc $0, %edx
    mov $0x6e0, %ecx
    wrmsr
    wait_for ticks, 12
    print "apic: TSC-deadline timer fired\n"

    /* 5. an NMI IPI to itself (physical destination 0; a shorthand may not carry NMI) */
    mov $0x830, %ecx
    mov $0x4400, %eax
    xor %edx, %edx
    wrmsr
    wait_for nmis, 1
    mov $0x830, %ecx
    mov $0x4400, %eax
    xor %edx, %edx
    wrmsr
    wait_for nmis, 2
    print "apic: 2 NMIs taken\n"

    /* 6. bad accesses */
    wrmsr_imm 0x837, V_ERROR            /* LVT error, unmasked */
    mov $0x830, %ecx                    /* ICR with reserved bit 13: #GP */
    mov $(V_SELF | (1 << 13)), %eax
    xor %edx, %edx
    wrmsr
    mov $0x80e, %ecx                    /* DFR does not exist in x2APIC mode: #GP */
    rdmsr
    mov $0x830, %ecx                    /* a fixed IPI with vector 5, to itself */
    mov $(5 | (1 << 18)), %eax
    xor %edx, %edx
    wrmsr
    wait_for errors, 1
    wrmsr_imm 0x828, 0                  /* latch the ESR, then read it */
    mov $0x828, %ecx
    rdmsr
    print "apic: ESR "
    mov $2, %ecx
    call put_hex
    print ", #GP "
    mov gps, %eax
    call put_dec
    print ", error interrupts "
    mov errors, %eax
    call put_dec
    call newline
    print "apic: done\n"
    mov $0x11, %eax
    ret

eoi:
    push %eax
    push %ecx
    push %edx
    wrmsr_imm 0x80b, 0
    pop %edx
    pop %ecx
    pop %eax
    ret

timer_handler:
    incl ticks
    call eoi
    iret

self_handler:
    incl selfs
    call eoi
    iret

error_handler:
    incl errors
    call eoi
    iret

nmi_handler:                /* no EOI for an NMI */
    incl nmis
    iret

gp_handler:                 /* skip the faulting 2-byte RDMSR/WRMSR */
    incl gps
    add $4, %esp            /* the error code */
    addl $2, (%esp)
    iret

    .data
ticks:
    .long 0
selfs:
    .long 0
errors:
    .long 0
gps:
    .long 0
nmis:
    .long 0
