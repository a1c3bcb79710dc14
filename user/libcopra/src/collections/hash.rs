//! SipHash and the randomly keyed hasher the hash maps use by default.
//!
//! [`SipHasher13`] is SipHash-1-3, what Rust's `std` and CPython use for their hash
//! tables: fast on short keys, and with a secret key an attacker who picks the keys
//! cannot make them collide (flooding). [`SipHasher24`] is the original SipHash-2-4
//! (Aumasson & Bernstein, "SipHash: a fast short-input PRF", 2012). Both stream: `write`
//! may be called with any split of the message.
//!
//! [`RandomState`] keys them: one 128-bit key per process from RDRAND (RDTSC where the
//! CPU has none, see [`crate::random`]), and each `RandomState` a key of its own
//! derived from it, as `std` does.

use core::hash::{BuildHasher, Hasher};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// SipHash with `C` compression and `D` finalisation rounds.
#[derive(Clone, Debug)]
pub struct SipHasher<const C: usize, const D: usize> {
    v0: u64,
    v1: u64,
    v2: u64,
    v3: u64,
    /// Bytes not yet compressed (little-endian, `ntail` of them).
    tail: u64,
    ntail: usize,
    length: usize,
}

/// SipHash-1-3: the hash maps' hasher.
pub type SipHasher13 = SipHasher<1, 3>;
/// SipHash-2-4: the original SipHash.
pub type SipHasher24 = SipHasher<2, 4>;

impl<const C: usize, const D: usize> SipHasher<C, D> {
    /// A hasher keyed with `(k0, k1)` (the 16-byte key read as two little-endian words).
    pub const fn new_with_keys(k0: u64, k1: u64) -> Self {
        Self {
            v0: k0 ^ 0x736f_6d65_7073_6575,
            v1: k1 ^ 0x646f_7261_6e64_6f6d,
            v2: k0 ^ 0x6c79_6765_6e65_7261,
            v3: k1 ^ 0x7465_6462_7974_6573,
            tail: 0,
            ntail: 0,
            length: 0,
        }
    }

    #[inline(always)]
    fn round(&mut self) {
        self.v0 = self.v0.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(13) ^ self.v0;
        self.v0 = self.v0.rotate_left(32);
        self.v2 = self.v2.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(16) ^ self.v2;
        self.v0 = self.v0.wrapping_add(self.v3);
        self.v3 = self.v3.rotate_left(21) ^ self.v0;
        self.v2 = self.v2.wrapping_add(self.v1);
        self.v1 = self.v1.rotate_left(17) ^ self.v2;
        self.v2 = self.v2.rotate_left(32);
    }

    #[inline(always)]
    fn compress(&mut self, m: u64) {
        self.v3 ^= m;
        for _ in 0..C {
            self.round();
        }
        self.v0 ^= m;
    }
}

impl<const C: usize, const D: usize> Hasher for SipHasher<C, D> {
    fn write(&mut self, mut msg: &[u8]) {
        self.length = self.length.wrapping_add(msg.len());
        if self.ntail != 0 {
            let take = (8 - self.ntail).min(msg.len());
            for (i, &b) in msg[..take].iter().enumerate() {
                self.tail |= u64::from(b) << (8 * (self.ntail + i));
            }
            self.ntail += take;
            msg = &msg[take..];
            if self.ntail < 8 {
                return;
            }
            let m = self.tail;
            self.compress(m);
            self.tail = 0;
            self.ntail = 0;
        }
        let mut words = msg.chunks_exact(8);
        for w in &mut words {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(w);
            self.compress(u64::from_le_bytes(bytes));
        }
        for (i, &b) in words.remainder().iter().enumerate() {
            self.tail |= u64::from(b) << (8 * i);
        }
        self.ntail = words.remainder().len();
    }

    fn finish(&self) -> u64 {
        let mut s = self.clone();
        let b = ((self.length as u64 & 0xff) << 56) | self.tail;
        s.compress(b);
        s.v2 ^= 0xff;
        for _ in 0..D {
            s.round();
        }
        s.v0 ^ s.v1 ^ s.v2 ^ s.v3
    }
}

/// The process's key: drawn once, at the first `RandomState::new`.
static KEY_READY: AtomicBool = AtomicBool::new(false);
static KEY0: AtomicU64 = AtomicU64::new(0);
static KEY1: AtomicU64 = AtomicU64::new(0);

/// Builds [`SipHasher13`]s with a random key: the hash maps' default.
#[derive(Clone, Copy, Debug)]
pub struct RandomState {
    k0: u64,
    k1: u64,
}

