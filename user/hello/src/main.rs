//! hello: a minimal copra service.
//!
//! Greets, then proves a real syscall round trip by asking the kernel for its
//! capabilities (CAPABILITIES 0, 1 and 2) and printing them with the platform type.
//! Exits 0, or 1 if CAPABILITIES fails.

#![no_std]
#![no_main]

use libcopra::sysinfo::{Capability, capability, platform};
use libcopra::{declare_main, println};

declare_main!(main);

fn main() -> u32 {
    println!("Hello from a copra service");
    let count = match capability(Capability::COUNT) {
        Ok(count) => count,
        Err(e) => {
            println!("CAPABILITIES(COUNT) failed: {e}");
            return 1;
        }
    };
    let vms = capability(Capability::VM_BITMAP);
    let features = capability(Capability::FEATURES);
    let platform = match platform() {
        Ok(Ok(p)) => p.name(),
        Ok(Err(_)) => "unknown",
        Err(_) => "unavailable",
    };
    match (vms, features) {
        (Ok(vms), Ok(features)) => println!(
            "capabilities: count {count}, VM bitmap {vms:#x}, features {features:#x} (platform {platform})"
        ),
        (vms, features) => {
            println!("capabilities: count {count}, VM bitmap {vms:?}, features {features:?}")
        }
    }
    0
}
