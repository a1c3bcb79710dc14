//! blk: a block device with a request ring in guest memory, the device model of one
//! guest as a process of its own. The vmm service starts it with EXEC_HANDLES moving in
//! exactly: 1 its port range's device event (0x6F0, 16 ports), 2 an edge IRQ object
//! (APIC 0, vector 0x25), 3 the guest's RAM (VM_MEMORY), 4 a channel endpoint bringing
//! its configuration (`ram`: the RAM's size in bytes). A virtio-blk in miniature
//! (docs/vmm.md, "The block device"):
//!
//! | port | access | |
//! |---|---|---|
//! | 0x6F0 RING | write u32 | guest-physical address of the ring (4 KiB, page aligned) |
//! | 0x6F4 NOTIFY | write u32 | the guest's producer index: requests up to it are queued |
//! | 0x6F8 ISR | read u32 | 1 if requests completed since the last read (reading acks) |
//! | 0x6FC CAPACITY | read u32 | sectors of 512 bytes |
//!
//! The ring: `used` u32 at 0 (the device's completion count, written after each
//! request's status), then 16 requests of 32 bytes from offset 16, request `i` in slot
//! `i % 16`: sector u64, buffer u64 (guest-physical), count u32 (sectors), write u32
//! (1: buffer -> disk), status u32 (the device writes 0 done, 1 refused: a buffer or
//! sector out of range), pad u32. At each NOTIFY the model serves every request
//! between its own count and the producer index, then signals the IRQ once.
//!
//! The disk is 64 sectors in the model's memory, sector n reading
//! `copra disk, sector n` and zeros until written. When its VM is gone it says how
//! many requests it served and ends (0).

#![no_std]
#![no_main]

extern crate alloc;

#[path = "../model.rs"]
mod model;

use alloc::vec;
use alloc::vec::Vec;
use libcopra::abi::{Errno, MapFlag, Signal};
use libcopra::memory::Mapping;
use libcopra::vmm::{DeviceEvent, Irq};
use libcopra::wait::{item, wait_many};
use libcopra::{declare_main, println};

declare_main!(main);

const BLK_PORT: u16 = 0x6F0;
const SECTOR: u64 = 512;
const SECTORS: u64 = 64;
const SLOTS: u32 = 16;
const RING_BYTES: u64 = 16 + 32 * SLOTS as u64;

struct Model {
    event: DeviceEvent,
    irq: Irq,
    ram: Mapping,
    disk: Vec<u8>,
    ring: u64,
    done: u32,
    isr: u32,
    done_total: u64,
    sectors_read: u64,
    sectors_written: u64,
}

fn main() -> u32 {
    let Some(start) = model::start("blk", 3) else { return 2 };
    let size = model::value(&start.config, "ram").unwrap_or(0);
    let mut handles = start.handles.into_iter();
    let (Some(event), Some(irq), Some(memory)) = (handles.next(), handles.next(), handles.next())
    else {
        return 2;
    };
    let ram = match Mapping::object(&memory, size, MapFlag::READ | MapFlag::WRITE) {
        Ok(ram) => ram,
        Err(e) => {
            println!("blk: cannot map the guest's RAM ({size} bytes): {e:?}");
            return 1;
        }
    };
    drop(memory); // the mapping keeps the RAM; the handle is not needed any more
    let mut disk = vec![0u8; (SECTOR * SECTORS) as usize];
    for n in 0..SECTORS {
        let text = alloc::format!("copra disk, sector {n}");
        let at = (n * SECTOR) as usize;
        disk[at..at + text.len()].copy_from_slice(text.as_bytes());
    }
    let mut model = Model { event: DeviceEvent::from_handle(event), irq: Irq::from_handle(irq),
                            ram, disk, ring: 0, done: 0, isr: 0, done_total: 0,
                            sectors_read: 0, sectors_written: 0 };
    let status = serve(&mut model, start.crash_at);
    let name = model::text(&start.config, "name").unwrap_or("vm");
    println!("{name}: {} requests served ({} sectors read, {} written)", model.done_total,
             model.sectors_read, model.sectors_written);
    status
}

