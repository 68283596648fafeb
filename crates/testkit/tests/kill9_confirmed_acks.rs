//! R9 (consumer state): a child fetching and confirming acks on a `file:`
//! store is SIGKILLed at random moments, under each durability. A
//! confirmed ack never comes back (the message is never delivered again),
//! and a delivery is never forgotten (each redelivery of a message counts
//! more deliveries than the last one the child saw): invariant 18.
//!
//! Trials: `DURABUS_CONSUMER_CRASH_TRIALS` (default 20; `./scripts/test` runs
//! 50). Seed: `DURABUS_CRASH_SEED`.
//!
//! Checks invariant 18 (docs/design.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use durabus::{AckKind, ConsumerConfig, StreamConfig};
use durabus_testkit::crash::ChildProcess;
use durabus_testkit::{env_count, file_url, temp_dir};
use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

const MESSAGES: u64 = 80;

/// What the children said so far, checked as it is said.
#[derive(Default)]
struct Seen {
    acked: BTreeSet<u64>,
    count: BTreeMap<u64, u64>,
}

impl Seen {
    fn delivered(&mut self, seq: u64, count: u64, context: &str) {
        assert!(
            !self.acked.contains(&seq),
            "{context}: seq {seq} delivered again (count {count}) after a confirmed ack"
        );
        let last = self.count.insert(seq, count).unwrap_or(0);
        assert!(
            count > last,
            "{context}: seq {seq} delivered with count {count} after a delivery counted {last}: a delivery was forgotten"
        );
    }
}

async fn run(durability: &str) {
    let trials = env_count("DURABUS_CONSUMER_CRASH_TRIALS", 20);
    let seed = std::env::var("DURABUS_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = temp_dir();
    let url = file_url(dir.path(), durability);
    let context = format!("{durability}, seed {seed} (DURABUS_CRASH_SEED={seed} to reproduce)");
    {
        let bus = durabus::connect(&url).await.unwrap();
        bus.create_stream(StreamConfig::new("CONF").subjects(["conf.>"]))
            .await
            .unwrap();
        bus.create_consumer(
            "CONF",
            ConsumerConfig::durable("c").ack_wait(Duration::from_millis(150)),
        )
        .await
        .unwrap();
        for i in 0..MESSAGES {
            bus.publish(format!("conf.{}", i % 5), "x").await.unwrap();
        }
        bus.close().await.unwrap();
    }
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_crash_consumer"));
    let mut seen = Seen::default();
    for trial in 0..trials {
        let ctx = format!("trial {trial}, {context}");
        let mut child =
            ChildProcess::spawn(&exe, std::path::Path::new(&url), &["confirm"]).unwrap();
        child.ready().await.unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let until =
            tokio::time::Instant::now() + Duration::from_millis(10 + rng.random_range(0..250));
        loop {
            let line = tokio::select! {
                l = child.next_line() => l.unwrap(),
                () = tokio::time::sleep_until(until) => break,
            };
            let Some(line) = line else { break };
            let mut w = line.split(' ');
            match (w.next(), w.next(), w.next()) {
                (Some("DELIVERED"), Some(s), Some(n)) => {
                    seen.delivered(s.parse().unwrap(), n.parse().unwrap(), &ctx)
                }
                (Some("ACKED"), Some(s), None) => {
                    seen.acked.insert(s.parse().unwrap());
                }
                _ => panic!("{ctx}: unexpected line {line:?}"),
            }
        }
        child.kill9().await.unwrap();
        // The lines said before the kill, still in the pipe.
        while let Ok(Some(line)) = child.next_line().await {
            let mut w = line.split(' ');
            match (w.next(), w.next(), w.next()) {
                (Some("DELIVERED"), Some(s), Some(n)) => {
                    seen.delivered(s.parse().unwrap(), n.parse().unwrap(), &ctx)
                }
                (Some("ACKED"), Some(s), None) => {
                    seen.acked.insert(s.parse().unwrap());
                }
                _ => {}
            }
        }
    }
    // Drain: everything not acked comes again, nothing acked does.
    let bus = durabus::connect(&url).await.unwrap();
    loop {
        let info = bus.consumer_info("CONF", "c").await.unwrap();
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        for d in bus
            .fetch("CONF", "c", 50, Duration::from_millis(300))
            .await
            .unwrap()
        {
            seen.delivered(d.stream_seq(), d.delivered(), &format!("drain, {context}"));
            bus.ack_confirmed(&d, AckKind::Ack).await.unwrap();
            seen.acked.insert(d.stream_seq());
        }
    }
    assert_eq!(seen.acked.len() as u64, MESSAGES, "{context}");
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_acks_and_deliveries_survive_kill9_with_always() {
    run("always").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_acks_and_deliveries_survive_kill9_with_none() {
    run("none").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmed_acks_and_deliveries_survive_kill9_with_periodic() {
    run("periodic:50ms").await;
}
