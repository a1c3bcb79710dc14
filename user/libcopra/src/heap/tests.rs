//! Host tests of the heap (`cargo test` for the host target, see docs/heap.md).
//!
//! [`HostPages`] puts Linux's mmap (MAP_FIXED_NOREPLACE: the address asked for or
//! EEXIST, as copra's hint), munmap and mremap (in place only, as MRESIZE) behind
//! [`PageSource`], with a byte limit to make the kernel "run out". Each test heap gets
//! its own 2 TiB span, returned when the test ends.

extern crate std;

use std::sync::Mutex;
use std::vec::Vec;

use super::Locked;
use super::allocator::{DECAY_FREES, Heap, LARGE_KEEP_MAX, Misuse, PAGE, RETAIN_MIN, Reason, SPAN};
use super::cache::{ThreadCache, bin_capacity};
use super::classes::{self, CLASSES, COUNT, MEDIUM_MAX, SMALL_COUNT};
use super::pages::PageSource;
use crate::abi::Errno;
use crate::error::{Error, Result};

// --- Linux behind PageSource ------------------------------------------------------

const SYS_MMAP: usize = 9;
const SYS_MUNMAP: usize = 11;
const SYS_MREMAP: usize = 25;
const PROT_RW: usize = 3;
const MAP_PRIVATE_ANON_NOREPLACE: usize = 0x02 | 0x20 | 0x10_0000;

fn linux(nr: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: only the memory-management calls above, on ranges the tests own.
    unsafe {
        core::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
            in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    ret
}

fn errno(ret: isize) -> Error {
    Error::from_errno(match -ret {
        17 => Errno::EEXIST,
        12 => Errno::ENOMEM,
        _ => Errno::EINVAL,
    })
}

/// Linux memory for a test heap, at most `limit` bytes at once.
pub struct HostPages {
    pub mapped: usize,
    pub limit: usize,
    pub maps: Vec<(usize, usize)>,
    /// Calls per area (tables, small, medium, large) and kind (map, unmap, resize).
    pub calls: [[u64; 3]; 4],
    /// Bytes mapped or grown, in total.
    pub mapped_total: usize,
}

fn area_of(addr: usize) -> usize {
    match addr % SPAN {
        off if off < 1 << 30 => 0,
        off if off < 32 << 30 => 1,
        off if off < 1 << 40 => 2,
        _ => 3,
    }
}

impl HostPages {
    fn new(limit: usize) -> Self {
        Self {
            mapped: 0,
            limit,
            maps: Vec::new(),
            calls: [[0; 3]; 4],
            mapped_total: 0,
        }
    }

    fn record(&mut self, addr: usize, len: usize) {
        match self.maps.iter_mut().find(|m| m.0 == addr) {
            Some(m) => m.1 = len,
            None => self.maps.push((addr, len)),
        }
        self.maps.retain(|m| m.1 > 0);
    }
}

impl PageSource for HostPages {
    fn map(&mut self, addr: usize, len: usize) -> Result<()> {
        assert!(addr % PAGE == 0 && len % PAGE == 0 && len > 0);
        self.calls[area_of(addr)][0] += 1;
        if self.mapped + len > self.limit {
            return Err(Error::from_errno(Errno::ENOMEM));
        }
        let ret = linux(
            SYS_MMAP,
            [
                addr,
                len,
                PROT_RW,
                MAP_PRIVATE_ANON_NOREPLACE,
                usize::MAX,
                0,
            ],
        );
        if ret < 0 {
            return Err(errno(ret));
        }
        assert_eq!(
            ret as usize, addr,
            "old kernel without MAP_FIXED_NOREPLACE?"
        );
        self.mapped += len;
        self.mapped_total += len;
        self.record(addr, len);
        Ok(())
    }

    fn unmap(&mut self, addr: usize, len: usize) -> Result<()> {
        self.calls[area_of(addr)][1] += 1;
        let ret = linux(SYS_MUNMAP, [addr, len, 0, 0, 0, 0]);
        assert_eq!(ret, 0);
        self.mapped -= len;
        self.record(addr, 0);
        Ok(())
    }

    fn resize(&mut self, addr: usize, old_len: usize, new_len: usize) -> Result<()> {
        self.calls[area_of(addr)][2] += 1;
        if new_len > old_len && self.mapped + new_len - old_len > self.limit {
            return Err(Error::from_errno(Errno::ENOMEM));
        }
        let ret = linux(SYS_MREMAP, [addr, old_len, new_len, 0, 0, 0]);
        if ret < 0 {
            return Err(errno(ret));
        }
        self.mapped = self.mapped + new_len - old_len;
        self.mapped_total += new_len.saturating_sub(old_len);
        self.record(addr, new_len);
        Ok(())
    }
}

impl Drop for HostPages {
    fn drop(&mut self) {
        for &(addr, len) in &self.maps {
            linux(SYS_MUNMAP, [addr, len, 0, 0, 0, 0]);
        }
    }
}

// --- a span of address space per test heap -----------------------------------------

/// Spans from 2 TiB; 30 of them stay below the 64 TiB where Linux puts programs.
const SPANS: usize = 30;
static FREE_SPANS: Mutex<u64> = Mutex::new((1 << SPANS) - 1);

struct Span(usize);

impl Span {
    fn take() -> Self {
        loop {
            let mut free = FREE_SPANS.lock().unwrap();
            if *free != 0 {
                let i = free.trailing_zeros() as usize;
                *free &= !(1 << i);
                return Span(i);
            }
            drop(free);
            std::thread::yield_now();
        }
    }

    fn base(&self) -> usize {
        (1 + self.0) * SPAN
    }
}

impl Drop for Span {
    fn drop(&mut self) {
        *FREE_SPANS.lock().unwrap() |= 1 << self.0;
    }
}

/// A heap on Linux memory; its span is returned when it is dropped (after the heap,
/// whose HostPages unmaps everything).
struct TestHeap {
    heap: Heap<HostPages>,
    _span: Span,
}

impl core::ops::Deref for TestHeap {
    type Target = Heap<HostPages>;
    fn deref(&self) -> &Heap<HostPages> {
        &self.heap
    }
}

impl core::ops::DerefMut for TestHeap {
    fn deref_mut(&mut self) -> &mut Heap<HostPages> {
        &mut self.heap
    }
}

fn fixed_seed() -> usize {
    0x0123_4567_89ab_cdef
}

fn heap_with_limit(limit: usize) -> TestHeap {
    let span = Span::take();
    TestHeap {
        heap: Heap::new(span.base(), HostPages::new(limit), fixed_seed),
        _span: span,
    }
}

fn heap() -> TestHeap {
    heap_with_limit(usize::MAX / 2)
}

/// splitmix64, the tests' random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        crate::random::splitmix64(&mut self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// 1..=max, spread evenly over the powers of two.
    fn size(&mut self, max: usize) -> usize {
        let bits = self.below(u64::from(usize::BITS - max.leading_zeros())) as u32;
        let hi = (1usize << bits).min(max);
        let lo = hi / 2 + 1;
        lo + self.below((hi - lo + 1) as u64) as usize
    }
}

