//! durabus L1: the embedded, file-backed log engine.
//!
//! A [`Store`] owns one data directory (or an in-memory image) and implements
//! [`durabus_core::Backend`]. Formats, recovery rules and the numbered
//! invariants cited in the code are in `docs/design.md`.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> durabus_core::Result<()> {
//! use durabus_core::{Backend, Message, StreamConfig};
//! let store = durabus_log::Store::memory(durabus_log::Options::default())?;
//! store.create_stream(StreamConfig::new("ORDERS").subjects(["orders.>"])).await?;
//! let ack = store.publish(Message::new("orders.1", "hello")).await?;
//! assert_eq!(ack.map(|a| a.seq), Some(1));
//! store.close().await?;
//! # Ok(()) }
//! ```
//!
//! Modules, one concept each: `storage` (the [`Storage`] trait every file
//! operation goes through), `record` (framing), `segment` (segment and index
//! files), `checkpoint`, `stream` (the synchronous stream core, with its
//! recovery), `sync` (group commit and maintenance threads), `router` (core
//! pub/sub), `replay`, `consumer`, `store` ([`Store`], the
//! [`durabus_core::Backend`]) and `dump`.
//!
//! # Features
//!
//! `internals`: the modules `bench` and `fuzzing`, entry points into engine
//! internals, and an injectable clock (`Options::clock`, `ManualClock`).
//! Not part of the API; for the fuzz targets, benches and tests.
//!
//! # How the crate is cut
//!
//! Dependencies between modules point one way, downwards in this list; a
//! module uses only modules below it (and the crate root's plain types):
//!
//! 1. `store`, `dump`, `fuzzing`, `bench`: the entry points; `slot` (a
//!    stream of the store, opened or not, with its catalog entry).
//! 2. `router` (core pub/sub; uses `sublist`).
//! 3. `consumer`: a stream's consumers, and `StreamConsumers`, a stream with
//!    its consumers (what the store holds). Uses `replay`'s `Cursor` and
//!    the stream's methods; the stream never sees a consumer (the hooks it
//!    runs are closures it is given: the batch publish's per-message
//!    callback, the update's config callback).
//! 4. `replay`: ordered reads through a `Cursor` of their own, planned by
//!    the stream (`Stream::plan_chunk`).
//! 5. `stream`: the stream core and its recovery. The state behind its lock
//!    (`Inner`) keeps its fields to the `stream` module; other modules use
//!    its methods. Uses `sync` only through the `GroupSync` trait, which the
//!    stream implements.
//! 6. `sync`: group commit and maintenance queues; knows no stream.
//! 7. `catalog`, `checkpoint`, `segment`, `record`, `rangeset`, `sublist`,
//!    `storage`, `clock`: formats and leaves.

#![deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::expect_used, clippy::panic))]

/// Entry points of the micro-benchmarks. Not part of the API; for the fuzz
/// targets and benches (feature `internals`).
#[cfg(feature = "internals")]
#[doc(hidden)]
pub mod bench;
mod catalog;
mod checkpoint;
mod clock;
mod consumer;
mod dump;
mod framed;
/// Check functions of the fuzz targets (`fuzz/`). Not part of the API; for
/// the fuzz targets and benches (feature `internals`). Also built for this
/// crate's unit tests, which replay the committed fuzz corpus.
#[cfg(any(test, feature = "internals"))]
#[doc(hidden)]
pub mod fuzzing;
mod index_cache;
mod manifest;
mod parallel;
mod rangeset;
mod record;
mod replay;
mod router;
mod segment;
mod slot;
mod storage;
mod store;
mod stream;
mod sublist;
mod sync;

use std::path::{Path, PathBuf};
use std::time::Duration;

use durabus_core::Result;

#[cfg(feature = "internals")]
#[doc(hidden)]
pub use clock::{Clock, ManualClock, SystemClock};
pub use storage::{
    write_atomic, FsStorage, LockOutcome, MemStorage, ReadOnlyStorage, Storage, StorageFile,
    StorageLock,
};
pub use store::{Store, FORMAT_VERSION};
pub use stream::{RewrittenSegment, StreamRepair};

/// Maps keyed by subjects and ids on hot paths: foldhash is several times
/// faster than SipHash for short keys and still randomly seeded.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

/// When an acknowledged publish is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Written to the OS before the ack (survives a process crash); the OS
    /// decides when it reaches the disk (a power loss may lose a suffix).
    None,
    /// As `None`, plus an fsync at this interval: a power loss loses at most
    /// the last interval.
    Periodic(Duration),
    /// fsync before the ack, shared by all publishes waiting (group commit).
    #[default]
    Always,
}

