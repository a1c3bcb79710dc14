//! [`HashMap`]: open addressing with Robin Hood probing and backward-shift deletion.
//!
//! Invariants (`cap` = `slots.len()`, a power of two or 0):
//! - an entry with hash `h` lives at `(h + d) % cap` for its displacement `d >= 0`,
//!   and every slot between its ideal slot and it is full;
//! - an insert takes the place of any entry nearer its own ideal slot than the new
//!   one is to its (Robin Hood), so a lookup stops at the first entry whose
//!   displacement is smaller than the distance it has probed;
//! - removal shifts the following entries back by one until an empty slot or an entry
//!   at its ideal slot, so no tombstones exist;
//! - `len <= cap * 7 / 8`: the table doubles before an insert would pass that.
//!
//! The hasher defaults to [`RandomState`] (SipHash-1-3 with a random key), so
//! iteration order differs between runs and an attacker cannot choose colliding keys.
//! Entries are `Option`s in a `Vec`: no unsafe code.

use alloc::vec::Vec;
use core::borrow::Borrow;
use core::fmt;
use core::hash::{BuildHasher, Hash};
use core::mem;
use core::ops::Index;

use super::hash::RandomState;

struct Bucket<K, V> {
    hash: u64,
    key: K,
    value: V,
}

impl<K: Clone, V: Clone> Clone for Bucket<K, V> {
    fn clone(&self) -> Self {
        Self {
            hash: self.hash,
            key: self.key.clone(),
            value: self.value.clone(),
        }
    }
}

/// A hash map. Lookups take `&Q` for any `Q` the key borrows as (`&str` for
/// `String` keys).
pub struct HashMap<K, V, S = RandomState> {
    slots: Vec<Option<Bucket<K, V>>>,
    len: usize,
    hasher: S,
}

impl<K, V> HashMap<K, V, RandomState> {
    /// An empty map; allocates nothing until the first insert.
    pub fn new() -> Self {
        Self::with_hasher(RandomState::new())
    }

    /// An empty map with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self::with_capacity_and_hasher(capacity, RandomState::new())
    }
}

impl<K, V, S> HashMap<K, V, S> {
    /// An empty map hashing with `hasher`.
    pub const fn with_hasher(hasher: S) -> Self {
        Self {
            slots: Vec::new(),
            len: 0,
            hasher,
        }
    }

    /// An empty map with room for `capacity` entries, hashing with `hasher`.
    pub fn with_capacity_and_hasher(capacity: usize, hasher: S) -> Self {
        let mut map = Self::with_hasher(hasher);
        if capacity > 0 {
            map.slots = empty_slots(slots_for(capacity));
        }
        map
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Entries it holds before it grows.
    pub fn capacity(&self) -> usize {
        self.slots.len() / 8 * 7
    }

    /// The hasher.
    pub fn hasher(&self) -> &S {
        &self.hasher
    }

    /// Removes every entry, keeping the memory.
    pub fn clear(&mut self) {
        for slot in &mut self.slots {
            *slot = None;
        }
        self.len = 0;
    }

    /// The entries, in no particular order.
    pub fn iter(&self) -> Iter<'_, K, V> {
        Iter {
            slots: self.slots.iter(),
            left: self.len,
        }
    }

    /// The entries with mutable values.
    pub fn iter_mut(&mut self) -> IterMut<'_, K, V> {
        IterMut {
            slots: self.slots.iter_mut(),
            left: self.len,
        }
    }

    /// The keys.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &K> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// The values.
    pub fn values(&self) -> impl ExactSizeIterator<Item = &V> + '_ {
        self.iter().map(|(_, v)| v)
    }

    /// The values, mutable.
    pub fn values_mut(&mut self) -> impl ExactSizeIterator<Item = &mut V> + '_ {
        self.iter_mut().map(|(_, v)| v)
    }

    /// Takes every entry out; the map is empty afterwards and keeps its memory.
    pub fn drain(&mut self) -> IntoIter<K, V> {
        let cap = self.slots.len();
        let slots = mem::replace(&mut self.slots, empty_slots(cap));
        let left = mem::replace(&mut self.len, 0);
        IntoIter {
            slots: slots.into_iter(),
            left,
        }
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    fn displacement(&self, index: usize, hash: u64) -> usize {
        index.wrapping_sub(hash as usize) & self.mask()
    }
}

impl<K: Eq + Hash, V, S: BuildHasher> HashMap<K, V, S> {
    /// Makes room for `additional` more entries.
    pub fn reserve(&mut self, additional: usize) {
        let need = self.len.checked_add(additional).expect("capacity overflow");
        if need > self.capacity() {
            self.rehash(slots_for(need).max(self.slots.len() * 2));
        }
    }

