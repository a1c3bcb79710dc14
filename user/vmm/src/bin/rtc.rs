//! rtc: the CMOS real-time clock of one guest (ports 0x70-0x71), a process of its own.
//! The vmm service starts it with EXEC_HANDLES moving in exactly: 1 the port range's
//! device event (0x70, 2 ports), 2 a level IRQ object (APIC 0, vector 0x28 = ISA IRQ 8
//! at the usual offset 0x20), 3 a channel endpoint bringing its configuration: `name`
//! (the guest's), `clock UNIX_NS MONO_NS` (the wall clock the boot published in
//! /etc/clock: UTC nanoseconds since the epoch at the kernel's monotonic CLOCK
//! MONO_NS; without MONO_NS the time holds at this process's start; without the line
//! the RTC starts at 2000-01-01 00:00:00) and `crash N`.
//!
//! The registers are rtc.rs's MC146818A. Its time runs on CLOCK from that anchor.
//! Periodic, update-ended and alarm interrupts need no guest access: the model waits
//! (WAIT_MANY) on its event and its IRQ's resample with a timeout, the next moment
//! the interrupt line can rise (`Rtc::next_deadline`), so it wakes only when a flag
//! an enabled interrupt follows is due. The line is level: signalled once when it
//! rises, looked at again at each resample (the guest's EOI), and dropped by reading
//! register C, as the uart model does with its line. It ends (0) when its VM is gone,
//! saying how many accesses it served and interrupts it raised, and the time from the
//! first interrupt to the last.

#![no_std]
#![no_main]

extern crate alloc;

#[path = "../model.rs"]
mod model;

use libcopra::abi::{Errno, Signal};
use libcopra::vmm::{DeviceEvent, Irq};
use libcopra::wait::{Instant, item, wait_many};
use libcopra::{declare_main, println};
use vmm::rtc::{Rtc, days_from_civil};

declare_main!(main);

const RTC_PORT: u16 = 0x70;
const NS: i64 = 1_000_000_000;

struct Model {
    rtc: Rtc,
    event: DeviceEvent,
    irq: Irq,
    /// Signalled and not resampled since (level line).
    asserted: bool,
    taken: u64,
    raised: u64,
    /// When the first and the last interrupt were raised (monotonic ns).
    first_raised: u64,
    last_raised: u64,
}

fn main() -> u32 {
    let Some(start) = model::start("rtc", 2) else { return 2 };
    let mut handles = start.handles.into_iter();
    let (Some(event), Some(irq)) = (handles.next(), handles.next()) else { return 2 };
    let name = model::text(&start.config, "name").unwrap_or("vm");
    let now = Instant::now().as_nanos();
    let wall = match model::text(&start.config, "clock").map(parse_clock) {
        Some(Some((unix, mono))) => {
            unix.saturating_add(now.saturating_sub(mono.unwrap_or(now)).min(i64::MAX as u64) as i64)
        }
        _ => {
            println!("{name}: no wall clock from the vmm: the RTC starts at 2000-01-01 00:00:00");
            days_from_civil(2000, 1, 1) * 86_400 * NS
        }
    };
    let rtc = Rtc::new(wall.div_euclid(NS), wall.rem_euclid(NS) as u64, now);
    let t = rtc.now(now);
    println!("{name}: {:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC", t.year, t.month, t.day, t.hour,
             t.minute, t.second);
    let mut model = Model { rtc, event: DeviceEvent::from_handle(event), irq: Irq::from_handle(irq),
                            asserted: false, taken: 0, raised: 0, first_raised: 0,
                            last_raised: 0 };
    let status = serve(&mut model, start.crash_at);
    let span = (model.last_raised - model.first_raised) / 1_000_000;
    println!("{name}: {} accesses served, {} interrupts raised ({span} ms from the first to the last)",
             model.taken, model.raised);
    status
}

/// `UNIX_NS [MONO_NS]`.
fn parse_clock(text: &str) -> Option<(i64, Option<u64>)> {
    let mut words = text.split_whitespace();
    let unix = words.next()?.parse::<i64>().ok()?;
    match words.next() {
        Some(mono) => Some((unix, Some(mono.parse().ok()?))),
        None => Some((unix, None)),
    }
}

fn serve(model: &mut Model, crash_at: u64) -> u32 {
    loop {
        let now = Instant::now().as_nanos();
        let timeout = model.rtc.next_deadline(now).map(|at| at.saturating_sub(now));
        let mut items = [item(&model.event, Signal::READABLE), item(&model.irq, Signal::READABLE)];
        if let Err(e) = wait_many(&mut items, timeout) {
            println!("rtc: WAIT_MANY: {e:?}");
            return 1;
        }
        if items[1].ready != 0 {
            let _ = model.irq.resamples();
            model.asserted = false;
        }
        if items[0].ready != 0 {
            let access = match model.event.take() {
                Ok(access) => access,
                Err(e) if e.is(Errno::ENOTFOUND) => return 0, // the VM is gone
                Err(e) => {
                    println!("rtc: READ: {e:?}");
                    return 1;
                }
            };
            model.taken += 1;
            if model.taken == crash_at {
                model::crash();
            }
            let now = Instant::now().as_nanos();
            let offset = (access.address as u16).wrapping_sub(RTC_PORT);
            let write = access.is_write != 0;
            let mut value = 0u64;
            for i in 0..u64::from(access.size.min(4)) {
                let port = offset.wrapping_add(i as u16);
                let byte = if port > 1 {
                    0xff // outside the range: not the RTC's
                } else if write {
                    model.rtc.write_port(port, (access.data >> (8 * i)) as u8, now);
                    0
                } else {
                    model.rtc.read_port(port, now)
                };
                value |= u64::from(byte) << (8 * i);
            }
            model.update_irq(now);
            if let Err(e) = model.event.answer(access.seq, value) {
                println!("rtc: WRITE: {e:?}");
                return 1;
            }
        } else {
            model.update_irq(Instant::now().as_nanos());
        }
    }
}

impl Model {
    /// Signal the IRQ if the line is active and not asserted since the last resample.
    fn update_irq(&mut self, now: u64) {
        self.rtc.advance(now);
        if !self.asserted && self.rtc.irq_line() && self.irq.signal().is_ok() {
            self.asserted = true;
            if self.raised == 0 {
                self.first_raised = now;
            }
            self.last_raised = now;
            self.raised += 1;
        }
    }
}