fn fill(p: *mut u8, len: usize, seed: u8) {
    for i in 0..len {
        // SAFETY: the tests fill only blocks of at least `len` bytes.
        unsafe { p.add(i).write(seed.wrapping_add(i as u8).wrapping_mul(31)) };
    }
}

fn check(p: *const u8, len: usize, seed: u8) -> bool {
    // SAFETY: as in `fill`.
    (0..len).all(|i| unsafe { p.add(i).read() } == seed.wrapping_add(i as u8).wrapping_mul(31))
}

/// The heap's counters agree with what Linux holds for it.
fn assert_consistent(h: &TestHeap) {
    let c = h.counters();
    assert_eq!(c.mapped, h.source().mapped);
    assert!(c.retained <= c.mapped);
    assert!(c.peak_mapped >= c.mapped && c.peak_in_use >= c.in_use);
}

// --- size classes ------------------------------------------------------------------

#[test]
fn class_sizes_hold_the_request_and_waste_at_most_a_quarter() {
    for size in 1..=MEDIUM_MAX {
        let class = classes::index_of(size);
        let csize = CLASSES[class].size as usize;
        assert!(csize >= size, "size {size}: class {csize}");
        assert!(
            class == 0 || (CLASSES[class - 1].size as usize) < size,
            "size {size}"
        );
        if size > 128 {
            assert!(csize * 4 <= size * 5 + 3 * 16, "size {size}: class {csize}");
        }
    }
    assert_eq!(classes::class_for(MEDIUM_MAX + 1, 16), None);
}

#[test]
fn class_for_an_alignment_has_aligned_blocks() {
    let mut align = 1;
    while align <= 1 << 20 {
        for size in [1, 17, 100, 1000, 4096, 5000, 65536, MEDIUM_MAX] {
            if let Some(c) = classes::class_for(size, align) {
                assert_eq!(
                    CLASSES[c].size as usize % align.max(16),
                    0,
                    "{size} at {align}"
                );
                assert!(CLASSES[c].size as usize >= size);
            }
        }
        align *= 2;
    }
}

#[test]
fn divisibility_by_multiplication_matches_the_remainder() {
    for c in CLASSES.iter() {
        let size = u64::from(c.size);
        let slot = if c.size as usize <= classes::SMALL_MAX {
            1 << 16
        } else {
            1 << 20
        };
        for off in (0..slot).step_by(16) {
            assert_eq!(
                classes::is_multiple(off, c.magic),
                off % size == 0,
                "{off} / {size}"
            );
        }
    }
}

// --- allocation and free -----------------------------------------------------------

#[test]
fn blocks_of_every_class_are_distinct_aligned_and_freed_without_their_size() {
    let mut h = heap();
    let mut blocks = Vec::new();
    for class in 0..COUNT {
        let size = CLASSES[class].size as usize;
        for n in 0..3 {
            let p = h.alloc(size, 16);
            assert!(!p.is_null());
            assert_eq!(p as usize % 16, 0);
            assert_eq!(h.usable_size(p), Ok(size));
            fill(p, size, n);
            blocks.push((p, size, n));
        }
    }
    for &(p, size, n) in &blocks {
        assert!(check(p, size, n), "block at {p:?} was overwritten");
    }
    for &(p, _, _) in &blocks {
        h.free(p).unwrap();
    }
    assert_eq!(h.counters().in_use, 0);
    assert_eq!(h.counters().live_blocks, 0);
    assert_consistent(&h);
}

#[test]
fn zero_sized_requests_get_a_block() {
    let mut h = heap();
    let p = h.alloc(0, 1);
    assert!(!p.is_null());
    h.free(p).unwrap();
}

