//! channels: conformance of CHANNEL_CREATE, SEND, RECV, CHANNEL_CALL, DUPLICATE, REPLACE
//! and EXEC_HANDLES, every documented error included (docs/abi.md), through the ABI alone.
//!
//! As init (no initial handles) it runs the cases of the `cases!` table and prints
//! `PASS <case>` or `FAIL <case>: <why>` for each, then `SUMMARY <passed>/<total>`; exits
//! 0 iff every case passed. Cases that need a second process start this same program
//! (`/bin/channels`) with EXEC_HANDLES: with initial handles it is the helper, which
//! reads one command byte from the endpoint at handle 1 and acts on it (see `helper`).
//!
//! Every case closes what it made, so the e2e test can check that every object and
//! frame is back at its baseline, whatever a killed helper held.

#![no_std]
#![no_main]

extern crate alloc;

use core::fmt;

use libcopra::abi::{
    CHANNEL_MAX_BYTES, CHANNEL_MAX_HANDLES, CHANNEL_QUEUE_MAX, ChannelFlag, ChannelMessage, Errno,
    MAX_HANDLES, RIGHTS_SAME, Right, Signal, Sys, WaitItem,
};
use libcopra::channel::{self, Endpoint};
use libcopra::error::check;
use libcopra::handle::{AsHandle, Handle, close_raw};
use libcopra::prelude::*;
use libcopra::process::{self, Command, ExitStatus};
use libcopra::syscall::{self, syscall5_via};
use libcopra::{declare_main, thread, wait};

declare_main!(main);

const SELF: &str = "/bin/channels";
const NO_HANDLE: u64 = u32::MAX as u64;
const UNMAPPED: u64 = 0xdead_0000;

// --- verdicts -------------------------------------------------------------------------

type Msg = String;
type Outcome = Result<(), Msg>;

fn msg(args: fmt::Arguments<'_>) -> Msg {
    alloc::fmt::format(args)
}

macro_rules! fail {
    ($($arg:tt)*) => { return Err(msg(format_args!($($arg)*))) };
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => { if !($cond) { fail!($($arg)*); } };
}

struct Rax(u64);

impl fmt::Display for Rax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match check(self.0) {
            Ok(v) => write!(f, "ok {v:#x}"),
            Err(e) => write!(f, "{e}"),
        }
    }
}

fn expect_errno(what: &str, rax: u64, want: Errno) -> Outcome {
    ensure!(rax == want.raw() as u64, "{what}: got {}, want {}", Rax(rax), want.name());
    Ok(())
}

fn expect_ok(what: &str, rax: u64) -> Result<u64, Msg> {
    check(rax).map_err(|e| msg(format_args!("{what}: {e}")))
}

fn ok<T>(what: &str, result: libcopra::Result<T>) -> Result<T, Msg> {
    result.map_err(|e| msg(format_args!("{what}: {e}")))
}

// --- raw calls --------------------------------------------------------------------------

fn sc(nr: Sys, args: &[u64]) -> u64 {
    let a = |i: usize| args.get(i).copied().unwrap_or(0);
    // SAFETY: callers pass pointers to their own buffers or addresses the kernel refuses.
    unsafe { syscall5_via(syscall::entry(), nr as u64, a(0), a(1), a(2), a(3), a(4)) }
}

fn h(handle: &impl AsHandle) -> u64 {
    u64::from(handle.as_handle().raw())
}

/// Two connected endpoints as owned handles.
fn pair() -> Result<(Handle, Handle), Msg> {
    let raw = expect_ok("CHANNEL_CREATE", sc(Sys::CHANNEL_CREATE, &[0]))?;
    // SAFETY: fresh handles from CHANNEL_CREATE.
    unsafe { Ok((Handle::from_raw(raw as u32), Handle::from_raw((raw >> 32) as u32))) }
}

fn event() -> Result<Handle, Msg> {
    let raw = expect_ok("EVENT_CREATE", sc(Sys::EVENT_CREATE, &[1]))?;
    // SAFETY: a fresh handle.
    Ok(unsafe { Handle::from_raw(raw as u32) })
}

/// SEND of `data` and the raw `ids`; the raw answer.
fn send(end: &impl AsHandle, data: &[u8], ids: &[u32], flags: u64) -> u64 {
    let m = ChannelMessage {
        data: data.as_ptr() as u64,
        handles: ids.as_ptr() as u64,
        data_len: data.len() as u32,
        handle_count: ids.len() as u32,
    };
    sc(Sys::SEND, &[h(end), &m as *const _ as u64, flags])
}

/// RECV into `buf` and `ids`; the raw answer and the message struct after the call.
fn recv(end: &impl AsHandle, buf: &mut [u8], ids: &mut [u32], flags: u64) -> (u64, ChannelMessage) {
    let mut m = ChannelMessage {
        data: buf.as_mut_ptr() as u64,
        handles: ids.as_mut_ptr() as u64,
        data_len: buf.len() as u32,
        handle_count: ids.len() as u32,
    };
    let rax = sc(Sys::RECV, &[h(end), &mut m as *mut _ as u64, flags]);
    (rax, m)
}

/// Whether `raw` names a handle now (DUPLICATE with the same rights, closed at once;
/// ENOTFOUND: no; any other answer, such as EPERM, means it exists).
fn exists(raw: u32) -> bool {
    let rax = sc(Sys::DUPLICATE, &[u64::from(raw), RIGHTS_SAME]);
    if let Ok(dup) = check(rax) {
        let _ = close_raw(dup as u32);
        return true;
    }
    rax != Errno::ENOTFOUND.raw() as u64
}

fn signals(handle: &impl AsHandle) -> Result<u32, Msg> {
    let mut items = [wait::item(handle, Signal::READABLE | Signal::WRITABLE | Signal::PEER_CLOSED)];
    ok("WAIT_MANY", wait::wait_many(&mut items, Some(0)))?;
    Ok(items[0].ready)
}

fn event_roundtrip(writer: &impl AsHandle, reader: &impl AsHandle, n: u64) -> Outcome {
    let rax = sc(Sys::WRITE, &[h(writer), n.to_le_bytes().as_ptr() as u64, 8]);
    ensure!(rax == 8, "WRITE of the event: {}", Rax(rax));
    let mut buf = [0u8; 8];
    let rax = sc(Sys::READ, &[h(reader), buf.as_mut_ptr() as u64, 8]);
    ensure!(rax == 8 && u64::from_le_bytes(buf) == n, "READ of the event: {} {buf:?}", Rax(rax));
    Ok(())
}

// --- CHANNEL_CREATE ---------------------------------------------------------------------

fn channel_create_returns_two_distinct_endpoints() -> Outcome {
    let (a, b) = pair()?;
    ensure!(a.raw() != b.raw() && a.raw() != 0 && b.raw() != 0, "ids {} and {}", a.raw(), b.raw());
    ensure!(signals(&a)? == Signal::WRITABLE.bits() as u32, "a new endpoint signals {:#x}", signals(&a)?);
    Ok(())
}

