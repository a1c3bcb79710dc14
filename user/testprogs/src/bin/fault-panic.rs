//! fault-panic: panics. The user library's panic handler must print the message and
//! its location to the task log and exit with code 0xFFFF (status 0xFFFF << 16).

#![no_std]
#![no_main]

use libcopra::{declare_main, println};

declare_main!(main);

fn main() -> u32 {
    println!("fault-panic: about to panic");
    let values = [1u32, 2, 3];
    let index = values.len() + usize::from(values[0] == 1);
    // An out-of-bounds index the compiler cannot prove at build time.
    values[core::hint::black_box(index)]
}
