//! Kernel status codes as Rust errors.
//!
//! The kernel returns `-errno` sign-extended in `rax`; every value above
//! [`ERROR_THRESHOLD`] (that is, -4095..=-1 as `i64`) is an error, anything else a
//! result. [`check`] is the one place that makes the distinction.
//!
//! A few conditions the library itself finds (a read that ends early, text that is
//! not UTF-8) have codes of their own, at the far end of the error range where the
//! kernel never answers ([`Error::UNEXPECTED_EOF`] …); they print their names too.

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

/// The library's own codes: (value, name). The kernel's are -1..=-128.
pub const LIBRARY_CODES: [(i64, &str); 4] = [
    (-4095, "UNEXPECTED_EOF"),
    (-4094, "INVALID_UTF8"),
    (-4093, "WRITE_ZERO"),
    (-4092, "OUT_OF_MEMORY"),
];

impl Error {
    /// A read ended (0 bytes: end of file) before the buffer was full.
    pub const UNEXPECTED_EOF: Self = Self(LIBRARY_CODES[0].0);
    /// Bytes that had to be UTF-8 were not.
    pub const INVALID_UTF8: Self = Self(LIBRARY_CODES[1].0);
    /// A write of a non-empty buffer wrote nothing.
    pub const WRITE_ZERO: Self = Self(LIBRARY_CODES[2].0);
    /// The heap had no memory for a fallible reservation.
    pub const OUT_OF_MEMORY: Self = Self(LIBRARY_CODES[3].0);

    /// The error's name: the kernel's (`ENOTFOUND`) or the library's
    /// (`UNEXPECTED_EOF`); None for a code neither knows.
    pub fn name(self) -> Option<&'static str> {
        if let Some(errno) = self.errno() {
            return Some(errno.name());
        }
        LIBRARY_CODES
            .iter()
            .find(|(raw, _)| *raw == self.0)
            .map(|(_, name)| *name)
    }

    /// The error for a known status code.
    pub const fn from_errno(errno: Errno) -> Self {
        Self(errno.raw())
    }

    /// The status code, if it is one of the spec's.
    pub const fn errno(self) -> Option<Errno> {
        Errno::from_raw(self.0)
    }

    /// The error a raw value names, if it is one (-4095..=-1).
    pub const fn from_raw(raw: i64) -> Option<Self> {
        if raw < 0 && raw >= -4095 {
            Some(Self(raw))
        } else {
            None
        }
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
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "error {}", self.0),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Error({self})")
    }
}

impl From<alloc::collections::TryReserveError> for Error {
    fn from(_: alloc::collections::TryReserveError) -> Self {
        Self::OUT_OF_MEMORY
    }
}

impl From<core::str::Utf8Error> for Error {
    fn from(_: core::str::Utf8Error) -> Self {
        Self::INVALID_UTF8
    }
}

impl From<alloc::string::FromUtf8Error> for Error {
    fn from(_: alloc::string::FromUtf8Error) -> Self {
        Self::INVALID_UTF8
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