    /// Gives memory back: the table shrinks to fit the entries.
    pub fn shrink_to_fit(&mut self) {
        let want = if self.len == 0 {
            0
        } else {
            slots_for(self.len)
        };
        if want < self.slots.len() {
            self.rehash(want);
        }
    }

    /// Inserts or replaces; returns the value the key had.
    pub fn insert(&mut self, key: K, value: V) -> Option<V> {
        let hash = self.hasher.hash_one(&key);
        if let Some(i) = self.find(hash, &key) {
            let bucket = self.slots[i].as_mut().expect("found slot is full");
            return Some(mem::replace(&mut bucket.value, value));
        }
        self.reserve(1);
        self.insert_new(Bucket { hash, key, value });
        None
    }

    /// The value of `key`.
    pub fn get<Q>(&self, key: &Q) -> Option<&V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.get_key_value(key).map(|(_, v)| v)
    }

    /// The stored key and value of `key`.
    pub fn get_key_value<Q>(&self, key: &Q) -> Option<(&K, &V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.find(self.hasher.hash_one(key), key)?;
        self.slots[i].as_ref().map(|b| (&b.key, &b.value))
    }

    /// The value of `key`, mutable.
    pub fn get_mut<Q>(&mut self, key: &Q) -> Option<&mut V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.find(self.hasher.hash_one(key), key)?;
        self.slots[i].as_mut().map(|b| &mut b.value)
    }

    /// Whether `key` is present.
    pub fn contains_key<Q>(&self, key: &Q) -> bool
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.find(self.hasher.hash_one(key), key).is_some()
    }

    /// Removes `key`; returns its value.
    pub fn remove<Q>(&mut self, key: &Q) -> Option<V>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.remove_entry(key).map(|(_, v)| v)
    }

    /// Removes `key`; returns the stored key and value.
    pub fn remove_entry<Q>(&mut self, key: &Q) -> Option<(K, V)>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let i = self.find(self.hasher.hash_one(key), key)?;
        let b = self.take_at(i);
        Some((b.key, b.value))
    }

    /// The entry of `key`, to read, insert or change in place.
    pub fn entry(&mut self, key: K) -> Entry<'_, K, V, S> {
        let hash = self.hasher.hash_one(&key);
        match self.find(hash, &key) {
            Some(index) => Entry::Occupied(OccupiedEntry { map: self, index }),
            None => Entry::Vacant(VacantEntry {
                map: self,
                hash,
                key,
            }),
        }
    }

    /// Keeps only the entries for which `keep` says true (each is asked once).
    pub fn retain(&mut self, mut keep: impl FnMut(&K, &mut V) -> bool) {
        let cap = self.slots.len();
        let old = mem::replace(&mut self.slots, empty_slots(cap));
        self.len = 0;
        for mut b in old.into_iter().flatten() {
            if keep(&b.key, &mut b.value) {
                self.insert_new(b);
            }
        }
    }

    fn find<Q>(&self, hash: u64, key: &Q) -> Option<usize>
    where
        K: Borrow<Q>,
        Q: Eq + ?Sized,
    {
        if self.len == 0 {
            return None;
        }
        let mask = self.mask();
        let mut i = hash as usize & mask;
        let mut distance = 0;
        loop {
            match &self.slots[i] {
                None => return None,
                Some(b) => {
                    if self.displacement(i, b.hash) < distance {
                        return None; // Robin Hood: it would have been placed before here
                    }
                    if b.hash == hash && b.key.borrow() == key {
                        return Some(i);
                    }
                }
            }
            i = (i + 1) & mask;
            distance += 1;
        }
    }

    /// Places a bucket whose key is absent (room reserved); returns where it landed.
    fn insert_new(&mut self, bucket: Bucket<K, V>) -> usize {
        let mask = self.mask();
        let mut carry = bucket;
        let mut i = carry.hash as usize & mask;
        let mut distance = 0;
        let mut landed = None;
        loop {
            let resident = match &self.slots[i] {
                None => None,
                Some(b) => Some(self.displacement(i, b.hash)),
            };
            match resident {
                None => {
                    self.slots[i] = Some(carry);
                    self.len += 1;
                    return landed.unwrap_or(i);
                }
                Some(d) if d < distance => {
                    // Take the place of the entry nearer its home; carry it on.
                    let slot = self.slots[i].as_mut().expect("resident slot is full");
                    mem::swap(slot, &mut carry);
                    landed.get_or_insert(i);
                    distance = d;
                }
                Some(_) => {}
            }
            i = (i + 1) & mask;
            distance += 1;
        }
    }

    /// Removes the entry at `i`, shifting its successors back.
    fn take_at(&mut self, i: usize) -> Bucket<K, V> {
        let mask = self.mask();
        let taken = self.slots[i].take().expect("take_at of an empty slot");
        self.len -= 1;
        let mut hole = i;
        loop {
            let next = (hole + 1) & mask;
            match &self.slots[next] {
                Some(b) if self.displacement(next, b.hash) > 0 => {
                    self.slots[hole] = self.slots[next].take();
                    hole = next;
                }
                _ => return taken,
            }
        }
    }

    fn rehash(&mut self, slots: usize) {
        let old = mem::replace(&mut self.slots, empty_slots(slots));
        self.len = 0;
        for bucket in old.into_iter().flatten() {
            self.insert_new(bucket);
        }
    }
}

