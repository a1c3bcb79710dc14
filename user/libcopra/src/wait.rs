//! Waiting for many objects at once, and time (WAIT_MANY, CLOCK, SLEEP: copra's).
//!
//! | wrapper | syscall | registers |
//! |---|---|---|
//! | [`wait_many`] | WAIT_MANY (0, 0x17) | [`WaitItem`] array, count, timeout ns → items ready |
//! | [`Instant::now`] | CLOCK (0, 0x18) | → monotonic nanoseconds |
//! | [`sleep`] | SLEEP (0, 0x19) | nanoseconds |
//!
//! A [`WaitItem`] names a handle (thread, process or event, with the WAIT right) and the
//! [`Signal`] bits wanted; [`wait_many`] blocks until one of them is raised or the
//! timeout passes and fills each item's `ready` field. Timeouts are nanoseconds on
//! the kernel's monotonic clock, honoured within one time slice (10 ms).

pub use crate::abi::{Signal, WaitItem};
use crate::abi::{Sys, TIMEOUT_NEVER};
use crate::error::Result;
use crate::handle::AsHandle;
use crate::syscall::call;

/// An item waiting for `signals` of the object behind `handle`.
pub fn item(handle: &impl AsHandle, signals: Signal) -> WaitItem {
    WaitItem { handle: handle.as_handle().raw(), signals: signals.bits() as u32, ..WaitItem::zeroed() }
}

/// WAIT_MANY: waits until an item is ready or `timeout_ns` passes (None: no timeout);
/// returns how many items are ready (0: the timeout passed).
pub fn wait_many(items: &mut [WaitItem], timeout_ns: Option<u64>) -> Result<usize> {
    let timeout = timeout_ns.unwrap_or(TIMEOUT_NEVER);
    call!(Sys::WAIT_MANY, items.as_mut_ptr(), items.len(), timeout).map(|n| n as usize)
}

/// A moment of the kernel's monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Instant(u64);

impl Instant {
    /// CLOCK: now.
    pub fn now() -> Self {
        Self(call!(Sys::CLOCK).unwrap_or(0))
    }

    /// Nanoseconds since `earlier` (0 if it is later).
    pub fn since(self, earlier: Instant) -> u64 {
        self.0.saturating_sub(earlier.0)
    }

    /// Nanoseconds on the clock.
    pub fn as_nanos(self) -> u64 {
        self.0
    }
}

/// SLEEP: blocks the calling thread at least `ns` nanoseconds.
pub fn sleep(ns: u64) -> Result<()> {
    call!(Sys::SLEEP, ns).map(|_| ())
}
