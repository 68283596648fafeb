//! The mutable state of a stream behind its lock ([`Inner`]): segments,
//! sequences, counts, subjects and deletions, and their bookkeeping.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use durabus_core::{subject, Error, Result, RetentionPolicy, StreamConfig, StreamState};

use crate::index_cache::{self, IndexCache};
use crate::manifest::{self, Manifest};
use crate::rangeset::RangeSet;
use crate::segment::{self, SegmentMeta, SEGMENT_HEADER};
use crate::storage::{Storage, StorageFile};

use super::commit::Gather;
use super::dedup::Dedup;
use super::io_err;
use super::subjects::Subjects;
use super::time::to_system_time;

/// Checkpoints up to this size are written whenever asked for.
const CKPT_DEFER_FLOOR: u64 = 1024 * 1024;

/// The segment size reservations assume until the store sets its own.
const DEFAULT_SEGMENT_SIZE: u64 = 64 * 1024 * 1024;

/// A lost sequence range: where its bytes were and why they are gone.
#[derive(Debug, Clone)]
pub(crate) struct Loss {
    /// Its last sequence (the first is its key).
    pub(crate) hi: u64,
    pub(crate) segment: PathBuf,
    pub(crate) offset: u64,
    pub(crate) reason: String,
}

/// The mutable state of a stream, behind the stream lock.
pub(crate) struct Inner {
    pub(super) config: StreamConfig,
    pub(super) created: SystemTime,
    pub(super) segdir: PathBuf,
    pub(super) sealed: VecDeque<SegmentMeta>,
    pub(super) active: SegmentMeta,
    /// Bytes of the active segment handed to the OS; `active.size` also counts `pending`.
    pub(super) flushed: u64,
    /// Under `Always`: where the zeros written ahead of `flushed` end (see
    /// [`Inner::preallocate`]); 0 when none were.
    pub(super) zeroed: u64,
    /// The store is closing: no more zeros ahead (they are cut).
    pub(super) closing: bool,
    /// Encoded records not yet written (reused buffer).
    pub(super) pending: Vec<u8>,
    pub(super) first_seq: u64,
    pub(super) last_seq: u64,
    /// Newest time ever stored: the clamp of invariant 2.
    pub(super) last_time: i64,
    pub(super) messages: u64,
    pub(super) bytes: u64,
    pub(super) deleted: RangeSet,
    /// Sequences held by damaged records reads stepped over, or by missing
    /// or shortened segments (not live, not deleted: lost until `repair`
    /// records them as a gap).
    pub(super) lost: RangeSet,
    /// Each lost range by its first sequence: what to report.
    pub(super) losses: BTreeMap<u64, Loss>,
    /// Lost ranges `repair` recorded as gaps (kept in the manifest).
    pub(super) gaps: Vec<(u64, u64)>,
    /// No sequence above this was assigned (the manifest's reservation).
    pub(super) reserved: u64,
    /// How far a reservation reaches past a new segment's base.
    pub(super) reserve_step: u64,
    /// Per-subject counts and newest seqs (names stay in the log).
    pub(super) subjects: Subjects,
    pub(super) dedup: Dedup,
    pub(super) poisoned: Option<String>,
    /// Incremented by each write to the OS; the group-commit unit.
    pub(super) write_gen: u64,
    pub(super) dirty: bool,
    /// Group commit's gather step (`Always` only, see [`Gather`]).
    pub(super) gather: Gather,
    /// Head cursor: where the oldest live record is looked for.
    pub(super) head_base: u64,
    pub(super) head_off: u64,
    pub(super) head_buf: Vec<u8>,
    pub(super) head_buf_off: u64,
    /// (seq, time) of the head message, while known.
    pub(super) head_cache: Option<(u64, i64)>,
    /// During recovery, files to remove once it succeeded (nothing is touched
    /// if it fails, invariant 7).
    pub(super) recovering: bool,
    pub(super) doomed: Vec<PathBuf>,
    /// A checkpoint should be written (segments sealed or removed).
    pub(super) ckpt_needed: bool,
    /// Message bytes ever accounted (publish and recovery alike), and their
    /// total and the checkpoint's size when the last checkpoint was taken:
    /// a large checkpoint waits for as many new bytes (see
    /// [`Inner::checkpoint_due`]).
    pub(super) appended: u64,
    pub(super) ckpt_at: u64,
    pub(super) ckpt_len: u64,
    /// Where sealed segments' decoded indexes are cached (the store's),
    /// and this stream's key in it.
    pub(super) indexes: Arc<IndexCache>,
    pub(super) cache_id: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.indexes.forget_stream(self.cache_id);
    }
}

