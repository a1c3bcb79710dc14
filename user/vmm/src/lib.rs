//! The device models' logic that needs no kernel: host-tested with
//! `cargo test -p vmm --lib` (RUSTFLAGS="", as libcopra's tests). The programs are the
//! binaries (main.rs, bin/*.rs).

#![no_std]

#[cfg(test)]
extern crate std;

pub mod rtc;
