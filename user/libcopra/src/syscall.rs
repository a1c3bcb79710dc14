//! Raw syscalls: the register convention and the two entry paths.
//!
//! The convention is upstream COCONUT-SVSM's: the number in `rax`
//! (`(class << 32) | index`), arguments in `rdi`, `rsi`, `r8`, `r9`, `r10` (not
//! `rdx`), the result in `rax`. The kernel writes only `rax`; `rcx` and `r11` are
//! declared clobbered anyway so a later SYSCALL/SYSRET entry would not break callers.
//! No entry touches the user stack.
//!
//! Two entries reach the same dispatcher with the same registers
//! ([`Entry`]):
//!
//! - [`Entry::DOORBELL`]: `out DOORBELL_PORT, al`. The TSS I/O bitmap allows user
//!   mode this one port; the write leaves the VM and the kernel reads all registers.
//!   copra's fast path and the default.
//! - [`Entry::INT80`]: `int 0x80` (`CD 80`), upstream's entry, taken through the IDT
//!   gate or, where KVM delivers it as #UD, recognised by the kernel's #UD handler.
//!
//! `syscallN_doorbell` use the doorbell, `syscallN_int80` use `int 0x80`,
//! `syscallN_via` take the entry as an argument, and `syscallN` use the build's
//! [`DEFAULT_ENTRY`]. The typed wrappers elsewhere in the library use the process-wide
//! entry set by [`set_entry`] ([`DEFAULT_ENTRY`] unless changed), so a test can run the
//! same code over both paths.
//!
//! [`DEFAULT_ENTRY`] is the doorbell, or `int 0x80` when libcopra is built with the
//! cargo feature `int80-entry`: a program that then uses only `syscallN` and the typed
//! wrappers never touches the doorbell port, so its image also runs on upstream
//! COCONUT-SVSM, whose only entry is `int 0x80` (any port access there is a #GP).
//! `scripts/build-user-images --entry int80` builds every program that way.
//!
//! All of these are `unsafe`: a syscall may read or write memory through its
//! arguments, or end the process.

use core::arch::asm;
use core::sync::atomic::{AtomicU8, Ordering};

use crate::abi::DOORBELL_PORT;
pub use crate::abi::Entry;

/// The entry of `syscallN` and, until [`set_entry`], of the typed wrappers: `int 0x80`
/// with the cargo feature `int80-entry`, else the doorbell.
#[cfg(feature = "int80-entry")]
pub const DEFAULT_ENTRY: Entry = Entry::INT80;
/// The entry of `syscallN` and, until [`set_entry`], of the typed wrappers: `int 0x80`
/// with the cargo feature `int80-entry`, else the doorbell.
#[cfg(not(feature = "int80-entry"))]
pub const DEFAULT_ENTRY: Entry = Entry::DOORBELL;

static ENTRY: AtomicU8 = AtomicU8::new(DEFAULT_ENTRY as u8);

/// Selects the entry the typed wrappers use from now on, in the whole process.
pub fn set_entry(entry: Entry) {
    ENTRY.store(entry as u8, Ordering::Relaxed);
}

/// The entry the typed wrappers use.
#[inline]
pub fn entry() -> Entry {
    if ENTRY.load(Ordering::Relaxed) == Entry::INT80 as u8 {
        Entry::INT80
    } else {
        Entry::DOORBELL
    }
}

