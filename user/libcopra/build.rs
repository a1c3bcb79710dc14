//! Relinks every program when the shared linker script changes.
//!
//! The script is passed by `.cargo/config.toml` (`-Tlink.ld`), which cargo does not
//! track; a change to it re-runs this script, which rebuilds libcopra and with it
//! every program that depends on it.

fn main() {
    println!("cargo:rerun-if-changed=../link.ld");
    println!("cargo:rerun-if-changed=build.rs");
}
