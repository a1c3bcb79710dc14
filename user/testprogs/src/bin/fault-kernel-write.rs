//! fault-kernel-write: stores to a kernel-half address. The kernel must end the process
//! with #PF (vector 14); the line after the store is never printed.

#![no_std]
#![no_main]

use libcopra::{declare_main, println};

declare_main!(main);

const KERNEL_ADDRESS: u64 = 0xffff_8000_0000_1000;

fn main() -> u32 {
    println!("fault-kernel-write: storing to {KERNEL_ADDRESS:#x}");
    // SAFETY: none; faulting is the point. The store is a single `mov` to the address.
    unsafe {
        core::arch::asm!(
            "mov qword ptr [{addr}], 1",
            addr = in(reg) KERNEL_ADDRESS,
            options(nostack),
        );
    }
    println!("fault-kernel-write: survived the store (kernel memory is writable!)");
    2
}
