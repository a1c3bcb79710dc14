/*
 * demo: an interrupt-driven guest kernel for the whole design (docs/apic.md).
 *
 * After one polled line it prints only through COM1's TX-empty interrupt (the UART's
 * device model asserts a level IRQ object at vector 0x24; the handler feeds THR from a
 * ring buffer and ends with EOI, which resamples the line), counts APIC timer ticks
 * (periodic, 1 ms, vector 0x40), takes a receive-data interrupt for a byte sent in
 * the UART's loopback mode, reads and writes the block device through its request ring
 * (completion interrupt at vector 0x25), starts vCPU 1 with INIT and a start-up IPI (real-mode
 * trampoline at 0x8000, vector 0x08) and exchanges IPIs with it: three pings
 * (vector 0x44 to APIC 1), each answered by a pong (0x43 to APIC 0) from the AP's
 * handler. Every handler returns with IRET, which the SVSM completes on PVM hosts.
 * With one vCPU it says so after 50 timer ticks. Last it takes host input: with
 * MCR.RTS set (RTS/CTS flow control: it is clear until then, so the uart model holds
 * host bytes back) and the receive-data interrupt on, it collects bytes until a newline,
 * until MSR.DCD is clear with the receiver empty (the host input ended), or until
 * INPUT_WAIT timer ticks pass without a byte (a terminal nobody types on, no host
 * input at all: DCD then stays set, as on QEMU), and prints "input: TEXT" if any came (at most
 * INPUT_MAX bytes are kept; CR is dropped). Exits with 0x15 (status 0x2b).
 *
 * Like Linux's 8250 backup timer, the timer handler looks after a transmitter whose
 * TX-empty interrupt does not come: after TX_STALL ticks with bytes queued and none
 * sent it feeds THR itself while LSR says THR is empty. So the guest runs to its end
 * when its UART's device model died (its ports then read all ones: THR always empty,
 * the bytes go nowhere) instead of sleeping forever; the timer stops only after the
 * last line is out.
 */
#include "common.S"

#define V_COM1  0x24
#define V_BLK   0x25
#define V_RTC   0x28            /* rtc */
#define BLK     0x6f0
#define V_TIMER 0x40
#define V_PONG  0x43
#define V_PING  0x44
#define TRAMPOLINE 0x8000
#define RING 256
#define INPUT_MAX 63
#define INPUT_WAIT 250
#define TX_STALL 20
#define RX_MAX 64
#define RX_WAIT 500

.macro wrmsr_imm msr, value
    mov $\msr, %ecx
    mov $\value, %eax
    xor %edx, %edx
    wrmsr
.endm

/* say "text": queue a string literal for the interrupt-driven console. */
.macro say text
    .pushsection .rodata
.Lsay\@: .asciz "\text"
    .popsection
    push %esi
    mov $.Lsay\@, %esi
    call tx_puts
    pop %esi
.endm

    .text
main:
    mov $0xff, %al          /* mask the legacy 8259 PICs */
    out %al, $0x21
    out %al, $0xa1
    call load_gdt
    mov $V_COM1, %eax
    mov $uart_handler, %edx
    call set_gate
    mov $V_TIMER, %eax
    mov $timer_handler, %edx
    call set_gate
    mov $V_BLK, %eax
    mov $blk_handler, %edx
    call set_gate
    mov $V_PONG, %eax
    mov $pong_handler, %edx
    call set_gate
    mov $V_PING, %eax
    mov $ping_handler, %edx
    call set_gate
    call load_idt
    call x2apic_on
    mov $COM1 + 4, %dx                  /* MCR: DTR, OUT2; RTS off: no host input yet */
    mov $0x09, %al
    out %al, %dx
    print "polled output ends here\n"

    say "console on TX-empty interrupts\n"
    wrmsr_imm 0x83e, 0xb                /* timer: divide by 1 */
    wrmsr_imm 0x832, V_TIMER | (1 << 17) /* periodic */
    wrmsr_imm 0x838, 1000000            /* 1 ms */
