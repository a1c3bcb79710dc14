//! vmm-test: a small user-mode VMM over copra's VMM interface, driving the `vmmtest`
//! guest kernel (user/guests/vmmtest.S) through VM_OPEN, VCPU_OPEN, the run page,
//! VCPU_RUN, VM_SET_MSR_FILTER and VM_MEMORY.
//!
//! What it does comes from `/etc/vmm-test.conf`:
//! - `tour` (guest 0: vmmtest, 2 vCPUs, 4 MiB): exclusivity (EBUSY), capabilities, the
//!   guest's RAM seen through VM_MEMORY, garbage in the run page (EINVAL), then every
//!   exit of the guest's tour answered and checked; prints `vmm-test: tour ok`;
//! - `hostile` (guests 0, 1 and 2: vmmtest; two SVSM CPUs): a VCPU_RUN timeout (EINTR),
//!   a triple fault (SHUTDOWN, twice), a flood of kernel-owned exits cut by the timeout
//!   (EINTR), a second thread's VCPU_RUN (EBUSY) and its CLOSE of the VCPU while the
//!   first thread runs the guest (EINTR); prints `vmm-test: hostile ok`;
//! - `abandon` (guest 0): a thread runs a spinning guest and the process exits under it;
//! - `devices` (guest 0): a port and an MMIO range served by a device-model thread through
//!   IO and MMIO events (never seen by VCPU_RUN; one answer by DEVICE_REPLY, which takes
//!   the next access too, after a refused one), overlapping and RAM ranges refused, and
//!   the device model closing its event mid-access (DEVICE_GONE, the guest reads all
//!   ones); prints `vmm-test: devices ok`;
//! - `moves` (guest 0: vmmtest; two SVSM CPUs): DUPLICATE of the VM and of a VCPU
//!   refused (EBUSY); a thread SENDs the VCPU through a channel while the main thread
//!   runs it (the runner gets EINTR, its old id is gone, the VCPU arrives under a new id
//!   and runs there); then the VM and that VCPU move into a child (EXEC_HANDLES of
//!   `/bin/vmm-test`), which runs the vCPU, finds VM_OPEN busy and exits: the VM is
//!   released with its last handle; prints `vmm-test: moves ok`;
//! - `stuck` (guest 0: vmmtest): a device model takes the guest's IN and never answers:
//!   VCPU_RUN's timeouts give EINTR again and again (the vCPU's thread blocks, no CPU is
//!   held), the access stays pending; once the model's event is closed the VMM gets
//!   DEVICE_GONE and the guest reads all ones; prints `vmm-test: stuck ok`;
//! - `bench N`: ns per exit for N iterations of: a syscall (CLOCK, the CPL3 floor), a
//!   guest OUT forwarded here, a claimed RDMSR forwarded here, a kernel-owned RDMSR, a
//!   guest OUT answered by a device-model thread through an IO event (READ and WRITE),
//!   the same with DEVICE_REPLY (answer and take in one call); prints
//!   `vmm-bench: floor_ns=.. out_ns=.. forwarded_ns=.. kernel_ns=.. device_ns=.. reply_ns=..`.
//!
//! Any failed check prints a FAIL line and exits with a non-zero code.

#![no_std]
#![no_main]

use core::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use alloc::string::String;
use libcopra::abi::{ChannelMessage, Errno, MsrFilterFlag, Sys};
use libcopra::channel::{self, Endpoint};
use libcopra::handle::Handle;
use libcopra::process::{self, Command};
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::memory::Mapping;
use libcopra::syscall::syscall3;
use libcopra::vmm::{self, FOREVER, MsrRange, RunPageMap, VcpuExit, Vm, VmCap};
use libcopra::wait::{self, Instant, Signal};
use libcopra::{declare_main, println, thread};

extern crate alloc;

declare_main!(main);

const MS: u64 = 1_000_000;
const RSI: usize = 4;
const RDI: usize = 5;
const RBX: usize = 1;
const RFLAGS: usize = 17;
const CLAIMED: u32 = 0x4000_0200;
const MSR_ANSWER: u64 = 0x0123_4567_89ab_cdef;
const COM1: u16 = 0x3f8;
const DEBUG_EXIT: u16 = 0xf4;

macro_rules! check {
    ($code:expr, $cond:expr, $($why:tt)*) => {
        if !$cond {
            println!("FAIL vmm-test: {}", format_args!($($why)*));
            return $code;
        }
    };
}

fn is_err<T>(r: libcopra::Result<T>, errno: Errno) -> bool {
    r.err().is_some_and(|e| e.is(errno))
}

fn main() -> u32 {
    let mut buf = [0u8; 64];
    let text = match fs::open("/etc/vmm-test.conf", FileMode::READ, FileFlag::EMPTY) {
        Ok(file) => {
            let n = fs::read(&file, &mut buf).unwrap_or(0);
            core::str::from_utf8(&buf[..n]).unwrap_or("")
        }
        Err(_) => "tour",
    };
    let mut words = text.split_ascii_whitespace();
    match words.next() {
        Some("tour") => tour(),
        Some("hostile") => hostile(),
        Some("abandon") => abandon(),
        Some("devices") => devices(),
        Some("moves") => moves(),
        Some("stuck") => stuck(),
        Some("bench") => bench(words.next().and_then(|w| w.parse().ok()).unwrap_or(1000)),
        _ => {
            println!("FAIL vmm-test: unknown mode");
            1
        }
    }
}

