//! The allocator proper: slabs of size classes, large blocks, and their bookkeeping.
//!
//! [`Heap`] is single-threaded (`&mut self` everywhere); the caller serialises access
//! (heap/mod.rs wraps it in a lock). It owns a fixed span of address space from
//! `base` and asks its [`PageSource`] for memory at addresses it chooses itself:
//!
//! | offset from `base` | what | slot size | slots |
//! |---|---|---|---|
//! | 0 | table of small slabs (32 B each), one mapping grown in place | | |
//! | 16 MiB | table of medium slabs | | |
//! | 32 MiB | table of large blocks (16 B each) | | |
//! | 1 GiB | small slabs (classes up to 4 KiB) | 64 KiB | 2^18 (16 GiB) |
//! | 32 GiB | medium slabs (classes up to 128 KiB) | 1 MiB | 2^14 (16 GiB) |
//! | 1 TiB | large blocks, one mapping each | 1 GiB | 1024 (1 TiB) |
//!
//! Invariants:
//! - A pointer's slot is found from its address alone, and the slot's table entry
//!   says what lives there; no header precedes a block, so `free` needs no size and
//!   checks every pointer against the tables before it touches memory.
//! - A slab holds blocks of one class at multiples of the class size from the slot's
//!   start. Its mapping starts small and grows in place (MRESIZE) as blocks are carved
//!   (`bump`), up to the slot size. `live` counts blocks handed out; a slab with room
//!   is on its class's list, a full one is not. A free block holds the encoded next
//!   pointer of its slab's free list in its first word and a mark in its second.
//! - A large block starts at its slot (so every alignment up to 1 GiB holds), owns
//!   `run` slots of address space and maps `pages` of them; it grows in place into
//!   its slots. Freed large blocks may stay mapped in a small cache, for reuse.
//! - Memory mapped but holding no live block (spare slabs, cached large blocks) is
//!   `retained`. It is kept up to `max(RETAIN_MIN, recent_peak)`, where `recent_peak`
//!   follows `in_use` up at once and down by an eighth every DECAY_FREES frees; what
//!   a free finds beyond that goes back to the kernel (cached large blocks oldest
//!   first, then spare slabs), except a class's only slab. A large block above
//!   LARGE_KEEP_MAX is never kept. [`Heap::trim`] gives back everything kept.
//! - Counters: `in_use` is the usable size of every live block, `mapped` every byte
//!   mapped from the source (tables included), both with their peaks.
//!
//! Misuse caught before anything changes ([`Misuse`]): a pointer outside the heap, in
//! an unused slot, inside a block, or to a block that is already free; a free list
//! whose link leaves its slab (the freed memory was written). Not caught: freeing a
//! block again after it was handed out anew (it is live then), or after its slab went
//! back to the kernel and the slot was reused.

use core::ptr;
use core::sync::atomic::{AtomicU32, Ordering};

use super::classes::{self, CLASSES, COUNT, Class, SMALL_COUNT};
use super::pages::PageSource;
use crate::abi::Errno;
use crate::error::Error;

/// Page size of every mapping.
pub const PAGE: usize = 4096;
const KIB: usize = 1 << 10;
const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

const SMALL_TABLE: usize = 0;
const MEDIUM_TABLE: usize = 16 * MIB;
const LARGE_TABLE: usize = 32 * MIB;
const SMALL_AREA: usize = GIB;
const MEDIUM_AREA: usize = 32 * GIB;
const LARGE_AREA: usize = 1 << 40;
const LARGE_SHIFT: u32 = 30;
/// Large slots: 1 GiB each.
pub const LARGE_SLOT: usize = 1 << LARGE_SHIFT;
const LARGE_SLOTS: usize = 1024;
/// Small slots: 64 KiB each, 2^18 of them.
const SMALL_SHIFT: u32 = 16;
const SMALL_SLOTS: usize = 1 << 18;
/// The address space one heap uses from its base.
pub const SPAN: usize = 2 << 40;

/// The first mapping of a small slab; it grows (SLAB_GROWTH) up to 64 KiB as blocks
/// are carved.
const SMALL_INITIAL: usize = 16 * KIB;
/// The least first mapping of a medium slab.
const MEDIUM_INITIAL: usize = 64 * KIB;
/// A slab's mapping grows by at least a 1/SLAB_GROWTH of itself and SLAB_GROW_MIN.
const SLAB_GROWTH: usize = 4;
/// See [`SLAB_GROWTH`].
const SLAB_GROW_MIN: usize = 16 * KIB;
/// Memory kept for reuse (empty slabs, freed large blocks) is at most the larger of
/// this and the recent peak of `in_use` ([`Counters::recent_peak`]).
pub const RETAIN_MIN: usize = 2 * MIB;
/// The recent peak loses an eighth every this many frees (down to `in_use`), so a
/// program that has stopped using memory gives it back as it goes on freeing.
pub const DECAY_FREES: u32 = 65536;
/// A cached large block is reused as it is for a request of at least 1/REUSE_WASTE
/// of its size.
const REUSE_WASTE: usize = 8;
/// A freed large block larger than this goes back to the kernel at once.
pub const LARGE_KEEP_MAX: usize = 16 * MIB;
/// Freed large blocks kept mapped for reuse, at most.
const LARGE_CACHE: usize = 64;
/// A large block that shrinks by at least half, and by at least this much, gives the
/// tail back (MRESIZE); smaller shrinks keep the pages.
const SHRINK_MIN: usize = 64 * KIB;
/// Tries to find a slot the kernel maps where asked, before giving up.
const PLACE_TRIES: usize = 8;

const NIL: u32 = u32::MAX;

// Slab and large-block states.
const UNUSED: u8 = 0;
const LISTED: u8 = 1;
const FULL: u8 = 2;
const LIVE: u8 = 3;
const CACHED: u8 = 4;
/// An empty slab kept for reuse; listed like LISTED, and on its area's spare stack.
const SPARE: u8 = 7;
const TAIL: u8 = 5;
/// The kernel would not map this slot where asked: never used again.
const BAD: u8 = 6;