/// Options of a [`Store`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// When acks are durable. Default [`Durability::Always`].
    pub durability: Durability,
    /// A segment is sealed and a new one started past this size. Default 64 MiB.
    pub segment_size: u64,
    /// Per-subscriber buffer, in messages. Default 4096.
    pub subscriber_buffer: usize,
    /// Open the data directory read-only (docs/design.md, "Read-only
    /// stores"): files are opened `O_RDONLY`, no lock is taken, nothing is
    /// repaired, rebuilt or removed, and every write is refused with
    /// `Error::ReadOnly`. Default false.
    pub read_only: bool,
    /// Where the store reads the time (the system clock unless a test
    /// sets another, feature `internals`).
    clock: std::sync::Arc<dyn clock::Clock>,
    /// Bytes of decoded sealed-segment indexes the store keeps in memory
    /// (shared by its streams; least recently used go first). Sealed
    /// segments' indexes are otherwise read from their `.idx` files on
    /// demand, so memory does not grow with the log. Default 8 MiB.
    pub index_cache_bytes: usize,
    /// Recovery reads every record instead of trusting checkpoints
    /// ([`repair`]).
    full_scan: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            durability: Durability::Always,
            segment_size: 64 * 1024 * 1024,
            subscriber_buffer: 4096,
            read_only: false,
            clock: std::sync::Arc::new(clock::SystemClock),
            index_cache_bytes: index_cache::DEFAULT_INDEX_CACHE_BYTES,
            full_scan: false,
        }
    }
}

impl Options {
    /// Sets the durability.
    #[must_use]
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Sets the segment size.
    #[must_use]
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Reads the time from `clock` instead of the system clock. Not part of
    /// the API; for tests (feature `internals`).
    #[cfg(feature = "internals")]
    #[doc(hidden)]
    #[must_use]
    pub fn clock(mut self, clock: std::sync::Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Opens the store read-only (see [`Options::read_only`]).
    #[must_use]
    pub fn read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    /// Sets the bytes of sealed-segment indexes kept in memory (see
    /// [`Options::index_cache_bytes`]).
    #[must_use]
    pub fn index_cache(mut self, bytes: usize) -> Self {
        self.index_cache_bytes = bytes;
        self
    }

    /// Sets the per-subscriber buffer.
    #[must_use]
    pub fn subscriber_buffer(mut self, messages: usize) -> Self {
        self.subscriber_buffer = messages;
        self
    }
}

/// What recovery found when a store was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Per stream: bytes of a torn tail that were truncated, with the segment.
    /// A read-only store cuts nothing: its torn tails are in `torn_kept`.
    pub truncated: Vec<(String, PathBuf, u64)>,
    /// Read-only opens: torn tails left in place (the log ends before them),
    /// with the bytes a writable open would drop.
    pub torn_kept: Vec<(String, PathBuf, u64)>,
    /// Streams and durable consumers that could not be opened (the rest of
    /// the store works), as [`Store::unavailable`] lists them.
    pub unavailable: Vec<durabus_core::Unavailable>,
}

/// One record as `durabus dump` prints it (a JSON line each).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DumpRecord {
    /// The stream.
    pub stream: String,
    /// The segment file name.
    pub segment: String,
    /// Byte offset of the record in the segment.
    pub offset: u64,
    /// `msg`, `delete` or `purge`.
    pub kind: &'static str,
    /// The record's sequence (for `delete`: the deleted one; `purge`: the new first).
    pub seq: u64,
    /// Unix time in nanoseconds.
    pub time_ns: i64,
    /// Subject (`msg` only).
    pub subject: Option<String>,
    /// Headers (`msg` only).
    pub headers: Vec<(String, String)>,
    /// Payload (`msg` only).
    #[serde(skip)]
    pub payload: bytes::Bytes,
}

/// The unreadable end of a stream's last segment found by [`dump`]: a torn
/// tail, which the next open truncates (recovery rule 5), or, when the
/// store is live (another process holds its lock), the record being
/// written right now (`in_flight`), which is neither damage nor cut.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TornTail {
    /// The stream.
    pub stream: String,
    /// The segment file name.
    pub segment: String,
    /// Where the unreadable bytes start: the end of the last complete record.
    pub offset: u64,
    /// A torn tail: how many bytes the next open will drop. In flight: how
    /// many bytes of the record(s) being written were there (up to the
    /// zeros written ahead of them).
    pub bytes: u64,
    /// The store is live: the bytes are a write in progress, not a torn tail.
    pub in_flight: bool,
}

/// Reads every record of `stream` (or of all streams) in a data directory,
/// without taking the lock and without modifying anything, calling `f` for
/// each in log order. A bad record ends that stream's dump with an error
/// naming segment and offset; torn tails and in-flight tails (which end a
/// stream's dump without error) are returned. Works on a live store (one
/// another process has open and writes): it reads up to the last complete
/// record (docs/design.md, "Verifying a live store").
pub fn dump(
    dir: impl AsRef<Path>,
    stream: Option<&str>,
    f: &mut dyn FnMut(DumpRecord),
) -> Result<Vec<TornTail>> {
    dump::dump(dir.as_ref(), stream, f, None)
}

/// How far [`dump_with_progress`] or [`repair_with_progress`] has come, in
/// bytes of segment files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Bytes of segment files read so far; never decreases, never above
    /// `total`.
    pub done: u64,
    /// Bytes of the segment files there were to read when the call began
    /// ([`segment_bytes`]).
    pub total: u64,
}