/// A guest's console (COM1) and exit port, as far as the tour needs them.
struct Devices {
    line: String,
    exit: Option<u64>,
}

impl Devices {
    /// Handle a port access the test does not check itself; true if it was one.
    fn port(&mut self, page: &RunPageMap, port: u16, out: bool, size: u64) -> bool {
        if port == COM1 && out {
            let c = page.io_byte(0);
            if c == b'\n' {
                println!("guest: {}", self.line);
                self.line.clear();
            } else if c >= 0x20 {
                self.line.push(c as char); // (the divisor latch's byte is not text)
            }
            return true;
        }
        if (COM1..COM1 + 8).contains(&port) {
            if !out {
                // LSR: transmitter empty; everything else reads 0.
                page.answer_in(if port == COM1 + 5 { 0x60 } else { 0 }, size);
            }
            return true;
        }
        if port == DEBUG_EXIT && out {
            self.exit = Some(page.io_value(size));
            return true;
        }
        false
    }
}

fn tour() -> u32 {
    check!(10, vmm::vm_bitmap() == Ok(1), "VM bitmap {:?}", vmm::vm_bitmap());
    let Ok(vm) = Vm::open(0) else { return 11 };
    check!(12, is_err(Vm::open(0), Errno::EBUSY), "second VM_OPEN");
    check!(13, is_err(Vm::open(5), Errno::ENOTFOUND), "VM_OPEN of a missing VM");
    check!(14, vm.capability(VmCap::COUNT) == Ok(4), "VmCap::COUNT");
    check!(15, vm.capability(VmCap::VCPUS) == Ok(2), "VmCap::VCPUS");
    check!(16, vm.capability(VmCap::MEMORY_SIZE) == Ok(4 << 20), "MEMORY_SIZE");
    check!(17, vm.capability(VmCap::MEMORY_BASE) == Ok(0), "MEMORY_BASE");
    let Ok(v0) = vm.vcpu(0) else { return 18 };
    check!(19, is_err(vm.vcpu(0), Errno::EBUSY), "second VCPU_OPEN");
    check!(20, is_err(vm.vcpu(2), Errno::ENOTFOUND), "VCPU_OPEN past the vCPUs");

    // The MSR split: kernel-owned MSRs cannot be claimed; 0x40000200 can.
    let x2apic_bit = [1u8];
    let owned = [MsrRange { flags: MsrFilterFlag::READ.bits() as u32, base: 0x802, count: 1,
                            _pad: 0, bitmap: x2apic_bit.as_ptr() as u64 }];
    check!(21, is_err(vm.set_msr_filter(&owned), Errno::EINVAL), "claiming an x2APIC MSR");
    let claimed = [MsrRange { flags: (MsrFilterFlag::READ | MsrFilterFlag::WRITE).bits() as u32,
                              base: CLAIMED, count: 1, _pad: 0,
                              bitmap: x2apic_bit.as_ptr() as u64 }];
    check!(22, vm.set_msr_filter(&claimed).is_ok(), "claiming 0x40000200");

    // Guest RAM, shared: the PVH start info the kernel wrote at boot is there.
    let Ok(memory) = vm.memory() else { return 23 };
    let Ok(ram) = Mapping::object(&memory, 4 << 20, libcopra::abi::MapFlag::READ
                                  | libcopra::abi::MapFlag::WRITE) else { return 24 };
    let magic = u32::from_le_bytes([ram[0x6000], ram[0x6001], ram[0x6002], ram[0x6003]]);
    check!(25, magic == 0x336e_c578, "start info magic {magic:#x} in guest RAM");
    // Shared with the running guest: volatile accesses only from here on.
    let word = |offset: u64| (ram.addr() + offset) as *mut u32;
    // SAFETY: inside the 4 MiB mapping, aligned.
    unsafe { word(0x3f_f000).write_volatile(0xc0ff_ee00) };

    let Ok(page) = v0.map_run_page() else { return 26 };
    check!(27, page.version() == 1, "run page version {}", page.version());
    // WAIT_MANY on the VCPU: READABLE only while an exit waits for this VMM.
    let mut items = [wait::item(&v0, Signal::READABLE)];
    check!(32, wait::wait_many(&mut items, Some(MS)) == Ok(0), "VCPU readable before a run");
    check!(28, page.reg(RBX) == 0x6000, "ebx at entry {:#x}", page.reg(RBX));
    // Garbage in the run page: EINVAL, the guest untouched.
    page.write_u32(8, 5);
    check!(29, is_err(v0.run(FOREVER), Errno::EINVAL), "regs_dirty 5");
    page.set_reg(RFLAGS, 0x8002);
    check!(30, is_err(v0.run(FOREVER), Errno::EINVAL), "rflags with bit 15");
    page.set_reg(RFLAGS, 0x2);
    page.set_reg(RSI, 0); // the tour

    let mut dev = Devices { line: String::new(), exit: None };
    let (mut checked, mut hlts, mut garbage_done) = (0u32, 0u32, false);
    while dev.exit.is_none() {
        if let Err(e) = v0.run(FOREVER) {
            println!("FAIL vmm-test: VCPU_RUN {:?}", e);
            return 31;
        }
        let reason = page.exit_reason();
        if reason == VcpuExit::IO as u32 {
            let io = page.io();
            let (port, out, size) = (io.port, io.direction == 1, u64::from(io.size));
            if dev.port(&page, port, out, size) {
                continue;
            }
            let value = page.io_value(size);
            match (port, out) {
                (0x80, true) => check!(40, value == 0x11, "out 0x80 {value:#x}"),
                (0x81, false) => page.answer_in(0x5a, size),
                (0x82, true) => check!(41, value == 0x5a, "echo of IN {value:#x}"),
                (0x83, true) => check!(42, value == MSR_ANSWER & 0xffff_ffff, "rdmsr eax {value:#x}"),
                (0x84, true) => check!(43, value == MSR_ANSWER >> 32, "rdmsr edx {value:#x}"),
                (0x85, true) => check!(44, value == 0, "x2APIC id {value:#x}"),
                (0x86, true) => check!(45, value == 0x0d, "#GP for an unclaimed MSR: {value:#x}"),
                (0x87, true) => check!(46, value == 0xfeed_face, "MMIO read {value:#x}"),
                (0x88, true) => check!(48, value == 0xc0ff_ee00, "guest read of VMM's word {value:#x}"),
                _ => {
                    println!("FAIL vmm-test: port {port:#x} out {out}");
                    return 47;
                }
            }
            checked += 1;
        } else if reason == VcpuExit::MSR_READ as u32 {
            let msr = page.msr();
            check!(50, msr.index == CLAIMED, "MSR_READ of {:#x}", msr.index);
            let mut items = [wait::item(&v0, Signal::READABLE)];
            check!(55, wait::wait_many(&mut items, Some(0)) == Ok(1), "VCPU readable at an exit");
            if !garbage_done {
                page.write_u8(libcopra::abi::RUN_PAGE_PAYLOAD + 4, 7); // error = 7
                check!(51, is_err(v0.run(FOREVER), Errno::EINVAL), "MSR error byte 7");
                garbage_done = true;
            }
            page.answer_msr(MSR_ANSWER, false);
            checked += 1;
        } else if reason == VcpuExit::MSR_WRITE as u32 {
            let msr = page.msr();
            check!(52, msr.index == CLAIMED && msr.data == MSR_ANSWER + 1,
                   "MSR_WRITE {:#x} <- {:#x}", msr.index, msr.data);
            page.answer_msr(0, false);
            checked += 1;
        } else if reason == VcpuExit::MMIO as u32 {
            let mmio = page.mmio();
            check!(53, mmio.address == 0xc000_0000 && mmio.is_write == 0 && mmio.length == 4,
                   "MMIO {:#x}", mmio.address);
            page.answer_mmio(0xfeed_face);
            checked += 1;
        } else if reason == VcpuExit::HLT as u32 {
            hlts += 1;
        } else {
            println!("FAIL vmm-test: exit {reason}");
            return 54;
        }
    }
    check!(60, dev.exit == Some(0), "guest exit value {:?}", dev.exit);
    check!(61, checked == 13 && hlts == 1, "{checked} checked exits, {hlts} HLTs");
    // SAFETY: as above.
    let stored = unsafe { word(0x3f_f004).read_volatile() };
    check!(65, stored == 0x600d_cafe, "the guest's store seen through VM_MEMORY: {stored:#x}");
    // vCPU 1 waits for a SIPI nobody sends: VCPU_RUN sleeps in the kernel until its
    // timeout (EINTR), as KVM_RUN does for a vCPU in wait-for-SIPI.
    let Ok(v1) = vm.vcpu(1) else { return 62 };
    let Ok(_page1) = v1.map_run_page() else { return 63 };
    check!(64, is_err(v1.run(5 * MS), Errno::EINTR), "vCPU 1 before its SIPI");
    println!("vmm-test: tour ok");
    0
}

