//! A reference model of one JetStream stream, and a runner that applies the
//! same random operations to a backend and to the model and compares every
//! answer (docs/reliability.md R7, through the public API).
//!
//! The model is deliberately naive: a `BTreeMap` of stored messages, a
//! msg-id map, and the limit rules of JetStream written out plainly. Byte
//! limits and age are left out (backend-specific accounting, wall clock).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::future::Future;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use durabus::{
    Bus, DiscardPolicy, Error, Message, PurgeRequest, ReplayOptions, StreamConfig,
    NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_ROLLUP,
};

use crate::{names, WAIT};

/// The seeds a model test runs: only `DURABUS_MODEL_SEED` when set (to
/// rerun a failure); otherwise 12 fixed seeds, so CI is reproducible, plus
/// `DURABUS_MODEL_RANDOM` (default 0) random seeds, printed on failure
/// like any other.
pub fn seeds() -> Vec<u64> {
    if let Some(seed) = std::env::var("DURABUS_MODEL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        return vec![seed];
    }
    let mut seeds: Vec<u64> = (1..=12).collect();
    let extra: u64 = std::env::var("DURABUS_MODEL_RANDOM")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    seeds.extend((0..extra).map(|_| rand::random::<u64>()));
    seeds
}

#[derive(Debug, Clone, PartialEq)]
struct Stored {
    subject: String,
    payload: String,
}

/// The model of one stream with limits max_msgs / max_msgs_per_subject and
/// a discard policy.
#[derive(Debug, Default)]
struct Model {
    msgs: BTreeMap<u64, Stored>,
    last_seq: u64,
    ids: BTreeMap<String, u64>,
    /// Ids whose duplicate status is backend-specific after a reopen: their
    /// messages were gone when the store reopened.
    uncertain_ids: BTreeSet<String>,
    max_msgs: Option<u64>,
    max_per_subject: Option<u64>,
    discard_new: bool,
    discard_new_per_subject: bool,
    allow_rollup: bool,
}

enum PublishOutcome {
    Stored(u64),
    Duplicate(u64),
    Full,
    WrongLast { current: u64 },
}

impl Model {
    fn first_seq(&self) -> Option<u64> {
        match self.msgs.keys().next() {
            Some(s) => Some(*s),
            None if self.last_seq == 0 => None, // 0 or 1: backend-specific
            None => Some(self.last_seq + 1),
        }
    }

    /// Sequences between the first and the last stored message that hold
    /// no message (`num_deleted` of the stream state).
    fn num_deleted(&self) -> u64 {
        match self.msgs.keys().next() {
            Some(first) => self.last_seq - first + 1 - self.msgs.len() as u64,
            None => 0,
        }
    }

    /// The message a delete of `seq` targets: `seq` itself, unless it is
    /// the newest of a subject that has older ones; then that subject's
    /// oldest. nats-server 2.9 (the oracle, as Debian ships it) keeps
    /// pointing at a subject's deleted newest message: it then refuses the
    /// true `Nats-Expected-Last-Subject-Sequence`, accepts 0, and once the
    /// subject is down to one message filtered reads and purges miss that
    /// one (fixed upstream, nats-server PRs #6226 and #6235).
    fn delete_target(&self, seq: u64) -> u64 {
        let Some(m) = self.msgs.get(&seq) else {
            return seq;
        };
        let mut on = self
            .msgs
            .iter()
            .filter(|(_, o)| o.subject == m.subject)
            .map(|(s, _)| *s);
        match on.next() {
            Some(oldest) if seq == self.last_on(&m.subject) => oldest,
            _ => seq,
        }
    }

    /// Whether `subject` holds max_msgs_per_subject messages.
    fn at_subject_limit(&self, subject: &str) -> bool {
        let on = self.msgs.values().filter(|m| m.subject == subject).count() as u64;
        self.max_per_subject.is_some_and(|max| on >= max)
    }

    fn last_on(&self, subject: &str) -> u64 {
        self.msgs
            .iter()
            .rev()
            .find(|(_, m)| m.subject == subject)
            .map(|(s, _)| *s)
            .unwrap_or(0)
    }

