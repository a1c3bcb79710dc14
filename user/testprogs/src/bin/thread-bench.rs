//! thread-bench: the workloads of bench/threads.py. Prints nothing on success; the
//! host times the phases by its syscall dispatches, which CLOCK calls separate.
//!
//! `/etc/bench.conf` holds "CALLS ROUNDS SPAWNS" (default 5000 2000 200):
//! 1. two threads each make CALLS CAPABILITIES(0) calls through the doorbell (the
//!    main thread waits in JOIN), between the first two CLOCKs;
//! 2. ping-pong: the main thread and a second thread pass ROUNDS tokens back and
//!    forth through two events (WRITE, then the other's READ), between the next two;
//! 3. SPAWNS times: THREAD_CREATE of a thread that returns at once, then JOIN,
//!    between the last two. Exits 0, or 1 if anything failed.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libcopra::event::Event;
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::handle::HandleRef;
use libcopra::sysinfo;
use libcopra::wait::Instant;
use libcopra::{declare_main, thread};

declare_main!(main);

static CALLS: AtomicU64 = AtomicU64::new(5000);
static PING: AtomicU32 = AtomicU32::new(0);
static PONG: AtomicU32 = AtomicU32::new(0);

fn caller(_: u64) -> u32 {
    let mut bad = 0;
    for _ in 0..CALLS.load(Ordering::Relaxed) {
        bad |= u32::from(sysinfo::capabilities(0).is_err());
    }
    bad
}

fn ponger(rounds: u64) -> u32 {
    // SAFETY: main keeps both events open until this thread has ended.
    let (ping, pong) = unsafe {
        (HandleRef::borrow_raw(PING.load(Ordering::Relaxed)),
         HandleRef::borrow_raw(PONG.load(Ordering::Relaxed)))
    };
    let mut buf = [0u8; 8];
    for _ in 0..rounds {
        if fs::read(&ping, &mut buf).is_err() || fs::write(&pong, &1u64.to_le_bytes()).is_err() {
            return 1;
        }
    }
    0
}

fn nothing(_: u64) -> u32 {
    0
}

fn main() -> u32 {
    let (calls, rounds, spawns) = config().unwrap_or((5000, 2000, 200));
    CALLS.store(calls, Ordering::Relaxed);
    let _ = Instant::now();
    let Ok(other) = thread::spawn(caller, 0) else { return 1 };
    let mine = caller(0);
    if mine != 0 || other.join() != Ok(0) {
        return 1;
    }
    let _ = Instant::now();
    let (Ok(ping), Ok(pong)) = (Event::new(), Event::new()) else { return 1 };
    PING.store(ping.handle().raw(), Ordering::Relaxed);
    PONG.store(pong.handle().raw(), Ordering::Relaxed);
    let Ok(partner) = thread::spawn(ponger, rounds) else { return 1 };
    let _ = Instant::now();
    for _ in 0..rounds {
        if ping.signal(1).is_err() || pong.wait().is_err() {
            return 1;
        }
    }
    let _ = Instant::now();
    if partner.join() != Ok(0) {
        return 1;
    }
    let _ = Instant::now();
    for _ in 0..spawns {
        let Ok(t) = thread::spawn(nothing, 0) else { return 1 };
        if t.join() != Ok(0) {
            return 1;
        }
    }
    let _ = Instant::now();
    0
}

fn config() -> Option<(u64, u64, u64)> {
    let file = fs::open("/etc/bench.conf", FileMode::READ, FileFlag::EMPTY).ok()?;
    let mut buf = [0u8; 64];
    let len = fs::read(&file, &mut buf).ok()?;
    let mut fields = core::str::from_utf8(&buf[..len]).ok()?
        .split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??, fields.next()??))
}
