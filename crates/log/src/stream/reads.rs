//! Reads under the lock (live-record scans, per-subject lookups) and
//! single-message reads (`get`, `get_last`, `seq_for_time`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use durabus_core::{subject, Error, Result, StoredMessage};

use crate::record::{self, Kind};
use crate::segment::{self, Damage, ScanEnd, SEGMENT_HEADER};
use crate::storage::{Storage, StorageFile};

use super::state::Inner;
use super::{scan_error, stored_from, Stream};

impl Inner {
    /// Visits live message records from `from_seq` (inclusive) in log order
    /// until `f` returns false. Reads under the lock (used by purge, delete and
    /// on-demand rebuilds, not by replay).
    pub(crate) fn for_each_live(
        &mut self,
        storage: &dyn Storage,
        from_seq: u64,
        f: &mut dyn FnMut(&record::RecordRef<'_>) -> bool,
    ) -> Result<()> {
        let from = from_seq.max(self.first_seq);
        if from > self.last_seq {
            return Ok(());
        }
        self.flush_for_read()?;
        let mut base = self.seg_for_seq(from).base;
        let mut start = self.with_index(storage, base, |ix| segment::seek_seq(ix, from))?;
        loop {
            let Some(seg) = self.seg_by_base(base) else {
                return Ok(());
            };
            if seg.missing {
                match self.seg_after(base) {
                    Some(n) => {
                        base = n.base;
                        start = SEGMENT_HEADER;
                        continue;
                    }
                    None => return Ok(()),
                }
            }
            let limit = self.readable_limit(seg);
            let path = seg.path.clone();
            let skips = seg.damage.clone();
            let file = self.seg_file(storage, base)?;
            let deleted = &self.deleted;
            let (first, last) = (self.first_seq, self.last_seq);
            let mut stop = false;
            let end = segment::scan_skipping(
                &*file,
                start,
                limit,
                segment::CHUNK,
                &skips,
                &mut |_, r| {
                    if r.kind == Kind::Message
                        && r.seq >= from
                        && r.seq >= first
                        && r.seq <= last
                        && !deleted.contains(r.seq)
                        && !f(r)
                    {
                        stop = true;
                        return Ok(false);
                    }
                    Ok(true)
                },
            )
            .map_err(|e| scan_error(&path, e))?;
            if stop {
                return Ok(());
            }
            if let ScanEnd::Bad { offset, reason, .. } = end {
                // Step over it and go on in the same segment.
                let d = self.damage_at(storage, base, offset, reason)?;
                start = d.end;
                continue;
            }
            match self.seg_after(base) {
                Some(n) => {
                    base = n.base;
                    start = SEGMENT_HEADER;
                }
                None => return Ok(()),
            }
        }
    }

    /// Subject and size of the live message `seq`.
    pub(crate) fn read_info(
        &mut self,
        stream: &str,
        storage: &dyn Storage,
        seq: u64,
    ) -> Result<(String, u64)> {
        let mut found = None;
        self.for_each_live(storage, seq, &mut |r| {
            if r.seq == seq {
                found = Some((r.subject.to_owned(), r.size as u64));
            }
            false
        })?;
        found.ok_or_else(|| Error::MessageNotFound {
            stream: stream.to_owned(),
            what: format!("at sequence {seq}"),
        })
    }

    /// The newest live seq of `subject` (0 when none), scanning if unknown.
    /// The newest live sequence of each of `subjects`, ascending.
    pub(crate) fn last_per_subject(
        &mut self,
        storage: &dyn Storage,
        subjects: &[String],
    ) -> Result<VecDeque<u64>> {
        let mut q = Vec::with_capacity(subjects.len());
        for s in subjects {
            let l = self.subject_last_seq(storage, s)?;
            if l > 0 {
                q.push(l);
            }
        }
        q.sort_unstable();
        Ok(q.into())
    }

    /// Subjects with live messages that match one of `filters` (all when empty).
    pub(crate) fn matching_subjects(&self, filters: &[String]) -> Vec<String> {
        self.subjects
            .keys()
            .filter(|s| filters.is_empty() || filters.iter().any(|f| subject::matches(f, s)))
            .cloned()
            .collect()
    }

    pub(crate) fn subject_last_seq(&mut self, storage: &dyn Storage, subject: &str) -> Result<u64> {
        let Some(st) = self.subjects.get(subject) else {
            return Ok(0);
        };
        if st.last != 0 {
            return Ok(st.last);
        }
        let mut last = 0;
        self.for_each_live(storage, 0, &mut |r| {
            if r.subject == subject {
                last = r.seq;
            }
            true
        })?;
        if let Some(st) = self.subjects.get_mut(subject) {
            st.last = last;
        }
        Ok(last)
    }

    /// Builds per-subject seq lists (when `max_msgs_per_subject` becomes set).
    pub(super) fn rebuild_subject_seqs(&mut self, storage: &dyn Storage) -> Result<()> {
        for st in self.subjects.values_mut() {
            st.seqs = Some(VecDeque::new());
        }
        let mut pairs: Vec<(String, u64)> = Vec::new();
        self.for_each_live(storage, 0, &mut |r| {
            pairs.push((r.subject.to_owned(), r.seq));
            true
        })?;
        for (s, seq) in pairs {
            if let Some(q) = self.subjects.get_mut(&s).and_then(|st| st.seqs.as_mut()) {
                q.push_back(seq);
            }
        }
        self.track_subject_seqs = true;
        Ok(())
    }
}

/// What an ordered read does next (see [`Stream::plan_chunk`]).
#[derive(Debug)]
pub(crate) enum Planned {
    /// Nothing is stored at or after the target.
    Nothing,
    /// Read this chunk.
    Read(ChunkPlan),
    /// The target is lost up to `hi`: report `error` and go on after it.
    Lost { hi: u64, error: Error },
}

/// Where the next chunk of an ordered read is (see [`Stream::plan_chunk`]).
#[derive(Debug)]
pub(crate) struct ChunkPlan {
    /// Base sequence of the segment.
    pub(crate) base: u64,
    /// Its file.
    pub(crate) path: PathBuf,
    /// Where in it the records at or after the target may start.
    pub(crate) seek: u64,
    /// How far it may be read.
    pub(crate) limit: u64,
    /// It is the active (last) segment.
    pub(crate) is_last: bool,
    /// Base of the segment after it.
    pub(crate) next_base: Option<u64>,
}

impl Stream {
    /// Plans the next chunk of an ordered read at `from` (invariant 11):
    /// writes what is pending, raises `from` to the first stored sequence and
    /// returns it, with where to read unless nothing is stored at or after it.
    /// The lock is held only for this; the reader opens its own handle.
    pub(crate) fn plan_chunk(&self, from: u64) -> Result<(u64, Planned)> {
        let mut g = self.lock();
        g.flush_for_read()?;
        let target = from.max(g.first_seq);
        if target > g.last_seq {
            return Ok((target, Planned::Nothing));
        }
        if let Some((lo, loss)) = g.loss_of(target) {
            let (hi, error) = (loss.hi, self.loss_error(lo, loss));
            return Ok((target, Planned::Lost { hi, error }));
        }
        let base = g.seg_for_seq(target).base;
        let seek = g.with_index(self.storage(), base, |ix| segment::seek_seq(ix, target))?;
        let seg = g.seg_for_seq(target);
        let plan = ChunkPlan {
            base: seg.base,
            path: seg.path.clone(),
            seek,
            limit: g.readable_limit(seg),
            is_last: seg.base == g.active.base,
            next_base: g.seg_after(seg.base).map(|s| s.base),
        };
        Ok((target, Planned::Read(plan)))
    }

