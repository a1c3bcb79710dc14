//! fault-ud: executes `ud2`. The kernel must end the process with #UD (vector 6).

#![no_std]
#![no_main]

use libcopra::{declare_main, println};

declare_main!(main);

fn main() -> u32 {
    println!("fault-ud: executing ud2");
    // SAFETY: none needed; the instruction faults.
    unsafe { core::arch::asm!("ud2", options(nomem, nostack)) };
    println!("fault-ud: survived ud2");
    2
}
