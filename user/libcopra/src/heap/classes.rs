//! Size classes: which slab area serves a request, and how big its blocks are.
//!
//! Sizes are multiples of 16: 16..=128 in steps of 16, then four classes per
//! doubling (`2^k + i * 2^(k-2)`, `i` = 1..=4) up to [`MEDIUM_MAX`]. A block wastes at
//! most a quarter of its size (12.5 % on average for evenly spread sizes). Classes up
//! to [`SMALL_MAX`] live in 64 KiB slabs, the rest in 8 MiB slabs; anything larger is a
//! large block, mapped by itself.
//!
//! Alignment: every block of a class starts at a multiple of the class size from its
//! slab's start, and slabs are aligned to their size, so a class whose size is a
//! multiple of `align` gives `align`-aligned blocks. [`class_for`] walks up from the
//! size's own class to the first such class (alignments up to 16 are every class's).

/// Number of size classes.
pub const COUNT: usize = 48;
/// Classes `0..SMALL_COUNT` live in small slabs.
pub const SMALL_COUNT: usize = 28;
/// The largest small class.
pub const SMALL_MAX: usize = 4096;
/// The largest class; larger requests are large blocks.
pub const MEDIUM_MAX: usize = 128 * 1024;
/// The alignment every class gives.
pub const MIN_ALIGN: usize = 16;

/// The block size of class `index` (`index < COUNT`).
pub const fn size_of(index: usize) -> usize {
    if index < 8 {
        (index + 1) * 16
    } else {
        let k = (index - 8) / 4 + 7; // the class lies in (2^k, 2^(k+1)]
        let i = (index - 8) % 4 + 1;
        (1 << k) + i * (1 << (k - 2))
    }
}

/// The smallest class whose blocks hold `size` bytes (`1 <= size <= MEDIUM_MAX`).
#[inline(always)]
pub const fn index_of(size: usize) -> usize {
    if size <= 128 {
        return (size.saturating_sub(1)) / 16;
    }
    let s = size - 1;
    let k = (usize::BITS - 1 - s.leading_zeros()) as usize; // 2^k <= s < 2^(k+1)
    let quarter = (s >> (k - 2)) & 3;
    8 + (k - 7) * 4 + quarter
}

/// Sizes up to this find their class in [`BY_SIXTEENTHS`]: one load.
const TABLE_MAX: usize = 1024;

/// The class of every size up to [`TABLE_MAX`], by `(size + 15) / 16` (every class
/// size is a multiple of 16, so rounding up to 16 never changes the class).
static BY_SIXTEENTHS: [u8; TABLE_MAX / 16 + 1] = {
    let mut table = [0; TABLE_MAX / 16 + 1];
    let mut i = 0;
    while i < table.len() {
        table[i] = index_of(if i == 0 { 1 } else { i * 16 }) as u8;
        i += 1;
    }
    table
};

/// [`index_of`] for `size <= SMALL_MAX` (0 counts as 1): a table load up to 1 KiB.
#[inline(always)]
pub fn small_index(size: usize) -> usize {
    if size <= TABLE_MAX {
        usize::from(BY_SIXTEENTHS[(size + 15) >> 4])
    } else {
        index_of(size)
    }
}

/// The class for `size` bytes at `align` (a power of two), or None when only a large
/// block will do.
#[inline(always)]
pub fn class_for(size: usize, align: usize) -> Option<usize> {
    if size > MEDIUM_MAX {
        return None;
    }
    let mut index = index_of(size.max(1));
    if align <= MIN_ALIGN {
        return Some(index);
    }
    while index < COUNT {
        if size_of(index) % align == 0 {
            return Some(index);
        }
        index += 1;
    }
    None
}

/// `ceil(2^64 / size)`: `offset * magic <= magic - 1` (wrapping) iff `size` divides
/// `offset`, for every `offset < 2^32` (Lemire, Kaser, Kurz: "Faster remainder by
/// direct computation", 2019). One multiplication instead of a division on free.
pub const fn divisor_magic(size: usize) -> u64 {
    (u64::MAX / size as u64).wrapping_add(1)
}

/// Whether `offset` (below 2^32) is a multiple of the size `magic` was made for.
#[inline]
pub const fn is_multiple(offset: u64, magic: u64) -> bool {
    offset.wrapping_mul(magic) <= magic.wrapping_sub(1)
}

/// Per-class constants, computed at compile time.
#[derive(Clone, Copy)]
pub struct Class {
    /// Block size in bytes.
    pub size: u32,
    /// [`divisor_magic`] of `size`.
    pub magic: u64,
}

/// Every class's constants.
pub static CLASSES: [Class; COUNT] = {
    let mut table = [Class { size: 0, magic: 0 }; COUNT];
    let mut i = 0;
    while i < COUNT {
        let size = size_of(i);
        table[i] = Class {
            size: size as u32,
            magic: divisor_magic(size),
        };
        i += 1;
    }
    table
};

const _: () = {
    assert!(size_of(SMALL_COUNT - 1) == SMALL_MAX);
    assert!(size_of(COUNT - 1) == MEDIUM_MAX);
    assert!(index_of(SMALL_MAX) == SMALL_COUNT - 1);
    assert!(index_of(MEDIUM_MAX) == COUNT - 1);
};
