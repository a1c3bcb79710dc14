//! Processes: EXIT, EXEC and WAIT (syscall class 0).
//!
//! | wrapper | syscall | registers |
//! |---|---|---|
//! | [`exit`] | EXIT (0, 0) | code (the kernel keeps the low 16 bits) |
//! | [`exec`], [`exec_in`] | EXEC (0, 4) | path, root directory, flags (0) → task id |
//! | [`wait`] | WAIT (0, 5), copra's | task id → packed exit status |
//! | [`open`] | PROCESS_OPEN (0, 0x15), copra's | task id → process handle |
//! | [`join`] | JOIN (0, 0x12), copra's | process handle → packed exit status |
//! | [`Command::spawn`] | EXEC_HANDLES (0, 0x1F), copra's | path, root, handle array, count, flags (0) → task id |
//! | [`initial_handles`] | — | the handles EXEC_HANDLES gave this process |
//!
//! [`Child`] wraps EXEC and WAIT for a child that is waited for once. [`Command`]
//! starts one with handles moved into it (a channel endpoint to its parent, a file);
//! the child takes them with [`initial_handles`], in the order they were given.
//!
//! EXEC spawns: the caller keeps running and the child gets a fresh address space and
//! handle table (handle 0 its own log). WAIT does not exist upstream; copra's blocks
//! until the child ends and returns its status packed as upstream stores it:
//! exited with `c` is `c << 16`, killed by CPU exception `v` is `(v << 8) | 1`.

use alloc::vec::Vec;
use core::fmt;
use core::sync::atomic::Ordering;

use crate::abi::{EXIT_STATUS_SHIFT, KILLED_BY_EXCEPTION, Sys};
use crate::error::Result;
use crate::handle::{AsHandle, Handle};
use crate::path::CPath;
use crate::syscall::call;

/// EXIT: ends the process with `code` (low 16 bits kept). Never returns.
pub fn exit(code: u32) -> ! {
    let _ = call!(Sys::EXIT, code);
    // EXIT does not return; if a kernel ever did, fault rather than run on.
    // SAFETY: ud2 raises #UD, which ends the process.
    unsafe { core::arch::asm!("ud2", options(noreturn, nomem, nostack)) }
}

/// EXEC: starts the program at `path` as a new process under the same root.
/// Returns its task id.
pub fn exec(path: &str) -> Result<u64> {
    exec_in(path, "/")
}

/// EXEC with `root` (relative to the caller's root) as the child's root directory.
pub fn exec_in(path: &str, root: &str) -> Result<u64> {
    let path = CPath::new(path)?;
    let root = CPath::new(root)?;
    call!(Sys::EXEC, path.addr(), root.addr(), 0u64)
}

/// WAIT: blocks until task `task` has ended and returns how it ended.
pub fn wait(task: u64) -> Result<ExitStatus> {
    call!(Sys::WAIT, task).map(ExitStatus::from_raw)
}

/// PROCESS_OPEN: a handle on child `task` (WAIT right): [`join`] and
/// [`crate::wait::wait_many`] wait for its end. It neither reaps the child nor keeps
/// it from being reaped: [`wait`] still does that.
pub fn open(task: u64) -> Result<Handle> {
    let raw = call!(Sys::PROCESS_OPEN, task)?;
    // SAFETY: PROCESS_OPEN returned a fresh handle that nothing else owns.
    Ok(unsafe { Handle::from_raw(raw as u32) })
}

/// JOIN of a process handle: waits for the process's end and returns how it ended.
pub fn join(process: &impl AsHandle) -> Result<ExitStatus> {
    call!(Sys::JOIN, process.as_handle().raw()).map(ExitStatus::from_raw)
}

/// How a process ended, unpacked from WAIT's result.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitStatus {
    /// It called EXIT with this code (low 16 bits).
    Exited(u16),
    /// The kernel ended it on a CPU exception it could not resolve.
    Killed {
        /// The exception vector: 14 for #PF, 13 for #GP, 6 for #UD...
        vector: u8,
    },
    /// A packing this library does not know.
    Other(u64),
}

impl ExitStatus {
    /// Unpacks a raw status.
    pub const fn from_raw(raw: u64) -> Self {
        if raw & 0xFF == KILLED_BY_EXCEPTION && raw >> 16 == 0 {
            Self::Killed {
                vector: (raw >> 8) as u8,
            }
        } else if raw & 0xFFFF == 0 && raw >> (EXIT_STATUS_SHIFT + 16) == 0 {
            Self::Exited((raw >> EXIT_STATUS_SHIFT) as u16)
        } else {
            Self::Other(raw)
        }
    }

