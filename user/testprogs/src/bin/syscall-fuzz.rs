//! syscall-fuzz: random syscalls from a seeded PRNG; every answer must be a result or
//! a documented error code.
//!
//! `/etc/fuzz.conf` holds `<seed> <count>` (decimal or `0x` hex); without it the seed
//! is `DEFAULT_SEED` and the count 100,000. Each call is drawn by splitmix64:
//!
//! - 70 %: a real syscall (EXIT excluded) with arguments chosen per parameter kind:
//!   handles (its own open ones, 0, boundaries, random high bits), paths (a table of
//!   valid, missing, malformed and over-long ones, random bytes, bad pointers), buffers
//!   (its own arena, its read-only image, its mappings, unmapped, kernel-half,
//!   non-canonical, around `USER_END`), lengths, modes and flags (valid combinations,
//!   boundaries, random bits);
//! - 30 %: a number that is no syscall, with random arguments; the answer must be ENOSYS.
//!
//! It never destroys itself: buffers the kernel may write are its arena or its own
//! mappings, or memory where nothing of its own can be hit; EXEC only gets paths that cannot name a
//! program; MUNMAP, MRESIZE and FIXED mappings stay away from its image and stack; it
//! never closes or writes handle 0 at random. Everything it creates lives under
//! `/fuzz`: path arguments are the table's or `/fuzz/` followed by random bytes.
//!
//! A result is unexpected when it is an error code the spec does not define, UNKNOWN
//! (the kernel's internal error), anything but ENOSYS for an unknown number, or an
//! implausible success (a handle beyond the limit, more bytes than asked, an unaligned
//! mapping...). Each is counted; the first 20 print
//! `FAIL call <n> via <entry>: <syscall> <arguments> -> <result>: <why>`. At the end it
//! closes every handle it still holds (each CLOSE must succeed), unmaps its mappings,
//! removes `/fuzz`, and prints the count of calls per syscall and per result, then
//! `SUMMARY <calls> calls, <unexpected> unexpected`. Exits 0 iff nothing was unexpected.
//!
//! OPENDIR/MKDIR-heavy mode: when `/etc/fuzz-dirs.conf` exists, most calls come from
//! `DirsMode` instead (see its section below): names made and removed in a numbered
//! tree under `/fuzz/m` and OPENDIRs of it held open, so a small kernel metadata
//! budget runs out and ENOMEM is exercised alongside everything else.
//!
//! Channels mode: when `/etc/fuzz-chan.conf` exists, most calls come from `ChanMode`
//! (see its section): CHANNEL_CREATE, SEND and RECV moving its own handles between its
//! endpoints, DUPLICATE, REPLACE, CLOSE, with mostly valid messages, so that handles
//! really move (and meet EMSGSIZE, EAGAIN, EPIPE, EBUSY) all the time. Outside the
//! mode the channel calls are drawn like every other. Every handle a RECV delivers is
//! held (and closed at the end); every one a SEND moved is no longer held.
//!
//! Many-process mode, on when `/etc/fuzz-procs.conf` exists: the fuzzer also starts
//! fuzzing copies of itself (`/bin/syscall-fuzz`), each in a root of its own, waits
//! for them and meets the kernel's limits on tasks and children; see its section at
//! the end of this file.
//!
//! Threads mode, on when `/etc/fuzz-threads.conf` holds a number N (1 to 8): N threads
//! fuzz at once, each `<count>` calls from a seed of its own, on the process's shared
//! handles, mappings and files; see its section before the many-process one.

#![no_std]
#![no_main]

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use libcopra::abi::{
    CHANNEL_MAX_HANDLES, ChannelMessage, DirEnt, ERROR_THRESHOLD, Errno, FileType, MAX_HANDLES,
    MMAP_BASE, PAGE_SIZE, RIGHTS_SAME, Sys, USER_END, USER_MAP_END, USER_START, sysno,
};
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::rt::image_start;
use libcopra::syscall::{Entry, syscall5_via};
use libcopra::{declare_main, println, sync, thread};

declare_main!(main);

const CONF: &str = "/etc/fuzz.conf";
const DEFAULT_SEED: u64 = 0xC0FF_EE00_5EED_0001;
const DEFAULT_COUNT: u64 = 100_000;
const WORK: &str = "/fuzz";
const FAILS_SHOWN: u64 = 20;

const PAGE: u64 = PAGE_SIZE;
const MAP_AREA_END: u64 = USER_MAP_END;
/// The program image lies in [image_start(), + IMAGE_GUARD_SIZE): never unmapped or resized.
const IMAGE_GUARD_SIZE: u64 = 0x100_0000;
/// FIXED mappings go here and nowhere else (far from the image, the stack, MMAP_BASE).
const FIXED_ARENA: u64 = 0x0000_3000_0000_0000;
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;
const MAX_MAPPINGS: usize = 32;

// --- the PRNG -------------------------------------------------------------------------

/// splitmix64 (Steele, Lea, Flood 2014): one u64 of state, full period.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self) -> u64 {
        self.below(100)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

// --- memory the kernel may read and write -----------------------------------------------

const ARENA_SIZE: u64 = 64 * 1024;
/// [0, WRITABLE_END) of the arena is where the kernel may write (READ, READDIR);
/// the rest holds random path slots that nothing overwrites.
const WRITABLE_END: u64 = 48 * 1024;
const SLOT: u64 = 64;
const SLOT_PREFIX: &[u8] = b"/fuzz/";

#[repr(C, align(4096))]
struct Arena([u8; ARENA_SIZE as usize]);

static mut ARENA: Arena = Arena([0; ARENA_SIZE as usize]);

fn arena() -> u64 {
    (&raw const ARENA) as u64
}

fn fill_arena(rng: &mut Rng) {
    let base = (&raw mut ARENA).cast::<u8>();
    for i in 0..ARENA_SIZE {
        let byte = if i >= WRITABLE_END && i % SLOT < SLOT_PREFIX.len() as u64 {
            SLOT_PREFIX[(i % SLOT) as usize]
        } else if i >= WRITABLE_END && i % SLOT == SLOT - 1 {
            0 // every slot is a string
        } else {
            rng.next() as u8
        };
        // SAFETY: in bounds of our own static; nothing else refers to it.
        unsafe { base.add(i as usize).write(byte) };
    }
}

static READ_ONLY: [u8; 256] = [0xA5; 256];

libcopra::thread_local! {
    /// The ChannelMessage of the current SEND or RECV, and its id array (the kernel
    /// reads and writes only these, never beyond: counts stay within
    /// `CHANNEL_MAX_HANDLES`). One per thread: in threads mode another thread's RECV
    /// must not rewrite the sizes this one checks.
    static MSG: UnsafeCell<ChannelMessage> = const { UnsafeCell::new(ChannelMessage::zeroed()) };
    static IDS: UnsafeCell<[u32; CHANNEL_MAX_HANDLES as usize]> =
        const { UnsafeCell::new([0; CHANNEL_MAX_HANDLES as usize]) };
}

fn msg_ptr() -> *mut ChannelMessage {
    MSG.with(UnsafeCell::get)
}

fn ids_ptr() -> *mut u32 {
    IDS.with(|ids| ids.get().cast::<u32>())
}

// --- argument kinds -------------------------------------------------------------------

const BOUNDARY: [u64; 26] = [
    0,
    1,
    2,
    3,
    4,
    7,
    8,
    16,
    32,
    63,
    64,
    255,
    256,
    4095,
    4096,
    4097,
    0x7FFF_FFFF,
    0x8000_0000,
    0xFFFF_FFFF,
    1 << 32,
    i64::MAX as u64,
    1 << 63,
    u64::MAX - 1,
    u64::MAX,
    USER_END,
    MMAP_BASE,
];

/// How many of the first `PATHS` are well-formed names in /fuzz.
const GOOD_PATHS: usize = 9;

/// Paths as NUL-terminated bytes; none names anything outside /fuzz that could change.
const PATHS: [&[u8]; 22] = [
    b"/fuzz\0",
    b"/fuzz/a\0",
    b"/fuzz/b\0",
    b"/fuzz/c\0",
    b"/fuzz/d\0",
    b"/fuzz/d/e\0",
    b"/fuzz/d/f\0",
    b"/fuzz/d/g\0",
    b"/fuzz/d/g/h\0",
    b"/fuzz/a/x\0",
    b"//fuzz//b/\0",
    b"fuzz/c\0",
    b"/fuzz/./a\0",
    b"/fuzz/..\0",
    b"/\0",
    b"\0",
    b"/missing/x\0",
    b"/fuzz/\xff\xfe\0",
    b"/fuzz/\xc3\0",
    b"/fuzz/nul\0ignored\0",
    LONG_255,
    LONG_256,
];

