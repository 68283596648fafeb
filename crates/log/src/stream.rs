//! The synchronous stream core: state, publish, limits, dedup, purge, delete,
//! get. Recovery is in `recovery.rs`, replay in `replay.rs`.
//!
//! Memory stays bounded by the number of segments, subjects and deletions,
//! never by the number of messages (W6): there is no per-message index. The
//! oldest records are read back from disk (buffered) when limits evict them.

use crate::HashMap;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use durabus_core::{
    subject, ByteString, DiscardPolicy, Error, Message, PublishAck, PurgeRequest, Result,
    RetentionPolicy, StoredMessage, StreamConfig, StreamInfo, StreamState,
    NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_EXPECTED_STREAM,
    NATS_MSG_ID, NATS_ROLLUP,
};
use tokio::sync::watch;

use crate::checkpoint::{Checkpoint, SegCkpt, SubjCkpt, CHECKPOINT_FILE};
use crate::consumer::ConsumerSet;
use crate::rangeset::RangeSet;
use crate::record::{self, Decoded, Kind};
use crate::segment::{self, ScanEnd, ScanError, SegmentMeta, SEGMENT_HEADER};
use crate::storage::{Storage, StorageFile};
use crate::sync::Background;
use crate::Durability;

/// Unix nanoseconds now.
pub(crate) fn now_ns() -> i64 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

/// Unix nanoseconds to a `SystemTime`.
pub(crate) fn to_system_time(ns: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_nanos(ns.max(0) as u64)
}

/// A `SystemTime` as unix nanoseconds.
pub(crate) fn from_system_time(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(_) => 0,
    }
}

fn dur_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Under `Always`, a single publish leaves its record in the pending buffer
/// for the syncer to write together with the rest of its group, up to this
/// many buffered bytes.
const DEFER_WRITE_MAX: usize = 1024 * 1024;

/// What every stream of a store shares.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) durability: Durability,
    pub(crate) segment_size: u64,
    pub(crate) bg: Arc<Background>,
}

impl Env {
    fn volatile(&self) -> bool {
        self.storage.is_volatile()
    }
}

/// The group-commit watermark: every write generation up to `gen` is durable.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Durable {
    pub(crate) gen: u64,
    pub(crate) failed: bool,
}

/// Per-subject state. `seqs` only when `max_msgs_per_subject` is set.
#[derive(Debug, Clone, Default)]
pub(crate) struct SubjState {
    pub(crate) count: u64,
    /// Newest live seq; 0 = unknown (its newest was deleted), found by a scan on demand.
    pub(crate) last: u64,
    pub(crate) seqs: Option<VecDeque<u64>>,
}

/// Msg-id de-duplication inside the window (invariant 9).
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    pub(crate) map: HashMap<Arc<str>, (u64, i64)>,
    pub(crate) order: VecDeque<(i64, u64, Arc<str>)>,
}

impl Dedup {
    pub(crate) fn expire(&mut self, cutoff: i64) {
        while let Some((t, seq, _)) = self.order.front() {
            if *t >= cutoff {
                break;
            }
            let (seq, id) = (*seq, self.order.pop_front().map(|e| e.2));
            if let Some(id) = id {
                if self.map.get(&id).is_some_and(|(s, _)| *s == seq) {
                    self.map.remove(&id);
                }
            }
        }
    }

    /// Keeps only ids whose message is still stored. Used at open, so that
    /// the window is rebuilt from stored messages whether or not a checkpoint
    /// survived (invariant 8), as JetStream rebuilds it after a restart.
    pub(crate) fn retain(&mut self, live: impl Fn(u64) -> bool) {
        self.map.retain(|_, (seq, _)| live(*seq));
        self.order.retain(|(_, seq, _)| live(*seq));
    }

    pub(crate) fn insert(&mut self, id: &str, seq: u64, time: i64) {
        let id: Arc<str> = Arc::from(id);
        self.map.insert(id.clone(), (seq, time));
        self.order.push_back((time, seq, id));
    }
}

/// The mutable state of a stream, behind the stream lock.
pub(crate) struct Inner {
    pub(crate) config: StreamConfig,
    pub(crate) created: SystemTime,
    pub(crate) segdir: PathBuf,
    pub(crate) sealed: VecDeque<SegmentMeta>,
    pub(crate) active: SegmentMeta,
    /// Bytes of the active segment handed to the OS; `active.size` also counts `pending`.
    pub(crate) flushed: u64,
    /// Under `Always`: where the zeros written ahead of `flushed` end (see
    /// [`Inner::preallocate`]); 0 when none were.
    pub(crate) zeroed: u64,
    /// The store is closing: no more zeros ahead (they are cut).
    closing: bool,
    /// Encoded records not yet written (reused buffer).
    pub(crate) pending: Vec<u8>,
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    /// Newest time ever stored: the clamp of invariant 2.
    pub(crate) last_time: i64,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) deleted: RangeSet,
    pub(crate) subjects: HashMap<String, SubjState>,
    pub(crate) track_subject_seqs: bool,
    pub(crate) dedup: Dedup,
    pub(crate) poisoned: Option<String>,
    /// Incremented by each write to the OS; the group-commit unit.
    pub(crate) write_gen: u64,
    pub(crate) dirty: bool,
    /// Group commit's gather step (`Always` only, see [`Gather`]).
    gather: Gather,
    /// Head cursor: where the oldest live record is looked for.
    head_base: u64,
    head_off: u64,
    head_buf: Vec<u8>,
    head_buf_off: u64,
    /// (seq, time) of the head message, while known.
    head_cache: Option<(u64, i64)>,
    /// During recovery, files to remove once it succeeded (nothing is touched
    /// if it fails, invariant 7).
    pub(crate) recovering: bool,
    pub(crate) doomed: Vec<PathBuf>,
    /// A checkpoint should be written (segments sealed or removed).
    pub(crate) ckpt_needed: bool,
}

/// Group commit's gather step. When an fsync ends, the publishers it
/// acknowledged plus those already waiting for the next one are how many are
/// publishing at once. The next fsync waits for that many, or for as long as
/// the last fsync took (at most [`GATHER_MAX`]), whichever comes first:
/// otherwise the publishers it woke miss the next fsync, which starts at once
/// with those already waiting, and the group splits into two halves that take
/// turns, each fsync carrying half of them.
#[derive(Debug, Default)]
struct Gather {
    /// Publish calls since the syncer last captured a write generation.
    calls: usize,
    /// Calls the next fsync waits for.
    target: usize,
    /// Until when it waits for them; `None`: it does not wait.
    until: Option<Instant>,
    /// The syncer is waiting on `Stream::gathered`.
    waiting: bool,
}

/// Zeros kept written ahead of the records under `Always`.
const PREALLOC: u64 = 1 << 20;

/// Upper bound of the gather wait.
const GATHER_MAX: Duration = Duration::from_micros(500);

/// The head message as the cursor found it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeadRec {
    pub(crate) seq: u64,
    pub(crate) time: i64,
    pub(crate) size: u64,
}

