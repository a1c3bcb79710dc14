//! badsys: calls syscall numbers that do not exist, through both entries.
//!
//! Prints `sys <number> via <entry>: <result>` for class 0 index 999, class 7 index
//! 0 and u64::MAX. copra must answer ENOSYS (upstream answers EINVAL). Exits 0 when
//! every answer was ENOSYS, 1 otherwise.

#![no_std]
#![no_main]

use libcopra::abi::{Errno, sysno};
use libcopra::error::check;
use libcopra::syscall::{Entry, syscall0_via};
use libcopra::{declare_main, println};

declare_main!(main);

const NUMBERS: [u64; 3] = [sysno(0, 999), sysno(7, 0), u64::MAX];

fn main() -> u32 {
    let mut wrong = 0;
    for entry in [Entry::DOORBELL, Entry::INT80] {
        for nr in NUMBERS {
            // SAFETY: no arguments; an unknown number must not do anything.
            let rax = unsafe { syscall0_via(entry, nr) };
            match check(rax) {
                Err(e) if e.is(Errno::ENOSYS) => {
                    println!("sys {nr:#x} via {}: {e}", entry.name());
                }
                Err(e) => {
                    println!("sys {nr:#x} via {}: {e} (expected ENOSYS)", entry.name());
                    wrong += 1;
                }
                Ok(v) => {
                    println!(
                        "sys {nr:#x} via {}: ok {v:#x} (expected ENOSYS)",
                        entry.name()
                    );
                    wrong += 1;
                }
            }
        }
    }
    if wrong == 0 { 0 } else { 1 }
}