/// A file made at the start that is no program; only EXEC names it.
const NOT_ELF: &str = "/fuzz/not-elf";

/// Paths EXEC may get: none can name a program.
const EXEC_PATHS: [&[u8]; 10] = [
    b"/fuzz/not-elf\0",
    b"/fuzz\0",
    b"/fuzz/d\0",
    b"/missing\0",
    b"/missing/x\0",
    b"/\0",
    b"\0",
    b"/fuzz/\xff\0",
    LONG_256,
    b"/fuzz/no-program\0",
];

const LONG_255: &[u8] = concat!(
    "/fuzz/",
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
    "\0"
)
.as_bytes();
const LONG_256: &[u8] = concat!(
    "/fuzz/",
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
    "nnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnnn",
    "\0"
)
.as_bytes();

/// A string of PATH_MAX + 1 non-NUL bytes: too long however it is read.
static NO_NUL: [u8; 4097] = [b'p'; 4097];

// --- state ------------------------------------------------------------------------------

#[derive(Clone, Copy)]
struct Mapping {
    addr: u64,
    len: u64,
}

struct Fuzzer {
    rng: Rng,
    /// Handles this program holds (bit n: handle n), from OPEN and OPENDIR.
    handles: [u64; (MAX_HANDLES / 64) as usize],
    mappings: [Option<Mapping>; MAX_MAPPINGS],
    next_slot: usize,
    calls: [u64; Sys::ALL.len() + 1],
    successes: [u64; Sys::ALL.len() + 1],
    errors: [u64; Errno::ALL.len()],
    skipped: u64,
    unexpected: u64,
    /// The OPENDIR/MKDIR-heavy mode, when it is on.
    dirs: Option<DirsMode>,
    /// The channels mode is on.
    chan: bool,
    /// The handle capacity of the current RECV (the kernel overwrites MSG's).
    recv_capacity: u32,
}

/// One call: the number and its five arguments.
#[derive(Clone, Copy)]
struct Call {
    nr: u64,
    args: [u64; 5],
}

impl Fuzzer {
    fn new(seed: u64, dirs: Option<DirsMode>) -> Self {
        Fuzzer {
            rng: Rng(seed),
            handles: [0; (MAX_HANDLES / 64) as usize],
            mappings: [None; MAX_MAPPINGS],
            next_slot: 0,
            calls: [0; Sys::ALL.len() + 1],
            successes: [0; Sys::ALL.len() + 1],
            errors: [0; Errno::ALL.len()],
            skipped: 0,
            unexpected: 0,
            dirs,
            chan: chan_mode(),
            recv_capacity: 0,
        }
    }

    // -- handles --

    fn track(&mut self, id: u64) {
        if id < MAX_HANDLES {
            self.handles[(id / 64) as usize] |= 1 << (id % 64);
        }
    }

    fn untrack(&mut self, id: u64) {
        if id < MAX_HANDLES {
            self.handles[(id / 64) as usize] &= !(1 << (id % 64));
        }
    }