/// A stream: its lock-protected state plus lock-free signals.
pub(crate) struct Stream {
    pub(crate) name: String,
    /// `name` as the messages read from it carry it (shared, not copied).
    pub(crate) label: ByteString,
    /// `streams/<name>`.
    pub(crate) dir: PathBuf,
    pub(crate) env: Arc<Env>,
    inner: Mutex<Inner>,
    /// Signalled when a publish completes the group the syncer gathers.
    gathered: Condvar,
    /// Bumped on every change; tailing replays wait on it.
    pub(crate) tail_tx: watch::Sender<u64>,
    durable_tx: watch::Sender<Durable>,
    /// The stream was deleted or the store closed: replays end.
    closed: AtomicBool,
    pub(crate) sync_requested: AtomicBool,
    ckpt_lock: Mutex<()>,
    /// Its consumers (`consumer.rs`). Lock order: consumers, then `inner`.
    pub(crate) consumers: ConsumerSet,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

fn io_err(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(context, e)
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        segment: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Converts a scan failure; `path` names the segment.
pub(crate) fn scan_error(path: &Path, e: ScanError) -> Error {
    match e {
        ScanError::Io(e) => Error::io(format!("reading {}", path.display()), e),
        ScanError::Callback(e) => e,
    }
}

/// Builds a stored message from a decoded record; `chunk` owns the bytes
/// (payload is a zero-copy slice of it).
pub(crate) fn stored_from(
    stream: &ByteString,
    r: &record::RecordRef<'_>,
    chunk: Option<&Bytes>,
) -> StoredMessage {
    // Slices of the chunk where there is one (a reference count, no copy).
    let (subject, payload) = match chunk {
        Some(c) => (
            ByteString::try_from(c.slice_ref(r.subject.as_bytes()))
                .unwrap_or_else(|_| ByteString::from(r.subject)),
            c.slice_ref(r.payload),
        ),
        None => (
            ByteString::from(r.subject),
            Bytes::copy_from_slice(r.payload),
        ),
    };
    StoredMessage {
        stream: stream.clone(),
        seq: r.seq,
        subject,
        time: to_system_time(r.time),
        headers: r.header_map(),
        payload,
    }
}

impl Inner {
    pub(crate) fn new_empty(
        config: StreamConfig,
        created: SystemTime,
        segdir: PathBuf,
        active: SegmentMeta,
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
            subjects: HashMap::default(),
            track_subject_seqs: track,
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
        }
    }

    /// Whether `seq` is a stored message.
    pub(crate) fn is_live(&self, seq: u64) -> bool {
        seq >= self.first_seq && seq <= self.last_seq && !self.deleted.contains(seq)
    }

    /// The segment that holds (or would hold) `seq`.
    pub(crate) fn seg_for_seq(&self, seq: u64) -> &SegmentMeta {
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

    fn seg_for_seq_mut(&mut self, seq: u64) -> &mut SegmentMeta {
        if seq >= self.active.base || self.sealed.is_empty() {
            return &mut self.active;
        }
        let i = self.sealed.partition_point(|s| s.base <= seq);
        &mut self.sealed[i.saturating_sub(1)]
    }

    pub(crate) fn seg_by_base(&self, base: u64) -> Option<&SegmentMeta> {
        if self.active.base == base {
            return Some(&self.active);
        }
        let i = self.sealed.partition_point(|s| s.base < base);
        self.sealed.get(i).filter(|s| s.base == base)
    }

    /// The segment after the one starting at `base`.
    pub(crate) fn seg_after(&self, base: u64) -> Option<&SegmentMeta> {
        if base >= self.active.base {
            return None;
        }
        let i = self.sealed.partition_point(|s| s.base <= base);
        Some(self.sealed.get(i).unwrap_or(&self.active))
    }

    /// How far readers may read in the segment starting at `base`.
    pub(crate) fn readable_limit(&self, seg: &SegmentMeta) -> u64 {
        if seg.base == self.active.base {
            self.flushed
        } else {
            seg.size
        }
    }

    /// A read handle of a segment, opened on first use.
    pub(crate) fn seg_file(
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

    pub(crate) fn poison_error(&self, stream: &str) -> Option<Error> {
        self.poisoned.as_ref().map(|cause| Error::Poisoned {
            stream: stream.to_owned(),
            cause: cause.clone(),
        })
    }

    /// Accounts a message record (publish and recovery alike).
    pub(crate) fn note_message(
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
        if self.messages == 0 {
            self.first_seq = seq;
            self.head_cache = None;
        }
        self.last_seq = seq;
        self.last_time = self.last_time.max(time);
        self.messages += 1;
        self.bytes += size;
        self.active.note_message(seq, time, offset, size);
        let track = self.track_subject_seqs;
        match self.subjects.get_mut(subject) {
            Some(st) => {
                st.count += 1;
                st.last = seq;
                if let Some(q) = &mut st.seqs {
                    q.push_back(seq);
                }
            }
            None => {
                self.subjects.insert(
                    subject.to_owned(),
                    SubjState {
                        count: 1,
                        last: seq,
                        seqs: track.then(|| VecDeque::from([seq])),
                    },
                );
            }
        }
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
        let mut gone = false;
        if let Some(st) = self.subjects.get_mut(subject) {
            st.count = st.count.saturating_sub(1);
            if let Some(q) = &mut st.seqs {
                if q.front() == Some(&seq) {
                    q.pop_front();
                } else if let Ok(i) = q.binary_search(&seq) {
                    q.remove(i);
                }
            }
            if st.count == 0 {
                gone = true;
            } else if st.last == seq {
                st.last = st
                    .seqs
                    .as_ref()
                    .and_then(|q| q.back().copied())
                    .unwrap_or(0);
            }
        }
        if gone {
            self.subjects.remove(subject);
        }
        self.head_cache = None;
        if self.messages == 0 {
            self.first_seq = self.last_seq + 1;
            self.deleted.clear();
            self.drop_dead_segments();
        } else if seq == self.first_seq {
            self.advance_first(seq + 1);
        } else {
            self.deleted.insert(seq);
        }
    }

    fn advance_first(&mut self, to: u64) {
        self.first_seq = to;
        self.deleted.remove_below(to);
        while let Some(end) = self.deleted.range_end_at(self.first_seq) {
            self.first_seq = end + 1;
            self.deleted.remove_below(self.first_seq);
        }
        self.drop_dead_segments();
    }

    /// Removes sealed segments whose every sequence is below `first_seq`.
    fn drop_dead_segments(&mut self) {
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
            let idx = self.segdir.join(segment::idx_name(seg.base));
            self.doomed.push(seg.path);
            self.doomed.push(idx);
            self.ckpt_needed = true;
        }
    }

    /// Removes files of dropped segments (after recovery succeeded, or now).
    pub(crate) fn remove_doomed(&mut self, storage: &dyn Storage) {
        if self.recovering || self.doomed.is_empty() {
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

    /// Writes pending records to the OS: one write call (invariant 3).
    pub(crate) fn flush(&mut self, stream: &str) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if let Some(e) = self.poison_error(stream) {
            return Err(e);
        }
        let Some(file) = self.active.file.clone() else {
            return Err(self.poison(stream, "the active segment has no open file".into()));
        };
        match file.write_all_at(&self.pending, self.flushed) {
            Ok(()) => {
                self.flushed += self.pending.len() as u64;
                self.pending.clear();
                if self.pending.capacity() > 8 * 1024 * 1024 {
                    self.pending = Vec::with_capacity(64 * 1024);
                }
                self.write_gen += 1;
                self.dirty = true;
                Ok(())
            }
            Err(e) => {
                let cause = format!("write to {} failed: {e}", self.active.path.display());
                Err(self.poison(stream, cause))
            }
        }
    }

    /// Under `Always`, keeps [`PREALLOC`] bytes of zeros written ahead of the
    /// records in the active segment (at most to the segment size), so the
    /// group commit's fdatasync overwrites allocated blocks and leaves the
    /// file size alone: it need not write the inode too (measured: about 40%
    /// more fsyncs per second on ext4). Recovery reads zeros after the last
    /// record as the end of the log; a segment is cut to its records when it
    /// is sealed or closed. A failed write here only means no preallocation.
    fn preallocate(&mut self, segment_size: u64) {
        let from = self.zeroed.max(self.flushed);
        if self.closing || from >= self.flushed + PREALLOC / 4 {
            return;
        }
        let to = (from + PREALLOC).min(segment_size.max(self.flushed));
        let Some(file) = self.active.file.clone() else {
            return;
        };
        if to <= from {
            return;
        }
        let zeros = vec![0u8; (to - from) as usize];
        match file.write_all_at(&zeros, from) {
            Ok(()) => self.zeroed = to,
            Err(e) => tracing::debug!(error = %e, "preallocating the active segment failed"),
        }
    }

    /// Cuts the active segment's file to its records (zeros written ahead of
    /// them by [`Inner::preallocate`], perhaps by an earlier session, go).
    /// The caller fsyncs.
    fn trim_active(&mut self) -> std::io::Result<()> {
        let Some(file) = self.active.file.clone() else {
            return Ok(());
        };
        if self.zeroed > self.flushed || file.len()? > self.flushed {
            file.set_len(self.flushed)?;
        }
        self.zeroed = 0;
        Ok(())
    }

    /// Writes records still pending (deferred by group commit) so that readers,
    /// which read files, see every stored message.
    pub(crate) fn flush_for_read(&mut self) -> Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let name = self.config.name.clone();
        self.flush(&name)
    }

    /// Refuses every later write (invariant 5) and returns the error to report.
    pub(crate) fn poison(&mut self, stream: &str, cause: String) -> Error {
        tracing::error!(stream, cause = %cause, "stream poisoned; reopen the store to recover");
        if self.poisoned.is_none() {
            self.poisoned = Some(cause);
        }
        self.pending.clear();
        self.poison_error(stream).unwrap_or(Error::Closed)
    }

    // ----- head cursor --------------------------------------------------

    /// Finds the oldest live message, leaving the cursor on it.
    pub(crate) fn head_find(
        &mut self,
        stream: &str,
        storage: &dyn Storage,
    ) -> Result<Option<HeadRec>> {
        if self.messages == 0 {
            return Ok(None);
        }
        let first = self.first_seq;
        let mut refilled_at = u64::MAX;
        loop {
            // Reposition when the cursor's segment is gone or behind the head.
            let target = self.seg_for_seq(first);
            let (tbase, toff) = (target.base, segment::seek_seq(&target.index, first));
            // first_seq is live, so the head record is in its segment; the
            // cursor starts at 0 (before every segment) after open.
            if self.head_base < tbase || self.seg_by_base(self.head_base).is_none() {
                self.head_base = tbase;
                self.head_off = toff;
                self.head_buf.clear();
            } else if self.head_base == tbase && toff > self.head_off {
                self.head_off = toff;
            }
            let Some(seg) = self.seg_by_base(self.head_base) else {
                return Ok(None);
            };
            let limit = self.readable_limit(seg);
            let is_active = seg.base == self.active.base;
            let path = seg.path.clone();
            if self.head_off >= limit {
                if is_active {
                    if !self.pending.is_empty() {
                        self.flush(stream)?;
                        continue;
                    }
                    return Ok(None);
                }
                let Some(next) = self.seg_after(self.head_base) else {
                    return Ok(None);
                };
                self.head_base = next.base;
                self.head_off = SEGMENT_HEADER;
                self.head_buf.clear();
                continue;
            }
            let buf_end = self.head_buf_off + self.head_buf.len() as u64;
            let in_buf = self.head_off >= self.head_buf_off && self.head_off < buf_end;
            let rel = (self.head_off - self.head_buf_off.min(self.head_off)) as usize;
            let outcome = if in_buf {
                match record::decode(&self.head_buf[rel..]) {
                    Decoded::Ok(r) => Ok((r.kind, r.seq, r.time, r.size as u64)),
                    Decoded::Torn => Err(None),
                    Decoded::Corrupt(reason) => Err(Some(reason)),
                }
            } else {
                Err(None)
            };
            match outcome {
                Ok((kind, seq, time, size)) => {
                    if kind == Kind::Message && seq >= first && !self.deleted.contains(seq) {
                        self.head_cache = Some((seq, time));
                        return Ok(Some(HeadRec { seq, time, size }));
                    }
                    self.head_off += size;
                }
                Err(Some(reason)) => return Err(corrupt(&path, self.head_off, reason)),
                Err(None) => {
                    if refilled_at == self.head_off {
                        return Err(corrupt(
                            &path,
                            self.head_off,
                            "record ends past the written data",
                        ));
                    }
                    refilled_at = self.head_off;
                    let file = self.seg_file(storage, self.head_base)?;
                    let mut want = ((limit - self.head_off) as usize).min(segment::CHUNK);
                    let mut hdr = [0u8; 4];
                    if segment::read_full(&*file, &mut hdr, self.head_off)
                        .map_err(io_err(format!("reading {}", path.display())))?
                        == 4
                    {
                        if let Some(n) = record::announced_size(&hdr) {
                            if n > want && (n as u64) <= limit - self.head_off {
                                want = n;
                            }
                        }
                    }
                    self.head_buf.resize(want, 0);
                    segment::read_full(&*file, &mut self.head_buf, self.head_off)
                        .map_err(io_err(format!("reading {}", path.display())))?;
                    self.head_buf_off = self.head_off;
                }
            }
        }
    }

    /// The time of the oldest live message.
    pub(crate) fn head_time(&mut self, stream: &str, storage: &dyn Storage) -> Result<Option<i64>> {
        if let Some((seq, t)) = self.head_cache {
            if seq == self.first_seq {
                return Ok(Some(t));
            }
        }
        Ok(self.head_find(stream, storage)?.map(|h| h.time))
    }

    /// Removes the oldest live message; false when there is none.
    pub(crate) fn evict_head(&mut self, stream: &str, storage: &dyn Storage) -> Result<bool> {
        let Some(h) = self.head_find(stream, storage)? else {
            return Ok(false);
        };
        let buf = std::mem::take(&mut self.head_buf);
        let rel = (self.head_off - self.head_buf_off) as usize;
        let r = match buf.get(rel..).map(record::decode) {
            Some(Decoded::Ok(r)) => Some(r.subject),
            _ => None,
        };
        let found = r.is_some();
        if let Some(subject) = r {
            self.remove_msg(h.seq, subject, h.size);
        }
        self.head_buf = buf;
        self.head_off += h.size;
        Ok(found)
    }

    // ----- limits ---------------------------------------------------------

    /// Removes messages older than `max_age`.
    pub(crate) fn expire(&mut self, stream: &str, storage: &dyn Storage, now: i64) -> Result<u64> {
        let Some(age) = self.config.max_age else {
            return Ok(0);
        };
        let cutoff = now.saturating_sub(dur_ns(age));
        let mut n = 0;
        while let Some(t) = self.head_time(stream, storage)? {
            if t >= cutoff || !self.evict_head(stream, storage)? {
                break;
            }
            n += 1;
        }
        Ok(n)
    }

    /// Evicts the oldest messages until every count and byte limit holds
    /// (discard `old`, and re-application after recovery or an update).
    pub(crate) fn enforce_limits(&mut self, stream: &str, storage: &dyn Storage) -> Result<()> {
        if let Some(max) = self.config.max_msgs {
            while self.messages > max {
                if !self.evict_head(stream, storage)? {
                    break;
                }
            }
        }
        if let Some(max) = self.config.max_bytes {
            while self.bytes > max {
                if !self.evict_head(stream, storage)? {
                    break;
                }
            }
        }
        Ok(())
    }

    /// Evicts the oldest messages of `subject` beyond `max_msgs_per_subject`.
    pub(crate) fn enforce_subject_limit(
        &mut self,
        stream: &str,
        storage: &dyn Storage,
        subject: &str,
    ) -> Result<()> {
        let Some(max) = self.config.max_msgs_per_subject else {
            return Ok(());
        };
        loop {
            let Some(st) = self.subjects.get(subject) else {
                return Ok(());
            };
            if st.count <= max {
                return Ok(());
            }
            let Some(oldest) = st.seqs.as_ref().and_then(|q| q.front().copied()) else {
                return Ok(());
            };
            if oldest == self.first_seq {
                self.evict_head(stream, storage)?;
            } else {
                let size = self.read_info(stream, storage, oldest)?.1;
                self.remove_msg(oldest, subject, size);
            }
        }
    }

    /// Re-applies every limit (after recovery or an update).
    pub(crate) fn enforce_all(
        &mut self,
        stream: &str,
        storage: &dyn Storage,
        now: i64,
    ) -> Result<()> {
        if self.config.max_msgs_per_subject.is_some() {
            let over: Vec<String> = self
                .subjects
                .iter()
                .filter(|(_, s)| Some(s.count) > self.config.max_msgs_per_subject)
                .map(|(k, _)| k.clone())
                .collect();
            for s in over {
                self.enforce_subject_limit(stream, storage, &s)?;
            }
        }
        self.enforce_limits(stream, storage)?;
        self.expire(stream, storage, now)?;
        Ok(())
    }

    // ----- reads ------------------------------------------------------------

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
        let mut start = segment::seek_seq(&self.seg_for_seq(from).index, from);
        loop {
            let Some(seg) = self.seg_by_base(base) else {
                return Ok(());
            };
            let limit = self.readable_limit(seg);
            let path = seg.path.clone();
            let file = self.seg_file(storage, base)?;
            let deleted = &self.deleted;
            let (first, last) = (self.first_seq, self.last_seq);
            let mut stop = false;
            let end = segment::scan(&*file, start, limit, &mut |_, r| {
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
            if let ScanEnd::Bad { offset, reason, .. } = end {
                return Err(corrupt(&path, offset, reason));
            }
            if stop {
                return Ok(());
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
    pub(crate) fn rebuild_subject_seqs(&mut self, storage: &dyn Storage) -> Result<()> {
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

    // ----- purge ------------------------------------------------------------

    /// Applies a purge record (live and in recovery alike): removes messages
    /// below `bound`, matching `filter` when non-empty, keeping the newest
    /// `keep` of those. Returns how many were removed.
    pub(crate) fn apply_purge(
        &mut self,
        stream: &str,
        storage: &dyn Storage,
        filter: &str,
        bound: u64,
        keep: u64,
    ) -> Result<u64> {
        if filter.is_empty() {
            let before = self.messages;
            if bound > self.last_seq && keep == 0 {
                self.clear_all();
            } else {
                while self.messages > 0 && self.first_seq < bound {
                    if !self.evict_head(stream, storage)? {
                        break;
                    }
                }
            }
            return Ok(before - self.messages);
        }
        let literal = !subject::has_wildcards(filter);
        let total = if bound > self.last_seq {
            if literal {
                self.subjects.get(filter).map_or(0, |s| s.count)
            } else {
                self.subjects
                    .iter()
                    .filter(|(s, _)| subject::matches(filter, s))
                    .map(|(_, st)| st.count)
                    .sum()
            }
        } else {
            let mut n = 0;
            self.for_each_live(storage, 0, &mut |r| {
                if r.seq >= bound {
                    return false;
                }
                if subject::matches(filter, r.subject) {
                    n += 1;
                }
                true
            })?;
            n
        };
        let to_remove = total.saturating_sub(keep);
        if to_remove == 0 {
            return Ok(0);
        }
        let mut hits: Vec<(u64, String, u64)> = Vec::new();
        self.for_each_live(storage, 0, &mut |r| {
            if r.seq >= bound || hits.len() as u64 >= to_remove {
                return false;
            }
            if subject::matches(filter, r.subject) {
                hits.push((r.seq, r.subject.to_owned(), r.size as u64));
            }
            true
        })?;
        let n = hits.len() as u64;
        for (seq, subj, size) in hits {
            self.remove_msg(seq, &subj, size);
        }
        Ok(n)
    }

    fn clear_all(&mut self) {
        self.messages = 0;
        self.bytes = 0;
        self.subjects.clear();
        self.deleted.clear();
        for s in self.sealed.iter_mut() {
            s.msgs = 0;
            s.bytes = 0;
        }
        self.active.msgs = 0;
        self.active.bytes = 0;
        self.first_seq = self.last_seq + 1;
        self.head_cache = None;
        self.drop_dead_segments();
    }

    /// The sequence below which purging leaves exactly `keep` messages.
    fn keep_bound(&self, keep: u64) -> u64 {
        if keep >= self.messages {
            return self.first_seq;
        }
        // Walk down from the top, skipping deleted sequences.
        let mut t = self.last_seq + 1;
        let mut need = keep;
        while need > 0 {
            let lo = t.saturating_sub(need).max(self.first_seq);
            let d = self.deleted.count_in(lo, t - 1);
            need = need - (t - lo) + d;
            t = lo;
            if t <= self.first_seq {
                break;
            }
        }
        t
    }

    // ----- checkpoint -------------------------------------------------------

    pub(crate) fn checkpoint(&self) -> Checkpoint {
        let seg = |s: &SegmentMeta, size: u64, index: bool| SegCkpt {
            base: s.base,
            size,
            msgs: s.msgs,
            bytes: s.bytes,
            last_seq: s.last_seq,
            first_time: s.first_time,
            last_time: s.last_time,
            index: if index { s.index.clone() } else { Vec::new() },
        };
        let mut segments: Vec<SegCkpt> =
            self.sealed.iter().map(|s| seg(s, s.size, false)).collect();
        segments.push(seg(&self.active, self.flushed, true));
        Checkpoint {
            covered_base: self.active.base,
            covered_offset: self.flushed,
            first_seq: self.first_seq,
            last_seq: self.last_seq,
            last_time: self.last_time,
            messages: self.messages,
            bytes: self.bytes,
            segments,
            deleted: self.deleted.ranges().collect(),
            subjects: self
                .subjects
                .iter()
                .map(|(k, v)| SubjCkpt {
                    subject: k.clone(),
                    count: v.count,
                    last: v.last,
                    seqs: v.seqs.as_ref().map(|q| q.iter().copied().collect()),
                })
                .collect(),
            track_subject_seqs: self.track_subject_seqs,
            dedup: self
                .dedup
                .order
                .iter()
                .filter(|(_, seq, id)| self.dedup.map.get(id).is_some_and(|(s, _)| s == seq))
                .map(|(t, seq, id)| (id.to_string(), *seq, *t))
                .collect(),
        }
    }

    // ----- info ---------------------------------------------------------------

    pub(crate) fn state(&mut self, stream: &str, storage: &dyn Storage) -> StreamState {
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
            num_subjects: self.subjects.len() as u64,
            consumer_count: 0,
        }
    }
}

/// Per-message outcome inside a publish, before the write.
enum Appended {
    Stored(u64),
    Duplicate(u64),
}

impl Stream {
    pub(crate) fn new(name: String, dir: PathBuf, env: Arc<Env>, inner: Inner) -> Arc<Stream> {
        let (tail_tx, _) = watch::channel(inner.last_seq);
        let (durable_tx, _) = watch::channel(Durable {
            gen: inner.write_gen,
            failed: false,
        });
        let consumers = ConsumerSet::default();
        consumers.set_ack_retention(inner.config.retention != RetentionPolicy::Limits);
        Arc::new(Stream {
            label: ByteString::from(name.as_str()),
            name,
            dir,
            env,
            inner: Mutex::new(inner),
            gathered: Condvar::new(),
            tail_tx,
            durable_tx,
            closed: AtomicBool::new(false),
            sync_requested: AtomicBool::new(false),
            ckpt_lock: Mutex::new(()),
            consumers,
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn storage(&self) -> &dyn Storage {
        &*self.env.storage
    }

    /// At open, after retention was re-derived: forgets the msg ids of
    /// messages no longer stored (invariant 9), as recovery does for the
    /// messages its own scan removed.
    pub(crate) fn forget_unstored_ids(&self) {
        let mut g = self.lock();
        let mut dedup = std::mem::take(&mut g.dedup);
        dedup.retain(|seq| g.is_live(seq));
        g.dedup = dedup;
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Ends replays (stream deleted or store closed).
    pub(crate) fn mark_closed(&self) {
        self.closed.store(true, Ordering::Release);
        self.tail_tx.send_modify(|v| *v = v.wrapping_add(0));
        self.durable_tx.send_modify(|d| d.failed = true);
    }

    pub(crate) fn config(&self) -> StreamConfig {
        self.lock().config.clone()
    }

    fn notify(&self, g: &Inner) {
        if self.tail_tx.receiver_count() > 0 {
            self.tail_tx.send_replace(g.last_seq);
        }
    }

    fn after_change(&self, g: &mut Inner) {
        g.remove_doomed(self.storage());
        if g.ckpt_needed {
            g.ckpt_needed = false;
            self.env.bg.request_checkpoint(&self.name);
        }
    }

    /// Notifies tailing readers and finishes segment removals and
    /// checkpoint requests after a change made under the lock.
    pub(crate) fn finish_change(&self, g: &mut Inner) {
        self.notify(g);
        self.after_change(g);
    }

    pub(crate) fn info(&self) -> StreamInfo {
        let consumer_count = self.consumers.count();
        let mut g = self.lock();
        let mut state = g.state(&self.name, self.storage());
        state.consumer_count = consumer_count;
        StreamInfo {
            config: g.config.clone(),
            created: g.created,
            state,
        }
    }

    // ----- publish ----------------------------------------------------------

    /// Publishes one message: checks, encodes, one write to the OS, then (under
    /// `Durability::Always`) waits for the group commit covering it.
    pub(crate) async fn publish(self: &Arc<Self>, msg: &Message) -> Result<PublishAck> {
        let (ack, gen) = {
            let mut g = self.lock();
            let now = now_ns();
            // Records of other publishers may be pending (deferred below):
            // a failed append removes only its own bytes.
            let mark = g.pending.len();
            let r = self.append(&mut g, msg, now);
            let r = match r {
                // Invariant 4: under `Always` the syncer writes the whole
                // group with one call before its fsync; the ack waits for it.
                Ok(a) if self.defers_writes() && g.pending.len() < DEFER_WRITE_MAX => Ok(a),
                Ok(a) => g.flush(&self.name).map(|()| a),
                Err(e) => {
                    g.pending.truncate(mark);
                    Err(e)
                }
            };
            if r.is_ok() {
                self.count_call(&mut g);
            }
            self.notify(&g);
            self.after_change(&mut g);
            let a = r?;
            // Pending bytes become durable with the next write generation.
            let gen = g.write_gen + u64::from(!g.pending.is_empty());
            (a, gen)
        };
        let (seq, duplicate) = match ack {
            Appended::Stored(s) => (s, false),
            Appended::Duplicate(s) => (s, true),
        };
        // A duplicate's original may have been written an instant ago by a
        // concurrent retry: its ack, too, waits until the original is durable.
        self.wait_durable(gen).await?;
        Ok(PublishAck {
            stream: self.label.clone(),
            seq,
            duplicate,
        })
    }

    /// Publishes many messages under one lock with one write.
    pub(crate) async fn publish_batch(
        self: &Arc<Self>,
        msgs: &[&Message],
    ) -> Vec<Result<PublishAck>> {
        let mut out: Vec<Result<Appended>> = Vec::with_capacity(msgs.len());
        let gen;
        {
            // Lock order: consumer map, then stream state.
            let interest = self.interest_consumers();
            let mut g = self.lock();
            let now = now_ns();
            for m in msgs {
                let r = self.append(&mut g, m, now);
                if let (Some(map), Ok(Appended::Stored(seq))) = (&interest, &r) {
                    self.drop_unmatched(map, &mut g, *seq, &m.subject);
                }
                if r.is_err() && g.poisoned.is_some() {
                    out.push(r);
                    break;
                }
                out.push(r);
            }
            if let Err(e) = g.flush(&self.name) {
                let _ = e;
            }
            if let Some(err) = g.poisoned.clone() {
                for r in out.iter_mut() {
                    if matches!(r, Ok(Appended::Stored(_))) {
                        *r = Err(Error::Poisoned {
                            stream: self.name.clone(),
                            cause: err.clone(),
                        });
                    }
                }
                while out.len() < msgs.len() {
                    out.push(Err(Error::Poisoned {
                        stream: self.name.clone(),
                        cause: err.clone(),
                    }));
                }
            }
            if out.iter().any(|r| r.is_ok()) {
                self.count_call(&mut g);
            }
            self.notify(&g);
            self.after_change(&mut g);
            gen = g.write_gen;
        }
        let durable = if out.iter().any(|r| r.is_ok()) {
            self.wait_durable(gen).await
        } else {
            Ok(())
        };
        out.into_iter()
            .map(|r| match r {
                Ok(Appended::Stored(seq)) => match &durable {
                    Ok(()) => Ok(PublishAck {
                        stream: self.label.clone(),
                        seq,
                        duplicate: false,
                    }),
                    Err(_) => Err(self.poisoned_now()),
                },
                Ok(Appended::Duplicate(seq)) => match &durable {
                    Ok(()) => Ok(PublishAck {
                        stream: self.label.clone(),
                        seq,
                        duplicate: true,
                    }),
                    Err(_) => Err(self.poisoned_now()),
                },
                Err(e) => Err(e),
            })
            .collect()
    }

    fn poisoned_now(&self) -> Error {
        if self.is_closed() {
            return Error::Closed;
        }
        self.lock()
            .poison_error(&self.name)
            .unwrap_or(Error::Closed)
    }

    /// Checks and encodes one message into the pending buffer, updating the
    /// state; the caller flushes.
    fn append(&self, g: &mut Inner, msg: &Message, now: i64) -> Result<Appended> {
        if let Some(e) = g.poison_error(&self.name) {
            return Err(e);
        }
        let storage = self.storage();
        let h = &msg.headers;
        let (mut msg_id, mut rollup) = (None, None);
        let mut exp_last = None;
        let mut exp_subj = None;
        if !h.is_empty() {
            if let Some(expected) = h.get(NATS_EXPECTED_STREAM) {
                if expected != self.name {
                    return Err(Error::WrongStream {
                        expected: expected.to_owned(),
                        actual: self.name.clone(),
                    });
                }
            }
            msg_id = h.get(NATS_MSG_ID).filter(|id| !id.is_empty());
            exp_last = h
                .get(NATS_EXPECTED_LAST_SEQUENCE)
                .map(|v| parse_seq(NATS_EXPECTED_LAST_SEQUENCE, v))
                .transpose()?;
            exp_subj = h
                .get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)
                .map(|v| parse_seq(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, v))
                .transpose()?;
            rollup = h.get(NATS_ROLLUP);
        }
        let time = now.max(g.last_time);
        if let Some(id) = msg_id {
            // Invariant 9: a repeated id inside the window yields the original.
            g.dedup
                .expire(time.saturating_sub(dur_ns(g.config.duplicate_window)));
            if let Some((seq, _)) = g.dedup.map.get(id) {
                return Ok(Appended::Duplicate(*seq));
            }
        }
        if let Some(expected) = exp_last {
            if expected != g.last_seq {
                return Err(Error::WrongLastSequence {
                    expected,
                    current: g.last_seq,
                });
            }
        }
        if let Some(expected) = exp_subj {
            let current = g.subject_last_seq(storage, &msg.subject)?;
            if expected != current {
                return Err(Error::WrongLastSequence { expected, current });
            }
        }
        let rollup_all = match rollup {
            None => None,
            Some(_) if !g.config.allow_rollup => {
                return Err(Error::Denied {
                    stream: self.name.clone(),
                    operation: "rollup (Nats-Rollup header); set allow_rollup on the stream",
                })
            }
            Some("sub") => Some(false),
            Some("all") => Some(true),
            Some(other) => {
                return Err(Error::invalid_argument_text(format!(
                    "{NATS_ROLLUP} must be \"sub\" or \"all\", got {other:?}"
                )))
            }
        };
        let msg_size = msg.headers.encoded_len() + msg.payload.len();
        if let Some(max) = g.config.max_msg_size {
            if msg_size > max as usize {
                return Err(Error::MaxPayloadExceeded {
                    size: msg_size,
                    max: max as usize,
                });
            }
        }
        if h.len() > u16::MAX as usize
            || h.iter()
                .any(|(n, v)| n.len() > u16::MAX as usize || v.len() > u32::MAX as usize)
        {
            return Err(Error::invalid_argument_text(
                "too many or too large headers (at most 65535 headers, names up to 65535 bytes)"
                    .into(),
            ));
        }
        let rec_size = record::message_size(&msg.subject, h, msg.payload.len());
        if rec_size > record::MAX_RECORD {
            return Err(Error::MaxPayloadExceeded {
                size: msg_size,
                max: record::MAX_RECORD - (rec_size - msg_size),
            });
        }
        if let Some(max) = g.config.max_bytes {
            if rec_size as u64 > max {
                return Err(Error::MaxPayloadExceeded {
                    size: msg_size,
                    max: (max as usize).saturating_sub(rec_size - msg_size),
                });
            }
        }
        // max_age is enforced on publish too, so expired messages free room.
        if g.config.max_age.is_some() {
            g.expire(&self.name, storage, now)?;
        }
        if g.config.discard == DiscardPolicy::New && rollup_all.is_none() {
            if let Some(max) = g.config.max_msgs {
                if g.messages >= max {
                    return Err(self.full(format!("max_msgs {max}")));
                }
            }
            if let Some(max) = g.config.max_bytes {
                if g.bytes + rec_size as u64 > max {
                    return Err(self.full(format!("max_bytes {max}")));
                }
            }
            // As JetStream: `discard new` governs the per-subject limit only
            // with `discard_new_per_subject`; otherwise the subject's oldest goes.
            if let Some(max) = g.config.max_msgs_per_subject {
                if g.config.discard_new_per_subject
                    && g.subjects.get(msg.subject.as_str()).map_or(0, |s| s.count) >= max
                {
                    return Err(self.full(format!("max_msgs_per_subject {max}")));
                }
            }
        }
        if g.active.size >= self.env.segment_size && g.last_seq + 1 > g.active.base {
            self.roll(g)?;
        }
        let seq = g.last_seq + 1;
        if let Some(all) = rollup_all {
            // Rollup is an explicit deletion: logged as a purge record right
            // before the message (invariant 10).
            let filter = if all { "" } else { msg.subject.as_str() };
            g.active.size += record::encode_purge(&mut g.pending, seq, time, filter, 0) as u64;
            g.apply_purge(&self.name, storage, filter, seq, 0)?;
        }
        let offset = g.active.size;
        let size =
            record::encode_message(&mut g.pending, seq, time, &msg.subject, h, &msg.payload) as u64;
        g.active.size += size;
        g.note_message(seq, time, &msg.subject, size, offset, msg_id);
        // The per-subject limit evicts under either discard policy (a
        // rejection was decided above); the stream-wide limits only under `old`.
        let mut evict = || -> Result<()> {
            if g.config.max_msgs_per_subject.is_some() {
                g.enforce_subject_limit(&self.name, storage, &msg.subject)?;
            }
            if g.config.discard == DiscardPolicy::Old
                && (g.config.max_msgs.is_some() || g.config.max_bytes.is_some())
            {
                g.enforce_limits(&self.name, storage)?;
            }
            Ok(())
        };
        if let Err(e) = evict() {
            // The record is encoded and accounted: the state cannot be
            // rolled back, so refuse further writes (invariant 5).
            return Err(g.poison(&self.name, format!("evicting old messages failed: {e}")));
        }
        Ok(Appended::Stored(seq))
    }

    fn full(&self, limit: String) -> Error {
        Error::StreamFull {
            stream: self.name.clone(),
            limit,
        }
    }

    /// Seals the active segment and starts a new one.
    fn roll(&self, g: &mut Inner) -> Result<()> {
        g.flush(&self.name)?;
        let storage = self.storage();
        let base = g.last_seq + 1;
        let path = g.segdir.join(segment::log_name(base));
        let step = |g: &mut Inner| -> std::io::Result<Arc<dyn StorageFile>> {
            if let Some(old) = g.active.file.clone() {
                // IMPORTANT: a sealed segment holds only records, and is
                // durable (its cut included) before its successor exists, so
                // only the last segment can ever be torn (rule 5).
                g.trim_active()?;
                old.sync_data()?;
            }
            let file = storage.create(&path)?;
            file.write_all_at(&segment::header_bytes(), 0)?;
            // IMPORTANT: fsync the directory so the new segment's name is
            // durable before any record in it is acknowledged (invariant 6).
            storage.sync_dir(&g.segdir)?;
            Ok(file)
        };
        let file = match step(g) {
            Ok(f) => f,
            Err(e) => {
                let cause = format!("rolling to segment {}: {e}", path.display());
                return Err(g.poison(&self.name, cause));
            }
        };
        let mut seg = SegmentMeta::new(base, path);
        seg.file = Some(file);
        let old = std::mem::replace(&mut g.active, seg);
        g.sealed.push_back(old);
        g.flushed = SEGMENT_HEADER;
        g.ckpt_needed = true;
        Ok(())
    }

    // ----- durability -------------------------------------------------------

    /// Waits until write generation `gen` is durable (`Always` only):
    /// group commit (invariant 4) by the store's syncer thread.
    /// Whether single publishes leave their write to the group-commit syncer.
    fn defers_writes(&self) -> bool {
        self.env.durability == Durability::Always && !self.env.volatile()
    }

    async fn wait_durable(self: &Arc<Self>, gen: u64) -> Result<()> {
        if self.env.durability != Durability::Always || self.env.volatile() {
            return Ok(());
        }
        let mut rx = self.durable_tx.subscribe();
        {
            let d = *rx.borrow();
            if d.gen >= gen {
                return Ok(());
            }
            if d.failed {
                return Err(self.poisoned_now());
            }
        }
        if !self.sync_requested.swap(true, Ordering::AcqRel) {
            self.env.bg.request_sync(self.clone());
        }
        let durable =
            matches!(rx.wait_for(|d| d.gen >= gen || d.failed).await, Ok(ref d) if d.gen >= gen);
        if durable {
            Ok(())
        } else {
            Err(self.poisoned_now())
        }
    }

    /// Counts a publish call that will wait for the group commit, and wakes
    /// the syncer if it completes the group being gathered.
    fn count_call(&self, g: &mut Inner) {
        if !self.defers_writes() {
            return;
        }
        g.gather.calls += 1;
        if g.gather.waiting && g.gather.calls >= g.gather.target {
            self.gathered.notify_one();
        }
    }

    /// The syncer's group commit: gathers the publishers the last fsync woke
    /// (see [`Gather`]), then syncs.
    pub(crate) fn group_sync(&self) {
        let mut g = self.lock();
        if let Some(until) = g.gather.until.take() {
            while g.gather.calls < g.gather.target && g.poisoned.is_none() && !self.is_closed() {
                let now = Instant::now();
                if now >= until {
                    break;
                }
                g.gather.waiting = true;
                g = self
                    .gathered
                    .wait_timeout(g, until - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|e| e.into_inner().0);
                g.gather.waiting = false;
            }
        }
        drop(g);
        self.sync_now();
    }

    /// fsyncs everything written so far and advances the watermark; a failure
    /// poisons the stream (invariant 5).
    pub(crate) fn sync_now(&self) {
        self.sync_requested.store(false, Ordering::Release);
        let (file, gen, grouped) = {
            let mut g = self.lock();
            if g.poisoned.is_some() {
                drop(g);
                self.durable_tx.send_modify(|d| d.failed = true);
                return;
            }
            if let Err(e) = g.flush(&self.name) {
                tracing::debug!(stream = %self.name, error = %e, "group write failed");
                drop(g);
                self.durable_tx.send_modify(|d| d.failed = true);
                return;
            }
            let grouped = std::mem::take(&mut g.gather.calls);
            if self.defers_writes() {
                g.preallocate(self.env.segment_size);
            }
            if !g.dirty {
                let gen = g.write_gen;
                drop(g);
                self.advance_durable(gen);
                return;
            }
            g.dirty = false;
            (g.active.file.clone(), g.write_gen, grouped)
        };
        if let Some(f) = file {
            let started = Instant::now();
            let synced = f.sync_data();
            if synced.is_ok() && grouped > 0 {
                // Set before the waiters wake, so their calls count towards it.
                let mut g = self.lock();
                g.gather.target = grouped + g.gather.calls;
                g.gather.until = Some(Instant::now() + started.elapsed().min(GATHER_MAX));
            }
            if let Err(e) = synced {
                let mut g = self.lock();
                let cause = format!("fsync failed: {e}");
                let _ = g.poison(&self.name, cause);
                drop(g);
                self.durable_tx.send_modify(|d| d.failed = true);
                return;
            }
        }
        self.advance_durable(gen);
    }

    fn advance_durable(&self, gen: u64) {
        self.durable_tx.send_if_modified(|d| {
            if gen > d.gen {
                d.gen = gen;
                true
            } else {
                false
            }
        });
    }

    /// Whether anything was written since the last sync.
    pub(crate) fn is_dirty(&self) -> bool {
        self.lock().dirty
    }

    // ----- maintenance --------------------------------------------------------

    /// Expires by age (the background timer).
    pub(crate) fn expire_now(&self) {
        let mut g = self.lock();
        if g.config.max_age.is_none() || g.poisoned.is_some() || self.is_closed() {
            return;
        }
        match g.expire(&self.name, self.storage(), now_ns()) {
            Ok(n) if n > 0 => self.notify(&g),
            Ok(_) => {}
            Err(e) => tracing::warn!(stream = %self.name, error = %e, "max_age expiry failed"),
        }
        self.after_change(&mut g);
    }

    /// Writes missing index files of sealed segments, fsyncs, then writes the
    /// checkpoint. Index and checkpoint are derived state: failures are logged.
    pub(crate) fn write_checkpoint(&self) -> Result<()> {
        let _one = self.ckpt_lock.lock().unwrap_or_else(|e| e.into_inner());
        let storage = self.storage();
        let (bytes, file, to_index) = {
            let mut g = self.lock();
            if g.poisoned.is_some() {
                return Ok(());
            }
            // The checkpoint's state must not count records it does not cover.
            g.flush_for_read()?;
            let to_index: Vec<(u64, Vec<segment::IndexEntry>)> = g
                .sealed
                .iter()
                .filter(|s| !s.indexed)
                .map(|s| (s.base, s.index.clone()))
                .collect();
            let bytes = g
                .checkpoint()
                .encode()
                .map_err(|e| Error::internal(format!("encoding checkpoint: {e}")))?;
            (bytes, g.active.file.clone(), to_index)
        };
        let segdir = self.dir.join("segments");
        for (base, index) in &to_index {
            match segment::write_index(storage, &segdir, *base, index) {
                Ok(()) => {
                    let mut g = self.lock();
                    if let Some(i) = g.sealed.iter().position(|s| s.base == *base) {
                        g.sealed[i].indexed = true;
                    }
                }
                Err(e) => {
                    tracing::warn!(stream = %self.name, base, error = %e, "could not write segment index; it will be rebuilt")
                }
            }
        }
        // IMPORTANT: the data a checkpoint covers is durable before the checkpoint.
        if let Some(f) = file {
            if let Err(e) = f.sync_data() {
                let mut g = self.lock();
                return Err(g.poison(&self.name, format!("fsync failed: {e}")));
            }
        }
        crate::storage::write_atomic(storage, &self.dir.join(CHECKPOINT_FILE), &bytes).map_err(
            io_err(format!("writing checkpoint of stream {}", self.name)),
        )
    }

    /// Flushes, fsyncs and checkpoints (close and drop).
    pub(crate) fn shutdown(&self) -> Result<()> {
        {
            let mut g = self.lock();
            let _ = g.flush(&self.name);
            g.closing = true;
        }
        let r = if self.env.volatile() {
            Ok(())
        } else {
            self.sync_now();
            {
                let mut g = self.lock();
                if g.poisoned.is_none() {
                    if let Err(e) = g.trim_active() {
                        tracing::warn!(stream = %self.name, error = %e, "cutting the zeros ahead of the records failed");
                    }
                }
            }
            // Its fsync makes the cut durable too.
            self.write_checkpoint()
        };
        self.mark_closed();
        r
    }

    // ----- stream operations ------------------------------------------------

    /// Changes limits and options (the caller validated the config).
    pub(crate) fn update(&self, config: StreamConfig) -> Result<()> {
        let mut g = self.lock();
        if let Some(e) = g.poison_error(&self.name) {
            return Err(e);
        }
        let storage = self.storage();
        let track = config.max_msgs_per_subject.is_some();
        self.consumers
            .set_ack_retention(config.retention != RetentionPolicy::Limits);
        g.config = config;
        if track && !g.track_subject_seqs {
            g.rebuild_subject_seqs(storage)?;
        } else if !track && g.track_subject_seqs {
            g.track_subject_seqs = false;
            for st in g.subjects.values_mut() {
                st.seqs = None;
            }
        }
        g.enforce_all(&self.name, storage, now_ns())?;
        // Evictions are not logged (rule 7); a checkpoint records them.
        g.ckpt_needed = true;
        self.notify(&g);
        self.after_change(&mut g);
        Ok(())
    }

    pub(crate) async fn purge(self: &Arc<Self>, req: &PurgeRequest) -> Result<u64> {
        if req.keep.is_some() && req.up_to_seq.is_some() {
            return Err(Error::invalid_argument_text(
                "purge: keep and up_to_seq cannot be combined".into(),
            ));
        }
        if let Some(f) = &req.subject {
            subject::validate_filter(f)?;
        }
        let (n, gen) = {
            let mut g = self.lock();
            if let Some(e) = g.poison_error(&self.name) {
                return Err(e);
            }
            if g.config.deny_purge {
                return Err(Error::Denied {
                    stream: self.name.clone(),
                    operation: "purge",
                });
            }
            let storage = self.storage();
            let time = now_ns().max(g.last_time);
            let top = g.last_seq + 1;
            let bound_of = |up: Option<u64>| up.map_or(top, |u| u.min(top));
            let (filter, bound, keep) = match &req.subject {
                Some(f) => (f.as_str(), bound_of(req.up_to_seq), req.keep.unwrap_or(0)),
                None => {
                    let b = match req.keep {
                        Some(k) => g.keep_bound(k),
                        None => bound_of(req.up_to_seq),
                    };
                    ("", b, 0)
                }
            };
            if filter.is_empty() && (bound <= g.first_seq || g.messages == 0) {
                return Ok(0);
            }
            // Invariant 10: the purge is logged before it is acknowledged.
            g.active.size += record::encode_purge(&mut g.pending, bound, time, filter, keep) as u64;
            g.flush(&self.name)?;
            let n = g.apply_purge(&self.name, storage, filter, bound, keep)?;
            g.ckpt_needed |= n > 0;
            self.notify(&g);
            self.after_change(&mut g);
            (n, g.write_gen)
        };
        self.wait_durable(gen).await?;
        Ok(n)
    }

    pub(crate) async fn delete_message(self: &Arc<Self>, seq: u64) -> Result<()> {
        let gen = {
            let mut g = self.lock();
            if let Some(e) = g.poison_error(&self.name) {
                return Err(e);
            }
            if g.config.deny_delete {
                return Err(Error::Denied {
                    stream: self.name.clone(),
                    operation: "delete",
                });
            }
            if !g.is_live(seq) {
                return Err(self.not_found(seq));
            }
            let storage = self.storage();
            let (subject, size) = g.read_info(&self.name, storage, seq)?;
            let time = now_ns().max(g.last_time);
            // Invariant 10: the delete is logged before it is acknowledged.
            g.active.size += record::encode_delete(&mut g.pending, seq, time) as u64;
            g.flush(&self.name)?;
            g.remove_msg(seq, &subject, size);
            self.notify(&g);
            self.after_change(&mut g);
            g.write_gen
        };
        self.wait_durable(gen).await
    }

    fn not_found(&self, seq: u64) -> Error {
        Error::MessageNotFound {
            stream: self.name.clone(),
            what: format!("at sequence {seq}"),
        }
    }

    /// The message at `seq`, read without holding the lock during the read.
    pub(crate) fn get(&self, seq: u64) -> Result<StoredMessage> {
        let (file, start, limit, path) = {
            let mut g = self.lock();
            if !g.is_live(seq) {
                return Err(self.not_found(seq));
            }
            g.flush_for_read()?;
            let seg = g.seg_for_seq(seq);
            let (base, start, limit, path) = (
                seg.base,
                segment::seek_seq(&seg.index, seq),
                g.readable_limit(seg),
                seg.path.clone(),
            );
            (g.seg_file(self.storage(), base)?, start, limit, path)
        };
        let mut found = None;
        let end = segment::scan_from(&*file, start, limit, segment::LOOKUP_CHUNK, &mut |_, r| {
            if r.kind == Kind::Message && r.seq >= seq {
                if r.seq == seq {
                    found = Some(stored_from(&self.label, r, None));
                }
                return Ok(false);
            }
            Ok(true)
        })
        .map_err(|e| scan_error(&path, e))?;
        if let Some(m) = found {
            return Ok(m);
        }
        if let ScanEnd::Bad { offset, reason, .. } = end {
            return Err(corrupt(&path, offset, reason));
        }
        Err(self.not_found(seq))
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
        let (file, start, limit, path, fallback) = {
            let mut g = self.lock();
            g.flush_for_read()?;
            let fallback = g.last_seq + 1;
            let segs: Vec<&SegmentMeta> =
                g.sealed.iter().chain(std::iter::once(&g.active)).collect();
            let Some(seg) = segs
                .iter()
                .find(|s| s.last_seq >= g.first_seq && s.last_seq > 0 && s.last_time >= t)
            else {
                return Ok(fallback);
            };
            let (base, start, limit, path) = (
                seg.base,
                segment::seek_time(&seg.index, t),
                g.readable_limit(seg),
                seg.path.clone(),
            );
            (
                g.seg_file(self.storage(), base)?,
                start,
                limit,
                path,
                fallback,
            )
        };
        let mut found = None;
        segment::scan_from(&*file, start, limit, segment::LOOKUP_CHUNK, &mut |_, r| {
            if r.kind == Kind::Message && r.time >= t {
                found = Some(r.seq);
                return Ok(false);
            }
            Ok(true)
        })
        .map_err(|e| scan_error(&path, e))?;
        Ok(found.unwrap_or(fallback))
    }
}

fn parse_seq(header: &str, v: &str) -> Result<u64> {
    v.trim().parse().map_err(|_| {
        Error::invalid_argument_text(format!(
            "header {header} must be a sequence number, got {v:?}"
        ))
    })
}
