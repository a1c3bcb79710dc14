//! conformance: the copra syscall ABI, case by case, every documented error included.
//!
//! Written against the ABI alone (syscall numbers, registers, `Errno` values, flag
//! bits, the `DirEnt` layout, the address-space constants), never against how the
//! kernel is built, so the same program can judge another implementation of the ABI
//! (gVisor's syscall tests run on Linux and gVisor alike). The semantics checked are
//! those of docs/abi.md and docs/ramfs.md.
//!
//! Prints one line per case, `PASS <case>` or `FAIL <case>: <what happened>`, then
//! `SUMMARY <passed>/<total>`; exits 0 iff every case passed. Cases run in the order of
//! the `cases!` table at the bottom; each uses names of its own.
//!
//! What it needs in the RAM fs (the e2e driver provides it):
//! - `/bin/conformance-child`: the helper process. EXEC passes no arguments, so a case
//!   writes the helper's action to `/tmp/conf/child.action` first (see that program);
//! - `/bin/ud`: any program that dies of #UD (the fault-ud image).
//!
//! It works in the scratch directory `/tmp/conf`, made with MKDIR (and `/tmp` if
//! missing); the last case removes the tree again, through READDIR, UNLINK and RMDIR.
//!
//! Memory discipline: the suite never loads from or stores to an address a syscall
//! has not first shown to be mapped (probes copy through WRITE and READ), so a wrong
//! MMAP answer fails a case instead of killing the suite. Faults are provoked only in
//! the helper process, whose status WAIT reports.

#![no_std]
#![no_main]

extern crate alloc;

use core::arch::asm;
use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};

use libcopra::abi::{
    Capability, DOORBELL_PORT, DirEnt, EXIT_STATUS_SHIFT, Errno, FileType, KILLED_BY_EXCEPTION,
    LOG_FILE_PATH, MAX_HANDLES, MMAP_BASE, NAME_MAX, PAGE_SIZE, PATH_MAX, PlatformType, Sys,
    USER_END, USER_MAP_END, USER_START, sysno,
};
use libcopra::declare_main;
use libcopra::error::check;
use libcopra::fs::{self, FileFlag, FileMode, SeekMode};
use libcopra::handle::{AsHandle, Handle, LOG};
use libcopra::memory::MapFlag;
use libcopra::prelude::*;
use libcopra::process;
use libcopra::rt::image_start;
use libcopra::syscall::{self, Entry, syscall0_via, syscall5_via};

declare_main!(main);

// --- verdicts -------------------------------------------------------------------------

/// A verdict's message is cut to this many bytes (at a character boundary).
const MSG_CAP: usize = 176;

/// Why a case failed.
type Msg = String;

fn msg(args: fmt::Arguments<'_>) -> Msg {
    let mut m = alloc::fmt::format(args);
    if m.len() > MSG_CAP {
        let cut = (0..=MSG_CAP)
            .rev()
            .find(|&i| m.is_char_boundary(i))
            .unwrap_or(0);
        m.truncate(cut);
    }
    m
}

type Outcome = Result<(), Msg>;

macro_rules! fail {
    ($($arg:tt)*) => {
        return Err(msg(format_args!($($arg)*)))
    };
}

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !($cond) {
            fail!($($arg)*);
        }
    };
}

/// A raw result, shown as `ok <value>` or the error's name.
struct Rax(u64);

impl fmt::Display for Rax {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match check(self.0) {
            Ok(v) => write!(f, "ok {v:#x}"),
            Err(e) => write!(f, "{e}"),
        }
    }
}

fn errno(e: Errno) -> u64 {
    e.raw() as u64
}

fn expect_errno(what: &str, rax: u64, want: Errno) -> Outcome {
    ensure!(
        rax == errno(want),
        "{what}: got {}, want {}",
        Rax(rax),
        want.name()
    );
    Ok(())
}

fn expect_ok(what: &str, rax: u64) -> Result<u64, Msg> {
    check(rax).map_err(|e| msg(format_args!("{what}: {e}")))
}

fn expect_value(what: &str, rax: u64, want: u64) -> Outcome {
    ensure!(rax == want, "{what}: got {}, want {want:#x}", Rax(rax));
    Ok(())
}

fn ok<T>(what: &str, result: libcopra::Result<T>) -> Result<T, Msg> {
    result.map_err(|e| msg(format_args!("{what}: {e}")))
}

fn expect_err<T>(what: &str, result: libcopra::Result<T>, want: Errno) -> Outcome {
    match result {
        Err(e) if e.is(want) => Ok(()),
        Err(e) => fail!("{what}: got {e}, want {}", want.name()),
        Ok(_) => fail!("{what}: succeeded, want {}", want.name()),
    }
}

// --- raw syscalls -------------------------------------------------------------------------

/// A syscall through the process-wide entry with up to five arguments (missing ones 0).
///
/// Callers pass only pointers to their own buffers or addresses the kernel must refuse.
fn sc(nr: Sys, args: &[u64]) -> u64 {
    let a = |i: usize| args.get(i).copied().unwrap_or(0);
    // SAFETY: see above; every buffer named is owned by the caller for the call.
    unsafe { syscall5_via(syscall::entry(), nr as u64, a(0), a(1), a(2), a(3), a(4)) }
}

fn ptr(bytes: &[u8]) -> u64 {
    bytes.as_ptr() as u64
}

/// A buffer the kernel may write to.
fn mptr(bytes: &mut [u8]) -> u64 {
    bytes.as_mut_ptr() as u64
}

fn h(handle: &impl AsHandle) -> u64 {
    u64::from(handle.as_handle().raw())
}

// --- the scratch tree -------------------------------------------------------------------

macro_rules! scratch {
    ($name:literal) => {
        concat!("/tmp/conf/", $name)
    };
}

/// A scratch path as NUL-terminated bytes, for raw calls.
macro_rules! cpath {
    ($name:literal) => {
        concat!("/tmp/conf/", $name, "\0").as_bytes()
    };
}

const SCRATCH: &str = "/tmp/conf";
const CHILD: &str = "/bin/conformance-child";
const UD: &str = "/bin/ud";
const ACTION: &str = scratch!("child.action");
const PROBE: &str = scratch!("probe");

const NO_HANDLE: u64 = u32::MAX as u64;
const UNMAPPED: u64 = 0xdead_0000;
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;
const NON_CANONICAL: u64 = 0x0000_8000_0000_0000;
const PAGE: u64 = PAGE_SIZE;
/// The end of the area MMAP may use: the stack sits above it.
const MAP_AREA_END: u64 = USER_MAP_END;
/// Where the FIXED cases place mappings: far from the image, the stack and MMAP_BASE.
/// Each case takes its own 16 MiB slot.
const FIXED_AREA: u64 = 0x0000_2000_0000_0000;

fn slot(n: u64) -> u64 {
    FIXED_AREA + n * 0x100_0000
}

static MADE_TMP: AtomicBool = AtomicBool::new(false);

fn setup() -> Outcome {
    match fs::mkdir("/tmp") {
        Ok(()) => MADE_TMP.store(true, Ordering::Relaxed),
        Err(e) if e.is(Errno::EEXIST) => {}
        Err(e) => fail!("MKDIR /tmp: {e}"),
    }
    if fs::opendir(SCRATCH).is_ok() {
        remove_tree(&mut String::from(SCRATCH))?; // left over from an earlier run
    }
    ok("MKDIR /tmp/conf", fs::mkdir(SCRATCH))
}

/// Removes `path` and everything below it, one READDIR entry at a time (READDIR's
/// snapshot makes removing while listing safe).
fn remove_tree(path: &mut String) -> Outcome {
    let dir = ok(path, fs::opendir(path))?;
    let mut entry = [DirEnt::zeroed()];
    while ok("READDIR", fs::readdir(&dir, &mut entry))? == 1 {
        let base = path.len();
        let Some(name) = entry[0].name_str() else {
            fail!("READDIR of {path}: a name that is not UTF-8");
        };
        path.push('/');
        path.push_str(name);
        match entry[0].kind() {
            Some(FileType::DIRECTORY) => remove_tree(path)?,
            _ => ok(path, fs::unlink(path))?,
        }
        path.truncate(base);
    }
    drop(dir);
    ok(path, fs::rmdir(path))
}

// --- file helpers -----------------------------------------------------------------------

const RW: FileMode = FileMode::from_bits_retain(FileMode::READ.bits() | FileMode::WRITE.bits());

/// A new empty file (emptied if it exists), open read+write.
fn create(path: &str) -> Result<Handle, Msg> {
    ok(
        path,
        fs::open(path, RW.union(FileMode::TRUNC), FileFlag::CREATE),
    )
}

/// A new file holding `data`, open read+write at position 0.
fn make_file(path: &str, data: &[u8]) -> Result<Handle, Msg> {
    let file = create(path)?;
    write_exact(&file, data)?;
    seek_to(&file, 0)?;
    Ok(file)
}

fn open_as(path: &str, mode: FileMode) -> Result<Handle, Msg> {
    ok(path, fs::open(path, mode, FileFlag::EMPTY))
}

fn write_exact(file: &impl AsHandle, data: &[u8]) -> Outcome {
    let n = ok("WRITE", fs::write(file, data))?;
    ensure!(n == data.len(), "WRITE wrote {n} of {} bytes", data.len());
    Ok(())
}

fn seek_to(file: &impl AsHandle, position: u64) -> Outcome {
    let got = ok("SEEK", fs::seek(file, position as i64, SeekMode::ABSOLUTE))?;
    ensure!(got == position, "SEEK ABSOLUTE {position}: at {got}");
    Ok(())
}

fn position(file: &impl AsHandle) -> Result<u64, Msg> {
    ok("SEEK RELATIVE 0", fs::seek(file, 0, SeekMode::RELATIVE))
}

/// The file's size; the handle's position is kept.
fn size(file: &impl AsHandle) -> Result<u64, Msg> {
    let at = position(file)?;
    let size = ok("SEEK END 0", fs::seek(file, 0, SeekMode::END))?;
    seek_to(file, at)?;
    Ok(size)
}

fn expect_position(file: &impl AsHandle, want: u64) -> Outcome {
    let at = position(file)?;
    ensure!(at == want, "position {at}, want {want}");
    Ok(())
}

/// The whole file at `path` must be `want`.
fn expect_contents(path: &str, want: &[u8]) -> Outcome {
    let file = open_as(path, FileMode::READ)?;
    let mut chunk = [0u8; 512];
    let mut at = 0;
    loop {
        let n = ok("READ", fs::read(&file, &mut chunk))?;
        if n == 0 {
            break;
        }
        ensure!(
            at + n <= want.len(),
            "{path}: more than {} bytes",
            want.len()
        );
        if let Some(i) = (0..n).find(|&i| chunk[i] != want[at + i]) {
            fail!(
                "{path}: byte {} is {:#x}, want {:#x}",
                at + i,
                chunk[i],
                want[at + i]
            );
        }
        at += n;
    }
    ensure!(at == want.len(), "{path}: {at} bytes, want {}", want.len());
    Ok(())
}

fn read_exact(file: &impl AsHandle, buf: &mut [u8]) -> Outcome {
    let n = ok("READ", fs::read(file, buf))?;
    ensure!(n == buf.len(), "READ returned {n} of {} bytes", buf.len());
    Ok(())
}

// --- memory helpers ---------------------------------------------------------------------

fn pages(len: u64) -> u64 {
    len.div_ceil(PAGE) * PAGE
}

/// Whether the kernel can copy from `[addr, addr + len)`: a WRITE from there to a file.
fn readable(addr: u64, len: u64) -> Result<bool, Msg> {
    let probe = create(PROBE)?;
    let rax = sc(Sys::WRITE, &[h(&probe), addr, len]);
    if rax == len {
        return Ok(true);
    }
    ensure!(
        rax == errno(Errno::EFAULT),
        "probe WRITE from {addr:#x}: {}",
        Rax(rax)
    );
    Ok(false)
}

/// Whether the kernel can copy to `[addr, addr + len)` (false if it cannot even read
/// it). The bytes are copied out and back, so they do not change.
fn writable(addr: u64, len: u64) -> Result<bool, Msg> {
    if !readable(addr, len)? {
        return Ok(false);
    }
    let probe = open_as(PROBE, RW)?;
    let rax = sc(Sys::READ, &[h(&probe), addr, len]);
    if rax == len {
        return Ok(true);
    }
    ensure!(
        rax == errno(Errno::EFAULT),
        "probe READ into {addr:#x}: {}",
        Rax(rax)
    );
    Ok(false)
}