    fn publish(
        &mut self,
        subject: &str,
        payload: &str,
        id: Option<&str>,
        expect_last: Option<u64>,
        expect_subject: Option<u64>,
        rollup_all: Option<bool>,
    ) -> PublishOutcome {
        if let Some(id) = id {
            if let Some(seq) = self.ids.get(id) {
                return PublishOutcome::Duplicate(*seq);
            }
        }
        if let Some(e) = expect_last {
            if e != self.last_seq {
                return PublishOutcome::WrongLast {
                    current: self.last_seq,
                };
            }
        }
        if let Some(e) = expect_subject {
            let cur = self.last_on(subject);
            if e != cur {
                return PublishOutcome::WrongLast { current: cur };
            }
        }
        let at_subject_limit = self.at_subject_limit(subject);
        if self.discard_new_per_subject && at_subject_limit {
            return PublishOutcome::Full;
        }
        // Under discard new with max_msgs reached, a publish to a subject
        // at its max_msgs_per_subject replaces the subject's oldest, so the
        // stream does not grow: stored (nats-server's answer).
        if self.discard_new && !at_subject_limit {
            if let Some(max) = self.max_msgs {
                if self.msgs.len() as u64 >= max {
                    return PublishOutcome::Full;
                }
            }
        }
        self.last_seq += 1;
        let seq = self.last_seq;
        self.msgs.insert(
            seq,
            Stored {
                subject: subject.to_owned(),
                payload: payload.to_owned(),
            },
        );
        if let Some(id) = id {
            self.ids.insert(id.to_owned(), seq);
        }
        match rollup_all {
            Some(true) => self.msgs.retain(|s, _| *s >= seq),
            Some(false) => self.msgs.retain(|s, m| *s >= seq || m.subject != subject),
            None => {}
        }
        if let Some(max) = self.max_per_subject {
            let on: Vec<u64> = self
                .msgs
                .iter()
                .filter(|(_, m)| m.subject == subject)
                .map(|(s, _)| *s)
                .collect();
            for s in on.iter().take(on.len().saturating_sub(max as usize)) {
                self.msgs.remove(s);
            }
        }
        if !self.discard_new {
            if let Some(max) = self.max_msgs {
                while self.msgs.len() as u64 > max {
                    let first = *self.msgs.keys().next().unwrap_or(&0);
                    self.msgs.remove(&first);
                }
            }
        }
        PublishOutcome::Stored(seq)
    }

    fn purge(&mut self, req: &PurgeRequest) -> u64 {
        let matching: Vec<u64> = self
            .msgs
            .iter()
            .filter(|(_, m)| {
                req.subject
                    .as_deref()
                    .is_none_or(|f| durabus::subject::matches(f, &m.subject))
            })
            .map(|(s, _)| *s)
            .collect();
        let doomed: Vec<u64> = if let Some(keep) = req.keep {
            matching
                .iter()
                .take(matching.len().saturating_sub(keep as usize))
                .copied()
                .collect()
        } else if let Some(up_to) = req.up_to_seq {
            matching.into_iter().filter(|s| *s < up_to).collect()
        } else {
            matching
        };
        for s in &doomed {
            self.msgs.remove(s);
        }
        doomed.len() as u64
    }
}

const SUBJECTS: [&str; 4] = ["a", "b", "c.x", "c.y"];

/// What the runner does on `reopen` operations: close the bus and connect
/// to the same store again. `None` for backends that cannot reopen.
pub type NoReopen = fn(Bus) -> std::future::Ready<Bus>;

