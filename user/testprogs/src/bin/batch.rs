//! batch: conformance cases for BATCH (docs/abi.md), through the ABI and through the
//! library's `Batch` builder.
//!
//! Prints `PASS <case>` or `FAIL <case>: <why>` per case, then `SUMMARY <passed>/<total>`;
//! exits 0 iff every case passed. Needs nothing in the RAM fs. One case writes the
//! line `batch: written from a batch` to handle 0 from inside a BATCH (the e2e test
//! looks for it).

#![no_std]
#![no_main]

use libcopra::abi::{BATCH_MAX, BatchFlag, BatchRecord, Capability, Errno, HANDLE_LOG, Sys};
use libcopra::batch::{self, Batch};
use libcopra::error::check;
use libcopra::event::Event;
use libcopra::handle::AsHandle;
use libcopra::syscall::syscall3;
use libcopra::{declare_main, println};

declare_main!(main);

const SENTINEL: i64 = 0x5EED;
const MISSING: &[u8] = b"/no/such/file\0";
const LINE: &[u8] = b"batch: written from a batch\n";

type Outcome = Result<(), &'static str>;

fn record(number: Sys, args: &[u64], user_data: u64) -> BatchRecord {
    let mut r = BatchRecord { number: number as u64, user_data, result: SENTINEL, ..BatchRecord::zeroed() };
    r.args[..args.len()].copy_from_slice(args);
    r
}

fn raw_batch(records: *mut BatchRecord, count: u64, flags: u64) -> u64 {
    // SAFETY: the kernel reads and writes `count` records at `records`, or answers EFAULT.
    unsafe { syscall3(Sys::BATCH as u64, records as u64, count, flags) }
}

fn err(errno: Errno) -> i64 {
    errno.raw()
}

fn runs_every_record_in_order() -> Outcome {
    let mut rs = [
        record(Sys::CAPABILITIES, &[Capability::COUNT as u64], 10),
        record(Sys::OPEN, &[MISSING.as_ptr() as u64, 1, 0], 11),
        record(Sys::CAPABILITIES, &[Capability::FEATURES as u64], 12),
    ];
    if raw_batch(rs.as_mut_ptr(), 3, 0) != 3 {
        return Err("BATCH did not answer 3");
    }
    if rs[0].result != 2 || rs[1].result != err(Errno::ENOTFOUND) || rs[2].result & 7 != 3 {
        return Err("wrong results");
    }
    if rs.iter().map(|r| r.user_data).ne([10, 11, 12]) {
        return Err("user_data changed");
    }
    Ok(())
}

fn stop_on_error_stops_after_the_failure() -> Outcome {
    let mut rs = [
        record(Sys::CAPABILITIES, &[0], 0),
        record(Sys::CLOSE, &[999], 0),
        record(Sys::CAPABILITIES, &[0], 0),
    ];
    if raw_batch(rs.as_mut_ptr(), 3, BatchFlag::STOP_ON_ERROR.bits()) != 2 {
        return Err("BATCH did not answer 2");
    }
    if rs[0].result != 2 || rs[1].result != err(Errno::ENOTFOUND) || rs[2].result != SENTINEL {
        return Err("the record after the failure was written");
    }
    Ok(())
}

fn without_the_flag_errors_do_not_stop() -> Outcome {
    let mut rs = [record(Sys::CLOSE, &[999], 0), record(Sys::CAPABILITIES, &[0], 0)];
    if raw_batch(rs.as_mut_ptr(), 2, 0) != 2 || rs[1].result != 2 {
        return Err("the second record did not run");
    }
    Ok(())
}

fn refuses_calls_that_wait_or_end_the_caller() -> Outcome {
    let word = 0u32;
    let refused = [
        record(Sys::EXIT, &[3], 0),
        record(Sys::THREAD_EXIT, &[3], 0),
        record(Sys::WAIT, &[2], 0),
        record(Sys::JOIN, &[0], 0),
        record(Sys::FUTEX_WAIT, &[&word as *const u32 as u64, 0, u64::MAX], 0),
        record(Sys::WAIT_MANY, &[0, 0, 0], 0),
        record(Sys::SLEEP, &[1], 0),
        record(Sys::BATCH, &[0, 1, 0], 0),
        record(Sys::CHANNEL_CALL, &[1, 0, 0, 0], 0),
    ];
    let mut rs = refused;
    if raw_batch(rs.as_mut_ptr(), rs.len() as u64, 0) != rs.len() as u64 {
        return Err("BATCH did not run every record");
    }
    if rs.iter().any(|r| r.result != err(Errno::EINVAL)) {
        return Err("a refused call did not answer EINVAL");
    }
    Ok(()) // and the process is still here to say so
}

fn a_call_that_would_block_answers_eagain() -> Outcome {
    let event = Event::new().map_err(|_| "EVENT_CREATE")?;
    let mut buf = [0u8; 8];
    let h = u64::from(event.as_handle().raw());
    let mut rs = [record(Sys::READ, &[h, buf.as_mut_ptr() as u64, 8], 0)];
    if raw_batch(rs.as_mut_ptr(), 1, 0) != 1 || rs[0].result != err(Errno::EAGAIN) {
        return Err("READ of an empty event in a batch did not answer EAGAIN");
    }
    // Nothing waits on the event any more; it works as usual afterwards.
    event.signal(5).map_err(|_| "WRITE")?;
    if event.wait() != Ok(5) {
        return Err("READ after the batch");
    }
    Ok(())
}

