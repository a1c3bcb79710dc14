//! COM1 as a device model: a thread of its own that holds only the port range's device
//! event (IO_EVENT_CREATE 0x3F8, 8 ports) and a level IRQ object (IRQ_CREATE, APIC 0,
//! vector 0x24 = ISA IRQ 4 at the usual offset 0x20). Guest accesses to COM1 never reach
//! the vCPU's thread: the kernel posts them to the event, this thread takes each (READ),
//! runs the 16550A (uart.rs) and answers it (WRITE). Whenever the UART's interrupt line
//! is active and not asserted yet, it signals the IRQ; at the guest's EOI the kernel
//! resamples the IRQ (READABLE) and the line is looked at again, as KVM's irqfd
//! resample does for level-triggered lines.
//!
//! Until channels can move the two handles to another process, the model is a thread
//! of the vmm service; it touches nothing but the console it prints to.

use alloc::boxed::Box;
use alloc::vec::Vec;
use libcopra::abi::{FileFlag, FileMode, Signal};
use libcopra::fs;
use libcopra::println;
use libcopra::sync::Mutex;
use libcopra::vmm::{DeviceEvent, Irq, Vm};
use libcopra::wait::{item, wait_many};

use crate::uart::Uart;

pub const COM1: u16 = 0x3f8;
pub const COM1_VECTOR: u8 = 0x24;
const LINE_MAX: usize = 1024;

/// A guest's console: the UART and the line being assembled.
pub struct Console {
    pub index: u32,
    /// What its lines start with: the guest's name from /etc/guests, else `vmN`.
    name: alloc::string::String,
    pub uart: Uart,
    line: Vec<u8>,
    asserted: bool,
    pub signals: u64,
}

impl Console {
    pub fn new(index: u32) -> Self {
        let name = guest_name(index).unwrap_or_else(|| alloc::format!("vm{index}"));
        Self { index, name, uart: Uart::new(), line: Vec::new(), asserted: false, signals: 0 }
    }

    /// A port access at `COM1 + offset`; the value read (0 for a write).
    pub fn access(&mut self, offset: u16, value: u8, write: bool) -> u8 {
        if write {
            if let Some(byte) = self.uart.write(offset, value) {
                self.put(byte);
            }
            0
        } else {
            self.uart.read(offset)
        }
    }

    /// Signal the IRQ if the line is active and not asserted since the last resample.
    fn update_irq(&mut self, irq: &Irq) {
        if !self.asserted && self.uart.interrupt() && irq.signal().is_ok() {
            self.asserted = true;
            self.signals += 1;
        }
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

    pub fn flush(&mut self) {
        if !self.line.is_empty() {
            self.emit();
        }
    }

    fn emit(&mut self) {
        if self.line.last() == Some(&b'\r') {
            self.line.pop();
        }
        let text = alloc::string::String::from_utf8_lossy(&self.line);
        println!("{}: {text}", self.name);
        self.line.clear();
    }
}

/// Line `index` of /etc/guests (the boot writes the guests' names there), if any.
fn guest_name(index: u32) -> Option<alloc::string::String> {
    let file = fs::open(GUEST_NAMES, FileMode::READ, FileFlag::from_bits_retain(0)).ok()?;
    let mut buf = [0u8; 4096];
    let n = fs::read(&file, &mut buf).ok()?;
    let text = core::str::from_utf8(&buf[..n]).ok()?;
    let name = text.lines().nth(index as usize)?.trim();
    (!name.is_empty()).then(|| alloc::string::String::from(name))
}

const GUEST_NAMES: &str = "/etc/guests";

struct Model {
    console: &'static Mutex<Console>,
    event: DeviceEvent,
    irq: Irq,
}

/// Route COM1 of `vm` to a device-model thread; false if the kernel refused (the vCPU
/// thread then serves COM1 from the run page, without interrupts).
pub fn start(vm: &Vm, console: &'static Mutex<Console>) -> bool {
    let event = match vm.io_event(COM1, 8) {
        Ok(e) => e,
        Err(e) => {
            println!("vmm: vm{}: COM1 stays in the VMM: IO_EVENT_CREATE: {e:?}", console.lock().index);
            return false;
        }
    };
    let irq = match vm.irq(0, COM1_VECTOR, true) {
        Ok(irq) => irq,
        Err(e) => {
            println!("vmm: vm{}: COM1 stays in the VMM: IRQ_CREATE: {e:?}", console.lock().index);
            return false;
        }
    };
    let model = Box::leak(Box::new(Model { console, event, irq }));
    libcopra::thread::spawn(serve, model as *const Model as u64).is_ok()
}

fn serve(arg: u64) -> u32 {
    // SAFETY: `start` leaked the Model for this thread, which alone uses it.
    let model = unsafe { &*(arg as *const Model) };
    loop {
        let mut items = [item(&model.event, Signal::READABLE), item(&model.irq, Signal::READABLE)];
        if wait_many(&mut items, None).is_err() {
            return 1;
        }
        if items[0].ready != 0 {
            let Ok(access) = model.event.take() else { return 1 };
            let offset = (access.address as u16).wrapping_sub(COM1);
            let write = access.is_write != 0;
            let mut value = 0u64;
            let mut console = model.console.lock();
            for i in 0..u64::from(access.size.min(4)) {
                let byte = (access.data >> (8 * i)) as u8;
                let got = console.access(offset.wrapping_add(i as u16), byte, write);
                value |= u64::from(got) << (8 * i);
            }
            console.update_irq(&model.irq);
            drop(console);
            if model.event.answer(access.seq, value).is_err() {
                return 1;
            }
        }
        if items[1].ready != 0 {
            let _ = model.irq.resamples();
            let mut console = model.console.lock();
            console.asserted = false;
            console.update_irq(&model.irq);
        }
    }
}