#[test]
fn alignments_up_to_and_beyond_a_page_hold() {
    let mut h = heap();
    let mut align = 1usize;
    while align <= 4 << 30 {
        for size in [1, 24, 4096, 70_000, 300_000] {
            let p = h.alloc(size, align);
            assert!(!p.is_null(), "size {size} align {align}");
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            fill(p, size, 1);
            h.free(p).unwrap();
        }
        align *= 4;
    }
    assert_eq!(h.counters().in_use, 0);
}

#[test]
fn large_blocks_are_mapped_by_themselves_and_usable_to_the_page() {
    let mut h = heap();
    let p = h.alloc(MEDIUM_MAX + 1, 16);
    assert_eq!(
        h.usable_size(p),
        Ok((MEDIUM_MAX + 1).next_multiple_of(PAGE))
    );
    assert_eq!(p as usize % super::LARGE_SLOT, 0);
    fill(p, MEDIUM_MAX + PAGE, 3);
    h.free(p).unwrap();
    assert_consistent(&h);
}

#[test]
fn alloc_zeroed_is_zero_even_in_reused_memory() {
    let mut h = heap();
    for size in [40, 3000, 100_000, 600_000] {
        let p = h.alloc(size, 16);
        fill(p, size, 0xAB);
        h.free(p).unwrap();
        let q = h.alloc_zeroed(size, 16);
        // SAFETY: q holds `size` bytes.
        assert!(
            (0..size).all(|i| unsafe { q.add(i).read() } == 0),
            "size {size}"
        );
        h.free(q).unwrap();
    }
}

// --- realloc -------------------------------------------------------------------------

#[test]
fn realloc_within_the_class_stays_in_place() {
    let mut h = heap();
    let p = h.alloc(100, 16); // class 112
    assert_eq!(h.realloc(p, Some(100), 112, 16), Ok(p));
    assert_eq!(h.realloc(p, Some(112), 90, 16), Ok(p));
    h.free(p).unwrap();
}

#[test]
fn realloc_to_another_class_moves_and_copies() {
    let mut h = heap();
    let p = h.alloc(100, 16);
    let keep = h.alloc(100, 16); // keeps p's slab in use
    fill(p, 100, 7);
    let q = h.realloc(p, Some(100), 5000, 16).unwrap();
    assert_ne!(p, q);
    assert!(check(q, 100, 7));
    assert_eq!(h.free(p), Err(Misuse::DoubleFree(p as usize)));
    let r = h.realloc(q, Some(5000), 10, 16).unwrap(); // far too big a block: moves
    assert_ne!(q, r);
    assert!(check(r, 10, 7));
    h.free(r).unwrap();
    h.free(keep).unwrap();
    assert_eq!(h.counters().in_use, 0);
}

#[test]
fn realloc_of_a_large_block_grows_and_shrinks_in_place() {
    let mut h = heap();
    let p = h.alloc(1 << 20, 16);
    fill(p, 1 << 20, 9);
    let resizes = h.counters().resizes;
    let q = h.realloc(p, Some(1 << 20), 64 << 20, 16).unwrap();
    assert_eq!(p, q);
    assert!(check(q, 1 << 20, 9));
    assert_eq!(h.counters().resizes, resizes + 1);
    assert_eq!(h.usable_size(q), Ok(64 << 20));
    let q = h.realloc(q, None, 2 << 20, 16).unwrap();
    assert_eq!(p, q);
    assert_eq!(h.usable_size(q), Ok(2 << 20));
    assert_eq!(h.counters().in_use, 2 << 20);
    assert_consistent(&h);
    h.free(q).unwrap();
}

#[test]
fn realloc_of_a_large_block_past_its_slot_claims_the_next_slots() {
    let mut h = heap();
    let p = h.alloc(1 << 20, 16);
    fill(p, 4096, 5);
    let q = h.realloc(p, None, super::LARGE_SLOT + PAGE, 16).unwrap();
    assert_eq!(p, q);
    assert!(check(q, 4096, 5));
    // The claimed slot is taken: the next large block goes after it.
    let r = h.alloc(1 << 20, 16);
    assert_eq!(r as usize - p as usize, 2 * super::LARGE_SLOT);
    h.free(q).unwrap();
    h.free(r).unwrap();
}

#[test]
fn realloc_of_a_small_block_to_large_moves_it() {
    let mut h = heap();
    let p = h.alloc(64, 16);
    fill(p, 64, 2);
    let q = h.realloc(p, None, 1 << 20, 16).unwrap();
    assert!(check(q, 64, 2));
    h.free(q).unwrap();
}

// --- memory back to the kernel -----------------------------------------------------

#[test]
fn emptied_slabs_are_kept_within_the_budget_and_trim_returns_them() {
    let mut h = heap();
    let n = 200_000; // 200 000 x 48 B: about 150 small slabs
    let blocks: Vec<_> = (0..n).map(|_| h.alloc(48, 16)).collect();
    for &p in &blocks {
        h.free(p).unwrap();
    }
    let c = h.counters();
    assert_eq!(c.in_use, 0);
    assert!(
        c.retained <= RETAIN_MIN.max(c.recent_peak),
        "retained {}",
        c.retained
    );
    assert_eq!(c.retained, c.mapped - c.metadata);
    assert!(h.trim() >= c.retained);
    assert_eq!(h.counters().mapped, 0);
    assert_consistent(&h);
}

