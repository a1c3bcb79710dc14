//! chan-bench: channel round trips and throughput between two processes, for
//! bench/channels.py (which timestamps syscalls; this program prints nothing on
//! success).
//!
//! As init, with `/etc/bench.conf` = "ROUNDS MESSAGES": makes a channel, starts itself
//! with EXEC_HANDLES giving the child one end, then, between CLOCK marks:
//! 1. ROUNDS ping-pongs: SEND 8 bytes (blocking), RECV the reply (blocking); the child
//!    RECVs and SENDs each back;
//! 2. MESSAGES one-way messages of 8 bytes, SENT blocking (the queue fills and
//!    drains); the child RECVs them all, then answers once;
//! 3. ROUNDS ping-pongs with CHANNEL_CALL on both sides: the parent calls (its request,
//!    then the answer), the child answers each request with a call (its answer, then
//!    the next request), the last with SEND.
//! Exits 0 when the child did, 1 otherwise.

#![no_std]
#![no_main]

use libcopra::abi::{ChannelFlag, ChannelMessage, Sys};
use libcopra::channel::Endpoint;
use libcopra::error::{Result, check};
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::handle::AsHandle;
use libcopra::process::{self, Command, ExitStatus};
use libcopra::syscall::{syscall3, syscall4};
use libcopra::wait::Instant;
use libcopra::{declare_main, println};

declare_main!(main);

const BLOCK: u64 = ChannelFlag::BLOCK.bits();

fn send(end: &Endpoint, value: u64) -> Result<u64> {
    let data = value.to_le_bytes();
    let m = ChannelMessage { data: data.as_ptr() as u64, handles: 0, data_len: 8, handle_count: 0 };
    // SAFETY: the message and its data outlive the call.
    check(unsafe { syscall3(Sys::SEND as u64, u64::from(end.as_handle().raw()), &m as *const _ as u64, BLOCK) })
}

fn recv(end: &Endpoint) -> Result<u64> {
    let mut data = [0u8; 8];
    let mut m = ChannelMessage { data: data.as_mut_ptr() as u64, handles: 0, data_len: 8, handle_count: 0 };
    // SAFETY: as above.
    check(unsafe { syscall3(Sys::RECV as u64, u64::from(end.as_handle().raw()), &mut m as *mut _ as u64, BLOCK) })?;
    Ok(u64::from_le_bytes(data))
}

fn call(end: &Endpoint, value: u64) -> Result<u64> {
    let out = value.to_le_bytes();
    let mut data = [0u8; 8];
    let o = ChannelMessage { data: out.as_ptr() as u64, handles: 0, data_len: 8, handle_count: 0 };
    let mut m = ChannelMessage { data: data.as_mut_ptr() as u64, handles: 0, data_len: 8, handle_count: 0 };
    // SAFETY: both messages and their data outlive the call.
    check(unsafe {
        syscall4(Sys::CHANNEL_CALL as u64, u64::from(end.as_handle().raw()), &o as *const _ as u64,
                 &mut m as *mut _ as u64, 0)
    })?;
    Ok(u64::from_le_bytes(data))
}

fn child(end: Endpoint) -> u32 {
    let Ok(rounds) = recv(&end) else { return 1 };
    let Ok(messages) = recv(&end) else { return 1 };
    for i in 0..rounds {
        if recv(&end) != Ok(i) || send(&end, i).is_err() {
            return 1;
        }
    }
    for i in 0..messages {
        if recv(&end) != Ok(i) {
            return 1;
        }
    }
    if send(&end, messages).is_err() {
        return 1;
    }
    let Ok(mut request) = recv(&end) else { return 1 };
    for i in 0..rounds {
        if request != i {
            return 1;
        }
        let next = if i + 1 < rounds { call(&end, i) } else { send(&end, i).map(|_| 0) };
        let Ok(next) = next else { return 1 };
        request = next;
    }
    0
}

fn parent(rounds: u64, messages: u64) -> u32 {
    let Ok((mine, theirs)) = libcopra::channel::create() else { return 1 };
    let Ok(mut kid) = Command::new("/init").handle(theirs.into_handle()).spawn() else { return 1 };
    if send(&mine, rounds).is_err() || send(&mine, messages).is_err() {
        return 1;
    }
    let _ = Instant::now();
    for i in 0..rounds {
        if send(&mine, i).is_err() || recv(&mine) != Ok(i) {
            return 1;
        }
    }
    let _ = Instant::now();
    let _ = Instant::now();
    for i in 0..messages {
        if send(&mine, i).is_err() {
            return 1;
        }
    }
    if recv(&mine) != Ok(messages) {
        return 1;
    }
    let _ = Instant::now();
    let _ = Instant::now();
    for i in 0..rounds {
        if call(&mine, i) != Ok(i) {
            return 1;
        }
    }
    let _ = Instant::now();
    match kid.wait() {
        Ok(ExitStatus::Exited(0)) => 0,
        other => {
            println!("chan-bench: the child {other:?}");
            1
        }
    }
}

fn main() -> u32 {
    if let Some(end) = process::initial_handles().into_iter().next() {
        return child(Endpoint::from_handle(end));
    }
    let Ok(file) = fs::open("/etc/bench.conf", FileMode::READ, FileFlag::EMPTY) else { return 1 };
    let mut buf = [0u8; 64];
    let len = fs::read(&file, &mut buf).unwrap_or(0);
    let text = core::str::from_utf8(&buf[..len]).unwrap_or("");
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>().ok());
    match (fields.next().flatten(), fields.next().flatten()) {
        (Some(rounds), Some(messages)) => parent(rounds, messages),
        _ => {
            println!("chan-bench: /etc/bench.conf must hold ROUNDS MESSAGES");
            1
        }
    }
}
