//! An MC146818A-style CMOS real-time clock, the PC's RTC at ports 0x70 (index) and
//! 0x71 (data): the register logic of the `rtc` device model (bin/rtc.rs), with no
//! syscalls, so host tests drive it (`cargo test -p vmm --lib`). Every call takes
//! `now`, the kernel's monotonic clock in nanoseconds (CLOCK); the RTC's time is
//! `offset_secs` seconds plus `(now + phase)` nanoseconds since 1970-01-01 00:00:00
//! UTC (integer arithmetic of at most 64 bits: the copra programs link no 128-bit
//! division).
//!
//! | index | register | |
//! |---|---|---|
//! | 0x00, 0x02, 0x04 | seconds, minutes, hours | BCD or binary (B.DM), 12 h with bit 7 = PM or 24 h (B.24H) |
//! | 0x01, 0x03, 0x05 | their alarms | stored; a value with bits 7-6 set matches any |
//! | 0x06, 0x07, 0x08, 0x09 | day of week (1 = Sunday), day, month, year in the century | the day of week is computed; writes to it are ignored while the clock runs |
//! | 0x0A | A: UIP (7, read-only), DV (6-4), RS (3-0) | UIP is set in the 244 us before each update |
//! | 0x0B | B: SET, PIE, AIE, UIE, SQWE, DM, 24H, DSE | SET holds the clock (and clears UIE) |
//! | 0x0C | C: IRQF, PF, AF, UF (read-only) | reading returns and clears them: the IRQ line drops |
//! | 0x0D | D: VRT (read-only) | always 0x80 |
//! | 0x32 | century | part of the clock, as on PCs (QEMU's RTC_CENTURY) |
//! | others (0x0E-0x7F) | CMOS RAM | stored as written |
//!
//! The clock runs while SET is clear and DV is 0, 1 or 2 (QEMU's rule); 3-7 hold the
//! divider in reset, which stops the time, the updates and the periodic flag. When the
//! clock stops its time registers are frozen in the format of that moment and read and
//! written as plain bytes; when it starts again the time is taken from them (the
//! sub-second phase is kept). A time register written while the clock runs sets the
//! time at once (as QEMU does). Decoding is total: a BCD byte reads as
//! `high * 10 + low` whatever its nibbles, the month is clamped to 1-12, overflowing
//! fields carry (as `mktime`), and the result is clamped to the years 0-9999.
//!
//! Flags: PF at each period of RS (1, 2: 256, 128 Hz; 3-15: 32768 >> (RS - 1) Hz),
//! counted on the monotonic clock, set whether or not PIE is; UF at each update (once
//! a second); AF at an update whose seconds, minutes and hours match the alarms. IRQF
//! and the interrupt line are `(C & B & 0x70) != 0`. Flags are computed lazily at each
//! access and at the model's timed wake-ups (`next_deadline`); faster periodic rates
//! than the wake-ups' resolution set PF once per wake-up (coalesced, as a level line
//! that stays high until register C is read would). Not emulated: the square-wave
//! output (SQWE), daylight saving (DSE), the divider's 500 ms delay after a reset, the
//! bank-1 ports 0x72-0x73; the NMI-mask bit of the index is stored and has no effect.

const NS: u64 = 1_000_000_000;
const DAY: i64 = 86_400;
/// The divider's input: 32.768 kHz.
const TICKS_PER_SECOND: u64 = 32_768;
/// UIP is set this long before each update (the MC146818's 244 us).
const UIP_NS: u64 = 244_000;
/// 0000-01-01 and 9999-12-31 23:59:59 in seconds since the epoch.
const MIN_SECS: i64 = -62_167_219_200;
const MAX_SECS: i64 = 253_402_300_799;

pub const REG_A: usize = 0x0a;
pub const REG_B: usize = 0x0b;
pub const REG_C: usize = 0x0c;
pub const REG_D: usize = 0x0d;
pub const CENTURY: usize = 0x32;

