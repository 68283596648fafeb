//! Consumers of a stream (docs/design.md, "Consumers" and invariants 17-21):
//! [`StreamConsumers`], a stream with its consumers, which the store holds.
//! Its parts, one job each: `file` (the consumer state file format),
//! `pending` (the pending set), `state` (one consumer's live state),
//! `persist` (loading and writing state files), `admin` (create, update,
//! delete, info), `fetch`, `ack` and `retention` (interest and work-queue
//! retention).
//!
//! Durable consumers of a limits stream are loaded on first use
//! (docs/design.md, "Consumers loaded on first use"): recovery lists
//! `consumers/` and keeps the names ([`ConsumerMap::unloaded`]); a consumer
//! is loaded, under the consumer map's lock and so exactly once, by the
//! first operation that names it ([`StreamConsumers::lock_with`]), and
//! all of them by an operation over every consumer
//! ([`StreamConsumers::lock_all`]). Interest and work-queue streams load
//! every consumer at recovery (retention needs each one's position).
//!
//! Lock order: a stream's consumer map, then its `Inner` (never the other
//! way round). The consumer-file I/O lock is taken before either. The
//! `broken` map is taken last (after the consumer map, never before it).

mod ack;
mod admin;
mod fetch;
mod file;
mod journal;
mod pending;
mod persist;
mod retention;
mod state;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use durabus_core::{Error, Message, PublishAck, Result, RetentionPolicy, StreamConfig, StreamInfo};

use crate::stream::{now_ns, Inner, Stream};

use state::Consumer;

pub(crate) use file::{ConsumerFile, DecodedConsumer};
#[cfg(any(test, feature = "internals"))]
pub(crate) use file::{Pending, CONSUMER_VERSION};
pub(crate) use journal::{decode as decode_journal, JOURNALS_DIR};
pub(crate) use persist::CONSUMERS_DIR;

/// A stream's consumers in memory: those loaded, and the durable ones
/// found in `consumers/` at recovery and not loaded yet. A name is in at
/// most one of `loaded`, `unloaded` and [`ConsumerSet::broken`].
#[derive(Debug, Default)]
pub(crate) struct ConsumerMap {
    /// Consumers in memory, by name.
    pub(super) loaded: BTreeMap<String, Consumer>,
    /// Durable consumers whose files were not read yet (limits streams):
    /// nothing of them is in memory, and nothing is written for them.
    pub(super) unloaded: BTreeSet<String>,
    /// `consumers/` not listed yet: the durable consumers the catalog's
    /// trusted summary counts there (`unloaded` is then empty). Listed by
    /// the first use of any consumer ([`StreamConsumers::lock_listed`]).
    pub(super) unlisted: Option<u64>,
}

/// A stream's consumers.
#[derive(Debug)]
pub(crate) struct ConsumerSet {
    map: Mutex<ConsumerMap>,
    /// Serialises consumer-file writes so a newer state is never overwritten
    /// by an older one.
    io: Mutex<()>,
    counter: AtomicU64,
    ack_retention: AtomicBool,
    /// Durable consumers whose state file could not be loaded, with why:
    /// they refuse every operation but delete, and hold retention.
    broken: Mutex<BTreeMap<String, String>>,
    /// When the stream was opened: where the inactivity clock of a
    /// consumer loaded later starts (it was idle, unloaded, since then).
    opened: Instant,
}

impl ConsumerSet {
    fn new() -> ConsumerSet {
        ConsumerSet {
            map: Mutex::default(),
            io: Mutex::default(),
            counter: AtomicU64::default(),
            ack_retention: AtomicBool::default(),
            broken: Mutex::default(),
            opened: Instant::now(),
        }
    }

