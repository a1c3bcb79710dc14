//! metadata-flood: several processes try to make the kernel hold unbounded host memory
//! through RAM-fs names and OPENDIR snapshots; a correct kernel answers ENOMEM (its
//! metadata budget) or EMFILE (the handle limit) and loses nothing.
//!
//! `/etc/flood.conf` holds `<children> <cap>`. The first process (init, root `/`)
//! makes `/w/<i>/` for each child with a `role` file and an empty `b/`, and EXECs
//! this same program from `/bin/flood` with root `/w/<i>`: a process that finds
//! `/role` is a child. Each child:
//!
//! 1. **names**: MKDIR `/b/d0`, `/b/d1`, ... until ENOMEM or `cap` directories;
//! 2. **frees** the last half of them (RMDIR), to leave room for snapshots;
//! 3. **snapshots**: OPENDIR `/b` again and again until EMFILE or ENOMEM, changing
//!    `/b` between two (MKDIR or RMDIR of `/b/churn`) so that no two OPENDIRs can
//!    share a snapshot, and keeping every handle open;
//! 4. prints `child: dirs <n> (<why>), freed <n>, opendirs <n> (<why>), churn refused
//!    <n>` and exits 0 without closing anything: the kernel must release the handles.
//!
//! Any other answer than the expected ones prints `FAIL ...` and exits 1. The parent
//! WAITs each child (`child <i>: <status>`), then removes every name the children
//! left (their directories are numbered, so it needs no OPENDIR, which the spent
//! budget may refuse) and `/w`, and prints `FLOOD DONE <n> names removed`. It exits 0
//! iff every child exited 0 and everything could be removed.

#![no_std]
#![no_main]

use core::fmt::Write;

use libcopra::abi::Errno;
use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::process::{exec_in, wait};
use libcopra::{Error, declare_main, println};

declare_main!(main);

const CONF: &str = "/etc/flood.conf";
const ROLE: &str = "/role";
/// Where the children are started from: this program again, under another name.
const CHILD: &str = "/bin/flood";
const MAX_CHILDREN: u64 = 16;

/// A path built on the stack (no heap in these programs).
struct Path {
    buf: [u8; 128],
    len: usize,
}

impl Path {
    fn of(args: core::fmt::Arguments<'_>) -> Self {
        let mut path = Self {
            buf: [0; 128],
            len: 0,
        };
        let _ = path.write_fmt(args); // 128 bytes hold every path made here
        path
    }

    fn as_str(&self) -> &str {
        core::str::from_utf8(&self.buf[..self.len]).unwrap_or("")
    }
}

