//! xstate-child: the process `xstate` starts; see that program.
//!
//! Checks that it starts with the initial state in every class CPUID reports
//! (nothing of its parent's), then, whatever it found, writes and checks its own
//! patterns for `xstate::ROUNDS` rounds while the parent runs its own. Where CPUID says AVX or
//! AVX-512 is not usable, it executes one such instruction, which must end it with
//! #UD. Exit codes: 0, or those of `xstate::{INITIAL, OWN, SURVIVED_*}`.

#![no_std]
#![no_main]

#[path = "../xstate.rs"]
mod xstate;

use libcopra::{declare_main, println};
use xstate::{Features, State};

declare_main!(main);

const SEED: u8 = 0x5A;

fn main() -> u32 {
    let f = Features::detect();
    if !f.avx {
        // SAFETY: meant to raise #UD, which ends this process.
        unsafe { xstate::touch_avx() };
        println!("xstate-child: AVX ran although CPUID says it is not usable");
        return xstate::SURVIVED_AVX;
    }
    // Start from a pattern no process writes, so a read that did nothing shows.
    let mut got = State::pattern(0xFF, 0, f);
    xstate::read(&mut got, f);
    let mut status = 0;
    for class in got.differences(&State::initial(), f) {
        println!("xstate-child: {} did not start in its initial state", class.name());
        if status == 0 {
            status = xstate::INITIAL + class as u32;
        }
    }
    // Go on either way: the parent's checks need this process's patterns.
    for i in 0..xstate::ROUNDS {
        if let Some(class) = xstate::round(SEED, i, f) {
            println!("xstate-child: its own {} changed (round {i})", class.name());
            return if status == 0 { xstate::OWN + class as u32 } else { status };
        }
    }
    if status != 0 {
        return status;
    }
    if !f.avx512 {
        // SAFETY: meant to raise #UD, which ends this process.
        unsafe { xstate::touch_avx512() };
        println!("xstate-child: AVX-512 ran although CPUID says it is not usable");
        return xstate::SURVIVED_AVX512;
    }
    0
}