impl Inner {
    pub(super) fn new_empty(
        config: StreamConfig,
        created: SystemTime,
        segdir: PathBuf,
        active: SegmentMeta,
        indexes: Arc<IndexCache>,
    ) -> Self {
        let track = config.max_msgs_per_subject.is_some();
        let base = active.base;
        Inner {
            config,
            created,
            segdir,
            sealed: VecDeque::new(),
            flushed: active.size,
            zeroed: 0,
            closing: false,
            active,
            pending: Vec::with_capacity(64 * 1024),
            first_seq: base,
            last_seq: base.saturating_sub(1),
            last_time: 0,
            messages: 0,
            bytes: 0,
            deleted: RangeSet::default(),
            lost: RangeSet::default(),
            losses: BTreeMap::new(),
            gaps: Vec::new(),
            reserved: base.saturating_sub(1),
            reserve_step: manifest::reservation(DEFAULT_SEGMENT_SIZE),
            subjects: Subjects::new(track),
            dedup: Dedup::default(),
            poisoned: None,
            write_gen: 0,
            dirty: false,
            gather: Gather::default(),
            head_base: 0,
            head_off: SEGMENT_HEADER,
            head_buf: Vec::new(),
            head_buf_off: 0,
            head_cache: None,
            recovering: false,
            doomed: Vec::new(),
            ckpt_needed: false,
            appended: 0,
            ckpt_at: 0,
            ckpt_len: 0,
            indexes,
            cache_id: index_cache::next_stream_id(),
        }
    }

    /// The first sequence not removed (`last_seq + 1` when empty).
    pub(crate) fn first_seq(&self) -> u64 {
        self.first_seq
    }

    /// The newest sequence ever stored (0 when none).
    pub(crate) fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// How many messages are stored.
    pub(crate) fn messages(&self) -> u64 {
        self.messages
    }

    /// The stream's retention policy.
    pub(crate) fn retention(&self) -> RetentionPolicy {
        self.config.retention
    }

    /// Whether an asked-for checkpoint should be written now. One larger
    /// than [`CKPT_DEFER_FLOOR`] (a stream with millions of subjects) waits
    /// until the log grew by its size since the last one: checkpoints then
    /// write at most as many bytes as the log, and recovery reads at most
    /// that much of the log beyond it (the checkpoint is never the truth,
    /// so waiting loses nothing).
    pub(super) fn checkpoint_due(&self) -> bool {
        self.ckpt_needed
            && (self.ckpt_len <= CKPT_DEFER_FLOOR
                || self.appended.saturating_sub(self.ckpt_at) >= self.ckpt_len)
    }

    /// Asks for a checkpoint after the change under way (removals that are
    /// not logged, rule 7, are recorded by it).
    pub(crate) fn request_checkpoint(&mut self) {
        self.ckpt_needed = true;
    }

    /// Stored messages at or above `from`.
    pub(crate) fn live_from(&self, from: u64) -> u64 {
        let f = from.max(self.first_seq);
        if f > self.last_seq {
            return 0;
        }
        (self.last_seq - f + 1).saturating_sub(self.deleted.count_in(f, self.last_seq))
    }

    /// Stored messages on the literal subjects `filters` (each counted
    /// once); `None` when one is a wildcard (that needs the names, which
    /// only the log holds).
    pub(crate) fn count_literal(&self, filters: &[String]) -> Option<u64> {
        if filters.iter().any(|f| subject::has_wildcards(f)) {
            return None;
        }
        let mut unique: Vec<&String> = filters.iter().collect();
        unique.sort_unstable();
        unique.dedup();
        Some(
            unique
                .into_iter()
                .map(|f| self.subjects.count(self.subjects.key(f)))
                .sum(),
        )
    }

    /// Whether `seq` is a stored message.
    pub(crate) fn is_live(&self, seq: u64) -> bool {
        seq >= self.first_seq
            && seq <= self.last_seq
            && !self.deleted.contains(seq)
            && !self.lost.contains(seq)
    }

    /// The segment that holds (or would hold) `seq`.
    pub(super) fn seg_for_seq(&self, seq: u64) -> &SegmentMeta {
        if seq >= self.active.base || self.sealed.is_empty() {
            return &self.active;
        }
        let i = self.sealed.partition_point(|s| s.base <= seq);
        if i == 0 {
            &self.sealed[0]
        } else {
            &self.sealed[i - 1]
        }
    }

    pub(super) fn seg_for_seq_mut(&mut self, seq: u64) -> &mut SegmentMeta {
        if seq >= self.active.base || self.sealed.is_empty() {
            return &mut self.active;
        }
        let i = self.sealed.partition_point(|s| s.base <= seq);
        &mut self.sealed[i.saturating_sub(1)]
    }

