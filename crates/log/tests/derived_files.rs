//! R3/R4 for the files beside the segments: sealed-segment indexes and the
//! checkpoint are derived state (invariant 8), so a torn or bit-flipped one
//! is rebuilt and every read stays identical; a consumer-state file is not
//! derived, so damage to it makes that consumer unavailable (reported with
//! the reason naming the file), nothing is changed for it, and it loads as
//! before once it is back.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{copy_dir, open, open_with, opts, publish, rt, stream};
use durabus_core::{AckKind, Backend, ConsumerConfig, Error, ReplayOptions, StreamConfig};
use durabus_log::Store;

/// Stream S over several 1 KiB segments, a consumer `c` that acked 1..=10.
async fn fill(dir: &Path) {
    let s = open_with(dir, opts().segment_size(1024));
    stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
    for i in 1..=60u64 {
        publish(&s, &format!("a.{}", i % 3), format!("payload-{i}")).await;
    }
    let cfg = ConsumerConfig::durable("c").ack_wait(Duration::from_secs(60));
    s.create_consumer("S", cfg).await.unwrap();
    for d in s
        .fetch("S", "c", 10, Duration::from_millis(10))
        .await
        .unwrap()
    {
        s.ack_confirmed(&d.ack, AckKind::Ack).await.unwrap();
    }
    s.close().await.unwrap();
}

/// Everything a reader can see: messages, stream state, the consumer.
async fn observe(s: &Store) -> String {
    let mut r = s
        .replay("S", ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let mut out = String::new();
    while let Some(m) = r.next().await {
        let m = m.unwrap();
        out += &format!("{} {} {:?}\n", m.seq, m.subject, m.payload);
    }
    let st = s.stream_info("S").await.unwrap().state;
    out += &format!(
        "{} {} {} {}\n",
        st.messages, st.first_seq, st.last_seq, st.num_subjects
    );
    let c = s.consumer_info("S", "c").await.unwrap();
    out += &format!("{:?} {:?} {}\n", c.delivered, c.ack_floor, c.num_pending);
    out
}

fn observe_dir(dir: &Path) -> String {
    let rt = rt();
    let s = open(dir);
    let seen = rt.block_on(observe(&s));
    rt.block_on(s.close()).unwrap();
    seen
}

fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("streams/S/segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// Each damaged version of `file` (every truncation; in every byte, one
/// bit flipped, a different one from byte to byte), then the original back.
fn each_damage(file: &Path, mut f: impl FnMut(&str)) {
    let original = std::fs::read(file).unwrap();
    for len in 0..original.len() {
        std::fs::write(file, &original[..len]).unwrap();
        f(&format!("{} cut to {len} bytes", file.display()));
    }
    for byte in 0..original.len() {
        let mut b = original.clone();
        b[byte] ^= 1 << (byte % 8);
        std::fs::write(file, &b).unwrap();
        f(&format!("{} byte {byte} flipped", file.display()));
    }
    std::fs::write(file, &original).unwrap();
}

/// Checks invariant 8 (docs/design.md).
#[test]
fn a_torn_or_flipped_index_or_checkpoint_is_rebuilt_and_reads_stay_identical() {
    let tmp = tempfile::tempdir().unwrap();
    rt().block_on(fill(tmp.path()));
    let want = observe_dir(tmp.path());
    let idx = files(tmp.path(), "idx");
    assert!(idx.len() >= 2, "{idx:?}");
    let checkpoint = tmp.path().join("streams/S/checkpoint");
    assert!(checkpoint.exists());
    // Work on a copy per damage: a reopen rewrites what it rebuilt.
    let pristine = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), pristine.path());
    for file in [idx[0].clone(), idx[idx.len() - 1].clone(), checkpoint] {
        let rel = file.strip_prefix(tmp.path()).unwrap().to_path_buf();
        each_damage(&pristine.path().join(&rel), |what| {
            let work = tempfile::tempdir().unwrap();
            copy_dir(pristine.path(), work.path());
            assert_eq!(observe_dir(work.path()), want, "{what}");
        });
    }
}

/// Checks invariant 19 (docs/design.md).
#[test]
fn a_torn_or_flipped_consumer_file_is_reported_and_nothing_is_changed() {
    let tmp = tempfile::tempdir().unwrap();
    rt().block_on(fill(tmp.path()));
    let want = observe_dir(tmp.path());
    let file = tmp.path().join("streams/S/consumers/c");
    assert!(file.exists(), "no consumer file at {}", file.display());
    let mut reported = 0;
    each_damage(&file, |what| {
        let damaged = std::fs::read(&file).unwrap();
        let s = Store::open(tmp.path(), opts()).unwrap_or_else(|e| panic!("{what}: {e}"));
        // Damage done by hand to a stream that closed cleanly is found
        // when the stream is recovered, on its first use (docs/design.md,
        // "Catalog").
        rt().block_on(s.stream_info("S")).unwrap();
        // Only a damage the decoder cannot see may load: none exists for
        // a CRC-checked file, so the consumer must be reported.
        let u = s.unavailable();
        assert_eq!(u.len(), 1, "{what}: opened as if nothing happened");
        assert_eq!(u[0].consumer.as_deref(), Some("c"), "{what}");
        assert!(
            u[0].reason.contains(&file.display().to_string()),
            "{what}: {}",
            u[0].reason
        );
        let err = rt()
            .block_on(s.consumer_info("S", "c"))
            .expect_err("an unavailable consumer");
        assert!(
            matches!(err, Error::ConsumerUnavailable { .. }),
            "{what}: {err}"
        );
        drop(s);
        // Nothing was changed for it.
        assert_eq!(std::fs::read(&file).unwrap(), damaged, "{what}");
        reported += 1;
    });
    assert!(reported > 0);
    // Restored, it opens as before.
    assert_eq!(observe_dir(tmp.path()), want);
}
