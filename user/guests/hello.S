/*
 * hello: the PVH boot and the console, checked from inside the guest.
 *
 * Prints the start info's version, the command line and the top of RAM from the
 * memory map (rounded up to a MiB, so the reserved pages a BIOS keeps at the top
 * change nothing), then exercises the 16550's registers the way drivers probe them
 * (scratch register, divisor latch, the register values after set-up, loopback) and
 * exits with 42 (status 85). The same lines must come out under QEMU.
 */
#include "common.S"

    .text
main:
    print "hello from a PVH guest\n"
    mov start_info, %ebx
    cmpl $0x336ec578, (%ebx)
    je 1f
    print "bad start info magic\n"
    mov $0x7f, %eax
    ret
1:  print "start info: version "
    mov 4(%ebx), %eax
    call put_dec
    call newline

    print "command line: "
    mov 24(%ebx), %esi
    test %esi, %esi
    jz 2f
    call puts
2:  call newline

    /* The highest end of a RAM (type 1) entry of the memory map. */
    mov 40(%ebx), %esi
    mov 48(%ebx), %ecx
    xor %edi, %edi
3:  test %ecx, %ecx
    jz 5f
    cmpl $1, 16(%esi)
    jne 4f
    mov (%esi), %eax
    add 8(%esi), %eax
    cmp %edi, %eax
    jbe 4f
    mov %eax, %edi
4:  add $24, %esi
    dec %ecx
    jmp 3b
5:  print "memory: "
    mov %edi, %eax
    add $0xfffff, %eax
    shr $20, %eax
    call put_dec
    print " MiB\n"

    /* Scratch register: what is written reads back. */
    mov $COM1 + 7, %dx
    mov $0x5a, %al
    out %al, %dx
    in %dx, %al
    print "uart scratch: "
    mov $2, %ecx
    call put_hex
    call newline

    /* Divisor latch: with DLAB set, offsets 0 and 1 are the divisor. */
    mov $COM1 + 3, %dx
    mov $0x83, %al
    out %al, %dx
    mov $COM1 + 1, %dx
    in %dx, %al
    shl $8, %eax
    mov $COM1 + 0, %dx
    in %dx, %al
    mov $COM1 + 3, %dx
    push %eax
    mov $0x03, %al
    out %al, %dx
    pop %eax
    print "uart divisor: "
    mov $4, %ecx
    call put_hex
    call newline

    /* The registers after set-up. */
    print "uart: iir="
    mov $COM1 + 2, %dx
    call show_reg
    print " lcr="
    mov $COM1 + 3, %dx
    call show_reg
    print " mcr="
    mov $COM1 + 4, %dx
    call show_reg
    print " lsr="
    mov $COM1 + 5, %dx
    call show_reg
    print " msr="
    mov $COM1 + 6, %dx
    call show_reg
    call newline

    /* Loopback: a byte sent comes back on the receive side; MSR mirrors MCR.
     * Nothing can be printed in loopback mode (it would loop back too): the
     * values are read into %bl, %bh, %cl, %ch first. */
    mov $COM1 + 4, %dx
    mov $0x1f, %al
    out %al, %dx
    mov $COM1, %dx
    mov $'Z', %al
    out %al, %dx
    mov $COM1 + 5, %dx
    in %dx, %al
    mov %al, %bl
    mov $COM1 + 0, %dx
    in %dx, %al
    mov %al, %bh
    mov $COM1 + 5, %dx
    in %dx, %al
    mov %al, %cl
    mov $COM1 + 6, %dx
    in %dx, %al
    mov %al, %ch
    mov $COM1 + 4, %dx
    mov $0x0b, %al
    out %al, %dx
    mov %ecx, %esi
    print "uart loopback: lsr="
    movzbl %bl, %eax
    mov $2, %ecx
    call put_hex
    print " rbr="
    movzbl %bh, %eax
    call put_hex
    print " lsr="
    mov %esi, %eax
    and $0xff, %eax
    call put_hex
    print " msr="
    mov %esi, %eax
    shr $8, %eax
    and $0xff, %eax
    call put_hex
    call newline

    print "bye\n"
    mov $42, %eax
    ret

/* show_reg: print the byte read from port %dx as two hex digits. */
show_reg:
    push %eax
    push %ecx
    xor %eax, %eax
    in %dx, %al
    mov $2, %ecx
    call put_hex
    pop %ecx
    pop %eax
    ret
