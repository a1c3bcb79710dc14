//! Thread-local storage: `.tdata`/`.tbss`, per-thread blocks, and [`thread_local!`].
//!
//! # Layout (x86-64 psABI, variant II)
//!
//! A thread's FS base points at its thread control block (TCB,
//! [`TLS_TCB_SIZE`](crate::abi::TLS_TCB_SIZE) bytes): word 0 points to itself (`%fs:0`),
//! word 1 is [`TLS_TCB_MAGIC`](crate::abi::TLS_TCB_MAGIC). The program's TLS block lies
//! directly below: a copy of the PT_TLS template (`.tdata`), then zeroes (`.tbss`), and
//! the linker resolves each variable to a fixed negative offset from the FS base
//! (`sym@tpoff`, the local-exec model that static non-PIE programs use, Rust's and
//! gcc's `__thread` alike).
//!
//! # Who builds the blocks
//!
//! - The **first thread**'s comes from the kernel: EXEC maps it above the image from the
//!   image's PT_TLS and starts the thread with FS base at its TCB (docs/abi.md). There is
//!   no syscall that sets a thread's own FS base, so only the kernel can.
//! - **Every thread [`spawn`](crate::thread::spawn) starts** gets one from here: the
//!   template is found in the program's own headers (`__ehdr_start`: `user/link.ld`
//!   maps them with the text), the block is placed above the thread's stack in the same
//!   mapping and given to THREAD_CREATE as the FS base. [`JOIN`](crate::thread::JoinHandle::join)
//!   unmaps both.
//!
//! # `thread_local!`
//!
//! `#[thread_local]` is unstable, so stable Rust cannot declare a TLS variable
//! directly. [`thread_local!`] gets the same code by hand: each key's storage is a
//! `static` placed in `.tdata` (the `const { … }` form: the value is the template) or
//! `.tbss` (the lazy form: zeroes, initialised on first use), whose symbol type a
//! `.type` directive in the accessor's `asm!` makes `STT_TLS`, and read as `%fs:0 + sym@tpoff`: two instructions,
//! no call, no syscall. The static itself is never touched from Rust (its address is
//! the template's, shared by all threads).
//!
//! Destructors of lazily initialised values run when a thread spawned by the library
//! ends (its function returns or calls [`thread::exit`](crate::thread::exit)), in the
//! reverse order of initialisation, as std does; the first thread's run at no point
//! (the process ends with it). A key whose value was destroyed answers
//! [`LocalKey::try_with`] with [`AccessError`]; [`LocalKey::with`] panics then.
//!
//! Only threads with a library-built block may use [`thread_local!`]: a thread started
//! with a foreign FS base ([`spawn_with_fs_base`](crate::thread::spawn_with_fs_base)
//! with a block of its own) must not. The heap checks the TCB's magic word before it
//! uses its per-thread cache, so it stays correct on such threads.

use core::cell::{Cell, UnsafeCell};
use core::fmt;
use core::mem::{MaybeUninit, needs_drop};

use crate::abi::{PAGE_SIZE, TLS_TCB_MAGIC, TLS_TCB_SIZE};

/// The PT_TLS segment of the running program.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Template {
    /// Address of the initial values (`.tdata`), `filesz` bytes.
    pub start: u64,
    /// Bytes copied from `start`.
    pub filesz: u64,
    /// Bytes of the whole block (`.tdata` + `.tbss`).
    pub memsz: u64,
    /// Alignment of the block (at least 1).
    pub align: u64,
}

impl Template {
    /// Bytes from the block's start to the thread pointer: `memsz` rounded up to `align`.
    pub const fn offset(&self) -> u64 {
        self.memsz.next_multiple_of(self.align)
    }
}

#[cfg(not(test))]
unsafe extern "C" {
    /// The ELF header, defined by the linker where a segment maps it (user/link.ld).
    static __ehdr_start: [u8; 64];
}

