//! events: events, WAIT_MANY, process handles, CLOCK and SLEEP, between threads.
//!
//! Prints `events: ok` and exits 0 when every check holds; otherwise a FAIL line and a
//! non-zero code. Needs `/bin/hello` (a child to hold as a handle).

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use libcopra::abi::{EVENT_MAX, Errno};
use libcopra::event::Event;
use libcopra::process::{self, ExitStatus};
use libcopra::wait::{self, Instant, Signal};
use libcopra::{declare_main, println, thread};

declare_main!(main);

const MS: u64 = 1_000_000;
/// The event the ping-pong thread waits on, and the one it answers on (raw handles).
static PING: AtomicU64 = AtomicU64::new(0);
static PONG: AtomicU64 = AtomicU64::new(0);

macro_rules! check {
    ($code:expr, $cond:expr, $($why:tt)*) => {
        if !$cond {
            println!("FAIL events: {}", format_args!($($why)*));
            return $code;
        }
    };
}

fn ponger(rounds: u64) -> u32 {
    // SAFETY: main keeps both events open until this thread has ended.
    let ping = unsafe { libcopra::HandleRef::borrow_raw(PING.load(Ordering::Relaxed) as u32) };
    let pong = unsafe { libcopra::HandleRef::borrow_raw(PONG.load(Ordering::Relaxed) as u32) };
    let mut total = 0;
    for _ in 0..rounds {
        let mut buf = [0u8; 8];
        if libcopra::fs::read(&ping, &mut buf).is_err() {
            return 1;
        }
        total += u64::from_le_bytes(buf);
        if libcopra::fs::write(&pong, &1u64.to_le_bytes()).is_err() {
            return 2;
        }
    }
    if total == rounds { 7 } else { 3 }
}

fn main() -> u32 {
    // A non-blocking event answers EAGAIN while 0; a counter never passes EVENT_MAX.
    let Ok(quick) = Event::new_nonblocking() else { return 10 };
    check!(11, quick.wait().err().is_some_and(|e| e.is(Errno::EAGAIN)), "NONBLOCK READ of 0");
    check!(12, quick.signal(EVENT_MAX).is_ok(), "WRITE of EVENT_MAX");
    check!(13, quick.signal(1).err().is_some_and(|e| e.is(Errno::EOVERFLOW)), "overflow");
    check!(14, quick.wait() == Ok(EVENT_MAX), "READ after the overflow");

    // WAIT_MANY with nothing ready returns 0 after its timeout, by CLOCK.
    let Ok(idle) = Event::new() else { return 20 };
    let mut items = [wait::item(&idle, Signal::READABLE)];
    let start = Instant::now();
    check!(21, wait::wait_many(&mut items, Some(30 * MS)) == Ok(0), "WAIT_MANY timeout");
    check!(22, Instant::now().since(start) >= 30 * MS, "WAIT_MANY returned early");
    check!(23, items[0].ready == 0, "ready set on a timeout");

    // SLEEP sleeps at least as long as asked.
    let start = Instant::now();
    check!(24, wait::sleep(20 * MS).is_ok(), "SLEEP");
    check!(25, Instant::now().since(start) >= 20 * MS, "SLEEP returned early");

    // Ping-pong between two threads through two blocking events.
    let (Ok(ping), Ok(pong)) = (Event::new(), Event::new()) else { return 30 };
    PING.store(u64::from(ping.handle().raw()), Ordering::Relaxed);
    PONG.store(u64::from(pong.handle().raw()), Ordering::Relaxed);
    let rounds = 200;
    let Ok(worker) = thread::spawn(ponger, rounds) else { return 31 };
    for round in 0..rounds {
        check!(32, ping.signal(1).is_ok(), "ping {round}");
        check!(33, pong.wait() == Ok(1), "pong {round}");
    }
    // WAIT_MANY on the worker's handle and an idle event: the thread's end is seen.
    let mut items = [wait::item(&idle, Signal::READABLE), wait::item(worker.handle(), Signal::ENDED)];
    check!(34, wait::wait_many(&mut items, None) == Ok(1), "WAIT_MANY on a thread");
    check!(35, items[1].ready == Signal::ENDED.bits() as u32 && items[0].ready == 0,
           "ready fields {} {}", items[0].ready, items[1].ready);
    check!(36, worker.join() == Ok(7), "the ponger's code");

    // A child held as a handle: WAIT_MANY sees its end, JOIN its status, WAIT reaps it.
    let Ok(task) = process::exec("/bin/hello") else { return 40 };
    let Ok(child) = process::open(task) else { return 41 };
    let mut items = [wait::item(&child, Signal::ENDED)];
    check!(42, wait::wait_many(&mut items, None) == Ok(1), "WAIT_MANY on a process");
    check!(43, process::join(&child) == Ok(ExitStatus::Exited(0)), "JOIN of the child");
    check!(44, process::wait(task) == Ok(ExitStatus::Exited(0)), "WAIT after JOIN");
    check!(45, process::join(&child) == Ok(ExitStatus::Exited(0)), "JOIN after WAIT");
    check!(46, process::open(task).err().is_some_and(|e| e.is(Errno::ENOTFOUND)),
           "PROCESS_OPEN of a reaped child");
    println!("events: ok");
    0
}
