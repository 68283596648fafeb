//! R9 (consumer state): a child fetching and confirming acks on a `file:`
//! store is SIGKILLed at random moments, under each durability. A
//! confirmed ack never comes back (the message is never delivered again),
//! and a delivery is never forgotten (each redelivery of a message counts
//! more deliveries than the last one the child saw): invariant 18. An ack
//! the child was making when it was killed (`ACKING` said, `ACKED` not) may
//! or may not have landed; either is right.
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
    /// Acks in flight when a child was killed: said `ACKING`, not `ACKED`.
    in_flight: BTreeSet<u64>,
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

    /// Records one line a child said; `acking` is the ack it is making.
    fn line(&mut self, line: &str, acking: &mut Option<u64>, context: &str) {
        let mut w = line.split(' ');
        match (w.next(), w.next(), w.next()) {
            (Some("DELIVERED"), Some(s), Some(n)) => {
                self.delivered(s.parse().unwrap(), n.parse().unwrap(), context)
            }
            (Some("ACKING"), Some(s), None) => *acking = Some(s.parse().unwrap()),
            (Some("ACKED"), Some(s), None) => {
                self.acked.insert(s.parse().unwrap());
                *acking = None;
            }
            _ => panic!("{context}: unexpected line {line:?}"),
        }
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
        let mut acking = None;
        loop {
            let line = tokio::select! {
                l = child.next_line() => l.unwrap(),
                () = tokio::time::sleep_until(until) => break,
            };
            let Some(line) = line else { break };
            seen.line(&line, &mut acking, &ctx);
        }
        child.kill9().await.unwrap();
        // The lines said before the kill, still in the pipe (each line is
        // one write, shorter than PIPE_BUF: none is cut short).
        while let Ok(Some(line)) = child.next_line().await {
            seen.line(&line, &mut acking, &ctx);
        }
        seen.in_flight.extend(acking);
    }
    // Drain: everything not acked comes again (but an ack in flight at a
    // kill may have landed), nothing acked does.
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
            seen.in_flight.remove(&d.stream_seq());
            bus.ack_confirmed(&d, AckKind::Ack).await.unwrap();
            seen.acked.insert(d.stream_seq());
        }
    }
    // Every message was acked: seen acked, or acked by a killed child.
    let missing: Vec<u64> = (1..=MESSAGES)
        .filter(|s| !seen.acked.contains(s) && !seen.in_flight.contains(s))
        .collect();
    assert!(missing.is_empty(), "{context}: never acked: {missing:?}");
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
