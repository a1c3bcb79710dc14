//! Shared by `xstate` and `xstate-child`: the XSAVE-managed register classes this CPU
//! has, a pattern per process and iteration, and inline assembly that writes and reads
//! each class without disturbing what compiled code uses.
//!
//! Classes (SDM Vol. 1 13.1), each only where CPUID and XGETBV say it is usable:
//!
//! | class | registers | checked bits |
//! |---|---|---|
//! | `CONTROL` | MXCSR, x87 FCW | all |
//! | `AVX` | ymm0-15 | 128-255 (the upper halves) |
//! | `OPMASK` | k0-k7 | 0-63 with AVX512BW, else 0-15 |
//! | `ZMM_HI256` | zmm0-15 | 256-511 |
//! | `HI16_ZMM` | zmm16-31 | 0-511 |
//!
//! The programs are built without AVX, so compiled code uses only legacy SSE on
//! xmm0-15, which leaves bits 128 and up alone, and never touches k0-k7 or zmm16-31:
//! a value written here stays until the kernel (or a bug in it) changes it. The
//! functions with a `target_feature` hold nothing but assembly, so the compiler has no
//! vector code of its own to put there (no `vzeroupper` either).

// Each of the two programs uses its own part of this module.
#![allow(dead_code)]

use core::arch::asm;
use core::arch::x86_64::__cpuid_count;

/// A class of state, numbered as the child reports it in its exit code.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Class {
    Control = 0,
    Avx = 1,
    Opmask = 2,
    ZmmHi256 = 3,
    Hi16Zmm = 4,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::Control,
        Class::Avx,
        Class::Opmask,
        Class::ZmmHi256,
        Class::Hi16Zmm,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Class::Control => "MXCSR and x87 FCW",
            Class::Avx => "AVX: ymm0-15 upper halves",
            Class::Opmask => "AVX-512 opmask k0-k7",
            Class::ZmmHi256 => "AVX-512 zmm0-15 bits 256-511",
            Class::Hi16Zmm => "AVX-512 zmm16-31",
        }
    }

    pub const fn from_index(index: u32) -> Option<Class> {
        match index {
            0 => Some(Class::Control),
            1 => Some(Class::Avx),
            2 => Some(Class::Opmask),
            3 => Some(Class::ZmmHi256),
            4 => Some(Class::Hi16Zmm),
            _ => None,
        }
    }
}

/// What CPUID and XCR0 say may be used (SDM Vol. 1 13.2 and 15.2, the recipes
/// for detecting AVX and AVX-512 support).
#[derive(Clone, Copy)]
pub struct Features {
    pub avx: bool,
    pub avx512: bool,
    /// AVX512BW: the opmask registers are 64 bits wide (else 16).
    pub avx512bw: bool,
    pub xcr0: u64,
}

const XCR0_AVX: u64 = 0b110; // SSE and AVX state
const XCR0_AVX512: u64 = 0b1110_0110; // and opmask, ZMM_Hi256, Hi16_ZMM

impl Features {
    pub fn detect() -> Features {
        let leaf1 = __cpuid_count(1, 0);
        let osxsave = leaf1.ecx & (1 << 27) != 0;
        let avx_cpu = leaf1.ecx & (1 << 28) != 0;
        // XGETBV is #UD unless the OS has set CR4.OSXSAVE, which OSXSAVE reports.
        let xcr0 = if osxsave { xgetbv0() } else { 0 };
        // Leaf 7 exists where AVX-512 does; elsewhere it reads zeros or the highest
        // basic leaf, and the AVX and XCR0 conditions below decide anyway.
        let leaf7 = __cpuid_count(7, 0);
        let avx = avx_cpu && xcr0 & XCR0_AVX == XCR0_AVX;
        let avx512 = avx && leaf7.ebx & (1 << 16) != 0 && xcr0 & XCR0_AVX512 == XCR0_AVX512;
        Features {
            avx,
            avx512,
            avx512bw: avx512 && leaf7.ebx & (1 << 30) != 0,
            xcr0,
        }
    }

    pub fn has(self, class: Class) -> bool {
        match class {
            Class::Control => true,
            Class::Avx => self.avx,
            Class::Opmask | Class::ZmmHi256 | Class::Hi16Zmm => self.avx512,
        }
    }
}

