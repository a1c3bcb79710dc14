//! conformance-child: the conformance suite's helper process.
//!
//! EXEC passes no arguments, so the suite writes what this process is to do into
//! `/tmp/conf/child.action` (resolved against the child's own root) before each EXEC
//! and reads the outcome from WAIT. One action per file:
//!
//! | action | does | a correct kernel gives the parent |
//! |---|---|---|
//! | `exit <n>` | EXIT(n), `n` decimal or `0x` hex | `(n & 0xFFFF) << 16` |
//! | `first-handle` | OPENs the action file | exit 0 if it got handle 1 (0 is the log) |
//! | `close-log` | WRITE on handle 0, CLOSE 0, WRITE again, OPEN | exit 0 if the write worked, the close too, the second write was ENOTFOUND and the OPEN reused id 0; else the failing step (1-4) |
//! | `touch-wild` | loads from the unmapped `0xdead0000` | killed by #PF |
//! | `touch-after-munmap` | maps a page, MUNMAPs it, loads from it | killed by #PF (exit 2: the MMAP or MUNMAP failed) |
//! | `touch-after-mresize` | maps two pages, MRESIZEs to one, loads from the second | killed by #PF (exit 2 as above) |
//! | `store-read-only` | maps a page READ only, stores to it | killed by #PF (exit 2 as above) |
//! | `fixed-over-image` | MMAP FIXED over its own first page (`rt::image_start()`) | exit 0 if EEXIST, 1 if it was mapped, 2 on another error |
//! | `hint-over-image` | MMAP with its own first page as the hint (no FIXED) | exit 0 if placed elsewhere at or above `MMAP_BASE`, 1 otherwise |
//!
//! A missing or unknown action exits with 0xEE; reaching the end of a faulting action
//! (the kernel let it live) exits with 3.

#![no_std]
#![no_main]

use libcopra::abi::{Errno, MMAP_BASE, PAGE_SIZE, Sys};
use libcopra::declare_main;
use libcopra::error::check;
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::memory::{self, MapFlag};
use libcopra::process::exit;
use libcopra::rt::image_start;
use libcopra::syscall::{syscall1, syscall3};

declare_main!(main);

const ACTION: &str = "/tmp/conf/child.action";
const NO_ACTION: u32 = 0xEE;
const SURVIVED: u32 = 3;
const SETUP_FAILED: u32 = 2;

fn main() -> u32 {
    let mut buf = [0u8; 64];
    let Ok(file) = fs::open(ACTION, FileMode::READ, FileFlag::EMPTY) else {
        return NO_ACTION;
    };
    let len = fs::read(&file, &mut buf).unwrap_or(0);
    drop(file);
    let action = buf[..len].trim_ascii();
    if let Some(code) = action.strip_prefix(b"exit ") {
        exit(parse(code).unwrap_or(NO_ACTION));
    }
    match action {
        b"first-handle" => first_handle(),
        b"close-log" => close_log(),
        b"touch-wild" => {
            // SAFETY: none; the load is meant to fault.
            unsafe { load(0xdead_0000) };
            SURVIVED
        }
        b"touch-after-munmap" => touch_after_munmap(),
        b"touch-after-mresize" => touch_after_mresize(),
        b"store-read-only" => store_read_only(),
        b"fixed-over-image" => fixed_over_image(),
        b"hint-over-image" => hint_over_image(),
        _ => NO_ACTION,
    }
}

fn parse(text: &[u8]) -> Option<u32> {
    let (digits, radix) = match text.strip_prefix(b"0x") {
        Some(hex) => (hex, 16),
        None => (text, 10),
    };
    u32::from_str_radix(core::str::from_utf8(digits).ok()?, radix).ok()
}

fn first_handle() -> u32 {
    match fs::open(ACTION, FileMode::READ, FileFlag::EMPTY) {
        Ok(file) if file.raw() == 1 => 0,
        _ => 1,
    }
}