/// One slab's bookkeeping, in its area's table.
#[repr(C)]
#[derive(Clone, Copy)]
struct Slab {
    /// Encoded address of the first free block, or the encoding of 0.
    free: usize,
    /// List link: the class's list (LISTED) or the area's free-slot stack (UNUSED).
    next: u32,
    prev: u32,
    /// Offset of the first never-carved byte.
    bump: u32,
    /// Bytes mapped from the slot's start.
    mapped: u32,
    live: u16,
    class: u8,
    state: u8,
    /// Link in the area's stack of spare slabs; UNLINKED when not in it.
    spare_next: u32,
}

const _: () = assert!(core::mem::size_of::<Slab>() == 32);

/// `Slab::spare_next` of a slab that is not on its area's spare stack.
const UNLINKED: u32 = u32::MAX - 1;

/// One large slot's bookkeeping.
#[repr(C)]
#[derive(Clone, Copy)]
struct Large {
    /// Pages mapped (head slots only).
    pages: u32,
    /// Slots owned, this one included (head slots only).
    run: u32,
    state: u8,
    _pad: [u8; 7],
}

const _: () = assert!(core::mem::size_of::<Large>() == 16);

/// A slab area: slots of one size and the table that describes them.
///
/// Only `high` changes after construction; what else changes is in [`AreaState`].
struct Area {
    base: usize,
    shift: u32,
    max: u32,
    table: usize,
    /// Slots below this have a table entry (the table is mapped that far).
    high: AtomicU32,
}

/// The parts of an area only the lock holder reads.
#[derive(Clone, Copy)]
struct AreaState {
    table_len: usize,
    /// Stack of UNUSED slots below `high`, linked through `Slab::next`.
    free_slots: u32,
    /// Stack of slabs that became SPARE, linked through `Slab::spare_next`; an entry
    /// whose slab was reused since is skipped when popped.
    spares: u32,
}

const AREA_STATE: AreaState = AreaState {
    table_len: 0,
    free_slots: NIL,
    spares: NIL,
};

impl Area {
    const fn new(base: usize, table: usize, shift: u32, max: usize) -> Self {
        Self {
            base,
            shift,
            max: max as u32,
            table,
            high: AtomicU32::new(0),
        }
    }

    fn slot_size(&self) -> usize {
        1 << self.shift
    }

    fn slot_addr(&self, index: u32) -> usize {
        self.base + ((index as usize) << self.shift)
    }

    /// The slot holding `addr`, if it lies in this area.
    fn slot_of(&self, addr: usize) -> Option<u32> {
        let off = addr.wrapping_sub(self.base);
        if off < (self.max as usize) << self.shift {
            Some((off >> self.shift) as u32)
        } else {
            None
        }
    }

    /// The table entry of `index` (below `high`).
    #[allow(clippy::mut_from_ref)]
    fn slab(&self, index: u32) -> &mut Slab {
        debug_assert!(index < self.high.load(Ordering::Relaxed));
        // SAFETY: the table is mapped for every index below `high`, only the heap
        // (serialised by its caller) writes it, and no two references to one entry
        // are held at once.
        unsafe { &mut *(self.table as *mut Slab).add(index as usize) }
    }
}

/// Which allocation failed and why. The heap keeps the last one for its wrapper to
/// report (outside the lock).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The size asked for.
    pub size: usize,
    /// The alignment asked for.
    pub align: usize,
    /// Why it failed.
    pub reason: Reason,
}

/// Why an allocation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// More than the heap's address span could ever hold.
    TooLarge,
    /// Every slot of the area is in use.
    AreaFull,
    /// The kernel refused memory (ENOMEM: out of frames or at the process's limit).
    Kernel(Error),
}

impl core::fmt::Display for Failure {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{} bytes (align {}): ", self.size, self.align)?;
        match self.reason {
            Reason::TooLarge => f.write_str("larger than the heap can map"),
            Reason::AreaFull => f.write_str("no free slot left in the heap's address span"),
            Reason::Kernel(e) => write!(f, "the kernel refused memory: {e}"),
        }
    }
}

/// A pointer given to `free` or `realloc` that the heap did not hand out, or no
/// longer holds. Nothing was changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Misuse {
    /// Outside the heap's address span.
    Foreign(usize),
    /// In the heap's span, but no block lives there (never allocated, or its memory
    /// was already given back).
    NotAllocated(usize),
    /// Inside a block, not at its start.
    Interior(usize),
    /// The block is already free.
    DoubleFree(usize),
    /// A free list points out of its slab: freed memory was written to.
    Corrupt(usize),
}

impl core::fmt::Display for Misuse {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Self::Foreign(p) => write!(
                f,
                "{p:#x} is not a heap pointer (free of a foreign pointer)"
            ),
            Self::NotAllocated(p) => {
                write!(
                    f,
                    "{p:#x} is not an allocated block (double free or wild pointer)"
                )
            }
            Self::Interior(p) => write!(f, "{p:#x} points inside a block, not at its start"),
            Self::DoubleFree(p) => write!(f, "double free of {p:#x}"),
            Self::Corrupt(p) => {
                write!(
                    f,
                    "free list of the slab at {p:#x} is damaged (write after free?)"
                )
            }
        }
    }
}

/// What a pointer refers to.
#[derive(Clone, Copy)]
enum Block {
    /// Small (area 0) or medium (area 1) slab block: area, slot.
    Slab(usize, u32),
    /// Large block: slot.
    Large(u32),
}

/// The heap's counters, as [`crate::abi::HeapStats`] describes them.
#[derive(Clone, Copy, Default, Debug)]
#[allow(missing_docs)] // each field is documented in HeapStats
pub struct Counters {
    pub in_use: usize,
    pub peak_in_use: usize,
    pub mapped: usize,
    pub peak_mapped: usize,
    pub retained: usize,
    pub metadata: usize,
    pub live_blocks: usize,
    pub allocations: u64,
    pub frees: u64,
    pub maps: u64,
    pub unmaps: u64,
    pub resizes: u64,
    pub failures: u64,
    /// The most `in_use` has been lately: raised with it, decayed by frees.
    pub recent_peak: usize,
}

impl Counters {
    fn add_mapped(&mut self, bytes: usize) {
        self.mapped += bytes;
        if self.mapped > self.peak_mapped {
            self.peak_mapped = self.mapped;
        }
    }

    #[inline]
    fn alloc(&mut self, usable: usize) {
        self.in_use += usable;
        // recent_peak <= peak_in_use always: one comparison in the common case.
        if self.in_use > self.recent_peak {
            self.recent_peak = self.in_use;
            self.peak_in_use = self.peak_in_use.max(self.in_use);
        }
        self.live_blocks += 1;
    }
}