#[test]
fn freed_large_blocks_are_kept_for_reuse_within_the_budget() {
    let mut h = heap();
    let blocks: Vec<_> = (0..8).map(|_| h.alloc(4 << 20, 16)).collect();
    for &p in &blocks {
        h.free(p).unwrap();
    }
    let c = h.counters();
    assert!(c.retained <= RETAIN_MIN.max(c.recent_peak));
    assert_eq!(c.unmaps, 0);
    // A kept block is reused without a syscall, and a smaller request fits it too.
    let (maps, resizes) = (c.maps, c.resizes);
    let again: Vec<_> = (0..8)
        .map(|i| h.alloc((4 << 20) - i * 100_000, 16))
        .collect();
    assert!(again.iter().all(|p| blocks.contains(p)));
    assert_eq!((h.counters().maps, h.counters().resizes), (maps, resizes));
    for p in again {
        h.free(p).unwrap();
    }
    assert_consistent(&h);
}

#[test]
fn a_freed_block_beyond_the_keep_limit_goes_back_at_once() {
    let mut h = heap();
    let p = h.alloc(LARGE_KEEP_MAX + 1, 16);
    let mapped = h.counters().mapped;
    h.free(p).unwrap();
    let c = h.counters();
    assert_eq!(c.unmaps, 1);
    assert_eq!(c.mapped, mapped - (LARGE_KEEP_MAX + PAGE));
    assert_eq!(c.retained, 0);
}

#[test]
fn kept_memory_goes_back_as_the_recent_peak_decays() {
    let mut h = heap();
    let blocks: Vec<_> = (0..8).map(|_| h.alloc(4 << 20, 16)).collect();
    let small: Vec<_> = (0..20_000).map(|_| h.alloc(200, 16)).collect();
    for &p in blocks.iter().chain(&small) {
        h.free(p).unwrap();
    }
    assert!(h.counters().retained > 32 << 20);
    // The program goes on with little memory: each DECAY_FREES frees the budget
    // shrinks by an eighth, and what is kept beyond it is given back.
    for _ in 0..40 * DECAY_FREES {
        let p = h.alloc(32, 16);
        h.free(p).unwrap();
    }
    let c = h.counters();
    assert!(c.retained <= RETAIN_MIN, "retained {}", c.retained);
    assert!(c.unmaps >= 8);
    assert_consistent(&h);
}

#[test]
fn trim_returns_everything_when_nothing_is_live() {
    let mut h = heap();
    let mut rng = Rng(5);
    let blocks: Vec<_> = (0..2000).map(|_| h.alloc(rng.size(1 << 20), 16)).collect();
    for &p in &blocks {
        h.free(p).unwrap();
    }
    assert!(h.counters().mapped > 0);
    let released = h.trim();
    assert!(released > 0);
    let c = h.counters();
    assert_eq!((c.mapped, c.retained, c.metadata), (0, 0, 0));
    assert_eq!(h.source().mapped, 0);
    assert!(h.source().maps.is_empty());
    // And it starts over cleanly.
    let p = h.alloc(10, 16);
    assert!(!p.is_null());
    h.free(p).unwrap();
}

#[test]
fn trim_keeps_live_blocks_and_their_tables() {
    let mut h = heap();
    let keep = h.alloc(32, 16);
    fill(keep, 32, 4);
    let gone: Vec<_> = (0..5000).map(|_| h.alloc(32, 16)).collect();
    for &p in &gone {
        h.free(p).unwrap();
    }
    h.trim();
    assert!(check(keep, 32, 4));
    assert_eq!(h.counters().retained, 0);
    h.free(keep).unwrap();
    assert_consistent(&h);
}

// --- out of memory -------------------------------------------------------------------

#[test]
fn out_of_memory_returns_null_and_says_why() {
    let mut h = heap_with_limit(4 << 20);
    let p = h.alloc(8 << 20, 16);
    assert!(p.is_null());
    let failure = h.take_failure().unwrap();
    assert_eq!(failure.size, 8 << 20);
    assert_eq!(
        failure.reason,
        Reason::Kernel(Error::from_errno(Errno::ENOMEM))
    );
    assert_eq!(h.counters().failures, 1);
    // Nothing was lost: the heap still serves what fits.
    let q = h.alloc(1 << 20, 16);
    assert!(!q.is_null());
    h.free(q).unwrap();
    assert_consistent(&h);
}

#[test]
fn out_of_memory_in_small_blocks_returns_null_and_keeps_the_others() {
    let mut h = heap_with_limit(1 << 20);
    let mut blocks = Vec::new();
    loop {
        let p = h.alloc(1000, 16);
        if p.is_null() {
            break;
        }
        fill(p, 1000, blocks.len() as u8);
        blocks.push(p);
    }
    assert!(blocks.len() > 500);
    assert!(matches!(
        h.take_failure().unwrap().reason,
        Reason::Kernel(_)
    ));
    for (i, &p) in blocks.iter().enumerate() {
        assert!(check(p, 1000, i as u8));
        h.free(p).unwrap();
    }
    assert_eq!(h.counters().in_use, 0);
}

#[test]
fn requests_beyond_the_span_fail_as_too_large() {
    let mut h = heap();
    assert!(h.alloc(usize::MAX - 10, 16).is_null());
    assert_eq!(h.take_failure().unwrap().reason, Reason::TooLarge);
    assert!(h.alloc(2 << 40, 16).is_null());
    assert_eq!(h.take_failure().unwrap().reason, Reason::TooLarge);
}

