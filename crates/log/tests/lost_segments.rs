//! A missing or shortened segment is damage, never deletions, and no
//! sequence is assigned twice (docs/design.md recovery rule 3a, "Manifest
//! file", invariant 1): the reproductions of issue #23 on real directories.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use durabus_core::{AckKind, Backend, ConsumerConfig, Error, Message, ReplayOptions, StreamConfig};
use durabus_log::Store;

const N: u64 = 300;

/// 300 messages on 4 KiB segments; durable consumer C has read and acked
/// them all. Closed.
async fn fill(dir: &Path) {
    let s = open_with(dir, opts().segment_size(4096));
    stream(&s, StreamConfig::new("S").subjects(["c.>"])).await;
    for i in 1..=N {
        let body = format!("payload-{i}-{}", "z".repeat(100));
        publish(&s, &format!("c.{i}"), body).await;
    }
    s.create_consumer("S", ConsumerConfig::durable("C"))
        .await
        .unwrap();
    let mut n = 0;
    while n < N {
        let d = s
            .fetch("S", "C", 100, Duration::from_millis(1))
            .await
            .unwrap();
        for x in &d {
            s.ack(&x.ack, AckKind::Ack).await.unwrap();
        }
        n += d.len() as u64;
    }
    s.close().await.unwrap();
}

fn reopen(dir: &Path) -> Store {
    open_with(dir, opts().segment_size(4096))
}

/// The first and last message seq of a segment file.
fn seq_range(seg: &Path) -> (u64, u64) {
    let b = std::fs::read(seg).unwrap();
    let (mut at, mut lo, mut hi) = (16usize, u64::MAX, 0);
    while at + 17 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        if b[at + 8] == 1 {
            let s = u64::from_le_bytes(b[at + 9..at + 17].try_into().unwrap());
            lo = lo.min(s);
            hi = hi.max(s);
        }
        at += 4 + len;
    }
    (lo, hi)
}

