/*
 * What every copra test guest kernel shares: the PVH entry note, the entry, a polled
 * COM1 console, its own GDT and IDT, and the exit through QEMU's isa-debug-exit port.
 *
 * Guests run at CPL0, which KVM emulates instruction by instruction on PVM hosts
 * (thousands of times slower than native): the code stays short and plain, with no
 * string instructions, no `loop`, no `int n` and no `iret` on the common path.
 *
 * Each guest includes this file and defines `main`, which the entry calls with the
 * console ready; main returns the exit value in %eax, written to port 0xF4 (the
 * VMM's exit status is then (value << 1) | 1). Routines preserve every register
 * they do not return in.
 */

#define COM1        0x3f8
#define DEBUG_EXIT  0xf4
#define SEL_CODE    0x08
#define SEL_DATA    0x10
#define SEL_CODE3   0x1b
#define SEL_DATA3   0x23

    .code32

    /* XEN_ELFNOTE_PHYS32_ENTRY: namesz 4, descsz 4, type 18, "Xen", the entry. */
    .pushsection .note.Xen, "a", @note
    .balign 4
    .long 4, 4, 18
    .asciz "Xen"
    .balign 4
    .long pvh_start
    .popsection

/* print "text": write a string literal to the console. */
.macro print text
    .pushsection .rodata
.Lstr\@: .asciz "\text"
    .popsection
    push %esi
    mov $.Lstr\@, %esi
    call puts
    pop %esi
.endm

    .section .text.boot, "ax"
    .globl pvh_start
pvh_start:
    /* PVH: 32-bit protected mode, paging off, %ebx = hvm_start_info. */
    mov $stack_top, %esp
    mov %ebx, start_info
    call uart_init
    call main
exit_with:
    mov $DEBUG_EXIT, %dx
    out %al, %dx
1:  cli
    hlt
    jmp 1b

    .text
/* Program COM1 the way a driver does: 8N1, divisor 1, FIFOs on, DTR/RTS/OUT2. */
uart_init:
    push %eax
    push %edx
    mov $COM1 + 1, %dx      /* IER: no interrupts */
    mov $0x00, %al
    out %al, %dx
    mov $COM1 + 3, %dx      /* LCR: DLAB */
    mov $0x80, %al
    out %al, %dx
    mov $COM1 + 0, %dx      /* DLL */
    mov $0x01, %al
    out %al, %dx
    mov $COM1 + 1, %dx      /* DLM */
    mov $0x00, %al
    out %al, %dx
    mov $COM1 + 3, %dx      /* LCR: 8 bits, no parity, 1 stop bit */
    mov $0x03, %al
    out %al, %dx
    mov $COM1 + 2, %dx      /* FCR: enable and clear the FIFOs */
    mov $0xc7, %al
    out %al, %dx
    mov $COM1 + 4, %dx      /* MCR: DTR, RTS, OUT2 */
    mov $0x0b, %al
    out %al, %dx
    pop %edx
    pop %eax
    ret

/* putc: send %al once the transmitter holding register is empty (LSR bit 5). */
putc:
    push %edx
    push %eax
    mov $COM1 + 5, %dx
1:  in %dx, %al
    test $0x20, %al
    jz 1b
    pop %eax
    mov $COM1, %dx
    out %al, %dx
    pop %edx
    ret

/* puts: the NUL-terminated string at %esi. */
puts:
    push %esi
    push %eax
1:  movb (%esi), %al
    test %al, %al
    jz 2f
    call putc
    inc %esi
    jmp 1b
2:  pop %eax
    pop %esi
    ret

newline:
    push %eax
    mov $'\n', %al
    call putc
    pop %eax
    ret

/* put_hex: the low %ecx (1-8) hex digits of %eax. */
put_hex:
    push %eax
    push %ebx
    push %ecx
    push %edx
    mov %eax, %edx
1:  dec %ecx
    js 2f
    mov %edx, %eax
    mov %ecx, %ebx
    shl $2, %ecx
    shr %cl, %eax
    mov %ebx, %ecx
    and $0xf, %eax
    movb hex_digits(%eax), %al
    call putc
    jmp 1b
2:  pop %edx
    pop %ecx
    pop %ebx
    pop %eax
    ret

/* put_dec: %eax in decimal. */
put_dec:
    push %esi
    push %edi
    sub $12, %esp                       /* 10 digits at most, and the NUL */
    mov %esp, %edi
    call fmt_dec
    mov %esp, %esi
    call puts
    add $12, %esp
    pop %edi
    pop %esi
    ret

/* fmt_dec: %eax in decimal at %edi, NUL-terminated (at most 11 bytes). */
fmt_dec:
    push %eax
    push %ebx
    push %ecx
    push %edx
    push %edi
    mov $10, %ebx
    xor %ecx, %ecx
1:  xor %edx, %edx
    div %ebx
    push %edx
    inc %ecx
    test %eax, %eax
    jnz 1b
2:  pop %eax
    add $'0', %al
    movb %al, (%edi)
    inc %edi
    dec %ecx
    jnz 2b
    movb $0, (%edi)
    pop %edi
    pop %edx
    pop %ecx
    pop %ebx
    pop %eax
    ret

/* load_gdt: this guest's own flat GDT (the loader's is not ours to keep): kernel code
 * and data, user (DPL 3) code and data; reloads every segment register. */
load_gdt:
    push %eax
    lgdt gdt_ptr
    ljmp $SEL_CODE, $1f
1:  mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %fs
    mov %ax, %gs
    mov %ax, %ss
    pop %eax
    ret

/* set_gate: IDT entry %eax -> handler %edx, a 32-bit interrupt gate (IF cleared). */
set_gate:
    push %ecx
    push %edx
    lea idt(,%eax,8), %ecx
    mov %dx, (%ecx)
    movw $SEL_CODE, 2(%ecx)
    movw $0x8e00, 4(%ecx)
    shr $16, %edx
    mov %dx, 6(%ecx)
    pop %edx
    pop %ecx
    ret

load_idt:
    lidt idt_ptr
    ret

    .section .rodata
hex_digits:
    .ascii "0123456789abcdef"
    .balign 8
gdt:
    .quad 0
    .quad 0x00cf9b000000ffff    /* 0x08: code, 32-bit, flat */
    .quad 0x00cf93000000ffff    /* 0x10: data, 32-bit, flat */
    .quad 0x00cffb000000ffff    /* 0x18: code, 32-bit, flat, DPL 3 */
    .quad 0x00cff3000000ffff    /* 0x20: data, 32-bit, flat, DPL 3 */
gdt_end:
gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt
idt_ptr:
    .word 256 * 8 - 1
    .long idt

    .bss
    .balign 16
user_stack:
    .skip 1024
user_stack_top:
start_info:
    .long 0
    .balign 8
idt:
    .skip 256 * 8
stack:
    .skip 4096
stack_top:
