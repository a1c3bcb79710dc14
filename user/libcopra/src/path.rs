//! Paths as the kernel reads them: NUL-terminated bytes.
//!
//! Upstream passes a pointer to a NUL-terminated string; the kernel reads up to
//! PATH_MAX bytes (the NUL included). Wrappers copy the `&str` into a PATH_MAX stack
//! buffer and add the NUL. Two conditions are answered here, without a syscall:
//! a path that cannot fit (ENAMETOOLONG) and a path with an interior NUL, which the
//! kernel would silently cut short (EINVAL).

use crate::abi::{Errno, PATH_MAX};
use crate::error::{Error, Result};

const CAP: usize = PATH_MAX as usize;

pub(crate) struct CPath {
    buf: [u8; CAP],
}

impl CPath {
    pub(crate) fn new(path: &str) -> Result<Self> {
        let bytes = path.as_bytes();
        if bytes.len() >= CAP {
            return Err(Error::from_errno(Errno::ENAMETOOLONG));
        }
        if bytes.contains(&0) {
            return Err(Error::from_errno(Errno::EINVAL));
        }
        let mut buf = [0u8; CAP];
        buf[..bytes.len()].copy_from_slice(bytes);
        Ok(Self { buf })
    }

    /// The address passed in the syscall register.
    pub(crate) fn addr(&self) -> u64 {
        self.buf.as_ptr() as u64
    }
}
