/*
 * cconf: the conformance suite's class 0, 1 and 3 cases from a program built the
 * upstream way (C, int 0x80 only, no libcopra, linked by rust-lld at 0x200000).
 *
 * Each case carries the name of the case of user/testprogs/src/bin/conformance.rs it
 * repeats and checks the same behaviour of docs/abi.md and docs/ramfs.md, through the
 * ABI alone. Prints `PASS <case>` or `FAIL <case>: <why>` per case, then
 * `SUMMARY <passed>/<total>`; exits 0 iff every case passed.
 *
 * It is its own helper process: EXEC passes no arguments, so before each EXEC of
 * CHILD (this same image) the parent writes the child's action into ACTION; a
 * process that finds ACTION at start is a child and does what it says (see child()).
 * Memory is probed with WRITE and READ through a file before it is touched, so a
 * wrong MMAP answer fails a case instead of killing the suite; faults are provoked in
 * children only. Every case's handles and mappings are released after it (track()).
 */
#include "upstream.h"

#define SCRATCH "/tmp/cconf"
#define S(name) SCRATCH "/" name
#define ACTION S("child.action")
#define PROBE S("probe")
#define CHILD "/bin/cconf"

#define PAGE COPRA_PAGE_SIZE
#define NO_HANDLE UINT64_C(0xFFFFFFFF)
#define UNMAPPED UINT64_C(0xdead0000)
#define KERNEL_HALF UINT64_C(0xffff800000000000)
#define NON_CANONICAL UINT64_C(0x0000800000000000)
#define FIXED_AREA UINT64_C(0x0000200000000000)
#define RW (COPRA_FILE_MODE_READ | COPRA_FILE_MODE_WRITE)
#define ANON_R (COPRA_MAP_FLAG_READ | COPRA_MAP_FLAG_ANONYMOUS)

typedef struct copra_dir_ent dirent_t;

/* --- syscalls --------------------------------------------------------------------- */

static u64 sys_open(const char *p, u64 mode, u64 flags) {
    return sys3(COPRA_SYS_OPEN, (u64)p, mode, flags);
}
static u64 sys_read(u64 h, void *buf, u64 n) { return sys3(COPRA_SYS_READ, h, (u64)buf, n); }
static u64 sys_write(u64 h, const void *buf, u64 n) {
    return sys3(COPRA_SYS_WRITE, h, (u64)buf, n);
}
static u64 sys_seek(u64 h, u64 off, u64 mode) { return sys3(COPRA_SYS_SEEK, h, off, mode); }
static u64 sys_truncate(u64 h, u64 len) { return sys2(COPRA_SYS_TRUNCATE, h, len); }
static u64 sys_unlink(const char *p) { return sys1(COPRA_SYS_UNLINK, (u64)p); }
static u64 sys_opendir(const char *p) { return sys1(COPRA_SYS_OPENDIR, (u64)p); }
static u64 sys_readdir(u64 h, void *ents, u64 n) {
    return sys3(COPRA_SYS_READDIR, h, (u64)ents, n);
}
static u64 sys_mkdir(const char *p) { return sys1(COPRA_SYS_MKDIR, (u64)p); }
static u64 sys_rmdir(const char *p) { return sys1(COPRA_SYS_RMDIR, (u64)p); }
static u64 sys_close(u64 h) { return sys1(COPRA_SYS_CLOSE, h); }
static u64 sys_exec(const char *p, const char *root, u64 flags) {
    return sys3(COPRA_SYS_EXEC, (u64)p, (u64)root, flags);
}
static u64 sys_wait(u64 task) { return sys1(COPRA_SYS_WAIT, task); }
static u64 sys_mmap(u64 h, u64 hint, u64 off, u64 len, u64 flags) {
    return sys5(COPRA_SYS_MMAP, h, hint, off, len, flags);
}
static u64 sys_munmap(u64 addr, u64 len) { return sys2(COPRA_SYS_MUNMAP, addr, len); }
static u64 sys_mresize(u64 addr, u64 len) { return sys2(COPRA_SYS_MRESIZE, addr, len); }
static u64 sys_caps(u64 index) { return sys1(COPRA_SYS_CAPABILITIES, index); }

#define ERR(e) ((u64)COPRA_ERRNO_##e)

/* --- messages ------------------------------------------------------------------------ */

static char msg[180];
static size_t msg_len;

static void m_reset(void) { msg_len = 0; }
static void m_str(const char *s) {
    while (*s && msg_len < sizeof msg - 1) msg[msg_len++] = *s++;
    msg[msg_len] = 0;
}
static void m_hex(u64 v) {
    char digits[19] = "0x";
    int n = 2;
    int started = 0;
    for (int shift = 60; shift >= 0; shift -= 4) {
        unsigned d = (v >> shift) & 0xF;
        if (d || started || shift == 0) {
            digits[n++] = "0123456789abcdef"[d];
            started = 1;
        }
    }
    digits[n] = 0;
    m_str(digits);
}

static const struct {
    i64 value;
    const char *name;
} ERRNOS[] = {
    {COPRA_ERRNO_EINVAL, "EINVAL"},       {COPRA_ERRNO_ENOSYS, "ENOSYS"},
    {COPRA_ERRNO_ENOMEM, "ENOMEM"},       {COPRA_ERRNO_EPERM, "EPERM"},
    {COPRA_ERRNO_EFAULT, "EFAULT"},       {COPRA_ERRNO_EBUSY, "EBUSY"},
    {COPRA_ERRNO_ENOTFOUND, "ENOTFOUND"}, {COPRA_ERRNO_ENOTSUPP, "ENOTSUPP"},
    {COPRA_ERRNO_EEXIST, "EEXIST"},       {COPRA_ERRNO_ERDONLY, "ERDONLY"},
    {COPRA_ERRNO_EWRONLY, "EWRONLY"},     {COPRA_ERRNO_ENOTEMPTY, "ENOTEMPTY"},
    {COPRA_ERRNO_EISDIR, "EISDIR"},       {COPRA_ERRNO_ENOTDIR, "ENOTDIR"},
    {COPRA_ERRNO_EMFILE, "EMFILE"},       {COPRA_ERRNO_ENOEXEC, "ENOEXEC"},
    {COPRA_ERRNO_ENAMETOOLONG, "ENAMETOOLONG"}, {COPRA_ERRNO_UNKNOWN, "UNKNOWN"},
};

static void m_rax(u64 rax) {
    if (!is_error(rax)) {
        m_str("ok ");
        m_hex(rax);
        return;
    }
    for (size_t i = 0; i < sizeof ERRNOS / sizeof ERRNOS[0]; i++)
        if ((u64)ERRNOS[i].value == rax) {
            m_str(ERRNOS[i].name);
            return;
        }
    m_str("error ");
    m_hex(rax);
}

static const char *got_want(const char *what, u64 got, const char *want) {
    m_reset();
    m_str(what);
    m_str(": got ");
    m_rax(got);
    m_str(", want ");
    m_str(want);
    return msg;
}

static const char *got_value(const char *what, u64 got, u64 want) {
    got_want(what, got, "");
    m_hex(want);
    return msg;
}