#[test]
fn a_slot_taken_by_someone_else_is_skipped() {
    let mut h = heap();
    let first = h.alloc(1 << 20, 16);
    h.free(first).unwrap();
    h.trim();
    // Someone maps where the heap would put its next large block.
    let squatter = linux(
        SYS_MMAP,
        [
            first as usize,
            PAGE,
            PROT_RW,
            MAP_PRIVATE_ANON_NOREPLACE,
            usize::MAX,
            0,
        ],
    );
    assert_eq!(squatter, first as isize);
    let p = h.alloc(1 << 20, 16);
    assert!(!p.is_null());
    assert_ne!(p, first);
    h.free(p).unwrap();
    linux(SYS_MUNMAP, [first as usize, PAGE, 0, 0, 0, 0]);
}

// --- misuse --------------------------------------------------------------------------

#[test]
fn double_free_of_a_small_block_is_caught() {
    let mut h = heap();
    let p = h.alloc(24, 16);
    let _keep = h.alloc(24, 16); // the slab stays in use
    h.free(p).unwrap();
    assert_eq!(h.free(p), Err(Misuse::DoubleFree(p as usize)));
}

#[test]
fn double_free_of_a_large_block_is_caught() {
    let mut h = heap();
    let p = h.alloc(1 << 20, 16);
    h.free(p).unwrap();
    let err = h.free(p).unwrap_err();
    assert!(
        matches!(err, Misuse::DoubleFree(_) | Misuse::NotAllocated(_)),
        "{err:?}"
    );
}

#[test]
fn free_of_a_foreign_pointer_is_caught() {
    let mut h = heap();
    let _p = h.alloc(24, 16);
    let mut local = 0u64;
    let foreign = &raw mut local as *mut u8;
    assert_eq!(h.free(foreign), Err(Misuse::Foreign(foreign as usize)));
}

#[test]
fn free_inside_a_block_is_caught() {
    let mut h = heap();
    let p = h.alloc(100, 16);
    // SAFETY: inside the block.
    let inner = unsafe { p.add(16) };
    assert_eq!(h.free(inner), Err(Misuse::Interior(inner as usize)));
    let big = h.alloc(1 << 20, 16);
    // SAFETY: inside the block.
    let inner = unsafe { big.add(PAGE) };
    assert_eq!(h.free(inner), Err(Misuse::Interior(inner as usize)));
    h.free(p).unwrap();
    h.free(big).unwrap();
}

#[test]
fn free_of_a_never_allocated_heap_address_is_caught() {
    let mut h = heap();
    let p = h.alloc(100, 16);
    // SAFETY: an address in the same slab, past every carved block (not dereferenced).
    let beyond = unsafe { p.add(8 * 112) };
    assert_eq!(h.free(beyond), Err(Misuse::NotAllocated(beyond as usize)));
    h.free(p).unwrap();
}

#[test]
fn misuse_changes_nothing() {
    let mut h = heap();
    let p = h.alloc(64, 16);
    let q = h.alloc(64, 16);
    h.free(p).unwrap();
    let before = h.counters();
    assert!(h.free(p).is_err());
    let after = h.counters();
    assert_eq!(
        (before.in_use, before.live_blocks, before.frees),
        (after.in_use, after.live_blocks, after.frees)
    );
    h.free(q).unwrap();
}

#[test]
#[should_panic(expected = "damaged")]
fn a_free_list_damaged_by_a_write_after_free_is_caught() {
    let mut h = heap();
    let p = h.alloc(32, 16);
    let q = h.alloc(32, 16);
    let _keep = h.alloc(32, 16); // keeps the slab in use
    h.free(q).unwrap();
    h.free(p).unwrap();
    // SAFETY: a deliberate write after free, into the link of the free block.
    unsafe { (p as *mut usize).write(0x1234_5678) };
    let _ = h.alloc(32, 16); // takes p, reads its damaged link
}

// --- a random workload against a model --------------------------------------------

#[test]
fn random_workload_keeps_every_block_intact_and_returns_to_zero() {
    let mut h = heap();
    let mut rng = Rng(0xC0FFEE);
    let mut slots: Vec<Option<(*mut u8, usize, u8, usize)>> = std::vec![None; 300];
    for op in 0..30_000u32 {
        let i = rng.below(slots.len() as u64) as usize;
        match slots[i] {
            None => {
                let size = rng.size(1 << 20);
                let align = if rng.below(8) == 0 {
                    1 << rng.below(22)
                } else {
                    8
                };
                let p = h.alloc(size, align);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0);
                fill(p, size, op as u8);
                slots[i] = Some((p, size, op as u8, align));
            }
            Some((p, size, seed, align)) => {
                assert!(check(p, size, seed), "op {op}: block of {size} damaged");
                if rng.below(4) == 0 {
                    let new = rng.size(1 << 20);
                    let q = h.realloc(p, Some(size), new, align).unwrap();
                    assert_eq!(q as usize % align, 0);
                    assert!(check(q, size.min(new), seed), "op {op}: realloc lost data");
                    fill(q, new, seed);
                    slots[i] = Some((q, new, seed, align));
                } else {
                    h.free(p).unwrap();
                    slots[i] = None;
                }
            }
        }
        if op % 1000 == 0 {
            assert_consistent(&h);
        }
    }
    for slot in slots.iter().flatten() {
        assert!(check(slot.0, slot.1, slot.2));
        h.free(slot.0).unwrap();
    }
    let c = h.counters();
    assert_eq!((c.in_use, c.live_blocks), (0, 0));
    assert_eq!(c.allocations, c.frees);
    h.trim();
    assert_eq!(h.counters().mapped, 0);
    assert_eq!(h.source().mapped, 0);
}

