//! The VMM interface (syscall class 2, copra's numbers; docs/abi.md, docs/vmm.md).
//!
//! | wrapper | syscall | registers |
//! |---|---|---|
//! | [`vm_bitmap`] | CAPABILITIES (3, 0) index 1 | → the VMs that can be opened |
//! | [`Vm::open`] | VM_OPEN (2, 0) | VM index → VM handle (exclusive) |
//! | [`Vm::capability`] | VM_CAPABILITIES (2, 1) | VM handle, [`VmCap`] → value |
//! | [`Vm::vcpu`] | VCPU_OPEN (2, 2) | VM handle, vCPU index → VCPU handle (exclusive) |
//! | [`Vcpu::run`] | VCPU_RUN (2, 3) | VCPU handle, timeout ns → 0, the exit in the run page |
//! | [`Vm::set_msr_filter`] | VM_SET_MSR_FILTER (2, 4) | VM handle, [`MsrRange`] array, count |
//! | [`Vm::memory`] | VM_MEMORY (2, 5) | VM handle → guest-memory handle (MMAP it) |
//! | [`Vm::io_event`] | IO_EVENT_CREATE (2, 6) | VM handle, first port, ports → device event |
//! | [`Vm::mmio_event`] | MMIO_EVENT_CREATE (2, 7) | VM handle, address, bytes → device event |
//! | [`DeviceEvent::take`] | READ (1, 1) of a [`DeviceAccess`] | blocks until the guest makes one |
//! | [`DeviceEvent::answer`] | WRITE (1, 2) of a `DeviceAnswer` | completes it |
//!
//! [`Vcpu::map_run_page`] maps the VCPU's run page ([`RunPage`]), which the kernel and
//! this process share: the kernel writes the exit there, the VMM its answer, then calls
//! [`Vcpu::run`] again. Reads and writes of the page are volatile.

use core::ptr::{addr_of, addr_of_mut};

pub use crate::abi::{
    DeviceAccess, IoDirection, MsrFilterFlag, MsrRange, RunPage, VcpuExit, VcpuIo, VcpuMmio,
    VcpuMsr, VmCap,
};
use crate::fs;
use crate::abi::{Capability, MapFlag, PAGE_SIZE, REGS_DIRTY, RUN_PAGE_IO_DATA, RUN_PAGE_PAYLOAD, Sys};
use crate::error::Result;
use crate::handle::{AsHandle, Handle, HandleRef};
use crate::memory::Mapping;
use crate::syscall::call;

/// The guest VMs that can be opened: bit n set for VM n (CAPABILITIES index 1).
pub fn vm_bitmap() -> Result<u64> {
    call!(Sys::CAPABILITIES, Capability::VM_BITMAP as u64)
}

/// An open guest VM (exclusive system-wide: a second VM_OPEN answers EBUSY).
pub struct Vm(Handle);

impl Vm {
    /// VM_OPEN of VM `index`.
    pub fn open(index: u32) -> Result<Self> {
        let raw = call!(Sys::VM_OPEN, index)?;
        // SAFETY: a fresh handle nothing else owns.
        Ok(Self(unsafe { Handle::from_raw(raw as u32) }))
    }

    /// Takes ownership of a VM handle received in a message or from
    /// [`crate::process::initial_handles`].
    pub fn from_handle(handle: Handle) -> Self {
        Self(handle)
    }

    /// The handle, to move (SEND, EXEC_HANDLES): VMs are exclusive, never duplicated.
    pub fn into_handle(self) -> Handle {
        self.0
    }

    /// VM_CAPABILITIES of this VM.
    pub fn capability(&self, index: VmCap) -> Result<u64> {
        call!(Sys::VM_CAPABILITIES, self.0.raw(), index as u64)
    }

    /// VCPU_OPEN of vCPU `index`.
    pub fn vcpu(&self, index: u32) -> Result<Vcpu> {
        let raw = call!(Sys::VCPU_OPEN, self.0.raw(), index)?;
        // SAFETY: as above.
        Ok(Vcpu(unsafe { Handle::from_raw(raw as u32) }))
    }

