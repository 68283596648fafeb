//! A set of sequences stored as disjoint inclusive ranges: the deleted set of
//! a stream (interior deletes and per-subject evictions), compact when the
//! removed sequences are contiguous.

use std::collections::BTreeMap;

/// Disjoint inclusive ranges `start -> end`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RangeSet {
    ranges: BTreeMap<u64, u64>,
    count: u64,
}

impl RangeSet {
    /// How many sequences are in the set.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    pub(crate) fn contains(&self, x: u64) -> bool {
        if self.count == 0 {
            return false;
        }
        matches!(self.ranges.range(..=x).next_back(), Some((_, &e)) if e >= x)
    }

    /// Adds `lo..=hi`, which must not intersect the set (callers only add
    /// sequences that were live).
    pub(crate) fn insert_range(&mut self, lo: u64, hi: u64) {
        if lo > hi || self.contains(lo) {
            return;
        }
        let mut lo = lo;
        let mut hi = hi;
        if let Some((&s, &e)) = self.ranges.range(..lo).next_back() {
            if e.checked_add(1) == Some(lo) {
                self.ranges.remove(&s);
                self.count -= e - s + 1;
                lo = s;
            }
        }
        if let Some(next) = hi.checked_add(1) {
            if let Some(e) = self.ranges.remove(&next) {
                self.count -= e - next + 1;
                hi = e;
            }
        }
        self.ranges.insert(lo, hi);
        self.count += hi - lo + 1;
    }

    pub(crate) fn insert(&mut self, x: u64) {
        self.insert_range(x, x);
    }

    /// Removes every value below `x`.
    pub(crate) fn remove_below(&mut self, x: u64) {
        while let Some((&s, &e)) = self.ranges.first_key_value() {
            if s >= x {
                break;
            }
            self.ranges.remove(&s);
            self.count -= e - s + 1;
            if e >= x {
                self.ranges.insert(x, e);
                self.count += e - x + 1;
                break;
            }
        }
    }

    /// If `x` is in the set, the end of its range.
    pub(crate) fn range_end_at(&self, x: u64) -> Option<u64> {
        match self.ranges.range(..=x).next_back() {
            Some((_, &e)) if e >= x => Some(e),
            _ => None,
        }
    }

    /// How many values lie in `lo..=hi`.
    pub(crate) fn count_in(&self, lo: u64, hi: u64) -> u64 {
        if lo > hi || self.count == 0 {
            return 0;
        }
        let mut n = 0;
        if let Some((_, &e)) = self.ranges.range(..lo).next_back() {
            if e >= lo {
                n += e.min(hi) - lo + 1;
            }
        }
        for (&s, &e) in self.ranges.range(lo..=hi) {
            n += e.min(hi) - s + 1;
        }
        n
    }

    /// The ranges in order.
    pub(crate) fn ranges(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.ranges.iter().map(|(&s, &e)| (s, e))
    }

    pub(crate) fn clear(&mut self) {
        self.ranges.clear();
        self.count = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rangeset_matches_a_btreeset_model() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(12345);
        let mut rnd = |m: u64| rng.random_range(0..m);
        for _ in 0..50 {
            let mut model = std::collections::BTreeSet::new();
            let mut set = RangeSet::default();
            for _ in 0..200 {
                let v = rnd(100) + 1;
                match rnd(10) {
                    0 => {
                        let b = rnd(100);
                        model.retain(|&m| m >= b);
                        set.remove_below(b);
                    }
                    _ => {
                        if model.insert(v) {
                            set.insert(v);
                        }
                    }
                }
                assert_eq!(set.count(), model.len() as u64);
                let (lo, hi) = (rnd(100), rnd(100));
                assert_eq!(
                    set.count_in(lo, hi),
                    model.iter().filter(|&&m| m >= lo && m <= hi).count() as u64
                );
                for p in 0..102 {
                    assert_eq!(set.contains(p), model.contains(&p));
                }
            }
        }
    }
}