/// The allocator. See the module documentation.
pub struct Heap<S: PageSource> {
    source: S,
    base: usize,
    /// Mixed into free-list links and free marks; drawn from `seed` before the first
    /// slab is made, never changed after (0 until then).
    secret: usize,
    seed: fn() -> usize,
    areas: [Area; 2],
    area_state: [AreaState; 2],
    /// Head of each class's list of slabs with room (NIL: none).
    lists: [u32; COUNT],
    large_table_len: usize,
    /// Large slots below this have a table entry.
    large_high: u32,
    /// Freed large blocks kept mapped: their head slots, oldest first.
    cache: [u32; LARGE_CACHE],
    cached: usize,
    counters: Counters,
    last_failure: Option<Failure>,
}

impl<S: PageSource> Heap<S> {
    /// A heap using `[base, base + SPAN)` (`base` aligned to 1 TiB), memory from
    /// `source`, and `seed` for its secret. Nothing is mapped until the first
    /// allocation.
    pub const fn new(base: usize, source: S, seed: fn() -> usize) -> Self {
        Self {
            source,
            base,
            secret: 0,
            seed,
            areas: [
                Area::new(base + SMALL_AREA, base + SMALL_TABLE, SMALL_SHIFT, SMALL_SLOTS),
                Area::new(base + MEDIUM_AREA, base + MEDIUM_TABLE, 20, 1 << 14),
            ],
            area_state: [AREA_STATE; 2],
            lists: [NIL; COUNT],
            large_table_len: 0,
            large_high: 0,
            cache: [NIL; LARGE_CACHE],
            cached: 0,
            counters: Counters {
                in_use: 0,
                peak_in_use: 0,
                mapped: 0,
                peak_mapped: 0,
                retained: 0,
                metadata: 0,
                live_blocks: 0,
                allocations: 0,
                frees: 0,
                maps: 0,
                unmaps: 0,
                resizes: 0,
                failures: 0,
                recent_peak: 0,
            },
            last_failure: None,
        }
    }

    /// The counters (`allocations` is derived: every block freed or still live).
    pub fn counters(&self) -> Counters {
        let mut c = self.counters;
        c.allocations = c.frees + c.live_blocks as u64;
        c
    }

    /// The last allocation failure, cleared.
    #[inline]
    pub fn take_failure(&mut self) -> Option<Failure> {
        if self.last_failure.is_none() {
            return None; // the common case: no store
        }
        self.last_failure.take()
    }

    /// The source, for tests that inspect it.
    pub fn source(&self) -> &S {
        &self.source
    }

    /// The source, for tests that make it fail.
    pub fn source_mut(&mut self) -> &mut S {
        &mut self.source
    }

    // --- allocation ----------------------------------------------------------------

    /// A block of at least `size` bytes aligned to `align` (a power of two), or null.
    #[inline]
    pub fn alloc(&mut self, size: usize, align: usize) -> *mut u8 {
        match classes::class_for(size, align) {
            Some(class) => self.alloc_class(class, size, align),
            None => self.alloc_large(size, align, false),
        }
    }

    /// As [`Heap::alloc`], with the first `size` bytes zeroed.
    pub fn alloc_zeroed(&mut self, size: usize, align: usize) -> *mut u8 {
        match classes::class_for(size, align) {
            Some(class) => {
                let p = self.alloc_class(class, size, align);
                if !p.is_null() {
                    // SAFETY: the block holds at least `size` bytes.
                    unsafe { ptr::write_bytes(p, 0, size) };
                }
                p
            }
            None => self.alloc_large(size, align, true),
        }
    }

    /// A block of `class`, from a thread cache's refill or an allocation.
    #[inline]
    pub fn alloc_class(&mut self, class: usize, size: usize, align: usize) -> *mut u8 {
        // The common case inline: the class's first slab has a free block.
        let s = self.lists[class];
        if s != NIL {
            let secret = self.secret;
            let area = &self.areas[usize::from(class >= SMALL_COUNT)];
            let slab = area.slab(s);
            if slab.free != secret && slab.live != 0 {
                let p = slab.free ^ secret;
                // SAFETY: `p` is a free block of this slab; free blocks hold two words.
                let next = unsafe { (p as *const usize).read() };
                let decoded = next ^ secret;
                if decoded != 0 && (decoded ^ p) >> area.shift != 0 {
                    self.corrupt(area.slot_addr(s));
                }
                slab.free = next;
                slab.live += 1;
                // SAFETY: as above; clear the free mark.
                unsafe { (p as *mut usize).add(1).write(0) };
                self.counters.alloc(CLASSES[class].size as usize);
                return p as *mut u8;
            }
        }
        self.alloc_class_slow(class, size, align)
    }

    #[inline(never)]
    fn alloc_class_slow(&mut self, class: usize, size: usize, align: usize) -> *mut u8 {
        let a = usize::from(class >= SMALL_COUNT);
        let csize = CLASSES[class].size as usize;
        loop {
            let mut s = self.lists[class];
            if s == NIL {
                s = match self.new_slab(a, class) {
                    Ok(s) => s,
                    Err(reason) => return self.fail(size, align, reason),
                };
            }
            let secret = self.secret;
            let area = &self.areas[a];
            let slot = area.slot_addr(s);
            let slot_size = area.slot_size();
            let slab = area.slab(s);
            let p;
            if slab.free != secret {
                p = slab.free ^ secret;
                // SAFETY: `p` is a free block of this slab (checked when it was pushed
                // and when the link to it was read); free blocks hold two words.
                let next = unsafe { (p as *const usize).read() };
                let decoded = next ^ secret;
                if decoded != 0 && (decoded ^ slot) >> area.shift != 0 {
                    self.corrupt(slot);
                }
                slab.free = next;
            } else if slab.bump as usize + csize <= slot_size {
                let end = slab.bump as usize + csize;
                if end > slab.mapped as usize {
                    let old = slab.mapped as usize;
                    let step = (old / SLAB_GROWTH).max(SLAB_GROW_MIN);
                    let new = (old + step).max(end).next_multiple_of(PAGE).min(slot_size);
                    if let Err(e) = self.source.resize(slot, old, new) {
                        return self.fail(size, align, Reason::Kernel(e));
                    }
                    slab.mapped = new as u32;
                    if slab.live == 0 {
                        self.counters.retained += new - old;
                    }
                    self.counters.resizes += 1;
                    self.counters.add_mapped(new - old);
                }
                p = slot + slab.bump as usize;
                slab.bump = end as u32;
            } else {
                // Full: off the list until a block comes back.
                slab.state = FULL;
                self.unlink(a, class, s);
                continue;
            }
            if slab.live == 0 {
                self.counters.retained -= slab.mapped as usize;
                if slab.state == SPARE {
                    slab.state = LISTED; // stays on the spare stack, skipped there
                }
            }
            slab.live += 1;
            // SAFETY: `p` is a block of at least 16 bytes; clear a stale free mark.
            unsafe { (p as *mut usize).add(1).write(0) };
            self.counters.alloc(csize);
            return p as *mut u8;
        }
    }

