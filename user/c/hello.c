/*
 * c-hello: a C program on libcopra.a, checking what the library gives C.
 *
 * Greets, then checks malloc, calloc, realloc, aligned_alloc, free and the heap's
 * statistics, the file and directory wrappers (in /c-hello, removed again), an
 * anonymous mapping, CAPABILITIES and error names. Prints `PASS <check>` or
 * `FAIL <check>` per check and `c-hello: <passed>/<total> checks passed`; exits 0
 * when every check passed, 1 otherwise.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "copra/copra.h"

static int passed, total;

/* One log line from the pieces, NULL-terminated (one WRITE per line). */
static void say(const char *const parts[]) {
    char line[256];
    size_t n = 0;
    for (int i = 0; parts[i]; i++) {
        for (const char *s = parts[i]; *s && n < sizeof line - 2; s++) line[n++] = *s;
    }
    line[n++] = '\n';
    line[n] = 0;
    copra_print(line);
}

#define SAY(...) say((const char *const[]){__VA_ARGS__, NULL})

static void check(bool ok, const char *what) {
    total++;
    passed += ok;
    SAY(ok ? "PASS " : "FAIL ", what);
}

static const char *dec(uint64_t v, char out[24]) {
    char *p = out + 23;
    *p = 0;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    return p;
}

static bool filled(const unsigned char *p, size_t n, unsigned char seed) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != (unsigned char)(seed + i)) return false;
    return true;
}

static void fill(unsigned char *p, size_t n, unsigned char seed) {
    for (size_t i = 0; i < n; i++) p[i] = (unsigned char)(seed + i);
}

static bool str_eq(const char *a, const char *b) {
    while (*a && *a == *b) a++, b++;
    return *a == *b;
}

static void heap_checks(void) {
    struct copra_heap_stats before, during, after;
    copra_heap_stats(&before);

    unsigned char *p = malloc(100);
    check(p && (uintptr_t)p % 16 == 0 && malloc_usable_size(p) >= 100, "malloc_gives_an_aligned_block");
    fill(p, 100, 7);

    unsigned char *q = realloc(p, 100000);
    check(q && filled(q, 100, 7), "realloc_grows_and_keeps_the_contents");
    q = realloc(q, 3 << 20);
    check(q && filled(q, 100, 7), "realloc_to_a_large_block_keeps_the_contents");
    unsigned char *same = realloc(q, 4 << 20);
    check(same == q, "realloc_of_a_large_block_grows_in_place");
    q = same;

    uint64_t *z = calloc(1000, sizeof *z);
    bool zero = z != NULL;
    for (int i = 0; zero && i < 1000; i++) zero = z[i] == 0;
    check(zero, "calloc_is_zeroed");
    check(calloc(SIZE_MAX, 2) == NULL, "calloc_overflow_returns_null");

    void *a = aligned_alloc(4096, 10);
    void *b = aligned_alloc((size_t)1 << 21, 5000);
    check(a && b && (uintptr_t)a % 4096 == 0 && (uintptr_t)b % ((size_t)1 << 21) == 0,
          "aligned_alloc_aligns_to_a_page_and_beyond");
    check(aligned_alloc(3, 8) == NULL, "aligned_alloc_refuses_an_alignment_not_a_power_of_two");

    void *many[500];
    for (int i = 0; i < 500; i++) many[i] = malloc((size_t)(i * 37 % 3000) + 1);
    copra_heap_stats(&during);
    check(during.live_blocks == before.live_blocks + 504 && during.in_use > before.in_use,
          "heap_stats_count_live_blocks");

    for (int i = 0; i < 500; i++) free(many[i]);
    free(a);
    free(b);
    free(z);
    free(q);
    free(NULL);
    check(realloc(malloc(8), 0) == NULL, "realloc_to_0_frees");
    void *r = realloc(NULL, 64);
    check(r != NULL, "realloc_of_null_allocates");
    free(r);

    copra_heap_trim();
    copra_heap_stats(&after);
    check(after.in_use == 0 && after.live_blocks == 0 && after.mapped == 0,
          "everything_freed_and_trimmed_leaves_nothing_mapped");
    char n1[24], n2[24];
    SAY("heap: peak in use ", dec(after.peak_in_use, n1), " bytes, peak mapped ",
        dec(after.peak_mapped, n2), " bytes");
}

static void file_checks(void) {
    check(copra_mkdir("/c-hello") == 0, "mkdir");
    int64_t h = copra_open("/c-hello/greeting", COPRA_FILE_MODE_READ | COPRA_FILE_MODE_WRITE,
                           COPRA_FILE_FLAG_CREATE);
    check(h > 0, "open_create");
    const char text[] = "hello from C";
    check(copra_write((uint32_t)h, text, sizeof text - 1) == (int64_t)(sizeof text - 1), "write");
    check(copra_seek((uint32_t)h, 0, COPRA_SEEK_MODE_ABSOLUTE) == 0, "seek");
    char back[32] = {0};
    check(copra_read((uint32_t)h, back, sizeof back) == (int64_t)(sizeof text - 1) &&
              memcmp(back, text, sizeof text - 1) == 0, "read_back");
    check(copra_close((uint32_t)h) == 0, "close");

    int64_t d = copra_opendir("/c-hello");
    struct copra_dir_ent ents[2];
    check(d > 0 && copra_readdir((uint32_t)d, ents, 2) == 1 && str_eq((char *)ents[0].name, "greeting") &&
              ents[0].file_type == COPRA_FILE_TYPE_FILE && ents[0].size == sizeof text - 1,
          "readdir_lists_the_file");
    copra_close((uint32_t)d);
    check(copra_unlink("/c-hello/greeting") == 0 && copra_rmdir("/c-hello") == 0, "unlink_and_rmdir");

    int64_t missing = copra_open("/c-hello/missing", COPRA_FILE_MODE_READ, 0);
    check(missing == COPRA_ERRNO_ENOTFOUND && str_eq(copra_error_name(missing), "ENOTFOUND"),
          "errors_have_names");
    check(str_eq(copra_error_name(-4095), "UNEXPECTED_EOF") && str_eq(copra_error_name(5), "?"),
          "library_errors_have_names_too");
}

static void other_checks(void) {
    int64_t m = copra_mmap(UINT32_MAX, NULL, 0, 8192,
                           COPRA_MAP_FLAG_READ | COPRA_MAP_FLAG_WRITE | COPRA_MAP_FLAG_ANONYMOUS);
    bool mapped = m > 0;
    if (mapped) {
        unsigned char *page = (unsigned char *)(uintptr_t)m;
        mapped = page[0] == 0 && page[8191] == 0;
        page[8191] = 1;
        mapped = mapped && copra_munmap(page, 8192) == 0;
    }
    check(mapped, "mmap_and_munmap");
    check(copra_capabilities(COPRA_CAPABILITY_COUNT) == 2, "capabilities");
}

int main(void) {
    copra_print("Hello from C on copra\n");
    heap_checks();
    file_checks();
    other_checks();
    char n1[24], n2[24];
    SAY("c-hello: ", dec((uint64_t)passed, n1), "/", dec((uint64_t)total, n2), " checks passed");
    return passed == total ? 0 : 1;
}
