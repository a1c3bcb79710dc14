//! What the device-model programs (bin/uart.rs, bin/blk.rs) share: taking the handles
//! the vmm moved in at EXEC_HANDLES, reading its configuration message from the
//! channel that comes last (`key value` lines, models.rs), and the `crash N` fault
//! injection.

use alloc::string::String;
use alloc::vec::Vec;
use libcopra::Handle;
use libcopra::channel::Endpoint;
use libcopra::process;

pub struct Start {
    /// The moved objects, in the vmm's order (the channel taken off).
    pub handles: Vec<Handle>,
    pub config: String,
    /// Die at the N-th access taken (0: never).
    pub crash_at: u64,
}

/// The handles and the configuration; None (after saying why) if the vmm did not give
/// `count` objects and a channel.
#[allow(dead_code)] // blk's; uart takes 2 or 3 objects
pub fn start(program: &str, count: usize) -> Option<Start> {
    start_with(program, count, count)
}

/// As `start`, for a model given `least` to `most` objects (the config says which).
pub fn start_with(program: &str, least: usize, most: usize) -> Option<Start> {
    let mut handles = process::initial_handles();
    if handles.len() < least + 1 || handles.len() > most + 1 {
        libcopra::println!("{program}: expected {} to {} handles from the vmm, got {}", least + 1,
                           most + 1, handles.len());
        return None;
    }
    let channel = Endpoint::from_handle(handles.pop()?);
    let (bytes, _) = match channel.recv_vec() {
        Ok(message) => message,
        Err(e) => {
            libcopra::println!("{program}: no configuration from the vmm: {e:?}");
            return None;
        }
    };
    let config = String::from_utf8_lossy(&bytes).into_owned();
    let crash_at = value(&config, "crash").unwrap_or(0);
    Some(Start { handles, config, crash_at })
}

/// The value of the first `key` line.
pub fn text<'a>(config: &'a str, key: &str) -> Option<&'a str> {
    config.lines().find_map(|line| {
        let (k, v) = line.split_once(' ')?;
        (k == key).then_some(v.trim())
    })
}

pub fn value(config: &str, key: &str) -> Option<u64> {
    text(config, key)?.parse().ok()
}

/// The fault injection: the process dies on #UD, its access unanswered.
pub fn crash() -> ! {
    // SAFETY: ud2 raises #UD; the kernel ends the process.
    unsafe { core::arch::asm!("ud2", options(noreturn)) }
}
