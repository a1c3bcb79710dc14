//! `print!` and `println!`: formatted output to handle 0, the task's log.
//!
//! One macro call is formatted into a 256-byte buffer on the stack and written with
//! one WRITE when it fits, in 256-byte pieces when it does not. The kernel prefixes
//! every line of handle 0 with the task's name. Errors are dropped: the log is where
//! they would have been reported.

use core::fmt::{self, Write};

use crate::fs::write_all;
use crate::handle::{AsHandle, LOG};

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

impl<H: AsHandle> Write for BufferedWriter<'_, H> {
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