fn channel_create_with_flags_returns_einval() -> Outcome {
    expect_errno("CHANNEL_CREATE(1)", sc(Sys::CHANNEL_CREATE, &[1]), Errno::EINVAL)
}

fn channel_create_needs_room_for_both_handles() -> Outcome {
    let e = event()?;
    let mut filler: Vec<Handle> = Vec::new();
    loop {
        match check(sc(Sys::DUPLICATE, &[h(&e), RIGHTS_SAME])) {
            // SAFETY: a fresh handle.
            Ok(raw) => filler.push(unsafe { Handle::from_raw(raw as u32) }),
            Err(err) if err.is(Errno::EMFILE) => break,
            Err(err) => fail!("DUPLICATE: {err}"),
        }
    }
    expect_errno("CHANNEL_CREATE with no room", sc(Sys::CHANNEL_CREATE, &[0]), Errno::EMFILE)?;
    drop(filler.pop());
    expect_errno("CHANNEL_CREATE with room for one", sc(Sys::CHANNEL_CREATE, &[0]), Errno::EMFILE)?;
    drop(filler.pop());
    let raw = expect_ok("CHANNEL_CREATE with room for two", sc(Sys::CHANNEL_CREATE, &[0]))?;
    drop(filler);
    ensure!(close_raw(raw as u32).is_ok() && close_raw((raw >> 32) as u32).is_ok(), "CLOSE of the pair");
    Ok(())
}

// --- SEND and RECV: bytes -------------------------------------------------------------

fn messages_arrive_whole_and_in_order() -> Outcome {
    let (a, b) = pair()?;
    for i in 0..3u8 {
        expect_ok("SEND", send(&a, &[i; 5][..usize::from(i) + 1], &[], 0))?;
    }
    for i in 0..3u8 {
        let mut buf = [0u8; 16];
        let (rax, m) = recv(&b, &mut buf, &mut [], 0);
        let n = expect_ok("RECV", rax)? as usize;
        ensure!(n == usize::from(i) + 1 && m.data_len as usize == n, "message {i}: {n} bytes");
        ensure!(buf[..n].iter().all(|&x| x == i), "message {i}: {:?}", &buf[..n]);
    }
    Ok(())
}

fn both_directions_are_independent() -> Outcome {
    let (a, b) = pair()?;
    expect_ok("SEND a", send(&a, b"to b", &[], 0))?;
    expect_ok("SEND b", send(&b, b"to a", &[], 0))?;
    let mut buf = [0u8; 8];
    let n = expect_ok("RECV a", recv(&a, &mut buf, &mut [], 0).0)? as usize;
    ensure!(&buf[..n] == b"to a", "a got {:?}", &buf[..n]);
    let n = expect_ok("RECV b", recv(&b, &mut buf, &mut [], 0).0)? as usize;
    ensure!(&buf[..n] == b"to b", "b got {:?}", &buf[..n]);
    Ok(())
}

fn empty_message_is_delivered() -> Outcome {
    let (a, b) = pair()?;
    expect_ok("SEND", send(&a, &[], &[], 0))?;
    let (rax, m) = recv(&b, &mut [], &mut [], 0);
    ensure!(rax == 0 && m.data_len == 0 && m.handle_count == 0, "RECV: {}", Rax(rax));
    Ok(())
}

fn largest_message_is_delivered_and_one_more_byte_is_einval() -> Outcome {
    let (a, b) = pair()?;
    let big = vec![0x5Au8; CHANNEL_MAX_BYTES as usize + 1];
    expect_errno("SEND of MAX+1 bytes", send(&a, &big, &[], 0), Errno::EINVAL)?;
    expect_ok("SEND of MAX bytes", send(&a, &big[..CHANNEL_MAX_BYTES as usize], &[], 0))?;
    let mut buf = vec![0u8; CHANNEL_MAX_BYTES as usize];
    let n = expect_ok("RECV", recv(&b, &mut buf, &mut [], 0).0)?;
    ensure!(n == CHANNEL_MAX_BYTES && buf.iter().all(|&x| x == 0x5A), "got {n} bytes");
    Ok(())
}

fn recv_on_empty_endpoint_returns_eagain() -> Outcome {
    let (_a, b) = pair()?;
    expect_errno("RECV", recv(&b, &mut [0; 4], &mut [], 0).0, Errno::EAGAIN)
}

fn send_to_full_queue_returns_eagain_and_recv_makes_room() -> Outcome {
    let (a, b) = pair()?;
    for i in 0..CHANNEL_QUEUE_MAX {
        expect_ok("SEND", send(&a, &[i as u8], &[], 0))?;
    }
    ensure!(signals(&a)? & Signal::WRITABLE.bits() as u32 == 0, "a full queue's sender is WRITABLE");
    let e = event()?;
    expect_errno("SEND to a full queue", send(&a, b"x", &[e.raw()], 0), Errno::EAGAIN)?;
    ensure!(exists(e.raw()), "the refused SEND took the event");
    expect_ok("RECV", recv(&b, &mut [0; 1], &mut [], 0).0)?;
    ensure!(signals(&a)? & Signal::WRITABLE.bits() as u32 != 0, "room made, but not WRITABLE");
    expect_ok("SEND after RECV", send(&a, b"x", &[], 0))?;
    Ok(())
}

fn recv_with_small_buffer_returns_emsgsize_with_sizes_and_keeps_the_message() -> Outcome {
    let (a, b) = pair()?;
    let e = event()?;
    expect_ok("SEND", send(&a, b"twelve bytes", &[e.into_raw()], 0))?;
    let mut buf = [0u8; 4];
    let mut ids = [0u32; 4];
    let (rax, m) = recv(&b, &mut buf, &mut ids, 0);
    expect_errno("RECV into 4 bytes", rax, Errno::EMSGSIZE)?;
    ensure!(m.data_len == 12 && m.handle_count == 1, "sizes {} and {}", m.data_len, m.handle_count);
    let (rax, m) = recv(&b, &mut [0u8; 12], &mut [], 0);
    expect_errno("RECV with no handle room", rax, Errno::EMSGSIZE)?;
    ensure!(m.data_len == 12 && m.handle_count == 1, "sizes {} and {}", m.data_len, m.handle_count);
    let mut buf = [0u8; 12];
    let (rax, m) = recv(&b, &mut buf, &mut ids, 0);
    ensure!(rax == 12 && &buf == b"twelve bytes" && m.handle_count == 1, "RECV: {}", Rax(rax));
    ensure!(close_raw(ids[0]).is_ok(), "the received event is no handle");
    Ok(())
}

fn send_of_unreadable_data_returns_efault_and_moves_nothing() -> Outcome {
    let (a, b) = pair()?;
    let e = event()?;
    let ids = [e.raw()];
    let m = ChannelMessage { data: UNMAPPED, handles: ids.as_ptr() as u64, data_len: 8, handle_count: 1 };
    expect_errno("SEND", sc(Sys::SEND, &[h(&a), &m as *const _ as u64, 0]), Errno::EFAULT)?;
    expect_errno("SEND of an unmapped message", sc(Sys::SEND, &[h(&a), UNMAPPED, 0]), Errno::EFAULT)?;
    ensure!(exists(e.raw()), "the event moved");
    expect_errno("RECV", recv(&b, &mut [0; 8], &mut [0; 1], 0).0, Errno::EAGAIN)
}

