//! R7: model-based property tests of the embedded engine. proptest generates
//! a stream configuration (retention, count limits, discard policy, tiny
//! segments) and a sequence of operations: publish (with or without a msg
//! id), publish_batch, delete_message, purge (whole, by subject, keep,
//! up_to_seq), durable consumers (create, fetch, ack, nak, term), a clean
//! reopen, a kill (unclean drop: the OS keeps every write) and a power loss
//! (only fsynced bytes survive). The same operations run on a plain
//! reference model written from docs/design.md and JetStream semantics;
//! after every step the observable state must agree: stream info, every
//! sequence's message, each subject's last message, every consumer's info.
//!
//! Durability is `Always`, so a crash may lose nothing acknowledged.
//! Consumer state is persisted in the background (invariant 18): after a
//! crash the recovered consumer file must be one of the states the model
//! went through since the last certain write, and the model adopts it; the
//! messages interest/work-queue retention removed since then may come back
//! (invariant 21), an unacknowledged one may never vanish.
//!
//! Cases: `DURABUS_PROPTEST_CASES` (default 64).
//!
//! Checks invariant 21 (docs/design.md).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::power_loss::{Crash, PowerLoss};
use durabus_core::{
    AckKind, AckRef, Backend, ConsumerConfig, DiscardPolicy, Error, Message, PurgeRequest,
    RetentionPolicy, StreamConfig,
};
use durabus_log::{Durability, Options, Store};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

const STREAM: &str = "S";
const SUBJECTS: [&str; 3] = ["s.a", "s.b", "s.c"];
const CONSUMERS: [&str; 2] = ["c0", "c1"];
const ROOT: &str = "/data";

// ---------------------------------------------------------------------------
// Operations and configuration

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retention {
    Limits,
    Interest,
    WorkQueue,
}

#[derive(Debug, Clone)]
struct Setup {
    retention: Retention,
    max_msgs: Option<u64>,
    max_per_subject: Option<u64>,
    discard_new: bool,
    segment_size: u64,
}

#[derive(Debug, Clone)]
struct Pub {
    subject: usize,
    id: Option<u8>,
    size: usize,
}

#[derive(Debug, Clone)]
enum PurgeHow {
    All,
    Keep(u64),
    UpTo(u64),
}

#[derive(Debug, Clone, Copy)]
enum Settle {
    Ack,
    Nak,
    Term,
}

#[derive(Debug, Clone)]
enum Op {
    Publish(Pub),
    Batch(Vec<Pub>),
    /// Deletes `last_seq + 1 - back` (so mostly recent sequences, sometimes
    /// absent ones).
    Delete(u64),
    Purge {
        subject: Option<usize>,
        how: PurgeHow,
    },
    CreateConsumer(usize),
    Fetch {
        consumer: usize,
        batch: usize,
    },
    Settle {
        consumer: usize,
        which: usize,
        kind: Settle,
    },
    Reopen,
    Crash(Crash),
}

fn pub_strategy() -> impl Strategy<Value = Pub> {
    (
        0..SUBJECTS.len(),
        prop::option::weighted(0.3, 0u8..6),
        prop_oneof![0usize..16, 16usize..300],
    )
        .prop_map(|(subject, id, size)| Pub { subject, id, size })
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        10 => pub_strategy().prop_map(Op::Publish),
        2 => prop::collection::vec(pub_strategy(), 1..5).prop_map(Op::Batch),
        2 => (0u64..6).prop_map(Op::Delete),
        2 => (
            prop::option::of(0..SUBJECTS.len()),
            prop_oneof![
                Just(PurgeHow::All),
                (0u64..3).prop_map(PurgeHow::Keep),
                (0u64..8).prop_map(PurgeHow::UpTo),
            ],
        )
            .prop_map(|(subject, how)| Op::Purge { subject, how }),
        2 => (0..CONSUMERS.len()).prop_map(Op::CreateConsumer),
        5 => (0..CONSUMERS.len(), 1usize..4).prop_map(|(consumer, batch)| Op::Fetch { consumer, batch }),
        5 => (
            0..CONSUMERS.len(),
            0usize..4,
            prop_oneof![3 => Just(Settle::Ack), 1 => Just(Settle::Nak), 1 => Just(Settle::Term)],
        )
            .prop_map(|(consumer, which, kind)| Op::Settle { consumer, which, kind }),
        1 => Just(Op::Reopen),
        1 => Just(Op::Crash(Crash::Kill)),
        1 => Just(Op::Crash(Crash::PowerLoss)),
    ]
}

fn setup_strategy() -> impl Strategy<Value = Setup> {
    (
        prop_oneof![
            Just(Retention::Limits),
            Just(Retention::Interest),
            Just(Retention::WorkQueue)
        ],
        prop::option::weighted(0.4, 2u64..8),
        prop::option::weighted(0.3, 1u64..4),
        prop::bool::weighted(0.3),
        prop_oneof![Just(128u64), Just(512), Just(4096)],
    )
        .prop_map(
            |(retention, max_msgs, max_per_subject, discard_new, segment_size)| Setup {
                retention,
                max_msgs,
                max_per_subject,
                discard_new: discard_new && max_msgs.is_some(),
                segment_size,
            },
        )
}

/// The filter of consumer `i`: on a work queue they must not overlap.
fn filter_of(retention: Retention, i: usize) -> Option<usize> {
    match (retention, i) {
        (Retention::WorkQueue, 0) => Some(0),
        (_, 0) => None,
        _ => Some(1),
    }
}

fn payload(tag: u64, size: usize) -> Vec<u8> {
    let mut p = format!("{tag}:").into_bytes();
    p.resize(size.max(p.len()), b'x');
    p
}