pub const A_UIP: u8 = 0x80;
pub const B_SET: u8 = 0x80;
pub const B_PIE: u8 = 0x40;
pub const B_AIE: u8 = 0x20;
pub const B_UIE: u8 = 0x10;
pub const B_DM_BINARY: u8 = 0x04;
pub const B_24H: u8 = 0x02;
pub const C_IRQF: u8 = 0x80;
pub const C_PF: u8 = 0x40;
pub const C_AF: u8 = 0x20;
pub const C_UF: u8 = 0x10;
pub const D_VRT: u8 = 0x80;

/// A moment broken down as the registers hold it (24 h, binary).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DateTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 1 = Sunday .. 7 = Saturday, the RTC's convention.
    pub weekday: u32,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date and time of `secs` seconds since 1970-01-01 00:00:00.
pub fn civil_from_secs(secs: i64) -> DateTime {
    let days = secs.div_euclid(DAY);
    let rest = secs.rem_euclid(DAY) as u32;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    DateTime { year, month, day, hour: rest / 3600, minute: rest / 60 % 60, second: rest % 60,
               weekday: (days + 4).rem_euclid(7) as u32 + 1 }
}

pub struct Rtc {
    /// RTC time = `offset_secs` seconds + `now + phase` ns since the epoch.
    offset_secs: i64,
    /// The sub-second phase, 0 to 10^9 - 1: updates come when `now + phase` is a
    /// whole second.
    phase: u64,
    index: u8,
    nmi_masked: bool,
    /// Registers A (bits 6-0) and B, the alarms, the CMOS RAM, and the time
    /// registers while the clock is stopped.
    regs: [u8; 128],
    /// C's PF, AF and UF.
    flags: u8,
    /// The RTC second up to which updates were counted.
    synced_sec: i64,
    /// The periodic count (on the monotonic clock) up to which PF was counted.
    synced_period: u64,
}

impl Rtc {
    /// An RTC showing `secs` seconds and `subsec_ns` since the epoch at monotonic time
    /// `now`: 24 h, BCD, 1024 Hz selected (A = 0x26, B = 0x02, the PC BIOS's set-up),
    /// no interrupts.
    pub fn new(secs: i64, subsec_ns: u64, now: u64) -> Self {
        let mut regs = [0u8; 128];
        regs[REG_A] = 0x26;
        regs[REG_B] = B_24H;
        let phase = (subsec_ns % NS + NS - now % NS) % NS;
        let offset_secs = secs.clamp(MIN_SECS, MAX_SECS) - ((now + phase) / NS) as i64;
        let mut rtc = Self { offset_secs, phase, index: 0, nmi_masked: false, regs,
                             flags: 0, synced_sec: 0, synced_period: 0 };
        rtc.synced_sec = rtc.secs(now);
        rtc.synced_period = rtc.period_count(now);
        rtc
    }

    /// The time the RTC shows at `now`, broken down (24 h, binary).
    pub fn now(&self, now: u64) -> DateTime {
        if self.running() {
            civil_from_secs(self.secs(now))
        } else {
            civil_from_secs(self.frozen_secs())
        }
    }

    pub fn nmi_masked(&self) -> bool {
        self.nmi_masked
    }

    /// A byte read from port `0x70 + offset` (offset 0 or 1).
    pub fn read_port(&mut self, offset: u16, now: u64) -> u8 {
        if offset & 1 == 0 {
            0xff // the index register is write-only; QEMU reads 0xff
        } else {
            self.read(usize::from(self.index), now)
        }
    }

    /// A byte written to port `0x70 + offset`.
    pub fn write_port(&mut self, offset: u16, value: u8, now: u64) {
        if offset & 1 == 0 {
            self.index = value & 0x7f;
            self.nmi_masked = value & 0x80 != 0;
        } else {
            self.write(usize::from(self.index), value, now);
        }
    }

    /// Register `index` (0-0x7F).
    pub fn read(&mut self, index: usize, now: u64) -> u8 {
        let index = index & 0x7f;
        match index {
            REG_A => {
                let uip = self.running() && (now + self.phase) % NS >= NS - UIP_NS;
                self.regs[REG_A] & 0x7f | if uip { A_UIP } else { 0 }
            }
            REG_C => {
                self.advance(now);
                let value = self.flags | if self.irq_line() { C_IRQF } else { 0 };
                self.flags = 0;
                value
            }
            REG_D => D_VRT,
            _ if is_time(index) && self.running() => self.encode_now(index, now),
            _ => self.regs[index],
        }
    }

