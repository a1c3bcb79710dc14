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
//! under live references.

pub use crate::abi::MapFlag;
use crate::abi::Sys;
use crate::error::Result;
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
