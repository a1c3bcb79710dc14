//! irq-test: a user-mode VMM that drives the `irqtest` guest (user/guests/irqtest.S)
//! with IRQ objects (IRQ_CREATE, IRQ_SIGNAL, WRITE and READ of 8 bytes, WAIT_MANY).
//!
//! What it does comes from `/etc/irq-test.conf`:
//! - `api` (guest 0: irqtest, 1 vCPU): refused arguments (EINVAL, ENOTFOUND, ENOTSUPP),
//!   then 20 signals of a level IRQ (IRQ_SIGNAL and WRITE alternately), each waited for
//!   through its resample (READ blocks until the guest's EOI); then the VM handle is
//!   closed and every signal and READ answers ENOTFOUND; prints `irq-test: api ok`;
//! - `storm` (guest 0, two SVSM CPUs): a thread signals an edge IRQ as fast as it can
//!   while the guest takes 200 interrupts halting between them, and another thread
//!   sleeps 1 ms twenty times; the guest ends, the sleeper ends; prints
//!   `irq-test: storm ok, N signals`;
//! - `bench MODE N PARAM`: MODE `halt`, `spin` or `user`: N signals of a level IRQ,
//!   each waited for through its resample and 1 ms more, to a guest halted, spinning at
//!   CPL0 or spinning at CPL3 between them; `timer`:
//!   the guest's periodic APIC timer every PARAM ns for 1000 interrupts. The benchmark
//!   (bench/irq.py) times the kernel's side; prints `irq-bench: done`.

#![no_std]
#![no_main]

extern crate alloc;

use alloc::boxed::Box;
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use libcopra::abi::{Errno, Sys};
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::vmm::{self, FOREVER, Irq, RunPageMap, Vcpu, VcpuExit, Vm};
use libcopra::wait;
use libcopra::{declare_main, println, thread};

declare_main!(main);

const RSI: usize = 4;
const RDI: usize = 5;
const DEBUG_EXIT: u16 = 0xf4;
const VECTOR: u8 = 0x30;
const GUEST_DONE: u32 = 0x23; // (0x11 << 1) | 1

macro_rules! check {
    ($code:expr, $cond:expr, $($why:tt)*) => {
        if !$cond {
            println!("FAIL irq-test: {}", format_args!($($why)*));
            return $code;
        }
    };
}

fn is_err<T>(r: libcopra::Result<T>, errno: Errno) -> bool {
    r.err().is_some_and(|e| e.is(errno))
}

fn main() -> u32 {
    let mut buf = [0u8; 64];
    let text = match fs::open("/etc/irq-test.conf", FileMode::READ, FileFlag::EMPTY) {
        Ok(file) => {
            let n = fs::read(&file, &mut buf).unwrap_or(0);
            core::str::from_utf8(&buf[..n]).unwrap_or("")
        }
        Err(_) => "api",
    };
    let mut words = text.split_ascii_whitespace();
    match words.next() {
        Some("api") => api(),
        Some("storm") => storm(),
        Some("bench") => {
            let mode = words.next().unwrap_or("halt");
            let n = words.next().and_then(|w| w.parse().ok()).unwrap_or(100);
            let param = words.next().and_then(|w| w.parse().ok()).unwrap_or(100_000);
            bench(mode, n, param)
        }
        _ => {
            println!("FAIL irq-test: unknown mode");
            1
        }
    }
}

/// What a runner thread needs: the vCPU, its run page, the guest's mode and count.
struct Job {
    vcpu: Vcpu,
    page: RunPageMap,
    mode: u64,
    count: u64,
}

/// The guest's APIC is enabled (its `out 0x81`): signals before that would be dropped,
/// as a software-disabled APIC refuses fixed interrupts (SDM 11.4.7.2).
static READY: AtomicBool = AtomicBool::new(false);
const READY_PORT: u16 = 0x81;