    /// Drops from `msgs` (read in ascending order) what was deleted or
    /// expired since it was read.
    pub(crate) fn retain_live(&self, msgs: &mut Vec<StoredMessage>) {
        let (Some(lo), Some(hi)) = (msgs.first().map(|m| m.seq), msgs.last().map(|m| m.seq)) else {
            return;
        };
        let g = self.lock();
        let any_deleted = g.deleted.count_in(lo, hi) > 0;
        let first = g.first_seq;
        msgs.retain(|m| m.seq >= first && !(any_deleted && g.deleted.contains(m.seq)));
    }
    pub(super) fn not_found(&self, seq: u64) -> Error {
        Error::MessageNotFound {
            stream: self.name.clone(),
            what: format!("at sequence {seq}"),
        }
    }

    /// The message at `seq`, read without holding the lock during the read.
    /// A message a damaged record held is [`Error::Corrupt`] naming it;
    /// damage elsewhere in its segment is stepped over.
    pub(crate) fn get(&self, seq: u64) -> Result<StoredMessage> {
        loop {
            let (read, start) = {
                let mut g = self.lock();
                if let Some((lo, loss)) = g.loss_of(seq) {
                    return Err(self.loss_error(lo, loss));
                }
                if !g.is_live(seq) {
                    return Err(self.not_found(seq));
                }
                g.flush_for_read()?;
                let base = g.seg_for_seq(seq).base;
                let start = g.with_index(self.storage(), base, |ix| segment::seek_seq(ix, seq))?;
                (g.seg_read(self.storage(), base)?, start)
            };
            let mut found = None;
            let whole = self.scan_unlocked(&read, start, &mut |r| {
                if r.kind == Kind::Message && r.seq >= seq {
                    if r.seq == seq {
                        found = Some(stored_from(&self.label, r, None));
                    }
                    return false;
                }
                true
            })?;
            match found {
                Some(m) => return Ok(m),
                None if whole => return Err(self.not_found(seq)),
                // A damaged record was measured: look again (it may hold `seq`).
                None => {}
            }
        }
    }

