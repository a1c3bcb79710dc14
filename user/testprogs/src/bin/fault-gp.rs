//! fault-gp: executes `hlt` at CPL3, a privileged instruction. The kernel must end the
//! process with #GP (vector 13).

#![no_std]
#![no_main]

use libcopra::{declare_main, println};

declare_main!(main);

fn main() -> u32 {
    println!("fault-gp: executing hlt at CPL3");
    // SAFETY: none needed; the instruction faults at CPL3.
    unsafe { core::arch::asm!("hlt", options(nomem, nostack)) };
    println!("fault-gp: survived hlt");
    2
}