/// Set the guest's registers as at its PVH entry, with mode `rsi` and count `rdi`.
fn restart(page: &RunPageMap, entry: &[u64; 18], rsi: u64, rdi: u64) {
    for (i, value) in entry.iter().enumerate() {
        page.set_reg(i, *value);
    }
    page.set_reg(RSI, rsi);
    page.set_reg(RDI, rdi);
}

/// VCPU_RUN until an exit other than the console's (answered here): its reason, or the error.
fn run_past_console(v: &vmm::Vcpu, page: &RunPageMap, timeout: u64) -> libcopra::Result<u32> {
    let mut dev = Devices { line: String::new(), exit: None };
    loop {
        v.run(timeout)?;
        let reason = page.exit_reason();
        if reason == VcpuExit::IO as u32 {
            let io = page.io();
            if io.port != DEBUG_EXIT && dev.port(page, io.port, io.direction == 1, u64::from(io.size)) {
                continue;
            }
        }
        return Ok(reason);
    }
}

static STARTED: AtomicU32 = AtomicU32::new(0);
static VCPU_RAW: AtomicU64 = AtomicU64::new(0);
static RACER: AtomicU64 = AtomicU64::new(0);

fn racer(_: u64) -> u32 {
    while STARTED.load(Ordering::Acquire) == 0 {
        let _ = wait::sleep(MS);
    }
    let _ = wait::sleep(30 * MS); // the main thread is in VCPU_RUN by now
    let raw = VCPU_RAW.load(Ordering::Relaxed);
    // SAFETY: a raw syscall on a handle the main thread holds; only its result matters.
    let busy = unsafe { libcopra::syscall::syscall2(Sys::VCPU_RUN as u64, raw, 0) };
    RACER.store(busy, Ordering::Relaxed);
    let _ = libcopra::handle::close_raw(raw as u32);
    0
}

