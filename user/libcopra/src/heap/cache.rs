//! A per-thread cache of small blocks in front of the shared heap.
//!
//! This is the layer that takes the heap's lock off the common path. Every program
//! has it on: [`enable_thread_cache`](super::enable_thread_cache) (called before
//! `main`) makes each thread use its `ThreadCache`, a zeroed `.tbss` variable in its
//! TLS block; `thread::exit` gives it back ([`ThreadCache::flush`]). docs/heap.md
//! describes it.
//!
//! How it works:
//! - `alloc` pops a block of the class from the thread's bin; an empty bin is refilled
//!   with half a bin of blocks under one acquisition of the lock.
//! - `free` finds the block's class without the lock, in O(1): slabs are aligned to
//!   their 64 KiB slot, so the address gives the slot and the slot's table entry the
//!   class ([`SmallView`], which also checks that the pointer starts a carved block of
//!   a slab in use). It checks the block's second word against both free marks (a
//!   double free) and pushes the block onto its bin. Anything else (a full bin, a
//!   pointer that is not a small block, a mark that says "already free", a thread
//!   without a view yet) takes the lock and is checked there as [`Heap::free`] checks
//!   it; a full bin gives half of itself back to the heap.
//! - Blocks in bins carry a mark of their own in their second word (not the heap's),
//!   bound to the bin link in the first word, so a write after free to either word is
//!   caught when the block is popped ([`Misuse::Corrupt`]) instead of sending the bin
//!   to a wild address.
//!
//! The heap counts blocks held by caches as in use: they were handed out.

use super::Locked;
use super::allocator::{Heap, Misuse, SmallView, cache_mark, free_mark};
use super::classes::{CLASSES, SMALL_COUNT, size_of};
use super::pages::PageSource;

/// A bin holds at most this many bytes of blocks (at least 4 and at most 128 blocks).
pub const BIN_BYTES: usize = 16 * 1024;

/// How many blocks class `class`'s bin holds at most (a table lookup: no division on
/// the free path).
#[inline(always)]
pub fn bin_capacity(class: usize) -> usize {
    usize::from(CAPACITY[class])
}

/// [`bin_capacity`] of every small class, computed at compile time.
static CAPACITY: [u8; SMALL_COUNT] = {
    let mut table = [0; SMALL_COUNT];
    let mut class = 0;
    while class < SMALL_COUNT {
        table[class] = capacity_of(class) as u8;
        class += 1;
    }
    table
};

const fn capacity_of(class: usize) -> usize {
    let n = BIN_BYTES / size_of(class);
    if n < 4 {
        4
    } else if n > 128 {
        128
    } else {
        n
    }
}

#[derive(Clone, Copy)]
struct Bin {
    /// Encoded first block (the encoding of null when empty).
    head: usize,
    count: usize,
}

/// One thread's cache. Not `Sync`: only its thread uses it. All zeroes is an empty
/// cache (a `.tbss` variable).
pub struct ThreadCache {
    bins: [Bin; SMALL_COUNT],
    /// The heap's secret, copied under the lock once a slab exists (bin links are
    /// encoded with it; the heap never changes it once set).
    secret: usize,
    /// The heap's small-slab table, for `free` without the lock; set with `secret`.
    view: SmallView,
}

impl Default for ThreadCache {
    fn default() -> Self {
        Self::new()
    }
}

impl ThreadCache {
    /// An empty cache.
    pub const fn new() -> Self {
        Self {
            bins: [Bin { head: 0, count: 0 }; SMALL_COUNT],
            secret: 0,
            view: SmallView::NONE,
        }
    }

    /// Blocks held in bins (free from the program's view, in use from the heap's).
    pub fn held(&self) -> usize {
        self.bins.iter().map(|b| b.count).sum()
    }

    /// A block of small class `class` (below [`SMALL_COUNT`]), or null when the heap
    /// has no memory left. A damaged bin is returned as the error.
    #[inline(always)]
    pub fn alloc<S: PageSource>(
        &mut self,
        shared: &Locked<Heap<S>>,
        class: usize,
    ) -> Result<*mut u8, Misuse> {
        let p = self.pop(class);
        if !p.is_null() {
            return Ok(p);
        }
        self.alloc_slow(shared, class)
    }

    /// [`ThreadCache::pop`] found nothing: the bin is empty (refill it from the heap) or
    /// its head is damaged (the error).
    #[inline(never)]
    pub fn alloc_slow<S: PageSource>(
        &mut self,
        shared: &Locked<Heap<S>>,
        class: usize,
    ) -> Result<*mut u8, Misuse> {
        if self.bins[class].count > 0 {
            let p = self.pop(class);
            if p.is_null() {
                return Err(Misuse::Corrupt(self.bins[class].head ^ self.secret));
            }
            return Ok(p);
        }
        let mut heap = shared.lock();
        let size = CLASSES[class].size as usize;
        for _ in 0..bin_capacity(class).div_ceil(2) {
            let p = heap.alloc_class(class, size, 16);
            if p.is_null() {
                break;
            }
            self.adopt(&heap); // a slab exists now
            self.push(class, p as usize);
        }
        drop(heap);
        Ok(self.pop(class))
    }