    pub(super) fn seg_by_base(&self, base: u64) -> Option<&SegmentMeta> {
        if self.active.base == base {
            return Some(&self.active);
        }
        let i = self.sealed.partition_point(|s| s.base < base);
        self.sealed.get(i).filter(|s| s.base == base)
    }

    /// The segment after the one starting at `base`.
    pub(super) fn seg_after(&self, base: u64) -> Option<&SegmentMeta> {
        if base >= self.active.base {
            return None;
        }
        let i = self.sealed.partition_point(|s| s.base <= base);
        Some(self.sealed.get(i).unwrap_or(&self.active))
    }

    /// How far readers may read in the segment starting at `base`.
    pub(super) fn readable_limit(&self, seg: &SegmentMeta) -> u64 {
        if seg.base == self.active.base {
            self.flushed
        } else {
            seg.size
        }
    }

    /// A read handle of a segment, opened on first use.
    pub(super) fn seg_file(
        &mut self,
        storage: &dyn Storage,
        base: u64,
    ) -> Result<Arc<dyn StorageFile>> {
        let seg = if self.active.base == base {
            &mut self.active
        } else {
            let i = self.sealed.partition_point(|s| s.base < base);
            match self.sealed.get_mut(i).filter(|s| s.base == base) {
                Some(s) => s,
                None => {
                    return Err(Error::internal(format!(
                        "segment {base} vanished while in use; retry"
                    )))
                }
            }
        };
        if let Some(f) = &seg.file {
            return Ok(f.clone());
        }
        let f = storage
            .open(&seg.path)
            .map_err(io_err(format!("opening {}", seg.path.display())))?;
        seg.file = Some(f.clone());
        Ok(f)
    }

    pub(super) fn poison_error(&self, stream: &str) -> Option<Error> {
        self.poisoned.as_ref().map(|cause| Error::Poisoned {
            stream: stream.to_owned(),
            cause: cause.clone(),
        })
    }

    /// Refuses every later write (invariant 5) and returns the error to report.
    pub(super) fn poison(&mut self, stream: &str, cause: String) -> Error {
        tracing::error!(stream, cause = %cause, "stream poisoned; reopen the store to recover");
        if self.poisoned.is_none() {
            self.poisoned = Some(cause);
        }
        self.pending.clear();
        self.poison_error(stream).unwrap_or(Error::Closed)
    }

    /// Accounts a message record (publish and recovery alike).
    pub(super) fn note_message(
        &mut self,
        seq: u64,
        time: i64,
        subject: &str,
        size: u64,
        offset: u64,
        msg_id: Option<&str>,
    ) {
        if seq > self.last_seq + 1 {
            // A gap (only after damage or removed segments): the missing
            // sequences are gone.
            if self.messages == 0 {
                self.first_seq = seq;
                self.deleted.clear();
            } else {
                self.deleted.insert_range(self.last_seq + 1, seq - 1);
            }
        }
        if self.messages == 0 && !self.lost_or_deleted(self.first_seq, seq) {
            self.first_seq = seq;
            self.head_cache = None;
        }
        self.last_seq = seq;
        self.last_time = self.last_time.max(time);
        self.messages += 1;
        self.bytes += size;
        self.active.note_message(seq, time, offset, size);
        let k = self.subjects.key_cached(subject);
        self.subjects.add(k, seq);
        self.appended += size;
        if let Some(id) = msg_id {
            self.dedup.insert(id, seq, time);
        }
    }

    /// Removes a live message from every account.
    pub(crate) fn remove_msg(&mut self, seq: u64, subject: &str, size: u64) {
        self.messages = self.messages.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(size);
        let seg = self.seg_for_seq_mut(seq);
        seg.msgs = seg.msgs.saturating_sub(1);
        seg.bytes = seg.bytes.saturating_sub(size);
        let k = self.subjects.key_cached(subject);
        self.subjects.remove(k, seq);
        self.head_cache = None;
        if self.messages == 0 {
            self.first_seq = self.last_seq + 1;
            self.deleted.clear();
            self.drop_dead_segments();
        } else if seq == self.first_seq || self.lost_or_deleted(self.first_seq, seq) {
            self.advance_first(seq + 1);
        } else {
            self.deleted.insert(seq);
        }
    }

    /// Whether every sequence in `from..to` is lost or deleted (and there
    /// is at least one): a lost range at the head stays the head, so reads
    /// from the start report it, until the message after it goes too.
    fn lost_or_deleted(&self, from: u64, to: u64) -> bool {
        from < to
            && self.lost.count_in(from, to - 1) + self.deleted.count_in(from, to - 1) >= to - from
    }

