/*
 * bench: exit-heavy loops for bench/guest_exits.py, chosen by the command line.
 *
 *   out      20000 one-byte writes to port 0x80 (nobody claims it), then exit 0
 *   uart     200 lines of 79 characters through the polled console (putc waits for
 *            LSR.THRE before each byte, as a driver does: two exits per byte)
 *   thr      the same bytes written straight to THR, unpolled (one exit per byte)
 *   forever  port 0x80 writes without end (the benchmark drives KVM_RUN itself)
 */
#include "common.S"

#define OUT_COUNT   20000
#define LINES       200
#define LINE_LENGTH 79

    .text
main:
    mov start_info, %ebx
    mov 24(%ebx), %esi
    movl (%esi), %eax
    cmp $0x0074756f, %eax       /* "out\0" */
    je bench_out
    cmp $0x74726175, %eax       /* "uart" */
    je bench_uart
    and $0xffffff, %eax
    cmp $0x726874, %eax         /* "thr" */
    je bench_thr
    cmp $0x65726f66, (%esi)     /* "fore(ver)" */
    je bench_forever
    print "unknown bench\n"
    mov $0x7f, %eax
    ret

bench_out:
    mov $OUT_COUNT, %ecx
1:  out %al, $0x80
    dec %ecx
    jnz 1b
    xor %eax, %eax
    ret

bench_uart:
    mov $LINES, %ebx
1:  mov $LINE_LENGTH, %ecx
    mov $'x', %al
2:  call putc
    dec %ecx
    jnz 2b
    mov $'\n', %al
    call putc
    dec %ebx
    jnz 1b
    xor %eax, %eax
    ret

bench_thr:
    mov $COM1, %dx
    mov $LINES, %ebx
1:  mov $LINE_LENGTH, %ecx
    mov $'x', %al
2:  out %al, %dx
    dec %ecx
    jnz 2b
    mov $'\n', %al
    out %al, %dx
    dec %ebx
    jnz 1b
    xor %eax, %eax
    ret

bench_forever:
1:  out %al, $0x80
    jmp 1b