// --- the thread cache and the lock --------------------------------------------------

fn shared_heap() -> (Locked<Heap<HostPages>>, Span) {
    let span = Span::take();
    (
        Locked::new(Heap::new(
            span.base(),
            HostPages::new(usize::MAX / 2),
            fixed_seed,
        )),
        span,
    )
}

#[test]
fn thread_cache_serves_and_returns_small_blocks() {
    let (shared, _span) = shared_heap();
    let mut cache = ThreadCache::new();
    let mut blocks = Vec::new();
    for i in 0..1000 {
        let class = i % SMALL_COUNT;
        let p = cache.alloc(&shared, class).unwrap();
        assert!(!p.is_null());
        fill(p, CLASSES[class].size as usize, i as u8);
        blocks.push((p, class, i as u8));
    }
    for &(p, class, seed) in &blocks {
        assert!(check(p, CLASSES[class].size as usize, seed));
        cache.free(&shared, p).unwrap();
    }
    // Freed blocks come back from the cache without the heap.
    let allocations = shared.lock().counters().allocations;
    let p = cache.alloc(&shared, 3).unwrap();
    cache.free(&shared, p).unwrap();
    let _ = cache.alloc(&shared, 3).unwrap();
    assert!(shared.lock().counters().allocations <= allocations + 16);
    cache.flush(&shared).unwrap();
    let c = shared.lock().counters();
    assert_eq!(cache.held(), 0);
    assert_eq!(c.in_use, CLASSES[3].size as usize); // the one still held by the test
}

#[test]
fn thread_cache_catches_a_double_free_at_the_second_free() {
    let (shared, _span) = shared_heap();
    let mut cache = ThreadCache::new();
    let p = cache.alloc(&shared, 2).unwrap();
    let _keep = cache.alloc(&shared, 2).unwrap();
    cache.free(&shared, p).unwrap();
    assert_eq!(cache.free(&shared, p), Err(Misuse::DoubleFree(p as usize)));
}

#[test]
fn thread_cache_catches_a_double_free_of_a_block_in_the_heaps_free_list() {
    let (shared, _span) = shared_heap();
    let mut cache = ThreadCache::new();
    let _keep = cache.alloc(&shared, 2).unwrap(); // the cache has its view now
    let p = shared.lock().alloc(CLASSES[2].size as usize, 16);
    shared.lock().free(p).unwrap();
    assert_eq!(cache.free(&shared, p), Err(Misuse::DoubleFree(p as usize)));
}

#[test]
fn thread_cache_catches_foreign_and_interior_frees_before_anything_changes() {
    let (shared, _span) = shared_heap();
    let mut cache = ThreadCache::new();
    let p = cache.alloc(&shared, 2).unwrap();
    let mut local = 0u64;
    let foreign = &raw mut local as *mut u8;
    assert_eq!(cache.free(&shared, foreign), Err(Misuse::Foreign(foreign as usize)));
    let inside = p.wrapping_add(16);
    assert_eq!(cache.free(&shared, inside), Err(Misuse::Interior(inside as usize)));
    let held = cache.held();
    cache.free(&shared, p).unwrap();
    assert_eq!(cache.held(), held + 1);
}

#[test]
fn thread_cache_sends_a_never_carved_address_to_the_locked_checks() {
    let (shared, _span) = shared_heap();
    let mut cache = ThreadCache::new();
    let p = cache.alloc(&shared, 0).unwrap();
    // Far past the slab's carved range, in the same slot.
    let beyond = p.wrapping_add(60 * 1024);
    assert_eq!(cache.free(&shared, beyond), Err(Misuse::NotAllocated(beyond as usize)));
}

#[test]
fn thread_cache_keeps_working_after_a_trim_unmapped_the_tables() {
    let (shared, _span) = shared_heap();
    let mut cache = ThreadCache::new();
    let p = cache.alloc(&shared, 3).unwrap();
    cache.free(&shared, p).unwrap();
    cache.flush(&shared).unwrap();
    shared.lock().trim();
    assert_eq!(shared.lock().counters().mapped, 0); // the tables went too
    // The cache's view now finds no slab (high is 0) until the heap makes one again.
    let q = cache.alloc(&shared, 3).unwrap();
    fill(q, CLASSES[3].size as usize, 7);
    assert!(check(q, CLASSES[3].size as usize, 7));
    cache.free(&shared, q).unwrap();
    assert_eq!(cache.free(&shared, q), Err(Misuse::DoubleFree(q as usize)));
    cache.flush(&shared).unwrap();
    assert_eq!(shared.lock().counters().in_use, 0);
}

#[test]
fn thread_cache_gives_half_a_full_bin_back_to_the_heap() {
    let (shared, _span) = shared_heap();
    let mut cache = ThreadCache::new();
    let class = 4;
    let n = bin_capacity(class) * 2;
    let blocks: Vec<*mut u8> = (0..n).map(|_| cache.alloc(&shared, class).unwrap()).collect();
    assert_eq!(cache.held(), 0);
    for &p in &blocks {
        cache.free(&shared, p).unwrap();
        assert!(cache.held() <= bin_capacity(class));
    }
    // Half went back when the bin overflowed; the heap saw those frees.
    assert!(cache.held() > bin_capacity(class) / 2);
    assert!(shared.lock().counters().live_blocks >= cache.held());
    cache.flush(&shared).unwrap();
    assert_eq!(shared.lock().counters().in_use, 0);
}

