//! R11: compare-and-swap increments of one KV key by concurrent tasks,
//! with the store reopened (file) or the server killed and restarted
//! (NATS) between rounds. What must hold: the final value equals the number
//! of `update_json` calls that returned Ok — no lost and no doubled
//! increment — and a watch delivers every change in revision order.
//!
//! `DURABUS_KV_ROUNDS` sets the rounds (default 3; the soak runs more).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use durabus::kv::Operation;
use durabus::{Bus, ConnectOptions, KvConfig};
use durabus_conformance::increment_concurrently;
use durabus_testkit::nats::NatsServer;

const TASKS: usize = 4;
const PER_TASK: usize = 15;

fn rounds() -> usize {
    std::env::var("DURABUS_KV_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// One round: TASKS tasks each try PER_TASK increments; returns how many
/// returned Ok.
async fn round(bus: &Bus) -> u64 {
    let kv = bus.kv("counter").await.unwrap();
    increment_concurrently(&kv, "n", TASKS, PER_TASK).await
}

/// The watch from revision 1 yields the kept changes, the counter's last
/// (up to 64) values, each one more than the one before, in revision order.
async fn check_watch(bus: &Bus, n: u64) {
    let kv = bus.kv("counter").await.unwrap();
    let mut w = kv.watch_from("n", 1).await.unwrap();
    let mut last_rev = 0;
    for want in n.saturating_sub(63).max(1)..=n {
        let e = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .expect("watch yields")
            .expect("watch open")
            .unwrap();
        assert_eq!(e.operation, Operation::Put);
        assert!(e.revision > last_rev, "revisions in order");
        last_rev = e.revision;
        let v: u64 = serde_json::from_slice(&e.value).unwrap();
        assert_eq!(v, want, "change {want} at revision {}", e.revision);
    }
}

fn config() -> KvConfig {
    // The most history a key keeps, for the watch to check.
    KvConfig::new("counter").history(64)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_increments_are_exact_across_store_reopens() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file:{}", dir.path().display());
    let total_rounds = rounds();
    let mut ok = 0;
    for r in 0..total_rounds {
        let bus = durabus::connect(&url).await.unwrap();
        if r == 0 {
            bus.create_kv(config()).await.unwrap();
        }
        ok += round(&bus).await;
        bus.close().await.unwrap();
    }
    let bus = durabus::connect(&url).await.unwrap();
    let kv = bus.kv("counter").await.unwrap();
    assert_eq!(kv.get_json::<u64>("n").await.unwrap(), Some(ok));
    assert!(ok > 0);
    check_watch(&bus, ok).await;
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cas_increments_are_exact_across_nats_restarts() {
    let server = NatsServer::start().expect("nats-server");
    let options = ConnectOptions::new()
        .request_timeout(Duration::from_secs(2))
        .reconnect_wait(Duration::from_millis(50), Duration::from_millis(400));
    let bus = options.connect(&server.url()).await.unwrap();
    bus.create_kv(config()).await.unwrap();
    let mut ok = 0;
    for _ in 0..rounds() {
        ok += round(&bus).await;
        // Between rounds: a crash of the server, which comes back with its
        // file store.
        server.restart().unwrap();
        bus.wait_connected(Duration::from_secs(20)).await.unwrap();
    }
    let kv = bus.kv("counter").await.unwrap();
    assert_eq!(kv.get_json::<u64>("n").await.unwrap(), Some(ok));
    assert!(ok > 0);
    check_watch(&bus, ok).await;
    bus.close().await.unwrap();
}
