//! One damaged record is one gap, not a wall (docs/design.md "Reading past a
//! damaged record"): replay, get and consumers deliver every intact record
//! before and after it, report it once as `Error::Corrupt` naming the
//! stream and the sequences it cost, and nothing on disk changes.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use durabus_core::{Backend, ConsumerConfig, Error, ReplayOptions, StreamConfig};
use durabus_log::Store;

const N: u64 = 300;

/// 300 messages on 4 KiB segments, closed.
async fn fill(dir: &Path) {
    let s = open_with(dir, opts().segment_size(4096));
    stream(&s, StreamConfig::new("S").subjects(["c.>"])).await;
    for i in 1..=N {
        let body = format!("payload-{i}-{}", "z".repeat(100));
        publish(&s, &format!("c.{i}"), body).await;
    }
    s.close().await.unwrap();
}

/// The segment and offset of message `seq`'s record.
fn locate(dir: &Path, seq: u64) -> (PathBuf, usize) {
    for seg in segments(dir, "S") {
        let b = std::fs::read(&seg).unwrap();
        let mut at = 16usize;
        while at + 17 <= b.len() {
            let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
            if len == 0 {
                break;
            }
            let s = u64::from_le_bytes(b[at + 9..at + 17].try_into().unwrap());
            if b[at + 8] == 1 && s == seq {
                return (seg, at);
            }
            at += 4 + len;
        }
    }
    panic!("message {seq} not found");
}

fn patch(path: &Path, at: usize, f: impl FnOnce(&mut [u8])) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b[at..]);
    std::fs::write(path, &b).unwrap();
}

fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    segments(dir, "S")
        .into_iter()
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect()
}

/// Replays from `from` to the end: the sequences read and the errors met.
async fn replay(s: &Store, from: u64) -> (Vec<u64>, Vec<Error>) {
    let mut r = s
        .replay("S", ReplayOptions::from_seq(from).stop_at_end())
        .await
        .unwrap();
    let (mut seqs, mut errs) = (Vec::new(), Vec::new());
    while let Some(m) = r.next().await {
        match m {
            Ok(m) => {
                let want = format!("payload-{}-", m.seq);
                assert!(m.payload.starts_with(want.as_bytes()), "{}", m.seq);
                seqs.push(m.seq);
            }
            Err(e) => errs.push(e),
        }
    }
    (seqs, errs)
}

fn all_but(lost: &[u64], from: u64) -> Vec<u64> {
    (from..=N).filter(|s| !lost.contains(s)).collect()
}

fn assert_lost(e: &Error, seqs: std::ops::RangeInclusive<u64>, seg: &Path, offset: usize) {
    match e {
        Error::Corrupt {
            stream,
            seqs: got,
            segment,
            offset: o,
            ..
        } => {
            assert_eq!(stream.as_deref(), Some("S"), "{e}");
            assert_eq!(got.clone(), Some(seqs), "{e}");
            assert_eq!(segment, seg, "{e}");
            assert_eq!(*o, offset as u64, "{e}");
        }
        other => panic!("{other:?}"),
    }
}

