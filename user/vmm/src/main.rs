//! vmm: copra's user-mode VMM service. `copra run --guest KERNEL.elf` boots it as /init.
//!
//! It opens every guest VM of the boot (CAPABILITIES' VM bitmap), runs vCPU 0 of each
//! with VCPU_RUN (one thread per VM) and answers its exits through the run page:
//! COM1 (a 16550A, uart.rs) at 0x3F8, whose output becomes lines `vmN: text`; QEMU's
//! isa-debug-exit at 0xF4-0xF7, which ends the guest with status `(value << 1) | 1`;
//! every other port reads all ones, memory outside RAM too. It exits with the status
//! of VM 0's guest, as `qemu-system-x86_64 -device isa-debug-exit` does; or 118 when a
//! guest halts (no interrupt source exists yet to wake it), 120 on a triple fault, 122
//! when the guest stopped otherwise (the instruction's bytes are printed). Device
//! models in processes of their own come with the IO event objects (docs/vmm.md).

#![no_std]
#![no_main]

extern crate alloc;

mod uart;

use alloc::vec::Vec;
use libcopra::abi::VcpuFailure;
use libcopra::vmm::{self, FOREVER, RunPageMap, Vcpu, VcpuExit, Vm};
use libcopra::{declare_main, println, thread};
use uart::Uart;

declare_main!(main);

const COM1: u16 = 0x3f8;
const DEBUG_EXIT: u16 = 0xf4;
const EXIT_HALTED: u32 = 118;
const EXIT_TRIPLE_FAULT: u32 = 120;
const EXIT_FAILED: u32 = 122;
const RFLAGS: usize = 17;
const RIP: usize = 16;
const LINE_MAX: usize = 1024;

fn main() -> u32 {
    let bitmap = vmm::vm_bitmap().unwrap_or(0);
    if bitmap == 0 {
        println!("vmm: no guest VMs (copra run --guest KERNEL.elf makes one)");
        return 0;
    }
    let mut others = Vec::new();
    let first = bitmap.trailing_zeros();
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
    status
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
    let (vcpu, page) = match vm.vcpu(0).and_then(|v| v.map_run_page().map(|p| (v, p))) {
        Ok(pair) => pair,
        Err(e) => {
            println!("vmm: vm{index}: VCPU 0: {e:?}");
            return EXIT_FAILED;
        }
    };
    let mut guest = Guest { index, uart: Uart::new(), line: Vec::new() };
    let status = guest.run(&vcpu, &page);
    guest.flush();
    status
}

struct Guest {
    index: u32,
    uart: Uart,
    line: Vec<u8>,
}

impl Guest {
    fn run(&mut self, vcpu: &Vcpu, page: &RunPageMap) -> u32 {
        loop {
            if let Err(e) = vcpu.run(FOREVER) {
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
            } else if reason == VcpuExit::HLT as u32 {
                let why = if page.reg(RFLAGS) & (1 << 9) != 0 {
                    "halted; no interrupt source can wake it yet"
                } else {
                    "halted with interrupts disabled"
                };
                self.flush();
                println!("vmm: vm{}: {why} (at {:#x})", self.index, page.reg(RIP));
                return EXIT_HALTED;
            } else if reason == VcpuExit::SHUTDOWN as u32 {
                self.flush();
                println!("vmm: vm{}: triple fault (at {:#x})", self.index, page.reg(RIP));
                return EXIT_TRIPLE_FAULT;
            } else {
                self.flush();
                // SAFETY: the payload area holds a VcpuFailure for these exits.
                let failure = unsafe { ((page.addr() + libcopra::abi::RUN_PAGE_PAYLOAD) as *const VcpuFailure).read_volatile() };
                let n = (failure.insn_length as usize).min(16);
                println!("vmm: vm{}: stopped (exit {reason}, code {}) at {:#x}, bytes {:02x?}",
                         self.index, failure.code, page.reg(RIP), &failure.insn[..n]);
                return EXIT_FAILED;
            }
        }
    }

    /// One port access; the guest's status when it ends the guest.
    fn port(&mut self, page: &RunPageMap, port: u16, out: bool, size: u8, count: u32) -> Option<u32> {
        let size = u64::from(size);
        for item in 0..u64::from(count) {
            let at = item * size;
            if out {
                let value = (0..size).fold(0u64, |v, i| v | (u64::from(page.io_byte(at + i)) << (8 * i)));
                if (DEBUG_EXIT..DEBUG_EXIT + 4).contains(&port) {
                    self.flush();
                    return Some((((value << 1) | 1) & 0xff) as u32);
                }
                for i in 0..size {
                    let p = port.wrapping_add(i as u16);
                    if (COM1..COM1 + 8).contains(&p) {
                        if let Some(byte) = self.uart.write(p - COM1, (value >> (8 * i)) as u8) {
                            self.put(byte);
                        }
                    }
                }
            } else {
                for i in 0..size {
                    let p = port.wrapping_add(i as u16);
                    let byte = if (COM1..COM1 + 8).contains(&p) { self.uart.read(p - COM1) } else { 0xff };
                    page.write_u8(libcopra::abi::RUN_PAGE_IO_DATA + at + i, byte);
                }
            }
        }
        None
    }

    fn put(&mut self, byte: u8) {
        if byte == b'\n' {
            self.emit();
        } else {
            self.line.push(byte);
            if self.line.len() >= LINE_MAX {
                self.emit();
            }
        }
    }

    fn flush(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }

    fn emit(&mut self) {
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        let text = alloc::string::String::from_utf8_lossy(&self.line);
        println!("vm{}: {text}", self.index);
        self.line.clear();
    }
}
