//! chan-demo: the two-process example of docs/user-library.md ("Channels"), kept
//! here so that it builds and runs (tests/e2e/test_channels.py). The text from
//! `#![no_std]` on is the example's, word for word.

#![no_std]
#![no_main]
use libcopra::channel::{self, Receiver, Sender};
use libcopra::event::Event;
use libcopra::prelude::*;
use libcopra::process::{self, Command};
use libcopra::declare_main;

declare_main!(main);

fn main() -> u32 {
    let mut given = process::initial_handles();
    if let Some(h) = given.pop() {
        // The child: a Receiver<u64> at handle 1. Each value comes with an event to signal.
        let rx = Receiver::<u64>::from_handle(h);
        while let Ok((n, handles)) = rx.recv_with() {
            for h in handles {
                let _ = Event::from_handle(h).signal(n); // the event moved here
            }
        }
        return 0; // recv answers EPIPE when the parent's Sender is gone
    }
    let (tx, rx): (Sender<u64>, Receiver<u64>) = channel::channel().unwrap();
    let mut child = Command::new("/bin/chan-demo").handle(rx.into_handle()).spawn().unwrap();
    let done = Event::new().unwrap();
    let theirs = channel::duplicate(&done, None).unwrap(); // a second handle, to give away
    tx.send_with(42, vec![theirs]).unwrap();
    println!("the child signalled {}", done.wait().unwrap()); // 42
    drop(tx);
    child.wait().map(|s| u32::from(!s.success())).unwrap_or(1)
}
