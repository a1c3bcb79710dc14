//! Channels: messages of bytes and handles between processes (copra's, syscall class 0).
//!
//! | wrapper | syscall | registers |
//! |---|---|---|
//! | [`create`], [`channel`] | CHANNEL_CREATE (0, 0x1A) | flags (0) → two endpoint handles packed |
//! | [`Endpoint::send`], [`Sender::send`] | SEND (0, 0x1B) | endpoint, [`ChannelMessage`], [`ChannelFlag`] |
//! | [`Endpoint::recv`], [`Receiver::recv`] | RECV (0, 0x1C) | endpoint, [`ChannelMessage`], [`ChannelFlag`] → bytes |
//! | [`duplicate`] | DUPLICATE (0, 0x1D) | handle, rights → new handle |
//! | [`restrict`] | REPLACE (0, 0x1E) | handle, rights |
//! | [`select`] | WAIT_MANY (0, 0x17) | READABLE or PEER_CLOSED on several endpoints |
//!
//! An [`Endpoint`] is one end of a channel. A message is up to [`CHANNEL_MAX_BYTES`]
//! bytes and [`CHANNEL_MAX_HANDLES`] handles; the handles are *moved*: they leave the
//! sender and arrive in the receiver under new ids, all or none. Messages arrive in
//! order and whole. A queue holds at most `CHANNEL_QUEUE_MAX` messages: a blocking
//! send waits for room, [`Endpoint::try_send`] answers EAGAIN.
//!
//! [`channel`] makes a typed pair: a [`Sender<T>`] and a [`Receiver<T>`] of a
//! plain-data `T` ([`Plain`]), each message one `T` plus any owned handles moving with
//! it. Either half can itself be sent ([`Sender::into_handle`]) or given to a child
//! ([`crate::process::Command::handle`]), which rebuilds it with `from_handle`.
//! [`select`] waits for the first of several receivers that has a message (or whose
//! sender is gone).
//!
//! ```ignore
//! let (tx, rx) = channel::channel::<u64>()?;
//! tx.send(7)?;
//! assert_eq!(rx.recv()?, 7);
//! ```

use alloc::vec;
use alloc::vec::Vec;
use core::marker::PhantomData;
use core::mem::size_of;

pub use crate::abi::{
    CHANNEL_MAX_BYTES, CHANNEL_MAX_HANDLES, CHANNEL_QUEUE_MAX, ChannelFlag, ChannelMessage, RIGHTS_SAME,
    Right,
};
use crate::abi::{Errno, Signal, Sys, TIMEOUT_NEVER, WAIT_MANY_MAX, WaitItem};
use crate::error::{Error, Result};
use crate::handle::{AsHandle, Handle, HandleRef};
use crate::syscall::call;

const MAX_HANDLES: usize = CHANNEL_MAX_HANDLES as usize;

/// One end of a channel.
#[derive(Debug)]
pub struct Endpoint(Handle);

/// CHANNEL_CREATE: two connected endpoints.
pub fn create() -> Result<(Endpoint, Endpoint)> {
    let raw = call!(Sys::CHANNEL_CREATE, 0u64)?;
    // SAFETY: CHANNEL_CREATE returned two fresh handles that nothing else owns.
    unsafe {
        Ok((
            Endpoint(Handle::from_raw(raw as u32)),
            Endpoint(Handle::from_raw((raw >> 32) as u32)),
        ))
    }
}

/// A failed send: why, and the handles, which stay the caller's.
#[derive(Debug)]
pub struct SendError {
    /// The kernel's answer (EAGAIN: the queue is full; EPIPE: the peer is gone...).
    pub error: Error,
    /// The handles that were to move.
    pub handles: Vec<Handle>,
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Self {
        e.error
    }
}

/// What one RECV delivered: its byte count and the handles it moved.
#[derive(Debug)]
pub struct Received {
    /// Bytes written to the buffer.
    pub len: usize,
    /// The handles, in the order they were sent.
    pub handles: Vec<Handle>,
}

fn flags(block: bool) -> u64 {
    if block { ChannelFlag::BLOCK.bits() } else { 0 }
}

impl Endpoint {
    /// Takes ownership of an endpoint handle (from a message or [`crate::process::initial_handles`]).
    pub fn from_handle(handle: Handle) -> Self {
        Self(handle)
    }

    /// The endpoint's handle, to send or give to a child.
    pub fn into_handle(self) -> Handle {
        self.0
    }

