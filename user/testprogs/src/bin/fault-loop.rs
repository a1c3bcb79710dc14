//! fault-loop: spins forever without a single syscall, not even a print.
//! The kernel must be able to stop it (time limit, preemption) on its own.

#![no_std]
#![no_main]

use libcopra::declare_main;

declare_main!(main);

fn main() -> u32 {
    // SAFETY: a jump to itself; no memory, no stack.
    unsafe { core::arch::asm!("2: jmp 2b", options(noreturn, nomem, nostack)) }
}