/// The program's TLS template, read from its own program headers; None without PT_TLS.
#[cfg(not(test))]
pub fn template() -> Option<Template> {
    const PT_TLS: u32 = 7;
    let ehdr = (&raw const __ehdr_start) as u64;
    // SAFETY: link.ld maps the ELF header and the program header table with the text;
    // e_phoff (offset 32) and e_phnum (offset 56) locate the table.
    unsafe {
        let phoff = ((ehdr + 32) as *const u64).read_unaligned();
        let phnum = ((ehdr + 56) as *const u16).read_unaligned();
        for i in 0..u64::from(phnum) {
            let ph = ehdr + phoff + i * 56;
            if ((ph) as *const u32).read_unaligned() != PT_TLS {
                continue;
            }
            let field = |offset: u64| ((ph + offset) as *const u64).read_unaligned();
            return Some(Template {
                start: field(16),
                filesz: field(32),
                memsz: field(40),
                align: field(48).max(1),
            });
        }
    }
    None
}

/// Host tests have no copra image: no template.
#[cfg(test)]
pub fn template() -> Option<Template> {
    None
}

/// Where a block goes in an area: the thread pointer's offset from the area's start
/// and the area's size in bytes (whole pages).
pub fn block_layout(template: Option<Template>) -> (u64, u64) {
    let (below, align) = match template {
        Some(t) => (t.offset(), t.align.max(16)),
        None => (0, 16),
    };
    let tp = below.next_multiple_of(align);
    (tp, (tp + TLS_TCB_SIZE).next_multiple_of(PAGE_SIZE))
}

/// Builds a TLS block and TCB in the zeroed, writable area at `area` (at least
/// [`block_layout`]'s size) and returns the thread pointer (the FS base to give).
///
/// # Safety
/// `area` must be a zeroed, writable area of the size [`block_layout`] gives, that
/// nothing else uses.
pub unsafe fn build_block(area: u64, template: Option<Template>) -> u64 {
    let tp = area + block_layout(template).0;
    if let Some(t) = template {
        // SAFETY: the template lies in the program's data segment (filesz bytes); the
        // block below the thread pointer is `offset() >= filesz` bytes of the area.
        unsafe {
            core::ptr::copy_nonoverlapping(
                t.start as *const u8,
                (tp - t.offset()) as *mut u8,
                t.filesz as usize,
            )
        };
    }
    // SAFETY: the TCB's first two words lie in the area (the caller's contract).
    unsafe {
        (tp as *mut u64).write(tp);
        ((tp + 8) as *mut u64).write(TLS_TCB_MAGIC);
    }
    tp
}

/// True when the calling thread's FS base is a TCB of copra's layout (the kernel's or
/// the library's), so that [`thread_local!`] storage is there.
///
/// Reads `%fs:8`: a thread whose FS base is 0 or unmapped faults here.
#[inline(always)]
pub fn has_block() -> bool {
    let magic: u64;
    // SAFETY: reads the word after the thread pointer (see above).
    unsafe {
        core::arch::asm!("mov {m}, qword ptr fs:[8]", m = out(reg) magic,
                         options(nostack, preserves_flags, readonly, pure))
    };
    magic == TLS_TCB_MAGIC
}

/// The TLS address of a static placed in `.tdata`/`.tbss` by [`thread_local!`]
/// (used by the macro; `$storage` must be such a static).
#[doc(hidden)]
#[macro_export]
macro_rules! __tls_address {
    ($storage:path) => {{
        let p: u64;
        // SAFETY: `%fs:0` is the thread pointer; the linker resolves the storage's
        // symbol to its offset from it (R_X86_64_TPOFF32).
        unsafe {
            ::core::arch::asm!(
                // The static is STT_OBJECT as the compiler emits it; this makes it
                // STT_TLS (the assembler keeps TLS over object), which the linker
                // needs to resolve @tpoff and to count it into PT_TLS.
                ".type {s}, @tls_object",
                "mov {p}, qword ptr fs:[0]",
                "lea {p}, [{p} + {s}@tpoff]",
                p = out(reg) p,
                s = sym $storage,
                options(nostack, preserves_flags, readonly, pure)
            )
        };
        p
    }};
}