    /// Write `value` to register `index` (0-0x7F).
    pub fn write(&mut self, index: usize, value: u8, now: u64) {
        let index = index & 0x7f;
        match index {
            REG_A => self.set_control(value & 0x7f, self.regs[REG_B], now),
            REG_B => {
                let value = if value & B_SET != 0 { value & !B_UIE } else { value };
                self.set_control(self.regs[REG_A], value, now);
            }
            REG_C | REG_D => {} // read-only
            6 if self.running() => {} // the day of week follows the date
            _ if is_time(index) && self.running() => {
                self.advance(now);
                self.freeze(now);
                self.regs[index] = value;
                self.thaw(now);
            }
            _ => self.regs[index] = value,
        }
    }

    /// The interrupt line: a flag whose enable bit in B is set.
    pub fn irq_line(&self) -> bool {
        self.flags & self.regs[REG_B] & (C_PF | C_AF | C_UF) != 0
    }

    /// Bring the flags up to `now`.
    pub fn advance(&mut self, now: u64) {
        if self.divider_on() && self.rate() != 0 {
            let count = self.period_count(now);
            if count != self.synced_period {
                self.flags |= C_PF;
                self.synced_period = count;
            }
        }
        if self.running() {
            let current = self.secs(now);
            if current > self.synced_sec {
                self.flags |= C_UF;
                let first = (self.synced_sec + 1).max(current - (DAY - 1));
                if (first..=current).any(|s| self.alarm_matches(s)) {
                    self.flags |= C_AF;
                }
            }
            self.synced_sec = current;
        }
    }

    /// When (monotonic ns) the interrupt line can next rise by itself; None if it is
    /// already active or no enabled interrupt can come.
    pub fn next_deadline(&self, now: u64) -> Option<u64> {
        if self.irq_line() {
            return None;
        }
        let b = self.regs[REG_B];
        let mut next: Option<u64> = None;
        if b & B_PIE != 0 && self.divider_on() && self.rate() != 0 {
            let ticks = (self.period_count(now) + 1).saturating_mul(self.period_ticks());
            let at = (ticks / TICKS_PER_SECOND).saturating_mul(NS)
                .saturating_add((ticks % TICKS_PER_SECOND * NS).div_ceil(TICKS_PER_SECOND));
            next = Some(at);
        }
        if b & (B_UIE | B_AIE) != 0 && self.running() {
            let at = ((now + self.phase) / NS + 1).saturating_mul(NS) - self.phase;
            next = Some(next.map_or(at, |n| n.min(at)));
        }
        next
    }

    /// The periodic interrupt's rate in millihertz (0: none selected).
    pub fn periodic_millihertz(&self) -> u64 {
        if self.rate() == 0 { 0 } else { TICKS_PER_SECOND * 1000 / self.period_ticks() }
    }

    fn rate(&self) -> u8 {
        self.regs[REG_A] & 0x0f
    }

    /// RS's period in 32.768 kHz ticks (RS != 0).
    fn period_ticks(&self) -> u64 {
        let rs = u32::from(self.rate());
        if rs <= 2 { 1 << (rs + 6) } else { 1 << (rs - 1) }
    }

    fn period_count(&self, now: u64) -> u64 {
        if self.rate() == 0 {
            return 0;
        }
        let ticks = now / NS * TICKS_PER_SECOND + now % NS * TICKS_PER_SECOND / NS;
        ticks / self.period_ticks()
    }

    fn divider_on(&self) -> bool {
        (self.regs[REG_A] >> 4) & 7 <= 2
    }

    fn running(&self) -> bool {
        self.regs[REG_B] & B_SET == 0 && self.divider_on()
    }

    fn secs(&self, now: u64) -> i64 {
        self.offset_secs + ((now + self.phase) / NS) as i64
    }