    fn held(&self) -> u64 {
        self.handles.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// One of the held handles, or 1 when none is held.
    fn some_handle(&mut self) -> u64 {
        let held = self.held();
        if held == 0 {
            return 1;
        }
        let mut k = self.rng.below(held);
        for (i, &word) in self.handles.iter().enumerate() {
            let ones = u64::from(word.count_ones());
            if k < ones {
                let mut w = word;
                for _ in 0..k {
                    w &= w - 1; // drop the lowest set bit
                }
                return i as u64 * 64 + u64::from(w.trailing_zeros());
            }
            k -= ones;
        }
        1
    }

    fn handle_arg(&mut self) -> u64 {
        match self.rng.percent() {
            0..50 => self.some_handle(),
            50..58 => 0,
            58..73 => self.rng.below(16),
            73..83 => self
                .rng
                .pick(&[1023, 1024, 0x7FFF_FFFF, 0xFFFF_FFFF, 1 << 32]),
            83..93 => self.some_handle() | (self.rng.next() << 32),
            _ => self.rng.next(),
        }
    }

    /// A handle that is never 0 in its low 32 bits (the log stays open and quiet).
    fn handle_not_log(&mut self) -> u64 {
        let handle = self.handle_arg();
        if handle & 0xFFFF_FFFF == 0 {
            self.some_handle()
        } else {
            handle
        }
    }

    // -- numbers --

    fn int_arg(&mut self) -> u64 {
        match self.rng.percent() {
            0..60 => self.rng.pick(&BOUNDARY),
            60..80 => self.rng.below(1 << 16),
            80..90 => (self.rng.below(64) as i64 - 32) as u64,
            _ => self.rng.next(),
        }
    }

    /// Lengths of mappings: mostly a few pages, sometimes boundaries or anything.
    fn map_len(&mut self) -> u64 {
        match self.rng.percent() {
            0..60 => (1 + self.rng.below(8)) * PAGE - self.rng.below(2) * self.rng.below(PAGE),
            60..70 => (1 + self.rng.below(256)) * PAGE,
            70..85 => self
                .rng
                .pick(&[0, 1, 4095, 4096, 4097, 1 << 47, u64::MAX, u64::MAX - 4095]),
            _ => self.rng.next(),
        }
    }

    // -- pointers --

    /// An address that must not be accessible: unmapped, kernel-half, non-canonical...
    /// An address no mapping can ever cover (outside user space).
    fn never_mapped(&mut self) -> u64 {
        match self.rng.below(4) {
            0 => 0,
            1 => KERNEL_HALF + self.rng.below(1 << 40),
            2 => NON_CANONICAL + self.rng.below(1 << 40),
            _ => USER_END + self.rng.below(2 * PAGE),
        }
    }

    fn bad_ptr(&mut self) -> u64 {
        match self.rng.below(8) {
            0 => 0,
            1 => self.rng.below(USER_START),
            2 => 0xdead_0000,
            3 => 0x1000_0000 + self.rng.below(0x7000_0000_0000 - 0x1000_0000),
            4 => KERNEL_HALF + self.rng.below(1 << 40),
            5 => NON_CANONICAL + self.rng.below(1 << 40),
            6 => u64::MAX - self.rng.below(64),
            _ => USER_END + self.rng.below(2 * PAGE),
        }
    }

    fn some_mapping(&mut self) -> Option<Mapping> {
        let start = self.rng.below(MAX_MAPPINGS as u64) as usize;
        (0..MAX_MAPPINGS)
            .map(|i| self.mappings[(start + i) % MAX_MAPPINGS])
            .find(Option::is_some)
            .flatten()
    }

    /// A length for a buffer of `room` bytes: mostly small.
    fn len_within(&mut self, room: u64) -> u64 {
        let cap = match self.rng.percent() {
            0..70 => 256,
            70..90 => 4096,
            _ => room,
        };
        self.rng.below(cap.min(room) + 1)
    }

    /// A buffer the kernel reads from (WRITE): anything goes.
    fn source(&mut self) -> (u64, u64) {
        match self.rng.percent() {
            0..45 => {
                let off = self.rng.below(ARENA_SIZE);
                let len = self.len_within(ARENA_SIZE - off);
                (arena() + off, len)
            }
            45..55 => (
                READ_ONLY.as_ptr() as u64,
                self.len_within(READ_ONLY.len() as u64),
            ),
            55..60 => (main as *const () as u64, self.len_within(256)),
            60..70 => match self.some_mapping() {
                Some(m) => {
                    let off = self.rng.below(m.len);
                    (m.addr + off, self.len_within(m.len - off))
                }
                None => (self.bad_ptr(), self.int_arg()),
            },
            70..75 => (USER_END - 1 - self.rng.below(64), self.rng.below(256)),
            _ => (self.bad_ptr(), self.int_arg()),
        }
    }

    /// A buffer the kernel writes to (READ, READDIR): our arena's writable part or our
    /// mappings (then `true`: `len` bytes of room), or memory where no byte the kernel
    /// may copy can land on anything of ours (`false`: any length will do).
    fn target(&mut self) -> (u64, u64, bool) {
        match self.rng.percent() {
            0..50 => {
                let off = self.rng.below(WRITABLE_END);
                let len = self.len_within(WRITABLE_END - off);
                (arena() + off, len, true)
            }
            50..60 => match self.some_mapping() {
                Some(m) => {
                    let off = self.rng.below(m.len);
                    (m.addr + off, self.len_within(m.len - off), true)
                }
                None => (self.bad_ptr(), self.int_arg(), false),
            },
            60..70 => (READ_ONLY.as_ptr() as u64, 1 + self.rng.below(256), false),
            70..75 => {
                // Straddles USER_END. The kernel checks only the bytes it copies (a
                // short read may land below USER_END), so the part below stays
                // within the top 16 bytes of the stack, which nothing uses (`_start`
                // aligns rsp down to USER_END - 16 before its first push). Any READDIR
                // entry (272 bytes) straddles.
                let below = 1 + self.rng.below(16);
                (USER_END - below, below + 1 + self.rng.below(4096), false)
            }
            _ => (self.bad_ptr(), self.int_arg(), false),
        }
    }

    fn path(&mut self) -> u64 {
        match self.rng.percent() {
            0..45 => self.rng.pick(&PATHS[..GOOD_PATHS]).as_ptr() as u64,
            45..70 => self.rng.pick(&PATHS).as_ptr() as u64,
            70..85 => {
                let slots = (ARENA_SIZE - WRITABLE_END) / SLOT;
                arena() + WRITABLE_END + self.rng.below(slots) * SLOT
            }
            85..90 => NO_NUL.as_ptr() as u64,
            _ => self.bad_ptr(),
        }
    }

    fn exec_path(&mut self) -> u64 {
        if self.rng.percent() < 80 {
            self.rng.pick(&EXEC_PATHS).as_ptr() as u64
        } else {
            self.bad_ptr()
        }
    }

    // -- mappings --

    fn remember(&mut self, addr: u64, len: u64) {
        let slot = match self.mappings.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                // Full: let the oldest go.
                let victim = self.next_slot;
                self.next_slot = (self.next_slot + 1) % MAX_MAPPINGS;
                if let Some(m) = self.mappings[victim] {
                    raw(Call {
                        nr: Sys::MUNMAP as u64,
                        args: [m.addr, m.len, 0, 0, 0],
                    });
                }
                victim
            }
        };
        self.mappings[slot] = Some(Mapping {
            addr,
            len: len.div_ceil(PAGE) * PAGE,
        });
    }

    fn forget_range(&mut self, start: u64, end: u128) {
        for slot in &mut self.mappings {
            if let Some(m) = *slot {
                if u128::from(m.addr) < end && u128::from(m.addr + m.len) > u128::from(start) {
                    *slot = None;
                }
            }
        }
    }

    // -- drawing a call --

    /// The next call, or None when the drawn one would harm this program (skipped).
    fn draw(&mut self) -> Option<Call> {
        if let Some(call) = self.draw_dirs() {
            return Some(call);
        }
        if let Some(call) = self.draw_chan() {
            return Some(call);
        }
        if self.rng.percent() >= 70 {
            return Some(self.unknown_call());
        }
        let sys = loop {
            let sys = self.rng.pick(&Sys::ALL);
            // These end this program, or start code it did not write.
            if !matches!(sys, Sys::EXIT | Sys::THREAD_EXIT | Sys::THREAD_CREATE) {
                break sys;
            }
        };
        let mut a = [0u64; 5];
        match sys {
            Sys::EXIT | Sys::THREAD_EXIT | Sys::THREAD_CREATE => unreachable!(),
            Sys::JOIN => a[0] = self.handle_arg(),
            Sys::FUTEX_WAIT => {
                a[0] = self.map_addr();
                a[1] = if self.rng.percent() < 50 { 0 } else { self.int_arg() };
                a[2] = self.rng.below(1_000_000); // at most 1 ms: never a wait without end
            }
            Sys::FUTEX_WAKE => {
                a[0] = self.map_addr();
                a[1] = self.int_arg();
            }
            Sys::PROCESS_OPEN => a[0] = self.int_arg(),
            // Always NONBLOCK: a READ of an empty blocking event would wait forever.
            Sys::EVENT_CREATE => a[0] = 1 | (self.rng.below(4) << 1) * u64::from(self.rng.percent() < 10),
            Sys::WAIT_MANY => {
                (a[0], _, _) = self.target();
                a[1] = if self.rng.percent() < 80 { self.rng.below(66) } else { self.int_arg() };
                a[2] = self.rng.below(1_000_000); // at most 1 ms
            }
            Sys::CLOCK => {}
            Sys::SLEEP => a[0] = self.rng.below(1_000_000),
            // Records read from memory this program holds would be calls it did not
            // choose (an MUNMAP of itself): only arrays BATCH must refuse (EFAULT) or
            // counts and flags it must refuse (EINVAL).
            Sys::BATCH => {
                a[0] = match self.rng.percent() {
                    0..30 => 0,
                    30..60 => 0xFFFF_8000_0000_0000 + self.rng.below(1 << 20) * 64,
                    _ => USER_END + self.rng.below(PAGE), // past user space
                };
                a[1] = self.rng.below(70);
                a[2] = self.rng.below(4);
            }
            // The VMM class: without guests every index is missing; with them a
            // VCPU_RUN gets at most 1 ms.
            Sys::VM_OPEN => a[0] = self.int_arg(),
            Sys::VM_CAPABILITIES | Sys::VCPU_OPEN => {
                a[0] = self.handle_arg();
                a[1] = self.int_arg();
            }
            Sys::VCPU_RUN => {
                a[0] = self.handle_arg();
                a[1] = self.rng.below(1_000_000);
            }
            Sys::VM_SET_MSR_FILTER => {
                a[0] = self.handle_arg();
                a[1] = self.map_addr();
                a[2] = self.rng.below(20);
            }
            Sys::VM_MEMORY => a[0] = self.handle_arg(),
            Sys::IO_EVENT_CREATE | Sys::MMIO_EVENT_CREATE => {
                a[0] = self.handle_arg();
                a[1] = self.int_arg();
                a[2] = self.int_arg();
            }
            Sys::IRQ_CREATE => {
                a[0] = self.handle_arg();
                a[1] = self.int_arg();
                a[2] = self.int_arg();
                a[3] = self.rng.below(3);
            }
            Sys::IRQ_SIGNAL => a[0] = self.handle_arg(),
            Sys::MMAP => {
                let anonymous = self.rng.percent() < 55;
                a[0] = self.handle_arg();
                a[1] = match self.rng.percent() {
                    0..50 => 0,
                    50..70 => MMAP_BASE + self.rng.below(1 << 28) * PAGE,
                    70..80 => image_start(), // our image: must not be replaced
                    80..90 => self.rng.next() & !(PAGE - 1),
                    _ => self.int_arg(),
                };
                a[2] = match self.rng.percent() {
                    0..70 => 0,
                    70..90 => self.rng.below(8) * PAGE,
                    _ => self.int_arg(),
                };
                a[3] = self.map_len();
                a[4] = match self.rng.percent() {
                    0..75 => {
                        let mut flags = 1 | (self.rng.below(8) << 1); // READ + W/X/PRIVATE
                        if anonymous {
                            flags |= 16;
                        }
                        flags
                    }
                    75..90 => self.rng.below(64),
                    _ => self.rng.next(),
                };
                if a[4] & 32 != 0 {
                    // FIXED only inside the arena, and never longer than 1 GiB.
                    a[1] = FIXED_ARENA + self.rng.below(1 << 16) * PAGE + self.rng.below(2);
                    a[3] = a[3].min(1 << 30);
                }
            }
            Sys::MUNMAP => {
                a[0] = self.map_addr();
                a[1] = self.map_len();
                let end = u128::from(a[0]) + u128::from(a[1].div_ceil(PAGE)) * u128::from(PAGE);
                if touches_self(a[0], end) {
                    return None;
                }
            }
            Sys::MRESIZE => {
                a[0] = self.map_addr();
                a[1] = self.map_len();
                if touches_self(a[0], u128::from(a[0]) + 1) {
                    return None;
                }
            }
            Sys::EXEC => {
                a[0] = self.exec_path();
                a[1] = self.path();
                a[2] = if self.rng.percent() < 50 {
                    0
                } else {
                    self.int_arg()
                };
            }
            Sys::WAIT => a[0] = self.int_arg(),
            Sys::CLOSE => a[0] = self.handle_not_log(),
            Sys::OPEN => {
                a[0] = self.path();
                a[1] = if self.rng.percent() < 75 {
                    self.rng.below(16)
                } else {
                    self.int_arg()
                };
                a[2] = match self.rng.percent() {
                    0..50 => FileFlag::CREATE.bits(),
                    50..80 => 0,
                    _ => self.int_arg(),
                };
            }
            Sys::READ => {
                a[0] = self.handle_arg();
                (a[1], a[2], _) = self.target();
            }
            Sys::WRITE => {
                a[0] = self.handle_not_log();
                (a[1], a[2]) = self.source();
            }
            Sys::SEEK => {
                a[0] = self.handle_arg();
                a[1] = self.int_arg();
                a[2] = if self.rng.percent() < 80 {
                    self.rng.below(3)
                } else {
                    self.int_arg()
                };
            }
            Sys::TRUNCATE => {
                a[0] = self.handle_arg();
                a[1] = match self.rng.percent() {
                    0..30 => 0,
                    30..60 => self.rng.below(8192),
                    _ => self.int_arg(),
                };
            }
            Sys::UNLINK | Sys::OPENDIR | Sys::MKDIR | Sys::RMDIR => a[0] = self.path(),
            Sys::READDIR => {
                a[0] = self.handle_arg();
                let (buf, len, room) = self.target();
                a[1] = buf;
                a[2] = if room {
                    len / DirEnt::SIZE as u64 // the entries fit in the room
                } else {
                    self.int_arg()
                };
            }
            Sys::CHANNEL_CREATE => a[0] = if self.rng.percent() < 85 { 0 } else { self.int_arg() },
            Sys::SEND | Sys::RECV => {
                a[0] = self.handle_arg();
                a[1] = if self.rng.percent() < 90 {
                    self.message(sys == Sys::RECV, false)
                } else {
                    self.bad_ptr()
                };
                a[2] = self.channel_flags();
            }
            // Both wait for an answer that may never come: their receive buffer is always
            // unwritable, so they are refused (EFAULT) before anything is sent or answered.
            Sys::CHANNEL_CALL => {
                a[0] = self.handle_arg();
                a[1] = self.message(false, false);
                a[2] = self.never_mapped();
                a[3] = if self.rng.percent() < 80 { 0 } else { self.int_arg() };
            }
            Sys::DEVICE_REPLY => {
                a[0] = self.handle_arg();
                (a[1], _, _) = self.target();
                a[2] = self.never_mapped();
            }
            Sys::DUPLICATE => {
                a[0] = self.handle_arg();
                a[1] = self.rights_arg();
            }
            Sys::REPLACE => {
                a[0] = self.handle_not_log();
                a[1] = self.rights_arg();
            }
            Sys::EXEC_HANDLES => {
                a[0] = self.exec_path();
                a[1] = self.path();
                self.message(false, false);
                a[2] = if self.rng.percent() < 90 { ids_ptr() as u64 } else { self.bad_ptr() };
                a[3] = if self.rng.percent() < 80 { self.rng.below(5) } else { self.int_arg() };
                a[4] = if self.rng.percent() < 80 { 0 } else { self.int_arg() };
            }
            Sys::CAPABILITIES => {
                a[0] = if self.rng.percent() < 70 {
                    self.rng.below(5)
                } else {
                    self.int_arg()
                };
            }
        }
        if matches!(sys, Sys::CLOSE | Sys::JOIN | Sys::REPLACE) && is_fuzzing_thread(a[0]) {
            return None; // closing, joining or restricting a fellow fuzzing thread: never
        }
        Some(Call {
            nr: sys as u64,
            args: a,
        })
    }

    fn map_addr(&mut self) -> u64 {
        match self.rng.percent() {
            0..50 => match self.some_mapping() {
                Some(m) => m.addr + self.rng.below(m.len / PAGE + 1) * PAGE,
                None => FIXED_ARENA,
            },
            50..70 => FIXED_ARENA + self.rng.below(1 << 16) * PAGE,
            70..80 => MMAP_BASE + self.rng.below(1 << 12) * PAGE + self.rng.below(PAGE),
            _ => match self.rng.below(3) {
                0 => self.bad_ptr(),
                1 => self.rng.pick(&BOUNDARY),
                _ => self.rng.next(),
            },
        }
    }

    fn unknown_call(&mut self) -> Call {
        let nr = loop {
            let nr = match self.rng.below(3) {
                0 => sysno(self.rng.below(6) as u32, self.rng.below(16) as u32),
                1 => self.rng.pick(&BOUNDARY),
                _ => self.rng.next(),
            };
            if Sys::from_raw(nr).is_none() {
                break nr;
            }
        };
        let mut args = [0; 5];
        for arg in &mut args {
            *arg = self.rng.next();
        }
        Call { nr, args }
    }

    // -- judging --

    /// Counts the answer; returns why it is unexpected, if it is.
    fn judge(&mut self, call: Call, rax: u64) -> Option<&'static str> {
        let sys = Sys::from_raw(call.nr);
        let index = sys.map_or(Sys::ALL.len(), |s| {
            Sys::ALL.iter().position(|&t| t == s).unwrap_or(0)
        });
        self.calls[index] += 1;
        if rax > ERROR_THRESHOLD {
            let Some(errno) = Errno::from_raw(rax as i64) else {
                return Some("not a documented error code");
            };
            if let Some(i) = Errno::ALL.iter().position(|&e| e == errno) {
                self.errors[i] += 1;
            }
            if errno == Errno::UNKNOWN {
                return Some("UNKNOWN: an internal kernel error");
            }
            if sys.is_none() && errno != Errno::ENOSYS {
                return Some("an unknown number must answer ENOSYS");
            }
            return None;
        }
        self.successes[index] += 1;
        let Some(sys) = sys else {
            return Some("an unknown number succeeded");
        };
        let [a0, a1, a2, a3, a4] = call.args;
        match sys {
            Sys::OPEN | Sys::OPENDIR | Sys::EVENT_CREATE | Sys::PROCESS_OPEN | Sys::DUPLICATE => {
                if rax >= MAX_HANDLES {
                    return Some("a handle beyond MAX_HANDLES");
                }
                self.track(rax);
            }
            Sys::CHANNEL_CREATE => {
                let (first, second) = (rax & 0xFFFF_FFFF, rax >> 32);
                if first >= MAX_HANDLES || second >= MAX_HANDLES || first == second {
                    return Some("endpoint handles beyond MAX_HANDLES or equal");
                }
                self.track(first);
                self.track(second);
            }
            Sys::SEND => {
                if rax != 0 {
                    return Some("SEND returned non-zero");
                }
                // SAFETY: our own statics; the kernel is done with them.
                let count = unsafe { (*msg_ptr()).handle_count } as usize;
                for i in 0..count.min(CHANNEL_MAX_HANDLES as usize) {
                    // SAFETY: as above, in bounds.
                    self.untrack(u64::from(unsafe { *ids_ptr().add(i) }));
                }
            }
            Sys::RECV => {
                // SAFETY: our own statics; the kernel is done with them.
                let (len, count) = unsafe { ((*msg_ptr()).data_len, (*msg_ptr()).handle_count) };
                if rax != u64::from(len) || count > self.recv_capacity {
                    return Some("RECV's sizes disagree with its result or capacity");
                }
                for i in 0..count as usize {
                    // SAFETY: as above, in bounds (count <= capacity <= the array).
                    let id = u64::from(unsafe { *ids_ptr().add(i) });
                    if id >= MAX_HANDLES {
                        return Some("RECV installed a handle beyond MAX_HANDLES");
                    }
                    self.track(id);
                }
            }
            Sys::REPLACE if rax != 0 => return Some("non-zero success"),
            Sys::EXEC_HANDLES => {
                let _ = raw(Call {
                    nr: Sys::WAIT as u64,
                    args: [rax, 0, 0, 0, 0],
                });
                return Some("EXEC_HANDLES started a program from a path that names none");
            }
            Sys::CLOSE => {
                if rax != 0 {
                    return Some("CLOSE returned non-zero");
                }
                self.untrack(a0 & 0xFFFF_FFFF);
            }
            Sys::READ | Sys::WRITE if rax > a2 => return Some("more bytes than asked"),
            Sys::READDIR if rax > a2.min(256) => return Some("more entries than asked"),
            Sys::MMAP => {
                let end = u128::from(rax) + u128::from(a3.div_ceil(PAGE)) * u128::from(PAGE);
                if rax % PAGE != 0 || rax < USER_START || end > u128::from(MAP_AREA_END) {
                    return Some("a mapping outside the MMAP area");
                }
                if a4 & 32 != 0 && rax != a1 {
                    return Some("a FIXED mapping elsewhere than asked");
                }
                self.remember(rax, a3);
            }
            Sys::MUNMAP | Sys::MRESIZE if rax != 0 => return Some("non-zero success"),
            Sys::MUNMAP => {
                let end = u128::from(a0) + u128::from(a1.div_ceil(PAGE)) * u128::from(PAGE);
                self.forget_range(a0, end);
            }
            Sys::MRESIZE => {
                for m in self.mappings.iter_mut().flatten() {
                    if m.addr == a0 {
                        m.len = a1.div_ceil(PAGE) * PAGE;
                    }
                }
            }
            Sys::UNLINK | Sys::MKDIR | Sys::RMDIR if rax != 0 => {
                return Some("non-zero success");
            }
            Sys::EXEC => {
                let _ = raw(Call {
                    nr: Sys::WAIT as u64,
                    args: [rax, 0, 0, 0, 0],
                });
                return Some("EXEC started a program from a path that names none");
            }
            _ => {}
        }
        None
    }
}

