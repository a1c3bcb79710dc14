//! Many syscalls for one entry into the kernel (BATCH: copra's).
//!
//! | wrapper | syscall | registers |
//! |---|---|---|
//! | [`Batch::run`], [`run`] | BATCH (0, 0x20) | [`BatchRecord`] array, count, [`BatchFlag`] → records run |
//!
//! A [`Batch`] holds up to [`BATCH_MAX`] records inline (4 KiB, no heap): push calls with
//! [`Batch::push`], run them all with one syscall, then read each result with
//! [`Batch::result`]. The kernel runs the records in order, exactly as single calls,
//! and stops after the first error with [`BatchFlag::STOP_ON_ERROR`]. Calls that wait
//! or end the caller (EXIT, THREAD_EXIT, WAIT, JOIN, FUTEX_WAIT, WAIT_MANY, SLEEP,
//! BATCH) are refused with EINVAL in their record, and a call that would block answers
//! EAGAIN instead (docs/abi.md, BATCH).
//!
//! ```ignore
//! let mut batch = Batch::new();
//! let a = batch.push(Sys::CAPABILITIES, &[0], 0).unwrap();
//! let b = batch.push(Sys::CLOSE, &[99], 0).unwrap();
//! assert_eq!(batch.run(BatchFlag::EMPTY), Ok(2));
//! assert_eq!(batch.result(a), Some(Ok(2)));
//! assert!(batch.result(b).unwrap().is_err());
//! ```

pub use crate::abi::{BATCH_MAX, BatchFlag, BatchRecord};
use crate::abi::Sys;
use crate::error::{Result, check};
use crate::syscall::call;

const MAX: usize = BATCH_MAX as usize;

/// Up to [`BATCH_MAX`] syscall records, run by one BATCH.
pub struct Batch {
    records: [BatchRecord; MAX],
    len: usize,
    ran: usize,
}

impl Default for Batch {
    fn default() -> Self {
        Self::new()
    }
}

impl Batch {
    /// An empty batch.
    pub const fn new() -> Self {
        Self { records: [BatchRecord::zeroed(); MAX], len: 0, ran: 0 }
    }

    /// Appends the call `number` with up to five arguments (the rest are 0) and the
    /// caller's `user_data`; returns its index, or None when the batch is full or
    /// `args` has more than five.
    pub fn push(&mut self, number: Sys, args: &[u64], user_data: u64) -> Option<usize> {
        self.push_raw(number as u64, args, user_data)
    }

    /// [`Batch::push`] with a raw syscall number (one the library does not know).
    pub fn push_raw(&mut self, number: u64, args: &[u64], user_data: u64) -> Option<usize> {
        if self.len == MAX || args.len() > 5 {
            return None;
        }
        let record = &mut self.records[self.len];
        *record = BatchRecord { number, user_data, ..BatchRecord::zeroed() };
        record.args[..args.len()].copy_from_slice(args);
        self.len += 1;
        Some(self.len - 1)
    }

    /// Records pushed.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every record (and result).
    pub fn clear(&mut self) {
        self.len = 0;
        self.ran = 0;
    }

    /// BATCH: runs the records in one syscall; returns how many ran (all of them, or
    /// with STOP_ON_ERROR up to and including the first that failed). An empty batch
    /// runs nothing and makes no syscall.
    pub fn run(&mut self, flags: BatchFlag) -> Result<usize> {
        self.ran = 0;
        if self.len == 0 {
            return Ok(0);
        }
        self.ran = run(&mut self.records[..self.len], flags)?;
        Ok(self.ran)
    }

    /// Record `index`'s result after [`Batch::run`]: its value or its error; None if
    /// it did not run (or there is no such record).
    pub fn result(&self, index: usize) -> Option<Result<u64>> {
        (index < self.ran).then(|| check(self.records[index].result as u64))
    }

    /// The records pushed, with their results once run.
    pub fn records(&self) -> &[BatchRecord] {
        &self.records[..self.len]
    }
}

/// BATCH on a caller's own array of records (1 to [`BATCH_MAX`]): returns how many
/// ran; each of those has its `result` written.
pub fn run(records: &mut [BatchRecord], flags: BatchFlag) -> Result<usize> {
    call!(Sys::BATCH, records.as_mut_ptr(), records.len(), flags.bits()).map(|n| n as usize)
}
