//! `store: compact` — an in-process token cache built for many tokens.
//!
//! Why not moka for this one (moka stays the default store): with per-entry expiry moka
//! keeps several bookkeeping nodes per entry (hash-table node, entry, access- and
//! write-order deque nodes, timer-wheel node; `benches/examples/moka_probe.rs` measures
//! them), and a read of a cold entry among a million touches several cache lines. This
//! store keeps per token one slot and a 4-byte index (SwissTable) entry, and a read
//! touches the index, the slot and the value. The figures are in benches/README.md.
//!
//! - Keys are SHA-256 digests of tokens; the index hashes them again with a per-process
//!   random key, so nobody can grind tokens into one bucket.
//! - Up to 64 shards, each behind its own mutex (held for a lookup, never across an
//!   await).
//! - Eviction at capacity: CLOCK (second chance); a hit sets the slot's reference bit.
//! - Expiry per entry (`keep_for` of the value); expired entries are dropped when read,
//!   when the clock hand passes them, and a few per insert by a sweeping hand.

use crate::cache::{CachedToken, TokenCache, TokenKey};
use async_trait::async_trait;
use hashbrown::HashTable;
use parking_lot::{Mutex, MutexGuard};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Most shards; small caches get fewer, so each shard holds at least [`MIN_PER_SHARD`]
/// entries and an uneven spread of keys does not evict early.
const MAX_SHARDS: u64 = 64;
const MIN_PER_SHARD: u64 = 1024;
/// Slots the sweeping hand checks for expiry on each insert.
const SWEEP_PER_INSERT: usize = 2;

struct Slot {
    key: TokenKey,
    /// Milliseconds since the cache's epoch.
    expires: u64,
    /// `None`: a free slot.
    value: Option<CachedToken>,
    referenced: bool,
}

#[derive(Default)]
struct Inner {
    /// Slot numbers, found by the hash of their slot's key.
    index: HashTable<u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// The CLOCK hand (eviction) and the sweeping hand (expiry).
    hand: usize,
    sweep: usize,
}

struct Shard {
    inner: Mutex<Inner>,
    capacity: usize,
}

/// The compact in-process token cache.
pub struct CompactCache {
    shards: Box<[Shard]>,
    hasher: RandomState,
    epoch: Instant,
    entries: AtomicU64,
}

impl CompactCache {
    /// A cache of at most `max_entries` tokens (rounded up to a multiple of its shard
    /// count).
    pub fn new(max_entries: u64) -> Self {
        let shards = (max_entries / MIN_PER_SHARD).clamp(1, MAX_SHARDS);
        let per_shard = usize::try_from(max_entries.div_ceil(shards))
            .unwrap_or(usize::MAX)
            .clamp(1, u32::MAX as usize);
        Self {
            shards: (0..shards)
                .map(|_| Shard {
                    inner: Mutex::new(Inner::default()),
                    capacity: per_shard,
                })
                .collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            entries: AtomicU64::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn hash(&self, key: &TokenKey) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard for a hash: bits the index does not use for buckets (low bits) or tags
    /// (the top 7).
    fn shard(&self, h: u64) -> &Shard {
        &self.shards[((h >> 40) as usize) % self.shards.len()]
    }

    fn lock<'a>(&self, shard: &'a Shard) -> MutexGuard<'a, Inner> {
        // nothing panics while the lock is held; a poisoned lock still holds a whole table
        shard.inner.lock()
    }

    /// A live entry, marking it used; drops it if expired.
    fn get_locked(&self, g: &mut Inner, h: u64, key: &TokenKey) -> Option<CachedToken> {
        let i = *g.index.find(h, |&i| g.slots[i as usize].key == *key)? as usize;
        let now = self.now();
        if g.slots[i].expires <= now {
            self.remove_at(g, i);
            return None;
        }
        let slot = &mut g.slots[i];
        slot.referenced = true;
        slot.value.clone()
    }