    fn alloc_large(&mut self, size: usize, align: usize, zeroed: bool) -> *mut u8 {
        let Some(bytes) = size.max(1).checked_next_multiple_of(PAGE) else {
            return self.fail(size, align, Reason::TooLarge);
        };
        if bytes > LARGE_SLOTS * LARGE_SLOT || align > LARGE_SLOTS * LARGE_SLOT / 2 {
            return self.fail(size, align, Reason::TooLarge);
        }
        let pages = bytes / PAGE;
        if align <= LARGE_SLOT
            && let Some(p) = self.reuse_cached(pages, zeroed)
        {
            return p;
        }
        let run = bytes.div_ceil(LARGE_SLOT) as u32;
        let step = (align / LARGE_SLOT).max(1) as u32;
        let mut tries = 0;
        loop {
            let Some(first) = self.find_large_run(run, step) else {
                if self.cached > 0 {
                    self.drop_cache();
                    continue;
                }
                return self.fail(size, align, Reason::AreaFull);
            };
            if let Err(e) = self.ensure_large_table(first + run) {
                return self.fail(size, align, Reason::Kernel(e));
            }
            let addr = self.large_addr(first);
            match self.source.map(addr, bytes) {
                Ok(()) => {
                    self.counters.maps += 1;
                    self.counters.add_mapped(bytes);
                    let head = self.large(first);
                    *head = Large {
                        pages: pages as u32,
                        run,
                        state: LIVE,
                        _pad: [0; 7],
                    };
                    for i in 1..run {
                        self.large(first + i).state = TAIL;
                    }
                    self.counters.alloc(bytes);
                    return addr as *mut u8;
                }
                Err(e) if e.is(Errno::EEXIST) && tries < PLACE_TRIES => {
                    // Something else lives there: never try this slot again.
                    self.large(first).state = BAD;
                    tries += 1;
                }
                Err(e) => {
                    if self.cached > 0 && e.is(Errno::ENOMEM) {
                        // Out of frames: the cache's memory may be just what is missing.
                        self.drop_cache();
                        continue;
                    }
                    return self.fail(size, align, Reason::Kernel(e));
                }
            }
        }
    }

    /// A cached large block made to fit `pages`, if one can be.
    fn reuse_cached(&mut self, pages: usize, zeroed: bool) -> Option<*mut u8> {
        // The smallest cached block that fits and wastes at most half; else the
        // largest smaller one that can grow in place.
        let mut fit: Option<usize> = None;
        let mut grow: Option<usize> = None;
        for i in 0..self.cached {
            let e = *self.large_ref(self.cache[i]);
            let have = e.pages as usize;
            if have >= pages {
                if have <= pages * REUSE_WASTE
                    && fit.is_none_or(|j| have < self.large_ref(self.cache[j]).pages as usize)
                {
                    fit = Some(i);
                }
            } else if pages * PAGE <= e.run as usize * LARGE_SLOT
                && grow.is_none_or(|j| have > self.large_ref(self.cache[j]).pages as usize)
            {
                grow = Some(i);
            }
        }
        let i = fit.or(grow)?;
        let slot = self.cache[i];
        let addr = self.large_addr(slot);
        let have = self.large(slot).pages as usize;
        if have < pages {
            if self.source.resize(addr, have * PAGE, pages * PAGE).is_err() {
                return None;
            }
            self.counters.resizes += 1;
            self.counters.add_mapped((pages - have) * PAGE);
            self.counters.retained += (pages - have) * PAGE;
            self.large(slot).pages = pages as u32;
        }
        self.uncache(i);
        let e = self.large(slot);
        e.state = LIVE;
        let bytes = e.pages as usize * PAGE;
        self.counters.retained -= bytes;
        if zeroed {
            // Grown pages are zero already; the reused ones are not.
            // SAFETY: the block is mapped for `have` pages at least.
            unsafe { ptr::write_bytes(addr as *mut u8, 0, have.min(pages) * PAGE) };
        }
        self.counters.alloc(bytes);
        Some(addr as *mut u8)
    }

    // --- free ----------------------------------------------------------------------

    /// Gives `p` back; null is ignored. Nothing changes when `p` is misused.
    #[inline]
    pub fn free(&mut self, p: *mut u8) -> Result<(), Misuse> {
        let addr = p as usize;
        // The common case inline: a small block.
        if let Some(s) = self.areas[0].slot_of(addr) {
            return self.free_slab(0, s, addr);
        }
        self.free_other(addr)
    }

    #[inline(never)]
    fn free_other(&mut self, p: usize) -> Result<(), Misuse> {
        if p == 0 {
            return Ok(());
        }
        match self.locate(p)? {
            Block::Slab(a, s) => self.free_slab(a, s, p),
            Block::Large(slot) => self.free_large(slot),
        }
    }

