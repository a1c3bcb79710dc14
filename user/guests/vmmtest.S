/*
 * vmmtest: a guest for copra's user-mode VMM interface (VCPU_RUN and the run page),
 * driven by the `vmm-test` program. The VMM picks what it does by setting %esi (and
 * %edi, a count) through the run page before the first VCPU_RUN:
 *
 *   0  the exit tour, each step answered by the VMM and checked by the guest:
 *        out 0x80 <- 0x11                     (port write)
 *        in  0x81 -> the VMM answers 0x5a, echoed with out 0x82
 *        rdmsr 0x40000200 (claimed) -> the VMM answers 0x0123456789abcdef, echoed to
 *                                      ports 0x83 (eax) and 0x84 (edx)
 *        wrmsr 0x40000200 <- eax+1         (claimed: the VMM sees the value)
 *        x2APIC on (kernel-owned APIC_BASE), rdmsr 0x802 (its ID, kernel-owned) -> out 0x85
 *        rdmsr 0x40000300 (unclaimed, unknown) -> #GP in the guest, its handler outs 0x86
 *        mov 0xc0000000 (outside RAM) -> MMIO read, the VMM answers; out 0x87
 *        guest RAM: out 0x88 <- the word the VMM wrote at 0x3ff000 through VM_MEMORY,
 *                   and 0x600dcafe stored at 0x3ff004 for the VMM to read
 *        hlt                                   (the VMM resumes it)
 *      then exits with 0 through port 0xf4 (the console line "tour done" first)
 *   1  %edi times rdmsr 0x40000200 (claimed: forwarded to user mode), then exit
 *   2  %edi times rdmsr 0x803 (the x2APIC version, kernel-owned), then exit
 *   3  %edi times out 0x80 (forwarded to user mode), then exit
 *   4  triple fault (an exception with an empty IDT)
 *   5  spin forever at CPL0, no exits
 *   6  the device tour, ports and MMIO served by a device model's events:
 *        in 0x81 (device: 0x77) echoed with out 0x82; mov 0xc0000000 (device:
 *        0xabcd1234) echoed with out 0x87; movl 0x5555 -> 0xc0000010 (device sees it);
 *        in 0x81 again (the device model goes away: all ones) echoed with out 0x82
 */
#include "common.S"

#define CLAIMED     0x40000200
#define UNCLAIMED   0x40000300
#define APIC_BASE   0x1b
#define X2APIC_ID   0x802
#define X2APIC_VER  0x803

    .text
main:
    cmp $1, %esi
    je bench_claimed
    cmp $2, %esi
    je bench_kernel
    cmp $3, %esi
    je bench_out
    cmp $4, %esi
    je triple
    cmp $5, %esi
    je spin
    cmp $6, %esi
    je devices

tour:
    mov $0x11, %al
    out %al, $0x80
    in $0x81, %al
    out %al, $0x82
    mov $CLAIMED, %ecx
    rdmsr
    out %eax, $0x83
    mov %edx, %eax
    out %eax, $0x84
    mov $CLAIMED, %ecx
    rdmsr
    add $1, %eax
    wrmsr
    call x2apic_on
    mov $X2APIC_ID, %ecx
    rdmsr
    out %eax, $0x85
    /* #GP from an unclaimed unknown MSR: the handler continues at after_gp. */
    call load_gdt
    mov $13, %eax
    mov $gp_handler, %edx
    call set_gate
    call load_idt
    mov %esp, saved_esp
    mov $UNCLAIMED, %ecx
    rdmsr
    mov $0xbad, %eax            /* not reached: rdmsr raised #GP */
    out %eax, $0x86
after_gp:
    mov 0xc0000000, %eax
    out %eax, $0x87
    mov 0x3ff000, %eax
    out %eax, $0x88
    movl $0x600dcafe, 0x3ff004
    hlt
    print "tour done\n"
    xor %eax, %eax
    ret

gp_handler:
    mov saved_esp, %esp         /* drop the frame: continue, not return */
    mov $0x0d, %eax
    out %eax, $0x86
    jmp after_gp

x2apic_on:
    mov $APIC_BASE, %ecx
    rdmsr
    or $0xc00, %eax             /* EN | EXTD */
    wrmsr
    ret

bench_claimed:
    mov $CLAIMED, %ecx
1:  rdmsr
    dec %edi
    jnz 1b
    xor %eax, %eax
    ret

bench_kernel:
    call x2apic_on
    mov $X2APIC_VER, %ecx
1:  rdmsr
    dec %edi
    jnz 1b
    xor %eax, %eax
    ret

bench_out:
1:  out %al, $0x80
    dec %edi
    jnz 1b
    xor %eax, %eax
    ret

devices:
    in $0x81, %al
    out %al, $0x82
    mov 0xc0000000, %eax
    out %eax, $0x87
    movl $0x5555, 0xc0000010
    in $0x81, %al
    out %al, $0x82
    xor %eax, %eax
    ret

triple:
    lidt empty_idt
    ud2

spin:
    jmp spin

    .data
saved_esp:
    .long 0

    .section .rodata
    .balign 8
empty_idt:
    .word 0
    .long 0