1:  cli
    cmpl $5, ticks
    jae 2f
    sti
    hlt
    jmp 1b
2:  sti
    say "5 timer ticks\n"

    /* The receive side: in loopback a byte sent comes back through RBR, with a
     * receive-data interrupt (IER.RDI). */
    call tx_drain
    call rx_drain                       /* host bytes from before RTS went off: input */
    movl $1, rx_loopback
    mov $COM1 + 4, %dx                  /* MCR: loopback, OUT2, DTR, RTS */
    mov $0x1b, %al
    out %al, %dx
    mov $COM1 + 1, %dx                  /* IER: receive data available */
    mov $0x01, %al
    out %al, %dx
    mov $COM1, %dx
    mov $'Z', %al
    out %al, %dx
    movl ticks, %ebx                    /* a dead UART never answers: give up */
    add $RX_WAIT, %ebx
1:  cli
    cmpl $1, rx_count
    jae 2f
    cmp ticks, %ebx
    jb 2f
    sti
    hlt
    jmp 1b
2:  mov $COM1 + 1, %dx                  /* IER off, loopback off */
    xor %al, %al
    out %al, %dx
    mov $COM1 + 4, %dx                  /* MCR: DTR, OUT2 (RTS off) */
    mov $0x09, %al
    out %al, %dx
    movl $0, rx_loopback
    sti
    cmpl $0, rx_count
    jne 3f
    say "receive interrupt: none\n"
    jmp 4f
3:  say "receive interrupt: "
    push %esi
    mov $rx_text, %esi
    call tx_puts
    pop %esi
    say "\n"
4:

    /* The block device: read sector 1, write sector 2, read it back: three requests
     * in the ring, one NOTIFY, completions counted in the ring's used index. Its
     * CAPACITY first: all ones when no device model answers (it died, or none runs). */
    mov $BLK + 12, %dx
    in %dx, %eax
    cmp $0xffffffff, %eax
    jne 3f
    say "block: no device (its ports read all ones)\n"
    jmp blk_done
3:
    mov $BLK, %dx                       /* RING */
    mov $blk_ring, %eax
    out %eax, %dx
    movl $1, blk_ring + 16              /* slot 0: read sector 1 into blk_buf */
    movl $blk_buf, blk_ring + 24
    movl $1, blk_ring + 32
    movl $0, blk_ring + 36
    movl $2, blk_ring + 48              /* slot 1: write sector 2 from blk_wbuf */
    movl $blk_wbuf, blk_ring + 56
    movl $1, blk_ring + 64
    movl $1, blk_ring + 68
    movl $2, blk_ring + 80              /* slot 2: read sector 2 into blk_buf2 */
    movl $blk_buf2, blk_ring + 88
    movl $1, blk_ring + 96
    movl $0, blk_ring + 100
    mov $BLK + 4, %dx                   /* NOTIFY: 3 requests */
    mov $3, %eax
    out %eax, %dx
1:  cli
    cmpl $3, blk_ring
    jae 2f
    sti
    hlt
    jmp 1b
2:  sti
    mov blk_ring + 40, %eax             /* every status 0 */
    or blk_ring + 72, %eax
    or blk_ring + 104, %eax
    jnz blk_failed
    say "block: sector 1 reads \""
    push %esi
    mov $blk_buf, %esi
    call tx_puts
    say "\", sector 2 written and read back: \""
    mov $blk_buf2, %esi
    call tx_puts
    pop %esi
    say "\"\n"
    jmp blk_done
blk_failed:
    say "block: a request failed\n"
