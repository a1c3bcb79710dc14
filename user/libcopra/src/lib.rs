//! libcopra: the user library of copra.
//!
//! Programs built against it are static x86-64 ELF executables that run at CPL3 under
//! the copra kernel and reach it only through syscalls. The library is `#![no_std]`
//! and uses nothing but `core`: no C runtime, no libc, no heap (yet).
//!
//! | module | what it maps to |
//! |---|---|
//! | [`abi`] | the numbers and layouts of `src/copra/abi/spec.py` (generated) |
//! | [`syscall`] | raw `syscall0`..`syscall5`, doorbell and `int 0x80` entries |
//! | [`error`] | [`Error`]: a kernel status code, decoded from `rax` |
//! | [`handle`] | [`Handle`] (owned, CLOSE on drop), [`HandleRef`], [`LOG`] |
//! | [`fs`] | class 1: OPEN, READ, WRITE, SEEK, TRUNCATE, UNLINK, OPENDIR, READDIR, MKDIR, RMDIR |
//! | [`process`] | class 0: EXIT, EXEC, WAIT |
//! | [`memory`] | class 0: MMAP, MUNMAP, MRESIZE |
//! | [`sysinfo`] | class 3: CAPABILITIES |
//! | [`io`] | `print!`/`println!` to handle 0 |
//! | [`rt`] | [`declare_main!`], the entry point and the panic handler |
//!
//! A program:
//!
//! ```ignore
//! #![no_std]
//! #![no_main]
//! use libcopra::{declare_main, println};
//!
//! declare_main!(main);
//!
//! fn main() -> u32 {
//!     println!("hello");
//!     0
//! }
//! ```

#![no_std]
#![warn(missing_docs, unsafe_op_in_unsafe_fn)]

#[allow(missing_docs)]
pub mod abi;
pub mod error;
pub mod fs;
pub mod handle;
pub mod io;
pub mod memory;
pub mod process;
pub mod rt;
pub mod syscall;
pub mod sysinfo;

mod mem;
mod path;

pub use error::{Error, Result};
pub use handle::{AsHandle, Handle, HandleRef, LOG};
