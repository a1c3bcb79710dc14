//! A guest's console: COM1's 16550A (uart.rs) and the line being assembled from what
//! the guest transmits. Each line is printed as `NAME: text` through the log of the
//! process that holds the console: the `uart` device-model process (bin/uart.rs), or
//! the vmm service when COM1 could not be given to one (com1.rs).

use alloc::string::String;
use alloc::vec::Vec;
use libcopra::println;
use libcopra::vmm::Irq;

use crate::uart::Uart;

const LINE_MAX: usize = 1024;

pub struct Console {
    pub index: u32,
    /// What its lines start with: the guest's name from /etc/guests, else `vmN`.
    pub name: String,
    pub uart: Uart,
    line: Vec<u8>,
    /// The IRQ was signalled and the guest has not EOId it yet (level line).
    pub asserted: bool,
}

impl Console {
    pub fn new(index: u32, name: String) -> Self {
        Self { index, name, uart: Uart::new(), line: Vec::new(), asserted: false }
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
    pub fn update_irq(&mut self, irq: &Irq) {
        if !self.asserted && self.uart.interrupt() && irq.signal().is_ok() {
            self.asserted = true;
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
        let text = String::from_utf8_lossy(&self.line);
        println!("{}: {text}", self.name);
        self.line.clear();
    }
}
