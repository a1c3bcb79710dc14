//! fault-de: divides by zero with `div`. The kernel must end the process with #DE
//! (vector 0).

#![no_std]
#![no_main]

use libcopra::{declare_main, println};

declare_main!(main);

fn main() -> u32 {
    println!("fault-de: dividing by zero");
    // SAFETY: none needed; the instruction faults.
    unsafe {
        core::arch::asm!(
            "xor edx, edx",
            "xor ecx, ecx",
            "mov eax, 1",
            "div ecx",
            out("eax") _,
            out("ecx") _,
            out("edx") _,
            options(nomem, nostack),
        );
    }
    println!("fault-de: survived the division");
    2
}