/// Slots for `entries` at the maximum load of 7/8: a power of two, at least 8.
fn slots_for(entries: usize) -> usize {
    let need = entries
        .checked_mul(8)
        .expect("capacity overflow")
        .div_ceil(7);
    need.max(8).next_power_of_two()
}

fn empty_slots<K, V>(n: usize) -> Vec<Option<Bucket<K, V>>> {
    let mut v = Vec::with_capacity(n);
    v.resize_with(n, || None);
    v
}

// --- entries -------------------------------------------------------------------------

/// A key's place in the map: occupied or vacant.
pub enum Entry<'a, K, V, S> {
    /// The key is present.
    Occupied(OccupiedEntry<'a, K, V, S>),
    /// The key is absent.
    Vacant(VacantEntry<'a, K, V, S>),
}

/// A present key.
pub struct OccupiedEntry<'a, K, V, S> {
    map: &'a mut HashMap<K, V, S>,
    index: usize,
}

/// An absent key, with the hash computed.
pub struct VacantEntry<'a, K, V, S> {
    map: &'a mut HashMap<K, V, S>,
    hash: u64,
    key: K,
}

impl<'a, K: Eq + Hash, V, S: BuildHasher> Entry<'a, K, V, S> {
    /// The value, inserting `default` if absent.
    pub fn or_insert(self, default: V) -> &'a mut V {
        self.or_insert_with(|| default)
    }

    /// The value, inserting `make()` if absent.
    pub fn or_insert_with(self, make: impl FnOnce() -> V) -> &'a mut V {
        match self {
            Self::Occupied(e) => e.into_mut(),
            Self::Vacant(e) => e.insert(make()),
        }
    }

    /// The value, inserting `make(&key)` if absent.
    pub fn or_insert_with_key(self, make: impl FnOnce(&K) -> V) -> &'a mut V {
        match self {
            Self::Occupied(e) => e.into_mut(),
            Self::Vacant(e) => {
                let value = make(&e.key);
                e.insert(value)
            }
        }
    }

    /// The value, inserting `V::default()` if absent.
    pub fn or_default(self) -> &'a mut V
    where
        V: Default,
    {
        self.or_insert_with(V::default)
    }

    /// Changes the value in place if present.
    pub fn and_modify(mut self, f: impl FnOnce(&mut V)) -> Self {
        if let Self::Occupied(e) = &mut self {
            f(e.get_mut());
        }
        self
    }

    /// The key.
    pub fn key(&self) -> &K {
        match self {
            Self::Occupied(e) => e.key(),
            Self::Vacant(e) => &e.key,
        }
    }
}

impl<'a, K: Eq + Hash, V, S: BuildHasher> OccupiedEntry<'a, K, V, S> {
    fn bucket(&self) -> &Bucket<K, V> {
        self.map.slots[self.index].as_ref().expect("occupied entry")
    }

    fn bucket_mut(&mut self) -> &mut Bucket<K, V> {
        self.map.slots[self.index].as_mut().expect("occupied entry")
    }

    /// The stored key.
    pub fn key(&self) -> &K {
        &self.bucket().key
    }

    /// The value.
    pub fn get(&self) -> &V {
        &self.bucket().value
    }

    /// The value, mutable.
    pub fn get_mut(&mut self) -> &mut V {
        &mut self.bucket_mut().value
    }

    /// The value, for as long as the map is borrowed.
    pub fn into_mut(self) -> &'a mut V {
        &mut self.map.slots[self.index]
            .as_mut()
            .expect("occupied entry")
            .value
    }

    /// Replaces the value; returns the old one.
    pub fn insert(&mut self, value: V) -> V {
        mem::replace(self.get_mut(), value)
    }

    /// Removes the entry; returns its value.
    pub fn remove(self) -> V {
        self.map.take_at(self.index).value
    }
}

impl<'a, K: Eq + Hash, V, S: BuildHasher> VacantEntry<'a, K, V, S> {
    /// The key that would be inserted.
    pub fn key(&self) -> &K {
        &self.key
    }

    /// Takes the key back.
    pub fn into_key(self) -> K {
        self.key
    }

    /// Inserts `value`; returns it, in the map.
    pub fn insert(self, value: V) -> &'a mut V {
        self.map.reserve(1);
        let i = self.map.insert_new(Bucket {
            hash: self.hash,
            key: self.key,
            value,
        });
        &mut self.map.slots[i].as_mut().expect("just inserted").value
    }
}