/// Every page of `[addr, addr + len)` readable (the first 16 and the last for long ones).
fn all_readable(addr: u64, len: u64) -> Result<bool, Msg> {
    let count = len / PAGE;
    for i in 0..count {
        if (i < 16 || i == count - 1) && !readable(addr + i * PAGE, PAGE)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A mapping made by a case; MUNMAP when dropped.
struct Mapping {
    addr: u64,
    len: u64,
}

impl Mapping {
    fn at(&self, offset: u64) -> u8 {
        // SAFETY: `mmap` checked that the kernel maps every page of the mapping.
        unsafe { ((self.addr + offset) as *const u8).read_volatile() }
    }

    fn set(&self, offset: u64, value: u8) {
        // SAFETY: only called on mappings a case made writable and probed as such.
        unsafe { ((self.addr + offset) as *mut u8).write_volatile(value) }
    }

    /// Offset of the first byte in `[from, to)` that is not `value`.
    fn find_not(&self, from: u64, to: u64, value: u8) -> Option<u64> {
        (from..to).find(|&i| self.at(i) != value)
    }

    /// MUNMAP now; the raw result.
    fn unmap(self) -> u64 {
        let rax = sc(Sys::MUNMAP, &[self.addr, self.len]);
        core::mem::forget(self);
        rax
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        let _ = sc(Sys::MUNMAP, &[self.addr, self.len]);
    }
}

/// MMAP, with the result checked for plausibility and every page probed readable
/// before anybody touches it.
fn mmap(handle: u64, hint: u64, offset: u64, len: u64, flags: MapFlag) -> Result<Mapping, Msg> {
    let rax = sc(Sys::MMAP, &[handle, hint, offset, len, flags.bits()]);
    let addr = expect_ok("MMAP", rax)?;
    let len = pages(len);
    let fits = addr.checked_add(len).is_some_and(|end| end <= MAP_AREA_END);
    ensure!(
        addr % PAGE == 0 && addr >= USER_START && fits,
        "MMAP returned {addr:#x} for {len:#x} bytes"
    );
    let mapping = Mapping { addr, len };
    ensure!(
        all_readable(addr, len)?,
        "MMAP at {addr:#x}: not all readable"
    );
    Ok(mapping)
}

fn anon(len: u64, extra: MapFlag) -> Result<Mapping, Msg> {
    mmap(
        NO_HANDLE,
        0,
        0,
        len,
        MapFlag::READ | MapFlag::ANONYMOUS | extra,
    )
}

fn anon_rw(len: u64) -> Result<Mapping, Msg> {
    let m = anon(len, MapFlag::WRITE)?;
    ensure!(
        writable(m.addr, PAGE)?,
        "anonymous READ|WRITE mapping is not writable"
    );
    Ok(m)
}

fn fixed(addr: u64, len: u64, extra: MapFlag) -> Result<Mapping, Msg> {
    let flags = MapFlag::READ | MapFlag::ANONYMOUS | MapFlag::FIXED | extra;
    let m = mmap(NO_HANDLE, addr, 0, len, flags)?;
    ensure!(
        m.addr == addr,
        "FIXED MMAP at {addr:#x} returned {:#x}",
        m.addr
    );
    Ok(m)
}

fn mmap_errno(args: [u64; 5], want: Errno) -> Outcome {
    let rax = sc(Sys::MMAP, &args);
    if check(rax).is_ok() {
        let _ = sc(Sys::MUNMAP, &[rax, pages(args[3].max(1))]);
    }
    expect_errno("MMAP", rax, want)
}

const ANON_R: u64 = MapFlag::READ.bits() | MapFlag::ANONYMOUS.bits();

// --- children ---------------------------------------------------------------------------

fn exited(code: u64) -> u64 {
    code << EXIT_STATUS_SHIFT
}

fn killed(vector: u64) -> u64 {
    (vector << 8) | KILLED_BY_EXCEPTION
}

fn set_action(action: &str) -> Outcome {
    let file = create(ACTION)?;
    write_exact(&file, action.as_bytes())
}

/// EXECs the helper with `action` and returns WAIT's raw status.
fn run_child(action: &str) -> Result<u64, Msg> {
    set_action(action)?;
    let task = ok("EXEC", process::exec(CHILD))?;
    expect_ok("WAIT", sc(Sys::WAIT, &[task]))
}

fn expect_child(action: &str, want: u64) -> Outcome {
    let status = run_child(action)?;
    ensure!(
        status == want,
        "{action}: status {status:#x} ({}), want {want:#x} ({})",
        process::ExitStatus::from_raw(status),
        process::ExitStatus::from_raw(want)
    );
    Ok(())
}

// === EXIT, EXEC, WAIT =====================================================================

fn exit_code_reaches_wait_shifted_by_16() -> Outcome {
    expect_child("exit 42", exited(42))
}

fn exit_keeps_only_the_low_16_bits_of_the_code() -> Outcome {
    expect_child("exit 0x12345", exited(0x2345))
}

fn exec_returns_a_task_id_of_at_least_2() -> Outcome {
    set_action("exit 0")?;
    let task = ok("EXEC", process::exec(CHILD))?;
    let status = expect_ok("WAIT", sc(Sys::WAIT, &[task]))?;
    ensure!(task >= 2, "task id {task}");
    ensure!(status == exited(0), "status {status:#x}");
    Ok(())
}

fn exec_gives_each_child_its_own_task_id() -> Outcome {
    set_action("exit 0")?;
    let a = ok("EXEC", process::exec(CHILD))?;
    let b = ok("EXEC", process::exec(CHILD));
    let wa = sc(Sys::WAIT, &[a]);
    let b = b?;
    let wb = sc(Sys::WAIT, &[b]);
    ensure!(a != b, "both children are task {a}");
    expect_value("WAIT first", wa, exited(0))?;
    expect_value("WAIT second", wb, exited(0))
}

fn exec_of_missing_file_returns_enotfound() -> Outcome {
    expect_err(
        "EXEC",
        process::exec(scratch!("no-such-program")),
        Errno::ENOTFOUND,
    )
}

fn exec_of_non_elf_file_returns_enoexec() -> Outcome {
    make_file(scratch!("script"), b"#!/bin/sh\necho hello\n")?;
    expect_err("EXEC", process::exec(scratch!("script")), Errno::ENOEXEC)
}

fn exec_of_empty_file_returns_enoexec() -> Outcome {
    create(scratch!("empty-program"))?;
    expect_err(
        "EXEC",
        process::exec(scratch!("empty-program")),
        Errno::ENOEXEC,
    )
}

fn exec_of_truncated_elf_returns_enoexec() -> Outcome {
    let mut head = [0u8; 200];
    read_exact(&open_as(CHILD, FileMode::READ)?, &mut head)?;
    ensure!(head.starts_with(b"\x7fELF"), "{CHILD} is not an ELF file");
    make_file(scratch!("truncated-elf"), &head)?;
    expect_err(
        "EXEC",
        process::exec(scratch!("truncated-elf")),
        Errno::ENOEXEC,
    )
}

fn exec_of_directory_returns_eisdir() -> Outcome {
    expect_err("EXEC", process::exec(SCRATCH), Errno::EISDIR)
}

fn exec_of_path_through_a_file_returns_enotdir() -> Outcome {
    make_file(scratch!("exec-file"), b"x")?;
    expect_err(
        "EXEC",
        process::exec(scratch!("exec-file/prog")),
        Errno::ENOTDIR,
    )
}

fn exec_with_empty_root_returns_einval() -> Outcome {
    let path = b"/bin/conformance-child\0";
    expect_errno(
        "EXEC",
        sc(Sys::EXEC, &[ptr(path), ptr(b"\0"), 0]),
        Errno::EINVAL,
    )
}

fn exec_with_nonzero_flags_returns_einval() -> Outcome {
    let path = b"/bin/conformance-child\0";
    for flags in [1, 0x8000_0000_0000_0000] {
        let rax = sc(Sys::EXEC, &[ptr(path), ptr(b"/\0"), flags]);
        if check(rax).is_ok() {
            let _ = sc(Sys::WAIT, &[rax]);
        }
        expect_errno("EXEC", rax, Errno::EINVAL)?;
    }
    Ok(())
}

fn exec_with_missing_root_returns_enotfound() -> Outcome {
    expect_err(
        "EXEC",
        process::exec_in(CHILD, scratch!("no-such-root")),
        Errno::ENOTFOUND,
    )
}

fn exec_with_a_file_as_root_returns_enotdir() -> Outcome {
    make_file(scratch!("root-file"), b"x")?;
    expect_err(
        "EXEC",
        process::exec_in(CHILD, scratch!("root-file")),
        Errno::ENOTDIR,
    )
}

fn exec_with_unmapped_path_returns_efault() -> Outcome {
    expect_errno(
        "EXEC",
        sc(Sys::EXEC, &[UNMAPPED, ptr(b"/\0"), 0]),
        Errno::EFAULT,
    )?;
    let path = b"/bin/conformance-child\0";
    expect_errno(
        "EXEC root",
        sc(Sys::EXEC, &[ptr(path), KERNEL_HALF, 0]),
        Errno::EFAULT,
    )
}

fn exec_root_is_the_childs_root() -> Outcome {
    for dir in ["jail", "jail/tmp", "jail/tmp/conf"] {
        let path = format!("{SCRATCH}/{dir}");
        ok(&path, fs::mkdir(&path))?;
    }
    make_file(scratch!("jail/tmp/conf/child.action"), b"exit 7")?;
    set_action("exit 9")?;
    let task = ok("EXEC", process::exec_in(CHILD, scratch!("jail")))?;
    let status = expect_ok("WAIT", sc(Sys::WAIT, &[task]))?;
    ensure!(
        status == exited(7),
        "status {status:#x}: the child did not read its action inside its root"
    );
    Ok(())
}

fn exec_child_starts_with_only_the_log_handle() -> Outcome {
    expect_child("first-handle", exited(0))
}

fn wait_for_task_1_returns_enotfound() -> Outcome {
    expect_errno("WAIT 1", sc(Sys::WAIT, &[1]), Errno::ENOTFOUND)
}

fn wait_for_unknown_task_returns_enotfound() -> Outcome {
    expect_errno("WAIT", sc(Sys::WAIT, &[0xFFFF_FFF0]), Errno::ENOTFOUND)
}

fn wait_for_reaped_child_returns_enotfound() -> Outcome {
    set_action("exit 0")?;
    let task = ok("EXEC", process::exec(CHILD))?;
    expect_value("first WAIT", sc(Sys::WAIT, &[task]), exited(0))?;
    expect_errno("second WAIT", sc(Sys::WAIT, &[task]), Errno::ENOTFOUND)
}

fn wait_reports_invalid_opcode_as_killed_by_vector_6() -> Outcome {
    let task = ok("EXEC /bin/ud", process::exec(UD))?;
    expect_value("WAIT", sc(Sys::WAIT, &[task]), killed(6))
}

fn wait_reports_page_fault_as_killed_by_vector_14() -> Outcome {
    expect_child("touch-wild", killed(14))
}

fn exec_and_wait_work_via_int80() -> Outcome {
    set_action("exit 5")?;
    syscall::set_entry(Entry::INT80);
    let task = process::exec(CHILD);
    let status = task.map(|t| sc(Sys::WAIT, &[t]));
    syscall::set_entry(Entry::DOORBELL);
    expect_value("WAIT", ok("EXEC", status)?, exited(5))
}

// === CLOSE and handles ====================================================================

fn close_of_open_handle_returns_0() -> Outcome {
    let file = make_file(scratch!("close"), b"x")?;
    expect_value("CLOSE", sc(Sys::CLOSE, &[u64::from(file.into_raw())]), 0)
}

fn close_twice_returns_enotfound() -> Outcome {
    let file = make_file(scratch!("close-twice"), b"x")?;
    let id = u64::from(file.into_raw());
    expect_value("first CLOSE", sc(Sys::CLOSE, &[id]), 0)?;
    expect_errno("second CLOSE", sc(Sys::CLOSE, &[id]), Errno::ENOTFOUND)
}

fn close_of_never_opened_handle_returns_enotfound() -> Outcome {
    expect_errno("CLOSE 1000", sc(Sys::CLOSE, &[1000]), Errno::ENOTFOUND)?;
    expect_errno(
        "CLOSE u32::MAX",
        sc(Sys::CLOSE, &[NO_HANDLE]),
        Errno::ENOTFOUND,
    )
}

fn closed_handle_is_unusable() -> Outcome {
    let file = make_file(scratch!("closed"), b"abc")?;
    let id = u64::from(file.into_raw());
    expect_value("CLOSE", sc(Sys::CLOSE, &[id]), 0)?;
    let mut buf = [0u8; 4];
    expect_errno(
        "READ",
        sc(Sys::READ, &[id, mptr(&mut buf), 4]),
        Errno::ENOTFOUND,
    )?;
    expect_errno("SEEK", sc(Sys::SEEK, &[id, 0, 0]), Errno::ENOTFOUND)
}

fn log_handle_0_is_usable_until_closed() -> Outcome {
    expect_child("close-log", exited(0))
}

fn handles_are_allocated_lowest_free_first() -> Outcome {
    let a = make_file(scratch!("lowest-a"), b"a")?;
    let b = make_file(scratch!("lowest-b"), b"b")?;
    let (ida, idb) = (a.raw(), b.raw());
    ensure!(ida < idb, "second OPEN got {idb}, first {ida}");
    drop(a);
    let c = open_as(scratch!("lowest-b"), FileMode::READ)?;
    ensure!(c.raw() == ida, "OPEN after CLOSE of {ida} got {}", c.raw());
    Ok(())
}

fn handle_argument_ignores_the_upper_32_bits() -> Outcome {
    let file = make_file(scratch!("upper-bits"), b"xyz")?;
    let mut buf = [0u8; 3];
    let id = h(&file) | 0xABCD_0000_0000_0000;
    expect_value("READ", sc(Sys::READ, &[id, mptr(&mut buf), 3]), 3)?;
    ensure!(&buf == b"xyz", "read {buf:?}");
    Ok(())
}

fn open_beyond_the_handle_limit_returns_emfile() -> Outcome {
    let _file = make_file(scratch!("limit"), b"x")?;
    let path = cpath!("limit");
    let mut ids = [0u32; MAX_HANDLES as usize];
    let mut count = 0;
    let mut verdict: Outcome = Ok(());
    loop {
        let rax = sc(Sys::OPEN, &[ptr(path), FileMode::READ.bits(), 0]);
        match check(rax) {
            Ok(id) if count < ids.len() => {
                ids[count] = id as u32;
                count += 1;
            }
            Ok(_) => {
                verdict = Err(msg(format_args!("more than {MAX_HANDLES} OPENs succeeded")));
                break;
            }
            Err(e) if e.is(Errno::EMFILE) => break,
            Err(e) => {
                verdict = Err(msg(format_args!("OPEN {} failed with {e}", count + 1)));
                break;
            }
        }
    }
    let highest = ids[..count].iter().copied().max().unwrap_or(0);
    if verdict.is_ok() && u64::from(highest) != MAX_HANDLES - 1 {
        verdict = Err(msg(format_args!(
            "EMFILE after {count} OPENs, highest id {highest}, want {}",
            MAX_HANDLES - 1
        )));
    }
    // A slot freed at the limit is the next one handed out.
    if verdict.is_ok() && count > 0 {
        let victim = ids[count / 2];
        let closed = sc(Sys::CLOSE, &[u64::from(victim)]);
        let again = sc(Sys::OPEN, &[ptr(path), FileMode::READ.bits(), 0]);
        if check(again).is_ok() {
            ids[count / 2] = again as u32;
        }
        if closed != 0 || again != u64::from(victim) {
            verdict = Err(msg(format_args!(
                "CLOSE {victim}: {}, then OPEN: {}",
                Rax(closed),
                Rax(again)
            )));
        }
    }
    for &id in &ids[..count] {
        let rax = sc(Sys::CLOSE, &[u64::from(id)]);
        if rax != 0 && verdict.is_ok() {
            verdict = Err(msg(format_args!("CLOSE {id}: {}", Rax(rax))));
        }
    }
    verdict
}

// === OPEN =================================================================================

fn open_of_missing_file_returns_enotfound() -> Outcome {
    expect_err(
        "OPEN",
        fs::open(scratch!("missing"), FileMode::READ, FileFlag::EMPTY),
        Errno::ENOTFOUND,
    )
}

fn open_create_makes_an_empty_file() -> Outcome {
    let file = ok("OPEN", fs::open(scratch!("new"), RW, FileFlag::CREATE))?;
    ensure!(size(&file)? == 0, "new file is not empty");
    expect_contents(scratch!("new"), b"")
}

fn open_create_of_existing_file_opens_it_unchanged() -> Outcome {
    make_file(scratch!("existing"), b"keep me")?;
    let file = ok("OPEN", fs::open(scratch!("existing"), RW, FileFlag::CREATE))?;
    expect_position(&file, 0)?;
    expect_contents(scratch!("existing"), b"keep me")
}

fn open_create_of_new_file_is_read_write_whatever_the_mode() -> Outcome {
    let file = ok(
        "OPEN",
        fs::open(scratch!("created-rw"), FileMode::EMPTY, FileFlag::CREATE),
    )?;
    write_exact(&file, b"hello")?;
    seek_to(&file, 0)?;
    let mut buf = [0u8; 5];
    read_exact(&file, &mut buf)?;
    ensure!(&buf == b"hello", "read back {buf:?}");
    Ok(())
}

fn open_create_of_existing_file_keeps_the_requested_access() -> Outcome {
    make_file(scratch!("existing-ro"), b"data")?;
    let file = ok(
        "OPEN",
        fs::open(scratch!("existing-ro"), FileMode::READ, FileFlag::CREATE),
    )?;
    expect_err("WRITE", fs::write(&file, b"x"), Errno::ERDONLY)
}

fn open_with_mode_0_can_neither_read_nor_write() -> Outcome {
    make_file(scratch!("mode0"), b"data")?;
    let file = open_as(scratch!("mode0"), FileMode::EMPTY)?;
    let mut buf = [0u8; 4];
    expect_err("READ", fs::read(&file, &mut buf), Errno::EWRONLY)?;
    expect_err("WRITE", fs::write(&file, b"x"), Errno::ERDONLY)
}

fn open_read_only_then_write_returns_erdonly() -> Outcome {
    make_file(scratch!("ro"), b"data")?;
    let file = open_as(scratch!("ro"), FileMode::READ)?;
    expect_err("WRITE", fs::write(&file, b"x"), Errno::ERDONLY)?;
    expect_contents(scratch!("ro"), b"data")
}

fn open_write_only_then_read_returns_ewronly() -> Outcome {
    make_file(scratch!("wo"), b"data")?;
    let file = open_as(scratch!("wo"), FileMode::WRITE)?;
    let mut buf = [0u8; 4];
    expect_err("READ", fs::read(&file, &mut buf), Errno::EWRONLY)?;
    write_exact(&file, b"DA")?;
    expect_contents(scratch!("wo"), b"DAta")
}

fn open_append_starts_at_the_end_of_file() -> Outcome {
    make_file(scratch!("append"), b"0123")?;
    let file = open_as(scratch!("append"), FileMode::WRITE | FileMode::APPEND)?;
    expect_position(&file, 4)?;
    write_exact(&file, b"45")?;
    expect_contents(scratch!("append"), b"012345")
}

fn open_append_moves_to_the_end_only_once() -> Outcome {
    make_file(scratch!("append-once"), b"0123")?;
    let file = open_as(scratch!("append-once"), FileMode::WRITE | FileMode::APPEND)?;
    seek_to(&file, 0)?;
    write_exact(&file, b"ab")?;
    expect_contents(scratch!("append-once"), b"ab23")
}

fn open_trunc_with_write_empties_the_file() -> Outcome {
    make_file(scratch!("trunc"), b"old contents")?;
    let file = open_as(scratch!("trunc"), FileMode::WRITE | FileMode::TRUNC)?;
    ensure!(size(&file)? == 0, "not emptied");
    expect_contents(scratch!("trunc"), b"")
}

fn open_trunc_without_write_returns_erdonly() -> Outcome {
    make_file(scratch!("trunc-ro"), b"old contents")?;
    expect_err(
        "OPEN",
        fs::open(
            scratch!("trunc-ro"),
            FileMode::READ | FileMode::TRUNC,
            FileFlag::EMPTY,
        ),
        Errno::ERDONLY,
    )?;
    expect_contents(scratch!("trunc-ro"), b"old contents")
}

/// One OPEN of an existing 3-byte file with `mode` and `flags`, checked against the
/// documented rules.
fn check_open_mode(path: &str, mode: u64, flags: u64) -> Outcome {
    {
        let reset = open_as(path, RW)?;
        ok("TRUNCATE", fs::truncate(&reset, 0))?;
        write_exact(&reset, b"abc")?;
    }
    let (read, write) = (mode & 1 != 0, mode & 2 != 0);
    let (append, trunc) = (mode & 4 != 0, mode & 8 != 0);
    let cpath = cpath!("modes");
    let rax = sc(Sys::OPEN, &[ptr(cpath), mode, flags]);
    if trunc && !write {
        return expect_errno("OPEN", rax, Errno::ERDONLY);
    }
    let id = expect_ok("OPEN", rax)?;
    // SAFETY: the kernel just made this id for us.
    let file = unsafe { Handle::from_raw(id as u32) };
    let size_now = if trunc { 0 } else { 3 };
    ensure!(
        size(&file)? == size_now,
        "size {}, want {size_now}",
        size(&file)?
    );
    let at = if append { size_now } else { 0 };
    expect_position(&file, at)?;
    let mut byte = [0u8; 1];
    let got = sc(Sys::READ, &[h(&file), mptr(&mut byte), 1]);
    if read {
        expect_value("READ", got, u64::from(at < size_now))?;
    } else {
        expect_errno("READ", got, Errno::EWRONLY)?;
    }
    let got = sc(Sys::WRITE, &[h(&file), ptr(b""), 0]);
    if write {
        expect_value("WRITE 0 bytes", got, 0)
    } else {
        expect_errno("WRITE", got, Errno::ERDONLY)
    }
}

fn open_every_mode_combination_on_existing_file() -> Outcome {
    make_file(scratch!("modes"), b"abc")?;
    for flags in [0, FileFlag::CREATE.bits()] {
        for mode in 0..16 {
            check_open_mode(scratch!("modes"), mode, flags)
                .map_err(|m| msg(format_args!("mode {mode:#x} flags {flags}: {m}")))?;
        }
    }
    Ok(())
}

fn open_create_with_every_mode_makes_a_read_write_handle() -> Outcome {
    for mode in 0..16u64 {
        let path = cpath!("create-mode");
        let rax = sc(Sys::OPEN, &[ptr(path), mode, FileFlag::CREATE.bits()]);
        let id = expect_ok("OPEN", rax).map_err(|m| msg(format_args!("mode {mode:#x}: {m}")))?;
        // SAFETY: the kernel just made this id for us.
        let file = unsafe { Handle::from_raw(id as u32) };
        write_exact(&file, b"z")?;
        seek_to(&file, 0)?;
        let mut byte = [0u8; 1];
        read_exact(&file, &mut byte)?;
        drop(file);
        ok("UNLINK", fs::unlink(scratch!("create-mode")))?;
    }
    Ok(())
}

fn open_with_unknown_mode_bits_returns_einval() -> Outcome {
    make_file(scratch!("bad-mode"), b"x")?;
    for mode in [0x10, 0x1F, 1 << 32, 1 << 63] {
        let rax = sc(Sys::OPEN, &[ptr(cpath!("bad-mode")), mode, 0]);
        expect_errno("OPEN", rax, Errno::EINVAL)
            .map_err(|m| msg(format_args!("mode {mode:#x}: {m}")))?;
    }
    Ok(())
}

fn open_with_unknown_flag_bits_returns_einval() -> Outcome {
    make_file(scratch!("bad-flags"), b"x")?;
    for flags in [2, 3, 1 << 40, u64::MAX] {
        let rax = sc(Sys::OPEN, &[ptr(cpath!("bad-flags")), 1, flags]);
        expect_errno("OPEN", rax, Errno::EINVAL)
            .map_err(|m| msg(format_args!("flags {flags:#x}: {m}")))?;
    }
    Ok(())
}

fn open_of_directory_returns_eisdir() -> Outcome {
    expect_err(
        "OPEN",
        fs::open(SCRATCH, FileMode::READ, FileFlag::EMPTY),
        Errno::EISDIR,
    )
}

fn open_create_of_directory_returns_eisdir() -> Outcome {
    expect_err(
        "OPEN",
        fs::open(SCRATCH, RW, FileFlag::CREATE),
        Errno::EISDIR,
    )
}

fn open_of_path_through_a_file_returns_enotdir() -> Outcome {
    make_file(scratch!("not-a-dir"), b"x")?;
    expect_err(
        "OPEN",
        fs::open(scratch!("not-a-dir/f"), RW, FileFlag::CREATE),
        Errno::ENOTDIR,
    )
}

fn open_create_with_missing_parent_returns_enotfound() -> Outcome {
    expect_err(
        "OPEN",
        fs::open(scratch!("no-dir/f"), RW, FileFlag::CREATE),
        Errno::ENOTFOUND,
    )
}

fn open_of_root_or_empty_path_returns_einval() -> Outcome {
    expect_err(
        "OPEN /",
        fs::open("/", FileMode::READ, FileFlag::EMPTY),
        Errno::EINVAL,
    )?;
    expect_err(
        "OPEN \"\"",
        fs::open("", FileMode::READ, FileFlag::EMPTY),
        Errno::EINVAL,
    )?;
    expect_err(
        "OPEN ///",
        fs::open("///", RW, FileFlag::CREATE),
        Errno::EINVAL,
    )
}

fn open_of_4096_byte_path_returns_enametoolong() -> Outcome {
    let mut path = [b'a'; PATH_MAX as usize + 1];
    path[0] = b'/';
    path[PATH_MAX as usize] = 0; // the NUL is byte 4097: one past PATH_MAX
    expect_errno(
        "OPEN",
        sc(Sys::OPEN, &[ptr(&path), 1, 0]),
        Errno::ENAMETOOLONG,
    )
}

fn open_of_4095_byte_path_is_walked() -> Outcome {
    let mut path = [0u8; PATH_MAX as usize];
    for (i, b) in path.iter_mut().take(PATH_MAX as usize - 1).enumerate() {
        *b = if i % 2 == 0 { b'/' } else { b'x' };
    }
    // "/x/x/.../x/": the longest path there is; it names nothing.
    expect_errno("OPEN", sc(Sys::OPEN, &[ptr(&path), 1, 0]), Errno::ENOTFOUND)
}

fn long_name(len: usize, buf: &mut [u8; 300]) -> &[u8] {
    let prefix = b"/tmp/conf/";
    buf[..prefix.len()].copy_from_slice(prefix);
    for b in &mut buf[prefix.len()..prefix.len() + len] {
        *b = b'n';
    }
    buf[prefix.len() + len] = 0;
    &buf[..prefix.len() + len + 1]
}

fn open_create_with_255_byte_name_succeeds() -> Outcome {
    let mut buf = [0u8; 300];
    let path = long_name(NAME_MAX as usize, &mut buf);
    let id = expect_ok("OPEN", sc(Sys::OPEN, &[ptr(path), 3, 1]))?;
    expect_value("CLOSE", sc(Sys::CLOSE, &[id]), 0)
}

fn open_create_with_256_byte_name_returns_enametoolong() -> Outcome {
    let mut buf = [0u8; 300];
    let path = long_name(NAME_MAX as usize + 1, &mut buf);
    expect_errno(
        "OPEN",
        sc(Sys::OPEN, &[ptr(path), 3, 1]),
        Errno::ENAMETOOLONG,
    )
}

fn open_of_non_utf8_path_returns_einval() -> Outcome {
    let path = b"/tmp/conf/\xff\xfe\0";
    expect_errno("OPEN", sc(Sys::OPEN, &[ptr(path), 3, 1]), Errno::EINVAL)
}

fn open_of_unmapped_path_returns_efault() -> Outcome {
    expect_errno("OPEN", sc(Sys::OPEN, &[UNMAPPED, 1, 0]), Errno::EFAULT)
}

fn open_of_kernel_half_path_returns_efault() -> Outcome {
    expect_errno("OPEN", sc(Sys::OPEN, &[KERNEL_HALF, 1, 0]), Errno::EFAULT)?;
    expect_errno("OPEN", sc(Sys::OPEN, &[u64::MAX - 7, 1, 0]), Errno::EFAULT)
}

fn open_of_non_canonical_path_returns_efault() -> Outcome {
    expect_errno("OPEN", sc(Sys::OPEN, &[NON_CANONICAL, 1, 0]), Errno::EFAULT)
}

fn open_of_path_running_into_unmapped_page_returns_efault() -> Outcome {
    let base = slot(1);
    let m = fixed(base, 2 * PAGE, MapFlag::WRITE)?;
    ensure!(writable(base, 2 * PAGE)?, "mapping is not writable");
    for i in 0..2 * PAGE {
        m.set(i, b'a');
    }
    expect_value("MUNMAP", sc(Sys::MUNMAP, &[base + PAGE, PAGE]), 0)?;
    // "/aaaa...": no NUL before the unmapped second page.
    let rax = sc(Sys::OPEN, &[base + PAGE - 16, 1, 0]);
    expect_errno("OPEN", rax, Errno::EFAULT)
}

fn open_ignores_repeated_and_trailing_slashes() -> Outcome {
    make_file(scratch!("slashes"), b"s")?;
    let file = open_as("//tmp///conf//slashes/", FileMode::READ)?;
    let mut byte = [0u8; 1];
    read_exact(&file, &mut byte)?;
    ensure!(&byte == b"s", "read {byte:?}");
    Ok(())
}

fn open_treats_dot_as_an_ordinary_name() -> Outcome {
    make_file(scratch!("dotted"), b"d")?;
    expect_err(
        "OPEN",
        fs::open(scratch!("./dotted"), FileMode::READ, FileFlag::EMPTY),
        Errno::ENOTFOUND,
    )?;
    expect_err(
        "OPEN",
        fs::open(scratch!("sub/../dotted"), FileMode::READ, FileFlag::EMPTY),
        Errno::ENOTFOUND,
    )
}

fn file_calls_work_via_int80() -> Outcome {
    syscall::set_entry(Entry::INT80);
    let verdict = (|| {
        let file = make_file(scratch!("int80"), b"int 0x80")?;
        let mut buf = [0u8; 8];
        read_exact(&file, &mut buf)?;
        ensure!(&buf == b"int 0x80", "read back {buf:?}");
        ensure!(ok("TRUNCATE", fs::truncate(&file, 3))? == 3, "TRUNCATE");
        drop(file);
        expect_errno(
            "READ",
            sc(Sys::READ, &[h(&LOG), mptr(&mut buf), 1]),
            Errno::EWRONLY,
        )?;
        ok("UNLINK", fs::unlink(scratch!("int80")))
    })();
    syscall::set_entry(Entry::DOORBELL);
    verdict
}

// === READ and WRITE =======================================================================

fn write_returns_the_count_and_advances_the_position() -> Outcome {
    let file = create(scratch!("write"))?;
    expect_value("WRITE", sc(Sys::WRITE, &[h(&file), ptr(b"hello"), 5]), 5)?;
    expect_position(&file, 5)?;
    expect_value("WRITE", sc(Sys::WRITE, &[h(&file), ptr(b" you"), 4]), 4)?;
    expect_position(&file, 9)?;
    expect_contents(scratch!("write"), b"hello you")
}

fn read_returns_bytes_from_the_position() -> Outcome {
    let file = make_file(scratch!("read"), b"0123456789")?;
    let mut buf = [0u8; 4];
    read_exact(&file, &mut buf)?;
    ensure!(&buf == b"0123", "first READ {buf:?}");
    read_exact(&file, &mut buf)?;
    ensure!(&buf == b"4567", "second READ {buf:?}");
    expect_position(&file, 8)
}

fn read_at_end_of_file_returns_0() -> Outcome {
    let file = make_file(scratch!("eof"), b"abc")?;
    seek_to(&file, 3)?;
    let mut buf = [0u8; 8];
    expect_value("READ", sc(Sys::READ, &[h(&file), mptr(&mut buf), 8]), 0)?;
    let empty = create(scratch!("eof-empty"))?;
    expect_value("READ", sc(Sys::READ, &[h(&empty), mptr(&mut buf), 8]), 0)
}

fn read_near_the_end_returns_the_remaining_bytes() -> Outcome {
    let file = make_file(scratch!("partial"), b"abcdef")?;
    seek_to(&file, 4)?;
    let mut buf = [0u8; 16];
    expect_value("READ", sc(Sys::READ, &[h(&file), mptr(&mut buf), 16]), 2)?;
    ensure!(&buf[..2] == b"ef", "read {:?}", &buf[..2]);
    expect_position(&file, 6)
}

fn read_and_write_of_0_bytes_return_0() -> Outcome {
    let file = make_file(scratch!("zero-len"), b"abc")?;
    let mut buf = [0u8; 1];
    expect_value("READ", sc(Sys::READ, &[h(&file), mptr(&mut buf), 0]), 0)?;
    expect_value("WRITE", sc(Sys::WRITE, &[h(&file), ptr(&buf), 0]), 0)?;
    expect_position(&file, 0)?;
    expect_contents(scratch!("zero-len"), b"abc")
}

fn write_spanning_pages_reads_back_intact() -> Outcome {
    let mut data = [0u8; 10_000];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i * 7 % 251) as u8;
    }
    let file = create(scratch!("pages"))?;
    seek_to(&file, 0)?;
    write_exact(&file, &data)?;
    ensure!(size(&file)? == 10_000, "size {}", size(&file)?);
    expect_contents(scratch!("pages"), &data)
}