fn recv_into_unwritable_buffer_returns_efault_and_keeps_the_message() -> Outcome {
    let (a, b) = pair()?;
    let e = event()?;
    expect_ok("SEND", send(&a, b"abc", &[e.into_raw()], 0))?;
    let mut ids = [0u32; 1];
    let mut m = ChannelMessage { data: UNMAPPED, handles: ids.as_mut_ptr() as u64, data_len: 3, handle_count: 1 };
    expect_errno("RECV to unmapped data", sc(Sys::RECV, &[h(&b), &mut m as *mut _ as u64, 0]), Errno::EFAULT)?;
    let mut buf = [0u8; 3];
    let mut m = ChannelMessage { data: buf.as_mut_ptr() as u64, handles: UNMAPPED, data_len: 3, handle_count: 1 };
    expect_errno("RECV to unmapped ids", sc(Sys::RECV, &[h(&b), &mut m as *mut _ as u64, 0]), Errno::EFAULT)?;
    let (rax, m) = recv(&b, &mut buf, &mut ids, 0);
    ensure!(rax == 3 && m.handle_count == 1, "RECV after EFAULT: {}", Rax(rax));
    ensure!(close_raw(ids[0]).is_ok(), "the received event is no handle");
    Ok(())
}

fn send_and_recv_with_unknown_flags_return_einval() -> Outcome {
    let (a, b) = pair()?;
    expect_errno("SEND", send(&a, b"x", &[], 2), Errno::EINVAL)?;
    expect_errno("RECV", recv(&b, &mut [0; 1], &mut [], 2).0, Errno::EINVAL)
}

fn send_without_write_and_recv_without_read_return_eperm() -> Outcome {
    let (a, b) = pair()?;
    expect_ok("REPLACE a", sc(Sys::REPLACE, &[h(&a), Right::READ.bits()]))?;
    expect_errno("SEND through a READ-only endpoint", send(&a, b"x", &[], 0), Errno::EPERM)?;
    expect_ok("REPLACE b", sc(Sys::REPLACE, &[h(&b), Right::WRITE.bits()]))?;
    expect_ok("SEND b", send(&b, b"x", &[], 0))?;
    expect_errno("RECV through a WRITE-only endpoint", recv(&b, &mut [0; 1], &mut [], 0).0, Errno::EPERM)
}

fn send_and_recv_on_non_endpoints_return_enotsupp() -> Outcome {
    let e = event()?;
    expect_errno("SEND on an event", send(&e, b"x", &[], 0), Errno::ENOTSUPP)?;
    expect_errno("RECV on an event", recv(&e, &mut [0; 1], &mut [], 0).0, Errno::ENOTSUPP)?;
    // SAFETY: only named in a call the kernel refuses.
    let none = unsafe { libcopra::handle::HandleRef::borrow_raw(NO_HANDLE as u32) };
    expect_errno("SEND on no handle", send(&none, b"x", &[], 0), Errno::ENOTFOUND)
}

// --- moving handles -----------------------------------------------------------------------

fn send_moves_handles_and_recv_installs_them_with_their_rights() -> Outcome {
    let (a, b) = pair()?;
    let e = event()?;
    let reader = expect_ok("DUPLICATE", sc(Sys::DUPLICATE, &[h(&e), (Right::READ | Right::TRANSFER).bits()]))? as u32;
    let ids = [e.raw(), reader];
    expect_ok("SEND", send(&a, b"two", &ids, 0))?;
    let moved = e.into_raw();
    ensure!(!exists(moved) && !exists(reader), "the sent ids still name handles");
    let mut got = [0u32; 2];
    let (rax, m) = recv(&b, &mut [0u8; 3], &mut got, 0);
    ensure!(rax == 3 && m.handle_count == 2, "RECV: {}", Rax(rax));
    // SAFETY: fresh ids from RECV.
    let (writer, reader) = unsafe { (Handle::from_raw(got[0]), Handle::from_raw(got[1])) };
    event_roundtrip(&writer, &reader, 9)?;
    let rax = sc(Sys::WRITE, &[h(&reader), 1u64.to_le_bytes().as_ptr() as u64, 8]);
    expect_errno("WRITE through the moved READ-only handle", rax, Errno::ERDONLY)
}

fn send_of_endpoint_through_itself_returns_einval_and_moves_nothing() -> Outcome {
    let (a, _b) = pair()?;
    let e = event()?;
    expect_errno("SEND", send(&a, b"", &[e.raw(), a.raw()], 0), Errno::EINVAL)?;
    ensure!(exists(e.raw()) && exists(a.raw()), "a handle moved");
    Ok(())
}

fn send_of_the_peer_returns_einval() -> Outcome {
    let (a, b) = pair()?;
    expect_errno("SEND", send(&a, b"", &[b.raw()], 0), Errno::EINVAL)?;
    ensure!(exists(b.raw()), "the peer moved");
    Ok(())
}

fn send_of_a_handle_twice_returns_einval() -> Outcome {
    let (a, _b) = pair()?;
    let e = event()?;
    expect_errno("SEND", send(&a, b"", &[e.raw(), e.raw()], 0), Errno::EINVAL)?;
    ensure!(exists(e.raw()), "the event moved");
    Ok(())
}

fn send_of_more_than_64_handles_returns_einval() -> Outcome {
    let (a, _b) = pair()?;
    let ids = [0u32; CHANNEL_MAX_HANDLES as usize + 1];
    expect_errno("SEND", send(&a, b"", &ids, 0), Errno::EINVAL)
}

fn send_of_handle_without_transfer_returns_eperm_and_moves_nothing() -> Outcome {
    let (a, _b) = pair()?;
    let movable = event()?;
    let fixed = event()?;
    expect_ok("REPLACE", sc(Sys::REPLACE, &[h(&fixed), (Right::READ | Right::WRITE).bits()]))?;
    expect_errno("SEND", send(&a, b"", &[movable.raw(), fixed.raw()], 0), Errno::EPERM)?;
    expect_errno("SEND of the log", send(&a, b"", &[0], 0), Errno::EPERM)?;
    ensure!(exists(movable.raw()) && exists(fixed.raw()), "a handle moved");
    Ok(())
}

fn send_of_unknown_handle_returns_enotfound_and_moves_nothing() -> Outcome {
    let (a, b) = pair()?;
    let e = event()?;
    expect_errno("SEND", send(&a, b"", &[e.raw(), u32::MAX], 0), Errno::ENOTFOUND)?;
    ensure!(exists(e.raw()), "the event moved");
    expect_errno("RECV", recv(&b, &mut [], &mut [0; 2], 0).0, Errno::EAGAIN)
}