#[test]
fn thread_cache_catches_a_write_to_a_block_in_a_bin_when_it_pops_it() {
    let (shared, _span) = shared_heap();
    let mut cache = ThreadCache::new();
    let p = cache.alloc(&shared, 2).unwrap();
    cache.free(&shared, p).unwrap(); // straight into its bin
    // SAFETY: test: a write after free to the bin link of a block the cache holds.
    unsafe { (p as *mut u64).write_volatile(0x1234_5678) };
    // p was pushed last: it is the bin's head.
    assert_eq!(cache.alloc(&shared, 2), Err(Misuse::Corrupt(p as usize)));
}

#[test]
fn thread_cache_hands_large_and_medium_frees_to_the_heap() {
    let (shared, _span) = shared_heap();
    let mut cache = ThreadCache::new();
    let big = shared.lock().alloc(1 << 20, 16);
    let medium = shared.lock().alloc(10_000, 16);
    cache.free(&shared, big).unwrap();
    cache.free(&shared, medium).unwrap();
    cache.flush(&shared).unwrap();
    assert_eq!(shared.lock().counters().in_use, 0);
}

fn hammer(shared: &Locked<Heap<HostPages>>, seed: u64, cache: Option<&mut ThreadCache>) {
    let mut rng = Rng(seed);
    let mut slots: Vec<Option<(*mut u8, usize, u8)>> = std::vec![None; 64];
    let mut cache = cache;
    for op in 0..20_000u32 {
        let i = rng.below(64) as usize;
        match slots[i].take() {
            None => {
                let max = if rng.below(16) == 0 { 1 << 19 } else { 512 };
                let size = rng.size(max);
                let p = match (&mut cache, classes::class_for(size, 16)) {
                    (Some(c), Some(class)) if class < SMALL_COUNT => {
                        c.alloc(shared, class).unwrap()
                    }
                    _ => shared.lock().alloc(size, 16),
                };
                assert!(!p.is_null());
                fill(p, size, op as u8);
                slots[i] = Some((p, size, op as u8));
            }
            Some((p, size, s)) => {
                assert!(check(p, size, s), "a block was written by another thread");
                match &mut cache {
                    Some(c) => c.free(shared, p).unwrap(),
                    None => shared.lock().free(p).unwrap(),
                }
            }
        }
    }
    for (p, _, _) in slots.into_iter().flatten() {
        match &mut cache {
            Some(c) => c.free(shared, p).unwrap(),
            None => shared.lock().free(p).unwrap(),
        }
    }
    if let Some(c) = cache {
        c.flush(shared).unwrap();
    }
}

#[test]
fn four_threads_share_the_locked_heap() {
    let (shared, _span) = shared_heap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let shared = &shared;
            s.spawn(move || hammer(shared, 100 + t, None));
        }
    });
    let c = shared.lock().counters();
    assert_eq!((c.in_use, c.live_blocks), (0, 0));
    assert_eq!(c.mapped, shared.lock().source().mapped);
}

#[test]
fn four_threads_with_their_own_caches_share_the_heap() {
    let (shared, _span) = shared_heap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let shared = &shared;
            s.spawn(move || {
                let mut cache = ThreadCache::new();
                hammer(shared, 200 + t, Some(&mut cache));
                assert_eq!(cache.held(), 0);
            });
        }
    });
    let c = shared.lock().counters();
    assert_eq!((c.in_use, c.live_blocks), (0, 0));
}

#[test]
fn blocks_freed_by_another_threads_cache_come_back_whole() {
    let (shared, _span) = shared_heap();
    let (tx, rx) = std::sync::mpsc::sync_channel::<(usize, usize, u8)>(256);
    std::thread::scope(|s| {
        let shared = &shared;
        s.spawn(move || {
            // The producer: every block goes to the other thread, which frees it.
            let mut cache = ThreadCache::new();
            let mut rng = Rng(7);
            for op in 0..20_000u32 {
                let class = rng.below(SMALL_COUNT as u64) as usize;
                let p = cache.alloc(shared, class).unwrap();
                fill(p, CLASSES[class].size as usize, op as u8);
                tx.send((p as usize, class, op as u8)).unwrap();
            }
            drop(tx);
            cache.flush(shared).unwrap();
        });
        s.spawn(move || {
            let mut cache = ThreadCache::new();
            let mut own = Vec::new();
            for (p, class, seed) in rx {
                let p = p as *mut u8;
                assert!(check(p, CLASSES[class].size as usize, seed));
                cache.free(shared, p).unwrap();
                // Some of its own, reusing what it was given.
                own.push(cache.alloc(shared, class).unwrap());
                if own.len() > 64 {
                    for q in own.drain(..) {
                        cache.free(shared, q).unwrap();
                    }
                }
            }
            for q in own {
                cache.free(shared, q).unwrap();
            }
            cache.flush(shared).unwrap();
        });
    });
    let c = shared.lock().counters();
    assert_eq!((c.in_use, c.live_blocks), (0, 0));
}

