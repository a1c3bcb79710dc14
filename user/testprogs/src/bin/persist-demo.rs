//! persist-demo: counts its boots in the persistent state the attestation driver
//! mounts at `/persist` (docs/attestation.md).
//!
//! Opens `/persist/counter` (read + write, CREATE), reads a decimal count (0 when the
//! file is empty), prints `persist-demo: boot N` with N = count + 1 and writes N back
//! over the old contents (TRUNCATE to 0, SEEK to 0, WRITE). Without `/persist` (no
//! attestation, or the store stayed sealed) it prints `persist-demo: no persistent
//! state`. Exits 0 in both cases, 1 if the counter cannot be read, parsed or written.

#![no_std]
#![no_main]

use libcopra::abi::Errno;
use libcopra::fs::{self, FileFlag, FileMode, SeekMode};
use libcopra::{declare_main, println};

declare_main!(main);

const COUNTER: &str = "/persist/counter";

fn main() -> u32 {
    let file = match fs::open(COUNTER, FileMode::READ | FileMode::WRITE, FileFlag::CREATE) {
        Ok(file) => file,
        Err(e) if e.is(Errno::ENOTFOUND) => {
            println!("persist-demo: no persistent state");
            return 0;
        }
        Err(e) => {
            println!("persist-demo: cannot open {COUNTER}: {e}");
            return 1;
        }
    };
    let mut buf = [0u8; 24];
    let len = match fs::read(&file, &mut buf) {
        Ok(len) => len,
        Err(e) => {
            println!("persist-demo: cannot read {COUNTER}: {e}");
            return 1;
        }
    };
    let count = match parse(buf[..len].trim_ascii()) {
        Some(count) => count,
        None => {
            println!("persist-demo: {COUNTER} does not hold a decimal count");
            return 1;
        }
    };
    let Some(boot) = count.checked_add(1) else {
        println!("persist-demo: the count is at its maximum");
        return 1;
    };
    println!("persist-demo: boot {boot}");
    let mut text = [0u8; 20];
    let digits = format(boot, &mut text);
    let written = fs::truncate(&file, 0)
        .and_then(|_| fs::seek(&file, 0, SeekMode::ABSOLUTE))
        .and_then(|_| fs::write_all(&file, digits));
    if let Err(e) = written {
        println!("persist-demo: cannot write {COUNTER}: {e}");
        return 1;
    }
    0
}

/// A decimal u64; the empty string is 0.
fn parse(text: &[u8]) -> Option<u64> {
    let mut n: u64 = 0;
    for &digit in text {
        if !digit.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(digit - b'0'))?;
    }
    Some(n)
}

/// `n` in decimal, in the tail of `buf`.
fn format(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[start..];
        }
    }
}
