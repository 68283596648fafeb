//! The synchronous stream core: a [`Stream`] and what every part of it
//! shares (its storage environment, lock, signals and error helpers). Its
//! parts, one job each: `state` (the [`Inner`] state behind the lock),
//! `append` (publish), `commit` (writes to the OS and group commit), `reads`,
//! `damage` (stepping over records that do not verify),
//! `head` (the oldest live message), `index` (segments' sparse indexes), `retention` (limits, max_age, purge,
//! delete), `dedup`, `persist` (checkpoint and shutdown), `recovery`
//! (opening and creating a stream) and `repair` (rewriting damaged
//! segments). Replay is in `replay.rs`.
//!
//! Memory stays bounded by the number of segments, subjects and deletions,
//! never by the number of messages (W6): there is no per-message index, and
//! sealed segments' sparse indexes are read from their `.idx` files through
//! the store's bounded cache (`index`). The oldest records are read back
//! from disk (buffered) when limits evict them.

mod append;
mod commit;
mod damage;
mod dedup;
mod head;
mod index;
mod persist;
mod reads;
pub(crate) mod recovery;
mod repair;
mod retention;
mod state;
mod subjects;
mod time;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use bytes::Bytes;
use durabus_core::{ByteString, Error, RetentionPolicy, StoredMessage, StreamConfig, StreamInfo};
use tokio::sync::watch;

use crate::clock::Clock;
use crate::index_cache::IndexCache;
use crate::record;
use crate::segment::ScanError;
use crate::storage::Storage;
use crate::sync::Background;
use crate::Durability;

use commit::Durable;

pub(crate) use dedup::Dedup;
pub(crate) use reads::{ChunkPlan, Planned};
pub use repair::{RewrittenSegment, StreamRepair};
pub(crate) use state::Inner;
#[cfg(feature = "internals")]
pub(crate) use subjects::ENTRY_BYTES as SUBJECT_ENTRY_BYTES;
pub(crate) use subjects::{Subjects, SubjectsCkpt};
pub(crate) use time::{from_system_time, now_ns, to_system_time};

/// What every stream of a store shares.
#[derive(Debug)]
pub(crate) struct Env {
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) durability: Durability,
    pub(crate) segment_size: u64,
    pub(crate) bg: Arc<Background>,
    /// Where the time is read.
    pub(crate) clock: Arc<dyn Clock>,
    /// Recovery reads every record, trusting no checkpoint.
    pub(crate) full_scan: bool,
    /// Decoded indexes of sealed segments, bounded (shared by the store's
    /// streams).
    pub(crate) indexes: Arc<IndexCache>,
}

impl Env {
    fn volatile(&self) -> bool {
        self.storage.is_volatile()
    }
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

impl Stream {
    pub(crate) fn new(name: String, dir: PathBuf, env: Arc<Env>, inner: Inner) -> Arc<Stream> {
        let (tail_tx, _) = watch::channel(inner.last_seq);
        let (durable_tx, _) = watch::channel(Durable {
            gen: inner.write_gen,
            failed: false,
        });
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
        })
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn storage(&self) -> &dyn Storage {
        &*self.env.storage
    }

    /// Unix nanoseconds now, by the store's clock.
    pub(crate) fn now(&self) -> i64 {
        self.env.clock.now_ns()
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

    /// Whether a failed write or fsync poisoned the stream (invariant 5).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.lock().poisoned.is_some()
    }

    /// The stream's retention policy.
    pub(crate) fn retention(&self) -> RetentionPolicy {
        self.lock().retention()
    }

    fn notify(&self, g: &Inner) {
        if self.tail_tx.receiver_count() > 0 {
            self.tail_tx.send_replace(g.last_seq);
        }
    }

    fn after_change(&self, g: &mut Inner) {
        g.remove_doomed(self.storage());
        if g.checkpoint_due() {
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

    /// The stream's configuration and state; `consumer_count` is left 0
    /// (the consumers are counted by their owner).
    pub(crate) fn info(&self) -> StreamInfo {
        let mut g = self.lock();
        let state = g.state(&self.name, self.storage());
        StreamInfo {
            config: g.config.clone(),
            created: g.created,
            state,
        }
    }
}