blk_done:

    /* ---- rtc (begin): the CMOS RTC, its own device-model process (ports 0x70 index,
     * 0x71 data; a level IRQ at vector 0x28, ISA IRQ 8). Register D reads 0x80 (VRT),
     * all ones when no model answers. After UIP clears it reads the date and time
     * (24 h, BCD) and prints them, then selects 8 Hz (A = 0x2d) with PIE and takes 4
     * periodic interrupts, each acknowledged by reading register C in the handler;
     * it gives up after 1000 APIC timer ticks (1 s or more), saying what register C
     * reads then (all ones: the model is gone). ---- */
    mov $V_RTC, %eax
    mov $rtc_handler, %edx
    call set_gate
    mov $0x0d, %al
    call rtc_read
    cmp $0xff, %al
    jne 1f
    say "rtc: no device (its ports read all ones)\n"
    jmp rtc_done
1:  mov $0x0b02, %ax                    /* B: 24 h, BCD, no interrupts */
    call rtc_write
2:  mov $0x0a, %al                      /* A: wait while an update is in progress */
    call rtc_read
    cmp $0xff, %al
    je rtc_gone
    test $0x80, %al
    jnz 2b
    push %edi
    push %ebx
    mov $rtc_fields, %ebx               /* each: its register, its place in the line */
rtc_next_field:
    movb (%ebx), %al
    movzbl 1(%ebx), %edi
    add $rtc_line, %edi
    call rtc_field
    add $2, %ebx
    cmp $rtc_fields_end, %ebx
    jb rtc_next_field
    pop %ebx
    pop %edi
    push %esi
    mov $rtc_line, %esi
    call tx_puts
    pop %esi
    mov $0x0a2d, %ax                    /* A: divider on, RS 13: 8 Hz */
    call rtc_write
    mov $0x0c, %al                      /* C: clear what is pending (PF set at */
    call rtc_read                       /* the old rate too) before PIE goes on */
    movl ticks, %ebx
    add $1000, %ebx
    mov $0x0b42, %ax                    /* B: PIE, 24 h, BCD */
    call rtc_write
3:  cli
    cmpl $4, rtc_irqs
    jae 4f
    cmp ticks, %ebx
    jb rtc_gone
    sti
    hlt
    jmp 3b
4:  mov $0x0b02, %ax                    /* PIE off, with interrupts off: the handler */
    call rtc_write                      /* must not move the index in between */
    mov $0x0c, %al
    call rtc_read
    sti
    say "rtc: 4 periodic interrupts at 8 Hz\n"
    jmp rtc_done
rtc_gone:
    sti
    movl rtc_irqs, %eax
    push %edi
    mov $rtc_num, %edi
    call fmt_dec
    mov $0x0c, %al
    mov $rtc_hex, %edi
    call rtc_field
    pop %edi
    say "rtc: "
    push %esi
    mov $rtc_num, %esi
    call tx_puts
    say " periodic interrupts, then none; register C reads 0x"
    mov $rtc_hex, %esi
    call tx_puts
    pop %esi
    say "\n"
rtc_done:
    /* ---- rtc (end) ---- */

    /* vCPU 1: copy the trampoline below 1 MiB, then INIT and SIPI. */
    mov $ap_tramp, %esi
    mov $TRAMPOLINE, %edi
3:  movb (%esi), %al
    movb %al, (%edi)
    inc %esi
    inc %edi
    cmp $ap_tramp_end, %esi
    jb 3b
    mov $0x830, %ecx
    mov $0x4500, %eax                   /* INIT, assert */
    mov $1, %edx                        /* APIC 1 */
    wrmsr
    mov $0x4600 | (TRAMPOLINE >> 12), %eax  /* start-up at 0x8000 */
    wrmsr
    movl ticks, %ebx
    add $50, %ebx
4:  cli
    cmpl $1, pongs
    jae 5f
    cmp ticks, %ebx
    jb no_ap
    sti
    hlt
    jmp 4b
5:  sti
    say "vCPU 1 is up\n"
    mov $1, %ebx
6:  mov $0x830, %ecx                    /* ping APIC 1 */
    mov $V_PING, %eax
    mov $1, %edx
    wrmsr
    inc %ebx