fn endpoints_move_and_keep_working() -> Outcome {
    let (a, b) = pair()?;
    let (c, d) = pair()?;
    expect_ok("SEND of d", send(&a, b"", &[d.into_raw()], 0))?;
    let mut got = [0u32; 1];
    expect_ok("RECV", recv(&b, &mut [], &mut got, 0).0)?;
    // SAFETY: a fresh id from RECV.
    let d = unsafe { Handle::from_raw(got[0]) };
    expect_ok("SEND through c", send(&c, b"moved", &[], 0))?;
    let mut buf = [0u8; 5];
    let n = expect_ok("RECV through the moved d", recv(&d, &mut buf, &mut [], 0).0)?;
    ensure!(n == 5 && &buf == b"moved", "got {buf:?}");
    Ok(())
}

fn send_of_endpoint_whose_queue_carries_an_endpoint_returns_ebusy() -> Outcome {
    let (a1, b1) = pair()?;
    let (a2, b2) = pair()?;
    expect_ok("SEND of b1 through a2", send(&a2, b"", &[b1.into_raw()], 0))?;
    expect_errno("SEND of b2 through a1", send(&a1, b"", &[b2.raw()], 0), Errno::EBUSY)?;
    ensure!(exists(b2.raw()), "b2 moved");
    Ok(())
}

fn recv_into_full_handle_table_returns_emfile_and_keeps_the_message() -> Outcome {
    let (a, b) = pair()?;
    let e1 = event()?;
    let e2 = event()?;
    expect_ok("SEND", send(&a, b"2", &[e1.into_raw(), e2.into_raw()], 0))?;
    // Fill the table up to one below the limit: the message needs two.
    let mut filler: Vec<Handle> = Vec::new();
    loop {
        let rax = sc(Sys::DUPLICATE, &[h(&a), RIGHTS_SAME]);
        match check(rax) {
            // SAFETY: a fresh handle.
            Ok(raw) => filler.push(unsafe { Handle::from_raw(raw as u32) }),
            Err(e) if e.is(Errno::EMFILE) => break,
            Err(e) => fail!("DUPLICATE: {e}"),
        }
    }
    ensure!(filler.len() > 4, "only {} handles fit", filler.len());
    drop(filler.pop());
    let mut got = [0u32; 2];
    let (rax, _) = recv(&b, &mut [0u8; 1], &mut got, 0);
    expect_errno("RECV of two handles with room for one", rax, Errno::EMFILE)?;
    ensure!(signals(&b)? & Signal::READABLE.bits() as u32 != 0, "the message is gone");
    drop(filler.pop());
    let (rax, m) = recv(&b, &mut [0u8; 1], &mut got, 0);
    ensure!(rax == 1 && m.handle_count == 2, "RECV after closing one: {}", Rax(rax));
    drop(filler);
    // SAFETY: fresh ids from RECV.
    let (e1, e2) = unsafe { (Handle::from_raw(got[0]), Handle::from_raw(got[1])) };
    event_roundtrip(&e1, &e1, 3)?;
    event_roundtrip(&e2, &e2, 4)?;
    ensure!(MAX_HANDLES >= 4, "MAX_HANDLES");
    Ok(())
}

// --- closing ------------------------------------------------------------------------------

fn send_to_closed_peer_returns_epipe_and_moves_nothing() -> Outcome {
    let (a, b) = pair()?;
    drop(b);
    ensure!(signals(&a)? == Signal::PEER_CLOSED.bits() as u32, "signals {:#x}", signals(&a)?);
    let e = event()?;
    expect_errno("SEND", send(&a, b"x", &[e.raw()], 0), Errno::EPIPE)?;
    ensure!(exists(e.raw()), "the event moved");
    Ok(())
}

fn recv_after_peer_closed_delivers_what_was_queued_then_epipe() -> Outcome {
    let (a, b) = pair()?;
    expect_ok("SEND", send(&a, b"last", &[], 0))?;
    drop(a);
    let mut buf = [0u8; 4];
    ensure!(recv(&b, &mut buf, &mut [], 0).0 == 4 && &buf == b"last", "the queued message is lost");
    expect_errno("RECV", recv(&b, &mut buf, &mut [], 0).0, Errno::EPIPE)?;
    expect_errno("blocking RECV", recv(&b, &mut buf, &mut [], ChannelFlag::BLOCK.bits()).0, Errno::EPIPE)
}

fn closing_the_receiver_releases_the_queued_handles() -> Outcome {
    let (a, b) = pair()?;
    let (c, d) = pair()?;
    expect_ok("SEND of d", send(&a, b"", &[d.into_raw()], 0))?;
    drop(b); // d, queued towards b, is closed with it
    ensure!(signals(&c)? & Signal::PEER_CLOSED.bits() as u32 != 0, "d still open");
    expect_errno("SEND to d", send(&c, b"", &[], 0), Errno::EPIPE)
}

fn readable_follows_the_queue() -> Outcome {
    let (a, b) = pair()?;
    ensure!(signals(&b)? & Signal::READABLE.bits() as u32 == 0, "empty but READABLE");
    expect_ok("SEND", send(&a, b"x", &[], 0))?;
    let mut items = [wait::item(&b, Signal::READABLE), wait::item(&a, Signal::READABLE)];
    let n = ok("WAIT_MANY", wait::wait_many(&mut items, None))?;
    ensure!(n == 1 && items[0].ready == Signal::READABLE.bits() as u32, "ready {}", items[0].ready);
    expect_ok("RECV", recv(&b, &mut [0; 1], &mut [], 0).0)?;
    ensure!(signals(&b)? & Signal::READABLE.bits() as u32 == 0, "drained but READABLE");
    Ok(())
}

fn blocked_receiver(raw: u64) -> u32 {
    let mut buf = [0u8; 8];
    let mut m = ChannelMessage { data: buf.as_mut_ptr() as u64, handles: 0, data_len: 8, handle_count: 0 };
    let rax = sc(Sys::RECV, &[raw, &mut m as *mut _ as u64, ChannelFlag::BLOCK.bits()]);
    if rax == 5 && &buf[..5] == b"wake!" { 0 } else if rax == Errno::EPIPE.raw() as u64 { 2 } else { 1 }
}

fn blocking_recv_waits_for_a_message_then_for_the_peer_close() -> Outcome {
    let (a, b) = pair()?;
    let t = ok("THREAD_CREATE", thread::spawn(blocked_receiver, h(&b)))?;
    expect_ok("SEND", send(&a, b"wake!", &[], 0))?;
    ensure!(t.join() == Ok(0), "the blocked RECV did not get the message");
    let t = ok("THREAD_CREATE", thread::spawn(blocked_receiver, h(&b)))?;
    drop(a);
    ensure!(t.join() == Ok(2), "the blocked RECV did not answer EPIPE at the close");
    Ok(())
}

fn blocked_sender(raw: u64) -> u32 {
    let m = ChannelMessage { data: b"late".as_ptr() as u64, handles: 0, data_len: 4, handle_count: 0 };
    let rax = sc(Sys::SEND, &[raw, &m as *const _ as u64, ChannelFlag::BLOCK.bits()]);
    u32::from(rax != 0)
}