// --- channels ------------------------------------------------------------------------------

const CHAN_CONF: &str = "/etc/fuzz-chan.conf";

fn chan_mode() -> bool {
    let on = fs::open(CHAN_CONF, FileMode::READ, FileFlag::EMPTY).is_ok();
    if on {
        println!("syscall-fuzz: channels mode ({CHAN_CONF})");
    }
    on
}

impl Fuzzer {
    /// Flags of SEND and RECV: never BLOCK (a full or empty queue of ours would wait
    /// forever); sometimes unknown bits.
    fn channel_flags(&mut self) -> u64 {
        if self.rng.percent() < 85 { 0 } else { self.rng.next() | 2 }
    }

    fn rights_arg(&mut self) -> u64 {
        match self.rng.percent() {
            0..40 => RIGHTS_SAME,
            40..85 => self.rng.below(64),
            _ => self.int_arg(),
        }
    }

    /// Fills MSG (and IDS) for a SEND or a RECV and returns MSG's address. `valid`:
    /// buffers and counts that fit (the channels mode's usual case).
    fn message(&mut self, recv: bool, valid: bool) -> u64 {
        let max = CHANNEL_MAX_HANDLES;
        let (data, len) = if recv {
            let (buf, len, _) = if valid {
                let off = self.rng.below(WRITABLE_END / 2);
                (arena() + off, self.rng.below(512), true)
            } else {
                self.target()
            };
            (buf, len)
        } else if valid {
            (arena() + self.rng.below(WRITABLE_END), self.rng.below(256))
        } else {
            self.source()
        };
        let count = match self.rng.percent() {
            0..40 if valid => 0,
            0..85 => self.rng.below(4),
            85..95 => self.rng.below(max + 1),
            _ if recv => self.rng.below(max + 1), // never beyond IDS: the kernel writes there
            _ => self.int_arg(),
        };
        for i in 0..count.min(max) as usize {
            let mut id = if valid || self.rng.percent() < 80 {
                self.some_handle() as u32
            } else {
                self.handle_arg() as u32
            };
            if is_fuzzing_thread(u64::from(id)) {
                id = 0; // a fellow fuzzing thread never moves away (the log is refused: EPERM)
            }
            // SAFETY: our own static, in bounds.
            unsafe { ids_ptr().add(i).write(id) };
        }
        if recv {
            self.recv_capacity = count as u32;
        }
        let handles = if valid || self.rng.percent() < 95 { ids_ptr() as u64 } else { self.bad_ptr() };
        let message = ChannelMessage {
            data,
            handles,
            data_len: len as u32,
            handle_count: count as u32,
        };
        // SAFETY: our own static; no call is in progress.
        unsafe { msg_ptr().write(message) };
        msg_ptr() as u64
    }