7:  cli
    cmp pongs, %ebx
    jbe 8f
    sti
    hlt
    jmp 7b
8:  sti
    cmp $4, %ebx
    jb 6b
    say "3 IPIs each way with vCPU 1\n"
    jmp done
no_ap:
    sti
    say "no second vCPU\n"
done:
    call input_step
    say "bye\n"
    call tx_drain
    wrmsr_imm 0x838, 0                  /* stop the timer (tx_backup needs it until now) */
    mov $0x15, %eax
    ret

x2apic_on:
    push %eax
    push %ecx
    push %edx
    mov $0x1b, %ecx
    rdmsr
    or $0xc00, %eax
    wrmsr
    wrmsr_imm 0x80f, 0x1ff
    pop %edx
    pop %ecx
    pop %eax
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

/* tx_puts: queue the string at %esi; sleeps while the ring is full. */
tx_puts:
    push %eax
    push %ebx
    push %esi
1:  movb (%esi), %al
    test %al, %al
    jz 4f
2:  cli
    movl tx_head, %ebx
    sub tx_tail, %ebx
    cmp $RING, %ebx
    jb 3f
    sti
    hlt
    jmp 2b
3:  movl tx_head, %ebx
    and $RING - 1, %ebx
    movb %al, tx_ring(%ebx)
    incl tx_head
    cmpl $0, tx_active                  /* start the transmitter: IER.THRI */
    jne 5f
    movl $1, tx_active
    push %edx
    mov $COM1 + 1, %dx
    mov $0x02, %al
    out %al, %dx
    pop %edx
5:  sti
    inc %esi
    jmp 1b
4:  pop %esi
    pop %ebx
    pop %eax
    ret

/* tx_drain: sleep until the ring is empty and the transmitter stopped. */
tx_drain:
1:  cli
    cmpl $0, tx_active
    je 2f
    sti
    hlt
    jmp 1b
2:  sti
    ret

/* input_step: take host input (see the top); prints "input: TEXT" if any came. */
input_step:
    push %eax
    push %ebx
    push %ecx
    push %edx
    call tx_drain
    mov $COM1 + 4, %dx                  /* MCR: DTR, RTS, OUT2: ready to receive */
    mov $0x0b, %al
    out %al, %dx
    mov $COM1 + 1, %dx                  /* IER: receive data available */
    mov $0x01, %al
    out %al, %dx
    movl input_seen, %ecx
    movl ticks, %ebx
    add $INPUT_WAIT, %ebx
1:  cli
    cmpl $0, input_done
    jne 2f
    cmp input_seen, %ecx                /* a byte came: wait INPUT_WAIT ticks more */
    je 5f
    movl input_seen, %ecx
    movl ticks, %ebx
    add $INPUT_WAIT, %ebx
5:
    mov $COM1 + 6, %dx                  /* MSR first: DCD clear, no byte will come */
    in %dx, %al
    test $0x80, %al
    jnz 3f
    mov $COM1 + 5, %dx                  /* LSR: and none waits in the receiver */
    in %dx, %al
    test $0x01, %al
    jz 2f
3:  cmp ticks, %ebx
    jb 2f
    sti
    hlt
    jmp 1b
2:  mov $COM1 + 1, %dx                  /* IER off, RTS off */
    xor %al, %al
    out %al, %dx
    mov $COM1 + 4, %dx
    mov $0x09, %al
    out %al, %dx
    sti
    movl input_len, %ebx
    test %ebx, %ebx
    jz 4f
    movb $0, input_buf(%ebx)
    say "input: "
    push %esi
    mov $input_buf, %esi
    call tx_puts
    pop %esi
    say "\n"
4:  pop %edx
    pop %ecx
    pop %ebx
    pop %eax
    ret

