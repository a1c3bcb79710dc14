//! chan-storm: two processes of four threads passing messages that carry handles over
//! one channel, both ends used by several threads at once.
//!
//! As init (`/storm.conf` holds N, the messages to send; each comes back, so 2N
//! messages cross the channel) it makes a channel, starts itself with EXEC_HANDLES
//! giving the child one end, and runs two sender and two receiver threads on the other:
//! - a sender takes the next token t < N, makes an event holding t + 1, and SENDs
//!   (blocking) 8 bytes of t with the event's handle;
//! - the child's four threads RECV (blocking) a message, check that its event holds
//!   t + 1, write 1 more into it, and SEND it back (blocking) with the same handle;
//! - a receiver RECVs it, checks the event holds t + 2, marks t in a bitmap (a token
//!   seen twice is a duplicated message) and CLOSEs the event.
//! When all N came back, init CLOSEs its endpoint: its blocked receivers wake
//! (ENOTFOUND) and the child's threads see EPIPE and end. init WAITs for the child,
//! checks that every token came back exactly once, and prints
//! `chan-storm: ok, N messages each way` (exit 0), or FAIL lines (exit 1). The e2e test
//! then checks that every object, handle and frame is back at its baseline.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libcopra::abi::{ChannelFlag, ChannelMessage, Errno, Sys};
use libcopra::error::{Result, check};
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::handle::Handle;
use libcopra::process::{self, Command, ExitStatus};
use libcopra::syscall::syscall3;
use libcopra::{declare_main, println, thread};

declare_main!(main);

const MAX_MESSAGES: u64 = 1 << 20;
const BLOCK: u64 = ChannelFlag::BLOCK.bits();

static END: AtomicU32 = AtomicU32::new(0);
static MESSAGES: AtomicU64 = AtomicU64::new(0);
static NEXT: AtomicU64 = AtomicU64::new(0);
static RECEIVED: AtomicU64 = AtomicU64::new(0);
static DONE: AtomicU32 = AtomicU32::new(0); // an event: signalled when all came back
static FAILS: AtomicU64 = AtomicU64::new(0);
static SEEN: [AtomicU64; (MAX_MESSAGES / 64) as usize] =
    [const { AtomicU64::new(0) }; (MAX_MESSAGES / 64) as usize];

fn sys(nr: Sys, a: u64, b: u64, c: u64) -> Result<u64> {
    // SAFETY: the callers pass buffers of this program that outlive the call.
    check(unsafe { syscall3(nr as u64, a, b, c) })
}

fn fail(what: &str, detail: u64) {
    if FAILS.fetch_add(1, Ordering::Relaxed) < 8 {
        println!("FAIL chan-storm: {what} ({detail:#x})");
    }
}

fn send(end: u32, token: u64, event: u32) -> Result<u64> {
    let data = token.to_le_bytes();
    let ids = [event];
    let m = ChannelMessage { data: data.as_ptr() as u64, handles: ids.as_ptr() as u64, data_len: 8, handle_count: 1 };
    sys(Sys::SEND, u64::from(end), &m as *const _ as u64, BLOCK)
}

/// One message: its token and its event's handle.
fn recv(end: u32) -> Result<(u64, u32)> {
    let mut data = [0u8; 8];
    let mut ids = [0u32; 1];
    let mut m = ChannelMessage {
        data: data.as_mut_ptr() as u64,
        handles: ids.as_mut_ptr() as u64,
        data_len: 8,
        handle_count: 1,
    };
    let n = sys(Sys::RECV, u64::from(end), &mut m as *mut _ as u64, BLOCK)?;
    if n != 8 || m.handle_count != 1 {
        fail("a message without 8 bytes and one handle", n);
    }
    Ok((u64::from_le_bytes(data), ids[0]))
}

fn event_add(event: u32, n: u64) -> Result<u64> {
    sys(Sys::WRITE, u64::from(event), n.to_le_bytes().as_ptr() as u64, 8)
}

fn event_take(event: u32) -> Result<u64> {
    let mut buf = [0u8; 8];
    sys(Sys::READ, u64::from(event), buf.as_mut_ptr() as u64, 8)?;
    Ok(u64::from_le_bytes(buf))
}

fn sender(_: u64) -> u32 {
    let end = END.load(Ordering::Relaxed);
    let n = MESSAGES.load(Ordering::Relaxed);
    loop {
        let token = NEXT.fetch_add(1, Ordering::Relaxed);
        if token >= n {
            return 0;
        }
        let event = match sys(Sys::EVENT_CREATE, 0, 0, 0) {
            Ok(h) => h as u32,
            Err(e) => {
                fail("EVENT_CREATE", e.raw() as u64);
                return 1;
            }
        };
        if event_add(event, token + 1).is_err() {
            fail("WRITE", token);
        }
        if let Err(e) = send(end, token, event) {
            fail("SEND", e.raw() as u64);
            return 1;
        }
    }
}

