//! heap-stress: random allocations of 1 byte to 1 MiB through the global allocator,
//! every block pattern-checked before it is freed or moved.
//!
//! `ops slots seed threads` (decimal) from `/etc/heap-stress.conf`, else 1,000,000
//! operations over 128 slots with seed 1 in one thread (missing trailing fields take
//! these defaults). Each operation picks a slot: an empty one gets a block
//! (sizes spread evenly over the powers of two from 1 B to 1 MiB; one in sixteen with
//! an alignment from 1 B to 2 MiB), which is filled with a pattern; a full one is
//! checked, then freed, or (one in four) reallocated to a new size, its prefix checked
//! and the whole refilled. At the end every block is checked and freed and the heap
//! trimmed: it must be back to nothing in use and nothing mapped.
//!
//! Prints `heap-stress: baseline` before the first block and `heap-stress: settled`
//! after the trim (an e2e test compares the kernel's view of the process at those two
//! lines), then the heap's statistics. Exits 0, 1 on a damaged block or a heap that did
//! not settle, 2 when memory ran out, 3 on a malformed configuration.
//!
//! With `threads` > 1, that many threads share the operations (each its own slots and
//! random stream, seed + its index) and pass blocks to each other: one free in eight
//! instead swaps the block with a random cell of a shared mailbox, so blocks are freed,
//! checked and reallocated by threads other than the one that allocated them (through
//! another thread's cache). After the joins the first thread checks and frees what the
//! mailbox holds; each thread's cache went back to the heap when it ended.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::alloc::{Layout, alloc, dealloc, realloc};
use alloc::vec::Vec;

use core::sync::atomic::{AtomicU64, Ordering};

use libcopra::heap;
use libcopra::random::splitmix64;
use libcopra::sync::Mutex;
use libcopra::{declare_main, fs, println, thread};

declare_main!(main);

const CONFIG: &str = "/etc/heap-stress.conf";
const MAX_ALIGN_LOG2: u64 = 21;
const MAX_THREADS: u64 = 16;
const MAILBOX: usize = 16;

/// Blocks in passage between threads.
static EXCHANGE: Mutex<[Option<Block>; MAILBOX]> = Mutex::new([const { None }; MAILBOX]);
/// Each thread's share: operations, slots, seed.
static SHARE: [AtomicU64; 3] = [const { AtomicU64::new(0) }; 3];

struct Block {
    ptr: *mut u8,
    size: usize,
    align: usize,
    seed: u64,
}

// SAFETY: a block belongs to whichever thread holds the `Block`; the heap is shared.
unsafe impl Send for Block {}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        splitmix64(&mut self.0)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// 1..=MAX_SIZE, spread evenly over the powers of two.
    fn size(&mut self) -> usize {
        let bits = self.below(21) as u32; // 2^0 ..= 2^20
        let hi = 1usize << bits;
        let lo = hi / 2 + 1;
        lo + self.below((hi - lo + 1) as u64) as usize
    }
}