/* rx_drain: take every byte waiting in the receiver, at most RX_MAX (polled). */
rx_drain:
    push %eax
    push %ecx
    push %edx
    mov $RX_MAX, %ecx                   /* at most RX_MAX bytes (Linux's 8250 takes */
1:  mov $COM1 + 5, %dx                  /* 256): a UART whose ports read all ones */
    in %dx, %al                         /* says "data ready" forever */
    test $0x01, %al
    jz 2f
    mov $COM1, %dx
    in %dx, %al
    call rx_byte
    loop 1b
2:  pop %edx
    pop %ecx
    pop %eax
    ret

/* rx_byte: a received byte (%al): the loopback step's, else host input. */
rx_byte:
    cmpl $0, rx_loopback
    je 1f
    movb %al, rx_text
    incl rx_count
    ret
1:  cmpl $0, input_done                /* the first line only */
    jne 3f
    incl input_seen
    cmp $'\n', %al
    jne 2f
    movl $1, input_done
    ret
2:  cmp $'\r', %al
    je 3f
    push %ebx
    movl input_len, %ebx
    cmp $INPUT_MAX, %ebx
    jae 4f
    movb %al, input_buf(%ebx)
    incl input_len
4:  pop %ebx
3:  ret

uart_handler:
    push %eax
    push %ebx
    push %edx
    mov $COM1 + 2, %dx                  /* IIR */
    in %dx, %al
    and $0x0f, %al
    cmp $0x04, %al                      /* receive data: every byte waiting in RBR */
    jne 3f
    call rx_drain
    jmp 2f
3:  cmp $0x02, %al
    jne 2f
    movl tx_tail, %ebx
    cmp tx_head, %ebx
    jne 1f
    mov $COM1 + 1, %dx                  /* nothing left: IER = 0 */
    xor %al, %al
    out %al, %dx
    movl $0, tx_active
    jmp 2f
1:  and $RING - 1, %ebx
    movb tx_ring(%ebx), %al
    mov $COM1, %dx
    out %al, %dx
    incl tx_tail
2:  call eoi
    pop %edx
    pop %ebx
    pop %eax
    iret

blk_handler:
    push %eax
    push %edx
    mov $BLK + 8, %dx                   /* ISR: reading acks the device */
    in %dx, %eax
    incl blk_irqs
    call eoi
    pop %edx
    pop %eax
    iret

/* ---- rtc (begin): port helpers and the interrupt handler ---- */
/* rtc_read: register %al -> %al. */
rtc_read:
    push %edx
    mov $0x70, %dx
    out %al, %dx
    mov $0x71, %dx
    in %dx, %al
    pop %edx
    ret

/* rtc_write: register %ah <- %al. */
rtc_write:
    push %eax
    push %edx
    xchg %al, %ah
    mov $0x70, %dx
    out %al, %dx
    xchg %al, %ah
    mov $0x71, %dx
    out %al, %dx
    pop %edx
    pop %eax
    ret

/* rtc_field: register %al as two hex (BCD: decimal) digits at %edi. */
rtc_field:
    push %eax
    push %ebx
    call rtc_read
    movzbl %al, %ebx
    shr $4, %ebx
    movb hex_digits(%ebx), %bl
    movb %bl, (%edi)
    movzbl %al, %ebx
    and $0xf, %ebx
    movb hex_digits(%ebx), %bl
    movb %bl, 1(%edi)
    pop %ebx
    pop %eax
    ret

rtc_handler:                            /* reading C acknowledges: the line drops */
    push %eax
    mov $0x0c, %al
    call rtc_read
    test $0x40, %al                     /* PF */
    jz 1f
    incl rtc_irqs
1:  call eoi
    pop %eax
    iret
/* ---- rtc (end) ---- */

timer_handler:
    incl ticks
    call tx_backup
    call eoi
    iret

/* tx_backup (in the timer handler): after TX_STALL ticks without progress while bytes
 * wait, feed THR by hand as the TX-empty handler would, while LSR.THRE is set. */
