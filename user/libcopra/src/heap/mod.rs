//! The heap: every program's global allocator, on MMAP, MUNMAP and MRESIZE.
//!
//! With it, `alloc`'s `Vec`, `String`, `Box`, `BTreeMap`, `Arc` … work in every
//! program, and C programs get `malloc` & co. from the same heap (user/libcopra-c).
//! docs/heap.md has the design and the numbers; in short:
//!
//! - **Size classes** (heap/classes.rs) from 16 B to 128 KiB, four per doubling, in
//!   slabs of 64 KiB (up to 4 KiB) and 1 MiB; **large blocks** above that are mapped
//!   by themselves, each in a 1 GiB slot of address space so that it can grow in
//!   place (MRESIZE).
//! - **Free without the size**: a block's slot, found from its address, says what it
//!   is; no header precedes a block.
//! - **Alignment** up to 1 GiB (blocks of a class are aligned to the largest power of
//!   two dividing the class size; large blocks to their slot); more, up to 512 GiB,
//!   by placing a large block at an aligned run of slots.
//! - **realloc in place** within a block's class, and for large blocks by MRESIZE.
//! - **Memory goes back to the kernel** when a slab empties or a large block is
//!   freed, except what is kept for reuse: up to the recent peak of the bytes in use
//!   (decaying as frees go on), because on copra an unmap costs a memory-slot
//!   re-registration and the re-faulting of every page the process touches;
//!   [`trim`] gives everything kept back.
//! - **Out of memory**: the allocation returns null after one log line
//!   (`heap: out of memory: …`); for Rust's collections `handle_alloc_error` then
//!   panics with `memory allocation of N bytes failed`. C's `malloc` returns NULL.
//! - **Misuse** (double free, a foreign or interior pointer, a damaged free list) is
//!   caught before anything changes and ends the program with a panic naming it.
//! - [`stats`]: bytes in use, mapped, their peaks, and the syscalls made.
//!
//! # Locking
//!
//! One [`Locked`] lock (libcopra's futex `Mutex`) around the whole heap, never held
//! across anything that could wait. In front of it, each thread has a
//! [`cache::ThreadCache`] of small blocks in its thread-local storage (switched on at
//! program start, [`enable_thread_cache`]), which takes the lock once per batch of
//! blocks instead of once per block; a thread's cache goes back to the heap when the
//! thread ends ([`flush_thread_cache`], called by `thread::exit`), and [`trim`]
//! flushes the calling thread's first.

mod allocator;
mod cache;
mod classes;
mod pages;

use ::core::alloc::{GlobalAlloc, Layout};
use ::core::fmt;
use ::core::sync::atomic::{AtomicUsize, Ordering};

pub use self::allocator::{Counters, Failure, Heap, LARGE_SLOT, Misuse, PAGE, Reason, SPAN};
pub use self::cache::ThreadCache;
pub use self::classes::{MEDIUM_MAX, MIN_ALIGN, SMALL_MAX};
pub use self::pages::{KernelPages, PageSource};
pub use crate::abi::HeapStats;

/// Where every program's heap lives: 64 TiB, far from MMAP_BASE (16 TiB), where
/// MMAP without a hint places mappings, and from the program's image.
pub const HEAP_BASE: usize = 0x4000_0000_0000;

/// The heap's lock: libcopra's futex [`Mutex`](crate::sync::Mutex). Uncontended it
/// costs a compare-exchange to take and an exchange to release, no syscall; a thread
/// that finds it held sleeps in FUTEX_WAIT. It never allocates.
pub type Locked<T> = crate::sync::Mutex<T>;

fn seed() -> usize {
    crate::random::seed() as usize
}

/// The process's heap.
static HEAP: Locked<Heap<KernelPages>> = Locked::new(Heap::new(HEAP_BASE, KernelPages, seed));

/// Returns the calling thread's cache, or null where it has none.
pub type CacheHook = fn() -> *mut ThreadCache;

/// The installed [`CacheHook`] as an address; 0: none (every operation takes the lock).
static CACHE_HOOK: AtomicUsize = AtomicUsize::new(0);

/// Switches the per-thread cache on: from now on small allocations and every free go
/// through the cache `hook` returns for the calling thread.
///
/// # Safety
/// `hook` must return, for each thread, a cache that only that thread uses and that
/// lives as long as the thread; the thread must call [`flush_thread_cache`] before it
/// ends. Programs do not need it: the runtime's [`enable_thread_cache`] (each
/// thread's cache in its TLS, reached without a call) takes precedence over a hook.
pub unsafe fn set_thread_cache_hook(hook: CacheHook) {
    CACHE_HOOK.store(hook as usize, Ordering::Release);
}

