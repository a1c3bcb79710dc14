//! Events (EVENT_CREATE, then READ and WRITE of 8 bytes: copra's, syscall class 0).
//!
//! | wrapper | syscall | registers |
//! |---|---|---|
//! | [`Event::new`], [`Event::new_nonblocking`] | EVENT_CREATE (0, 0x16) | [`EventFlag`] → handle |
//! | [`Event::signal`] | WRITE (1, 2) of 8 bytes | adds to the counter |
//! | [`Event::wait`] | READ (1, 1) of 8 bytes | takes the counter (blocks while 0) |
//!
//! An event is a 64-bit counter (Linux's eventfd): [`Event::signal`] adds, and
//! [`Event::wait`] takes the value and resets it, blocking while it is 0 (or answering
//! EAGAIN for a non-blocking event). It raises `Signal::READABLE` while non-zero, so
//! [`crate::wait::wait_many`] can wait for several events, threads and processes.

pub use crate::abi::EventFlag;
use crate::abi::Sys;
use crate::error::Result;
use crate::fs;
use crate::handle::{AsHandle, Handle, HandleRef};
use crate::syscall::call;

/// An event of this process.
pub struct Event(Handle);

impl Event {
    /// A new event whose [`Event::wait`] blocks while the counter is 0.
    pub fn new() -> Result<Self> {
        Self::with_flags(EventFlag::EMPTY)
    }

    /// A new event whose [`Event::wait`] answers EAGAIN while the counter is 0.
    pub fn new_nonblocking() -> Result<Self> {
        Self::with_flags(EventFlag::NONBLOCK)
    }

    /// The event behind `handle` (one received in a message or given at start). If it
    /// is no event, [`Event::signal`] and [`Event::wait`] answer ENOTSUPP.
    pub fn from_handle(handle: Handle) -> Self {
        Self(handle)
    }

    fn with_flags(flags: EventFlag) -> Result<Self> {
        let raw = call!(Sys::EVENT_CREATE, flags.bits())?;
        // SAFETY: EVENT_CREATE returned a fresh handle that nothing else owns.
        Ok(Self(unsafe { Handle::from_raw(raw as u32) }))
    }

    /// Adds `n` to the counter (EOVERFLOW past `EVENT_MAX`).
    pub fn signal(&self, n: u64) -> Result<()> {
        fs::write(&self.0, &n.to_le_bytes()).map(|_| ())
    }

    /// Takes the counter's value, which becomes 0; waits while it is 0.
    pub fn wait(&self) -> Result<u64> {
        let mut buf = [0u8; 8];
        fs::read(&self.0, &mut buf)?;
        Ok(u64::from_le_bytes(buf))
    }

    /// The event's handle.
    pub fn handle(&self) -> &Handle {
        &self.0
    }
}

impl AsHandle for Event {
    fn as_handle(&self) -> HandleRef<'_> {
        self.0.as_handle()
    }
}