    pub(super) fn advance_first(&mut self, to: u64) {
        self.first_seq = to;
        self.deleted.remove_below(to);
        while let Some(end) = self
            .deleted
            .range_end_at(self.first_seq)
            .or_else(|| self.lost.range_end_at(self.first_seq))
        {
            self.first_seq = end + 1;
            self.deleted.remove_below(self.first_seq);
        }
        self.drop_dead_segments();
    }

    /// Removes sealed segments whose every sequence is below `first_seq`.
    pub(super) fn drop_dead_segments(&mut self) {
        loop {
            let next_base = match self.sealed.get(1) {
                Some(s) => s.base,
                None if self.sealed.is_empty() => return,
                None => self.active.base,
            };
            if next_base > self.first_seq {
                return;
            }
            let Some(seg) = self.sealed.pop_front() else {
                return;
            };
            self.indexes.remove(self.cache_id, seg.base);
            let idx = self.segdir.join(segment::idx_name(seg.base));
            self.doomed.push(seg.path);
            self.doomed.push(idx);
            self.ckpt_needed = true;
        }
    }

    /// The manifest that describes the segments now.
    pub(super) fn manifest(&self) -> Manifest {
        Manifest {
            sealed: self.sealed.iter().map(|s| (s.base, s.size)).collect(),
            active: self.active.base,
            reserved: self.reserved,
            // Gaps below the first sequence no longer matter.
            gaps: self
                .gaps
                .iter()
                .filter(|(_, hi)| *hi >= self.first_seq)
                .copied()
                .collect(),
        }
    }

    /// Replaces the manifest on disk with [`Inner::manifest`].
    pub(super) fn write_manifest(&self, storage: &dyn Storage) -> std::io::Result<()> {
        let dir = self.segdir.parent().unwrap_or(&self.segdir);
        manifest::write(storage, dir, &self.manifest())
    }

    /// Reserves sequences up to at least `seq` in the manifest before one
    /// above the reservation is assigned (none is ever assigned twice,
    /// even when the active segment is lost).
    pub(super) fn reserve(&mut self, stream: &str, storage: &dyn Storage, seq: u64) -> Result<()> {
        if seq <= self.reserved {
            return Ok(());
        }
        let before = self.reserved;
        self.reserved = seq.max(self.active.base).saturating_add(self.reserve_step);
        if let Err(e) = self.write_manifest(storage) {
            self.reserved = before;
            return Err(self.poison(stream, format!("writing the segment manifest: {e}")));
        }
        Ok(())
    }

    /// Removes files of dropped segments (after recovery succeeded, or now).
    pub(super) fn remove_doomed(&mut self, storage: &dyn Storage) {
        if self.recovering || self.doomed.is_empty() {
            return;
        }
        if storage.is_read_only() {
            // A read-only store removes nothing; the next writable open
            // drops these files again (rule 7).
            self.doomed.clear();
            return;
        }
        // IMPORTANT (found by the power-loss test, R2): the record that
        // dropped these segments (a purge, a delete, a limit) is durable
        // before they go. Otherwise a power loss can keep the removals and
        // lose the record: half a purge. Kept files are dropped again by
        // the next open, which replays the record.
        if let Some(file) = self.active.file.clone() {
            if let Err(e) = file.sync_data() {
                let name = self.config.name.clone();
                self.poison(
                    &name,
                    format!("fsync before removing dropped segments: {e}"),
                );
                self.doomed.clear();
                return;
            }
        }
        // The manifest stops listing them before they go: a listed segment
        // that is missing is damage, never a removal.
        if let Err(e) = self.write_manifest(storage) {
            let name = self.config.name.clone();
            self.poison(
                &name,
                format!("writing the segment manifest before removing dropped segments: {e}"),
            );
            self.doomed.clear();
            return;
        }
        for p in self.doomed.drain(..) {
            match storage.remove_file(&p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %p.display(), error = %e, "could not remove a dropped segment file")
                }
            }
        }
    }

    pub(super) fn state(&mut self, stream: &str, storage: &dyn Storage) -> StreamState {
        let first_time = if self.messages > 0 {
            self.head_time(stream, storage)
                .ok()
                .flatten()
                .map(to_system_time)
        } else {
            None
        };
        StreamState {
            messages: self.messages,
            bytes: self.bytes,
            first_seq: if self.last_seq == 0 {
                0
            } else {
                self.first_seq
            },
            first_time,
            last_seq: self.last_seq,
            last_time: (self.last_seq > 0 && self.last_time > 0)
                .then(|| to_system_time(self.last_time)),
            num_deleted: self.deleted.count(),
            num_lost: if self.last_seq >= self.first_seq {
                self.lost.count_in(self.first_seq, self.last_seq)
            } else {
                0
            },
            num_subjects: self.subjects.len() as u64,
            consumer_count: 0,
        }
    }
}