    /// New A and B: stopping the clock freezes its registers (in the old format),
    /// starting it takes the time from them (in the new one).
    fn set_control(&mut self, a: u8, b: u8, now: u64) {
        self.advance(now);
        let was = self.running();
        if was {
            self.freeze(now); // harmless if it keeps running: its reads are computed
        }
        let rate_changed = a & 0x7f != self.regs[REG_A];
        self.regs[REG_A] = a & 0x7f;
        self.regs[REG_B] = b;
        if !was && self.running() {
            self.thaw(now);
        }
        if rate_changed {
            self.synced_period = self.period_count(now);
        }
    }

    /// Store the running time in the time registers.
    fn freeze(&mut self, now: u64) {
        for index in TIME_REGS {
            self.regs[index] = self.encode_now(index, now);
        }
    }

    /// Set the time from the time registers, keeping the sub-second phase.
    fn thaw(&mut self, now: u64) {
        let target = self.frozen_secs();
        self.offset_secs += target - self.secs(now);
        self.synced_sec = self.secs(now);
    }

    fn binary(&self) -> bool {
        self.regs[REG_B] & B_DM_BINARY != 0
    }

    fn encode(&self, value: u32) -> u8 {
        let value = value % 100;
        if self.binary() { value as u8 } else { ((value / 10) << 4 | value % 10) as u8 }
    }

    fn decode(&self, byte: u8) -> u32 {
        if self.binary() { u32::from(byte) } else { u32::from(byte >> 4) * 10 + u32::from(byte & 0xf) }
    }

    fn encode_hour(&self, hour: u32) -> u8 {
        if self.regs[REG_B] & B_24H != 0 {
            self.encode(hour)
        } else {
            let h12 = if hour % 12 == 0 { 12 } else { hour % 12 };
            self.encode(h12) | if hour >= 12 { 0x80 } else { 0 }
        }
    }

    fn decode_hour(&self, byte: u8) -> u32 {
        if self.regs[REG_B] & B_24H != 0 {
            self.decode(byte)
        } else {
            let h = self.decode(byte & 0x7f) % 12;
            h + if byte & 0x80 != 0 { 12 } else { 0 }
        }
    }

    fn encode_now(&self, index: usize, now: u64) -> u8 {
        let t = civil_from_secs(self.secs(now));
        match index {
            0 => self.encode(t.second),
            2 => self.encode(t.minute),
            4 => self.encode_hour(t.hour),
            6 => self.encode(t.weekday),
            7 => self.encode(t.day),
            8 => self.encode(t.month),
            9 => self.encode(t.year.rem_euclid(100) as u32),
            _ => self.encode(t.year.div_euclid(100).rem_euclid(100) as u32),
        }
    }

    /// The time the (frozen) time registers hold, normalised (module doc).
    fn frozen_secs(&self) -> i64 {
        let year = i64::from(self.decode(self.regs[CENTURY])) * 100 + i64::from(self.decode(self.regs[9]));
        let month = self.decode(self.regs[8]).clamp(1, 12);
        let day = i64::from(self.decode(self.regs[7]));
        let days = days_from_civil(year, month, 1) + day - 1;
        let secs = days * DAY + i64::from(self.decode_hour(self.regs[4])) * 3600
            + i64::from(self.decode(self.regs[2])) * 60 + i64::from(self.decode(self.regs[0]));
        secs.clamp(MIN_SECS, MAX_SECS)
    }

    fn alarm_matches(&self, secs: i64) -> bool {
        let t = civil_from_secs(secs);
        let field = |alarm: u8, value: u8| alarm & 0xc0 == 0xc0 || alarm == value;
        field(self.regs[1], self.encode(t.second)) && field(self.regs[3], self.encode(t.minute))
            && field(self.regs[5], self.encode_hour(t.hour))
    }
}

const TIME_REGS: [usize; 8] = [0, 2, 4, 6, 7, 8, 9, CENTURY];

fn is_time(index: usize) -> bool {
    TIME_REGS.contains(&index)
}

#[cfg(test)]
mod tests;
