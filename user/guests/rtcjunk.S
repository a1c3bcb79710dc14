/*
 * rtcjunk: a guest that writes garbage to the CMOS RTC's ports (0x70 index with
 * random NMI-mask bits, 0x71 data) for all 128 registers, from a fixed LCG, then
 * checks what the rtc device model defines (user/vmm/src/rtc.rs) and prints one line:
 *
 *   rtcjunk: RAM mismatches N, D xx, C low nibble x, index port xx, 16-bit xxxx, year BCD
 *
 * N counts the CMOS RAM registers (0x0E-0x7F but the century, 0x32) that do not read
 * back what was written (0 expected); D is register D (80); C's low nibble reads 0;
 * the index port reads ff; a 16-bit OUT to 0x70 writes index and data at once and a
 * 16-bit IN reads ff and that register; after A = 0x26, B = 0x02 (a sane set-up) the
 * year reads as two BCD digits, whatever the garbage set ("year not BCD" otherwise).
 * Only what does not depend on the time or on how a model normalises garbage is
 * printed, so the line is QEMU's too (tests/kvm/test_guest_qemu.py). Exits with 0x11.
 */
#include "common.S"

#define RTC_INDEX 0x70
#define RTC_DATA  0x71

    .text
main:
    mov $0x2468ace1, %esi               /* the LCG's state */
    xor %ecx, %ecx
1:  call rand
    and $0x80, %al                      /* a random NMI-mask bit */
    or %cl, %al
    out %al, $RTC_INDEX
    call rand
    movb %al, expected(%ecx)
    out %al, $RTC_DATA
    inc %ecx
    cmp $128, %ecx
    jb 1b

    xor %ebx, %ebx                      /* mismatches */
    mov $0x0e, %ecx
2:  cmp $0x32, %ecx
    je 3f
    mov %cl, %al
    out %al, $RTC_INDEX
    in $RTC_DATA, %al
    cmpb expected(%ecx), %al
    je 3f
    inc %ebx
3:  inc %ecx
    cmp $128, %ecx
    jb 2b

    print "rtcjunk: RAM mismatches "
    mov %ebx, %eax
    call put_dec
    print ", D "
    mov $0x8d, %al                      /* register D, the NMI-mask bit set */
    out %al, $RTC_INDEX
    in $RTC_DATA, %al
    mov $2, %ecx
    call put_hex
    print ", C low nibble "
    mov $0x0c, %al
    out %al, $RTC_INDEX
    in $RTC_DATA, %al
    mov $1, %ecx
    call put_hex
    print ", index port "
    in $RTC_INDEX, %al
    mov $2, %ecx
    call put_hex
    print ", 16-bit "
    mov $0x5a40, %ax                    /* index 0x40, data 0x5a */
    out %ax, $RTC_INDEX
    in $RTC_INDEX, %ax
    mov $4, %ecx
    call put_hex
    print ", year "
    mov $0x0a, %al                      /* A: divider on, 1024 Hz */
    out %al, $RTC_INDEX
    mov $0x26, %al
    out %al, $RTC_DATA
    mov $0x0b, %al                      /* B: 24 h, BCD, no interrupts */
    out %al, $RTC_INDEX
    mov $0x02, %al
    out %al, $RTC_DATA
    mov $0x09, %al
    out %al, $RTC_INDEX
    in $RTC_DATA, %al
    mov %al, %ah
    and $0x0f, %al
    shr $4, %ah
    cmp $9, %al
    ja 4f
    cmp $9, %ah
    ja 4f
    print "BCD"
    jmp 5f
4:  print "not BCD"
5:  call newline
    mov $0x11, %eax
    ret

/* rand: the next LCG byte in %al (state in %esi). */
rand:
    push %edx
    imul $1103515245, %esi, %esi
    add $12345, %esi
    mov %esi, %eax
    shr $16, %eax
    and $0xff, %eax
    pop %edx
    ret

    .bss
expected:
    .skip 128
