/*
 * What a C program built the upstream way has: upstream COCONUT-SVSM's syscall
 * convention through `int 0x80` only, and nothing else from the system.
 *
 * Number in rax ((class << 32) | index), arguments in rdi, rsi, r8, r9, r10 (not rdx),
 * result in rax, rcx and r11 declared clobbered (upstream's `syscall/src/call.rs`).
 * No libc, no crt: the program defines `_start`, which the kernel enters with an empty
 * stack (rsp = 8 mod 16, as after a call). The numbers come from include/copra/abi.h,
 * which spells upstream's values.
 *
 * One translation unit per program: memcpy and memset, which gcc may call on its
 * own, are defined here.
 */
#ifndef UPSTREAM_H
#define UPSTREAM_H

#include <stddef.h>
#include <stdint.h>

#include "copra/abi.h"

typedef uint64_t u64;
typedef int64_t i64;

static inline u64 sys5(u64 nr, u64 a0, u64 a1, u64 a2, u64 a3, u64 a4) {
    register u64 r8 __asm__("r8") = a2;
    register u64 r9 __asm__("r9") = a3;
    register u64 r10 __asm__("r10") = a4;
    u64 rax = nr;
    __asm__ volatile("int $0x80"
                     : "+a"(rax)
                     : "D"(a0), "S"(a1), "r"(r8), "r"(r9), "r"(r10)
                     : "rcx", "r11", "memory");
    return rax;
}

static inline u64 sys0(u64 nr) { return sys5(nr, 0, 0, 0, 0, 0); }
static inline u64 sys1(u64 nr, u64 a0) { return sys5(nr, a0, 0, 0, 0, 0); }
static inline u64 sys2(u64 nr, u64 a0, u64 a1) { return sys5(nr, a0, a1, 0, 0, 0); }
static inline u64 sys3(u64 nr, u64 a0, u64 a1, u64 a2) { return sys5(nr, a0, a1, a2, 0, 0); }

/* Upstream's user-side rule: any rax above u64::MAX - 0xFFFF is an error. */
static inline int is_error(u64 rax) { return rax > UINT64_MAX - 0xFFFF; }

void *memcpy(void *dst, const void *src, size_t n) {
    unsigned char *d = dst;
    const unsigned char *s = src;
    while (n--) *d++ = *s++;
    return dst;
}

void *memset(void *dst, int c, size_t n) {
    unsigned char *d = dst;
    while (n--) *d++ = (unsigned char)c;
    return dst;
}

static size_t str_len(const char *s) {
    size_t n = 0;
    while (s[n]) n++;
    return n;
}

__attribute__((noreturn)) static void sys_exit(u64 code) {
    sys1(COPRA_SYS_EXIT, code);
    __builtin_unreachable();
}

#endif