    /// A call of the channels mode, or None (mode off, or the other 40 %).
    fn draw_chan(&mut self) -> Option<Call> {
        if !self.chan {
            return None;
        }
        let kind = self.rng.percent();
        if kind >= 60 {
            return None;
        }
        let mut a = [0u64; 5];
        let sys = match kind {
            0..6 => Sys::CHANNEL_CREATE,
            6..10 => {
                a[0] = 1; // NONBLOCK: something to move
                Sys::EVENT_CREATE
            }
            10..28 => {
                a[0] = self.some_handle();
                a[1] = self.message(false, true);
                Sys::SEND
            }
            28..46 => {
                a[0] = self.some_handle();
                a[1] = self.message(true, true);
                Sys::RECV
            }
            46..50 => {
                a[0] = self.some_handle();
                a[1] = self.rights_arg();
                Sys::DUPLICATE
            }
            50..53 => {
                a[0] = self.handle_not_log();
                a[1] = self.rights_arg();
                Sys::REPLACE
            }
            _ => {
                a[0] = self.handle_not_log();
                Sys::CLOSE
            }
        };
        Some(Call { nr: sys as u64, args: a })
    }
}

// --- the OPENDIR/MKDIR-heavy mode ---------------------------------------------------------
//
// On when /etc/fuzz-dirs.conf exists (its contents are ignored). Then 60 % of the calls
// are drawn here: MKDIR (30 %) and OPEN with CREATE (15 %) of a name in the numbered
// tree `/fuzz/m/<i>` or `/fuzz/m/<i>/<j>` (i, j < 16: up to 272 names; now and then
// `/fuzz/m` itself), RMDIR and UNLINK of one (10 % each), OPENDIR of `/fuzz/m` or
// `/fuzz/m/<i>` (20 %; the handle is kept like every other), READDIR of a held handle
// into the arena (5 %), CLOSE of a held handle (10 %). `judge` checks the answers as usual; ENOMEM (the kernel's metadata
// budget) and EMFILE are documented answers. Because the tree is numbered, `finish`
// removes it by name without OPENDIR, which a spent budget may refuse, and only then
// removes the rest of /fuzz by READDIR.

const DIRS_CONF: &str = "/etc/fuzz-dirs.conf";
const DIRS_TOP: &str = "/fuzz/m";
const DIRS_FANOUT: u64 = 16;

struct DirsMode {
    /// The path of the current call, NUL-terminated (the kernel reads it in the call).
    path: [u8; 32],
}

impl DirsMode {
    fn from_conf() -> Option<Self> {
        fs::open(DIRS_CONF, FileMode::READ, FileFlag::EMPTY).ok()?;
        println!("syscall-fuzz: OPENDIR/MKDIR-heavy mode ({DIRS_CONF})");
        Some(Self { path: [0; 32] })
    }
}

/// `/fuzz/m`, `/fuzz/m/<i>` or `/fuzz/m/<i>/<j>` into `buf`, NUL-terminated.
fn dirs_path(buf: &mut [u8; 32], i: Option<u64>, j: Option<u64>) -> &str {
    let mut len = DIRS_TOP.len();
    buf[..len].copy_from_slice(DIRS_TOP.as_bytes());
    for n in [i, j].into_iter().flatten() {
        buf[len] = b'/';
        len += 1;
        if n >= 10 {
            buf[len] = b'0' + (n / 10) as u8;
            len += 1;
        }
        buf[len] = b'0' + (n % 10) as u8;
        len += 1;
    }
    buf[len] = 0;
    core::str::from_utf8(&buf[..len]).unwrap_or("")
}

impl Fuzzer {
    /// A call of the OPENDIR/MKDIR-heavy mode, or None (mode off, or the other 40 %).
    fn draw_dirs(&mut self) -> Option<Call> {
        self.dirs.as_ref()?;
        let kind = self.rng.percent();
        if kind >= 60 {
            return None;
        }
        let i = self.rng.below(DIRS_FANOUT);
        let j = self.rng.below(DIRS_FANOUT);
        let nested = self.rng.percent() < 60;
        let top = self.rng.percent() < 3; // /fuzz/m itself, should a call have removed it
        let dirs = self.dirs.as_mut()?;
        let (i, j) = match (top, nested) {
            (true, _) => (None, None),
            (false, true) => (Some(i), Some(j)),
            (false, false) => (Some(i), None),
        };
        let path = dirs_path(&mut dirs.path, i, j).as_ptr() as u64;
        let mut a = [0u64; 5];
        let sys = match kind * 100 / 60 {
            0..30 => {
                a[0] = path;
                Sys::MKDIR
            }
            30..45 => {
                a[0] = path;
                a[1] = (FileMode::READ | FileMode::WRITE).bits();
                a[2] = FileFlag::CREATE.bits();
                Sys::OPEN
            }
            45..55 => {
                a[0] = path;
                Sys::RMDIR
            }
            55..65 => {
                a[0] = path;
                Sys::UNLINK
            }
            65..85 => {
                // Directories only: /fuzz/m (a third of the time) or /fuzz/m/<i>.
                let i = i.filter(|_| self.rng.below(3) != 0);
                let dirs = self.dirs.as_mut()?;
                a[0] = dirs_path(&mut dirs.path, i, None).as_ptr() as u64;
                Sys::OPENDIR
            }
            85..90 => {
                a[0] = self.some_handle();
                a[1] = arena();
                a[2] = 1 + self.rng.below(WRITABLE_END / DirEnt::SIZE as u64);
                Sys::READDIR
            }
            _ => {
                a[0] = self.handle_not_log();
                Sys::CLOSE
            }
        };
        Some(Call {
            nr: sys as u64,
            args: a,
        })
    }
}