fn blocking_send_waits_for_room() -> Outcome {
    let (a, b) = pair()?;
    for _ in 0..CHANNEL_QUEUE_MAX {
        expect_ok("SEND", send(&a, b"x", &[], 0))?;
    }
    let t = ok("THREAD_CREATE", thread::spawn(blocked_sender, h(&a)))?;
    let mut buf = [0u8; 4];
    for _ in 0..CHANNEL_QUEUE_MAX {
        expect_ok("RECV", recv(&b, &mut buf, &mut [], ChannelFlag::BLOCK.bits()).0)?;
    }
    ensure!(t.join() == Ok(0), "the blocked SEND failed");
    let n = expect_ok("RECV of the late message", recv(&b, &mut buf, &mut [], 0).0)?;
    ensure!(n == 4 && &buf == b"late", "got {buf:?}");
    Ok(())
}

// --- CHANNEL_CALL ------------------------------------------------------------------------

/// CHANNEL_CALL of `data` and `ids`, receiving into `buf`; the raw answer and the
/// receive message after the call.
fn call(end: &impl AsHandle, data: &[u8], ids: &[u32], buf: &mut [u8], flags: u64) -> (u64, ChannelMessage, [u32; 4]) {
    let out = ChannelMessage {
        data: data.as_ptr() as u64,
        handles: ids.as_ptr() as u64,
        data_len: data.len() as u32,
        handle_count: ids.len() as u32,
    };
    let mut got = [0u32; 4];
    let mut m = ChannelMessage {
        data: buf.as_mut_ptr() as u64,
        handles: got.as_mut_ptr() as u64,
        data_len: buf.len() as u32,
        handle_count: 4,
    };
    let rax = sc(Sys::CHANNEL_CALL, &[h(end), &out as *const _ as u64, &mut m as *mut _ as u64, flags]);
    (rax, m, got)
}

/// A server thread: RECV a request, then answer each with CHANNEL_CALL (the answer, then
/// the next request: seL4's ReplyRecv) until the client goes; 0 when it saw EPIPE.
fn call_server(raw: u64) -> u32 {
    let mut buf = [0u8; 8];
    let mut m = ChannelMessage { data: buf.as_mut_ptr() as u64, handles: 0, data_len: 8, handle_count: 0 };
    let mut rax = sc(Sys::RECV, &[raw, &mut m as *mut _ as u64, ChannelFlag::BLOCK.bits()]);
    loop {
        if rax == Errno::EPIPE.raw() as u64 {
            return 0;
        }
        if rax != 8 {
            return 1;
        }
        let answer = (u64::from_le_bytes(buf) + 1).to_le_bytes();
        let out = ChannelMessage { data: answer.as_ptr() as u64, handles: 0, data_len: 8, handle_count: 0 };
        let mut m = ChannelMessage { data: buf.as_mut_ptr() as u64, handles: 0, data_len: 8, handle_count: 0 };
        rax = sc(Sys::CHANNEL_CALL, &[raw, &out as *const _ as u64, &mut m as *mut _ as u64, 0]);
    }
}

fn channel_call_sends_and_waits_for_the_answer() -> Outcome {
    let (a, b) = pair()?;
    let t = ok("THREAD_CREATE", thread::spawn(call_server, h(&b)))?;
    let client = Endpoint::from_handle(a);
    for i in 0..100u64 {
        let mut buf = [0u8; 8];
        let got = ok("call", client.call(&i.to_le_bytes(), &mut buf))?;
        ensure!(got.len == 8 && u64::from_le_bytes(buf) == i + 1, "answer {i}: {buf:?}");
    }
    drop(client);
    ensure!(t.join() == Ok(0), "the server's CHANNEL_CALL did not answer EPIPE at the close");
    Ok(())
}

fn channel_call_moves_handles_both_ways_through_another_process() -> Outcome {
    let (mine, theirs) = pair()?;
    let mut child = ok("Command", Command::new(SELF).handle(theirs).spawn())?;
    expect_ok("SEND ECHO", send(&mine, &[ECHO], &[], 0))?;
    let e = event()?;
    let rax = sc(Sys::WRITE, &[h(&e), 9u64.to_le_bytes().as_ptr() as u64, 8]);
    ensure!(rax == 8, "WRITE of the event: {}", Rax(rax));
    let raw = e.into_raw();
    let mut buf = [0u8; 4];
    let (rax, m, got) = call(&mine, b"ping", &[raw], &mut buf, 0);
    ensure!(rax == 4 && &buf == b"ping" && m.handle_count == 1, "echo: {}", Rax(rax));
    // SAFETY: a fresh id from the call's receive.
    let back = unsafe { Handle::from_raw(got[0]) };
    let mut value = [0u8; 8];
    let rax = sc(Sys::READ, &[h(&back), value.as_mut_ptr() as u64, 8]);
    ensure!(rax == 8 && u64::from_le_bytes(value) == 9, "the echoed event holds {value:?}");
    // Too small for the echo: EMSGSIZE with the sizes, the echo stays queued.
    let mut small = [0u8; 2];
    let (rax, m, _) = call(&mine, b"pong", &[], &mut small, 0);
    expect_errno("CHANNEL_CALL into 2 bytes", rax, Errno::EMSGSIZE)?;
    ensure!(m.data_len == 4, "sizes after EMSGSIZE: {}", m.data_len);
    let (rax, _) = recv(&mine, &mut buf, &mut [], ChannelFlag::BLOCK.bits());
    ensure!(rax == 4 && &buf == b"pong", "the echo after EMSGSIZE: {}", Rax(rax));
    drop(mine);
    let status = ok("WAIT", child.wait())?;
    ensure!(status == ExitStatus::Exited(0), "the echo child {status}");
    Ok(())
}

fn channel_call_refusals_send_nothing() -> Outcome {
    let (a, b) = pair()?;
    let mut buf = [0u8; 8];
    expect_errno("flags", call(&a, b"x", &[], &mut buf, 1).0, Errno::EINVAL)?;
    let out = ChannelMessage { data: b"x".as_ptr() as u64, handles: 0, data_len: 1, handle_count: 0 };
    let rax = sc(Sys::CHANNEL_CALL, &[h(&a), &out as *const _ as u64, UNMAPPED, 0]);
    expect_errno("an unwritable answer message", rax, Errno::EFAULT)?;
    let bad = ChannelMessage { data: UNMAPPED, handles: 0, data_len: 8, handle_count: 0 };
    let rax = sc(Sys::CHANNEL_CALL, &[h(&a), &out as *const _ as u64, &bad as *const _ as u64, 0]);
    expect_errno("an unwritable answer buffer", rax, Errno::EFAULT)?;
    let e = event()?;
    let rax = call(&e, b"x", &[], &mut buf, 0).0;
    expect_errno("an event", rax, Errno::ENOTSUPP)?;
    let read_only = expect_ok("DUPLICATE", sc(Sys::DUPLICATE, &[h(&a), Right::WRITE.bits() as u64]))?;
    // SAFETY: a fresh handle.
    let read_only = unsafe { Handle::from_raw(read_only as u32) };
    expect_errno("without READ", call(&read_only, b"x", &[], &mut buf, 0).0, Errno::EPERM)?;
    ensure!(recv(&b, &mut buf, &mut [], 0).0 == Errno::EAGAIN.raw() as u64, "something was sent");
    for _ in 0..CHANNEL_QUEUE_MAX {
        expect_ok("SEND", send(&a, b"x", &[], 0))?;
    }
    expect_errno("a full queue", call(&a, b"y", &[], &mut buf, 0).0, Errno::EAGAIN)?;
    for _ in 0..CHANNEL_QUEUE_MAX {
        let (rax, _) = recv(&b, &mut buf, &mut [], 0);
        ensure!(rax == 1 && buf[0] == b'x', "queued: {}", Rax(rax));
    }
    ensure!(recv(&b, &mut buf, &mut [], 0).0 == Errno::EAGAIN.raw() as u64, "the refused call sent");
    drop(b);
    expect_errno("a closed peer", call(&a, b"x", &[], &mut buf, 0).0, Errno::EPIPE)?;
    Ok(())
}

