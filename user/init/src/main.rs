//! init: copra's first process.
//!
//! Reads `/etc/init.services` from the RAM fs (one program path per line; blank lines
//! and lines starting with `#` are ignored; surrounding spaces are trimmed), EXECs
//! each program. A line `channel <path A> <path B>` starts two services connected by
//! a channel: init makes it and moves one endpoint into each with EXEC_HANDLES, so
//! each finds its end at handle 1 (`process::initial_handles`); if the second cannot
//! start, the first still runs with its peer closed. init prints one line per service saying it started (with its task id) or
//! why not, then WAITs for every started child and prints how it ended.
//!
//! Exits 0 when every service started and exited with status 0, 1 otherwise. A
//! kernel without WAIT is tolerated: init then does not wait and decides on the starts
//! alone. Such a kernel answers ENOSYS, or EINVAL as upstream COCONUT-SVSM answers any
//! unknown number (copra's WAIT never answers EINVAL). How many services can run at
//! once is the kernel's `children` limit: beyond it EXEC answers EAGAIN, which init
//! reports like any other failed start.

#![no_std]
#![no_main]

use libcopra::abi::Errno;
use libcopra::declare_main;
use libcopra::fs::File;
use libcopra::prelude::*;
use libcopra::channel;
use libcopra::process::{Child, Command, ExitStatus};

declare_main!(main);

const CONFIG: &str = "/etc/init.services";
/// Largest configuration file read.
const CONFIG_MAX: usize = 64 * 1024;

fn main() -> u32 {
    println!("copra init starting");
    let config = match read_config() {
        Ok(config) => config,
        Err(why) => {
            println!("init: cannot read {CONFIG}: {why}");
            return 1;
        }
    };

    let mut started: Vec<(&str, Child)> = Vec::new();
    let mut failures = 0u32;
    for line in config.split(|&b| b == b'\n') {
        let line = line.trim_ascii();
        if line.is_empty() || line[0] == b'#' {
            continue;
        }
        let Ok(path) = core::str::from_utf8(line) else {
            println!("init: skipping a line that is not UTF-8");
            failures += 1;
            continue;
        };
        if let Some(pair) = path.strip_prefix("channel ") {
            let mut paths = pair.split_ascii_whitespace();
            let (Some(a), Some(b), None) = (paths.next(), paths.next(), paths.next()) else {
                println!("init: `channel` takes two program paths: {path}");
                failures += 1;
                continue;
            };
            let ends = match channel::create() {
                Ok((x, y)) => [x, y],
                Err(e) => {
                    println!("init: no channel for {a} and {b}: {e}");
                    failures += 2;
                    continue;
                }
            };
            for (path, end) in [a, b].into_iter().zip(ends) {
                match Command::new(path).handle(end.into_handle()).spawn() {
                    Ok(child) => {
                        println!("service {path}: started as task {} with a channel", child.id());
                        started.push((path, child));
                    }
                    Err(e) => {
                        println!("service {path}: not started: {e}");
                        failures += 1;
                    }
                }
            }
            continue;
        }
        match Child::spawn(path) {
            Ok(child) => {
                println!("service {path}: started as task {}", child.id());
                started.push((path, child));
            }
            Err(e) => {
                println!("service {path}: not started: {e}");
                failures += 1;
            }
        }
    }

    let count = started.len();
    for (path, child) in &mut started {
        let task = child.id();
        match child.wait() {
            Ok(status) => {
                println!("service {path} (task {task}): {status}");
                if status != ExitStatus::Exited(0) {
                    failures += 1;
                }
            }
            Err(e) if e.is(Errno::ENOSYS) || e.is(Errno::EINVAL) => {
                println!("init: WAIT is not implemented ({e}); not waiting for services");
                break;
            }
            Err(e) => {
                println!("service {path} (task {task}): wait failed: {e}");
                failures += 1;
            }
        }
    }

    if failures == 0 {
        println!("init: {count} service(s) started, none failed");
        0
    } else {
        println!("init: {failures} service(s) failed");
        1
    }
}

/// Why the configuration could not be read.
enum ConfigError {
    Kernel(libcopra::Error),
    TooLarge,
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Kernel(e) => write!(f, "{e}"),
            Self::TooLarge => write!(f, "larger than {CONFIG_MAX} bytes"),
        }
    }
}

/// The whole configuration file, if it is at most CONFIG_MAX bytes.
fn read_config() -> Result<Vec<u8>, ConfigError> {
    let mut file = File::open(CONFIG).map_err(ConfigError::Kernel)?;
    let mut config = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match file.read(&mut chunk).map_err(ConfigError::Kernel)? {
            0 => return Ok(config),
            n if config.len() + n > CONFIG_MAX => return Err(ConfigError::TooLarge),
            n => config.extend_from_slice(&chunk[..n]),
        }
    }
}
