//! vmm: copra's user-mode VMM service. `copra run --guest KERNEL.elf` boots it as /init.
//!
//! It opens every guest VM of the boot (CAPABILITIES' VM bitmap) and runs each vCPU of
//! each with VCPU_RUN on a thread of its own (vCPUs but 0 sleep in the kernel until the
//! guest starts them with INIT/SIPI). Each guest's device models are processes of their
//! own (models.rs), started with EXEC_HANDLES moving in only their objects: `uart`
//! (/bin/uart, bin/uart.rs), COM1's 16550A at 0x3F8 with its device event and a level
//! IRQ object (vector 0x24), which prints the guest's lines `NAME: text`; and `blk`
//! (/bin/blk, bin/blk.rs), a block device with a request ring in guest memory at ports
//! 0x6F0-0x6FF with its event, an edge IRQ object (vector 0x25) and the guest's RAM;
//! and `rtc` (/bin/rtc, bin/rtc.rs), the CMOS RTC at 0x70-0x71 with its event and a
//! level IRQ object (vector 0x28), its time the boot's wall clock (/etc/clock).
//! When the boot gave /init the host's standard input (a console-input object at handle
//! 1), it moves it on, untouched, to VM 0's `uart` model (com1.rs), which feeds its bytes
//! to the guest's receive side. A model that dies leaves its ports reading all ones (DEVICE_GONE, reported). The
//! vCPU threads answer the rest through the run page: QEMU's isa-debug-exit at
//! 0xF4-0xF7, which ends the guest with status `(value << 1) | 1`; every other port
//! reads all ones, memory outside RAM too. It exits with the status of VM 0's guest, as
//! `qemu-system-x86_64 -device isa-debug-exit` does; or 118 when a guest halts with
//! interrupts disabled, 120 on a triple fault, 122 when the guest stopped otherwise
//! (the instruction's bytes are printed). If `/etc/vmm.expect` holds a status (the
//! demo image's holds 43) and VM 0's guest ends with it, the service says so and exits
//! with 0 instead: the guest did what it was expected to do.

#![no_std]
#![no_main]

extern crate alloc;

mod com1;
#[allow(dead_code)] // the interrupt side is the uart model's (bin/uart.rs)
mod console;
mod models;
#[allow(dead_code)]
mod uart;

use alloc::boxed::Box;
use alloc::vec::Vec;
use com1::COM1;
use console::Console;
use libcopra::abi::{Errno, VcpuFailure, VmCap};
use libcopra::sync::Mutex;
use libcopra::vmm::{self, FOREVER, RunPageMap, Vcpu, VcpuExit, Vm};
use libcopra::{declare_main, println, process, thread};

declare_main!(main);

const DEBUG_EXIT: u16 = 0xf4;
const EXIT_HALTED: u32 = 118;
const EXIT_TRIPLE_FAULT: u32 = 120;
const EXIT_FAILED: u32 = 122;
/// A vCPU thread whose VCPU_RUN was interrupted (the process is ending).
const EXIT_INTERRUPTED: u32 = 0x100;
const RIP: usize = 16;
/// The guest status that counts as success (optional; the demo image has one).
const EXPECT: &str = "/etc/vmm.expect";

fn main() -> u32 {
    let bitmap = vmm::vm_bitmap().unwrap_or(0);
    if bitmap == 0 {
        println!("vmm: no guest VMs (copra run --guest KERNEL.elf makes one)");
        return 0;
    }
    let mut others = Vec::new();
    let first = bitmap.trailing_zeros();
    // The host's standard input, if the boot gave one (handle 1, docs/abi.md): it goes,
    // untouched, to the first guest's uart model (com1.rs).
    com1::keep_input(first, process::initial_handles().into_iter().next());
    for index in first + 1..64 {
        if bitmap >> index & 1 != 0 {
            match thread::spawn(run_vm, u64::from(index)) {
                Ok(t) => others.push(t),
                Err(e) => println!("vmm: cannot start a thread for VM {index}: {e:?}"),
            }
        }
    }
    let status = run_vm(u64::from(first));
    for t in others {
        let _ = t.join();
    }
    final_status(status)
}

