//! limit-probe: drives one resource limit of the kernel to its edge (docs/abi.md,
//! "Limits") and reports what happened; tests/e2e/test_limit_probe.py reads the lines.
//!
//! `/etc/probe.conf`, resolved against the task's root, holds `<mode> [n]`. Children
//! get their mode the same way: each is started with a root directory of its own
//! (`/sibling`, `/quick`, `/spin`, `/b`) holding its `etc/probe.conf`.
//!
//! | mode | does | prints |
//! |---|---|---|
//! | `mappings <n>` | MMAPs one-page anonymous regions until n exist or MMAP fails; then MUNMAPs one and MMAPs one again | `mapped <k> then <error>` (or `mapped <k>`), `remap ok` |
//! | `file-mappings <n>` | the same with one-page read-only mappings of its probe.conf, which share the file's frame | the same |
//! | `hog` | MMAPs anonymous memory (chunks of 64, 8, 1 pages) until MMAP fails, writes every page, then starts a `sibling` and waits for it | `hog holds <k> pages then <error>` |
//! | `sibling <n>` | MMAPs n anonymous pages and writes each | `sibling got <n> pages` |
//! | `unreaped` | EXECs `exit` children without waiting until EXEC fails; WAITs for them all and EXECs one more; then EXECs until refused again and ends, leaving those unreaped | `started <k> then <error>`, `reaped <k>`, `again ok` |
//! | `children` | EXECs `spin` children until EXEC fails; then creates `/spin/release` and WAITs for each | `started <k> then <error>`, `all <k> ended well` |
//! | `bomb-top`, `bomb` | EXECs `bomb` children until EXEC fails, then WAITs for each; a `bomb` starts its children in its own root | `bomb: <k> children, then <error>; every descendant ended well` (top only) |
//! | `exit` | ends at once | |
//! | `spin` | OPENs `/release` until it exists | |
//!
//! Exits 0 when every step went as the mode expects (a limit's error where one is
//! expected, success everywhere else), else prints `FAIL <why>` and exits 1.

#![no_std]
#![no_main]

use libcopra::abi::{Errno, PAGE_SIZE};
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::memory::{self, MapFlag};
use libcopra::process::{self, ExitStatus};
use libcopra::{Error, declare_main, println};

declare_main!(main);

const CONF: &str = "/etc/probe.conf";
const SELF: &str = "/bin/limit-probe";
const MAX_CHILDREN: usize = 1024;

/// Task ids of the children started and not yet waited for.
struct Children {
    ids: [u64; MAX_CHILDREN],
    len: usize,
}

impl Children {
    const fn new() -> Self {
        Self {
            ids: [0; MAX_CHILDREN],
            len: 0,
        }
    }

    /// EXECs children with `root` until EXEC fails (or there is no room to remember
    /// one more); returns the error.
    fn start_until_refused(&mut self, root: &str) -> Option<Error> {
        while self.len < MAX_CHILDREN {
            match process::exec_in(SELF, root) {
                Ok(id) => {
                    self.ids[self.len] = id;
                    self.len += 1;
                }
                Err(e) => return Some(e),
            }
        }
        None
    }

    /// WAITs for every child; true if each exited with 0.
    fn wait_all(&mut self) -> bool {
        let mut good = true;
        for &id in &self.ids[..self.len] {
            match process::wait(id) {
                Ok(status) if status.success() => {}
                Ok(status) => {
                    println!("FAIL child {id} {status}");
                    good = false;
                }
                Err(e) => {
                    println!("FAIL WAIT {id}: {e}");
                    good = false;
                }
            }
        }
        self.len = 0;
        good
    }
}

fn main() -> u32 {
    let mut buf = [0u8; 64];
    let (mode, n) = match config(&mut buf) {
        Ok(conf) => conf,
        Err(why) => {
            println!("FAIL {CONF}: {why}");
            return 1;
        }
    };
    let good = match mode {
        "mappings" => mappings(n, false),
        "file-mappings" => mappings(n, true),
        "hog" => hog(),
        "sibling" => sibling(n),
        "unreaped" => unreaped(),
        "children" => live_children(),
        "bomb-top" => bomb(true),
        "bomb" => bomb(false),
        "exit" => true,
        "spin" => spin(),
        _ => {
            println!("FAIL unknown mode {mode:?}");
            false
        }
    };
    u32::from(!good)
}

fn report_stop(what: &str, k: u64, stop: Option<Error>) {
    match stop {
        Some(e) => println!("{what} {k} then {e}"),
        None => println!("{what} {k}"),
    }
}

// --- mappings -------------------------------------------------------------------------------

fn mappings(n: u64, file: bool) -> bool {
    let conf = if file {
        match fs::open(CONF, FileMode::READ, FileFlag::EMPTY) {
            Ok(handle) => Some(handle),
            Err(e) => {
                println!("FAIL OPEN {CONF}: {e}");
                return false;
            }
        }
    } else {
        None
    };
    let map_one = || -> Result<u64, Error> {
        // SAFETY: no hint, no FIXED: nothing that exists is replaced.
        unsafe {
            match &conf {
                Some(handle) => memory::mmap(handle, 0, 0, PAGE_SIZE, MapFlag::READ),
                None => memory::mmap_anonymous(0, PAGE_SIZE, MapFlag::READ | MapFlag::WRITE),
            }
        }
    };
    let mut made = 0;
    let mut last = 0;
    let mut stop = None;
    while made < n {
        match map_one() {
            Ok(addr) => {
                made += 1;
                last = addr;
            }
            Err(e) => {
                stop = Some(e);
                break;
            }
        }
    }
    report_stop("mapped", made, stop);
    if made == 0 {
        return stop.is_none();
    }
    // SAFETY: the last mapping is this function's own and nothing refers to it.
    if let Err(e) = unsafe { memory::munmap(last, PAGE_SIZE) } {
        println!("FAIL MUNMAP: {e}");
        return false;
    }
    match map_one() {
        Ok(_) => {
            println!("remap ok");
            true
        }
        Err(e) => {
            println!("FAIL MMAP after MUNMAP: {e}");
            false
        }
    }
}