    /// Frees `p`, which lies in slot `s` of area `a`, after the checks `locate` makes.
    #[inline(always)]
    fn free_slab(&mut self, a: usize, s: u32, p: usize) -> Result<(), Misuse> {
        let secret = self.secret;
        let area = &self.areas[a];
        if s >= area.high.load(Ordering::Relaxed) {
            return Err(Misuse::NotAllocated(p));
        }
        let offset = (p - area.slot_addr(s)) as u64;
        let slab = area.slab(s);
        if (slab.state != LISTED && slab.state != FULL) || offset >= u64::from(slab.bump) {
            return Err(Misuse::NotAllocated(p)); // SPARE and UNUSED slabs hold no block
        }
        let class = slab.class as usize;
        let Class { size, magic } = CLASSES[class];
        if !classes::is_multiple(offset, magic) {
            return Err(Misuse::Interior(p));
        }
        // SAFETY: `p` starts a carved block of this slab (checked just above).
        let mark = unsafe { (p as *mut usize).add(1) };
        // SAFETY: as above.
        if unsafe { mark.read() } == free_mark(p, secret) {
            return Err(Misuse::DoubleFree(p));
        }
        // SAFETY: as above; the block's first two words become the link and the mark.
        unsafe {
            (p as *mut usize).write(slab.free);
            mark.write(free_mark(p, secret));
        }
        slab.free = p ^ secret;
        slab.live -= 1;
        let transition = slab.state == FULL || slab.live == 0;
        self.count_free(size as usize);
        if transition {
            self.slab_transition(a, class, s);
        }
        if self.counters.retained > self.retain_budget() {
            self.shed();
        }
        Ok(())
    }

    /// After a free: a full slab has room again, or a slab has emptied.
    #[cold]
    #[inline(never)]
    fn slab_transition(&mut self, a: usize, class: usize, s: u32) {
        let slab = self.areas[a].slab(s);
        let (was_full, emptied) = (slab.state == FULL, slab.live == 0);
        if was_full {
            slab.state = LISTED;
            self.push_front(a, class, s);
        }
        if emptied {
            self.slab_emptied(a, class, s);
        }
    }

    /// A slab lost its last block: keep it as a spare, or give it back.
    ///
    /// A class's only slab is always kept (and never shed): a program that allocates
    /// and frees one block over and over must not map and unmap a slab each time.
    fn slab_emptied(&mut self, a: usize, class: usize, s: u32) {
        let secret = self.secret;
        let budget = self.retain_budget();
        let area = &self.areas[a];
        let slab = area.slab(s);
        let mapped = slab.mapped as usize;
        let only = self.lists[class] == s && slab.next == NIL;
        if only || self.counters.retained + mapped <= budget {
            // Carve again from the start, in address order.
            slab.free = secret;
            slab.bump = 0;
            slab.state = SPARE;
            if !only && slab.spare_next == UNLINKED {
                slab.spare_next = self.area_state[a].spares;
                self.area_state[a].spares = s;
            }
            self.counters.retained += mapped;
        } else {
            self.release_slab(a, class, s);
        }
    }

    /// Gives retained memory back until it fits the budget again: cached large blocks
    /// first (oldest first), then spare slabs (the most recently emptied first),
    /// except a class's only slab.
    #[cold]
    fn shed(&mut self) {
        while self.counters.retained > self.retain_budget() {
            if self.cached > 0 {
                self.evict_oldest();
            } else if !self.release_a_spare(1) && !self.release_a_spare(0) {
                return;
            }
        }
    }

    /// Releases the first spare slab on area `a`'s stack that is not its class's only
    /// slab; false when there is none.
    fn release_a_spare(&mut self, a: usize) -> bool {
        while let Some(s) = self.pop_spare(a) {
            let slab = *self.areas[a].slab(s);
            let only = self.lists[slab.class as usize] == s && slab.next == NIL;
            if slab.state == SPARE && !only {
                self.counters.retained -= slab.mapped as usize;
                self.release_slab(a, slab.class as usize, s);
                return true;
            }
        }
        false
    }

    /// The next entry of area `a`'s spare stack, unlinked (its slab may be in use again).
    fn pop_spare(&mut self, a: usize) -> Option<u32> {
        let s = self.area_state[a].spares;
        if s == NIL {
            return None;
        }
        let slab = self.areas[a].slab(s);
        self.area_state[a].spares = slab.spare_next;
        slab.spare_next = UNLINKED;
        Some(s)
    }

    fn release_slab(&mut self, a: usize, class: usize, s: u32) {
        self.unlink(a, class, s);
        let area = &self.areas[a];
        let addr = area.slot_addr(s);
        let slab = area.slab(s);
        let mapped = slab.mapped as usize;
        slab.state = UNUSED;
        slab.class = 0;
        slab.mapped = 0;
        slab.next = self.area_state[a].free_slots;
        self.area_state[a].free_slots = s;
        self.unmap(addr, mapped);
    }

    fn free_large(&mut self, slot: u32) -> Result<(), Misuse> {
        let e = *self.large(slot);
        let bytes = e.pages as usize * PAGE;
        self.count_free(bytes);
        let budget = self.retain_budget();
        if bytes <= budget && bytes <= LARGE_KEEP_MAX {
            // Newest first: older cached blocks make room.
            while self.cached > 0
                && (self.cached == LARGE_CACHE || self.counters.retained + bytes > budget)
            {
                self.evict_oldest();
            }
        }
        if self.cached < LARGE_CACHE
            && bytes <= LARGE_KEEP_MAX
            && self.counters.retained + bytes <= budget
        {
            self.large(slot).state = CACHED;
            self.cache[self.cached] = slot;
            self.cached += 1;
            self.counters.retained += bytes;
        } else {
            self.release_large(slot);
        }
        self.shed();
        Ok(())
    }

    fn release_large(&mut self, slot: u32) {
        let e = *self.large(slot);
        for i in 0..e.run {
            *self.large(slot + i) = Large {
                pages: 0,
                run: 0,
                state: UNUSED,
                _pad: [0; 7],
            };
        }
        let addr = self.large_addr(slot);
        self.unmap(addr, e.pages as usize * PAGE);
    }

    fn uncache(&mut self, i: usize) {
        self.cache.copy_within(i + 1..self.cached, i);
        self.cached -= 1;
    }

    fn evict_oldest(&mut self) {
        let slot = self.cache[0];
        self.uncache(0);
        self.counters.retained -= self.large(slot).pages as usize * PAGE;
        self.release_large(slot);
    }

    fn drop_cache(&mut self) {
        while self.cached > 0 {
            self.evict_oldest();
        }
    }

    // --- realloc and friends -------------------------------------------------------

    /// The usable size of the block at `p`.
    pub fn usable_size(&self, p: *mut u8) -> Result<usize, Misuse> {
        Ok(match self.locate(p as usize)? {
            Block::Slab(a, s) => CLASSES[self.areas[a].slab(s).class as usize].size as usize,
            Block::Large(slot) => self.large_ref(slot).pages as usize * PAGE,
        })
    }

