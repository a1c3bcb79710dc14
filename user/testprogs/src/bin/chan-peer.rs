//! chan-peer: a service that greets the peer at the other end of the channel init gave
//! it (a `channel A B` line of /etc/init.services): it sends its task name's greeting,
//! prints the peer's, and exits 0; 1 when it has no channel or the peer is gone.

#![no_std]
#![no_main]

extern crate alloc;

use libcopra::channel::Endpoint;
use libcopra::process;
use libcopra::{declare_main, println};

declare_main!(main);

fn main() -> u32 {
    let Some(end) = process::initial_handles().into_iter().next() else {
        println!("chan-peer: no channel was given");
        return 1;
    };
    let end = Endpoint::from_handle(end);
    if end.send(b"hello through the channel", alloc::vec::Vec::new()).is_err() {
        println!("chan-peer: the peer is gone");
        return 1;
    }
    let mut buf = [0u8; 64];
    match end.recv(&mut buf) {
        Ok(got) => {
            println!("chan-peer got: {}", core::str::from_utf8(&buf[..got.len]).unwrap_or("?"));
            0
        }
        Err(e) => {
            println!("chan-peer: RECV: {e}");
            1
        }
    }
}