/// Removes the numbered tree by name (deepest first), then `/fuzz/m`; returns how many
/// removals failed otherwise than by ENOTFOUND or ENOTDIR (nothing there, or a file on
/// the way) or ENOTEMPTY (something the ordinary draws put there, which `remove_tree`
/// takes later).
fn remove_dirs_tree() -> u64 {
    let mut buf = [0u8; 32];
    let mut wrong = 0;
    let mut remove = |i: Option<u64>, j: Option<u64>| {
        let path = dirs_path(&mut buf, i, j);
        let result = match fs::rmdir(path) {
            Err(e) if e.is(Errno::ENOTDIR) => fs::unlink(path),
            other => other,
        };
        match result {
            Err(e)
                if ![Errno::ENOTFOUND, Errno::ENOTDIR, Errno::ENOTEMPTY]
                    .iter()
                    .any(|&x| e.is(x)) =>
            {
                println!("FAIL removing {path}: {e}");
                wrong += 1;
            }
            _ => {}
        }
    };
    for i in 0..DIRS_FANOUT {
        for j in 0..DIRS_FANOUT {
            remove(Some(i), Some(j));
        }
        remove(Some(i), None);
    }
    remove(None, None);
    wrong
}

/// Whether [start, end) reaches this program's image or stack (or wraps onto them).
fn touches_self(start: u64, end: u128) -> bool {
    let start = u128::from(start);
    let image = (
        u128::from(image_start()),
        u128::from(image_start() + IMAGE_GUARD_SIZE),
    );
    let stack = (u128::from(MAP_AREA_END), u128::from(USER_END));
    let threads = (u128::from(MMAP_BASE), u128::from(MMAP_BASE + THREADS_GUARD));
    let wraps = end > 1 << 64;
    let hits = |(lo, hi): (u128, u128)| start < hi && end > lo;
    wraps || hits(image) || hits(stack) || (THREADS.load(Ordering::Relaxed) != 0 && hits(threads))
}

fn raw(call: Call) -> u64 {
    let [a0, a1, a2, a3, a4] = call.args;
    // SAFETY: `draw` keeps every buffer the kernel may write inside this program's
    // arena and mappings, or in ranges the kernel must refuse, and keeps MUNMAP,
    // MRESIZE and FIXED mappings away from the image and the stack.
    unsafe { syscall5_via(Entry::DOORBELL, call.nr, a0, a1, a2, a3, a4) }
}

fn raw_via(entry: Entry, call: Call) -> u64 {
    let [a0, a1, a2, a3, a4] = call.args;
    // SAFETY: as for `raw`.
    unsafe { syscall5_via(entry, call.nr, a0, a1, a2, a3, a4) }
}

/// A syscall number as its name, or in hex when it is no syscall.
struct Name(u64);

impl core::fmt::Display for Name {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match Sys::from_raw(self.0) {
            Some(sys) => f.write_str(sys.name()),
            None => write!(f, "{:#x}", self.0),
        }
    }
}

fn main() -> u32 {
    let (seed, count) = match config() {
        Ok(conf) => conf,
        Err(why) => {
            println!("syscall-fuzz: {CONF}: {why}");
            return 1;
        }
    };
    println!("syscall-fuzz: seed {seed:#x}, {count} calls");
    let mut fuzzer = Fuzzer::new(seed, DirsMode::from_conf());
    fill_arena(&mut fuzzer.rng);
    if let Err(e) = fs::mkdir(WORK) {
        if !e.is(Errno::EEXIST) {
            println!("syscall-fuzz: MKDIR {WORK}: {e}");
            return 1;
        }
    }

    if let Err(e) = make_not_elf() {
        println!("syscall-fuzz: {NOT_ELF}: {e}");
        return 1;
    }

    // Threads mode (see its section): off without its file.
    match threads_conf() {
        Ok(Some(n)) => return fuzz_in_threads(seed, count, n),
        Ok(None) => {}
        Err(why) => {
            println!("syscall-fuzz: {THREADS_CONF}: {why}");
            return 1;
        }
    }

    // Many-process mode (see its section at the end): off without its file.
    let mut procs = match Procs::load(seed) {
        Ok(procs) => procs,
        Err(why) => {
            println!("syscall-fuzz: {PROCS_CONF}: {why}");
            return 1;
        }
    };

    fuzz(&mut fuzzer, count, procs.as_mut());

    if let Some(procs) = procs.as_mut() {
        fuzzer.unexpected += procs.finish();
    }
    fuzzer.unexpected += finish(&mut fuzzer);
    for (i, sys) in Sys::ALL.iter().enumerate() {
        println!(
            "calls {}: {} ({} ok)",
            sys.name(),
            fuzzer.calls[i],
            fuzzer.successes[i]
        );
    }
    println!("calls unknown: {}", fuzzer.calls[Sys::ALL.len()]);
    let ok: u64 = fuzzer.successes.iter().sum();
    println!("result ok: {ok}");
    for (i, errno) in Errno::ALL.iter().enumerate() {
        println!("result {}: {}", errno.name(), fuzzer.errors[i]);
    }
    println!(
        "redrawn: {} (would have hit the image or stack)",
        fuzzer.skipped
    );
    println!("SUMMARY {count} calls, {} unexpected", fuzzer.unexpected);
    u32::from(fuzzer.unexpected != 0)
}

/// `count` calls drawn by `fuzzer`, each judged (FAIL lines for the first few
/// unexpected answers); the many-process mode acts between them when it is on.
fn fuzz(fuzzer: &mut Fuzzer, count: u64, mut procs: Option<&mut Procs>) {
    for n in 0..count {
        if let Some(procs) = procs.as_deref_mut() {
            procs.step(n, count);
        }
        let call = loop {
            match fuzzer.draw() {
                Some(call) => break call,
                None => fuzzer.skipped += 1,
            }
        };
        let entry = if fuzzer.rng.percent() < 20 {
            Entry::INT80
        } else {
            Entry::DOORBELL
        };
        let rax = raw_via(entry, call);
        if let Some(procs) = procs.as_deref_mut()
            && call.nr == Sys::WAIT as u64
            && rax <= ERROR_THRESHOLD
        {
            procs.waited_elsewhere(call.args[0], rax);
        }
        if let Some(why) = fuzzer.judge(call, rax) {
            fuzzer.unexpected += 1;
            if fuzzer.unexpected <= FAILS_SHOWN {
                let [a0, a1, a2, a3, a4] = call.args;
                println!(
                    "FAIL call {n} via {}: {} {a0:#x} {a1:#x} {a2:#x} {a3:#x} {a4:#x} -> {rax:#x}: {why}",
                    entry.name(),
                    Name(call.nr)
                );
            }
        }
    }
}

/// Closes every held handle, unmaps the remembered mappings and removes /fuzz; returns
/// how many of these steps went wrong.
fn finish(fuzzer: &mut Fuzzer) -> u64 {
    let mut wrong = 0;
    for id in 0..MAX_HANDLES {
        if fuzzer.handles[(id / 64) as usize] & (1 << (id % 64)) != 0 {
            let rax = raw(Call {
                nr: Sys::CLOSE as u64,
                args: [id, 0, 0, 0, 0],
            });
            if rax != 0 {
                println!("FAIL close of held handle {id}: {rax:#x}");
                wrong += 1;
            }
        }
    }
    for m in fuzzer.mappings.iter().flatten() {
        raw(Call {
            nr: Sys::MUNMAP as u64,
            args: [m.addr, m.len, 0, 0, 0],
        });
    }
    if fuzzer.dirs.is_some() {
        wrong += remove_dirs_tree();
    }
    let mut path = [0u8; 1024];
    path[..WORK.len()].copy_from_slice(WORK.as_bytes());
    match fs::opendir(WORK) {
        Ok(dir) => {
            drop(dir);
            if let Err(why) = remove_tree(&mut path, WORK.len()) {
                println!("FAIL removing {WORK}: {why}");
                wrong += 1;
            }
        }
        Err(e) if e.is(Errno::ENOTFOUND) => {} // a random RMDIR took it
        Err(e) => {
            println!("FAIL OPENDIR {WORK}: {e}");
            wrong += 1;
        }
    }
    wrong
}

