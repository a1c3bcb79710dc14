/*
 * probe: one misbehaviour per run, chosen by the first word of the command line.
 *
 *   port    reads an I/O port nobody emulates (0x2e8) with in/inw/inl and prints the
 *           values; exits with 1
 *   gp      takes #GP from RDMSR of an MSR nobody implements (0x4b564d99 is not one),
 *           prints the vector and error code from its handler; exits with 2
 *   mmio    reads and writes guest-physical memory past its RAM (0xd0000000); exits 3
 *   iret    returns to itself with IRET from a frame it pushed; exits with 4
 *   user    enters its own CPL3 with IRET (IOPL 3, so ports stay usable there), prints
 *           its CPL from CPL3; exits with 5 from CPL3
 *   popcnt  runs POPCNT at CPL0, which KVM's instruction emulator lacks: on PVM hosts the
 *           guest stops there; elsewhere it prints "popcnt 8" and exits with 6
 *   triple  raises #UD with an empty IDT: a triple fault
 *   halt    halts with interrupts disabled: nothing can wake it
 *   spin    spins forever at CPL0 without an exit
 *
 * Anything else prints "unknown probe" and exits with 0x7f.
 */
#include "common.S"

#define UNCLAIMED_PORT  0x2e8
#define UNKNOWN_MSR     0x4b564d99
#define BEYOND_RAM      0xd0000000

    .text
main:
    mov start_info, %ebx
    mov 24(%ebx), %esi
    print "probe: "
    call puts
    call newline
    movl (%esi), %eax
    cmp $0x74726f70, %eax       /* "port" */
    je probe_port
    cmp $0x6f696d6d, %eax       /* "mmio" */
    je probe_mmio
    cmp $0x70697274, %eax       /* "trip" */
    je probe_triple
    cmp $0x746c6168, %eax       /* "halt" */
    je probe_halt
    cmp $0x6e697073, %eax       /* "spin" */
    je probe_spin
    cmp $0x74657269, %eax       /* "iret" */
    je probe_iret
    cmp $0x72657375, %eax       /* "user" */
    je probe_user
    cmp $0x63706f70, %eax       /* "popc(nt)" */
    je probe_popcnt
    and $0xffffff, %eax
    cmp $0x7067, %eax           /* "gp\0" */
    je probe_gp
    print "unknown probe\n"
    mov $0x7f, %eax
    ret

probe_port:
    mov $UNCLAIMED_PORT, %dx
    xor %eax, %eax
    in %dx, %al
    mov $2, %ecx
    print "inb "
    call put_hex
    in %dx, %ax
    mov $4, %ecx
    print " inw "
    call put_hex
    in %dx, %eax
    mov $8, %ecx
    print " inl "
    call put_hex
    call newline
    mov $1, %eax
    ret

probe_gp:
    call load_gdt
    mov $13, %eax
    mov $gp_handler, %edx
    call set_gate
    call load_idt
    mov $UNKNOWN_MSR, %ecx
    rdmsr
    print "rdmsr did not fault\n"
    mov $0x7e, %eax
    ret

gp_handler:
    print "#GP error code "
    pop %eax                    /* the error code */
    mov $4, %ecx
    call put_hex
    call newline
    mov $2, %eax
    jmp exit_with

probe_mmio:
    mov $BEYOND_RAM, %esi
    movl $0x12345678, (%esi)
    mov (%esi), %eax
    mov $8, %ecx
    print "mmio read "
    call put_hex
    call newline
    mov $3, %eax
    ret

probe_iret:
    call load_gdt
    pushf
    push %cs
    push $1f
    iret
1:  print "iret: back at the same level\n"
    mov $4, %eax
    ret

probe_user:
    call load_gdt
    push $SEL_DATA3
    push $user_stack_top
    pushf
    orl $0x3000, (%esp)         /* IOPL 3: CPL3 may use the console's ports */
    push $SEL_CODE3
    push $1f
    iret
1:  mov $SEL_DATA3, %ax         /* IRET nulled the kernel's data segments */
    mov %ax, %ds
    mov %ax, %es
    print "user: running at CPL "
    mov %cs, %eax
    and $3, %eax
    call put_dec
    call newline
    mov $5, %eax
    jmp exit_with

probe_popcnt:
    mov $0xf0f0, %eax
    popcnt %eax, %eax
    print "popcnt "
    call put_dec
    call newline
    mov $6, %eax
    ret

probe_triple:
    lidt empty_idt
    ud2

probe_halt:
    cli
    hlt
    print "woke from hlt\n"
    mov $0x7d, %eax
    ret

probe_spin:
    jmp probe_spin

    .section .rodata
empty_idt:
    .word 0
    .long 0