/// Declares thread-local keys, as std's `thread_local!`:
///
/// ```ignore
/// use core::cell::{Cell, RefCell};
/// libcopra::thread_local! {
///     static COUNT: Cell<u64> = const { Cell::new(7) };   // in .tdata: 7 in every thread
///     static NAMES: RefCell<Vec<String>> = RefCell::new(Vec::new()); // made on first use
/// }
/// COUNT.set(COUNT.get() + 1);
/// NAMES.with_borrow_mut(|v| v.push("x".into()));
/// ```
///
/// The `const { … }` form puts the value in `.tdata` (the template every block starts
/// from); its type must need no drop. The other form keeps the value in `.tbss` and
/// runs the initialiser on the thread's first access; its destructor runs when a
/// library-spawned thread ends.
#[macro_export]
macro_rules! thread_local {
    () => {};
    ($(#[$attr:meta])* $vis:vis static $name:ident : $t:ty = const { $init:expr } ; $($rest:tt)*) => {
        $crate::thread_local!($(#[$attr])* $vis static $name: $t = const { $init });
        $crate::thread_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident : $t:ty = const { $init:expr }) => {
        $(#[$attr])*
        $vis const $name: $crate::tls::LocalKey<$t> = {
            #[unsafe(link_section = ".tdata.copra_tls")]
            static mut STORAGE: $t = {
                const { assert!(!::core::mem::needs_drop::<$t>(), "const thread_local values must not need drop") };
                $init
            };
            fn get() -> *const $t {
                $crate::__tls_address!(STORAGE) as *const $t
            }
            // SAFETY: `get` returns the calling thread's own, initialised value.
            unsafe { $crate::tls::LocalKey::new(get) }
        };
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident : $t:ty = $init:expr ; $($rest:tt)*) => {
        $crate::thread_local!($(#[$attr])* $vis static $name: $t = $init);
        $crate::thread_local!($($rest)*);
    };
    ($(#[$attr:meta])* $vis:vis static $name:ident : $t:ty = $init:expr) => {
        $(#[$attr])*
        $vis const $name: $crate::tls::LocalKey<$t> = {
            #[unsafe(link_section = ".tbss.copra_tls")]
            static mut STORAGE: $crate::tls::Lazy<$t> = $crate::tls::Lazy::new();
            fn init() -> $t {
                $init
            }
            fn get() -> *const $t {
                let lazy = $crate::__tls_address!(STORAGE) as *const $crate::tls::Lazy<$t>;
                // SAFETY: the calling thread's own storage, zeroed at first (state 0).
                unsafe { $crate::tls::Lazy::get(lazy, init) }
            }
            // SAFETY: `get` returns the calling thread's value, or null once destroyed.
            unsafe { $crate::tls::LocalKey::new(get) }
        };
    };
}

/// A thread-local key: each thread sees a value of its own.
pub struct LocalKey<T: 'static> {
    get: fn() -> *const T,
}

/// The value of a [`LocalKey`] was destroyed (the thread is ending).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccessError;

impl fmt::Display for AccessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("thread-local value already destroyed")
    }
}

impl<T: 'static> LocalKey<T> {
    /// A key whose `get` returns the calling thread's value, or null once destroyed.
    ///
    /// # Safety
    /// `get` must return a pointer to a value only the calling thread uses, valid
    /// until the thread ends (used by [`thread_local!`]).
    #[doc(hidden)]
    pub const unsafe fn new(get: fn() -> *const T) -> Self {
        Self { get }
    }

    /// Runs `f` on this thread's value; panics if it was destroyed.
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        match self.try_with(f) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    /// Runs `f` on this thread's value, or [`AccessError`] if it was destroyed.
    pub fn try_with<R>(&'static self, f: impl FnOnce(&T) -> R) -> Result<R, AccessError> {
        let p = (self.get)();
        if p.is_null() {
            return Err(AccessError);
        }
        // SAFETY: `new`'s contract: the calling thread's value, alive while it runs.
        Ok(f(unsafe { &*p }))
    }
}

impl<T: Copy + 'static> LocalKey<Cell<T>> {
    /// This thread's value.
    pub fn get(&'static self) -> T {
        self.with(Cell::get)
    }

    /// Sets this thread's value.
    pub fn set(&'static self, value: T) {
        self.with(|c| c.set(value))
    }
}

impl<T: 'static> LocalKey<Cell<T>> {
    /// Replaces this thread's value, returning the old one.
    pub fn replace(&'static self, value: T) -> T {
        self.with(|c| c.replace(value))
    }
}

impl<T: 'static> LocalKey<core::cell::RefCell<T>> {
    /// Runs `f` on a shared borrow of this thread's value.
    pub fn with_borrow<R>(&'static self, f: impl FnOnce(&T) -> R) -> R {
        self.with(|c| f(&c.borrow()))
    }

    /// Runs `f` on a mutable borrow of this thread's value.
    pub fn with_borrow_mut<R>(&'static self, f: impl FnOnce(&mut T) -> R) -> R {
        self.with(|c| f(&mut c.borrow_mut()))
    }
}

/// A node of the calling thread's list of values to destroy.
#[repr(C)]
struct DtorNode {
    next: *mut DtorNode,
    run: unsafe fn(*mut DtorNode),
}

const UNINIT: u8 = 0;
const INITIALISING: u8 = 1;
const ALIVE: u8 = 2;
const DESTROYED: u8 = 3;

/// Storage of a lazily initialised key, in `.tbss`: all zeroes means "not yet".
#[doc(hidden)]
#[repr(C)]
pub struct Lazy<T> {
    node: UnsafeCell<MaybeUninit<DtorNode>>,
    state: Cell<u8>,
    value: UnsafeCell<MaybeUninit<T>>,
}

// SAFETY: each thread has its own copy (only reached through the FS base); the
// static the macro declares is never accessed as such.
unsafe impl<T> Sync for Lazy<T> {}

impl<T> Lazy<T> {
    /// Zeroes: not initialised.
    pub const fn new() -> Self {
        Self {
            node: UnsafeCell::new(MaybeUninit::zeroed()),
            state: Cell::new(UNINIT),
            value: UnsafeCell::new(MaybeUninit::uninit()),
        }
    }

    /// This thread's value, initialised by `init` on first use; null once destroyed.
    ///
    /// # Safety
    /// `this` must be the calling thread's own storage.
    #[inline]
    pub unsafe fn get(this: *const Self, init: fn() -> T) -> *const T {
        // SAFETY: the caller's contract.
        let lazy = unsafe { &*this };
        if lazy.state.get() == ALIVE {
            return lazy.value.get().cast();
        }
        lazy.slow(init)
    }

    #[cold]
    fn slow(&self, init: fn() -> T) -> *const T {
        match self.state.get() {
            UNINIT => {}
            INITIALISING => panic!("thread_local! initialiser reads its own key"),
            _ => return core::ptr::null(), // DESTROYED
        }
        self.state.set(INITIALISING);
        let value = init();
        // SAFETY: only this thread reaches this storage; nothing refers to the value yet.
        unsafe { (*self.value.get()).write(value) };
        self.state.set(ALIVE);
        if needs_drop::<T>() {
            let node = self.node.get().cast::<DtorNode>();
            // SAFETY: the node lies in this thread's storage; the list is this thread's.
            unsafe {
                node.write(DtorNode { next: dtor_head(), run: Self::destroy });
                set_dtor_head(node);
            }
        }
        self.value.get().cast()
    }

    /// Drops the value of the storage whose node is `node`.
    unsafe fn destroy(node: *mut DtorNode) {
        // SAFETY: `node` is the first field of a `Lazy<T>` (repr(C)) that is ALIVE.
        let lazy = unsafe { &*node.cast::<Self>() };
        lazy.state.set(DESTROYED);
        // SAFETY: the value was initialised; DESTROYED keeps every later access away.
        unsafe { (*lazy.value.get()).assume_init_drop() };
    }
}

impl<T> Default for Lazy<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[unsafe(link_section = ".tbss.copra_tls")]
static mut DTORS: *mut DtorNode = core::ptr::null_mut();

fn dtor_head() -> *mut DtorNode {
    let slot = crate::__tls_address!(DTORS) as *const *mut DtorNode;
    // SAFETY: the calling thread's own list head.
    unsafe { slot.read() }
}

fn set_dtor_head(node: *mut DtorNode) {
    let slot = crate::__tls_address!(DTORS) as *mut *mut DtorNode;
    // SAFETY: the calling thread's own list head.
    unsafe { slot.write(node) }
}

/// Destroys the calling thread's lazily initialised values, the last made first
/// (values a destructor makes are destroyed too). The thread's end calls it.
pub fn run_destructors() {
    loop {
        let node = dtor_head();
        if node.is_null() {
            return;
        }
        // SAFETY: a node this thread pushed; its storage is alive until the thread ends.
        unsafe {
            set_dtor_head((*node).next);
            ((*node).run)(node);
        }
    }
}
