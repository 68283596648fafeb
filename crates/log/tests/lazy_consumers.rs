//! Durable consumers of a limits stream are loaded on first use
//! (docs/design.md, "Consumers loaded on first use"): opening a stream
//! reads no consumer file, counting consumers loads none, the first
//! operation naming a consumer loads it exactly once and finds it exactly
//! as an open that loaded it would have, operations over every consumer
//! load them all, and interest and work-queue streams still load every
//! consumer at open (their retention needs each position).
//!
//! That nothing was read is seen on disk: a journal ending in bytes that
//! do not verify (a torn write) is cut when its consumer loads on a
//! writable store, so a journal still holding them was not loaded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::*;
use durabus_core::{
    AckKind, AckRef, Backend, ConsumerConfig, Delivery, Error, RetentionPolicy, StreamConfig,
};
use durabus_log::Store;

const NOW: Duration = Duration::from_millis(1);
/// Bytes appended to journals: not a valid entry (a torn write).
const TORN: &[u8] = b"\xff\xff\xff\x7f torn";

fn state_file(dir: &Path, stream: &str, c: &str) -> PathBuf {
    dir.join("streams").join(stream).join("consumers").join(c)
}

fn journal(dir: &Path, stream: &str, c: &str) -> PathBuf {
    dir.join("streams")
        .join(stream)
        .join("consumer-journals")
        .join(c)
}

fn append(path: &Path, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(bytes).unwrap();
}

/// Whether consumer `c`'s journal still ends in [`TORN`] (it was not loaded).
fn unloaded(dir: &Path, stream: &str, c: &str) -> bool {
    std::fs::read(journal(dir, stream, c))
        .unwrap()
        .ends_with(TORN)
}

fn seqs(d: &[Delivery]) -> Vec<u64> {
    d.iter().map(|d| d.stream_seq()).collect()
}

fn names(list: &[durabus_core::ConsumerInfo]) -> Vec<String> {
    list.iter().map(|c| c.name.clone()).collect()
}

/// Checks invariant 19 (docs/design.md) and the open cost of issue #26.
#[tokio::test]
async fn a_stream_with_many_durable_consumers_opens_and_counts_them_without_reading_their_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let n = 2000;
    let name = |i: usize| format!("c{i:04}");
    {
        let s = open(dir);
        stream(&s, StreamConfig::new("S").subjects(["s.>"])).await;
        for i in 0..3 {
            publish(&s, &format!("s.{i}"), "x").await;
        }
        for i in 0..n {
            s.create_consumer("S", ConsumerConfig::durable(name(i)))
                .await
                .unwrap();
        }
        s.close().await.unwrap();
    }
    // One state file damaged by hand; every journal given a torn tail.
    let broken = state_file(dir, "S", &name(500));
    let mut b = std::fs::read(&broken).unwrap();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    std::fs::write(&broken, &b).unwrap();
    for i in 0..n {
        append(&journal(dir, "S", &name(i)), TORN);
    }

    let s = open(dir);
    let info = s.stream_info("S").await.unwrap();
    assert_eq!(info.state.messages, 3);
    // Every consumer is counted, the damaged one too: nothing was read.
    assert_eq!(info.state.consumer_count, n as u64);
    // The stream was recovered (its consumers listed), yet no consumer
    // loaded; the first one named loads (its torn tail is cut), alone.
    let c1 = s.consumer_info("S", &name(1)).await.unwrap();
    assert_eq!(c1.num_pending, 3);
    assert!(!unloaded(dir, "S", &name(1)));
    for i in (0..n).filter(|i| *i != 1) {
        assert!(unloaded(dir, "S", &name(i)), "{} was loaded", name(i));
    }
    // The damaged one is unavailable when named, naming its file.
    let err = s.consumer_info("S", &name(500)).await.unwrap_err();
    assert!(
        matches!(&err, Error::ConsumerUnavailable { name: c, reason, .. }
            if *c == name(500) && reason.contains(&broken.display().to_string())),
        "{err}"
    );
    assert_eq!(
        s.stream_info("S").await.unwrap().state.consumer_count,
        n as u64 - 1
    );
    assert!(unloaded(dir, "S", &name(2)));
    s.close().await.unwrap();

    // A fresh open: the report loads every consumer and names the damaged one.
    let s = open(dir);
    assert_eq!(
        s.stream_info("S").await.unwrap().state.consumer_count,
        n as u64
    );
    let report = s.recovery_report();
    assert_eq!(report.unavailable.len(), 1, "{:?}", report.unavailable);
    assert_eq!(
        (
            report.unavailable[0].stream.as_str(),
            report.unavailable[0].consumer.as_deref()
        ),
        ("S", Some(name(500).as_str()))
    );
    assert_eq!(s.unavailable(), report.unavailable);
    assert_eq!(s.recovery_report().unavailable, report.unavailable);
    for i in (0..n).filter(|i| *i != 500) {
        assert!(!unloaded(dir, "S", &name(i)), "{} not loaded", name(i));
    }
    assert_eq!(
        s.stream_info("S").await.unwrap().state.consumer_count,
        n as u64 - 1
    );
    s.close().await.unwrap();
    // Nothing was written over the damaged file.
    assert_eq!(std::fs::read(&broken).unwrap(), b);
}

