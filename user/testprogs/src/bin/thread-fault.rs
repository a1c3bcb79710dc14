//! thread-fault: a CPU exception in one thread ends the whole process while its other
//! threads run: one spins at CPL3 without syscalls, one loops in syscalls, one sleeps
//! in FUTEX_WAIT. Once the first two have shown they run, the main thread executes
//! `ud2`: the kernel must stop every thread, on whatever vCPU, and end the process
//! killed by #UD; nothing of it may be left.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libcopra::sync::futex_wait;
use libcopra::sysinfo;
use libcopra::{declare_main, println, thread};

declare_main!(main);

static SPINS: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
static NEVER: AtomicU32 = AtomicU32::new(0);

fn spinner(_: u64) -> u32 {
    loop {
        SPINS.fetch_add(1, Ordering::Relaxed);
    }
}

fn caller(_: u64) -> u32 {
    loop {
        let _ = sysinfo::capabilities(0);
        CALLS.fetch_add(1, Ordering::Relaxed);
    }
}

fn sleeper(_: u64) -> u32 {
    loop {
        let _ = futex_wait(&NEVER, 0, None);
    }
}

fn main() -> u32 {
    let mut threads = [None, None, None];
    for (slot, f) in threads.iter_mut().zip([spinner as fn(u64) -> u32, caller, sleeper]) {
        match thread::spawn(f, 0) {
            Ok(h) => *slot = Some(h),
            Err(e) => {
                println!("FAIL thread-fault: THREAD_CREATE: {e}");
                return 1;
            }
        }
    }
    while SPINS.load(Ordering::Relaxed) < 1_000_000 || CALLS.load(Ordering::Relaxed) < 100 {
        let _ = sysinfo::capabilities(0); // let the others have the CPU on a single vCPU
    }
    println!("thread-fault: the others run; faulting now");
    // SAFETY: ud2 raises #UD: that is the test.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}
