//! What most programs want in scope: `use libcopra::prelude::*;`.
//!
//! `alloc`'s owned types and macros (`Box`, `String`, `Vec`, `format!`, `vec!` …),
//! the collections, the I/O traits, `print!`/`println!`.

pub use alloc::borrow::ToOwned;
pub use alloc::boxed::Box;
pub use alloc::format;
pub use alloc::rc::Rc;
pub use alloc::string::{String, ToString};
pub use alloc::sync::Arc;
pub use alloc::vec;
pub use alloc::vec::Vec;

pub use crate::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
pub use crate::io::{Read, Seek, SeekFrom, Write};
pub use crate::{print, println};