/// The directory every by-name test starts from: stream S (`a.>`, `b.>`,
/// 6 messages) and durable consumers `c` (delivered 1-4 and 2 again; 1 and
/// 3 acked; 2 and 4 pending, 2 delivered twice), `d` (untouched) and `e`
/// (filter `b.>`, delivered 2). `crash`: the directory is a copy taken
/// while the store ran (its journals hold the state), else a clean close.
/// Returns the delivery of 4 (pending) and of 1 (settled).
async fn base(dir: &Path, crash: bool) -> (AckRef, AckRef) {
    let live = tempfile::tempdir().unwrap();
    let s = open(live.path());
    stream(&s, StreamConfig::new("S").subjects(["a.>", "b.>"])).await;
    for i in 0..6 {
        let subj = if i % 2 == 0 { "a.x" } else { "b.x" };
        publish(&s, subj, format!("m{}", i + 1)).await;
    }
    let hour = Duration::from_secs(3600);
    s.create_consumer("S", ConsumerConfig::durable("c").ack_wait(hour))
        .await
        .unwrap();
    s.create_consumer("S", ConsumerConfig::durable("d").ack_wait(hour))
        .await
        .unwrap();
    s.create_consumer(
        "S",
        ConsumerConfig::durable("e")
            .ack_wait(hour)
            .filter_subject("b.>"),
    )
    .await
    .unwrap();
    let d = s.fetch("S", "c", 4, NOW).await.unwrap();
    assert_eq!(seqs(&d), [1, 2, 3, 4]);
    s.ack_confirmed(&d[0].ack, AckKind::Ack).await.unwrap();
    s.ack(&d[1].ack, AckKind::Nak(None)).await.unwrap();
    let again = s.fetch("S", "c", 1, NOW).await.unwrap();
    assert_eq!((seqs(&again), again[0].delivered()), (vec![2], 2));
    s.ack_confirmed(&d[2].ack, AckKind::Ack).await.unwrap();
    assert_eq!(seqs(&s.fetch("S", "e", 1, NOW).await.unwrap()), [2]);
    if crash {
        copy_dir(live.path(), dir);
        drop(s);
    } else {
        s.close().await.unwrap();
        copy_dir(live.path(), dir);
    }
    (d[3].ack.clone(), d[0].ack.clone())
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Info,
    Fetch,
    Ack,
    AckSettled,
    AckConfirmed,
    Nak,
    Term,
    InProgress,
    Update,
    CreateSame,
    CreateOther,
    Delete,
    List,
}

const OPS: [Op; 13] = [
    Op::Info,
    Op::Fetch,
    Op::Ack,
    Op::AckSettled,
    Op::AckConfirmed,
    Op::Nak,
    Op::Term,
    Op::InProgress,
    Op::Update,
    Op::CreateSame,
    Op::CreateOther,
    Op::Delete,
    Op::List,
];

