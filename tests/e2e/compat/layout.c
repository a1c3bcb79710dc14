/*
 * layout: a static program that checks its own segments were loaded as linked.
 *
 * Prints "loaded at 0x<address of _start>" to handle 0 and exits with 42 when every
 * check holds, else with a bit set per failed check:
 *   1  initialised data (.data) has its value
 *   2  a table of pointers (.data.rel.ro, in lld's RELRO segment) reads back
 *   4  bss, three pages and more, is zero
 *   8  bss is writable
 * With -DTOUCH_NULL it then loads from address 0 (page 0 must be unmapped: #PF).
 */
#include "upstream.h"

static const char first[] = "ro";
static const char second[] = "data";
const char *const table[] = {first, second};
int initialised = 0x1234;
static volatile unsigned char bss[3 * 4096 + 17];

void _start(void);

static void print_loaded_at(u64 address) {
    char line[32] = "loaded at 0x";
    size_t n = str_len(line);
    for (int shift = 60; shift >= 0; shift -= 4) {
        unsigned digit = (address >> shift) & 0xF;
        if (digit || n > 12 || shift == 0) line[n++] = "0123456789abcdef"[digit];
    }
    line[n++] = '\n';
    sys3(COPRA_SYS_WRITE, 0, (u64)line, n);
}

void _start(void) {
    u64 code = 0;
    if (*(volatile int *)&initialised != 0x1234) code |= 1;
    const char *const *volatile tab = table;
    if (tab[0][0] != 'r' || tab[1][3] != 'a') code |= 2;
    for (size_t i = 0; i < sizeof bss; i++)
        if (bss[i]) code |= 4;
    bss[0] = 1;
    bss[sizeof bss - 1] = 2;
    if (bss[0] != 1 || bss[sizeof bss - 1] != 2) code |= 8;
    print_loaded_at((u64)&_start);
#ifdef TOUCH_NULL
    (void)*(volatile char *)0;
#endif
    sys_exit(code ? code : 42);
}
