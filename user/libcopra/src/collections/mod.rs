//! Collections: `alloc`'s, and the hash map and set written here.
//!
//! `Vec`, `String`, `VecDeque`, `BTreeMap`, `BTreeSet`, `BinaryHeap`, `LinkedList`
//! come from Rust's `alloc` crate and are re-exported; [`HashMap`] and [`HashSet`]
//! are libcopra's own (`alloc` has none: std's lives in `std`, on crates.io as
//! hashbrown): Robin Hood open addressing keyed by [`SipHasher13`] with a random key
//! ([`RandomState`]).

mod hash;
pub mod hash_map;
mod hash_set;

pub use alloc::collections::{BTreeMap, BTreeSet, BinaryHeap, LinkedList, VecDeque};
pub use alloc::string::String;
pub use alloc::vec::Vec;

pub use self::hash::{RandomState, SipHasher, SipHasher13, SipHasher24};
pub use self::hash_map::HashMap;
pub use self::hash_set::HashSet;

#[cfg(test)]
mod tests;