fn close_log() -> u32 {
    let line = b"closing handle 0\n";
    // SAFETY: `line` is ours and readable.
    let wrote = unsafe {
        syscall3(
            Sys::WRITE as u64,
            0,
            line.as_ptr() as u64,
            line.len() as u64,
        )
    };
    if wrote != line.len() as u64 {
        return 1;
    }
    // SAFETY: CLOSE reads no memory.
    if unsafe { syscall1(Sys::CLOSE as u64, 0) } != 0 {
        return 2;
    }
    // SAFETY: as above.
    let again = unsafe {
        syscall3(
            Sys::WRITE as u64,
            0,
            line.as_ptr() as u64,
            line.len() as u64,
        )
    };
    if again != Errno::ENOTFOUND.raw() as u64 {
        return 3;
    }
    match fs::open(ACTION, FileMode::READ, FileFlag::EMPTY) {
        Ok(file) if file.raw() == 0 => 0,
        _ => 4,
    }
}

fn touch_after_munmap() -> u32 {
    // SAFETY: a fresh mapping that nothing else refers to.
    let Ok(addr) =
        (unsafe { memory::mmap_anonymous(0, PAGE_SIZE, MapFlag::READ | MapFlag::WRITE) })
    else {
        return SETUP_FAILED;
    };
    // SAFETY: the kernel just mapped the page writable.
    unsafe { (addr as *mut u8).write_volatile(1) };
    // SAFETY: nothing refers to the page after this; the load below is meant to fault.
    if unsafe { memory::munmap(addr, PAGE_SIZE) }.is_err() {
        return SETUP_FAILED;
    }
    // SAFETY: as above.
    unsafe { load(addr) };
    SURVIVED
}

fn touch_after_mresize() -> u32 {
    let flags = MapFlag::READ | MapFlag::WRITE;
    // SAFETY: a fresh mapping that nothing else refers to.
    let Ok(addr) = (unsafe { memory::mmap_anonymous(0, 2 * PAGE_SIZE, flags) }) else {
        return SETUP_FAILED;
    };
    // SAFETY: nothing refers to the second page; the load below is meant to fault.
    if unsafe { memory::mresize(addr, PAGE_SIZE) }.is_err() {
        return SETUP_FAILED;
    }
    // SAFETY: as above.
    unsafe { load(addr + PAGE_SIZE) };
    SURVIVED
}

fn store_read_only() -> u32 {
    // SAFETY: a fresh mapping that nothing else refers to.
    let Ok(addr) = (unsafe { memory::mmap_anonymous(0, PAGE_SIZE, MapFlag::READ) }) else {
        return SETUP_FAILED;
    };
    // SAFETY: none; the store is meant to fault.
    unsafe { (addr as *mut u8).write_volatile(1) };
    SURVIVED
}

fn fixed_over_image() -> u32 {
    let flags = MapFlag::READ | MapFlag::ANONYMOUS | MapFlag::FIXED;
    // SAFETY: a correct kernel refuses; a wrong one replaces our text and we die.
    let rax = unsafe {
        libcopra::syscall::syscall5(
            Sys::MMAP as u64,
            u64::from(u32::MAX),
            image_start(),
            0,
            PAGE_SIZE,
            flags.bits(),
        )
    };
    match check(rax) {
        Err(e) if e.is(Errno::EEXIST) => 0,
        Ok(_) => 1,
        Err(_) => 2,
    }
}

fn hint_over_image() -> u32 {
    // SAFETY: without FIXED the hint must not replace anything.
    let image = image_start();
    match unsafe { memory::mmap_anonymous(image, PAGE_SIZE, MapFlag::READ) } {
        Ok(addr) if addr != image && addr >= MMAP_BASE => 0,
        _ => 1,
    }
}

/// A volatile load from `addr`.
///
/// # Safety
/// Faults unless `addr` is mapped; the callers want exactly that.
unsafe fn load(addr: u64) -> u8 {
    // SAFETY: forwarded.
    unsafe { (addr as *const u8).read_volatile() }
}