/// `status`, or 0 if it is the one /etc/vmm.expect names.
fn final_status(status: u32) -> u32 {
    let Ok(file) = libcopra::fs::open(EXPECT, libcopra::fs::FileMode::READ, libcopra::fs::FileFlag::EMPTY) else {
        return status;
    };
    let mut buf = [0u8; 16];
    let n = libcopra::fs::read(&file, &mut buf).unwrap_or(0);
    let expected = core::str::from_utf8(&buf[..n]).ok().and_then(|t| t.trim().parse::<u32>().ok());
    match expected {
        Some(e) if e == status => {
            println!("vmm: the guest ended with status {status}, the one {EXPECT} expects: success");
            0
        }
        Some(e) => {
            println!("vmm: the guest ended with status {status}; {EXPECT} expects {e}");
            status
        }
        None => status,
    }
}

fn run_vm(index: u64) -> u32 {
    let index = index as u32;
    let vm = match Vm::open(index) {
        Ok(vm) => vm,
        Err(e) => {
            println!("vmm: VM_OPEN({index}): {e:?}");
            return EXIT_FAILED;
        }
    };
    let name = com1::guest_name(index);
    let routed = com1::start(&vm, index, &name);
    start_blk(&vm, index, &name);
    start_rtc(&vm, index, &name);
    let console: &'static Mutex<Console> = Box::leak(Box::new(Mutex::new(Console::new(index, name))));
    // vCPUs but 0 wait for the guest's INIT/SIPI inside VCPU_RUN: one thread each.
    let cpus = vm.capability(VmCap::VCPUS).unwrap_or(1) as u32;
    let vm: &'static Vm = Box::leak(Box::new(vm));
    for cpu in 1..cpus {
        let job = Box::leak(Box::new(Job { vm, console, cpu, routed }));
        if let Err(e) = thread::spawn(run_ap, job as *const Job as u64) {
            println!("vmm: vm{index}: no thread for vCPU {cpu}: {e:?}");
        }
    }
    run_vcpu(&Job { vm, console, cpu: 0, routed })
}

/// The block device's ports, its vector and its program.
const BLK_PORT: u16 = 0x6f0;
const BLK_VECTOR: u8 = 0x25;
const BLK_PROGRAM: &str = "/bin/blk";

/// Give the block device of `vm` to a `blk` device-model process; false if refused.
fn start_blk(vm: &Vm, index: u32, name: &str) -> bool {
    let size = vm.capability(VmCap::MEMORY_SIZE).unwrap_or(0);
    let (Ok(event), Ok(irq), Ok(ram)) = (vm.io_event(BLK_PORT, 16), vm.irq(0, BLK_VECTOR, false),
                                         vm.memory()) else {
        println!("vmm: vm{index}: no block device (its event, IRQ or RAM was refused)");
        return false;
    };
    let config = alloc::format!("name {name}\nram {size}\n{}", models::faults(index, "blk"));
    models::spawn(index, name, "the block device", BLK_PROGRAM, alloc::vec![event.into_handle(), irq.into_handle(), ram],
                  &config)
}

/// The RTC's ports (index, data), its vector (ISA IRQ 8) and its program.
const RTC_PORT: u16 = 0x70;
const RTC_VECTOR: u8 = 0x28;
const RTC_PROGRAM: &str = "/bin/rtc";

/// Give the CMOS RTC of `vm` to an `rtc` device-model process with the boot's wall
/// clock (/etc/clock); false if refused.
fn start_rtc(vm: &Vm, index: u32, name: &str) -> bool {
    let (Ok(event), Ok(irq)) = (vm.io_event(RTC_PORT, 2), vm.irq(0, RTC_VECTOR, true)) else {
        println!("vmm: vm{index}: no RTC (its event or IRQ was refused)");
        return false;
    };
    let config = alloc::format!("name {name}\n{}{}", models::wall_clock(), models::faults(index, "rtc"));
    models::spawn(index, name, "the RTC", RTC_PROGRAM, alloc::vec![event.into_handle(), irq.into_handle()],
                  &config)
}

struct Job {
    vm: &'static Vm,
    console: &'static Mutex<Console>,
    cpu: u32,
    routed: bool,
}

fn run_ap(arg: u64) -> u32 {
    // SAFETY: run_vm leaked the Job for this thread.
    let job = unsafe { &*(arg as *const Job) };
    let status = run_vcpu(job);
    if status != EXIT_INTERRUPTED {
        // The guest ended on this vCPU: the whole service ends with its status.
        process::exit(final_status(status));
    }
    status
}

