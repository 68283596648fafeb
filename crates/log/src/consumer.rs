//! Consumers of a stream (docs/design.md, "Consumers" and invariants 17-21):
//! state, deliver policies, fetch, ack / nak / term / in-progress,
//! redelivery, and the consumer state file.
//!
//! Lock order: a stream's consumer map, then its `Inner` (never the other
//! way round). The consumer-file I/O lock is taken before either.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use durabus_core::{
    subject, AckKind, AckPolicy, AckRef, ConsumerConfig, ConsumerInfo, DeliverPolicy, Delivery,
    Error, Result, RetentionPolicy, SequencePair, StoredMessage,
};
use serde::{Deserialize, Serialize};

use crate::replay::{Cursor, Progress};
use crate::stream::{from_system_time, now_ns, to_system_time, Inner, Stream};

/// Magic of consumer state files.
pub(crate) const CONSUMER_MAGIC: &[u8; 8] = b"DBUSCON\0";
/// Consumer state file format version.
pub(crate) const CONSUMER_VERSION: u32 = 1;
/// Directory of consumer files inside a stream directory.
pub(crate) const CONSUMERS_DIR: &str = "consumers";
/// Changed durable consumer state is written at most this often (and on
/// create, update, delete and clean close): the kill -9 bound of invariant 18.
pub(crate) const PERSIST_INTERVAL: Duration = Duration::from_secs(1);

/// One unacknowledged delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pending {
    /// Consumer sequence of its last delivery.
    pub(crate) cseq: u64,
    /// How many times it was delivered.
    pub(crate) count: u64,
    /// Unix ns when it is due for redelivery.
    pub(crate) deadline_ns: i64,
}

/// The body of a consumer state file (JSON inside the frame).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConsumerFile {
    pub(crate) name: String,
    pub(crate) config: ConsumerConfig,
    pub(crate) created_ns: i64,
    pub(crate) delivered: SequencePair,
    /// The ack floor, moved as nats-server moves it (see `Consumer::on_settled`).
    #[serde(default)]
    pub(crate) ack_floor: SequencePair,
    /// The next stream sequence to look at for new messages.
    pub(crate) next_seq: u64,
    /// `last_per_subject`: sequences still to deliver before `next_seq`.
    pub(crate) start_queue: Vec<u64>,
    /// stream seq -> pending delivery, in stream-seq order.
    pub(crate) pending: Vec<(u64, Pending)>,
}

/// What decoding a consumer file found (never a panic).
#[derive(Debug)]
pub(crate) enum DecodedConsumer {
    Ok(Box<ConsumerFile>),
    Newer(u32),
    Corrupt(String),
}

