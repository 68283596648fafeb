//! A bounded cache of decoded sparse indexes of sealed segments (W6, issue
//! #15): sealed segments' indexes live in their `.idx` files, not in
//! memory, and this cache holds the most recently used ones within a byte
//! budget, shared by every stream of a store (docs/design.md, "Index
//! file"). Sequential reads hit it (one lookup per chunk of the same
//! segment); a lookup in an old segment reads its `.idx` once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::segment::IndexEntry;
use crate::HashMap;

/// Bytes of decoded indexes a store keeps by default: about twenty full
/// 64 MiB segments (an index holds at most one 24-byte entry per 4 KiB).
pub(crate) const DEFAULT_INDEX_CACHE_BYTES: usize = 8 << 20;

/// What one cached index is counted as besides its entries (the slot, the
/// key and the `Arc` header).
const SLOT_OVERHEAD: usize = 64;

/// Bytes an index of `entries` entries costs in the cache.
pub(crate) fn cost(entries: usize) -> usize {
    entries
        .saturating_mul(std::mem::size_of::<IndexEntry>())
        .saturating_add(SLOT_OVERHEAD)
}

/// A decoded index, shared between the cache and its readers.
pub(crate) type SharedIndex = Arc<[IndexEntry]>;

/// Ids that tell the streams sharing a cache apart (never reused, so a
/// stream deleted and created again never sees the old one's entries).
static NEXT_STREAM_ID: AtomicU64 = AtomicU64::new(1);

/// A new stream id for [`IndexCache`] keys.
pub(crate) fn next_stream_id() -> u64 {
    NEXT_STREAM_ID.fetch_add(1, Ordering::Relaxed)
}

struct Slot {
    index: SharedIndex,
    cost: usize,
    used: u64,
}

#[derive(Default)]
struct State {
    /// By (stream id, segment base).
    map: HashMap<(u64, u64), Slot>,
    bytes: usize,
    /// Incremented by each use: the least recently used slot has the
    /// smallest `used`.
    clock: u64,
    /// The most bytes ever held (tests check it stays within the budget).
    peak: usize,
}

/// The cache; lock order: a stream's lock, then this one (never the other way).
pub(crate) struct IndexCache {
    budget: usize,
    state: Mutex<State>,
}

impl std::fmt::Debug for IndexCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("IndexCache")
            .field("budget", &self.budget)
            .field("bytes", &s.bytes)
            .field("indexes", &s.map.len())
            .finish()
    }
}

impl Default for IndexCache {
    fn default() -> Self {
        IndexCache::new(DEFAULT_INDEX_CACHE_BYTES)
    }
}

impl IndexCache {
    /// A cache that never holds more than `budget` bytes (an index costing
    /// more than that is not kept at all).
    pub(crate) fn new(budget: usize) -> Self {
        IndexCache {
            budget,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The index of segment `base` of stream `stream`, if cached.
    pub(crate) fn get(&self, stream: u64, base: u64) -> Option<SharedIndex> {
        let mut s = self.lock();
        s.clock += 1;
        let now = s.clock;
        let slot = s.map.get_mut(&(stream, base))?;
        slot.used = now;
        Some(slot.index.clone())
    }

    /// Keeps `index` as segment `base`'s, evicting the least recently used
    /// ones until it fits the budget.
    pub(crate) fn insert(&self, stream: u64, base: u64, index: SharedIndex) {
        let cost = cost(index.len());
        let mut s = self.lock();
        if let Some(old) = s.map.remove(&(stream, base)) {
            s.bytes -= old.cost;
        }
        if cost > self.budget {
            return;
        }
        while s.bytes + cost > self.budget {
            let Some(oldest) = s.map.iter().min_by_key(|(_, v)| v.used).map(|(k, _)| *k) else {
                break;
            };
            if let Some(old) = s.map.remove(&oldest) {
                s.bytes -= old.cost;
            }
        }
        s.clock += 1;
        let used = s.clock;
        s.map.insert((stream, base), Slot { index, cost, used });
        s.bytes += cost;
        s.peak = s.peak.max(s.bytes);
    }

    /// Drops segment `base`'s index (the segment was removed or rewritten).
    pub(crate) fn remove(&self, stream: u64, base: u64) {
        let mut s = self.lock();
        if let Some(old) = s.map.remove(&(stream, base)) {
            s.bytes -= old.cost;
        }
    }

    /// Drops every index of `stream` (it was closed or deleted).
    pub(crate) fn forget_stream(&self, stream: u64) {
        let mut s = self.lock();
        let before = s.map.len();
        s.map.retain(|(id, _), _| *id != stream);
        if s.map.len() != before {
            s.bytes = s.map.values().map(|v| v.cost).sum();
        }
    }

    /// Bytes held now.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// The most bytes ever held.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn peak(&self) -> usize {
        self.lock().peak
    }

    /// Indexes held now.
    #[cfg(any(test, feature = "internals"))]
    pub(crate) fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(n: usize, base: u64) -> SharedIndex {
        (0..n as u64)
            .map(|i| IndexEntry {
                seq: base + i,
                time: i as i64,
                offset: 16 + i * 4096,
            })
            .collect::<Vec<_>>()
            .into()
    }

    #[test]
    fn the_cache_never_holds_more_than_its_budget() {
        let budget = cost(100) * 3;
        let c = IndexCache::new(budget);
        for base in 0..500u64 {
            c.insert(1, base, index(1 + (base as usize * 7) % 100, base));
            assert!(c.bytes() <= budget, "{} > {budget}", c.bytes());
            // A few reads of older ones in between.
            let _ = c.get(1, base / 2);
        }
        assert!(c.peak() <= budget);
        assert!(c.len() >= 3, "{}", c.len());
    }

    #[test]
    fn the_least_recently_used_index_goes_first() {
        let c = IndexCache::new(cost(10) * 2);
        c.insert(1, 10, index(10, 10));
        c.insert(1, 20, index(10, 20));
        assert!(c.get(1, 10).is_some()); // 20 is now the oldest
        c.insert(1, 30, index(10, 30));
        assert!(c.get(1, 20).is_none());
        assert_eq!(c.get(1, 10).map(|i| i[0].seq), Some(10));
        assert_eq!(c.get(1, 30).map(|i| i[0].seq), Some(30));
    }

    #[test]
    fn too_big_is_not_kept_and_streams_are_apart() {
        let c = IndexCache::new(cost(10));
        c.insert(1, 1, index(11, 1));
        assert_eq!(c.len(), 0);
        c.insert(1, 1, index(3, 1));
        assert!(c.get(2, 1).is_none(), "another stream's segment 1");
        c.insert(2, 1, index(3, 100));
        assert_eq!(c.get(2, 1).map(|i| i[0].seq), Some(100));
        c.forget_stream(2);
        assert!(c.get(2, 1).is_none());
        assert_eq!(c.bytes(), c.len() * cost(3));
        c.remove(1, 1);
        assert_eq!((c.len(), c.bytes()), (0, 0));
    }
}