fn positions_are_per_handle() -> Outcome {
    let a = make_file(scratch!("two-handles"), b"0123456789")?;
    let b = open_as(scratch!("two-handles"), FileMode::READ)?;
    let mut buf = [0u8; 3];
    read_exact(&a, &mut buf)?;
    read_exact(&a, &mut buf)?;
    read_exact(&b, &mut buf)?;
    ensure!(&buf == b"012", "second handle read {buf:?}");
    expect_position(&a, 6)?;
    expect_position(&b, 3)
}

fn write_is_visible_through_another_handle() -> Outcome {
    let a = make_file(scratch!("shared"), b"old")?;
    let b = open_as(scratch!("shared"), FileMode::READ)?;
    write_exact(&a, b"new!")?;
    let mut buf = [0u8; 4];
    read_exact(&b, &mut buf)?;
    ensure!(&buf == b"new!", "other handle read {buf:?}");
    Ok(())
}

fn write_past_end_of_file_leaves_a_zero_filled_gap() -> Outcome {
    let a = make_file(scratch!("gap"), b"0123456789")?;
    seek_to(&a, 10)?;
    let b = open_as(scratch!("gap"), RW)?;
    ensure!(ok("TRUNCATE", fs::truncate(&b, 2))? == 2, "TRUNCATE");
    // a's position stays at 10 (only the truncating handle's is pulled back); any
    // SEEK to look at it would clamp it, so the write below is the test.
    write_exact(&a, b"X")?;
    expect_contents(scratch!("gap"), b"01\0\0\0\0\0\0\0\0X")
}