    fn remove_at(&self, g: &mut Inner, i: usize) {
        let h = self.hash(&g.slots[i].key);
        if let Ok(e) = g.index.find_entry(h, |&j| j as usize == i) {
            e.remove();
        }
        if g.slots[i].value.take().is_some() {
            g.free.push(i as u32);
            self.entries.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Insert or replace; at capacity the CLOCK hand makes room.
    fn put_locked(&self, g: &mut Inner, cap: usize, h: u64, key: TokenKey, v: CachedToken) {
        let now = self.now();
        let keep = u64::try_from(v.keep_for().as_millis()).unwrap_or(u64::MAX);
        let expires = now.saturating_add(keep);
        if let Some(&i) = g.index.find(h, |&i| g.slots[i as usize].key == key) {
            let slot = &mut g.slots[i as usize];
            slot.value = Some(v);
            slot.expires = expires;
            return;
        }
        self.sweep(g, now);
        let i = match g.free.pop() {
            Some(i) => i as usize,
            None if g.slots.len() < cap => {
                if g.slots.len() == g.slots.capacity() {
                    // grow by doubling, never past the capacity
                    let more = g.slots.len().max(16).min(cap - g.slots.len());
                    g.slots.reserve_exact(more);
                }
                g.slots.push(Slot {
                    key,
                    expires: 0,
                    value: None,
                    referenced: false,
                });
                g.slots.len() - 1
            }
            None => {
                // the evicted slot is the one free slot now
                if self.evict_one(g, now).is_none() {
                    return;
                }
                match g.free.pop() {
                    Some(i) => i as usize,
                    None => return,
                }
            }
        };
        g.slots[i] = Slot {
            key,
            expires,
            value: Some(v),
            referenced: false,
        };
        let Inner { index, slots, .. } = g;
        index.insert_unique(h, i as u32, |&j| self.hash(&slots[j as usize].key));
        self.entries.fetch_add(1, Ordering::Relaxed);
    }

    /// CLOCK: the first slot that is expired or was not used since the hand last passed.
    fn evict_one(&self, g: &mut Inner, now: u64) -> Option<usize> {
        let n = g.slots.len();
        for _ in 0..=2 * n {
            let i = g.hand % n;
            g.hand = i + 1;
            let slot = &mut g.slots[i];
            if slot.value.is_none() {
                continue;
            }
            if slot.expires <= now || !slot.referenced {
                self.remove_at(g, i);
                return Some(i);
            }
            slot.referenced = false;
        }
        None
    }

    fn sweep(&self, g: &mut Inner, now: u64) {
        let n = g.slots.len();
        if n == 0 {
            return;
        }
        for _ in 0..SWEEP_PER_INSERT.min(n) {
            let i = g.sweep % n;
            g.sweep = i + 1;
            if g.slots[i].value.is_some() && g.slots[i].expires <= now {
                self.remove_at(g, i);
            }
        }
    }
}

#[async_trait]
impl TokenCache for CompactCache {
    async fn get(&self, key: &TokenKey) -> Option<CachedToken> {
        let h = self.hash(key);
        let shard = self.shard(h);
        let mut g = self.lock(shard);
        self.get_locked(&mut g, h, key)
    }

    async fn insert(&self, key: TokenKey, value: CachedToken) {
        let h = self.hash(&key);
        let shard = self.shard(h);
        let mut g = self.lock(shard);
        self.put_locked(&mut g, shard.capacity, h, key, value);
    }

    async fn entry_count(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn entry(keep_ms: u64) -> CachedToken {
        CachedToken::inactive(
            Instant::now() + Duration::from_millis(keep_ms),
            Duration::from_millis(keep_ms),
        )
    }

    fn key(n: u64) -> TokenKey {
        let mut k = [0u8; 32];
        k[..8].copy_from_slice(&n.to_be_bytes());
        k
    }

    #[tokio::test]
    async fn entries_are_found_replaced_and_expire() {
        let c = CompactCache::new(1000);
        assert!(c.get(&key(1)).await.is_none());
        let a = entry(60_000);
        c.insert(key(1), a.clone()).await;
        assert!(c.get(&key(1)).await.unwrap().same(&a));
        let b = entry(60_000);
        c.insert(key(1), b.clone()).await;
        assert!(c.get(&key(1)).await.unwrap().same(&b));
        assert_eq!(c.entry_count().await, 1);
        // a short-lived entry is gone once its keep_for has passed
        c.insert(key(2), entry(30)).await;
        assert!(c.get(&key(2)).await.is_some());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(c.get(&key(2)).await.is_none());
        assert_eq!(c.entry_count().await, 1);
        assert!(c.get(&key(1)).await.is_some());
    }

    #[tokio::test]
    async fn capacity_holds_and_a_used_entry_outlives_unused_ones() {
        let c = CompactCache::new(4096); // 4 shards of 1,024
        assert_eq!(c.shards.len(), 4);
        c.insert(key(0), entry(60_000)).await;
        for n in 1..20_000 {
            assert!(c.get(&key(0)).await.is_some(), "evicted after {n} inserts");
            c.insert(key(n), entry(60_000)).await;
            assert!(c.entry_count().await <= 4096);
        }
        // every shard is full
        assert_eq!(c.entry_count().await, 4096);
        // slots are reused, never grown past the capacity
        let slots: usize = c.shards.iter().map(|s| c.lock(s).slots.len()).sum();
        assert_eq!(slots, 4096);
    }

    #[tokio::test]
    async fn expired_entries_are_swept_by_inserts() {
        let c = CompactCache::new(64_000);
        for n in 0..1_000 {
            c.insert(key(n), entry(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(40)).await;
        for n in 1_000..21_000 {
            c.insert(key(n), entry(60_000)).await;
        }
        // two slots checked per insert (~300 inserts per shard against ~16 expired slots):
        // every shard's sweeping hand has passed all its expired slots
        assert_eq!(c.entry_count().await, 20_000);
    }
}