fn hostile() -> u32 {
    let (Ok(vm0), Ok(vm1)) = (Vm::open(0), Vm::open(1)) else { return 10 };
    // A spinning guest and a timeout: EINTR.
    let Ok(v0) = vm0.vcpu(0) else { return 11 };
    let Ok(page0) = v0.map_run_page() else { return 12 };
    page0.set_reg(RSI, 5);
    let start = Instant::now();
    check!(13, is_err(run_past_console(&v0, &page0, 30 * MS), Errno::EINTR), "VCPU_RUN timeout");
    check!(14, Instant::now().since(start) >= 30 * MS, "timeout returned early");
    // A triple fault: SHUTDOWN, and SHUTDOWN again.
    let Ok(v1) = vm1.vcpu(0) else { return 15 };
    let Ok(page1) = v1.map_run_page() else { return 16 };
    page1.set_reg(RSI, 4);
    check!(17, run_past_console(&v1, &page1, FOREVER) == Ok(VcpuExit::SHUTDOWN as u32),
           "triple fault: exit {}", page1.exit_reason());
    check!(18, v1.run(FOREVER).is_ok() && page1.exit_reason() == VcpuExit::SHUTDOWN as u32,
           "after the triple fault");
    // A guest flooding kernel-owned exits (x2APIC reads without end): the timeout still
    // ends VCPU_RUN.
    let Ok(vm2) = Vm::open(2) else { return 23 };
    let Ok(v2) = vm2.vcpu(0) else { return 24 };
    let Ok(page2) = v2.map_run_page() else { return 25 };
    page2.set_reg(RSI, 2);
    page2.set_reg(RDI, 0xffff_ffff);
    check!(26, is_err(run_past_console(&v2, &page2, 50 * MS), Errno::EINTR), "flood timeout");
    // A second thread: its VCPU_RUN answers EBUSY, its CLOSE kicks this one out.
    VCPU_RAW.store(u64::from(v0.handle().raw()), Ordering::Relaxed);
    let Ok(worker) = thread::spawn(racer, 0) else { return 19 };
    STARTED.store(1, Ordering::Release);
    let result = v0.run(FOREVER);
    check!(20, is_err(result, Errno::EINTR), "VCPU_RUN while another thread closes: {result:?}");
    check!(21, worker.join() == Ok(0), "racer");
    let busy = RACER.load(Ordering::Relaxed);
    check!(22, busy == Errno::EBUSY as i64 as u64, "second VCPU_RUN answered {busy:#x}");
    core::mem::forget(v0); // the racer closed it
    drop(page0);
    println!("vmm-test: hostile ok");
    0
}

static MOVE_ENDPOINT: AtomicU64 = AtomicU64::new(0);

/// Waits until the main thread is inside VCPU_RUN (a VCPU_RUN of its own answers EBUSY),
/// then SENDs the VCPU's handle through the channel.
fn mover(_: u64) -> u32 {
    let raw = VCPU_RAW.load(Ordering::Relaxed);
    loop {
        // SAFETY: a raw call on the main thread's handle; a timeout of 0 never runs long.
        let r = unsafe { libcopra::syscall::syscall2(Sys::VCPU_RUN as u64, raw, 0) };
        if r == Errno::EBUSY as i64 as u64 {
            break;
        }
        let _ = wait::sleep(MS);
    }
    let ids = [raw as u32];
    let message = ChannelMessage { data: 0, handles: ids.as_ptr() as u64, data_len: 0, handle_count: 1 };
    // SAFETY: the endpoint stays open in the main thread; forget this second owner.
    let end = Endpoint::from_handle(unsafe { Handle::from_raw(MOVE_ENDPOINT.load(Ordering::Relaxed) as u32) });
    let sent = end.send_raw(&message, false);
    let _ = end.into_handle().into_raw();
    u32::from(sent.is_err())
}

