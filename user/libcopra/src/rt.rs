//! The runtime: the entry point and the panic handler.
//!
//! The kernel starts a process at `e_entry` with every register zero except `rsp`
//! (`USER_INITIAL_RSP`, 8 below the top of a 64 KiB stack), `rflags` (0x202) and
//! `rdi`, the number of handles EXEC_HANDLES gave it (0 after EXEC), which the entry
//! passes on to [`run_with`] ([`crate::process::initial_handles`] takes them).
//! There are no arguments, environment or auxiliary vector: the stack is empty.
//! [`declare_main!`](crate::declare_main) defines `_start`, which aligns `rsp` to 16
//! bytes, clears `rbp` (the end of frame chains) and calls a Rust function that runs
//! the program's `main() -> u32` and EXITs with its result.
//!
//! A panic prints `panicked at <file>:<line>:<column>: <message>` to handle 0 and
//! EXITs with [`PANIC_EXIT_CODE`] (0xFFFF, what upstream's `exit(!0)` leaves after the
//! kernel keeps the low 16 bits). A panic while panicking exits without printing.

#[cfg(not(test))]
use core::panic::PanicInfo;
#[cfg(not(test))]
use core::sync::atomic::{AtomicBool, Ordering};

use core::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};

use crate::process::exit;

/// The exit code of a panicking program.
pub const PANIC_EXIT_CODE: u32 = 0xFFFF;

/// Defines the program's entry point `_start` to run `main` and EXIT with its result.
///
/// `main` must be a `fn() -> u32`. Use it once, in the binary crate.
#[macro_export]
macro_rules! declare_main {
    ($main:path) => {
        ::core::arch::global_asm!(
            ".pushsection .text._start, \"ax\", @progbits",
            ".globl _start",
            ".type _start, @function",
            "_start:",
            // Entry rsp is 8 mod 16 (USER_INITIAL_RSP); the SysV ABI wants 16 at a call.
            "and rsp, -16",
            "xor ebp, ebp",
            "call {entry}",
            "ud2",
            ".size _start, . - _start",
            ".popsection",
            entry = sym __copra_entry,
        );

        extern "C" fn __copra_entry(initial_handles: u64) -> ! {
            let main: fn() -> u32 = $main;
            $crate::rt::run_with(main, initial_handles)
        }
    };
}

unsafe extern "C" {
    /// Defined by `user/link.ld`: the address the program's first segment starts at.
    static __copra_image_start: u8;
}

/// The lowest address of this program's image, as `user/link.ld` lays it out.
///
/// Programs that must keep clear of their own image (the MMAP tests) ask here instead
/// of assuming an address: the kernel accepts images anywhere in user space.
pub fn image_start() -> u64 {
    // Only the symbol's address is taken (no unsafe needed); nothing is read through it.
    (&raw const __copra_image_start) as u64
}

/// Runs `main` and EXITs with what it returns.
pub fn run(main: fn() -> u32) -> ! {
    #[cfg(not(test))]
    crate::heap::enable_thread_cache();
    exit(main())
}

/// How many handles EXEC_HANDLES gave this process (ids 1..=n), until
/// [`crate::process::initial_handles`] takes them.
pub(crate) static INITIAL_HANDLES: AtomicU64 = AtomicU64::new(0);

/// Records the count of initial handles (`rdi` at the entry point: 0 after EXEC, n
/// after EXEC_HANDLES), then runs `main`. Called by `_start`.
pub fn run_with(main: fn() -> u32, initial_handles: u64) -> ! {
    INITIAL_HANDLES.store(initial_handles, AtomicOrdering::Relaxed);
    exit(main())
}

/// Named by the cleanup paths of the precompiled `alloc` (built for unwinding). With
/// `panic = "abort"` no unwinding ever starts, so nothing reaches it; if something
/// did, the program ends as a panic does.
#[cfg(not(test))]
#[unsafe(no_mangle)]
pub extern "C" fn _Unwind_Resume() -> ! {
    exit(PANIC_EXIT_CODE)
}

#[cfg(not(test))]
#[panic_handler]
fn panic(info: &PanicInfo<'_>) -> ! {
    static PANICKING: AtomicBool = AtomicBool::new(false);
    if PANICKING.swap(true, Ordering::Relaxed) {
        exit(PANIC_EXIT_CODE);
    }
    match info.location() {
        Some(at) => crate::println!(
            "panicked at {}:{}:{}: {}",
            at.file(),
            at.line(),
            at.column(),
            info.message()
        ),
        None => crate::println!("panicked: {}", info.message()),
    }
    exit(PANIC_EXIT_CODE)
}
