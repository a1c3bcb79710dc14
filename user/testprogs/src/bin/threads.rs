//! threads: several threads of one process, in parallel where the SVSM has vCPUs.
//!
//! Checks, printing `threads: ok ...` and exiting 0 when all hold (else a FAIL line
//! and a non-zero code):
//! - FUTEX_WAIT answers EAGAIN when the word differs and ETIMEDOUT when its timeout
//!   passes; FUTEX_WAKE with nobody waiting wakes 0;
//! - WORKERS threads each add 1 to a counter ROUNDS times under a futex mutex, now and
//!   then holding it across a syscall so that the others contend: the sum is exact
//!   (the lock works across vCPUs);
//! - each worker runs with its own FS base (a TLS block whose second word is its index)
//!   and reads its index through `fs:` throughout, across preemptions and migrations;
//!   it allocates now and then too: the heap finds no copra TCB there and serves it
//!   through its lock, without a thread cache;
//! - JOIN returns each worker's code.
//!
//! The worker count and rounds come from `/etc/threads.conf` ("WORKERS ROUNDS") when
//! it exists, else 4 and 20000.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libcopra::abi::Errno;
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::sync::{Condvar, Mutex, Once, futex_wait, futex_wake};
use libcopra::{sysinfo, thread};
use libcopra::prelude::*;
use libcopra::{declare_main, println};

declare_main!(main);

const MAX_WORKERS: usize = 16;

/// A TLS block as x86-64 TLS lays one out: the first word points to itself.
#[repr(C, align(16))]
struct TlsBlock {
    me: AtomicU64,
    index: AtomicU64,
}

#[allow(clippy::declare_interior_mutable_const)]
const EMPTY: TlsBlock = TlsBlock { me: AtomicU64::new(0), index: AtomicU64::new(0) };
static TLS: [TlsBlock; MAX_WORKERS] = [EMPTY; MAX_WORKERS];
static COUNTER: Mutex<u64> = Mutex::new(0);
static ROUNDS: AtomicU64 = AtomicU64::new(20_000);
/// Items the main thread hands out through the condition variable; each worker takes one.
static QUEUE: Mutex<u64> = Mutex::new(0);
static READY: Condvar = Condvar::new();
static ONCE: Once = Once::new();
static ONCE_RUNS: AtomicU64 = AtomicU64::new(0);

fn fs_word(offset: u64) -> u64 {
    let value: u64;
    // SAFETY: reads the word at FS base + offset, which the caller's FS base maps.
    unsafe {
        core::arch::asm!("mov {v}, qword ptr fs:[{o}]", v = out(reg) value, o = in(reg) offset,
                         options(nostack, readonly))
    };
    value
}

fn worker(index: u64) -> u32 {
    ONCE.call_once(|| {
        ONCE_RUNS.fetch_add(1, Ordering::Relaxed);
    });
    let mut queue = QUEUE.lock();
    while *queue == 0 {
        queue = READY.wait(queue);
    }
    *queue -= 1;
    drop(queue);
    let rounds = ROUNDS.load(Ordering::Relaxed);
    for round in 0..rounds {
        let mut counter = COUNTER.lock();
        *counter += 1;
        if round % 16 == 0 {
            // Hold the lock across a trip to the kernel now and then, so that the
            // others find it taken and sleep in FUTEX_WAIT (the contended path).
            let _ = sysinfo::capabilities(0);
        }
        drop(counter);
        if round % 1000 == 0 && (fs_word(8) != index || fs_word(0) != tls_address(index)) {
            return 1000 + index as u32;
        }
        if round % 500 == 0 {
            let v: Vec<u64> = (0..32).map(|i| i + index).collect();
            if v.iter().sum::<u64>() != 496 + 32 * index {
                return 2000 + index as u32;
            }
        }
    }
    (index as u32 + 1) * 10
}

fn tls_address(index: u64) -> u64 {
    &TLS[index as usize] as *const TlsBlock as u64
}

fn main() -> u32 {
    let (workers, rounds) = match config() {
        Some(c) => c,
        None => {
            println!("FAIL threads: /etc/threads.conf is malformed");
            return 1;
        }
    };
    ROUNDS.store(rounds, Ordering::Relaxed);
    let word = AtomicU32::new(5);
    match futex_wait(&word, 6, None) {
        Err(e) if e.is(Errno::EAGAIN) => {}
        other => {
            println!("FAIL threads: FUTEX_WAIT on a changed word gave {other:?}");
            return 2;
        }
    }
    match futex_wait(&word, 5, Some(1_000_000)) {
        Err(e) if e.is(Errno::ETIMEDOUT) => {}
        other => {
            println!("FAIL threads: FUTEX_WAIT with a 1 ms timeout gave {other:?}");
            return 3;
        }
    }
    if futex_wake(&word, 1) != Ok(0) {
        println!("FAIL threads: FUTEX_WAKE with nobody waiting woke someone");
        return 4;
    }
    let mut handles: [Option<thread::JoinHandle>; MAX_WORKERS] = Default::default();
    for i in 0..workers {
        let block = &TLS[i as usize];
        block.me.store(tls_address(i), Ordering::Relaxed);
        block.index.store(i, Ordering::Relaxed);
        match thread::spawn_with_fs_base(worker, i, tls_address(i)) {
            Ok(h) => handles[i as usize] = Some(h),
            Err(e) => {
                println!("FAIL threads: THREAD_CREATE {i}: {e}");
                return 5;
            }
        }
    }
    for _ in 0..workers {
        *QUEUE.lock() += 1;
        READY.notify_one();
    }
    for i in 0..workers {
        let Some(handle) = handles[i as usize].take() else { return 6 };
        match handle.join() {
            Ok(code) if code == (i as u32 + 1) * 10 => {}
            other => {
                println!("FAIL threads: worker {i} ended with {other:?}");
                return 7;
            }
        }
    }
    if ONCE_RUNS.load(Ordering::Relaxed) != 1 || !ONCE.is_completed() {
        println!("FAIL threads: the Once ran {} times", ONCE_RUNS.load(Ordering::Relaxed));
        return 9;
    }
    let total = *COUNTER.lock();
    if total != workers * rounds {
        println!("FAIL threads: counter {total}, expected {}", workers * rounds);
        return 8;
    }
    println!("threads: ok, {workers} workers, counter {total}");
    0
}

/// (workers, rounds) from the file, or the defaults when there is none.
fn config() -> Option<(u64, u64)> {
    let Ok(file) = fs::open("/etc/threads.conf", FileMode::READ, FileFlag::EMPTY) else {
        return Some((4, 20_000));
    };
    let mut buf = [0u8; 64];
    let len = fs::read(&file, &mut buf).ok()?;
    let text = core::str::from_utf8(&buf[..len]).ok()?;
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    let workers = fields.next()??;
    let rounds = fields.next()??;
    (1..=MAX_WORKERS as u64).contains(&workers).then_some((workers, rounds))
}