    /// The class of the block at `p` when it is a live small block (one a thread cache
    /// may hold), after the checks of [`Heap::free`]; None for a live block of any
    /// other kind.
    #[inline(always)]
    pub fn small_class_of(&self, p: *mut u8) -> Result<Option<usize>, Misuse> {
        let addr = p as usize;
        let area = &self.areas[0];
        if let Some(s) = area.slot_of(addr)
            && s < area.high.load(Ordering::Relaxed)
        {
            let slab = area.slab(s);
            let offset = (addr - area.slot_addr(s)) as u64;
            if (slab.state == LISTED || slab.state == FULL)
                && offset < u64::from(slab.bump)
                && classes::is_multiple(offset, CLASSES[slab.class as usize].magic)
            {
                return Ok(Some(slab.class as usize));
            }
        }
        self.small_class_slow(addr)
    }

    #[inline(never)]
    fn small_class_slow(&self, addr: usize) -> Result<Option<usize>, Misuse> {
        match self.locate(addr)? {
            Block::Slab(0, s) => Ok(Some(self.areas[0].slab(s).class as usize)),
            _ => Ok(None),
        }
    }

    /// Resizes the block at `p` to `new_size` bytes (keeping `align`), in place where
    /// it can; else moves it. `old_size`, when the caller knows it, bounds the copy.
    /// Null when no memory is left (`p` is then untouched).
    pub fn realloc(
        &mut self,
        p: *mut u8,
        old_size: Option<usize>,
        new_size: usize,
        align: usize,
    ) -> Result<*mut u8, Misuse> {
        let block = self.locate(p as usize)?;
        let usable = match block {
            Block::Slab(a, s) => {
                let class = self.areas[a].slab(s).class as usize;
                let usable = CLASSES[class].size as usize;
                let wanted = classes::class_for(new_size, align);
                // In place unless the block would be more than twice too big.
                if new_size <= usable
                    && wanted.is_some_and(|c| CLASSES[c].size as usize * 2 > usable)
                {
                    return Ok(p);
                }
                usable
            }
            Block::Large(slot) => {
                let have = self.large(slot).pages as usize * PAGE;
                let fits_slab = classes::class_for(new_size, align).is_some();
                if !(fits_slab && new_size * 2 <= have)
                    && let Some(q) = self.resize_large(slot, new_size)
                {
                    return Ok(q);
                }
                have
            }
        };
        let q = self.alloc(new_size, align);
        if q.is_null() {
            return Ok(q);
        }
        let n = old_size.unwrap_or(usable).min(usable).min(new_size);
        // SAFETY: both blocks hold at least `n` bytes and are distinct.
        unsafe { ptr::copy_nonoverlapping(p, q, n) };
        self.free(p)?;
        Ok(q)
    }

    /// The large block at `slot` resized in place, if possible.
    fn resize_large(&mut self, slot: u32, new_size: usize) -> Option<*mut u8> {
        let addr = self.large_addr(slot);
        let e = *self.large(slot);
        let have = e.pages as usize * PAGE;
        let want = new_size.max(1).checked_next_multiple_of(PAGE)?;
        if want <= have {
            if have - want >= SHRINK_MIN && (have - want) * 2 >= have {
                if self.source.resize(addr, have, want).is_err() {
                    return Some(addr as *mut u8); // keeping the pages is no error
                }
                self.counters.resizes += 1;
                self.counters.mapped -= have - want;
                self.counters.in_use -= have - want;
                self.large(slot).pages = (want / PAGE) as u32;
            }
            return Some(addr as *mut u8);
        }
        let need_run = want.div_ceil(LARGE_SLOT) as u32;
        if need_run > e.run {
            // Claim the slots after the run, if they are free.
            let end = slot.checked_add(need_run)?;
            if end as usize > LARGE_SLOTS {
                return None;
            }
            if self.ensure_large_table(end).is_err() {
                return None;
            }
            if (slot + e.run..end).any(|i| self.large_ref(i).state != UNUSED) {
                return None;
            }
            for i in slot + e.run..end {
                self.large(i).state = TAIL;
            }
            self.large(slot).run = need_run;
        }
        if self.source.resize(addr, have, want).is_err() {
            return None; // the slots stay claimed: harmless, freed with the block
        }
        self.counters.resizes += 1;
        self.counters.add_mapped(want - have);
        self.large(slot).pages = (want / PAGE) as u32;
        let c = &mut self.counters;
        c.in_use += want - have;
        c.peak_in_use = c.peak_in_use.max(c.in_use);
        c.recent_peak = c.recent_peak.max(c.in_use);
        Some(addr as *mut u8)
    }

    /// Gives every retained byte back to the kernel: cached large blocks, empty slabs
    /// and, when no block is live, the tables. Returns the bytes unmapped.
    pub fn trim(&mut self) -> usize {
        let before = self.counters.mapped;
        self.drop_cache();
        for a in 0..2 {
            while self.release_a_spare(a) {}
        }
        for class in 0..COUNT {
            // A slab made for an allocation that then failed is empty but not SPARE.
            let a = usize::from(class >= SMALL_COUNT);
            let mut s = self.lists[class];
            while s != NIL {
                let slab = *self.areas[a].slab(s);
                if slab.live == 0 {
                    self.counters.retained -= slab.mapped as usize;
                    self.release_slab(a, class, s);
                }
                s = slab.next;
            }
        }
        if self.counters.live_blocks == 0 {
            self.release_tables();
        }
        before - self.counters.mapped
    }

    fn release_tables(&mut self) {
        for a in 0..2 {
            let (table, len) = (self.areas[a].table, self.area_state[a].table_len);
            if len > 0 {
                self.unmap(table, len);
                self.counters.metadata -= len;
            }
            self.areas[a].high.store(0, Ordering::Release);
            self.area_state[a] = AREA_STATE;
        }
        self.lists = [NIL; COUNT];
        if self.large_table_len > 0 {
            self.unmap(self.base + LARGE_TABLE, self.large_table_len);
            self.counters.metadata -= self.large_table_len;
        }
        self.large_table_len = 0;
        self.large_high = 0;
    }

