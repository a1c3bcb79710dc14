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
//! On top of these, typed files and listings: [`File`] (with [`Read`], [`Write`] and
//! [`Seek`]), [`read_file`], [`read_to_string`], [`write_file`], and [`read_dir`],
//! an iterator of [`DirEntry`].
//!
//! Paths are NUL-terminated copies of the `&str` (see the crate's path rules: at most
//! PATH_MAX - 1 bytes, no interior NUL). Semantics are the kernel's; upstream's worth
//! knowing: a created file's handle is always read+write, APPEND moves to the end once
//! at open, SEEK never goes past the end and `END` counts backwards from it.

use alloc::string::String;
use alloc::vec::Vec;

pub use crate::abi::{DirEnt, FileFlag, FileMode, FileType, SeekMode};
use crate::abi::{Errno, Sys};
use crate::error::{Error, Result};
use crate::handle::{AsHandle, Handle};
pub use crate::io::{Read, Seek, SeekFrom, Write};
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

// --- typed files and directories ---------------------------------------------------

/// An open file: a [`Handle`] that reads, writes and seeks as [`Read`], [`Write`] and
/// [`Seek`]. Closed (CLOSE) when dropped.
#[derive(Debug)]
pub struct File {
    handle: Handle,
}

impl File {
    /// Opens `path` for reading.
    pub fn open(path: &str) -> Result<Self> {
        Self::open_with(path, FileMode::READ, FileFlag::EMPTY)
    }

    /// Creates `path`, or empties it if it exists; open for reading and writing.
    pub fn create(path: &str) -> Result<Self> {
        let mode = FileMode::READ | FileMode::WRITE | FileMode::TRUNC;
        Self::open_with(path, mode, FileFlag::CREATE)
    }

    /// OPEN with explicit mode and flags (APPEND, TRUNC, CREATE …).
    pub fn open_with(path: &str, mode: FileMode, flags: FileFlag) -> Result<Self> {
        open(path, mode, flags).map(Self::from_handle)
    }

    /// A file from a handle the caller owns.
    pub fn from_handle(handle: Handle) -> Self {
        Self { handle }
    }

    /// The handle, closed with the file.
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Gives up the file without closing it.
    pub fn into_handle(self) -> Handle {
        self.handle
    }

    /// The file's size; the position is kept.
    pub fn size(&self) -> Result<u64> {
        let at = seek(self, 0, SeekMode::RELATIVE)?;
        let size = seek(self, 0, SeekMode::END)?;
        seek(self, at as i64, SeekMode::ABSOLUTE)?;
        Ok(size)
    }

    /// TRUNCATE: shrinks the file to `len` bytes (files never grow this way).
    pub fn set_len(&self, len: u64) -> Result<u64> {
        truncate(self, len)
    }

    /// Maps `len` bytes of the file from `offset` (see [`crate::memory::Mapping`]).
    pub fn map(
        &self,
        offset: u64,
        len: u64,
        flags: crate::memory::MapFlag,
    ) -> Result<crate::memory::Mapping> {
        crate::memory::Mapping::file(self, offset, len, flags)
    }
}

impl AsHandle for File {
    fn as_handle(&self) -> crate::handle::HandleRef<'_> {
        self.handle.as_handle()
    }
}

impl Read for File {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        read(&self.handle, buf)
    }
}

impl Read for &File {
    fn read(&mut self, buf: &mut [u8]) -> Result<usize> {
        read(&self.handle, buf)
    }
}

impl Write for File {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        write(&self.handle, buf)
    }
}

impl Write for &File {
    fn write(&mut self, buf: &[u8]) -> Result<usize> {
        write(&self.handle, buf)
    }
}

fn seek_from(handle: &Handle, pos: SeekFrom) -> Result<u64> {
    match pos {
        SeekFrom::Start(n) => seek(
            handle,
            i64::try_from(n).unwrap_or(i64::MAX),
            SeekMode::ABSOLUTE,
        ),
        SeekFrom::Current(n) => seek(handle, n, SeekMode::RELATIVE),
        // The kernel's END counts backwards from the end (upstream's semantics).
        SeekFrom::End(n) if n <= 0 => {
            seek(handle, n.checked_neg().unwrap_or(i64::MAX), SeekMode::END)
        }
        SeekFrom::End(_) => Err(Error::from_errno(Errno::EINVAL)),
    }
}

impl Seek for File {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        seek_from(&self.handle, pos)
    }
}

impl Seek for &File {
    fn seek(&mut self, pos: SeekFrom) -> Result<u64> {
        seek_from(&self.handle, pos)
    }
}

/// The whole file at `path`.
pub fn read_file(path: &str) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    File::open(path)?.read_to_end(&mut out)?;
    Ok(out)
}

/// The whole file at `path`, which must be UTF-8 ([`Error::INVALID_UTF8`]).
pub fn read_to_string(path: &str) -> Result<String> {
    Ok(String::from_utf8(read_file(path)?)?)
}

/// Creates (or empties) `path` and writes `data` to it.
pub fn write_file(path: &str, data: &[u8]) -> Result<()> {
    File::create(path)?.write_all(data)
}

/// One entry of a directory listing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DirEntry {
    name: String,
    kind: Option<FileType>,
    size: u64,
}

impl DirEntry {
    /// The name (not the path).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// File or directory; None for a kind this library does not know.
    pub fn file_type(&self) -> Option<FileType> {
        self.kind
    }

    /// Whether it is a directory.
    pub fn is_dir(&self) -> bool {
        self.kind == Some(FileType::DIRECTORY)
    }

    /// Its size in bytes when it was listed (0 for directories).
    pub fn size(&self) -> u64 {
        self.size
    }
}

/// Entries READ from a directory (as it was at OPENDIR), a few at a time.
pub struct ReadDir {
    handle: Handle,
    batch: Vec<DirEnt>,
    next: usize,
    done: bool,
}

/// Entries asked for per READDIR.
const READDIR_BATCH: usize = 8;

/// OPENDIR of `path`: iterate over it for its entries.
pub fn read_dir(path: &str) -> Result<ReadDir> {
    Ok(ReadDir {
        handle: opendir(path)?,
        batch: Vec::new(),
        next: 0,
        done: false,
    })
}

impl Iterator for ReadDir {
    type Item = Result<DirEntry>;

    fn next(&mut self) -> Option<Result<DirEntry>> {
        if self.next == self.batch.len() {
            if self.done {
                return None;
            }
            self.batch.resize(READDIR_BATCH, DirEnt::zeroed());
            match readdir(&self.handle, &mut self.batch) {
                Ok(0) => {
                    self.done = true;
                    self.batch.clear();
                    return None;
                }
                Ok(n) => {
                    self.batch.truncate(n);
                    self.next = 0;
                }
                Err(e) => {
                    self.done = true;
                    self.batch.clear();
                    self.next = 0;
                    return Some(Err(e));
                }
            }
        }
        let ent = &self.batch[self.next];
        self.next += 1;
        Some(match ent.name_str() {
            Some(name) => Ok(DirEntry {
                name: String::from(name),
                kind: ent.kind(),
                size: ent.size,
            }),
            None => Err(Error::INVALID_UTF8),
        })
    }
}
