/*
 * c-heap-bench: allocation workloads, built twice from this one source.
 *
 * Under copra it is the image c-heap-bench (libcopra's heap); bench/heap.py also
 * compiles it for Linux with -DHEAP_BENCH_HOST against glibc's malloc, and runs both
 * in one run (docs/performance.md). The workloads and their random numbers are the
 * same on both sides:
 *
 * - small: 1,000 live objects of 16 to 256 bytes; each operation frees a random one
 *   and allocates a new one in its place, writing its first and last byte;
 * - mixed: the same over 1,000 slots, sizes 80 % 16 B-256 B, 15 % 256 B-16 KiB,
 *   4.5 % 16 KiB-256 KiB, 0.5 % 256 KiB-1 MiB (spread evenly over the powers of two
 *   within each band), one byte written per 4 KiB page and the last byte;
 * - prodcons: a producer thread (the first) allocates objects of 16 to 256 bytes,
 *   writes their first and last byte and passes them through a ring of 1,024 entries
 *   to a consumer thread, which reads both bytes and frees them: every block is
 *   freed by a thread other than the one that allocated it. A side that finds the
 *   ring full or empty spins (`pause`) a while, then sleeps on a futex (copra's
 *   FUTEX_WAIT or Linux's), which the other side wakes: the same code on both sides.
 *   peak_live is not tracked (0).
 *
 * Configuration: `<workload> <ops> <seed>` from /etc/heap-bench.conf (copra) or the
 * command line (Linux). Prints `heap-bench: <workload> begin`, runs, prints
 * `heap-bench: <workload> end ops=<n> checksum=<c> peak_live=<bytes>` followed, on
 * Linux, by ` wall_ns=<ns> cpu_ns=<ns> peak_rss_growth=<bytes>` (VmHWM) and, on copra, by
 * ` peak_mapped=<bytes> maps=<n> unmaps=<n> resizes=<n>`; then frees everything.
 * Under copra the harness times the two lines (bench/heap.py).
 */
#ifdef HEAP_BENCH_HOST
#define _GNU_SOURCE /* clock_gettime, syscall */
#endif
#include <stddef.h>
#include <stdint.h>

#include <stdatomic.h>

#ifdef HEAP_BENCH_HOST
#include <linux/futex.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#else
#include "copra/copra.h"
#endif

#define SLOTS 1000

static uint64_t state;

static uint64_t next(void) { /* splitmix64 */
    uint64_t z = (state += 0x9E3779B97F4A7C15u);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    return z ^ (z >> 31);
}

/* lo..hi, spread evenly over the powers of two between them. */
static size_t spread(size_t lo, size_t hi) {
    unsigned lo_bits = 63 - (unsigned)__builtin_clzll(lo), hi_bits = 63 - (unsigned)__builtin_clzll(hi);
    unsigned bits = lo_bits + (unsigned)(next() % (hi_bits - lo_bits + 1));
    size_t base = (size_t)1 << bits;
    size_t top = base * 2 - 1 < hi ? base * 2 - 1 : hi;
    size_t from = base < lo ? lo : base;
    return from + (size_t)(next() % (top - from + 1));
}

static size_t small_size(void) { return 16 + (size_t)(next() % 241); }

static size_t mixed_size(void) {
    uint64_t r = next() % 1000;
    if (r < 800) return 16 + (size_t)(next() % 241);
    if (r < 950) return spread(257, 16384);
    if (r < 995) return spread(16385, 262144);
    return spread(262145, 1048576);
}

static unsigned char *slot[SLOTS];
static size_t slot_size[SLOTS];

/* The workload; returns a checksum of what it read back. */
static uint64_t run(int mixed, uint64_t ops, size_t *peak_live) {
    uint64_t sum = 0;
    size_t live = 0, peak = 0;
    for (uint64_t op = 0; op < ops; op++) {
        unsigned i = (unsigned)(next() % SLOTS);
        unsigned char *p = slot[i];
        if (p) {
            sum += p[0] + p[slot_size[i] - 1];
            live -= slot_size[i];
            free(p);
        }
        size_t size = mixed ? mixed_size() : small_size();
        p = malloc(size);
        if (!p) return 0;
        for (size_t at = 0; at < size; at += 4096) p[at] = (unsigned char)op;
        p[size - 1] = (unsigned char)i;
        slot[i] = p;
        slot_size[i] = size;
        live += size;
        if (live > peak) peak = live;
    }
    *peak_live = peak;
    return sum;
}

