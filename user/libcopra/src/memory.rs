//! Memory mappings: MMAP, MUNMAP, MRESIZE (syscall class 0, indices 1-3).
//!
//! | wrapper | syscall | registers |
//! |---|---|---|
//! | [`mmap`] | MMAP (0, 1) | handle, address hint, file offset, length, [`MapFlag`] → address |
//! | [`mmap_anonymous`] | MMAP (0, 1) | as above with [`MapFlag::ANONYMOUS`]; handle ignored |
//! | [`munmap`] | MUNMAP (0, 2) | address, length |
//! | [`mresize`] | MRESIZE (0, 3) | address, new length |
//!
//! The numbers are upstream's draft (PR #927); copra says "anonymous" with the
//! ANONYMOUS flag rather than with a handle that does not resolve. Without
//! [`MapFlag::FIXED`] the hint is only a hint; with no hint the kernel searches upward
//! from `MMAP_BASE`.
//!
//! All are `unsafe`: a FIXED mapping, an unmap or a resize can pull memory out from
//! under live references. [`Mapping`] is the safe form: it owns its range, lends it as
//! a slice, and unmaps it when dropped.

use core::ops::Deref;

pub use crate::abi::MapFlag;
use crate::abi::{Errno, PAGE_SIZE, Sys};
use crate::error::{Error, Result};
use crate::handle::AsHandle;
use crate::syscall::call;

/// The handle passed with ANONYMOUS: ignored by copra, and an id that does not
/// resolve, which upstream's draft would also take as anonymous.
const NO_HANDLE: u32 = u32::MAX;

/// MMAP of `length` bytes of the object behind `handle`, from `offset`.
///
/// # Safety
/// With FIXED, whatever was mapped at `addr_hint` is replaced.
pub unsafe fn mmap(
    handle: &impl AsHandle,
    addr_hint: u64,
    offset: u64,
    length: u64,
    flags: MapFlag,
) -> Result<u64> {
    call!(
        Sys::MMAP,
        handle.as_handle().raw(),
        addr_hint,
        offset,
        length,
        flags.bits()
    )
}

/// MMAP of `length` bytes of fresh zeroed memory.
///
/// # Safety
/// As for [`mmap`].
pub unsafe fn mmap_anonymous(addr_hint: u64, length: u64, flags: MapFlag) -> Result<u64> {
    let flags = flags | MapFlag::ANONYMOUS;
    call!(Sys::MMAP, NO_HANDLE, addr_hint, 0u64, length, flags.bits())
}

/// MUNMAP of the mapping at `addr`.
///
/// # Safety
/// Nothing may use the mapping afterwards.
pub unsafe fn munmap(addr: u64, length: u64) -> Result<()> {
    call!(Sys::MUNMAP, addr, length).map(|_| ())
}

/// MRESIZE of the mapping at `addr` to `new_length` bytes.
///
/// # Safety
/// When shrinking, nothing may use the part cut off.
pub unsafe fn mresize(addr: u64, new_length: u64) -> Result<()> {
    call!(Sys::MRESIZE, addr, new_length).map(|_| ())
}

/// A mapping this value owns: MUNMAP when dropped.
///
/// It lends its bytes as a slice (`Deref<Target = [u8]>`), and mutably when mapped
/// with WRITE. A read-only mapping of a file shows the file's later WRITEs
/// (docs/abi.md, MMAP): the slice is the file's own pages, so do not hold it across
/// a write to the same file.
#[derive(Debug)]
pub struct Mapping {
    addr: u64,
    len: u64,
    flags: MapFlag,
}

impl Mapping {
    /// `len` bytes of fresh zeroed memory, readable and writable.
    pub fn anonymous(len: u64) -> Result<Self> {
        Self::anonymous_with(len, MapFlag::READ | MapFlag::WRITE)
    }

    /// `len` bytes of fresh zeroed memory with `flags` (READ is required; not FIXED).
    pub fn anonymous_with(len: u64, flags: MapFlag) -> Result<Self> {
        if flags.contains(MapFlag::FIXED) {
            return Err(Error::from_errno(Errno::EINVAL));
        }
        // SAFETY: without FIXED nothing existing is replaced.
        let addr = unsafe { mmap_anonymous(0, len, flags)? };
        Ok(Self {
            addr,
            len: len.next_multiple_of(PAGE_SIZE),
            flags,
        })
    }

    /// `len` bytes of the file behind `handle` from `offset` (page-aligned), with
    /// `flags` (READ, and WRITE only with PRIVATE: a private copy).
    pub fn file(handle: &impl AsHandle, offset: u64, len: u64, flags: MapFlag) -> Result<Self> {
        if flags.contains(MapFlag::FIXED) || flags.contains(MapFlag::ANONYMOUS) {
            return Err(Error::from_errno(Errno::EINVAL));
        }
        // SAFETY: as above.
        let addr = unsafe { mmap(handle, 0, offset, len, flags)? };
        Ok(Self {
            addr,
            len: len.next_multiple_of(PAGE_SIZE),
            flags,
        })
    }

    /// `len` bytes of a kernel object's pages (a VCPU's run page, a guest's RAM),
    /// shared with the kernel: `flags` READ, optionally WRITE (never PRIVATE or EXEC).
    pub fn object(handle: &impl AsHandle, len: u64, flags: MapFlag) -> Result<Self> {
        if flags.contains(MapFlag::FIXED) || flags.contains(MapFlag::ANONYMOUS) {
            return Err(Error::from_errno(Errno::EINVAL));
        }
        // SAFETY: without FIXED nothing existing is replaced.
        let addr = unsafe { mmap(handle, 0, 0, len, flags)? };
        Ok(Self {
            addr,
            len: len.next_multiple_of(PAGE_SIZE),
            flags,
        })
    }

    /// The first byte's address.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// Bytes mapped (whole pages).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Never: a mapping has at least one page.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The flags it was mapped with.
    pub fn flags(&self) -> MapFlag {
        self.flags
    }

    /// The bytes, mutable, if mapped with WRITE.
    pub fn as_mut_slice(&mut self) -> Option<&mut [u8]> {
        if !self.flags.contains(MapFlag::WRITE) {
            return None;
        }
        // SAFETY: the range is mapped writable and owned by `self`, borrowed mutably.
        Some(unsafe { core::slice::from_raw_parts_mut(self.addr as *mut u8, self.len as usize) })
    }

    /// MRESIZE to `new_len` bytes (anonymous mappings grow; any shrinks). The
    /// mapping stays where it is; ENOMEM when the pages after it are taken.
    pub fn resize(&mut self, new_len: u64) -> Result<()> {
        // SAFETY: `&mut self`: no slice of the mapping is borrowed.
        unsafe { mresize(self.addr, new_len)? };
        self.len = new_len.next_multiple_of(PAGE_SIZE);
        Ok(())
    }

    /// MUNMAP now, with the kernel's answer (dropping ignores it).
    pub fn unmap(self) -> Result<()> {
        let (addr, len) = (self.addr, self.len);
        core::mem::forget(self);
        // SAFETY: the mapping is owned and gone with `self`.
        unsafe { munmap(addr, len) }
    }
}

impl Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        // SAFETY: the range is mapped readable (READ is required) and owned by `self`.
        unsafe { core::slice::from_raw_parts(self.addr as *const u8, self.len as usize) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: as in `unmap`.
        let _ = unsafe { munmap(self.addr, self.len) };
    }
}
