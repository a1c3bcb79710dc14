//! tls: thread-local storage in the first thread and in spawned ones.
//!
//! Checks, printing `tls: ok ...` and exiting 0 when all hold (else a FAIL line and
//! exit code 1):
//! - a `const` key (in `.tdata`) starts at its initial value in every thread, even
//!   after the first thread changed its own copy (blocks copy the template, not a
//!   running thread's block);
//! - a lazy key (in `.tbss`, zeroed) runs its initialiser once per thread that uses it,
//!   and its destructor when a spawned thread ends;
//! - THREADS threads each count ROUNDS times in their own copies, interleaved with the
//!   others and across preemptions and vCPUs: every final count is exact, and every
//!   thread's copy lies at its own address;
//! - a raw `.tdata` word the program defines in assembly reads as its initial value.

#![no_std]
#![no_main]

use core::cell::{Cell, RefCell};
use core::sync::atomic::{AtomicU64, Ordering};

use libcopra::prelude::*;
use libcopra::{declare_main, println, thread, thread_local};

declare_main!(main);

const THREADS: u64 = 4;
const ROUNDS: u64 = 20_000;
const INITIAL: u64 = 0x1234_5678_9ABC_DEF0;

static INITS: AtomicU64 = AtomicU64::new(0);
static DROPS: AtomicU64 = AtomicU64::new(0);
static ADDRESSES: [AtomicU64; THREADS as usize + 1] =
    [const { AtomicU64::new(0) }; THREADS as usize + 1];

struct Tracked(Vec<u64>);

impl Drop for Tracked {
    fn drop(&mut self) {
        DROPS.fetch_add(1, Ordering::Relaxed);
    }
}

thread_local! {
    static COUNT: Cell<u64> = const { Cell::new(INITIAL) };
    static BIG: Cell<[u64; 32]> = const { Cell::new([7; 32]) };
    static LIST: RefCell<Tracked> = {
        INITS.fetch_add(1, Ordering::Relaxed);
        RefCell::new(Tracked(Vec::new()))
    };
}

// A `.tdata` word of the program's own, read with a local-exec access as C's
// `__thread` would be.
core::arch::global_asm!(
    ".pushsection .tdata.raw_word, \"awT\", @progbits",
    ".balign 8",
    ".type RAW_WORD, @tls_object",
    "RAW_WORD: .quad 0x0BADC0FFEE",
    ".size RAW_WORD, 8",
    ".popsection",
);

fn raw_word() -> u64 {
    let v: u64;
    // SAFETY: RAW_WORD is a TLS symbol of this program; %fs:0 is the thread pointer.
    unsafe {
        core::arch::asm!("mov {v}, qword ptr fs:[0]", "mov {v}, qword ptr [{v} + RAW_WORD@tpoff]",
                         v = out(reg) v, options(nostack, readonly))
    };
    v
}

fn check(cond: bool, what: &str) -> bool {
    if !cond {
        println!("FAIL tls: {what}");
    }
    cond
}

fn work(index: u64) -> u32 {
    let mut ok = check(COUNT.get() == INITIAL, "a thread's .tdata value is not the template's");
    ok &= check(BIG.get() == [7; 32], "a thread's .tdata array is not the template's");
    ok &= check(raw_word() == 0x0BAD_C0FFEE, "the raw .tdata word is not its initial value");
    ADDRESSES[index as usize].store(COUNT.with(|c| c as *const Cell<u64> as u64), Ordering::Relaxed);
    COUNT.set(0);
    for i in 0..ROUNDS {
        COUNT.set(COUNT.get() + index + 1);
        if i % 1000 == 0 {
            LIST.with_borrow_mut(|l| l.0.push(i));
        }
    }
    ok &= check(COUNT.get() == ROUNDS * (index + 1), "a thread's count is not its own");
    ok &= check(LIST.with_borrow(|l| l.0.len()) as u64 == ROUNDS.div_ceil(1000),
                "a thread's lazy list is not its own");
    u32::from(!ok)
}

fn main() -> u32 {
    let mut ok = check(COUNT.get() == INITIAL, "the first thread's .tdata value");
    ok &= check(raw_word() == 0x0BAD_C0FFEE, "the first thread's raw .tdata word");
    COUNT.set(99); // spawned threads must still start from the template
    BIG.set([1; 32]);
    let mut handles = Vec::new();
    for i in 0..THREADS {
        match thread::spawn(work, i) {
            Ok(h) => handles.push(h),
            Err(e) => {
                println!("FAIL tls: spawn: {e}");
                return 1;
            }
        }
    }
    for h in handles {
        ok &= check(h.join() == Ok(0), "a thread failed");
    }
    ok &= check(COUNT.get() == 99 && BIG.get() == [1; 32], "the first thread's values changed");
    ok &= check(INITS.load(Ordering::Relaxed) == THREADS, "lazy initialisers ran other than once per thread");
    ok &= check(DROPS.load(Ordering::Relaxed) == THREADS, "destructors ran other than once per spawned thread");
    ADDRESSES[THREADS as usize].store(COUNT.with(|c| c as *const Cell<u64> as u64), Ordering::Relaxed);
    let mut seen: Vec<u64> = ADDRESSES.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    seen.sort_unstable();
    seen.dedup();
    ok &= check(seen.len() == THREADS as usize + 1, "two threads share a copy");
    if !ok {
        return 1;
    }
    println!("tls: ok: {THREADS} threads x {ROUNDS} rounds, .tdata, .tbss, lazy keys and destructors");
    0
}
