//! The memory functions the compiler calls: memcpy, memmove, memset, memcmp, bcmp.
//!
//! Nothing provides them on this target without libc (`compiler_builtins` has them
//! only with its `mem` feature, which the linux-gnu sysroot is built without). The
//! copying ones are single string instructions in inline assembly, so the compiler
//! cannot turn their bodies back into calls to themselves; the comparisons are byte
//! loops, which it does not rewrite into calls (checked in the disassembly). They rely
//! on the SysV ABI's guarantee that the direction flag is clear on function entry.

use core::arch::asm;

/// Copies `n` bytes; the ranges must not overlap.
///
/// # Safety
/// The C contract: `src` readable and `dest` writable for `n` bytes.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; DF is clear.
    unsafe {
        asm!(
            "rep movsb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            inout("rsi") src => _,
            options(nostack, preserves_flags),
        );
    }
    dest
}

/// Copies `n` bytes; the ranges may overlap.
///
/// # Safety
/// As for [`memcpy`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    if (dest as usize).wrapping_sub(src as usize) >= n {
        // dest is below src, or the ranges do not overlap: a forward copy is right.
        // SAFETY: as above.
        return unsafe { memcpy(dest, src, n) };
    }
    // dest overlaps the tail of src: copy backwards, then restore DF.
    // SAFETY: the caller's contract; n > 0 here, so the last bytes are in range.
    unsafe {
        asm!(
            "std",
            "rep movsb",
            "cld",
            inout("rcx") n => _,
            inout("rdi") dest.add(n - 1) => _,
            inout("rsi") src.add(n - 1) => _,
            options(nostack),
        );
    }
    dest
}

/// Sets `n` bytes to `c as u8`.
///
/// # Safety
/// `dest` writable for `n` bytes.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    // SAFETY: the caller's contract; DF is clear.
    unsafe {
        asm!(
            "rep stosb",
            inout("rcx") n => _,
            inout("rdi") dest => _,
            in("al") c as u8,
            options(nostack, preserves_flags),
        );
    }
    dest
}

/// Compares `n` bytes: <0, 0 or >0 as the first differing byte of `a` is below, equal
/// to or above that of `b`.
///
/// # Safety
/// Both readable for `n` bytes.
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    let mut i = 0;
    while i < n {
        // SAFETY: i < n.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
    0
}

/// Whether `n` bytes are equal (0) or not (non-zero).
///
/// # Safety
/// As for [`memcmp`].
#[cfg_attr(not(test), unsafe(no_mangle))]
pub unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: forwarded.
    unsafe { memcmp(a, b, n) }
}
