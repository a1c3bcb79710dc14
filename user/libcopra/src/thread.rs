//! Threads: THREAD_CREATE, THREAD_EXIT, JOIN (copra's, syscall class 0).
//!
//! | wrapper | syscall | registers |
//! |---|---|---|
//! | [`spawn`], [`spawn_with_fs_base`] | THREAD_CREATE (0, 0x10) | entry, stack top, argument, FS base → handle |
//! | [`exit`] | THREAD_EXIT (0, 0x11) | code |
//! | [`JoinHandle::join`] | JOIN (0, 0x12) | thread handle → its code |
//!
//! A thread runs a `fn(u64) -> u32` with one argument on a stack of its own
//! ([`STACK_SIZE`] bytes, mapped with MMAP); returning from it is THREAD_EXIT with the
//! returned code. Threads share the process's memory and handles and run in parallel
//! on the SVSM's vCPUs. [`JoinHandle::join`] waits for the end, returns the code and
//! unmaps the stack; dropping a `JoinHandle` instead detaches the thread (its stack is
//! then never unmapped). EXIT, or a CPU exception in any thread, ends every thread.
//!
//! The FS base is per thread. [`spawn`] gives each thread a TLS block of its own
//! (crate::tls: the program's `.tdata` copied, `.tbss` zeroed, the TCB above them),
//! placed above its stack in the same mapping, so [`thread_local!`](crate::thread_local)
//! and C's `__thread` work in it. [`spawn_with_fs_base`] sets a foreign FS base instead
//! (at least 16 readable bytes there; such a thread must not use `thread_local!`).
//!
//! When a thread's function returns, or it calls [`exit`], its thread-local
//! destructors run and the heap's per-thread cache is given back, before THREAD_EXIT.

use crate::abi::{MapFlag, PAGE_SIZE, Sys};
use crate::error::Result;
use crate::handle::{AsHandle, Handle};
use crate::memory::{mmap_anonymous, munmap};
use crate::syscall::call;
use crate::tls;

/// Bytes of stack each thread gets.
pub const STACK_SIZE: u64 = 64 * 1024;

/// What the new thread finds at the top of its stack.
#[repr(C)]
#[derive(Clone, Copy)]
struct Start {
    f: fn(u64) -> u32,
    arg: u64,
}

/// A running (or ended, not yet joined) thread.
pub struct JoinHandle {
    handle: Handle,
    stack: u64,
    /// Bytes mapped at `stack`: the stack, then the TLS block (if the library made it).
    len: u64,
}

impl JoinHandle {
    /// JOIN: waits until the thread has ended and returns its code.
    pub fn join(self) -> Result<u32> {
        let code = call!(Sys::JOIN, self.handle.as_handle().raw())?;
        // SAFETY: the thread has ended: nothing runs on its stack any more.
        unsafe { munmap(self.stack, self.len)? };
        Ok(code as u32)
    }

    /// The thread's handle (WAIT right).
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Starts `f(arg)` on a new thread with a TLS block of its own.
pub fn spawn(f: fn(u64) -> u32, arg: u64) -> Result<JoinHandle> {
    let template = tls::template();
    let (_, tls_bytes) = tls::block_layout(template);
    let len = STACK_SIZE + tls_bytes;
    // SAFETY: a fresh anonymous mapping: nothing else refers to it.
    let stack = unsafe { mmap_anonymous(0, len, MapFlag::READ | MapFlag::WRITE)? };
    // SAFETY: the area above the stack is the mapping's zeroed tail of that size.
    let fs_base = unsafe { tls::build_block(stack + STACK_SIZE, template) };
    start(f, arg, stack, len, fs_base)
}

/// Starts `f(arg)` on a new thread whose FS base is `fs_base`; 0 gives the thread a
/// TLS block of the library's, as [`spawn`] does.
pub fn spawn_with_fs_base(f: fn(u64) -> u32, arg: u64, fs_base: u64) -> Result<JoinHandle> {
    if fs_base == 0 {
        return spawn(f, arg);
    }
    // SAFETY: a fresh anonymous mapping: nothing else refers to it.
    let stack = unsafe { mmap_anonymous(0, STACK_SIZE, MapFlag::READ | MapFlag::WRITE)? };
    start(f, arg, stack, STACK_SIZE, fs_base)
}

fn start(f: fn(u64) -> u32, arg: u64, stack: u64, len: u64, fs_base: u64) -> Result<JoinHandle> {
    let top = stack + STACK_SIZE;
    debug_assert!(top % PAGE_SIZE == 0);
    let record = top - 16;
    // SAFETY: `record` lies in the mapping just made, aligned and writable.
    unsafe { (record as *mut Start).write(Start { f, arg }) };
    // rsp = 8 mod 16 at the entry, as after a `call`: the SysV ABI's function entry.
    let rsp = record - 8;
    let entry = thread_entry as extern "C" fn(*const Start) -> ! as u64;
    match call!(Sys::THREAD_CREATE, entry, rsp, record, fs_base) {
        // SAFETY: THREAD_CREATE returned a fresh handle that nothing else owns.
        Ok(raw) => Ok(JoinHandle { handle: unsafe { Handle::from_raw(raw as u32) }, stack, len }),
        Err(e) => {
            // SAFETY: no thread was started on it.
            unsafe { munmap(stack, len)? };
            Err(e)
        }
    }
}

extern "C" fn thread_entry(start: *const Start) -> ! {
    // SAFETY: spawn wrote the record before the thread existed; only it reads it.
    let Start { f, arg } = unsafe { start.read() };
    exit(f(arg))
}

/// THREAD_EXIT: ends the calling thread with `code` (the last thread ends the
/// process as EXIT(`code`) would), after running its thread-local destructors and
/// giving its heap cache back. Never returns.
pub fn exit(code: u32) -> ! {
    if tls::has_block() {
        tls::run_destructors();
        crate::heap::flush_thread_cache();
    }
    let _ = call!(Sys::THREAD_EXIT, code);
    // SAFETY: ud2 raises #UD, which ends the process: THREAD_EXIT never returns.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}