fn moves() -> u32 {
    let given = process::initial_handles();
    if given.len() == 2 {
        return moved_child(given);
    }
    let Ok(vm) = Vm::open(0) else { return 30 };
    check!(31, is_err(channel::duplicate(vm.handle(), None), Errno::EBUSY), "DUPLICATE of a VM");
    let Ok(v0) = vm.vcpu(0) else { return 32 };
    check!(33, is_err(channel::duplicate(v0.handle(), None), Errno::EBUSY), "DUPLICATE of a VCPU");
    let Ok(page0) = v0.map_run_page() else { return 34 };
    page0.set_reg(RSI, 5); // spin
    // Past the guest's console output into its spin, so that the run below makes no exit.
    let primed = run_past_console(&v0, &page0, 20 * MS);
    check!(46, is_err(primed, Errno::EINTR), "the guest does not spin: {primed:?}");
    let Ok((a, b)) = channel::create() else { return 35 };
    VCPU_RAW.store(u64::from(v0.handle().raw()), Ordering::Relaxed);
    MOVE_ENDPOINT.store(u64::from(a.into_handle().into_raw()), Ordering::Relaxed);
    let Ok(worker) = thread::spawn(mover, 0) else { return 36 };
    let result = loop {
        let r = v0.run(FOREVER).map(|()| page0.exit_reason());
        if !is_err(r, Errno::EBUSY) {
            break r; // EBUSY: the mover's probe held it for a moment
        }
    };
    check!(37, is_err(result, Errno::EINTR), "VCPU_RUN while its handle is sent: {result:?}");
    check!(38, worker.join() == Ok(0), "mover's SEND");
    check!(39, is_err(v0.run(0), Errno::ENOTFOUND), "the sent handle still names the VCPU");
    core::mem::forget(v0); // its id went with the message
    let _ = libcopra::handle::close_raw(MOVE_ENDPOINT.load(Ordering::Relaxed) as u32);
    let mut buf = [0u8; 8];
    let Ok(got) = b.try_recv(&mut buf) else { return 40 };
    check!(41, got.handles.len() == 1, "{} handles received", got.handles.len());
    let Some(h) = got.handles.into_iter().next() else { return 41 };
    let v0 = vmm::Vcpu::from_handle(h);
    let again = run_past_console(&v0, &page0, 20 * MS);
    check!(42, is_err(again, Errno::EINTR), "the received VCPU runs: {again:?}");
    // The VM and the VCPU move into a child; its exit releases the VM.
    let mut child = match Command::new("/bin/vmm-test").handle(vm.into_handle()).handle(v0.into_handle()).spawn() {
        Ok(child) => child,
        Err(e) => {
            println!("FAIL vmm-test: EXEC_HANDLES: {e:?}");
            return 43;
        }
    };
    check!(44, child.wait().is_ok_and(|s| s.success()), "the child failed");
    check!(45, is_err(Vm::open(0), Errno::ENOTFOUND), "the VM outlived its last handle");
    drop(page0);
    println!("vmm-test: moves ok");
    0
}

fn moved_child(given: alloc::vec::Vec<Handle>) -> u32 {
    let mut it = given.into_iter();
    let (Some(vm), Some(v0)) = (it.next(), it.next()) else { return 50 };
    let vm = Vm::from_handle(vm);
    let v0 = vmm::Vcpu::from_handle(v0);
    check!(51, vm.capability(VmCap::VCPUS).is_ok_and(|n| n == 1), "VM_CAPABILITIES in the child");
    check!(52, is_err(Vm::open(0), Errno::EBUSY), "VM_OPEN of the VM this child holds");
    let Ok(page) = v0.map_run_page() else { return 53 };
    check!(54, is_err(run_past_console(&v0, &page, 20 * MS), Errno::EINTR), "the moved VCPU in the child");
    println!("vmm-test: moved child ok");
    0
}

fn spinner(raw: u64) -> u32 {
    // SAFETY: the main thread keeps the handle; the process ends under this call.
    unsafe { libcopra::syscall::syscall2(Sys::VCPU_RUN as u64, raw, FOREVER) as u32 }
}

fn abandon() -> u32 {
    let Ok(vm) = Vm::open(0) else { return 10 };
    let Ok(v0) = vm.vcpu(0) else { return 11 };
    let Ok(page) = v0.map_run_page() else { return 12 };
    page.set_reg(RSI, 5);
    let Ok(_worker) = thread::spawn(spinner, u64::from(v0.handle().raw())) else { return 13 };
    let _ = wait::sleep(30 * MS);
    println!("vmm-test: abandoning the guest");
    libcopra::process::exit(0)
}

static IO_EVENT: AtomicU64 = AtomicU64::new(0);
static MMIO_EVENT: AtomicU64 = AtomicU64::new(0);

