//! uart: the COM1 device model of one guest, a process of its own. The vmm service
//! starts it with EXEC_HANDLES moving in exactly: 1 the port range's device event
//! (COM1, 0x3F8-0x3FF), 2 a level IRQ object (vector 0x24), 3 a channel endpoint
//! bringing its configuration (`name`: the guest's name, which starts every console
//! line). The first guest's model may get one more object before the channel, the
//! host's standard input (a console-input object, docs/vmm.md), and then a config line
//! `input 1`: it READs bytes from it only while the 16550A's receiver has room for
//! them (`Uart::input_room`: RTS set, loopback off), so nothing is lost to overruns,
//! and each raises the receive-data interrupt as loopback does. MSR.DCD is set (as on
//! QEMU) and clears when that input has ended. It takes each guest access (READ), runs the 16550A (uart.rs) and answers it
//! (WRITE); the guest's output becomes lines `NAME: text` in this process's log.
//! Whenever the UART's interrupt line is active and not asserted yet it signals the
//! IRQ; at the guest's EOI the kernel resamples it (READABLE) and the line is looked
//! at again, as KVM's irqfd resample does for level-triggered lines. It ends (0) when
//! its VM is gone.

#![no_std]
#![no_main]

extern crate alloc;

#[allow(dead_code)] // `index` is the vmm's
#[path = "../console.rs"]
mod console;
#[path = "../model.rs"]
mod model;
#[path = "../uart.rs"]
mod uart;

use console::Console;
use libcopra::abi::{Errno, Signal};
use libcopra::fs;
use libcopra::handle::Handle;
use libcopra::vmm::{DeviceEvent, Irq};
use libcopra::wait::{item, wait_many};
use libcopra::{declare_main, println};

declare_main!(main);

const COM1: u16 = 0x3f8;

fn main() -> u32 {
    let Some(start) = model::start_with("uart", 2, 3) else { return 2 };
    let mut handles = start.handles.into_iter();
    let (Some(event), Some(irq)) = (handles.next(), handles.next()) else { return 2 };
    let (event, irq) = (DeviceEvent::from_handle(event), Irq::from_handle(irq));
    let mut input = handles.next();
    if input.is_some() != (model::value(&start.config, "input") == Some(1)) {
        println!("uart: the console input and the config line `input 1` disagree");
        return 2;
    }
    let name = model::text(&start.config, "name").unwrap_or("vm");
    let mut console = Console::new(0, alloc::string::String::from(name));
    let status = serve(&mut console, &event, &irq, &mut input, start.crash_at);
    console.flush();
    status
}

fn serve(console: &mut Console, event: &DeviceEvent, irq: &Irq, input: &mut Option<Handle>,
         crash_at: u64) -> u32 {
    let mut taken = 0u64;
    loop {
        let mut items = [item(event, Signal::READABLE), item(irq, Signal::READABLE),
                         item(event, Signal::READABLE)];
        let mut n = 2;
        if let Some(h) = input.as_ref() {
            if console.uart.input_room() > 0 {
                items[2] = item(h, Signal::READABLE);
                n = 3;
            }
        }
        if let Err(e) = wait_many(&mut items[..n], None) {
            println!("uart: WAIT_MANY: {e:?}");
            return 1;
        }
        if items[0].ready != 0 {
            let access = match event.take() {
                Ok(access) => access,
                Err(e) if e.is(Errno::ENOTFOUND) => return 0, // the VM is gone
                Err(e) => {
                    println!("uart: READ: {e:?}");
                    return 1;
                }
            };
            taken += 1;
            if taken == crash_at {
                console.flush();
                model::crash();
            }
            let offset = (access.address as u16).wrapping_sub(COM1);
            let write = access.is_write != 0;
            let mut value = 0u64;
            for i in 0..u64::from(access.size.min(4)) {
                let byte = (access.data >> (8 * i)) as u8;
                let got = console.access(offset.wrapping_add(i as u16), byte, write);
                value |= u64::from(got) << (8 * i);
            }
            console.update_irq(irq);
            if let Err(e) = event.answer(access.seq, value) {
                println!("uart: WRITE: {e:?}");
                return 1;
            }
        }
        if items[1].ready != 0 {
            let _ = irq.resamples();
            console.asserted = false;
            console.update_irq(irq);
        }
        if n == 3 && items[2].ready != 0 {
            take_input(console, irq, input);
        }
    }
}

/// READ the host bytes the receiver has room for (the access just served may have
/// changed that room); at the end of the input (or an error) drop it and clear DCD.
fn take_input(console: &mut Console, irq: &Irq, input: &mut Option<Handle>) {
    let room = console.uart.input_room();
    let Some(h) = input.as_ref() else { return };
    if room == 0 {
        return;
    }
    let mut buf = [0u8; 16];
    match fs::read(h, &mut buf[..room.min(16)]) {
        Ok(0) => {
            *input = None;
            console.uart.carrier = false;
        }
        Ok(got) => {
            for &byte in &buf[..got] {
                console.uart.input(byte);
            }
            console.update_irq(irq);
        }
        Err(e) => {
            println!("uart: READ of the console input: {e:?}");
            *input = None;
            console.uart.carrier = false;
        }
    }
}
