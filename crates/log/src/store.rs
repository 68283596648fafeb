//! The store: data directory, lock, format marker, streams, background
//! threads, and the [`Backend`] implementation.

use crate::HashMap;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use durabus_core::{
    subject, AckKind, AckRef, Backend, ConnectionStatus, ConsumerConfig, ConsumerInfo, Delivery,
    Error, Event, Message, Origin, PublishAck, PurgeRequest, Replay, ReplayOptions, Result,
    StorageType, StoredMessage, StreamConfig, StreamInfo, Subscription,
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::catalog;
use crate::consumer::StreamConsumers;
use crate::index_cache::IndexCache;
use crate::router::Router;
use crate::slot::Slot;
use crate::storage::{FsStorage, LockOutcome, MemStorage, ReadOnlyStorage, Storage, StorageLock};
use crate::stream::{from_system_time, now_ns, recovery, to_system_time, Env};
use crate::sync::{Background, MaintWork};
use crate::{Durability, Options, RecoveryReport};

/// On-disk format version of the data directory (`durabus.json`): 2 since
/// the catalog (a directory of format 1 is upgraded at its first writable
/// open; a build that knows only format 1 refuses it, as it would not keep
/// the catalog true).
pub const FORMAT_VERSION: u32 = 2;

#[derive(Debug, Serialize, Deserialize)]
struct Marker {
    format: u32,
}

/// Validates a publish subject: a single byte pass for the common ASCII
/// case, `durabus_core::subject::validate_publish` (with its precise error
/// message) for anything else.
pub(crate) fn validate_publish_fast(subj: &str) -> Result<()> {
    let b = subj.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= subject::MAX_SUBJECT_LEN
        && b[0] != b'.'
        && b[b.len() - 1] != b'.'
        && b.iter()
            .all(|&c| c > b' ' && c < 0x7f && c != b'*' && c != b'>')
        && !b.windows(2).any(|w| w == b"..");
    if ok {
        Ok(())
    } else {
        subject::validate_publish(subj)
    }
}

// Every file name the store derives from a stream or consumer name fits
// the 255-byte limit of common file systems (docs/design.md, "Data
// directory layout"): `.creating-<stream>`, `.deleted-<stream>-<i64 ns>`
// (an i64 prints in at most 20 characters) and `<consumer>.tmp`.
const _: () = assert!(".creating-".len() + durabus_core::MAX_STREAM_NAME_LEN <= 255);
const _: () = assert!(".deleted-".len() + durabus_core::MAX_STREAM_NAME_LEN + 1 + 20 <= 255);
const _: () = assert!(durabus_core::MAX_CONSUMER_NAME_LEN + ".tmp".len() <= 255);

/// Bounded size of the subject -> stream cache.
const CAPTURE_CACHE_MAX: usize = 65_536;

pub(crate) struct StoreInner {
    dir: PathBuf,
    /// `dir/streams`.
    streams_dir: PathBuf,
    env: Arc<Env>,
    /// Where streams with `StorageType::Memory` live.
    mem_env: Arc<Env>,
    mem_root: PathBuf,
    closed: AtomicBool,
    /// Every stream taken from the catalog or created, opened or not
    /// (docs/design.md, "Catalog"); the rest are in `lazy`.
    streams: RwLock<BTreeMap<String, Arc<Slot>>>,
    /// The catalog snapshot's streams not taken into `streams` yet. Lock
    /// order: the catalog writer, then this, then `streams`.
    lazy: Mutex<Lazy>,
    capture: RwLock<HashMap<String, Option<Arc<StreamConsumers>>>>,
    router: Arc<Router>,
    events: broadcast::Sender<Event>,
    /// What recovery found, filled as streams are recovered.
    report: Mutex<RecoveryReport>,
    /// Opened with `Options::read_only`: every write is refused.
    read_only: bool,
    /// Streams that could not be opened, with why (their directories stay
    /// as they are).
    unavailable: RwLock<BTreeMap<String, String>>,
    /// The catalog's writer (writable file stores).
    catalog: Mutex<Option<catalog::Writer>>,
    /// `streams/` was listed and matched with the catalog (once a store).
    reconciled: AtomicBool,
    /// Opened to repair (`Options::full_scan`): no summary is written.
    full_scan: bool,
    lock: Mutex<Option<Box<dyn StorageLock>>>,
    bg: Arc<Background>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    admin: Mutex<()>,
    inbox_counter: AtomicU64,
}

/// The streams of the catalog snapshot read at open, each taken into the
/// store's `streams` on first use (named, or all of them for what needs
/// every stream: routing, overlap checks, listing).
#[derive(Debug, Default)]
struct Lazy {
    snapshot: Option<catalog::Snapshot>,
    /// Per snapshot entry: taken (into `streams`, or dropped: the journal
    /// has a newer word on it, its directory is gone, or it is damaged).
    taken: Vec<bool>,
    /// Entries not taken yet.
    left: usize,
    /// Streams the journal marked (their summaries do not hold).
    dirty: BTreeSet<String>,
}

impl Lazy {
    /// The untaken entry of `name`.
    fn find(&self, name: &str) -> Option<usize> {
        let i = self.snapshot.as_ref()?.find(name)?;
        (!self.taken[i]).then_some(i)
    }

    /// Marks entry `i` taken.
    fn take(&mut self, i: usize) {
        if !std::mem::replace(&mut self.taken[i], true) {
            self.left -= 1;
        }
    }
}

/// The embedded store: a data directory (or memory image) of streams.
///
/// Cheap to clone; clones share the store. Dropping the last clone (or
/// [`Backend::close`]) flushes, checkpoints and releases the directory lock.
#[derive(Clone)]
pub struct Store {
    inner: Arc<StoreInner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.inner.dir)
            .field("closed", &self.inner.closed.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::io(context, e)
}

impl Store {
    /// Opens (creating if needed) the data directory `dir` and locks it.
    /// Streams are taken from the catalog and recovered on first use
    /// (docs/design.md, "Catalog"); without a usable catalog every stream
    /// is recovered now and a catalog written.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        Self::open_with_storage(dir, Arc::new(FsStorage::new()), options)
    }

    /// The same engine on in-memory storage.
    pub fn memory(options: Options) -> Result<Store> {
        Self::open_with_storage("/durabus-memory", Arc::new(MemStorage::new()), options)
    }

    /// Opens a store on any [`Storage`] (crash and I/O-error shims in tests).
    /// Recovery follows docs/design.md, "Recovery rules".
    pub fn open_with_storage(
        dir: impl AsRef<Path>,
        storage: Arc<dyn Storage>,
        options: Options,
    ) -> Result<Store> {
        Self::open_inner(dir.as_ref(), storage, options, &|_| {})
    }

    /// [`Store::open`] that calls `scanned` with the length of each
    /// segment file recovery has scanned ([`crate::repair_with_progress`]).
    pub(crate) fn open_scanning(
        dir: &Path,
        options: Options,
        scanned: &dyn Fn(u64),
    ) -> Result<Store> {
        Self::open_inner(dir, Arc::new(FsStorage::new()), options, scanned)
    }

    fn open_inner(
        dir: &Path,
        storage: Arc<dyn Storage>,
        options: Options,
        scanned: &dyn Fn(u64),
    ) -> Result<Store> {
        let dir = dir.to_path_buf();
        let read_only = options.read_only;
        let storage: Arc<dyn Storage> = if read_only && !storage.is_read_only() {
            Arc::new(ReadOnlyStorage::new(storage))
        } else {
            storage
        };
        let st: &dyn Storage = &*storage;
        // Rule 1: refuse a newer format before writing anything.
        let marker = dir.join("durabus.json");
        let found = match st.read_file(&marker) {
            Ok(b) => {
                let m: Marker = serde_json::from_slice(&b).map_err(|e| {
                    Error::corrupt(&marker, 0, format!("format marker is not valid JSON: {e}"))
                })?;
                if m.format > FORMAT_VERSION || m.format == 0 {
                    return Err(Error::UnsupportedFormat {
                        path: marker,
                        found: m.format,
                        supported: FORMAT_VERSION,
                    });
                }
                Some(m.format)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::io(format!("reading {}", marker.display()), e)),
        };
        if read_only {
            return Self::open_read_only(dir, storage, options, scanned, found);
        }
        if !st.exists(&dir).unwrap_or(false) {
            st.create_dir_all(&dir)
                .map_err(io(format!("creating data directory {}", dir.display())))?;
            // IMPORTANT: the new directory's entry must survive a power loss.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                st.sync_dir(parent)
                    .map_err(io(format!("syncing {}", parent.display())))?;
            }
        }
        // Rule 2 (invariant 13): one owner.
        let lock_path = dir.join("LOCK");
        // A lock released an instant ago can still be held by a child that a
        // thread of its old owner forked and that has not exec'd yet (flock
        // follows the descriptor across fork): retry briefly before refusing.
        let mut attempt = 0;
        let lock = loop {
            match st
                .try_lock(&lock_path, &std::process::id().to_string())
                .map_err(io(format!("locking {}", lock_path.display())))?
            {
                LockOutcome::Held { .. } if attempt < LOCK_RETRIES => {
                    attempt += 1;
                    std::thread::sleep(Duration::from_millis(10));
                }
                outcome => break outcome,
            }
        };
        let lock = match lock {
            LockOutcome::Acquired(l) => l,
            LockOutcome::Held { pid } => return Err(Error::Locked { path: dir, pid }),
        };
        Self::finish_open(dir, storage, options, Some(lock), scanned, found)
    }

    /// A read-only open (`Options::read_only`): no lock (a live owner may
    /// hold it: this store sees what was on disk when it opened), no marker,
    /// nothing created, repaired or removed.
    fn open_read_only(
        dir: PathBuf,
        storage: Arc<dyn Storage>,
        options: Options,
        scanned: &dyn Fn(u64),
        format: Option<u32>,
    ) -> Result<Store> {
        if !storage.is_dir(&dir).unwrap_or(false) {
            return Err(Error::io(
                format!("opening data directory {} read-only", dir.display()),
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such directory"),
            ));
        }
        Self::finish_open(dir, storage, options, None, scanned, format)
    }

    /// The catalog (or, without a usable one, rules 3-7 for every stream
    /// and a new catalog), then the background threads. `format` is the
    /// marker's (`None`: no marker yet).
    fn finish_open(
        dir: PathBuf,
        storage: Arc<dyn Storage>,
        options: Options,
        lock: Option<Box<dyn StorageLock>>,
        scanned: &dyn Fn(u64),
        format: Option<u32>,
    ) -> Result<Store> {
        let st: &dyn Storage = &*storage;
        let read_only = st.is_read_only();
        let volatile = st.is_volatile();
        let bg = Arc::new(Background::default());
        let indexes = Arc::new(IndexCache::new(options.index_cache_bytes));
        let env = Arc::new(Env {
            indexes: indexes.clone(),
            storage: storage.clone(),
            durability: options.durability,
            segment_size: options.segment_size.max(1),
            bg: bg.clone(),
            clock: options.clock.clone(),
            full_scan: options.full_scan,
        });
        let mem_env = if volatile {
            env.clone()
        } else {
            Arc::new(Env {
                indexes,
                storage: Arc::new(MemStorage::new()),
                durability: options.durability,
                segment_size: options.segment_size.max(1),
                bg: bg.clone(),
                clock: options.clock.clone(),
                full_scan: false,
            })
        };
        let mem_root = if volatile {
            dir.join("streams")
        } else {
            PathBuf::from("/memory-streams")
        };
        mem_env
            .storage
            .create_dir_all(&mem_root)
            .map_err(io("creating the memory stream root".into()))?;
        let streams_dir = dir.join("streams");
        if !read_only && !st.exists(&streams_dir).unwrap_or(false) {
            st.create_dir_all(&streams_dir)
                .map_err(io(format!("creating {}", streams_dir.display())))?;
            // IMPORTANT: found by the power-loss test (R2): without this
            // fsync of the data directory a power loss could drop
            // `streams/`, and every acknowledged stream with it.
            st.sync_dir(&dir)
                .map_err(io(format!("syncing {}", dir.display())))?;
        }
        // The catalog is trusted only in a directory of this format: a
        // build from before it would not have kept it true.
        let loaded = if volatile || options.full_scan || format != Some(FORMAT_VERSION) {
            None
        } else {
            match catalog::load(st, &dir) {
                Ok(l) => l,
                Err(reason) => {
                    tracing::warn!(dir = %dir.display(), %reason,
                        "the catalog cannot be used: every stream is recovered to rebuild it");
                    None
                }
            }
        };
        let (events, _) = broadcast::channel(256);
        let inner = Arc::new(StoreInner {
            dir: dir.clone(),
            streams_dir,
            env,
            mem_env,
            mem_root,
            closed: AtomicBool::new(false),
            streams: RwLock::new(BTreeMap::new()),
            lazy: Mutex::new(Lazy::default()),
            capture: RwLock::new(HashMap::default()),
            router: Arc::new(Router::new(options.subscriber_buffer, events.clone())),
            events,
            report: Mutex::new(RecoveryReport::default()),
            read_only,
            unavailable: RwLock::new(BTreeMap::new()),
            catalog: Mutex::new(None),
            reconciled: AtomicBool::new(false),
            full_scan: options.full_scan,
            lock: Mutex::new(lock),
            bg: bg.clone(),
            threads: Mutex::new(Vec::new()),
            admin: Mutex::new(()),
            inbox_counter: AtomicU64::new(0),
        });
        let opened = match loaded {
            Some(l) => inner.load_catalog(l),
            None => inner.recover_every_stream(scanned).and_then(|()| {
                if read_only || volatile {
                    return Ok(());
                }
                // A new catalog, every stream marked (none has a summary
                // until it closes cleanly). Its generation starts above
                // any a damaged one could have used.
                let gen = u64::try_from(inner.env.clock.now_ns()).unwrap_or(1).max(1);
                let w = inner
                    .catalog_items(&BTreeMap::new())
                    .and_then(|items| catalog::Writer::create(st, &dir, gen, items))
                    .map_err(io(format!("writing the catalog of {}", dir.display())))?;
                *inner.catalog.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
                Ok(())
            }),
        }
        .and_then(|()| {
            if read_only || format == Some(FORMAT_VERSION) {
                return Ok(());
            }
            // Only now that the catalog is whole: a crash before this
            // leaves the old format, and the next open rebuilds it.
            let body = serde_json::to_vec(&Marker {
                format: FORMAT_VERSION,
            })
            .map_err(|e| Error::internal(format!("encoding format marker: {e}")))?;
            let marker = dir.join("durabus.json");
            crate::storage::write_atomic(st, &marker, &body)
                .map_err(io(format!("writing {}", marker.display())))
        });
        if let Err(e) = opened {
            // Nothing to close cleanly: the store never opened.
            inner.closed.store(true, Ordering::Release);
            return Err(e);
        }
        let mut threads = Vec::new();
        if options.durability == Durability::Always && !volatile && !read_only {
            let b = bg.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("durabus-sync".into())
                    .spawn(move || b.run_syncer())
                    .map_err(io("starting the sync thread".into()))?,
            );
        }
        let weak = Arc::downgrade(&inner);
        let durability = options.durability;
        threads.push(
            std::thread::Builder::new()
                .name("durabus-maint".into())
                .spawn(move || maintenance(weak, bg, durability))
                .map_err(io("starting the maintenance thread".into()))?,
        );
        *inner.threads.lock().unwrap_or_else(|e| e.into_inner()) = threads;
        Ok(Store { inner })
    }

    /// What recovery found: torn tails cut (or, read-only, kept) and
    /// streams and consumers that could not be opened. Streams are
    /// recovered when first used (docs/design.md, "Catalog"), so this
    /// first recovers every stream not recovered yet (what opening the
    /// store cost before the catalog), then reports for all of them.
    pub fn recovery_report(&self) -> RecoveryReport {
        if let Err(e) = self.inner.recover_all() {
            tracing::warn!(error = %e, "recovery report: not every stream could be recovered");
        }
        // Consumers are loaded on first use (docs/design.md): the rest load
        // now, so every consumer file that does not load is reported.
        let consumers: Vec<durabus_core::Unavailable> = self
            .inner
            .snapshot()
            .iter()
            .flat_map(|s| {
                s.unavailable_consumers()
                    .into_iter()
                    .map(|(c, r)| durabus_core::Unavailable::new(s.name.clone(), Some(c), r))
            })
            .collect();
        let mut report = self.inner.report.lock().unwrap_or_else(|e| e.into_inner());
        for u in consumers {
            if !report.unavailable.contains(&u) {
                report.unavailable.push(u);
            }
        }
        report.clone()
    }

    /// Streams and durable consumers that could not be opened, each with
    /// why (see [`Backend::unavailable`]). Complete for everything the
    /// store wrote itself: it lists `streams/` once (directories the
    /// catalog does not know) and recovers every stream the catalog cannot
    /// vouch for (one that did not close cleanly, or closed with a
    /// problem). A file damaged by hand in a stream that closed cleanly
    /// shows when that stream is opened (any operation on it, or
    /// [`Store::recovery_report`]); `durabus verify` reads every file.
    pub fn unavailable(&self) -> Vec<durabus_core::Unavailable> {
        if let Err(e) = self.inner.recover_untrusted() {
            tracing::warn!(error = %e, "unavailable: not every stream could be recovered");
        }
        let mut out: Vec<durabus_core::Unavailable> = self
            .inner
            .unavailable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(n, r)| durabus_core::Unavailable::new(n.clone(), None, r.clone()))
            .collect();
        for s in self.inner.snapshot() {
            for (c, r) in s.unavailable_consumers() {
                out.push(durabus_core::Unavailable::new(s.name.clone(), Some(c), r));
            }
        }
        out
    }

    /// Whether the store was opened read-only ([`Options::read_only`]).
    pub fn is_read_only(&self) -> bool {
        self.inner.read_only
    }

    /// `ReadOnly` when the store was opened read-only.
    fn check_writable(&self, operation: &'static str) -> Result<()> {
        if self.inner.read_only {
            Err(Error::ReadOnly {
                path: self.inner.dir.clone(),
                operation,
            })
        } else {
            Ok(())
        }
    }

    /// `StreamUnavailable` for a stream that could not be opened.
    fn check_available(&self, name: &str) -> Result<()> {
        match self
            .inner
            .unavailable
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            Some(reason) => Err(Error::StreamUnavailable {
                name: name.to_owned(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    /// A stream and the check that `consumer` was loaded.
    fn consumer_stream(&self, stream: &str, consumer: &str) -> Result<Arc<StreamConsumers>> {
        let s = self.stream(stream)?;
        s.check_consumer(consumer)?;
        Ok(s)
    }

    /// Live core subscriptions (request inboxes included).
    pub fn subscription_count(&self) -> usize {
        self.inner.router.len()
    }

    /// The sealed-segment index cache of the store's file streams: (bytes
    /// held, most bytes ever held, indexes held). Not part of the API; for
    /// tests (feature `internals`).
    #[cfg(feature = "internals")]
    #[doc(hidden)]
    pub fn index_cache_stats(&self) -> (usize, usize, usize) {
        let c = &self.inner.env.indexes;
        (c.bytes(), c.peak(), c.len())
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Monitoring events (slow consumers).
    pub fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    fn check_open(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    /// The stream `name`, recovered on first use.
    fn stream(&self, name: &str) -> Result<Arc<StreamConsumers>> {
        self.check_open()?;
        match self.inner.find_slot(name)? {
            Some(slot) => self.inner.open_slot(&slot),
            None => {
                self.check_available(name)?;
                // A name no stream can have is refused as on NATS (which
                // checks before asking the server).
                durabus_core::validate_stream_name(name)?;
                Err(Error::StreamNotFound {
                    name: name.to_owned(),
                })
            }
        }
    }

    /// The stream capturing `subj` (cached), recovered on first use. A
    /// stream that cannot be opened captures nothing (as one unavailable
    /// at open); any other error opening it is the publish's.
    fn capture(&self, subj: &str) -> Result<Option<Arc<StreamConsumers>>> {
        if let Some(hit) = self
            .inner
            .capture
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(subj)
        {
            return Ok(hit.clone());
        }
        self.inner.take_all();
        let slot = {
            let streams = self.inner.streams.read().unwrap_or_else(|e| e.into_inner());
            streams.values().find(|s| s.captures(subj)).cloned()
        };
        let found = match slot {
            None => None,
            Some(slot) => match self.inner.open_slot(&slot) {
                Ok(s) => Some(s),
                Err(Error::StreamUnavailable { .. } | Error::StreamNotFound { .. }) => None,
                Err(e) => return Err(e),
            },
        };
        let mut cache = self
            .inner
            .capture
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CAPTURE_CACHE_MAX {
            cache.clear();
        }
        cache.insert(subj.to_owned(), found.clone());
        Ok(found)
    }

    fn clear_capture(&self) {
        self.inner.clear_capture();
    }

    fn check_overlaps(&self, config: &StreamConfig) -> Result<()> {
        self.inner.take_all();
        let streams = self.inner.streams.read().unwrap_or_else(|e| e.into_inner());
        let mine = config.effective_subjects();
        for (name, s) in streams.iter() {
            if *name == config.name {
                continue;
            }
            for other in s.subjects() {
                if let Some(subj) = mine.iter().find(|m| subject::overlaps(m, &other)) {
                    return Err(Error::SubjectsOverlap {
                        subject: subj.clone(),
                        other: name.clone(),
                        other_subject: other,
                    });
                }
            }
        }
        Ok(())
    }

    fn env_for(&self, storage: StorageType) -> (Arc<Env>, PathBuf) {
        match storage {
            StorageType::Memory => (self.inner.mem_env.clone(), self.inner.mem_root.clone()),
            StorageType::File => (self.inner.env.clone(), self.inner.dir.join("streams")),
        }
    }

    fn new_inbox(&self) -> String {
        let n = self.inner.inbox_counter.fetch_add(1, Ordering::Relaxed);
        format!(
            "_INBOX.{:x}{:x}.{n}",
            now_ns() as u64 & 0xffff_ffff_ffff,
            std::process::id()
        )
    }

    /// Routes and stores one validated message; returns the ack and how many
    /// core subscribers got it.
    async fn publish_inner(&self, message: &Message) -> Result<(Option<PublishAck>, usize)> {
        validate_publish_fast(&message.subject)?;
        if let Some(r) = &message.reply {
            validate_publish_fast(r)?;
        }
        // As NATS: a header that would break the wire framing is refused
        // before anyone sees the message.
        message.headers.validate()?;
        let captured = self.capture(&message.subject)?;
        if captured.is_some() {
            self.check_writable("publish")?;
        }
        let delivered = self.inner.router.deliver(message, None);
        let ack = match captured {
            Some(s) => {
                let ack = s.stream.publish(message).await?;
                if !ack.duplicate {
                    s.retain_published(ack.seq, &message.subject);
                }
                Some(ack)
            }
            None => None,
        };
        Ok((ack, delivered))
    }

    /// Publishes a batch, published by `origin` when it has one (its
    /// subscriptions do not get these messages).
    async fn publish_batch_as(
        &self,
        origin: Option<Origin>,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Option<PublishAck>>>> {
        self.check_open()?;
        tokio::task::consume_budget().await;
        let mut out: Vec<Option<Result<Option<PublishAck>>>> = Vec::with_capacity(messages.len());
        // Per capturing stream: indices of its messages, in order.
        let mut groups: Vec<(Arc<StreamConsumers>, Vec<usize>)> = Vec::new();
        // Batches usually repeat subjects: remember the last lookup.
        let mut memo: Option<(&str, Option<Arc<StreamConsumers>>)> = None;
        for (i, m) in messages.iter().enumerate() {
            if let Err(e) = validate_publish_fast(&m.subject).and_then(|()| m.headers.validate()) {
                out.push(Some(Err(e)));
                continue;
            }
            let captured = match &memo {
                Some((subj, hit)) if *subj == m.subject => hit.clone(),
                _ => match self.capture(&m.subject) {
                    Ok(hit) => {
                        memo = Some((m.subject.as_str(), hit.clone()));
                        hit
                    }
                    Err(e) => {
                        // Its stream could not be opened: neither stored
                        // nor delivered.
                        out.push(Some(Err(e)));
                        continue;
                    }
                },
            };
            self.inner.router.deliver(m, origin);
            match captured {
                None => out.push(Some(Ok(None))),
                Some(s) => {
                    out.push(None);
                    match groups.iter_mut().find(|(g, _)| Arc::ptr_eq(g, &s)) {
                        Some((_, idx)) => idx.push(i),
                        None => groups.push((s, vec![i])),
                    }
                }
            }
        }
        if !groups.is_empty() {
            self.check_writable("publish_batch")?;
        }
        for (stream, idx) in groups {
            let refs: Vec<&Message> = idx.iter().map(|&i| &messages[i]).collect();
            let results = stream.publish_batch(&refs).await;
            for (r, m) in results.iter().zip(&refs) {
                if let Ok(a) = r {
                    if !a.duplicate {
                        stream.retain_published(a.seq, &m.subject);
                    }
                }
            }
            for (i, r) in idx.into_iter().zip(results) {
                out[i] = Some(r.map(Some));
            }
        }
        Ok(out
            .into_iter()
            .map(|r| r.unwrap_or(Err(Error::Closed)))
            .collect())
    }
}

/// Attempts (10 ms apart) to take a data directory's lock before `Locked`.
const LOCK_RETRIES: u32 = 10;

/// The maintenance thread: checkpoints, max_age timers, periodic fsync.
/// Holds only a `Weak` so dropping the last `Store` ends it.
fn maintenance(store: Weak<StoreInner>, bg: Arc<Background>, durability: Durability) {
    let tick = match durability {
        Durability::Periodic(d) => d.clamp(Duration::from_millis(1), Duration::from_millis(100)),
        _ => Duration::from_millis(100),
    };
    let mut last_sync = Instant::now();
    // The first catalog tick (listing `streams/`) a second after the
    // open, not during it: at 10,000 streams it would compete with the
    // open's first requests for both cores and the catalog's locks.
    let mut last_catalog = Instant::now();
    loop {
        let names = match bg.next_maint(tick) {
            MaintWork::Shutdown => return,
            MaintWork::Tick(names) => names,
        };
        let streams: Vec<Arc<StreamConsumers>> = match store.upgrade() {
            Some(s) => {
                if last_catalog.elapsed() >= Duration::from_secs(1) {
                    last_catalog = Instant::now();
                    s.catalog_tick();
                }
                s.snapshot()
            }
            None => return,
        };
        for name in names {
            if let Some(s) = streams.iter().find(|s| s.name == name) {
                if s.env.storage.is_volatile() || s.env.storage.is_read_only() || s.is_closed() {
                    continue;
                }
                if let Err(e) = s.write_checkpoint() {
                    tracing::warn!(stream = %s.name, error = %e, "could not write checkpoint");
                }
            }
        }
        for s in &streams {
            s.expire_now();
            s.consumer_tick();
        }
        if let Durability::Periodic(d) = durability {
            if last_sync.elapsed() >= d {
                last_sync = Instant::now();
                for s in &streams {
                    if !s.env.storage.is_volatile() && s.is_dirty() {
                        s.sync_now();
                    }
                }
            }
        }
    }
}

impl Store {
    /// Deletes the directory of a stream that could not be opened.
    fn delete_unavailable_stream(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        let storage = &*self.inner.env.storage;
        let parent = self.inner.dir.join("streams");
        let tomb = parent.join(format!(".deleted-{name}-{}", now_ns()));
        storage
            .rename(&parent.join(name), &tomb)
            .map_err(io(format!("deleting stream {name}")))?;
        // IMPORTANT: fsync the directory after rename.
        storage
            .sync_dir(&parent)
            .map_err(io(format!("deleting stream {name}")))?;
        self.inner
            .unavailable
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name);
        // The catalog may still list it (it became unavailable when opened).
        self.inner
            .catalog_append(&[catalog::Change::Delete(name.to_owned())])?;
        if let Err(e) = storage.remove_dir_all(&tomb) {
            tracing::warn!(stream = name, error = %e, "could not remove deleted stream files; removed at next open");
        }
        Ok(())
    }
}

impl Store {
    /// Repairs `only` (or every open stream); see [`crate::repair`].
    pub(crate) fn repair_streams(&self, only: Option<&str>) -> Result<Vec<crate::StreamRepair>> {
        let quarantine = self.inner.dir.join("quarantine");
        let mut done = Vec::new();
        let mut found = only.is_none();
        for s in self.inner.snapshot() {
            if only.is_some_and(|n| n != s.name) {
                continue;
            }
            found = true;
            let r = s.repair(&quarantine)?;
            if !r.rewritten.is_empty() || !r.missing.is_empty() || !r.lost.is_empty() {
                done.push(r);
            }
        }
        match only {
            Some(name) if !found => Err(Error::StreamNotFound {
                name: name.to_owned(),
            }),
            _ => Ok(done),
        }
    }
}

impl StoreInner {
    /// Every open stream, without holding the streams lock afterwards.
    fn snapshot(&self) -> Vec<Arc<StreamConsumers>> {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .filter_map(|s| s.get().cloned())
            .collect()
    }

    /// Every stream, opened or not (taking the catalog's untaken ones).
    fn slots(&self) -> Vec<Arc<Slot>> {
        self.take_all();
        self.listed()
    }

    /// The streams taken so far (created, or taken from the catalog).
    fn listed(&self) -> Vec<Arc<Slot>> {
        self.streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    fn clear_capture(&self) {
        self.capture
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    /// Flushes, fsyncs and checkpoints every open stream, ends
    /// subscriptions and replays, stops the threads, writes the catalog
    /// with the summaries of the streams that closed cleanly, releases the
    /// lock.
    fn shutdown(&self, join: bool) -> Result<()> {
        self.router.close();
        let streams: Vec<Arc<StreamConsumers>> = self.snapshot();
        let mut first_err = None;
        let mut closed_cleanly = std::collections::BTreeSet::new();
        for s in streams {
            let mut clean = true;
            // Invariant 18: a clean close writes every consumer's state.
            if let Err(e) = s.persist_consumers(true) {
                tracing::warn!(stream = %s.name, error = %e, "close: consumer state not written");
                first_err.get_or_insert(e);
                clean = false;
            }
            if let Err(e) = s.shutdown() {
                tracing::warn!(stream = %s.name, error = %e, "close: stream did not shut down cleanly");
                first_err.get_or_insert(e);
                clean = false;
            }
            if clean {
                closed_cleanly.insert(s.name.clone());
            }
        }
        self.bg.shutdown();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        if join {
            let me = std::thread::current().id();
            for t in threads {
                if t.thread().id() != me {
                    let _ = t.join();
                }
            }
        }
        // Invariant 34: summaries only of streams that closed cleanly.
        let listed = self.listed();
        let summaries: BTreeMap<String, catalog::Summary> = listed
            .iter()
            .filter(|slot| slot.file && !self.full_scan)
            .filter_map(|slot| {
                let s = slot.get().filter(|s| closed_cleanly.contains(&s.name))?;
                Some((slot.name.clone(), crate::slot::summary_at_close(s)?))
            })
            .collect();
        let mut writer = self.catalog.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = writer.as_mut() {
            let closed: Vec<catalog::Change> = listed
                .iter()
                .filter_map(|slot| {
                    let summary = summaries.get(&slot.name)?.clone();
                    Some(catalog::Change::Closed(slot.entry_at_close(Some(summary))))
                })
                .collect();
            let written = if closed.is_empty() {
                Ok(())
            } else {
                w.append(&closed)
            };
            let folded = written.and_then(|()| {
                if !w.wants_compaction(true) {
                    return Ok(());
                }
                let items = self.catalog_items(&summaries)?;
                w.compact(&*self.env.storage, items)
            });
            if let Err(e) = folded {
                // The marks stay in the journal: the next open recovers
                // those streams instead of trusting a summary.
                tracing::warn!(error = %e, "close: the catalog's summaries were not written");
            }
        }
        drop(writer);
        // Invariant 13: the lock goes with the store.
        self.lock.lock().unwrap_or_else(|e| e.into_inner()).take();
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Recovers the stream in `path` (rules 3-7) with its consumers,
    /// re-applies interest and work-queue retention, and notes what it
    /// found in the report. `consumers`: the durable consumers a trusted
    /// catalog summary counts (a limits stream then lists them on first
    /// use).
    fn recover(
        &self,
        path: PathBuf,
        name: &str,
        scanned: &dyn Fn(u64),
        consumers: Option<u64>,
    ) -> Result<Arc<StreamConsumers>> {
        let st = &*self.env.storage;
        let (stream, truncated) = recovery::read_config(st, &path, name)
            .and_then(|_| recovery::open(self.env.clone(), path, name, scanned))?;
        let stream = StreamConsumers::new(stream);
        // Invariant 19: durable consumers resume exactly (one that cannot
        // be loaded is unavailable on its own).
        stream.load_consumers(consumers)?;
        // Acknowledged messages of interest/work-queue streams are removed
        // again (invariant 21).
        stream.apply_retention();
        stream.forget_unstored_ids();
        let mut report = self.report.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((seg, dropped)) = truncated {
            if self.read_only {
                report.torn_kept.push((name.to_owned(), seg, dropped));
            } else {
                report.truncated.push((name.to_owned(), seg, dropped));
            }
        }
        for (consumer, reason) in stream.consumers.unavailable() {
            report.unavailable.push(durabus_core::Unavailable::new(
                name.to_owned(),
                Some(consumer),
                reason,
            ));
        }
        Ok(stream)
    }

    /// Records a stream that could not be opened (invariant 24).
    fn note_unavailable(&self, name: &str, e: &Error) {
        tracing::warn!(stream = %name, error = %e,
            "stream unavailable: it could not be opened; the other streams work");
        self.report
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .unavailable
            .push(durabus_core::Unavailable::new(
                name.to_owned(),
                None,
                e.to_string(),
            ));
        self.unavailable
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), e.to_string());
    }

    /// Rules 3-7 for every directory of `streams/` (no usable catalog, a
    /// repair, a `memory:` store): every stream is opened now.
    fn recover_every_stream(&self, scanned: &dyn Fn(u64)) -> Result<()> {
        let st = &*self.env.storage;
        let names = if st.exists(&self.streams_dir).unwrap_or(false) {
            st.list_dir(&self.streams_dir)
                .map_err(io(format!("listing {}", self.streams_dir.display())))?
        } else {
            Vec::new()
        };
        let mut opened = BTreeMap::new();
        for name in names {
            let path = self.streams_dir.join(&name);
            if !self.stream_dir_entry(&name, &path) {
                continue;
            }
            // A stream whose config cannot be read stays unavailable; the
            // others open (its directory is left as it is).
            match self.recover(path, &name, scanned, None) {
                Ok(s) => {
                    opened.insert(name, Arc::new(Slot::opened(s, true)?));
                }
                Err(e) if stream_local(&e) => self.note_unavailable(&name, &e),
                Err(e) => return Err(e),
            }
        }
        *self.streams.write().unwrap_or_else(|e| e.into_inner()) = opened;
        self.reconciled.store(true, Ordering::Release);
        Ok(())
    }

    /// Whether the entry `name` of `streams/` is a stream directory;
    /// finishes an interrupted create or delete (writable stores) and warns
    /// of stray entries.
    fn stream_dir_entry(&self, name: &str, path: &Path) -> bool {
        let st = &*self.env.storage;
        if name.starts_with(".creating-") || name.starts_with(".deleted-") {
            // An interrupted create or delete: finish it (a read-only
            // store leaves it to the next writable open).
            if !self.read_only {
                if let Err(e) = st.remove_dir_all(path) {
                    tracing::warn!(entry = %path.display(), error = %e,
                        "could not remove what an interrupted create or delete left");
                }
            }
            return false;
        }
        if !st.is_dir(path).unwrap_or(false) || durabus_core::validate_stream_name(name).is_err() {
            tracing::warn!(entry = %path.display(),
                "ignoring an entry of streams/ that is not a stream directory");
            return false;
        }
        true
    }

    /// Takes the streams of a catalog `catalog::load` read: none is opened,
    /// and only those the journal names are read now (the snapshot's are
    /// read on first use).
    fn load_catalog(&self, loaded: catalog::Loaded) -> Result<()> {
        let st = &*self.env.storage;
        let writer = if self.read_only {
            None
        } else {
            Some(
                catalog::Writer::resume(st, &self.dir, &loaded)
                    .map_err(io(format!("opening the catalog of {}", self.dir.display())))?,
            )
        };
        let catalog::Loaded {
            snapshot,
            journal,
            dirty,
            updating,
            ..
        } = loaded;
        let mut lazy = Lazy {
            taken: vec![false; snapshot.len()],
            left: snapshot.len(),
            snapshot: Some(snapshot),
            dirty,
        };
        let mut entries = BTreeMap::new();
        for (name, entry) in journal {
            if let Some(i) = lazy.find(&name) {
                lazy.take(i);
            }
            if let Some(e) = entry {
                entries.insert(name, e);
            }
        }
        for name in &updating {
            if let (Some(i), Some(snap)) = (lazy.find(name), lazy.snapshot.as_ref()) {
                // (a damaged entry is left to the listing of `streams/`)
                if let Ok(e) = snap.entry(i) {
                    entries.insert(name.clone(), e);
                }
                lazy.take(i);
            }
        }
        let mut fixes = Vec::new();
        let mut slots = BTreeMap::new();
        for (name, mut entry) in entries {
            let updating = updating.contains(&name);
            if updating {
                // Its config.json was being replaced: the file is the truth.
                if let Ok(cf) = recovery::read_config(st, &self.streams_dir.join(&name), &name) {
                    entry = crate::slot::new_entry(&cf.config, cf.created_ns)?;
                    fixes.push(catalog::Change::Put(entry.clone()));
                }
            }
            let dirty = updating || lazy.dirty.contains(&name);
            slots.insert(name, Arc::new(Slot::from_entry(entry, dirty)));
        }
        *self.streams.write().unwrap_or_else(|e| e.into_inner()) = slots;
        *self.lazy.lock().unwrap_or_else(|e| e.into_inner()) = lazy;
        if let Some(mut w) = writer {
            if !fixes.is_empty() {
                w.append(&fixes)
                    .map_err(io(format!("writing the catalog of {}", self.dir.display())))?;
            }
            *self.catalog.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
        }
        Ok(())
    }

    /// Takes the snapshot's entry of `name` into `streams` (its first
    /// use): the slot, or `None` when the snapshot has no untaken entry of
    /// that name or its entry is damaged (then its directory is found by
    /// the next listing of `streams/`).
    fn take_lazy(&self, name: &str) -> Option<Arc<Slot>> {
        let mut lazy = self.lazy.lock().unwrap_or_else(|e| e.into_inner());
        if lazy.left == 0 {
            return None;
        }
        if let Some(s) = self
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            // Taken by another caller meanwhile.
            return Some(s.clone());
        }
        let i = lazy.find(name)?;
        lazy.take(i);
        let read = lazy.snapshot.as_ref().map(|snap| snap.entry(i))?;
        let slot = self.slot_of(read, &lazy.dirty)?;
        self.streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.to_owned(), slot.clone());
        Some(slot)
    }

    /// Takes every untaken entry of the snapshot into `streams`.
    fn take_all(&self) {
        let mut lazy = self.lazy.lock().unwrap_or_else(|e| e.into_inner());
        if lazy.left == 0 {
            return;
        }
        let Some(snap) = lazy.snapshot.take() else {
            return;
        };
        let taken: Vec<Arc<Slot>> = snap
            .entries(|i| !lazy.taken[i])
            .into_iter()
            .filter_map(|e| self.slot_of(e, &lazy.dirty))
            .collect();
        lazy.taken.iter_mut().for_each(|t| *t = true);
        lazy.left = 0;
        lazy.snapshot = Some(snap);
        let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
        for slot in taken {
            streams.insert(slot.name.clone(), slot);
        }
    }

    /// The slot of an entry read from the snapshot; `None` when it did not
    /// verify (warned, and `streams/` is to be listed again so its
    /// directory is recovered as one the catalog does not know).
    fn slot_of(
        &self,
        read: std::result::Result<catalog::Entry, String>,
        dirty: &BTreeSet<String>,
    ) -> Option<Arc<Slot>> {
        match read {
            Ok(e) => {
                let dirty = dirty.contains(&e.name);
                Some(Arc::new(Slot::from_entry(e, dirty)))
            }
            Err(reason) => {
                tracing::warn!(dir = %self.dir.display(), %reason,
                    "a catalog entry cannot be used: its stream is recovered from its directory");
                self.reconciled.store(false, Ordering::Release);
                None
            }
        }
    }

    /// The catalog as a new snapshot would hold it now: every taken file
    /// stream (an open one with its summary from `summaries`, or none) and
    /// the untaken entries of the snapshot, copied.
    fn catalog_items(
        &self,
        summaries: &BTreeMap<String, catalog::Summary>,
    ) -> std::io::Result<Vec<catalog::Item>> {
        let lazy = self.lazy.lock().unwrap_or_else(|e| e.into_inner());
        let mut items = match (&lazy.snapshot, lazy.left) {
            (Some(snap), 1..) => snap.items(|i| !lazy.taken[i])?,
            _ => Vec::new(),
        };
        drop(lazy);
        for slot in self.listed().iter().filter(|s| s.file) {
            let entry = slot.entry_at_close(summaries.get(&slot.name).cloned());
            items.push(catalog::Item::new(&entry, slot.due_ns(&entry))?);
        }
        Ok(items)
    }

    /// Appends `changes` to the catalog's journal, durably (nothing for a
    /// read-only or volatile store).
    fn catalog_append(&self, changes: &[catalog::Change]) -> Result<()> {
        match self
            .catalog
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_mut()
        {
            Some(w) => w
                .append(changes)
                .map_err(io(format!("writing the catalog of {}", self.dir.display()))),
            None => Ok(()),
        }
    }

    /// Folds a long journal into a new snapshot. The caller holds the
    /// admin lock (no create or delete is half done).
    fn maybe_compact(&self) {
        let mut guard = self.catalog.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = guard.as_mut().filter(|w| w.wants_compaction(false)) {
            let folded = self
                .catalog_items(&BTreeMap::new())
                .and_then(|items| w.compact(&*self.env.storage, items));
            if let Err(e) = folded {
                tracing::warn!(error = %e, "could not fold the catalog's journal into a new snapshot");
            }
        }
    }

    /// The slot of `name`; a directory of that name the catalog does not
    /// know (made by hand, copied in) is first matched with it.
    fn find_slot(&self, name: &str) -> Result<Option<Arc<Slot>>> {
        if let Some(s) = self
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return Ok(Some(s.clone()));
        }
        if let Some(s) = self.take_lazy(name) {
            return Ok(Some(s));
        }
        if self.reconciled.load(Ordering::Acquire)
            || durabus_core::validate_stream_name(name).is_err()
            || !self
                .env
                .storage
                .is_dir(&self.streams_dir.join(name))
                .unwrap_or(false)
        {
            return Ok(None);
        }
        self.reconcile()?;
        Ok(self
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned())
    }

    /// Removes `slot` from the streams (unless another took its name
    /// meanwhile) and from the capture cache.
    fn unlist_slot(&self, slot: &Arc<Slot>) {
        {
            let mut streams = self.streams.write().unwrap_or_else(|e| e.into_inner());
            if streams
                .get(&slot.name)
                .is_some_and(|s| Arc::ptr_eq(s, slot))
            {
                streams.remove(&slot.name);
            }
        }
        self.clear_capture();
    }

    /// Drops a slot whose directory is gone: a create or delete that did
    /// not finish (or a directory removed by hand).
    fn forget_slot(&self, slot: &Arc<Slot>) {
        self.unlist_slot(slot);
        if let Err(e) = self.catalog_append(&[catalog::Change::Delete(slot.name.clone())]) {
            tracing::warn!(stream = %slot.name, error = %e, "could not drop a stream without a directory from the catalog");
        }
    }

    /// The stream of `slot`, recovered now if it was not yet (exactly
    /// once). A writable store marks it in the catalog first (invariant
    /// 34). A stream that cannot be opened becomes unavailable
    /// (`StreamUnavailable`, invariant 24); one whose directory is gone,
    /// absent (`StreamNotFound`).
    fn open_slot(&self, slot: &Arc<Slot>) -> Result<Arc<StreamConsumers>> {
        if let Some(s) = slot.get() {
            return Ok(s.clone());
        }
        let _one = slot.opening();
        if let Some(s) = slot.get() {
            return Ok(s.clone());
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        let not_found = || Error::StreamNotFound {
            name: slot.name.clone(),
        };
        if !self
            .streams
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&slot.name)
            .is_some_and(|s| Arc::ptr_eq(s, slot))
        {
            // Deleted (or dropped) while this caller waited.
            return Err(not_found());
        }
        let path = self.streams_dir.join(&slot.name);
        if !self.env.storage.is_dir(&path).unwrap_or(false) {
            self.forget_slot(slot);
            return Err(not_found());
        }
        // Read before the mark drops the summary.
        let consumers = slot
            .trusted(self.env.clock.now_ns())
            .map(|(summary, _)| summary.consumer_count);
        if !self.read_only && !slot.is_dirty() {
            self.catalog_append(&[catalog::Change::Dirty(slot.name.clone())])?;
            slot.set_dirty();
        }
        match self.recover(path, &slot.name, &|_| {}, consumers) {
            Ok(s) => {
                let config = s.config();
                if slot.config().ok().as_ref() != Some(&config) {
                    // The catalog did not have the config the stream opened
                    // with: the file is the truth.
                    let created = from_system_time(s.info().created);
                    slot.set_config(&config, created)?;
                    self.catalog_append(&[catalog::Change::Put(slot.entry())])?;
                    self.clear_capture();
                }
                slot.set(s.clone());
                Ok(s)
            }
            Err(e) if stream_local(&e) => {
                self.note_unavailable(&slot.name, &e);
                self.unlist_slot(slot);
                Err(Error::StreamUnavailable {
                    name: slot.name.clone(),
                    reason: e.to_string(),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Lists `streams/` once and matches it with the catalog: a directory
    /// it does not list is recovered and added (or unavailable), a listed
    /// stream without a directory is dropped, and what interrupted creates
    /// and deletes left is removed.
    fn reconcile(&self) -> Result<()> {
        if self.reconciled.load(Ordering::Acquire) {
            return Ok(());
        }
        let _admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        if self.reconciled.load(Ordering::Acquire) || self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let st = &*self.env.storage;
        let names: Vec<String> = if st.exists(&self.streams_dir).unwrap_or(false) {
            st.list_dir(&self.streams_dir)
                .map_err(io(format!("listing {}", self.streams_dir.display())))?
        } else {
            Vec::new()
        };
        // The directories the store knows (taken, untaken or unavailable),
        // each map locked once: their directories are checked when they
        // are recovered (no stat per stream here).
        let (known, rest): (Vec<String>, Vec<String>) = {
            let streams = self.streams.read().unwrap_or_else(|e| e.into_inner());
            names.into_iter().partition(|n| streams.contains_key(n))
        };
        let mut present: HashSet<String> = known.into_iter().collect();
        let (known, rest): (Vec<String>, Vec<String>) = {
            let lazy = self.lazy.lock().unwrap_or_else(|e| e.into_inner());
            rest.into_iter().partition(|n| lazy.find(n).is_some())
        };
        present.extend(known);
        let (known, unknown): (Vec<String>, Vec<String>) = {
            let unavailable = self.unavailable.read().unwrap_or_else(|e| e.into_inner());
            rest.into_iter().partition(|n| unavailable.contains_key(n))
        };
        present.extend(known);
        for name in unknown {
            let path = self.streams_dir.join(&name);
            if !self.stream_dir_entry(&name, &path) {
                continue;
            }
            present.insert(name.clone());
            match self.recover(path, &name, &|_| {}, None) {
                Ok(s) => {
                    let slot = Arc::new(Slot::opened(s, true)?);
                    self.catalog_append(&[catalog::Change::Put(slot.entry())])?;
                    self.streams
                        .write()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(name, slot);
                    self.clear_capture();
                }
                Err(e) => self.note_unavailable(&name, &e),
            }
        }
        for slot in self.listed() {
            if slot.file && !present.contains(&slot.name) && slot.get().is_none() {
                self.forget_slot(&slot);
            }
        }
        // Untaken entries without a directory: dropped without reading them.
        let gone: Vec<String> = {
            let mut lazy = self.lazy.lock().unwrap_or_else(|e| e.into_inner());
            let names: Vec<(usize, String)> = match &lazy.snapshot {
                Some(snap) if lazy.left > 0 => (0..snap.len())
                    .filter(|&i| !lazy.taken[i] && !present.contains(snap.name(i)))
                    .map(|i| (i, snap.name(i).to_owned()))
                    .collect(),
                _ => Vec::new(),
            };
            names
                .into_iter()
                .map(|(i, name)| {
                    lazy.take(i);
                    name
                })
                .collect()
        };
        for name in gone {
            if let Err(e) = self.catalog_append(&[catalog::Change::Delete(name.clone())]) {
                tracing::warn!(stream = %name, error = %e, "could not drop a stream without a directory from the catalog");
            }
        }
        self.reconciled.store(true, Ordering::Release);
        self.maybe_compact();
        Ok(())
    }

    /// Recovers every stream not recovered yet.
    fn recover_all(&self) -> Result<()> {
        self.reconcile()?;
        for slot in self.slots() {
            match self.open_slot(&slot) {
                Ok(_) | Err(Error::StreamUnavailable { .. } | Error::StreamNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Recovers every stream the catalog cannot vouch for (no summary, or
    /// marked): the ones that may have a problem to report.
    fn recover_untrusted(&self) -> Result<()> {
        self.reconcile()?;
        for slot in self.slots() {
            if slot.get().is_some() || slot.trusted_info(i64::MIN / 2).is_some() {
                continue;
            }
            match self.open_slot(&slot) {
                Ok(_) | Err(Error::StreamUnavailable { .. } | Error::StreamNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Maintenance, once a second (writable file stores): the first time,
    /// matches `streams/` with the catalog (removing what interrupted
    /// creates and deletes left); then opens streams whose messages may
    /// have expired, and folds a long catalog journal.
    fn catalog_tick(&self) {
        if self.read_only || self.env.storage.is_volatile() || self.closed.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = self.reconcile() {
            tracing::warn!(error = %e, "could not match streams/ with the catalog");
        }
        self.open_expiring();
        let _admin = self.admin.lock().unwrap_or_else(|e| e.into_inner());
        self.maybe_compact();
    }

    /// Opens the streams not open yet whose messages may have reached
    /// their `max_age` (opening removes them, rule 7; the maintenance
    /// thread then keeps expiring them).
    fn open_expiring(&self) {
        let now = self.env.clock.now_ns();
        // Untaken entries whose summary `max_age` may have made untrue.
        let due: Vec<String> = {
            let lazy = self.lazy.lock().unwrap_or_else(|e| e.into_inner());
            match &lazy.snapshot {
                Some(snap) if lazy.left > 0 => (0..snap.len())
                    .filter(|&i| !lazy.taken[i] && snap.due_ns(i) <= now)
                    .map(|i| snap.name(i).to_owned())
                    .collect(),
                _ => Vec::new(),
            }
        };
        for name in due {
            self.take_lazy(&name);
        }
        for slot in self.listed() {
            if slot.expiry_due(now) {
                if let Err(e) = self.open_slot(&slot) {
                    tracing::warn!(stream = %slot.name, error = %e, "could not open a stream to expire its messages");
                }
            }
        }
    }
}

impl Drop for StoreInner {
    fn drop(&mut self) {
        if !self.closed.swap(true, Ordering::AcqRel) {
            let _ = self.shutdown(false);
        }
    }
}

#[async_trait::async_trait]
impl Backend for Store {
    async fn create_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        self.check_open()?;
        config.validate()?;
        self.check_writable("create_stream")?;
        // Never build over the directory of a stream that did not open.
        let existing = self.inner.find_slot(&config.name)?;
        self.check_available(&config.name)?;
        let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        let existing = existing.or_else(|| {
            self.inner
                .streams
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&config.name)
                .cloned()
        });
        if let Some(slot) = existing {
            // Create-if-absent, never a silent update.
            if slot.config()? == config {
                return Ok(self.inner.open_slot(&slot)?.info());
            }
            return Err(Error::StreamNameInUse { name: config.name });
        }
        self.check_overlaps(&config)?;
        // Interest and WorkQueue retention act through consumers (`consumer`).
        let (env, root) = self.env_for(config.storage);
        let name = config.name.clone();
        let file = config.storage == StorageType::File;
        let created_ns = env.clock.now_ns();
        if file {
            // Invariant 34: in the catalog before its directory exists (a
            // crash in between leaves an entry without a directory: absent).
            let entry = crate::slot::new_entry(&config, created_ns)?;
            self.inner.catalog_append(&[catalog::Change::Put(entry)])?;
        }
        let stream = match recovery::create(env, &root, config, to_system_time(created_ns)) {
            Ok(s) => StreamConsumers::new(s),
            Err(e) => {
                if file {
                    let _ = self
                        .inner
                        .catalog_append(&[catalog::Change::Delete(name.clone())]);
                }
                return Err(e);
            }
        };
        let info = stream.info();
        let slot = Arc::new(Slot::opened(stream, file)?);
        self.inner
            .streams
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name, slot);
        self.clear_capture();
        self.inner.maybe_compact();
        Ok(info)
    }

    async fn update_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        config.validate()?;
        let s = self.stream(&config.name)?;
        self.check_writable("update_stream")?;
        let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        let old = s.config();
        config.validate_update(&old)?;
        self.check_overlaps(&config)?;
        if old != config {
            let slot = self
                .inner
                .streams
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .get(&config.name)
                .cloned()
                .filter(|slot| slot.get().is_some_and(|o| Arc::ptr_eq(o, &s)))
                .ok_or_else(|| Error::StreamNotFound {
                    name: config.name.clone(),
                })?;
            let created = s.info().created;
            if slot.file {
                // Invariant 34: until the `Put` below, config.json is the truth.
                self.inner
                    .catalog_append(&[catalog::Change::Updating(slot.name.clone())])?;
            }
            recovery::write_config(s.storage(), &s.dir, &config, created)?;
            s.update(config.clone())?;
            slot.set_config(&config, from_system_time(created))?;
            if slot.file {
                self.inner
                    .catalog_append(&[catalog::Change::Put(slot.entry())])?;
            }
            self.clear_capture();
            self.inner.maybe_compact();
        }
        Ok(s.info())
    }

    async fn stream_info(&self, name: &str) -> Result<StreamInfo> {
        Ok(self.stream(name)?.info())
    }

    async fn list_streams(&self) -> Result<Vec<StreamInfo>> {
        self.check_open()?;
        self.inner.reconcile()?;
        let now = self.inner.env.clock.now_ns();
        let slots = self.inner.slots();
        // A stream not open is listed from its summary while the catalog
        // vouches for it (invariant 34: its config decoded on every core);
        // else it is recovered.
        let trusted = crate::parallel::map(&slots, |slot| {
            slot.get()
                .is_none()
                .then(|| slot.trusted_info(now))
                .flatten()
        });
        let mut out = Vec::with_capacity(slots.len());
        for (slot, trusted) in slots.iter().zip(trusted) {
            if let Some(info) = trusted {
                out.push(info);
                continue;
            }
            match self.inner.open_slot(slot) {
                Ok(s) => out.push(s.info()),
                Err(Error::StreamUnavailable { .. } | Error::StreamNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    async fn delete_stream(&self, name: &str) -> Result<()> {
        self.check_open()?;
        self.check_writable("delete_stream")?;
        let found = self.inner.find_slot(name)?;
        if self.check_available(name).is_err() {
            return self.delete_unavailable_stream(name);
        }
        let Some(slot) = found else {
            // The error a lookup gives (a name no stream can have, ...).
            return self.stream(name).map(|_| ());
        };
        let _admin = self.inner.admin.lock().unwrap_or_else(|e| e.into_inner());
        // No recovery of it starts or runs while it goes.
        let _one = slot.opening();
        {
            let mut streams = self
                .inner
                .streams
                .write()
                .unwrap_or_else(|e| e.into_inner());
            if !streams.get(name).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                return Err(Error::StreamNotFound {
                    name: name.to_owned(),
                });
            }
            streams.remove(name);
        }
        self.clear_capture();
        // A stream never opened in this store is deleted without recovering it.
        let (storage, dir) = match slot.get() {
            Some(s) => {
                s.mark_closed();
                (s.env.storage.clone(), s.dir.clone())
            }
            None => (
                self.inner.env.storage.clone(),
                self.inner.streams_dir.join(name),
            ),
        };
        let parent = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        let tomb = parent.join(format!(".deleted-{name}-{}", now_ns()));
        // Rename first so a crash never leaves a half-deleted stream.
        match storage.rename(&dir, &tomb) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && slot.get().is_none() => {
                // Its create or delete never finished: it was not there.
                let _ = self
                    .inner
                    .catalog_append(&[catalog::Change::Delete(name.to_owned())]);
                return Err(Error::StreamNotFound {
                    name: name.to_owned(),
                });
            }
            r => r.map_err(io(format!("deleting stream {name}")))?,
        }
        // IMPORTANT: fsync the directory after rename.
        storage
            .sync_dir(&parent)
            .map_err(io(format!("deleting stream {name}")))?;
        if slot.file {
            // Invariant 34: after the rename (a crash in between leaves an
            // entry without a directory: absent).
            self.inner
                .catalog_append(&[catalog::Change::Delete(name.to_owned())])?;
        }
        if let Err(e) = storage.remove_dir_all(&tomb) {
            tracing::warn!(stream = name, error = %e, "could not remove deleted stream files; removed at next open");
        }
        self.inner.maybe_compact();
        Ok(())
    }

    async fn purge_stream(&self, name: &str, request: PurgeRequest) -> Result<u64> {
        let s = self.stream(name)?;
        self.check_writable("purge_stream")?;
        s.stream.purge(&request).await
    }

    async fn publish(&self, message: Message) -> Result<Option<PublishAck>> {
        self.check_open()?;
        // A publish that needs no fsync completes without waiting: spend the
        // task's cooperative budget so a tight publish loop still lets other
        // tasks (a close, a reader) run on its worker.
        tokio::task::consume_budget().await;
        Ok(self.publish_inner(&message).await?.0)
    }

    async fn publish_batch(
        &self,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Option<PublishAck>>>> {
        self.publish_batch_as(None, messages).await
    }

    async fn deliver_to(&self, to: &str, message: Message) -> Result<usize> {
        self.check_open()?;
        validate_publish_fast(to)?;
        Ok(self.inner.router.deliver_on(to, &message, None))
    }

    async fn publish_batch_from(
        &self,
        origin: Origin,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Option<PublishAck>>>> {
        self.publish_batch_as(Some(origin), messages).await
    }

    async fn subscribe(&self, filter: &str, queue_group: Option<&str>) -> Result<Subscription> {
        self.check_open()?;
        self.inner.router.subscribe(filter, queue_group, None)
    }

    async fn subscribe_from(
        &self,
        origin: Origin,
        filter: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription> {
        self.check_open()?;
        self.inner
            .router
            .subscribe(filter, queue_group, Some(origin))
    }

    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        self.check_open()?;
        subject::validate_publish(&message.subject)?;
        let inbox = self.new_inbox();
        let mut sub = self.inner.router.subscribe(&inbox, None, None)?;
        let subj = message.subject.clone();
        let message = message.with_reply(inbox.clone());
        let (ack, delivered) = self.publish_inner(&message).await?;
        if delivered == 0 {
            return match ack {
                // As JetStream: a captured request is answered by the stream's ack.
                Some(ack) => Ok(Message::new(
                    inbox,
                    serde_json::to_vec(&ack).unwrap_or_default(),
                )),
                None => Err(Error::NoResponders { subject: subj }),
            };
        }
        match tokio::time::timeout(timeout, sub.next()).await {
            Ok(Some(m)) => Ok(m),
            Ok(None) => Err(Error::Closed),
            Err(_) => Err(Error::Timeout(timeout)),
        }
    }

    async fn get_message(&self, stream: &str, seq: u64) -> Result<StoredMessage> {
        self.stream(stream)?.get(seq)
    }

    async fn get_last_message(&self, stream: &str, subject: &str) -> Result<StoredMessage> {
        subject::validate_publish(subject)?;
        self.stream(stream)?.get_last(subject)
    }

    async fn delete_message(&self, stream: &str, seq: u64) -> Result<()> {
        let s = self.stream(stream)?;
        self.check_writable("delete_message")?;
        s.stream.delete_message(seq).await
    }

    async fn replay(&self, stream: &str, options: ReplayOptions) -> Result<Replay> {
        crate::replay::start(self.stream(stream)?.stream.clone(), options)
    }

    async fn create_consumer(&self, stream: &str, config: ConsumerConfig) -> Result<ConsumerInfo> {
        config.validate()?;
        let s = self.stream(stream)?;
        self.check_writable("create_consumer")?;
        if let Some(name) = &config.durable_name {
            s.check_consumer(name)?;
        }
        s.create_consumer(config)
    }

    async fn update_consumer(&self, stream: &str, config: ConsumerConfig) -> Result<ConsumerInfo> {
        config.validate()?;
        let s = self.stream(stream)?;
        self.check_writable("update_consumer")?;
        if let Some(name) = &config.durable_name {
            s.check_consumer(name)?;
        }
        s.update_consumer(config)
    }

    async fn consumer_info(&self, stream: &str, name: &str) -> Result<ConsumerInfo> {
        self.consumer_stream(stream, name)?.consumer_info(name)
    }

    async fn list_consumers(&self, stream: &str) -> Result<Vec<ConsumerInfo>> {
        self.stream(stream)?.list_consumers()
    }

    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<()> {
        let s = self.stream(stream)?;
        self.check_writable("delete_consumer")?;
        s.delete_consumer(name)
    }

    async fn fetch(
        &self,
        stream: &str,
        consumer: &str,
        batch: usize,
        expires: Duration,
    ) -> Result<Vec<Delivery>> {
        let s = self.consumer_stream(stream, consumer)?;
        self.check_writable("fetch")?;
        let r = s.fetch(consumer, batch, expires).await;
        // A fetch waiting while the store closed ends with `Closed`.
        if r.is_err() && self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        r
    }

    async fn ack(&self, delivery: &AckRef, kind: AckKind) -> Result<()> {
        self.check_open()?;
        self.check_writable("ack")?;
        match self.consumer_stream(&delivery.stream, &delivery.consumer) {
            Ok(s) => s.ack(delivery, kind),
            Err(Error::StreamNotFound { .. }) => {
                tracing::debug!(stream = %delivery.stream, "ack for an unknown stream ignored");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn ack_confirmed(&self, delivery: &AckRef, kind: AckKind) -> Result<()> {
        self.check_open()?;
        self.check_writable("ack_confirmed")?;
        match self.consumer_stream(&delivery.stream, &delivery.consumer) {
            Ok(s) => s.ack_confirmed(delivery, kind),
            Err(Error::StreamNotFound { .. }) => Err(Error::ConsumerNotFound {
                stream: delivery.stream.to_string(),
                name: delivery.consumer.to_string(),
            }),
            Err(e) => Err(e),
        }
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || inner.shutdown(true)).await {
            Ok(r) => r,
            Err(e) => Err(Error::internal(format!("close task failed: {e}"))),
        }
    }

    async fn ping(&self) -> Result<Duration> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        Ok(Duration::ZERO)
    }

    fn has_subscribers(&self, subject: &str) -> bool {
        self.inner.router.has_interest(subject)
    }

    fn status(&self) -> ConnectionStatus {
        if self.inner.closed.load(Ordering::Acquire) {
            ConnectionStatus::Closed
        } else {
            ConnectionStatus::Connected
        }
    }

    fn events(&self) -> Option<broadcast::Receiver<Event>> {
        Some(self.inner.events.subscribe())
    }

    fn unavailable(&self) -> Vec<durabus_core::Unavailable> {
        Store::unavailable(self)
    }
}

/// Whether an error opening one stream leaves the others usable: its config
/// or consumers directory is missing, unreadable or damaged, or (read-only)
/// it would need a write. Anything else (a damaged segment: rule 5, a newer
/// format) fails the whole open, as before.
fn stream_local(e: &Error) -> bool {
    matches!(
        e,
        Error::Corrupt { segment, .. } if segment.file_name().is_some_and(|n| n == "config.json")
    ) || matches!(e, Error::Io { context, .. } if context.ends_with("config.json") || context.ends_with(crate::consumer::CONSUMERS_DIR))
        || matches!(e, Error::ReadOnly { .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_subject_validation_agrees_with_core() {
        for s in [
            "a", "a.b", "a.b.c", "", ".", "a.", ".a", "a..b", "a.*", "a.>", "a b", "a\tb", "a*b",
            "x>y", "é.b", "a.\u{a0}", "ok-1_2.x", "a.b.", "\u{7f}",
        ] {
            assert_eq!(
                validate_publish_fast(s).is_ok(),
                subject::validate_publish(s).is_ok(),
                "{s:?}"
            );
        }
        let long = "a".repeat(subject::MAX_SUBJECT_LEN + 1);
        assert!(validate_publish_fast(&long).is_err());
    }
}