/// The device model of the `devices` mode: answers in the order the guest asks, then
/// closes its port event with an access taken and unanswered. Returns 0 when all was
/// as expected.
fn device_model(_: u64) -> u32 {
    // SAFETY: the main thread keeps both events open (the IO one is closed here).
    let io = unsafe { libcopra::HandleRef::borrow_raw(IO_EVENT.load(Ordering::Relaxed) as u32) };
    let mmio = unsafe { libcopra::HandleRef::borrow_raw(MMIO_EVENT.load(Ordering::Relaxed) as u32) };
    let take = |h: &libcopra::HandleRef<'_>| -> Option<vmm::DeviceAccess> {
        let mut raw = [0u8; 32];
        libcopra::fs::read(h, &mut raw).ok()?;
        let q = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().unwrap_or([0; 8]));
        let d = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().unwrap_or([0; 4]));
        Some(vmm::DeviceAccess { address: q(0), data: q(8), size: d(16), is_write: raw[20],
                                 _pad: [0; 3], seq: d(24), vcpu: d(28) })
    };
    let answer = |h: &libcopra::HandleRef<'_>, seq: u32, data: u64| {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&seq.to_le_bytes());
        raw[8..].copy_from_slice(&data.to_le_bytes());
        libcopra::fs::write(h, &raw).is_ok()
    };
    // DEVICE_REPLY without an answer only takes: the first access.
    let mut first = [0u8; 32];
    // SAFETY: the buffer outlives the call.
    let rax = unsafe { syscall3(Sys::DEVICE_REPLY as u64, u64::from(io.raw()), 0, first.as_mut_ptr() as u64) };
    let seq = u32::from_le_bytes(first[24..28].try_into().unwrap_or([0; 4]));
    if rax != 32 || first[0] != 0x81 || first[20] != 0 || first[16] != 1 || !answer(&io, seq, 0x77) {
        return 2;
    }
    let Some(a) = take(&mmio) else { return 3 };
    if a.address != 0xc000_0000 || a.is_write != 0 || a.size != 4 {
        return 4;
    }
    // DEVICE_REPLY: a refused answer takes nothing; then the answer and the next access.
    let mut bogus = [0u8; 16];
    bogus[..4].copy_from_slice(&a.seq.wrapping_add(1000).to_le_bytes());
    let mut next = [0u8; 32];
    let reply = |h: &libcopra::HandleRef<'_>, answer: u64, next: &mut [u8; 32]| {
        // SAFETY: both buffers outlive the call.
        unsafe {
            syscall3(Sys::DEVICE_REPLY as u64, u64::from(h.raw()), answer, next.as_mut_ptr() as u64)
        }
    };
    if reply(&mmio, bogus.as_ptr() as u64, &mut next) != Errno::EINVAL.raw() as u64 {
        return 31;
    }
    let mut good = [0u8; 16];
    good[..4].copy_from_slice(&a.seq.to_le_bytes());
    good[8..].copy_from_slice(&0xabcd_1234u64.to_le_bytes());
    if reply(&mmio, good.as_ptr() as u64, &mut next) != 32 {
        return 33;
    }
    let q = |i: usize| u64::from_le_bytes(next[i..i + 8].try_into().unwrap_or([0; 8]));
    let seq = u32::from_le_bytes(next[24..28].try_into().unwrap_or([0; 4]));
    if q(0) != 0xc000_0010 || next[20] != 1 || q(8) != 0x5555 || !answer(&mmio, seq, 0) {
        return 6;
    }
    let a = vmm::DeviceAccess { address: q(0), data: q(8), size: 4, is_write: 1, _pad: [0; 3], seq, vcpu: 0 };
    // A second answer to the same access is refused.
    let mut raw = [0u8; 16];
    raw[..4].copy_from_slice(&a.seq.to_le_bytes());
    if libcopra::fs::write(&mmio, &raw).err().is_none_or(|e| !e.is(Errno::EINVAL)) {
        return 7;
    }
    let Some(_) = take(&io) else { return 8 };
    // Gone with the access unanswered: the guest reads all ones, the VMM is told.
    if libcopra::handle::close_raw(IO_EVENT.load(Ordering::Relaxed) as u32).is_err() {
        return 9;
    }
    0
}

