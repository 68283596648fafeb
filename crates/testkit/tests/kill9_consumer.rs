//! R9: the consumer runner in a child process SIGKILLed at random moments,
//! restarted on the same store, again and again; then drained. Every
//! message must end acknowledged or dead-lettered, exactly once, and never
//! both. On the embedded `file:` store (durability `always`) and on a
//! nats-server of its own.
//!
//! Trials: `DURABUS_CONSUMER_CRASH_TRIALS` (default 10 under plain `cargo
//! test`; `./scripts/test` runs 50, `./scripts/soak` thousands). Seed:
//! `DURABUS_CRASH_SEED`.
//!
//! Checks invariant 18 (docs/design.md).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use durabus::consume::{DEFAULT_DLQ_STREAM, DLQ_DELIVERIES, DLQ_ERROR, DLQ_SEQ, DLQ_STREAM};
use durabus::{ConsumerConfig, Message, ReplayOptions, StreamConfig};
use durabus_testkit::crash::ChildProcess;
use durabus_testkit::nats::NatsServer;
use durabus_testkit::{env_count, file_url, temp_dir};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

const MESSAGES: u64 = 400;

/// Every 13th message fails whatever the handler does.
fn fails(seq: u64) -> bool {
    seq % 13 == 0
}

async fn prepare(url: &str) {
    let bus = durabus::connect(url).await.unwrap();
    bus.create_stream(StreamConfig::new("WORK").subjects(["work.>"]))
        .await
        .unwrap();
    // Unlimited deliveries on the consumer: the runner dead-letters after 3
    // attempts itself, so a kill between a failure and its dead letter
    // leaves the message to be delivered again (see consume.rs).
    bus.create_consumer(
        "WORK",
        ConsumerConfig::durable("worker").ack_wait(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    let batch: Vec<Message> = (1..=MESSAGES)
        .map(|seq| {
            let payload = if fails(seq) {
                "fail".to_owned()
            } else {
                format!("job {seq}")
            };
            Message::new(format!("work.{}", seq % 7), payload)
        })
        .collect();
    for r in bus.publish_batch(batch).await.unwrap() {
        r.unwrap().unwrap();
    }
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_message_is_acked_or_dead_lettered_exactly_once_across_kill9() {
    let dir = temp_dir();
    kill_and_drain(&file_url(dir.path(), "always")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_nats_every_message_is_acked_or_dead_lettered_exactly_once_across_kill9() {
    let server = NatsServer::start().unwrap();
    kill_and_drain(&server.url()).await;
}

/// Prepares `url`, kills the consuming child at random moments, drains it,
/// then checks the consumer and the dead letters.
async fn kill_and_drain(url: &str) {
    let trials = env_count("DURABUS_CONSUMER_CRASH_TRIALS", 10);
    let seed = std::env::var("DURABUS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_crash_consumer"));
    let target = std::path::Path::new(url);
    prepare(url).await;
    let context = format!("{url}, seed {seed} (DURABUS_CRASH_SEED={seed} to reproduce)");

    for trial in 0..trials {
        let concurrency = (1 + rng.random_range(0..4)).to_string();
        let mut child =
            ChildProcess::spawn(&exe, target, &["consume", "--concurrency", &concurrency]).unwrap();
        child
            .ready()
            .await
            .unwrap_or_else(|e| panic!("trial {trial}, {context}: {e}"));
        tokio::time::sleep(Duration::from_millis(5 + rng.random_range(0..120))).await;
        child.kill9().await.unwrap();
    }
    let mut child = ChildProcess::spawn(&exe, target, &["consume", "--drain"]).unwrap();
    child.ready().await.unwrap();
    match child.next_line().await.unwrap() {
        Some(l) if l == "DRAINED" => {}
        other => panic!(
            "{context}: the final run did not drain: {other:?}, stderr: {}",
            child.finish_stderr().await
        ),
    }

    let bus = durabus::connect(url).await.unwrap();
    let info = bus.consumer_info("WORK", "worker").await.unwrap();
    assert_eq!(
        (
            info.num_pending,
            info.num_ack_pending,
            info.ack_floor.stream_seq
        ),
        (0, 0, MESSAGES),
        "{context}: {info:?}"
    );
    let mut letters: BTreeMap<u64, u32> = BTreeMap::new();
    // Good messages dead-lettered, with their error and delivery count.
    let mut good_dead: Vec<(u64, String, u64)> = Vec::new();
    let dlq = bus
        .replay(DEFAULT_DLQ_STREAM, ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let mut dlq = dlq;
    while let Some(m) = dlq.next().await {
        let m = m.unwrap();
        assert_eq!(m.headers.get(DLQ_STREAM), Some("WORK"));
        let seq: u64 = m.headers.get(DLQ_SEQ).unwrap().parse().unwrap();
        *letters.entry(seq).or_default() += 1;
        if !fails(seq) {
            let error = m.headers.get(DLQ_ERROR).unwrap_or_default().to_owned();
            let deliveries = m.headers.get(DLQ_DELIVERIES).unwrap().parse().unwrap();
            good_dead.push((seq, error, deliveries));
        }
    }
    let expected: Vec<u64> = (1..=MESSAGES).filter(|s| fails(*s)).collect();
    let twice: Vec<_> = letters.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "{context}: dead-lettered twice: {twice:?}"
    );
    let failing_dead: Vec<u64> = letters.keys().copied().filter(|s| fails(*s)).collect();
    assert_eq!(
        failing_dead, expected,
        "{context}: every failing message is dead-lettered (none acked instead)"
    );
    // A good message is dead only when kills alone used up its deliveries
    // (delivered more than the 3 attempts, its handler never failing):
    // the runner counts deliveries, as max_deliver does (poison-message
    // protection: a message that kills its consumer must not loop forever).
    for (seq, error, deliveries) in &good_dead {
        assert!(
            error == "attempts used up" && *deliveries > 3,
            "{context}: good message {seq} dead-lettered with {error:?} after {deliveries} deliveries"
        );
    }
    bus.close().await.unwrap();
}