fn read_of_log_handle_returns_ewronly() -> Outcome {
    let mut buf = [0u8; 4];
    expect_errno(
        "READ 0",
        sc(Sys::READ, &[0, mptr(&mut buf), 4]),
        Errno::EWRONLY,
    )
}

fn write_of_0_bytes_to_log_handle_returns_0() -> Outcome {
    expect_value("WRITE 0", sc(Sys::WRITE, &[0, ptr(b"x"), 0]), 0)
}

fn write_to_log_handle_returns_the_count() -> Outcome {
    let line = b"conformance: a line through handle 0\n";
    let rax = sc(Sys::WRITE, &[0, ptr(line), line.len() as u64]);
    expect_value("WRITE 0", rax, line.len() as u64)
}

/// Whether the file at `path` holds `needle` (at most 64 bytes) anywhere.
fn file_contains(path: &str, needle: &[u8]) -> Result<bool, Msg> {
    let file = open_as(path, FileMode::READ)?;
    // The last needle.len() - 1 bytes of one chunk lead the next, so a match across
    // chunks is found too.
    let mut window = [0u8; 64 + 512];
    let mut kept = 0;
    loop {
        let n = ok("READ", fs::read(&file, &mut window[kept..]))?;
        if n == 0 {
            return Ok(false);
        }
        let filled = kept + n;
        if window[..filled].windows(needle.len()).any(|w| w == needle) {
            return Ok(true);
        }
        kept = (needle.len() - 1).min(filled);
        window.copy_within(filled - kept..filled, 0);
    }
}

fn log_file_holds_each_line_with_its_task_prefix() -> Outcome {
    // Upstream's Log/logfile: every task's lines, prefix included, readable by programs.
    let line = b"conformance: log-file marker 5e1f\n";
    expect_value(
        "WRITE 0",
        sc(Sys::WRITE, &[0, ptr(line), line.len() as u64]),
        line.len() as u64,
    )?;
    let mut tagged = [0u8; 64];
    tagged[..2].copy_from_slice(b"] ");
    tagged[2..2 + line.len()].copy_from_slice(line);
    ensure!(
        file_contains(LOG_FILE_PATH, &tagged[..2 + line.len()])?,
        "{LOG_FILE_PATH} lacks the line just written, after a `[name] ` prefix"
    );
    Ok(())
}

fn read_of_unknown_handle_returns_enotfound() -> Outcome {
    let mut buf = [0u8; 4];
    expect_errno(
        "READ",
        sc(Sys::READ, &[1000, mptr(&mut buf), 4]),
        Errno::ENOTFOUND,
    )
}

fn write_of_unknown_handle_returns_enotfound() -> Outcome {
    expect_errno(
        "WRITE",
        sc(Sys::WRITE, &[1000, ptr(b"x"), 1]),
        Errno::ENOTFOUND,
    )
}

fn read_of_directory_handle_returns_enotsupp() -> Outcome {
    let dir = ok("OPENDIR", fs::opendir(SCRATCH))?;
    let mut buf = [0u8; 4];
    expect_errno(
        "READ",
        sc(Sys::READ, &[h(&dir), mptr(&mut buf), 4]),
        Errno::ENOTSUPP,
    )
}

fn write_of_directory_handle_returns_enotsupp() -> Outcome {
    let dir = ok("OPENDIR", fs::opendir(SCRATCH))?;
    expect_errno(
        "WRITE",
        sc(Sys::WRITE, &[h(&dir), ptr(b"x"), 1]),
        Errno::ENOTSUPP,
    )
}

fn read_into_unmapped_buffer_returns_efault_and_keeps_the_position() -> Outcome {
    let file = make_file(scratch!("read-efault"), b"0123456789")?;
    seek_to(&file, 3)?;
    expect_errno(
        "READ",
        sc(Sys::READ, &[h(&file), UNMAPPED, 4]),
        Errno::EFAULT,
    )?;
    expect_position(&file, 3)?;
    let mut byte = [0u8; 1];
    read_exact(&file, &mut byte)?;
    ensure!(&byte == b"3", "next READ got {byte:?}");
    Ok(())
}

fn read_into_kernel_half_returns_efault() -> Outcome {
    let file = make_file(scratch!("read-kernel"), b"0123456789")?;
    expect_errno(
        "READ",
        sc(Sys::READ, &[h(&file), KERNEL_HALF, 4]),
        Errno::EFAULT,
    )?;
    expect_errno(
        "READ",
        sc(Sys::READ, &[h(&file), NON_CANONICAL, 4]),
        Errno::EFAULT,
    )?;
    expect_position(&file, 0)
}

static READ_ONLY: [u8; 64] = [0x5A; 64];

fn read_into_read_only_memory_returns_efault() -> Outcome {
    let file = make_file(scratch!("read-rodata"), b"0123456789")?;
    let rax = sc(Sys::READ, &[h(&file), READ_ONLY.as_ptr() as u64, 8]);
    expect_errno("READ", rax, Errno::EFAULT)?;
    expect_position(&file, 0)?;
    // SAFETY: a plain read of our own static.
    let first = unsafe { core::ptr::read_volatile(READ_ONLY.as_ptr()) };
    ensure!(first == 0x5A, "read-only memory was written");
    Ok(())
}

fn read_into_range_straddling_user_end_returns_efault() -> Outcome {
    let file = make_file(scratch!("read-end"), b"0123456789abcdef")?;
    let rax = sc(Sys::READ, &[h(&file), USER_END - 8, 16]);
    expect_errno("READ", rax, Errno::EFAULT)?;
    expect_position(&file, 0)
}

fn write_from_unmapped_buffer_returns_efault_and_changes_nothing() -> Outcome {
    let file = make_file(scratch!("write-efault"), b"abc")?;
    seek_to(&file, 1)?;
    expect_errno(
        "WRITE",
        sc(Sys::WRITE, &[h(&file), UNMAPPED, 4]),
        Errno::EFAULT,
    )?;
    expect_position(&file, 1)?;
    ensure!(size(&file)? == 3, "size changed");
    expect_contents(scratch!("write-efault"), b"abc")
}

fn write_from_kernel_half_returns_efault() -> Outcome {
    let file = create(scratch!("write-kernel"))?;
    expect_errno(
        "WRITE",
        sc(Sys::WRITE, &[h(&file), KERNEL_HALF, 16]),
        Errno::EFAULT,
    )?;
    expect_errno(
        "WRITE",
        sc(Sys::WRITE, &[h(&file), u64::MAX - 15, 16]),
        Errno::EFAULT,
    )
}

fn write_from_non_canonical_address_returns_efault() -> Outcome {
    let file = create(scratch!("write-noncanon"))?;
    let rax = sc(Sys::WRITE, &[h(&file), NON_CANONICAL, 16]);
    expect_errno("WRITE", rax, Errno::EFAULT)
}

fn write_from_range_straddling_user_end_returns_efault() -> Outcome {
    let file = create(scratch!("write-end"))?;
    let rax = sc(Sys::WRITE, &[h(&file), USER_END - 8, 16]);
    expect_errno("WRITE", rax, Errno::EFAULT)?;
    ensure!(size(&file)? == 0, "bytes were written");
    Ok(())
}

fn write_with_wrapping_length_returns_efault() -> Outcome {
    let file = create(scratch!("write-wrap"))?;
    let rax = sc(Sys::WRITE, &[h(&file), ptr(b"abc"), u64::MAX]);
    expect_errno("WRITE", rax, Errno::EFAULT)?;
    ensure!(size(&file)? == 0, "bytes were written");
    Ok(())
}

// The buffer a caller names is checked as a whole (docs/abi.md, "User address
// space"), not only the bytes a call ends up moving: the next cases name bad buffers
// for transfers that would move few or no bytes.

fn read_at_end_of_file_into_unmapped_buffer_returns_efault() -> Outcome {
    let file = make_file(scratch!("eof-efault"), b"abc")?;
    seek_to(&file, 3)?;
    expect_errno(
        "READ",
        sc(Sys::READ, &[h(&file), UNMAPPED, 16]),
        Errno::EFAULT,
    )?;
    expect_errno(
        "READ",
        sc(Sys::READ, &[h(&file), KERNEL_HALF, 16]),
        Errno::EFAULT,
    )
}

fn read_with_wrapping_length_returns_efault() -> Outcome {
    let file = make_file(scratch!("read-wrap"), b"0123456789")?;
    let mut buf = [0u8; 16];
    let rax = sc(Sys::READ, &[h(&file), mptr(&mut buf), u64::MAX]);
    expect_errno("READ", rax, Errno::EFAULT)?;
    expect_position(&file, 0)
}

fn write_with_wrapping_length_from_mapped_memory_returns_efault() -> Outcome {
    // 1 MiB of mapped memory: more than any one WRITE moves.
    let m = anon(256 * PAGE, MapFlag::EMPTY)?;
    let file = create(scratch!("write-wrap-mapped"))?;
    let rax = sc(Sys::WRITE, &[h(&file), m.addr, u64::MAX]);
    expect_errno("WRITE", rax, Errno::EFAULT)?;
    ensure!(size(&file)? == 0, "bytes were written");
    Ok(())
}

fn write_from_read_only_memory_succeeds() -> Outcome {
    let file = create(scratch!("write-rodata"))?;
    let rax = sc(Sys::WRITE, &[h(&file), READ_ONLY.as_ptr() as u64, 64]);
    expect_value("WRITE", rax, 64)?;
    expect_contents(scratch!("write-rodata"), &READ_ONLY)
}

// === SEEK =================================================================================

fn seek(file: &impl AsHandle, offset: u64, mode: u64) -> u64 {
    sc(Sys::SEEK, &[h(file), offset, mode])
}

fn seek_absolute_sets_the_position() -> Outcome {
    let file = make_file(scratch!("seek-abs"), b"0123456789")?;
    expect_value("SEEK ABSOLUTE 7", seek(&file, 7, 0), 7)?;
    let mut byte = [0u8; 1];
    read_exact(&file, &mut byte)?;
    ensure!(&byte == b"7", "read {byte:?}");
    expect_value("SEEK ABSOLUTE 0", seek(&file, 0, 0), 0)
}

fn seek_absolute_past_the_end_clamps_to_the_size() -> Outcome {
    let file = make_file(scratch!("seek-abs-clamp"), b"0123456789")?;
    expect_value("SEEK ABSOLUTE 11", seek(&file, 11, 0), 10)?;
    expect_value("SEEK ABSOLUTE u64::MAX", seek(&file, u64::MAX, 0), 10)
}

fn seek_relative_moves_both_ways() -> Outcome {
    let file = make_file(scratch!("seek-rel"), b"0123456789")?;
    expect_value("SEEK RELATIVE +6", seek(&file, 6, 1), 6)?;
    expect_value("SEEK RELATIVE -2", seek(&file, (-2i64) as u64, 1), 4)?;
    expect_value("SEEK RELATIVE 0", seek(&file, 0, 1), 4)
}

fn seek_relative_before_the_start_clamps_to_0() -> Outcome {
    let file = make_file(scratch!("seek-rel-neg"), b"0123456789")?;
    seek_to(&file, 3)?;
    expect_value("SEEK RELATIVE -4", seek(&file, (-4i64) as u64, 1), 0)?;
    expect_value("SEEK RELATIVE i64::MIN", seek(&file, i64::MIN as u64, 1), 0)
}

fn seek_relative_past_the_end_clamps_to_the_size() -> Outcome {
    let file = make_file(scratch!("seek-rel-big"), b"0123456789")?;
    seek_to(&file, 8)?;
    expect_value("SEEK RELATIVE +5", seek(&file, 5, 1), 10)?;
    expect_value(
        "SEEK RELATIVE i64::MAX",
        seek(&file, i64::MAX as u64, 1),
        10,
    )
}

fn seek_end_0_goes_to_the_size() -> Outcome {
    let file = make_file(scratch!("seek-end"), b"0123456789")?;
    expect_value("SEEK END 0", seek(&file, 0, 2), 10)?;
    let mut byte = [0u8; 1];
    expect_value(
        "READ at the end",
        sc(Sys::READ, &[h(&file), mptr(&mut byte), 1]),
        0,
    )?;
    Ok(())
}

fn seek_end_with_positive_offset_moves_backwards() -> Outcome {
    let file = make_file(scratch!("seek-end-back"), b"0123456789")?;
    expect_value("SEEK END 3", seek(&file, 3, 2), 7)?;
    let mut byte = [0u8; 1];
    read_exact(&file, &mut byte)?;
    ensure!(&byte == b"7", "read {byte:?}");
    Ok(())
}

fn seek_end_beyond_the_size_clamps_to_0() -> Outcome {
    let file = make_file(scratch!("seek-end-far"), b"0123456789")?;
    seek_to(&file, 5)?;
    expect_value("SEEK END 11", seek(&file, 11, 2), 0)
}

fn seek_end_with_negative_offset_clamps_to_0() -> Outcome {
    // The offset is unsigned for END (upstream subtracts it, saturating): -1 is huge.
    let file = make_file(scratch!("seek-end-neg"), b"0123456789")?;
    expect_value("SEEK END -1", seek(&file, u64::MAX, 2), 0)
}

fn seek_with_unknown_mode_returns_einval() -> Outcome {
    let file = make_file(scratch!("seek-mode"), b"0123456789")?;
    seek_to(&file, 4)?;
    for mode in [3, 1 << 32, u64::MAX] {
        expect_errno("SEEK", seek(&file, 1, mode), Errno::EINVAL)
            .map_err(|m| msg(format_args!("mode {mode:#x}: {m}")))?;
    }
    expect_position(&file, 4)
}

fn seek_of_directory_handle_returns_enotsupp() -> Outcome {
    let dir = ok("OPENDIR", fs::opendir(SCRATCH))?;
    expect_errno("SEEK directory", seek(&dir, 0, 0), Errno::ENOTSUPP)
}

fn seek_of_directory_with_unknown_mode_returns_einval() -> Outcome {
    // Upstream's order: the handle, then the mode, then file versus directory.
    let dir = ok("OPENDIR", fs::opendir(SCRATCH))?;
    expect_errno("SEEK directory mode 7", seek(&dir, 0, 7), Errno::EINVAL)
}

fn seek_of_log_handle_returns_0() -> Outcome {
    // The log is a file of size 0 (upstream): every position is 0; a bad mode is EINVAL.
    for mode in [0, 1, 2] {
        expect_value("SEEK log", seek(&LOG, 5, mode), 0)?;
    }
    expect_errno("SEEK log mode 3", seek(&LOG, 0, 3), Errno::EINVAL)
}

fn seek_of_unknown_handle_returns_enotfound() -> Outcome {
    expect_errno("SEEK", sc(Sys::SEEK, &[1000, 0, 0]), Errno::ENOTFOUND)
}

// === TRUNCATE =============================================================================

fn truncate(file: &impl AsHandle, len: u64) -> u64 {
    sc(Sys::TRUNCATE, &[h(file), len])
}

fn truncate_shrinks_and_returns_the_new_size() -> Outcome {
    let file = make_file(scratch!("trunc-shrink"), b"0123456789")?;
    expect_value("TRUNCATE 4", truncate(&file, 4), 4)?;
    expect_contents(scratch!("trunc-shrink"), b"0123")?;
    expect_value("TRUNCATE 0", truncate(&file, 0), 0)?;
    expect_contents(scratch!("trunc-shrink"), b"")
}

fn truncate_to_the_same_size_returns_it() -> Outcome {
    let file = make_file(scratch!("trunc-same"), b"0123456789")?;
    expect_value("TRUNCATE 10", truncate(&file, 10), 10)?;
    expect_contents(scratch!("trunc-same"), b"0123456789")
}