fn devices() -> u32 {
    let Ok(vm) = Vm::open(0) else { return 10 };
    let Ok(io) = vm.io_event(0x81, 1) else { return 11 };
    check!(12, is_err(vm.io_event(0x80, 2), Errno::EEXIST), "overlapping port ranges");
    check!(13, is_err(vm.mmio_event(0x1000, 0x1000), Errno::EINVAL), "MMIO over guest RAM");
    let Ok(mmio) = vm.mmio_event(0xc000_0000, 0x1000) else { return 14 };
    IO_EVENT.store(u64::from(io.handle().raw()), Ordering::Relaxed);
    MMIO_EVENT.store(u64::from(mmio.handle().raw()), Ordering::Relaxed);
    let Ok(v) = vm.vcpu(0) else { return 15 };
    let Ok(page) = v.map_run_page() else { return 16 };
    page.set_reg(RSI, 6);
    let Ok(model) = thread::spawn(device_model, 0) else { return 17 };
    let mut dev = Devices { line: String::new(), exit: None };
    let (mut echoes, mut gone) = (0u32, 0u32);
    while dev.exit.is_none() {
        if let Err(e) = v.run(FOREVER) {
            println!("FAIL vmm-test: VCPU_RUN {:?}", e);
            return 18;
        }
        let reason = page.exit_reason();
        if reason == VcpuExit::DEVICE_GONE as u32 {
            check!(19, page.io().port == 0x81, "DEVICE_GONE for port {:#x}", page.io().port);
            gone += 1;
            continue;
        }
        check!(20, reason == VcpuExit::IO as u32, "exit {reason}: the device's accesses came here");
        let io_exit = page.io();
        let (port, out, size) = (io_exit.port, io_exit.direction == 1, u64::from(io_exit.size));
        if dev.port(&page, port, out, size) {
            continue;
        }
        let value = page.io_value(size);
        match (port, echoes) {
            (0x82, 0) => check!(21, value == 0x77, "the device's IN answer: {value:#x}"),
            (0x87, 1) => check!(22, value == 0xabcd_1234, "the device's MMIO answer: {value:#x}"),
            (0x82, 2) => check!(23, value == 0xff, "IN after the device went: {value:#x}"),
            _ => {
                println!("FAIL vmm-test: port {port:#x} (echo {echoes})");
                return 24;
            }
        }
        echoes += 1;
    }
    check!(25, dev.exit == Some(0) && echoes == 3 && gone == 1,
           "exit {:?}, {echoes} echoes, {gone} DEVICE_GONE", dev.exit);
    check!(26, model.join() == Ok(0), "the device model");
    core::mem::forget(io); // the device model closed it
    // A model waiting in READ when its VM is released gets ENOTFOUND.
    let Ok(idle) = vm.io_event(0x90, 1) else { return 27 };
    IO_EVENT.store(u64::from(idle.handle().raw()), Ordering::Relaxed);
    let Ok(waiter) = thread::spawn(idle_model, 0) else { return 28 };
    let _ = wait::sleep(20 * MS);
    drop(page);
    drop(v);
    drop(vm); // released: its guest stops, its events get no more accesses
    check!(29, waiter.join() == Ok(0), "READ of an event whose VM was released");
    println!("vmm-test: devices ok");
    0
}

static TAKEN: AtomicU32 = AtomicU32::new(0);

/// Takes one access from the IO event and never answers it.
fn stuck_model(_: u64) -> u32 {
    // SAFETY: the main thread keeps the event open until this thread has returned.
    let event = unsafe { libcopra::HandleRef::borrow_raw(IO_EVENT.load(Ordering::Relaxed) as u32) };
    let mut raw = [0u8; 32];
    let taken = libcopra::fs::read(&event, &mut raw);
    TAKEN.store(1, Ordering::Release);
    u32::from(taken.is_err())
}

fn stuck() -> u32 {
    let Ok(vm) = Vm::open(0) else { return 60 };
    let Ok(io) = vm.io_event(0x81, 1) else { return 61 };
    IO_EVENT.store(u64::from(io.handle().raw()), Ordering::Relaxed);
    let Ok(v) = vm.vcpu(0) else { return 62 };
    let Ok(page) = v.map_run_page() else { return 63 };
    page.set_reg(RSI, 6);
    let Ok(model) = thread::spawn(stuck_model, 0) else { return 64 };
    let mut dev = Devices { line: String::new(), exit: None };
    let mut timeouts_after = 0;
    while timeouts_after < 3 {
        match v.run(30 * MS) {
            Ok(()) => {
                let reason = page.exit_reason();
                check!(65, reason == VcpuExit::IO as u32, "exit {reason} before the access");
                let io_exit = page.io();
                let (port, out, size) = (io_exit.port, io_exit.direction == 1, u64::from(io_exit.size));
                check!(66, dev.port(&page, port, out, size), "port {port:#x} before the access");
            }
            Err(e) if e.is(Errno::EINTR) => {
                if TAKEN.load(Ordering::Acquire) == 1 {
                    timeouts_after += 1;
                }
            }
            Err(e) => {
                println!("FAIL vmm-test: VCPU_RUN while the access is unanswered: {e:?}");
                return 67;
            }
        }
    }
    check!(68, model.join() == Ok(0), "the stuck model's READ");
    drop(io); // the model never answered: gone now
    let mut gone = false;
    loop {
        if let Err(e) = v.run(FOREVER) {
            println!("FAIL vmm-test: VCPU_RUN after the model went: {e:?}");
            return 69;
        }
        let reason = page.exit_reason();
        if reason == VcpuExit::DEVICE_GONE as u32 {
            gone = true;
            continue;
        }
        check!(70, reason == VcpuExit::IO as u32, "exit {reason} after the model went");
        let io_exit = page.io();
        let (port, out, size) = (io_exit.port, io_exit.direction == 1, u64::from(io_exit.size));
        if dev.port(&page, port, out, size) {
            continue;
        }
        check!(71, port == 0x82 && gone, "port {port:#x}, DEVICE_GONE seen: {gone}");
        let value = page.io_value(size);
        check!(72, value == 0xff, "the unanswered IN read {value:#x}, not all ones");
        break;
    }
    println!("vmm-test: stuck ok");
    0
}