fn xgetbv0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: only called when CPUID.1:ECX.OSXSAVE is set, so XGETBV is enabled.
    unsafe {
        asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi,
             options(nomem, nostack, preserves_flags));
    }
    u64::from(hi) << 32 | u64::from(lo)
}

/// The contents of every class, laid out as the instructions read and write them.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C, align(64))]
pub struct State {
    pub hi16_zmm: [[u64; 8]; 16],
    pub zmm_hi256: [[u64; 4]; 16],
    pub ymm_hi: [[u64; 2]; 16],
    pub k: [u64; 8],
    pub mxcsr: u32,
    pub fcw: u16,
}

/// MXCSR and FCW after reset / FNINIT: what a new process must start with.
pub const MXCSR_INITIAL: u32 = 0x1F80;
pub const FCW_INITIAL: u16 = 0x037F;

impl State {
    pub const fn initial() -> State {
        State {
            hi16_zmm: [[0; 8]; 16],
            zmm_hi256: [[0; 4]; 16],
            ymm_hi: [[0; 2]; 16],
            k: [0; 8],
            mxcsr: MXCSR_INITIAL,
            fcw: FCW_INITIAL,
        }
    }

    /// The pattern of process `seed` at iteration `iter`: no lane is zero and every
    /// lane names its process, iteration, class, register and lane, so a value seen in
    /// the wrong place says where it came from. MXCSR and FCW keep every exception
    /// masked; `seed` picks a rounding mode.
    pub fn pattern(seed: u8, iter: u32, f: Features) -> State {
        let lane = |class: u64, reg: usize, lane: usize| {
            1 << 63
                | u64::from(seed) << 48
                | u64::from(iter & 0xFF_FFFF) << 24
                | class << 16
                | (reg as u64) << 8
                | lane as u64
        };
        let mut s = State::initial();
        for r in 0..16 {
            for (l, v) in s.hi16_zmm[r].iter_mut().enumerate() {
                *v = lane(4, r + 16, l);
            }
            for (l, v) in s.zmm_hi256[r].iter_mut().enumerate() {
                *v = lane(3, r, l + 4);
            }
            for (l, v) in s.ymm_hi[r].iter_mut().enumerate() {
                *v = lane(1, r, l + 2);
            }
        }
        for (r, v) in s.k.iter_mut().enumerate() {
            *v = if f.avx512bw {
                lane(2, r, 0)
            } else {
                // 16 bits: the top bit set, then the seed and the iteration and register.
                0x8000 | u64::from(seed & 0x7F) << 8 | (u64::from(iter) * 8 + r as u64) & 0xFF
            };
        }
        s.mxcsr = MXCSR_INITIAL | (u32::from(seed) & 3) << 13;
        s.fcw = FCW_INITIAL | (u16::from(seed) & 3) << 10;
        s
    }

    /// The classes, among those `f` has, in which `self` and `other` differ.
    pub fn differences(&self, other: &State, f: Features) -> impl Iterator<Item = Class> {
        let (a, b) = (*self, *other);
        Class::ALL.into_iter().filter(move |&c| {
            f.has(c)
                && match c {
                    Class::Control => a.mxcsr != b.mxcsr || a.fcw != b.fcw,
                    Class::Avx => a.ymm_hi != b.ymm_hi,
                    Class::Opmask => a.k != b.k,
                    Class::ZmmHi256 => a.zmm_hi256 != b.zmm_hi256,
                    Class::Hi16Zmm => a.hi16_zmm != b.hi16_zmm,
                }
        })
    }

    /// The first class in which `self` and `other` differ, among those `f` has.
    pub fn first_difference(&self, other: &State, f: Features) -> Option<Class> {
        self.differences(other, f).next()
    }
}

/// Loads every class `f` has from `s`.
#[inline(never)]
pub fn write(s: &State, f: Features) {
    // SAFETY: the feature checks match each function's target features; each reads
    // only from `s`.
    unsafe {
        write_control(s);
        if f.avx {
            // AVX first: a VEX.256 write clears bits 256-511, which ZMM_HI256 then sets.
            write_ymm_hi(s);
        }
        if f.avx512 {
            write_zmm(s);
            if f.avx512bw {
                write_k64(s);
            } else {
                write_k16(s);
            }
        }
    }
}