fn a_process_killed_in_channel_call_loses_nothing_of_the_survivor() -> Outcome {
    let (mine, theirs) = pair()?;
    let (control, their_control) = pair()?;
    let mut child = ok("Command", Command::new(SELF).handle(theirs).handle(their_control).spawn())?;
    expect_ok("SEND CALL_DIE", send(&mine, &[CALL_DIE], &[], 0))?;
    let mut buf = [0u8; 8];
    let (rax, _) = recv(&mine, &mut buf, &mut [], ChannelFlag::BLOCK.bits());
    ensure!(rax == 7 && &buf[..7] == b"calling", "the child's first call: {}", Rax(rax));
    let given = event()?;
    expect_ok("SEND an event to the call", send(&mine, b"take", &[given.into_raw()], 0))?;
    let (rax, _) = recv(&mine, &mut buf, &mut [], ChannelFlag::BLOCK.bits());
    ensure!(rax == 3 && &buf[..3] == b"got", "the child's second call: {}", Rax(rax));
    // The child's thread now waits in its second CHANNEL_CALL: end the child under it.
    expect_ok("SEND on the control channel", send(&control, b"die", &[], 0))?;
    let status = ok("WAIT", child.wait())?;
    ensure!(status == ExitStatus::Killed { vector: 6 }, "the child {status}");
    let keep = event()?;
    expect_errno("SEND to the dead caller", send(&mine, b"", &[keep.raw()], 0), Errno::EPIPE)?;
    event_roundtrip(&keep, &keep, 3)
}

/// CALL_DIE's thread: CHANNEL_CALL "calling", then "got" once answered, waiting on.
fn dying_caller(raw: u64) -> u32 {
    let mut buf = [0u8; 8];
    let mut ids = [0u32; 1];
    let call_once = |data: &[u8], buf: &mut [u8; 8], ids: &mut [u32; 1]| {
        let out = ChannelMessage { data: data.as_ptr() as u64, handles: 0, data_len: data.len() as u32, handle_count: 0 };
        let mut m = ChannelMessage { data: buf.as_mut_ptr() as u64, handles: ids.as_mut_ptr() as u64, data_len: 8, handle_count: 1 };
        sc(Sys::CHANNEL_CALL, &[raw, &out as *const _ as u64, &mut m as *mut _ as u64, 0])
    };
    if call_once(b"calling", &mut buf, &mut ids) != 4 {
        return 1;
    }
    call_once(b"got", &mut buf, &mut ids);
    1
}

// --- DUPLICATE and REPLACE ------------------------------------------------------------------

fn duplicate_makes_another_handle_on_the_same_object() -> Outcome {
    let e = event()?;
    let dup = expect_ok("DUPLICATE", sc(Sys::DUPLICATE, &[h(&e), RIGHTS_SAME]))? as u32;
    // SAFETY: a fresh handle.
    let dup = unsafe { Handle::from_raw(dup) };
    ensure!(dup.raw() != e.raw(), "the same id");
    event_roundtrip(&dup, &e, 11)
}

fn duplicate_with_fewer_rights_restricts_the_new_handle() -> Outcome {
    let e = event()?;
    let raw = expect_ok("DUPLICATE", sc(Sys::DUPLICATE, &[h(&e), Right::READ.bits()]))? as u32;
    // SAFETY: a fresh handle.
    let reader = unsafe { Handle::from_raw(raw) };
    let rax = sc(Sys::WRITE, &[h(&reader), 1u64.to_le_bytes().as_ptr() as u64, 8]);
    expect_errno("WRITE through the READ-only duplicate", rax, Errno::ERDONLY)?;
    expect_errno("DUPLICATE of it (no DUPLICATE right)", sc(Sys::DUPLICATE, &[h(&reader), RIGHTS_SAME]), Errno::EPERM)
}

fn duplicate_with_more_rights_returns_eperm() -> Outcome {
    let e = event()?;
    expect_errno("DUPLICATE with MAP", sc(Sys::DUPLICATE, &[h(&e), Right::MAP.bits()]), Errno::EPERM)?;
    expect_errno("DUPLICATE of the log", sc(Sys::DUPLICATE, &[0, RIGHTS_SAME]), Errno::EPERM)
}

fn duplicate_and_replace_with_unknown_rights_return_einval() -> Outcome {
    let e = event()?;
    expect_errno("DUPLICATE", sc(Sys::DUPLICATE, &[h(&e), 64]), Errno::EINVAL)?;
    expect_errno("REPLACE", sc(Sys::REPLACE, &[h(&e), 64]), Errno::EINVAL)
}

fn duplicate_and_replace_of_unknown_handle_return_enotfound() -> Outcome {
    expect_errno("DUPLICATE", sc(Sys::DUPLICATE, &[NO_HANDLE, RIGHTS_SAME]), Errno::ENOTFOUND)?;
    expect_errno("REPLACE", sc(Sys::REPLACE, &[NO_HANDLE, 0]), Errno::ENOTFOUND)
}

fn replace_reduces_rights_in_place_and_never_adds() -> Outcome {
    let e = event()?;
    expect_ok("REPLACE", sc(Sys::REPLACE, &[h(&e), (Right::READ | Right::WAIT).bits()]))?;
    let rax = sc(Sys::WRITE, &[h(&e), 1u64.to_le_bytes().as_ptr() as u64, 8]);
    expect_errno("WRITE after REPLACE", rax, Errno::ERDONLY)?;
    expect_errno("REPLACE adding WRITE", sc(Sys::REPLACE, &[h(&e), Right::WRITE.bits()]), Errno::EPERM)?;
    expect_ok("REPLACE to nothing", sc(Sys::REPLACE, &[h(&e), 0]))?;
    expect_errno("WAIT_MANY without WAIT", {
        let mut items = [WaitItem { handle: e.raw(), signals: Signal::READABLE.bits() as u32, ..WaitItem::zeroed() }];
        sc(Sys::WAIT_MANY, &[items.as_mut_ptr() as u64, 1, 0])
    }, Errno::EPERM)
}