fn run_vcpu(job: &Job) -> u32 {
    let index = job.console.lock().index;
    let (vcpu, page) = match job.vm.vcpu(job.cpu).and_then(|v| v.map_run_page().map(|p| (v, p))) {
        Ok(pair) => pair,
        Err(e) => {
            println!("vmm: vm{index}: VCPU {}: {e:?}", job.cpu);
            return EXIT_FAILED;
        }
    };
    let mut guest = Guest { index, console: job.console, routed: job.routed };
    let status = guest.run(&vcpu, &page);
    job.console.lock().flush();
    status
}

struct Guest {
    index: u32,
    console: &'static Mutex<Console>,
    routed: bool,
}

impl Guest {
    fn run(&mut self, vcpu: &Vcpu, page: &RunPageMap) -> u32 {
        loop {
            if let Err(e) = vcpu.run(FOREVER) {
                if e.is(Errno::EINTR) {
                    return EXIT_INTERRUPTED;
                }
                println!("vmm: vm{}: VCPU_RUN: {e:?}", self.index);
                return EXIT_FAILED;
            }
            let reason = page.exit_reason();
            if reason == VcpuExit::IO as u32 {
                let io = page.io();
                if let Some(status) = self.port(page, io.port, io.direction == 1, io.size, io.count) {
                    return status;
                }
            } else if reason == VcpuExit::MMIO as u32 {
                page.answer_mmio(u64::MAX); // open bus: all ones; writes are dropped
            } else if reason == VcpuExit::MSR_READ as u32 || reason == VcpuExit::MSR_WRITE as u32 {
                page.answer_msr(0, true); // never claimed: #GP, as KVM would
            } else if reason == VcpuExit::DEVICE_GONE as u32 {
                // A device model ended with this access unanswered: the guest read all
                // ones and goes on; the range is the VMM's again (all ones from now on).
                let name = self.console.lock().name.clone();
                println!("vmm: {name}: the device model of port {:#x} is gone; the guest reads all ones",
                         page.io().port);
            } else if reason == VcpuExit::HLT as u32 {
                self.console.lock().flush();
                println!("vmm: vm{}: halted with interrupts disabled (at {:#x})", self.index,
                         page.reg(RIP));
                return EXIT_HALTED;
            } else if reason == VcpuExit::SHUTDOWN as u32 {
                self.console.lock().flush();
                println!("vmm: vm{}: triple fault (at {:#x})", self.index, page.reg(RIP));
                return EXIT_TRIPLE_FAULT;
            } else {
                self.console.lock().flush();
                // SAFETY: the payload area holds a VcpuFailure for these exits.
                let failure = unsafe { ((page.addr() + libcopra::abi::RUN_PAGE_PAYLOAD) as *const VcpuFailure).read_volatile() };
                let n = (failure.insn_length as usize).min(16);
                println!("vmm: vm{}: stopped (exit {reason}, code {}) at {:#x}, bytes {:02x?}",
                         self.index, failure.code, page.reg(RIP), &failure.insn[..n]);
                return EXIT_FAILED;
            }
        }
    }

    /// One port access; the guest's status when it ends the guest. COM1 comes here
    /// only when it could not be routed to its device model.
    fn port(&mut self, page: &RunPageMap, port: u16, out: bool, size: u8, count: u32) -> Option<u32> {
        let size = u64::from(size);
        for item in 0..u64::from(count) {
            let at = item * size;
            if out {
                let value = (0..size).fold(0u64, |v, i| v | (u64::from(page.io_byte(at + i)) << (8 * i)));
                if (DEBUG_EXIT..DEBUG_EXIT + 4).contains(&port) {
                    self.console.lock().flush();
                    return Some((((value << 1) | 1) & 0xff) as u32);
                }
                for i in 0..size {
                    let p = port.wrapping_add(i as u16);
                    if !self.routed && (COM1..COM1 + 8).contains(&p) {
                        self.console.lock().access(p - COM1, (value >> (8 * i)) as u8, true);
                    }
                }
            } else {
                for i in 0..size {
                    let p = port.wrapping_add(i as u16);
                    let byte = if !self.routed && (COM1..COM1 + 8).contains(&p) {
                        self.console.lock().access(p - COM1, 0, false)
                    } else {
                        0xff
                    };
                    page.write_u8(libcopra::abi::RUN_PAGE_IO_DATA + at + i, byte);
                }
            }
        }
        None
    }
}