    /// SEND, raw: the message as the kernel sees it. The handles named in it are the
    /// kernel's after success: the caller must forget its owners of them.
    pub fn send_raw(&self, message: &ChannelMessage, block: bool) -> Result<()> {
        call!(Sys::SEND, self.0.raw(), message as *const ChannelMessage, flags(block)).map(|_| ())
    }

    /// RECV, raw: the kernel writes the message's sizes into `message` (also on
    /// EMSGSIZE, when the message stays queued). Returns the byte count.
    pub fn recv_raw(&self, message: &mut ChannelMessage, block: bool) -> Result<usize> {
        call!(Sys::RECV, self.0.raw(), message as *mut ChannelMessage, flags(block)).map(|n| n as usize)
    }

    /// CHANNEL_CALL, raw: SEND `out`, then RECV into `reply`, waiting, in one syscall.
    /// The handles named in `out` are the kernel's once it is sent (every error but
    /// EMSGSIZE, EMFILE, ENOTFOUND for the endpoint and a receive-side EPIPE means
    /// nothing was sent: docs/abi.md). Returns the byte count received.
    pub fn call_raw(&self, out: &ChannelMessage, reply: &mut ChannelMessage) -> Result<usize> {
        call!(
            Sys::CHANNEL_CALL,
            self.0.raw(),
            out as *const ChannelMessage,
            reply as *mut ChannelMessage,
            0u64
        )
        .map(|n| n as usize)
    }

    /// CHANNEL_CALL: send `data` (no handles; use [`Endpoint::call_raw`] to move some)
    /// and wait for the next message towards this endpoint, received into `buf` as
    /// [`Endpoint::recv`] does. A request/answer round trip in one syscall: the server
    /// answers with its own `call` (its answer, then its next request) or `send`.
    pub fn call(&self, data: &[u8], buf: &mut [u8]) -> Result<Received> {
        if data.len() > u32::MAX as usize {
            return Err(Errno::EINVAL.into());
        }
        let out = ChannelMessage {
            data: data.as_ptr() as u64,
            handles: 0,
            data_len: data.len() as u32,
            handle_count: 0,
        };
        let mut ids = [0u32; MAX_HANDLES];
        let mut reply = ChannelMessage {
            data: buf.as_mut_ptr() as u64,
            handles: ids.as_mut_ptr() as u64,
            data_len: buf.len().min(u32::MAX as usize) as u32,
            handle_count: MAX_HANDLES as u32,
        };
        let len = self.call_raw(&out, &mut reply)?;
        // SAFETY: the receive installed these ids for this process just now.
        let handles = ids[..reply.handle_count as usize]
            .iter()
            .map(|&id| unsafe { Handle::from_raw(id) })
            .collect();
        Ok(Received { len, handles })
    }

    fn send_flags(&self, data: &[u8], handles: Vec<Handle>, block: bool) -> core::result::Result<(), SendError> {
        let mut ids = [0u32; MAX_HANDLES];
        if handles.len() > MAX_HANDLES {
            return Err(SendError { error: Errno::EINVAL.into(), handles });
        }
        for (id, handle) in ids.iter_mut().zip(&handles) {
            *id = handle.raw();
        }
        let message = ChannelMessage {
            data: data.as_ptr() as u64,
            handles: ids.as_ptr() as u64,
            data_len: data.len() as u32,
            handle_count: handles.len() as u32,
        };
        if data.len() > u32::MAX as usize {
            return Err(SendError { error: Errno::EINVAL.into(), handles });
        }
        match self.send_raw(&message, block) {
            Ok(()) => {
                for handle in handles {
                    let _ = handle.into_raw(); // moved into the message
                }
                Ok(())
            }
            Err(error) => Err(SendError { error, handles }),
        }
    }

    /// SEND of `data` and `handles`, waiting while the peer's queue is full.
    pub fn send(&self, data: &[u8], handles: Vec<Handle>) -> core::result::Result<(), SendError> {
        self.send_flags(data, handles, true)
    }

    /// SEND without waiting: EAGAIN when the peer's queue is full.
    pub fn try_send(&self, data: &[u8], handles: Vec<Handle>) -> core::result::Result<(), SendError> {
        self.send_flags(data, handles, false)
    }

