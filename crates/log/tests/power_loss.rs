//! R2: power loss. A workload (stream creation, publishes across segment
//! rolls, a consumer with acks, a delete) runs on the power-loss shim
//! (`common/power_loss.rs`), which loses power at mutating operation N, for
//! N = 1, 2, ... until the workload completes. Each loss is written out as
//! a disk could hold it (unsynced writes dropped, reordered, torn by
//! sector; directory entries synced or not) and the store is reopened from
//! it on the real file system:
//!
//! - `Always`: nothing acknowledged is lost (stream, publishes, delete,
//!   consumer), and what is stored is a gap-free prefix of the publishes;
//! - `None`: the store opens and holds a valid prefix of the publishes.
//!
//! Images per N: `DURABUS_POWER_LOSS_IMAGES` (default 2; `scripts/soak`
//! runs more). Seed: `DURABUS_CRASH_SEED`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::power_loss::{PowerLoss, Rng};
use durabus_core::{AckKind, Backend, ConsumerConfig, Error, Message, ReplayOptions, StreamConfig};
use durabus_log::{Durability, Options, Store};

const PUBLISHES: u64 = 40;
const STREAM: &str = "S";

/// What the workload saw acknowledged before the power went.
#[derive(Debug, Default)]
struct Acked {
    stream: bool,
    /// Publishes acknowledged: 1..=publishes (seq i carries publish i).
    publishes: u64,
    consumer: bool,
    /// Stream seqs whose consumer acks were confirmed.
    consumer_acks: Vec<u64>,
    deleted: bool,
    completed: bool,
}

fn payload(i: u64) -> String {
    format!(
        "publish {i:03} {}",
        "x".repeat(usize::try_from(i % 7 * 20).unwrap())
    )
}

fn options(d: Durability) -> Options {
    Options::default().durability(d).segment_size(600)
}

async fn workload(store: &Store) -> Acked {
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
    if store.close().await.is_err() {
        return acked;
    }
    acked.completed = true;
    acked
}

/// Stored messages of the stream as (seq, payload).
async fn stored(store: &Store) -> Vec<(u64, String)> {
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
async fn check(dir: &Path, durability: Durability, acked: &Acked, what: &str) {
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
        // A prefix: no gap but the deleted seq 3.
        let expected: Vec<u64> = (1..=last)
            .filter(|s| *s != 3 || seqs.contains(&3))
            .collect();
        assert_eq!(seqs, expected, "{what}: not a prefix of the publishes");
        if always {
            assert!(
                last >= acked.publishes,
                "{what}: acked publishes up to {} but only {last} stored",
                acked.publishes
            );
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

fn seed() -> u64 {
    std::env::var("DURABUS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        })
}

fn images() -> u64 {
    std::env::var("DURABUS_POWER_LOSS_IMAGES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2)
}

async fn power_loss_at_every_operation(durability: Durability) {
    let seed = seed();
    let mut rng = Rng::new(seed);
    let root = tempfile::tempdir().unwrap();
    let data = root.path().join("data");
    let mut n = 1;
    loop {
        let shim = PowerLoss::new(&data, n);
        let acked =
            match Store::open_with_storage(&data, Arc::new(shim.clone()), options(durability)) {
                Ok(store) => {
                    let acked = workload(&store).await;
                    drop(store);
                    acked
                }
                Err(_) => Acked::default(),
            };
        if acked.completed && !shim.crashed() {
            assert!(n > 50, "the workload took only {n} operations");
            return;
        }
        for image in 0..images() {
            let dir = root.path().join(format!("image-{n}-{image}"));
            shim.image(&dir, &mut rng);
            let what = format!(
                "{durability:?}, power lost at operation {n}, image {image} (DURABUS_CRASH_SEED={seed}), acked {acked:?}"
            );
            check(&dir, durability, &acked, &what).await;
            std::fs::remove_dir_all(&dir).unwrap();
        }
        n += 1;
    }
}

#[tokio::test]
async fn power_loss_under_always_loses_nothing_acknowledged() {
    power_loss_at_every_operation(Durability::Always).await;
}

#[tokio::test]
async fn power_loss_under_none_leaves_a_valid_prefix() {
    power_loss_at_every_operation(Durability::None).await;
}