    /// VM_SET_MSR_FILTER: the MSRs this VMM claims (replacing the last policy).
    pub fn set_msr_filter(&self, ranges: &[MsrRange]) -> Result<()> {
        call!(Sys::VM_SET_MSR_FILTER, self.0.raw(), ranges.as_ptr() as u64, ranges.len() as u64)
            .map(|_| ())
    }

    /// VM_MEMORY: a handle on the guest's RAM.
    pub fn memory(&self) -> Result<Handle> {
        let raw = call!(Sys::VM_MEMORY, self.0.raw())?;
        // SAFETY: as above.
        Ok(unsafe { Handle::from_raw(raw as u32) })
    }

    /// IO_EVENT_CREATE: ports [`first`, `first + count`) go to a device model.
    pub fn io_event(&self, first: u16, count: u32) -> Result<DeviceEvent> {
        let raw = call!(Sys::IO_EVENT_CREATE, self.0.raw(), first, count)?;
        // SAFETY: as above.
        Ok(DeviceEvent(unsafe { Handle::from_raw(raw as u32) }))
    }

    /// MMIO_EVENT_CREATE: guest-physical [`address`, `address + len`) (outside RAM) goes to
    /// a device model.
    pub fn mmio_event(&self, address: u64, len: u64) -> Result<DeviceEvent> {
        let raw = call!(Sys::MMIO_EVENT_CREATE, self.0.raw(), address, len)?;
        // SAFETY: as above.
        Ok(DeviceEvent(unsafe { Handle::from_raw(raw as u32) }))
    }

    /// IRQ_CREATE: an interrupt line into the x2APIC of vCPU `apic_id` at `vector`
    /// (16-255), edge- or level-triggered (resampled at the guest's EOI).
    pub fn irq(&self, apic_id: u32, vector: u8, level: bool) -> Result<Irq> {
        let raw = call!(Sys::IRQ_CREATE, self.0.raw(), apic_id, vector, u64::from(level))?;
        // SAFETY: as above.
        Ok(Irq(unsafe { Handle::from_raw(raw as u32) }))
    }

    /// The handle.
    pub fn handle(&self) -> &Handle {
        &self.0
    }
}

/// An IRQ object: a device model's interrupt line into one guest APIC.
pub struct Irq(Handle);

impl Irq {
    /// IRQ_SIGNAL: assert the line (the vector becomes pending on its APIC).
    pub fn signal(&self) -> Result<()> {
        call!(Sys::IRQ_SIGNAL, self.0.raw()).map(|_| ())
    }

    /// Assert the line the eventfd way: WRITE of a non-zero u64.
    pub fn write_signal(&self) -> Result<()> {
        fs::write(&self.0, &1u64.to_le_bytes()).map(|_| ())
    }

    /// A level IRQ's resamples: the guest's EOIs since the last call (blocks while none).
    pub fn resamples(&self) -> Result<u64> {
        let mut raw = [0u8; 8];
        fs::read(&self.0, &mut raw)?;
        Ok(u64::from_le_bytes(raw))
    }

    /// Adopt a raw IRQ handle (one received from the VMM).
    ///
    /// # Safety
    /// `raw` must be an IRQ handle this process owns and nothing else closes.
    pub unsafe fn from_raw(raw: u32) -> Self {
        // SAFETY: the caller's promise.
        Irq(unsafe { Handle::from_raw(raw) })
    }

    /// The handle.
    pub fn handle(&self) -> &Handle {
        &self.0
    }

    /// Adopt an IRQ handle (one moved in by EXEC_HANDLES or a channel).
    pub fn from_handle(handle: Handle) -> Self {
        Irq(handle)
    }

    /// Give up the wrapper: the handle, to move elsewhere.
    pub fn into_handle(self) -> Handle {
        self.0
    }
}

impl AsHandle for Irq {
    fn as_handle(&self) -> HandleRef<'_> {
        self.0.as_handle()
    }
}

/// A device model's event: the guest's accesses to a port or MMIO range.
pub struct DeviceEvent(Handle);

