/*
 * irqtest: the guest of the `irq-test` VMM (user/testprogs/src/bin/irq-test.rs): takes
 * interrupts at vector 0x30 from an IRQ object or its APIC timer.
 *
 * The VMM sets %esi (mode) and %edi (count) before the first VCPU_RUN:
 *   0  wait in `sti; hlt` until %edi interrupts have been taken;
 *   1  the same, spinning at CPL0 with IF set instead of halting;
 *   3  the same, spinning at CPL3 (entered with IRET; natively run on PVM hosts);
 *   2  the APIC timer, periodic, vector 0x30, initial count %edi (ns at the 1 GHz
 *      APIC clock, divide by 1), until 1000 interrupts, with a handler that only
 *      counts, EOIs and returns.
 * In modes 0 and 1 the handler's first instruction is `out %al, $0x80` (benchmarks time
 * it); then it counts, EOIs and returns with IRET. Ends with 0x11 (status 0x23) through port 0xf4.
 * No console: nothing here needs a UART.
 */
#include "common.S"

#define VECTOR 0x30

    .text
main:
    mov $0xff, %al
    out %al, $0x21
    out %al, $0xa1
    call load_gdt
    mov $VECTOR, %eax
    mov $handler, %edx
    call set_gate
    call load_idt
    mov $0x1b, %ecx                     /* x2APIC mode, software enabled */
    rdmsr
    or $0xc00, %eax
    wrmsr
    mov $0x80f, %ecx
    mov $0x1ff, %eax
    xor %edx, %edx
    wrmsr
    out %al, $0x81                      /* ready */
    cmp $1, %esi
    je spin
    cmp $3, %esi
    je user_spin
    cmp $2, %esi
    jne halt
    mov $VECTOR, %eax                   /* the quiet handler: no exit of its own */
    mov $tick_handler, %edx
    call set_gate
    call load_idt
    xor %edx, %edx
    mov $0x83e, %ecx                    /* timer: divide by 1, periodic */
    mov $0xb, %eax
    wrmsr
    mov $0x832, %ecx
    mov $VECTOR | (1 << 17), %eax
    wrmsr
    mov $0x838, %ecx
    mov %edi, %eax
    wrmsr
    mov $1000, %edi
halt:
    sti
    hlt
    cli
    cmp count, %edi
    ja halt
    jmp done
spin:
    sti
1:  cmp count, %edi
    ja 1b
    cli
user_spin:
    /* The interrupts come in at CPL3: the CPU switches to SS0:ESP0 of the TSS that TR
     * still caches from the PVH entry (base 0, docs/guests.md). */
    movl $stack_top, 4
    movl $SEL_DATA, 8
    push $SEL_DATA3
    push $user_stack_top
    pushf
    orl $0x3200, (%esp)                 /* IOPL 3 (the exit port), IF */
    push $SEL_CODE3
    push $1f
    iret
1:  mov $SEL_DATA3, %ax
    mov %ax, %ds
    mov %ax, %es
2:  cmp count, %edi
    ja 2b
    mov $0x11, %al
    out %al, $0xf4
done:
    mov $0x838, %ecx                    /* stop the timer */
    xor %eax, %eax
    xor %edx, %edx
    wrmsr
    mov $0x11, %eax
    ret

tick_handler:
    incl count
    jmp 1f
handler:
    out %al, $0x80
    incl count
1:
    push %eax
    push %ecx
    push %edx
    mov $0x80b, %ecx
    xor %eax, %eax
    xor %edx, %edx
    wrmsr
    pop %edx
    pop %ecx
    pop %eax
    iret

    .data
count:
    .long 0