/* --- prodcons ---------------------------------------------------------------------- */

#define RING 1024
#define SPINS 2000

static struct {
    unsigned char *p;
    size_t size;
} ring[RING];
static _Atomic uint64_t produced, consumed; /* objects put into / taken from the ring */
static uint64_t consumer_sum;

/* An event count per direction: a side about to sleep reads the sequence word, sets
 * the count it waits for (target) and says it waits, checks its condition once more
 * and sleeps while the word is unchanged; the other side bumps the word and wakes it
 * once its count reaches the target (seq_cst store then load on both sides: one of
 * them sees the other). Targets half a ring away make one sleep serve 512 items. */
struct event {
    _Atomic uint32_t seq, waiting;
    _Atomic uint64_t target;
};
static struct event more_items, more_room;

static void futex_wait(_Atomic uint32_t *word, uint32_t value);
static void futex_wake(_Atomic uint32_t *word);

static void notify(struct event *e, uint64_t count) {
    if (atomic_load(&e->waiting) && count >= atomic_load(&e->target)) {
        atomic_store(&e->waiting, 0);
        atomic_fetch_add(&e->seq, 1);
        futex_wake(&e->seq);
    }
}

/* Sleeps on e while ready() is false; woken when the other side's count reaches target. */
static void await(struct event *e, uint64_t target, int (*ready)(uint64_t), uint64_t n) {
    for (int i = 0; i < SPINS; i++) {
        if (ready(n)) return;
        __builtin_ia32_pause();
    }
    while (!ready(n)) {
        uint32_t seq = atomic_load(&e->seq);
        atomic_store(&e->target, target);
        atomic_store(&e->waiting, 1);
        if (ready(n)) break;
        futex_wait(&e->seq, seq);
    }
    atomic_store(&e->waiting, 0);
}

static int has_item(uint64_t n) { return atomic_load(&produced) != n; }
static int has_room(uint64_t n) { return n - atomic_load(&consumed) < RING; }

static uint32_t consumer(uint64_t ops) {
    uint64_t sum = 0;
    for (uint64_t n = 0; n < ops; n++) {
        await(&more_items, n + RING / 2, has_item, n);
        unsigned char *p = ring[n % RING].p;
        size_t size = ring[n % RING].size;
        sum += p[0] + p[size - 1];
        free(p);
        atomic_store(&consumed, n + 1);
        notify(&more_room, n + 1);
    }
    consumer_sum = sum;
    return 0;
}

static int spawn_consumer(uint64_t ops);
static int join_consumer(void);

static uint64_t run_prodcons(uint64_t ops) {
    if (!spawn_consumer(ops)) return 0;
    for (uint64_t n = 0; n < ops; n++) {
        size_t size = small_size();
        unsigned char *p = malloc(size);
        if (!p) return 0;
        p[0] = (unsigned char)n;
        p[size - 1] = (unsigned char)size;
        await(&more_room, n - RING / 2, has_room, n);
        ring[n % RING].p = p;
        ring[n % RING].size = size;
        atomic_store(&produced, n + 1);
        notify(&more_items, n + 1);
    }
    notify(&more_items, UINT64_MAX); /* the last items: wake the consumer whatever it waits for */
    if (!join_consumer()) return 0;
    return consumer_sum;
}

static int parse(const char *s, uint64_t *out) {
    uint64_t v = 0;
    if (*s < '0' || *s > '9') return 0;
    for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (uint64_t)(*s - '0');
    *out = v;
    return 1;
}

#ifdef HEAP_BENCH_HOST
static pthread_t consumer_thread;

static void *consumer_main(void *ops) {
    consumer((uint64_t)(uintptr_t)ops);
    return NULL;
}

static int spawn_consumer(uint64_t ops) {
    return pthread_create(&consumer_thread, NULL, consumer_main, (void *)(uintptr_t)ops) == 0;
}

static int join_consumer(void) { return pthread_join(consumer_thread, NULL) == 0; }

static void futex_wait(_Atomic uint32_t *word, uint32_t value) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT_PRIVATE, value, NULL, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

static uint64_t now_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* VmHWM of /proc/self/status, in KiB: this program's peak resident set (getrusage's
 * ru_maxrss would include the pre-exec peak of the parent that forked it). */
static long max_rss_kib(void) {
    char line[256];
    long kib = -1;
    FILE *f = fopen("/proc/self/status", "r");
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmHWM:", 6) == 0) kib = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return kib;
}

