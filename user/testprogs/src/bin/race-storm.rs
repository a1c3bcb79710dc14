//! race-storm: threads of two processes racing on shared handles.
//!
//! As init (`/race.conf` exists: "THREADS OPS") it EXECs itself twice with `/kid` as
//! the child's root, holds both children as handles, waits for them with WAIT_MANY and
//! JOIN, reaps them with WAIT, and prints `race-storm: ok` when both succeeded.
//!
//! A child (no `/race.conf` in its root) keeps SLOTS event handles in a shared table and
//! runs THREADS threads of OPS operations each, by role (thread index mod 4):
//! - writer: WRITE 1 to a random slot's event;
//! - reader: READ a random slot's event (some events block, some are NONBLOCK);
//! - waiter: WAIT_MANY on three random slots with a 1 ms timeout;
//! - closer: CLOSE a random slot's handle and put a new event in its place.
//!
//! Handles are closed under the others' feet all the time: every answer must be one
//! the ABI documents for that race (ENOTFOUND for a handle just closed, EAGAIN for an
//! empty NONBLOCK event, ...), never anything else. At the end the main thread closes
//! every slot (waking readers still blocked) and joins everyone. A child prints one
//! summary line and exits 0, or 1 after a FAIL line.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libcopra::abi::{Errno, EventFlag, Sys};
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::handle::close_raw;
use libcopra::process::{self, ExitStatus};
use libcopra::error::{Result, check};
use libcopra::syscall::syscall3;
use libcopra::wait::{self, Signal, WaitItem};
use libcopra::{declare_main, println, thread};

declare_main!(main);

const SLOTS: usize = 8;
const MAX_THREADS: usize = 16;
const MS: u64 = 1_000_000;
/// A slot's id after the end: no handle has it (ENOTFOUND), unlike 0, the log.
const CLOSED: u32 = u32::MAX;

static SLOT: [AtomicU32; SLOTS] = [const { AtomicU32::new(0) }; SLOTS];
static OPS: AtomicU64 = AtomicU64::new(1000);
static UNEXPECTED: AtomicU64 = AtomicU64::new(0);
static DONE: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
static SEED: AtomicU64 = AtomicU64::new(0x9E37_79B9_7F4A_7C15);

/// A raw syscall with three arguments, decoded.
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

fn unexpected(what: &str, e: i64) {
    if UNEXPECTED.fetch_add(1, Ordering::Relaxed) < 8 {
        println!("FAIL race-storm: {what} answered {e}");
    }
}

fn new_event(state: &mut u64) -> u32 {
    let flags = if rand(state) % 2 == 0 { EventFlag::NONBLOCK } else { EventFlag::EMPTY };
    match sys(Sys::EVENT_CREATE, flags.bits(), 0, 0) {
        Ok(h) => h as u32,
        Err(e) => {
            unexpected("EVENT_CREATE", e.raw());
            0
        }
    }
}

fn worker(index: u64) -> u32 {
    let mut state = SEED.load(Ordering::Relaxed) ^ (index + 1).wrapping_mul(0xA24B_AED4_963E_E407);
    let ops = OPS.load(Ordering::Relaxed);
    let role = index % 4;
    for _ in 0..ops {
        let slot = &SLOT[(rand(&mut state) % SLOTS as u64) as usize];
        let h = slot.load(Ordering::Relaxed);
        match role {
            0 => match sys(Sys::WRITE, u64::from(h), 1u64.to_le_bytes().as_ptr() as u64, 8) {
                Ok(8) => {}
                Err(e) if e.is(Errno::ENOTFOUND) => {}
                Ok(n) => unexpected("WRITE", n as i64),
                Err(e) => unexpected("WRITE", e.raw()),
            },
            1 => {
                let mut buf = [0u8; 8];
                match sys(Sys::READ, u64::from(h), buf.as_mut_ptr() as u64, 8) {
                    Ok(8) if u64::from_le_bytes(buf) > 0 => {}
                    Err(e) if e.is(Errno::ENOTFOUND) || e.is(Errno::EAGAIN) => {}
                    Ok(n) => unexpected("READ", n as i64),
                    Err(e) => unexpected("READ", e.raw()),
                }
            }
            2 => {
                let mut items = [WaitItem::zeroed(); 3];
                for item in &mut items {
                    let s = &SLOT[(rand(&mut state) % SLOTS as u64) as usize];
                    item.handle = s.load(Ordering::Relaxed);
                    item.signals = (Signal::READABLE | Signal::WRITABLE).bits() as u32;
                }
                match wait::wait_many(&mut items, Some(MS)) {
                    Ok(n) if n <= 3 => {}
                    Err(e) if e.is(Errno::ENOTFOUND) => {}
                    Ok(n) => unexpected("WAIT_MANY", n as i64),
                    Err(e) => unexpected("WAIT_MANY", e.raw()),
                }
            }
            _ => {
                let fresh = new_event(&mut state);
                let old = slot.swap(fresh, Ordering::Relaxed);
                match close_raw(old) {
                    Ok(()) => {}
                    Err(e) if e.is(Errno::ENOTFOUND) => {}
                    Err(e) => unexpected("CLOSE", e.raw()),
                }
            }
        }
        DONE[role as usize].fetch_add(1, Ordering::Relaxed);
    }
    0
}

