//! libcopra for C programs: `libcopra.a`, with `include/copra/copra.h`.
//!
//! A C program built against it (`int main(void)`, no libc, no crt) gets:
//!
//! - `_start`, which aligns the stack, calls `main` and EXITs with its result;
//! - `malloc`, `free`, `calloc`, `realloc`, `aligned_alloc`, `malloc_usable_size`, on
//!   libcopra's heap (docs/heap.md), and `copra_heap_stats`, `copra_heap_trim`;
//! - `memcpy`, `memmove`, `memset`, `memcmp` (libcopra's) and `strlen`;
//! - a wrapper per syscall (`copra_open`, `copra_read` …), through libcopra's entry
//!   (the doorbell, or `int 0x80` in the portable build), returning `int64_t`: the
//!   result, or a negative `COPRA_ERRNO_*`; `copra_error_name` names any error;
//! - `copra_print` to write a string to the log (handle 0);
//! - `copra_thread_spawn`/`copra_thread_join`: threads with a TLS block each, so
//!   `__thread` variables work (libcopra's `thread::spawn`).
//!
//! Misuse of the heap (double free, a foreign pointer) ends the program with the
//! heap's message, as in Rust; out of memory returns NULL after the heap's log line.
//! `scripts/build-user-images` compiles `user/c/*.c` with gcc and links each with
//! this archive and `user/link.ld` into `c-<name>.elf`.

#![no_std]
#![allow(clippy::missing_safety_doc)] // the C contracts are in copra.h

extern crate alloc;

use alloc::boxed::Box;
use core::ffi::{c_char, c_int, c_void};

use libcopra::abi::{ChannelMessage, Errno, HeapStats, Sys};
use libcopra::error::{Error, LIBRARY_CODES};
use libcopra::heap;
use libcopra::process::exit;
use libcopra::thread;
use libcopra::syscall::{entry, syscall5_via};

core::arch::global_asm!(
    ".pushsection .text._start, \"ax\", @progbits",
    ".globl _start",
    ".type _start, @function",
    "_start:",
    "and rsp, -16",
    "xor ebp, ebp",
    "call {entry}",
    "ud2",
    ".size _start, . - _start",
    ".popsection",
    entry = sym c_entry,
);

unsafe extern "C" {
    /// The C program's `int main(void)`.
    fn main() -> c_int;
}

extern "C" fn c_entry() -> ! {
    heap::enable_thread_cache();
    // SAFETY: the program provides `main`, which takes no arguments.
    let code = unsafe { main() };
    exit(code as u32)
}

/// C's fundamental alignment (`alignof(max_align_t)`).
const C_ALIGN: usize = 16;

// --- the heap ----------------------------------------------------------------------------

