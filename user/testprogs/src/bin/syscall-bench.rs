//! syscall-bench: N round trips of the cheapest syscall, CAPABILITIES(0), through the
//! doorbell and then N through `int 0x80`. Prints nothing on success; the host times
//! the process.
//!
//! N is read from `/etc/bench.n` (one decimal integer) when that file exists, else
//! 20000. Exits 0, or 1 if a call failed or the file is malformed.

#![no_std]
#![no_main]

use libcopra::abi::Sys;
use libcopra::syscall::{syscall1_doorbell, syscall1_int80};
use libcopra::{declare_main, println};

#[path = "../bench_n.rs"]
mod bench_n;

declare_main!(main);

const DEFAULT_N: u64 = 20_000;
const N_FILE: &str = "/etc/bench.n";

fn main() -> u32 {
    let n = match bench_n::iterations(N_FILE, DEFAULT_N) {
        Ok(n) => n,
        Err(why) => {
            println!("syscall-bench: {N_FILE}: {why}");
            return 1;
        }
    };
    let nr = Sys::CAPABILITIES as u64;
    // SAFETY: CAPABILITIES reads no memory.
    let expected = unsafe { syscall1_doorbell(nr, 0) };
    let mut failures = 0u64;
    for _ in 0..n {
        // SAFETY: as above.
        failures += u64::from(unsafe { syscall1_doorbell(nr, 0) } != expected);
    }
    for _ in 0..n {
        // SAFETY: as above.
        failures += u64::from(unsafe { syscall1_int80(nr, 0) } != expected);
    }
    if failures != 0 {
        println!(
            "syscall-bench: {failures} of {} calls answered differently",
            2 * n
        );
        return 1;
    }
    0
}