/// The pattern's `k`th 8-byte word (byte `i` of a block is byte `i % 8` of word
/// `i / 8`, so any prefix of a block holds the pattern of a shorter block).
fn word(seed: u64, k: usize) -> u64 {
    seed ^ (k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

fn fill(ptr: *mut u8, size: usize, seed: u64) {
    let words = size / 8;
    // SAFETY: the block holds `size` bytes and is at least 8-aligned (every heap block
    // is 16-aligned).
    let (w, tail) = unsafe {
        (
            core::slice::from_raw_parts_mut(ptr as *mut u64, words),
            core::slice::from_raw_parts_mut(ptr.add(words * 8), size % 8),
        )
    };
    for (k, x) in w.iter_mut().enumerate() {
        *x = word(seed, k);
    }
    let last = word(seed, words).to_le_bytes();
    tail.copy_from_slice(&last[..tail.len()]);
}

/// The first offset in `[0, size)` that does not hold the pattern.
fn damaged(ptr: *const u8, size: usize, seed: u64) -> Option<usize> {
    let words = size / 8;
    // SAFETY: as in `fill`.
    let (w, tail) = unsafe {
        (
            core::slice::from_raw_parts(ptr as *const u64, words),
            core::slice::from_raw_parts(ptr.add(words * 8), size % 8),
        )
    };
    if let Some(k) = w.iter().enumerate().position(|(k, &x)| x != word(seed, k)) {
        return Some(k * 8);
    }
    let last = word(seed, words).to_le_bytes();
    tail.iter()
        .zip(last)
        .position(|(&b, want)| b != want)
        .map(|i| words * 8 + i)
}

fn main() -> u32 {
    let (ops, slots, seed, threads) = match config() {
        Ok(c) => c,
        Err(why) => {
            println!("heap-stress: {CONFIG}: {why}");
            return 3;
        }
    };
    heap::trim(); // whatever reading the configuration left
    let before = heap::stats();
    println!("heap-stress: baseline ({before})");
    if before.mapped != 0 {
        println!(
            "heap-stress: FAIL: the heap holds {} bytes before the run",
            before.mapped
        );
        return 1;
    }
    let result = if threads == 1 {
        run(ops, slots, seed, false)
    } else {
        run_threads(ops, slots, seed, threads)
    };
    heap::trim();
    let after = heap::stats();
    println!("heap-stress: settled");
    println!("heap-stress: {after}");
    if let Err(code) = result {
        return code;
    }
    if after.in_use != 0 || after.live_blocks != 0 || after.mapped != 0 || after.retained != 0 {
        println!("heap-stress: FAIL: the heap did not settle");
        return 1;
    }
    if threads == 1 {
        println!("heap-stress: PASS {ops} operations");
    } else {
        println!("heap-stress: PASS {ops} operations in {threads} threads");
    }
    0
}

fn worker(index: u64) -> u32 {
    let [ops, slots, seed] = SHARE.each_ref().map(|v| v.load(Ordering::Relaxed));
    match run(ops, slots as usize, seed + index, true) {
        Ok(()) => 0,
        Err(code) => code,
    }
}

fn run_threads(ops: u64, slots: usize, seed: u64, threads: u64) -> Result<(), u32> {
    SHARE[0].store(ops / threads, Ordering::Relaxed);
    SHARE[1].store(slots as u64, Ordering::Relaxed);
    SHARE[2].store(seed, Ordering::Relaxed);
    let mut handles = Vec::new();
    for index in 0..threads {
        match thread::spawn(worker, index) {
            Ok(h) => handles.push(h),
            Err(e) => {
                println!("heap-stress: FAIL: spawn: {e}");
                return Err(1);
            }
        }
    }
    let mut code = 0;
    for h in handles {
        match h.join() {
            Ok(0) => {}
            Ok(c) => code = code.max(c),
            Err(e) => {
                println!("heap-stress: FAIL: join: {e}");
                code = 1;
            }
        }
    }
    let mut exchange = EXCHANGE.lock();
    for b in exchange.iter_mut().filter_map(Option::take) {
        if damaged(b.ptr, b.size, b.seed).is_some() {
            println!("heap-stress: FAIL: a block in passage was damaged");
            code = 1;
        }
        // SAFETY: the block came from `alloc` with this layout.
        unsafe { dealloc(b.ptr, Layout::from_size_align_unchecked(b.size, b.align)) };
    }
    drop(exchange);
    if code != 0 { Err(code) } else { Ok(()) }
}

fn run(ops: u64, slots: usize, seed: u64, pass: bool) -> Result<(), u32> {
    let mut rng = Rng(seed);
    let mut table: Vec<Option<Block>> = Vec::new();
    table.resize_with(slots, || None);
    let (mut allocs, mut reallocs, mut frees, mut passed) = (0u64, 0u64, 0u64, 0u64);
    for op in 0..ops {
        let i = rng.below(slots as u64) as usize;
        match table[i].take() {
            None => {
                let size = rng.size();
                let align = if rng.below(16) == 0 {
                    1usize << rng.below(MAX_ALIGN_LOG2 + 1)
                } else {
                    16
                };
                let layout = Layout::from_size_align(size, align).map_err(|_| 3u32)?;
                // SAFETY: size is nonzero.
                let ptr = unsafe { alloc(layout) };
                if ptr.is_null() {
                    println!("heap-stress: out of memory at operation {op}: {size} bytes");
                    return Err(2);
                }
                if ptr as usize % align != 0 {
                    println!("heap-stress: FAIL: {ptr:?} is not aligned to {align}");
                    return Err(1);
                }
                let block_seed = rng.next();
                fill(ptr, size, block_seed);
                table[i] = Some(Block {
                    ptr,
                    size,
                    align,
                    seed: block_seed,
                });
                allocs += 1;
            }
            Some(b) => {
                if let Some(at) = damaged(b.ptr, b.size, b.seed) {
                    println!(
                        "heap-stress: FAIL: block of {} bytes at {:?} damaged at offset {at} (operation {op})",
                        b.size, b.ptr
                    );
                    return Err(1);
                }
                let layout = Layout::from_size_align(b.size, b.align).map_err(|_| 3u32)?;
                if rng.below(4) == 0 {
                    let new = rng.size();
                    // SAFETY: the block came from `alloc` with `layout`; new is nonzero.
                    let ptr = unsafe { realloc(b.ptr, layout, new) };
                    if ptr.is_null() {
                        println!("heap-stress: out of memory at operation {op}: realloc to {new}");
                        return Err(2);
                    }
                    if let Some(at) = damaged(ptr, b.size.min(new), b.seed) {
                        println!(
                            "heap-stress: FAIL: realloc of {} bytes (align {}) at {:?} to {new} at {ptr:?} lost byte {at} (operation {op})",
                            b.size, b.align, b.ptr
                        );
                        return Err(1);
                    }
                    fill(ptr, new, b.seed);
                    table[i] = Some(Block {
                        ptr,
                        size: new,
                        ..b
                    });
                    reallocs += 1;
                } else if pass && rng.below(8) == 0 {
                    // Swap with the mailbox: another thread frees or resizes this one.
                    let cell = rng.below(MAILBOX as u64) as usize;
                    table[i] = EXCHANGE.lock()[cell].replace(b);
                    passed += 1;
                } else {
                    // SAFETY: as above.
                    unsafe { dealloc(b.ptr, layout) };
                    frees += 1;
                }
            }
        }
    }
    for b in table.iter().flatten() {
        if damaged(b.ptr, b.size, b.seed).is_some() {
            println!("heap-stress: FAIL: a block was damaged at the end");
            return Err(1);
        }
        // SAFETY: as above.
        unsafe { dealloc(b.ptr, Layout::from_size_align_unchecked(b.size, b.align)) };
        frees += 1;
    }
    println!(
        "heap-stress: {ops} operations: {allocs} allocations, {reallocs} reallocations, {frees} frees, {passed} passed on"
    );
    Ok(())
}

/// `ops slots seed threads` from the configuration file, or the defaults.
fn config() -> Result<(u64, usize, u64, u64), &'static str> {
    let text = match fs::read_to_string(CONFIG) {
        Ok(text) => text,
        Err(e) if e.is(libcopra::abi::Errno::ENOTFOUND) => return Ok((1_000_000, 128, 1, 1)),
        Err(_) => return Err("cannot read"),
    };
    let mut fields = text.split_ascii_whitespace().map(|f| f.parse::<u64>());
    let mut next = |default: u64| match fields.next() {
        None => Ok(default),
        Some(Ok(v)) => Ok(v),
        Some(Err(_)) => Err("not up to four decimal integers"),
    };
    let ops = next(1_000_000)?;
    let slots = next(128)?;
    let seed = next(1)?;
    let threads = next(1)?;
    if slots == 0 || slots > 1 << 16 {
        return Err("slots must be 1..=65536");
    }
    if threads == 0 || threads > MAX_THREADS {
        return Err("threads must be 1..=16");
    }
    Ok((ops, slots as usize, seed, threads))
}