    /// The consumer map as it is: a consumer not loaded yet stays so (see
    /// [`StreamConsumers::lock_with`] and [`StreamConsumers::lock_all`]).
    fn lock(&self) -> MutexGuard<'_, ConsumerMap> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn io(&self) -> MutexGuard<'_, ()> {
        self.io.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Consumers, loaded or not (nothing is loaded, or listed, to count
    /// them).
    pub(crate) fn count(&self) -> u64 {
        let (durable, ephemeral) = self.counts();
        durable + ephemeral
    }

    /// (durable, ephemeral) consumers. One not loaded yet is durable: only
    /// durable consumers have files to load.
    pub(crate) fn counts(&self) -> (u64, u64) {
        let map = self.lock();
        let durable = map.loaded.values().filter(|c| c.is_durable()).count() as u64;
        let ephemeral = map.loaded.len() as u64 - durable;
        let unread = map.unloaded.len() as u64 + map.unlisted.unwrap_or(0);
        (durable + unread, ephemeral)
    }

    pub(crate) fn broken(&self) -> MutexGuard<'_, BTreeMap<String, String>> {
        self.broken.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Consumers found unloadable so far, with why. Loads nothing: a
    /// consumer not loaded yet is not known to be unavailable (for every
    /// one, [`StreamConsumers::unavailable_consumers`]).
    pub(crate) fn unavailable(&self) -> Vec<(String, String)> {
        self.broken()
            .iter()
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect()
    }

    /// Whether acknowledgements remove messages now: interest or work-queue
    /// retention, and every consumer file loaded (invariant 21: a consumer
    /// that could not be loaded may still need any message, so nothing goes).
    pub(crate) fn retains_on_ack(&self) -> bool {
        self.ack_retention.load(Ordering::Acquire) && self.broken().is_empty()
    }

    /// Whether the stream removes acknowledged messages (interest or
    /// work-queue retention).
    pub(crate) fn set_ack_retention(&self, on: bool) {
        self.ack_retention.store(on, Ordering::Release);
    }

    fn ephemeral_name(&self) -> String {
        const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // A mix of time, pid and a counter: unique within the store.
        let mut x = (now_ns() as u64) ^ (u64::from(std::process::id()) << 32) ^ n.rotate_left(48);
        x = x.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut s = String::with_capacity(8);
        for _ in 0..8 {
            s.push(ALPHABET[(x % 62) as usize] as char);
            x /= 62;
        }
        s
    }
}

/// A stream and its consumers: what the store holds. It derefs to the
/// [`Stream`], whose operations are called on it directly; the stream
/// itself knows nothing of consumers.
#[derive(Debug)]
pub(crate) struct StreamConsumers {
    /// The stream.
    pub(crate) stream: Arc<Stream>,
    /// Its consumers. Lock order: consumers, then the stream's `Inner`.
    pub(crate) consumers: ConsumerSet,
}

impl std::ops::Deref for StreamConsumers {
    type Target = Stream;

    fn deref(&self) -> &Stream {
        &self.stream
    }
}

impl StreamConsumers {
    /// `stream` with no consumers yet (they are loaded or created later).
    pub(crate) fn new(stream: Arc<Stream>) -> Arc<StreamConsumers> {
        let consumers = ConsumerSet::new();
        consumers.set_ack_retention(stream.config().retention != RetentionPolicy::Limits);
        Arc::new(StreamConsumers { stream, consumers })
    }

    /// The stream's configuration and state, with its consumer count.
    pub(crate) fn info(&self) -> StreamInfo {
        let consumer_count = self.consumers.count();
        let mut info = self.stream.info();
        info.state.consumer_count = consumer_count;
        info
    }

    /// Changes the stream's limits and options (the caller validated the
    /// config); acknowledgements remove messages from now on if its
    /// retention says so. Interest and work-queue retention need every
    /// consumer's position: they are all loaded first.
    pub(crate) fn update(&self, config: StreamConfig) -> Result<()> {
        if config.retention != RetentionPolicy::Limits {
            drop(self.lock_all());
        }
        self.stream.update(config, |c| {
            self.consumers
                .set_ack_retention(c.retention != RetentionPolicy::Limits);
        })
    }

    /// Publishes many messages under one lock with one write; on an
    /// interest stream, each message no consumer's filter matches is
    /// dropped right after its append.
    pub(crate) async fn publish_batch(&self, msgs: &[&Message]) -> Vec<Result<PublishAck>> {
        let (out, gen) = {
            // Lock order: consumer map, then stream state.
            let interest = self.interest_consumers();
            match &interest {
                Some(map) => {
                    let mut drop = |g: &mut Inner, seq: u64, subj: &str| {
                        self.drop_unmatched(&map.loaded, g, seq, subj);
                    };
                    self.stream.append_batch(msgs, Some(&mut drop))
                }
                None => self.stream.append_batch(msgs, None),
            }
        };
        self.stream.ack_batch(out, gen).await
    }
}

impl StreamConsumers {
    /// The consumer map, with `name` loaded first if it was not yet (its
    /// first use). The load runs under the map's lock, so a consumer is
    /// loaded once however many threads use it first, and a delete (which
    /// takes the name out under the same lock) cannot be undone by a load.
    /// A consumer that does not load is [`ConsumerSet::broken`].
    pub(super) fn lock_with(&self, name: &str) -> MutexGuard<'_, ConsumerMap> {
        let mut map = self.lock_listed();
        if map.unloaded.remove(name) {
            self.load_into(&mut map, name);
        }
        map
    }

    /// The consumer map with every consumer loaded (what lists or checks
    /// all of them uses).
    pub(super) fn lock_all(&self) -> MutexGuard<'_, ConsumerMap> {
        let mut map = self.lock_listed();
        for name in std::mem::take(&mut map.unloaded) {
            self.load_into(&mut map, &name);
        }
        map
    }

    /// Every consumer that could not be loaded, with why, every consumer
    /// not loaded yet being loaded first (`Store::unavailable` and
    /// `Store::recovery_report` promise a full list).
    pub(crate) fn unavailable_consumers(&self) -> Vec<(String, String)> {
        drop(self.lock_all());
        self.consumers.unavailable()
    }

    /// Loads `name` and makes `ConsumerUnavailable` of a consumer that did
    /// not load (at open or now).
    pub(crate) fn check_consumer(&self, name: &str) -> Result<()> {
        drop(self.lock_with(name));
        match self.consumers.broken().get(name) {
            Some(reason) => Err(self.unavailable_error(name, reason)),
            None => Ok(()),
        }
    }

    fn unavailable_error(&self, name: &str, reason: &str) -> Error {
        Error::ConsumerUnavailable {
            stream: self.name.clone(),
            name: name.to_owned(),
            reason: reason.to_owned(),
        }
    }

    /// The error for `name` missing from the loaded consumers (with the
    /// map locked): `ConsumerUnavailable` when its file did not load, else
    /// as [`consumer_not_found`].
    pub(super) fn missing(&self, name: &str) -> Error {
        match self.consumers.broken().get(name) {
            Some(reason) => self.unavailable_error(name, reason),
            None => consumer_not_found(&self.name, name),
        }
    }
}

/// `ConsumerNotFound`, or for a name no consumer can have the error NATS
/// gives (it checks before asking the server).
fn consumer_not_found(stream: &str, name: &str) -> Error {
    match durabus_core::validate_consumer_name(name) {
        Err(e) => e,
        Ok(()) => Error::ConsumerNotFound {
            stream: stream.to_owned(),
            name: name.to_owned(),
        },
    }
}
