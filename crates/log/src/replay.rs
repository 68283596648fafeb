//! Ordered replay of a stream (invariant 11): reads segment files in big
//! chunks through its own handles, holding the stream lock only to plan a
//! chunk and to filter deleted sequences; payloads are zero-copy slices of
//! the chunk. Cancel-safe: its state lives in the stream, not in the future
//! of one `next()` call.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use durabus_core::{
    subject, ArgumentError, Error, Replay, ReplayOptions, ReplayStart, Result, StoredMessage,
};
use tokio::sync::watch;

use crate::record::{self, Decoded, Kind};
use crate::segment::{self, SEGMENT_HEADER};
use crate::storage::StorageFile;
use crate::stream::{from_system_time, stored_from, ChunkPlan, Planned, Stream};

struct Position {
    base: u64,
    offset: u64,
    file: Arc<dyn StorageFile>,
}

struct ReplayState {
    stream: Arc<Stream>,
    /// `last_per_subject`: the sequences to yield before the cursor's.
    firsts: VecDeque<u64>,
    cursor: Cursor,
    rx: watch::Receiver<u64>,
}

/// Reads a stream in chunks from `next_seq` on, keeping the matching
/// messages of the last chunk in `queue` (used by replays and consumers).
/// It holds no reference to the stream, so a stream may own one.
pub(crate) struct Cursor {
    /// The next sequence not yet read into `queue`.
    pub(crate) next_seq: u64,
    pos: Option<Position>,
    pub(crate) queue: VecDeque<StoredMessage>,
    /// Only subjects matching one of these (empty: all).
    filters: Vec<String>,
    end: Option<u64>,
    done: bool,
    /// Consecutive plans whose segment file was missing.
    missing: u32,
}

impl std::fmt::Debug for Cursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cursor")
            .field("next_seq", &self.next_seq)
            .field("queued", &self.queue.len())
            .finish_non_exhaustive()
    }
}

/// What one [`Cursor::fill`] did.
pub(crate) enum Progress {
    /// Read something (maybe nothing matching); call again.
    More,
    /// Nothing stored at or after `next_seq`.
    CaughtUp,
    /// Stepped over a damaged record that held wanted sequences: the error
    /// to report once ([`Error::Corrupt`] with the stream and sequences).
    Lost(Error),
}

/// Starts a replay of `stream`.
pub(crate) fn start(stream: Arc<Stream>, options: ReplayOptions) -> Result<Replay> {
    if let Some(f) = &options.filter {
        subject::validate_filter(f)?;
    }
    // Subscribe before reading the state, so no change is missed.
    let rx = stream.tail_tx.subscribe();
    let filters: Vec<String> = options.filter.into_iter().collect();
    let mut firsts = VecDeque::new();
    let last = {
        let mut g = stream.lock();
        if options.start == ReplayStart::LastPerSubject {
            firsts = g.last_seqs_matching(stream.storage(), &filters)?.into();
        }
        g.last_seq()
    };
    let next_seq = match options.start {
        ReplayStart::Sequence(0) => {
            return Err(Error::invalid_argument(ArgumentError::StartSequenceZero))
        }
        ReplayStart::Sequence(n) => n,
        ReplayStart::Time(t) => stream.seq_for_time(from_system_time(t))?,
        ReplayStart::New | ReplayStart::LastPerSubject => last + 1,
    };
    let mut cursor = Cursor::new(next_seq, filters);
    cursor.end = options.stop_at_end.then_some(last);
    let state = ReplayState {
        stream,
        firsts,
        cursor,
        rx,
    };
    let s = futures::stream::unfold(state, |mut st| async move {
        let item = st.next().await?;
        Some((item, st))
    });
    Ok(Replay::new(Box::pin(s)))
}

