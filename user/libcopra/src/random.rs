//! Random seeds for the heap's secret and the hash maps' keys.
//!
//! [`seed`] takes RDRAND where CPUID says the CPU has it (retrying a few times, as
//! Intel's DRNG guide advises), else mixes the time-stamp counter with a counter and a
//! stack address through splitmix64. The fallback is unpredictable enough to keep a
//! hash map's layout from being guessed in advance, not to make keys.

use core::arch::x86_64::{__cpuid, _rdrand64_step, _rdtsc};
use core::sync::atomic::{AtomicU64, Ordering};

/// RDRAND tries before giving up (Intel: 10 retries make a failure vanishingly rare).
const RDRAND_TRIES: usize = 10;

/// Whether CPUID.01H:ECX.RDRAND[bit 30] is set.
pub fn has_rdrand() -> bool {
    #[allow(unused_unsafe)] // `__cpuid` became safe in newer compilers
    // SAFETY: CPUID exists on every x86-64 CPU and has no side effects.
    let leaf = unsafe { __cpuid(1) };
    leaf.ecx & (1 << 30) != 0
}

#[target_feature(enable = "rdrand")]
fn rdrand_step() -> Option<u64> {
    let mut value = 0u64;
    for _ in 0..RDRAND_TRIES {
        if _rdrand64_step(&mut value) == 1 {
            return Some(value);
        }
    }
    None
}

/// A 64-bit value from RDRAND, if the CPU has it and it delivered.
pub fn rdrand64() -> Option<u64> {
    if has_rdrand() {
        // SAFETY: CPUID says RDRAND is there.
        unsafe { rdrand_step() }
    } else {
        None
    }
}

/// The time-stamp counter (RDTSC is allowed at CPL3: copra leaves CR4.TSD clear).
pub fn rdtsc() -> u64 {
    #[allow(unused_unsafe)]
    // SAFETY: RDTSC reads a counter and has no side effects.
    unsafe {
        _rdtsc()
    }
}

/// splitmix64 (Steele, Lea, Flood 2014): advances `state` and returns a mixed value.
pub fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

static FALLBACK: AtomicU64 = AtomicU64::new(0);

/// A random 64-bit seed: RDRAND, or the RDTSC fallback.
pub fn seed() -> u64 {
    if let Some(v) = rdrand64() {
        return v;
    }
    let local = 0u8;
    let mut state = rdtsc()
        ^ FALLBACK.fetch_add(1, Ordering::Relaxed).rotate_left(32)
        ^ (&raw const local as u64);
    splitmix64(&mut state) ^ splitmix64(&mut state).rotate_left(17)
}