impl DeviceEvent {
    /// Take the next access (blocks until the guest makes one).
    pub fn take(&self) -> Result<DeviceAccess> {
        let mut raw = [0u8; 32];
        fs::read(&self.0, &mut raw)?;
        Ok(Self::decode(&raw))
    }

    /// DEVICE_REPLY: answer access `seq` (a read gets `data`) and take the next access,
    /// in one syscall (blocks until the guest makes one). `answer` None only takes.
    pub fn reply(&self, answer: Option<(u32, u64)>) -> Result<DeviceAccess> {
        let mut out = [0u8; 16];
        let mut raw = [0u8; 32];
        let at = match answer {
            Some((seq, data)) => {
                out[..4].copy_from_slice(&seq.to_le_bytes());
                out[8..].copy_from_slice(&data.to_le_bytes());
                out.as_ptr() as u64
            }
            None => 0,
        };
        call!(Sys::DEVICE_REPLY, self.0.raw(), at, raw.as_mut_ptr() as u64)?;
        Ok(Self::decode(&raw))
    }

    fn decode(raw: &[u8; 32]) -> DeviceAccess {
        let u64_at = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().unwrap_or([0; 8]));
        let u32_at = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().unwrap_or([0; 4]));
        DeviceAccess {
            address: u64_at(0),
            data: u64_at(8),
            size: u32_at(16),
            is_write: raw[20],
            _pad: [0; 3],
            seq: u32_at(24),
            vcpu: u32_at(28),
        }
    }

    /// Answer access `seq` (a read gets `data`).
    pub fn answer(&self, seq: u32, data: u64) -> Result<()> {
        let mut raw = [0u8; 16];
        raw[..4].copy_from_slice(&seq.to_le_bytes());
        raw[8..].copy_from_slice(&data.to_le_bytes());
        fs::write(&self.0, &raw).map(|_| ())
    }

    /// The handle.
    pub fn handle(&self) -> &Handle {
        &self.0
    }

    /// Adopt a device event handle (one moved in by EXEC_HANDLES or a channel).
    pub fn from_handle(handle: Handle) -> Self {
        DeviceEvent(handle)
    }

    /// Give up the wrapper: the handle, to move elsewhere.
    pub fn into_handle(self) -> Handle {
        self.0
    }
}

impl AsHandle for DeviceEvent {
    fn as_handle(&self) -> HandleRef<'_> {
        self.0.as_handle()
    }
}

/// An open guest vCPU (exclusive).
pub struct Vcpu(Handle);

/// No timeout for [`Vcpu::run`].
pub const FOREVER: u64 = u64::MAX;

impl Vcpu {
    /// Takes ownership of a VCPU handle received in a message or from
    /// [`crate::process::initial_handles`].
    pub fn from_handle(handle: Handle) -> Self {
        Self(handle)
    }

    /// The handle, to move (SEND, EXEC_HANDLES). A thread of the sender still inside
    /// VCPU_RUN on it leaves with EINTR; a run page mapped before stays mapped.
    pub fn into_handle(self) -> Handle {
        self.0
    }

    /// VCPU_RUN: run the guest until it needs this VMM (Ok: the exit is in the run
    /// page), or EINTR after `timeout_ns` (or a kick).
    pub fn run(&self, timeout_ns: u64) -> Result<()> {
        call!(Sys::VCPU_RUN, self.0.raw(), timeout_ns).map(|_| ())
    }

    /// MMAP of the run page.
    pub fn map_run_page(&self) -> Result<RunPageMap> {
        let map = Mapping::object(&self.0, PAGE_SIZE, MapFlag::READ | MapFlag::WRITE)?;
        Ok(RunPageMap { map })
    }

    /// The handle.
    pub fn handle(&self) -> &Handle {
        &self.0
    }
}

impl AsHandle for Vcpu {
    fn as_handle(&self) -> HandleRef<'_> {
        self.0.as_handle()
    }
}

/// A mapped run page.
pub struct RunPageMap {
    map: Mapping,
}

impl RunPageMap {
    fn page(&self) -> *mut RunPage {
        self.map.addr() as *mut RunPage
    }

    fn payload<T>(&self) -> *mut T {
        (self.map.addr() + RUN_PAGE_PAYLOAD) as *mut T
    }

