//! Handles: per-process `u32` ids of kernel objects.
//!
//! [`Handle`] owns an id: it is neither `Clone` nor `Copy`, and dropping it issues
//! CLOSE (class 0, index 10). [`HandleRef`] borrows one without closing it; [`LOG`]
//! borrows handle 0, the task's log/stdout, which every process starts with.
//! Wrappers that use a handle take `&impl AsHandle`, so both kinds fit and none is
//! consumed by accident.

use core::fmt;
use core::marker::PhantomData;

use crate::abi::{HANDLE_LOG, Sys};
use crate::error::Result;
use crate::syscall::call;

/// An owned handle; CLOSE on drop.
pub struct Handle(u32);

impl Handle {
    /// Takes ownership of the id `raw`.
    ///
    /// # Safety
    /// `raw` must be an open handle of this process that nothing else owns: it will be
    /// closed when the `Handle` is dropped.
    pub const unsafe fn from_raw(raw: u32) -> Self {
        Self(raw)
    }

    /// Gives up ownership without closing and returns the id.
    pub fn into_raw(self) -> u32 {
        let raw = self.0;
        core::mem::forget(self);
        raw
    }

    /// The id, still owned by `self`.
    pub const fn raw(&self) -> u32 {
        self.0
    }

    /// Closes now and reports the kernel's answer (dropping ignores it).
    pub fn close(self) -> Result<()> {
        close_raw(self.into_raw())
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // CLOSE of an id we own cannot fail in a way we could act on here.
        let _ = close_raw(self.0);
    }
}

impl fmt::Debug for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handle({})", self.0)
    }
}

/// A borrowed handle: usable for as long as its owner lives, never closed.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct HandleRef<'a> {
    raw: u32,
    _owner: PhantomData<&'a Handle>,
}

impl HandleRef<'static> {
    /// Borrows an id that nobody in this program owns (handle 0, ids from elsewhere).
    ///
    /// # Safety
    /// `raw` must stay open, and mean the same object, while the reference is used.
    pub const unsafe fn borrow_raw(raw: u32) -> Self {
        Self {
            raw,
            _owner: PhantomData,
        }
    }
}

impl HandleRef<'_> {
    /// The id.
    pub const fn raw(self) -> u32 {
        self.raw
    }
}

impl fmt::Debug for HandleRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HandleRef({})", self.raw)
    }
}

/// Handle 0: the task's log/stdout. The kernel prefixes each line with the task name.
// SAFETY: handle 0 is opened by the kernel for every process; closing it is the
// program's own business.
pub const LOG: HandleRef<'static> = unsafe { HandleRef::borrow_raw(HANDLE_LOG as u32) };

/// Anything that names a handle for the duration of a call.
pub trait AsHandle {
    /// A borrow of the handle.
    fn as_handle(&self) -> HandleRef<'_>;
}

impl AsHandle for Handle {
    fn as_handle(&self) -> HandleRef<'_> {
        HandleRef {
            raw: self.0,
            _owner: PhantomData,
        }
    }
}

impl AsHandle for HandleRef<'_> {
    fn as_handle(&self) -> HandleRef<'_> {
        *self
    }
}

/// CLOSE (class 0, index 10) of a raw id. Upstream answers 0 even for an unknown id.
pub fn close_raw(raw: u32) -> Result<()> {
    call!(Sys::CLOSE, raw).map(|_| ())
}

/// CLOSE: the same as dropping `handle`, but returns the kernel's answer.
pub fn close(handle: Handle) -> Result<()> {
    handle.close()
}