/// Open vCPU 0, start a thread running the guest in `mode` with `count`, and wait until
/// the guest's APIC takes interrupts.
fn start(vm: &Vm, mode: u64, count: u64) -> Option<thread::JoinHandle> {
    let vcpu = vm.vcpu(0).ok()?;
    let page = vcpu.map_run_page().ok()?;
    let job = Box::into_raw(Box::new(Job { vcpu, page, mode, count }));
    let runner = thread::spawn(run_guest, job as u64).ok()?;
    while !READY.load(Ordering::Acquire) {
        wait::sleep(100_000).ok()?;
    }
    Some(runner)
}

/// The runner: VCPU_RUN until the guest exits; its exit status (0x100 + reason otherwise).
fn run_guest(arg: u64) -> u32 {
    // SAFETY: `start` gave this thread the Job, which nothing else uses.
    let job = unsafe { Box::from_raw(arg as *mut Job) };
    let page = &job.page;
    page.set_reg(RSI, job.mode);
    page.set_reg(RDI, job.count);
    loop {
        if job.vcpu.run(FOREVER).is_err() {
            return 0x1ff;
        }
        let reason = page.exit_reason();
        if reason != VcpuExit::IO as u32 {
            return 0x100 + reason;
        }
        let io = page.io();
        if io.port == READY_PORT {
            READY.store(true, Ordering::Release);
        }
        if io.direction == 1 && (DEBUG_EXIT..DEBUG_EXIT + 4).contains(&io.port) {
            return ((u32::from(page.io_byte(0)) << 1) | 1) & 0xff;
        }
        if io.direction == 0 {
            page.answer_in(u64::MAX, u64::from(io.size));
        }
    }
}

fn api() -> u32 {
    let Ok(vm) = Vm::open(0) else { return 2 };
    check!(3, is_err(vm.irq(0, 5, false), Errno::EINVAL), "vector 5 accepted");
    check!(4, is_err(vm.irq(9, VECTOR, false), Errno::ENOTFOUND), "APIC id 9 accepted");
    // SAFETY: a raw IRQ_CREATE with an undefined flag; it must fail.
    let raw = unsafe {
        libcopra::syscall::syscall4_via(libcopra::syscall::entry(), Sys::IRQ_CREATE as u64,
                                        vm.handle().raw().into(), 0, u64::from(VECTOR), 2)
    };
    check!(5, raw as i64 == Errno::EINVAL as i64, "flags 2 gave {raw:#x}");
    let Ok(edge) = vm.irq(0, VECTOR, false) else { return 6 };
    check!(7, is_err(edge.resamples(), Errno::ENOTSUPP), "READ of an edge IRQ");
    check!(8, is_err(fs::write(edge.handle(), &[1, 0, 0, 0]), Errno::EINVAL), "WRITE of 4 bytes");
    let Ok(level) = vm.irq(0, VECTOR, true) else { return 9 };
    let Some(runner) = start(&vm, 0, 20) else { return 10 };
    let mut resamples = 0;
    for i in 0..20 {
        let sent = if i % 2 == 0 { level.signal() } else { level.write_signal() };
        check!(11, sent.is_ok(), "signal {i}: {sent:?}");
        match level.resamples() {
            Ok(n) => resamples += n,
            Err(e) => {
                println!("FAIL irq-test: resample {i}: {e:?}");
                return 12;
            }
        }
    }
    let status = runner.join().unwrap_or(0x1fe);
    check!(13, status == GUEST_DONE, "guest status {status:#x}");
    check!(14, resamples == 20, "{resamples} resamples for 20 EOIs");
    // A thread waiting for a resample when the VM goes is woken with ENOTFOUND (or, if
    // it reads only after, gets ENOTFOUND at once).
    let Ok(waiter) = thread::spawn(wait_resample, &level as *const Irq as u64) else { return 19 };
    let _ = wait::sleep(2_000_000);
    drop(vm); // the last VM handle: the VM is released
    let waited = waiter.join().unwrap_or(0);
    check!(20, waited == 1, "the waiting READ answered {waited} (1: ENOTFOUND)");
    check!(15, is_err(level.signal(), Errno::ENOTFOUND), "IRQ_SIGNAL after the VM went");
    check!(16, is_err(level.write_signal(), Errno::ENOTFOUND), "WRITE after the VM went");
    check!(17, is_err(edge.signal(), Errno::ENOTFOUND), "edge IRQ_SIGNAL after the VM went");
    check!(18, is_err(level.resamples(), Errno::ENOTFOUND), "READ after the VM went");
    println!("irq-test: api ok");
    0
}

