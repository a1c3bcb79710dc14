//! Byte streams ([`Read`], [`Write`], [`Seek`]) and `print!`/`println!`.
//!
//! The traits are shaped like `std::io`'s, with [`crate::Error`] as the error:
//! [`crate::fs::File`] implements all three, `&[u8]` reads, `Vec<u8>` writes, and
//! [`Log`] writes to handle 0. `write!` works on any [`Write`].
//!
//! `print!` and `println!` format to handle 0, the task's log. One macro call is formatted into a 256-byte buffer on the stack and written with
//! one WRITE when it fits, in 256-byte pieces when it does not. The kernel prefixes
//! every line of handle 0 with the task's name. Errors are dropped: the log is where
//! they would have been reported.

use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::{self, Write as _};

use crate::error::{Error, Result};
use crate::fs::write_all;
use crate::handle::{AsHandle, LOG};

/// A source of bytes.
pub trait Read {
    /// Reads up to `buf.len()` bytes; 0 means the end.
    fn read(&mut self, buf: &mut [u8]) -> Result<usize>;

    /// Fills `buf` completely, or fails with [`Error::UNEXPECTED_EOF`].
    fn read_exact(&mut self, mut buf: &mut [u8]) -> Result<()> {
        while !buf.is_empty() {
            match self.read(buf)? {
                0 => return Err(Error::UNEXPECTED_EOF),
                n => {
                    let n = n.min(buf.len());
                    buf = &mut core::mem::take(&mut buf)[n..];
                }
            }
        }
        Ok(())
    }

    /// Appends everything up to the end to `out`; returns how many bytes.
    fn read_to_end(&mut self, out: &mut Vec<u8>) -> Result<usize> {
        let start = out.len();
        let mut chunk = 4096;
        loop {
            out.try_reserve(chunk)?;
            let len = out.len();
            out.resize(len + chunk, 0);
            let result = self.read(&mut out[len..]);
            let n = *result.as_ref().unwrap_or(&0);
            out.truncate(len + n);
            result?;
            if n == 0 {
                return Ok(out.len() - start);
            }
            if n == chunk {
                chunk = (chunk * 2).min(1 << 20);
            }
        }
    }

    /// Appends everything up to the end to `out`, which must be UTF-8
    /// ([`Error::INVALID_UTF8`] otherwise, and `out` is unchanged).
    fn read_to_string(&mut self, out: &mut String) -> Result<usize> {
        let mut bytes = Vec::new();
        self.read_to_end(&mut bytes)?;
        out.push_str(core::str::from_utf8(&bytes)?);
        Ok(bytes.len())
    }
}

/// A sink of bytes.
pub trait Write {
    /// Writes some of `buf`; returns how much.
    fn write(&mut self, buf: &[u8]) -> Result<usize>;

    /// Writes what is buffered (nothing to do for unbuffered sinks).
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }

    /// Writes all of `buf`, or fails ([`Error::WRITE_ZERO`] when a write takes nothing).
    fn write_all(&mut self, mut buf: &[u8]) -> Result<()> {
        while !buf.is_empty() {
            match self.write(buf)? {
                0 => return Err(Error::WRITE_ZERO),
                n => buf = &buf[n.min(buf.len())..],
            }
        }
        Ok(())
    }

    /// Writes formatted text: what `write!` calls.
    fn write_fmt(&mut self, args: fmt::Arguments<'_>) -> Result<()> {
        struct Adapter<'a, W: ?Sized> {
            inner: &'a mut W,
            error: Result<()>,
        }
        impl<W: Write + ?Sized> fmt::Write for Adapter<'_, W> {
            fn write_str(&mut self, s: &str) -> fmt::Result {
                self.inner.write_all(s.as_bytes()).map_err(|e| {
                    self.error = Err(e);
                    fmt::Error
                })
            }
        }
        let mut adapter = Adapter {
            inner: self,
            error: Ok(()),
        };
        match fmt::write(&mut adapter, args) {
            Ok(()) => Ok(()),
            Err(_) => adapter.error,
        }
    }
}

/// Where [`Seek::seek`] moves to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeekFrom {
    /// That many bytes from the start (the kernel stops at the end).
    Start(u64),
    /// That many bytes from the end: 0 or negative (copra never seeks past the end,
    /// so a positive offset is EINVAL).
    End(i64),
    /// That many bytes from the current position, either way (clamped to the file).
    Current(i64),
}

/// A stream with a position.
pub trait Seek {
    /// Moves the position; returns the new one.
    fn seek(&mut self, pos: SeekFrom) -> Result<u64>;

    /// The position.
    fn stream_position(&mut self) -> Result<u64> {
        self.seek(SeekFrom::Current(0))
    }

    /// Back to the start.
    fn rewind(&mut self) -> Result<()> {
        self.seek(SeekFrom::Start(0)).map(|_| ())
    }
}

impl Read for &[u8] {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        let n = buf.len().min(self.len());
        buf[..n].copy_from_slice(&self[..n]);
        *self = &self[n..];
        Ok(n)
    }
}

impl Write for Vec<u8> {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        self.try_reserve(buf.len())?;
        self.extend_from_slice(buf);
        Ok(buf.len())
    }
}

impl<R: Read + ?Sized> Read for &mut R {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        (**self).read(buf)
    }
}

impl<W: Write + ?Sized> Write for &mut W {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        (**self).write(buf)
    }
    fn flush(&mut self) -> Result<()> {
        (**self).flush()
    }
}

/// Handle 0, the task's log, as a [`Write`]: each call is one WRITE (lines are
/// prefixed by the kernel).
#[derive(Clone, Copy, Debug, Default)]
pub struct Log;

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        crate::fs::write(&LOG, buf)
    }
}

const BUF: usize = 256;

/// Formats into a fixed buffer and WRITEs it to a handle when full or finished.
pub struct BufferedWriter<'h, H: AsHandle> {
    handle: &'h H,
    len: usize,
    buf: [u8; BUF],
}

impl<'h, H: AsHandle> BufferedWriter<'h, H> {
    /// A writer to `handle`; call [`Self::flush`] at the end.
    pub fn new(handle: &'h H) -> Self {
        Self {
            handle,
            len: 0,
            buf: [0; BUF],
        }
    }

    /// WRITEs what is buffered.
    pub fn flush(&mut self) {
        if self.len > 0 {
            let _ = write_all(self.handle, &self.buf[..self.len]);
            self.len = 0;
        }
    }
}

impl<H: AsHandle> fmt::Write for BufferedWriter<'_, H> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut bytes = s.as_bytes();
        while !bytes.is_empty() {
            if self.len == BUF {
                self.flush();
            }
            let n = bytes.len().min(BUF - self.len);
            self.buf[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
        }
        Ok(())
    }
}

#[doc(hidden)]
pub fn _print(args: fmt::Arguments<'_>) {
    let mut w = BufferedWriter::new(&LOG);
    let _ = w.write_fmt(args);
    w.flush();
}

/// Writes to handle 0 (the task's log).
#[macro_export]
macro_rules! print {
    ($($arg:tt)*) => {
        $crate::io::_print(::core::format_args!($($arg)*))
    };
}

/// Writes a line to handle 0 (the task's log).
#[macro_export]
macro_rules! println {
    () => {
        $crate::io::_print(::core::format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::io::_print(::core::format_args!("{}\n", ::core::format_args!($($arg)*)))
    };
}