/// Runs `op` on consumer `c` as its first use; its answer, as text.
async fn run(s: &Store, op: Op, pending: &AckRef, settled: &AckRef) -> String {
    let hour = Duration::from_secs(3600);
    let out = match op {
        Op::Info => format!("{:?}", s.consumer_info("S", "c").await),
        Op::Fetch => format!("{:?}", s.fetch("S", "c", 10, NOW).await),
        Op::Ack => format!("{:?}", s.ack(pending, AckKind::Ack).await),
        Op::AckSettled => format!("{:?}", s.ack(settled, AckKind::Ack).await),
        Op::AckConfirmed => format!("{:?}", s.ack_confirmed(pending, AckKind::Ack).await),
        Op::Nak => format!("{:?}", s.ack(pending, AckKind::Nak(None)).await),
        Op::Term => format!("{:?}", s.ack(pending, AckKind::Term).await),
        Op::InProgress => format!("{:?}", s.ack(pending, AckKind::InProgress).await),
        Op::Update => format!(
            "{:?}",
            s.update_consumer(
                "S",
                ConsumerConfig::durable("c").ack_wait(hour).max_deliver(9)
            )
            .await
        ),
        Op::CreateSame => format!(
            "{:?}",
            s.create_consumer("S", ConsumerConfig::durable("c").ack_wait(hour))
                .await
        ),
        Op::CreateOther => format!(
            "{:?}",
            s.create_consumer("S", ConsumerConfig::durable("c").max_deliver(3))
                .await
        ),
        Op::Delete => format!("{:?}", s.delete_consumer("S", "c").await),
        Op::List => format!("{:?}", s.list_consumers("S").await),
    };
    // Nak(None) makes 4 due at once: what fetches next shows it.
    let next = s.fetch("S", "c", 10, NOW).await.map(|d| {
        d.iter()
            .map(|d| (d.stream_seq(), d.delivered()))
            .collect::<Vec<_>>()
    });
    format!("{out}\nthen fetch: {next:?}")
}

/// Every consumer's info and the stream's consumer count, as text.
async fn state(s: &Store) -> String {
    let count = s.stream_info("S").await.unwrap().state.consumer_count;
    format!("{count} {:?}", s.list_consumers("S").await.unwrap())
}

/// Checks invariants 18 and 19 (docs/design.md): an operation naming a
/// consumer not loaded yet answers exactly as on one an open loaded, and
/// leaves the same state, in memory and after a reopen; after a clean
/// close and after a crash.
#[tokio::test]
async fn every_by_name_operation_on_an_unloaded_consumer_answers_as_on_a_loaded_one() {
    for crash in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("base");
        let (pending, settled) = base(&src, crash).await;
        for op in OPS {
            let mut seen = Vec::new();
            for preload in [true, false] {
                let dir = tmp.path().join(format!("{op:?}-{preload}"));
                copy_dir(&src, &dir);
                let s = open(&dir);
                if preload {
                    // Loads every consumer, as an open used to.
                    s.list_consumers("S").await.unwrap();
                } else {
                    assert_eq!(s.stream_info("S").await.unwrap().state.consumer_count, 3);
                }
                let answer = run(&s, op, &pending, &settled).await;
                let after = state(&s).await;
                s.close().await.unwrap();
                let s = open(&dir);
                let reopened = state(&s).await;
                s.close().await.unwrap();
                seen.push((answer, after, reopened));
            }
            assert_eq!(
                seen[0], seen[1],
                "{op:?} (crash {crash}): loaded at open vs on first use"
            );
        }
    }
}

/// Checks invariant 18 (docs/design.md): a consumer first used after a
/// reopen resumes exactly: ack floor, pending entries and their delivery
/// counts, after a clean close and after a crash.
#[tokio::test]
async fn an_unloaded_consumer_resumes_its_ack_floor_pending_and_delivery_counts() {
    for crash in [false, true] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("d");
        base(&dir, crash).await;
        let s = open(&dir);
        let i = s.consumer_info("S", "c").await.unwrap();
        assert_eq!(
            (i.delivered.stream_seq, i.ack_floor.stream_seq),
            (4, 1),
            "crash {crash}"
        );
        assert_eq!(
            (i.num_ack_pending, i.num_redelivered, i.num_pending),
            (2, 1, 2),
            "crash {crash}"
        );
        let next = s.fetch("S", "c", 10, NOW).await.unwrap();
        assert_eq!(seqs(&next), [5, 6], "crash {crash}");
        s.close().await.unwrap();
    }
}