/// The mixed workload of user/c/heap-bench.c on a host heap: what the heap asks of
/// the kernel (run by hand: `cargo test --release -- --ignored --nocapture heap_bench`).
#[test]
#[ignore = "a measurement, not a test"]
fn heap_bench_mixed_workload_kernel_calls() {
    let mut h = heap();
    let mut state = 1u64;
    let mut next = || crate::random::splitmix64(&mut state);
    let mut slots: Vec<(*mut u8, usize)> = std::vec![(core::ptr::null_mut(), 0); 1000];
    let spread = |lo: usize, hi: usize, r1: u64, r2: u64| {
        let lo_bits = 63 - (lo as u64).leading_zeros();
        let hi_bits = 63 - (hi as u64).leading_zeros();
        let bits = lo_bits + (r1 % u64::from(hi_bits - lo_bits + 1)) as u32;
        let base = 1usize << bits;
        let top = (base * 2 - 1).min(hi);
        let from = base.max(lo);
        from + (r2 % (top - from + 1) as u64) as usize
    };
    let mut peak_live = 0;
    let mut live = 0;
    let start = std::time::Instant::now();
    for op in 0..1_000_000u64 {
        let i = (next() % 1000) as usize;
        if !slots[i].0.is_null() {
            live -= slots[i].1;
            h.free(slots[i].0).unwrap();
        }
        let r = next() % 1000;
        let size = if r < 800 {
            16 + (next() % 241) as usize
        } else if r < 950 {
            let (a, b) = (next(), next());
            spread(257, 16384, a, b)
        } else if r < 995 {
            let (a, b) = (next(), next());
            spread(16385, 262144, a, b)
        } else {
            let (a, b) = (next(), next());
            spread(262145, 1 << 20, a, b)
        };
        let p = h.alloc(size, 16);
        // SAFETY: p holds size bytes.
        unsafe { p.add(size - 1).write(op as u8) };
        slots[i] = (p, size);
        live += size;
        peak_live = peak_live.max(live);
        if op == 100_000 {
            let c = h.counters();
            std::println!(
                "after 100k: maps {} unmaps {} resizes {}",
                c.maps,
                c.unmaps,
                c.resizes
            );
        }
    }
    std::println!("time {:?}", start.elapsed());
    let c = h.counters();
    std::println!(
        "peak_live {peak_live} peak_mapped {} maps {} unmaps {} resizes {} retained {}",
        c.peak_mapped,
        c.maps,
        c.unmaps,
        c.resizes,
        c.retained
    );
    std::println!("mapped in total {} MiB", h.source().mapped_total >> 20);
    std::println!(
        "calls [map, unmap, resize] tables {:?} small {:?} medium {:?} large {:?}",
        h.source().calls[0],
        h.source().calls[1],
        h.source().calls[2],
        h.source().calls[3]
    );
}

fn churn(mut alloc: impl FnMut(usize) -> *mut u8, mut free: impl FnMut(*mut u8)) -> u64 {
    let mut state = 1u64;
    let mut slots: Vec<(*mut u8, usize)> = std::vec![(core::ptr::null_mut(), 0); 1000];
    let mut sum = 0u64;
    for op in 0..3_000_000u64 {
        let i = (crate::random::splitmix64(&mut state) % 1000) as usize;
        let (p, _) = slots[i];
        if !p.is_null() {
            // SAFETY: live block.
            sum += u64::from(unsafe { p.read() });
            free(p);
        }
        let size = 16 + (crate::random::splitmix64(&mut state) % 241) as usize;
        let q = alloc(size);
        // SAFETY: q holds size bytes.
        unsafe {
            q.write(op as u8);
            q.add(size - 1).write(1)
        };
        slots[i] = (q, size);
    }
    for (p, _) in slots {
        free(p);
    }
    sum
}

fn best_of(mut run: impl FnMut() -> u64) -> std::time::Duration {
    (0..7)
        .map(|_| {
            let t = std::time::Instant::now();
            core::hint::black_box(run());
            t.elapsed()
        })
        .min()
        .unwrap()
}

/// Small-object churn, best of seven, through the lock, without it, through a thread
/// cache, and through glibc (run as `heap_bench_mixed_workload_kernel_calls`).
#[test]
#[ignore = "a measurement, not a test"]
fn heap_bench_small_churn_against_glibc() {
    let (shared, _span) = shared_heap();
    std::println!("3M ops, best of 7:");
    std::println!(
        "  locked   {:?}",
        best_of(|| churn(
            |n| shared.lock().alloc(n, 16),
            |p| shared.lock().free(p).unwrap()
        ))
    );
    let h = core::cell::RefCell::new(heap());
    std::println!(
        "  no lock  {:?}",
        best_of(|| churn(
            |n| h.borrow_mut().alloc(n, 16),
            |p| h.borrow_mut().free(p).unwrap()
        ))
    );
    let mut cache = ThreadCache::new();
    let c = core::cell::RefCell::new(&mut cache);
    std::println!(
        "  cache    {:?}",
        best_of(|| churn(
            |n| c
                .borrow_mut()
                .alloc(&shared, classes::class_for(n, 16).unwrap())
                .unwrap(),
            |p| c.borrow_mut().free(&shared, p).unwrap(),
        ))
    );
    std::println!(
        "  glibc    {:?}",
        best_of(|| churn(
            // SAFETY: plain libc allocations.
            |n| unsafe { std::alloc::alloc(std::alloc::Layout::from_size_align_unchecked(n, 16)) },
            // SAFETY: as above; glibc's free needs no size.
            |p| unsafe {
                std::alloc::dealloc(p, std::alloc::Layout::from_size_align_unchecked(1, 16))
            },
        ))
    );
}
