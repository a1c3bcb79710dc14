//! Host tests of the hash map and set, against std's as the model.

extern crate std;

use alloc::format;
use alloc::rc::Rc;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::hash::{BuildHasher, Hasher};

use super::{HashMap, HashSet, RandomState};
use crate::random::splitmix64;

/// Every key hashes to the same few values: long probe sequences everywhere.
#[derive(Clone, Default)]
struct Clumping;

struct ClumpHasher(u64);

impl Hasher for ClumpHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.wrapping_add(u64::from(b));
        }
    }
    fn finish(&self) -> u64 {
        self.0 % 3
    }
}

impl BuildHasher for Clumping {
    type Hasher = ClumpHasher;
    fn build_hasher(&self) -> ClumpHasher {
        ClumpHasher(0)
    }
}

fn random_ops<S: BuildHasher + Default>(seed: u64, key_space: u64, ops: usize) {
    let mut ours: HashMap<u64, u64, S> = HashMap::default();
    let mut model = std::collections::HashMap::new();
    let mut state = seed;
    for op in 0..ops {
        let key = splitmix64(&mut state) % key_space;
        let value = splitmix64(&mut state);
        match splitmix64(&mut state) % 6 {
            0 | 1 | 2 => assert_eq!(ours.insert(key, value), model.insert(key, value), "op {op}"),
            3 => assert_eq!(ours.remove(&key), model.remove(&key), "op {op}"),
            4 => assert_eq!(ours.get(&key), model.get(&key), "op {op}"),
            _ => {
                *ours.entry(key).or_insert(0) += 1;
                *model.entry(key).or_insert(0) += 1;
            }
        }
        assert_eq!(ours.len(), model.len());
    }
    let mut a: Vec<_> = ours.iter().map(|(&k, &v)| (k, v)).collect();
    let mut b: Vec<_> = model.iter().map(|(&k, &v)| (k, v)).collect();
    a.sort_unstable();
    b.sort_unstable();
    assert_eq!(a, b);
    assert!(ours.capacity() >= ours.len());
}

#[test]
fn random_operations_agree_with_std() {
    random_ops::<RandomState>(1, 1000, 50_000);
    random_ops::<RandomState>(2, 50, 20_000);
}

#[test]
fn random_operations_agree_with_std_when_every_key_collides() {
    random_ops::<Clumping>(3, 300, 20_000);
}

#[test]
fn string_keys_are_found_by_str() {
    let mut m = HashMap::new();
    m.insert(String::from("one"), 1);
    m.insert("two".to_string(), 2);
    assert_eq!(m.get("one"), Some(&1));
    assert_eq!(m["two"], 2);
    assert!(m.contains_key("two"));
    assert_eq!(m.remove("one"), Some(1));
    assert_eq!(m.get("one"), None);
}

#[test]
fn entry_api_inserts_modifies_and_removes() {
    let mut m: HashMap<&str, i32> = HashMap::new();
    m.entry("a").or_insert(1);
    m.entry("a").and_modify(|v| *v += 10).or_insert(0);
    *m.entry("b").or_default() += 5;
    assert_eq!(m.entry("c").or_insert_with_key(|k| k.len() as i32), &mut 1);
    assert_eq!((m["a"], m["b"], m["c"]), (11, 5, 1));
    if let super::hash_map::Entry::Occupied(e) = m.entry("a") {
        assert_eq!(e.remove(), 11);
    }
    assert_eq!(m.len(), 2);
}

#[test]
fn values_are_dropped_exactly_once() {
    let token = Rc::new(());
    {
        let mut m = HashMap::new();
        for i in 0..1000 {
            m.insert(i, token.clone());
        }
        for i in 0..500 {
            m.remove(&i);
        }
        m.insert(0, token.clone());
        m.insert(0, token.clone()); // replaces: the old value drops
        assert_eq!(Rc::strong_count(&token), 502);
        m.retain(|k, _| k % 2 == 0);
        assert_eq!(Rc::strong_count(&token), 1 + m.len());
        let drained: Vec<_> = m.drain().collect();
        assert!(m.is_empty());
        assert_eq!(Rc::strong_count(&token), 1 + drained.len());
    }
    assert_eq!(Rc::strong_count(&token), 1);
}

#[test]
fn retain_asks_each_entry_once() {
    let mut m: HashMap<u32, u32> = (0..5000).map(|i| (i, i)).collect();
    let mut asked = 0;
    m.retain(|_, v| {
        asked += 1;
        *v % 3 == 0
    });
    assert_eq!(asked, 5000);
    assert_eq!(m.len(), 1667);
    assert!(m.keys().all(|k| k % 3 == 0));
}

#[test]
fn clone_eq_debug_and_iterators() {
    let m: HashMap<u8, char> = HashMap::from([(1, 'a'), (2, 'b')]);
    let c = m.clone();
    assert_eq!(m, c);
    let text = format!("{m:?}");
    assert!(
        text == "{1: 'a', 2: 'b'}" || text == "{2: 'b', 1: 'a'}",
        "{text}"
    );
    assert_eq!(m.iter().len(), 2);
    let mut owned: Vec<_> = m.into_iter().collect();
    owned.sort();
    assert_eq!(owned, [(1, 'a'), (2, 'b')]);
}

#[test]
fn shrink_to_fit_keeps_entries() {
    let mut m: HashMap<u32, u32> = (0..10_000).map(|i| (i, i * 2)).collect();
    m.retain(|k, _| *k < 10);
    m.shrink_to_fit();
    assert!(m.capacity() < 100);
    assert!((0..10).all(|i| m[&i] == i * 2));
}

#[test]
fn hash_set_behaves_like_a_set() {
    let mut s: HashSet<String> = ["x", "y"].iter().map(|s| s.to_string()).collect();
    assert!(!s.insert("x".into()));
    assert!(s.insert("z".into()));
    assert!(s.contains("y"));
    assert!(s.remove("y"));
    assert_eq!(s.len(), 2);
    let t: HashSet<String> = HashSet::from(["x".to_string(), "z".to_string(), "w".to_string()]);
    assert!(s.is_subset(&t));
    assert_ne!(s, t);
    assert_eq!(s.take("x"), Some("x".to_string()));
}
