//! Kernel status codes as Rust errors.
//!
//! The kernel returns `-errno` sign-extended in `rax`; every value above
//! [`ERROR_THRESHOLD`] (that is, -4095..=-1 as `i64`) is an error, anything else a
//! result. [`check`] is the one place that makes the distinction.

use core::fmt;

use crate::abi::{ERROR_THRESHOLD, Errno};

/// A status code the kernel returned instead of a result.
///
/// It holds the raw negative value, so a code this library does not know (a newer
/// kernel's) survives intact; [`Error::errno`] names the known ones.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Error(i64);

/// The result of a syscall wrapper.
pub type Result<T> = core::result::Result<T, Error>;

impl Error {
    /// The error for a known status code.
    pub const fn from_errno(errno: Errno) -> Self {
        Self(errno.raw())
    }

    /// The status code, if it is one of the spec's.
    pub const fn errno(self) -> Option<Errno> {
        Errno::from_raw(self.0)
    }

    /// The raw value (negative).
    pub const fn raw(self) -> i64 {
        self.0
    }

    /// Whether this is `errno`.
    pub const fn is(self, errno: Errno) -> bool {
        self.0 == errno.raw()
    }
}

impl From<Errno> for Error {
    fn from(errno: Errno) -> Self {
        Self::from_errno(errno)
    }
}

impl PartialEq<Errno> for Error {
    fn eq(&self, other: &Errno) -> bool {
        self.is(*other)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errno() {
            Some(errno) => f.write_str(errno.name()),
            None => write!(f, "error {}", self.0),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({self})")
    }
}

/// Decodes a raw `rax`: `Ok(value)` or the error it encodes.
#[inline]
pub const fn check(rax: u64) -> Result<u64> {
    if rax > ERROR_THRESHOLD {
        Err(Error(rax as i64))
    } else {
        Ok(rax)
    }
}
