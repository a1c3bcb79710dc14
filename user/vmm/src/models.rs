//! Device-model processes: the vmm starts each with EXEC_HANDLES moving in only its
//! objects (its device event, its IRQ object, for the block device the guest-RAM
//! handle), then one more handle, a channel endpoint, over which it sends the model's
//! configuration, a few `key value` lines (`name`, `ram`, `clock`, `crash`). It keeps no handle
//! on the moved objects. A thread per model waits for the process and reports when it
//! ends while the vmm runs; the guest then reads all ones on the model's ports (the
//! kernel answers a pending access with all ones and the vCPU reports DEVICE_GONE,
//! main.rs, which the vmm reports too).
//!
//! /etc/vmm.conf may hold fault-injection lines for tests: `crash MODEL N` makes the
//! model MODEL (`uart`, `blk`, `rtc`) of every guest die by a CPU exception when it takes its
//! N-th access, without answering it.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use libcopra::abi::{FileFlag, FileMode};
use libcopra::channel::{self, Endpoint};
use libcopra::handle::Handle;
use libcopra::process::{Child, Command};
use libcopra::{fs, println, thread};

const VMM_CONF: &str = "/etc/vmm.conf";
/// The wall clock the boot publishes: `UNIX_NS MONO_NS`, UTC nanoseconds since the
/// epoch at the kernel's monotonic CLOCK MONO_NS (docs/vmm.md, "The RTC").
const CLOCK: &str = "/etc/clock";

/// The `clock` configuration line for the RTC model from /etc/clock, if it has one.
pub fn wall_clock() -> String {
    let Ok(file) = fs::open(CLOCK, FileMode::READ, FileFlag::from_bits_retain(0)) else {
        return String::new();
    };
    let mut buf = [0u8; 64];
    let n = fs::read(&file, &mut buf).unwrap_or(0);
    match core::str::from_utf8(&buf[..n]).ok().and_then(|t| t.lines().next()) {
        Some(line) if !line.trim().is_empty() => alloc::format!("clock {}\n", line.trim()),
        _ => String::new(),
    }
}

/// The configuration lines /etc/vmm.conf gives `model` (`crash N`), if any.
pub fn faults(_index: u32, model: &str) -> String {
    let mut out = String::new();
    let Ok(file) = fs::open(VMM_CONF, FileMode::READ, FileFlag::from_bits_retain(0)) else {
        return out;
    };
    let mut buf = [0u8; 1024];
    let n = fs::read(&file, &mut buf).unwrap_or(0);
    let text = core::str::from_utf8(&buf[..n]).unwrap_or("");
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if let (Some("crash"), Some(name), Some(n)) = (words.next(), words.next(), words.next()) {
            if name == model {
                out.push_str(&alloc::format!("crash {n}\n"));
            }
        }
    }
    out
}

struct Watch {
    name: String,
    program: &'static str,
    child: Child,
    /// The vmm's end of the configuration channel, kept while the model lives.
    _end: Endpoint,
}

/// Start `program`, the model of `what` for guest `name`, with `handles` moved into it
/// (ids 1..n, then the channel at n+1) and send it `config`; false if it could not be
/// started (the handles are then closed).
pub fn spawn(index: u32, name: &str, what: &str, program: &'static str, handles: Vec<Handle>,
             config: &str) -> bool {
    let (ours, theirs) = match channel::create() {
        Ok(pair) => pair,
        Err(e) => {
            println!("vmm: vm{index}: no channel for {program}: {e:?}");
            return false;
        }
    };
    let mut command = Command::new(program);
    for handle in handles {
        command = command.handle(handle);
    }
    let child = match command.handle(theirs.into_handle()).spawn() {
        Ok(child) => child,
        Err(e) => {
            println!("vmm: vm{index}: cannot start the device model {program}: {e:?}");
            return false;
        }
    };
    println!("vmm: {name}: {what} is task {} ({program})", child.id());
    if let Err(e) = ours.send(config.as_bytes(), Vec::new()) {
        println!("vmm: vm{index}: cannot configure {program}: {:?}", libcopra::error::Error::from(e));
    }
    let watch = Box::leak(Box::new(Watch { name: String::from(name), program, child, _end: ours }));
    if let Err(e) = thread::spawn(watch_model, watch as *mut Watch as u64) {
        println!("vmm: vm{index}: no thread to watch {program}: {e:?}");
    }
    true
}

fn watch_model(arg: u64) -> u32 {
    // SAFETY: `spawn` leaked the Watch for this thread, which alone uses it.
    let watch = unsafe { &mut *(arg as *mut Watch) };
    let task = watch.child.id();
    match watch.child.wait() {
        Ok(status) => println!("vmm: {}: device model {} (task {task}) {status}; its ports read all ones",
                               watch.name, watch.program),
        Err(e) => println!("vmm: {}: WAIT for {} (task {task}): {e:?}", watch.name, watch.program),
    }
    0
}
