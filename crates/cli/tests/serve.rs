//! `durabus serve`, the hub, as a real process: clients publish through it
//! with async-nats (a client no one here wrote) while it is stopped with
//! SIGTERM (graceful: every publish it acknowledged is in the store, and it
//! exits 0) or SIGKILL (`durability=always`: every acknowledged publish
//! survives, nothing is reused). Trials of the kill: `DURABUS_HUB_KILL_TRIALS`
//! (default 3).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use durabus::StreamConfig;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod common;
use common::{durabus, json};

/// A `durabus serve` child on a free port.
struct Hub {
    child: Child,
    url: String,
}

impl Hub {
    fn start(store: &str) -> Hub {
        let mut child = durabus()
            .args([
                "--json",
                "serve",
                "--store",
                store,
                "--listen",
                "127.0.0.1:0",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = json(&line)["listening"]
            .as_str()
            .unwrap_or_else(|| panic!("no listening line: {line:?}"))
            .to_owned();
        Hub { child, url }
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Waits for the process to exit; its status code.
    fn wait(&mut self) -> Option<i32> {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(Instant::now() < until, "durabus serve did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Publishes to `S` through the hub, 64 in flight, until the connection
/// breaks; returns the sequences acknowledged. Calls `stop` once `after`
/// acks arrived.
async fn publish_until_gone(url: &str, after: usize, stop: impl FnOnce()) -> Vec<u64> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut acked = Vec::new();
    let mut stop = Some(stop);
    let mut i = 0u64;
    'outer: loop {
        let mut futures = Vec::new();
        for _ in 0..64 {
            i += 1;
            match js
                .publish(format!("s.{}", i % 7), format!("m{i}").into())
                .await
            {
                Ok(f) => futures.push(f),
                Err(_) => break 'outer,
            }
        }
        for f in futures {
            match tokio::time::timeout(Duration::from_secs(5), f).await {
                Ok(Ok(ack)) => acked.push(ack.sequence),
                _ => break 'outer,
            }
        }
        if acked.len() >= after {
            if let Some(stop) = stop.take() {
                stop();
            }
        }
        if i > 1_000_000 {
            panic!("the hub never went away");
        }
    }
    acked
}

/// Every acknowledged sequence is in the store, once, with its payload.
async fn assert_all_stored(dir: &std::path::Path, acked: &[u64]) {
    let bus = durabus::connect(&format!("file:{}", dir.display()))
        .await
        .unwrap();
    let info = bus.stream_info("S").await.unwrap();
    assert!(
        info.state.last_seq >= acked.iter().copied().max().unwrap_or(0),
        "last_seq {} below an acknowledged sequence",
        info.state.last_seq
    );
    let mut seen = std::collections::BTreeSet::new();
    for seq in acked {
        assert!(seen.insert(*seq), "sequence {seq} acknowledged twice");
        let m = bus
            .get_message("S", *seq)
            .await
            .unwrap_or_else(|e| panic!("acknowledged sequence {seq} is not in the store: {e}"));
        assert!(m.payload.starts_with(b"m"));
    }
    bus.close().await.unwrap();
}

fn create_stream(url: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let bus = durabus::connect(url).await.unwrap();
        bus.create_stream(StreamConfig::new("S").subjects(["s.>"]))
            .await
            .unwrap();
        bus.close().await.unwrap();
    });
}

/// Checks invariant 32 (docs/design.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_hub_gracefully_and_keeps_every_acknowledged_publish() {
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}?durability=always", dir.path().display());
    let mut hub = Hub::start(&store);
    let url = hub.url.clone();
    tokio::task::spawn_blocking(move || create_stream(&url))
        .await
        .unwrap();
    let acked = publish_until_gone(&hub.url, 2000, || hub.signal(Signal::SIGTERM)).await;
    assert!(acked.len() >= 2000, "only {} acks", acked.len());
    assert_eq!(hub.wait(), Some(0), "a graceful stop exits 0");
    assert!(
        async_nats::connect(&hub.url).await.is_err(),
        "the port still accepts connections"
    );
    assert_all_stored(dir.path(), &acked).await;
}

/// Checks invariant 32 (docs/design.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_hub_loses_no_acknowledged_publish_with_always() {
    let trials = durabus_testkit::env_count("DURABUS_HUB_KILL_TRIALS", 3);
    let dir = tempfile::tempdir().unwrap();
    let store = format!("file:{}?durability=always", dir.path().display());
    let mut all = Vec::new();
    for trial in 0..trials {
        let mut hub = Hub::start(&store);
        if trial == 0 {
            let url = hub.url.clone();
            tokio::task::spawn_blocking(move || create_stream(&url))
                .await
                .unwrap();
        }
        let after = 200 + (rand::random::<u64>() % 2000) as usize;
        let acked = publish_until_gone(&hub.url, after, || hub.signal(Signal::SIGKILL)).await;
        hub.wait();
        all.extend(acked);
        // What was acknowledged before is still there; nothing is reused.
        assert_all_stored(dir.path(), &all).await;
    }
}

#[test]
fn serve_refuses_a_nats_store_and_a_taken_port_saying_why() {
    let out = durabus()
        .args(["serve", "--store", "nats://127.0.0.1:4222"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("serves an embedded store"), "{err}");

    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let out = durabus()
        .args(["serve", "--store", "memory:", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}