    /// Takes the heap's secret and table view (once a slab exists; never changed).
    #[inline(always)]
    fn adopt<S: PageSource>(&mut self, heap: &Heap<S>) {
        if self.secret == 0 {
            self.secret = heap.secret();
            if self.secret != 0 {
                self.view = heap.small_view();
            }
        }
    }

    /// Frees `p` (a block of the shared heap, or null): a live small block goes into
    /// its bin without the lock; everything else is checked and freed under it.
    #[inline(always)]
    pub fn free<S: PageSource>(
        &mut self,
        shared: &Locked<Heap<S>>,
        p: *mut u8,
    ) -> Result<(), Misuse> {
        let addr = p as usize;
        if let Some(class) = self.view.class_of(addr)
            && self.bins[class].count < bin_capacity(class)
        {
            // SAFETY: `class_of` found `p` at the start of a carved block of a slab
            // in use, so its two words are mapped.
            let (link, mark) = unsafe {
                (
                    (addr as *const usize).read(),
                    (addr as *const usize).add(1).read(),
                )
            };
            if mark != bin_mark(addr, link, self.secret) && mark != free_mark(addr, self.secret) {
                self.push(class, addr);
                return Ok(());
            }
        }
        self.free_slow(shared, p)
    }

    /// [`ThreadCache::free`] under the lock, with every check of [`Heap::free`].
    #[inline(never)]
    pub fn free_slow<S: PageSource>(
        &mut self,
        shared: &Locked<Heap<S>>,
        p: *mut u8,
    ) -> Result<(), Misuse> {
        if p.is_null() {
            return Ok(());
        }
        let mut heap = shared.lock();
        self.adopt(&heap);
        let Some(class) = heap.small_class_of(p)? else {
            return heap.free(p);
        };
        let addr = p as usize;
        // SAFETY: `small_class_of` checked that `p` starts a carved block.
        let (link, mark) =
            unsafe { ((addr as *const usize).read(), (addr as *const usize).add(1).read()) };
        if mark == bin_mark(addr, link, self.secret) || mark == free_mark(addr, self.secret) {
            return Err(Misuse::DoubleFree(addr));
        }
        // The bin is full (or the fast path had no view yet): give half of it back.
        let keep = bin_capacity(class) / 2;
        while self.bins[class].count > keep {
            let q = self.pop(class);
            if q.is_null() {
                return Err(Misuse::Corrupt(self.bins[class].head ^ self.secret));
            }
            heap.free(q)?;
        }
        self.push(class, addr);
        Ok(())
    }

    /// Gives every block back to the heap: at thread exit, `stats` and `trim`.
    pub fn flush<S: PageSource>(&mut self, shared: &Locked<Heap<S>>) -> Result<(), Misuse> {
        let mut heap = shared.lock();
        for class in 0..SMALL_COUNT {
            while self.bins[class].count > 0 {
                let q = self.pop(class);
                if q.is_null() {
                    return Err(Misuse::Corrupt(self.bins[class].head ^ self.secret));
                }
                heap.free(q)?;
            }
        }
        Ok(())
    }

    #[inline(always)]
    fn push(&mut self, class: usize, p: usize) {
        let bin = &mut self.bins[class];
        // SAFETY: `p` is a block of at least 16 bytes that nobody else uses now.
        unsafe {
            (p as *mut usize).write(bin.head);
            (p as *mut usize).add(1).write(bin_mark(p, bin.head, self.secret));
        }
        bin.head = p ^ self.secret;
        bin.count += 1;
    }

    /// The bin's first block, or null when the bin is empty or its first block's mark
    /// does not match its link (a write after free: [`ThreadCache::alloc_slow`] says so).
    #[inline(always)]
    pub fn pop(&mut self, class: usize) -> *mut u8 {
        let secret = self.secret;
        let bin = &mut self.bins[class];
        if bin.count == 0 {
            return core::ptr::null_mut();
        }
        let p = bin.head ^ secret;
        // SAFETY: `p` is a block this cache holds; its first word links the bin, its
        // second is the mark bound to that link.
        unsafe {
            let link = (p as *const usize).read();
            if (p as *const usize).add(1).read() != bin_mark(p, link, secret) {
                return core::ptr::null_mut();
            }
            bin.head = link;
            (p as *mut usize).add(1).write(0);
        }
        bin.count -= 1;
        p as *mut u8
    }
}

/// The second word of a block in a bin: the cache's mark, bound to the bin link in
/// the first word (a write to either is noticed when the block is popped).
#[inline(always)]
fn bin_mark(p: usize, link: usize, secret: usize) -> usize {
    cache_mark(p, secret) ^ link.rotate_left(17)
}