impl ReplayState {
    async fn next(&mut self) -> Option<Result<StoredMessage>> {
        while let Some(seq) = self.firsts.pop_front() {
            match self.stream.get(seq) {
                Ok(m) => return Some(Ok(m)),
                // Removed since the replay started.
                Err(Error::MessageNotFound { .. }) => {}
                Err(e) => {
                    self.firsts.clear();
                    self.cursor.done = true;
                    return Some(Err(e));
                }
            }
        }
        let c = &mut self.cursor;
        loop {
            if let Some(m) = c.queue.pop_front() {
                return Some(Ok(m));
            }
            if c.done || self.stream.is_closed() {
                return None;
            }
            if c.end.is_some_and(|e| c.next_seq > e) {
                return None;
            }
            self.rx.borrow_and_update();
            match c.fill(&self.stream) {
                Ok(Progress::More) => {}
                Ok(Progress::Lost(e)) => return Some(Err(e)),
                Ok(Progress::CaughtUp) => {
                    if c.end.is_some() {
                        return None;
                    }
                    if self.rx.changed().await.is_err() {
                        return None;
                    }
                }
                Err(e) => {
                    c.done = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

impl Cursor {
    /// A cursor at `next_seq` (nothing read yet).
    pub(crate) fn new(next_seq: u64, filters: Vec<String>) -> Cursor {
        Cursor {
            next_seq,
            pos: None,
            queue: VecDeque::new(),
            filters,
            end: None,
            done: false,
            missing: 0,
        }
    }

    /// Closes the segment file it reads (an idle consumer holds no
    /// descriptor); the next [`Cursor::fill`] finds its place again from
    /// `next_seq` through the index.
    pub(crate) fn close_file(&mut self) {
        self.pos = None;
    }

    /// Reads one chunk into the queue, or says there is nothing new. Holds
    /// the stream lock only to plan the chunk and to drop deleted
    /// sequences (invariant 11).
    pub(crate) fn fill(&mut self, stream: &Stream) -> Result<Progress> {
        let (target, plan) = stream.plan_chunk(self.next_seq)?;
        self.next_seq = target;
        let ChunkPlan {
            base,
            path,
            seek,
            limit,
            is_last,
            next_base,
        } = match plan {
            Planned::Read(p) => p,
            Planned::Nothing => return Ok(Progress::CaughtUp),
            Planned::Lost { hi, error } => {
                self.next_seq = hi.saturating_add(1);
                return Ok(Progress::Lost(error));
            }
        };
        // The handle is our own (invariant 11), opened outside the lock below.
        let reuse = matches!(&self.pos, Some(p) if p.base == base);
        if !reuse {
            let file = match stream.storage().open(&path) {
                Ok(f) => f,
                // Removed by retention meanwhile: plan again from the new first.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && self.missing < 100 => {
                    self.missing += 1;
                    std::thread::yield_now();
                    return Ok(Progress::More);
                }
                Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
            };
            self.missing = 0;
            self.pos = Some(Position {
                base,
                offset: seek.max(SEGMENT_HEADER),
                file,
            });
        }
        let Some(pos) = self.pos.as_mut() else {
            return Ok(Progress::More);
        };
        if seek > pos.offset {
            pos.offset = seek;
        }
        if pos.offset >= limit {
            if is_last {
                return Ok(Progress::CaughtUp);
            }
            // Nothing at or after `target` left in this segment.
            if let Some(nb) = next_base {
                self.next_seq = self.next_seq.max(nb);
            }
            self.pos = None;
            return Ok(Progress::More);
        }
        let mut want = ((limit - pos.offset) as usize).min(segment::CHUNK);
        let mut buf = vec![0u8; want];
        segment::read_full(&*pos.file, &mut buf, pos.offset)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if let Decoded::Torn = record::decode(&buf) {
            // A record bigger than a chunk: read it whole.
            if let Some(n) = record::announced_size(&buf) {
                if n > want && (n as u64) <= limit - pos.offset {
                    want = n;
                    buf.resize(want, 0);
                    segment::read_full(&*pos.file, &mut buf, pos.offset)
                        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                }
            }
        }
        let chunk = Bytes::from(buf);
        let mut at = 0usize;
        // Decoded straight into the queue (a chunk holds thousands of
        // messages: a vector of its own would be grown, then copied).
        let queued = self.queue.len();
        let mut last_seen = None;
        let target = self.next_seq;
        let mut hit_end = false;
        while at < chunk.len() {
            match record::decode(&chunk[at..]) {
                Decoded::Ok(r) => {
                    if r.kind == Kind::Message {
                        if self.end.is_some_and(|e| r.seq > e) {
                            hit_end = true;
                            break;
                        }
                        last_seen = Some(r.seq);
                        let wanted = r.seq >= target
                            && (self.filters.is_empty()
                                || self.filters.iter().any(|f| subject::matches(f, r.subject)));
                        if wanted {
                            self.queue
                                .push_back(stored_from(&stream.label, &r, Some(&chunk)));
                        }
                    }
                    at += r.size;
                }
                // Stop before it: the next fill starts at it.
                Decoded::Torn | Decoded::Corrupt(_) if at > 0 => break,
                Decoded::Torn => {
                    let reason = "record ends past the written data".to_owned();
                    return self.step_over(stream, base, &path, reason);
                }
                Decoded::Corrupt(reason) => return self.step_over(stream, base, &path, reason),
            }
        }
        pos.offset += at as u64;
        if let Some(s) = last_seen {
            self.next_seq = self.next_seq.max(s + 1);
        }
        if hit_end {
            self.done = true;
        }
        // Drop what was deleted or expired meanwhile.
        stream.retain_live(&mut self.queue, queued);
        Ok(Progress::More)
    }

    /// Steps over the damaged record at the read position of segment
    /// `base`: reading goes on at the next record that verifies.
    fn step_over(
        &mut self,
        stream: &Stream,
        base: u64,
        path: &std::path::Path,
        reason: String,
    ) -> Result<Progress> {
        let Some(pos) = self.pos.as_mut() else {
            return Ok(Progress::More);
        };
        let d = stream.damage_at(base, pos.offset, reason)?;
        pos.offset = pos.offset.max(d.end);
        let target = self.next_seq;
        self.next_seq = self.next_seq.max(d.hi.saturating_add(1));
        if self.end.is_some_and(|e| d.lo > e) {
            self.done = true;
            return Ok(Progress::More);
        }
        if d.hi >= target && d.seqs().is_some() {
            return Ok(Progress::Lost(stream.lost_error(&d, path)));
        }
        Ok(Progress::More)
    }
}