/// Idempotent create compares with the stored config, also for a
/// consumer not loaded yet.
#[tokio::test]
async fn creating_an_unloaded_consumer_again_compares_with_its_stored_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    base(&dir, false).await;
    let s = open(&dir);
    let hour = Duration::from_secs(3600);
    let again = s
        .create_consumer("S", ConsumerConfig::durable("c").ack_wait(hour))
        .await
        .unwrap();
    assert_eq!(again.delivered.stream_seq, 4);
    assert_eq!(again.num_ack_pending, 2);
    let err = s
        .create_consumer("S", ConsumerConfig::durable("d").max_deliver(3))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ConsumerNameInUse { .. }), "{err}");
    assert_eq!(
        s.consumer_info("S", "d").await.unwrap().config.max_deliver,
        None
    );
    s.close().await.unwrap();
}

/// A delete of a consumer not loaded yet removes its files; it does not
/// come back, in this session or after a reopen, and the count follows.
#[tokio::test]
async fn deleting_an_unloaded_consumer_removes_it_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    base(&dir, false).await;
    let s = open(&dir);
    s.delete_consumer("S", "c").await.unwrap();
    assert!(!state_file(&dir, "S", "c").exists());
    assert!(!journal(&dir, "S", "c").exists());
    let err = s.consumer_info("S", "c").await.unwrap_err();
    assert!(matches!(err, Error::ConsumerNotFound { .. }), "{err}");
    let err = s.delete_consumer("S", "c").await.unwrap_err();
    assert!(matches!(err, Error::ConsumerNotFound { .. }), "{err}");
    assert_eq!(s.stream_info("S").await.unwrap().state.consumer_count, 2);
    assert_eq!(names(&s.list_consumers("S").await.unwrap()), ["d", "e"]);
    s.close().await.unwrap();
    let s = open(&dir);
    assert_eq!(s.stream_info("S").await.unwrap().state.consumer_count, 2);
    let err = s.consumer_info("S", "c").await.unwrap_err();
    assert!(matches!(err, Error::ConsumerNotFound { .. }), "{err}");
    assert_eq!(names(&s.list_consumers("S").await.unwrap()), ["d", "e"]);
    // A new consumer of that name starts afresh.
    let c = s
        .create_consumer("S", ConsumerConfig::durable("c"))
        .await
        .unwrap();
    assert_eq!((c.delivered.stream_seq, c.num_pending), (0, 6));
    s.close().await.unwrap();
}

/// Listing loads every consumer and lists each with its state.
#[tokio::test]
async fn listing_consumers_loads_and_lists_every_one() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("d");
    base(&dir, false).await;
    for c in ["c", "d", "e"] {
        append(&journal(&dir, "S", c), TORN);
    }
    let s = open(&dir);
    let list = s.list_consumers("S").await.unwrap();
    assert_eq!(names(&list), ["c", "d", "e"]);
    let pending: Vec<(u64, u64)> = list
        .iter()
        .map(|c| (c.delivered.stream_seq, c.num_ack_pending))
        .collect();
    assert_eq!(pending, [(4, 2), (0, 0), (2, 1)]);
    for c in ["c", "d", "e"] {
        assert!(!unloaded(&dir, "S", c), "{c}");
    }
    s.close().await.unwrap();
}