impl ConsumerFile {
    /// Magic, version u32 LE, body length u32 LE, JSON body, CRC32C of all
    /// before it.
    pub(crate) fn encode(&self) -> Result<Vec<u8>> {
        let body = serde_json::to_vec(self)
            .map_err(|e| Error::internal(format!("encoding consumer state: {e}")))?;
        let len = u32::try_from(body.len())
            .map_err(|_| Error::internal("consumer state over 4 GiB".into()))?;
        let mut out = Vec::with_capacity(body.len() + 20);
        out.extend_from_slice(CONSUMER_MAGIC);
        out.extend_from_slice(&CONSUMER_VERSION.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    pub(crate) fn decode(b: &[u8]) -> DecodedConsumer {
        if b.len() < 20 {
            return DecodedConsumer::Corrupt(format!("{} bytes, shorter than a header", b.len()));
        }
        if &b[..8] != CONSUMER_MAGIC {
            return DecodedConsumer::Corrupt("bad magic".into());
        }
        let word = |at: usize| {
            let mut w = [0u8; 4];
            w.copy_from_slice(&b[at..at + 4]);
            u32::from_le_bytes(w)
        };
        let len = word(12) as usize;
        if b.len() != 20 + len {
            return DecodedConsumer::Corrupt(format!(
                "length field says {len} body bytes, the file holds {}",
                b.len() - 20
            ));
        }
        if crc32c::crc32c(&b[..16 + len]) != word(16 + len) {
            return DecodedConsumer::Corrupt("CRC mismatch".into());
        }
        let version = word(8);
        if version != CONSUMER_VERSION {
            return DecodedConsumer::Newer(version);
        }
        match serde_json::from_slice::<ConsumerFile>(&b[16..16 + len]) {
            Ok(f) => DecodedConsumer::Ok(Box::new(f)),
            Err(e) => DecodedConsumer::Corrupt(format!("state is not valid JSON: {e}")),
        }
    }
}

/// A consumer's live state.
#[derive(Debug)]
pub(crate) struct Consumer {
    state: ConsumerFile,
    pending: PendingSet,
    start_queue: VecDeque<u64>,
    last_active: Instant,
    dirty: bool,
    last_persist: Instant,
    /// Reads new messages (not persisted; rebuilt at `next_seq`).
    cursor: Option<Cursor>,
    /// Fetches in progress (they keep the consumer active).
    waiting: u32,
    /// `num_pending` of a filtered consumer, kept up to date incrementally.
    pending_cache: Option<PendingCache>,
}

/// Matching messages not yet delivered among `[base, last]`, valid while
/// `live` (the live messages in `[base, last]`) shows no removal.
#[derive(Debug, Clone, Copy)]
struct PendingCache {
    base: u64,
    last: u64,
    live: u64,
    count: u64,
}

/// Live messages at or above `from`.
fn live_from(g: &Inner, from: u64) -> u64 {
    let f = from.max(g.first_seq);
    if f > g.last_seq {
        return 0;
    }
    (g.last_seq - f + 1).saturating_sub(g.deleted.count_in(f, g.last_seq))
}

impl Consumer {
    fn from_file(f: ConsumerFile) -> Consumer {
        let pending = f.pending.iter().copied().collect();
        let start_queue = f.start_queue.iter().copied().collect();
        Consumer {
            state: ConsumerFile {
                pending: Vec::new(),
                start_queue: Vec::new(),
                ..f
            },
            pending,
            start_queue,
            last_active: Instant::now(),
            dirty: false,
            last_persist: Instant::now(),
            cursor: None,
            pending_cache: None,
            waiting: 0,
        }
    }

    fn to_file(&self) -> ConsumerFile {
        ConsumerFile {
            pending: self.pending.iter().map(|(s, p)| (*s, *p)).collect(),
            start_queue: self.start_queue.iter().copied().collect(),
            ..self.state.clone()
        }
    }

    fn config(&self) -> &ConsumerConfig {
        &self.state.config
    }

    fn acks(&self) -> bool {
        self.config().ack_policy != AckPolicy::None
    }

    fn is_durable(&self) -> bool {
        self.config().durable_name.is_some()
    }

    /// The wait before redelivering after delivery number `count`.
    fn wait_after(&self, count: u64) -> Duration {
        let cfg = self.config();
        match cfg.backoff.len() {
            0 => cfg.ack_wait,
            n => {
                let i = usize::try_from(count.saturating_sub(1))
                    .unwrap_or(usize::MAX)
                    .min(n - 1);
                cfg.backoff[i]
            }
        }
    }

    fn ack_floor(&self) -> SequencePair {
        if self.acks() {
            self.state.ack_floor
        } else {
            self.state.delivered
        }
    }

    /// Moves the ack floor after delivery `cseq` of stream seq `seq` was
    /// settled (ack or term), as nats-server 2.9 does: to `delivered` when
    /// nothing is pending; else, when it was the delivery right above the
    /// floor, to it, then up to just below the next pending stream seq.
    fn on_settled(&mut self, seq: u64, cseq: u64) {
        if self.pending.len() == 0 {
            self.state.ack_floor = self.state.delivered;
        } else if cseq == self.state.ack_floor.consumer_seq + 1 {
            self.state.ack_floor = SequencePair {
                consumer_seq: cseq,
                stream_seq: seq,
            };
            if let Some((ss, p)) = self.pending.first_above(seq) {
                self.state.ack_floor = SequencePair {
                    consumer_seq: p.cseq.saturating_sub(1),
                    stream_seq: ss.saturating_sub(1),
                };
            }
        }
    }

    fn matches(&self, subj: &str) -> bool {
        let f = &self.config().filter_subjects;
        f.is_empty() || f.iter().any(|f| subject::matches(f, subj))
    }

    /// Drops pending entries whose message is gone (purge, delete, limits).
    fn prune(&mut self, g: &Inner) {
        let before = self.pending.len();
        self.pending.retain(|s| g.is_live(s));
        self.start_queue.retain(|s| g.is_live(*s));
        if self.pending.len() != before {
            // As a purge moves nats-server's floor: past what vanished.
            self.state.ack_floor = match self.pending.iter().next() {
                None => self.state.delivered,
                Some((s, p)) => SequencePair {
                    consumer_seq: p.cseq.saturating_sub(1),
                    stream_seq: s.saturating_sub(1),
                },
            };
            self.dirty = true;
        }
    }
}

/// The pending map by stream seq, with its redelivery queue ordered by due
/// time (kept in step by every change).
#[derive(Debug, Default)]
struct PendingSet {
    by_seq: BTreeMap<u64, Pending>,
    by_due: BTreeSet<(i64, u64)>,
}

impl FromIterator<(u64, Pending)> for PendingSet {
    fn from_iter<I: IntoIterator<Item = (u64, Pending)>>(iter: I) -> Self {
        let mut s = PendingSet::default();
        for (seq, p) in iter {
            s.insert(seq, p);
        }
        s
    }
}

impl PendingSet {
    fn len(&self) -> usize {
        self.by_seq.len()
    }

    fn iter(&self) -> impl Iterator<Item = (&u64, &Pending)> {
        self.by_seq.iter()
    }

    fn values(&self) -> impl Iterator<Item = &Pending> {
        self.by_seq.values()
    }

    fn get(&self, seq: &u64) -> Option<&Pending> {
        self.by_seq.get(seq)
    }

    fn contains_key(&self, seq: &u64) -> bool {
        self.by_seq.contains_key(seq)
    }

    fn insert(&mut self, seq: u64, p: Pending) {
        if let Some(old) = self.by_seq.insert(seq, p) {
            self.by_due.remove(&(old.deadline_ns, seq));
        }
        self.by_due.insert((p.deadline_ns, seq));
    }

    fn remove(&mut self, seq: &u64) -> Option<Pending> {
        let old = self.by_seq.remove(seq)?;
        self.by_due.remove(&(old.deadline_ns, *seq));
        Some(old)
    }

    fn set_deadline(&mut self, seq: u64, deadline_ns: i64) {
        if let Some(mut p) = self.by_seq.get(&seq).copied() {
            p.deadline_ns = deadline_ns;
            self.insert(seq, p);
        }
    }

    fn retain(&mut self, mut keep: impl FnMut(u64) -> bool) {
        let gone: Vec<u64> = self.by_seq.keys().copied().filter(|s| !keep(*s)).collect();
        for s in gone {
            self.remove(&s);
        }
    }

    /// The first entry above stream seq `seq`.
    fn first_above(&self, seq: u64) -> Option<(u64, Pending)> {
        self.by_seq
            .range(seq.saturating_add(1)..)
            .next()
            .map(|(s, p)| (*s, *p))
    }

    /// Stream seqs in `range`, in order.
    fn seqs_in(&self, range: impl std::ops::RangeBounds<u64>) -> Vec<u64> {
        self.by_seq.range(range).map(|(s, _)| *s).collect()
    }

    /// Stream seqs due at `now`, in stream-seq order.
    fn due(&self, now: i64) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .by_due
            .range(..=(now, u64::MAX))
            .map(|(_, s)| *s)
            .collect();
        v.sort_unstable();
        v
    }

    /// The earliest due time.
    fn next_due(&self) -> Option<i64> {
        self.by_due.first().map(|(d, _)| *d)
    }
}

/// Counts a fetch in progress on a consumer for as long as it lives (also
/// when its future is dropped), then marks the consumer active.
struct Waiting<'a> {
    stream: &'a Stream,
    consumer: &'a str,
}