fn truncate_to_grow_returns_einval() -> Outcome {
    let file = make_file(scratch!("trunc-grow"), b"0123456789")?;
    expect_errno("TRUNCATE 11", truncate(&file, 11), Errno::EINVAL)?;
    expect_errno(
        "TRUNCATE u64::MAX",
        truncate(&file, u64::MAX),
        Errno::EINVAL,
    )?;
    expect_contents(scratch!("trunc-grow"), b"0123456789")
}

fn truncate_without_write_returns_erdonly() -> Outcome {
    make_file(scratch!("trunc-ro-handle"), b"0123456789")?;
    let file = open_as(scratch!("trunc-ro-handle"), FileMode::READ)?;
    expect_errno("TRUNCATE", truncate(&file, 2), Errno::ERDONLY)?;
    expect_contents(scratch!("trunc-ro-handle"), b"0123456789")
}

fn truncate_pulls_the_position_back() -> Outcome {
    let file = make_file(scratch!("trunc-pos"), b"0123456789")?;
    seek_to(&file, 8)?;
    expect_value("TRUNCATE 5", truncate(&file, 5), 5)?;
    expect_position(&file, 5)?;
    seek_to(&file, 2)?;
    expect_value("TRUNCATE 4", truncate(&file, 4), 4)?;
    expect_position(&file, 2)
}

fn truncate_then_growth_shows_zeros_not_old_data() -> Outcome {
    let a = make_file(scratch!("trunc-stale"), &[b'x'; 100])?;
    seek_to(&a, 100)?;
    let b = open_as(scratch!("trunc-stale"), RW)?;
    expect_value("TRUNCATE 10", truncate(&b, 10), 10)?;
    write_exact(&a, b"!")?; // a's position is still 100
    let mut want = [0u8; 101];
    want[..10].copy_from_slice(&[b'x'; 10]);
    want[100] = b'!';
    expect_contents(scratch!("trunc-stale"), &want)
}

fn truncate_of_non_file_handles_returns_enotsupp() -> Outcome {
    let dir = ok("OPENDIR", fs::opendir(SCRATCH))?;
    expect_errno("TRUNCATE directory", truncate(&dir, 0), Errno::ENOTSUPP)?;
    expect_errno("TRUNCATE log", truncate(&LOG, 0), Errno::ENOTSUPP)
}

fn truncate_of_unknown_handle_returns_enotfound() -> Outcome {
    expect_errno("TRUNCATE", sc(Sys::TRUNCATE, &[1000, 0]), Errno::ENOTFOUND)
}

// === UNLINK ===============================================================================

fn unlink_removes_the_name() -> Outcome {
    make_file(scratch!("doomed"), b"x")?;
    ok("UNLINK", fs::unlink(scratch!("doomed")))?;
    expect_err(
        "OPEN",
        fs::open(scratch!("doomed"), FileMode::READ, FileFlag::EMPTY),
        Errno::ENOTFOUND,
    )
}

fn unlink_of_directory_returns_eisdir() -> Outcome {
    ok("MKDIR", fs::mkdir(scratch!("unlink-dir")))?;
    expect_err("UNLINK", fs::unlink(scratch!("unlink-dir")), Errno::EISDIR)?;
    ok("OPENDIR", fs::opendir(scratch!("unlink-dir")))?;
    Ok(())
}

fn unlink_of_missing_file_returns_enotfound() -> Outcome {
    expect_err(
        "UNLINK",
        fs::unlink(scratch!("never-was")),
        Errno::ENOTFOUND,
    )
}

fn unlink_of_path_through_a_file_returns_enotdir() -> Outcome {
    make_file(scratch!("unlink-file"), b"x")?;
    expect_err(
        "UNLINK",
        fs::unlink(scratch!("unlink-file/x")),
        Errno::ENOTDIR,
    )
}

fn unlink_of_root_returns_einval() -> Outcome {
    expect_err("UNLINK /", fs::unlink("/"), Errno::EINVAL)
}

fn unlinked_file_stays_usable_through_open_handles() -> Outcome {
    let file = make_file(scratch!("ghost"), b"still here")?;
    ok("UNLINK", fs::unlink(scratch!("ghost")))?;
    let mut buf = [0u8; 10];
    read_exact(&file, &mut buf)?;
    ensure!(&buf == b"still here", "read {buf:?}");
    write_exact(&file, b" and growing")?;
    ensure!(size(&file)? == 22, "size {}", size(&file)?);
    Ok(())
}

fn name_recreated_after_unlink_is_a_new_file() -> Outcome {
    let old = make_file(scratch!("reborn"), b"old")?;
    ok("UNLINK", fs::unlink(scratch!("reborn")))?;
    make_file(scratch!("reborn"), b"new file")?;
    ensure!(size(&old)? == 3, "the old handle sees the new file");
    expect_contents(scratch!("reborn"), b"new file")
}

// === OPENDIR and READDIR ==================================================================

/// A directory with a 5-byte file `a` and a subdirectory `d`, in that order.
fn make_listing(dir: &str) -> Outcome {
    ok("MKDIR", fs::mkdir(dir))?;
    make_file(&format!("{dir}/a"), b"12345")?;
    ok("MKDIR", fs::mkdir(&format!("{dir}/d")))
}

#[repr(C, align(8))]
struct RawDirEnts([u8; 3 * DirEnt::SIZE]);

fn u64_at(bytes: &[u8], at: usize) -> u64 {
    let mut le = [0u8; 8];
    le.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(le)
}

fn check_raw_dirent(raw: &[u8], name: &[u8], kind: u8, size: u64) -> Outcome {
    ensure!(
        raw[..name.len()] == *name && raw[name.len()] == 0,
        "name is not {:?} NUL-terminated",
        core::str::from_utf8(name).unwrap_or("?")
    );
    ensure!(
        raw[256] == kind,
        "type byte {} at 256, want {kind}",
        raw[256]
    );
    ensure!(
        raw[257..264].iter().all(|&b| b == 0),
        "padding 257..264 not zero"
    );
    ensure!(
        u64_at(raw, 264) == size,
        "size {} at 264, want {size}",
        u64_at(raw, 264)
    );
    Ok(())
}

fn readdir_fills_272_byte_dirents() -> Outcome {
    make_listing(scratch!("layout"))?;
    let dir = ok("OPENDIR", fs::opendir(scratch!("layout")))?;
    let mut raw = RawDirEnts([0xAA; 3 * DirEnt::SIZE]);
    let rax = sc(Sys::READDIR, &[h(&dir), raw.0.as_mut_ptr() as u64, 3]);
    expect_value("READDIR", rax, 2)?;
    let (first, rest) = raw.0.split_at(DirEnt::SIZE);
    check_raw_dirent(first, b"a", FileType::FILE as u8, 5)?;
    check_raw_dirent(&rest[..DirEnt::SIZE], b"d", FileType::DIRECTORY as u8, 0)?;
    ensure!(
        rest[DirEnt::SIZE..].iter().all(|&b| b == 0xAA),
        "READDIR wrote past the entries it returned"
    );
    Ok(())
}

fn readdir_of_root_lists_the_scratch_parent() -> Outcome {
    let root = ok("OPENDIR /", fs::opendir("/"))?;
    let mut entries = [DirEnt::zeroed(); 16];
    let mut found = false;
    loop {
        let n = ok("READDIR", fs::readdir(&root, &mut entries))?;
        if n == 0 {
            break;
        }
        found |= entries[..n]
            .iter()
            .any(|e| e.name_bytes() == b"tmp" && e.kind() == Some(FileType::DIRECTORY));
    }
    ensure!(found, "/ does not list the directory tmp");
    Ok(())
}

fn readdir_with_count_0_returns_0_and_keeps_the_cursor() -> Outcome {
    make_listing(scratch!("count0"))?;
    let dir = ok("OPENDIR", fs::opendir(scratch!("count0")))?;
    let mut entry = [DirEnt::zeroed()];
    expect_value(
        "READDIR 0",
        sc(Sys::READDIR, &[h(&dir), entry.as_mut_ptr() as u64, 0]),
        0,
    )?;
    ensure!(
        ok("READDIR", fs::readdir(&dir, &mut entry))? == 1,
        "READDIR 1"
    );
    ensure!(entry[0].name_bytes() == b"a", "first entry is not a");
    Ok(())
}

fn readdir_one_at_a_time_then_0_at_the_end() -> Outcome {
    make_listing(scratch!("cursor"))?;
    let dir = ok("OPENDIR", fs::opendir(scratch!("cursor")))?;
    let mut entry = [DirEnt::zeroed()];
    for want in [&b"a"[..], b"d"] {
        ensure!(
            ok("READDIR", fs::readdir(&dir, &mut entry))? == 1,
            "READDIR 1"
        );
        ensure!(entry[0].name_bytes() == want, "entries out of order");
    }
    for _ in 0..2 {
        ensure!(
            ok("READDIR", fs::readdir(&dir, &mut entry))? == 0,
            "READDIR past the end"
        );
    }
    Ok(())
}

fn readdir_of_empty_directory_returns_0() -> Outcome {
    ok("MKDIR", fs::mkdir(scratch!("empty-dir")))?;
    let dir = ok("OPENDIR", fs::opendir(scratch!("empty-dir")))?;
    let mut entry = [DirEnt::zeroed()];
    ensure!(
        ok("READDIR", fs::readdir(&dir, &mut entry))? == 0,
        "entries in an empty dir"
    );
    Ok(())
}

fn readdir_is_a_snapshot_taken_at_opendir() -> Outcome {
    make_listing(scratch!("snapshot"))?;
    let dir = ok("OPENDIR", fs::opendir(scratch!("snapshot")))?;
    make_file(scratch!("snapshot/late"), b"x")?;
    ok("UNLINK", fs::unlink(scratch!("snapshot/a")))?;
    let mut entries = [DirEnt::zeroed(); 4];
    let n = ok("READDIR", fs::readdir(&dir, &mut entries))?;
    ensure!(n == 2, "{n} entries, want the 2 of the snapshot");
    ensure!(
        entries[0].name_bytes() == b"a" && entries[1].name_bytes() == b"d",
        "the snapshot changed"
    );
    Ok(())
}

fn readdir_reports_the_file_size_when_it_runs() -> Outcome {
    make_listing(scratch!("live-size"))?;
    let dir = ok("OPENDIR", fs::opendir(scratch!("live-size")))?;
    let file = open_as(scratch!("live-size/a"), FileMode::WRITE | FileMode::APPEND)?;
    write_exact(&file, b"678")?;
    let mut entry = [DirEnt::zeroed()];
    ok("READDIR", fs::readdir(&dir, &mut entry))?;
    ensure!(entry[0].size == 8, "size {}, want 8", entry[0].size);
    Ok(())
}

fn readdir_lists_in_insertion_order() -> Outcome {
    ok("MKDIR", fs::mkdir(scratch!("order")))?;
    for path in [
        scratch!("order/c"),
        scratch!("order/a"),
        scratch!("order/b"),
    ] {
        make_file(path, b"")?;
    }
    expect_listing(scratch!("order"), &[b"c", b"a", b"b"])
}

fn removal_moves_the_last_entry_into_the_gap() -> Outcome {
    ok("MKDIR", fs::mkdir(scratch!("swap")))?;
    for path in [scratch!("swap/x"), scratch!("swap/y"), scratch!("swap/z")] {
        make_file(path, b"")?;
    }
    ok("UNLINK", fs::unlink(scratch!("swap/x")))?;
    expect_listing(scratch!("swap"), &[b"z", b"y"])
}

fn expect_listing(path: &str, want: &[&[u8]]) -> Outcome {
    let dir = ok("OPENDIR", fs::opendir(path))?;
    let mut entries = [DirEnt::zeroed(); 8];
    let n = ok("READDIR", fs::readdir(&dir, &mut entries))?;
    ensure!(n == want.len(), "{n} entries, want {}", want.len());
    for (i, name) in want.iter().enumerate() {
        ensure!(
            entries[i].name_bytes() == *name,
            "entry {i} is {:?}",
            entries[i].name_str().unwrap_or("?")
        );
    }
    Ok(())
}

fn readdir_returns_a_255_byte_name_whole() -> Outcome {
    ok("MKDIR", fs::mkdir(scratch!("long")))?;
    let mut buf = [0u8; 300];
    let prefix = b"/tmp/conf/long/";
    buf[..prefix.len()].copy_from_slice(prefix);
    buf[prefix.len()..prefix.len() + 255].fill(b'L');
    let id = expect_ok("OPEN", sc(Sys::OPEN, &[ptr(&buf), 3, 1]))?;
    expect_value("CLOSE", sc(Sys::CLOSE, &[id]), 0)?;
    let dir = ok("OPENDIR", fs::opendir(scratch!("long")))?;
    let mut entry = [DirEnt::zeroed()];
    ensure!(
        ok("READDIR", fs::readdir(&dir, &mut entry))? == 1,
        "no entry"
    );
    let name = entry[0].name_bytes();
    ensure!(
        name.len() == 255 && name.iter().all(|&b| b == b'L'),
        "name of {} bytes",
        name.len()
    );
    Ok(())
}

fn readdir_into_unmapped_buffer_returns_efault_and_keeps_the_cursor() -> Outcome {
    make_listing(scratch!("readdir-efault"))?;
    let dir = ok("OPENDIR", fs::opendir(scratch!("readdir-efault")))?;
    expect_errno(
        "READDIR",
        sc(Sys::READDIR, &[h(&dir), UNMAPPED, 1]),
        Errno::EFAULT,
    )?;
    let rax = sc(Sys::READDIR, &[h(&dir), READ_ONLY.as_ptr() as u64, 1]);
    expect_errno("READDIR into read-only memory", rax, Errno::EFAULT)?;
    let mut entry = [DirEnt::zeroed()];
    ensure!(
        ok("READDIR", fs::readdir(&dir, &mut entry))? == 1,
        "READDIR 1"
    );
    ensure!(entry[0].name_bytes() == b"a", "the cursor moved");
    Ok(())
}

fn readdir_at_the_end_into_unmapped_buffer_returns_efault() -> Outcome {
    ok("MKDIR", fs::mkdir(scratch!("readdir-end-efault")))?;
    let dir = ok("OPENDIR", fs::opendir(scratch!("readdir-end-efault")))?;
    expect_errno(
        "READDIR",
        sc(Sys::READDIR, &[h(&dir), UNMAPPED, 4]),
        Errno::EFAULT,
    )
}

fn readdir_of_file_handle_returns_enotsupp() -> Outcome {
    let file = make_file(scratch!("readdir-file"), b"x")?;
    let mut entry = [DirEnt::zeroed()];
    let rax = sc(Sys::READDIR, &[h(&file), entry.as_mut_ptr() as u64, 1]);
    expect_errno("READDIR", rax, Errno::ENOTSUPP)
}

fn readdir_of_unknown_handle_returns_enotfound() -> Outcome {
    let mut entry = [DirEnt::zeroed()];
    let rax = sc(Sys::READDIR, &[1000, entry.as_mut_ptr() as u64, 1]);
    expect_errno("READDIR", rax, Errno::ENOTFOUND)
}

fn opendir_of_file_returns_enotdir() -> Outcome {
    make_file(scratch!("opendir-file"), b"x")?;
    expect_err(
        "OPENDIR",
        fs::opendir(scratch!("opendir-file")),
        Errno::ENOTDIR,
    )
}

fn opendir_of_missing_directory_returns_enotfound() -> Outcome {
    expect_err(
        "OPENDIR",
        fs::opendir(scratch!("no-such-dir")),
        Errno::ENOTFOUND,
    )
}

fn opendir_of_empty_path_returns_einval() -> Outcome {
    // As upstream: "" names nothing, while "/" is the root.
    expect_err("OPENDIR \"\"", fs::opendir(""), Errno::EINVAL)?;
    ok("OPENDIR /", fs::opendir("/"))?;
    Ok(())
}