#[unsafe(no_mangle)]
pub extern "C" fn malloc(size: usize) -> *mut c_void {
    heap::allocate(size, C_ALIGN, false).cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
    match count.checked_mul(size) {
        Some(total) => heap::allocate(total, C_ALIGN, true).cast(),
        None => core::ptr::null_mut(),
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn free(p: *mut c_void) {
    heap::free(p.cast());
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn realloc(p: *mut c_void, size: usize) -> *mut c_void {
    if p.is_null() {
        return malloc(size);
    }
    if size == 0 {
        // As glibc: free, and NULL (C17 leaves the choice to the implementation).
        heap::free(p.cast());
        return core::ptr::null_mut();
    }
    heap::reallocate(p.cast(), None, size, C_ALIGN).cast()
}

#[unsafe(no_mangle)]
pub extern "C" fn aligned_alloc(align: usize, size: usize) -> *mut c_void {
    if !align.is_power_of_two() {
        return core::ptr::null_mut(); // C17 7.22.3.1: an unsupported alignment
    }
    heap::allocate(size, align.max(C_ALIGN), false).cast()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn malloc_usable_size(p: *mut c_void) -> usize {
    if p.is_null() {
        0
    } else {
        heap::usable_size(p.cast())
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_heap_stats(out: *mut HeapStats) {
    // SAFETY: the caller passes a writable `struct copra_heap_stats`.
    unsafe { out.write(heap::stats()) };
}

#[unsafe(no_mangle)]
pub extern "C" fn copra_heap_trim() -> usize {
    heap::trim()
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn strlen(s: *const c_char) -> usize {
    let mut n = 0;
    // SAFETY: the caller passes a NUL-terminated string.
    while unsafe { *s.add(n) } != 0 {
        n += 1;
    }
    n
}

// --- syscalls ----------------------------------------------------------------------------

/// One syscall through libcopra's entry; the raw `rax` as a signed value (errors are
/// -4095..=-1, results are below 2^63: user addresses, counts, ids).
#[inline]
fn sys(nr: Sys, a: [u64; 5]) -> i64 {
    // SAFETY: every wrapper passes the caller's pointers on, under the C contract of
    // copra.h (the kernel checks them and answers EFAULT).
    unsafe { syscall5_via(entry(), nr as u64, a[0], a[1], a[2], a[3], a[4]) as i64 }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_syscall(
    nr: u64,
    a0: u64,
    a1: u64,
    a2: u64,
    a3: u64,
    a4: u64,
) -> i64 {
    // SAFETY: the caller's responsibility, as for any raw syscall.
    unsafe { syscall5_via(entry(), nr, a0, a1, a2, a3, a4) as i64 }
}

#[unsafe(no_mangle)]
pub extern "C" fn copra_exit(code: u32) -> ! {
    exit(code)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_exec(path: *const c_char, root: *const c_char) -> i64 {
    sys(Sys::EXEC, [path as u64, root as u64, 0, 0, 0])
}

#[unsafe(no_mangle)]
pub extern "C" fn copra_wait(task: u64) -> i64 {
    sys(Sys::WAIT, [task, 0, 0, 0, 0])
}

#[unsafe(no_mangle)]
pub extern "C" fn copra_close(handle: u32) -> i64 {
    sys(Sys::CLOSE, [u64::from(handle), 0, 0, 0, 0])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_open(path: *const c_char, mode: u32, flags: u32) -> i64 {
    sys(
        Sys::OPEN,
        [path as u64, u64::from(mode), u64::from(flags), 0, 0],
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_read(handle: u32, buf: *mut c_void, len: usize) -> i64 {
    sys(Sys::READ, [u64::from(handle), buf as u64, len as u64, 0, 0])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_write(handle: u32, buf: *const c_void, len: usize) -> i64 {
    sys(
        Sys::WRITE,
        [u64::from(handle), buf as u64, len as u64, 0, 0],
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn copra_seek(handle: u32, offset: i64, mode: u32) -> i64 {
    sys(
        Sys::SEEK,
        [u64::from(handle), offset as u64, u64::from(mode), 0, 0],
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn copra_truncate(handle: u32, len: u64) -> i64 {
    sys(Sys::TRUNCATE, [u64::from(handle), len, 0, 0, 0])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_unlink(path: *const c_char) -> i64 {
    sys(Sys::UNLINK, [path as u64, 0, 0, 0, 0])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_opendir(path: *const c_char) -> i64 {
    sys(Sys::OPENDIR, [path as u64, 0, 0, 0, 0])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_readdir(
    handle: u32,
    entries: *mut libcopra::abi::DirEnt,
    count: usize,
) -> i64 {
    sys(
        Sys::READDIR,
        [u64::from(handle), entries as u64, count as u64, 0, 0],
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_mkdir(path: *const c_char) -> i64 {
    sys(Sys::MKDIR, [path as u64, 0, 0, 0, 0])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_rmdir(path: *const c_char) -> i64 {
    sys(Sys::RMDIR, [path as u64, 0, 0, 0, 0])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_mmap(
    handle: u32,
    hint: *mut c_void,
    offset: u64,
    len: usize,
    flags: u64,
) -> i64 {
    sys(
        Sys::MMAP,
        [u64::from(handle), hint as u64, offset, len as u64, flags],
    )
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_munmap(addr: *mut c_void, len: usize) -> i64 {
    sys(Sys::MUNMAP, [addr as u64, len as u64, 0, 0, 0])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_mresize(addr: *mut c_void, len: usize) -> i64 {
    sys(Sys::MRESIZE, [addr as u64, len as u64, 0, 0, 0])
}

/// CHANNEL_CREATE: 0 with the two endpoint handles stored (a NULL pointer skips one).
#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_channel_create(first: *mut u32, second: *mut u32) -> i64 {
    let packed = sys(Sys::CHANNEL_CREATE, [0; 5]);
    if packed < 0 {
        return packed;
    }
    // SAFETY: the caller passes writable u32 slots or NULL (copra.h).
    unsafe {
        if !first.is_null() {
            first.write(packed as u32);
        }
        if !second.is_null() {
            second.write((packed as u64 >> 32) as u32);
        }
    }
    0
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_send(endpoint: u32, message: *const ChannelMessage, flags: u32) -> i64 {
    sys(Sys::SEND, [u64::from(endpoint), message as u64, u64::from(flags), 0, 0])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_recv(endpoint: u32, message: *mut ChannelMessage, flags: u32) -> i64 {
    sys(Sys::RECV, [u64::from(endpoint), message as u64, u64::from(flags), 0, 0])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_channel_call(
    endpoint: u32,
    out: *const ChannelMessage,
    reply: *mut ChannelMessage,
) -> i64 {
    sys(Sys::CHANNEL_CALL, [u64::from(endpoint), out as u64, reply as u64, 0, 0])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_exec_handles(
    path: *const c_char,
    root: *const c_char,
    handles: *const u32,
    count: u32,
) -> i64 {
    sys(
        Sys::EXEC_HANDLES,
        [path as u64, root as u64, handles as u64, u64::from(count), 0],
    )
}

#[unsafe(no_mangle)]
pub extern "C" fn copra_duplicate(handle: u32, rights: u64) -> i64 {
    sys(Sys::DUPLICATE, [u64::from(handle), rights, 0, 0, 0])
}

#[unsafe(no_mangle)]
pub extern "C" fn copra_event_create(flags: u32) -> i64 {
    sys(Sys::EVENT_CREATE, [u64::from(flags), 0, 0, 0, 0])
}

#[unsafe(no_mangle)]
pub extern "C" fn copra_capabilities(index: u32) -> i64 {
    sys(Sys::CAPABILITIES, [u64::from(index), 0, 0, 0, 0])
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_print(s: *const c_char) -> i64 {
    // SAFETY: the caller passes a NUL-terminated string.
    let len = unsafe { strlen(s) };
    sys(Sys::WRITE, [0, s as u64, len as u64, 0, 0])
}

// --- threads -----------------------------------------------------------------------------

/// A C thread function and its argument, handed to the new thread.
type CThread = (extern "C" fn(u64) -> u32, u64);

fn c_thread(start: u64) -> u32 {
    // SAFETY: copra_thread_spawn leaked this box for this thread alone.
    let start = unsafe { Box::from_raw(start as *mut CThread) };
    (start.0)(start.1)
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_thread_spawn(
    out: *mut *mut c_void,
    f: extern "C" fn(u64) -> u32,
    arg: u64,
) -> i64 {
    let start = Box::into_raw(Box::new((f, arg)));
    match thread::spawn(c_thread, start as u64) {
        Ok(handle) => {
            // SAFETY: the caller passes a pointer to a `struct copra_thread *`.
            unsafe { out.write(Box::into_raw(Box::new(handle)).cast()) };
            0
        }
        Err(e) => {
            // SAFETY: no thread was started: the box is still ours.
            drop(unsafe { Box::from_raw(start) });
            e.raw()
        }
    }
}

#[unsafe(no_mangle)]
pub unsafe extern "C" fn copra_thread_join(thread: *mut c_void) -> i64 {
    // SAFETY: the caller passes a thread copra_thread_spawn made, once.
    let handle = unsafe { Box::from_raw(thread.cast::<thread::JoinHandle>()) };
    match handle.join() {
        Ok(code) => i64::from(code),
        Err(e) => e.raw(),
    }
}

// --- error names -------------------------------------------------------------------------

/// Longest name plus its NUL.
const NAME: usize = 16;
const NAMES: usize = Errno::ALL.len() + LIBRARY_CODES.len();

const fn c_name(s: &str) -> [u8; NAME] {
    let bytes = s.as_bytes();
    assert!(bytes.len() < NAME);
    let mut out = [0u8; NAME];
    let mut i = 0;
    while i < bytes.len() {
        out[i] = bytes[i];
        i += 1;
    }
    out
}

/// Every known error: its raw value and its NUL-terminated name.
static ERROR_NAMES: [(i64, [u8; NAME]); NAMES] = {
    let mut table = [(0, [0u8; NAME]); NAMES];
    let mut i = 0;
    while i < Errno::ALL.len() {
        table[i] = (Errno::ALL[i].raw(), c_name(Errno::ALL[i].name()));
        i += 1;
    }
    let mut j = 0;
    while j < LIBRARY_CODES.len() {
        table[i + j] = (LIBRARY_CODES[j].0, c_name(LIBRARY_CODES[j].1));
        j += 1;
    }
    table
};

#[unsafe(no_mangle)]
pub extern "C" fn copra_error_name(err: i64) -> *const c_char {
    match Error::from_raw(err).and_then(|e| ERROR_NAMES.iter().find(|(raw, _)| *raw == e.raw())) {
        Some((_, name)) => name.as_ptr().cast(),
        None => c"?".as_ptr(),
    }
}
