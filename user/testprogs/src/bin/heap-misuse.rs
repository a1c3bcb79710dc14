//! heap-misuse: one misuse of the heap, named by `/etc/heap-misuse`; the heap must
//! catch it before anything changes and end the program with a panic naming it.
//!
//! | action | what it does | the heap says |
//! |---|---|---|
//! | `double-free` | frees a block twice | `double free of 0x…` |
//! | `foreign` | frees the address of a stack variable | `… is not a heap pointer` |
//! | `interior` | frees a pointer 16 bytes into a block | `… points inside a block` |
//! | `write-after-free` | writes into a freed block's link, then allocates | `free list … is damaged` |
//! | `oom` | `Vec::with_capacity` of 64 GiB | `heap: out of memory: …`, then Rust's `memory allocation of … failed` |
//!
//! A free goes through the thread's cache, which catches these at the free itself
//! (docs/heap.md, Misuse); each action still flushes the cache right after its frees
//! (`heap::flush_thread_cache`), which would catch them were that ever deferred.
//!
//! Every action ends in a panic (exit status 0xFFFF); reaching the end prints
//! `heap-misuse: not caught` and exits 1.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::alloc::{Layout, alloc, dealloc};
use alloc::vec::Vec;

use libcopra::{declare_main, fs, heap, println};

declare_main!(main);

fn block(size: usize) -> *mut u8 {
    // SAFETY: size is nonzero.
    let p = unsafe { alloc(Layout::from_size_align(size, 16).unwrap()) };
    assert!(!p.is_null());
    p
}

fn free(p: *mut u8, size: usize) {
    // SAFETY: deliberately not always: the heap must catch what is wrong.
    unsafe { dealloc(p, Layout::from_size_align(size, 16).unwrap()) };
}

fn main() -> u32 {
    let action = fs::read_to_string("/etc/heap-misuse").unwrap_or_default();
    let action = action.trim();
    println!("heap-misuse: {action}");
    match action {
        "double-free" => {
            let p = block(32);
            let _keep = block(32); // the slab stays in use
            free(p, 32);
            free(p, 32);
            heap::flush_thread_cache();
        }
        "foreign" => {
            let mut local = 0u64;
            free(&raw mut local as *mut u8, 8);
            heap::flush_thread_cache();
        }
        "interior" => {
            let p = block(100);
            // SAFETY: inside the block.
            free(unsafe { p.add(16) }, 84);
            heap::flush_thread_cache();
        }
        "write-after-free" => {
            let (p, q, _keep) = (block(32), block(32), block(32));
            free(q, 32);
            free(p, 32);
            heap::flush_thread_cache(); // both in the heap's free list now
            // SAFETY: a deliberate write after free, over the free list's link.
            unsafe { (p as *mut u64).write_volatile(0x1234_5678) };
            let _ = block(32);
        }
        "oom" => {
            let v: Vec<u8> = Vec::with_capacity(64 << 30);
            println!("heap-misuse: got {} bytes", v.capacity());
        }
        _ => println!("heap-misuse: unknown action"),
    }
    println!("heap-misuse: not caught");
    1
}