fn opendir_of_unmapped_path_returns_efault() -> Outcome {
    expect_errno("OPENDIR", sc(Sys::OPENDIR, &[UNMAPPED]), Errno::EFAULT)
}

// === MKDIR and RMDIR ======================================================================

fn mkdir_creates_an_empty_directory() -> Outcome {
    ok("MKDIR", fs::mkdir(scratch!("made")))?;
    expect_listing(scratch!("made"), &[])
}

fn mkdir_of_existing_name_returns_eexist() -> Outcome {
    ok("MKDIR", fs::mkdir(scratch!("twice")))?;
    expect_err("MKDIR again", fs::mkdir(scratch!("twice")), Errno::EEXIST)?;
    make_file(scratch!("file-there"), b"x")?;
    expect_err(
        "MKDIR over a file",
        fs::mkdir(scratch!("file-there")),
        Errno::EEXIST,
    )
}

fn mkdir_with_missing_parent_returns_enotfound() -> Outcome {
    expect_err(
        "MKDIR",
        fs::mkdir(scratch!("no-parent/child")),
        Errno::ENOTFOUND,
    )
}

fn mkdir_through_a_file_returns_enotdir() -> Outcome {
    make_file(scratch!("mkdir-file"), b"x")?;
    expect_err(
        "MKDIR",
        fs::mkdir(scratch!("mkdir-file/child")),
        Errno::ENOTDIR,
    )
}

fn mkdir_of_root_returns_einval() -> Outcome {
    expect_err("MKDIR /", fs::mkdir("/"), Errno::EINVAL)
}

fn rmdir_removes_an_empty_directory() -> Outcome {
    ok("MKDIR", fs::mkdir(scratch!("gone")))?;
    ok("RMDIR", fs::rmdir(scratch!("gone")))?;
    expect_err("OPENDIR", fs::opendir(scratch!("gone")), Errno::ENOTFOUND)
}

fn rmdir_of_non_empty_directory_returns_enotempty() -> Outcome {
    ok("MKDIR", fs::mkdir(scratch!("full")))?;
    make_file(scratch!("full/f"), b"x")?;
    expect_err("RMDIR", fs::rmdir(scratch!("full")), Errno::ENOTEMPTY)
}

fn rmdir_of_file_returns_enotdir() -> Outcome {
    make_file(scratch!("rmdir-file"), b"x")?;
    expect_err("RMDIR", fs::rmdir(scratch!("rmdir-file")), Errno::ENOTDIR)
}

fn rmdir_of_missing_directory_returns_enotfound() -> Outcome {
    expect_err("RMDIR", fs::rmdir(scratch!("never-made")), Errno::ENOTFOUND)
}

fn rmdir_of_root_returns_einval() -> Outcome {
    expect_err("RMDIR /", fs::rmdir("/"), Errno::EINVAL)
}

fn open_directory_handle_survives_rmdir() -> Outcome {
    make_listing(scratch!("vanishing"))?;
    let dir = ok("OPENDIR", fs::opendir(scratch!("vanishing")))?;
    ok("UNLINK", fs::unlink(scratch!("vanishing/a")))?;
    ok("RMDIR", fs::rmdir(scratch!("vanishing/d")))?;
    ok("RMDIR", fs::rmdir(scratch!("vanishing")))?;
    let mut entries = [DirEnt::zeroed(); 4];
    let n = ok("READDIR", fs::readdir(&dir, &mut entries))?;
    ensure!(n == 2, "{n} entries from the snapshot, want 2");
    Ok(())
}

// === CAPABILITIES =========================================================================

fn capabilities_count_is_2() -> Outcome {
    // The values after index 0 (upstream's count), so the last index is the count.
    expect_value(
        "CAPABILITIES 0",
        sc(Sys::CAPABILITIES, &[Capability::COUNT as u64]),
        2,
    )
}

fn capabilities_vm_bitmap_is_0() -> Outcome {
    expect_value(
        "CAPABILITIES 1",
        sc(Sys::CAPABILITIES, &[Capability::VM_BITMAP as u64]),
        0,
    )
}

fn capabilities_features_name_the_copra_kvm_platform() -> Outcome {
    let features = expect_ok("CAPABILITIES 2", sc(Sys::CAPABILITIES, &[2]))?;
    ensure!(
        features & 0b111 == PlatformType::COPRA_KVM as u64,
        "features {features:#x}"
    );
    Ok(())
}

fn capabilities_index_3_returns_enotfound() -> Outcome {
    expect_errno(
        "CAPABILITIES 3",
        sc(Sys::CAPABILITIES, &[3]),
        Errno::ENOTFOUND,
    )?;
    expect_errno(
        "CAPABILITIES 1000",
        sc(Sys::CAPABILITIES, &[1000]),
        Errno::ENOTFOUND,
    )
}

fn capabilities_via_int80_match_the_doorbell() -> Outcome {
    for index in 0..4u64 {
        // SAFETY: CAPABILITIES reads no memory.
        let (door, int80) = unsafe {
            (
                syscall5_via(Entry::DOORBELL, Sys::CAPABILITIES as u64, index, 0, 0, 0, 0),
                syscall5_via(Entry::INT80, Sys::CAPABILITIES as u64, index, 0, 0, 0, 0),
            )
        };
        ensure!(
            door == int80,
            "index {index}: doorbell {}, int 0x80 {}",
            Rax(door),
            Rax(int80)
        );
    }
    Ok(())
}

// === unknown numbers and the entries ========================================================

fn expect_enosys(entry: Entry, nr: u64) -> Outcome {
    // SAFETY: an unknown number must do nothing.
    let rax = unsafe { syscall0_via(entry, nr) };
    ensure!(
        rax == errno(Errno::ENOSYS),
        "syscall {nr:#x} via {}: got {}, want ENOSYS",
        entry.name(),
        Rax(rax)
    );
    Ok(())
}

fn unknown_core_index_returns_enosys_via_doorbell() -> Outcome {
    expect_enosys(Entry::DOORBELL, sysno(0, 999))?;
    expect_enosys(Entry::DOORBELL, sysno(0, 6))
}

fn unknown_core_index_returns_enosys_via_int80() -> Outcome {
    expect_enosys(Entry::INT80, sysno(0, 999))?;
    expect_enosys(Entry::INT80, sysno(0, 6))
}

fn unknown_file_index_returns_enosys() -> Outcome {
    expect_enosys(Entry::DOORBELL, sysno(1, 10))?;
    expect_enosys(Entry::INT80, sysno(1, 10))
}

fn reserved_vmm_class_returns_enosys() -> Outcome {
    expect_enosys(Entry::DOORBELL, sysno(2, 0))?;
    expect_enosys(Entry::INT80, sysno(2, 0))
}

fn unknown_class_returns_enosys_via_doorbell() -> Outcome {
    expect_enosys(Entry::DOORBELL, sysno(7, 0))?;
    expect_enosys(Entry::DOORBELL, sysno(3, 1))
}

fn unknown_class_returns_enosys_via_int80() -> Outcome {
    expect_enosys(Entry::INT80, sysno(7, 0))?;
    expect_enosys(Entry::INT80, sysno(3, 1))
}

fn all_ones_syscall_number_returns_enosys_on_both_entries() -> Outcome {
    expect_enosys(Entry::DOORBELL, u64::MAX)?;
    expect_enosys(Entry::INT80, u64::MAX)
}

fn known_number_with_extra_high_bits_returns_enosys() -> Outcome {
    expect_enosys(Entry::DOORBELL, Sys::CAPABILITIES as u64 | 1 << 63)?;
    expect_enosys(Entry::INT80, Sys::CLOSE as u64 | 1 << 40)
}

/// The registers after CAPABILITIES(0) through `$insn`, loaded with known values.
macro_rules! registers_after {
    ($template:literal, $($operand:tt)*) => {{
        let regs: [u64; 10];
        let (rax, rdi, rsi, rdx, r8, r9, r10, r12, r13, r14, r15);
        // SAFETY: CAPABILITIES reads no memory; the kernel may change rax only.
        unsafe {
            asm!(
                $template,
                $($operand)*
                inout("rax") Sys::CAPABILITIES as u64 => rax,
                inout("rdi") 0u64 => rdi,
                inout("rsi") 0x5151_5151_5151_5151u64 => rsi,
                inout("rdx") 0xD0D0_D0D0_D0D0_D0D0u64 => rdx,
                inout("r8") 0x0808_0808_0808_0808u64 => r8,
                inout("r9") 0x0909_0909_0909_0909u64 => r9,
                inout("r10") 0x1010_1010_1010_1010u64 => r10,
                inout("r12") 0x1212_1212_1212_1212u64 => r12,
                inout("r13") 0x1313_1313_1313_1313u64 => r13,
                inout("r14") 0x1414_1414_1414_1414u64 => r14,
                inout("r15") 0x1515_1515_1515_1515u64 => r15,
                lateout("rcx") _,
                lateout("r11") _,
                options(nostack),
            );
        }
        regs = [rdi, rsi, rdx, r8, r9, r10, r12, r13, r14, r15];
        (rax, regs)
    }};
}

const REGISTER_NAMES: [&str; 10] = [
    "rdi", "rsi", "rdx", "r8", "r9", "r10", "r12", "r13", "r14", "r15",
];
const REGISTER_VALUES: [u64; 10] = [
    0,
    0x5151_5151_5151_5151,
    0xD0D0_D0D0_D0D0_D0D0,
    0x0808_0808_0808_0808,
    0x0909_0909_0909_0909,
    0x1010_1010_1010_1010,
    0x1212_1212_1212_1212,
    0x1313_1313_1313_1313,
    0x1414_1414_1414_1414,
    0x1515_1515_1515_1515,
];

fn check_registers(rax: u64, regs: [u64; 10]) -> Outcome {
    expect_value("rax", rax, 2)?; // CAPABILITIES(0)
    for i in 0..regs.len() {
        ensure!(
            regs[i] == REGISTER_VALUES[i],
            "{} changed to {:#x}",
            REGISTER_NAMES[i],
            regs[i]
        );
    }
    Ok(())
}

fn syscall_changes_only_rax_via_doorbell() -> Outcome {
    let (rax, regs) = registers_after!("out {port}, al", port = const DOORBELL_PORT,);
    check_registers(rax, regs)
}

fn syscall_changes_only_rax_via_int80() -> Outcome {
    let (rax, regs) = registers_after!("int 0x80",);
    check_registers(rax, regs)
}

// === MMAP =================================================================================

fn mmap_anonymous_returns_zeroed_page_aligned_memory() -> Outcome {
    let m = anon(3 * PAGE, MapFlag::EMPTY)?;
    match m.find_not(0, 3 * PAGE, 0) {
        Some(at) => fail!("byte {at:#x} of a fresh mapping is {:#x}", m.at(at)),
        None => Ok(()),
    }
}

fn mmap_anonymous_with_write_is_writable() -> Outcome {
    let m = anon_rw(2 * PAGE)?;
    m.set(0, 0x11);
    m.set(2 * PAGE - 1, 0x22);
    ensure!(
        m.at(0) == 0x11 && m.at(2 * PAGE - 1) == 0x22,
        "stores did not stick"
    );
    Ok(())
}

fn mmap_without_write_is_read_only() -> Outcome {
    let m = anon(PAGE, MapFlag::EMPTY)?;
    ensure!(!writable(m.addr, PAGE)?, "a READ-only mapping is writable");
    Ok(())
}

fn mmap_without_hint_is_placed_at_or_above_mmap_base() -> Outcome {
    let m = anon(PAGE, MapFlag::EMPTY)?;
    ensure!(m.addr >= MMAP_BASE, "placed at {:#x}", m.addr);
    Ok(())
}

fn mmap_with_free_hint_uses_it() -> Outcome {
    let hint = slot(2);
    let m = mmap(NO_HANDLE, hint, 0, PAGE, MapFlag::READ | MapFlag::ANONYMOUS)?;
    ensure!(m.addr == hint, "placed at {:#x}, not at the hint", m.addr);
    Ok(())
}

fn mmap_with_taken_hint_places_elsewhere() -> Outcome {
    let hint = slot(3);
    let first = fixed(hint, PAGE, MapFlag::WRITE)?;
    first.set(0, 0x77);
    let second = mmap(NO_HANDLE, hint, 0, PAGE, MapFlag::READ | MapFlag::ANONYMOUS)?;
    ensure!(second.addr != hint, "the hint's mapping was replaced");
    ensure!(second.addr >= MMAP_BASE, "placed at {:#x}", second.addr);
    ensure!(first.at(0) == 0x77, "the first mapping changed");
    Ok(())
}

fn mmap_length_is_rounded_up_to_whole_pages() -> Outcome {
    let base = slot(4);
    let m = mmap(
        NO_HANDLE,
        base,
        0,
        1,
        MapFlag::READ | MapFlag::ANONYMOUS | MapFlag::FIXED,
    )?;
    ensure!(m.addr == base, "FIXED placed at {:#x}", m.addr);
    ensure!(readable(base, PAGE)?, "the rest of the page is not mapped");
    ensure!(!readable(base + PAGE, 1)?, "a second page is mapped");
    Ok(())
}

fn mmap_with_unknown_flag_bits_returns_einval() -> Outcome {
    for extra in [0x40, 0x80, 1 << 32, 1 << 63] {
        mmap_errno([NO_HANDLE, 0, 0, PAGE, ANON_R | extra], Errno::EINVAL)
            .map_err(|m| msg(format_args!("flag {extra:#x}: {m}")))?;
    }
    Ok(())
}

fn mmap_without_read_returns_einval() -> Outcome {
    let anon = MapFlag::ANONYMOUS.bits();
    mmap_errno([NO_HANDLE, 0, 0, PAGE, anon], Errno::EINVAL)?;
    mmap_errno(
        [NO_HANDLE, 0, 0, PAGE, anon | MapFlag::WRITE.bits()],
        Errno::EINVAL,
    )
}

fn mmap_write_and_exec_together_returns_eperm() -> Outcome {
    let wx = MapFlag::WRITE.bits() | MapFlag::EXEC.bits();
    mmap_errno([NO_HANDLE, 0, 0, PAGE, ANON_R | wx], Errno::EPERM)
}

fn mmap_with_length_0_returns_einval() -> Outcome {
    mmap_errno([NO_HANDLE, 0, 0, 0, ANON_R], Errno::EINVAL)
}

fn mmap_with_unaligned_hint_returns_einval() -> Outcome {
    mmap_errno([NO_HANDLE, slot(5) + 8, 0, PAGE, ANON_R], Errno::EINVAL)?;
    let fixed = ANON_R | MapFlag::FIXED.bits();
    mmap_errno([NO_HANDLE, slot(5) + 0x800, 0, PAGE, fixed], Errno::EINVAL)
}

fn mmap_anonymous_with_offset_returns_einval() -> Outcome {
    mmap_errno([NO_HANDLE, 0, PAGE, PAGE, ANON_R], Errno::EINVAL)
}

fn mmap_of_file_at_unaligned_offset_returns_einval() -> Outcome {
    let file = make_file(scratch!("map-offset"), &[1; 64])?;
    mmap_errno([h(&file), 0, 8, PAGE, MapFlag::READ.bits()], Errno::EINVAL)
}

fn mmap_fixed_below_user_start_returns_einval() -> Outcome {
    let fixed = ANON_R | MapFlag::FIXED.bits();
    mmap_errno([NO_HANDLE, 0, 0, PAGE, fixed], Errno::EINVAL)?;
    mmap_errno(
        [NO_HANDLE, USER_START - PAGE, 0, 2 * PAGE, fixed],
        Errno::EINVAL,
    )
}

fn mmap_fixed_reaching_the_stack_area_returns_einval() -> Outcome {
    let fixed = ANON_R | MapFlag::FIXED.bits();
    mmap_errno(
        [NO_HANDLE, MAP_AREA_END - PAGE, 0, 2 * PAGE, fixed],
        Errno::EINVAL,
    )?;
    mmap_errno([NO_HANDLE, MAP_AREA_END, 0, PAGE, fixed], Errno::EINVAL)
}

