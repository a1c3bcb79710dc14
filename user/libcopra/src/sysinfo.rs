//! System information: CAPABILITIES (class 3, index 0).
//!
//! Index 0 is the number of values after it (2, as upstream), 1 the bitmap of VMs
//! that may be opened, 2 the platform feature bitmap whose bits 2:0 are the
//! [`PlatformType`]. Any other index is ENOTFOUND.

use crate::abi::Sys;
pub use crate::abi::{Capability, PlatformType};
use crate::error::Result;
use crate::syscall::call;

/// CAPABILITIES: the value at `index`.
pub fn capabilities(index: u32) -> Result<u64> {
    call!(Sys::CAPABILITIES, index)
}

/// CAPABILITIES for a known index.
pub fn capability(which: Capability) -> Result<u64> {
    capabilities(which.raw())
}

/// The platform type, bits 2:0 of [`Capability::FEATURES`]; `Err` holds an unknown
/// value as `Ok(Err(bits))`.
pub fn platform() -> Result<core::result::Result<PlatformType, u32>> {
    let bits = (capability(Capability::FEATURES)? & 0b111) as u32;
    Ok(PlatformType::from_raw(bits).ok_or(bits))
}