/* Each returns from the case with a message when the check fails. */
#define EXPECT_ERRNO(what, rax, e)                                   \
    do {                                                             \
        u64 r_ = (rax);                                              \
        if (r_ != ERR(e)) return got_want(what, r_, #e);             \
    } while (0)
#define EXPECT_VALUE(what, rax, want)                                \
    do {                                                             \
        u64 r_ = (rax), w_ = (want);                                 \
        if (r_ != w_) return got_value(what, r_, w_);                \
    } while (0)
#define EXPECT_OK(var, what, rax)                                    \
    u64 var = (rax);                                                 \
    if (is_error(var)) return got_want(what, var, "success")
#define ENSURE(cond, text)                                           \
    do {                                                             \
        if (!(cond)) return (text);                                  \
    } while (0)
#define TRY(call)                                                    \
    do {                                                             \
        const char *why_ = (call);                                   \
        if (why_) return why_;                                       \
    } while (0)

/* --- what a case holds, released after it --------------------------------------------- */

static u64 held_handles[64];
static int n_handles;
static struct {
    u64 addr, len;
} held_maps[32];
static int n_maps;

static u64 track(u64 handle) {
    if (!is_error(handle) && handle != 0 && n_handles < 64) held_handles[n_handles++] = handle;
    return handle;
}

static u64 track_map(u64 addr, u64 len) {
    if (!is_error(addr) && n_maps < 32) {
        held_maps[n_maps].addr = addr;
        held_maps[n_maps++].len = len;
    }
    return addr;
}

static void release_all(void) {
    while (n_handles) sys_close(held_handles[--n_handles]);
    while (n_maps) {
        n_maps--;
        sys_munmap(held_maps[n_maps].addr, held_maps[n_maps].len);
    }
}

/* --- file helpers -------------------------------------------------------------------- */

static int mem_eq(const void *a, const void *b, size_t n) {
    const unsigned char *x = a, *y = b;
    for (size_t i = 0; i < n; i++)
        if (x[i] != y[i]) return 0;
    return 1;
}

/* A new empty file (emptied if it exists), open read+write, or an error. */
static u64 create(const char *path) {
    return track(sys_open(path, RW | COPRA_FILE_MODE_TRUNC, COPRA_FILE_FLAG_CREATE));
}

static u64 open_as(const char *path, u64 mode) { return track(sys_open(path, mode, 0)); }

/* A new file holding data, open read+write at position 0; *h gets the handle. */
static const char *make_file(const char *path, const void *data, u64 n, u64 *h) {
    EXPECT_OK(file, path, create(path));
    EXPECT_VALUE("WRITE", sys_write(file, data, n), n);
    EXPECT_VALUE("SEEK", sys_seek(file, 0, COPRA_SEEK_MODE_ABSOLUTE), 0);
    if (h) *h = file;
    return 0;
}

static const char *expect_contents(const char *path, const void *want, u64 n) {
    static unsigned char buf[16384];
    EXPECT_OK(file, path, open_as(path, COPRA_FILE_MODE_READ));
    u64 total = 0;
    for (;;) {
        EXPECT_OK(got, "READ", sys_read(file, buf + total, sizeof buf - total));
        if (got == 0) break;
        total += got;
        ENSURE(total < sizeof buf, "file larger than the suite's buffer");
    }
    if (total != n) return got_value("size of the contents", total, n);
    ENSURE(mem_eq(buf, want, n), "the contents differ");
    return 0;
}

static u64 position(u64 h) { return sys_seek(h, 0, COPRA_SEEK_MODE_RELATIVE); }

/* A directory holding the file "a" (5 bytes) and the directory "d", in that order. */
static const char *make_listing(const char *dir) {
    static char path[128];
    size_t n = str_len(dir);
    EXPECT_VALUE("MKDIR", sys_mkdir(dir), 0);
    memcpy(path, dir, n);
    memcpy(path + n, "/a", 3);
    TRY(make_file(path, "12345", 5, 0));
    path[n + 1] = 'd';
    EXPECT_VALUE("MKDIR", sys_mkdir(path), 0);
    return 0;
}

static const char *expect_listing(const char *dir, const char *const *names, int count) {
    dirent_t ents[8];
    EXPECT_OK(h, "OPENDIR", track(sys_opendir(dir)));
    EXPECT_OK(n, "READDIR", sys_readdir(h, ents, 8));
    if (n != (u64)count) return got_value("READDIR count", n, (u64)count);
    for (int i = 0; i < count; i++)
        ENSURE(mem_eq(ents[i].name, names[i], str_len(names[i]) + 1), "names or order differ");
    return 0;
}

/* --- memory helpers ------------------------------------------------------------------ */

/* 1 if the kernel can copy from [addr, addr + len) (a WRITE to a file), 0 if not. */
static int readable(u64 addr, u64 len) {
    u64 probe = create(PROBE);
    return !is_error(probe) && sys_write(probe, (void *)addr, len) == len;
}

/* 1 if the kernel can copy to [addr, addr + len); the bytes are copied out and back. */
static int writable(u64 addr, u64 len) {
    if (!readable(addr, len)) return 0;
    u64 probe = open_as(PROBE, RW);
    return !is_error(probe) && sys_read(probe, (void *)addr, len) == len;
}

static u64 slot(u64 n) { return FIXED_AREA + n * UINT64_C(0x1000000); }

static u64 pages(u64 len) { return (len + PAGE - 1) / PAGE * PAGE; }

/* MMAP, checked to be in the MMAP area and readable before anybody touches it. */
static const char *map(u64 h, u64 hint, u64 off, u64 len, u64 flags, u64 *addr) {
    EXPECT_OK(at, "MMAP", track_map(sys_mmap(h, hint, off, len, flags), pages(len)));
    ENSURE(at % PAGE == 0 && at >= COPRA_USER_START && at + pages(len) <= COPRA_USER_MAP_END,
           "MMAP returned an address outside the MMAP area");
    for (u64 i = 0; i < pages(len); i += PAGE)
        ENSURE(readable(at + i, PAGE), "a page of the mapping is not readable");
    *addr = at;
    return 0;
}

static const char *mmap_errno(u64 h, u64 hint, u64 off, u64 len, u64 flags, u64 want,
                              const char *want_name) {
    u64 rax = sys_mmap(h, hint, off, len, flags);
    if (!is_error(rax)) sys_munmap(rax, pages(len ? len : 1));
    if (rax != want) return got_want("MMAP", rax, want_name);
    return 0;
}
#define MMAP_ERRNO(h, hint, off, len, flags, e) \
    TRY(mmap_errno(h, hint, off, len, flags, ERR(e), #e))

static unsigned char at(u64 addr) { return *(volatile unsigned char *)addr; }
static void set(u64 addr, unsigned char v) { *(volatile unsigned char *)addr = v; }

/* A read-only static: its page is mapped without write access. */
static const unsigned char READ_ONLY[64] = {0x5A, 1, 2, 3, 4, 5, 6, 7, 8, 9};

/* --- children ------------------------------------------------------------------------ */

static u64 exited(u64 code) { return code << COPRA_EXIT_STATUS_SHIFT; }
static u64 killed(u64 vector) { return (vector << 8) | COPRA_KILLED_BY_EXCEPTION; }

static const char *set_action(const char *action) {
    EXPECT_OK(file, "OPEN action", create(ACTION));
    EXPECT_VALUE("WRITE action", sys_write(file, action, str_len(action)), str_len(action));
    return 0;
}

static const char *run_child(const char *action, u64 *status) {
    TRY(set_action(action));
    EXPECT_OK(task, "EXEC", sys_exec(CHILD, "/", 0));
    EXPECT_OK(got, "WAIT", sys_wait(task));
    sys_unlink(ACTION);
    *status = got;
    return 0;
}

static const char *expect_child(const char *action, u64 want) {
    u64 status = 0;
    TRY(run_child(action, &status));
    if (status != want) return got_value(action, status, want);
    return 0;
}

static u64 parse_number(const char *s) {
    u64 v = 0;
    if (s[0] == '0' && s[1] == 'x') {
        for (s += 2; *s; s++) v = v * 16 + (u64)(*s <= '9' ? *s - '0' : (*s | 0x20) - 'a' + 10);
    } else {
        for (; *s >= '0' && *s <= '9'; s++) v = v * 10 + (u64)(*s - '0');
    }
    return v;
}

static int starts(const char *s, const char *prefix) {
    return mem_eq(s, prefix, str_len(prefix));
}

/* The child's side; never returns. */
__attribute__((noreturn)) static void child(u64 action_file) {
    char action[64] = {0};
    sys_read(action_file, action, sizeof action - 1);
    sys_close(action_file);
    if (starts(action, "exit ")) sys_exit(parse_number(action + 5));
    if (starts(action, "first-handle")) {
        u64 h = sys_open(ACTION, COPRA_FILE_MODE_READ, 0);
        sys_exit(h == 1 ? 0 : 1);
    }
    if (starts(action, "close-log")) {
        static const char line[] = "cconf child: before CLOSE 0\n";
        if (sys_write(0, line, sizeof line - 1) != sizeof line - 1) sys_exit(1);
        if (sys_close(0) != 0) sys_exit(2);
        if (sys_write(0, line, sizeof line - 1) != ERR(ENOTFOUND)) sys_exit(3);
        if (sys_open(ACTION, COPRA_FILE_MODE_READ, 0) != 0) sys_exit(4);
        sys_exit(0);
    }
    if (starts(action, "touch-wild")) (void)at(UNMAPPED);
    if (starts(action, "ud2")) __builtin_trap();
    if (starts(action, "store-read-only")) {
        u64 m = sys_mmap(NO_HANDLE, 0, 0, PAGE, ANON_R);
        if (is_error(m)) sys_exit(2);
        set(m, 1);
    }
    if (starts(action, "touch-after-munmap")) {
        u64 m = sys_mmap(NO_HANDLE, 0, 0, PAGE, ANON_R | COPRA_MAP_FLAG_WRITE);
        if (is_error(m) || sys_munmap(m, PAGE) != 0) sys_exit(2);
        (void)at(m);
    }
    if (starts(action, "fixed-over-image")) {
        extern void _start(void);
        u64 text = (u64)&_start & ~(PAGE - 1);
        u64 rax = sys_mmap(NO_HANDLE, text, 0, PAGE, ANON_R | COPRA_MAP_FLAG_FIXED);
        sys_exit(rax == ERR(EEXIST) ? 0 : is_error(rax) ? 2 : 1);
    }
    sys_exit(0xEE); /* an unknown action, or a fault that did not happen */
}

/* === class 0: EXIT, EXEC, WAIT ========================================================== */

static const char *exit_code_reaches_wait_shifted_by_16(void) {
    return expect_child("exit 42", exited(42));
}

static const char *exit_keeps_only_the_low_16_bits_of_the_code(void) {
    return expect_child("exit 0x12345", exited(0x2345));
}

static const char *exec_returns_a_task_id_of_at_least_2(void) {
    TRY(set_action("exit 0"));
    EXPECT_OK(task, "EXEC", sys_exec(CHILD, "/", 0));
    EXPECT_VALUE("WAIT", sys_wait(task), exited(0));
    ENSURE(task >= 2, "task id below 2");
    return 0;
}

static const char *exec_gives_each_child_its_own_task_id(void) {
    TRY(set_action("exit 0"));
    EXPECT_OK(a, "EXEC", sys_exec(CHILD, "/", 0));
    EXPECT_OK(b, "EXEC", sys_exec(CHILD, "/", 0));
    EXPECT_VALUE("WAIT", sys_wait(a), exited(0));
    EXPECT_VALUE("WAIT", sys_wait(b), exited(0));
    ENSURE(a != b, "two children got the same task id");
    return 0;
}

static const char *exec_of_missing_file_returns_enotfound(void) {
    EXPECT_ERRNO("EXEC", sys_exec(S("no-such-program"), "/", 0), ENOTFOUND);
    return 0;
}

static const char *exec_of_non_elf_file_returns_enoexec(void) {
    TRY(make_file(S("script"), "#!/bin/sh\necho hello\n", 21, 0));
    EXPECT_ERRNO("EXEC", sys_exec(S("script"), "/", 0), ENOEXEC);
    return 0;
}

static const char *exec_of_directory_returns_eisdir(void) {
    EXPECT_ERRNO("EXEC", sys_exec(SCRATCH, "/", 0), EISDIR);
    return 0;
}

static const char *exec_with_empty_root_returns_einval(void) {
    EXPECT_ERRNO("EXEC", sys_exec(CHILD, "", 0), EINVAL);
    return 0;
}

static const char *exec_with_nonzero_flags_returns_einval(void) {
    EXPECT_ERRNO("EXEC", sys_exec(CHILD, "/", 1), EINVAL);
    return 0;
}

static const char *exec_with_unmapped_path_returns_efault(void) {
    EXPECT_ERRNO("EXEC", sys3(COPRA_SYS_EXEC, UNMAPPED, (u64) "/", 0), EFAULT);
    return 0;
}

static const char *exec_child_starts_with_only_the_log_handle(void) {
    return expect_child("first-handle", exited(0));
}

static const char *wait_for_unknown_task_returns_enotfound(void) {
    EXPECT_ERRNO("WAIT", sys_wait(0xFFFFFFF0), ENOTFOUND);
    return 0;
}

static const char *wait_for_reaped_child_returns_enotfound(void) {
    TRY(set_action("exit 0"));
    EXPECT_OK(task, "EXEC", sys_exec(CHILD, "/", 0));
    EXPECT_VALUE("first WAIT", sys_wait(task), exited(0));
    EXPECT_ERRNO("second WAIT", sys_wait(task), ENOTFOUND);
    return 0;
}

static const char *wait_reports_invalid_opcode_as_killed_by_vector_6(void) {
    return expect_child("ud2", killed(6));
}

static const char *wait_reports_page_fault_as_killed_by_vector_14(void) {
    return expect_child("touch-wild", killed(14));
}

/* === class 0: CLOSE and handles ========================================================= */

static const char *close_of_open_handle_returns_0(void) {
    u64 h;
    TRY(make_file(S("close"), "x", 1, &h));
    EXPECT_VALUE("CLOSE", sys_close(h), 0);
    return 0;
}

static const char *close_twice_returns_enotfound(void) {
    u64 h;
    TRY(make_file(S("close-twice"), "x", 1, &h));
    EXPECT_VALUE("first CLOSE", sys_close(h), 0);
    EXPECT_ERRNO("second CLOSE", sys_close(h), ENOTFOUND);
    return 0;
}

static const char *close_of_never_opened_handle_returns_enotfound(void) {
    EXPECT_ERRNO("CLOSE", sys_close(999), ENOTFOUND);
    return 0;
}

static const char *closed_handle_is_unusable(void) {
    u64 h;
    char buf[4];
    TRY(make_file(S("closed"), "abc", 3, &h));
    EXPECT_VALUE("CLOSE", sys_close(h), 0);
    EXPECT_ERRNO("READ", sys_read(h, buf, 4), ENOTFOUND);
    EXPECT_ERRNO("SEEK", sys_seek(h, 0, 0), ENOTFOUND);
    return 0;
}

static const char *log_handle_0_is_usable_until_closed(void) {
    return expect_child("close-log", exited(0));
}

static const char *handles_are_allocated_lowest_free_first(void) {
    u64 a, b;
    TRY(make_file(S("lowest-a"), "a", 1, &a));
    TRY(make_file(S("lowest-b"), "b", 1, &b));
    ENSURE(a < b, "the second OPEN got a lower id");
    EXPECT_VALUE("CLOSE", sys_close(a), 0);
    EXPECT_VALUE("OPEN after CLOSE", open_as(S("lowest-b"), COPRA_FILE_MODE_READ), a);
    return 0;
}

static const char *handle_argument_ignores_the_upper_32_bits(void) {
    u64 h;
    char buf[3];
    TRY(make_file(S("upper-bits"), "xyz", 3, &h));
    EXPECT_VALUE("READ", sys_read(h | UINT64_C(0xABCD000000000000), buf, 3), 3);
    ENSURE(mem_eq(buf, "xyz", 3), "read other bytes");
    return 0;
}

/* === class 1: OPEN ====================================================================== */

static const char *open_of_missing_file_returns_enotfound(void) {
    EXPECT_ERRNO("OPEN", sys_open(S("missing"), COPRA_FILE_MODE_READ, 0), ENOTFOUND);
    return 0;
}

static const char *open_create_makes_an_empty_file(void) {
    EXPECT_OK(h, "OPEN", track(sys_open(S("new"), RW, COPRA_FILE_FLAG_CREATE)));
    EXPECT_VALUE("SEEK END", sys_seek(h, 0, COPRA_SEEK_MODE_END), 0);
    return expect_contents(S("new"), "", 0);
}

static const char *open_create_of_existing_file_opens_it_unchanged(void) {
    TRY(make_file(S("existing"), "keep", 4, 0));
    EXPECT_OK(h, "OPEN", track(sys_open(S("existing"), RW, COPRA_FILE_FLAG_CREATE)));
    (void)h;
    return expect_contents(S("existing"), "keep", 4);
}

static const char *open_create_of_new_file_is_read_write_whatever_the_mode(void) {
    char byte;
    EXPECT_OK(h, "OPEN", track(sys_open(S("created-ro"), COPRA_FILE_MODE_READ,
                                        COPRA_FILE_FLAG_CREATE)));
    EXPECT_VALUE("WRITE", sys_write(h, "w", 1), 1);
    EXPECT_VALUE("SEEK", sys_seek(h, 0, 0), 0);
    EXPECT_VALUE("READ", sys_read(h, &byte, 1), 1);
    return 0;
}

static const char *open_create_of_existing_file_keeps_the_requested_access(void) {
    TRY(make_file(S("existing-ro"), "data", 4, 0));
    EXPECT_OK(h, "OPEN", track(sys_open(S("existing-ro"), COPRA_FILE_MODE_READ,
                                        COPRA_FILE_FLAG_CREATE)));
    EXPECT_ERRNO("WRITE", sys_write(h, "x", 1), ERDONLY);
    return 0;
}

static const char *open_with_mode_0_can_neither_read_nor_write(void) {
    char buf[4];
    TRY(make_file(S("mode0"), "data", 4, 0));
    EXPECT_OK(h, "OPEN", open_as(S("mode0"), 0));
    EXPECT_ERRNO("READ", sys_read(h, buf, 4), EWRONLY);
    EXPECT_ERRNO("WRITE", sys_write(h, "x", 1), ERDONLY);
    return 0;
}

static const char *open_read_only_then_write_returns_erdonly(void) {
    TRY(make_file(S("ro"), "data", 4, 0));
    EXPECT_OK(h, "OPEN", open_as(S("ro"), COPRA_FILE_MODE_READ));
    EXPECT_ERRNO("WRITE", sys_write(h, "x", 1), ERDONLY);
    return expect_contents(S("ro"), "data", 4);
}

static const char *open_write_only_then_read_returns_ewronly(void) {
    char buf[4];
    TRY(make_file(S("wo"), "data", 4, 0));
    EXPECT_OK(h, "OPEN", open_as(S("wo"), COPRA_FILE_MODE_WRITE));
    EXPECT_ERRNO("READ", sys_read(h, buf, 4), EWRONLY);
    return 0;
}

static const char *open_append_starts_at_the_end_of_file(void) {
    TRY(make_file(S("append"), "0123", 4, 0));
    EXPECT_OK(h, "OPEN", open_as(S("append"), COPRA_FILE_MODE_WRITE | COPRA_FILE_MODE_APPEND));
    EXPECT_VALUE("position", position(h), 4);
    EXPECT_VALUE("WRITE", sys_write(h, "45", 2), 2);
    return expect_contents(S("append"), "012345", 6);
}

static const char *open_append_moves_to_the_end_only_once(void) {
    TRY(make_file(S("append-once"), "0123", 4, 0));
    EXPECT_OK(h, "OPEN",
              open_as(S("append-once"), COPRA_FILE_MODE_WRITE | COPRA_FILE_MODE_APPEND));
    EXPECT_VALUE("SEEK", sys_seek(h, 0, 0), 0);
    EXPECT_VALUE("WRITE", sys_write(h, "ab", 2), 2);
    return expect_contents(S("append-once"), "ab23", 4);
}

static const char *open_trunc_with_write_empties_the_file(void) {
    TRY(make_file(S("trunc"), "data", 4, 0));
    EXPECT_OK(h, "OPEN", open_as(S("trunc"), COPRA_FILE_MODE_WRITE | COPRA_FILE_MODE_TRUNC));
    (void)h;
    return expect_contents(S("trunc"), "", 0);
}

static const char *open_trunc_without_write_returns_erdonly(void) {
    TRY(make_file(S("trunc-ro"), "data", 4, 0));
    EXPECT_ERRNO("OPEN",
                 track(sys_open(S("trunc-ro"), COPRA_FILE_MODE_READ | COPRA_FILE_MODE_TRUNC, 0)),
                 ERDONLY);
    return expect_contents(S("trunc-ro"), "data", 4);
}

static const char *open_with_unknown_mode_bits_returns_einval(void) {
    static const u64 modes[] = {0x10, 0x1F, UINT64_C(1) << 32, UINT64_C(1) << 63};
    TRY(make_file(S("bad-mode"), "x", 1, 0));
    for (size_t i = 0; i < 4; i++)
        EXPECT_ERRNO("OPEN with a bad mode", track(sys_open(S("bad-mode"), modes[i], 0)), EINVAL);
    return 0;
}

static const char *open_with_unknown_flag_bits_returns_einval(void) {
    static const u64 flags[] = {2, 3, UINT64_C(1) << 40, UINT64_MAX};
    TRY(make_file(S("bad-flags"), "x", 1, 0));
    for (size_t i = 0; i < 4; i++)
        EXPECT_ERRNO("OPEN with bad flags", track(sys_open(S("bad-flags"), 1, flags[i])), EINVAL);
    return 0;
}

static const char *open_of_directory_returns_eisdir(void) {
    EXPECT_ERRNO("OPEN", track(sys_open(SCRATCH, COPRA_FILE_MODE_READ, 0)), EISDIR);
    return 0;
}

static const char *open_create_of_directory_returns_eisdir(void) {
    EXPECT_ERRNO("OPEN", track(sys_open(SCRATCH, RW, COPRA_FILE_FLAG_CREATE)), EISDIR);
    return 0;
}

static const char *open_of_path_through_a_file_returns_enotdir(void) {
    TRY(make_file(S("plain"), "x", 1, 0));
    EXPECT_ERRNO("OPEN", track(sys_open(S("plain/x"), COPRA_FILE_MODE_READ, 0)), ENOTDIR);
    return 0;
}

static const char *open_create_with_missing_parent_returns_enotfound(void) {
    EXPECT_ERRNO("OPEN", track(sys_open(S("no-dir/x"), RW, COPRA_FILE_FLAG_CREATE)), ENOTFOUND);
    return 0;
}

static const char *open_of_root_or_empty_path_returns_einval(void) {
    EXPECT_ERRNO("OPEN /", track(sys_open("/", COPRA_FILE_MODE_READ, 0)), EINVAL);
    EXPECT_ERRNO("OPEN \"\"", track(sys_open("", COPRA_FILE_MODE_READ, 0)), EINVAL);
    EXPECT_ERRNO("OPEN ///", track(sys_open("///", RW, COPRA_FILE_FLAG_CREATE)), EINVAL);
    return 0;
}

static const char *open_of_4096_byte_path_returns_enametoolong(void) {
    static char path[COPRA_PATH_MAX + 1];
    memset(path, 'a', sizeof path);
    path[0] = '/';
    path[COPRA_PATH_MAX] = 0; /* the NUL is byte 4097: one past PATH_MAX */
    EXPECT_ERRNO("OPEN", track(sys_open(path, COPRA_FILE_MODE_READ, 0)), ENAMETOOLONG);
    return 0;
}

static const char *long_name(size_t n) {
    static char path[300];
    size_t prefix = str_len(S(""));
    memcpy(path, S(""), prefix);
    memset(path + prefix, 'n', n);
    path[prefix + n] = 0;
    return path;
}

static const char *open_create_with_255_byte_name_succeeds(void) {
    const char *path = long_name(COPRA_NAME_MAX);
    EXPECT_OK(h, "OPEN", track(sys_open(path, RW, COPRA_FILE_FLAG_CREATE)));
    (void)h;
    EXPECT_VALUE("UNLINK", sys_unlink(path), 0);
    return 0;
}

static const char *open_create_with_256_byte_name_returns_enametoolong(void) {
    EXPECT_ERRNO("OPEN", track(sys_open(long_name(COPRA_NAME_MAX + 1), RW,
                                        COPRA_FILE_FLAG_CREATE)), ENAMETOOLONG);
    return 0;
}

static const char *open_of_non_utf8_path_returns_einval(void) {
    EXPECT_ERRNO("OPEN", track(sys_open(S("bad\xff"), RW, COPRA_FILE_FLAG_CREATE)), EINVAL);
    return 0;
}

static const char *open_of_unmapped_path_returns_efault(void) {
    EXPECT_ERRNO("OPEN", track(sys_open((const char *)UNMAPPED, COPRA_FILE_MODE_READ, 0)),
                 EFAULT);
    return 0;
}

static const char *open_of_kernel_half_path_returns_efault(void) {
    EXPECT_ERRNO("OPEN", track(sys_open((const char *)KERNEL_HALF, COPRA_FILE_MODE_READ, 0)),
                 EFAULT);
    return 0;
}

static const char *open_of_non_canonical_path_returns_efault(void) {
    EXPECT_ERRNO("OPEN",
                 track(sys_open((const char *)NON_CANONICAL, COPRA_FILE_MODE_READ, 0)), EFAULT);
    return 0;
}

static const char *open_ignores_repeated_and_trailing_slashes(void) {
    char byte = 0;
    TRY(make_file(S("slashes"), "s", 1, 0));
    EXPECT_OK(h, "OPEN", open_as("//tmp///cconf//slashes/", COPRA_FILE_MODE_READ));
    EXPECT_VALUE("READ", sys_read(h, &byte, 1), 1);
    ENSURE(byte == 's', "read another byte");
    return 0;
}

static const char *open_treats_dot_as_an_ordinary_name(void) {
    TRY(make_file(S("dotted"), "d", 1, 0));
    EXPECT_ERRNO("OPEN ./dotted", track(sys_open(S("./dotted"), COPRA_FILE_MODE_READ, 0)),
                 ENOTFOUND);
    EXPECT_ERRNO("OPEN sub/../dotted",
                 track(sys_open(S("sub/../dotted"), COPRA_FILE_MODE_READ, 0)), ENOTFOUND);
    return 0;
}

/* === class 1: READ and WRITE ============================================================ */

static const char *write_returns_the_count_and_advances_the_position(void) {
    EXPECT_OK(h, "OPEN", create(S("write")));
    EXPECT_VALUE("WRITE", sys_write(h, "hello", 5), 5);
    EXPECT_VALUE("position", position(h), 5);
    return expect_contents(S("write"), "hello", 5);
}

static const char *read_returns_bytes_from_the_position(void) {
    u64 h;
    char buf[4];
    TRY(make_file(S("read"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK", sys_seek(h, 3, 0), 3);
    EXPECT_VALUE("READ", sys_read(h, buf, 4), 4);
    ENSURE(mem_eq(buf, "3456", 4), "read other bytes");
    EXPECT_VALUE("position", position(h), 7);
    return 0;
}

static const char *read_at_end_of_file_returns_0(void) {
    u64 h;
    char buf[4];
    TRY(make_file(S("read-eof"), "abc", 3, &h));
    EXPECT_VALUE("SEEK", sys_seek(h, 3, 0), 3);
    EXPECT_VALUE("READ", sys_read(h, buf, 4), 0);
    return 0;
}

static const char *read_near_the_end_returns_the_remaining_bytes(void) {
    u64 h;
    char buf[8];
    TRY(make_file(S("read-tail"), "abcdef", 6, &h));
    EXPECT_VALUE("SEEK", sys_seek(h, 4, 0), 4);
    EXPECT_VALUE("READ", sys_read(h, buf, 8), 2);
    ENSURE(mem_eq(buf, "ef", 2), "read other bytes");
    return 0;
}

static const char *read_and_write_of_0_bytes_return_0(void) {
    u64 h;
    char buf[1];
    TRY(make_file(S("zero"), "abc", 3, &h));
    EXPECT_VALUE("READ 0", sys_read(h, buf, 0), 0);
    EXPECT_VALUE("WRITE 0", sys_write(h, buf, 0), 0);
    EXPECT_VALUE("position", position(h), 0);
    return 0;
}

static const char *write_spanning_pages_reads_back_intact(void) {
    static unsigned char data[3 * 4096 + 100];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (unsigned char)(i % 251);
    TRY(make_file(S("span"), data, sizeof data, 0));
    return expect_contents(S("span"), data, sizeof data);
}

static const char *positions_are_per_handle(void) {
    u64 a;
    char byte;
    TRY(make_file(S("per-handle"), "0123", 4, &a));
    EXPECT_OK(b, "OPEN", open_as(S("per-handle"), COPRA_FILE_MODE_READ));
    EXPECT_VALUE("SEEK", sys_seek(a, 3, 0), 3);
    EXPECT_VALUE("READ", sys_read(b, &byte, 1), 1);
    ENSURE(byte == '0', "the second handle did not start at 0");
    return 0;
}

static const char *write_is_visible_through_another_handle(void) {
    u64 a;
    char buf[3];
    TRY(make_file(S("shared"), "abc", 3, &a));
    EXPECT_OK(b, "OPEN", open_as(S("shared"), COPRA_FILE_MODE_READ));
    EXPECT_VALUE("WRITE", sys_write(a, "XY", 2), 2);
    EXPECT_VALUE("READ", sys_read(b, buf, 3), 3);
    ENSURE(mem_eq(buf, "XYc", 3), "the write does not show");
    return 0;
}

static const char *write_past_end_of_file_leaves_a_zero_filled_gap(void) {
    u64 a;
    TRY(make_file(S("gap"), "0123456789", 10, &a));
    EXPECT_VALUE("SEEK", sys_seek(a, 10, 0), 10);
    EXPECT_OK(b, "OPEN", open_as(S("gap"), RW));
    EXPECT_VALUE("TRUNCATE", sys_truncate(b, 2), 2);
    EXPECT_VALUE("WRITE", sys_write(a, "!", 1), 1);
    return expect_contents(S("gap"), "01\0\0\0\0\0\0\0\0!", 11);
}

static const char *read_of_log_handle_returns_ewronly(void) {
    char buf[4];
    EXPECT_ERRNO("READ 0", sys_read(0, buf, 4), EWRONLY);
    return 0;
}

static const char *write_of_0_bytes_to_log_handle_returns_0(void) {
    EXPECT_VALUE("WRITE 0", sys_write(0, "", 0), 0);
    return 0;
}

static const char *write_to_log_handle_returns_the_count(void) {
    static const char line[] = "cconf: a line through handle 0\n";
    EXPECT_VALUE("WRITE 0", sys_write(0, line, sizeof line - 1), sizeof line - 1);
    return 0;
}

static const char *log_file_holds_each_line_with_its_task_prefix(void) {
    static const char line[] = "cconf: log-file marker 7a2c\n";
    static const char tagged[] = "] cconf: log-file marker 7a2c\n";
    static char window[512 + 64];
    size_t kept = 0, need = sizeof tagged - 1;
    EXPECT_VALUE("WRITE 0", sys_write(0, line, sizeof line - 1), sizeof line - 1);
    EXPECT_OK(h, COPRA_LOG_FILE_PATH, open_as(COPRA_LOG_FILE_PATH, COPRA_FILE_MODE_READ));
    for (;;) {
        EXPECT_OK(n, "READ", sys_read(h, window + kept, sizeof window - kept));
        if (n == 0) return "the log file lacks the line just written after a `[name] ` prefix";
        size_t filled = kept + n;
        for (size_t i = 0; i + need <= filled; i++)
            if (mem_eq(window + i, tagged, need)) return 0;
        kept = filled < need - 1 ? filled : need - 1;
        memcpy(window, window + filled - kept, kept);
    }
}

static const char *read_of_unknown_handle_returns_enotfound(void) {
    char buf[4];
    EXPECT_ERRNO("READ", sys_read(1000, buf, 4), ENOTFOUND);
    return 0;
}

static const char *write_of_unknown_handle_returns_enotfound(void) {
    EXPECT_ERRNO("WRITE", sys_write(1000, "x", 1), ENOTFOUND);
    return 0;
}

static const char *read_of_directory_handle_returns_enotsupp(void) {
    char buf[4];
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(SCRATCH)));
    EXPECT_ERRNO("READ", sys_read(d, buf, 4), ENOTSUPP);
    return 0;
}

static const char *write_of_directory_handle_returns_enotsupp(void) {
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(SCRATCH)));
    EXPECT_ERRNO("WRITE", sys_write(d, "x", 1), ENOTSUPP);
    return 0;
}

static const char *read_into_unmapped_buffer_returns_efault_and_keeps_the_position(void) {
    u64 h;
    char byte;
    TRY(make_file(S("read-efault"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK", sys_seek(h, 3, 0), 3);
    EXPECT_ERRNO("READ", sys3(COPRA_SYS_READ, h, UNMAPPED, 4), EFAULT);
    EXPECT_VALUE("position", position(h), 3);
    EXPECT_VALUE("READ", sys_read(h, &byte, 1), 1);
    ENSURE(byte == '3', "the next READ got another byte");
    return 0;
}

static const char *read_into_kernel_half_returns_efault(void) {
    u64 h;
    TRY(make_file(S("read-kernel"), "0123", 4, &h));
    EXPECT_ERRNO("READ", sys3(COPRA_SYS_READ, h, KERNEL_HALF, 4), EFAULT);
    return 0;
}

static const char *read_into_read_only_memory_returns_efault(void) {
    u64 h;
    TRY(make_file(S("read-rodata"), "0123456789", 10, &h));
    EXPECT_ERRNO("READ", sys3(COPRA_SYS_READ, h, (u64)READ_ONLY, 8), EFAULT);
    EXPECT_VALUE("position", position(h), 0);
    ENSURE(*(volatile const unsigned char *)READ_ONLY == 0x5A, "read-only memory was written");
    return 0;
}

static const char *write_from_unmapped_buffer_returns_efault_and_changes_nothing(void) {
    u64 h;
    TRY(make_file(S("write-efault"), "abc", 3, &h));
    EXPECT_VALUE("SEEK", sys_seek(h, 1, 0), 1);
    EXPECT_ERRNO("WRITE", sys3(COPRA_SYS_WRITE, h, UNMAPPED, 4), EFAULT);
    EXPECT_VALUE("position", position(h), 1);
    return expect_contents(S("write-efault"), "abc", 3);
}

static const char *write_from_kernel_half_returns_efault(void) {
    u64 h;
    TRY(make_file(S("write-kernel"), "abc", 3, &h));
    EXPECT_ERRNO("WRITE", sys3(COPRA_SYS_WRITE, h, KERNEL_HALF, 4), EFAULT);
    return 0;
}

static const char *write_from_non_canonical_address_returns_efault(void) {
    u64 h;
    TRY(make_file(S("write-noncanon"), "abc", 3, &h));
    EXPECT_ERRNO("WRITE", sys3(COPRA_SYS_WRITE, h, NON_CANONICAL, 4), EFAULT);
    return 0;
}

static const char *write_from_read_only_memory_succeeds(void) {
    EXPECT_OK(h, "OPEN", create(S("write-rodata")));
    EXPECT_VALUE("WRITE", sys_write(h, READ_ONLY, sizeof READ_ONLY), sizeof READ_ONLY);
    return expect_contents(S("write-rodata"), READ_ONLY, sizeof READ_ONLY);
}

/* === class 1: SEEK ====================================================================== */

static const char *seek_absolute_sets_the_position(void) {
    u64 h;
    char byte;
    TRY(make_file(S("seek-abs"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK ABSOLUTE 7", sys_seek(h, 7, 0), 7);
    EXPECT_VALUE("READ", sys_read(h, &byte, 1), 1);
    ENSURE(byte == '7', "read another byte");
    return 0;
}

static const char *seek_absolute_past_the_end_clamps_to_the_size(void) {
    u64 h;
    TRY(make_file(S("seek-abs-clamp"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK ABSOLUTE 11", sys_seek(h, 11, 0), 10);
    EXPECT_VALUE("SEEK ABSOLUTE 2^63", sys_seek(h, UINT64_C(1) << 63, 0), 10);
    return 0;
}

static const char *seek_relative_moves_both_ways(void) {
    u64 h;
    TRY(make_file(S("seek-rel"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK", sys_seek(h, 5, 0), 5);
    EXPECT_VALUE("SEEK RELATIVE +2", sys_seek(h, 2, 1), 7);
    EXPECT_VALUE("SEEK RELATIVE -3", sys_seek(h, (u64)-3, 1), 4);
    return 0;
}

static const char *seek_relative_before_the_start_clamps_to_0(void) {
    u64 h;
    TRY(make_file(S("seek-rel-low"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK", sys_seek(h, 2, 0), 2);
    EXPECT_VALUE("SEEK RELATIVE -5", sys_seek(h, (u64)-5, 1), 0);
    return 0;
}

static const char *seek_relative_past_the_end_clamps_to_the_size(void) {
    u64 h;
    TRY(make_file(S("seek-rel-high"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK RELATIVE +50", sys_seek(h, 50, 1), 10);
    return 0;
}

static const char *seek_end_0_goes_to_the_size(void) {
    u64 h;
    TRY(make_file(S("seek-end"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK END 0", sys_seek(h, 0, 2), 10);
    return 0;
}

static const char *seek_end_with_positive_offset_moves_backwards(void) {
    u64 h;
    TRY(make_file(S("seek-end-back"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK END 3", sys_seek(h, 3, 2), 7);
    return 0;
}

static const char *seek_end_beyond_the_size_clamps_to_0(void) {
    u64 h;
    TRY(make_file(S("seek-end-low"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK END 20", sys_seek(h, 20, 2), 0);
    return 0;
}

static const char *seek_with_unknown_mode_returns_einval(void) {
    u64 h;
    TRY(make_file(S("seek-mode"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK", sys_seek(h, 4, 0), 4);
    EXPECT_ERRNO("SEEK mode 3", sys_seek(h, 1, 3), EINVAL);
    EXPECT_ERRNO("SEEK mode 2^32", sys_seek(h, 1, UINT64_C(1) << 32), EINVAL);
    EXPECT_VALUE("position", position(h), 4);
    return 0;
}

static const char *seek_of_directory_handle_returns_enotsupp(void) {
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(SCRATCH)));
    EXPECT_ERRNO("SEEK directory", sys_seek(d, 0, 0), ENOTSUPP);
    return 0;
}

static const char *seek_of_directory_with_unknown_mode_returns_einval(void) {
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(SCRATCH)));
    EXPECT_ERRNO("SEEK directory mode 7", sys_seek(d, 0, 7), EINVAL);
    return 0;
}

static const char *seek_of_log_handle_returns_0(void) {
    for (u64 mode = 0; mode < 3; mode++) EXPECT_VALUE("SEEK log", sys_seek(0, 5, mode), 0);
    EXPECT_ERRNO("SEEK log mode 3", sys_seek(0, 0, 3), EINVAL);
    return 0;
}

static const char *seek_of_unknown_handle_returns_enotfound(void) {
    EXPECT_ERRNO("SEEK", sys_seek(1000, 0, 0), ENOTFOUND);
    return 0;
}

/* === class 1: TRUNCATE ================================================================== */

static const char *truncate_shrinks_and_returns_the_new_size(void) {
    u64 h;
    TRY(make_file(S("trunc-shrink"), "0123456789", 10, &h));
    EXPECT_VALUE("TRUNCATE 4", sys_truncate(h, 4), 4);
    return expect_contents(S("trunc-shrink"), "0123", 4);
}

static const char *truncate_to_the_same_size_returns_it(void) {
    u64 h;
    TRY(make_file(S("trunc-same"), "0123456789", 10, &h));
    EXPECT_VALUE("TRUNCATE 10", sys_truncate(h, 10), 10);
    return expect_contents(S("trunc-same"), "0123456789", 10);
}

static const char *truncate_to_grow_returns_einval(void) {
    u64 h;
    TRY(make_file(S("trunc-grow"), "0123", 4, &h));
    EXPECT_ERRNO("TRUNCATE 5", sys_truncate(h, 5), EINVAL);
    return expect_contents(S("trunc-grow"), "0123", 4);
}

static const char *truncate_without_write_returns_erdonly(void) {
    TRY(make_file(S("trunc-ro"), "0123", 4, 0));
    EXPECT_OK(h, "OPEN", open_as(S("trunc-ro"), COPRA_FILE_MODE_READ));
    EXPECT_ERRNO("TRUNCATE", sys_truncate(h, 0), ERDONLY);
    return 0;
}

static const char *truncate_pulls_the_position_back(void) {
    u64 h;
    TRY(make_file(S("trunc-pos"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK", sys_seek(h, 8, 0), 8);
    EXPECT_VALUE("TRUNCATE 3", sys_truncate(h, 3), 3);
    EXPECT_VALUE("position", position(h), 3);
    return 0;
}

static const char *truncate_then_growth_shows_zeros_not_old_data(void) {
    static unsigned char want[101];
    u64 a;
    memset(want, 'x', 100);
    TRY(make_file(S("trunc-stale"), want, 100, &a));
    EXPECT_VALUE("SEEK", sys_seek(a, 100, 0), 100);
    EXPECT_OK(b, "OPEN", open_as(S("trunc-stale"), RW));
    EXPECT_VALUE("TRUNCATE 10", sys_truncate(b, 10), 10);
    EXPECT_VALUE("WRITE", sys_write(a, "!", 1), 1);
    memset(want + 10, 0, 90);
    want[100] = '!';
    return expect_contents(S("trunc-stale"), want, 101);
}

static const char *truncate_of_non_file_handles_returns_enotsupp(void) {
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(SCRATCH)));
    EXPECT_ERRNO("TRUNCATE directory", sys_truncate(d, 0), ENOTSUPP);
    EXPECT_ERRNO("TRUNCATE log", sys_truncate(0, 0), ENOTSUPP);
    return 0;
}

static const char *truncate_of_unknown_handle_returns_enotfound(void) {
    EXPECT_ERRNO("TRUNCATE", sys_truncate(1000, 0), ENOTFOUND);
    return 0;
}

/* === class 1: UNLINK ===================================================================== */

static const char *unlink_removes_the_name(void) {
    TRY(make_file(S("doomed"), "x", 1, 0));
    EXPECT_VALUE("UNLINK", sys_unlink(S("doomed")), 0);
    EXPECT_ERRNO("OPEN", track(sys_open(S("doomed"), COPRA_FILE_MODE_READ, 0)), ENOTFOUND);
    return 0;
}

static const char *unlink_of_directory_returns_eisdir(void) {
    EXPECT_VALUE("MKDIR", sys_mkdir(S("unlink-dir")), 0);
    EXPECT_ERRNO("UNLINK", sys_unlink(S("unlink-dir")), EISDIR);
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(S("unlink-dir"))));
    (void)d;
    return 0;
}

static const char *unlink_of_missing_file_returns_enotfound(void) {
    EXPECT_ERRNO("UNLINK", sys_unlink(S("never")), ENOTFOUND);
    return 0;
}

static const char *unlink_of_root_returns_einval(void) {
    EXPECT_ERRNO("UNLINK /", sys_unlink("/"), EINVAL);
    return 0;
}

static const char *unlinked_file_stays_usable_through_open_handles(void) {
    u64 h;
    char buf[10];
    TRY(make_file(S("ghost"), "still here", 10, &h));
    EXPECT_VALUE("UNLINK", sys_unlink(S("ghost")), 0);
    EXPECT_VALUE("READ", sys_read(h, buf, 10), 10);
    ENSURE(mem_eq(buf, "still here", 10), "read other bytes");
    EXPECT_VALUE("WRITE", sys_write(h, " and growing", 12), 12);
    EXPECT_VALUE("SEEK END", sys_seek(h, 0, 2), 22);
    return 0;
}

/* === class 1: OPENDIR and READDIR ======================================================== */

static const char *readdir_fills_272_byte_dirents(void) {
    static unsigned char raw[3 * sizeof(dirent_t)];
    memset(raw, 0xAA, sizeof raw);
    TRY(make_listing(S("layout")));
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(S("layout"))));
    EXPECT_VALUE("READDIR", sys_readdir(d, raw, 3), 2);
    const dirent_t *e = (const dirent_t *)raw;
    ENSURE(sizeof(dirent_t) == 272, "DirEnt is not 272 bytes");
    ENSURE(mem_eq(e[0].name, "a", 2) && e[0].file_type == COPRA_FILE_TYPE_FILE && e[0].size == 5,
           "the first entry is not the 5-byte file a");
    ENSURE(mem_eq(e[1].name, "d", 2) && e[1].file_type == COPRA_FILE_TYPE_DIRECTORY &&
               e[1].size == 0,
           "the second entry is not the directory d");
    for (size_t i = 0; i < 7; i++) ENSURE(e[0]._pad[i] == 0, "padding is not zero");
    for (size_t i = 2 * sizeof(dirent_t); i < sizeof raw; i++)
        ENSURE(raw[i] == 0xAA, "READDIR wrote past the entries it returned");
    return 0;
}

static const char *readdir_of_root_lists_the_scratch_parent(void) {
    dirent_t ents[8];
    int found = 0;
    EXPECT_OK(d, "OPENDIR /", track(sys_opendir("/")));
    for (;;) {
        EXPECT_OK(n, "READDIR", sys_readdir(d, ents, 8));
        if (n == 0) break;
        for (u64 i = 0; i < n; i++)
            found |= mem_eq(ents[i].name, "tmp", 4) && ents[i].file_type == COPRA_FILE_TYPE_DIRECTORY;
    }
    ENSURE(found, "/ does not list the directory tmp");
    return 0;
}

static const char *readdir_with_count_0_returns_0_and_keeps_the_cursor(void) {
    dirent_t e;
    TRY(make_listing(S("count0")));
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(S("count0"))));
    EXPECT_VALUE("READDIR 0", sys_readdir(d, &e, 0), 0);
    EXPECT_VALUE("READDIR 1", sys_readdir(d, &e, 1), 1);
    ENSURE(mem_eq(e.name, "a", 2), "the first entry is not a");
    return 0;
}

static const char *readdir_one_at_a_time_then_0_at_the_end(void) {
    dirent_t e;
    TRY(make_listing(S("one-by-one")));
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(S("one-by-one"))));
    EXPECT_VALUE("READDIR", sys_readdir(d, &e, 1), 1);
    ENSURE(mem_eq(e.name, "a", 2), "first is not a");
    EXPECT_VALUE("READDIR", sys_readdir(d, &e, 1), 1);
    ENSURE(mem_eq(e.name, "d", 2), "second is not d");
    EXPECT_VALUE("READDIR at the end", sys_readdir(d, &e, 1), 0);
    EXPECT_VALUE("READDIR again", sys_readdir(d, &e, 1), 0);
    return 0;
}

static const char *readdir_of_empty_directory_returns_0(void) {
    dirent_t e;
    EXPECT_VALUE("MKDIR", sys_mkdir(S("empty")), 0);
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(S("empty"))));
    EXPECT_VALUE("READDIR", sys_readdir(d, &e, 1), 0);
    return 0;
}

static const char *readdir_is_a_snapshot_taken_at_opendir(void) {
    dirent_t ents[4];
    TRY(make_listing(S("snapshot")));
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(S("snapshot"))));
    TRY(make_file(S("snapshot/late"), "x", 1, 0));
    EXPECT_VALUE("UNLINK", sys_unlink(S("snapshot/a")), 0);
    EXPECT_VALUE("READDIR", sys_readdir(d, ents, 4), 2);
    ENSURE(mem_eq(ents[0].name, "a", 2) && mem_eq(ents[1].name, "d", 2), "the snapshot changed");
    return 0;
}

static const char *readdir_lists_in_insertion_order(void) {
    static const char *const names[] = {"c", "a", "b"};
    EXPECT_VALUE("MKDIR", sys_mkdir(S("order")), 0);
    TRY(make_file(S("order/c"), "", 0, 0));
    TRY(make_file(S("order/a"), "", 0, 0));
    TRY(make_file(S("order/b"), "", 0, 0));
    return expect_listing(S("order"), names, 3);
}

static const char *removal_moves_the_last_entry_into_the_gap(void) {
    static const char *const names[] = {"z", "y"};
    EXPECT_VALUE("MKDIR", sys_mkdir(S("swap")), 0);
    TRY(make_file(S("swap/x"), "", 0, 0));
    TRY(make_file(S("swap/y"), "", 0, 0));
    TRY(make_file(S("swap/z"), "", 0, 0));
    EXPECT_VALUE("UNLINK", sys_unlink(S("swap/x")), 0);
    return expect_listing(S("swap"), names, 2);
}

static const char *readdir_returns_a_255_byte_name_whole(void) {
    dirent_t e;
    const char *path = long_name(COPRA_NAME_MAX);
    const char *name = path + str_len(S(""));
    EXPECT_VALUE("MKDIR", sys_mkdir(S("long")), 0);
    TRY(make_file(path, "", 0, 0)); /* in SCRATCH: listed from a directory of its own */
    static char moved[300];
    size_t prefix = str_len(S("long/"));
    memcpy(moved, S("long/"), prefix);
    memcpy(moved + prefix, name, COPRA_NAME_MAX + 1);
    TRY(make_file(moved, "", 0, 0));
    EXPECT_VALUE("UNLINK", sys_unlink(path), 0);
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(S("long"))));
    EXPECT_VALUE("READDIR", sys_readdir(d, &e, 1), 1);
    ENSURE(str_len((const char *)e.name) == COPRA_NAME_MAX, "the name is not 255 bytes");
    ENSURE(mem_eq(e.name, moved + prefix, COPRA_NAME_MAX), "the name differs");
    return 0;
}

static const char *readdir_into_unmapped_buffer_returns_efault_and_keeps_the_cursor(void) {
    dirent_t e;
    TRY(make_listing(S("readdir-efault")));
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(S("readdir-efault"))));
    EXPECT_ERRNO("READDIR", sys3(COPRA_SYS_READDIR, d, UNMAPPED, 1), EFAULT);
    EXPECT_ERRNO("READDIR into read-only memory", sys3(COPRA_SYS_READDIR, d, (u64)READ_ONLY, 1),
                 EFAULT);
    EXPECT_VALUE("READDIR", sys_readdir(d, &e, 1), 1);
    ENSURE(mem_eq(e.name, "a", 2), "the cursor moved");
    return 0;
}

static const char *readdir_of_file_handle_returns_enotsupp(void) {
    u64 h;
    dirent_t e;
    TRY(make_file(S("not-a-dir"), "x", 1, &h));
    EXPECT_ERRNO("READDIR", sys_readdir(h, &e, 1), ENOTSUPP);
    return 0;
}

static const char *readdir_of_unknown_handle_returns_enotfound(void) {
    dirent_t e;
    EXPECT_ERRNO("READDIR", sys_readdir(1000, &e, 1), ENOTFOUND);
    return 0;
}

static const char *opendir_of_file_returns_enotdir(void) {
    TRY(make_file(S("opendir-file"), "x", 1, 0));
    EXPECT_ERRNO("OPENDIR", track(sys_opendir(S("opendir-file"))), ENOTDIR);
    return 0;
}

static const char *opendir_of_missing_directory_returns_enotfound(void) {
    EXPECT_ERRNO("OPENDIR", track(sys_opendir(S("no-such-dir"))), ENOTFOUND);
    return 0;
}

static const char *opendir_of_empty_path_returns_einval(void) {
    EXPECT_ERRNO("OPENDIR \"\"", track(sys_opendir("")), EINVAL);
    EXPECT_OK(root, "OPENDIR /", track(sys_opendir("/")));
    (void)root;
    return 0;
}

static const char *opendir_of_unmapped_path_returns_efault(void) {
    EXPECT_ERRNO("OPENDIR", track(sys1(COPRA_SYS_OPENDIR, UNMAPPED)), EFAULT);
    return 0;
}

/* === class 1: MKDIR and RMDIR ============================================================= */

static const char *mkdir_creates_an_empty_directory(void) {
    dirent_t e;
    EXPECT_VALUE("MKDIR", sys_mkdir(S("made")), 0);
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(S("made"))));
    EXPECT_VALUE("READDIR", sys_readdir(d, &e, 1), 0);
    return 0;
}

static const char *mkdir_of_existing_name_returns_eexist(void) {
    EXPECT_VALUE("MKDIR", sys_mkdir(S("twice")), 0);
    EXPECT_ERRNO("MKDIR again", sys_mkdir(S("twice")), EEXIST);
    TRY(make_file(S("file-there"), "x", 1, 0));
    EXPECT_ERRNO("MKDIR over a file", sys_mkdir(S("file-there")), EEXIST);
    return 0;
}

static const char *mkdir_with_missing_parent_returns_enotfound(void) {
    EXPECT_ERRNO("MKDIR", sys_mkdir(S("no-parent/child")), ENOTFOUND);
    return 0;
}

static const char *mkdir_through_a_file_returns_enotdir(void) {
    TRY(make_file(S("mkdir-file"), "x", 1, 0));
    EXPECT_ERRNO("MKDIR", sys_mkdir(S("mkdir-file/sub")), ENOTDIR);
    return 0;
}

static const char *mkdir_of_root_returns_einval(void) {
    EXPECT_ERRNO("MKDIR /", sys_mkdir("/"), EINVAL);
    return 0;
}

static const char *rmdir_removes_an_empty_directory(void) {
    EXPECT_VALUE("MKDIR", sys_mkdir(S("gone")), 0);
    EXPECT_VALUE("RMDIR", sys_rmdir(S("gone")), 0);
    EXPECT_ERRNO("OPENDIR", track(sys_opendir(S("gone"))), ENOTFOUND);
    return 0;
}

static const char *rmdir_of_non_empty_directory_returns_enotempty(void) {
    TRY(make_listing(S("full")));
    EXPECT_ERRNO("RMDIR", sys_rmdir(S("full")), ENOTEMPTY);
    return 0;
}

static const char *rmdir_of_file_returns_enotdir(void) {
    TRY(make_file(S("rmdir-file"), "x", 1, 0));
    EXPECT_ERRNO("RMDIR", sys_rmdir(S("rmdir-file")), ENOTDIR);
    return 0;
}

static const char *rmdir_of_missing_directory_returns_enotfound(void) {
    EXPECT_ERRNO("RMDIR", sys_rmdir(S("never-made")), ENOTFOUND);
    return 0;
}

static const char *rmdir_of_root_returns_einval(void) {
    EXPECT_ERRNO("RMDIR /", sys_rmdir("/"), EINVAL);
    return 0;
}

static const char *open_directory_handle_survives_rmdir(void) {
    dirent_t ents[4];
    TRY(make_listing(S("vanishing")));
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(S("vanishing"))));
    EXPECT_VALUE("UNLINK", sys_unlink(S("vanishing/a")), 0);
    EXPECT_VALUE("RMDIR", sys_rmdir(S("vanishing/d")), 0);
    EXPECT_VALUE("RMDIR", sys_rmdir(S("vanishing")), 0);
    EXPECT_VALUE("READDIR", sys_readdir(d, ents, 4), 2);
    return 0;
}

/* === class 3: CAPABILITIES ================================================================ */

static const char *capabilities_count_is_2(void) {
    EXPECT_VALUE("CAPABILITIES 0", sys_caps(COPRA_CAPABILITY_COUNT), 2);
    return 0;
}

static const char *capabilities_vm_bitmap_is_0(void) {
    EXPECT_VALUE("CAPABILITIES 1", sys_caps(COPRA_CAPABILITY_VM_BITMAP), 0);
    return 0;
}

static const char *capabilities_features_name_the_copra_kvm_platform(void) {
    EXPECT_OK(features, "CAPABILITIES 2", sys_caps(COPRA_CAPABILITY_FEATURES));
    EXPECT_VALUE("platform type", features & 7, COPRA_PLATFORM_TYPE_COPRA_KVM);
    return 0;
}

static const char *capabilities_index_3_returns_enotfound(void) {
    EXPECT_ERRNO("CAPABILITIES 3", sys_caps(3), ENOTFOUND);
    EXPECT_ERRNO("CAPABILITIES 1000", sys_caps(1000), ENOTFOUND);
    return 0;
}

/* === unknown numbers ======================================================================= */

static const char *unknown_core_index_returns_enosys_via_int80(void) {
    EXPECT_ERRNO("class 0 index 999", sys0(COPRA_SYSNO(0, 999)), ENOSYS);
    EXPECT_ERRNO("class 0 index 6", sys0(COPRA_SYSNO(0, 6)), ENOSYS);
    return 0;
}

static const char *unknown_file_index_returns_enosys(void) {
    EXPECT_ERRNO("class 1 index 10", sys0(COPRA_SYSNO(1, 10)), ENOSYS);
    return 0;
}

static const char *reserved_vmm_class_returns_enosys(void) {
    EXPECT_ERRNO("class 2 index 0", sys0(COPRA_SYSNO(2, 0)), ENOSYS);
    return 0;
}

static const char *unknown_class_returns_enosys_via_int80(void) {
    EXPECT_ERRNO("class 7", sys0(COPRA_SYSNO(7, 0)), ENOSYS);
    EXPECT_ERRNO("class 3 index 1", sys0(COPRA_SYSNO(3, 1)), ENOSYS);
    return 0;
}

static const char *known_number_with_extra_high_bits_returns_enosys(void) {
    EXPECT_ERRNO("CAPABILITIES | 1 << 63", sys0(COPRA_SYS_CAPABILITIES | UINT64_C(1) << 63),
                 ENOSYS);
    EXPECT_ERRNO("CLOSE | 1 << 40", sys0(COPRA_SYS_CLOSE | UINT64_C(1) << 40), ENOSYS);
    return 0;
}

static const char *syscall_changes_only_rax_via_int80(void) {
    register u64 rbx __asm__("rbx") = 0x0101010101010101;
    register u64 rdx __asm__("rdx") = 0x0202020202020202;
    register u64 rsi __asm__("rsi") = 0x0303030303030303;
    register u64 rdi __asm__("rdi") = COPRA_CAPABILITY_COUNT;
    register u64 r8 __asm__("r8") = 0x0808080808080808;
    register u64 r9 __asm__("r9") = 0x0909090909090909;
    register u64 r10 __asm__("r10") = 0x1010101010101010;
    register u64 r12 __asm__("r12") = 0x1212121212121212;
    register u64 r13 __asm__("r13") = 0x1313131313131313;
    register u64 r14 __asm__("r14") = 0x1414141414141414;
    register u64 r15 __asm__("r15") = 0x1515151515151515;
    u64 rax = COPRA_SYS_CAPABILITIES;
    __asm__ volatile("int $0x80"
                     : "+a"(rax), "+r"(rbx), "+r"(rdx), "+r"(rsi), "+r"(rdi), "+r"(r8),
                       "+r"(r9), "+r"(r10), "+r"(r12), "+r"(r13), "+r"(r14), "+r"(r15)
                     :
                     : "rcx", "r11", "memory");
    EXPECT_VALUE("rax", rax, 2);
    ENSURE(rbx == 0x0101010101010101 && rdx == 0x0202020202020202 && rsi == 0x0303030303030303 &&
               rdi == COPRA_CAPABILITY_COUNT && r8 == 0x0808080808080808 &&
               r9 == 0x0909090909090909 && r10 == 0x1010101010101010 &&
               r12 == 0x1212121212121212 && r13 == 0x1313131313131313 &&
               r14 == 0x1414141414141414 && r15 == 0x1515151515151515,
           "a register other than rax changed");
    return 0;
}

/* === class 0: MMAP, MUNMAP, MRESIZE ======================================================== */

static const char *mmap_anonymous_returns_zeroed_page_aligned_memory(void) {
    u64 m;
    TRY(map(NO_HANDLE, 0, 0, 3 * PAGE, ANON_R, &m));
    for (u64 i = 0; i < 3 * PAGE; i++) ENSURE(at(m + i) == 0, "not zero-filled");
    return 0;
}

static const char *mmap_anonymous_with_write_is_writable(void) {
    u64 m;
    TRY(map(NO_HANDLE, 0, 0, PAGE, ANON_R | COPRA_MAP_FLAG_WRITE, &m));
    ENSURE(writable(m, PAGE), "a READ|WRITE mapping is not writable");
    set(m + 7, 0x77);
    ENSURE(at(m + 7) == 0x77, "the store did not stick");
    return 0;
}

static const char *mmap_without_write_is_read_only(void) {
    u64 m;
    TRY(map(NO_HANDLE, 0, 0, PAGE, ANON_R, &m));
    ENSURE(!writable(m, PAGE), "a READ-only mapping is writable");
    return 0;
}

static const char *mmap_without_hint_is_placed_at_or_above_mmap_base(void) {
    u64 m;
    TRY(map(NO_HANDLE, 0, 0, PAGE, ANON_R, &m));
    ENSURE(m >= COPRA_MMAP_BASE, "placed below MMAP_BASE");
    return 0;
}

static const char *mmap_with_free_hint_uses_it(void) {
    u64 m;
    TRY(map(NO_HANDLE, slot(1), 0, PAGE, ANON_R, &m));
    EXPECT_VALUE("MMAP address", m, slot(1));
    return 0;
}

static const char *mmap_with_unknown_flag_bits_returns_einval(void) {
    MMAP_ERRNO(NO_HANDLE, 0, 0, PAGE, ANON_R | 64, EINVAL);
    return 0;
}

static const char *mmap_without_read_returns_einval(void) {
    MMAP_ERRNO(NO_HANDLE, 0, 0, PAGE, COPRA_MAP_FLAG_ANONYMOUS | COPRA_MAP_FLAG_WRITE, EINVAL);
    return 0;
}

static const char *mmap_write_and_exec_together_returns_eperm(void) {
    MMAP_ERRNO(NO_HANDLE, 0, 0, PAGE, ANON_R | COPRA_MAP_FLAG_WRITE | COPRA_MAP_FLAG_EXEC, EPERM);
    return 0;
}

static const char *mmap_with_length_0_returns_einval(void) {
    MMAP_ERRNO(NO_HANDLE, 0, 0, 0, ANON_R, EINVAL);
    return 0;
}

static const char *mmap_with_unaligned_hint_returns_einval(void) {
    MMAP_ERRNO(NO_HANDLE, slot(2) + 1, 0, PAGE, ANON_R, EINVAL);
    return 0;
}

static const char *mmap_anonymous_with_offset_returns_einval(void) {
    MMAP_ERRNO(NO_HANDLE, 0, PAGE, PAGE, ANON_R, EINVAL);
    return 0;
}

static const char *mmap_fixed_below_user_start_returns_einval(void) {
    MMAP_ERRNO(NO_HANDLE, 0, 0, PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, EINVAL);
    return 0;
}

static const char *mmap_fixed_in_kernel_half_returns_einval(void) {
    MMAP_ERRNO(NO_HANDLE, KERNEL_HALF, 0, PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, EINVAL);
    return 0;
}

static const char *mmap_fixed_at_free_address_maps_there(void) {
    u64 m;
    TRY(map(NO_HANDLE, slot(3), 0, 2 * PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, &m));
    EXPECT_VALUE("MMAP address", m, slot(3));
    return 0;
}

static const char *mmap_fixed_over_a_mapping_returns_eexist(void) {
    u64 m;
    TRY(map(NO_HANDLE, slot(4), 0, 2 * PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, &m));
    MMAP_ERRNO(NO_HANDLE, slot(4) + PAGE, 0, 2 * PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, EEXIST);
    ENSURE(readable(m, 2 * PAGE), "the first mapping went away");
    return 0;
}

static const char *mmap_fixed_over_the_program_image_returns_eexist(void) {
    return expect_child("fixed-over-image", exited(0));
}

static const char *mmap_of_file_read_only_shows_its_contents(void) {
    u64 h, m;
    TRY(make_file(S("map-ro"), "mapped bytes", 12, &h));
    TRY(map(h, 0, 0, 12, COPRA_MAP_FLAG_READ, &m));
    ENSURE(mem_eq((const void *)m, "mapped bytes", 12), "the mapping shows other bytes");
    ENSURE(at(m + 12) == 0 && at(m + PAGE - 1) == 0, "the page past EOF is not zero");
    return 0;
}

static const char *mmap_of_file_read_only_sees_later_writes(void) {
    u64 h, m;
    TRY(make_file(S("map-shared"), "0123456789", 10, &h));
    TRY(map(h, 0, 0, 10, COPRA_MAP_FLAG_READ, &m));
    EXPECT_VALUE("WRITE", sys_write(h, "LATER", 5), 5);
    ENSURE(at(m) == 'L' && at(m + 4) == 'R', "the write does not show through");
    return 0;
}

static const char *mmap_of_file_write_without_private_returns_enotsupp(void) {
    u64 h;
    TRY(make_file(S("map-shared-w"), "x", 1, &h));
    MMAP_ERRNO(h, 0, 0, PAGE, COPRA_MAP_FLAG_READ | COPRA_MAP_FLAG_WRITE, ENOTSUPP);
    return 0;
}

static const char *mmap_of_unknown_handle_returns_enotfound(void) {
    MMAP_ERRNO(1000, 0, 0, PAGE, COPRA_MAP_FLAG_READ, ENOTFOUND);
    return 0;
}

static const char *mmap_of_non_file_handles_returns_enotsupp(void) {
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(SCRATCH)));
    MMAP_ERRNO(d, 0, 0, PAGE, COPRA_MAP_FLAG_READ, ENOTSUPP);
    MMAP_ERRNO(0, 0, 0, PAGE, COPRA_MAP_FLAG_READ, ENOTSUPP);
    return 0;
}

static const char *mmap_of_file_without_read_access_returns_ewronly(void) {
    TRY(make_file(S("map-wo"), "x", 1, 0));
    EXPECT_OK(h, "OPEN", open_as(S("map-wo"), COPRA_FILE_MODE_WRITE));
    MMAP_ERRNO(h, 0, 0, PAGE, COPRA_MAP_FLAG_READ, EWRONLY);
    return 0;
}

static const char *store_to_read_only_mapping_kills_with_pf(void) {
    return expect_child("store-read-only", killed(14));
}

static const char *munmap_of_unaligned_address_returns_einval(void) {
    EXPECT_ERRNO("MUNMAP", sys_munmap(slot(5) + 1, PAGE), EINVAL);
    return 0;
}

static const char *munmap_with_length_0_returns_einval(void) {
    EXPECT_ERRNO("MUNMAP", sys_munmap(slot(5), 0), EINVAL);
    return 0;
}

static const char *munmap_outside_user_space_returns_einval(void) {
    EXPECT_ERRNO("MUNMAP kernel half", sys_munmap(KERNEL_HALF, PAGE), EINVAL);
    EXPECT_ERRNO("MUNMAP USER_END", sys_munmap(COPRA_USER_END, PAGE), EINVAL);
    EXPECT_ERRNO("MUNMAP page 0", sys_munmap(0, PAGE), EINVAL);
    return 0;
}

static const char *munmap_of_unmapped_range_returns_enotfound(void) {
    EXPECT_ERRNO("MUNMAP", sys_munmap(slot(10), 4 * PAGE), ENOTFOUND);
    return 0;
}

static const char *munmap_removes_the_mapping(void) {
    u64 m;
    TRY(map(NO_HANDLE, slot(11), 0, 2 * PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, &m));
    EXPECT_VALUE("MUNMAP", sys_munmap(m, 2 * PAGE), 0);
    ENSURE(!readable(m, 1) && !readable(m + PAGE, 1), "a page is still mapped");
    return 0;
}

static const char *munmap_of_middle_page_splits_the_mapping(void) {
    u64 m;
    TRY(map(NO_HANDLE, slot(12), 0, 3 * PAGE,
            ANON_R | COPRA_MAP_FLAG_FIXED | COPRA_MAP_FLAG_WRITE, &m));
    set(m, 1);
    set(m + 2 * PAGE, 3);
    EXPECT_VALUE("MUNMAP", sys_munmap(m + PAGE, PAGE), 0);
    ENSURE(!readable(m + PAGE, 1), "the middle page is still mapped");
    ENSURE(readable(m, PAGE) && readable(m + 2 * PAGE, PAGE), "a neighbour went");
    ENSURE(at(m) == 1 && at(m + 2 * PAGE) == 3, "the neighbours' contents changed");
    return 0;
}

static const char *load_after_munmap_kills_with_pf(void) {
    return expect_child("touch-after-munmap", killed(14));
}

static const char *mresize_of_unmapped_address_returns_enotfound(void) {
    EXPECT_ERRNO("MRESIZE", sys_mresize(slot(15), PAGE), ENOTFOUND);
    return 0;
}

static const char *mresize_of_the_program_image_returns_enotfound(void) {
    extern void _start(void);
    EXPECT_ERRNO("MRESIZE", sys_mresize((u64)&_start & ~(PAGE - 1), UINT64_C(1) << 30), ENOTFOUND);
    return 0;
}

static const char *mresize_to_length_0_returns_einval(void) {
    u64 m;
    TRY(map(NO_HANDLE, slot(18), 0, PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, &m));
    EXPECT_ERRNO("MRESIZE", sys_mresize(m, 0), EINVAL);
    ENSURE(readable(m, PAGE), "the mapping went away");
    return 0;
}

static const char *mresize_shrink_unmaps_the_tail(void) {
    u64 m;
    TRY(map(NO_HANDLE, slot(20), 0, 3 * PAGE,
            ANON_R | COPRA_MAP_FLAG_FIXED | COPRA_MAP_FLAG_WRITE, &m));
    set(m, 9);
    EXPECT_VALUE("MRESIZE", sys_mresize(m, PAGE + 1), 0);
    ENSURE(readable(m, 2 * PAGE), "the kept pages went away");
    ENSURE(!readable(m + 2 * PAGE, 1), "the tail is still mapped");
    ENSURE(at(m) == 9, "the kept contents changed");
    return 0;
}

static const char *mresize_grow_adds_zeroed_pages(void) {
    u64 m;
    TRY(map(NO_HANDLE, slot(21), 0, PAGE, ANON_R | COPRA_MAP_FLAG_FIXED | COPRA_MAP_FLAG_WRITE,
            &m));
    set(m, 0x33);
    EXPECT_VALUE("MRESIZE", sys_mresize(m, 3 * PAGE), 0);
    track_map(m, 3 * PAGE);
    ENSURE(writable(m, 3 * PAGE), "the grown mapping is not all writable");
    ENSURE(at(m) == 0x33, "the old contents changed");
    for (u64 i = PAGE; i < 3 * PAGE; i++) ENSURE(at(m + i) == 0, "a new byte is not zero");
    return 0;
}

static const char *mresize_grow_into_a_mapping_returns_enomem(void) {
    u64 a, b;
    TRY(map(NO_HANDLE, slot(22), 0, PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, &a));
    TRY(map(NO_HANDLE, slot(22) + 2 * PAGE, 0, PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, &b));
    EXPECT_ERRNO("MRESIZE", sys_mresize(a, 3 * PAGE), ENOMEM);
    ENSURE(readable(a, PAGE) && readable(b, PAGE), "a mapping went away");
    return 0;
}

/* === more of the native suite's cases ===================================================== */

static const char *exec_of_empty_file_returns_enoexec(void) {
    EXPECT_OK(h, "OPEN", create(S("empty-program")));
    (void)h;
    EXPECT_ERRNO("EXEC", sys_exec(S("empty-program"), "/", 0), ENOEXEC);
    return 0;
}

static const char *exec_of_path_through_a_file_returns_enotdir(void) {
    TRY(make_file(S("exec-file"), "x", 1, 0));
    EXPECT_ERRNO("EXEC", sys_exec(S("exec-file/prog"), "/", 0), ENOTDIR);
    return 0;
}

static const char *exec_with_missing_root_returns_enotfound(void) {
    EXPECT_ERRNO("EXEC", sys_exec(CHILD, S("no-root"), 0), ENOTFOUND);
    return 0;
}

static const char *exec_with_a_file_as_root_returns_enotdir(void) {
    TRY(make_file(S("root-file"), "x", 1, 0));
    EXPECT_ERRNO("EXEC", sys_exec(CHILD, S("root-file"), 0), ENOTDIR);
    return 0;
}

static const char *exec_root_is_the_childs_root(void) {
    EXPECT_VALUE("MKDIR", sys_mkdir(S("jail")), 0);
    EXPECT_VALUE("MKDIR", sys_mkdir(S("jail/tmp")), 0);
    EXPECT_VALUE("MKDIR", sys_mkdir(S("jail/tmp/cconf")), 0);
    TRY(make_file(S("jail/tmp/cconf/child.action"), "exit 7", 6, 0));
    TRY(set_action("exit 9"));
    EXPECT_OK(task, "EXEC", sys_exec(CHILD, S("jail"), 0));
    EXPECT_VALUE("WAIT (the child reads its action inside its root)", sys_wait(task), exited(7));
    sys_unlink(ACTION);
    return 0;
}

static const char *wait_for_task_1_returns_enotfound(void) {
    EXPECT_ERRNO("WAIT 1", sys_wait(1), ENOTFOUND);
    return 0;
}

static const char *open_beyond_the_handle_limit_returns_emfile(void) {
    static u64 ids[COPRA_MAX_HANDLES];
    const char *why = 0;
    u64 count = 0, highest = 0;
    TRY(make_file(S("limit"), "x", 1, 0));
    for (;;) {
        u64 rax = sys_open(S("limit"), COPRA_FILE_MODE_READ, 0);
        if (rax == ERR(EMFILE)) break;
        if (is_error(rax)) {
            why = got_want("OPEN", rax, "a handle or EMFILE");
            break;
        }
        if (count == COPRA_MAX_HANDLES) {
            sys_close(rax);
            why = "more than MAX_HANDLES OPENs succeeded";
            break;
        }
        ids[count++] = rax;
        if (rax > highest) highest = rax;
    }
    if (!why && highest != COPRA_MAX_HANDLES - 1) why = got_value("highest id", highest, 1023);
    if (!why && count) {
        u64 freed = ids[count / 2];
        sys_close(freed);
        ids[count / 2] = sys_open(S("limit"), COPRA_FILE_MODE_READ, 0);
        if (ids[count / 2] != freed) why = got_value("OPEN after CLOSE", ids[count / 2], freed);
    }
    for (u64 i = 0; i < count; i++) sys_close(ids[i]);
    return why;
}

static const char *read_with_wrapping_length_returns_efault(void) {
    u64 h;
    char buf[16];
    TRY(make_file(S("read-wrap"), "0123456789", 10, &h));
    EXPECT_ERRNO("READ", sys_read(h, buf, UINT64_MAX), EFAULT);
    EXPECT_VALUE("position", position(h), 0);
    return 0;
}

static const char *write_with_wrapping_length_returns_efault(void) {
    EXPECT_OK(h, "OPEN", create(S("write-wrap")));
    EXPECT_ERRNO("WRITE", sys_write(h, "abc", UINT64_MAX), EFAULT);
    EXPECT_VALUE("size", sys_seek(h, 0, COPRA_SEEK_MODE_END), 0);
    return 0;
}

static const char *seek_end_with_negative_offset_clamps_to_0(void) {
    u64 h;
    TRY(make_file(S("seek-end-neg"), "0123456789", 10, &h));
    EXPECT_VALUE("SEEK END -1", sys_seek(h, UINT64_MAX, 2), 0);
    return 0;
}

static const char *unlink_of_path_through_a_file_returns_enotdir(void) {
    TRY(make_file(S("unlink-file"), "x", 1, 0));
    EXPECT_ERRNO("UNLINK", sys_unlink(S("unlink-file/x")), ENOTDIR);
    return 0;
}

static const char *name_recreated_after_unlink_is_a_new_file(void) {
    u64 old;
    TRY(make_file(S("reborn"), "old", 3, &old));
    EXPECT_VALUE("UNLINK", sys_unlink(S("reborn")), 0);
    TRY(make_file(S("reborn"), "new file", 8, 0));
    EXPECT_VALUE("size through the old handle", sys_seek(old, 0, COPRA_SEEK_MODE_END), 3);
    return expect_contents(S("reborn"), "new file", 8);
}

static const char *readdir_reports_the_file_size_when_it_runs(void) {
    dirent_t e;
    TRY(make_listing(S("live-size")));
    EXPECT_OK(d, "OPENDIR", track(sys_opendir(S("live-size"))));
    EXPECT_OK(h, "OPEN",
              open_as(S("live-size/a"), COPRA_FILE_MODE_WRITE | COPRA_FILE_MODE_APPEND));
    EXPECT_VALUE("WRITE", sys_write(h, "678", 3), 3);
    EXPECT_VALUE("READDIR", sys_readdir(d, &e, 1), 1);
    EXPECT_VALUE("size", e.size, 8);
    return 0;
}

static const char *mmap_length_is_rounded_up_to_whole_pages(void) {
    u64 m;
    TRY(map(NO_HANDLE, slot(6), 0, 1, ANON_R | COPRA_MAP_FLAG_FIXED, &m));
    EXPECT_VALUE("MMAP address", m, slot(6));
    ENSURE(readable(m, PAGE), "the rest of the page is not mapped");
    ENSURE(!readable(m + PAGE, 1), "a second page is mapped");
    return 0;
}

static const char *mmap_anonymous_ignores_the_handle(void) {
    static const u64 handles[] = {0, 12345, NO_HANDLE};
    for (int i = 0; i < 3; i++) {
        u64 m;
        TRY(map(handles[i], 0, 0, PAGE, ANON_R, &m));
        for (u64 j = 0; j < PAGE; j++) ENSURE(at(m + j) == 0, "not zero-filled");
    }
    return 0;
}

static const char *mmap_read_exec_anonymous_succeeds(void) {
    u64 m;
    TRY(map(NO_HANDLE, 0, 0, PAGE, ANON_R | COPRA_MAP_FLAG_EXEC, &m));
    ENSURE(!writable(m, PAGE), "a READ|EXEC mapping is writable");
    return 0;
}

static const char *mmap_of_file_read_only_is_not_writable(void) {
    u64 h, m;
    TRY(make_file(S("map-ro-w"), "0123", 4, &h));
    TRY(map(h, 0, 0, PAGE, COPRA_MAP_FLAG_READ, &m));
    ENSURE(!writable(m, PAGE), "a read-only file mapping is writable");
    return 0;
}

static const char *mmap_of_file_private_write_is_a_private_copy(void) {
    u64 h, m;
    char byte;
    TRY(make_file(S("map-private"), "\0bcdef", 6, &h));
    TRY(map(h, 0, 0, 6, COPRA_MAP_FLAG_READ | COPRA_MAP_FLAG_WRITE | COPRA_MAP_FLAG_PRIVATE, &m));
    ENSURE(mem_eq((const void *)m, "\0bcdef", 6), "the mapping shows other bytes");
    ENSURE(writable(m, PAGE), "a READ|WRITE|PRIVATE mapping is not writable");
    set(m, 'P');
    ENSURE(at(m) == 'P', "the store did not stick");
    EXPECT_VALUE("READ", sys_read(h, &byte, 1), 1);
    ENSURE(byte == 0, "the file changed");
    return 0;
}

static const char *munmap_spanning_two_mappings_removes_both(void) {
    u64 a, b;
    TRY(map(NO_HANDLE, slot(16), 0, PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, &a));
    TRY(map(NO_HANDLE, slot(16) + 2 * PAGE, 0, PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, &b));
    EXPECT_VALUE("MUNMAP", sys_munmap(a, 3 * PAGE), 0);
    ENSURE(!readable(a, 1) && !readable(b, 1), "still mapped");
    return 0;
}

static const char *mresize_inside_a_mapping_returns_enotfound(void) {
    u64 m;
    TRY(map(NO_HANDLE, slot(17), 0, 2 * PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, &m));
    EXPECT_ERRNO("MRESIZE", sys_mresize(m + PAGE, PAGE), ENOTFOUND);
    EXPECT_ERRNO("MRESIZE unaligned", sys_mresize(m + 8, PAGE), ENOTFOUND);
    return 0;
}

static const char *mresize_to_the_same_length_returns_0(void) {
    u64 m;
    TRY(map(NO_HANDLE, slot(19), 0, 2 * PAGE, ANON_R | COPRA_MAP_FLAG_FIXED, &m));
    EXPECT_VALUE("MRESIZE", sys_mresize(m, 2 * PAGE), 0);
    ENSURE(readable(m, 2 * PAGE) && !readable(m + 2 * PAGE, 1), "the mapping changed");
    return 0;
}

/* === the table ============================================================================= */

#define CASES(X)                                                         \
    X(exit_code_reaches_wait_shifted_by_16)                              \
    X(exit_keeps_only_the_low_16_bits_of_the_code)                       \
    X(exec_returns_a_task_id_of_at_least_2)                              \
    X(exec_gives_each_child_its_own_task_id)                             \
    X(exec_of_missing_file_returns_enotfound)                            \
    X(exec_of_non_elf_file_returns_enoexec)                              \
    X(exec_of_empty_file_returns_enoexec)                                \
    X(exec_of_path_through_a_file_returns_enotdir)                       \
    X(exec_of_directory_returns_eisdir)                                  \
    X(exec_with_empty_root_returns_einval)                               \
    X(exec_with_nonzero_flags_returns_einval)                            \
    X(exec_with_missing_root_returns_enotfound)                          \
    X(exec_with_a_file_as_root_returns_enotdir)                          \
    X(exec_with_unmapped_path_returns_efault)                            \
    X(exec_root_is_the_childs_root)                                      \
    X(exec_child_starts_with_only_the_log_handle)                        \
    X(wait_for_task_1_returns_enotfound)                                 \
    X(wait_for_unknown_task_returns_enotfound)                           \
    X(wait_for_reaped_child_returns_enotfound)                           \
    X(wait_reports_invalid_opcode_as_killed_by_vector_6)                 \
    X(wait_reports_page_fault_as_killed_by_vector_14)                    \
    X(close_of_open_handle_returns_0)                                    \
    X(close_twice_returns_enotfound)                                     \
    X(close_of_never_opened_handle_returns_enotfound)                    \
    X(closed_handle_is_unusable)                                         \
    X(log_handle_0_is_usable_until_closed)                               \
    X(handles_are_allocated_lowest_free_first)                           \
    X(handle_argument_ignores_the_upper_32_bits)                         \
    X(open_beyond_the_handle_limit_returns_emfile)                       \
    X(open_of_missing_file_returns_enotfound)                            \
    X(open_create_makes_an_empty_file)                                   \
    X(open_create_of_existing_file_opens_it_unchanged)                   \
    X(open_create_of_new_file_is_read_write_whatever_the_mode)           \
    X(open_create_of_existing_file_keeps_the_requested_access)           \
    X(open_with_mode_0_can_neither_read_nor_write)                       \
    X(open_read_only_then_write_returns_erdonly)                         \
    X(open_write_only_then_read_returns_ewronly)                         \
    X(open_append_starts_at_the_end_of_file)                             \
    X(open_append_moves_to_the_end_only_once)                            \
    X(open_trunc_with_write_empties_the_file)                            \
    X(open_trunc_without_write_returns_erdonly)                          \
    X(open_with_unknown_mode_bits_returns_einval)                        \
    X(open_with_unknown_flag_bits_returns_einval)                        \
    X(open_of_directory_returns_eisdir)                                  \
    X(open_create_of_directory_returns_eisdir)                           \
    X(open_of_path_through_a_file_returns_enotdir)                       \
    X(open_create_with_missing_parent_returns_enotfound)                 \
    X(open_of_root_or_empty_path_returns_einval)                         \
    X(open_of_4096_byte_path_returns_enametoolong)                       \
    X(open_create_with_255_byte_name_succeeds)                           \
    X(open_create_with_256_byte_name_returns_enametoolong)               \
    X(open_of_non_utf8_path_returns_einval)                              \
    X(open_of_unmapped_path_returns_efault)                              \
    X(open_of_kernel_half_path_returns_efault)                           \
    X(open_of_non_canonical_path_returns_efault)                         \
    X(open_ignores_repeated_and_trailing_slashes)                        \
    X(open_treats_dot_as_an_ordinary_name)                               \
    X(write_returns_the_count_and_advances_the_position)                 \
    X(read_returns_bytes_from_the_position)                              \
    X(read_at_end_of_file_returns_0)                                     \
    X(read_near_the_end_returns_the_remaining_bytes)                     \
    X(read_and_write_of_0_bytes_return_0)                                \
    X(write_spanning_pages_reads_back_intact)                            \
    X(positions_are_per_handle)                                          \
    X(write_is_visible_through_another_handle)                           \
    X(write_past_end_of_file_leaves_a_zero_filled_gap)                   \
    X(read_of_log_handle_returns_ewronly)                                \
    X(write_of_0_bytes_to_log_handle_returns_0)                          \
    X(write_to_log_handle_returns_the_count)                             \
    X(log_file_holds_each_line_with_its_task_prefix)                     \
    X(read_of_unknown_handle_returns_enotfound)                          \
    X(write_of_unknown_handle_returns_enotfound)                         \
    X(read_of_directory_handle_returns_enotsupp)                         \
    X(write_of_directory_handle_returns_enotsupp)                        \
    X(read_into_unmapped_buffer_returns_efault_and_keeps_the_position)   \
    X(read_into_kernel_half_returns_efault)                              \
    X(read_into_read_only_memory_returns_efault)                         \
    X(write_from_unmapped_buffer_returns_efault_and_changes_nothing)     \
    X(write_from_kernel_half_returns_efault)                             \
    X(write_from_non_canonical_address_returns_efault)                   \
    X(write_from_read_only_memory_succeeds)                              \
    X(read_with_wrapping_length_returns_efault)                          \
    X(write_with_wrapping_length_returns_efault)                         \
    X(seek_absolute_sets_the_position)                                   \
    X(seek_absolute_past_the_end_clamps_to_the_size)                     \
    X(seek_relative_moves_both_ways)                                     \
    X(seek_relative_before_the_start_clamps_to_0)                        \
    X(seek_relative_past_the_end_clamps_to_the_size)                     \
    X(seek_end_0_goes_to_the_size)                                       \
    X(seek_end_with_positive_offset_moves_backwards)                     \
    X(seek_end_beyond_the_size_clamps_to_0)                              \
    X(seek_end_with_negative_offset_clamps_to_0)                         \
    X(seek_with_unknown_mode_returns_einval)                             \
    X(seek_of_directory_handle_returns_enotsupp)                         \
    X(seek_of_directory_with_unknown_mode_returns_einval)                \
    X(seek_of_log_handle_returns_0)                                      \
    X(seek_of_unknown_handle_returns_enotfound)                          \
    X(truncate_shrinks_and_returns_the_new_size)                         \
    X(truncate_to_the_same_size_returns_it)                              \
    X(truncate_to_grow_returns_einval)                                   \
    X(truncate_without_write_returns_erdonly)                            \
    X(truncate_pulls_the_position_back)                                  \
    X(truncate_then_growth_shows_zeros_not_old_data)                     \
    X(truncate_of_non_file_handles_returns_enotsupp)                     \
    X(truncate_of_unknown_handle_returns_enotfound)                      \
    X(unlink_removes_the_name)                                           \
    X(unlink_of_directory_returns_eisdir)                                \
    X(unlink_of_missing_file_returns_enotfound)                          \
    X(unlink_of_root_returns_einval)                                     \
    X(unlink_of_path_through_a_file_returns_enotdir)                     \
    X(unlinked_file_stays_usable_through_open_handles)                   \
    X(name_recreated_after_unlink_is_a_new_file)                         \
    X(readdir_fills_272_byte_dirents)                                    \
    X(readdir_of_root_lists_the_scratch_parent)                          \
    X(readdir_with_count_0_returns_0_and_keeps_the_cursor)               \
    X(readdir_one_at_a_time_then_0_at_the_end)                           \
    X(readdir_of_empty_directory_returns_0)                              \
    X(readdir_is_a_snapshot_taken_at_opendir)                            \
    X(readdir_reports_the_file_size_when_it_runs)                        \
    X(readdir_lists_in_insertion_order)                                  \
    X(removal_moves_the_last_entry_into_the_gap)                         \
    X(readdir_returns_a_255_byte_name_whole)                             \
    X(readdir_into_unmapped_buffer_returns_efault_and_keeps_the_cursor)  \
    X(readdir_of_file_handle_returns_enotsupp)                           \
    X(readdir_of_unknown_handle_returns_enotfound)                       \
    X(opendir_of_file_returns_enotdir)                                   \
    X(opendir_of_missing_directory_returns_enotfound)                    \
    X(opendir_of_empty_path_returns_einval)                              \
    X(opendir_of_unmapped_path_returns_efault)                           \
    X(mkdir_creates_an_empty_directory)                                  \
    X(mkdir_of_existing_name_returns_eexist)                             \
    X(mkdir_with_missing_parent_returns_enotfound)                       \
    X(mkdir_through_a_file_returns_enotdir)                              \
    X(mkdir_of_root_returns_einval)                                      \
    X(rmdir_removes_an_empty_directory)                                  \
    X(rmdir_of_non_empty_directory_returns_enotempty)                    \
    X(rmdir_of_file_returns_enotdir)                                     \
    X(rmdir_of_missing_directory_returns_enotfound)                      \
    X(rmdir_of_root_returns_einval)                                      \
    X(open_directory_handle_survives_rmdir)                              \
    X(capabilities_count_is_2)                                           \
    X(capabilities_vm_bitmap_is_0)                                       \
    X(capabilities_features_name_the_copra_kvm_platform)                 \
    X(capabilities_index_3_returns_enotfound)                            \
    X(unknown_core_index_returns_enosys_via_int80)                       \
    X(unknown_file_index_returns_enosys)                                 \
    X(reserved_vmm_class_returns_enosys)                                 \
    X(unknown_class_returns_enosys_via_int80)                            \
    X(known_number_with_extra_high_bits_returns_enosys)                  \
    X(syscall_changes_only_rax_via_int80)                                \
    X(mmap_anonymous_returns_zeroed_page_aligned_memory)                 \
    X(mmap_anonymous_with_write_is_writable)                             \
    X(mmap_without_write_is_read_only)                                   \
    X(mmap_without_hint_is_placed_at_or_above_mmap_base)                 \
    X(mmap_with_free_hint_uses_it)                                       \
    X(mmap_length_is_rounded_up_to_whole_pages)                          \
    X(mmap_with_unknown_flag_bits_returns_einval)                        \
    X(mmap_without_read_returns_einval)                                  \
    X(mmap_write_and_exec_together_returns_eperm)                        \
    X(mmap_with_length_0_returns_einval)                                 \
    X(mmap_with_unaligned_hint_returns_einval)                           \
    X(mmap_anonymous_with_offset_returns_einval)                         \
    X(mmap_fixed_below_user_start_returns_einval)                        \
    X(mmap_fixed_in_kernel_half_returns_einval)                          \
    X(mmap_fixed_at_free_address_maps_there)                             \
    X(mmap_fixed_over_a_mapping_returns_eexist)                          \
    X(mmap_fixed_over_the_program_image_returns_eexist)                  \
    X(mmap_anonymous_ignores_the_handle)                                 \
    X(mmap_read_exec_anonymous_succeeds)                                 \
    X(mmap_of_file_read_only_shows_its_contents)                         \
    X(mmap_of_file_read_only_sees_later_writes)                          \
    X(mmap_of_file_private_write_is_a_private_copy)                      \
    X(mmap_of_file_write_without_private_returns_enotsupp)               \
    X(mmap_of_unknown_handle_returns_enotfound)                          \
    X(mmap_of_non_file_handles_returns_enotsupp)                         \
    X(mmap_of_file_without_read_access_returns_ewronly)                  \
    X(mmap_of_file_read_only_is_not_writable)                            \
    X(store_to_read_only_mapping_kills_with_pf)                          \
    X(munmap_of_unaligned_address_returns_einval)                        \
    X(munmap_with_length_0_returns_einval)                               \
    X(munmap_outside_user_space_returns_einval)                          \
    X(munmap_of_unmapped_range_returns_enotfound)                        \
    X(munmap_removes_the_mapping)                                        \
    X(munmap_of_middle_page_splits_the_mapping)                          \
    X(munmap_spanning_two_mappings_removes_both)                         \
    X(load_after_munmap_kills_with_pf)                                   \
    X(mresize_of_unmapped_address_returns_enotfound)                     \
    X(mresize_inside_a_mapping_returns_enotfound)                        \
    X(mresize_of_the_program_image_returns_enotfound)                    \
    X(mresize_to_length_0_returns_einval)                                \
    X(mresize_to_the_same_length_returns_0)                              \
    X(mresize_shrink_unmaps_the_tail)                                    \
    X(mresize_grow_adds_zeroed_pages)                                    \
    X(mresize_grow_into_a_mapping_returns_enomem)

#define ENTRY(name) {#name, name},
static const struct {
    const char *name;
    const char *(*run)(void);
} TABLE[] = {CASES(ENTRY)};

/* One line to handle 0 from up to four parts, cut to fit the log's 223-byte lines. */
static void say(const char *a, const char *b, const char *c, const char *d) {
    static char line[224];
    size_t n = 0;
    const char *parts[] = {a, b, c, d};
    for (int i = 0; i < 4; i++)
        for (const char *s = parts[i]; s && *s && n < 222; s++) line[n++] = *s;
    line[n++] = '\n';
    sys_write(0, line, n);
}

static const char *decimal(u64 v) {
    static char out[2][21];
    static int which;
    char *buf = out[which ^= 1];
    int n = 20;
    buf[n] = 0;
    do buf[--n] = (char)('0' + v % 10); while (v /= 10);
    return buf + n;
}

static char tree_path[1024];

/* Removes the tree at tree_path[0, len) (READDIR's snapshot makes removing while
 * listing safe); 0 if every UNLINK and RMDIR succeeded. */
static int remove_tree(size_t len) {
    dirent_t e;
    int failed = 0;
    tree_path[len] = 0;
    u64 d = sys_opendir(tree_path);
    if (is_error(d)) return 1;
    while (sys_readdir(d, &e, 1) == 1) {
        size_t name = str_len((const char *)e.name);
        if (len + 1 + name >= sizeof tree_path) {
            failed = 1;
            continue;
        }
        tree_path[len] = '/';
        memcpy(tree_path + len + 1, e.name, name + 1);
        if (e.file_type == COPRA_FILE_TYPE_DIRECTORY)
            failed |= remove_tree(len + 1 + name);
        else
            failed |= sys_unlink(tree_path) != 0;
    }
    sys_close(d);
    tree_path[len] = 0;
    return failed | (sys_rmdir(tree_path) != 0);
}

static int remove_scratch(void) {
    memcpy(tree_path, SCRATCH, sizeof SCRATCH);
    return remove_tree(sizeof SCRATCH - 1);
}

void _start(void) {
    u64 action = sys_open(ACTION, COPRA_FILE_MODE_READ, 0);
    if (!is_error(action)) child(action);
    u64 made = sys_mkdir("/tmp");
    if (made != 0 && made != ERR(EEXIST)) {
        say("FAIL setup: MKDIR /tmp", 0, 0, 0);
        sys_exit(1);
    }
    if (sys_mkdir(SCRATCH) != 0) {
        say("FAIL setup: MKDIR " SCRATCH, 0, 0, 0);
        sys_exit(1);
    }
    u64 passed = 0, total = sizeof TABLE / sizeof TABLE[0];
    for (u64 i = 0; i < total; i++) {
        const char *why = TABLE[i].run();
        release_all();
        if (why) {
            say("FAIL ", TABLE[i].name, ": ", why);
        } else {
            say("PASS ", TABLE[i].name, 0, 0);
            passed++;
        }
    }
    if (remove_scratch()) say("FAIL cleanup: the scratch tree was not removed", 0, 0, 0);
    if (made == 0) sys_rmdir("/tmp");
    say("SUMMARY ", decimal(passed), "/", decimal(total));
    sys_exit(passed == total ? 0 : 1);
}
