#![no_std]
#![no_main]
use libcopra::declare_main;
declare_main!(main);
fn main() -> u32 { 0 }
