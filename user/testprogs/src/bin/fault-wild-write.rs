//! fault-wild-write: WRITE on handle 0 from addresses the process does not own.
//!
//! Each case prints `<case>: <result>`; a correct kernel answers EFAULT to every one
//! and keeps running. Exits 0 (the end-to-end test judges the printed results).

#![no_std]
#![no_main]

use libcopra::abi::{Sys, USER_END};
use libcopra::error::check;
use libcopra::syscall::syscall3;
use libcopra::{declare_main, println};

declare_main!(main);

const CASES: [(&str, u64, u64); 5] = [
    ("unmapped user address 0xdead0000", 0xdead_0000, 16),
    (
        "kernel-half address 0xffff800000000000",
        0xffff_8000_0000_0000,
        16,
    ),
    (
        "non-canonical address 0x0000800000000000",
        0x0000_8000_0000_0000,
        16,
    ),
    ("range straddling USER_END", USER_END - 8, 16),
    ("length wrapping the address space", 0x40_0000, u64::MAX),
];

fn main() -> u32 {
    for (what, addr, len) in CASES {
        // SAFETY: the kernel must refuse these ranges; nothing of ours is touched.
        let rax = unsafe { syscall3(Sys::WRITE as u64, 0, addr, len) };
        match check(rax) {
            Ok(n) => println!("write from {what}: ok {n}"),
            Err(e) => println!("write from {what}: {e}"),
        }
    }
    println!("fault-wild-write: done");
    0
}
