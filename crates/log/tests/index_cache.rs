//! W6 (issue #15): sealed segments' indexes are read from their `.idx`
//! files through a bounded cache; memory for indexes stays within its
//! budget however many segments are read, and reads stay exact after
//! eviction, after reopening, and when an `.idx` file goes bad while open.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;
use std::time::SystemTime;

use common::*;
use durabus_core::{Backend, ReplayOptions, StreamConfig};
use durabus_log::Store;

/// Messages written; with 500-byte segments about four fit in one, so
/// the stream has hundreds of segments.
const N: u64 = 1500;
/// Cache budget: room for a handful of (one-entry) segment indexes only.
const BUDGET: usize = 1024;

fn payload(i: u64) -> String {
    format!("payload-{i}-{}", "x".repeat(80))
}

fn open_small(dir: &Path) -> Store {
    open_with(dir, opts().segment_size(500).index_cache(BUDGET))
}

async fn check_reads(s: &Store, times: &[SystemTime], what: &str) {
    // By sequence, in an order that jumps between old segments.
    for k in 0..N {
        let seq = (k * 7919) % N + 1;
        let m = s.get_message("S", seq).await.unwrap();
        assert_eq!(m.payload, payload(seq).as_bytes(), "{what}: get {seq}");
    }
    let (bytes, peak, len) = s.index_cache_stats();
    assert!(peak <= BUDGET, "{what}: peak {peak} > {BUDGET}");
    assert!(bytes <= BUDGET && len > 0, "{what}: {bytes} bytes in {len}");
    // In order, from the start.
    let mut r = s
        .replay("S", ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let mut next = 1;
    while let Some(m) = r.next().await {
        let m = m.unwrap();
        assert_eq!((m.seq, &m.payload[..]), (next, payload(next).as_bytes()));
        next += 1;
    }
    assert_eq!(next, N + 1, "{what}: replay");
    // By time.
    for seq in [1, 2, 333, 777, 1001, N] {
        let t = times[usize::try_from(seq - 1).unwrap()];
        let mut r = s
            .replay("S", ReplayOptions::from_time(t).stop_at_end())
            .await
            .unwrap();
        let first = r.next().await.unwrap().unwrap();
        assert!(first.seq <= seq && first.time >= t, "{what}: time of {seq}");
    }
    let (_, peak, _) = s.index_cache_stats();
    assert!(peak <= BUDGET, "{what}: peak {peak} > {BUDGET}");
}

/// Checks invariant 8 (docs/design.md) with a cache far smaller than the log's indexes.
#[test]
fn reads_across_hundreds_of_segments_stay_exact_with_a_tiny_index_cache() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let times = rt.block_on(async {
        let s = open_small(dir);
        stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
        for i in 1..=N {
            publish(&s, "a.b", payload(i)).await;
        }
        let mut times = Vec::new();
        for seq in 1..=N {
            times.push(s.get_message("S", seq).await.unwrap().time);
        }
        check_reads(&s, &times, "while written").await;
        s.close().await.unwrap();
        times
    });
    let segs = segments(dir, "S");
    assert!(segs.len() > 300, "{} segments", segs.len());
    assert_eq!(files_with_ext(dir, "S", "idx").len(), segs.len() - 1);

    // Reopened (the checkpoint's path: indexes read on demand).
    let s = open_small(dir);
    rt.block_on(check_reads(&s, &times, "reopened"));
    let (_, _, len) = s.index_cache_stats();
    assert!(len < segs.len() / 10, "{len} indexes cached");

    // Index files that go missing or bad while the store is open are
    // rebuilt from their segments when next needed, and written again.
    let idx = files_with_ext(dir, "S", "idx");
    for p in idx.iter().step_by(37) {
        std::fs::remove_file(p).unwrap();
    }
    std::fs::write(&idx[5], b"garbage").unwrap();
    rt.block_on(check_reads(&s, &times, "index files removed"));
    for p in idx.iter().step_by(37).chain(std::iter::once(&idx[5])) {
        assert!(
            std::fs::read(p).unwrap().starts_with(b"DBUSIDX\0"),
            "{} not rewritten",
            p.display()
        );
    }
    rt.block_on(s.close()).unwrap();
}
