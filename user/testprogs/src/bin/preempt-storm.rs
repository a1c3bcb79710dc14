//! preempt-storm: several runnable processes entering the kernel through `int 0x80`
//! and ending on CPU exceptions, for a kernel preempting them on a very short slice.
//!
//! On PVM hosts `int 0x80` arrives as #UD through a ring-0 stub that KVM emulates
//! slowly, so a preemption tick often lands while the vCPU is at CPL0 in that stub.
//! The kernel must finish the entry there and never switch away from ring 0; a kernel
//! that saves the stub's registers as the process's context kills it with a #PF in
//! the stub. Every child here must end exactly as its role says.
//!
//! As init (no `/role` file in its root) it is the parent: it EXECs itself with role
//! `i` and root `/kids/<i>` for every child (see `roles.rs`), starts them all, then WAITs for each and compares. A child reads its role and
//! makes `N` CAPABILITIES calls through `int 0x80` (N from `/etc/storm.n`, default
//! 3000), checking every answer and the callee-saved registers around each call; then
//! it ends by its role:
//!
//! | role | ends with |
//! |---|---|
//! | 0, 1, 2 | EXIT(10 + role) |
//! | 3 | `ud2`: killed by #UD |
//! | 4 | a load from the unmapped `0xdead0000`: killed by #PF |
//! | 5 | `int3`: killed by #BP |
//!
//! A child whose checks fail exits with 1. The parent prints one line per child and
//! exits 0 when every child ended as its role says, else 1.

#![no_std]
#![no_main]

use libcopra::abi::Sys;
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::process::{exit, wait, ExitStatus};
use libcopra::syscall::syscall1_int80;
use libcopra::{declare_main, println};

declare_main!(main);

#[path = "../roles.rs"]
mod roles;

const CHILDREN: u8 = 6;
const DEFAULT_N: u64 = 3000;
const SELF: &str = "/bin/preempt-storm";

fn main() -> u32 {
    match roles::own_role() {
        None => parent(),
        Some(Ok(role)) => child(role),
        Some(Err(())) => 0xEE,
    }
}

fn expected(role: u8) -> ExitStatus {
    match role {
        3 => ExitStatus::Killed { vector: 6 },
        4 => ExitStatus::Killed { vector: 14 },
        5 => ExitStatus::Killed { vector: 3 },
        _ => ExitStatus::Exited(10 + u16::from(role)),
    }
}

fn parent() -> u32 {
    let mut tasks = [0u64; CHILDREN as usize];
    if fs::mkdir("/kids").is_err() {
        println!("preempt-storm: cannot make /kids");
        return 1;
    }
    for role in 0..CHILDREN {
        match roles::spawn_role(SELF, "/kids", role) {
            Some(task) => tasks[usize::from(role)] = task,
            None => return 1,
        }
    }
    let mut bad = 0;
    for role in 0..CHILDREN {
        let want = expected(role);
        match wait(tasks[usize::from(role)]) {
            Ok(got) if got == want => println!("preempt-storm: child {role}: {got:?} as expected"),
            Ok(got) => {
                println!("preempt-storm: child {role}: {got:?}, expected {want:?}");
                bad += 1;
            }
            Err(e) => {
                println!("preempt-storm: WAIT for child {role} failed: {e:?}");
                bad += 1;
            }
        }
    }
    u32::from(bad != 0)
}

fn iterations() -> u64 {
    let Ok(file) = fs::open("/etc/storm.n", FileMode::READ, FileFlag::EMPTY) else {
        return DEFAULT_N;
    };
    let mut buf = [0u8; 16];
    let len = fs::read(&file, &mut buf).unwrap_or(0);
    let mut n = 0u64;
    for &digit in buf[..len].trim_ascii() {
        if !digit.is_ascii_digit() {
            return DEFAULT_N;
        }
        n = n.saturating_mul(10).saturating_add(u64::from(digit - b'0'));
    }
    n
}

/// One CAPABILITIES(0) through `int 0x80` with known values in rbx, r12-r15 (which
/// the kernel must preserve); returns rax and whether they survived.
fn call_and_check(seed: u64) -> (u64, bool) {
    let rax: u64;
    let (mut b, mut c12, mut c13, mut c14, mut c15) =
        (seed, seed ^ 0x1212, seed ^ 0x1313, seed ^ 0x1414, seed ^ 0x1515);
    // SAFETY: CAPABILITIES reads no memory; every register the asm touches is declared.
    unsafe {
        core::arch::asm!(
            "xchg rbx, {b}",
            "int 0x80",
            "xchg rbx, {b}",
            b = inout(reg) b,
            inout("rax") Sys::CAPABILITIES as u64 => rax,
            in("rdi") 0u64,
            inout("r12") c12, inout("r13") c13, inout("r14") c14, inout("r15") c15,
            options(nostack),
        );
    }
    let kept = b == seed && c12 == seed ^ 0x1212 && c13 == seed ^ 0x1313
        && c14 == seed ^ 0x1414 && c15 == seed ^ 0x1515;
    (rax, kept)
}

fn child(role: u8) -> u32 {
    let n = iterations();
    // SAFETY: CAPABILITIES reads no memory.
    let want = unsafe { syscall1_int80(Sys::CAPABILITIES as u64, 0) };
    for i in 0..n {
        let (got, kept) = call_and_check(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(role));
        if got != want || !kept {
            println!("preempt-storm: child {role}: call {i} answered {got:#x} (want {want:#x}), registers kept: {kept}");
            exit(1);
        }
    }
    match role {
        // SAFETY: none needed; each instruction faults and the kernel ends the process.
        3 => unsafe { core::arch::asm!("ud2", options(nomem, nostack)) },
        4 => {
            // SAFETY: as above: the address is unmapped, the load faults.
            let v = unsafe { core::ptr::read_volatile(0xdead_0000 as *const u64) };
            println!("preempt-storm: read {v:#x} from an unmapped page");
        }
        // SAFETY: as above.
        5 => unsafe { core::arch::asm!("int3", options(nomem, nostack)) },
        _ => return 10 + u32::from(role),
    }
    2 // survived a fault
}