#[inline(always)]
fn thread_cache() -> Option<&'static mut ThreadCache> {
    #[cfg(not(test))]
    if TLS_CACHE.load(Ordering::Relaxed) {
        // The common case, without the hook's indirect call.
        return tls_cache();
    }
    let hook = CACHE_HOOK.load(Ordering::Acquire);
    if hook == 0 {
        return None;
    }
    // SAFETY: only `set_thread_cache_hook` stores here, and it stores a CacheHook.
    let hook: CacheHook = unsafe { ::core::mem::transmute::<usize, CacheHook>(hook) };
    // SAFETY: the hook's contract: the calling thread's own cache, or null.
    unsafe { hook().as_mut() }
}

/// Set once by [`enable_thread_cache`]: every thread's cache is its TLS `CACHE`.
#[cfg(not(test))]
static TLS_CACHE: ::core::sync::atomic::AtomicBool = ::core::sync::atomic::AtomicBool::new(false);

/// Each thread's cache: a zeroed `.tbss` variable (an empty cache) in its TLS block.
#[cfg(not(test))]
#[unsafe(link_section = ".tbss.copra_tls")]
static mut CACHE: ThreadCache = ThreadCache::new();

/// The calling thread's cache, or None on a thread whose FS base is not a TCB of
/// copra's layout (a foreign block: it uses the lock alone).
#[cfg(not(test))]
#[inline(always)]
fn tls_cache() -> Option<&'static mut ThreadCache> {
    if !crate::tls::has_block() {
        return None;
    }
    let cache = crate::__tls_address!(CACHE) as *mut ThreadCache;
    // SAFETY: the calling thread's own copy, alive as long as the thread; only this
    // thread reaches it, and no caller holds another reference across this call.
    Some(unsafe { &mut *cache })
}

/// Switches the per-thread cache on, each thread's kept in its TLS block (a `.tbss`
/// variable). Called by the runtime before `main`. A thread without a TLS block of
/// copra's layout (a foreign FS base) keeps using the lock alone.
#[cfg(not(test))]
pub fn enable_thread_cache() {
    TLS_CACHE.store(true, Ordering::Relaxed);
}

/// Gives the calling thread's cached blocks back to the heap (at thread exit).
pub fn flush_thread_cache() {
    if let Some(cache) = thread_cache()
        && let Err(m) = cache.flush(&HEAP)
    {
        misuse(m);
    }
}

#[cold]
#[inline(never)]
fn misuse(m: Misuse) -> ! {
    panic!("heap: {m}");
}

#[cold]
#[inline(never)]
fn report(failure: Failure, counters: &Counters) {
    crate::println!(
        "heap: out of memory: {failure}; {} bytes in use, {} mapped",
        counters.in_use,
        counters.mapped
    );
}

/// Runs `f` on the locked heap, then reports a failure it left (after unlocking).
#[inline]
fn with_heap<R>(f: impl FnOnce(&mut Heap<KernelPages>) -> R) -> R {
    let mut heap = HEAP.lock();
    let result = f(&mut heap);
    if let Some(failure) = heap.take_failure() {
        let counters = heap.counters();
        drop(heap);
        report(failure, &counters);
    }
    result
}

/// A block of `size` bytes aligned to `align` (a power of two), zeroed if asked;
/// null when no memory is left.
///
/// The fast path, inline: a small size at the default alignment, popped from the
/// calling thread's bin. Everything else is [`allocate_slow`].
#[inline(always)]
pub fn allocate(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    if size <= classes::SMALL_MAX
        && align <= classes::MIN_ALIGN
        && let Some(cache) = thread_cache()
    {
        let p = cache.pop(classes::small_index(size));
        if !p.is_null() {
            if zeroed {
                // SAFETY: the block holds at least `size` bytes.
                unsafe { ::core::ptr::write_bytes(p, 0, size) };
            }
            return p;
        }
    }
    allocate_slow(size, align, zeroed)
}

/// [`allocate`] when the bin was empty (refill it), the request is aligned or not
/// small, or the thread has no cache.
#[inline(never)]
fn allocate_slow(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    if let Some(cache) = thread_cache()
        && let Some(class) = classes::class_for(size, align)
        && class < classes::SMALL_COUNT
    {
        match cache.alloc_slow(&HEAP, class) {
            Ok(p) if !p.is_null() => {
                if zeroed {
                    // SAFETY: the block holds at least `size` bytes.
                    unsafe { ::core::ptr::write_bytes(p, 0, size) };
                }
                return p;
            }
            Ok(_) => {} // out of memory: the shared path reports it
            Err(m) => misuse(m),
        }
    }
    allocate_shared(size, align, zeroed)
}