impl RandomState {
    /// A state with a key of its own, derived from the process's random key.
    pub fn new() -> Self {
        if !KEY_READY.load(Ordering::Acquire) {
            // Two threads may both draw; either key is as good, and each store is whole.
            KEY0.store(crate::random::seed(), Ordering::Relaxed);
            KEY1.store(crate::random::seed(), Ordering::Relaxed);
            KEY_READY.store(true, Ordering::Release);
        }
        Self {
            k0: KEY0.fetch_add(1, Ordering::Relaxed),
            k1: KEY1.load(Ordering::Relaxed),
        }
    }

    /// A state with a given key (reproducible hashing, tests).
    pub const fn with_keys(k0: u64, k1: u64) -> Self {
        Self { k0, k1 }
    }
}

impl Default for RandomState {
    fn default() -> Self {
        Self::new()
    }
}

impl BuildHasher for RandomState {
    type Hasher = SipHasher13;

    fn build_hasher(&self) -> SipHasher13 {
        SipHasher13::new_with_keys(self.k0, self.k1)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use core::hash::{BuildHasher, Hasher};
    use std::hash::DefaultHasher;

    use super::{RandomState, SipHasher13, SipHasher24};

    /// The reference vectors of the SipHash paper (and its reference code): key
    /// 00 01 .. 0f, messages of 0..63 bytes 00 01 02 ...
    const SIP24_KEY_0_TO_15: [u64; 64] = [
        0x726fdb47dd0e0e31,
        0x74f839c593dc67fd,
        0x0d6c8009d9a94f5a,
        0x85676696d7fb7e2d,
        0xcf2794e0277187b7,
        0x18765564cd99a68d,
        0xcbc9466e58fee3ce,
        0xab0200f58b01d137,
        0x93f5f5799a932462,
        0x9e0082df0ba9e4b0,
        0x7a5dbbc594ddb9f3,
        0xf4b32f46226bada7,
        0x751e8fbc860ee5fb,
        0x14ea5627c0843d90,
        0xf723ca908e7af2ee,
        0xa129ca6149be45e5,
        0x3f2acc7f57c29bdb,
        0x699ae9f52cbe4794,
        0x4bc1b3f0968dd39c,
        0xbb6dc91da77961bd,
        0xbed65cf21aa2ee98,
        0xd0f2cbb02e3b67c7,
        0x93536795e3a33e88,
        0xa80c038ccd5ccec8,
        0xb8ad50c6f649af94,
        0xbce192de8a85b8ea,
        0x17d835b85bbb15f3,
        0x2f2e6163076bcfad,
        0xde4daaaca71dc9a5,
        0xa6a2506687956571,
        0xad87a3535c49ef28,
        0x32d892fad841c342,
        0x7127512f72f27cce,
        0xa7f32346f95978e3,
        0x12e0b01abb051238,
        0x15e034d40fa197ae,
        0x314dffbe0815a3b4,
        0x027990f029623981,
        0xcadcd4e59ef40c4d,
        0x9abfd8766a33735c,
        0x0e3ea96b5304a7d0,
        0xad0c42d6fc585992,
        0x187306c89bc215a9,
        0xd4a60abcf3792b95,
        0xf935451de4f21df2,
        0xa9538f0419755787,
        0xdb9acddff56ca510,
        0xd06c98cd5c0975eb,
        0xe612a3cb9ecba951,
        0xc766e62cfcadaf96,
        0xee64435a9752fe72,
        0xa192d576b245165a,
        0x0a8787bf8ecb74b2,
        0x81b3e73d20b49b6f,
        0x7fa8220ba3b2ecea,
        0x245731c13ca42499,
        0xb78dbfaf3a8d83bd,
        0xea1ad565322a1a0b,
        0x60e61c23a3795013,
        0x6606d7e446282b93,
        0x6ca4ecb15c5f91e1,
        0x9f626da15c9625f3,
        0xe51b38608ef25f57,
        0x958a324ceb064572,
    ];
    /// SipHash-1-3 with the zero key over the same messages: the values CPython's
    /// bytes hash gives with PYTHONHASHSEED=0 (its hash is SipHash-1-3 with a zero key
    /// then; 0 for the empty message is CPython's special case, replaced here by the
    /// value of the algorithm).
    const SIP13_KEY_ZERO: [u64; 64] = [
        0xd1fba762150c532c,
        0x68a914128e01e473,
        0x010bac45c41e3669,
        0x4d4c9a4a8ef6e0ad,
        0x7cc43f98813e4dbd,
        0x5abe2169dff36275,
        0xe3c25f87624f1cdb,
        0x2f098ab0c751325a,
        0xead411e67ebe2eea,
        0x75927f9d95124362,
        0xaf9f77a65ab51a1d,
        0xfe64ce8b6617fcff,
        0xa6baf4fb0f9fe1c2,
        0xa0cf3211850f8e0d,
        0x7f86049379fbfe67,
        0xf30eb725bb91c9ea,
        0x8972188433a5c5b7,
        0x4883c49a2c009c1d,
        0xadc2c0b63044067d,
        0x091f4a3329f87d19,
        0x639e355ae68c0100,
        0xb17bef2cb5213239,
        0xf8aeb1066236ccfe,
        0x37332b1389daa4ff,
        0x31185a47af932f3a,
        0xebf352e82ae23e2f,
        0xed36ff242fe478b2,
        0x2454d97d299299df,
        0x8cd57fe8130d0ac7,
        0xbe98eb2faf0a0e85,
        0xd427c34ee09470c6,
        0x169739443111d49b,
        0x31ef8061c910629b,
        0x7fb71d24dfa4c9f6,
        0x92771f49e836d389,
        0x3c393cf6f0853bc3,
        0xac77921fcc642bd3,
        0x422a9751192ff266,
        0xc680ae8a8c584ddf,
        0x6c76b6d34bb6d26b,
        0x95bc321ab41d8206,
        0x908a3a97a6d37669,
        0xfcaf3c64874dd0b4,
        0xf689479b32b84a44,
        0xd857641079efd1fd,
        0x8b581578722633f7,
        0x83cb09d35ea7bcd4,
        0x8485f7f5ae725a0d,
        0xfe1f2445ba50237f,
        0x23cece041d7866b0,
        0x416687480b336c09,
        0xf15960da7e7f3892,
        0xded6177b9826835a,
        0xf80dae51668be6be,
        0x17ecc6ee6647df18,
        0x5220d642b4a52110,
        0xa4f0cf4ba4adc016,
        0xe5125bb26d1f2976,
        0x851b0e75f580d256,
        0x12605250a37e39ac,
        0xd95a713568daebf1,
        0xcdcf4a42ec0dd605,
        0xa5c708712b617164,
        0x385d3e39e5f37359,
    ];
    fn message(n: usize) -> std::vec::Vec<u8> {
        (0..n as u8).collect()
    }

    #[test]
    fn siphash24_matches_the_reference_vectors() {
        let key = *b"\x00\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f";
        let k0 = u64::from_le_bytes(key[..8].try_into().unwrap());
        let k1 = u64::from_le_bytes(key[8..].try_into().unwrap());
        for (n, &want) in SIP24_KEY_0_TO_15.iter().enumerate() {
            let mut h = SipHasher24::new_with_keys(k0, k1);
            h.write(&message(n));
            assert_eq!(h.finish(), want, "{n}-byte message");
        }
    }

    #[test]
    fn siphash13_matches_cpythons_vectors() {
        for (n, &want) in SIP13_KEY_ZERO.iter().enumerate() {
            let mut h = SipHasher13::new_with_keys(0, 0);
            h.write(&message(n));
            assert_eq!(h.finish(), want, "{n}-byte message");
        }
    }

    #[test]
    fn siphash13_agrees_with_std_on_random_messages_and_splits() {
        let mut state = 7u64;
        for _ in 0..500 {
            let len = (crate::random::splitmix64(&mut state) % 200) as usize;
            let msg: std::vec::Vec<u8> = (0..len)
                .map(|_| crate::random::splitmix64(&mut state) as u8)
                .collect();
            let mut theirs = DefaultHasher::new(); // SipHash-1-3, zero key
            theirs.write(&msg);
            // Fed in random pieces: streaming must not change the result.
            let mut ours = SipHasher13::new_with_keys(0, 0);
            let mut rest = &msg[..];
            while !rest.is_empty() {
                let take = (crate::random::splitmix64(&mut state) as usize % 11).min(rest.len());
                ours.write(&rest[..take]);
                rest = &rest[take..];
            }
            assert_eq!(ours.finish(), theirs.finish(), "{len}-byte message");
        }
    }

    #[test]
    fn finish_does_not_consume_the_state() {
        let mut h = SipHasher13::new_with_keys(1, 2);
        h.write(b"abc");
        let first = h.finish();
        assert_eq!(h.finish(), first);
        h.write(b"d");
        assert_ne!(h.finish(), first);
    }

    #[test]
    fn random_states_differ_and_are_stable() {
        let (a, b) = (RandomState::new(), RandomState::new());
        assert_ne!(a.hash_one(42u64), b.hash_one(42u64));
        assert_eq!(a.hash_one("key"), a.hash_one("key"));
    }
}
