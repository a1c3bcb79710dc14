//! priv-probe: one child per instruction that user code might use to learn about or
//! reach around the kernel; the parent reports how each child ended.
//!
//! As init (no `/role` in its root) it is the parent: for instruction `i` it EXECs
//! itself with role `i` and root `/probe/<i>` (see `roles.rs`), one child at a time,
//! and prints `probe <name>: <status>` for each. A child executes its instruction; if it survives it exits with [`SURVIVED`] or, for VMCALL and VMMCALL,
//! with [`VMCALL_EPERM`] when rax came back as -1 (KVM's answer to a hypercall from
//! CPL3; the host vendor's instruction is the hypercall, the other one is foreign).
//!
//! | i | instruction | copra on a host with UMIP (docs/abi.md) |
//! |---|---|---|
//! | 0 | `sgdt [rsp-16]` | killed by #GP |
//! | 1 | `sidt [rsp-16]` | killed by #GP |
//! | 2 | `sldt eax` | killed by #GP |
//! | 3 | `str eax` | killed by #GP |
//! | 4 | `smsw eax` | killed by #GP |
//! | 5 | `syscall` | killed by #UD |
//! | 6 | `vmmcall` | killed by #UD on an Intel host; rax = -1, exit [`VMCALL_EPERM`] on AMD |
//! | 7 | `vmcall` | rax = -1, exit [`VMCALL_EPERM`] on an Intel host; killed by #UD on AMD |
//! | 8 | `sysenter` | killed by #UD or #GP |
//!
//! The parent exits 0 once every child has been waited for (1 if an EXEC or WAIT
//! failed); judging the statuses is the test's job.

#![no_std]
#![no_main]

use libcopra::fs;
use libcopra::process::wait;
use libcopra::{declare_main, println};

declare_main!(main);

#[path = "../roles.rs"]
mod roles;

const NAMES: [&str; 9] = [
    "sgdt", "sidt", "sldt", "str", "smsw", "syscall", "vmmcall", "vmcall", "sysenter",
];
const SURVIVED: u32 = 3;
const VMCALL_EPERM: u32 = 0x40;
const SELF: &str = "/bin/priv-probe";

fn main() -> u32 {
    match roles::own_role() {
        None => parent(),
        Some(Ok(which)) => child(which),
        Some(Err(())) => 0xEE,
    }
}

fn parent() -> u32 {
    if fs::mkdir("/probe").is_err() {
        println!("priv-probe: cannot make /probe");
        return 1;
    }
    for (i, name) in NAMES.iter().enumerate() {
        let Some(task) = roles::spawn_role(SELF, "/probe", i as u8) else {
            return 1;
        };
        match wait(task) {
            Ok(status) => println!("probe {name}: {status:?}"),
            Err(e) => {
                println!("probe {name}: WAIT failed: {e:?}");
                return 1;
            }
        }
    }
    0
}

fn child(which: u8) -> u32 {
    // SAFETY (every arm): each instruction either faults, and the kernel ends this
    // process, or writes only the registers declared and the 16 bytes below the
    // stack pointer that nothing else uses.
    unsafe {
        match which {
            0 => core::arch::asm!("sgdt [rsp - 16]", options(nostack)),
            1 => core::arch::asm!("sidt [rsp - 16]", options(nostack)),
            2 => core::arch::asm!("sldt eax", out("eax") _, options(nomem, nostack)),
            3 => core::arch::asm!("str eax", out("eax") _, options(nomem, nostack)),
            4 => core::arch::asm!("smsw eax", out("eax") _, options(nomem, nostack)),
            5 => core::arch::asm!("syscall", out("rcx") _, out("r11") _, options(nostack)),
            6 | 7 => {
                let rax: u64;
                if which == 6 {
                    core::arch::asm!("vmmcall", inout("rax") 0u64 => rax, options(nostack));
                } else {
                    core::arch::asm!("vmcall", inout("rax") 0u64 => rax, options(nostack));
                }
                if rax == u64::MAX {
                    return VMCALL_EPERM;
                }
            }
            8 => core::arch::asm!("sysenter", options(nostack)),
            _ => return 0xEE,
        }
    }
    SURVIVED
}