fn mmap_fixed_in_kernel_half_returns_einval() -> Outcome {
    let fixed = ANON_R | MapFlag::FIXED.bits();
    mmap_errno([NO_HANDLE, KERNEL_HALF, 0, PAGE, fixed], Errno::EINVAL)?;
    mmap_errno([NO_HANDLE, NON_CANONICAL, 0, PAGE, fixed], Errno::EINVAL)
}

fn mmap_fixed_just_below_the_stack_area_succeeds() -> Outcome {
    let m = fixed(MAP_AREA_END - PAGE, PAGE, MapFlag::EMPTY)?;
    ensure!(m.unmap() == 0, "MUNMAP failed");
    Ok(())
}

fn mmap_fixed_at_free_address_maps_there() -> Outcome {
    let m = fixed(slot(6), 2 * PAGE, MapFlag::WRITE)?;
    ensure!(writable(m.addr, 2 * PAGE)?, "not writable");
    Ok(())
}

fn mmap_fixed_over_a_mapping_returns_eexist() -> Outcome {
    let base = slot(7);
    let first = fixed(base, 2 * PAGE, MapFlag::WRITE)?;
    first.set(PAGE, 0x42);
    let fixed_flags = ANON_R | MapFlag::FIXED.bits();
    mmap_errno(
        [NO_HANDLE, base + PAGE, 0, 2 * PAGE, fixed_flags],
        Errno::EEXIST,
    )?;
    mmap_errno(
        [NO_HANDLE, base - PAGE, 0, 2 * PAGE, fixed_flags],
        Errno::EEXIST,
    )?;
    ensure!(first.at(PAGE) == 0x42, "the existing mapping changed");
    ensure!(
        !readable(base - PAGE, 1)? && !readable(base + 2 * PAGE, 1)?,
        "pages appeared"
    );
    Ok(())
}

fn mmap_fixed_over_the_program_image_returns_eexist() -> Outcome {
    expect_child("fixed-over-image", exited(0))
}

fn mmap_hint_over_the_program_image_places_elsewhere() -> Outcome {
    expect_child("hint-over-image", exited(0))
}

fn mmap_anonymous_ignores_the_handle() -> Outcome {
    for handle in [0, 12345, NO_HANDLE] {
        let m = mmap(handle, 0, 0, PAGE, MapFlag::READ | MapFlag::ANONYMOUS)?;
        ensure!(m.find_not(0, PAGE, 0).is_none(), "not zero-filled");
    }
    Ok(())
}

fn mmap_read_exec_anonymous_succeeds() -> Outcome {
    let m = anon(PAGE, MapFlag::EXEC)?;
    ensure!(!writable(m.addr, PAGE)?, "a READ|EXEC mapping is writable");
    Ok(())
}

/// A file of `len` bytes where byte `i` is `i % 251`.
fn make_pattern_file(path: &str, len: usize) -> Result<Handle, Msg> {
    let file = create(path)?;
    let mut chunk = [0u8; 512];
    let mut at = 0;
    while at < len {
        let n = chunk.len().min(len - at);
        for (i, b) in chunk[..n].iter_mut().enumerate() {
            *b = ((at + i) % 251) as u8;
        }
        write_exact(&file, &chunk[..n])?;
        at += n;
    }
    seek_to(&file, 0)?;
    Ok(file)
}

fn expect_pattern(m: &Mapping, from: u64, to: u64, file_offset: u64) -> Outcome {
    for i in from..to {
        let want = ((file_offset + i) % 251) as u8;
        ensure!(
            m.at(i) == want,
            "byte {i:#x} is {:#x}, want {want:#x}",
            m.at(i)
        );
    }
    Ok(())
}

fn mmap_of_file_read_only_shows_its_contents() -> Outcome {
    let file = make_pattern_file(scratch!("map-ro"), 5000)?;
    let m = mmap(h(&file), 0, 0, 5000, MapFlag::READ)?;
    expect_pattern(&m, 0, 5000, 0)
}

fn mmap_of_file_read_only_sees_later_writes() -> Outcome {
    let file = make_pattern_file(scratch!("map-shared"), 100)?;
    let m = mmap(h(&file), 0, 0, 100, MapFlag::READ)?;
    seek_to(&file, 10)?;
    write_exact(&file, b"LATER")?;
    ensure!(
        m.at(10) == b'L' && m.at(14) == b'R',
        "the write does not show through"
    );
    Ok(())
}

fn mmap_of_file_reads_zero_past_the_end_of_file() -> Outcome {
    let file = make_pattern_file(scratch!("map-eof"), 10)?;
    let m = mmap(h(&file), 0, 0, 3 * PAGE, MapFlag::READ)?;
    expect_pattern(&m, 0, 10, 0)?;
    match m.find_not(10, 3 * PAGE, 0) {
        Some(at) => fail!("byte {at:#x} past EOF is {:#x}", m.at(at)),
        None => Ok(()),
    }
}

fn mmap_of_file_at_offset_maps_from_there() -> Outcome {
    let file = make_pattern_file(scratch!("map-at"), 3 * PAGE as usize)?;
    let m = mmap(h(&file), 0, PAGE, 2 * PAGE, MapFlag::READ)?;
    expect_pattern(&m, 0, 2 * PAGE, PAGE)
}

fn mmap_of_file_from_past_the_end_reads_zero() -> Outcome {
    let file = make_pattern_file(scratch!("map-beyond"), 100)?;
    let m = mmap(h(&file), 0, 2 * PAGE, PAGE, MapFlag::READ)?;
    match m.find_not(0, PAGE, 0) {
        Some(at) => fail!("byte {at:#x} is {:#x}", m.at(at)),
        None => Ok(()),
    }
}

fn mmap_of_file_private_write_is_a_private_copy() -> Outcome {
    let file = make_pattern_file(scratch!("map-private"), 100)?;
    let flags = MapFlag::READ | MapFlag::WRITE | MapFlag::PRIVATE;
    let m = mmap(h(&file), 0, 0, 100, flags)?;
    expect_pattern(&m, 0, 100, 0)?;
    ensure!(
        writable(m.addr, PAGE)?,
        "a READ|WRITE|PRIVATE mapping is not writable"
    );
    m.set(0, b'P');
    ensure!(m.at(0) == b'P', "the store did not stick");
    let mut byte = [0u8; 1];
    read_exact(&file, &mut byte)?;
    ensure!(byte[0] == 0, "the file changed: {:#x}", byte[0]);
    Ok(())
}

fn mmap_of_file_write_without_private_returns_enotsupp() -> Outcome {
    let file = make_file(scratch!("map-shared-w"), b"x")?;
    let flags = MapFlag::READ.bits() | MapFlag::WRITE.bits();
    mmap_errno([h(&file), 0, 0, PAGE, flags], Errno::ENOTSUPP)
}

fn mmap_of_unknown_handle_returns_enotfound() -> Outcome {
    mmap_errno([1000, 0, 0, PAGE, MapFlag::READ.bits()], Errno::ENOTFOUND)
}

fn mmap_of_non_file_handles_returns_enotsupp() -> Outcome {
    let dir = ok("OPENDIR", fs::opendir(SCRATCH))?;
    mmap_errno([h(&dir), 0, 0, PAGE, MapFlag::READ.bits()], Errno::ENOTSUPP)?;
    mmap_errno([0, 0, 0, PAGE, MapFlag::READ.bits()], Errno::ENOTSUPP)
}

fn mmap_of_file_without_read_access_returns_ewronly() -> Outcome {
    make_file(scratch!("map-wo"), b"x")?;
    let file = open_as(scratch!("map-wo"), FileMode::WRITE)?;
    mmap_errno([h(&file), 0, 0, PAGE, MapFlag::READ.bits()], Errno::EWRONLY)
}

fn mmap_of_file_read_only_is_not_writable() -> Outcome {
    let file = make_file(scratch!("map-ro-w"), b"data")?;
    let m = mmap(h(&file), 0, 0, PAGE, MapFlag::READ)?;
    ensure!(
        !writable(m.addr, PAGE)?,
        "a read-only file mapping is writable"
    );
    expect_contents(scratch!("map-ro-w"), b"data")
}

fn store_to_read_only_mapping_kills_with_pf() -> Outcome {
    expect_child("store-read-only", killed(14))
}

fn mmap_works_via_int80() -> Outcome {
    syscall::set_entry(Entry::INT80);
    let verdict = anon(PAGE, MapFlag::EMPTY).map(|m| m.unmap());
    syscall::set_entry(Entry::DOORBELL);
    expect_value("MUNMAP", verdict?, 0)
}

// === MUNMAP ===============================================================================

fn munmap_of_unaligned_address_returns_einval() -> Outcome {
    let m = fixed(slot(8), PAGE, MapFlag::EMPTY)?;
    expect_errno(
        "MUNMAP",
        sc(Sys::MUNMAP, &[m.addr + 1, PAGE]),
        Errno::EINVAL,
    )?;
    ensure!(readable(m.addr, PAGE)?, "the mapping went away");
    Ok(())
}

fn munmap_with_length_0_returns_einval() -> Outcome {
    let m = fixed(slot(9), PAGE, MapFlag::EMPTY)?;
    expect_errno("MUNMAP", sc(Sys::MUNMAP, &[m.addr, 0]), Errno::EINVAL)?;
    ensure!(readable(m.addr, PAGE)?, "the mapping went away");
    Ok(())
}

fn munmap_outside_user_space_returns_einval() -> Outcome {
    expect_errno(
        "MUNMAP kernel half",
        sc(Sys::MUNMAP, &[KERNEL_HALF, PAGE]),
        Errno::EINVAL,
    )?;
    expect_errno(
        "MUNMAP USER_END",
        sc(Sys::MUNMAP, &[USER_END, PAGE]),
        Errno::EINVAL,
    )?;
    expect_errno(
        "MUNMAP non-canonical",
        sc(Sys::MUNMAP, &[NON_CANONICAL, PAGE]),
        Errno::EINVAL,
    )?;
    expect_errno(
        "MUNMAP from below USER_START",
        sc(Sys::MUNMAP, &[USER_START - PAGE, 2 * PAGE]),
        Errno::EINVAL,
    )?;
    expect_errno("MUNMAP page 0", sc(Sys::MUNMAP, &[0, PAGE]), Errno::EINVAL)
}

fn munmap_of_unmapped_range_returns_enotfound() -> Outcome {
    expect_errno(
        "MUNMAP",
        sc(Sys::MUNMAP, &[slot(10), 4 * PAGE]),
        Errno::ENOTFOUND,
    )
}

fn munmap_removes_the_mapping() -> Outcome {
    let m = fixed(slot(11), 2 * PAGE, MapFlag::EMPTY)?;
    let addr = m.addr;
    expect_value("MUNMAP", m.unmap(), 0)?;
    ensure!(
        !readable(addr, 1)? && !readable(addr + PAGE, 1)?,
        "still mapped"
    );
    expect_errno(
        "MUNMAP again",
        sc(Sys::MUNMAP, &[addr, 2 * PAGE]),
        Errno::ENOTFOUND,
    )
}

fn munmap_of_middle_page_splits_the_mapping() -> Outcome {
    let base = slot(12);
    let m = fixed(base, 3 * PAGE, MapFlag::WRITE)?;
    m.set(0, 1);
    m.set(2 * PAGE, 3);
    expect_value("MUNMAP", sc(Sys::MUNMAP, &[base + PAGE, PAGE]), 0)?;
    ensure!(
        !readable(base + PAGE, 1)?,
        "the middle page is still mapped"
    );
    ensure!(
        readable(base, PAGE)? && readable(base + 2 * PAGE, PAGE)?,
        "a neighbour went"
    );
    ensure!(
        m.at(0) == 1 && m.at(2 * PAGE) == 3,
        "the neighbours' contents changed"
    );
    Ok(())
}

fn munmap_of_partly_mapped_range_unmaps_the_mapped_part() -> Outcome {
    let base = slot(13);
    let m = fixed(base + PAGE, PAGE, MapFlag::EMPTY)?;
    expect_value("MUNMAP", sc(Sys::MUNMAP, &[base, 3 * PAGE]), 0)?;
    ensure!(!readable(m.addr, 1)?, "still mapped");
    core::mem::forget(m);
    Ok(())
}

fn munmap_length_is_rounded_up_to_whole_pages() -> Outcome {
    let base = slot(14);
    let _m = fixed(base, 2 * PAGE, MapFlag::EMPTY)?;
    expect_value("MUNMAP 1 byte", sc(Sys::MUNMAP, &[base, 1]), 0)?;
    ensure!(
        !readable(base + PAGE - 1, 1)?,
        "the first page is still mapped"
    );
    ensure!(readable(base + PAGE, PAGE)?, "the second page went too");
    Ok(())
}

fn munmap_spanning_two_mappings_removes_both() -> Outcome {
    let base = slot(15);
    let a = fixed(base, PAGE, MapFlag::EMPTY)?;
    let b = fixed(base + 2 * PAGE, PAGE, MapFlag::EMPTY)?;
    expect_value("MUNMAP", sc(Sys::MUNMAP, &[base, 3 * PAGE]), 0)?;
    ensure!(
        !readable(a.addr, 1)? && !readable(b.addr, 1)?,
        "still mapped"
    );
    core::mem::forget(a);
    core::mem::forget(b);
    Ok(())
}

fn load_after_munmap_kills_with_pf() -> Outcome {
    expect_child("touch-after-munmap", killed(14))
}

// === MRESIZE ==============================================================================

fn mresize(addr: u64, len: u64) -> u64 {
    sc(Sys::MRESIZE, &[addr, len])
}

fn mresize_of_unmapped_address_returns_enotfound() -> Outcome {
    expect_errno("MRESIZE", mresize(slot(16), PAGE), Errno::ENOTFOUND)
}

fn mresize_inside_a_mapping_returns_enotfound() -> Outcome {
    let m = fixed(slot(17), 2 * PAGE, MapFlag::EMPTY)?;
    expect_errno("MRESIZE", mresize(m.addr + PAGE, PAGE), Errno::ENOTFOUND)?;
    expect_errno(
        "MRESIZE unaligned",
        mresize(m.addr + 8, PAGE),
        Errno::ENOTFOUND,
    )
}

fn mresize_of_the_program_image_returns_enotfound() -> Outcome {
    // Asked to grow, so that a kernel that wrongly accepts cannot take our text away.
    expect_errno("MRESIZE", mresize(image_start(), 1 << 30), Errno::ENOTFOUND)
}

fn mresize_to_length_0_returns_einval() -> Outcome {
    let m = fixed(slot(18), PAGE, MapFlag::EMPTY)?;
    expect_errno("MRESIZE", mresize(m.addr, 0), Errno::EINVAL)?;
    ensure!(readable(m.addr, PAGE)?, "the mapping went away");
    Ok(())
}

fn mresize_to_the_same_length_returns_0() -> Outcome {
    let m = fixed(slot(19), 2 * PAGE, MapFlag::EMPTY)?;
    expect_value("MRESIZE", mresize(m.addr, 2 * PAGE), 0)?;
    ensure!(readable(m.addr, 2 * PAGE)?, "pages went away");
    Ok(())
}

fn mresize_shrink_unmaps_the_tail() -> Outcome {
    let m = fixed(slot(20), 3 * PAGE, MapFlag::WRITE)?;
    m.set(0, 9);
    expect_value("MRESIZE", mresize(m.addr, PAGE + 1), 0)?;
    ensure!(readable(m.addr, 2 * PAGE)?, "the kept pages went away");
    ensure!(!readable(m.addr + 2 * PAGE, 1)?, "the tail is still mapped");
    ensure!(m.at(0) == 9, "the kept contents changed");
    Ok(())
}