fn serve(model: &mut Model, crash_at: u64) -> u32 {
    let mut taken = 0u64;
    loop {
        let mut items = [item(&model.event, Signal::READABLE)];
        if let Err(e) = wait_many(&mut items, None) {
            println!("blk: WAIT_MANY: {e:?}");
            return 1;
        }
        let access = match model.event.take() {
            Ok(access) => access,
            Err(e) if e.is(Errno::ENOTFOUND) => return 0, // the VM is gone
            Err(e) => {
                println!("blk: READ: {e:?}");
                return 1;
            }
        };
        taken += 1;
        if taken == crash_at {
            model::crash();
        }
        let value = model.access((access.address as u16).wrapping_sub(BLK_PORT),
                                 access.data as u32, access.is_write != 0);
        if let Err(e) = model.event.answer(access.seq, u64::from(value)) {
            println!("blk: WRITE: {e:?}");
            return 1;
        }
    }
}

impl Model {
    fn access(&mut self, offset: u16, value: u32, write: bool) -> u32 {
        match (offset, write) {
            (0, true) => {
                let ring = u64::from(value);
                self.ring = if ring % 4096 == 0 && ring + RING_BYTES <= self.ram.len() { ring } else { 0 };
                self.done = 0;
            }
            (4, true) => self.notify(value),
            (8, false) => return core::mem::take(&mut self.isr),
            (12, false) => return SECTORS as u32,
            _ => {}
        }
        0
    }

    fn notify(&mut self, avail: u32) {
        if self.ring == 0 {
            return;
        }
        let served = avail.wrapping_sub(self.done).min(SLOTS);
        for _ in 0..served {
            let slot = self.ring + 16 + 32 * u64::from(self.done % SLOTS);
            let sector = self.read_u64(slot);
            let buffer = self.read_u64(slot + 8);
            let count = u64::from(self.read_u32(slot + 16));
            let write = self.read_u32(slot + 20) != 0;
            let ok = self.transfer(sector, buffer, count, write);
            self.done_total += 1;
            if ok && write {
                self.sectors_written += count;
            } else if ok {
                self.sectors_read += count;
            }
            self.write_u32(slot + 24, u32::from(!ok));
            self.done = self.done.wrapping_add(1);
            self.write_u32(self.ring, self.done);
        }
        if served > 0 {
            self.isr = 1;
            let _ = self.irq.signal();
        }
    }

    /// Copy `count` sectors between the disk and guest RAM; false if out of range.
    fn transfer(&mut self, sector: u64, buffer: u64, count: u64, write: bool) -> bool {
        let Some(bytes) = count.checked_mul(SECTOR) else { return false };
        let disk_ok = sector.checked_add(count).is_some_and(|end| end <= SECTORS);
        let ram_ok = buffer.checked_add(bytes).is_some_and(|end| end <= self.ram.len());
        if !disk_ok || !ram_ok || count == 0 {
            return false;
        }
        let at = (sector * SECTOR) as usize;
        for i in 0..bytes {
            let guest = (self.ram.addr() + buffer + i) as *mut u8;
            // SAFETY: inside the RAM mapping (checked above); the guest shares it, so
            // every access is volatile.
            unsafe {
                if write {
                    self.disk[at + i as usize] = guest.read_volatile();
                } else {
                    guest.write_volatile(self.disk[at + i as usize]);
                }
            }
        }
        true
    }

    fn read_u32(&self, gpa: u64) -> u32 {
        // SAFETY: `ring` was checked to lie inside the mapping, and slots are inside it.
        unsafe { ((self.ram.addr() + gpa) as *const u32).read_volatile() }
    }

    fn read_u64(&self, gpa: u64) -> u64 {
        // SAFETY: as above.
        unsafe { ((self.ram.addr() + gpa) as *const u64).read_volatile() }
    }

    fn write_u32(&self, gpa: u64, value: u32) {
        // SAFETY: as above.
        unsafe { ((self.ram.addr() + gpa) as *mut u32).write_volatile(value) }
    }
}
