//! init: copra's first process.
//!
//! Reads `/etc/init.services` from the RAM fs (one program path per line; blank lines
//! and lines starting with `#` are ignored; surrounding spaces are trimmed), EXECs
//! each program, prints one line per service saying it started (with its task id) or
//! why not, then WAITs for every started child and prints how it ended.
//!
//! Exits 0 when every service started and exited with status 0, 1 otherwise. A
//! kernel without WAIT is tolerated: init then does not wait and decides on the starts
//! alone. Such a kernel answers ENOSYS, or EINVAL as upstream COCONUT-SVSM answers any
//! unknown number (copra's WAIT never answers EINVAL).

#![no_std]
#![no_main]

use libcopra::abi::Errno;
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::process::{ExitStatus, exec, wait};
use libcopra::{declare_main, println};

declare_main!(main);

const CONFIG: &str = "/etc/init.services";
/// Largest configuration file read.
const CONFIG_MAX: usize = 4096;
/// Most services started.
const SERVICES_MAX: usize = 64;

struct Started<'a> {
    path: &'a str,
    task: u64,
}

fn main() -> u32 {
    println!("copra init starting");
    let mut buf = [0u8; CONFIG_MAX];
    let config = match read_config(&mut buf) {
        Ok(config) => config,
        Err(why) => {
            println!("init: cannot read {CONFIG}: {why}");
            return 1;
        }
    };

    let mut started: [Option<Started<'_>>; SERVICES_MAX] = [const { None }; SERVICES_MAX];
    let mut count = 0;
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
        if count == SERVICES_MAX {
            println!("service {path}: not started: more than {SERVICES_MAX} services");
            failures += 1;
            continue;
        }
        match exec(path) {
            Ok(task) => {
                println!("service {path}: started as task {task}");
                started[count] = Some(Started { path, task });
                count += 1;
            }
            Err(e) => {
                println!("service {path}: not started: {e}");
                failures += 1;
            }
        }
    }

    for service in started.iter().flatten() {
        match wait(service.task) {
            Ok(status) => {
                println!("service {} (task {}): {status}", service.path, service.task);
                if status != ExitStatus::Exited(0) {
                    failures += 1;
                }
            }
            Err(e) if e.is(Errno::ENOSYS) || e.is(Errno::EINVAL) => {
                println!("init: WAIT is not implemented ({e}); not waiting for services");
                break;
            }
            Err(e) => {
                println!(
                    "service {} (task {}): wait failed: {e}",
                    service.path, service.task
                );
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

/// Reads the whole configuration file into `buf`.
fn read_config(buf: &mut [u8; CONFIG_MAX]) -> Result<&[u8], ConfigError> {
    let file = fs::open(CONFIG, FileMode::READ, FileFlag::EMPTY).map_err(ConfigError::Kernel)?;
    let mut len = 0;
    while len < buf.len() {
        match fs::read(&file, &mut buf[len..]).map_err(ConfigError::Kernel)? {
            0 => return Ok(&buf[..len]),
            n => len += n,
        }
    }
    // Full: one more byte means the file is larger than init is willing to read.
    match fs::read(&file, &mut [0u8; 1]).map_err(ConfigError::Kernel)? {
        0 => Ok(&buf[..len]),
        _ => Err(ConfigError::TooLarge),
    }
}