    fn recv_flags(&self, buf: &mut [u8], block: bool) -> Result<Received> {
        let mut ids = [0u32; MAX_HANDLES];
        let mut message = ChannelMessage {
            data: buf.as_mut_ptr() as u64,
            handles: ids.as_mut_ptr() as u64,
            data_len: buf.len().min(u32::MAX as usize) as u32,
            handle_count: MAX_HANDLES as u32,
        };
        let len = self.recv_raw(&mut message, block)?;
        // SAFETY: RECV installed these ids for this process just now; nothing owns them.
        let handles = ids[..message.handle_count as usize]
            .iter()
            .map(|&id| unsafe { Handle::from_raw(id) })
            .collect();
        Ok(Received { len, handles })
    }

    /// RECV into `buf`, waiting for a message; EMSGSIZE (the message stays queued)
    /// when it has more bytes than `buf` holds; EPIPE once the peer is gone and the
    /// queue is empty.
    pub fn recv(&self, buf: &mut [u8]) -> Result<Received> {
        self.recv_flags(buf, true)
    }

    /// RECV without waiting: EAGAIN when the queue is empty.
    pub fn try_recv(&self, buf: &mut [u8]) -> Result<Received> {
        self.recv_flags(buf, false)
    }

    /// RECV of a message of any size: the bytes in a vector of its length.
    pub fn recv_vec(&self) -> Result<(Vec<u8>, Vec<Handle>)> {
        let mut buf = vec![0u8; 256];
        loop {
            match self.recv(&mut buf) {
                Ok(got) => {
                    buf.truncate(got.len);
                    return Ok((buf, got.handles));
                }
                // The message stays queued: take it with room for the largest.
                Err(e) if e.is(Errno::EMSGSIZE) && buf.len() < CHANNEL_MAX_BYTES as usize => {
                    buf.resize(CHANNEL_MAX_BYTES as usize, 0);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl AsHandle for Endpoint {
    fn as_handle(&self) -> HandleRef<'_> {
        self.0.as_handle()
    }
}

/// Plain data: a `Copy` type with no pointers, for which every bit pattern of its size
/// is a valid value (integers, arrays of them, `#[repr(C)]` structs of them without
/// padding), so bytes from another process can become one.
///
/// # Safety
/// Implement it only for such types: [`Receiver`] turns any message of the right size
/// into a `T`.
pub unsafe trait Plain: Copy + 'static {}

macro_rules! plain {
    ($($t:ty),*) => { $(
        // SAFETY: every bit pattern is a valid integer.
        unsafe impl Plain for $t {}
    )* };
}
plain!(u8, u16, u32, u64, u128, usize, i8, i16, i32, i64, i128, isize, ());
// SAFETY: an array of plain data is plain data.
unsafe impl<T: Plain, const N: usize> Plain for [T; N] {}

/// The sending half of a typed channel.
#[derive(Debug)]
pub struct Sender<T: Plain> {
    end: Endpoint,
    _t: PhantomData<fn(T)>,
}

/// The receiving half of a typed channel.
#[derive(Debug)]
pub struct Receiver<T: Plain> {
    end: Endpoint,
    _t: PhantomData<fn() -> T>,
}

/// A typed channel: what the [`Sender`] sends, the [`Receiver`] receives.
pub fn channel<T: Plain>() -> Result<(Sender<T>, Receiver<T>)> {
    let (a, b) = create()?;
    Ok((Sender::from_endpoint(a), Receiver::from_endpoint(b)))
}

fn bytes_of<T: Plain>(value: &T) -> &[u8] {
    // SAFETY: T is plain data: its bytes may be read (Plain has no padding).
    unsafe { core::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) }
}

impl<T: Plain> Sender<T> {
    /// A sender on `end` (one end of a channel whose receiver expects `T`).
    pub fn from_endpoint(end: Endpoint) -> Self {
        Self { end, _t: PhantomData }
    }

    /// A sender on an endpoint handle (from a message or the initial handles).
    pub fn from_handle(handle: Handle) -> Self {
        Self::from_endpoint(Endpoint::from_handle(handle))
    }

    /// The endpoint's handle, to send or give to a child.
    pub fn into_handle(self) -> Handle {
        self.end.into_handle()
    }

    /// Sends `value`, waiting while the queue is full; EPIPE once the receiver is gone.
    pub fn send(&self, value: T) -> Result<()> {
        self.end.send(bytes_of(&value), Vec::new()).map_err(Error::from)
    }

    /// Sends `value` without waiting: EAGAIN when the queue is full.
    pub fn try_send(&self, value: T) -> Result<()> {
        self.end.try_send(bytes_of(&value), Vec::new()).map_err(Error::from)
    }

    /// Sends `value` with `handles` moving along; on failure they come back.
    pub fn send_with(&self, value: T, handles: Vec<Handle>) -> core::result::Result<(), SendError> {
        self.end.send(bytes_of(&value), handles)
    }
}

impl<T: Plain> Receiver<T> {
    /// A receiver on `end`.
    pub fn from_endpoint(end: Endpoint) -> Self {
        Self { end, _t: PhantomData }
    }

    /// A receiver on an endpoint handle (from a message or the initial handles).
    pub fn from_handle(handle: Handle) -> Self {
        Self::from_endpoint(Endpoint::from_handle(handle))
    }

    /// The endpoint's handle, to send or give to a child.
    pub fn into_handle(self) -> Handle {
        self.end.into_handle()
    }

    fn take(&self, block: bool) -> Result<(T, Vec<Handle>)> {
        let mut value = core::mem::MaybeUninit::<T>::zeroed();
        // SAFETY: the buffer is the value's own storage, size_of::<T>() bytes.
        let buf = unsafe { core::slice::from_raw_parts_mut(value.as_mut_ptr().cast::<u8>(), size_of::<T>()) };
        let got = self.end.recv_flags(buf, block)?;
        if got.len != size_of::<T>() {
            return Err(Errno::EINVAL.into()); // not a T: a peer that speaks another type
        }
        // SAFETY: every byte was written and T is plain data.
        Ok((unsafe { value.assume_init() }, got.handles))
    }

    /// Waits for the next value; handles that came with it are closed. EPIPE once the
    /// sender is gone and nothing is queued; EINVAL for a message that is not a `T`.
    pub fn recv(&self) -> Result<T> {
        self.take(true).map(|(value, _)| value)
    }

    /// The next value without waiting: EAGAIN when none is queued.
    pub fn try_recv(&self) -> Result<T> {
        self.take(false).map(|(value, _)| value)
    }

    /// Waits for the next value and the handles that moved with it.
    pub fn recv_with(&self) -> Result<(T, Vec<Handle>)> {
        self.take(true)
    }

    /// The next value and its handles without waiting (EAGAIN when none is queued).
    pub fn try_recv_with(&self) -> Result<(T, Vec<Handle>)> {
        self.take(false)
    }
}

impl<T: Plain> AsHandle for Sender<T> {
    fn as_handle(&self) -> HandleRef<'_> {
        self.end.as_handle()
    }
}

impl<T: Plain> AsHandle for Receiver<T> {
    fn as_handle(&self) -> HandleRef<'_> {
        self.end.as_handle()
    }
}

/// Waits until one of `receivers` (endpoints, receivers: anything with a handle) has a
/// message or has lost its peer, or `timeout_ns` passes; returns the index of the first
/// such one, or None on timeout. At most `WAIT_MANY_MAX` (64) at once (EINVAL beyond).
pub fn select(receivers: &[&dyn AsHandle], timeout_ns: Option<u64>) -> Result<Option<usize>> {
    if receivers.is_empty() || receivers.len() > WAIT_MANY_MAX as usize {
        return Err(Errno::EINVAL.into());
    }
    let mut items = [WaitItem::zeroed(); WAIT_MANY_MAX as usize];
    let wanted = (Signal::READABLE | Signal::PEER_CLOSED).bits() as u32;
    for (item, r) in items.iter_mut().zip(receivers) {
        item.handle = r.as_handle().raw();
        item.signals = wanted;
    }
    let items = &mut items[..receivers.len()];
    let timeout = timeout_ns.unwrap_or(TIMEOUT_NEVER);
    call!(Sys::WAIT_MANY, items.as_mut_ptr(), items.len(), timeout)?;
    Ok(items.iter().position(|i| i.ready != 0))
}

/// DUPLICATE: a new handle on the same object with `rights` (None: the same rights).
pub fn duplicate(handle: &impl AsHandle, rights: Option<Right>) -> Result<Handle> {
    let rights = rights.map_or(RIGHTS_SAME, |r| r.bits());
    let raw = call!(Sys::DUPLICATE, handle.as_handle().raw(), rights)?;
    // SAFETY: DUPLICATE returned a fresh handle that nothing else owns.
    Ok(unsafe { Handle::from_raw(raw as u32) })
}

/// REPLACE: `handle` keeps only `rights` (EPERM for a right it does not have).
pub fn restrict(handle: &impl AsHandle, rights: Right) -> Result<()> {
    call!(Sys::REPLACE, handle.as_handle().raw(), rights.bits()).map(|_| ())
}