fn child(threads: u64) -> u32 {
    let mut state = SEED.load(Ordering::Relaxed);
    for slot in &SLOT {
        slot.store(new_event(&mut state), Ordering::Relaxed);
    }
    let mut handles: [Option<thread::JoinHandle>; MAX_THREADS] = Default::default();
    for i in 0..threads {
        match thread::spawn(worker, i) {
            Ok(h) => handles[i as usize] = Some(h),
            Err(e) => {
                println!("FAIL race-storm: THREAD_CREATE: {e}");
                return 1;
            }
        }
    }
    // Everyone but the readers first; then close every slot, which wakes a reader
    // still blocked on an event nobody writes any more.
    for (i, handle) in handles.iter_mut().enumerate().take(threads as usize) {
        if i % 4 != 1 {
            if let Some(h) = handle.take() {
                if h.join() != Ok(0) {
                    return 1;
                }
            }
        }
    }
    for slot in &SLOT {
        let _ = close_raw(slot.swap(CLOSED, Ordering::Relaxed));
    }
    for handle in handles.iter_mut().take(threads as usize) {
        if let Some(h) = handle.take() {
            if h.join() != Ok(0) {
                return 1;
            }
        }
    }
    let bad = UNEXPECTED.load(Ordering::Relaxed);
    let done: u64 = DONE.iter().map(|d| d.load(Ordering::Relaxed)).sum();
    println!("race-storm: worker {} ops, {bad} unexpected", done);
    u32::from(bad != 0)
}

fn parent(threads: u64) -> u32 {
    let mut tasks = [0u64; 2];
    let mut handles = [None, None];
    for (task, handle) in tasks.iter_mut().zip(handles.iter_mut()) {
        *task = match process::exec_in("/bin/race-storm", "/kid") {
            Ok(t) => t,
            Err(e) => {
                println!("FAIL race-storm: EXEC: {e}");
                return 1;
            }
        };
        *handle = process::open(*task).ok();
    }
    let [Some(a), Some(b)] = &handles else { return 1 };
    let mut items = [wait::item(a, Signal::ENDED), wait::item(b, Signal::ENDED)];
    let mut ended = 0;
    while ended < 2 {
        match wait::wait_many(&mut items, None) {
            Ok(_) => {
                ended = items.iter().filter(|i| i.ready != 0).count();
            }
            Err(e) => {
                println!("FAIL race-storm: WAIT_MANY on the children: {e}");
                return 1;
            }
        }
    }
    let statuses = [process::join(a), process::join(b)];
    for task in tasks {
        let _ = process::wait(task);
    }
    if statuses != [Ok(ExitStatus::Exited(0)), Ok(ExitStatus::Exited(0))] {
        println!("FAIL race-storm: children ended {statuses:?}");
        return 1;
    }
    println!("race-storm: ok, 2 processes of {threads} threads");
    0
}

fn main() -> u32 {
    let Ok(file) = fs::open("/race.conf", FileMode::READ, FileFlag::EMPTY) else {
        // A child: its root is /kid, where the parent left the configuration.
        return match config("/role") {
            Some((threads, ops)) => {
                OPS.store(ops, Ordering::Relaxed);
                child(threads)
            }
            None => 1,
        };
    };
    drop(file);
    match config("/race.conf") {
        Some((threads, _)) => parent(threads),
        None => {
            println!("FAIL race-storm: /race.conf is malformed");
            1
        }
    }
}

/// "THREADS OPS" from `path`.
fn config(path: &str) -> Option<(u64, u64)> {
    let file = fs::open(path, FileMode::READ, FileFlag::EMPTY).ok()?;
    let mut buf = [0u8; 64];
    let len = fs::read(&file, &mut buf).ok()?;
    let text = core::str::from_utf8(&buf[..len]).ok()?;
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    let threads = fields.next()??;
    let ops = fields.next()??;
    (1..=MAX_THREADS as u64).contains(&threads).then_some((threads, ops))
}