// --- iterators -----------------------------------------------------------------------

/// The entries of a map, borrowed.
pub struct Iter<'a, K, V> {
    slots: core::slice::Iter<'a, Option<Bucket<K, V>>>,
    left: usize,
}

impl<'a, K, V> Iterator for Iter<'a, K, V> {
    type Item = (&'a K, &'a V);

    fn next(&mut self) -> Option<Self::Item> {
        for slot in self.slots.by_ref() {
            if let Some(b) = slot {
                self.left -= 1;
                return Some((&b.key, &b.value));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K, V> ExactSizeIterator for Iter<'_, K, V> {}

impl<K, V> Clone for Iter<'_, K, V> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
            left: self.left,
        }
    }
}

/// The entries of a map, values mutable.
pub struct IterMut<'a, K, V> {
    slots: core::slice::IterMut<'a, Option<Bucket<K, V>>>,
    left: usize,
}

impl<'a, K, V> Iterator for IterMut<'a, K, V> {
    type Item = (&'a K, &'a mut V);

    fn next(&mut self) -> Option<Self::Item> {
        for slot in self.slots.by_ref() {
            if let Some(b) = slot {
                self.left -= 1;
                return Some((&b.key, &mut b.value));
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K, V> ExactSizeIterator for IterMut<'_, K, V> {}

/// The entries of a map, owned.
pub struct IntoIter<K, V> {
    slots: alloc::vec::IntoIter<Option<Bucket<K, V>>>,
    left: usize,
}

impl<K, V> Iterator for IntoIter<K, V> {
    type Item = (K, V);

    fn next(&mut self) -> Option<Self::Item> {
        for b in self.slots.by_ref().flatten() {
            self.left -= 1;
            return Some((b.key, b.value));
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.left, Some(self.left))
    }
}

impl<K, V> ExactSizeIterator for IntoIter<K, V> {}

impl<K, V, S> IntoIterator for HashMap<K, V, S> {
    type Item = (K, V);
    type IntoIter = IntoIter<K, V>;

    fn into_iter(self) -> IntoIter<K, V> {
        IntoIter {
            slots: self.slots.into_iter(),
            left: self.len,
        }
    }
}

impl<'a, K, V, S> IntoIterator for &'a HashMap<K, V, S> {
    type Item = (&'a K, &'a V);
    type IntoIter = Iter<'a, K, V>;

    fn into_iter(self) -> Iter<'a, K, V> {
        self.iter()
    }
}

impl<'a, K, V, S> IntoIterator for &'a mut HashMap<K, V, S> {
    type Item = (&'a K, &'a mut V);
    type IntoIter = IterMut<'a, K, V>;

    fn into_iter(self) -> IterMut<'a, K, V> {
        self.iter_mut()
    }
}

// --- traits --------------------------------------------------------------------------

impl<K, V, S: Default> Default for HashMap<K, V, S> {
    fn default() -> Self {
        Self::with_hasher(S::default())
    }
}

impl<K: Clone, V: Clone, S: Clone> Clone for HashMap<K, V, S> {
    fn clone(&self) -> Self {
        Self {
            slots: self.slots.clone(),
            len: self.len,
            hasher: self.hasher.clone(),
        }
    }
}

impl<K: fmt::Debug, V: fmt::Debug, S> fmt::Debug for HashMap<K, V, S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<K: Eq + Hash, V: PartialEq, S: BuildHasher> PartialEq for HashMap<K, V, S> {
    fn eq(&self, other: &Self) -> bool {
        self.len == other.len && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl<K: Eq + Hash, V: Eq, S: BuildHasher> Eq for HashMap<K, V, S> {}

impl<K: Eq + Hash, V, S: BuildHasher> Extend<(K, V)> for HashMap<K, V, S> {
    fn extend<I: IntoIterator<Item = (K, V)>>(&mut self, iter: I) {
        let iter = iter.into_iter();
        self.reserve(iter.size_hint().0);
        for (k, v) in iter {
            self.insert(k, v);
        }
    }
}

impl<K: Eq + Hash, V, S: BuildHasher + Default> FromIterator<(K, V)> for HashMap<K, V, S> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut map = Self::default();
        map.extend(iter);
        map
    }
}

impl<K: Eq + Hash, V, const N: usize> From<[(K, V); N]> for HashMap<K, V, RandomState> {
    fn from(entries: [(K, V); N]) -> Self {
        entries.into_iter().collect()
    }
}

impl<K, Q, V, S> Index<&Q> for HashMap<K, V, S>
where
    K: Eq + Hash + Borrow<Q>,
    Q: Eq + Hash + ?Sized,
    S: BuildHasher,
{
    type Output = V;

    fn index(&self, key: &Q) -> &V {
        self.get(key).expect("no entry for the key")
    }
}
