//! The RTC's register logic on the host: `cargo test -p vmm --lib` (RUSTFLAGS="").
//! Times are driven by the `now` argument; nothing sleeps.

use super::*;

const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;
/// The monotonic clock at the tests' start (any value: only differences count).
const T0: u64 = 1_000 * SEC;

/// 2026-11-30 13:20:05 UTC (a Monday), seconds since the epoch.
const WALL: i64 = (20_787 * 86_400) + 13 * 3600 + 20 * 60 + 5;

fn regs(rtc: &mut Rtc, now: u64) -> [u8; 8] {
    [0, 2, 4, 6, 7, 8, 9, CENTURY].map(|i| rtc.read(i, now))
}

#[test]
fn civil_conversion_round_trips_known_dates_and_weekdays() {
    assert_eq!(days_from_civil(2026, 11, 30), 20_787);
    let epoch = civil_from_secs(0);
    assert_eq!((epoch.year, epoch.month, epoch.day, epoch.weekday), (1970, 1, 1, 5)); // Thursday
    let leap = civil_from_secs(days_from_civil(2000, 2, 29) * 86_400 + 86_399);
    assert_eq!((leap.year, leap.month, leap.day, leap.hour, leap.minute, leap.second),
               (2000, 2, 29, 23, 59, 59));
    assert_eq!(civil_from_secs(days_from_civil(2026, 11, 30) * 86_400).weekday, 2); // Monday
    assert_eq!(civil_from_secs(MAX_SECS).year, 9999);
    assert_eq!(civil_from_secs(MIN_SECS).year, 0);
    for days in [-800_000i64, -1, 0, 59, 10_957, 20_787, 2_932_896] {
        let t = civil_from_secs(days * 86_400);
        assert_eq!(days_from_civil(t.year, t.month, t.day), days);
    }
}

#[test]
fn reset_state_reads_bcd_24h_time_and_the_pc_bios_control_registers() {
    let mut rtc = Rtc::new(WALL, 0, T0);
    assert_eq!(regs(&mut rtc, T0), [0x05, 0x20, 0x13, 0x02, 0x30, 0x11, 0x26, 0x20]);
    assert_eq!(rtc.read(REG_A, T0), 0x26);
    assert_eq!(rtc.read(REG_B, T0), 0x02);
    assert_eq!(rtc.read(REG_C, T0), 0);
    assert_eq!(rtc.read(REG_D, T0), 0x80);
    // 61 s later: the minute carried
    assert_eq!(regs(&mut rtc, T0 + 61 * SEC)[..3], [0x06, 0x21, 0x13]);
}

#[test]
fn binary_and_12_hour_formats_encode_hours_with_the_pm_bit() {
    let mut rtc = Rtc::new(WALL, 0, T0);
    rtc.write(REG_B, B_DM_BINARY | B_24H, T0);
    assert_eq!(regs(&mut rtc, T0), [5, 20, 13, 2, 30, 11, 26, 20]);
    rtc.write(REG_B, 0, T0); // BCD, 12 h
    assert_eq!(rtc.read(4, T0), 0x81); // 1 PM
    rtc.write(4, 0x12, T0); // 12 AM: midnight
    assert_eq!(rtc.now(T0).hour, 0);
    rtc.write(4, 0x92, T0); // 12 PM: noon
    assert_eq!(rtc.now(T0).hour, 12);
    rtc.write(REG_B, B_DM_BINARY, T0); // binary, 12 h
    assert_eq!(rtc.read(4, T0), 0x80 | 12);
}

#[test]
fn index_port_keeps_the_nmi_mask_bit_apart_and_reads_all_ones() {
    let mut rtc = Rtc::new(WALL, 0, T0);
    rtc.write_port(0, 0x80 | 0x0d, T0);
    assert!(rtc.nmi_masked());
    assert_eq!(rtc.read_port(1, T0), 0x80); // register D
    assert_eq!(rtc.read_port(0, T0), 0xff);
    rtc.write_port(0, 0x40, T0);
    assert!(!rtc.nmi_masked());
    rtc.write_port(1, 0x5a, T0);
    assert_eq!(rtc.read(0x40, T0), 0x5a); // CMOS RAM
}