// --- frames -------------------------------------------------------------------------------------

/// MMAPs anonymous pages until MMAP fails and writes every one; returns the pages
/// held and the error that stopped it.
fn take_everything() -> (u64, Error) {
    let mut held = 0;
    let mut chunk = 64;
    loop {
        // SAFETY: no hint, no FIXED.
        match unsafe {
            memory::mmap_anonymous(0, chunk * PAGE_SIZE, MapFlag::READ | MapFlag::WRITE)
        } {
            Ok(addr) => {
                touch(addr, chunk);
                held += chunk;
            }
            Err(e) if chunk == 1 => return (held, e),
            Err(_) => chunk /= 8,
        }
    }
}

fn touch(addr: u64, pages: u64) {
    for page in 0..pages {
        let p = (addr + page * PAGE_SIZE) as *mut u64;
        // SAFETY: the page was just mapped writable for this process alone.
        unsafe { p.write_volatile(page ^ 0x5A5A) };
    }
}

fn hog() -> bool {
    let (held, stop) = take_everything();
    println!("hog holds {held} pages then {stop}");
    match process::exec_in(SELF, "/sibling") {
        Ok(id) => match process::wait(id) {
            Ok(ExitStatus::Exited(0)) => true,
            Ok(status) => {
                println!("FAIL sibling {status}");
                false
            }
            Err(e) => {
                println!("FAIL WAIT sibling: {e}");
                false
            }
        },
        Err(e) => {
            println!("FAIL EXEC sibling: {e}");
            false
        }
    }
}

fn sibling(pages: u64) -> bool {
    // SAFETY: no hint, no FIXED.
    match unsafe { memory::mmap_anonymous(0, pages * PAGE_SIZE, MapFlag::READ | MapFlag::WRITE) } {
        Ok(addr) => {
            touch(addr, pages);
            println!("sibling got {pages} pages");
            true
        }
        Err(e) => {
            println!("FAIL sibling MMAP of {pages} pages: {e}");
            false
        }
    }
}

// --- children -----------------------------------------------------------------------------------

fn unreaped() -> bool {
    let mut kids = Children::new();
    let stop = kids.start_until_refused("/quick");
    let started = kids.len;
    report_stop("started", started as u64, stop);
    if stop.is_none() || !kids.wait_all() {
        return false;
    }
    println!("reaped {started}");
    if let Err(e) = process::exec_in(SELF, "/quick") {
        println!("FAIL EXEC after WAIT: {e}");
        return false;
    }
    println!("again ok");
    // Once more until refused, then end without reaping: the kernel forgets them.
    kids.start_until_refused("/quick").is_some()
}

fn live_children() -> bool {
    let mut kids = Children::new();
    let stop = kids.start_until_refused("/spin");
    let started = kids.len;
    report_stop("started", started as u64, stop);
    if let Err(e) = fs::open("/spin/release", FileMode::WRITE, FileFlag::CREATE) {
        println!("FAIL creating /spin/release: {e}");
        return false;
    }
    let good = kids.wait_all();
    if good {
        println!("all {started} ended well");
    }
    good && stop.is_some()
}

fn spin() -> bool {
    loop {
        match fs::open("/release", FileMode::READ, FileFlag::EMPTY) {
            Ok(_) => return true,
            Err(e) if e.is(Errno::ENOTFOUND) => {}
            Err(e) => {
                println!("FAIL OPEN /release: {e}");
                return false;
            }
        }
    }
}

fn bomb(top: bool) -> bool {
    let mut kids = Children::new();
    let stop = kids.start_until_refused(if top { "/b" } else { "/" });
    let started = kids.len;
    let refused_as_documented = stop.is_some_and(|e| e.is(Errno::EAGAIN));
    if !refused_as_documented {
        match stop {
            Some(e) => println!("FAIL bomb EXEC: {e}"),
            None => println!("FAIL bomb: never refused"),
        }
    }
    let good = kids.wait_all() && refused_as_documented;
    if let (true, true, Some(e)) = (top, good, stop) {
        println!("bomb: {started} children, then {e}; every descendant ended well");
    }
    good
}

// --- the configuration ----------------------------------------------------------------------------

/// `(mode, n)` from the configuration file; n is 0 when absent.
fn config(buf: &mut [u8; 64]) -> Result<(&str, u64), &'static str> {
    let file = fs::open(CONF, FileMode::READ, FileFlag::EMPTY).map_err(|_| "cannot open")?;
    let len = fs::read(&file, buf).map_err(|_| "cannot read")?;
    let text = core::str::from_utf8(&buf[..len]).map_err(|_| "not UTF-8")?;
    let mut words = text.split_ascii_whitespace();
    let mode = words.next().ok_or("empty")?;
    let n = match words.next() {
        Some(word) => word.parse().map_err(|_| "not a number")?,
        None => 0,
    };
    Ok((mode, n))
}