    // --- slots and tables ----------------------------------------------------------

    fn locate(&self, p: usize) -> Result<Block, Misuse> {
        for (a, area) in self.areas.iter().enumerate() {
            if let Some(s) = area.slot_of(p) {
                if s >= area.high.load(Ordering::Relaxed) {
                    return Err(Misuse::NotAllocated(p));
                }
                let slab = area.slab(s);
                if slab.state != LISTED && slab.state != FULL {
                    return Err(Misuse::NotAllocated(p)); // SPARE has no block either
                }
                let off = (p - area.slot_addr(s)) as u64;
                if off >= u64::from(slab.bump) {
                    return Err(Misuse::NotAllocated(p));
                }
                if !classes::is_multiple(off, CLASSES[slab.class as usize].magic) {
                    return Err(Misuse::Interior(p));
                }
                return Ok(Block::Slab(a, s));
            }
        }
        let off = p.wrapping_sub(self.base + LARGE_AREA);
        if off < LARGE_SLOTS * LARGE_SLOT {
            let slot = (off >> LARGE_SHIFT) as u32;
            if slot >= self.large_high {
                return Err(Misuse::NotAllocated(p));
            }
            let e = self.large_ref(slot);
            return match e.state {
                LIVE if off % LARGE_SLOT == 0 => Ok(Block::Large(slot)),
                LIVE | TAIL => Err(Misuse::Interior(p)),
                CACHED if off % LARGE_SLOT == 0 => Err(Misuse::DoubleFree(p)),
                _ => Err(Misuse::NotAllocated(p)),
            };
        }
        Err(Misuse::Foreign(p))
    }

    fn new_slab(&mut self, a: usize, class: usize) -> Result<u32, Reason> {
        if self.secret == 0 {
            self.secret = (self.seed)() | 1;
        }
        let csize = CLASSES[class].size as usize;
        let initial = if a == 0 {
            SMALL_INITIAL
        } else {
            MEDIUM_INITIAL
        };
        let initial = initial.max(csize.next_multiple_of(PAGE));
        let mut tries = 0;
        loop {
            let s = self.take_slot(a)?;
            let addr = self.areas[a].slot_addr(s);
            match self.source.map(addr, initial) {
                Ok(()) => {
                    self.counters.maps += 1;
                    self.counters.add_mapped(initial);
                    self.counters.retained += initial; // empty until its first block
                    let secret = self.secret;
                    let slab = self.areas[a].slab(s);
                    *slab = Slab {
                        free: secret,
                        next: NIL,
                        prev: NIL,
                        bump: 0,
                        mapped: initial as u32,
                        live: 0,
                        class: class as u8,
                        state: LISTED,
                        spare_next: slab.spare_next, // it may still be on the spare stack
                    };
                    self.push_front(a, class, s);
                    return Ok(s);
                }
                Err(e) if e.is(Errno::EEXIST) && tries < PLACE_TRIES => {
                    self.areas[a].slab(s).state = BAD;
                    tries += 1;
                }
                Err(e) => {
                    self.areas[a].slab(s).next = self.area_state[a].free_slots;
                    self.area_state[a].free_slots = s;
                    return Err(Reason::Kernel(e));
                }
            }
        }
    }

    /// An UNUSED slot of area `a`, its table entry mapped.
    fn take_slot(&mut self, a: usize) -> Result<u32, Reason> {
        let free = self.area_state[a].free_slots;
        if free != NIL {
            self.area_state[a].free_slots = self.areas[a].slab(free).next;
            return Ok(free);
        }
        let area = &self.areas[a];
        let s = area.high.load(Ordering::Relaxed);
        if s >= area.max {
            return Err(Reason::AreaFull);
        }
        let need = ((s as usize + 1) * core::mem::size_of::<Slab>()).next_multiple_of(PAGE);
        if need > self.area_state[a].table_len {
            let (table, old) = (area.table, self.area_state[a].table_len);
            let new = need.max(old * 2);
            let result = if old == 0 {
                self.source.map(table, new)
            } else {
                self.source.resize(table, old, new)
            };
            result.map_err(Reason::Kernel)?;
            if old == 0 {
                self.counters.maps += 1;
            } else {
                self.counters.resizes += 1;
            }
            self.counters.add_mapped(new - old);
            self.counters.metadata += new - old;
            self.area_state[a].table_len = new;
        }
        self.areas[a].high.store(s + 1, Ordering::Release);
        self.areas[a].slab(s).spare_next = UNLINKED; // a fresh entry (zeroed)
        Ok(s)
    }

    fn ensure_large_table(&mut self, slots: u32) -> Result<(), Error> {
        if slots <= self.large_high {
            return Ok(());
        }
        let need = (slots as usize * core::mem::size_of::<Large>()).next_multiple_of(PAGE);
        if need > self.large_table_len {
            let (table, old) = (self.base + LARGE_TABLE, self.large_table_len);
            if old == 0 {
                self.source.map(table, need)?;
                self.counters.maps += 1;
            } else {
                self.source.resize(table, old, need)?;
                self.counters.resizes += 1;
            }
            self.counters.add_mapped(need - old);
            self.counters.metadata += need - old;
            self.large_table_len = need;
        }
        // New entries are zero (fresh pages): UNUSED.
        self.large_high = slots;
        Ok(())
    }

    /// The first run of `run` UNUSED large slots starting at a multiple of `step`.
    fn find_large_run(&self, run: u32, step: u32) -> Option<u32> {
        let mut first = 0;
        while (first + run) as usize <= LARGE_SLOTS {
            match (first..first + run)
                .find(|&i| i < self.large_high && self.large_ref(i).state != UNUSED)
            {
                None => return Some(first),
                Some(taken) => first = (taken + 1).next_multiple_of(step),
            }
        }
        None
    }

    fn large_addr(&self, slot: u32) -> usize {
        self.base + LARGE_AREA + ((slot as usize) << LARGE_SHIFT)
    }

    fn large(&mut self, slot: u32) -> &mut Large {
        debug_assert!(slot < self.large_high);
        // SAFETY: the large table is mapped below `large_high`; `&mut self` is unique.
        unsafe { &mut *((self.base + LARGE_TABLE) as *mut Large).add(slot as usize) }
    }