#[test]
fn uip_is_set_only_in_the_244_us_before_an_update_of_a_running_clock() {
    let mut rtc = Rtc::new(WALL, 0, T0);
    assert_eq!(rtc.read(REG_A, T0 + 500 * MS) & A_UIP, 0);
    assert_eq!(rtc.read(REG_A, T0 + SEC - 100_000) & A_UIP, A_UIP);
    assert_eq!(rtc.read(REG_A, T0 + SEC - 300_000) & A_UIP, 0);
    rtc.write(REG_B, B_SET | B_24H, T0);
    assert_eq!(rtc.read(REG_A, T0 + SEC - 100_000) & A_UIP, 0);
}

#[test]
fn set_holds_the_clock_and_its_registers_set_the_time_when_cleared() {
    let mut rtc = Rtc::new(WALL, 0, T0);
    rtc.write(REG_B, B_SET | B_UIE | B_24H, T0);
    assert_eq!(rtc.read(REG_B, T0), B_SET | B_24H); // SET clears UIE
    assert_eq!(rtc.read(0, T0 + 10 * SEC), 0x05); // held
    for (index, value) in [(0, 0x58), (2, 0x59), (4, 0x23), (7, 0x31), (8, 0x12), (9, 0x99),
                           (CENTURY, 0x20)] {
        rtc.write(index, value, T0 + 10 * SEC);
    }
    rtc.write(REG_B, B_24H, T0 + 10 * SEC);
    let t = rtc.now(T0 + 10 * SEC);
    assert_eq!((t.year, t.month, t.day, t.hour, t.minute, t.second), (2099, 12, 31, 23, 59, 58));
    assert_eq!(regs(&mut rtc, T0 + 12 * SEC), [0x00, 0x00, 0x00, 0x06, 0x01, 0x01, 0x00, 0x21]);
}

#[test]
fn a_time_register_written_while_running_sets_the_time_at_once() {
    let mut rtc = Rtc::new(WALL, 0, T0);
    rtc.write(2, 0x45, T0);
    assert_eq!(regs(&mut rtc, T0 + SEC)[..3], [0x06, 0x45, 0x13]);
    rtc.write(6, 0x07, T0); // the day of week follows the date
    assert_eq!(rtc.read(6, T0), 0x02);
    assert_eq!(rtc.read(REG_C, T0 + SEC) & C_UF, C_UF); // the clock still updates
}

#[test]
fn periodic_flag_follows_rs_and_raises_the_line_only_with_pie() {
    let mut rtc = Rtc::new(WALL, 0, 0);
    rtc.write(REG_A, 0x2d, 0); // 8 Hz
    assert_eq!(rtc.periodic_millihertz(), 8_000);
    assert_eq!(rtc.next_deadline(0), None); // PIE clear: nothing to wake for
    rtc.advance(130 * MS);
    assert!(!rtc.irq_line()); // PF set, but not enabled
    assert_eq!(rtc.read(REG_C, 130 * MS), C_PF);
    rtc.write(REG_B, B_PIE | B_24H, 130 * MS);
    assert_eq!(rtc.next_deadline(130 * MS), Some(250 * MS));
    rtc.advance(200 * MS);
    assert!(!rtc.irq_line());
    rtc.advance(250 * MS);
    assert!(rtc.irq_line());
    assert_eq!(rtc.next_deadline(250 * MS), None); // held until register C is read
    assert_eq!(rtc.read(REG_C, 260 * MS), C_IRQF | C_PF);
    assert!(!rtc.irq_line());
    assert_eq!(rtc.read(REG_C, 260 * MS), 0); // read to clear
    for (rs, millihertz) in [(1, 256_000), (2, 128_000), (3, 8_192_000), (6, 1_024_000), (15, 2_000)] {
        rtc.write(REG_A, 0x20 | rs, 0);
        assert_eq!(rtc.periodic_millihertz(), millihertz);
    }
}

