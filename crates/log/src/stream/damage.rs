//! Damaged records: a read that meets bytes that do not verify steps over
//! them to the next record that does, and the sequences they held are lost
//! (docs/design.md "Reading past a damaged record"). Nothing on disk changes:
//! only `durabus_log::repair` rewrites a damaged segment.

use std::path::Path;

use durabus_core::{Error, Result};

use crate::record::Kind;
use crate::segment::{self, Damage, SEGMENT_HEADER};
use crate::storage::{Storage, StorageFile};

use super::scan_error;
use super::state::{Inner, Loss};
use super::Stream;

/// Measures the damage at `offset` of a segment: where reading goes on, and
/// which messages it cost. `lo` is the first sequence it may have held;
/// `hi_default` the last one when no intact message follows in the segment.
pub(crate) fn measure(
    file: &dyn StorageFile,
    path: &Path,
    offset: u64,
    limit: u64,
    lo: u64,
    hi_default: u64,
    reason: String,
) -> Result<Damage> {
    let (end, next) = segment::resume_after(file, offset, limit, lo)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let hi = next.map_or(hi_default, |s| s - 1);
    Ok(Damage {
        start: offset,
        end,
        lo,
        hi,
        reason,
    })
}

impl Inner {
    /// The damage at `offset` of the segment starting at `base`: the known
    /// span covering it, or a new one measured now and remembered (its
    /// sequences join the lost set, which reads treat as not live).
    pub(crate) fn damage_at(
        &mut self,
        storage: &dyn Storage,
        base: u64,
        offset: u64,
        reason: String,
    ) -> Result<Damage> {
        let Some(seg) = self.seg_by_base(base) else {
            return Err(Error::internal(format!(
                "segment {base} vanished while in use; retry"
            )));
        };
        if let Some(d) = segment::damage_covering(&seg.damage, offset) {
            return Ok(d.clone());
        }
        let path = seg.path.clone();
        let limit = self.readable_limit(seg);
        let is_active = seg.base == self.active.base;
        let hi_default = if is_active {
            self.last_seq
        } else {
            self.seg_after(base).map_or(self.last_seq, |n| n.base - 1)
        };
        // The first sequence it may hold: after the last intact message
        // before it (read from the index entry before it).
        let skips = seg.damage.clone();
        let from = self.with_index(storage, base, |ix| {
            ix.iter()
                .rev()
                .find(|e| e.offset < offset)
                .map_or(SEGMENT_HEADER, |e| e.offset)
        })?;
        let file = self.seg_file(storage, base)?;
        let mut lo = base;
        segment::scan_skipping(
            &*file,
            from,
            offset,
            segment::LOOKUP_CHUNK,
            &skips,
            &mut |_, r| {
                if r.kind == Kind::Message {
                    lo = lo.max(r.seq + 1);
                }
                Ok(true)
            },
        )
        .map_err(|e| scan_error(&path, e))?;
        for d in skips.iter().filter(|d| d.end <= offset) {
            lo = lo.max(d.hi.saturating_add(1));
        }
        let d = measure(&*file, &path, offset, limit, lo, hi_default, reason)?;
        tracing::warn!(segment = %path.display(), offset, end = d.end,
            lost = ?d.seqs(), reason = %d.reason,
            "a damaged record was stepped over; `durabus repair` records the loss");
        self.note_damage(base, d.clone());
        Ok(d)
    }

    /// Remembers `d` in the segment starting at `base`, and its sequences
    /// as lost.
    pub(crate) fn note_damage(&mut self, base: u64, d: Damage) {
        let path = self.seg_by_base(base).map(|s| s.path.clone());
        if let (Some(r), Some(path)) = (d.seqs(), path) {
            self.note_loss(
                *r.start(),
                Loss {
                    hi: *r.end(),
                    segment: path,
                    offset: d.start,
                    reason: d.reason.clone(),
                },
            );
        }
        let seg = if self.active.base == base {
            Some(&mut self.active)
        } else {
            let i = self.sealed.partition_point(|s| s.base < base);
            self.sealed.get_mut(i).filter(|s| s.base == base)
        };
        if let Some(seg) = seg {
            let i = seg.damage.partition_point(|x| x.start < d.start);
            seg.damage.insert(i, d);
        }
    }

    /// How many lost sequences lie between the first stored one and `seq`.
    pub(crate) fn lost_through(&self, seq: u64) -> u64 {
        if seq < self.first_seq {
            return 0;
        }
        self.lost.count_in(self.first_seq, seq)
    }

    /// Remembers the sequences `lo..=loss.hi` as lost.
    pub(crate) fn note_loss(&mut self, lo: u64, loss: Loss) {
        if lo > loss.hi {
            return;
        }
        self.lost.insert_range(lo, loss.hi);
        self.losses.insert(lo, loss);
    }

    /// The loss that cost `seq`, with its first sequence.
    pub(crate) fn loss_of(&self, seq: u64) -> Option<(u64, &Loss)> {
        if !self.lost.contains(seq) {
            return None;
        }
        self.losses
            .range(..=seq)
            .rev()
            .find(|(_, l)| seq <= l.hi)
            .map(|(lo, l)| (*lo, l))
    }
}

impl Stream {
    /// [`Inner::damage_at`] under the lock.
    pub(crate) fn damage_at(&self, base: u64, offset: u64, reason: String) -> Result<Damage> {
        self.lock().damage_at(self.storage(), base, offset, reason)
    }

    /// The error a read reports for `d` in `path`: the stream, the lost
    /// sequences, the file and offset.
    pub(crate) fn lost_error(&self, d: &Damage, path: &Path) -> Error {
        Error::Corrupt {
            stream: Some(self.name.clone()),
            seqs: d.seqs(),
            segment: path.to_path_buf(),
            offset: d.start,
            reason: d.reason.clone(),
        }
    }

    /// The error a read reports for the loss `lo..=loss.hi`.
    pub(crate) fn loss_error(&self, lo: u64, loss: &Loss) -> Error {
        Error::Corrupt {
            stream: Some(self.name.clone()),
            seqs: Some(lo..=loss.hi),
            segment: loss.segment.clone(),
            offset: loss.offset,
            reason: loss.reason.clone(),
        }
    }
}
