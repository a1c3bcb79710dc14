//! A 16550A UART, COM1 of a PC: the same model as copra's Python one
//! (src/copra/vmm/uart.py, compared with QEMU's hw/char/serial.c there), so a guest's
//! driver probes see the same registers under `copra run --guest` as under `copra guest`
//! and QEMU. Transmission is instant (LSR = THRE | TEMT); loopback feeds the receive
//! FIFO; MSR is DCD | DSR | CTS, or mirrors MCR in loopback; IIR reports the enabled
//! condition of highest priority; the divisor latch starts at 12. Its interrupt line
//! (`interrupt`: an enabled condition, gated by MCR.OUT2 as on a PC) drives an IRQ
//! object (com1.rs). Host input (`input`, the uart model's console input) is taken only
//! while `input_room` is non-zero: the receiver has room, MCR.RTS asks for data (RTS/CTS
//! flow control) and loopback is off (it disconnects the serial input, as on a 16550A),
//! so no byte is ever lost to an overrun. MSR.DCD (carrier detect) is set unless
//! `carrier` was cleared: the uart model clears it when its host input ended, so a
//! guest can tell that no more bytes will come. Every offset is masked to 0-7, every value to a byte.

const FIFO_SIZE: usize = 16;

pub struct Uart {
    rx: [u8; FIFO_SIZE],
    rx_len: usize,
    ier: u8,
    lcr: u8,
    mcr: u8,
    scr: u8,
    divisor: u16,
    fifo_enabled: bool,
    overrun: bool,
    thr_empty_pending: bool,
    /// MSR.DCD outside loopback.
    pub carrier: bool,
}

impl Uart {
    pub const fn new() -> Self {
        Self { rx: [0; FIFO_SIZE], rx_len: 0, ier: 0, lcr: 0, mcr: 0, scr: 0, divisor: 12,
               fifo_enabled: false, overrun: false, thr_empty_pending: false, carrier: true }
    }

    fn receive(&mut self, byte: u8) {
        let room = if self.fifo_enabled { FIFO_SIZE } else { 1 };
        if self.rx_len >= room {
            self.overrun = true;
        } else {
            self.rx[self.rx_len] = byte;
            self.rx_len += 1;
        }
    }

    fn pop(&mut self) -> u8 {
        if self.rx_len == 0 {
            return 0;
        }
        let byte = self.rx[0];
        self.rx.copy_within(1..self.rx_len, 0);
        self.rx_len -= 1;
        byte
    }

    fn iir_source(&self) -> u8 {
        if self.ier & 0x04 != 0 && self.overrun {
            0x06
        } else if self.ier & 0x01 != 0 && self.rx_len > 0 {
            0x04
        } else if self.ier & 0x02 != 0 && self.thr_empty_pending {
            0x02
        } else {
            0x01
        }
    }

    /// The interrupt line: an enabled condition is pending and MCR.OUT2 is set.
    pub fn interrupt(&self) -> bool {
        self.mcr & 0x08 != 0 && self.iir_source() != 0x01
    }

    /// A byte from the host for the receive side (lost when the FIFO is full: overrun;
    /// the uart model gives no more than `input_room`).
    #[allow(dead_code)]
    pub fn input(&mut self, byte: u8) {
        self.receive(byte);
    }

    /// How many host bytes the receiver takes now: 0 in loopback or while MCR.RTS is
    /// clear, else the free room of the FIFO (1 byte, RBR, with the FIFOs off).
    #[allow(dead_code)]
    pub fn input_room(&self) -> usize {
        if self.mcr & 0x10 != 0 || self.mcr & 0x02 == 0 {
            return 0;
        }
        let room = if self.fifo_enabled { FIFO_SIZE } else { 1 };
        room.saturating_sub(self.rx_len)
    }

    /// A read of register `offset`.
    pub fn read(&mut self, offset: u16) -> u8 {
        let dlab = self.lcr & 0x80 != 0;
        match offset & 7 {
            0 if dlab => self.divisor as u8,
            0 => self.pop(),
            1 if dlab => (self.divisor >> 8) as u8,
            1 => self.ier,
            2 => {
                let source = self.iir_source();
                if source == 0x02 {
                    self.thr_empty_pending = false;
                }
                source | if self.fifo_enabled { 0xc0 } else { 0 }
            }
            3 => self.lcr,
            4 => self.mcr,
            5 => {
                let lsr = 0x60 | u8::from(self.rx_len > 0) | if self.overrun { 0x02 } else { 0 };
                self.overrun = false;
                lsr
            }
            6 => {
                if self.mcr & 0x10 != 0 {
                    let m = self.mcr;
                    (if m & 1 != 0 { 0x20 } else { 0 }) | (if m & 2 != 0 { 0x10 } else { 0 })
                        | (if m & 4 != 0 { 0x40 } else { 0 }) | (if m & 8 != 0 { 0x80 } else { 0 })
                } else if self.carrier {
                    0xb0
                } else {
                    0x30
                }
            }
            _ => self.scr,
        }
    }

    /// A write of `value` to register `offset`; the byte transmitted, if any.
    pub fn write(&mut self, offset: u16, value: u8) -> Option<u8> {
        let dlab = self.lcr & 0x80 != 0;
        match offset & 7 {
            0 if dlab => self.divisor = (self.divisor & 0xff00) | u16::from(value),
            0 => {
                self.thr_empty_pending = true;
                if self.mcr & 0x10 != 0 {
                    self.receive(value);
                } else {
                    return Some(value);
                }
            }
            1 if dlab => self.divisor = (self.divisor & 0x00ff) | (u16::from(value) << 8),
            1 => {
                if value & 0x02 != 0 && self.ier & 0x02 == 0 {
                    self.thr_empty_pending = true;
                }
                self.ier = value & 0x0f;
            }
            2 => {
                let enable = value & 1 != 0;
                if enable != self.fifo_enabled || value & 0x02 != 0 {
                    self.rx_len = 0;
                }
                self.fifo_enabled = enable;
            }
            3 => self.lcr = value,
            4 => self.mcr = value & 0x1f,
            7 => self.scr = value,
            _ => {}
        }
        None
    }
}