fn idle_model(_: u64) -> u32 {
    // SAFETY: the main thread keeps the event open.
    let event = unsafe { libcopra::HandleRef::borrow_raw(IO_EVENT.load(Ordering::Relaxed) as u32) };
    let mut raw = [0u8; 32];
    match libcopra::fs::read(&event, &mut raw) {
        Err(e) if e.is(Errno::ENOTFOUND) => 0,
        _ => 1,
    }
}

static BENCH_EVENT: AtomicU64 = AtomicU64::new(0);

fn bench_device(_: u64) -> u32 {
    // SAFETY: the bench keeps the event open until it stops this thread by closing it.
    let event = unsafe { libcopra::HandleRef::borrow_raw(BENCH_EVENT.load(Ordering::Relaxed) as u32) };
    let mut raw = [0u8; 32];
    while libcopra::fs::read(&event, &mut raw).is_ok() {
        let mut answer = [0u8; 16];
        answer[..4].copy_from_slice(&raw[24..28]);
        if libcopra::fs::write(&event, &answer).is_err() {
            return 1;
        }
    }
    0
}

/// The same model with DEVICE_REPLY: each answer and the next access in one call.
fn bench_device_reply(_: u64) -> u32 {
    let raw = BENCH_EVENT.load(Ordering::Relaxed);
    let mut access = [0u8; 32];
    let mut answer = [0u8; 16];
    let mut at = 0u64; // the first call only takes
    loop {
        // SAFETY: both buffers outlive the call.
        let rax = unsafe { syscall3(Sys::DEVICE_REPLY as u64, raw, at, access.as_mut_ptr() as u64) };
        if rax != 32 {
            return 0; // the bench closed the event
        }
        answer[..4].copy_from_slice(&access[24..28]);
        at = answer.as_ptr() as u64;
    }
}

fn per_op(start: Instant, n: u64) -> u64 {
    Instant::now().since(start) / n
}

/// Run the guest from its entry in `mode` until it writes the exit port, answering
/// forwarded exits; the ns per iteration.
fn measure(v: &vmm::Vcpu, page: &RunPageMap, entry: &[u64; 18], mode: u64, n: u64) -> Option<u64> {
    restart(page, entry, mode, n);
    let mut dev = Devices { line: String::new(), exit: None };
    let start = Instant::now();
    while dev.exit.is_none() {
        v.run(FOREVER).ok()?;
        let reason = page.exit_reason();
        if reason == VcpuExit::IO as u32 {
            let io = page.io();
            let size = u64::from(io.size);
            if !dev.port(page, io.port, io.direction == 1, size) && io.direction == 0 {
                page.answer_in(0, size);
            }
        } else if reason == VcpuExit::MSR_READ as u32 {
            page.answer_msr(1, false);
        } else if reason != VcpuExit::HLT as u32 {
            println!("FAIL vmm-bench: exit {reason}");
            return None;
        }
    }
    Some(per_op(start, n))
}

fn bench(n: u64) -> u32 {
    let Ok(vm) = Vm::open(0) else { return 10 };
    let bit = [1u8];
    let claimed = [MsrRange { flags: MsrFilterFlag::READ.bits() as u32, base: CLAIMED, count: 1,
                              _pad: 0, bitmap: bit.as_ptr() as u64 }];
    check!(11, vm.set_msr_filter(&claimed).is_ok(), "filter");
    let Ok(v) = vm.vcpu(0) else { return 12 };
    let Ok(page) = v.map_run_page() else { return 13 };
    let mut entry = [0u64; 18];
    for (i, e) in entry.iter_mut().enumerate() {
        *e = page.reg(i);
    }
    let start = Instant::now();
    for _ in 0..n {
        let _ = Instant::now();
    }
    let floor = per_op(start, n);
    let (Some(out), Some(forwarded), Some(kernel)) = (
        measure(&v, &page, &entry, 3, n),
        measure(&v, &page, &entry, 1, n),
        measure(&v, &page, &entry, 2, n),
    ) else {
        return 14;
    };
    // A device model (a thread here: moving the event to a process of its own needs
    // the channels) answers the guest's port writes.
    let Ok(event) = vm.io_event(0x80, 1) else { return 15 };
    BENCH_EVENT.store(u64::from(event.handle().raw()), Ordering::Relaxed);
    let Ok(model) = thread::spawn(bench_device, 0) else { return 16 };
    let Some(device) = measure(&v, &page, &entry, 3, n) else { return 17 };
    drop(event); // the model's READ then fails and it ends
    check!(18, model.join() == Ok(0), "bench device model");
    let Ok(event) = vm.io_event(0x80, 1) else { return 19 };
    BENCH_EVENT.store(u64::from(event.handle().raw()), Ordering::Relaxed);
    let Ok(model) = thread::spawn(bench_device_reply, 0) else { return 20 };
    let Some(reply) = measure(&v, &page, &entry, 3, n) else { return 21 };
    drop(event);
    check!(22, model.join() == Ok(0), "bench device model (DEVICE_REPLY)");
    println!("vmm-bench: floor_ns={floor} out_ns={out} forwarded_ns={forwarded} \
              kernel_ns={kernel} device_ns={device} reply_ns={reply}");
    0
}