/// Applies `ops` random operations (from `seed`) to a fresh stream on
/// `bus` and to the model, comparing every answer. With `reopen`, some
/// operations close and reopen the store in between (file backends).
///
/// Panics with the seed and the last operations on the first disagreement.
pub async fn run<F, Fut>(mut bus: Bus, seed: u64, ops: usize, mut reopen: Option<F>) -> Bus
where
    F: FnMut(Bus) -> Fut,
    Fut: Future<Output = Bus>,
{
    let mut rng = StdRng::seed_from_u64(seed);
    let n = names("model");
    let stream = n.stream("M");
    let mut model = Model {
        max_msgs: rng
            .random_ratio(50, 100)
            .then(|| 5 + rng.random_range(0..40)),
        max_per_subject: rng
            .random_ratio(40, 100)
            .then(|| 1 + rng.random_range(0..5)),
        ..Model::default()
    };
    model.discard_new =
        (model.max_msgs.is_some() || model.max_per_subject.is_some()) && rng.random_ratio(30, 100);
    model.discard_new_per_subject =
        model.discard_new && model.max_per_subject.is_some() && rng.random_ratio(50, 100);
    // Rollup with discard new is left out: the oracle's answer there is
    // not pinned down. So is rollup under max_msgs: nats-server stores the
    // message, evicts the oldest (of any subject) to honour max_msgs, and
    // only then purges the subject, while the embedded engine purges first
    // and so evicts nothing; the model cannot hold both.
    model.allow_rollup =
        !model.discard_new && model.max_msgs.is_none() && rng.random_ratio(40, 100);
    let mut cfg = StreamConfig::new(stream.clone()).subjects([n.all()]);
    cfg.max_msgs = model.max_msgs;
    cfg.max_msgs_per_subject = model.max_per_subject;
    if model.discard_new {
        cfg.discard = DiscardPolicy::New;
    }
    cfg.discard_new_per_subject = model.discard_new_per_subject;
    cfg.allow_rollup = model.allow_rollup;
    if let Err(e) = bus.create_stream(cfg.clone()).await {
        panic!("model seed {seed}: create_stream({cfg:?}): {e}");
    }
    let mut log = String::new();
    let _ = writeln!(log, "config {cfg:?}");
    let subject = |rng: &mut StdRng| n.subject(SUBJECTS[rng.random_range(0..SUBJECTS.len())]);

    macro_rules! fail {
        ($($arg:tt)*) => {{
            let tail: Vec<&str> = log.lines().collect();
            let tail = tail[tail.len().saturating_sub(25)..].join("\n");
            panic!(
                "model seed {seed} (rerun with DURABUS_MODEL_SEED={seed}): {}\nlast operations:\n{tail}",
                format!($($arg)*)
            )
        }};
    }

    for op in 0..ops {
        let roll = rng.random_range(0..100);
        if roll < 45 {
            // publish, sometimes with a msg id or an expectation
            let s = subject(&mut rng);
            let payload = format!("p{op}");
            let mut msg = Message::new(s.clone(), payload.clone());
            let mut id = None;
            let (mut el, mut es, mut rollup) = (None, None, None);
            match rng.random_range(0..10) {
                0..=2 => {
                    let i = format!("id{}", rng.random_range(0..30));
                    msg = msg.with_msg_id(i.clone());
                    id = Some(i);
                }
                3 => {
                    let e = if rng.random_ratio(70, 100) {
                        model.last_seq
                    } else {
                        rng.random_range(0..model.last_seq + 3)
                    };
                    msg = msg.with_header(NATS_EXPECTED_LAST_SEQUENCE, e.to_string());
                    el = Some(e);
                }
                4 => {
                    let cur = model.last_on(&s);
                    let e = if rng.random_ratio(60, 100) {
                        cur
                    } else {
                        rng.random_range(0..model.last_seq + 3)
                    };
                    msg = msg.with_header(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, e.to_string());
                    es = Some(e);
                }
                5 if model.allow_rollup && rng.random_ratio(40, 100) => {
                    let all = rng.random_ratio(30, 100);
                    msg = msg.with_header(NATS_ROLLUP, if all { "all" } else { "sub" });
                    rollup = Some(all);
                }
                _ => {}
            }
            let _ = writeln!(
                log,
                "{op}: publish {s} {payload} id={id:?} expect_last={el:?} expect_subject={es:?} rollup_all={rollup:?}"
            );
            let got = bus.publish_message(msg).await;
            if let Some(i) = id.as_deref().filter(|i| model.uncertain_ids.contains(*i)) {
                // Backend-specific after a reopen: a duplicate answer means
                // it remembered the id; any other answer means it forgot it,
                // and the model then judges the publish as for a new id.
                if let Ok(Some(ack)) = &got {
                    if ack.duplicate {
                        if model.ids.get(i) != Some(&ack.seq) {
                            fail!("{i} remembered after reopen with another seq: {ack:?}");
                        }
                        continue;
                    }
                }
                model.uncertain_ids.remove(i);
                model.ids.remove(i);
            }
            match (
                model.publish(&s, &payload, id.as_deref(), el, es, rollup),
                got,
            ) {
                (PublishOutcome::Stored(seq), Ok(Some(ack)))
                    if ack.seq == seq && !ack.duplicate => {}
                (PublishOutcome::Duplicate(seq), Ok(Some(ack)))
                    if ack.seq == seq && ack.duplicate => {}
                (PublishOutcome::Full, Err(Error::StreamFull { .. })) => {}
                (
                    PublishOutcome::WrongLast { current },
                    Err(Error::WrongLastSequence { current: c, .. }),
                ) if c == current => {}
                (PublishOutcome::Stored(seq), got) => {
                    fail!("expected stored at {seq}, got {got:?}")
                }
                (PublishOutcome::Duplicate(seq), got) => {
                    fail!("expected duplicate of {seq}, got {got:?}")
                }
                (PublishOutcome::Full, got) => fail!("expected StreamFull, got {got:?}"),
                (PublishOutcome::WrongLast { current }, got) => {
                    fail!("expected WrongLastSequence current {current}, got {got:?}")
                }
            }
        } else if roll < 52 {
            let seq = model.delete_target(1 + rng.random_range(0..model.last_seq + 2));
            let _ = writeln!(log, "{op}: delete {seq}");
            let got = bus.delete_message(&stream, seq).await;
            match (model.msgs.remove(&seq).is_some(), got) {
                (true, Ok(())) | (false, Err(Error::MessageNotFound { .. })) => {}
                (present, got) => fail!("delete {seq} (present: {present}) gave {got:?}"),
            }
        } else if roll < 57 {
            let mut req = PurgeRequest::default();
            if rng.random_ratio(50, 100) {
                req.subject = Some(if rng.random_ratio(30, 100) {
                    n.subject("c.*")
                } else {
                    subject(&mut rng)
                });
            }
            // A stream-wide keep over deleted messages is left out:
            // nats-server 2.9 compacts by sequence there (keeping fewer than
            // asked), the NATS backend then purges by the stream's subject
            // instead, and that leaves the server's per-subject state wrong
            // (filtered reads skip messages, first_seq stays behind).
            match rng.random_range(0..3) {
                0 if req.subject.is_some() || model.num_deleted() == 0 => {
                    req.keep = Some(rng.random_range(0..4))
                }
                0 | 1 => req.up_to_seq = Some(1 + rng.random_range(0..model.last_seq + 1)),
                _ => {}
            }
            let _ = writeln!(log, "{op}: purge {req:?}");
            let want = model.purge(&req);
            match bus.purge_stream(&stream, req.clone()).await {
                Ok(got) if got == want => {}
                got => fail!("purge {req:?}: expected {want}, got {got:?}"),
            }
        } else if roll < 67 {
            let seq = 1 + rng.random_range(0..model.last_seq + 2);
            let _ = writeln!(log, "{op}: get {seq}");
            match (model.msgs.get(&seq), bus.get_message(&stream, seq).await) {
                (Some(m), Ok(got))
                    if got.seq == seq
                        && got.subject == m.subject
                        && got.payload == m.payload.as_bytes() => {}
                (None, Err(Error::MessageNotFound { .. })) => {}
                (want, got) => fail!("get {seq}: expected {want:?}, got {got:?}"),
            }
        } else if roll < 74 {
            let s = subject(&mut rng);
            let _ = writeln!(log, "{op}: get_last {s}");
            let want = model.last_on(&s);
            match bus.get_last_message(&stream, &s).await {
                Ok(got) if want != 0 && got.seq == want => {}
                Err(Error::MessageNotFound { .. }) if want == 0 => {}
                got => fail!("get_last {s}: expected seq {want}, got {got:?}"),
            }
        } else if roll < 84 {
            let _ = writeln!(log, "{op}: info");
            let st = match bus.stream_info(&stream).await {
                Ok(i) => i.state,
                Err(e) => fail!("stream_info: {e}"),
            };
            let count = model.msgs.len() as u64;
            let subjects: BTreeSet<&str> =
                model.msgs.values().map(|m| m.subject.as_str()).collect();
            let first_ok = match model.first_seq() {
                Some(f) => st.first_seq == f,
                None => st.first_seq <= 1,
            };
            let deleted = model.num_deleted();
            if st.messages != count
                || st.last_seq != model.last_seq
                || !first_ok
                || st.num_subjects != subjects.len() as u64
                || st.num_deleted != deleted
            {
                fail!(
                    "state {st:?}; model: messages {count}, first {:?}, last {}, subjects {}, deleted {deleted}",
                    model.first_seq(),
                    model.last_seq,
                    subjects.len()
                );
            }
        } else if roll < 96 || reopen.is_none() {
            let from = 1 + rng.random_range(0..model.last_seq + 2);
            let filter = if rng.random_ratio(40, 100) {
                Some(if rng.random_ratio(30, 100) {
                    n.subject("c.*")
                } else {
                    subject(&mut rng)
                })
            } else {
                None
            };
            let _ = writeln!(log, "{op}: replay from {from} filter {filter:?}");
            let mut opts = ReplayOptions::from_seq(from).stop_at_end();
            opts.filter = filter.clone();
            let want: Vec<u64> = model
                .msgs
                .iter()
                .filter(|(s, m)| {
                    **s >= from
                        && filter
                            .as_deref()
                            .is_none_or(|f| durabus::subject::matches(f, &m.subject))
                })
                .map(|(s, _)| *s)
                .collect();
            let mut got = Vec::new();
            match bus.replay(&stream, opts).await {
                Ok(mut r) => loop {
                    match tokio::time::timeout(WAIT, r.next()).await {
                        Ok(Some(Ok(m))) => got.push(m.seq),
                        Ok(None) => break,
                        other => fail!(
                            "replay item: {:?}",
                            other.map(|o| o.map(|r| r.map(|m| m.seq)))
                        ),
                    }
                },
                Err(e) => fail!("replay: {e}"),
            }
            if got != want {
                fail!("replay from {from} filter {filter:?}: expected {want:?}, got {got:?}");
            }
        } else if let Some(reopen) = reopen.as_mut() {
            let _ = writeln!(log, "{op}: reopen");
            bus = reopen(bus).await;
            // Which msg ids a backend remembers after a restart for
            // messages no longer stored differs (JetStream forgets them).
            for (id, seq) in &model.ids {
                if !model.msgs.contains_key(seq) {
                    model.uncertain_ids.insert(id.clone());
                }
            }
            tokio::time::sleep(Duration::from_millis(0)).await;
        }
    }
    bus
}