int main(int argc, char **argv) {
    uint64_t ops, seed;
    if (argc != 4 || !parse(argv[2], &ops) || !parse(argv[3], &seed)) {
        fprintf(stderr, "usage: %s small|mixed|prodcons OPS SEED\n", argv[0]);
        return 2;
    }
    int mixed = strcmp(argv[1], "mixed") == 0;
    int prodcons = strcmp(argv[1], "prodcons") == 0;
    state = seed;
    long rss0 = max_rss_kib();
    printf("heap-bench: %s begin\n", argv[1]);
    uint64_t wall = now_ns(CLOCK_MONOTONIC), cpu = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    size_t peak = 0;
    uint64_t sum = prodcons ? run_prodcons(ops) : run(mixed, ops, &peak);
    wall = now_ns(CLOCK_MONOTONIC) - wall;
    cpu = now_ns(CLOCK_PROCESS_CPUTIME_ID) - cpu;
    printf("heap-bench: %s end ops=%llu checksum=%llu peak_live=%zu wall_ns=%llu cpu_ns=%llu "
           "peak_rss_growth=%ld\n", argv[1], (unsigned long long)ops, (unsigned long long)sum,
           peak, (unsigned long long)wall, (unsigned long long)cpu, (max_rss_kib() - rss0) * 1024);
    for (unsigned i = 0; i < SLOTS; i++) free(slot[i]);
    return sum ? 0 : 1;
}
#else
static struct copra_thread *consumer_thread;

static int spawn_consumer(uint64_t ops) {
    return copra_thread_spawn(&consumer_thread, consumer, ops) == 0;
}

static int join_consumer(void) { return copra_thread_join(consumer_thread) == 0; }

static void futex_wait(_Atomic uint32_t *word, uint32_t value) {
    copra_syscall(COPRA_SYS_FUTEX_WAIT, (uint64_t)(uintptr_t)word, value, COPRA_TIMEOUT_NEVER,
                  0, 0);
}

static void futex_wake(_Atomic uint32_t *word) {
    copra_syscall(COPRA_SYS_FUTEX_WAKE, (uint64_t)(uintptr_t)word, 1, 0, 0, 0);
}

static char *dec(uint64_t v, char *end) {
    *end = 0;
    do {
        *--end = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return end;
}

int main(void) {
    char conf[64] = {0};
    int64_t h = copra_open("/etc/heap-bench.conf", COPRA_FILE_MODE_READ, 0);
    if (h < 0) {
        copra_print("heap-bench: no /etc/heap-bench.conf\n");
        return 2;
    }
    copra_read((uint32_t)h, conf, sizeof conf - 1);
    copra_close((uint32_t)h);
    /* "<workload> <ops> <seed>" */
    char *word2 = conf;
    while (*word2 && *word2 != ' ') word2++;
    if (!*word2) return 2;
    *word2++ = 0;
    char *word3 = word2;
    while (*word3 && *word3 != ' ') word3++;
    if (!*word3) return 2;
    *word3++ = 0;
    uint64_t ops, seed;
    if (!parse(word2, &ops) || !parse(word3, &seed)) return 2;
    int mixed = conf[0] == 'm';
    int prodcons = conf[0] == 'p';
    state = seed;

    char line[256], num[24];
    char *at = line;
#define PUT(s) for (const char *q_ = (s); *q_;) *at++ = *q_++
    PUT("heap-bench: ");
    PUT(conf);
    PUT(" begin\n");
    *at = 0;
    copra_print(line);
    size_t peak = 0;
    uint64_t sum = prodcons ? run_prodcons(ops) : run(mixed, ops, &peak);
    struct copra_heap_stats s;
    copra_heap_stats(&s);
    at = line;
    PUT("heap-bench: ");
    PUT(conf);
    PUT(" end ops=");
    PUT(dec(ops, num + 23));
    PUT(" checksum=");
    PUT(dec(sum, num + 23));
    PUT(" peak_live=");
    PUT(dec(peak, num + 23));
    PUT(" peak_mapped=");
    PUT(dec(s.peak_mapped, num + 23));
    PUT(" maps=");
    PUT(dec(s.maps, num + 23));
    PUT(" unmaps=");
    PUT(dec(s.unmaps, num + 23));
    PUT(" resizes=");
    PUT(dec(s.resizes, num + 23));
    PUT("\n");
    *at = 0;
    copra_print(line);
    for (unsigned i = 0; i < SLOTS; i++) free(slot[i]);
    return sum ? 0 : 1;
}
#endif
