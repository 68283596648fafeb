//! R12 (soak): one subscriber stopped while four publishers run flat out.
//! The process's resident memory stays under [`RSS_CAP`] above where it
//! started, however many messages go by, because a stopped subscriber costs
//! its buffer (`subscriber_buffer`, 4096 messages by default) and no more;
//! the slow-consumer signal fires and a reading subscriber loses nothing.
//!
//! Messages: `DURABUS_SLOW_SOAK_MSGS` per publisher (default 50,000 of 1 KiB,
//! 200 MiB in all; `scripts/soak` runs more). Alone in its test binary, so
//! no other test's memory is counted.
//!
//! Checks invariant 12 (docs/design.md).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use durabus::Event;
use durabus_testkit::env_count;

/// Growth of resident memory allowed over the run: the stopped
/// subscriber's buffer (4096 x ~1.1 KiB) with room for allocator slack.
const RSS_CAP: u64 = 64 * 1024 * 1024;
const PUBLISHERS: u64 = 4;
const SIZE: usize = 1024;

/// Resident set size of this process, from /proc/self/status.
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_subscriber_keeps_memory_bounded_while_publishers_run_flat_out() {
    let per = env_count("DURABUS_SLOW_SOAK_MSGS", 50_000);
    let bus = durabus::connect("memory:").await.unwrap();
    let mut events = bus.events().expect("the embedded engine reports events");
    // Core subjects (no stream): the subscribers are the only holders.
    let stopped = bus.subscribe("soak.>").await.unwrap();
    let mut reader = bus.subscribe("soak.>").await.unwrap();
    let total = per * PUBLISHERS;
    let read = Arc::new(AtomicU64::new(0));
    let r = read.clone();
    let reading = tokio::spawn(async move {
        while r.load(Ordering::Relaxed) < total {
            reader.next().await.expect("reader open");
            r.fetch_add(1, Ordering::Relaxed);
        }
    });
    let base = rss();
    let peak = Arc::new(AtomicU64::new(base));
    let done = Arc::new(AtomicBool::new(false));
    let (p, d) = (peak.clone(), done.clone());
    let sampler = tokio::spawn(async move {
        while !d.load(Ordering::Relaxed) {
            p.fetch_max(rss(), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let mut publishers = Vec::new();
    for t in 0..PUBLISHERS {
        let bus = bus.clone();
        let read = read.clone();
        publishers.push(tokio::spawn(async move {
            for i in 0..per {
                // A fresh allocation per message, as an application's would be.
                let payload = Bytes::from(vec![(i % 251) as u8; SIZE]);
                bus.publish(format!("soak.{t}"), payload).await.unwrap();
                // Keep the reader (not the stopped one) within reach: this
                // test is about the stopped subscriber, not a lagging reader.
                while i * PUBLISHERS > read.load(Ordering::Relaxed) + 2048 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for p in publishers {
        tokio::time::timeout(Duration::from_secs(300), p)
            .await
            .expect("publishers blocked")
            .unwrap();
    }
    tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("the reader got everything")
        .unwrap();
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let grew = peak.load(Ordering::Relaxed).saturating_sub(base);
    eprintln!(
        "R12: {total} messages of {SIZE} B, RSS grew by {} KiB at most (cap {} KiB); stopped subscriber dropped {}",
        grew / 1024,
        RSS_CAP / 1024,
        stopped.dropped()
    );
    assert!(
        grew < RSS_CAP,
        "RSS grew by {grew} bytes with a stopped subscriber (cap {RSS_CAP})"
    );
    assert!(
        stopped.dropped() >= total - 4096,
        "dropped {}",
        stopped.dropped()
    );
    let mut signalled = false;
    while let Ok(Ok(e)) = tokio::time::timeout(Duration::from_millis(200), events.recv()).await {
        if let Event::SlowConsumer { filter, dropped } = e {
            assert_eq!(filter, "soak.>");
            assert!(dropped > 0);
            signalled = true;
        }
    }
    assert!(signalled, "no SlowConsumer event");
    bus.close().await.unwrap();
}