// --- EXEC_HANDLES and the helper -----------------------------------------------------------

const ECHO: u8 = 1;
const DIE: u8 = 2;
const REPORT: u8 = 3;
const CALL_DIE: u8 = 4;

fn exec_with(handles: &[u32]) -> u64 {
    sc(Sys::EXEC_HANDLES, &[
        concat!("/bin/channels", "\0").as_ptr() as u64,
        "/\0".as_ptr() as u64,
        handles.as_ptr() as u64,
        handles.len() as u64,
        0,
    ])
}

fn exec_handles_gives_the_child_its_handles_at_ids_1_to_n() -> Outcome {
    let (mine, theirs) = pair()?;
    let e = event()?;
    let ids = [theirs.raw(), e.raw()];
    let task = expect_ok("EXEC_HANDLES", exec_with(&ids))?;
    let (_, _) = (theirs.into_raw(), e.into_raw());
    ensure!(!exists(ids[0]) && !exists(ids[1]), "the given handles are still here");
    expect_ok("SEND REPORT", send(&mine, &[REPORT], &[], 0))?;
    let mut buf = [0u8; 8];
    let (rax, _) = recv(&mine, &mut buf, &mut [], ChannelFlag::BLOCK.bits());
    expect_ok("RECV of the report", rax)?;
    // The helper says: how many initial handles, the id of the endpoint, of the event.
    ensure!(buf[..3] == [2, 1, 2], "the child reports {:?}", &buf[..3]);
    let status = ok("WAIT", process::wait(task))?;
    ensure!(status == ExitStatus::Exited(0), "the child {status}");
    Ok(())
}

fn exec_handles_that_cannot_start_keeps_every_handle() -> Outcome {
    let e = event()?;
    let ids = [e.raw()];
    let rax = sc(Sys::EXEC_HANDLES, &[
        "/bin/nothing-here\0".as_ptr() as u64, "/\0".as_ptr() as u64, ids.as_ptr() as u64, 1, 0,
    ]);
    expect_errno("EXEC_HANDLES of a missing file", rax, Errno::ENOTFOUND)?;
    ensure!(exists(e.raw()), "the event moved");
    Ok(())
}

fn exec_handles_refuses_bad_lists_and_moves_nothing() -> Outcome {
    let e = event()?;
    expect_errno("an id twice", exec_with(&[e.raw(), e.raw()]), Errno::EINVAL)?;
    expect_errno("the log", exec_with(&[e.raw(), 0]), Errno::EPERM)?;
    expect_errno("an unknown id", exec_with(&[e.raw(), u32::MAX]), Errno::ENOTFOUND)?;
    expect_errno("65 ids", exec_with(&[0u32; CHANNEL_MAX_HANDLES as usize + 1]), Errno::EINVAL)?;
    let ids = [e.raw()];
    let rax = sc(Sys::EXEC_HANDLES, &[
        "/bin/channels\0".as_ptr() as u64, "/\0".as_ptr() as u64, ids.as_ptr() as u64, 1, 1,
    ]);
    expect_errno("flags", rax, Errno::EINVAL)?;
    let rax = sc(Sys::EXEC_HANDLES, &["/bin/channels\0".as_ptr() as u64, "/\0".as_ptr() as u64, UNMAPPED, 1, 0]);
    expect_errno("an unmapped array", rax, Errno::EFAULT)?;
    ensure!(exists(e.raw()), "the event moved");
    Ok(())
}

fn handles_round_trip_through_another_process() -> Outcome {
    let (mine, theirs) = pair()?;
    let mut child = ok("Command", Command::new(SELF).handle(theirs).spawn())?;
    expect_ok("SEND ECHO", send(&mine, &[ECHO], &[], 0))?;
    let e = event()?;
    let rax = sc(Sys::WRITE, &[h(&e), 21u64.to_le_bytes().as_ptr() as u64, 8]);
    ensure!(rax == 8, "WRITE of the event: {}", Rax(rax));
    let raw = e.into_raw();
    expect_ok("SEND with the event", send(&mine, b"ping", &[raw], ChannelFlag::BLOCK.bits()))?;
    let mut buf = [0u8; 4];
    let mut got = [0u32; 1];
    let (rax, m) = recv(&mine, &mut buf, &mut got, ChannelFlag::BLOCK.bits());
    ensure!(rax == 4 && &buf == b"ping" && m.handle_count == 1, "echo: {}", Rax(rax));
    // SAFETY: a fresh id from RECV.
    let back = unsafe { Handle::from_raw(got[0]) };
    let mut value = [0u8; 8];
    let rax = sc(Sys::READ, &[h(&back), value.as_mut_ptr() as u64, 8]);
    ensure!(rax == 8 && u64::from_le_bytes(value) == 21, "the echoed event holds {value:?}");
    drop(mine);
    let status = ok("WAIT", child.wait())?;
    ensure!(status == ExitStatus::Exited(0), "the echo child {status}");
    Ok(())
}

fn a_process_killed_mid_transfer_loses_nothing_of_the_survivor() -> Outcome {
    let (mine, theirs) = pair()?;
    let keep = event()?;
    // Queued before the child starts: the command, then messages carrying handles,
    // more than the child takes before it dies.
    expect_ok("SEND DIE", send(&mine, &[DIE], &[], 0))?;
    for i in 0..4u8 {
        let e = event()?;
        expect_ok("SEND", send(&mine, &[i], &[e.into_raw()], 0))?;
    }
    let mut child = ok("Command", Command::new(SELF).handle(theirs).spawn())?;
    let status = ok("WAIT", child.wait())?;
    ensure!(status == ExitStatus::Killed { vector: 6 }, "the child {status}");
    ensure!(signals(&mine)? & Signal::PEER_CLOSED.bits() as u32 != 0, "the peer is still open");
    expect_errno("SEND to the dead child", send(&mine, b"", &[keep.raw()], 0), Errno::EPIPE)?;
    event_roundtrip(&keep, &keep, 5)?;
    // What the child sent before it died is still here, its handle with it.
    let mut buf = [0u8; 1];
    let mut got = [0u32; 1];
    let (rax, m) = recv(&mine, &mut buf, &mut got, 0);
    ensure!(rax == 1 && buf[0] == 1 && m.handle_count == 1, "the echo of message 1: {}", Rax(rax));
    // SAFETY: a fresh id from RECV.
    let echoed = unsafe { Handle::from_raw(got[0]) };
    event_roundtrip(&echoed, &echoed, 6)?;
    expect_errno("RECV after that", recv(&mine, &mut buf, &mut got, 0).0, Errno::EPIPE)
}

