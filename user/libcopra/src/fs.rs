//! Files and directories: syscall class 1, with upstream's semantics.
//!
//! | wrapper | syscall | registers |
//! |---|---|---|
//! | [`open`] | OPEN (1, 0) | path, [`FileMode`], [`FileFlag`] → handle |
//! | [`read`] | READ (1, 1) | handle, buffer, length → bytes read, 0 at end of file |
//! | [`write`](fn@write) | WRITE (1, 2) | handle, buffer, length → bytes written |
//! | [`seek`] | SEEK (1, 3) | handle, offset (i64 bits), [`SeekMode`] → new position |
//! | [`truncate`] | TRUNCATE (1, 4) | handle, length → new size (shrink only) |
//! | [`unlink`] | UNLINK (1, 5) | path |
//! | [`opendir`] | OPENDIR (1, 6) | path → handle |
//! | [`readdir`] | READDIR (1, 7) | handle, [`DirEnt`] array, count → entries filled, 0 at end |
//! | [`mkdir`] | MKDIR (1, 8) | path |
//! | [`rmdir`] | RMDIR (1, 9) | path |
//!
//! Paths are NUL-terminated copies of the `&str` (see the crate's path rules: at most
//! PATH_MAX - 1 bytes, no interior NUL). Semantics are the kernel's; upstream's worth
//! knowing: a created file's handle is always read+write, APPEND moves to the end once
//! at open, SEEK never goes past the end and `END` counts backwards from it.

use crate::abi::Sys;
pub use crate::abi::{DirEnt, FileFlag, FileMode, FileType, SeekMode};
use crate::error::Result;
use crate::handle::{AsHandle, Handle};
use crate::path::CPath;
use crate::syscall::call;

fn handle_from(raw: u64) -> Handle {
    // SAFETY: the kernel just created this id for us; nothing else owns it.
    unsafe { Handle::from_raw(raw as u32) }
}

/// OPEN: opens (or with [`FileFlag::CREATE`] creates) the file at `path`.
pub fn open(path: &str, mode: FileMode, flags: FileFlag) -> Result<Handle> {
    let path = CPath::new(path)?;
    call!(Sys::OPEN, path.addr(), mode.bits(), flags.bits()).map(handle_from)
}

/// READ: up to `buf.len()` bytes from the handle's position; 0 at end of file.
pub fn read(handle: &impl AsHandle, buf: &mut [u8]) -> Result<usize> {
    let h = handle.as_handle().raw();
    call!(Sys::READ, h, buf.as_mut_ptr(), buf.len()).map(|n| n as usize)
}

/// WRITE: `buf` at the handle's position; returns how much was written.
pub fn write(handle: &impl AsHandle, buf: &[u8]) -> Result<usize> {
    let h = handle.as_handle().raw();
    call!(Sys::WRITE, h, buf.as_ptr(), buf.len()).map(|n| n as usize)
}

/// WRITE until all of `buf` is written; a write of 0 bytes ends it with what was written.
pub fn write_all(handle: &impl AsHandle, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        let n = write(handle, buf)?;
        if n == 0 {
            break;
        }
        buf = &buf[n.min(buf.len())..];
    }
    Ok(())
}

/// SEEK: moves the handle's position; returns the new position.
pub fn seek(handle: &impl AsHandle, offset: i64, mode: SeekMode) -> Result<u64> {
    call!(Sys::SEEK, handle.as_handle().raw(), offset, mode.raw())
}

/// TRUNCATE: shrinks the file to `length`; returns the new size.
pub fn truncate(handle: &impl AsHandle, length: u64) -> Result<u64> {
    call!(Sys::TRUNCATE, handle.as_handle().raw(), length)
}

/// UNLINK: removes the file at `path` (not a directory).
pub fn unlink(path: &str) -> Result<()> {
    let path = CPath::new(path)?;
    call!(Sys::UNLINK, path.addr()).map(|_| ())
}

/// OPENDIR: a handle that lists the directory at `path` as it was at this call.
pub fn opendir(path: &str) -> Result<Handle> {
    let path = CPath::new(path)?;
    call!(Sys::OPENDIR, path.addr()).map(handle_from)
}

/// READDIR: fills up to `entries.len()` entries; returns how many, 0 at the end.
pub fn readdir(handle: &impl AsHandle, entries: &mut [DirEnt]) -> Result<usize> {
    let h = handle.as_handle().raw();
    call!(Sys::READDIR, h, entries.as_mut_ptr(), entries.len()).map(|n| n as usize)
}

/// MKDIR: creates the directory `path`; its parent must exist.
pub fn mkdir(path: &str) -> Result<()> {
    let path = CPath::new(path)?;
    call!(Sys::MKDIR, path.addr()).map(|_| ())
}

/// RMDIR: removes the empty directory `path`.
pub fn rmdir(path: &str) -> Result<()> {
    let path = CPath::new(path)?;
    call!(Sys::RMDIR, path.addr()).map(|_| ())
}

impl DirEnt {
    /// The name's bytes, up to the NUL.
    pub fn name_bytes(&self) -> &[u8] {
        let end = self
            .name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.name.len());
        &self.name[..end]
    }

    /// The name, if it is UTF-8 (the kernel promises it is).
    pub fn name_str(&self) -> Option<&str> {
        core::str::from_utf8(self.name_bytes()).ok()
    }

    /// The entry's kind, if the kernel sent a known one.
    pub fn kind(&self) -> Option<FileType> {
        FileType::from_raw(u32::from(self.file_type))
    }
}
