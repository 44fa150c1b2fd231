//! The one bounded table Gatehouse keeps in memory outside its token caches (resumption
//! chains, verified certificates, recently accepted certificates, per-connection route
//! verdicts), with one eviction rule: when the table is full, entries the owner calls dead
//! (expired, out of their window) go first; if it is still full, one entry in eight goes,
//! picked by the map's randomly seeded order. A burst of new keys neither grows a table
//! nor empties it at once, and each insert stays O(1) amortized.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::hash::Hash;

/// A table of at most `max` entries, shared by threads.
pub struct Bounded<K, V> {
    map: Mutex<HashMap<K, V>>,
    max: usize,
}

impl<K: Hash + Eq, V> Bounded<K, V> {
    /// An empty table of at most `max` entries (at least 1).
    pub fn new(max: usize) -> Self {
        Self {
            map: Mutex::new(HashMap::new()),
            max: max.max(1),
        }
    }

    /// What `read` makes of `key`'s entry.
    pub fn get<R>(&self, key: &K, read: impl FnOnce(&V) -> Option<R>) -> Option<R> {
        self.map.lock().get(key).and_then(read)
    }

    /// Put `value` under `key`; when the table is full, first drop the entries `dead`
    /// calls dead, then, if need be, one in eight.
    pub fn insert(&self, key: K, value: V, mut dead: impl FnMut(&V) -> bool) {
        let mut map = self.map.lock();
        if map.len() >= self.max && !map.contains_key(&key) {
            map.retain(|_, v| !dead(v));
            if map.len() >= self.max {
                let drop = (map.len() / 8).max(map.len() + 1 - self.max);
                let mut seen = 0usize;
                map.retain(|_, _| {
                    seen += 1;
                    seen > drop
                });
            }
        }
        map.insert(key, value);
    }

    /// Work on the whole table under its lock (a recomputation over every entry).
    pub fn with<R>(&self, f: impl FnOnce(&mut HashMap<K, V>) -> R) -> R {
        f(&mut self.map.lock())
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.map.lock().len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Hash + Eq, V> Default for Bounded<K, V> {
    /// A table of 10,000 entries.
    fn default() -> Self {
        Self::new(10_000)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_drops_the_dead_first_then_an_eighth_and_keeps_the_rest() {
        let t: Bounded<u32, u32> = Bounded::new(800);
        for i in 0..800 {
            t.insert(i, i, |_| false);
        }
        // full: the dead (even values below 100) go, nothing else
        t.insert(1000, 1000, |v| *v < 100 && v % 2 == 0);
        assert_eq!(t.len(), 800 - 50 + 1);
        // still room for the next 49; then full with none dead: an eighth goes
        for i in 2000..2049 {
            t.insert(i, i, |_| false);
        }
        assert_eq!(t.len(), 800);
        t.insert(5000, 5000, |_| false);
        assert_eq!(t.len(), 800 - 100 + 1);
        assert_eq!(t.get(&5000, |v| Some(*v)), Some(5000));
        // replacing a key never evicts
        let before = t.len();
        t.insert(5000, 1, |_| true);
        assert_eq!((t.len(), t.get(&5000, |v| Some(*v))), (before, Some(1)));
        // never empty, never over
        let small: Bounded<u32, ()> = Bounded::new(3);
        for i in 0..100 {
            small.insert(i, (), |_| false);
            assert!((1..=3).contains(&small.len()));
        }
    }
}