impl Write for Path {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        let end = self.len + s.len();
        if end > self.buf.len() {
            return Err(core::fmt::Error);
        }
        self.buf[self.len..end].copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

macro_rules! path {
    ($($arg:tt)*) => { Path::of(format_args!($($arg)*)) };
}

fn main() -> u32 {
    match fs::open(ROLE, FileMode::READ, FileFlag::EMPTY) {
        Ok(role) => {
            let mut buf = [0u8; 32];
            let len = fs::read(&role, &mut buf).unwrap_or(0);
            drop(role);
            match parse_words(&buf[..len]) {
                Some([cap, _]) => child(cap),
                None => {
                    println!("FAIL {ROLE}: not a number");
                    1
                }
            }
        }
        Err(e) if e.is(Errno::ENOTFOUND) => parent(),
        Err(e) => {
            println!("FAIL OPEN {ROLE}: {e}");
            1
        }
    }
}

// --- the children ----------------------------------------------------------------------

fn child(cap: u64) -> u32 {
    // 1. names
    let mut dirs = 0;
    let why = loop {
        if dirs == cap {
            break "cap";
        }
        match fs::mkdir(path!("/b/d{dirs}").as_str()) {
            Ok(()) => dirs += 1,
            Err(e) if e.is(Errno::ENOMEM) => break "ENOMEM",
            Err(e) => return fail("MKDIR", dirs, e),
        }
    };
    // 2. room for snapshots
    let keep = dirs / 2;
    for k in keep..dirs {
        if let Err(e) = fs::rmdir(path!("/b/d{k}").as_str()) {
            return fail("RMDIR", k, e);
        }
    }
    // 3. snapshots, each of a different state of /b, all kept open
    let mut opendirs = 0u64;
    let mut churn = false;
    let mut churn_refused = 0u64;
    let stop = loop {
        match fs::opendir("/b") {
            Ok(handle) => {
                let _ = handle.into_raw(); // held until the process ends
                opendirs += 1;
            }
            Err(e) if e.is(Errno::EMFILE) => break "EMFILE",
            Err(e) if e.is(Errno::ENOMEM) => break "ENOMEM",
            Err(e) => return fail("OPENDIR", opendirs, e),
        }
        let changed = if churn {
            fs::rmdir("/b/churn")
        } else {
            fs::mkdir("/b/churn")
        };
        match changed {
            Ok(()) => churn = !churn,
            Err(e) if e.is(Errno::ENOMEM) => churn_refused += 1,
            Err(e) => return fail("churn", opendirs, e),
        }
    };
    println!(
        "child: dirs {dirs} ({why}), freed {}, opendirs {opendirs} ({stop}), churn refused {churn_refused}",
        dirs - keep
    );
    0
}

fn fail(what: &str, n: u64, e: Error) -> u32 {
    println!("FAIL {what} #{n}: {e}");
    1
}

// --- the parent ------------------------------------------------------------------------

fn parent() -> u32 {
    let Some([children, cap]) = config() else {
        println!("FAIL {CONF}: want `<children> <cap>`, children 1 to {MAX_CHILDREN}");
        return 1;
    };
    println!("flood: {children} children, cap {cap}");
    let mut ok = true;
    let mut tasks = [0u64; MAX_CHILDREN as usize];
    let mut started = 0;
    if let Err(e) = fs::mkdir("/w") {
        return fail("MKDIR /w", 0, e);
    }
    for i in 0..children {
        match start(i, cap) {
            Ok(task) => {
                tasks[i as usize] = task;
                started += 1;
            }
            Err(e) => {
                ok = false;
                println!("FAIL starting child {i}: {e}");
                break;
            }
        }
    }
    for (i, &task) in tasks[..started].iter().enumerate() {
        match wait(task) {
            Ok(status) => {
                println!("child {i}: {status}");
                ok &= status.success();
            }
            Err(e) => {
                println!("FAIL WAIT child {i}: {e}");
                ok = false;
            }
        }
    }
    let mut removed = 0;
    for i in 0..children {
        match clean(i) {
            Ok(n) => removed += n,
            Err(why) => {
                println!("FAIL cleaning /w/{i}: {why}");
                ok = false;
            }
        }
    }
    if let Err(e) = fs::rmdir("/w") {
        println!("FAIL RMDIR /w: {e}");
        ok = false;
    }
    println!("FLOOD DONE {removed} names removed");
    u32::from(!ok)
}

/// Makes `/w/<i>` with its role file and `b/`, and EXECs this program there.
fn start(i: u64, cap: u64) -> libcopra::Result<u64> {
    fs::mkdir(path!("/w/{i}").as_str())?;
    fs::mkdir(path!("/w/{i}/b").as_str())?;
    let role = fs::open(
        path!("/w/{i}/role").as_str(),
        FileMode::WRITE,
        FileFlag::CREATE,
    )?;
    fs::write_all(&role, path!("{cap} 0\n").as_str().as_bytes())?;
    drop(role);
    exec_in(CHILD, path!("/w/{i}").as_str())
}

/// Removes everything a child left under `/w/<i>`; returns how many names went.
fn clean(i: u64) -> Result<u64, Error> {
    let mut removed = 0;
    let mut k = 0;
    loop {
        match fs::rmdir(path!("/w/{i}/b/d{k}").as_str()) {
            Ok(()) => removed += 1,
            Err(e) if e.is(Errno::ENOTFOUND) => break,
            Err(e) => return Err(e),
        }
        k += 1;
    }
    match fs::rmdir(path!("/w/{i}/b/churn").as_str()) {
        Ok(()) => removed += 1,
        Err(e) if e.is(Errno::ENOTFOUND) => {}
        Err(e) => return Err(e),
    }
    fs::rmdir(path!("/w/{i}/b").as_str())?;
    fs::unlink(path!("/w/{i}/role").as_str())?;
    fs::rmdir(path!("/w/{i}").as_str())?;
    Ok(removed + 3)
}

/// `(children, cap)` from the configuration file.
fn config() -> Option<[u64; 2]> {
    let file = fs::open(CONF, FileMode::READ, FileFlag::EMPTY).ok()?;
    let mut buf = [0u8; 64];
    let len = fs::read(&file, &mut buf).ok()?;
    let [children, cap] = parse_words(&buf[..len])?;
    (1..=MAX_CHILDREN)
        .contains(&children)
        .then_some([children, cap])
}

/// Two decimal numbers separated by whitespace.
fn parse_words(bytes: &[u8]) -> Option<[u64; 2]> {
    let text = core::str::from_utf8(bytes).ok()?;
    let mut words = text.split_ascii_whitespace();
    let first = words.next()?.parse().ok()?;
    let second = words.next()?.parse().ok()?;
    Some([first, second])
}
