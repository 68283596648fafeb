//! Per-subject state in 24 bytes a subject (docs/design.md, "Per-subject
//! state"): each subject is known by a 96-bit keyed SipHash-1-3 of its
//! name, with its message count and newest sequence. Names are not kept:
//! the log holds them (a subject's newest message carries it), so what a
//! stream keeps resident does not grow with the length of its subjects.

use std::collections::VecDeque;
use std::hash::BuildHasher as _;

use hashbrown::hash_table::{Entry as Slot, HashTable};
use serde::{Deserialize, Serialize};
use siphasher::sip128::SipHasher13;

use crate::HashMap;

/// A subject's identity: 96 bits of a SipHash-1-3 keyed per stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Key {
    hi: u64,
    lo: u32,
}

/// One subject: its key, how many messages it has, its newest one.
#[derive(Debug, Clone, Copy)]
struct Entry {
    hi: u64,
    lo: u32,
    /// Messages; [`BIG`] means the count is in [`Subjects::big`].
    count: u32,
    /// Newest live seq; 0 = unknown (the newest was deleted while older
    /// ones are not tracked), found by a scan on demand.
    last: u64,
}

/// `Entry::count` of a subject whose count does not fit in 32 bits.
const BIG: u32 = u32::MAX;

/// Bytes of one entry in the table (the test below holds it to 24).
pub(crate) const ENTRY_BYTES: usize = std::mem::size_of::<Entry>();

impl Entry {
    fn key(&self) -> Key {
        Key {
            hi: self.hi,
            lo: self.lo,
        }
    }
}

/// Every subject with stored messages in a stream.
#[derive(Debug, Clone)]
pub(crate) struct Subjects {
    /// The SipHash key (random per stream, kept in the checkpoint).
    sip: (u64, u64),
    table: HashTable<Entry>,
    /// Counts of at least [`BIG`].
    big: HashMap<Key, u64>,
    /// With `max_msgs_per_subject`: each subject's live sequences but its
    /// newest, oldest first (what eviction takes). Empty for a subject
    /// with one message, so a limit of 1 keeps nothing here at rest.
    older: Option<HashMap<Key, VecDeque<u64>>>,
    /// The last subject [`Subjects::key_cached`] hashed, and its key:
    /// publishes mostly repeat a subject, and comparing costs less than
    /// hashing.
    last_name: String,
    last_key: Key,
}

impl Subjects {
    /// No subjects, with a fresh random key; `tracking` keeps each
    /// subject's older sequences (for `max_msgs_per_subject`).
    pub(crate) fn new(tracking: bool) -> Self {
        let rs = std::collections::hash_map::RandomState::new();
        Self::with_key((rs.hash_one(0u8), rs.hash_one(1u8)), tracking)
    }

    fn with_key(sip: (u64, u64), tracking: bool) -> Self {
        let mut s = Subjects {
            sip,
            table: HashTable::new(),
            big: HashMap::default(),
            older: tracking.then(HashMap::default),
            last_name: String::new(),
            last_key: Key { hi: 0, lo: 0 },
        };
        s.last_key = s.key("");
        s
    }

    /// The key of `subject`.
    pub(crate) fn key(&self, subject: &str) -> Key {
        let h = SipHasher13::new_with_keys(self.sip.0, self.sip.1).hash(subject.as_bytes());
        Key {
            hi: h.h1,
            lo: h.h2 as u32,
        }
    }

    /// The key of `subject`, remembering it for the next call.
    pub(crate) fn key_cached(&mut self, subject: &str) -> Key {
        if self.last_name != subject {
            self.last_key = self.key(subject);
            self.last_name.clear();
            self.last_name.push_str(subject);
        }
        self.last_key
    }

    fn find(&self, k: Key) -> Option<&Entry> {
        self.table.find(k.hi, |e| e.hi == k.hi && e.lo == k.lo)
    }

    fn find_mut(&mut self, k: Key) -> Option<&mut Entry> {
        self.table.find_mut(k.hi, |e| e.hi == k.hi && e.lo == k.lo)
    }

    fn count_of(&self, e: &Entry) -> u64 {
        if e.count == BIG {
            self.big.get(&e.key()).copied().unwrap_or(u64::from(BIG))
        } else {
            u64::from(e.count)
        }
    }

    /// How many subjects have messages.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }

    /// Whether older sequences are kept (`max_msgs_per_subject` is set).
    pub(crate) fn is_tracking(&self) -> bool {
        self.older.is_some()
    }

    /// Messages of subject `k` (0 when it has none).
    pub(crate) fn count(&self, k: Key) -> u64 {
        self.find(k).map_or(0, |e| self.count_of(e))
    }

    /// The newest live seq of `k`: `None` without messages, `Some(0)` when
    /// unknown.
    pub(crate) fn last(&self, k: Key) -> Option<u64> {
        self.find(k).map(|e| e.last)
    }

    /// Records that the unknown newest seq of `k` is `last`.
    pub(crate) fn set_last(&mut self, k: Key, last: u64) {
        if let Some(e) = self.find_mut(k) {
            e.last = last;
        }
    }

    /// The oldest live seq of `k`, when older sequences are kept.
    pub(crate) fn oldest(&self, k: Key) -> Option<u64> {
        let older = self.older.as_ref()?;
        match older.get(&k).and_then(|q| q.front()) {
            Some(s) => Some(*s),
            None => self.last(k).filter(|l| *l != 0),
        }
    }

    /// Subject `k` gained message `seq` (above every seq it had).
    pub(crate) fn add(&mut self, k: Key, seq: u64) {
        let hasher = |e: &Entry| e.hi;
        match self
            .table
            .entry(k.hi, |e| e.hi == k.hi && e.lo == k.lo, hasher)
        {
            Slot::Occupied(mut o) => {
                let e = o.get_mut();
                let prev = e.last;
                e.last = seq;
                if e.count == BIG - 1 {
                    e.count = BIG;
                    self.big.insert(k, u64::from(BIG));
                } else if e.count == BIG {
                    *self.big.entry(k).or_insert(u64::from(BIG)) += 1;
                } else {
                    e.count += 1;
                }
                if let Some(older) = &mut self.older {
                    if prev != 0 {
                        older.entry(k).or_default().push_back(prev);
                    }
                }
            }
            Slot::Vacant(v) => {
                v.insert(Entry {
                    hi: k.hi,
                    lo: k.lo,
                    count: 1,
                    last: seq,
                });
            }
        }
    }

    /// Subject `k` lost message `seq`.
    pub(crate) fn remove(&mut self, k: Key, seq: u64) {
        let Ok(slot) = self
            .table
            .find_entry(k.hi, |e| e.hi == k.hi && e.lo == k.lo)
        else {
            return;
        };
        let e = *slot.get();
        let count = if e.count == BIG {
            self.big.get(&k).copied().unwrap_or(u64::from(BIG))
        } else {
            u64::from(e.count)
        };
        if count <= 1 {
            slot.remove();
            self.big.remove(&k);
            if let Some(older) = &mut self.older {
                older.remove(&k);
            }
            return;
        }
        let mut last = e.last;
        if let Some(older) = &mut self.older {
            if let Some(q) = older.get_mut(&k) {
                if seq == last {
                    last = q.pop_back().unwrap_or(0);
                } else if q.front() == Some(&seq) {
                    q.pop_front();
                } else if let Ok(i) = q.binary_search(&seq) {
                    q.remove(i);
                }
                if q.is_empty() {
                    older.remove(&k);
                }
            }
        } else if seq == last {
            last = 0;
        }
        let n = count - 1;
        let e = slot.into_mut();
        e.last = last;
        if n >= u64::from(BIG) {
            self.big.insert(k, n);
        } else {
            e.count = n as u32;
            self.big.remove(&k);
        }
    }

    /// Forgets every subject (a purge of everything).
    pub(crate) fn clear(&mut self) {
        self.table.clear();
        self.big.clear();
        if let Some(older) = &mut self.older {
            older.clear();
        }
    }

    /// Stops keeping older sequences (`max_msgs_per_subject` was unset).
    pub(crate) fn stop_tracking(&mut self) {
        self.older = None;
    }

    /// Starts keeping older sequences from every live `(key, seq)`,
    /// visited in ascending seq order (and fixes unknown newest seqs).
    pub(crate) fn start_tracking(&mut self, live: impl IntoIterator<Item = (Key, u64)>) {
        let mut all: HashMap<Key, VecDeque<u64>> = HashMap::default();
        for (k, seq) in live {
            all.entry(k).or_default().push_back(seq);
        }
        for e in self.table.iter_mut() {
            if let Some(q) = all.get_mut(&e.key()) {
                if e.last == 0 {
                    // Only possible without tracking: the newest is known now.
                    e.last = q.back().copied().unwrap_or(0);
                }
                // The newest is the entry's own `last`, not an older one.
                if q.back() == Some(&e.last) {
                    q.pop_back();
                }
            }
        }
        all.retain(|_, q| !q.is_empty());
        self.older = Some(all);
    }

    /// Every subject: key, count and newest seq (0 = unknown).
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Key, u64, u64)> + '_ {
        self.table
            .iter()
            .map(|e| (e.key(), self.count_of(e), e.last))
    }

    /// Subjects with more than `max` messages.
    pub(crate) fn over(&self, max: u64) -> Vec<Key> {
        self.iter()
            .filter(|(_, c, _)| *c > max)
            .map(|(k, _, _)| k)
            .collect()
    }

    /// Bytes held in memory: the table's allocation and the side maps'
    /// entries (what docs/design.md's per-subject cost counts).
    #[cfg(test)]
    fn resident_bytes(&self) -> usize {
        let table = self.table.allocation_size();
        let big = self.big.capacity() * (std::mem::size_of::<(Key, u64)>() + 1);
        let older = self.older.as_ref().map_or(0, |o| {
            o.capacity() * (std::mem::size_of::<(Key, VecDeque<u64>)>() + 1)
                + o.values().map(|q| q.capacity() * 8).sum::<usize>()
        });
        table + big + older
    }

    /// What the checkpoint keeps.
    pub(crate) fn to_ckpt(&self) -> SubjectsCkpt {
        let mut table = Vec::with_capacity(self.table.len() * ENTRY_BYTES);
        for e in self.table.iter() {
            table.extend_from_slice(&e.hi.to_le_bytes());
            table.extend_from_slice(&e.lo.to_le_bytes());
            table.extend_from_slice(&e.count.to_le_bytes());
            table.extend_from_slice(&e.last.to_le_bytes());
        }
        SubjectsCkpt {
            sip: self.sip,
            table,
            big: self.big.iter().map(|(k, n)| (k.hi, k.lo, *n)).collect(),
            older: self.older.as_ref().map(|o| {
                o.iter()
                    .map(|(k, q)| (k.hi, k.lo, q.iter().copied().collect()))
                    .collect()
            }),
        }
    }

    /// The state a checkpoint kept; `None` when it does not add up (the
    /// open then scans, as for any bad checkpoint).
    pub(crate) fn from_ckpt(c: &SubjectsCkpt) -> Option<Self> {
        if c.table.len() % ENTRY_BYTES != 0 {
            return None;
        }
        let mut s = Subjects::with_key(c.sip, c.older.is_some());
        s.table.reserve(c.table.len() / ENTRY_BYTES, |e| e.hi);
        for b in c.table.chunks_exact(ENTRY_BYTES) {
            let e = Entry {
                hi: u64::from_le_bytes(b[0..8].try_into().ok()?),
                lo: u32::from_le_bytes(b[8..12].try_into().ok()?),
                count: u32::from_le_bytes(b[12..16].try_into().ok()?),
                last: u64::from_le_bytes(b[16..24].try_into().ok()?),
            };
            if e.count == 0 || s.find(e.key()).is_some() {
                return None;
            }
            s.table.insert_unique(e.hi, e, |e| e.hi);
        }
        for &(hi, lo, n) in &c.big {
            let k = Key { hi, lo };
            if s.find(k).is_none_or(|e| e.count != BIG) {
                return None;
            }
            s.big.insert(k, n);
        }
        if let (Some(older), Some(from)) = (&mut s.older, &c.older) {
            for (hi, lo, q) in from {
                older.insert(Key { hi: *hi, lo: *lo }, q.iter().copied().collect());
            }
        }
        Some(s)
    }
}

/// [`Subjects`] in a checkpoint: the key, the table as 24-byte
/// little-endian entries (hi u64, lo u32, count u32, last u64), counts of
/// at least 2^32 - 1, and older sequences when tracked.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SubjectsCkpt {
    pub(crate) sip: (u64, u64),
    #[serde(with = "serde_bytes")]
    pub(crate) table: Vec<u8>,
    pub(crate) big: Vec<(u64, u32, u64)>,
    pub(crate) older: Option<Vec<(u64, u32, Vec<u64>)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_is_24_bytes() {
        assert_eq!(ENTRY_BYTES, 24);
    }

    #[test]
    fn a_million_subjects_cost_at_most_64_bytes_each() {
        let mut s = Subjects::new(false);
        for i in 0..1_000_000u64 {
            let k = s.key(&format!("telemetry.device-{i:07}.temp"));
            s.add(k, i + 1);
        }
        assert_eq!(s.len(), 1_000_000);
        let per = s.resident_bytes() as f64 / 1e6;
        assert!(per <= 64.0, "{per} bytes per subject");
    }

    #[test]
    fn counts_and_newest_follow_adds_and_removes() {
        let mut s = Subjects::new(false);
        let a = s.key("a");
        let b = s.key("b");
        assert_ne!(a, b);
        s.add(a, 1);
        s.add(b, 2);
        s.add(a, 3);
        assert_eq!((s.count(a), s.last(a)), (2, Some(3)));
        // Without tracking, losing the newest makes it unknown.
        s.remove(a, 3);
        assert_eq!((s.count(a), s.last(a)), (1, Some(0)));
        s.set_last(a, 1);
        s.remove(a, 1);
        assert_eq!((s.count(a), s.last(a)), (0, None));
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn tracking_keeps_the_oldest_for_eviction_and_nothing_at_rest_for_a_limit_of_one() {
        let mut s = Subjects::new(true);
        let a = s.key("a");
        s.add(a, 1);
        assert_eq!(s.oldest(a), Some(1));
        s.add(a, 5);
        s.add(a, 7);
        assert_eq!(s.oldest(a), Some(1));
        s.remove(a, 5);
        assert_eq!((s.count(a), s.last(a), s.oldest(a)), (2, Some(7), Some(1)));
        s.remove(a, 7);
        assert_eq!((s.count(a), s.last(a), s.oldest(a)), (1, Some(1), Some(1)));
        // A limit of one: add, then evict the older.
        s.add(a, 9);
        s.remove(a, 1);
        assert_eq!((s.count(a), s.last(a)), (1, Some(9)));
        assert!(s.older.as_ref().is_some_and(|o| o.is_empty()));
    }

    #[test]
    fn start_tracking_derives_older_sequences_and_unknown_newest() {
        let mut s = Subjects::new(false);
        let (a, b) = (s.key("a"), s.key("b"));
        for (k, q) in [(a, 1), (b, 2), (a, 3), (a, 4)] {
            s.add(k, q);
        }
        s.remove(a, 4);
        assert_eq!(s.last(a), Some(0));
        s.start_tracking([(a, 1), (b, 2), (a, 3)]);
        assert_eq!((s.last(a), s.oldest(a)), (Some(3), Some(1)));
        assert_eq!(s.oldest(b), Some(2));
    }

    #[test]
    fn counts_past_32_bits_are_exact() {
        let mut s = Subjects::new(false);
        let a = s.key("a");
        s.add(a, 1);
        if let Some(e) = s.find_mut(a) {
            e.count = BIG - 2;
        }
        for seq in 2..=4 {
            s.add(a, seq);
        }
        assert_eq!(s.count(a), u64::from(BIG) + 1);
        let back = Subjects::from_ckpt(&s.to_ckpt()).unwrap();
        assert_eq!(back.count(a), u64::from(BIG) + 1);
        s.remove(a, 2);
        s.remove(a, 3);
        assert_eq!(s.count(a), u64::from(BIG) - 1);
        assert!(s.big.is_empty());
    }

    #[test]
    fn the_checkpoint_round_trips_and_refuses_what_does_not_add_up() {
        let mut s = Subjects::new(true);
        for i in 0..100u64 {
            let k = s.key(&format!("s.{}", i % 7));
            s.add(k, i + 1);
        }
        let c = s.to_ckpt();
        let back = Subjects::from_ckpt(&c).unwrap();
        let sorted = |s: &Subjects| {
            let mut v: Vec<_> = s
                .iter()
                .map(|(k, n, l)| (k.hi, k.lo, n, l, s.oldest(k)))
                .collect();
            v.sort_unstable();
            v
        };
        assert_eq!(sorted(&back), sorted(&s));
        assert_eq!(back.key("s.3"), s.key("s.3"));
        let mut cut = c.clone();
        cut.table.pop();
        assert!(Subjects::from_ckpt(&cut).is_none());
        let mut dup = c.clone();
        let first: Vec<u8> = dup.table[..ENTRY_BYTES].to_vec();
        dup.table.extend_from_slice(&first);
        assert!(Subjects::from_ckpt(&dup).is_none());
    }
}