/// The helper: started with handles by EXEC_HANDLES; the endpoint is handle 1.
fn helper(handles: Vec<Handle>) -> u32 {
    let count = handles.len();
    let mut handles = handles.into_iter();
    let Some(first) = handles.next() else { return 1 };
    let end = Endpoint::from_handle(first);
    let rest: Vec<Handle> = handles.collect();
    let mut cmd = [0u8; 1];
    let Ok(got) = end.recv(&mut cmd) else { return 1 };
    drop(got);
    match cmd[0] {
        REPORT => {
            let ids = [count as u8, end.as_handle().raw() as u8, rest.first().map_or(0, |h| h.raw() as u8)];
            u32::from(end.send(&ids, Vec::new()).is_err())
        }
        ECHO => loop {
            match end.recv_vec() {
                Ok((data, handles)) => {
                    if end.send(&data, handles).is_err() {
                        return 1;
                    }
                }
                Err(e) if e.is(Errno::EPIPE) => return 0,
                Err(_) => return 1,
            }
        },
        CALL_DIE => {
            // A thread waits in CHANNEL_CALL while this one ends the process (#UD) at
            // the first message on the control channel (handle 2).
            let Some(control) = rest.first() else { return 1 };
            let raw = u64::from(end.as_handle().raw());
            let Ok(_caller) = thread::spawn(dying_caller, raw) else { return 1 };
            let mut cmd = [0u8; 4];
            let mut m = ChannelMessage { data: cmd.as_mut_ptr() as u64, handles: 0, data_len: 4, handle_count: 0 };
            sc(Sys::RECV, &[h(control), &mut m as *mut _ as u64, ChannelFlag::BLOCK.bits()]);
            // SAFETY: ud2 raises #UD, which ends this process.
            unsafe { core::arch::asm!("ud2", options(noreturn)) }
        }
        DIE => {
            // Take two messages with their handles; send the second back; die holding
            // the first, more still queued towards this process.
            let _held = end.recv_vec();
            if let Ok((data, handles)) = end.recv_vec() {
                let _ = end.send(&data, handles);
            }
            // SAFETY: ud2 raises #UD, which ends this process.
            unsafe { core::arch::asm!("ud2", options(noreturn)) }
        }
        _ => 1,
    }
}

// --- the typed library ------------------------------------------------------------------------

fn typed_channel_carries_values_and_handles() -> Outcome {
    let (tx, rx) = ok("channel", channel::channel::<[u32; 3]>())?;
    ok("send", tx.send([1, 2, 3]))?;
    ensure!(rx.recv() == Ok([1, 2, 3]), "recv");
    let e = event()?;
    tx.send_with([4, 5, 6], vec![e]).map_err(|e| msg(format_args!("send_with: {}", e.error)))?;
    let (value, handles) = ok("recv_with", rx.recv_with())?;
    ensure!(value == [4, 5, 6] && handles.len() == 1, "recv_with: {value:?}, {} handles", handles.len());
    ensure!(rx.try_recv().err().is_some_and(|e| e.is(Errno::EAGAIN)), "try_recv of nothing");
    drop(tx);
    ensure!(rx.recv().err().is_some_and(|e| e.is(Errno::EPIPE)), "recv after the sender dropped");
    Ok(())
}

fn select_returns_the_receiver_with_a_message() -> Outcome {
    let (tx1, rx1) = ok("channel", channel::channel::<u64>())?;
    let (tx2, rx2) = ok("channel", channel::channel::<u64>())?;
    ensure!(ok("select", channel::select(&[&rx1, &rx2], Some(0)))? .is_none(), "ready with nothing sent");
    ok("send", tx2.send(7))?;
    ensure!(ok("select", channel::select(&[&rx1, &rx2], None))? == Some(1), "not the second");
    ensure!(rx2.recv() == Ok(7), "recv");
    drop(tx1);
    ensure!(ok("select", channel::select(&[&rx1, &rx2], None))? == Some(0), "a closed sender not seen");
    drop(tx2);
    Ok(())
}

// --- the table -----------------------------------------------------------------------------

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, in the order it runs.
        const CASES: &[(&str, fn() -> Outcome)] = &[$((stringify!($name), $name)),*];
    };
}

cases! {
    channel_create_returns_two_distinct_endpoints,
    channel_create_with_flags_returns_einval,
    channel_create_needs_room_for_both_handles,
    messages_arrive_whole_and_in_order,
    both_directions_are_independent,
    empty_message_is_delivered,
    largest_message_is_delivered_and_one_more_byte_is_einval,
    recv_on_empty_endpoint_returns_eagain,
    send_to_full_queue_returns_eagain_and_recv_makes_room,
    recv_with_small_buffer_returns_emsgsize_with_sizes_and_keeps_the_message,
    send_of_unreadable_data_returns_efault_and_moves_nothing,
    recv_into_unwritable_buffer_returns_efault_and_keeps_the_message,
    send_and_recv_with_unknown_flags_return_einval,
    send_without_write_and_recv_without_read_return_eperm,
    send_and_recv_on_non_endpoints_return_enotsupp,
    send_moves_handles_and_recv_installs_them_with_their_rights,
    send_of_endpoint_through_itself_returns_einval_and_moves_nothing,
    send_of_the_peer_returns_einval,
    send_of_a_handle_twice_returns_einval,
    send_of_more_than_64_handles_returns_einval,
    send_of_handle_without_transfer_returns_eperm_and_moves_nothing,
    send_of_unknown_handle_returns_enotfound_and_moves_nothing,
    endpoints_move_and_keep_working,
    send_of_endpoint_whose_queue_carries_an_endpoint_returns_ebusy,
    recv_into_full_handle_table_returns_emfile_and_keeps_the_message,
    send_to_closed_peer_returns_epipe_and_moves_nothing,
    recv_after_peer_closed_delivers_what_was_queued_then_epipe,
    closing_the_receiver_releases_the_queued_handles,
    readable_follows_the_queue,
    blocking_recv_waits_for_a_message_then_for_the_peer_close,
    blocking_send_waits_for_room,
    channel_call_sends_and_waits_for_the_answer,
    channel_call_moves_handles_both_ways_through_another_process,
    channel_call_refusals_send_nothing,
    a_process_killed_in_channel_call_loses_nothing_of_the_survivor,
    duplicate_makes_another_handle_on_the_same_object,
    duplicate_with_fewer_rights_restricts_the_new_handle,
    duplicate_with_more_rights_returns_eperm,
    duplicate_and_replace_with_unknown_rights_return_einval,
    duplicate_and_replace_of_unknown_handle_return_enotfound,
    replace_reduces_rights_in_place_and_never_adds,
    exec_handles_gives_the_child_its_handles_at_ids_1_to_n,
    exec_handles_that_cannot_start_keeps_every_handle,
    exec_handles_refuses_bad_lists_and_moves_nothing,
    handles_round_trip_through_another_process,
    a_process_killed_mid_transfer_loses_nothing_of_the_survivor,
    typed_channel_carries_values_and_handles,
    select_returns_the_receiver_with_a_message,
}

fn main() -> u32 {
    let initial = process::initial_handles();
    if !initial.is_empty() {
        return helper(initial);
    }
    let mut passed = 0;
    for (name, case) in CASES {
        match case() {
            Ok(()) => {
                passed += 1;
                println!("PASS {name}");
            }
            Err(why) => println!("FAIL {name}: {why}"),
        }
    }
    println!("SUMMARY {passed}/{}", CASES.len());
    u32::from(passed != CASES.len())
}
