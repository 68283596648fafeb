//! The workload of the power-loss (R2) and I/O-error (R5) tests, and the
//! check of a store reopened after it: nothing acknowledged lost, what is
//! stored a gap-free prefix of the publishes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, missing_docs)]

use std::path::Path;
use std::time::Duration;

use durabus_core::{
    AckKind, Backend, ConsumerConfig, Error, Message, PurgeRequest, ReplayOptions, StreamConfig,
};
use durabus_log::{Durability, Options, Store};

pub(crate) const PUBLISHES: u64 = 40;
pub(crate) const STREAM: &str = "S";
/// The workload's purge removes the messages below this seq (and with
/// them the first segments).
pub(crate) const PURGE_BELOW: u64 = 10;

/// What the workload saw acknowledged before the power went.
#[derive(Debug, Default)]
pub(crate) struct Acked {
    pub(crate) stream: bool,
    /// Publishes acknowledged: 1..=publishes (seq i carries publish i).
    pub(crate) publishes: u64,
    pub(crate) consumer: bool,
    /// Stream seqs whose consumer acks were confirmed.
    pub(crate) consumer_acks: Vec<u64>,
    pub(crate) deleted: bool,
    pub(crate) purged: bool,
    pub(crate) completed: bool,
}

pub(crate) fn payload(i: u64) -> String {
    format!(
        "publish {i:03} {}",
        "x".repeat(usize::try_from(i % 7 * 20).unwrap())
    )
}

pub(crate) fn options(d: Durability) -> Options {
    Options::default().durability(d).segment_size(600)
}

pub(crate) async fn workload(store: &Store) -> Acked {
    let mut acked = Acked::default();
    if store
        .create_stream(StreamConfig::new(STREAM).subjects(["s.>"]))
        .await
        .is_err()
    {
        return acked;
    }
    acked.stream = true;
    for i in 1..=PUBLISHES {
        match store
            .publish(Message::new(format!("s.{}", i % 3), payload(i)))
            .await
        {
            Ok(Some(ack)) => {
                assert_eq!(ack.seq, i, "publish {i} got seq {}", ack.seq);
                acked.publishes = i;
            }
            _ => return acked,
        }
    }
    let cfg = ConsumerConfig::durable("c").ack_wait(Duration::from_secs(60));
    if store.create_consumer(STREAM, cfg).await.is_err() {
        return acked;
    }
    acked.consumer = true;
    let Ok(got) = store.fetch(STREAM, "c", 5, Duration::from_millis(10)).await else {
        return acked;
    };
    for d in &got {
        if store.ack_confirmed(&d.ack, AckKind::Ack).await.is_err() {
            return acked;
        }
        acked.consumer_acks.push(d.ack.stream_seq);
    }
    if store.delete_message(STREAM, 3).await.is_err() {
        return acked;
    }
    acked.deleted = true;
    let purge = PurgeRequest {
        up_to_seq: Some(PURGE_BELOW),
        ..PurgeRequest::default()
    };
    if store.purge_stream(STREAM, purge).await.is_err() {
        return acked;
    }
    acked.purged = true;
    if store.close().await.is_err() {
        return acked;
    }
    acked.completed = true;
    acked
}

/// Stored messages of the stream as (seq, payload).
pub(crate) async fn stored(store: &Store) -> Vec<(u64, String)> {
    let mut replay = store
        .replay(STREAM, ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(m) = replay.next().await {
        let m = m.unwrap();
        out.push((m.seq, String::from_utf8(m.payload.to_vec()).unwrap()));
    }
    out
}

/// Reopens the image in `dir` and checks it against `acked`.
pub(crate) async fn check(dir: &Path, durability: Durability, acked: &Acked, what: &str) {
    let store = match Store::open(dir, options(durability)) {
        Ok(s) => s,
        Err(e) => panic!("{what}: the store does not open after the power loss: {e}"),
    };
    let always = durability == Durability::Always;
    let info = match store.stream_info(STREAM).await {
        Ok(info) => Some(info),
        Err(Error::StreamNotFound { .. }) if !(always && acked.stream) => None,
        Err(e) => panic!("{what}: stream info: {e}"),
    };
    if let Some(info) = info {
        let msgs = stored(&store).await;
        // Every stored message is the publish of its seq, intact.
        for (seq, p) in &msgs {
            assert_eq!(p, &payload(*seq), "{what}: seq {seq} holds another payload");
        }
        let seqs: Vec<u64> = msgs.iter().map(|m| m.0).collect();
        let last = seqs.last().copied().unwrap_or(0);
        // The purge is all or nothing.
        let lo = seqs.first().copied().unwrap_or(1);
        assert!(
            lo == 1 || lo == PURGE_BELOW,
            "{what}: the stored messages start at {lo}"
        );
        // A prefix: no gap but the deleted seq 3.
        let expected: Vec<u64> = (lo..=last)
            .filter(|s| *s != 3 || seqs.contains(&3))
            .collect();
        assert_eq!(seqs, expected, "{what}: not a prefix of the publishes");
        if always {
            assert!(
                last >= acked.publishes,
                "{what}: acked publishes up to {} but only {last} stored",
                acked.publishes
            );
            if acked.purged {
                assert_eq!(lo, PURGE_BELOW, "{what}: the acked purge was lost");
            }
            if acked.deleted {
                assert!(
                    !seqs.contains(&3),
                    "{what}: the acked delete of seq 3 was lost"
                );
            } else if acked.publishes >= 3 && !acked.consumer {
                assert!(seqs.contains(&3), "{what}: seq 3 vanished");
            }
            if acked.consumer {
                let c = store.consumer_info(STREAM, "c").await;
                let c = c.unwrap_or_else(|e| panic!("{what}: the acked consumer is gone: {e}"));
                let acked_max = acked.consumer_acks.iter().max().copied().unwrap_or(0);
                assert!(
                    c.ack_floor.stream_seq <= 5,
                    "{what}: ack floor {:?} beyond what was ever acked ({acked_max})",
                    c.ack_floor
                );
            }
        }
        assert_eq!(
            info.state.last_seq.max(last),
            info.state.last_seq,
            "{what}: {info:?}"
        );
        // Appends continue after the last stored seq.
        let next = store
            .publish(Message::new("s.0", "after"))
            .await
            .unwrap_or_else(|e| panic!("{what}: publish after reopen: {e}"))
            .unwrap();
        assert!(
            next.seq > last,
            "{what}: seq {} reused after {last}",
            next.seq
        );
    }
    store.close().await.unwrap();
}