/// Checks invariant 21 (docs/design.md): interest and work-queue streams
/// load every consumer at open, so retention re-derived at open sees each
/// one's acknowledgements (here confirmed before a crash whose image has
/// the messages back).
#[tokio::test]
async fn interest_and_work_queue_streams_apply_retention_at_open_with_every_consumer() {
    for retention in [RetentionPolicy::Interest, RetentionPolicy::WorkQueue] {
        let tmp = tempfile::tempdir().unwrap();
        let image = tmp.path().join("image");
        {
            let live = tmp.path().join("live");
            let s = open(&live);
            let cfg = StreamConfig::new("R")
                .subjects(["r.>"])
                .retention(retention);
            stream(&s, cfg).await;
            for c in ["a", "b"] {
                s.create_consumer(
                    "R",
                    ConsumerConfig::durable(c).filter_subject(format!("r.{c}")),
                )
                .await
                .unwrap();
            }
            for subj in ["r.a", "r.b", "r.a", "r.b"] {
                publish(&s, subj, "x").await;
            }
            // Checkpointed with all four, then a's two acknowledged: the
            // removals are in memory and in a's journal only.
            s.close().await.unwrap();
            let s = open(&live);
            let d = s.fetch("R", "a", 10, NOW).await.unwrap();
            assert_eq!(seqs(&d), [1, 3], "{retention:?}");
            for x in &d {
                s.ack_confirmed(&x.ack, AckKind::Ack).await.unwrap();
            }
            assert_eq!(s.stream_info("R").await.unwrap().state.messages, 2);
            copy_dir(&live, &image);
            drop(s);
        }
        for c in ["a", "b"] {
            append(&journal(&image, "R", c), TORN);
        }
        let s = open(&image);
        // The first thing asked is the stream's state: both consumers were
        // loaded when it opened, and a's acks removed its messages again.
        let info = s.stream_info("R").await.unwrap().state;
        assert_eq!(
            (info.messages, info.consumer_count),
            (2, 2),
            "{retention:?}"
        );
        for c in ["a", "b"] {
            assert!(!unloaded(&image, "R", c), "{retention:?}: {c}");
        }
        assert_eq!(
            seqs(&s.fetch("R", "b", 10, NOW).await.unwrap()),
            [2, 4],
            "{retention:?}"
        );
        s.close().await.unwrap();
    }
}

/// Checks invariant 21 (docs/design.md): a limits stream updated to
/// interest retention loads every consumer before acknowledgements remove
/// anything, so a message one not used since the open still needs stays.
#[tokio::test]
async fn a_limits_stream_updated_to_interest_loads_every_consumer_first() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cfg = StreamConfig::new("R").subjects(["r.>"]);
    {
        let s = open(dir);
        stream(&s, cfg.clone()).await;
        for (c, filter) in [("all", None), ("b", Some("r.b")), ("c", Some("r.c"))] {
            let mut cc = ConsumerConfig::durable(c);
            if let Some(f) = filter {
                cc = cc.filter_subject(f);
            }
            s.create_consumer("R", cc).await.unwrap();
        }
        for subj in ["r.a", "r.b", "r.a", "r.b"] {
            publish(&s, subj, "x").await;
        }
        s.close().await.unwrap();
    }
    for c in ["all", "b", "c"] {
        append(&journal(dir, "R", c), TORN);
    }
    let s = open(dir);
    s.update_stream(cfg.retention(RetentionPolicy::Interest))
        .await
        .unwrap();
    for c in ["all", "b", "c"] {
        assert!(!unloaded(dir, "R", c), "{c}");
    }
    // b's acks leave its messages to `all`, which has not read them.
    let d = s.fetch("R", "b", 10, NOW).await.unwrap();
    assert_eq!(seqs(&d), [2, 4]);
    for x in &d {
        s.ack_confirmed(&x.ack, AckKind::Ack).await.unwrap();
    }
    assert_eq!(s.stream_info("R").await.unwrap().state.messages, 4);
    // Once `all` has acknowledged them too, nothing is left.
    let d = s.fetch("R", "all", 10, NOW).await.unwrap();
    assert_eq!(seqs(&d), [1, 2, 3, 4]);
    for x in &d {
        s.ack_confirmed(&x.ack, AckKind::Ack).await.unwrap();
    }
    assert_eq!(s.stream_info("R").await.unwrap().state.messages, 0);
    s.close().await.unwrap();
}