    /// RunPage.version.
    pub fn version(&self) -> u32 {
        // SAFETY: the mapping is a live page; the kernel writes it between calls only.
        unsafe { addr_of!((*self.page()).version).read_volatile() }
    }

    /// The exit VCPU_RUN reported.
    pub fn exit_reason(&self) -> u32 {
        // SAFETY: as above.
        unsafe { addr_of!((*self.page()).exit_reason).read_volatile() }
    }

    /// The payload of an IO exit.
    pub fn io(&self) -> VcpuIo {
        // SAFETY: as above; VcpuIo is plain data.
        unsafe { self.payload::<VcpuIo>().read_volatile() }
    }

    /// The payload of an MMIO exit.
    pub fn mmio(&self) -> VcpuMmio {
        // SAFETY: as above.
        unsafe { self.payload::<VcpuMmio>().read_volatile() }
    }

    /// The payload of an MSR exit.
    pub fn msr(&self) -> VcpuMsr {
        // SAFETY: as above.
        unsafe { self.payload::<VcpuMsr>().read_volatile() }
    }

    /// Answer an MSR exit: `data` for a read, `error` injects #GP. Other values of the
    /// raw error byte go through [`RunPageMap::write_u8`] (the kernel refuses them).
    pub fn answer_msr(&self, data: u64, error: bool) {
        let msr = self.payload::<VcpuMsr>();
        // SAFETY: as above.
        unsafe {
            addr_of_mut!((*msr).data).write_volatile(data);
            addr_of_mut!((*msr).error).write_volatile(error as u8);
        }
    }

    /// Answer an MMIO read.
    pub fn answer_mmio(&self, data: u64) {
        let mmio = self.payload::<VcpuMmio>();
        // SAFETY: as above.
        unsafe { addr_of_mut!((*mmio).data).write_volatile(data) }
    }

    /// Byte `i` of the IO data.
    pub fn io_byte(&self, i: u64) -> u8 {
        // SAFETY: RUN_PAGE_IO_DATA + i lies in the page for i < RUN_PAGE_IO_DATA_SIZE.
        unsafe { ((self.map.addr() + RUN_PAGE_IO_DATA + i) as *const u8).read_volatile() }
    }

    /// The first `size` bytes of the IO data as a little-endian value.
    pub fn io_value(&self, size: u64) -> u64 {
        (0..size).fold(0, |v, i| v | (u64::from(self.io_byte(i)) << (8 * i)))
    }

    /// Answer an IN: `size` bytes of `value`.
    pub fn answer_in(&self, value: u64, size: u64) {
        for i in 0..size {
            self.write_u8(RUN_PAGE_IO_DATA + i, (value >> (8 * i)) as u8);
        }
    }

    /// Guest register `i` (abi::GUEST_REGISTERS order).
    pub fn reg(&self, i: usize) -> u64 {
        // SAFETY: as above; i < 18 is checked by the index.
        unsafe { addr_of!((*self.page()).regs[i]).read_volatile() }
    }

    /// Set guest register `i` and ask VCPU_RUN to load the registers.
    pub fn set_reg(&self, i: usize, value: u64) {
        // SAFETY: as above.
        unsafe {
            addr_of_mut!((*self.page()).regs[i]).write_volatile(value);
            addr_of_mut!((*self.page()).regs_dirty).write_volatile(REGS_DIRTY as u32);
        }
    }

    /// Any byte of the page (for tests that write garbage).
    pub fn write_u8(&self, offset: u64, value: u8) {
        assert!(offset < PAGE_SIZE);
        // SAFETY: inside the mapped page.
        unsafe { ((self.map.addr() + offset) as *mut u8).write_volatile(value) }
    }

    /// Any u32 of the page (4-byte aligned offset).
    pub fn write_u32(&self, offset: u64, value: u32) {
        assert!(offset % 4 == 0 && offset < PAGE_SIZE);
        // SAFETY: inside the mapped page, aligned.
        unsafe { ((self.map.addr() + offset) as *mut u32).write_volatile(value) }
    }

    /// The page's address.
    pub fn addr(&self) -> u64 {
        self.map.addr()
    }
}
