//! COM1 (0x3F8, 8 ports) of a guest, given to the `uart` device-model process
//! (bin/uart.rs). The vmm makes the port range's device event (IO_EVENT_CREATE) and a
//! level IRQ object (IRQ_CREATE, APIC 0, vector 0x24 = ISA IRQ 4 at the usual offset
//! 0x20) and moves both into the model at EXEC_HANDLES (models.rs): it keeps no handle
//! on either. Guest accesses to COM1 then never reach the vmm: the kernel posts them to
//! the event, which the model serves.
//!
//! When the model cannot be started (its program is missing, the kernel refused an
//! object), the vmm serves COM1 itself from the run page, without interrupts.

use alloc::string::String;
use libcopra::abi::{FileFlag, FileMode};
use libcopra::fs;
use libcopra::println;
use libcopra::vmm::Vm;

use crate::models;

pub const COM1: u16 = 0x3f8;
pub const COM1_VECTOR: u8 = 0x24;
/// The COM1 device model's program.
pub const UART_PROGRAM: &str = "/bin/uart";

/// Line `index` of /etc/guests (the boot writes the guests' names there), else `vmN`.
pub fn guest_name(index: u32) -> String {
    let named = || -> Option<String> {
        let file = fs::open(GUEST_NAMES, FileMode::READ, FileFlag::from_bits_retain(0)).ok()?;
        let mut buf = [0u8; 4096];
        let n = fs::read(&file, &mut buf).ok()?;
        let text = core::str::from_utf8(&buf[..n]).ok()?;
        let name = text.lines().nth(index as usize)?.trim();
        (!name.is_empty()).then(|| String::from(name))
    };
    named().unwrap_or_else(|| alloc::format!("vm{index}"))
}

const GUEST_NAMES: &str = "/etc/guests";

/// Give COM1 of `vm` to a `uart` device-model process; false if that failed (the
/// vCPU threads then serve COM1 from the run page).
pub fn start(vm: &Vm, index: u32, name: &str) -> bool {
    let event = match vm.io_event(COM1, 8) {
        Ok(e) => e,
        Err(e) => {
            println!("vmm: vm{index}: COM1 stays in the VMM: IO_EVENT_CREATE: {e:?}");
            return false;
        }
    };
    let irq = match vm.irq(0, COM1_VECTOR, true) {
        Ok(irq) => irq,
        Err(e) => {
            println!("vmm: vm{index}: COM1 stays in the VMM: IRQ_CREATE: {e:?}");
            return false;
        }
    };
    let config = alloc::format!("name {name}\n{}", models::faults(index, "uart"));
    models::spawn(index, name, "COM1", UART_PROGRAM, alloc::vec![event.into_handle(), irq.into_handle()], &config)
}