/// Removes the tree at `path[..len]` through READDIR, UNLINK and RMDIR.
fn remove_tree(path: &mut [u8; 1024], len: usize) -> Result<(), &'static str> {
    let here = core::str::from_utf8(&path[..len]).map_err(|_| "path not UTF-8")?;
    let dir = fs::opendir(here).map_err(|_| "OPENDIR failed")?;
    let mut entry = [DirEnt::zeroed()];
    while fs::readdir(&dir, &mut entry).map_err(|_| "READDIR failed")? == 1 {
        let name = entry[0].name_bytes();
        let end = len + 1 + name.len();
        if end > path.len() {
            return Err("path too long");
        }
        path[len] = b'/';
        path[len + 1..end].copy_from_slice(name);
        if entry[0].kind() == Some(FileType::DIRECTORY) {
            remove_tree(path, end)?;
        } else {
            let child = core::str::from_utf8(&path[..end]).map_err(|_| "name not UTF-8")?;
            fs::unlink(child).map_err(|_| "UNLINK failed")?;
        }
    }
    drop(dir);
    let here = core::str::from_utf8(&path[..len]).map_err(|_| "path not UTF-8")?;
    fs::rmdir(here).map_err(|_| "RMDIR failed")
}

fn make_not_elf() -> libcopra::Result<()> {
    let file = fs::open(NOT_ELF, FileMode::WRITE | FileMode::TRUNC, FileFlag::CREATE)?;
    fs::write_all(&file, b"\x7fELF\x02\x01\x01 but no program at all")
}

/// `(seed, count)` from the configuration file, or the defaults without one.
fn config() -> Result<(u64, u64), &'static str> {
    let file = match fs::open(CONF, FileMode::READ, FileFlag::EMPTY) {
        Ok(file) => file,
        Err(e) if e.is(Errno::ENOTFOUND) => return Ok((DEFAULT_SEED, DEFAULT_COUNT)),
        Err(_) => return Err("cannot open"),
    };
    let mut buf = [0u8; 64];
    let len = fs::read(&file, &mut buf).map_err(|_| "cannot read")?;
    let text = core::str::from_utf8(&buf[..len]).map_err(|_| "not UTF-8")?;
    let mut words = text.split_ascii_whitespace();
    let seed = number(words.next().ok_or("empty")?)?;
    let count = match words.next() {
        Some(word) => number(word)?,
        None => DEFAULT_COUNT,
    };
    Ok((seed, count))
}

fn number(word: &str) -> Result<u64, &'static str> {
    let parsed = match word.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => word.parse(),
    };
    parsed.map_err(|_| "not a number")
}

// --- threads mode ---------------------------------------------------------------------------
//
// On when /etc/fuzz-threads.conf holds N (1 to 8). The main thread spawns N threads and
// lets them go at once (a futex); each fuzzes `count` calls from its own seed (the
// seed mixed with its index) with its own bookkeeping, on the process's shared handle
// table, address space and files: one thread closes, reads, maps and unmaps what
// another opened or mapped, and every answer must still be a documented one. Nothing
// a thread needs may go: the threads' stacks lie in the first THREADS_GUARD bytes of
// the MMAP area (made before any other mapping), which MUNMAP, MRESIZE and FIXED
// leave alone like the image and the main stack, and no thread CLOSEs or JOINs a
// fuzzing thread's handle. When all have ended the main thread joins them, CLOSEs
// every id but the log (each answer 0 or ENOTFOUND: handles moved between threads, so
// none knows exactly what is left), removes /fuzz and prints
// `SUMMARY <N x count> calls, <unexpected> unexpected` and `threads: N`.

const THREADS_CONF: &str = "/etc/fuzz-threads.conf";
const MAX_THREADS: usize = 8;
/// The threads' stacks (and anything else spawning maps) lie in [MMAP_BASE, + this).
const THREADS_GUARD: u64 = 0x20_0000;

/// How many threads fuzz (0: threads mode is off).
static THREADS: AtomicU64 = AtomicU64::new(0);
static THREAD_SEED: AtomicU64 = AtomicU64::new(0);
static THREAD_COUNT: AtomicU64 = AtomicU64::new(0);
/// 0 until every thread is spawned and its handle recorded.
static GO: AtomicU32 = AtomicU32::new(0);
/// The fuzzing threads' handles (u32::MAX: none).
static THREAD_HANDLES: [AtomicU32; MAX_THREADS] = [const { AtomicU32::new(u32::MAX) }; MAX_THREADS];

fn is_fuzzing_thread(handle: u64) -> bool {
    let handle = (handle & 0xFFFF_FFFF) as u32;
    THREAD_HANDLES.iter().any(|h| h.load(Ordering::Relaxed) == handle)
}

fn threads_conf() -> Result<Option<usize>, &'static str> {
    let Ok(file) = fs::open(THREADS_CONF, FileMode::READ, FileFlag::EMPTY) else {
        return Ok(None);
    };
    let mut buf = [0u8; 16];
    let len = fs::read(&file, &mut buf).map_err(|_| "unreadable")?;
    let text = core::str::from_utf8(&buf[..len]).map_err(|_| "not UTF-8")?;
    let n = number(text.trim())?;
    if n == 0 || n > MAX_THREADS as u64 {
        return Err("the number of threads must be 1 to 8");
    }
    Ok(Some(n as usize))
}

fn fuzz_in_threads(seed: u64, count: u64, n: usize) -> u32 {
    println!("syscall-fuzz: threads mode, {n} threads");
    fill_arena(&mut Rng(seed));
    THREAD_SEED.store(seed, Ordering::Relaxed);
    THREAD_COUNT.store(count, Ordering::Relaxed);
    THREADS.store(n as u64, Ordering::Relaxed);
    let mut joins: [Option<thread::JoinHandle>; MAX_THREADS] = [const { None }; MAX_THREADS];
    let mut wrong = 0u64;
    for (i, slot) in joins.iter_mut().take(n).enumerate() {
        match thread::spawn(fuzz_thread, i as u64) {
            Ok(handle) => {
                THREAD_HANDLES[i].store(handle.handle().raw(), Ordering::Relaxed);
                *slot = Some(handle);
            }
            Err(e) => {
                println!("FAIL spawning thread {i}: {e}");
                wrong += 1;
                break;
            }
        }
    }
    GO.store(1, Ordering::Release);
    let _ = sync::futex_wake(&GO, u32::MAX);
    for (i, slot) in joins.iter_mut().enumerate() {
        if let Some(handle) = slot.take() {
            match handle.join() {
                Ok(code) => wrong += u64::from(code),
                Err(e) => {
                    println!("FAIL joining thread {i}: {e}");
                    wrong += 1;
                }
            }
        }
    }
    for id in 1..MAX_HANDLES {
        let rax = raw(Call {
            nr: Sys::CLOSE as u64,
            args: [id, 0, 0, 0, 0],
        });
        if rax != 0 && Errno::from_raw(rax as i64) != Some(Errno::ENOTFOUND) {
            println!("FAIL close of handle {id} after the threads: {rax:#x}");
            wrong += 1;
        }
    }
    wrong += finish(&mut Fuzzer::new(seed, None));
    println!("threads: {n}");
    println!("SUMMARY {} calls, {wrong} unexpected", count * n as u64);
    u32::from(wrong != 0)
}

