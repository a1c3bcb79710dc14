//! Roles for test programs that EXEC themselves: EXEC passes no arguments, so a
//! parent writes a child's role, one decimal digit, to `<root>/role` and EXECs the
//! same program with `<root>` as the child's root; the child reads `/role` there.
//! As init (its root the fs root, which has no `/role`) a program is the parent.

use libcopra::fs::{self, FileFlag, FileMode};
use libcopra::process::exec_in;
use libcopra::println;

/// The role this process was started with: `None` for the parent (no `/role`),
/// `Some(Err(()))` for a role file that does not hold one digit.
pub fn own_role() -> Option<Result<u8, ()>> {
    let file = fs::open("/role", FileMode::READ, FileFlag::EMPTY).ok()?;
    let mut buf = [0u8; 4];
    let len = fs::read(&file, &mut buf).unwrap_or(0);
    Some(match buf[..len] {
        [digit] if digit.is_ascii_digit() => Ok(digit - b'0'),
        _ => Err(()),
    })
}

/// Creates `<dir>/<role>/role` holding `role` (0-9) and EXECs `program` with
/// `<dir>/<role>` as the child's root; `dir` must exist. Returns the child's task id,
/// or prints why and returns `None`.
pub fn spawn_role(program: &str, dir: &str, role: u8) -> Option<u64> {
    let mut root_buf = [0u8; 64];
    let mut file_buf = [0u8; 72];
    let root = join(&mut root_buf, dir, &[b'/', b'0' + role])?;
    let file = join(&mut file_buf, root, b"/role")?;
    let written = fs::mkdir(root).and_then(|()| {
        let handle = fs::open(file, FileMode::WRITE, FileFlag::CREATE)?;
        fs::write_all(&handle, &[b'0' + role])
    });
    if written.is_err() {
        println!("cannot write {file}");
        return None;
    }
    match exec_in(program, root) {
        Ok(task) => Some(task),
        Err(e) => {
            println!("EXEC of role {role} failed: {e:?}");
            None
        }
    }
}

fn join<'a>(buf: &'a mut [u8], head: &str, tail: &[u8]) -> Option<&'a str> {
    let len = head.len() + tail.len();
    let out = buf.get_mut(..len)?;
    out[..head.len()].copy_from_slice(head.as_bytes());
    out[head.len()..].copy_from_slice(tail);
    core::str::from_utf8(out).ok()
}