/// Replays everything: the sequences read and the lost ranges reported.
async fn replay(s: &Store) -> (Vec<u64>, Vec<std::ops::RangeInclusive<u64>>) {
    let mut r = s
        .replay("S", ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let (mut seqs, mut lost) = (Vec::new(), Vec::new());
    while let Some(m) = r.next().await {
        match m {
            Ok(m) => seqs.push(m.seq),
            Err(Error::Corrupt {
                stream,
                seqs: Some(range),
                ..
            }) => {
                assert_eq!(stream.as_deref(), Some("S"));
                lost.push(range);
            }
            Err(e) => panic!("{e}"),
        }
    }
    (seqs, lost)
}

fn without(range: &std::ops::RangeInclusive<u64>) -> Vec<u64> {
    (1..=N).filter(|s| !range.contains(s)).collect()
}

/// Checks invariant 1 (docs/design.md).
#[test]
fn a_missing_newest_segment_never_reuses_a_sequence_and_consumers_go_on() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(fill(tmp.path()));
    let segs = segments(tmp.path(), "S");
    let last: PathBuf = segs.last().unwrap().clone();
    let (lo, hi) = seq_range(&last);
    assert_eq!(hi, N);
    std::fs::remove_file(&last).unwrap();
    rt.block_on(async {
        let s = reopen(tmp.path());
        let info = s.stream_info("S").await.unwrap();
        assert!(info.state.last_seq >= N, "{:?}", info.state);
        assert_eq!(info.state.num_deleted, 0, "lost is not deleted");
        let ack = s
            .publish(Message::new("c.new", "x"))
            .await
            .unwrap()
            .unwrap();
        assert!(ack.seq > N, "seq {} reused", ack.seq);
        let (seqs, lost) = replay(&s).await;
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert_eq!(*lost[0].start(), lo);
        assert!(*lost[0].end() >= hi && *lost[0].end() < ack.seq);
        let mut want: Vec<u64> = (1..lo).collect();
        want.push(ack.seq);
        assert_eq!(seqs, want);
        // C read everything before the loss: it gets the new message, not
        // a rewind and not nothing.
        let d = s
            .fetch("S", "C", 10, Duration::from_millis(50))
            .await
            .unwrap();
        assert_eq!(
            d.iter().map(|d| d.stream_seq()).collect::<Vec<_>>(),
            vec![ack.seq]
        );
        s.close().await.unwrap();
        // The same after another reopen.
        let s = reopen(tmp.path());
        let again = s
            .publish(Message::new("c.new", "y"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.seq, ack.seq + 1);
        assert_eq!(replay(&s).await.1, lost);
        s.close().await.unwrap();
    });
}

/// Checks invariant 1 (docs/design.md).
#[test]
fn a_missing_middle_or_first_segment_is_reported_as_lost_not_deleted() {
    let rt = rt();
    for which in ["first", "middle"] {
        let tmp = tempfile::tempdir().unwrap();
        rt.block_on(fill(tmp.path()));
        let segs = segments(tmp.path(), "S");
        let victim = if which == "first" {
            &segs[0]
        } else {
            &segs[segs.len() / 2]
        };
        let (lo, hi) = seq_range(victim);
        std::fs::remove_file(victim).unwrap();
        // verify names the file and the lost range.
        let problems = durabus_log::check_files(tmp.path(), "S").unwrap();
        assert!(
            problems.iter().any(|p| p.fatal
                && &p.path == victim
                && p.problem
                    .contains(&format!("messages {lo}..={hi} are lost"))),
            "{problems:?}"
        );
        rt.block_on(async {
            for round in 0..2 {
                let s = reopen(tmp.path());
                let info = s.stream_info("S").await.unwrap();
                assert_eq!(info.state.last_seq, N, "{which} {round}");
                assert_eq!(info.state.first_seq, 1, "{which} {round}");
                assert_eq!(info.state.num_deleted, 0, "{which} {round}");
                assert_eq!(info.state.num_lost, hi - lo + 1, "{which} {round}");
                let (seqs, lost) = replay(&s).await;
                assert_eq!(lost, vec![lo..=hi], "{which} {round}");
                assert_eq!(seqs, without(&(lo..=hi)), "{which} {round}");
                match s.get_message("S", lo).await {
                    Err(Error::Corrupt { seqs: Some(r), .. }) => assert_eq!(r, lo..=hi),
                    other => panic!("{other:?}"),
                }
                assert_eq!(s.get_message("S", hi + 1).await.unwrap().seq, hi + 1);
                s.close().await.unwrap();
            }
        });
    }
}

/// Checks invariant 1 (docs/design.md).
#[test]
fn a_sealed_segment_cut_short_loses_its_tail_and_nothing_else() {
    let rt = rt();
    for at_boundary in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        rt.block_on(fill(tmp.path()));
        let segs = segments(tmp.path(), "S");
        let victim = &segs[2];
        let (first, last) = seq_range(victim);
        // Keep the header and five records (or five and a half).
        let b = std::fs::read(victim).unwrap();
        let mut at = 16usize;
        for _ in 0..5 {
            at += 4 + u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        }
        let cut = if at_boundary { at } else { at + 30 };
        std::fs::write(victim, &b[..cut]).unwrap();
        let lost = first + 5..=last;
        let problems = durabus_log::check_files(tmp.path(), "S").unwrap();
        assert!(
            problems
                .iter()
                .any(|p| p.fatal && &p.path == victim && p.problem.contains("lost")),
            "{problems:?}"
        );
        rt.block_on(async {
            let s = reopen(tmp.path());
            let info = s.stream_info("S").await.unwrap();
            assert_eq!(info.state.last_seq, N);
            assert_eq!(info.state.num_deleted, 0);
            let (seqs, got) = replay(&s).await;
            assert_eq!(got, vec![lost.clone()], "boundary {at_boundary}");
            assert_eq!(seqs, without(&lost), "boundary {at_boundary}");
            s.close().await.unwrap();
        });
    }
}