fn wait_resample(irq: u64) -> u32 {
    // SAFETY: `api` lends this thread its IRQ until it has joined it.
    let irq = unsafe { &*(irq as *const Irq) };
    u32::from(is_err(irq.resamples(), Errno::ENOTFOUND))
}

static STORM_DONE: AtomicBool = AtomicBool::new(false);
static STORM_SIGNALS: AtomicU64 = AtomicU64::new(0);

fn storm_thread(irq: u64) -> u32 {
    // SAFETY: `storm` lends this thread its IRQ until it has joined it.
    let irq = unsafe { &*(irq as *const Irq) };
    let mut n = 0u64;
    while !STORM_DONE.load(Ordering::Relaxed) && n < 1_000_000 {
        if irq.signal().is_err() {
            return 1;
        }
        n += 1;
    }
    STORM_SIGNALS.store(n, Ordering::Relaxed);
    0
}

fn sleeper(_: u64) -> u32 {
    for _ in 0..20 {
        if wait::sleep(1_000_000).is_err() {
            return 1;
        }
    }
    0
}

fn storm() -> u32 {
    let Ok(vm) = Vm::open(0) else { return 2 };
    let Ok(irq) = vm.irq(0, VECTOR, false) else { return 3 };
    let Some(runner) = start(&vm, 0, 200) else { return 4 };
    let Ok(stormer) = thread::spawn(storm_thread, &irq as *const Irq as u64) else { return 5 };
    let Ok(sleepy) = thread::spawn(sleeper, 0) else { return 6 };
    let status = runner.join().unwrap_or(0x1fe);
    STORM_DONE.store(true, Ordering::Relaxed);
    let stormed = stormer.join().unwrap_or(1);
    let slept = sleepy.join().unwrap_or(1);
    check!(7, status == GUEST_DONE, "guest status {status:#x}");
    check!(8, stormed == 0 && slept == 0, "storm {stormed}, sleeper {slept}");
    let n = STORM_SIGNALS.load(Ordering::Relaxed);
    check!(9, n >= 200, "{n} signals for 200 interrupts");
    println!("irq-test: storm ok, {n} signals");
    0
}

fn bench(mode: &str, n: u64, param: u64) -> u32 {
    let Ok(vm) = Vm::open(0) else { return 2 };
    if mode == "timer" {
        let Some(runner) = start(&vm, 2, param) else { return 3 };
        let status = runner.join().unwrap_or(0x1fe);
        check!(4, status == GUEST_DONE, "guest status {status:#x}");
    } else {
        let Ok(level) = vm.irq(0, VECTOR, true) else { return 5 };
        let guest_mode = match mode {
            "spin" => 1,
            "user" => 3,
            _ => 0,
        };
        let Some(runner) = start(&vm, guest_mode, n) else { return 6 };
        for _ in 0..n {
            // Each signal finds the guest back in its loop (halted or spinning), not
            // still returning from the last interrupt: 1 ms after the resample.
            if level.signal().is_err() || level.resamples().is_err() || wait::sleep(1_000_000).is_err() {
                return 7;
            }
        }
        let status = runner.join().unwrap_or(0x1fe);
        check!(8, status == GUEST_DONE, "guest status {status:#x}");
    }
    let _ = vmm::FOREVER;
    println!("irq-bench: done");
    0
}