fn mresize_grow_adds_zeroed_pages() -> Outcome {
    let m = fixed(slot(21), PAGE, MapFlag::WRITE)?;
    m.set(0, 0x33);
    expect_value("MRESIZE", mresize(m.addr, 3 * PAGE), 0)?;
    let grown = Mapping {
        addr: m.addr,
        len: 3 * PAGE,
    };
    core::mem::forget(m);
    ensure!(
        writable(grown.addr, 3 * PAGE)?,
        "the grown mapping is not all writable"
    );
    ensure!(grown.at(0) == 0x33, "the old contents changed");
    match grown.find_not(PAGE, 3 * PAGE, 0) {
        Some(at) => fail!("new byte {at:#x} is {:#x}", grown.at(at)),
        None => Ok(()),
    }
}

fn mresize_grow_into_a_mapping_returns_enomem() -> Outcome {
    let base = slot(22);
    let a = fixed(base, 2 * PAGE, MapFlag::EMPTY)?;
    let _b = fixed(base + 3 * PAGE, PAGE, MapFlag::EMPTY)?;
    expect_errno("MRESIZE", mresize(a.addr, 4 * PAGE), Errno::ENOMEM)?;
    ensure!(!readable(base + 2 * PAGE, 1)?, "a page was added anyway");
    Ok(())
}

fn mresize_grow_of_file_mapping_returns_enotsupp() -> Outcome {
    let file = make_pattern_file(scratch!("map-grow"), 3 * PAGE as usize)?;
    let m = mmap(h(&file), slot(23), 0, PAGE, MapFlag::READ)?;
    expect_errno("MRESIZE", mresize(m.addr, 2 * PAGE), Errno::ENOTSUPP)
}

fn mresize_grow_of_private_file_mapping_returns_enotsupp() -> Outcome {
    let file = make_pattern_file(scratch!("map-grow-private"), 3 * PAGE as usize)?;
    let flags = MapFlag::READ | MapFlag::WRITE | MapFlag::PRIVATE;
    let m = mmap(h(&file), slot(25), 0, PAGE, flags)?;
    expect_errno("MRESIZE", mresize(m.addr, 2 * PAGE), Errno::ENOTSUPP)
}

fn mresize_shrink_of_file_mapping_succeeds() -> Outcome {
    let file = make_pattern_file(scratch!("map-shrink"), 3 * PAGE as usize)?;
    let m = mmap(h(&file), slot(24), 0, 3 * PAGE, MapFlag::READ)?;
    expect_value("MRESIZE", mresize(m.addr, PAGE), 0)?;
    ensure!(!readable(m.addr + PAGE, 1)?, "the tail is still mapped");
    expect_pattern(&m, 0, PAGE, 0)
}

fn load_after_mresize_shrink_kills_with_pf() -> Outcome {
    expect_child("touch-after-mresize", killed(14))
}

// === the end ==============================================================================

fn scratch_tree_is_removed_entry_by_entry() -> Outcome {
    remove_tree(&mut String::from(SCRATCH))?;
    expect_err("OPENDIR", fs::opendir(SCRATCH), Errno::ENOTFOUND)?;
    if MADE_TMP.load(Ordering::Relaxed) {
        ok("RMDIR /tmp", fs::rmdir("/tmp"))?;
    }
    Ok(())
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, in the order it runs.
        const CASES: &[(&str, fn() -> Outcome)] = &[$((stringify!($name), $name)),*];
    };
}

cases! {
    // EXIT, EXEC, WAIT
    exit_code_reaches_wait_shifted_by_16,
    exit_keeps_only_the_low_16_bits_of_the_code,
    exec_returns_a_task_id_of_at_least_2,
    exec_gives_each_child_its_own_task_id,
    exec_of_missing_file_returns_enotfound,
    exec_of_non_elf_file_returns_enoexec,
    exec_of_empty_file_returns_enoexec,
    exec_of_truncated_elf_returns_enoexec,
    exec_of_directory_returns_eisdir,
    exec_of_path_through_a_file_returns_enotdir,
    exec_with_empty_root_returns_einval,
    exec_with_nonzero_flags_returns_einval,
    exec_with_missing_root_returns_enotfound,
    exec_with_a_file_as_root_returns_enotdir,
    exec_with_unmapped_path_returns_efault,
    exec_root_is_the_childs_root,
    exec_child_starts_with_only_the_log_handle,
    wait_for_task_1_returns_enotfound,
    wait_for_unknown_task_returns_enotfound,
    wait_for_reaped_child_returns_enotfound,
    wait_reports_invalid_opcode_as_killed_by_vector_6,
    wait_reports_page_fault_as_killed_by_vector_14,
    exec_and_wait_work_via_int80,
    // CLOSE and handles
    close_of_open_handle_returns_0,
    close_twice_returns_enotfound,
    close_of_never_opened_handle_returns_enotfound,
    closed_handle_is_unusable,
    log_handle_0_is_usable_until_closed,
    handles_are_allocated_lowest_free_first,
    handle_argument_ignores_the_upper_32_bits,
    open_beyond_the_handle_limit_returns_emfile,
    // OPEN
    open_of_missing_file_returns_enotfound,
    open_create_makes_an_empty_file,
    open_create_of_existing_file_opens_it_unchanged,
    open_create_of_new_file_is_read_write_whatever_the_mode,
    open_create_of_existing_file_keeps_the_requested_access,
    open_with_mode_0_can_neither_read_nor_write,
    open_read_only_then_write_returns_erdonly,
    open_write_only_then_read_returns_ewronly,
    open_append_starts_at_the_end_of_file,
    open_append_moves_to_the_end_only_once,
    open_trunc_with_write_empties_the_file,
    open_trunc_without_write_returns_erdonly,
    open_every_mode_combination_on_existing_file,
    open_create_with_every_mode_makes_a_read_write_handle,
    open_with_unknown_mode_bits_returns_einval,
    open_with_unknown_flag_bits_returns_einval,
    open_of_directory_returns_eisdir,
    open_create_of_directory_returns_eisdir,
    open_of_path_through_a_file_returns_enotdir,
    open_create_with_missing_parent_returns_enotfound,
    open_of_root_or_empty_path_returns_einval,
    open_of_4096_byte_path_returns_enametoolong,
    open_of_4095_byte_path_is_walked,
    open_create_with_255_byte_name_succeeds,
    open_create_with_256_byte_name_returns_enametoolong,
    open_of_non_utf8_path_returns_einval,
    open_of_unmapped_path_returns_efault,
    open_of_kernel_half_path_returns_efault,
    open_of_non_canonical_path_returns_efault,
    open_of_path_running_into_unmapped_page_returns_efault,
    open_ignores_repeated_and_trailing_slashes,
    open_treats_dot_as_an_ordinary_name,
    file_calls_work_via_int80,
    // READ and WRITE
    write_returns_the_count_and_advances_the_position,
    read_returns_bytes_from_the_position,
    read_at_end_of_file_returns_0,
    read_near_the_end_returns_the_remaining_bytes,
    read_and_write_of_0_bytes_return_0,
    write_spanning_pages_reads_back_intact,
    positions_are_per_handle,
    write_is_visible_through_another_handle,
    write_past_end_of_file_leaves_a_zero_filled_gap,
    read_of_log_handle_returns_ewronly,
    write_of_0_bytes_to_log_handle_returns_0,
    write_to_log_handle_returns_the_count,
    log_file_holds_each_line_with_its_task_prefix,
    read_of_unknown_handle_returns_enotfound,
    write_of_unknown_handle_returns_enotfound,
    read_of_directory_handle_returns_enotsupp,
    write_of_directory_handle_returns_enotsupp,
    read_into_unmapped_buffer_returns_efault_and_keeps_the_position,
    read_into_kernel_half_returns_efault,
    read_into_read_only_memory_returns_efault,
    read_into_range_straddling_user_end_returns_efault,
    write_from_unmapped_buffer_returns_efault_and_changes_nothing,
    write_from_kernel_half_returns_efault,
    write_from_non_canonical_address_returns_efault,
    write_from_range_straddling_user_end_returns_efault,
    write_with_wrapping_length_returns_efault,
    read_at_end_of_file_into_unmapped_buffer_returns_efault,
    read_with_wrapping_length_returns_efault,
    write_with_wrapping_length_from_mapped_memory_returns_efault,
    write_from_read_only_memory_succeeds,
    // SEEK
    seek_absolute_sets_the_position,
    seek_absolute_past_the_end_clamps_to_the_size,
    seek_relative_moves_both_ways,
    seek_relative_before_the_start_clamps_to_0,
    seek_relative_past_the_end_clamps_to_the_size,
    seek_end_0_goes_to_the_size,
    seek_end_with_positive_offset_moves_backwards,
    seek_end_beyond_the_size_clamps_to_0,
    seek_end_with_negative_offset_clamps_to_0,
    seek_with_unknown_mode_returns_einval,
    seek_of_directory_handle_returns_enotsupp,
    seek_of_directory_with_unknown_mode_returns_einval,
    seek_of_log_handle_returns_0,
    seek_of_unknown_handle_returns_enotfound,
    // TRUNCATE
    truncate_shrinks_and_returns_the_new_size,
    truncate_to_the_same_size_returns_it,
    truncate_to_grow_returns_einval,
    truncate_without_write_returns_erdonly,
    truncate_pulls_the_position_back,
    truncate_then_growth_shows_zeros_not_old_data,
    truncate_of_non_file_handles_returns_enotsupp,
    truncate_of_unknown_handle_returns_enotfound,
    // UNLINK
    unlink_removes_the_name,
    unlink_of_directory_returns_eisdir,
    unlink_of_missing_file_returns_enotfound,
    unlink_of_path_through_a_file_returns_enotdir,
    unlink_of_root_returns_einval,
    unlinked_file_stays_usable_through_open_handles,
    name_recreated_after_unlink_is_a_new_file,
    // OPENDIR and READDIR
    readdir_fills_272_byte_dirents,
    readdir_of_root_lists_the_scratch_parent,
    readdir_with_count_0_returns_0_and_keeps_the_cursor,
    readdir_one_at_a_time_then_0_at_the_end,
    readdir_of_empty_directory_returns_0,
    readdir_is_a_snapshot_taken_at_opendir,
    readdir_reports_the_file_size_when_it_runs,
    readdir_lists_in_insertion_order,
    removal_moves_the_last_entry_into_the_gap,
    readdir_returns_a_255_byte_name_whole,
    readdir_into_unmapped_buffer_returns_efault_and_keeps_the_cursor,
    readdir_at_the_end_into_unmapped_buffer_returns_efault,
    readdir_of_file_handle_returns_enotsupp,
    readdir_of_unknown_handle_returns_enotfound,
    opendir_of_file_returns_enotdir,
    opendir_of_missing_directory_returns_enotfound,
    opendir_of_empty_path_returns_einval,
    opendir_of_unmapped_path_returns_efault,
    // MKDIR and RMDIR
    mkdir_creates_an_empty_directory,
    mkdir_of_existing_name_returns_eexist,
    mkdir_with_missing_parent_returns_enotfound,
    mkdir_through_a_file_returns_enotdir,
    mkdir_of_root_returns_einval,
    rmdir_removes_an_empty_directory,
    rmdir_of_non_empty_directory_returns_enotempty,
    rmdir_of_file_returns_enotdir,
    rmdir_of_missing_directory_returns_enotfound,
    rmdir_of_root_returns_einval,
    open_directory_handle_survives_rmdir,
    // CAPABILITIES
    capabilities_count_is_2,
    capabilities_vm_bitmap_is_0,
    capabilities_features_name_the_copra_kvm_platform,
    capabilities_index_3_returns_enotfound,
    capabilities_via_int80_match_the_doorbell,
    // unknown numbers, the entries
    unknown_core_index_returns_enosys_via_doorbell,
    unknown_core_index_returns_enosys_via_int80,
    unknown_file_index_returns_enosys,
    reserved_vmm_class_returns_enosys,
    unknown_class_returns_enosys_via_doorbell,
    unknown_class_returns_enosys_via_int80,
    all_ones_syscall_number_returns_enosys_on_both_entries,
    known_number_with_extra_high_bits_returns_enosys,
    syscall_changes_only_rax_via_doorbell,
    syscall_changes_only_rax_via_int80,
    // MMAP
    mmap_anonymous_returns_zeroed_page_aligned_memory,
    mmap_anonymous_with_write_is_writable,
    mmap_without_write_is_read_only,
    mmap_without_hint_is_placed_at_or_above_mmap_base,
    mmap_with_free_hint_uses_it,
    mmap_with_taken_hint_places_elsewhere,
    mmap_length_is_rounded_up_to_whole_pages,
    mmap_with_unknown_flag_bits_returns_einval,
    mmap_without_read_returns_einval,
    mmap_write_and_exec_together_returns_eperm,
    mmap_with_length_0_returns_einval,
    mmap_with_unaligned_hint_returns_einval,
    mmap_anonymous_with_offset_returns_einval,
    mmap_of_file_at_unaligned_offset_returns_einval,
    mmap_fixed_below_user_start_returns_einval,
    mmap_fixed_reaching_the_stack_area_returns_einval,
    mmap_fixed_in_kernel_half_returns_einval,
    mmap_fixed_just_below_the_stack_area_succeeds,
    mmap_fixed_at_free_address_maps_there,
    mmap_fixed_over_a_mapping_returns_eexist,
    mmap_fixed_over_the_program_image_returns_eexist,
    mmap_hint_over_the_program_image_places_elsewhere,
    mmap_anonymous_ignores_the_handle,
    mmap_read_exec_anonymous_succeeds,
    mmap_of_file_read_only_shows_its_contents,
    mmap_of_file_read_only_sees_later_writes,
    mmap_of_file_reads_zero_past_the_end_of_file,
    mmap_of_file_at_offset_maps_from_there,
    mmap_of_file_from_past_the_end_reads_zero,
    mmap_of_file_private_write_is_a_private_copy,
    mmap_of_file_write_without_private_returns_enotsupp,
    mmap_of_unknown_handle_returns_enotfound,
    mmap_of_non_file_handles_returns_enotsupp,
    mmap_of_file_without_read_access_returns_ewronly,
    mmap_of_file_read_only_is_not_writable,
    store_to_read_only_mapping_kills_with_pf,
    mmap_works_via_int80,
    // MUNMAP
    munmap_of_unaligned_address_returns_einval,
    munmap_with_length_0_returns_einval,
    munmap_outside_user_space_returns_einval,
    munmap_of_unmapped_range_returns_enotfound,
    munmap_removes_the_mapping,
    munmap_of_middle_page_splits_the_mapping,
    munmap_of_partly_mapped_range_unmaps_the_mapped_part,
    munmap_length_is_rounded_up_to_whole_pages,
    munmap_spanning_two_mappings_removes_both,
    load_after_munmap_kills_with_pf,
    // MRESIZE
    mresize_of_unmapped_address_returns_enotfound,
    mresize_inside_a_mapping_returns_enotfound,
    mresize_of_the_program_image_returns_enotfound,
    mresize_to_length_0_returns_einval,
    mresize_to_the_same_length_returns_0,
    mresize_shrink_unmaps_the_tail,
    mresize_grow_adds_zeroed_pages,
    mresize_grow_into_a_mapping_returns_enomem,
    mresize_grow_of_file_mapping_returns_enotsupp,
    mresize_grow_of_private_file_mapping_returns_enotsupp,
    mresize_shrink_of_file_mapping_succeeds,
    load_after_mresize_shrink_kills_with_pf,
    // last: remove what the suite made
    scratch_tree_is_removed_entry_by_entry,
}

fn main() -> u32 {
    if let Err(why) = setup() {
        println!("FAIL setup: {why}");
        println!("SUMMARY 0/{}", CASES.len());
        return 1;
    }
    let mut passed = 0;
    for (name, case) in CASES {
        match case() {
            Ok(()) => {
                passed += 1;
                println!("PASS {name}");
            }
            Err(why) => println!("FAIL {name}: {why}"),
        }
        syscall::set_entry(Entry::DOORBELL); // whatever a failed case left behind
    }
    println!("SUMMARY {passed}/{}", CASES.len());
    u32::from(passed != CASES.len())
}
