//! lib-check: libcopra's owned types and collections under the real kernel.
//!
//! Checks `fs::File` (Read, Write, Seek), `read_file`/`read_to_string`/`write_file`,
//! `read_dir`, `process::Child`, `memory::Mapping` (unmapped on drop), `HashMap` and
//! `HashSet` with their random keys, `format!`, and that errors print their names.
//! Needs `/bin/hello` (any program that exits 0) in the RAM fs; works in `/lib-check`
//! and removes it. Prints `PASS <check>` or `FAIL <check>: <why>` per check and
//! `lib-check: <passed>/<total>`; exits 0 when every check passed.

#![no_std]
#![no_main]

use libcopra::abi::{Errno, FileType};
use libcopra::declare_main;
use libcopra::error::Error;
use libcopra::fs::{self, File};
use libcopra::heap;
use libcopra::memory::{MapFlag, Mapping, munmap};
use libcopra::prelude::*;
use libcopra::process::{Child, ExitStatus};

declare_main!(main);

type Check = Result<(), String>;

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !($cond) {
            return Err(format!($($arg)*));
        }
    };
}

fn ok<T>(what: &str, r: libcopra::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

const DIR: &str = "/lib-check";

fn file_reads_writes_and_seeks() -> Check {
    let mut f = ok("create", File::create("/lib-check/a"))?;
    ok("write_all", f.write_all(b"hello, "))?;
    ok("write!", write!(f, "world {}", 42))?;
    ensure!(ok("size", f.size())? == 15, "size after writing");
    ensure!(ok("seek", f.seek(SeekFrom::Start(7)))? == 7, "seek start");
    let mut rest = String::new();
    ok("read_to_string", f.read_to_string(&mut rest))?;
    ensure!(rest == "world 42", "read back {rest:?}");
    ensure!(
        ok("seek end", f.seek(SeekFrom::End(-2)))? == 13,
        "seek from the end"
    );
    let mut two = [0u8; 2];
    ok("read_exact", f.read_exact(&mut two))?;
    ensure!(&two == b"42", "read_exact got {two:?}");
    let eof = f.read_exact(&mut two);
    ensure!(
        eof == Err(Error::UNEXPECTED_EOF),
        "read_exact at the end: {eof:?}"
    );
    ensure!(
        f.seek(SeekFrom::End(1)).is_err_and(|e| e == Errno::EINVAL),
        "seek past the end"
    );
    Ok(())
}

fn whole_file_helpers_round_trip() -> Check {
    ok(
        "write_file",
        fs::write_file("/lib-check/b", b"\x00\x01\x02binary"),
    )?;
    let data = ok("read_file", fs::read_file("/lib-check/b"))?;
    ensure!(data == b"\x00\x01\x02binary", "read_file got {data:?}");
    ok("write_file", fs::write_file("/lib-check/b", &[0xff, 0xfe]))?;
    let text = fs::read_to_string("/lib-check/b");
    ensure!(text == Err(Error::INVALID_UTF8), "not UTF-8: {text:?}");
    let big: Vec<u8> = (0..300_000u32).map(|i| i as u8).collect();
    ok("write_file", fs::write_file("/lib-check/big", &big))?;
    ensure!(
        ok("read_file", fs::read_file("/lib-check/big"))? == big,
        "300 KB round trip"
    );
    Ok(())
}

fn read_dir_lists_every_entry() -> Check {
    ok("mkdir", fs::mkdir("/lib-check/d"))?;
    for i in 0..20 {
        ok(
            "write_file",
            fs::write_file(&format!("/lib-check/d/f{i:02}"), &[0; 3]),
        )?;
    }
    ok("mkdir", fs::mkdir("/lib-check/d/sub"))?;
    let mut names = BTreeSet::new();
    let mut dirs = 0;
    for entry in ok("read_dir", fs::read_dir("/lib-check/d"))? {
        let entry = ok("entry", entry)?;
        if entry.is_dir() {
            dirs += 1;
        } else {
            ensure!(
                entry.size() == 3 && entry.file_type() == Some(FileType::FILE),
                "{entry:?}"
            );
        }
        names.insert(entry.name().to_string());
    }
    ensure!(
        names.len() == 21 && dirs == 1,
        "{} names, {dirs} directories",
        names.len()
    );
    ensure!(
        names.contains("f07") && names.contains("sub"),
        "names {names:?}"
    );
    Ok(())
}

fn child_is_waited_for_once() -> Check {
    let mut child = ok("spawn", Child::spawn("/bin/hello"))?;
    ensure!(child.id() >= 2, "task id {}", child.id());
    ensure!(ok("wait", child.wait())? == ExitStatus::Exited(0), "status");
    ensure!(
        ok("wait again", child.wait())? == ExitStatus::Exited(0),
        "second wait"
    );
    let missing = Child::spawn("/bin/missing");
    ensure!(
        missing.is_err_and(|e| e == Errno::ENOTFOUND),
        "spawn of a missing file"
    );
    Ok(())
}

fn mapping_is_unmapped_on_drop() -> Check {
    let mut m = ok("anonymous", Mapping::anonymous(10_000))?;
    ensure!(
        m.len() == 12_288 && m.iter().all(|&b| b == 0),
        "fresh mapping"
    );
    let bytes = m.as_mut_slice().ok_or("not writable")?;
    bytes[12_287] = 7;
    ok("resize", m.resize(20_000))?;
    ensure!(
        m.len() == 20_480 && m[12_287] == 7 && m[20_479] == 0,
        "after resize"
    );
    let addr = m.addr();
    drop(m);
    // SAFETY: probing an address this program no longer uses; the kernel must say
    // nothing is mapped there.
    let again = unsafe { munmap(addr, 4096) };
    ensure!(
        again.is_err_and(|e| e == Errno::ENOTFOUND),
        "still mapped after drop: {again:?}"
    );
    let file = ok("open", File::open("/lib-check/a"))?;
    let view = ok("map", file.map(0, 15, MapFlag::READ))?;
    ensure!(&view[..15] == b"hello, world 42", "file mapping");
    let ro = ok("anonymous", Mapping::anonymous_with(4096, MapFlag::READ))?;
    let mut ro = ro;
    ensure!(
        ro.as_mut_slice().is_none(),
        "read-only mapping lent mutably"
    );
    Ok(())
}

fn hash_maps_count_and_differ_per_map() -> Check {
    let text = "the quick brown fox jumps over the lazy dog the end";
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for word in text.split(' ') {
        *counts.entry(word).or_default() += 1;
    }
    ensure!(counts["the"] == 3 && counts.len() == 9, "{counts:?}");
    let mut big: HashMap<String, u32> = HashMap::new();
    for i in 0..5000u32 {
        big.insert(format!("key{i}"), i);
    }
    ensure!(
        (0..5000).all(|i| big[format!("key{i}").as_str()] == i),
        "5000 keys"
    );
    big.retain(|_, v| *v % 2 == 0);
    ensure!(big.len() == 2500, "retain");
    let a: HashSet<u32> = (0..64).collect();
    let b: HashSet<u32> = (0..64).collect();
    let order_a: Vec<_> = a.iter().copied().collect();
    let order_b: Vec<_> = b.iter().copied().collect();
    ensure!(
        a == b && order_a != order_b,
        "two sets with their own keys iterate alike"
    );
    Ok(())
}

fn errors_print_their_names() -> Check {
    let missing = fs::read_file("/lib-check/missing").unwrap_err();
    ensure!(format!("{missing}") == "ENOTFOUND", "{missing}");
    ensure!(
        format!("{}", Error::UNEXPECTED_EOF) == "UNEXPECTED_EOF",
        "library code"
    );
    ensure!(
        format!("{:?}", Error::from(Errno::EISDIR)) == "Error(EISDIR)",
        "debug"
    );
    Ok(())
}

fn collections_of_alloc_work() -> Check {
    let mut tree = BTreeMap::new();
    let mut queue = VecDeque::new();
    for i in (0..1000).rev() {
        tree.insert(i, i * i);
        queue.push_front(Box::new(i));
    }
    let shared = Arc::new(vec![1u8; 100]);
    let other = Arc::clone(&shared);
    ensure!(
        tree.first_key_value() == Some((&0, &0)) && *queue[999] == 999,
        "tree/queue"
    );
    ensure!(Arc::strong_count(&other) == 2 && other.len() == 100, "arc");
    Ok(())
}

fn main() -> u32 {
    let checks: [(&str, fn() -> Check); 8] = [
        ("file_reads_writes_and_seeks", file_reads_writes_and_seeks),
        (
            "whole_file_helpers_round_trip",
            whole_file_helpers_round_trip,
        ),
        ("read_dir_lists_every_entry", read_dir_lists_every_entry),
        ("child_is_waited_for_once", child_is_waited_for_once),
        ("mapping_is_unmapped_on_drop", mapping_is_unmapped_on_drop),
        (
            "hash_maps_count_and_differ_per_map",
            hash_maps_count_and_differ_per_map,
        ),
        ("errors_print_their_names", errors_print_their_names),
        ("collections_of_alloc_work", collections_of_alloc_work),
    ];
    if let Err(e) = fs::mkdir(DIR) {
        println!("FAIL setup: mkdir {DIR}: {e}");
        return 1;
    }
    let mut passed = 0;
    for (name, check) in checks {
        match check() {
            Ok(()) => {
                passed += 1;
                println!("PASS {name}");
            }
            Err(why) => println!("FAIL {name}: {why}"),
        }
    }
    let cleaned = remove_tree(DIR);
    println!("lib-check: {passed}/{}", checks.len());
    let stats = heap::stats();
    println!("lib-check: heap {stats}");
    u32::from(passed != checks.len() || cleaned.is_err())
}

fn remove_tree(path: &str) -> libcopra::Result<()> {
    let entries: Vec<_> = fs::read_dir(path)?.collect::<libcopra::Result<_>>()?;
    for entry in entries {
        let child = format!("{path}/{}", entry.name());
        if entry.is_dir() {
            remove_tree(&child)?;
        } else {
            fs::unlink(&child)?;
        }
    }
    fs::rmdir(path)
}