impl<'a> Waiting<'a> {
    fn new(stream: &'a Stream, consumer: &'a str) -> Waiting<'a> {
        if let Some(c) = stream.consumers.lock().get_mut(consumer) {
            c.waiting += 1;
        }
        Waiting { stream, consumer }
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.stream.consumers.lock().get_mut(self.consumer) {
            c.waiting = c.waiting.saturating_sub(1);
            c.last_active = Instant::now();
        }
    }
}

fn ns_after(now: i64, d: Duration) -> i64 {
    now.saturating_add(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

/// A stream's consumers.
#[derive(Debug, Default)]
pub(crate) struct ConsumerSet {
    map: Mutex<BTreeMap<String, Consumer>>,
    /// Serialises consumer-file writes so a newer state is never overwritten
    /// by an older one.
    io: Mutex<()>,
    counter: AtomicU64,
    ack_retention: AtomicBool,
}

impl ConsumerSet {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<String, Consumer>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn io(&self) -> MutexGuard<'_, ()> {
        self.io.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn count(&self) -> u64 {
        self.lock().len() as u64
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

fn filters_overlap(a: &[String], b: &[String]) -> bool {
    if a.is_empty() || b.is_empty() {
        return true;
    }
    a.iter().any(|x| b.iter().any(|y| subject::overlaps(x, y)))
}

fn consumer_not_found(stream: &str, name: &str) -> Error {
    Error::ConsumerNotFound {
        stream: stream.to_owned(),
        name: name.to_owned(),
    }
}

fn corrupt_file(path: &Path, reason: impl Into<String>) -> Error {
    Error::Corrupt {
        segment: path.to_path_buf(),
        offset: 0,
        reason: reason.into(),
    }
}

impl Stream {
    fn consumer_dir(&self) -> PathBuf {
        self.dir.join(CONSUMERS_DIR)
    }

    fn persists(&self) -> bool {
        !self.env.storage.is_volatile()
    }

    /// Restores durable consumers from `consumers/` (invariant 19). A file
    /// that fails to decode fails the open, naming the file.
    pub(crate) fn load_consumers(&self) -> Result<()> {
        let st = self.storage();
        let dir = self.consumer_dir();
        if !st.exists(&dir).unwrap_or(false) {
            return Ok(());
        }
        let names = st
            .list_dir(&dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let mut map = self.consumers.lock();
        for n in names {
            let path = dir.join(&n);
            if n.ends_with(".tmp") {
                // An interrupted atomic write: the previous file is the truth.
                let _ = st.remove_file(&path);
                continue;
            }
            let bytes = st
                .read_file(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            let f = match ConsumerFile::decode(&bytes) {
                DecodedConsumer::Ok(f) => *f,
                DecodedConsumer::Newer(v) => {
                    return Err(Error::UnsupportedFormat {
                        path,
                        found: v,
                        supported: CONSUMER_VERSION,
                    })
                }
                DecodedConsumer::Corrupt(r) => {
                    return Err(corrupt_file(&path, format!("consumer state file: {r}")))
                }
            };
            if f.name != n {
                return Err(corrupt_file(
                    &path,
                    format!("consumer state file names consumer {:?}", f.name),
                ));
            }
            map.insert(n, Consumer::from_file(f));
        }
        Ok(())
    }

    /// Writes one consumer's file now (create, update).
    fn persist_one(&self, name: &str) -> Result<()> {
        if !self.persists() {
            return Ok(());
        }
        let _io = self.consumers.io();
        let bytes = {
            let mut map = self.consumers.lock();
            let Some(c) = map.get_mut(name) else {
                return Ok(());
            };
            if !c.is_durable() {
                return Ok(());
            }
            c.dirty = false;
            c.last_persist = Instant::now();
            c.to_file().encode()?
        };
        self.write_consumer_file(name, &bytes)
    }

    fn write_consumer_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let st = self.storage();
        let dir = self.consumer_dir();
        if !st.exists(&dir).unwrap_or(false) {
            st.create_dir_all(&dir)
                .and_then(|()| st.sync_dir(&self.dir))
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        // Invariant 6: write temp, fsync, rename, fsync the directory.
        crate::storage::write_atomic(st, &dir.join(name), bytes).map_err(|e| {
            Error::io(
                format!("writing consumer state {name:?} of stream {}", self.name),
                e,
            )
        })
    }

    /// Writes changed durable consumer state: all of it when `force` (clean
    /// close), else what changed at least [`PERSIST_INTERVAL`] ago.
    pub(crate) fn persist_consumers(&self, force: bool) -> Result<()> {
        if !self.persists() || self.is_closed() {
            return Ok(());
        }
        let _io = self.consumers.io();
        let due: Vec<(String, Vec<u8>)> = {
            let mut map = self.consumers.lock();
            let mut out = Vec::new();
            for (n, c) in map.iter_mut() {
                if c.is_durable()
                    && c.dirty
                    && (force || c.last_persist.elapsed() >= PERSIST_INTERVAL)
                {
                    c.dirty = false;
                    c.last_persist = Instant::now();
                    out.push((n.clone(), c.to_file().encode()?));
                }
            }
            out
        };
        let mut first = None;
        for (n, b) in due {
            if let Err(e) = self.write_consumer_file(&n, &b) {
                if let Some(c) = self.consumers.lock().get_mut(&n) {
                    c.dirty = true;
                }
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Maintenance: removes consumers inactive past their threshold, then
    /// writes changed state.
    pub(crate) fn consumer_tick(&self) {
        let expired: Vec<String> = self
            .consumers
            .lock()
            .iter()
            .filter(|(_, c)| {
                c.config()
                    .effective_inactive_threshold()
                    .is_some_and(|t| c.waiting == 0 && c.last_active.elapsed() >= t)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in expired {
            tracing::debug!(stream = %self.name, consumer = %n, "removing inactive consumer");
            if let Err(e) = self.delete_consumer(&n) {
                tracing::warn!(stream = %self.name, consumer = %n, error = %e, "could not remove inactive consumer");
            }
        }
        if let Err(e) = self.persist_consumers(false) {
            tracing::warn!(stream = %self.name, error = %e, "could not write consumer state");
        }
    }

    /// Where a new consumer starts: (next stream seq, last-per-subject queue).
    fn start_of(&self, cfg: &ConsumerConfig) -> Result<(u64, VecDeque<u64>)> {
        if let DeliverPolicy::ByStartTime(t) = cfg.deliver_policy {
            return Ok((self.seq_for_time(from_system_time(t))?, VecDeque::new()));
        }
        let mut g = self.lock();
        let st = self.storage();
        let filters = &cfg.filter_subjects;
        let matching = g.matching_subjects(filters);
        let next_new = g.last_seq + 1;
        Ok(match cfg.deliver_policy {
            DeliverPolicy::All => (g.first_seq.max(1), VecDeque::new()),
            DeliverPolicy::New => (next_new, VecDeque::new()),
            DeliverPolicy::ByStartSequence(n) => (n.max(1), VecDeque::new()),
            DeliverPolicy::Last if filters.is_empty() => {
                let s = if g.messages > 0 { g.last_seq } else { next_new };
                (s, VecDeque::new())
            }
            DeliverPolicy::Last => {
                let mut last = 0;
                for s in &matching {
                    last = last.max(g.subject_last_seq(st, s)?);
                }
                (if last == 0 { next_new } else { last }, VecDeque::new())
            }
            DeliverPolicy::LastPerSubject => (next_new, g.last_per_subject(st, &matching)?),
            DeliverPolicy::ByStartTime(_) => (next_new, VecDeque::new()),
        })
    }

    /// Checks a consumer against work-queue rules, with nats-server's
    /// messages. `except` is the consumer being updated.
    fn check_work_queue(
        &self,
        map: &BTreeMap<String, Consumer>,
        cfg: &ConsumerConfig,
        except: Option<&str>,
    ) -> Result<()> {
        if self.lock().config.retention != RetentionPolicy::WorkQueue {
            return Ok(());
        }
        if cfg.ack_policy != AckPolicy::Explicit {
            return Err(Error::invalid_config_text(
                "workqueue stream requires explicit ack".into(),
            ));
        }
        if cfg.deliver_policy != DeliverPolicy::All {
            return Err(Error::invalid_config_text(
                "consumer must be deliver all on workqueue stream".into(),
            ));
        }
        for (n, c) in map {
            if Some(n.as_str()) == except {
                continue;
            }
            if filters_overlap(&c.config().filter_subjects, &cfg.filter_subjects) {
                let msg = if cfg.filter_subjects.is_empty() || c.config().filter_subjects.is_empty()
                {
                    "multiple non-filtered consumers not allowed on workqueue stream"
                } else {
                    "filtered consumer not unique on workqueue stream"
                };
                return Err(Error::invalid_config_text(msg.into()));
            }
        }
        Ok(())
    }

    /// Creates a consumer if absent (the caller validated the config).
    pub(crate) fn create_consumer(&self, cfg: ConsumerConfig) -> Result<ConsumerInfo> {
        let name = {
            let mut map = self.consumers.lock();
            let name = match &cfg.durable_name {
                Some(n) => {
                    if let Some(c) = map.get_mut(n) {
                        if *c.config() == cfg {
                            c.last_active = Instant::now();
                            let n = n.clone();
                            drop(map);
                            return self.consumer_info(&n);
                        }
                        return Err(Error::ConsumerNameInUse {
                            stream: self.name.clone(),
                            name: n.clone(),
                        });
                    }
                    n.clone()
                }
                None => loop {
                    let n = self.consumers.ephemeral_name();
                    if !map.contains_key(&n) {
                        break n;
                    }
                },
            };
            self.check_work_queue(&map, &cfg, None)?;
            let (next_seq, start_queue) = self.start_of(&cfg)?;
            let first = start_queue.front().copied().unwrap_or(next_seq);
            let delivered = SequencePair {
                consumer_seq: 0,
                stream_seq: first.saturating_sub(1),
            };
            let mut c = Consumer::from_file(ConsumerFile {
                name: name.clone(),
                config: cfg,
                created_ns: now_ns(),
                delivered,
                ack_floor: delivered,
                next_seq,
                start_queue: Vec::new(),
                pending: Vec::new(),
            });
            c.start_queue = start_queue;
            map.insert(name.clone(), c);
            name
        };
        if self.consumers.ack_retention.load(Ordering::Acquire) {
            // The removals logged so far are durable before a consumer that
            // could claim the removed messages exists (invariant 21).
            self.sync_now();
        }
        if let Err(e) = self.persist_one(&name) {
            self.consumers.lock().remove(&name);
            return Err(e);
        }
        self.consumer_info(&name)
    }

    /// Changes a durable consumer (the caller validated the config).
    pub(crate) fn update_consumer(&self, cfg: ConsumerConfig) -> Result<ConsumerInfo> {
        let Some(name) = cfg.durable_name.clone() else {
            return Err(Error::invalid_config_text(
                "consumer update needs a durable name".into(),
            ));
        };
        {
            let mut map = self.consumers.lock();
            let Some(c) = map.get_mut(&name) else {
                return Err(consumer_not_found(&self.name, &name));
            };
            cfg.validate_update(c.config())?;
            if cfg.filter_subjects != c.config().filter_subjects {
                self.check_work_queue(&map, &cfg, Some(&name))?;
            }
            let Some(c) = map.get_mut(&name) else {
                return Err(consumer_not_found(&self.name, &name));
            };
            c.state.config = cfg;
            c.cursor = None;
            c.pending_cache = None;
            c.dirty = true;
        }
        self.persist_one(&name)?;
        self.notify_consumers();
        self.consumer_info(&name)
    }

    /// Deletes a consumer and its file.
    pub(crate) fn delete_consumer(&self, name: &str) -> Result<()> {
        let _io = self.consumers.io();
        let Some(c) = self.consumers.lock().remove(name) else {
            return Err(consumer_not_found(&self.name, name));
        };
        if c.is_durable() && self.persists() && !self.is_closed() {
            let st = self.storage();
            let path = self.consumer_dir().join(name);
            match st.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
            }
            st.sync_dir(&self.consumer_dir())
                .map_err(|e| Error::io(format!("syncing {}", self.consumer_dir().display()), e))?;
        }
        self.notify_consumers();
        // Messages only this consumer was holding may now go (interest).
        self.apply_retention();
        Ok(())
    }

    /// Wakes fetchers waiting on the stream (acks freed room, config changed).
    fn notify_consumers(&self) {
        self.tail_tx.send_modify(|_| {});
    }

    fn info_of(&self, g: &mut Inner, c: &mut Consumer) -> Result<ConsumerInfo> {
        c.prune(g);
        let num_pending = self.pending_count(g, c)?;
        Ok(ConsumerInfo {
            stream: self.name.clone(),
            name: c.state.name.clone(),
            config: c.config().clone(),
            created: to_system_time(c.state.created_ns),
            delivered: c.state.delivered,
            ack_floor: c.ack_floor(),
            num_pending,
            num_ack_pending: c.pending.len() as u64,
            num_redelivered: c.pending.values().filter(|p| p.count > 1).count() as u64,
        })
    }

    /// Messages matching the filter not delivered yet.
    fn pending_count(&self, g: &mut Inner, c: &mut Consumer) -> Result<u64> {
        let from = c.state.next_seq.max(g.first_seq);
        let queued = c.start_queue.len() as u64;
        if from > g.last_seq || g.messages == 0 {
            return Ok(queued);
        }
        let filters = c.config().filter_subjects.clone();
        if filters.is_empty() {
            return Ok(queued + live_from(g, from));
        }
        if from == g.first_seq {
            let n: u64 = g
                .subjects
                .iter()
                .filter(|(s, _)| filters.iter().any(|f| subject::matches(f, s)))
                .map(|(_, st)| st.count)
                .sum();
            return Ok(queued + n);
        }
        // A filtered consumer inside the stream: extend the cached count by
        // the appended tail when nothing at or above its base was removed
        // since; otherwise count once by a scan.
        let scan_from = match c.pending_cache {
            Some(pc) if live_from(g, pc.base) == pc.live + (g.last_seq - pc.last) => {
                (pc.last + 1).max(from)
            }
            _ => {
                c.pending_cache = None;
                from
            }
        };
        let mut n = 0;
        if scan_from <= g.last_seq {
            g.for_each_live(self.storage(), scan_from, &mut |r| {
                if filters.iter().any(|f| subject::matches(f, r.subject)) {
                    n += 1;
                }
                true
            })?;
        }
        let count = c.pending_cache.map_or(0, |pc| pc.count) + n;
        let base = from;
        c.pending_cache = Some(PendingCache {
            base,
            last: g.last_seq,
            live: live_from(g, base),
            count,
        });
        Ok(queued + count)
    }

    /// A consumer's configuration and state.
    pub(crate) fn consumer_info(&self, name: &str) -> Result<ConsumerInfo> {
        let mut map = self.consumers.lock();
        let c = map
            .get_mut(name)
            .ok_or_else(|| consumer_not_found(&self.name, name))?;
        let mut g = self.lock();
        self.info_of(&mut g, c)
    }

    /// Every consumer, ordered by name.
    pub(crate) fn list_consumers(&self) -> Result<Vec<ConsumerInfo>> {
        let mut map = self.consumers.lock();
        let mut g = self.lock();
        map.values_mut().map(|c| self.info_of(&mut g, c)).collect()
    }

    /// Up to `batch` deliveries now; with the unix ns of the next redelivery
    /// due (to wake a waiting fetch).
    fn fetch_now(&self, name: &str, batch: usize) -> Result<(Vec<Delivery>, Option<i64>)> {
        let mut map = self.consumers.lock();
        let c = map
            .get_mut(name)
            .ok_or_else(|| consumer_not_found(&self.name, name))?;
        c.last_active = Instant::now();
        let now = now_ns();
        {
            let g = self.lock();
            c.prune(&g);
        }
        let mut out: Vec<Delivery> =
            Vec::with_capacity(batch.min(durabus_core::FETCH_PREALLOCATED));
        let names: (Arc<str>, Arc<str>) = (Arc::from(self.name.as_str()), Arc::from(name));
        let mut new_after: Vec<bool> = Vec::new();
        // 1. Redeliveries that are due, in stream-seq order.
        let due = c.pending.due(now);
        for seq in due {
            if out.len() >= batch {
                break;
            }
            let Some(p) = c.pending.get(&seq).copied() else {
                continue;
            };
            if c.config().max_deliver.is_some_and(|m| p.count >= m) {
                // Invariant 20: max_deliver reached, it is never delivered
                // again and leaves pending (as nats-server 2.9).
                c.pending.remove(&seq);
                c.dirty = true;
                continue;
            }
            let msg = match self.get(seq) {
                Ok(m) => m,
                Err(Error::MessageNotFound { .. }) => {
                    c.pending.remove(&seq);
                    c.dirty = true;
                    continue;
                }
                Err(e) => return Err(e),
            };
            c.state.delivered.consumer_seq += 1;
            let count = p.count + 1;
            let cseq = c.state.delivered.consumer_seq;
            let deadline_ns = ns_after(now, c.wait_after(count));
            c.pending.insert(
                seq,
                Pending {
                    cseq,
                    count,
                    deadline_ns,
                },
            );
            c.dirty = true;
            out.push(Self::delivery(&names, msg, cseq, count));
            new_after.push(false);
        }
        // 2. New messages, while max_ack_pending leaves room.
        let room = |c: &Consumer| -> usize {
            match c.config().max_ack_pending {
                Some(m) if c.acks() => {
                    usize::try_from(m.saturating_sub(c.pending.len() as u64)).unwrap_or(usize::MAX)
                }
                _ => usize::MAX,
            }
        };
        let want = (batch - out.len()).min(room(c));
        let mut fresh: Vec<StoredMessage> = Vec::new();
        while fresh.len() < want {
            let Some(seq) = c.start_queue.pop_front() else {
                break;
            };
            c.dirty = true;
            match self.get(seq) {
                Ok(m) => fresh.push(m),
                Err(Error::MessageNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if fresh.len() < want {
            // Invariant 11: read through the consumer's own cursor, holding
            // the stream lock only to plan each chunk.
            let stale = c
                .cursor
                .as_ref()
                .is_some_and(|cur| cur.next_seq < c.state.next_seq && cur.queue.is_empty());
            if stale {
                c.cursor = None;
            }
            let filters = c.config().filter_subjects.clone();
            let from = c.state.next_seq;
            let cur = c.cursor.get_or_insert_with(|| Cursor::new(from, filters));
            let mut got: Vec<StoredMessage> = Vec::new();
            let mut caught_up = false;
            while !caught_up && fresh.len() + got.len() < want {
                let before = got.len();
                while fresh.len() + got.len() < want {
                    if let Some(m) = cur.queue.pop_front() {
                        if m.seq >= from {
                            got.push(m);
                        }
                        continue;
                    }
                    match cur.fill(self)? {
                        Progress::More => {}
                        Progress::CaughtUp => {
                            caught_up = true;
                            break;
                        }
                    }
                }
                if got.len() > before {
                    // Drop what was deleted or expired since it was read.
                    let g = self.lock();
                    let mut i = 0;
                    got.retain(|m| {
                        i += 1;
                        i <= before || g.is_live(m.seq)
                    });
                }
            }
            let scanned = cur.queue.is_empty().then_some(cur.next_seq);
            fresh.extend(got);
            if let Some(n) = scanned {
                if n > c.state.next_seq {
                    // Everything below `n` was read: skip it next time. As
                    // nats-server, `delivered` counts the skipped ones.
                    c.state.next_seq = n;
                    c.state.delivered.stream_seq = c.state.delivered.stream_seq.max(n - 1);
                    c.dirty = true;
                }
            }
        }
        for m in fresh {
            if let Some(pc) = &mut c.pending_cache {
                if m.seq >= pc.base && m.seq <= pc.last {
                    pc.count = pc.count.saturating_sub(1);
                }
            }
            c.state.delivered.consumer_seq += 1;
            let cseq = c.state.delivered.consumer_seq;
            c.state.delivered.stream_seq = c.state.delivered.stream_seq.max(m.seq);
            c.state.next_seq = c.state.next_seq.max(m.seq + 1);
            if c.acks() {
                let deadline_ns = ns_after(now, c.wait_after(1));
                c.pending.insert(
                    m.seq,
                    Pending {
                        cseq,
                        count: 1,
                        deadline_ns,
                    },
                );
            }
            c.dirty = true;
            out.push(Self::delivery(&names, m, cseq, 1));
            new_after.push(true);
        }
        // Delivery.pending: matching messages not delivered after each one.
        if !out.is_empty() {
            let mut g = self.lock();
            let mut left = self.pending_count(&mut g, c)?;
            for (d, fresh) in out.iter_mut().zip(new_after).rev() {
                d.pending = left;
                if fresh {
                    left += 1;
                }
            }
        }
        let next_due = c.pending.next_due();
        let settled: Vec<u64> = if c.acks() {
            Vec::new()
        } else {
            out.iter().map(|d| d.stream_seq()).collect()
        };
        drop(map);
        // Ack policy none: delivered means acknowledged.
        self.retain_settled(&settled);
        Ok((out, next_due))
    }

    /// A delivery of `message`; `names` are the stream's and consumer's.
    fn delivery(
        names: &(Arc<str>, Arc<str>),
        message: StoredMessage,
        cseq: u64,
        count: u64,
    ) -> Delivery {
        Delivery {
            ack: AckRef {
                stream: names.0.clone(),
                consumer: names.1.clone(),
                stream_seq: message.seq,
                consumer_seq: cseq,
                delivered: count,
                token: None,
            },
            message,
            pending: 0,
        }
    }

    /// Up to `batch` deliveries, waiting up to `expires` for the first.
    pub(crate) async fn fetch(
        self: &Arc<Self>,
        consumer: &str,
        batch: usize,
        expires: Duration,
    ) -> Result<Vec<Delivery>> {
        let until = tokio::time::Instant::now() + expires;
        let mut rx = self.tail_tx.subscribe();
        // A waiting fetch is activity: the consumer is not inactive meanwhile.
        let _waiting = Waiting::new(self, consumer);
        loop {
            if self.is_closed() {
                return Err(Error::StreamNotFound {
                    name: self.name.clone(),
                });
            }
            rx.borrow_and_update();
            let (out, next_due) = self.fetch_now(consumer, batch)?;
            if !out.is_empty() || batch == 0 {
                return Ok(out);
            }
            let now = tokio::time::Instant::now();
            if now >= until {
                return Ok(out);
            }
            let wake = match next_due {
                Some(d) => {
                    let in_ns = u64::try_from(d.saturating_sub(now_ns())).unwrap_or(0);
                    (now + Duration::from_nanos(in_ns)).min(until)
                }
                None => until,
            };
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        tokio::time::sleep_until(wake).await;
                    }
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    /// Settles a delivery. Unknown or already settled deliveries are a no-op.
    pub(crate) fn ack(&self, r: &AckRef, kind: AckKind) -> Result<()> {
        let mut removed: Vec<u64> = Vec::new();
        {
            let mut map = self.consumers.lock();
            let Some(c) = map.get_mut(&*r.consumer) else {
                tracing::debug!(stream = %self.name, consumer = %r.consumer, "ack for an unknown consumer ignored");
                return Ok(());
            };
            let seq = r.stream_seq;
            let now = now_ns();
            let current = c.pending.get(&seq).copied();
            match (kind, current) {
                (AckKind::Ack, _) if c.config().ack_policy == AckPolicy::All => {
                    // As nats-server: everything up to it, and the floor
                    // moves to it, unless it is at or below the floor.
                    let cseq = current.map_or(r.consumer_seq, |p| p.cseq);
                    let floor = c.state.ack_floor;
                    if seq > floor.stream_seq && cseq > floor.consumer_seq {
                        for s in c.pending.seqs_in(..=seq) {
                            c.pending.remove(&s);
                            removed.push(s);
                        }
                        c.state.ack_floor = SequencePair {
                            consumer_seq: cseq,
                            stream_seq: seq,
                        };
                    }
                }
                (AckKind::Ack | AckKind::Term, None) => {
                    tracing::debug!(stream = %self.name, consumer = %r.consumer, seq, "ack of a settled delivery ignored");
                    if c.pending.len() == 0 {
                        c.state.ack_floor = c.state.delivered;
                    }
                }
                (AckKind::Nak(_) | AckKind::InProgress, None) => {
                    tracing::debug!(stream = %self.name, consumer = %r.consumer, seq, "nak/in-progress of a settled delivery ignored");
                }
                (AckKind::Ack | AckKind::Term, Some(p)) => {
                    // A terminated message is settled for retention too, and
                    // moves the floor like an ack (as nats-server).
                    c.pending.remove(&seq);
                    removed.push(seq);
                    c.on_settled(seq, p.cseq);
                }
                (AckKind::Nak(_) | AckKind::InProgress, Some(p)) if p.cseq != r.consumer_seq => {
                    tracing::debug!(stream = %self.name, consumer = %r.consumer, seq, "nak/in-progress of an older delivery ignored");
                }
                (AckKind::Nak(delay), Some(p)) => {
                    let wait = match delay {
                        Some(d) => d,
                        None if !c.config().backoff.is_empty() => c.wait_after(p.count),
                        None => Duration::ZERO,
                    };
                    c.pending.set_deadline(seq, ns_after(now, wait));
                }
                (AckKind::InProgress, Some(_)) => {
                    let wait = c.config().ack_wait;
                    c.pending.set_deadline(seq, ns_after(now, wait));
                }
            }
            c.dirty = true;
        }
        self.notify_consumers();
        self.retain_settled(&removed);
        Ok(())
    }

    /// [`Stream::ack`] for a consumer that must exist, as a confirmed ack
    /// on NATS (nobody answers for a deleted consumer).
    pub(crate) fn ack_confirmed(&self, r: &AckRef, kind: AckKind) -> Result<()> {
        if !self.consumers.lock().contains_key(&*r.consumer) {
            return Err(consumer_not_found(&self.name, &r.consumer));
        }
        self.ack(r, kind)
    }

    /// Interest and work-queue retention (invariant 21): removes stored
    /// messages every interested consumer has acknowledged.
    pub(crate) fn apply_retention(&self) {
        if !self.consumers.ack_retention.load(Ordering::Acquire) {
            return;
        }
        let retention = self.lock().config.retention;
        if retention == RetentionPolicy::Limits {
            return;
        }
        let map = self.consumers.lock();
        let mut g = self.lock();
        if g.messages == 0 || (map.is_empty() && retention == RetentionPolicy::WorkQueue) {
            // A work queue without consumers keeps everything.
            return;
        }
        // A message goes once no consumer still needs it (`still_needs`:
        // its filter matches and the message is at or above its position,
        // pending, or queued). Every live message is looked at, not only
        // those below the lowest position: above it sit messages no
        // consumer's filter matches (interest drops them at publish) and
        // messages a consumer further ahead settled.
        let views: Vec<&Consumer> = map.values().collect();
        let first = g.first_seq;
        let mut doomed: Vec<(u64, String, u64, bool)> = Vec::new();
        let res = g.for_each_live(self.storage(), first, &mut |r| {
            let needed = views.iter().any(|c| Self::still_needs(c, r.seq, r.subject));
            let interested = views.iter().any(|c| c.matches(r.subject));
            if !needed && (interested || retention == RetentionPolicy::Interest) {
                doomed.push((r.seq, r.subject.to_owned(), r.size as u64, interested));
            }
            true
        });
        if let Err(e) = res {
            tracing::warn!(stream = %self.name, error = %e, "retention scan failed");
            return;
        }
        for (seq, subj, size, interested) in doomed {
            if interested {
                g.remove_msg(seq, &subj, size);
            } else {
                self.log_unmatched_removal(&mut g, seq, &subj, size);
            }
        }
        g.ckpt_needed = true;
        drop(map);
        self.finish_change(&mut g);
    }

    /// Whether consumer `c` may still deliver stream seq `seq` on `subj`.
    fn still_needs(c: &Consumer, seq: u64, subj: &str) -> bool {
        c.matches(subj)
            && (seq >= c.state.next_seq
                || c.pending.contains_key(&seq)
                || c.start_queue.contains(&seq))
    }

    /// Retention after acks (invariant 21): removes each of `seqs` that no
    /// consumer still needs. Costs one read per sequence, not a scan.
    pub(crate) fn retain_settled(&self, seqs: &[u64]) {
        if seqs.is_empty() || !self.consumers.ack_retention.load(Ordering::Acquire) {
            return;
        }
        let map = self.consumers.lock();
        let mut g = self.lock();
        let mut changed = false;
        for &seq in seqs {
            if !g.is_live(seq) {
                continue;
            }
            let (subj, size) = match g.read_info(&self.name, self.storage(), seq) {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(stream = %self.name, seq, error = %e, "retention: could not read message");
                    continue;
                }
            };
            if !map.values().any(|c| Self::still_needs(c, seq, &subj)) {
                g.remove_msg(seq, &subj, size);
                changed = true;
            }
        }
        drop(map);
        if changed {
            g.ckpt_needed = true;
            self.finish_change(&mut g);
        }
    }

    /// For a batch publish on an interest stream: the consumer map, taken
    /// before the stream lock (lock order), so each message no consumer's
    /// filter matches can be dropped right after its append
    /// ([`Stream::drop_unmatched`]). `None` for other retentions.
    pub(crate) fn interest_consumers(&self) -> Option<MutexGuard<'_, BTreeMap<String, Consumer>>> {
        if !self.consumers.ack_retention.load(Ordering::Acquire)
            || self.lock().config.retention != RetentionPolicy::Interest
        {
            return None;
        }
        Some(self.consumers.lock())
    }

    /// Interest retention inside a batch, under the stream lock: drops
    /// `seq` at once when no consumer's filter matches `subj`, so the
    /// batch's later messages meet the limits (max_msgs, discard new) as a
    /// sequence of single publishes would, never evicting a wanted message
    /// for one that is about to go.
    pub(crate) fn drop_unmatched(
        &self,
        map: &BTreeMap<String, Consumer>,
        g: &mut Inner,
        seq: u64,
        subj: &str,
    ) {
        if !g.is_live(seq) || map.values().any(|c| c.matches(subj)) {
            return;
        }
        match g.read_info(&self.name, self.storage(), seq) {
            Ok((subj, size)) => self.log_unmatched_removal(g, seq, &subj, size),
            Err(e) => {
                tracing::warn!(stream = %self.name, seq, error = %e, "retention: could not read message")
            }
        }
    }

    /// Interest retention after a publish: a message no consumer's filter
    /// matches is not kept (as nats-server).
    pub(crate) fn retain_published(&self, seq: u64, subj: &str) {
        if !self.consumers.ack_retention.load(Ordering::Acquire) {
            return;
        }
        let map = self.consumers.lock();
        let mut g = self.lock();
        if g.config.retention != RetentionPolicy::Interest
            || !g.is_live(seq)
            || map.values().any(|c| c.matches(subj))
        {
            return;
        }
        drop(map);
        match g.read_info(&self.name, self.storage(), seq) {
            Ok((subj, size)) => {
                self.log_unmatched_removal(&mut g, seq, &subj, size);
                self.finish_change(&mut g);
            }
            Err(e) => {
                tracing::warn!(stream = %self.name, seq, error = %e, "retention: could not read message")
            }
        }
    }

    /// Removes a message no consumer's filter matches, with a delete
    /// record: unlike a settlement, no consumer file could re-derive it at
    /// open, and a consumer created later would receive it again after a
    /// crash (invariant 21).
    fn log_unmatched_removal(&self, g: &mut Inner, seq: u64, subj: &str, size: u64) {
        let time = now_ns().max(g.last_time);
        g.active.size += crate::record::encode_delete(&mut g.pending, seq, time) as u64;
        if let Err(e) = g.flush(&self.name) {
            tracing::warn!(stream = %self.name, seq, error = %e, "retention: could not log the removal");
        }
        g.remove_msg(seq, subj, size);
        g.ckpt_needed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consumer_file_round_trips_and_every_bit_flip_is_reported() {
        let f = ConsumerFile {
            name: "c".into(),
            config: ConsumerConfig::durable("c").max_deliver(3),
            created_ns: 7,
            delivered: SequencePair {
                consumer_seq: 5,
                stream_seq: 4,
            },
            ack_floor: SequencePair {
                consumer_seq: 1,
                stream_seq: 1,
            },
            next_seq: 5,
            start_queue: vec![9],
            pending: vec![(
                2,
                Pending {
                    cseq: 5,
                    count: 2,
                    deadline_ns: 11,
                },
            )],
        };
        let b = f.encode().unwrap();
        match ConsumerFile::decode(&b) {
            DecodedConsumer::Ok(g) => assert_eq!(*g, f),
            other => panic!("{other:?}"),
        }
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 1;
            assert!(
                !matches!(ConsumerFile::decode(&d), DecodedConsumer::Ok(_)),
                "flip at {i}"
            );
        }
        for n in 0..b.len() {
            assert!(matches!(
                ConsumerFile::decode(&b[..n]),
                DecodedConsumer::Corrupt(_)
            ));
        }
    }
}