/// Every read of a store whose message 60 is damaged at `seg`/`offset`.
async fn check_reads(s: &Store, seg: &Path, offset: usize) {
    let (seqs, errs) = replay(s, 1).await;
    assert_eq!(seqs, all_but(&[60], 1));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_lost(&errs[0], 60..=60, seg, offset);
    // Reads starting after it, in the same segment, see no damage.
    for from in [61, 100] {
        let (seqs, errs) = replay(s, from).await;
        assert_eq!(seqs, all_but(&[], from));
        assert!(errs.is_empty(), "{errs:?}");
    }
    let e = s.get_message("S", 60).await.unwrap_err();
    assert_lost(&e, 60..=60, seg, offset);
    assert_eq!(s.stream_info("S").await.unwrap().state.num_lost, 1);
    for seq in [59, 61, 62] {
        assert_eq!(s.get_message("S", seq).await.unwrap().seq, seq);
    }
    // A durable consumer skips it like a deleted message.
    s.create_consumer("S", ConsumerConfig::durable("C"))
        .await
        .unwrap();
    let mut got = Vec::new();
    loop {
        let d = s
            .fetch("S", "C", 50, Duration::from_millis(1))
            .await
            .unwrap();
        if d.is_empty() {
            break;
        }
        got.extend(d.iter().map(|d| d.stream_seq()));
    }
    assert_eq!(got, all_but(&[60], 1));
    let info = s.consumer_info("S", "C").await.unwrap();
    assert_eq!(info.num_lost, 1, "{info:?}");
    // The stream stays writable and never reuses a sequence.
    let ack = s
        .publish(durabus_core::Message::new("c.new", "x"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.seq, N + 1);
}

/// Checks invariant 7 (docs/design.md).
#[test]
fn a_flipped_payload_byte_costs_exactly_its_record_with_or_without_checkpoint_and_index() {
    let rt = rt();
    for variant in ["checkpoint", "full scan", "no index"] {
        let tmp = tempfile::tempdir().unwrap();
        rt.block_on(fill(tmp.path()));
        let (seg, at) = locate(tmp.path(), 60);
        assert_ne!(
            Some(&seg),
            segments(tmp.path(), "S").last(),
            "sealed segment"
        );
        patch(&seg, at + 60, |b| b[0] ^= 0x20);
        if variant != "checkpoint" {
            std::fs::remove_file(tmp.path().join("streams/S/checkpoint")).unwrap();
        }
        if variant == "no index" {
            std::fs::remove_file(seg.with_extension("idx")).unwrap();
        }
        let before = snapshot(tmp.path());
        rt.block_on(async {
            let s = open(tmp.path());
            check_reads(&s, &seg, at).await;
            s.close().await.unwrap();
        });
        // Nothing on disk was cut or rewritten (the new message went to the
        // last segment, or a new one).
        for (p, b) in before {
            let now = std::fs::read(&p).unwrap();
            assert_eq!(&now[..b.len()], &b[..], "{variant}: {p:?} changed");
        }
    }
}

/// Checks invariant 7 (docs/design.md).
#[test]
fn a_damaged_length_field_resynchronises_on_the_next_record() {
    let rt = rt();
    for garbage in [0xFFFF_FF00u32, 7, 40] {
        let tmp = tempfile::tempdir().unwrap();
        rt.block_on(fill(tmp.path()));
        let (seg, at) = locate(tmp.path(), 60);
        patch(&seg, at, |b| b[..4].copy_from_slice(&garbage.to_le_bytes()));
        rt.block_on(async {
            let s = open(tmp.path());
            check_reads(&s, &seg, at).await;
            s.close().await.unwrap();
        });
    }
}

/// Checks invariant 7 (docs/design.md).
#[test]
fn damage_in_the_middle_of_the_last_segment_is_stepped_over_not_cut() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let s = open(tmp.path());
        stream(&s, StreamConfig::new("S").subjects(["c.>"])).await;
        for i in 1..=N {
            let body = format!("payload-{i}-{}", "z".repeat(100));
            publish(&s, &format!("c.{i}"), body).await;
        }
        s.close().await.unwrap();
    });
    std::fs::remove_file(tmp.path().join("streams/S/checkpoint")).unwrap();
    let (seg, at) = locate(tmp.path(), 60);
    assert_eq!(Some(&seg), segments(tmp.path(), "S").last());
    patch(&seg, at + 60, |b| b[0] ^= 0x01);
    let len = std::fs::metadata(&seg).unwrap().len();
    rt.block_on(async {
        let s = open(tmp.path());
        assert_eq!(s.stream_info("S").await.unwrap().state.last_seq, N);
        let (seqs, errs) = replay(&s, 1).await;
        assert_eq!(seqs, all_but(&[60], 1));
        assert_eq!(errs.len(), 1);
        assert_lost(&errs[0], 60..=60, &seg, at);
        s.close().await.unwrap();
    });
    assert!(std::fs::metadata(&seg).unwrap().len() >= len, "nothing cut");
}