#[test]
fn update_ended_flag_comes_once_a_second_and_the_alarm_at_its_match() {
    let mut rtc = Rtc::new(WALL, 0, T0);
    rtc.write(REG_A, 0x20, T0); // no periodic rate
    rtc.write(REG_B, B_UIE | B_AIE | B_24H, T0);
    rtc.write(1, 0x07, T0);
    rtc.write(3, 0xff, T0); // any minute
    rtc.write(5, 0xc0, T0); // any hour
    assert_eq!(rtc.next_deadline(T0), Some(T0 + SEC));
    assert_eq!(rtc.read(REG_C, T0 + SEC), C_IRQF | C_UF); // 13:20:06
    assert_eq!(rtc.read(REG_C, T0 + 2 * SEC), C_IRQF | C_UF | C_AF); // 13:20:07
    assert_eq!(rtc.read(REG_C, T0 + 2 * SEC + 500 * MS), 0);
    // an hour without reading C: one UF, and AF for the matches on the way
    assert_eq!(rtc.read(REG_C, T0 + 3600 * SEC), C_IRQF | C_UF | C_AF);
}

#[test]
fn divider_reset_stops_time_and_flags_until_it_runs_again() {
    let mut rtc = Rtc::new(WALL, 0, 0);
    rtc.write(REG_B, B_PIE | B_24H, 0);
    rtc.write(REG_A, 0x7d, 0); // DV 7: reset
    assert_eq!(rtc.next_deadline(0), None);
    rtc.advance(3 * SEC);
    assert_eq!(rtc.read(REG_C, 3 * SEC), 0);
    assert_eq!(rtc.read(0, 3 * SEC), 0x05);
    rtc.write(REG_A, 0x2d, 3 * SEC);
    assert_eq!(rtc.read(0, 4 * SEC), 0x06); // one second later than where it stopped
}

#[test]
fn garbage_in_every_register_keeps_the_model_defined() {
    let mut seed = 0x1234_5678u32;
    let mut next = || {
        seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        (seed >> 16) as u8
    };
    for round in 0..50u64 {
        let now = T0 + round * 7 * MS;
        let mut rtc = Rtc::new(WALL, 0, now);
        let mut written = [0u8; 128];
        for index in 0..128usize {
            let value = next();
            rtc.write_port(0, index as u8 | (next() & 0x80), now);
            rtc.write_port(1, value, now);
            written[index] = value;
        }
        for index in 0..128usize {
            let value = rtc.read(index, now);
            match index {
                REG_A => assert_eq!(value & 0x7f, written[index] & 0x7f),
                REG_B => {
                    let mask = if written[index] & B_SET != 0 { !B_UIE } else { 0xff };
                    assert_eq!(value, written[index] & mask);
                }
                REG_C => assert_eq!(value & 0x0f, 0),
                REG_D => assert_eq!(value, 0x80),
                0x0e..=0x7f if index != CENTURY => assert_eq!(value, written[index]),
                _ => {}
            }
        }
        let year = rtc.now(now).year;
        assert!((0..=9999).contains(&year), "{year}");
        let _ = rtc.next_deadline(now);
        // a sane set-up afterwards gives a running clock again
        rtc.write(REG_A, 0x26, now);
        rtc.write(REG_B, B_24H, now);
        let before = rtc.now(now);
        assert_eq!(rtc.now(now + SEC), civil_from_secs(
            days_from_civil(before.year, before.month, before.day) * 86_400
                + i64::from(before.hour * 3600 + before.minute * 60 + before.second) + 1));
    }
}

#[test]
fn sub_second_phase_of_the_start_decides_when_updates_come() {
    let mut rtc = Rtc::new(WALL, 700 * MS, T0 + 123); // 13:20:05.7 at T0 + 123 ns
    rtc.write(REG_B, B_UIE | B_24H, T0 + 123);
    assert_eq!(rtc.next_deadline(T0 + 123), Some(T0 + 123 + 300 * MS));
    assert_eq!(rtc.read(0, T0 + 123 + 299 * MS), 0x05);
    assert_eq!(rtc.read(0, T0 + 123 + 300 * MS), 0x06);
    assert_eq!(rtc.read(REG_A, T0 + 123 + 299_800_000) & A_UIP, A_UIP);
    let far = Rtc::new(MAX_SECS + 5, 0, 0); // clamped to the last second it can show
    assert_eq!(far.now(0).year, 9999);
}