/// Several threads using one consumer first at once load it once: every
/// message is delivered once, and the consumer's state counts them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_use_of_an_unloaded_consumer_loads_it_once() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("base");
    {
        let s = open(&src);
        stream(&s, StreamConfig::new("S").subjects(["s.>"])).await;
        for i in 0..68 {
            publish(&s, &format!("s.{i}"), "x").await;
        }
        s.create_consumer(
            "S",
            ConsumerConfig::durable("c").ack_wait(Duration::from_secs(3600)),
        )
        .await
        .unwrap();
        // Some state to restore: 1-4 delivered, 1 acknowledged.
        let d = s.fetch("S", "c", 4, NOW).await.unwrap();
        s.ack_confirmed(&d[0].ack, AckKind::Ack).await.unwrap();
        s.close().await.unwrap();
    }
    append(&journal(&src, "S", "c"), TORN);
    for round in 0..10 {
        let dir = tmp.path().join(format!("r{round}"));
        copy_dir(&src, &dir);
        let s = open(&dir);
        s.stream_info("S").await.unwrap();
        assert!(unloaded(&dir, "S", "c"));
        let start = Arc::new(tokio::sync::Barrier::new(8));
        let mut tasks = Vec::new();
        for t in 0..8 {
            let (s, start) = (s.clone(), start.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let mut got = Vec::new();
                if t % 2 == 0 {
                    // The other half names it another way first.
                    s.consumer_info("S", "c").await.unwrap();
                }
                for _ in 0..4 {
                    for d in s.fetch("S", "c", 2, NOW).await.unwrap() {
                        got.push(d.stream_seq());
                    }
                }
                got
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        all.sort_unstable();
        assert_eq!(all, (5..=68).collect::<Vec<u64>>(), "round {round}");
        let i = s.consumer_info("S", "c").await.unwrap();
        assert_eq!(
            (
                i.delivered.stream_seq,
                i.ack_floor.stream_seq,
                i.num_ack_pending
            ),
            (68, 1, 67),
            "round {round}"
        );
        s.close().await.unwrap();
        let s = open(&dir);
        let again = s.consumer_info("S", "c").await.unwrap();
        assert_eq!((again.delivered, again.num_ack_pending), (i.delivered, 67));
        s.close().await.unwrap();
    }
}

/// A delete racing the first use of a consumer not loaded yet: every use
/// either finds it as it was or finds it gone, and once deleted it stays
/// deleted (no load brings it back, not after a reopen either).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_delete_racing_the_first_use_of_an_unloaded_consumer_is_final() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("base");
    let (pending, _) = base(&src, false).await;
    for round in 0..10 {
        let dir = tmp.path().join(format!("r{round}"));
        copy_dir(&src, &dir);
        let s = open(&dir);
        s.stream_info("S").await.unwrap();
        let start = Arc::new(tokio::sync::Barrier::new(6));
        let mut tasks = Vec::new();
        for t in 0..6 {
            let (s, start, pending) = (s.clone(), start.clone(), pending.clone());
            tasks.push(tokio::spawn(async move {
                start.wait().await;
                let r = match t {
                    0 => s.delete_consumer("S", "c").await.map(|()| 0),
                    1 => s
                        .consumer_info("S", "c")
                        .await
                        .map(|i| i.delivered.stream_seq),
                    2 => s.ack_confirmed(&pending, AckKind::Ack).await.map(|()| 0),
                    3 => s.ack(&pending, AckKind::Nak(None)).await.map(|()| 0),
                    _ => s.fetch("S", "c", 1, NOW).await.map(|d| d.len() as u64),
                };
                match r {
                    Ok(_) | Err(Error::ConsumerNotFound { .. }) => {}
                    Err(e) => panic!("task {t}: {e}"),
                }
                t
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let err = s.consumer_info("S", "c").await.unwrap_err();
        assert!(matches!(err, Error::ConsumerNotFound { .. }), "{err}");
        assert_eq!(names(&s.list_consumers("S").await.unwrap()), ["d", "e"]);
        assert!(!state_file(&dir, "S", "c").exists(), "round {round}");
        s.close().await.unwrap();
        assert!(!state_file(&dir, "S", "c").exists(), "round {round}");
        let s = open(&dir);
        assert_eq!(s.stream_info("S").await.unwrap().state.consumer_count, 2);
        assert_eq!(names(&s.list_consumers("S").await.unwrap()), ["d", "e"]);
        s.close().await.unwrap();
    }
}

/// A durable consumer with an `inactive_threshold` that nothing loads is
/// not removed (whether it has a threshold is in its file); its clock
/// counts from the stream's open, so once something loads it after its
/// threshold, the next maintenance tick removes it.
#[tokio::test]
async fn an_unloaded_durable_with_an_inactive_threshold_goes_once_loaded_after_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let s = open(dir);
        stream(&s, StreamConfig::new("S").subjects(["s.>"])).await;
        s.create_consumer(
            "S",
            ConsumerConfig::durable("idle").inactive_threshold(Duration::from_millis(300)),
        )
        .await
        .unwrap();
        s.close().await.unwrap();
    }
    let s = open(dir);
    s.stream_info("S").await.unwrap();
    tokio::time::sleep(Duration::from_millis(600)).await;
    // Not loaded: still there, untouched.
    assert!(state_file(dir, "S", "idle").exists());
    assert_eq!(s.stream_info("S").await.unwrap().state.consumer_count, 1);
    // Loaded now, idle since the open: the next tick removes it.
    let _ = s.consumer_info("S", "idle").await;
    tokio::time::sleep(Duration::from_millis(400)).await;
    let err = s.consumer_info("S", "idle").await.unwrap_err();
    assert!(matches!(err, Error::ConsumerNotFound { .. }), "{err}");
    assert!(!state_file(dir, "S", "idle").exists());
    s.close().await.unwrap();
}

/// Whether `consumers/` of `stream` still holds the stray `zz.tmp` (a
/// listing of it by a writable store removes it).
fn unlisted(dir: &Path, stream: &str) -> bool {
    state_file(dir, stream, "zz.tmp").exists()
}

/// Checks invariant 19 (docs/design.md): a limits stream whose catalog
/// summary is trusted counts its consumers from it and lists `consumers/`
/// only when a consumer is first used; one marked (a crash image) lists
/// it when it opens. Either way every operation finds what it would have.
#[tokio::test]
async fn consumers_are_listed_on_first_use_when_the_catalog_counts_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        let s = open(dir);
        stream(&s, StreamConfig::new("S").subjects(["s.>"])).await;
        publish(&s, "s.1", "x").await;
        for c in ["a", "b", "c"] {
            s.create_consumer("S", ConsumerConfig::durable(c))
                .await
                .unwrap();
        }
        s.close().await.unwrap();
    }
    std::fs::write(state_file(dir, "S", "zz.tmp"), b"left by a cut write").unwrap();
    // A crash image: the stream was marked, so its open lists consumers/.
    let crash = tempfile::tempdir().unwrap();
    {
        let s = open(dir);
        s.stream_info("S").await.unwrap();
        copy_dir(dir, crash.path());
        std::fs::remove_file(crash.path().join("LOCK")).unwrap();
        // The live store counted from the summary: nothing listed.
        assert!(unlisted(dir, "S"));
        drop(s);
    }
    let s = open(crash.path());
    assert_eq!(s.stream_info("S").await.unwrap().state.consumer_count, 3);
    assert!(!unlisted(crash.path(), "S"));
    s.close().await.unwrap();
    // A clean close: counted from the summary until a consumer is named.
    std::fs::remove_file(dir.join("LOCK")).ok();
    for first in ["info", "delete", "create", "list"] {
        let work = tempfile::tempdir().unwrap();
        copy_dir(dir, work.path());
        let s = open(work.path());
        assert_eq!(s.stream_info("S").await.unwrap().state.consumer_count, 3);
        assert!(unlisted(work.path(), "S"), "{first}");
        let want = match first {
            "info" => {
                assert_eq!(s.consumer_info("S", "b").await.unwrap().name, "b");
                3
            }
            "delete" => {
                s.delete_consumer("S", "b").await.unwrap();
                assert!(matches!(
                    s.consumer_info("S", "b").await,
                    Err(Error::ConsumerNotFound { .. })
                ));
                2
            }
            "create" => {
                s.create_consumer("S", ConsumerConfig::durable("d"))
                    .await
                    .unwrap();
                4
            }
            _ => {
                let all = s.list_consumers("S").await.unwrap();
                assert_eq!(names(&all), ["a", "b", "c"]);
                3
            }
        };
        assert!(!unlisted(work.path(), "S"), "{first}");
        assert_eq!(s.stream_info("S").await.unwrap().state.consumer_count, want);
        s.close().await.unwrap();
        let s = open(work.path());
        assert_eq!(
            s.list_consumers("S").await.unwrap().len() as u64,
            want,
            "{first}"
        );
        s.close().await.unwrap();
    }
}