// ---------------------------------------------------------------------------
// The reference model

#[derive(Debug, Clone, PartialEq, Eq)]
struct Msg {
    subject: usize,
    payload: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pend {
    cseq: u64,
    count: u64,
    /// Naked: due for redelivery now (otherwise due after ack_wait, never
    /// within a test case).
    due: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Cons {
    filter: Option<usize>,
    delivered_cseq: u64,
    /// Highest stream seq delivered as a new message (a lower bound of the
    /// engine's `delivered.stream_seq`, which also moves over what a fetch
    /// read past).
    delivered_sseq: u64,
    /// The ack floor; `None` for the stream seq when it was set to
    /// `delivered` (engine-specific within bounds).
    floor_cseq: u64,
    floor_sseq: Option<u64>,
    /// The next stream seq to deliver as new.
    next: u64,
    pending: BTreeMap<u64, Pend>,
}

impl Cons {
    fn matches(&self, subject: usize) -> bool {
        self.filter.is_none_or(|f| f == subject)
    }

    fn needs(&self, seq: u64, m: &Msg) -> bool {
        self.matches(m.subject) && (seq >= self.next || self.pending.contains_key(&seq))
    }

    fn floor_to_delivered(&mut self) {
        self.floor_cseq = self.delivered_cseq;
        self.floor_sseq = None;
    }

    /// docs/design.md, "Consumers": how settling moves the ack floor.
    fn settle(&mut self, seq: u64) {
        let Some(p) = self.pending.remove(&seq) else {
            return;
        };
        if self.pending.is_empty() {
            self.floor_to_delivered();
        } else if p.cseq == self.floor_cseq + 1 {
            self.floor_cseq = p.cseq;
            self.floor_sseq = Some(seq);
            if let Some((s, q)) = self.pending.range(seq + 1..).next() {
                self.floor_cseq = q.cseq - 1;
                self.floor_sseq = Some(s - 1);
            }
        }
    }

    /// Pending entries whose message vanished leave; the floor moves to
    /// just below the lowest remaining one, or to `delivered`.
    fn prune(&mut self, live: &BTreeMap<u64, Msg>) {
        let before = self.pending.len();
        self.pending.retain(|s, _| live.contains_key(s));
        if self.pending.len() != before {
            match self.pending.iter().next() {
                None => self.floor_to_delivered(),
                Some((s, p)) => {
                    self.floor_cseq = p.cseq - 1;
                    self.floor_sseq = Some(s - 1);
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Model {
    setup: Setup,
    last_seq: u64,
    /// Stored messages.
    msgs: BTreeMap<u64, Msg>,
    /// Messages interest/work-queue retention removed: not logged, so a
    /// crash that loses the consumer state that settled them may bring
    /// them back (invariant 21).
    retained: BTreeMap<u64, Msg>,
    ids: BTreeMap<u8, u64>,
    consumers: BTreeMap<usize, Cons>,
    /// Per consumer: the states since its file was last surely written
    /// (create, clean close, crash recovery); the file holds one of them.
    history: BTreeMap<usize, Vec<Cons>>,
}

enum PubOutcome {
    Stored(u64),
    Duplicate(u64),
    Full,
}

impl Model {
    fn new(setup: Setup) -> Self {
        Model {
            setup,
            last_seq: 0,
            msgs: BTreeMap::new(),
            retained: BTreeMap::new(),
            ids: BTreeMap::new(),
            consumers: BTreeMap::new(),
            history: BTreeMap::new(),
        }
    }

    fn first_seq(&self) -> u64 {
        self.msgs
            .keys()
            .next()
            .copied()
            .unwrap_or(self.last_seq + 1)
    }

    /// Removes a stored message by an explicit deletion or a limit.
    fn remove(&mut self, seq: u64) {
        self.msgs.remove(&seq);
        for c in self.consumers.values_mut() {
            c.prune(&self.msgs);
        }
    }

    /// Forgets retained-out messages an explicit deletion or limit would
    /// also have removed when the log is replayed: `pred(seq, msg)`.
    fn forget_retained(&mut self, pred: impl Fn(u64, &Msg) -> bool) {
        self.retained.retain(|s, m| !pred(*s, m));
    }

    /// Interest / work-queue retention (docs/design.md, "Retention").
    fn apply_retention(&mut self) {
        let r = self.setup.retention;
        if r == Retention::Limits {
            return;
        }
        let doomed: Vec<u64> = self
            .msgs
            .iter()
            .filter(|(s, m)| {
                let needed = self.consumers.values().any(|c| c.needs(**s, m));
                let interested = self.consumers.values().any(|c| c.matches(m.subject));
                !needed && (r == Retention::Interest || interested)
            })
            .map(|(s, _)| *s)
            .collect();
        for s in doomed {
            let m = self.msgs.remove(&s).unwrap();
            self.retained.insert(s, m);
        }
    }

    fn publish(&mut self, p: &Pub, tag: u64) -> PubOutcome {
        if let Some(id) = p.id {
            if let Some(seq) = self.ids.get(&id) {
                return PubOutcome::Duplicate(*seq);
            }
        }
        if self.setup.discard_new {
            // A message that replaces its subject's oldest (the subject is
            // at max_msgs_per_subject) does not grow the stream: stored.
            let replaces = self.setup.max_per_subject.is_some_and(|max| {
                self.msgs
                    .values()
                    .filter(|m| m.subject == p.subject)
                    .count() as u64
                    >= max
            });
            if let Some(max) = self.setup.max_msgs {
                if self.msgs.len() as u64 >= max && !replaces {
                    return PubOutcome::Full;
                }
            }
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        self.msgs.insert(
            seq,
            Msg {
                subject: p.subject,
                payload: payload(tag, p.size),
            },
        );
        if let Some(id) = p.id {
            self.ids.insert(id, seq);
        }
        if let Some(max) = self.setup.max_per_subject {
            let on: Vec<u64> = self
                .msgs
                .iter()
                .filter(|(_, m)| m.subject == p.subject)
                .map(|(s, _)| *s)
                .collect();
            for s in on.iter().take(on.len().saturating_sub(max as usize)) {
                let s = *s;
                self.remove(s);
                let subj = p.subject;
                self.forget_retained(|r, m| r < s && m.subject == subj);
            }
        }
        if !self.setup.discard_new {
            if let Some(max) = self.setup.max_msgs {
                while self.msgs.len() as u64 > max {
                    let first = *self.msgs.keys().next().unwrap();
                    self.remove(first);
                    self.forget_retained(|r, _| r < first);
                }
            }
        }
        self.apply_retention();
        PubOutcome::Stored(seq)
    }

    fn purge(&mut self, subject: Option<usize>, how: &PurgeHow) -> u64 {
        let matching: Vec<u64> = self
            .msgs
            .iter()
            .filter(|(_, m)| subject.is_none_or(|s| s == m.subject))
            .map(|(s, _)| *s)
            .collect();
        let (doomed, bound): (Vec<u64>, u64) = match how {
            PurgeHow::All => (matching, self.last_seq + 1),
            PurgeHow::Keep(k) => {
                let cut = matching.len().saturating_sub(*k as usize);
                let bound = matching.get(cut).copied().unwrap_or(self.last_seq + 1);
                (matching[..cut].to_vec(), bound)
            }
            PurgeHow::UpTo(u) => (
                matching.into_iter().filter(|s| s < u).collect(),
                (*u).min(self.last_seq + 1),
            ),
        };
        for s in &doomed {
            self.remove(*s);
        }
        self.forget_retained(|r, m| r < bound && subject.is_none_or(|s| s == m.subject));
        doomed.len() as u64
    }

    fn snapshot(&mut self, i: usize) {
        let c = self.consumers[&i].clone();
        let h = self.history.entry(i).or_default();
        if h.last() != Some(&c) {
            h.push(c);
        }
    }

    fn snapshot_all(&mut self) {
        let keys: Vec<usize> = self.consumers.keys().copied().collect();
        for i in keys {
            self.snapshot(i);
        }
    }

    /// After a clean close every consumer file holds the current state.
    fn persisted(&mut self) {
        self.history = self
            .consumers
            .iter()
            .map(|(i, c)| (*i, vec![c.clone()]))
            .collect();
    }

    /// At open, only ids of stored messages are remembered (invariant 9).
    fn forget_ids(&mut self) {
        let msgs = &self.msgs;
        self.ids.retain(|_, s| msgs.contains_key(s));
    }
}

// ---------------------------------------------------------------------------
// The consumer file as persisted (docs/design.md, "Consumer state file")

#[derive(Debug, serde::Deserialize)]
struct FilePair {
    consumer_seq: u64,
    stream_seq: u64,
}

#[derive(Debug, serde::Deserialize)]
struct FilePending {
    cseq: u64,
    count: u64,
    deadline_ns: i64,
}

#[derive(Debug, serde::Deserialize)]
struct ConsumerFile {
    delivered: FilePair,
    next_seq: u64,
    pending: Vec<(u64, FilePending)>,
    #[serde(default)]
    journal_gen: u64,
}

/// A consumer journal entry (docs/design.md, "Consumer journal").
#[derive(Debug, serde::Deserialize)]
struct JournalEntry {
    delivered: FilePair,
    _ack_floor: FilePair,
    next_seq: u64,
    upserts: Vec<(u64, FilePending)>,
    removes: Vec<u64>,
    _start_queue: Option<Vec<u64>>,
}

/// The consumer's state as the next open sees it: its state file with the
/// entries of its journal (of the same generation) applied.
fn read_consumer_file(storage: &PowerLoss, name: &str) -> Option<ConsumerFile> {
    let dir = Path::new(ROOT).join("streams").join(STREAM);
    let b = storage.read_live(&dir.join("consumers").join(name))?;
    let len = u32::from_le_bytes(b[12..16].try_into().unwrap()) as usize;
    let mut f: ConsumerFile = serde_json::from_slice(&b[16..16 + len]).unwrap();
    let Some(j) = storage.read_live(&dir.join("consumer-journals").join(name)) else {
        return Some(f);
    };
    if j.len() < 20 || u64::from_le_bytes(j[12..20].try_into().unwrap()) != f.journal_gen {
        return Some(f);
    }
    let mut pending: BTreeMap<u64, FilePending> = f.pending.drain(..).collect();
    let mut at = 20;
    while at + 8 <= j.len() {
        let n = u32::from_le_bytes(j[at..at + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(j[at + 4..at + 8].try_into().unwrap());
        if at + 8 + n > j.len() || crc32c::crc32c(&j[at + 8..at + 8 + n]) != crc {
            break;
        }
        let Ok(e) = postcard::from_bytes::<JournalEntry>(&j[at + 8..at + 8 + n]) else {
            break;
        };
        f.delivered = e.delivered;
        f.next_seq = e.next_seq;
        for (s, p) in e.upserts {
            pending.insert(s, p);
        }
        for s in e.removes {
            pending.remove(&s);
        }
        at += 8 + n;
    }
    f.pending = pending.into_iter().collect();
    Some(f)
}

/// Empty in-memory storage for a store at [`ROOT`], never losing power
/// but when told to ([`PowerLoss::crash`]).
fn fresh_storage() -> PowerLoss {
    PowerLoss::new(Path::new(ROOT), u64::MAX)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i64
}

/// Whether a history state is what the file holds, looking only at pending
/// entries whose message is still in the log (`log`): entries of messages
/// deleted later are pruned at the next look either way.
fn file_is(f: &ConsumerFile, c: &Cons, log: &BTreeSet<u64>) -> bool {
    let now = now_ns();
    let from_file: BTreeMap<u64, Pend> = f
        .pending
        .iter()
        .filter(|(s, _)| log.contains(s))
        .map(|(s, p)| {
            (
                *s,
                Pend {
                    cseq: p.cseq,
                    count: p.count,
                    due: p.deadline_ns <= now,
                },
            )
        })
        .collect();
    let from_model: BTreeMap<u64, Pend> = c
        .pending
        .iter()
        .filter(|(s, _)| log.contains(s))
        .map(|(s, p)| (*s, *p))
        .collect();
    f.delivered.consumer_seq == c.delivered_cseq
        && f.delivered.stream_seq >= c.delivered_sseq
        && f.next_seq >= c.next
        && from_file == from_model
}

// ---------------------------------------------------------------------------
// The runner

struct Harness {
    rt: tokio::runtime::Runtime,
    storage: PowerLoss,
    store: Option<Store>,
    options: Options,
    model: Model,
    log: Vec<String>,
    tag: u64,
}

fn stream_config(s: &Setup) -> StreamConfig {
    let mut cfg = StreamConfig::new(STREAM).subjects(["s.>"]);
    cfg.retention = match s.retention {
        Retention::Limits => RetentionPolicy::Limits,
        Retention::Interest => RetentionPolicy::Interest,
        Retention::WorkQueue => RetentionPolicy::WorkQueue,
    };
    cfg.max_msgs = s.max_msgs;
    cfg.max_msgs_per_subject = s.max_per_subject;
    if s.discard_new {
        cfg.discard = DiscardPolicy::New;
    }
    cfg
}

fn consumer_config(retention: Retention, i: usize) -> ConsumerConfig {
    let mut cfg = ConsumerConfig::durable(CONSUMERS[i]).ack_wait(Duration::from_secs(3600));
    if let Some(f) = filter_of(retention, i) {
        cfg = cfg.filter_subject(SUBJECTS[f]);
    }
    cfg
}

impl Harness {
    fn new(setup: Setup) -> Result<Self, TestCaseError> {
        let rt = common::rt();
        let storage = fresh_storage();
        let options = Options::default()
            .durability(Durability::Always)
            .segment_size(setup.segment_size);
        let store = Store::open_with_storage(ROOT, Arc::new(storage.clone()), options.clone())
            .map_err(|e| TestCaseError::fail(format!("open: {e}")))?;
        let cfg = stream_config(&setup);
        rt.block_on(store.create_stream(cfg))
            .map_err(|e| TestCaseError::fail(format!("create_stream: {e}")))?;
        Ok(Harness {
            rt,
            storage,
            store: Some(store),
            options,
            model: Model::new(setup),
            log: Vec::new(),
            tag: 0,
        })
    }

    fn store(&self) -> &Store {
        self.store.as_ref().unwrap()
    }

    fn fail(&self, what: String) -> TestCaseError {
        let tail = self.log[self.log.len().saturating_sub(30)..].join("\n");
        TestCaseError::fail(format!(
            "{what}\nsetup: {:?}\nlast operations:\n{tail}",
            self.model.setup
        ))
    }

    fn open(&mut self) -> Result<(), TestCaseError> {
        self.store = Some(
            Store::open_with_storage(ROOT, Arc::new(self.storage.clone()), self.options.clone())
                .map_err(|e| self.fail(format!("open: {e}")))?,
        );
        Ok(())
    }

    fn step(&mut self, op: &Op) -> Result<(), TestCaseError> {
        self.log.push(format!("{op:?}"));
        let retention = self.model.setup.retention;
        match op {
            Op::Publish(p) => {
                self.tag += 1;
                let mut msg = Message::new(SUBJECTS[p.subject], payload(self.tag, p.size));
                if let Some(id) = p.id {
                    msg = msg.with_msg_id(format!("id{id}"));
                }
                let got = self.rt.block_on(self.store().publish(msg));
                let want = self.model.publish(p, self.tag);
                check_publish(want, got.map(|a| a.map(|a| (a.seq, a.duplicate))))
                    .map_err(|e| self.fail(e))?;
            }
            Op::Batch(ps) => {
                let mut msgs = Vec::new();
                let mut tags = Vec::new();
                for p in ps {
                    self.tag += 1;
                    tags.push(self.tag);
                    let mut msg = Message::new(SUBJECTS[p.subject], payload(self.tag, p.size));
                    if let Some(id) = p.id {
                        msg = msg.with_msg_id(format!("id{id}"));
                    }
                    msgs.push(msg);
                }
                let got = self
                    .rt
                    .block_on(self.store().publish_batch(msgs))
                    .map_err(|e| self.fail(format!("publish_batch: {e}")))?;
                if got.len() != ps.len() {
                    return Err(self.fail(format!("publish_batch gave {} results", got.len())));
                }
                for ((p, tag), got) in ps.iter().zip(tags).zip(got) {
                    let want = self.model.publish(p, tag);
                    check_publish(want, got.map(|a| a.map(|a| (a.seq, a.duplicate))))
                        .map_err(|e| self.fail(format!("in batch: {e}")))?;
                }
            }
            Op::Delete(back) => {
                let seq = (self.model.last_seq + 1).saturating_sub(*back);
                let got = self.rt.block_on(self.store().delete_message(STREAM, seq));
                let present = self.model.msgs.contains_key(&seq);
                match (present, got) {
                    (true, Ok(())) => {
                        self.model.remove(seq);
                        self.model.apply_retention();
                    }
                    (false, Err(Error::MessageNotFound { .. })) => {}
                    (present, got) => {
                        return Err(
                            self.fail(format!("delete {seq} (present: {present}) gave {got:?}"))
                        )
                    }
                }
            }
            Op::Purge { subject, how } => {
                let mut req = PurgeRequest {
                    subject: subject.map(|s| SUBJECTS[s].to_owned()),
                    ..PurgeRequest::default()
                };
                match how {
                    PurgeHow::All => {}
                    PurgeHow::Keep(k) => req.keep = Some(*k),
                    PurgeHow::UpTo(u) => req.up_to_seq = Some(*u),
                }
                let got = self.rt.block_on(self.store().purge_stream(STREAM, req));
                let want = self.model.purge(*subject, how);
                self.model.apply_retention();
                match got {
                    Ok(n) if n == want => {}
                    got => return Err(self.fail(format!("purge: expected {want}, got {got:?}"))),
                }
            }
            Op::CreateConsumer(i) => {
                if self.model.consumers.contains_key(i) {
                    return Ok(());
                }
                let cfg = consumer_config(retention, *i);
                let got = self.rt.block_on(self.store().create_consumer(STREAM, cfg));
                if let Err(e) = got {
                    return Err(self.fail(format!("create_consumer {i}: {e}")));
                }
                let first = self.model.first_seq();
                let c = Cons {
                    filter: filter_of(retention, *i),
                    delivered_cseq: 0,
                    delivered_sseq: first - 1,
                    floor_cseq: 0,
                    floor_sseq: Some(first - 1),
                    next: first,
                    pending: BTreeMap::new(),
                };
                self.model.consumers.insert(*i, c.clone());
                self.model.history.insert(*i, vec![c]);
                self.model.apply_retention();
            }
            Op::Fetch { consumer, batch } => {
                if !self.model.consumers.contains_key(consumer) {
                    return Ok(());
                }
                let got = self
                    .rt
                    .block_on(self.store().fetch(
                        STREAM,
                        CONSUMERS[*consumer],
                        *batch,
                        Duration::from_millis(1),
                    ))
                    .map_err(|e| self.fail(format!("fetch: {e}")))?;
                let got: Vec<(u64, u64, u64, Vec<u8>)> = got
                    .iter()
                    .map(|d| {
                        (
                            d.stream_seq(),
                            d.consumer_seq(),
                            d.delivered(),
                            d.message.payload.to_vec(),
                        )
                    })
                    .collect();
                let want = self.model_fetch(*consumer, *batch);
                if got != want {
                    return Err(self.fail(format!(
                        "fetch {consumer}: (sseq, cseq, count, payload) expected {:?}, got {:?}",
                        short(&want),
                        short(&got)
                    )));
                }
                // Invariant 18: a fetch returns once its deliveries (and the
                // consumer's earlier changes) are in the journal, fsynced
                // under `always`: no crash goes back before this state.
                let now = self.model.consumers[consumer].clone();
                self.model.history.insert(*consumer, vec![now]);
            }
            Op::Settle {
                consumer,
                which,
                kind,
            } => {
                let Some(c) = self.model.consumers.get(consumer) else {
                    return Ok(());
                };
                if c.pending.is_empty() {
                    return Ok(());
                }
                let (seq, p) = c
                    .pending
                    .iter()
                    .nth(which % c.pending.len())
                    .map(|(s, p)| (*s, *p))
                    .unwrap();
                let r = AckRef {
                    stream: STREAM.into(),
                    consumer: CONSUMERS[*consumer].into(),
                    stream_seq: seq,
                    consumer_seq: p.cseq,
                    delivered: p.count,
                    token: None,
                };
                let k = match kind {
                    Settle::Ack => AckKind::Ack,
                    Settle::Nak => AckKind::Nak(None),
                    Settle::Term => AckKind::Term,
                };
                self.rt
                    .block_on(self.store().ack(&r, k))
                    .map_err(|e| self.fail(format!("ack {seq}: {e}")))?;
                let c = self.model.consumers.get_mut(consumer).unwrap();
                match kind {
                    Settle::Nak => c.pending.get_mut(&seq).unwrap().due = true,
                    Settle::Ack | Settle::Term => c.settle(seq),
                }
                self.model.apply_retention();
            }
            Op::Reopen => {
                let store = self.store.take().unwrap();
                self.rt
                    .block_on(store.close())
                    .map_err(|e| self.fail(format!("close: {e}")))?;
                drop(store);
                self.open()?;
                self.model.persisted();
                self.model.forget_ids();
            }
            Op::Crash(kind) => {
                self.storage = self.storage.crash(*kind);
                // The dead store's shutdown fails on the frozen storage.
                drop(self.store.take());
                self.recover_consumers()?;
                self.open()?;
                self.recover_retained()?;
                self.model.forget_ids();
            }
        }
        self.model.snapshot_all();
        self.check()
    }

    /// After a crash: each consumer resumes from a state it went through
    /// since its file was surely written; retention is re-derived from it.
    fn recover_consumers(&mut self) -> Result<(), TestCaseError> {
        let log: BTreeSet<u64> = self
            .model
            .msgs
            .keys()
            .chain(self.model.retained.keys())
            .copied()
            .collect();
        let keys: Vec<usize> = self.model.consumers.keys().copied().collect();
        for i in keys {
            let Some(f) = read_consumer_file(&self.storage, CONSUMERS[i]) else {
                return Err(self.fail(format!("consumer {i}: file lost in the crash")));
            };
            let h = &self.model.history[&i];
            let Some(c) = h.iter().rev().find(|c| file_is(&f, c, &log)).cloned() else {
                return Err(self.fail(format!(
                    "consumer {i}: recovered file {f:?} is none of the states since the last write: {h:?}"
                )));
            };
            self.model.consumers.insert(i, c);
        }
        Ok(())
    }

    /// After the reopen that follows a crash: a message retention removed
    /// may come back (its settlement was not persisted, invariant 21) or
    /// stay removed (a checkpoint recorded the removal); one that comes
    /// back must be one the recovered consumers still need.
    fn recover_retained(&mut self) -> Result<(), TestCaseError> {
        let retained = std::mem::take(&mut self.model.retained);
        for (seq, msg) in retained {
            let got = self.rt.block_on(self.store().get_message(STREAM, seq));
            match got {
                Ok(_) => {
                    let needed = self.model.consumers.values().any(|c| c.needs(seq, &msg));
                    let matched = self
                        .model
                        .consumers
                        .values()
                        .any(|c| c.matches(msg.subject));
                    let keep = match self.model.setup.retention {
                        Retention::Interest => needed,
                        _ => needed || !matched,
                    };
                    if !keep {
                        return Err(self.fail(format!(
                            "seq {seq} came back after the crash, but no recovered consumer needs it: {:?}",
                            self.model.consumers
                        )));
                    }
                    self.model.msgs.insert(seq, msg);
                }
                Err(Error::MessageNotFound { .. }) => {}
                Err(e) => return Err(self.fail(format!("get {seq} after crash: {e}"))),
            }
        }
        let msgs = self.model.msgs.clone();
        for c in self.model.consumers.values_mut() {
            c.prune(&msgs);
        }
        self.model.apply_retention();
        self.model.persisted();
        Ok(())
    }

    /// What a fetch delivers: due redeliveries in stream-seq order, then new
    /// matching messages.
    fn model_fetch(&mut self, i: usize, batch: usize) -> Vec<(u64, u64, u64, Vec<u8>)> {
        let msgs = self.model.msgs.clone();
        let c = self.model.consumers.get_mut(&i).unwrap();
        let mut out = Vec::new();
        let due: Vec<u64> = c
            .pending
            .iter()
            .filter(|(_, p)| p.due)
            .map(|(s, _)| *s)
            .collect();
        for s in due {
            if out.len() >= batch {
                break;
            }
            c.delivered_cseq += 1;
            let p = c.pending.get_mut(&s).unwrap();
            p.cseq = c.delivered_cseq;
            p.count += 1;
            p.due = false;
            out.push((s, p.cseq, p.count, msgs[&s].payload.clone()));
        }
        let fresh: Vec<u64> = msgs
            .range(c.next..)
            .filter(|(_, m)| c.matches(m.subject))
            .map(|(s, _)| *s)
            .take(batch - out.len())
            .collect();
        for s in fresh {
            c.delivered_cseq += 1;
            c.delivered_sseq = s;
            c.next = s + 1;
            c.pending.insert(
                s,
                Pend {
                    cseq: c.delivered_cseq,
                    count: 1,
                    due: false,
                },
            );
            out.push((s, c.delivered_cseq, 1, msgs[&s].payload.clone()));
        }
        out
    }

    /// Compares every observable with the model.
    fn check(&self) -> Result<(), TestCaseError> {
        let m = &self.model;
        let store = self.store();
        let info = self
            .rt
            .block_on(store.stream_info(STREAM))
            .map_err(|e| self.fail(format!("stream_info: {e}")))?;
        let st = info.state;
        let count = m.msgs.len() as u64;
        let subjects: BTreeSet<usize> = m.msgs.values().map(|x| x.subject).collect();
        let first_ok = if m.last_seq == 0 {
            st.first_seq <= 1
        } else {
            st.first_seq == m.first_seq()
        };
        let deleted = if count > 0 {
            m.last_seq - m.first_seq() + 1 - count
        } else {
            0
        };
        if st.messages != count
            || st.last_seq != m.last_seq
            || !first_ok
            || st.num_subjects != subjects.len() as u64
            || st.num_deleted != deleted
            || st.consumer_count != m.consumers.len() as u64
        {
            return Err(self.fail(format!(
                "stream state {st:?}; model: messages {count} {:?}, first {}, last {}, subjects {}, deleted {deleted}, consumers {}",
                m.msgs.keys().collect::<Vec<_>>(),
                m.first_seq(),
                m.last_seq,
                subjects.len(),
                m.consumers.len()
            )));
        }
        for seq in 1..=m.last_seq + 1 {
            let got = self.rt.block_on(store.get_message(STREAM, seq));
            match (m.msgs.get(&seq), got) {
                (Some(want), Ok(got))
                    if got.seq == seq
                        && got.subject == SUBJECTS[want.subject]
                        && got.payload == want.payload[..] => {}
                (None, Err(Error::MessageNotFound { .. })) => {}
                (want, got) => {
                    return Err(self.fail(format!(
                        "get {seq}: expected {:?}, got {:?}",
                        want.map(|w| (SUBJECTS[w.subject], w.payload.len())),
                        got.map(|g| (g.seq, g.subject, g.payload.len()))
                    )))
                }
            }
        }
        for (i, subj) in SUBJECTS.iter().enumerate() {
            let want = m
                .msgs
                .iter()
                .rev()
                .find(|(_, x)| x.subject == i)
                .map(|(s, _)| *s);
            let got = self.rt.block_on(store.get_last_message(STREAM, subj));
            match (want, got) {
                (Some(w), Ok(g)) if g.seq == w => {}
                (None, Err(Error::MessageNotFound { .. })) => {}
                (want, got) => {
                    return Err(self.fail(format!(
                        "get_last {subj}: expected {want:?}, got {:?}",
                        got.map(|g| g.seq)
                    )))
                }
            }
        }
        for (i, c) in &m.consumers {
            let got = self
                .rt
                .block_on(store.consumer_info(STREAM, CONSUMERS[*i]))
                .map_err(|e| self.fail(format!("consumer_info {i}: {e}")))?;
            let num_pending = m
                .msgs
                .range(c.next..)
                .filter(|(_, x)| c.matches(x.subject))
                .count() as u64;
            let redelivered = c.pending.values().filter(|p| p.count > 1).count() as u64;
            let floor_ok = match c.floor_sseq {
                Some(s) => got.ack_floor.stream_seq == s,
                None => got.ack_floor.stream_seq <= got.delivered.stream_seq,
            };
            if got.delivered.consumer_seq != c.delivered_cseq
                || got.delivered.stream_seq < c.delivered_sseq
                || got.delivered.stream_seq > m.last_seq.max(c.delivered_sseq)
                || got.ack_floor.consumer_seq != c.floor_cseq
                || !floor_ok
                || got.num_pending != num_pending
                || got.num_ack_pending != c.pending.len() as u64
                || got.num_redelivered != redelivered
            {
                return Err(self.fail(format!(
                    "consumer {i}: delivered {:?} floor {:?} num_pending {} ack_pending {} redelivered {}; model {c:?}, num_pending {num_pending}",
                    got.delivered,
                    got.ack_floor,
                    got.num_pending,
                    got.num_ack_pending,
                    got.num_redelivered
                )));
            }
        }
        Ok(())
    }
}

fn short(v: &[(u64, u64, u64, Vec<u8>)]) -> Vec<(u64, u64, u64, usize)> {
    v.iter().map(|(a, b, c, p)| (*a, *b, *c, p.len())).collect()
}

fn check_publish(
    want: PubOutcome,
    got: durabus_core::Result<Option<(u64, bool)>>,
) -> Result<(), String> {
    match (want, got) {
        (PubOutcome::Stored(s), Ok(Some((seq, false)))) if s == seq => Ok(()),
        (PubOutcome::Duplicate(s), Ok(Some((seq, true)))) if s == seq => Ok(()),
        (PubOutcome::Full, Err(Error::StreamFull { .. })) => Ok(()),
        (PubOutcome::Stored(s), got) => {
            Err(format!("publish: expected stored at {s}, got {got:?}"))
        }
        (PubOutcome::Duplicate(s), got) => {
            Err(format!("publish: expected duplicate of {s}, got {got:?}"))
        }
        (PubOutcome::Full, got) => Err(format!("publish: expected StreamFull, got {got:?}")),
    }
}

fn run(setup: Setup, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let mut h = Harness::new(setup)?;
    for op in &ops {
        h.step(op)?;
    }
    let store = h.store.take().unwrap();
    h.rt.block_on(store.close())
        .map_err(|e| TestCaseError::fail(format!("final close: {e}")))?;
    Ok(())
}

fn cases() -> u32 {
    std::env::var("DURABUS_PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(64)
}

proptest! {
    #![proptest_config(ProptestConfig {
        // Relative to the crate directory, where `cargo test` runs.
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "proptest-regressions/model_proptest.txt",
        ))),
        ..ProptestConfig::with_cases(cases())
    })]

    /// Checks invariants 17, 18 (docs/design.md).
    #[test]
    fn random_operations_with_crashes_match_the_model(
        setup in setup_strategy(),
        ops in prop::collection::vec(op_strategy(), 1..40),
    ) {
        run(setup, ops)?;
    }
}

// ---------------------------------------------------------------------------
// Regressions: shrunk cases of engine bugs the property found.

/// A crash image without the stream's checkpoint (invariant 8: derived
/// state, rebuilt from the log), so recovery re-derives everything and the
/// outcome does not depend on whether the maintenance thread wrote one.
fn crash_image(storage: &PowerLoss, kind: Crash) -> PowerLoss {
    use durabus_log::Storage as _;
    let image = storage.crash(kind);
    let _ = image.remove_file(
        &Path::new(ROOT)
            .join("streams")
            .join(STREAM)
            .join("checkpoint"),
    );
    image
}

fn crash_store(storage: &PowerLoss) -> Store {
    Store::open_with_storage(
        ROOT,
        Arc::new(storage.clone()),
        Options::default().durability(Durability::Always),
    )
    .unwrap()
}

/// Invariant 21: an interest stream drops a message no consumer's filter
/// matches as it is published; re-deriving retention after a crash must
/// not bring it back because another consumer sits below it.
#[test]
fn unmatched_message_of_interest_stream_stays_removed_after_crash() {
    let rt = common::rt();
    let storage = fresh_storage();
    let store = crash_store(&storage);
    rt.block_on(async {
        let mut cfg = StreamConfig::new(STREAM).subjects(["s.>"]);
        cfg.retention = RetentionPolicy::Interest;
        store.create_stream(cfg).await.unwrap();
        store
            .create_consumer(STREAM, consumer_config(Retention::Interest, 1))
            .await
            .unwrap();
        let ack = store
            .publish(Message::new("s.a", "nobody wants this"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack.seq, 1);
        assert_eq!(store.stream_info(STREAM).await.unwrap().state.messages, 0);
    });
    for kind in [Crash::Kill, Crash::PowerLoss] {
        let storage = crash_image(&storage, kind);
        let store = crash_store(&storage);
        rt.block_on(async {
            let st = store.stream_info(STREAM).await.unwrap().state;
            assert_eq!((st.messages, st.last_seq), (0, 1), "{kind:?}");
            assert!(matches!(
                store.get_message(STREAM, 1).await,
                Err(Error::MessageNotFound { .. })
            ));
            store.close().await.unwrap();
        });
    }
}

/// A batch publish is a sequence of publishes: on an interest stream a
/// message no consumer matches leaves at once, so it never counts towards
/// `max_msgs` and never evicts a message a consumer still has to receive.
#[test]
fn batch_on_interest_stream_never_evicts_a_wanted_message_for_unmatched_ones() {
    let rt = common::rt();
    let store = Store::memory(Options::default()).unwrap();
    rt.block_on(async {
        let mut cfg = StreamConfig::new(STREAM).subjects(["s.>"]);
        cfg.retention = RetentionPolicy::Interest;
        cfg.max_msgs = Some(2);
        store.create_stream(cfg).await.unwrap();
        store
            .create_consumer(STREAM, consumer_config(Retention::Interest, 1))
            .await
            .unwrap();
        let acks = store
            .publish_batch(vec![
                Message::new("s.b", "wanted"),
                Message::new("s.c", "unmatched"),
                Message::new("s.a", "unmatched"),
            ])
            .await
            .unwrap();
        let seqs: Vec<u64> = acks.into_iter().map(|a| a.unwrap().unwrap().seq).collect();
        assert_eq!(seqs, [1, 2, 3]);
        let st = store.stream_info(STREAM).await.unwrap().state;
        assert_eq!((st.messages, st.first_seq, st.last_seq), (1, 1, 3));
        assert_eq!(
            store.get_message(STREAM, 1).await.unwrap().payload,
            &b"wanted"[..]
        );
        let info = store.consumer_info(STREAM, CONSUMERS[1]).await.unwrap();
        assert_eq!(info.num_pending, 1);
        store.close().await.unwrap();
    });
}

/// Invariant 9: at open only the ids of messages still stored are kept,
/// also when retention removed a message (not logged, re-derived at open).
#[test]
fn msg_id_of_a_message_retention_removed_is_forgotten_after_crash() {
    let rt = common::rt();
    let storage = fresh_storage();
    let store = crash_store(&storage);
    rt.block_on(async {
        let mut cfg = StreamConfig::new(STREAM).subjects(["s.>"]);
        cfg.retention = RetentionPolicy::Interest;
        store.create_stream(cfg).await.unwrap();
        // No consumer: the interest stream keeps nothing, but while the
        // store runs the id stays in the window.
        let m = || Message::new("s.a", "x").with_msg_id("id0");
        let ack = store.publish(m()).await.unwrap().unwrap();
        assert_eq!((ack.seq, ack.duplicate), (1, false));
        let again = store.publish(m()).await.unwrap().unwrap();
        assert_eq!((again.seq, again.duplicate), (1, true));
    });
    let storage = crash_image(&storage, Crash::Kill);
    let store = crash_store(&storage);
    rt.block_on(async {
        assert_eq!(store.stream_info(STREAM).await.unwrap().state.messages, 0);
        let ack = store
            .publish(Message::new("s.a", "x").with_msg_id("id0"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!((ack.seq, ack.duplicate), (2, false));
        store.close().await.unwrap();
    });
}

/// Invariant 21: a message an interest stream removed because no
/// consumer's filter matched it stays removed for a consumer created
/// later, whatever crashes follow.
#[test]
fn unmatched_message_of_interest_stream_stays_removed_for_a_later_consumer() {
    let rt = common::rt();
    let storage = fresh_storage();
    let store = crash_store(&storage);
    rt.block_on(async {
        let mut cfg = StreamConfig::new(STREAM).subjects(["s.>"]);
        cfg.retention = RetentionPolicy::Interest;
        store.create_stream(cfg).await.unwrap();
        store
            .create_consumer(STREAM, consumer_config(Retention::Interest, 1))
            .await
            .unwrap();
        store.publish(Message::new("s.b", "wanted")).await.unwrap();
        store
            .publish(Message::new("s.a", "unmatched"))
            .await
            .unwrap();
    });
    let storage = crash_image(&storage, Crash::PowerLoss);
    let store = crash_store(&storage);
    rt.block_on(async {
        // Consumer c0 has no filter: it would want seq 2 were it stored.
        store
            .create_consumer(STREAM, consumer_config(Retention::Interest, 0))
            .await
            .unwrap();
        assert_eq!(store.stream_info(STREAM).await.unwrap().state.messages, 1);
    });
    let storage = crash_image(&storage, Crash::PowerLoss);
    let store = crash_store(&storage);
    rt.block_on(async {
        let st = store.stream_info(STREAM).await.unwrap().state;
        assert_eq!((st.messages, st.last_seq), (1, 2));
        let got = store
            .fetch(STREAM, CONSUMERS[0], 10, Duration::from_millis(1))
            .await
            .unwrap();
        let seqs: Vec<u64> = got.iter().map(|d| d.stream_seq()).collect();
        assert_eq!(seqs, [1]);
        store.close().await.unwrap();
    });
}