fn fuzz_thread(index: u64) -> u32 {
    let seed = THREAD_SEED.load(Ordering::Relaxed) ^ (index + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let count = THREAD_COUNT.load(Ordering::Relaxed);
    let mut fuzzer = Fuzzer::new(seed, None);
    while GO.load(Ordering::Acquire) == 0 {
        let _ = sync::futex_wait(&GO, 0, None);
    }
    fuzz(&mut fuzzer, count, None);
    for m in fuzzer.mappings.iter().flatten() {
        raw(Call {
            nr: Sys::MUNMAP as u64,
            args: [m.addr, m.len, 0, 0, 0],
        });
    }
    let ok: u64 = fuzzer.successes.iter().sum();
    println!(
        "thread {index}: {count} calls, {ok} ok, {} unexpected",
        fuzzer.unexpected
    );
    fuzzer.unexpected.min(u64::from(u32::MAX)) as u32
}

// --- many-process mode ------------------------------------------------------------------
//
// On when `/etc/fuzz-procs.conf` (under the task's root) holds
// `<actions> <depth> <child calls>`. At `actions` points spread evenly over the run
// the fuzzer acts on processes: the first time it starts copies of itself until EXEC
// refuses one (a burst, so every fuzzer meets a limit), afterwards it either starts
// one more or WAITs for one of its children at random. Each child runs in a root of
// its own, `/fuzzp/<k>`, prepared beforehand with its `etc/fuzz.conf` (a seed drawn
// here, `child calls` calls) and, while `depth` > 1, an `etc/fuzz-procs.conf` one
// level shallower; so children fuzz, spawn and hit limits while their parent does.
// EXEC of a child may be refused only with EAGAIN or ENOMEM (a limit, or no frames);
// every child must end with 0 (nothing unexpected in it or below it); a random WAIT
// that reaps one of them is checked the same way. At the end every child still
// running is waited for and `/fuzzp` is removed; then it prints
// `procs: started <s>, refused <a> EAGAIN <m> ENOMEM, reaped <r>`. Orphans are not made
// here (a parent always outlives its children, so their directories can be removed);
// tests/e2e/test_limit_probe.py covers them. Process actions draw from a PRNG of their own:
// the syscalls drawn for a seed are the same with the mode on or off.

const PROCS_CONF: &str = "/etc/fuzz-procs.conf";
const PROCS_DIR: &str = "/fuzzp";
const SELF_PATH: &str = "/bin/syscall-fuzz";
const MAX_KIDS: usize = 16;

#[derive(Clone, Copy)]
struct Kid {
    task: u64,
    dir: u64,
}

struct Procs {
    rng: Rng,
    actions: u64,
    depth: u64,
    child_calls: u64,
    done: u64,
    kids: [Option<Kid>; MAX_KIDS],
    next_dir: u64,
    started: u64,
    eagain: u64,
    enomem: u64,
    reaped: u64,
    unexpected: u64,
}

/// A short string built with `write!`.
struct Text {
    buf: [u8; 96],
    len: usize,
}

impl Text {
    fn new() -> Self {
        Self {
            buf: [0; 96],
            len: 0,
        }
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl core::fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

macro_rules! text {
    ($($arg:tt)*) => {{
        let mut t = Text::new();
        let _ = core::fmt::Write::write_fmt(&mut t, format_args!($($arg)*));
        t
    }};
}

impl Procs {
    /// The mode's state from PROCS_CONF; None when the file does not exist.
    fn load(seed: u64) -> Result<Option<Self>, &'static str> {
        let file = match fs::open(PROCS_CONF, FileMode::READ, FileFlag::EMPTY) {
            Ok(file) => file,
            Err(e) if e.is(Errno::ENOTFOUND) => return Ok(None),
            Err(_) => return Err("cannot open"),
        };
        let mut buf = [0u8; 64];
        let len = fs::read(&file, &mut buf).map_err(|_| "cannot read")?;
        let text = core::str::from_utf8(&buf[..len]).map_err(|_| "not UTF-8")?;
        let mut words = text.split_ascii_whitespace();
        let mut next = || number(words.next().ok_or("need <actions> <depth> <child calls>")?);
        let (actions, depth, child_calls) = (next()?, next()?, next()?);
        if let Err(e) = fs::mkdir(PROCS_DIR)
            && !e.is(Errno::EEXIST)
        {
            return Err("cannot make /fuzzp");
        }
        Ok(Some(Self {
            rng: Rng(seed ^ 0xA5A5_5A5A_0F0F_F0F0),
            actions,
            depth,
            child_calls,
            done: 0,
            kids: [None; MAX_KIDS],
            next_dir: 0,
            started: 0,
            eagain: 0,
            enomem: 0,
            reaped: 0,
            unexpected: 0,
        }))
    }

    fn fail(&mut self, why: core::fmt::Arguments<'_>) {
        self.unexpected += 1;
        println!("FAIL procs: {why}");
    }

    /// Acts if call `n` of `count` is one of the action points.
    fn step(&mut self, n: u64, count: u64) {
        if self.done >= self.actions || n < (self.done + 1) * count / (self.actions + 1) {
            return;
        }
        self.done += 1;
        if self.done == 1 {
            for _ in 0..MAX_KIDS {
                if !self.spawn() {
                    return;
                }
            }
            self.fail(format_args!("{MAX_KIDS} EXECs in a row were not refused"));
        } else if self.rng.percent() < 55 && self.kids.iter().any(Option::is_none) {
            self.spawn();
        } else {
            let start = self.rng.below(MAX_KIDS as u64) as usize;
            if let Some(slot) = (0..MAX_KIDS)
                .map(|i| (start + i) % MAX_KIDS)
                .find(|&i| self.kids[i].is_some())
            {
                self.reap(slot);
            }
        }
    }

    /// Prepares a root and EXECs a child in it; false if EXEC refused (or failed).
    fn spawn(&mut self) -> bool {
        let Some(slot) = self.kids.iter().position(Option::is_none) else {
            return false;
        };
        let dir = self.next_dir;
        self.next_dir += 1;
        let root = text!("{PROCS_DIR}/{dir}");
        if let Err(why) = self.prepare(root.as_str()) {
            self.fail(format_args!("preparing {}: {why}", root.as_str()));
            return false;
        }
        match libcopra::process::exec_in(SELF_PATH, root.as_str()) {
            Ok(task) => {
                self.started += 1;
                self.kids[slot] = Some(Kid { task, dir });
                true
            }
            Err(e) => {
                if e.is(Errno::EAGAIN) {
                    self.eagain += 1;
                } else if e.is(Errno::ENOMEM) {
                    self.enomem += 1;
                } else {
                    self.fail(format_args!("EXEC of {SELF_PATH}: {e}"));
                }
                self.remove(dir);
                false
            }
        }
    }

    fn prepare(&mut self, root: &str) -> libcopra::Result<()> {
        fs::mkdir(root)?;
        let etc = text!("{root}/etc");
        fs::mkdir(etc.as_str())?;
        let seed = self.rng.next();
        let conf = text!("{root}/etc/fuzz.conf");
        let file = fs::open(conf.as_str(), FileMode::WRITE, FileFlag::CREATE)?;
        fs::write_all(
            &file,
            text!("{seed:#x} {}\n", self.child_calls)
                .as_str()
                .as_bytes(),
        )?;
        if self.depth > 1 {
            let conf = text!("{root}/etc/fuzz-procs.conf");
            let file = fs::open(conf.as_str(), FileMode::WRITE, FileFlag::CREATE)?;
            let line = text!("{} {} {}\n", self.actions, self.depth - 1, self.child_calls);
            fs::write_all(&file, line.as_str().as_bytes())?;
        }
        Ok(())
    }

    /// Removes a child's root and everything in it.
    fn remove(&mut self, dir: u64) {
        let root = text!("{PROCS_DIR}/{dir}");
        let mut path = [0u8; 1024];
        path[..root.len].copy_from_slice(&root.buf[..root.len]);
        if let Err(why) = remove_tree(&mut path, root.len) {
            self.fail(format_args!("removing {}: {why}", root.as_str()));
        }
    }

    fn reap(&mut self, slot: usize) {
        let Some(kid) = self.kids[slot].take() else {
            return;
        };
        match libcopra::process::wait(kid.task) {
            Ok(status) => self.ended(kid, status.success(), status),
            Err(e) => self.fail(format_args!("WAIT {}: {e}", kid.task)),
        }
    }

    fn ended(&mut self, kid: Kid, good: bool, status: libcopra::process::ExitStatus) {
        self.reaped += 1;
        if !good {
            self.fail(format_args!(
                "child {} in {PROCS_DIR}/{} {status}",
                kid.task, kid.dir
            ));
        }
        self.remove(kid.dir);
    }

    /// A random WAIT of the fuzzer succeeded: if it reaped one of ours, account for it.
    fn waited_elsewhere(&mut self, task: u64, rax: u64) {
        let task = task & 0xFFFF_FFFF;
        if let Some(slot) = self
            .kids
            .iter()
            .position(|k| k.is_some_and(|k| k.task == task))
        {
            if let Some(kid) = self.kids[slot].take() {
                let status = libcopra::process::ExitStatus::from_raw(rax);
                self.ended(kid, status.success(), status);
            }
        } else {
            self.fail(format_args!(
                "WAIT {task} succeeded, but it is no child of ours"
            ));
        }
    }

    /// WAITs for every child left, removes /fuzzp, prints the summary; returns how many
    /// things went wrong in the mode.
    fn finish(&mut self) -> u64 {
        for slot in 0..MAX_KIDS {
            self.reap(slot);
        }
        if let Err(e) = fs::rmdir(PROCS_DIR) {
            self.fail(format_args!("RMDIR {PROCS_DIR}: {e}"));
        }
        println!(
            "procs: started {}, refused {} EAGAIN {} ENOMEM, reaped {}",
            self.started, self.eagain, self.enomem, self.reaped
        );
        self.unexpected
    }
}