/// Stores every class `f` has into `s`; the others keep their values in `s`.
#[inline(never)]
pub fn read(s: &mut State, f: Features) {
    // SAFETY: as for `write`; each function writes only into `s`.
    unsafe {
        read_control(s);
        if f.avx {
            read_ymm_hi(s);
        }
        if f.avx512 {
            read_zmm(s);
            if f.avx512bw {
                read_k64(s);
            } else {
                read_k16(s);
            }
        }
    }
}

unsafe fn write_control(s: &State) {
    // SAFETY: the caller's; both loads read inside `s`.
    unsafe {
        asm!("ldmxcsr [{m}]", "fldcw [{c}]",
             m = in(reg) &raw const s.mxcsr, c = in(reg) &raw const s.fcw,
             options(readonly, nostack, preserves_flags));
    }
}

unsafe fn read_control(s: &mut State) {
    // SAFETY: the caller's; both stores write inside `s`.
    unsafe {
        asm!("stmxcsr [{m}]", "fnstcw [{c}]",
             m = in(reg) &raw mut s.mxcsr, c = in(reg) &raw mut s.fcw,
             options(nostack, preserves_flags));
    }
}

/// `$op!(n, n + 16)` for n = 0..16.
macro_rules! sixteen {
    ($op:ident) => {
        $op!(0, 16); $op!(1, 17); $op!(2, 18); $op!(3, 19);
        $op!(4, 20); $op!(5, 21); $op!(6, 22); $op!(7, 23);
        $op!(8, 24); $op!(9, 25); $op!(10, 26); $op!(11, 27);
        $op!(12, 28); $op!(13, 29); $op!(14, 30); $op!(15, 31);
    };
}

#[target_feature(enable = "avx")]
unsafe fn write_ymm_hi(s: &State) {
    macro_rules! one {
        ($n:literal, $_m:literal) => {
            // SAFETY: reads `s.ymm_hi[$n]`; keeps bits 0-127 of ymm$n.
            unsafe {
                asm!(concat!("vinsertf128 ymm", $n, ", ymm", $n, ", xmmword ptr [{p}], 1"),
                     p = in(reg) &raw const s.ymm_hi[$n], options(readonly, nostack, preserves_flags));
            }
        };
    }
    sixteen!(one);
}

#[target_feature(enable = "avx")]
unsafe fn read_ymm_hi(s: &mut State) {
    macro_rules! one {
        ($n:literal, $_m:literal) => {
            // SAFETY: writes `s.ymm_hi[$n]`; no register changes.
            unsafe {
                asm!(concat!("vextractf128 xmmword ptr [{p}], ymm", $n, ", 1"),
                     p = in(reg) &raw mut s.ymm_hi[$n], options(nostack, preserves_flags));
            }
        };
    }
    sixteen!(one);
}

#[target_feature(enable = "avx512f")]
unsafe fn write_zmm(s: &State) {
    macro_rules! one {
        ($n:literal, $m:literal) => {
            // SAFETY: reads `s.zmm_hi256[$n]` and `s.hi16_zmm[$n]`; keeps bits 0-255 of
            // zmm$n; zmm$m is unused by compiled code.
            unsafe {
                asm!(concat!("vinserti64x4 zmm", $n, ", zmm", $n, ", ymmword ptr [{hi}], 1"),
                     concat!("vmovdqu64 zmm", $m, ", zmmword ptr [{full}]"),
                     hi = in(reg) &raw const s.zmm_hi256[$n], full = in(reg) &raw const s.hi16_zmm[$n],
                     options(readonly, nostack, preserves_flags));
            }
        };
    }
    sixteen!(one);
}

#[target_feature(enable = "avx512f")]
unsafe fn read_zmm(s: &mut State) {
    macro_rules! one {
        ($n:literal, $m:literal) => {
            // SAFETY: writes `s.zmm_hi256[$n]` and `s.hi16_zmm[$n]`.
            unsafe {
                asm!(concat!("vextracti64x4 ymmword ptr [{hi}], zmm", $n, ", 1"),
                     concat!("vmovdqu64 zmmword ptr [{full}], zmm", $m),
                     hi = in(reg) &raw mut s.zmm_hi256[$n], full = in(reg) &raw mut s.hi16_zmm[$n],
                     options(nostack, preserves_flags));
            }
        };
    }
    sixteen!(one);
}

