//! unmap-reach: MUNMAP's range faults at once on every vCPU. A reader thread reads one
//! page of an anonymous mapping in a loop without syscalls (on two vCPUs it runs on
//! the other one, whose TLB and KVM's shadow tables hold the page). Once it has shown
//! that it runs, the main thread unmaps the page: the reader's next read must fault,
//! which ends the process killed by #PF at that page. Should the reader still be
//! reading two seconds after the MUNMAP, it prints a FAIL line and exits 1.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU64, Ordering};

use libcopra::abi::{MapFlag, PAGE_SIZE};
use libcopra::memory::{mmap_anonymous, munmap};
use libcopra::sysinfo;
use libcopra::wait::Instant;
use libcopra::{declare_main, println, thread};

declare_main!(main);

static PAGE: AtomicU64 = AtomicU64::new(0);
static READS: AtomicU64 = AtomicU64::new(0);

fn reader(_: u64) -> u32 {
    let page = PAGE.load(Ordering::Relaxed) as *const u64;
    loop {
        // SAFETY: the page is mapped until the main thread unmaps it; a read after that
        // faults, which is the point.
        let _ = unsafe { page.read_volatile() };
        READS.fetch_add(1, Ordering::Relaxed);
    }
}

fn main() -> u32 {
    // SAFETY: a fresh anonymous mapping nothing else refers to.
    let Ok(page) = (unsafe { mmap_anonymous(0, PAGE_SIZE, MapFlag::READ | MapFlag::WRITE) })
    else {
        println!("FAIL unmap-reach: MMAP");
        return 1;
    };
    // SAFETY: the page was just mapped writable.
    unsafe { (page as *mut u64).write_volatile(1) };
    PAGE.store(page, Ordering::Relaxed);
    let Ok(_reader) = thread::spawn(reader, 0) else {
        println!("FAIL unmap-reach: THREAD_CREATE");
        return 1;
    };
    while READS.load(Ordering::Relaxed) < 1_000_000 {
        let _ = sysinfo::capabilities(0); // on one vCPU the reader runs when this is preempted
    }
    println!("unmap-reach: the reader reads {page:#x}; unmapping it");
    // SAFETY: only the reader uses the page, and its fault there is the test.
    if unsafe { munmap(page, PAGE_SIZE) }.is_err() {
        println!("FAIL unmap-reach: MUNMAP");
        return 1;
    }
    let start = Instant::now();
    while Instant::now().since(start) < 2_000_000_000 {
        let _ = sysinfo::capabilities(0);
    }
    println!("FAIL unmap-reach: the reader still reads the unmapped page");
    1
}
