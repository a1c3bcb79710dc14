//! Futexes and a mutex built on them (FUTEX_WAIT, FUTEX_WAKE: copra's, class 0).
//!
//! | wrapper | syscall | registers |
//! |---|---|---|
//! | [`futex_wait`] | FUTEX_WAIT (0, 0x13) | address, expected value, timeout ns |
//! | [`futex_wake`] | FUTEX_WAKE (0, 0x14) | address, count → threads woken |
//!
//! [`Mutex`] costs no syscall while uncontended: the lock word is 0 (free), 1 (held)
//! or 2 (held, and someone may sleep on it); only a thread that finds it held sleeps
//! in FUTEX_WAIT, and only an unlock that saw 2 calls FUTEX_WAKE (Drepper, "Futexes
//! Are Tricky", mutex 2). [`Condvar`] is a sequence number waiters sleep on; a notify
//! bumps it and wakes one or all. [`Once`] runs its closure exactly once; late callers
//! sleep until it has run.

use core::cell::UnsafeCell;
use core::ops::{Deref, DerefMut};
use core::sync::atomic::{AtomicU32, Ordering};

use crate::abi::{Errno, Sys, TIMEOUT_NEVER};
use crate::error::Result;
use crate::syscall::call;

/// FUTEX_WAIT: sleeps while `word` holds `expected`, until a [`futex_wake`] on it or
/// `timeout_ns` nanoseconds (None: no timeout). `Ok` when woken; EAGAIN if the word
/// held another value; ETIMEDOUT. Callers loop: a wake-up says nothing of the word.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout_ns: Option<u64>) -> Result<()> {
    let timeout = timeout_ns.unwrap_or(TIMEOUT_NEVER);
    call!(Sys::FUTEX_WAIT, word.as_ptr() as u64, expected, timeout).map(|_| ())
}

/// FUTEX_WAKE: wakes up to `count` threads sleeping on `word`; returns how many.
pub fn futex_wake(word: &AtomicU32, count: u32) -> Result<u32> {
    call!(Sys::FUTEX_WAKE, word.as_ptr() as u64, count).map(|n| n as u32)
}

/// A mutual-exclusion lock around a `T`, for the threads of one process.
pub struct Mutex<T> {
    state: AtomicU32,
    value: UnsafeCell<T>,
}

// SAFETY: the lock serialises every access to the value.
unsafe impl<T: Send> Sync for Mutex<T> {}
// SAFETY: moving the mutex moves the value.
unsafe impl<T: Send> Send for Mutex<T> {}

impl<T> Mutex<T> {
    /// An unlocked mutex holding `value`.
    pub const fn new(value: T) -> Self {
        Self { state: AtomicU32::new(0), value: UnsafeCell::new(value) }
    }

    /// Waits for the lock and takes it.
    #[inline]
    pub fn lock(&self) -> MutexGuard<'_, T> {
        if self.state.compare_exchange(0, 1, Ordering::Acquire, Ordering::Relaxed).is_err() {
            self.lock_contended();
        }
        MutexGuard { mutex: self }
    }

    #[cold]
    fn lock_contended(&self) {
        while self.state.swap(2, Ordering::Acquire) != 0 {
            sleep_while(&self.state, 2);
        }
    }

    #[inline]
    fn unlock(&self) {
        if self.state.swap(0, Ordering::Release) == 2 {
            wake_one(&self.state);
        }
    }
}

// The mutex's two waits. Neither allocates (the heap's lock is a Mutex: a panic's
// message is formatted on the stack). Host tests (`cargo test`) have no copra kernel
// to ask: there a contended lock yields to the host's scheduler instead.

#[cfg(not(test))]
#[cold]
fn sleep_while(word: &AtomicU32, value: u32) {
    match futex_wait(word, value, None) {
        Ok(()) => {}
        Err(e) if e.is(Errno::EAGAIN) => {}
        Err(e) => panic!("FUTEX_WAIT of a mutex failed: {e}"),
    }
}

#[cfg(not(test))]
#[cold]
fn wake_one(word: &AtomicU32) {
    if let Err(e) = futex_wake(word, 1) {
        panic!("FUTEX_WAKE of a mutex failed: {e}");
    }
}

#[cfg(test)]
fn sleep_while(word: &AtomicU32, value: u32) {
    while word.load(Ordering::Relaxed) == value {
        std::thread::yield_now();
    }
}

#[cfg(test)]
fn wake_one(_word: &AtomicU32) {}

/// The lock of a [`Mutex`], held until dropped.
pub struct MutexGuard<'a, T> {
    mutex: &'a Mutex<T>,
}

impl<T> Deref for MutexGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock.
        unsafe { &*self.mutex.value.get() }
    }
}

impl<T> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock, exclusively.
        unsafe { &mut *self.mutex.value.get() }
    }
}

impl<T> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        self.mutex.unlock();
    }
}

impl<'a, T> MutexGuard<'a, T> {
    fn mutex(&self) -> &'a Mutex<T> {
        self.mutex
    }
}

/// A condition variable for threads holding a [`Mutex`].
pub struct Condvar {
    seq: AtomicU32,
}

impl Condvar {
    /// A condition variable nobody waits on.
    pub const fn new() -> Self {
        Self { seq: AtomicU32::new(0) }
    }

    /// Releases the guard's lock, sleeps until a notify (or spuriously), and takes the
    /// lock again. Callers check their condition in a loop.
    pub fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        let seq = self.seq.load(Ordering::Acquire);
        let mutex = guard.mutex();
        drop(guard);
        match futex_wait(&self.seq, seq, None) {
            Ok(()) => {}
            Err(e) if e.is(Errno::EAGAIN) => {} // notified between the load and the wait
            Err(e) => panic!("FUTEX_WAIT of a condition variable failed: {e}"),
        }
        mutex.lock()
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        let _ = futex_wake(&self.seq, 1);
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.seq.fetch_add(1, Ordering::Release);
        let _ = futex_wake(&self.seq, u32::MAX);
    }
}

impl Default for Condvar {
    fn default() -> Self {
        Self::new()
    }
}

/// Runs a closure once, whichever threads ask.
pub struct Once {
    state: AtomicU32, // 0: not run, 1: running, 2: done
}

impl Once {
    /// Not run yet.
    pub const fn new() -> Self {
        Self { state: AtomicU32::new(0) }
    }

    /// Runs `f` if no call ran it before; returns once it has run (by anyone).
    pub fn call_once(&self, f: impl FnOnce()) {
        if self.state.load(Ordering::Acquire) == 2 {
            return;
        }
        if self.state.compare_exchange(0, 1, Ordering::Acquire, Ordering::Acquire).is_ok() {
            f();
            self.state.store(2, Ordering::Release);
            let _ = futex_wake(&self.state, u32::MAX);
            return;
        }
        while self.state.load(Ordering::Acquire) == 1 {
            let _ = futex_wait(&self.state, 1, None);
        }
    }

    /// Whether the closure has run.
    pub fn is_completed(&self) -> bool {
        self.state.load(Ordering::Acquire) == 2
    }
}

impl Default for Once {
    fn default() -> Self {
        Self::new()
    }
}
