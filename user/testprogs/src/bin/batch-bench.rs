//! batch-bench: N rounds of 16 CAPABILITIES(0) calls made one by one, then N rounds of
//! the same 16 calls in one BATCH. Prints nothing on success; the host times the
//! syscall dispatches (bench/batch.py).
//!
//! N is read from `/etc/bench.n` (one decimal integer) when that file exists, else
//! 2000. Exits 0, or 1 if a call answered differently or the file is malformed.

#![no_std]
#![no_main]

use libcopra::abi::{BatchFlag, BatchRecord, Sys};
use libcopra::batch;
use libcopra::syscall::syscall1;
use libcopra::{declare_main, println};

#[path = "../bench_n.rs"]
mod bench_n;

declare_main!(main);

const DEFAULT_N: u64 = 2_000;
const N_FILE: &str = "/etc/bench.n";
/// Calls per round.
const CALLS: usize = 16;

fn main() -> u32 {
    let n = match bench_n::iterations(N_FILE, DEFAULT_N) {
        Ok(n) => n,
        Err(why) => {
            println!("batch-bench: {N_FILE}: {why}");
            return 1;
        }
    };
    let nr = Sys::CAPABILITIES as u64;
    let mut failures = 0u64;
    for _ in 0..n {
        for _ in 0..CALLS {
            // SAFETY: CAPABILITIES reads no memory.
            failures += u64::from(unsafe { syscall1(nr, 0) } != 2);
        }
    }
    let mut template = BatchRecord::zeroed();
    template.number = nr;
    let mut records = [template; CALLS];
    for _ in 0..n {
        match batch::run(&mut records, BatchFlag::EMPTY) {
            Ok(CALLS) => failures += records.iter().filter(|r| r.result != 2).count() as u64,
            _ => failures += CALLS as u64,
        }
    }
    if failures != 0 {
        println!("batch-bench: {failures} calls answered differently");
        return 1;
    }
    0
}