macro_rules! syscalls {
    ($($arity:literal: $default:ident, $doorbell:ident, $int80:ident, $via:ident ($($arg:ident in $reg:tt),*);)*) => {$(
        #[doc = concat!("Syscall `nr` with ", $arity, " argument(s) through the doorbell (`out 0xE0, al`).")]
        ///
        /// # Safety
        /// The kernel may read or write memory named by the arguments, or end the process.
        #[inline(always)]
        pub unsafe fn $doorbell(nr: u64 $(, $arg: u64)*) -> u64 {
            let rax: u64;
            // SAFETY: the caller vouches for the arguments; the kernel preserves every
            // register but rax and does not use the user stack.
            unsafe {
                asm!(
                    "out {port}, al",
                    port = const DOORBELL_PORT,
                    inlateout("rax") nr => rax,
                    $(in($reg) $arg,)*
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack),
                );
            }
            rax
        }

        #[doc = concat!("Syscall `nr` with ", $arity, " argument(s) through `int 0x80`.")]
        ///
        /// # Safety
        /// As for the doorbell variant.
        #[inline(always)]
        pub unsafe fn $int80(nr: u64 $(, $arg: u64)*) -> u64 {
            let rax: u64;
            // SAFETY: as above; the interrupt frame goes on the kernel stack.
            unsafe {
                asm!(
                    "int 0x80",
                    inlateout("rax") nr => rax,
                    $(in($reg) $arg,)*
                    lateout("rcx") _,
                    lateout("r11") _,
                    options(nostack),
                );
            }
            rax
        }

        #[doc = concat!("Syscall `nr` with ", $arity, " argument(s) through [`DEFAULT_ENTRY`].")]
        ///
        /// # Safety
        /// As for the doorbell variant.
        #[inline(always)]
        pub unsafe fn $default(nr: u64 $(, $arg: u64)*) -> u64 {
            // SAFETY: forwarded from the caller.
            unsafe {
                #[cfg(feature = "int80-entry")]
                let rax = $int80(nr $(, $arg)*);
                #[cfg(not(feature = "int80-entry"))]
                let rax = $doorbell(nr $(, $arg)*);
                rax
            }
        }

        #[doc = concat!("Syscall `nr` with ", $arity, " argument(s) through `entry`.")]
        ///
        /// # Safety
        /// As for the doorbell variant.
        #[inline(always)]
        pub unsafe fn $via(entry: Entry, nr: u64 $(, $arg: u64)*) -> u64 {
            // SAFETY: forwarded from the caller.
            unsafe {
                match entry {
                    Entry::DOORBELL => $doorbell(nr $(, $arg)*),
                    Entry::INT80 => $int80(nr $(, $arg)*),
                }
            }
        }
    )*};
}

syscalls! {
    "no": syscall0, syscall0_doorbell, syscall0_int80, syscall0_via();
    "1": syscall1, syscall1_doorbell, syscall1_int80, syscall1_via(a0 in "rdi");
    "2": syscall2, syscall2_doorbell, syscall2_int80, syscall2_via(a0 in "rdi", a1 in "rsi");
    "3": syscall3, syscall3_doorbell, syscall3_int80, syscall3_via(
        a0 in "rdi", a1 in "rsi", a2 in "r8"
    );
    "4": syscall4, syscall4_doorbell, syscall4_int80, syscall4_via(
        a0 in "rdi", a1 in "rsi", a2 in "r8", a3 in "r9"
    );
    "5": syscall5, syscall5_doorbell, syscall5_int80, syscall5_via(
        a0 in "rdi", a1 in "rsi", a2 in "r8", a3 in "r9", a4 in "r10"
    );
}

/// The typed wrappers' path: a syscall through the process-wide entry, decoded.
macro_rules! call {
    ($nr:expr $(, $arg:expr)* $(,)?) => {
        $crate::syscall::call!(@arity $nr; $($arg),*)
    };
    (@arity $nr:expr; ) => {
        $crate::error::check(unsafe { $crate::syscall::syscall0_via($crate::syscall::entry(), $nr as u64) })
    };
    (@arity $nr:expr; $a0:expr) => {
        $crate::error::check(unsafe {
            $crate::syscall::syscall1_via($crate::syscall::entry(), $nr as u64, $a0 as u64)
        })
    };
    (@arity $nr:expr; $a0:expr, $a1:expr) => {
        $crate::error::check(unsafe {
            $crate::syscall::syscall2_via($crate::syscall::entry(), $nr as u64, $a0 as u64, $a1 as u64)
        })
    };
    (@arity $nr:expr; $a0:expr, $a1:expr, $a2:expr) => {
        $crate::error::check(unsafe {
            $crate::syscall::syscall3_via(
                $crate::syscall::entry(), $nr as u64, $a0 as u64, $a1 as u64, $a2 as u64,
            )
        })
    };
    (@arity $nr:expr; $a0:expr, $a1:expr, $a2:expr, $a3:expr) => {
        $crate::error::check(unsafe {
            $crate::syscall::syscall4_via(
                $crate::syscall::entry(), $nr as u64, $a0 as u64, $a1 as u64, $a2 as u64, $a3 as u64,
            )
        })
    };
    (@arity $nr:expr; $a0:expr, $a1:expr, $a2:expr, $a3:expr, $a4:expr) => {
        $crate::error::check(unsafe {
            $crate::syscall::syscall5_via(
                $crate::syscall::entry(), $nr as u64, $a0 as u64, $a1 as u64, $a2 as u64, $a3 as u64,
                $a4 as u64,
            )
        })
    };
}
pub(crate) use call;