tx_backup:
    push %eax
    push %ebx
    push %edx
    cmpl $0, tx_active
    je 3f
    movl tx_tail, %eax
    cmp tx_seen, %eax
    je 1f
    movl %eax, tx_seen                  /* it moved: not stalled */
    movl $0, tx_stall
    jmp 4f
1:  incl tx_stall
    cmpl $TX_STALL, tx_stall
    jb 4f
2:  movl tx_tail, %ebx
    cmp tx_head, %ebx
    je 3f
    mov $COM1 + 5, %dx                  /* LSR.THRE */
    in %dx, %al
    test $0x20, %al
    jz 4f
    and $RING - 1, %ebx
    movb tx_ring(%ebx), %al
    mov $COM1, %dx
    out %al, %dx
    incl tx_tail
    jmp 2b
3:  movl $0, tx_stall                   /* idle (or drained): stop counting */
    cmpl $0, tx_active
    je 4f
    mov $COM1 + 1, %dx                  /* the ring drained here: IER = 0 */
    xor %al, %al
    out %al, %dx
    movl $0, tx_active
4:  pop %edx
    pop %ebx
    pop %eax
    ret

pong_handler:
    incl pongs
    call eoi
    iret

ping_handler:                           /* on vCPU 1: answer with a pong */
    push %eax
    push %ecx
    push %edx
    incl pings
    mov $0x830, %ecx
    mov $V_PONG, %eax
    xor %edx, %edx                      /* APIC 0 */
    wrmsr
    call eoi
    pop %edx
    pop %ecx
    pop %eax
    iret

/* vCPU 1 starts here, in real mode at 0x0800:0000 (copied to TRAMPOLINE). */
    .code16
ap_tramp:
    cli
    lgdtl %cs:ap_gdt_ptr - ap_tramp
    mov %cr0, %eax
    or $1, %eax
    mov %eax, %cr0
    ljmpl $SEL_CODE, $ap_main
ap_gdt_ptr:
    .word gdt_end - gdt - 1
    .long gdt
ap_tramp_end:
    .code32

ap_main:
    mov $SEL_DATA, %ax
    mov %ax, %ds
    mov %ax, %es
    mov %ax, %ss
    mov $ap_stack_top, %esp
    call load_idt
    call x2apic_on
    mov $0x830, %ecx                    /* hello: a pong to APIC 0 */
    mov $V_PONG, %eax
    xor %edx, %edx
    wrmsr
1:  sti
    hlt
    jmp 1b

    .data
ticks:
    .long 0
pongs:
    .long 0
pings:
    .long 0
tx_head:
    .long 0
tx_tail:
    .long 0
tx_active:
    .long 0
tx_seen:
    .long 0
tx_stall:
    .long 0
rx_count:
    .long 0
rx_text:
    .byte 0, 0
rx_loopback:
    .long 0
input_len:
    .long 0
input_done:
    .long 0
input_seen:
    .long 0
input_buf:
    .skip INPUT_MAX + 1
blk_irqs:
    .long 0
/* ---- rtc (begin) ---- */
rtc_irqs:
    .long 0
rtc_line:
    .asciz "rtc: CCYY-MM-DD hh:mm:ss\n"
rtc_fields:                             /* century, year, month, day, hours, minutes, seconds */
    .byte 0x32, 5, 0x09, 7, 0x08, 10, 0x07, 13, 0x04, 16, 0x02, 19, 0x00, 22
rtc_fields_end:
rtc_hex:
    .asciz "ff"
rtc_num:
    .skip 12
/* ---- rtc (end) ---- */
    .balign 16
blk_wbuf:
    .asciz "written by the guest"
    .skip 512 - 21

    .bss
    .balign 4096
blk_ring:
    .skip 4096
blk_buf:
    .skip 512
blk_buf2:
    .skip 512
tx_ring:
    .skip RING
    .balign 16
ap_stack:
    .skip 1024
ap_stack_top:
