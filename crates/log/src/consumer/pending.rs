//! A consumer's pending deliveries, by stream sequence and by due time.

use std::collections::{BTreeMap, BTreeSet};

use super::file::Pending;

/// The pending map by stream seq, with its redelivery queue ordered by due
/// time (kept in step by every change).
#[derive(Debug, Default)]
pub(super) struct PendingSet {
    by_seq: BTreeMap<u64, Pending>,
    by_due: BTreeSet<(i64, u64)>,
    /// Stream seqs changed since the last journal entry (with repeats).
    pub(super) touched: Vec<u64>,
}

impl FromIterator<(u64, Pending)> for PendingSet {
    fn from_iter<I: IntoIterator<Item = (u64, Pending)>>(iter: I) -> Self {
        let mut s = PendingSet::default();
        for (seq, p) in iter {
            s.insert(seq, p);
        }
        s
    }
}

impl PendingSet {
    pub(super) fn len(&self) -> usize {
        self.by_seq.len()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&u64, &Pending)> {
        self.by_seq.iter()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Pending> {
        self.by_seq.values()
    }

    pub(super) fn get(&self, seq: &u64) -> Option<&Pending> {
        self.by_seq.get(seq)
    }

    pub(super) fn contains_key(&self, seq: &u64) -> bool {
        self.by_seq.contains_key(seq)
    }

    pub(super) fn insert(&mut self, seq: u64, p: Pending) {
        self.touched.push(seq);
        if let Some(old) = self.by_seq.insert(seq, p) {
            self.by_due.remove(&(old.deadline_ns, seq));
        }
        self.by_due.insert((p.deadline_ns, seq));
    }

    pub(super) fn remove(&mut self, seq: &u64) -> Option<Pending> {
        let old = self.by_seq.remove(seq)?;
        self.touched.push(*seq);
        self.by_due.remove(&(old.deadline_ns, *seq));
        Some(old)
    }

    pub(super) fn set_deadline(&mut self, seq: u64, deadline_ns: i64) {
        if let Some(mut p) = self.by_seq.get(&seq).copied() {
            p.deadline_ns = deadline_ns;
            self.insert(seq, p);
        }
    }

    pub(super) fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let gone: Vec<u64> = self.by_seq.keys().copied().filter(|s| !keep(*s)).collect();
        for s in gone {
            self.remove(&s);
        }
    }

    /// The first entry above stream seq `seq`.
    pub(super) fn first_above(&self, seq: u64) -> Option<(u64, Pending)> {
        self.by_seq
            .range(seq.saturating_add(1)..)
            .next()
            .map(|(s, p)| (*s, *p))
    }

    /// Stream seqs in `range`, in order.
    pub(super) fn seqs_in(&self, range: impl std::ops::RangeBounds<u64>) -> Vec<u64> {
        self.by_seq.range(range).map(|(s, _)| *s).collect()
    }

    /// Stream seqs due at `now`, in stream-seq order.
    pub(super) fn due(&self, now: i64) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .by_due
            .range(..=(now, u64::MAX))
            .map(|(_, s)| *s)
            .collect();
        v.sort_unstable();
        v
    }

    /// The earliest due time.
    pub(super) fn next_due(&self) -> Option<i64> {
        self.by_due.first().map(|(d, _)| *d)
    }
}