/// [`allocate`] under the lock: no cache, or not a small block, or none left.
#[inline(never)]
fn allocate_shared(size: usize, align: usize, zeroed: bool) -> *mut u8 {
    with_heap(|heap| {
        if zeroed {
            heap.alloc_zeroed(size, align)
        } else {
            heap.alloc(size, align)
        }
    })
}

/// Frees a block [`allocate`] or [`reallocate`] gave; null is ignored. A pointer the
/// heap did not hand out ends the program (a panic naming the misuse).
#[inline(always)]
pub fn free(p: *mut u8) {
    if let Some(cache) = thread_cache() {
        if let Err(m) = cache.free(&HEAP, p) {
            misuse(m);
        }
        return;
    }
    free_shared(p);
}

#[inline(never)]
fn free_shared(p: *mut u8) {
    let result = HEAP.lock().free(p);
    if let Err(m) = result {
        misuse(m);
    }
}

/// Resizes the block at `p` (from [`allocate`], with `align`) to `new_size` bytes,
/// in place where it can. Null when no memory is left; `p` is then still valid.
/// `old_size`, when known, bounds the bytes copied if the block moves.
pub fn reallocate(p: *mut u8, old_size: Option<usize>, new_size: usize, align: usize) -> *mut u8 {
    match with_heap(|heap| heap.realloc(p, old_size, new_size, align)) {
        Ok(q) => q,
        Err(m) => misuse(m),
    }
}

/// The usable size of the block at `p`: at least what was asked for.
pub fn usable_size(p: *mut u8) -> usize {
    let result = HEAP.lock().usable_size(p);
    result.unwrap_or_else(|m| misuse(m))
}

/// The heap's statistics now. The calling thread's cache is given back first, so its
/// blocks do not count; other threads' cached blocks count as in use (handed out).
pub fn stats() -> HeapStats {
    flush_thread_cache();
    to_stats(&HEAP.lock().counters())
}

/// Gives every retained byte back to the kernel (empty slabs, freed large blocks, and
/// the heap's tables when no block is live), after the calling thread's cache; returns
/// how many bytes were unmapped.
pub fn trim() -> usize {
    flush_thread_cache();
    HEAP.lock().trim()
}

/// The counters as the shared [`HeapStats`] layout.
pub fn to_stats(c: &Counters) -> HeapStats {
    HeapStats {
        in_use: c.in_use as u64,
        peak_in_use: c.peak_in_use as u64,
        mapped: c.mapped as u64,
        peak_mapped: c.peak_mapped as u64,
        retained: c.retained as u64,
        metadata: c.metadata as u64,
        live_blocks: c.live_blocks as u64,
        allocations: c.allocations,
        frees: c.frees,
        maps: c.maps,
        unmaps: c.unmaps,
        resizes: c.resizes,
        failures: c.failures,
    }
}

impl fmt::Debug for HeapStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeapStats")
            .field("in_use", &self.in_use)
            .field("peak_in_use", &self.peak_in_use)
            .field("mapped", &self.mapped)
            .field("peak_mapped", &self.peak_mapped)
            .field("retained", &self.retained)
            .field("metadata", &self.metadata)
            .field("live_blocks", &self.live_blocks)
            .field("allocations", &self.allocations)
            .field("frees", &self.frees)
            .field("maps", &self.maps)
            .field("unmaps", &self.unmaps)
            .field("resizes", &self.resizes)
            .field("failures", &self.failures)
            .finish()
    }
}

impl fmt::Display for HeapStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "in use {} (peak {}), mapped {} (peak {}, retained {}, tables {}), {} live blocks, \
             {} allocations, {} frees, {} MMAP, {} MUNMAP, {} MRESIZE, {} failures",
            self.in_use,
            self.peak_in_use,
            self.mapped,
            self.peak_mapped,
            self.retained,
            self.metadata,
            self.live_blocks,
            self.allocations,
            self.frees,
            self.maps,
            self.unmaps,
            self.resizes,
            self.failures
        )
    }
}

/// The global allocator of every program built against libcopra.
pub struct CopraHeap;

// SAFETY: `allocate` returns blocks of at least `size` bytes at `align`, distinct
// while live; `free` and `reallocate` accept exactly those.
unsafe impl GlobalAlloc for CopraHeap {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        allocate(layout.size(), layout.align(), false)
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        allocate(layout.size(), layout.align(), true)
    }

    #[inline]
    unsafe fn dealloc(&self, p: *mut u8, _layout: Layout) {
        free(p);
    }

    #[inline]
    unsafe fn realloc(&self, p: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        reallocate(p, Some(layout.size()), new_size, layout.align())
    }
}

#[cfg(not(test))]
#[global_allocator]
static GLOBAL: CopraHeap = CopraHeap;

#[cfg(test)]
mod tests;