fn unknown_number_is_enosys_in_its_record() -> Outcome {
    let mut rs = [BatchRecord { number: 0x7777, result: SENTINEL, ..BatchRecord::zeroed() }];
    if raw_batch(rs.as_mut_ptr(), 1, 0) != 1 || rs[0].result != err(Errno::ENOSYS) {
        return Err("not ENOSYS");
    }
    Ok(())
}

fn count_outside_the_limit_is_einval() -> Outcome {
    let mut rs = [record(Sys::CAPABILITIES, &[0], 0)];
    for count in [0, BATCH_MAX + 1] {
        if check(raw_batch(rs.as_mut_ptr(), count, 0)).err().map(|e| e.raw()) != Some(err(Errno::EINVAL)) {
            return Err("count not refused with EINVAL");
        }
    }
    if rs[0].result != SENTINEL {
        return Err("a refused BATCH wrote a result");
    }
    Ok(())
}

fn unknown_flag_is_einval() -> Outcome {
    let mut rs = [record(Sys::CAPABILITIES, &[0], 0)];
    if check(raw_batch(rs.as_mut_ptr(), 1, 2)).err().map(|e| e.raw()) != Some(err(Errno::EINVAL)) {
        return Err("flag 2 not refused with EINVAL");
    }
    Ok(())
}

fn unusable_array_is_efault_and_runs_nothing() -> Outcome {
    for addr in [0u64, 0xFFFF_8000_0000_0000, main as *const () as u64] {
        let answer = check(raw_batch(addr as *mut BatchRecord, 1, 0)).err().map(|e| e.raw());
        if answer != Some(err(Errno::EFAULT)) {
            return Err("an unmapped, kernel or read-only array was not EFAULT");
        }
    }
    Ok(())
}

fn runs_the_maximum_count() -> Outcome {
    let mut rs = [record(Sys::CAPABILITIES, &[0], 0); BATCH_MAX as usize];
    if raw_batch(rs.as_mut_ptr(), BATCH_MAX, 0) != BATCH_MAX || rs.iter().any(|r| r.result != 2) {
        return Err("64 records did not all run");
    }
    Ok(())
}

fn write_inside_a_batch_reaches_the_log() -> Outcome {
    let mut rs = [record(Sys::WRITE, &[HANDLE_LOG, LINE.as_ptr() as u64, LINE.len() as u64], 0)];
    if raw_batch(rs.as_mut_ptr(), 1, 0) != 1 || rs[0].result != LINE.len() as i64 {
        return Err("WRITE in a batch");
    }
    Ok(())
}

fn builder_runs_and_reports_each_result() -> Outcome {
    let mut b = Batch::new();
    let a = b.push(Sys::CAPABILITIES, &[0], 1).ok_or("push")?;
    let c = b.push(Sys::CLOSE, &[999], 2).ok_or("push")?;
    let d = b.push(Sys::CAPABILITIES, &[0], 3).ok_or("push")?;
    if b.run(BatchFlag::STOP_ON_ERROR) != Ok(2) {
        return Err("run did not answer 2");
    }
    if b.result(a) != Some(Ok(2)) || !b.result(c).is_some_and(|r| r.is_err_and(|e| e.is(Errno::ENOTFOUND))) || b.result(d).is_some() {
        return Err("results");
    }
    if b.records().iter().map(|r| r.user_data).ne([1, 2, 3]) {
        return Err("user_data");
    }
    b.clear();
    for _ in 0..BATCH_MAX {
        b.push(Sys::CAPABILITIES, &[0], 0).ok_or("push to the maximum")?;
    }
    if b.push(Sys::CAPABILITIES, &[0], 0).is_some() || b.push_raw(1, &[0; 6], 0).is_some() {
        return Err("a full batch or six arguments accepted");
    }
    if b.run(BatchFlag::EMPTY) != Ok(BATCH_MAX as usize) {
        return Err("full batch");
    }
    let mut rs = [record(Sys::CAPABILITIES, &[0], 0)];
    if batch::run(&mut rs, BatchFlag::EMPTY) != Ok(1) || rs[0].result != 2 {
        return Err("batch::run");
    }
    Ok(())
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        const CASES: &[(&str, fn() -> Outcome)] = &[$((stringify!($name), $name)),*];
    };
}

cases! {
    runs_every_record_in_order,
    stop_on_error_stops_after_the_failure,
    without_the_flag_errors_do_not_stop,
    refuses_calls_that_wait_or_end_the_caller,
    a_call_that_would_block_answers_eagain,
    unknown_number_is_enosys_in_its_record,
    count_outside_the_limit_is_einval,
    unknown_flag_is_einval,
    unusable_array_is_efault_and_runs_nothing,
    runs_the_maximum_count,
    write_inside_a_batch_reaches_the_log,
    builder_runs_and_reports_each_result,
}

fn main() -> u32 {
    let mut passed = 0;
    for (name, case) in CASES {
        match case() {
            Ok(()) => {
                passed += 1;
                println!("PASS {name}");
            }
            Err(why) => println!("FAIL {name}: {why}"),
        }
    }
    println!("SUMMARY {passed}/{}", CASES.len());
    u32::from(passed != CASES.len())
}