/// The text of a panic payload.
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(p) => match p.downcast::<&'static str>() {
            Ok(s) => (*s).to_owned(),
            Err(_) => "<non-text panic>".to_owned(),
        },
    }
}

/// Runs every seed of [`seeds`] as its own task, each on the bus `make`
/// returns for it (with `reopen` when given), and panics at the end listing
/// every failing seed, so one failure does not hide the others.
pub async fn run_all<M, MF, F, Fut>(ops: usize, mut make: M, reopen: Option<F>)
where
    M: FnMut(u64) -> MF,
    MF: Future<Output = Bus> + Send + 'static,
    F: FnMut(Bus) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = Bus> + Send + 'static,
{
    let seeds = seeds();
    let total = seeds.len();
    let mut failures = Vec::new();
    for seed in seeds {
        let bus = make(seed);
        let reopen = reopen.clone();
        let task = tokio::spawn(async move {
            let bus = bus.await;
            run(bus, seed, ops, reopen).await
        });
        if let Err(e) = task.await {
            if e.is_panic() {
                failures.push(panic_text(e.into_panic()));
            } else {
                failures.push(format!("seed {seed}: task cancelled"));
            }
        }
    }
    if !failures.is_empty() {
        panic!(
            "{} of {total} model seeds failed:\n\n{}",
            failures.len(),
            failures.join("\n\n")
        );
    }
}
