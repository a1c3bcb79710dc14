//! xstate: the XSAVE-managed registers are private to each process.
//!
//! Detects with CPUID and XGETBV which classes exist (see `xstate.rs`: MXCSR and FCW
//! always; AVX upper halves; AVX-512 opmasks, zmm upper halves, zmm16-31), writes a
//! pattern of its own into all of them, EXECs `/bin/xstate-child` and, while the child
//! runs, rewrites and checks its patterns for `xstate::ROUNDS` rounds; the kernel's
//! time slice switches between the two in the middle of that. After WAIT it checks
//! its last pattern once more. The child checks that it started clean and that its
//! own patterns held, and reports through its exit status; where CPUID says AVX or
//! AVX-512 is not usable, the child must die of #UD when it tries one.
//!
//! Prints `PASS <check>` or `FAIL <check>: <why>` per check and exits 0 iff all passed.
//! Needs `/bin/xstate-child` in the RAM fs.

#![no_std]
#![no_main]

#[path = "../xstate.rs"]
mod xstate;

use libcopra::process::{self, ExitStatus};
use libcopra::{declare_main, println};
use xstate::{Class, Features, State};

declare_main!(main);

const CHILD: &str = "/bin/xstate-child";
const SEED: u8 = 0xA5;
const UD: u8 = 6;

fn main() -> u32 {
    let f = Features::detect();
    println!(
        "xstate: XCR0 {:#x}; AVX {}, AVX-512 {}{}",
        f.xcr0,
        yes_no(f.avx),
        yes_no(f.avx512),
        if f.avx512 && !f.avx512bw { " (16-bit opmasks)" } else { "" }
    );
    for class in Class::ALL.into_iter().filter(|&c| f.has(c)) {
        println!("xstate: checking {}", class.name());
    }
    let mut failed = 0u32;
    let mut check = |name: &str, outcome: Result<(), &dyn core::fmt::Display>| match outcome {
        Ok(()) => println!("PASS {name}"),
        Err(why) => {
            failed += 1;
            println!("FAIL {name}: {why}");
        }
    };

    if let Some(class) = xstate::round(SEED, 0, f) {
        check("own state reads back", Err(&class.name()));
        return 1;
    }
    let child = match process::exec(CHILD) {
        Ok(task) => task,
        Err(e) => {
            check("exec the child", Err(&e));
            return 1;
        }
    };
    let mut last = 0;
    let mut changed = None;
    for i in 1..=xstate::ROUNDS {
        last = i;
        if let Some(class) = xstate::round(SEED, i, f) {
            changed = Some((class, i));
            break;
        }
    }
    match changed {
        None => check("parent's state held while the child ran", Ok(())),
        Some((class, i)) => check(
            "parent's state held while the child ran",
            Err(&format_args!("{} changed in round {i}", class.name())),
        ),
    }

    let status = process::wait(child);
    let mut got = State::pattern(0xFF, 0, f);
    xstate::read(&mut got, f);
    let mut held = true;
    for class in got.differences(&State::pattern(SEED, last, f), f) {
        held = false;
        check("parent's state held across WAIT", Err(&format_args!("{} changed", class.name())));
    }
    if held {
        check("parent's state held across WAIT", Ok(()));
    }

    let expected = if f.avx512 {
        ExitStatus::Exited(0)
    } else {
        ExitStatus::Killed { vector: UD }
    };
    match status {
        Ok(s) if s == expected => check("child started clean and kept its own state", Ok(())),
        Ok(ExitStatus::Exited(code)) => check(
            "child started clean and kept its own state",
            Err(&ChildFailure(u32::from(code))),
        ),
        Ok(other) => check(
            "child started clean and kept its own state",
            Err(&format_args!("it {other}, expected: it {expected}")),
        ),
        Err(e) => check("child started clean and kept its own state", Err(&e)),
    }
    println!("SUMMARY {}", if failed == 0 { "all passed" } else { "failures" });
    u32::from(failed != 0)
}

const fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// What the child's exit code says went wrong.
struct ChildFailure(u32);

impl core::fmt::Display for ChildFailure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let code = self.0;
        let class = |base: u32| Class::from_index(code.wrapping_sub(base)).map(Class::name);
        if let Some(name) = class(xstate::INITIAL).filter(|_| code >= xstate::INITIAL) {
            write!(f, "it did not start with the initial {name} (saw its parent's?)")
        } else if let Some(name) = class(xstate::OWN).filter(|_| code >= xstate::OWN) {
            write!(f, "its own {name} changed under it")
        } else if code == xstate::SURVIVED_AVX {
            write!(f, "AVX ran in it although CPUID says it is not usable")
        } else if code == xstate::SURVIVED_AVX512 {
            write!(f, "AVX-512 ran in it although CPUID says it is not usable")
        } else {
            write!(f, "it exited with {code}")
        }
    }
}
