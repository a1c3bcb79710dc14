//! A per-thread cache of small blocks in front of the shared heap.
//!
//! This is the layer that takes the heap's lock off the common path. Every program
//! has it on: [`enable_thread_cache`](super::enable_thread_cache) (called before
//! `main`) installs a hook that returns the calling thread's `ThreadCache`, a zeroed
//! `.tbss` variable in its TLS block; `thread::exit` gives it back
//! ([`ThreadCache::flush`]). docs/heap.md describes it.
//!
//! How it works, and why it never reads the heap without the lock:
//! - `alloc` pops a block of the class from the thread's bin; an empty bin is refilled
//!   with a batch of blocks under one acquisition of the lock.
//! - `free` only queues the pointer (no memory is read: the pointer is not checked
//!   yet). When the queue is full, or at the next refill, the queue is drained under
//!   the lock: each pointer is checked as [`Heap::free`] checks it, then kept in its
//!   class's bin if that bin has room, else given back to the heap.
//! - Blocks in bins carry a mark of their own in their second word (not the heap's),
//!   so a double free is caught when the queue is drained, whether the block sits in
//!   a bin, in the queue or in the heap. The mark is bound to the bin link in the first
//!   word, so a write after free to either word is caught when the block is popped
//!   ([`Misuse::Corrupt`]) instead of sending the bin to a wild address.
//!
//! The heap counts blocks held by caches as in use: they were handed out.

use super::Locked;
use super::allocator::{Heap, Misuse, cache_mark, free_mark};
use super::classes::{CLASSES, SMALL_COUNT, size_of};
use super::pages::PageSource;

/// Frees queued before the queue is drained.
pub const QUEUE: usize = 64;
/// A bin holds at most this many bytes of blocks (at least 4 and at most 128 blocks).
pub const BIN_BYTES: usize = 16 * 1024;

/// How many blocks class `class`'s bin holds at most (a table lookup: no division on
/// the drain's path).
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

/// One thread's cache. Not `Sync`: only its thread uses it.
pub struct ThreadCache {
    bins: [Bin; SMALL_COUNT],
    queue: [usize; QUEUE],
    queued: usize,
    /// The heap's secret, copied under the lock before the first block is kept (bin
    /// links are encoded with it; the heap never changes it once set).
    secret: usize,
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
            queue: [0; QUEUE],
            queued: 0,
            secret: 0,
        }
    }

    /// Blocks held in bins (free from the program's view, in use from the heap's).
    pub fn held(&self) -> usize {
        self.bins.iter().map(|b| b.count).sum()
    }

    /// A block of small class `class` (below [`SMALL_COUNT`]), or null when the heap
    /// has no memory left. A misused pointer found while draining the queue is
    /// returned as the error (nothing else was changed for it).
    #[inline(always)]
    pub fn alloc<S: PageSource>(
        &mut self,
        shared: &Locked<Heap<S>>,
        class: usize,
    ) -> Result<*mut u8, Misuse> {
        if let Some(p) = self.pop(class)? {
            return Ok(p);
        }
        self.refill(shared, class)
    }

    /// The bin of `class` is empty: drain the queue and take half a bin from the heap.
    #[inline(never)]
    fn refill<S: PageSource>(
        &mut self,
        shared: &Locked<Heap<S>>,
        class: usize,
    ) -> Result<*mut u8, Misuse> {
        let mut heap = shared.lock();
        self.drain(&mut heap)?;
        let size = CLASSES[class].size as usize;
        for _ in 0..bin_capacity(class).div_ceil(2) {
            let p = heap.alloc_class(class, size, 16);
            if p.is_null() {
                break;
            }
            self.secret = heap.secret(); // set once a slab exists, never changed after
            self.push(class, p as usize);
        }
        drop(heap);
        Ok(self.pop(class)?.unwrap_or(core::ptr::null_mut()))
    }

    /// Queues `p` (a block of the shared heap, or null) to be freed.
    #[inline(always)]
    pub fn free<S: PageSource>(
        &mut self,
        shared: &Locked<Heap<S>>,
        p: *mut u8,
    ) -> Result<(), Misuse> {
        if p.is_null() {
            return Ok(());
        }
        self.queue[self.queued] = p as usize;
        self.queued += 1;
        if self.queued == QUEUE {
            return self.drain_locked(shared);
        }
        Ok(())
    }

    #[inline(never)]
    fn drain_locked<S: PageSource>(&mut self, shared: &Locked<Heap<S>>) -> Result<(), Misuse> {
        let mut heap = shared.lock();
        self.drain(&mut heap)
    }

    /// Gives every block back to the heap: at thread exit.
    pub fn flush<S: PageSource>(&mut self, shared: &Locked<Heap<S>>) -> Result<(), Misuse> {
        let mut heap = shared.lock();
        self.drain(&mut heap)?;
        for class in 0..SMALL_COUNT {
            while let Some(p) = self.pop(class)? {
                heap.free(p)?;
            }
        }
        Ok(())
    }

    fn drain<S: PageSource>(&mut self, heap: &mut Heap<S>) -> Result<(), Misuse> {
        let secret = heap.secret();
        while self.queued > 0 {
            let p = self.queue[self.queued - 1];
            match heap.small_class_of(p as *mut u8)? {
                Some(class) => {
                    // SAFETY: `small_class_of` checked that `p` starts a carved block.
                    let (link, mark) =
                        unsafe { ((p as *const usize).read(), (p as *const usize).add(1).read()) };
                    if mark == bin_mark(p, link, secret) || mark == free_mark(p, secret) {
                        return Err(Misuse::DoubleFree(p));
                    }
                    if self.bins[class].count < bin_capacity(class) {
                        self.secret = secret; // nonzero: `p` is a slab block
                        self.push(class, p);
                    } else {
                        heap.free(p as *mut u8)?;
                    }
                }
                None => heap.free(p as *mut u8)?,
            }
            self.queued -= 1;
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

    #[inline(always)]
    fn pop(&mut self, class: usize) -> Result<Option<*mut u8>, Misuse> {
        let bin = &mut self.bins[class];
        if bin.count == 0 {
            return Ok(None);
        }
        let p = bin.head ^ self.secret;
        // SAFETY: `p` is a block this cache holds; its first word links the bin, its
        // second is the mark bound to that link.
        unsafe {
            let link = (p as *const usize).read();
            if (p as *const usize).add(1).read() != bin_mark(p, link, self.secret) {
                return Err(Misuse::Corrupt(p));
            }
            bin.head = link;
            (p as *mut usize).add(1).write(0);
        }
        bin.count -= 1;
        Ok(Some(p as *mut u8))
    }
}

/// The second word of a block in a bin: the cache's mark, bound to the bin link in
/// the first word (a write to either is noticed when the block is popped).
#[inline(always)]
fn bin_mark(p: usize, link: usize, secret: usize) -> usize {
    cache_mark(p, secret) ^ link.rotate_left(17)
}