    fn large_ref(&self, slot: u32) -> &Large {
        debug_assert!(slot < self.large_high);
        // SAFETY: as for `large`.
        unsafe { &*((self.base + LARGE_TABLE) as *const Large).add(slot as usize) }
    }

    // --- class lists ---------------------------------------------------------------

    fn push_front(&mut self, a: usize, class: usize, s: u32) {
        let head = self.lists[class];
        let area = &self.areas[a];
        let slab = area.slab(s);
        slab.prev = NIL;
        slab.next = head;
        if head != NIL {
            area.slab(head).prev = s;
        }
        self.lists[class] = s;
    }

    fn unlink(&mut self, a: usize, class: usize, s: u32) {
        let area = &self.areas[a];
        let (prev, next) = {
            let slab = area.slab(s);
            (slab.prev, slab.next)
        };
        if prev == NIL {
            if self.lists[class] == s {
                self.lists[class] = next;
            }
        } else {
            area.slab(prev).next = next;
        }
        if next != NIL {
            area.slab(next).prev = prev;
        }
        let slab = area.slab(s);
        slab.prev = NIL;
        slab.next = NIL;
    }

    // --- counters --------------------------------------------------------------------

    fn retain_budget(&self) -> usize {
        RETAIN_MIN.max(self.counters.recent_peak)
    }

    /// Counts a free; every DECAY_FREES frees the recent peak decays.
    #[inline]
    fn count_free(&mut self, usable: usize) {
        let c = &mut self.counters;
        c.in_use -= usable;
        c.live_blocks -= 1;
        c.frees += 1;
        if c.frees % u64::from(DECAY_FREES) == 0 {
            c.recent_peak = c.in_use.max(c.recent_peak - c.recent_peak / 8);
        }
    }

    fn unmap(&mut self, addr: usize, len: usize) {
        // MUNMAP of a range this heap mapped cannot fail on copra; if a source ever
        // does, the memory stays mapped and counted, and nothing else goes wrong.
        if self.source.unmap(addr, len).is_ok() {
            self.counters.unmaps += 1;
            self.counters.mapped -= len;
        }
    }

    #[cold]
    fn fail(&mut self, size: usize, align: usize, reason: Reason) -> *mut u8 {
        self.counters.failures += 1;
        self.last_failure = Some(Failure {
            size,
            align,
            reason,
        });
        ptr::null_mut()
    }

    #[cold]
    fn corrupt(&self, slot: usize) -> ! {
        panic!("heap: {}", Misuse::Corrupt(slot));
    }
}

/// A thread cache's unlocked view of the small slabs' table: enough to find a small
/// block's class from its address without the heap's lock.
///
/// Why it may read without the lock: the area's base, the table's address and the
/// slot geometry never change; `high` is atomic; the table is mapped below `high`
/// and stays mapped while any block is live (only [`Heap::trim`] unmaps it, and only
/// when none is); and the entry of a slab holding a live block keeps its class, a
/// state of LISTED or FULL and a `bump` past the block until the block is freed (the
/// lock holder changes those only when the slab has no live block). So for a pointer
/// the heap handed out and that is still live, [`SmallView::class_of`] reads stable
/// values and answers its class. For any other pointer the entry may be changing
/// under the lock; the answer is then only as good as a racy read, which is why it is
/// a fast path only: an answer of None sends the pointer to the locked checks.
#[derive(Clone, Copy)]
pub struct SmallView {
    /// The small area's first address.
    base: usize,
    /// The small slabs' table.
    table: usize,
    /// The area's `high` (null: no view yet; every pointer takes the locked path).
    high: *const AtomicU32,
}

impl SmallView {
    /// No view: [`SmallView::class_of`] answers None for every pointer.
    pub const NONE: Self = Self {
        base: 0,
        table: 0,
        high: ptr::null(),
    };

    /// The class of `p` if it starts a carved block of a small slab in use (LISTED or
    /// FULL, below its `bump`, at a multiple of the class size); None otherwise,
    /// including for null, for pointers outside the small area and without a view.
    /// O(1): a subtraction and a shift find the slot, its table entry says the rest.
    #[inline(always)]
    pub fn class_of(&self, p: usize) -> Option<usize> {
        let off = p.wrapping_sub(self.base);
        if self.high.is_null() || off >= SMALL_SLOTS << SMALL_SHIFT {
            return None;
        }
        let s = off >> SMALL_SHIFT;
        // SAFETY: `high` points into the heap, which outlives every cache using it.
        if s >= unsafe { &*self.high }.load(Ordering::Acquire) as usize {
            return None;
        }
        let entry = (self.table as *const Slab).wrapping_add(s);
        // SAFETY: the table is mapped below `high` (see the type's documentation);
        // single aligned loads, possibly racing the lock holder for a pointer that is
        // not a live block (the answer is then not trusted beyond a fast path).
        let (state, bump, class) = unsafe {
            (
                ptr::addr_of!((*entry).state).read_volatile(),
                ptr::addr_of!((*entry).bump).read_volatile(),
                ptr::addr_of!((*entry).class).read_volatile(),
            )
        };
        let in_slot = (off & ((1 << SMALL_SHIFT) - 1)) as u64;
        if state.wrapping_sub(LISTED) > FULL - LISTED
            || in_slot >= u64::from(bump)
            || class as usize >= SMALL_COUNT
            || !classes::is_multiple(in_slot, CLASSES[class as usize].magic)
        {
            return None;
        }
        Some(class as usize)
    }
}

/// The second word of a free block: distinguishes a free block from a live one.
#[inline]
pub fn free_mark(p: usize, secret: usize) -> usize {
    (p ^ secret).rotate_left(29) ^ 0x5a5a_5a5a_5a5a_5a5a
}

/// The mark a thread cache writes into the blocks it holds (not the heap's).
#[inline]
pub fn cache_mark(p: usize, secret: usize) -> usize {
    !free_mark(p, secret)
}

impl<S: PageSource> Heap<S> {
    /// The secret, for a thread cache's links and marks (0 before the first slab).
    pub fn secret(&self) -> usize {
        self.secret
    }

    /// The unlocked view of the small slabs' table for a thread cache. The heap must
    /// not move while a cache uses it (the process's heap is a static).
    pub fn small_view(&self) -> SmallView {
        let area = &self.areas[0];
        SmallView {
            base: area.base,
            table: area.table,
            high: &area.high,
        }
    }
}
