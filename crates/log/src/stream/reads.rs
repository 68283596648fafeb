//! Reads under the lock (live-record scans, per-subject lookups) and
//! single-message reads (`get`, `get_last`, `seq_for_time`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use durabus_core::{subject, Error, Result, StoredMessage};

use crate::record::{self, Kind};
use crate::segment::{self, Damage, ScanEnd, SEGMENT_HEADER};
use crate::storage::{Storage, StorageFile};
use crate::HashMap;

use super::state::Inner;
use super::subjects::{Key, Subjects};
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
        self.for_each_live_reading(storage, from_seq, segment::CHUNK, f)
    }

    /// [`Inner::for_each_live`] reading `chunk` bytes first: small for a
    /// visit that stops at the first record (the index is within 4 KiB).
    fn for_each_live_reading(
        &mut self,
        storage: &dyn Storage,
        from_seq: u64,
        chunk: usize,
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
            let end = segment::scan_skipping(&*file, start, limit, chunk, &skips, &mut |_, r| {
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
            })
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
        self.for_each_live_reading(storage, seq, LOOKUP_READ as usize, &mut |r| {
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

    /// The newest live seq of each subject that matches one of `filters`
    /// (every subject when empty), ascending. Literal filters are looked
    /// up; with a wildcard the names come from the log: the newest message
    /// of each subject is read, or the log is scanned once when that reads
    /// less (or a newest seq is unknown).
    pub(crate) fn last_seqs_matching(
        &mut self,
        storage: &dyn Storage,
        filters: &[String],
    ) -> Result<Vec<u64>> {
        let mut out = Vec::new();
        if !filters.is_empty() && !filters.iter().any(|f| subject::has_wildcards(f)) {
            let mut unique: Vec<&String> = filters.iter().collect();
            unique.sort_unstable();
            unique.dedup();
            for f in unique {
                let l = self.subject_last_seq(storage, f)?;
                if l > 0 {
                    out.push(l);
                }
            }
            out.sort_unstable();
            return Ok(out);
        }
        let wanted = |s: &str| filters.is_empty() || filters.iter().any(|f| subject::matches(f, s));
        let mut lasts: Vec<u64> = Vec::with_capacity(self.subjects.len());
        let mut unknown = false;
        for (_, _, last) in self.subjects.iter() {
            unknown |= last == 0;
            lasts.push(last);
        }
        let per_subject = lasts.len() as u64 * LOOKUP_READ;
        if !unknown && per_subject < self.log_bytes() {
            lasts.sort_unstable();
            for seq in lasts {
                if let Some(subj) = self.subject_at(storage, seq)? {
                    if wanted(&subj) {
                        out.push(seq);
                    }
                }
            }
            return Ok(out);
        }
        // One pass: a record is its subject's newest when the table says
        // so; for subjects whose newest is unknown the pass finds it.
        let subjects = std::mem::replace(&mut self.subjects, Subjects::new(false));
        let mut found: HashMap<Key, u64> = HashMap::default();
        let scanned = self.for_each_live(storage, 0, &mut |r| {
            let k = subjects.key(r.subject);
            match subjects.last(k) {
                Some(0) => {
                    found.insert(k, r.seq);
                }
                Some(l) if l == r.seq && wanted(r.subject) => out.push(r.seq),
                _ => {}
            }
            true
        });
        self.subjects = subjects;
        scanned?;
        // Record what the pass found, then take the wanted ones: their
        // subject is read back (one read each, only for unknown newest).
        for (k, seq) in found {
            self.subjects.set_last(k, seq);
            if let Some(subj) = self.subject_at(storage, seq)? {
                if wanted(&subj) {
                    out.push(seq);
                }
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// Bytes of the log's segments (what a full scan reads).
    fn log_bytes(&self) -> u64 {
        self.sealed.iter().map(|s| s.size).sum::<u64>() + self.active.size
    }

    /// The subject of the live message `seq`, read with a small first read.
    fn subject_at(&mut self, storage: &dyn Storage, seq: u64) -> Result<Option<String>> {
        let mut found = None;
        self.for_each_live_reading(storage, seq, LOOKUP_READ as usize, &mut |r| {
            if r.seq == seq {
                found = Some(r.subject.to_owned());
            }
            false
        })?;
        Ok(found)
    }

    /// The newest live seq of the literal `subject` (0 when none), scanning
    /// if unknown.
    pub(crate) fn subject_last_seq(&mut self, storage: &dyn Storage, subject: &str) -> Result<u64> {
        let k = self.subjects.key(subject);
        match self.subjects.last(k) {
            None => return Ok(0),
            Some(0) => {}
            Some(last) => return Ok(last),
        }
        let mut last = 0;
        self.for_each_live(storage, 0, &mut |r| {
            if r.subject == subject {
                last = r.seq;
            }
            true
        })?;
        self.subjects.set_last(k, last);
        Ok(last)
    }

    /// Keeps each subject's older seqs (when `max_msgs_per_subject` becomes set).
    pub(super) fn rebuild_subject_seqs(&mut self, storage: &dyn Storage) -> Result<()> {
        let mut live = Vec::new();
        let subjects = std::mem::replace(&mut self.subjects, Subjects::new(false));
        let scanned = self.for_each_live(storage, 0, &mut |r| {
            live.push((subjects.key(r.subject), r.seq));
            true
        });
        self.subjects = subjects;
        scanned?;
        self.subjects.start_tracking(live);
        Ok(())
    }
}

/// Bytes a lookup of one message by seq reads first (the sparse index has
/// an entry every 4 KiB of log).
const LOOKUP_READ: u64 = 8 * 1024;

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

    /// Drops from `msgs[from..]` (read in ascending order) what was
    /// deleted or expired since it was read.
    pub(crate) fn retain_live(&self, msgs: &mut VecDeque<StoredMessage>, from: usize) {
        let (Some(lo), Some(hi)) = (msgs.get(from).map(|m| m.seq), msgs.back().map(|m| m.seq))
        else {
            return;
        };
        let g = self.lock();
        let any_deleted = g.deleted.count_in(lo, hi) > 0;
        let first = g.first_seq;
        if !any_deleted && lo >= first {
            return;
        }
        let mut tail = msgs.split_off(from);
        tail.retain(|m| m.seq >= first && !(any_deleted && g.deleted.contains(m.seq)));
        msgs.append(&mut tail);
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
        let not_found = || Error::MessageNotFound {
            stream: self.name.clone(),
            what: format!("for subject {subj:?}"),
        };
        if seq == 0 {
            return Err(not_found());
        }
        let m = self.get(seq)?;
        if &*m.subject == subj {
            return Ok(m);
        }
        // Two subjects share a 96-bit key (docs/design.md, "Per-subject
        // state"): the log itself says which message is this subject's.
        let mut own = 0;
        self.lock().for_each_live(self.storage(), 0, &mut |r| {
            if r.subject == subj {
                own = r.seq;
            }
            true
        })?;
        if own == 0 {
            return Err(not_found());
        }
        self.get(own)
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