    /// The newest message on a literal subject.
    pub(crate) fn get_last(&self, subj: &str) -> Result<StoredMessage> {
        let seq = {
            let mut g = self.lock();
            g.subject_last_seq(self.storage(), subj)?
        };
        if seq == 0 {
            return Err(Error::MessageNotFound {
                stream: self.name.clone(),
                what: format!("for subject {subj:?}"),
            });
        }
        self.get(seq)
    }

    /// The first seq whose message time is >= `t` (last_seq + 1 when none).
    pub(crate) fn seq_for_time(&self, t: i64) -> Result<u64> {
        loop {
            let (read, start, fallback) = {
                let mut g = self.lock();
                g.flush_for_read()?;
                let fallback = g.last_seq + 1;
                let first = g.first_seq;
                let Some(base) = g
                    .sealed
                    .iter()
                    .chain(std::iter::once(&g.active))
                    .find(|s| s.last_seq >= first && s.last_seq > 0 && s.last_time >= t)
                    .map(|s| s.base)
                else {
                    return Ok(fallback);
                };
                let start = g.with_index(self.storage(), base, |ix| segment::seek_time(ix, t))?;
                (g.seg_read(self.storage(), base)?, start, fallback)
            };
            let mut found = None;
            let whole = self.scan_unlocked(&read, start, &mut |r| {
                if r.kind == Kind::Message && r.time >= t {
                    found = Some(r.seq);
                    return false;
                }
                true
            })?;
            if found.is_some() || whole {
                return Ok(found.unwrap_or(fallback));
            }
        }
    }

    /// Scans the segment `read` names from `start`, without the lock, until
    /// `visit` returns false. `Ok(false)` when it met a damaged record
    /// first: the record is measured (the next look steps over it) and the
    /// caller looks again.
    fn scan_unlocked(
        &self,
        read: &SegRead,
        start: u64,
        visit: &mut dyn FnMut(&record::RecordRef<'_>) -> bool,
    ) -> Result<bool> {
        let end = segment::scan_skipping(
            &*read.file,
            start,
            read.limit,
            segment::LOOKUP_CHUNK,
            &read.skips,
            &mut |_, r| Ok(visit(r)),
        )
        .map_err(|e| scan_error(&read.path, e))?;
        match end {
            ScanEnd::Clean => Ok(true),
            ScanEnd::Bad { offset, reason, .. } => {
                self.damage_at(read.base, offset, reason)?;
                Ok(false)
            }
        }
    }
}

/// What reading one segment without the lock needs, taken under it.
pub(super) struct SegRead {
    base: u64,
    file: Arc<dyn StorageFile>,
    limit: u64,
    path: PathBuf,
    /// Its known damaged spans.
    skips: Vec<Damage>,
}

impl Inner {
    /// [`SegRead`] of the segment starting at `base`.
    pub(super) fn seg_read(&mut self, storage: &dyn Storage, base: u64) -> Result<SegRead> {
        let Some(seg) = self.seg_by_base(base) else {
            return Err(Error::internal(format!(
                "segment {base} vanished while in use; retry"
            )));
        };
        let (limit, path, skips) = (
            self.readable_limit(seg),
            seg.path.clone(),
            seg.damage.clone(),
        );
        Ok(SegRead {
            base,
            file: self.seg_file(storage, base)?,
            limit,
            path,
            skips,
        })
    }
}
