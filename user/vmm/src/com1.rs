//! COM1 (0x3F8, 8 ports) of a guest, given to the `uart` device-model process
//! (bin/uart.rs). The vmm makes the port range's device event (IO_EVENT_CREATE) and a
//! level IRQ object (IRQ_CREATE, APIC 0, vector 0x24 = ISA IRQ 4 at the usual offset
//! 0x20) and moves both into the model at EXEC_HANDLES (models.rs): it keeps no handle
//! on either. Guest accesses to COM1 then never reach the vmm: the kernel posts them to
//! the event, which the model serves.
//!
//! The first guest's model also gets the host's standard input (a console-input object
//! the boot gave /init at handle 1, `keep_input`) as a third handle, with a config line
//! `input 1` saying it is there; the vmm keeps no handle on it either.
//!
//! When the model cannot be started (its program is missing, the kernel refused an
//! object), the vmm serves COM1 itself from the run page, without interrupts.

use alloc::string::String;
use libcopra::abi::{FileFlag, FileMode};
use libcopra::fs;
use libcopra::handle::Handle;
use libcopra::sync::Mutex;
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

/// The console input and the VM whose uart model gets it.
static INPUT: Mutex<Option<(u32, Handle)>> = Mutex::new(None);

/// Keep the console input (if any) for the uart model of VM `index`.
pub fn keep_input(index: u32, input: Option<Handle>) {
    *INPUT.lock() = input.map(|h| (index, h));
}

fn take_input(index: u32) -> Option<Handle> {
    let mut kept = INPUT.lock();
    if kept.as_ref().is_some_and(|(i, _)| *i == index) {
        return kept.take().map(|(_, h)| h);
    }
    None
}

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
    let mut handles = alloc::vec![event.into_handle(), irq.into_handle()];
    let input = take_input(index);
    let line = if input.is_some() { "input 1\n" } else { "" };
    handles.extend(input);
    let config = alloc::format!("name {name}\n{line}{}", models::faults(index, "uart"));
    models::spawn(index, name, "COM1", UART_PROGRAM, handles, &config)
}