#[target_feature(enable = "avx512bw")]
unsafe fn write_k64(s: &State) {
    // SAFETY: reads the 64 bytes of `s.k`; k0-k7 are unused by compiled code.
    unsafe {
        asm!("kmovq k0, [{p}]", "kmovq k1, [{p} + 8]", "kmovq k2, [{p} + 16]",
             "kmovq k3, [{p} + 24]", "kmovq k4, [{p} + 32]", "kmovq k5, [{p} + 40]",
             "kmovq k6, [{p} + 48]", "kmovq k7, [{p} + 56]",
             p = in(reg) s.k.as_ptr(), options(readonly, nostack, preserves_flags));
    }
}

#[target_feature(enable = "avx512bw")]
unsafe fn read_k64(s: &mut State) {
    // SAFETY: writes the 64 bytes of `s.k`.
    unsafe {
        asm!("kmovq [{p}], k0", "kmovq [{p} + 8], k1", "kmovq [{p} + 16], k2",
             "kmovq [{p} + 24], k3", "kmovq [{p} + 32], k4", "kmovq [{p} + 40], k5",
             "kmovq [{p} + 48], k6", "kmovq [{p} + 56], k7",
             p = in(reg) s.k.as_mut_ptr(), options(nostack, preserves_flags));
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn write_k16(s: &State) {
    // SAFETY: reads the low 16 bits of each of `s.k`.
    unsafe {
        asm!("kmovw k0, [{p}]", "kmovw k1, [{p} + 8]", "kmovw k2, [{p} + 16]",
             "kmovw k3, [{p} + 24]", "kmovw k4, [{p} + 32]", "kmovw k5, [{p} + 40]",
             "kmovw k6, [{p} + 48]", "kmovw k7, [{p} + 56]",
             p = in(reg) s.k.as_ptr(), options(readonly, nostack, preserves_flags));
    }
}

#[target_feature(enable = "avx512f")]
unsafe fn read_k16(s: &mut State) {
    // SAFETY: writes the low 16 bits of each of `s.k` (the rest stay as they are).
    unsafe {
        asm!("kmovw [{p}], k0", "kmovw [{p} + 8], k1", "kmovw [{p} + 16], k2",
             "kmovw [{p} + 24], k3", "kmovw [{p} + 32], k4", "kmovw [{p} + 40], k5",
             "kmovw [{p} + 48], k6", "kmovw [{p} + 56], k7",
             p = in(reg) s.k.as_mut_ptr(), options(nostack, preserves_flags));
    }
}

/// Executes one AVX instruction (CPUID said AVX is not usable: it must fault).
#[target_feature(enable = "avx")]
pub unsafe fn touch_avx() {
    // SAFETY: changes only ymm15's upper half, which compiled code does not use; a
    // CPU or kernel without AVX enabled raises #UD here.
    unsafe { asm!("vinsertf128 ymm15, ymm15, xmm15, 1", options(nomem, nostack)) };
}

/// Executes one AVX-512 instruction (CPUID said AVX-512 is not usable: it must fault).
#[target_feature(enable = "avx512f")]
pub unsafe fn touch_avx512() {
    // SAFETY: changes only k7, which compiled code does not use; without AVX-512
    // enabled the instruction raises #UD.
    unsafe { asm!("kmovw k7, eax", in("eax") 0, options(nomem, nostack)) };
}

/// One round: load the pattern of (`seed`, `iter`), read it back, compare.
pub fn round(seed: u8, iter: u32, f: Features) -> Option<Class> {
    let want = State::pattern(seed, iter, f);
    write(&want, f);
    let mut got = State::initial();
    read(&mut got, f);
    got.first_difference(&want, f)
}

/// Rounds each process runs while the other one is runnable: long enough for a
/// 1 ms time slice to preempt both many times (tests/e2e/test_xstate.py).
pub const ROUNDS: u32 = 40_000;

/// The child's exit codes besides 0: `INITIAL + class` if it did not start with the
/// initial state of that class, `OWN + class` if its own pattern changed under it,
/// and the `SURVIVED_*` codes if an instruction CPUID called unusable did not fault.
pub const INITIAL: u32 = 10;
pub const OWN: u32 = 20;
pub const SURVIVED_AVX: u32 = 3;
pub const SURVIVED_AVX512: u32 = 4;
