//! Where the heap's memory comes from: [`PageSource`], and [`KernelPages`], the copra
//! kernel's MMAP, MUNMAP and MRESIZE.
//!
//! The heap decides every address itself (docs/heap.md has the layout) and asks for
//! memory exactly there; a source either maps at that address or maps nothing. Host
//! unit tests put Linux's `mmap` behind the same trait.

use crate::abi::Errno;
use crate::error::{Error, Result};
use crate::memory::{MapFlag, mmap_anonymous, mresize, munmap};

/// Zeroed, private, read-write memory at addresses the caller chooses.
///
/// Lengths are multiples of the page size, addresses page-aligned.
pub trait PageSource {
    /// Maps `len` bytes at exactly `addr`. On error nothing is mapped; EEXIST means
    /// the range is not free (something else lives there).
    fn map(&mut self, addr: usize, len: usize) -> Result<()>;
    /// Unmaps `[addr, addr + len)`, which `map` or `resize` mapped.
    fn unmap(&mut self, addr: usize, len: usize) -> Result<()>;
    /// Grows or shrinks the mapping at `addr` from `old_len` to `new_len` in place;
    /// new pages are zeroed. On error the mapping is unchanged.
    fn resize(&mut self, addr: usize, old_len: usize, new_len: usize) -> Result<()>;
}

/// The copra kernel's anonymous mappings (MMAP with a hint, MUNMAP, MRESIZE).
pub struct KernelPages;

impl PageSource for KernelPages {
    fn map(&mut self, addr: usize, len: usize) -> Result<()> {
        let flags = MapFlag::READ | MapFlag::WRITE | MapFlag::PRIVATE;
        // SAFETY: not FIXED: the kernel never replaces an existing mapping.
        let got = unsafe { mmap_anonymous(addr as u64, len as u64, flags)? };
        if got != addr as u64 {
            // The hint was taken (a FIXED mapping of the program's own inside the
            // heap's area): give the memory back and let the heap pick another slot.
            // SAFETY: the mapping was made just now and nothing refers to it.
            let _ = unsafe { munmap(got, len as u64) };
            return Err(Error::from_errno(Errno::EEXIST));
        }
        Ok(())
    }

    fn unmap(&mut self, addr: usize, len: usize) -> Result<()> {
        // SAFETY: the heap unmaps only ranges it mapped and no longer hands out.
        unsafe { munmap(addr as u64, len as u64) }
    }

    fn resize(&mut self, addr: usize, _old_len: usize, new_len: usize) -> Result<()> {
        // SAFETY: as for unmap; growing touches only the free range after the mapping.
        unsafe { mresize(addr as u64, new_len as u64) }
    }
}
