//! chan-race: the same handles used, closed, duplicated and sent at once by several
//! threads of two processes; every answer must be one docs/abi.md gives for the race.
//!
//! As init (`/race.conf`: OPS per thread) it makes a channel, gives one end to a copy of
//! itself with EXEC_HANDLES, keeps SLOTS event handles in a shared table and runs four
//! threads of OPS operations each, by role:
//! - sender: SEND (non-blocking) the handle of a random slot: ok, ENOTFOUND (closed or
//!   sent meanwhile), EAGAIN (the queue is full);
//! - receiver: RECV (non-blocking): ok (the handle goes into a random slot, whose old
//!   one is closed), EAGAIN;
//! - closer: CLOSE a random slot's handle (ok, ENOTFOUND) and put a new event there;
//! - duplicator: DUPLICATE a random slot's handle into another slot (ok, ENOTFOUND,
//!   EMFILE), closing what was there.
//! The child's threads: three echo every message back (RECV blocking; SEND
//! non-blocking: ok, ENOTFOUND when the fourth closed the handle first, EAGAIN), the
//! fourth CLOSEs random ids of received handles. When init's threads are done it
//! closes its slots and its endpoint: the child sees EPIPE and ends.
//! Prints `chan-race: ok` (exit 0), or FAIL lines and exits 1.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libcopra::abi::{ChannelFlag, ChannelMessage, Errno, RIGHTS_SAME, Sys};
use libcopra::error::{Error, Result, check};
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::handle::{Handle, close_raw};
use libcopra::process::{self, Command, ExitStatus};
use libcopra::syscall::syscall3;
use libcopra::{declare_main, println, sync, thread};

declare_main!(main);

const SLOTS: usize = 8;
const BLOCK: u64 = ChannelFlag::BLOCK.bits();
/// The child's ids from here up may be received handles (1 is its endpoint, 2..=5 its
/// threads).
const CHILD_FIRST_FREE: u64 = 6;

static END: AtomicU32 = AtomicU32::new(0);
static SLOT: [AtomicU32; SLOTS] = [const { AtomicU32::new(u32::MAX) }; SLOTS];
static OPS: AtomicU64 = AtomicU64::new(0);
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);
static MOVED: AtomicU64 = AtomicU64::new(0);

fn sys(nr: Sys, a: u64, b: u64, c: u64) -> Result<u64> {
    // SAFETY: the callers pass buffers of this program that outlive the call.
    check(unsafe { syscall3(nr as u64, a, b, c) })
}

fn rand(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

fn unexpected(what: &str, e: Error) {
    if UNEXPECTED.fetch_add(1, Ordering::Relaxed) < 8 {
        println!("FAIL chan-race: {what} answered {e}");
    }
}

fn send(id: u32, flags: u64) -> Result<u64> {
    let ids = [id];
    let m = ChannelMessage { data: 0, handles: ids.as_ptr() as u64, data_len: 0, handle_count: 1 };
    sys(Sys::SEND, u64::from(END.load(Ordering::Relaxed)), &m as *const _ as u64, flags)
}

fn recv(flags: u64) -> Result<Option<u32>> {
    let mut ids = [0u32; 1];
    let mut m = ChannelMessage { data: 0, handles: ids.as_mut_ptr() as u64, data_len: 0, handle_count: 1 };
    sys(Sys::RECV, u64::from(END.load(Ordering::Relaxed)), &mut m as *mut _ as u64, flags)?;
    Ok((m.handle_count == 1).then_some(ids[0]))
}

fn new_event() -> u32 {
    match sys(Sys::EVENT_CREATE, 1, 0, 0) {
        Ok(h) => h as u32,
        Err(e) => {
            unexpected("EVENT_CREATE", e);
            u32::MAX
        }
    }
}

/// Puts `id` into `slot` and closes what was there (it may be gone already).
fn replace(slot: &AtomicU32, id: u32) {
    let old = slot.swap(id, Ordering::Relaxed);
    match close_raw(old) {
        Ok(()) => {}
        Err(e) if e.is(Errno::ENOTFOUND) => {}
        Err(e) => unexpected("CLOSE of a replaced slot", e),
    }
}

fn worker(role: u64) -> u32 {
    let mut state = 0x9E37_79B9_7F4A_7C15 ^ (role + 1).wrapping_mul(0xA24B_AED4_963E_E407);
    for _ in 0..OPS.load(Ordering::Relaxed) {
        let slot = &SLOT[(rand(&mut state) % SLOTS as u64) as usize];
        let id = slot.load(Ordering::Relaxed);
        match role {
            0 => match send(id, 0) {
                Ok(_) => {
                    MOVED.fetch_add(1, Ordering::Relaxed);
                    // The slot's id is gone with the message: refill it, unless another
                    // thread did first.
                    let fresh = new_event();
                    if slot.compare_exchange(id, fresh, Ordering::Relaxed, Ordering::Relaxed).is_err() {
                        let _ = close_raw(fresh);
                    }
                }
                Err(e) if e.is(Errno::ENOTFOUND) || e.is(Errno::EAGAIN) => {}
                Err(e) => unexpected("SEND", e),
            },
            1 => match recv(0) {
                Ok(Some(h)) => replace(slot, h),
                Ok(None) => unexpected("RECV", Error::from(Errno::EINVAL)),
                Err(e) if e.is(Errno::EAGAIN) => {}
                Err(e) => unexpected("RECV", e),
            },
            2 => {
                match close_raw(id) {
                    Ok(()) => {}
                    Err(e) if e.is(Errno::ENOTFOUND) => {}
                    Err(e) => unexpected("CLOSE", e),
                }
                replace(slot, new_event());
            }
            _ => match sys(Sys::DUPLICATE, u64::from(id), RIGHTS_SAME, 0) {
                Ok(h) => replace(&SLOT[(rand(&mut state) % SLOTS as u64) as usize], h as u32),
                Err(e) if e.is(Errno::ENOTFOUND) || e.is(Errno::EMFILE) => {}
                Err(e) => unexpected("DUPLICATE", e),
            },
        }
    }
    0
}

fn echo(_: u64) -> u32 {
    loop {
        let id = match recv(BLOCK) {
            Ok(Some(id)) => id,
            Ok(None) => {
                unexpected("RECV in the child", Error::from(Errno::EINVAL));
                continue;
            }
            Err(e) if e.is(Errno::EPIPE) => return 0,
            Err(e) => {
                unexpected("RECV in the child", e);
                return 1;
            }
        };
        match send(id, 0) {
            Ok(_) => {}
            Err(e) if e.is(Errno::ENOTFOUND) => {} // the closer was first
            Err(e) if e.is(Errno::EAGAIN) || e.is(Errno::EPIPE) => {
                let _ = close_raw(id); // still ours: the send moved nothing
            }
            Err(e) => unexpected("SEND back", e),
        }
    }
}

fn closer(_: u64) -> u32 {
    let mut state = 0x2545_F491_4F6C_DD1D;
    for _ in 0..OPS.load(Ordering::Relaxed) {
        let id = CHILD_FIRST_FREE + rand(&mut state) % 24;
        match close_raw(id as u32) {
            Ok(()) => {}
            Err(e) if e.is(Errno::ENOTFOUND) => {}
            Err(e) => unexpected("CLOSE in the child", e),
        }
    }
    0
}

/// Set once every thread exists: before that, a handle a worker frees could be the
/// next thread's id, which a closer would then close.
static GO: AtomicU32 = AtomicU32::new(0);

/// A worker: `(f, arg)` packed in a static table, started once GO is set.
static WORKERS: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];