/// [`dump`], calling `progress` as it reads: after each record and each
/// segment, with `done` increasing, and last (when the call succeeds) with
/// `done == total`. On a live store, bytes appended after the call began
/// are read but not counted. `progress` runs on the calling thread, between
/// calls of `f`.
pub fn dump_with_progress(
    dir: impl AsRef<Path>,
    stream: Option<&str>,
    f: &mut dyn FnMut(DumpRecord),
    progress: &dyn Fn(Progress),
) -> Result<Vec<TornTail>> {
    dump::dump(dir.as_ref(), stream, f, Some(progress))
}

/// The bytes of the segment files of `stream` (or of every stream) in a
/// data directory: what [`dump`] reads. Read-only, without the lock.
///
/// # Errors
///
/// [`durabus_core::Error::StreamNotFound`] for an unknown `stream`; I/O
/// errors listing or opening the files.
pub fn segment_bytes(dir: impl AsRef<Path>, stream: Option<&str>) -> Result<u64> {
    dump::segment_bytes(dir.as_ref(), stream)
}

/// Repairs the damaged segments of `stream` (or of every stream) in the
/// data directory `dir`: the explicit, opt-in fix docs/design.md
/// ("Repair") describes. Takes the lock (the store must not be open
/// elsewhere), reads every record of the streams (not trusting
/// checkpoints), copies each damaged segment to `<dir>/quarantine/<stream>/`,
/// rewrites it without its unreadable bytes, records every lost sequence
/// range as a gap (deleted, never assigned again), drops missing segments
/// from the manifest, and reopens the store to rebuild indexes and
/// checkpoints. A stream with nothing to repair is not touched. Returns
/// what was done per stream (streams with nothing to repair are left out).
///
/// # Errors
///
/// [`durabus_core::Error::Locked`] while another process has the store
/// open; I/O errors; [`durabus_core::Error::StreamNotFound`] for an
/// unknown `stream`.
pub fn repair(dir: impl AsRef<Path>, stream: Option<&str>) -> Result<Vec<StreamRepair>> {
    repair_inner(dir.as_ref(), stream, None)
}

/// [`repair`], calling `progress` as the scan of every stream's records
/// (the slow part) goes: after each segment, with `done` increasing, and
/// last (when the call succeeds, after the rewrite and the reopen) with
/// `done == total`. The total is the segment bytes of every stream
/// ([`segment_bytes`]): the scan reads them all, whatever `stream` is.
pub fn repair_with_progress(
    dir: impl AsRef<Path>,
    stream: Option<&str>,
    progress: &dyn Fn(Progress),
) -> Result<Vec<StreamRepair>> {
    repair_inner(dir.as_ref(), stream, Some(progress))
}

fn repair_inner(
    dir: &Path,
    stream: Option<&str>,
    progress: Option<&dyn Fn(Progress)>,
) -> Result<Vec<StreamRepair>> {
    let options = Options {
        full_scan: true,
        ..Options::default()
    };
    // Progress is advice: what cannot be listed here, the open reports.
    let tracker = progress
        .map(|report| dump::Tracker::new(dump::segment_bytes(dir, None).unwrap_or(0), report));
    let scanned = |bytes: u64| {
        if let Some(t) = &tracker {
            t.add(bytes);
        }
    };
    let store = Store::open_scanning(dir, options.clone(), &scanned)?;
    let done = store.repair_streams(stream);
    drop(store);
    let done = done?;
    // The reopen rebuilds indexes and checkpoints from the rewritten files.
    drop(Store::open(dir, options)?);
    if let Some(t) = &tracker {
        t.finish();
    }
    Ok(done)
}

/// Checks the files of a data directory outside its streams, read-only:
/// the format marker `durabus.json` (missing is a warning, unreadable,
/// garbled or newer is fatal) and the entries of `streams/` that are not
/// stream directories (ignored by open: warnings).
pub fn check_store(dir: impl AsRef<Path>) -> Result<Vec<FileProblem>> {
    dump::check_store(dir.as_ref())
}

/// A problem [`check_files`] found in a file beside a stream's segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it, and what the next open does about it.
    pub problem: String,
    /// Not derived, and what it belongs to does not open over it: the
    /// store (format marker), the stream (its config) or the consumer (its
    /// state file). Otherwise the next open rebuilds, removes or ignores
    /// the file (indexes, the checkpoint, interrupted writes, stray entries).
    pub fatal: bool,
}

/// Checks the files beside `stream`'s segments in a data directory,
/// without the lock and without modifying anything (files are opened
/// read-only): its `config.json` (present, valid, naming the stream), every
/// sealed segment's index (it decodes, and each entry points at the record
/// it names), the checkpoint, and every consumer-state file (readable, CRC,
/// format, name).
pub fn check_files(dir: impl AsRef<Path>, stream: &str) -> Result<Vec<FileProblem>> {
    dump::check_files(dir.as_ref(), stream)
}