fn receiver(_: u64) -> u32 {
    let end = END.load(Ordering::Relaxed);
    let n = MESSAGES.load(Ordering::Relaxed);
    loop {
        let (token, event) = match recv(end) {
            Ok(m) => m,
            Err(e) if e.is(Errno::ENOTFOUND) => return 0, // init closed the endpoint
            Err(e) => {
                fail("RECV in init", e.raw() as u64);
                return 1;
            }
        };
        match event_take(event) {
            Ok(v) if v == token + 2 => {}
            Ok(v) => fail("an event came back with another value", v),
            Err(e) => fail("READ in init", e.raw() as u64),
        }
        if token >= n {
            fail("a token never sent", token);
        } else if SEEN[(token / 64) as usize].fetch_or(1 << (token % 64), Ordering::Relaxed) & (1 << (token % 64)) != 0 {
            fail("a token came back twice", token);
        }
        if libcopra::handle::close_raw(event).is_err() {
            fail("CLOSE of a received event", u64::from(event));
        }
        if RECEIVED.fetch_add(1, Ordering::Relaxed) + 1 == n {
            let _ = event_add(DONE.load(Ordering::Relaxed), 1);
        }
    }
}

fn echo(_: u64) -> u32 {
    let end = END.load(Ordering::Relaxed);
    loop {
        let (token, event) = match recv(end) {
            Ok(m) => m,
            Err(e) if e.is(Errno::EPIPE) => return 0,
            Err(e) => {
                fail("RECV in the child", e.raw() as u64);
                return 1;
            }
        };
        match event_take(event) {
            Ok(v) if v == token + 1 => {}
            Ok(v) => fail("an event arrived with another value", v),
            Err(e) => fail("READ in the child", e.raw() as u64),
        }
        let _ = event_add(event, token + 2);
        match send(end, token, event) {
            Ok(_) => {}
            Err(e) => {
                fail("SEND back", e.raw() as u64);
                let _ = libcopra::handle::close_raw(event);
            }
        }
    }
}

fn run_threads(workers: &[fn(u64) -> u32]) -> u32 {
    let mut handles: [Option<thread::JoinHandle>; 4] = Default::default();
    for (slot, f) in handles.iter_mut().zip(workers) {
        match thread::spawn(*f, 0) {
            Ok(h) => *slot = Some(h),
            Err(e) => {
                println!("FAIL chan-storm: THREAD_CREATE: {e}");
                return 1;
            }
        }
    }
    let mut bad = 0;
    for h in handles.iter_mut().filter_map(Option::take) {
        bad += u32::from(h.join() != Ok(0));
    }
    bad
}

fn child(end: Handle) -> u32 {
    END.store(end.raw(), Ordering::Relaxed);
    let bad = run_threads(&[echo, echo, echo, echo]);
    drop(end);
    u32::from(bad != 0 || FAILS.load(Ordering::Relaxed) != 0)
}

fn parent(n: u64) -> u32 {
    MESSAGES.store(n, Ordering::Relaxed);
    let Ok((mine, theirs)) = libcopra::channel::create() else { return 1 };
    let Ok(done) = libcopra::event::Event::new() else { return 1 };
    DONE.store(done.handle().raw(), Ordering::Relaxed);
    END.store(libcopra::handle::AsHandle::as_handle(&mine).raw(), Ordering::Relaxed);
    let mut kid = match Command::new("/bin/chan-storm").handle(theirs.into_handle()).spawn() {
        Ok(kid) => kid,
        Err(e) => {
            println!("FAIL chan-storm: EXEC_HANDLES: {e}");
            return 1;
        }
    };
    let mut senders: [Option<thread::JoinHandle>; 2] = Default::default();
    let mut receivers: [Option<thread::JoinHandle>; 2] = Default::default();
    for (s, r) in senders.iter_mut().zip(receivers.iter_mut()) {
        *s = thread::spawn(sender, 0).ok();
        *r = thread::spawn(receiver, 0).ok();
    }
    let mut bad = 0;
    for h in senders.iter_mut().filter_map(Option::take) {
        bad += u32::from(h.join() != Ok(0));
    }
    if n > 0 && done.wait().is_err() {
        bad += 1;
    }
    drop(mine); // wakes the receivers (ENOTFOUND) and ends the child's threads (EPIPE)
    for h in receivers.iter_mut().filter_map(Option::take) {
        bad += u32::from(h.join() != Ok(0));
    }
    let status = kid.wait();
    let missing = (0..n).filter(|&t| SEEN[(t / 64) as usize].load(Ordering::Relaxed) & (1 << (t % 64)) == 0).count();
    let fails = FAILS.load(Ordering::Relaxed);
    if bad != 0 || missing != 0 || fails != 0 || status != Ok(ExitStatus::Exited(0)) {
        println!("FAIL chan-storm: {bad} threads failed, {missing} tokens missing, {fails} failures, child {status:?}");
        return 1;
    }
    println!("chan-storm: ok, {n} messages each way");
    0
}

fn main() -> u32 {
    let initial = process::initial_handles();
    if let Some(end) = initial.into_iter().next() {
        return child(end);
    }
    let Ok(file) = fs::open("/storm.conf", FileMode::READ, FileFlag::EMPTY) else {
        println!("FAIL chan-storm: no /storm.conf");
        return 1;
    };
    let mut buf = [0u8; 32];
    let len = fs::read(&file, &mut buf).unwrap_or(0);
    match core::str::from_utf8(&buf[..len]).ok().and_then(|t| t.trim().parse::<u64>().ok()) {
        Some(n) if n <= MAX_MESSAGES => parent(n),
        _ => {
            println!("FAIL chan-storm: /storm.conf is not a count up to {MAX_MESSAGES}");
            1
        }
    }
}
