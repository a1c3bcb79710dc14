//! The iteration count of a benchmark program: a decimal integer in a file, or a
//! default when the file does not exist. Included by the bench programs with
//! `#[path = "../bench_n.rs"] mod bench_n;`.

use libcopra::abi::Errno;
use libcopra::fs::{self, FileFlag, FileMode};

/// N from the file at `path`, or `default` when there is no file.
pub fn iterations(path: &str, default: u64) -> Result<u64, &'static str> {
    let file = match fs::open(path, FileMode::READ, FileFlag::EMPTY) {
        Ok(file) => file,
        Err(e) if e.is(Errno::ENOTFOUND) => return Ok(default),
        Err(_) => return Err("cannot open"),
    };
    let mut buf = [0u8; 32];
    let len = fs::read(&file, &mut buf).map_err(|_| "cannot read")?;
    let text = buf[..len].trim_ascii();
    if text.is_empty() {
        return Err("empty");
    }
    let mut n: u64 = 0;
    for &digit in text {
        if !digit.is_ascii_digit() {
            return Err("not a decimal integer");
        }
        n = n
            .checked_mul(10)
            .and_then(|n| n.checked_add(u64::from(digit - b'0')))
            .ok_or("too large")?;
    }
    Ok(n)
}
