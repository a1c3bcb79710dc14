/*
 * libcopra for C programs: what libcopra.a (user/libcopra-c) gives a program.
 *
 * A program defines `int main(void)`; the library's _start calls it and EXITs with
 * its result (the kernel keeps the low 16 bits). There is no libc: this header, the
 * generated ABI header and the compiler's freestanding headers (stddef.h, stdint.h,
 * stdbool.h, stdalign.h) are all there is. docs/user-library.md ("C programs") says
 * how the images are built; docs/heap.md describes the heap.
 *
 * Syscall wrappers return int64_t: the result (a count, a handle, a task id, an
 * address) when it is >= 0, else a negative COPRA_ERRNO_* value (or one of the
 * library's own codes, -4095..-4092); copra_error_name() names either.
 *
 * The heap functions follow C11: NULL when no memory is left (the heap also logs
 * one line saying so). A pointer free() or realloc() cannot have come from the heap
 * (a double free, a foreign or interior pointer) ends the program with a message
 * naming the misuse, as glibc aborts.
 */
#ifndef COPRA_COPRA_H
#define COPRA_COPRA_H

#include <stddef.h>
#include <stdint.h>

#include "copra/abi.h"

/* --- the heap (C11 7.22.3, and two extensions) -------------------------------------- */

void *malloc(size_t size);
void *calloc(size_t count, size_t size);
/* realloc(p, 0) frees p and returns NULL, as glibc does. */
void *realloc(void *p, size_t size);
void free(void *p);
/* align: a power of two (else NULL); any size (C17 dropped the multiple rule). */
void *aligned_alloc(size_t align, size_t size);
/* The bytes the block really holds (at least what was asked for); 0 for NULL. */
size_t malloc_usable_size(void *p);
/* The heap's statistics (struct copra_heap_stats is in copra/abi.h). */
void copra_heap_stats(struct copra_heap_stats *out);
/* Gives memory kept for reuse back to the kernel; returns the bytes unmapped. */
size_t copra_heap_trim(void);

/* --- memory and strings ------------------------------------------------------------- */

void *memcpy(void *dest, const void *src, size_t n);
void *memmove(void *dest, const void *src, size_t n);
void *memset(void *dest, int c, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);

/* --- syscalls (docs/abi.md has each one's arguments and errors) --------------------- */

int64_t copra_syscall(uint64_t nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3,
                      uint64_t a4);
_Noreturn void copra_exit(uint32_t code);
/* EXEC: a new process from the ELF at path, root directory root; returns its task id. */
int64_t copra_exec(const char *path, const char *root);
/* WAIT: the child's packed status (exited: code << 16; killed: (vector << 8) | 1). */
int64_t copra_wait(uint64_t task);
int64_t copra_close(uint32_t handle);
int64_t copra_open(const char *path, uint32_t mode, uint32_t flags);
int64_t copra_read(uint32_t handle, void *buf, size_t len);
int64_t copra_write(uint32_t handle, const void *buf, size_t len);
int64_t copra_seek(uint32_t handle, int64_t offset, uint32_t mode);
int64_t copra_truncate(uint32_t handle, uint64_t len);
int64_t copra_unlink(const char *path);
int64_t copra_opendir(const char *path);
int64_t copra_readdir(uint32_t handle, struct copra_dir_ent *entries, size_t count);
int64_t copra_mkdir(const char *path);
int64_t copra_rmdir(const char *path);
/* MMAP: the mapped address, or a negative error. */
int64_t copra_mmap(uint32_t handle, void *hint, uint64_t offset, size_t len, uint64_t flags);
int64_t copra_munmap(void *addr, size_t len);
int64_t copra_mresize(void *addr, size_t len);
int64_t copra_capabilities(uint32_t index);

/* --- channels (docs/abi.md, "Channels"; docs/user-library.md, "C programs") -------- */

/* CHANNEL_CREATE: 0, with the two connected endpoints' handles in *first and *second. */
int64_t copra_channel_create(uint32_t *first, uint32_t *second);
/* SEND: 0; the handles named in the message are moved (all or none). flags:
 * COPRA_CHANNEL_FLAG_BLOCK waits while the peer's queue is full (else EAGAIN). */
int64_t copra_send(uint32_t endpoint, const struct copra_channel_message *message,
                   uint32_t flags);
/* RECV: the bytes received; data_len and handle_count say the message's sizes (also
 * on EMSGSIZE, when it stays queued) and the new handle ids are written. */
int64_t copra_recv(uint32_t endpoint, struct copra_channel_message *message, uint32_t flags);
/* CHANNEL_CALL: SEND out, then a blocking RECV into reply, in one syscall. */
int64_t copra_channel_call(uint32_t endpoint, const struct copra_channel_message *out,
                           struct copra_channel_message *reply);
/* EXEC_HANDLES: EXEC moving count handles into the child (its ids 1..count). */
int64_t copra_exec_handles(const char *path, const char *root, const uint32_t *handles,
                           uint32_t count);
/* DUPLICATE: a new handle with rights (or COPRA_RIGHTS_SAME) on the same object. */
int64_t copra_duplicate(uint32_t handle, uint64_t rights);
/* EVENT_CREATE: an event handle (READ of 8 bytes takes its counter, WRITE adds);
 * flags: COPRA_EVENT_FLAG_NONBLOCK. */
int64_t copra_event_create(uint32_t flags);

/* --- threads (THREAD_CREATE, JOIN; docs/user-library.md) ---------------------------- */

/* A thread started by copra_thread_spawn. */
struct copra_thread;
/* Runs f(arg) on a new thread with a stack and a TLS block of its own (__thread
 * variables start at their initial values in it); stores the thread in *out.
 * Returns 0, or a negative error. f's return value is the thread's result. */
int64_t copra_thread_spawn(struct copra_thread **out, uint32_t (*f)(uint64_t), uint64_t arg);
/* Waits for the thread to end and returns its result (>= 0), or a negative error;
 * the thread is released either way. */
int64_t copra_thread_join(struct copra_thread *thread);

/* WRITE of the NUL-terminated s to handle 0, the task's log. */
int64_t copra_print(const char *s);
/* The name of an error ("ENOTFOUND", "UNEXPECTED_EOF"), or "?" for an unknown value. */
const char *copra_error_name(int64_t err);

#endif /* COPRA_COPRA_H */