fn gated(index: u64) -> u32 {
    while GO.load(Ordering::Acquire) == 0 {
        let _ = sync::futex_wait(&GO, 0, None);
    }
    let packed = WORKERS[index as usize].load(Ordering::Relaxed);
    // SAFETY: `run` stored a `fn(u64) -> u32` there before starting this thread.
    let f: fn(u64) -> u32 = unsafe { core::mem::transmute(packed as usize) };
    f(index)
}

fn run(workers: [fn(u64) -> u32; 4]) -> u32 {
    let mut handles: [Option<thread::JoinHandle>; 4] = Default::default();
    for (i, f) in workers.into_iter().enumerate() {
        WORKERS[i].store(f as usize as u64, Ordering::Relaxed);
    }
    for (i, slot) in handles.iter_mut().enumerate() {
        match thread::spawn(gated, i as u64) {
            Ok(h) => *slot = Some(h),
            Err(e) => {
                println!("FAIL chan-race: THREAD_CREATE: {e}");
                return 1;
            }
        }
    }
    GO.store(1, Ordering::Release);
    let _ = sync::futex_wake(&GO, u32::MAX);
    handles.iter_mut().filter_map(Option::take).map(|h| u32::from(h.join() != Ok(0))).sum()
}

fn child(end: Handle, ops: u64) -> u32 {
    OPS.store(ops, Ordering::Relaxed);
    END.store(end.raw(), Ordering::Relaxed);
    let bad = run([echo, echo, echo, closer]);
    drop(end);
    u32::from(bad != 0 || UNEXPECTED.load(Ordering::Relaxed) != 0)
}

fn parent(ops: u64) -> u32 {
    OPS.store(ops, Ordering::Relaxed);
    let Ok((mine, theirs)) = libcopra::channel::create() else { return 1 };
    END.store(libcopra::handle::AsHandle::as_handle(&mine).raw(), Ordering::Relaxed);
    for slot in &SLOT {
        slot.store(new_event(), Ordering::Relaxed);
    }
    let mut kid = match Command::new("/bin/chan-race").handle(theirs.into_handle()).spawn() {
        Ok(kid) => kid,
        Err(e) => {
            println!("FAIL chan-race: EXEC_HANDLES: {e}");
            return 1;
        }
    };
    let bad = run([worker, worker, worker, worker]); // roles 0..3 by index
    for slot in &SLOT {
        let _ = close_raw(slot.swap(u32::MAX, Ordering::Relaxed));
    }
    drop(mine); // the child's echoes see EPIPE
    let status = kid.wait();
    let unexpected = UNEXPECTED.load(Ordering::Relaxed);
    if bad != 0 || unexpected != 0 || status != Ok(ExitStatus::Exited(0)) {
        println!("FAIL chan-race: {bad} threads failed, {unexpected} unexpected, child {status:?}");
        return 1;
    }
    println!("chan-race: ok, {} handles sent", MOVED.load(Ordering::Relaxed));
    0
}

fn main() -> u32 {
    let ops = (|| {
        let file = fs::open("/race.conf", FileMode::READ, FileFlag::EMPTY).ok()?;
        let mut buf = [0u8; 32];
        let len = fs::read(&file, &mut buf).ok()?;
        core::str::from_utf8(&buf[..len]).ok()?.trim().parse::<u64>().ok()
    })();
    let Some(ops) = ops else {
        println!("FAIL chan-race: /race.conf must hold OPS");
        return 1;
    };
    if let Some(end) = process::initial_handles().into_iter().next() {
        return child(end, ops);
    }
    parent(ops)
}
