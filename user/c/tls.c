/*
 * c-tls: gcc's __thread in a C program under copra.
 *
 * The first thread's TLS block comes from the kernel (EXEC reads PT_TLS), each
 * spawned thread's from libcopra (copra_thread_spawn). Checks, printing
 * "c-tls: ok ..." and returning 0 when all hold (else a FAIL line and 1):
 * - an initialised __thread variable (.tdata) starts at its initial value in every
 *   thread, also after the first thread changed its own copy;
 * - a zero-initialised __thread array (.tbss) starts zeroed in every thread;
 * - THREADS threads each count ROUNDS times in their own copies: the counts are exact
 *   and every copy lies at an address of its own.
 */
#include "copra/copra.h"

#define THREADS 4
#define ROUNDS 20000
#define INITIAL 0x1234567890ABCDEFull

static __thread uint64_t counter = INITIAL;
static __thread uint64_t scratch[32];
static __thread uint32_t aligned_word __attribute__((aligned(64))) = 7;

static uintptr_t addresses[THREADS + 1];

static int check(int cond, const char *what) {
    if (!cond) {
        copra_print("FAIL c-tls: ");
        copra_print(what);
        copra_print("\n");
    }
    return cond;
}

static int fresh(void) {
    int ok = check(counter == INITIAL, "a .tdata variable is not at its initial value");
    ok &= check(aligned_word == 7 && ((uintptr_t)&aligned_word & 63) == 0,
                "a 64-byte aligned .tdata variable");
    for (int i = 0; i < 32; i++)
        ok &= check(scratch[i] == 0, "a .tbss variable is not zero");
    return ok;
}

static uint32_t work(uint64_t index) {
    int ok = fresh();
    addresses[index] = (uintptr_t)&counter;
    counter = 0;
    for (uint64_t i = 0; i < ROUNDS; i++) {
        counter += index + 1;
        scratch[i % 32] += 1;
    }
    ok &= check(counter == ROUNDS * (index + 1), "a thread's count is not its own");
    ok &= check(scratch[0] == ROUNDS / 32, "a thread's .tbss array is not its own");
    return ok ? 0 : 1;
}

int main(void) {
    int ok = fresh();
    counter = 99;
    scratch[0] = 5;
    aligned_word = 8;
    struct copra_thread *threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        if (copra_thread_spawn(&threads[i], work, (uint64_t)i) != 0) {
            copra_print("FAIL c-tls: copra_thread_spawn\n");
            return 1;
        }
    }
    for (int i = 0; i < THREADS; i++)
        ok &= check(copra_thread_join(threads[i]) == 0, "a thread failed");
    ok &= check(counter == 99 && scratch[0] == 5 && aligned_word == 8,
                "the first thread's copies changed");
    addresses[THREADS] = (uintptr_t)&counter;
    for (int i = 0; i <= THREADS; i++)
        for (int j = 0; j < i; j++)
            ok &= check(addresses[i] != addresses[j], "two threads share a copy");
    if (!ok)
        return 1;
    copra_print("c-tls: ok: 4 threads, __thread .tdata, .tbss and a 64-byte aligned variable\n");
    return 0;
}