/// Checks invariant 1 (docs/design.md).
#[test]
fn repair_records_every_lost_range_as_a_gap_quarantines_and_leaves_a_clean_store() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    rt.block_on(fill(dir));
    let segs = segments(dir, "S");
    // Damage: a flipped byte in a record of segment 1, segment 3 gone, the
    // newest segment gone.
    let (d_lo, _) = seq_range(&segs[1]);
    let mut b = std::fs::read(&segs[1]).unwrap();
    let rec = 16 + 4 + u32::from_le_bytes(b[16..20].try_into().unwrap()) as usize;
    b[rec + 60] ^= 0x10; // the second record's payload
    std::fs::write(&segs[1], &b).unwrap();
    let damaged_copy = b.clone();
    let middle = seq_range(&segs[3]);
    std::fs::remove_file(&segs[3]).unwrap();
    let newest = seq_range(segs.last().unwrap());
    std::fs::remove_file(segs.last().unwrap()).unwrap();

    let done = durabus_log::repair(dir, None).unwrap();
    assert_eq!(done.len(), 1);
    let r = &done[0];
    assert_eq!(r.stream, "S");
    assert!(r.lost.contains(&(d_lo + 1, d_lo + 1)), "{r:?}");
    assert!(r.lost.contains(&(middle.0, middle.1)), "{r:?}");
    assert!(
        r.lost
            .iter()
            .any(|&(lo, hi)| lo == newest.0 && hi >= newest.1),
        "{r:?}"
    );
    assert_eq!(r.rewritten.len(), 1, "{r:?}");
    assert_eq!(r.rewritten[0].segment, segs[1]);
    assert_eq!(
        std::fs::read(&r.rewritten[0].quarantined).unwrap(),
        damaged_copy
    );
    assert_eq!(r.missing.len(), 2, "{r:?}");

    // Reads are clean now; the gaps count as deleted; sequences go on.
    let last_lost = r.lost.iter().map(|&(_, hi)| hi).max().unwrap();
    let lost_count: u64 = r.lost.iter().map(|&(lo, hi)| hi - lo + 1).sum();
    rt.block_on(async {
        let s = reopen(dir);
        let (seqs, lost) = replay(&s).await;
        assert!(lost.is_empty(), "{lost:?}");
        let expect: Vec<u64> = (1..=N)
            .filter(|q| !r.lost.iter().any(|&(lo, hi)| (lo..=hi).contains(q)))
            .collect();
        assert_eq!(seqs, expect);
        let info = s.stream_info("S").await.unwrap();
        assert_eq!(info.state.last_seq, last_lost);
        assert_eq!(info.state.messages, N - (lost_count - (last_lost - N)));
        let ack = s
            .publish(Message::new("c.new", "x"))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack.seq, last_lost + 1);
        s.close().await.unwrap();
    });
    // verify finds nothing: every record decodes, no fatal file problem.
    durabus_log::dump(dir, None, &mut |_| {}).unwrap();
    let problems = durabus_log::check_files(dir, "S").unwrap();
    assert!(problems.iter().all(|p| !p.fatal), "{problems:?}");
    // A second repair has nothing to do.
    assert!(durabus_log::repair(dir, None).unwrap().is_empty());
}

/// What the property test does to one segment file.
#[derive(Debug, Clone)]
enum Harm {
    /// Delete a segment (any, the newest included).
    Delete,
    /// Cut a sealed segment to this fraction (per mille) of its length.
    Cut(u64),
}

fn harm_strategy() -> impl proptest::strategy::Strategy<Value = Harm> {
    use proptest::prelude::*;
    prop_oneof![Just(Harm::Delete), (0u64..1000).prop_map(Harm::Cut)]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig {
        cases: std::env::var("DURABUS_PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(24),
        ..proptest::prelude::ProptestConfig::default()
    })]

    /// Deleting or cutting a segment never yields a reused sequence or a
    /// silent gap: every sequence up to the last one published is read
    /// back intact or reported lost, and the next publish is new.
    ///
    /// Checks invariant 1 (docs/design.md).
    #[test]
    fn harming_a_segment_never_reuses_a_sequence_or_hides_a_gap(
        n in 40u64..240,
        seg in 600u64..3000,
        pick in 0usize..1000,
        harm in harm_strategy(),
        keep_checkpoint in proptest::bool::ANY,
    ) {
        let rt = rt();
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        rt.block_on(async {
            let s = open_with(dir, opts().segment_size(seg));
            stream(&s, StreamConfig::new("S").subjects(["c.>"])).await;
            for i in 1..=n {
                publish(&s, &format!("c.{}", i % 7), format!("payload-{i}")).await;
            }
            s.close().await.unwrap();
        });
        let segs = segments(dir, "S");
        if !keep_checkpoint {
            std::fs::remove_file(dir.join("streams/S/checkpoint")).unwrap();
        }
        match harm {
            Harm::Delete => std::fs::remove_file(&segs[pick % segs.len()]).unwrap(),
            Harm::Cut(per_mille) => {
                if segs.len() < 2 {
                    return Ok(());
                }
                let victim = &segs[pick % (segs.len() - 1)];
                let b = std::fs::read(victim).unwrap();
                let keep = 16 + (b.len() as u64 - 16) * per_mille / 1000;
                std::fs::write(victim, &b[..keep as usize]).unwrap();
            }
        }
        rt.block_on(async {
            let s = open_with(dir, opts().segment_size(seg));
            let info = s.stream_info("S").await.unwrap();
            assert!(info.state.last_seq >= n, "{:?}", info.state);
            let (seqs, lost) = replay(&s).await;
            for q in 1..=n {
                let read = seqs.binary_search(&q).is_ok();
                let reported = lost.iter().any(|r| r.contains(&q));
                assert!(read != reported, "seq {q}: read {read}, reported lost {reported}");
            }
            for q in &seqs {
                let m = s.get_message("S", *q).await.unwrap();
                assert_eq!(&m.payload[..], format!("payload-{q}").as_bytes());
            }
            let ack = s.publish(Message::new("c.new", "x")).await.unwrap().unwrap();
            assert!(ack.seq > info.state.last_seq, "seq {} reused", ack.seq);
            s.close().await.unwrap();
        });
    }
}