    /// Whether the process exited with code 0.
    pub const fn success(self) -> bool {
        matches!(self, Self::Exited(0))
    }
}

/// The mnemonic of an x86 exception vector (SDM vol. 3, table 6-1).
pub const fn exception_name(vector: u8) -> &'static str {
    match vector {
        0 => "#DE",
        1 => "#DB",
        2 => "NMI",
        3 => "#BP",
        4 => "#OF",
        5 => "#BR",
        6 => "#UD",
        7 => "#NM",
        8 => "#DF",
        10 => "#TS",
        11 => "#NP",
        12 => "#SS",
        13 => "#GP",
        14 => "#PF",
        16 => "#MF",
        17 => "#AC",
        18 => "#MC",
        19 => "#XM",
        20 => "#VE",
        21 => "#CP",
        29 => "#VC",
        _ => "exception",
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Exited(code) => write!(f, "exited with status {code}"),
            Self::Killed { vector } => {
                write!(f, "killed by {} (vector {vector})", exception_name(vector))
            }
            Self::Other(raw) => write!(f, "ended with raw status {raw:#x}"),
        }
    }
}

/// A started child process, to WAIT for.
///
/// Dropping a `Child` does not wait: the child runs on, and when it ends it counts
/// against the parent's `unreaped` limit (docs/abi.md) until the parent WAITs for it
/// or ends. `std::process::Child` behaves the same.
#[derive(Debug)]
pub struct Child {
    task: u64,
    status: Option<ExitStatus>,
}

impl Child {
    /// EXEC of `path` under the caller's root.
    pub fn spawn(path: &str) -> Result<Self> {
        Self::spawn_in(path, "/")
    }

    /// EXEC of `path` with `root` as the child's root directory.
    pub fn spawn_in(path: &str, root: &str) -> Result<Self> {
        exec_in(path, root).map(|task| Self { task, status: None })
    }

    /// The child's task id.
    pub fn id(&self) -> u64 {
        self.task
    }

    /// WAITs until the child ends (once; later calls return the same status).
    pub fn wait(&mut self) -> Result<ExitStatus> {
        if let Some(status) = self.status {
            return Ok(status);
        }
        let status = wait(self.task)?;
        self.status = Some(status);
        Ok(status)
    }
}

/// A child to start with handles moved into it (EXEC_HANDLES).
///
/// ```ignore
/// let (tx, rx) = channel::channel::<u64>()?;
/// let child = Command::new("/bin/worker").handle(rx.into_handle()).spawn()?;
/// tx.send(42)?;
/// ```
#[derive(Debug)]
pub struct Command<'a> {
    path: &'a str,
    root: &'a str,
    handles: Vec<Handle>,
}

impl<'a> Command<'a> {
    /// The program at `path`, under the caller's root, with no handles yet.
    pub fn new(path: &'a str) -> Self {
        Self { path, root: "/", handles: Vec::new() }
    }

    /// The child's root directory (relative to the caller's root).
    pub fn root(mut self, root: &'a str) -> Self {
        self.root = root;
        self
    }

    /// Moves `handle` into the child: it finds it at id `n` for the `n`-th handle added
    /// (from 1; 0 is its log). The handle needs the TRANSFER right.
    pub fn handle(mut self, handle: Handle) -> Self {
        self.handles.push(handle);
        self
    }

    /// EXEC_HANDLES: starts the child. On success the handles belong to it; on failure
    /// they are still in `self` (the kernel moves all or none), closed when it drops.
    pub fn spawn(&mut self) -> Result<Child> {
        let path = CPath::new(self.path)?;
        let root = CPath::new(self.root)?;
        let ids: Vec<u32> = self.handles.iter().map(Handle::raw).collect();
        let task = call!(Sys::EXEC_HANDLES, path.addr(), root.addr(), ids.as_ptr(), ids.len(), 0u64)?;
        for handle in self.handles.drain(..) {
            let _ = handle.into_raw(); // the child's now
        }
        Ok(Child { task, status: None })
    }
}

/// The handles EXEC_HANDLES moved into this process, in the order the parent gave
/// them (ids 1..=n); empty after EXEC, and on every call after the first.
///
/// Call it before the program opens anything else: it names ids, and only the kernel's
/// count at entry says they are these handles.
pub fn initial_handles() -> Vec<Handle> {
    let n = crate::rt::INITIAL_HANDLES.swap(0, Ordering::Relaxed);
    // SAFETY: the kernel installed ids 1..=n for this process before it ran, and the
    // swap above hands them out once.
    (1..=n).map(|id| unsafe { Handle::from_raw(id as u32) }).collect()
}
