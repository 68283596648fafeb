//! Recovery: torn tails (R3), mid-log corruption (R4), dedup across restart
//! (R10), derived state rebuilt (invariant 8), lock and format marker.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::Path;

use common::*;
use durabus_core::{Backend, Error, Message, ReplayOptions, StreamConfig};
use durabus_log::{Durability, Options, Store};

/// Writes `n` messages to stream S (segment size `seg`), closes; returns the
/// record offsets of the last segment as (start, end) pairs.
async fn fill(dir: &Path, n: u64, seg: u64) {
    let s = open_with(dir, opts().segment_size(seg));
    stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
    for i in 1..=n {
        publish(&s, &format!("a.{}", i % 3), format!("payload-{i}")).await;
    }
    s.close().await.unwrap();
}

/// Record boundaries of a segment file (offsets where records start, and the end).
fn record_bounds(path: &Path) -> Vec<u64> {
    let b = std::fs::read(path).unwrap();
    let mut at = 16usize;
    let mut v = vec![at as u64];
    while at + 4 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        at += 4 + len;
        v.push(at as u64);
    }
    v
}

async fn all_payloads(s: &Store) -> Vec<(u64, String)> {
    let mut r = s
        .replay("S", ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(m) = r.next().await {
        let Ok(m) = m else {
            // A lost range is reported and the replay goes on.
            assert!(m.as_ref().unwrap_err().is_lost_messages(), "{m:?}");
            continue;
        };
        out.push((m.seq, String::from_utf8(m.payload.to_vec()).unwrap()));
    }
    out
}

/// Checks invariant 7 (docs/design.md).
#[test]
fn torn_tail_at_every_byte_of_the_last_two_records_is_truncated_and_reported() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let base = tmp.path().join("base");
    rt.block_on(fill(&base, 12, 400));
    let segs = segments(&base, "S");
    let last = segs.last().unwrap().clone();
    let bounds = record_bounds(&last);
    assert!(
        bounds.len() >= 3,
        "need two records in the last segment: {bounds:?}"
    );
    let total = 12u64;
    let n = bounds.len();
    let (r1, r2, end) = (bounds[n - 3], bounds[n - 2], bounds[n - 1]);
    let mut case = 0;
    for cut in r1..end {
        case += 1;
        let dir = tmp.path().join(format!("c{case}"));
        copy_dir(&base, &dir);
        // Drop the checkpoint half the time. Kept, it says the cut records
        // were synced (a crash cannot lose them): their sequences are lost,
        // not reused (rule 3a).
        let synced = case % 2 == 1;
        if !synced {
            std::fs::remove_file(dir.join("streams/S/checkpoint")).unwrap();
        }
        let seg = dir
            .join("streams/S/segments")
            .join(last.file_name().unwrap());
        std::fs::OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut)
            .unwrap();
        let kept = if cut < r2 { total - 2 } else { total - 1 };
        let keep_end = if cut < r2 { r1 } else { r2 };
        let s = open(&dir);
        let report = s.recovery_report();
        if cut == keep_end {
            assert!(report.truncated.is_empty(), "cut {cut}: {report:?}");
        } else {
            assert_eq!(report.truncated.len(), 1, "cut {cut}");
            let (stream, path, dropped) = &report.truncated[0];
            assert_eq!(stream, "S");
            assert_eq!(path.file_name(), seg.file_name());
            assert_eq!(*dropped, cut - keep_end, "cut {cut}");
        }
        let last = if synced { total } else { kept };
        rt.block_on(async {
            let info = s.stream_info("S").await.unwrap();
            assert_eq!(info.state.last_seq, last, "cut {cut}");
            if synced {
                let e = s.get_message("S", kept + 1).await.unwrap_err();
                assert!(
                    matches!(&e, Error::Corrupt { seqs: Some(r), .. } if *r == (kept + 1..=total)),
                    "cut {cut}: {e}"
                );
            }
            let got = all_payloads(&s).await;
            assert_eq!(got.len() as u64, kept);
            assert_eq!(got.last().unwrap().1, format!("payload-{kept}"));
            assert_eq!(
                publish(&s, "a.1", "next").await,
                last + 1,
                "appends continue"
            );
            s.close().await.unwrap();
        });
        let s = open(&dir);
        assert!(s.recovery_report().truncated.is_empty());
        rt.block_on(async {
            assert_eq!(all_payloads(&s).await.len() as u64, kept + 1);
        });
        drop(s);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Checks invariant 7 (docs/design.md).
#[test]
fn zeroed_sector_at_the_tail_is_a_torn_tail() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(fill(tmp.path(), 200, 1 << 20));
    std::fs::remove_file(tmp.path().join("streams/S/checkpoint")).unwrap();
    let seg = segments(tmp.path(), "S").pop().unwrap();
    let mut b = std::fs::read(&seg).unwrap();
    let len = b.len();
    b[len - 512..].fill(0);
    std::fs::write(&seg, &b).unwrap();
    let bounds = record_bounds_lenient(&b);
    let keep_end = *bounds
        .iter()
        .filter(|&&o| o <= (len - 512) as u64)
        .max()
        .unwrap();
    let s = open(tmp.path());
    let r = s.recovery_report();
    assert_eq!(r.truncated.len(), 1);
    assert_eq!(r.truncated[0].2, len as u64 - keep_end);
    rt.block_on(async {
        let info = s.stream_info("S").await.unwrap();
        let got = all_payloads(&s).await;
        assert_eq!(got.len() as u64, info.state.messages);
        let kept = bounds.iter().filter(|&&o| o <= keep_end).count() as u64 - 1;
        assert_eq!(info.state.last_seq, kept);
        assert_eq!(publish(&s, "a.1", "x").await, info.state.last_seq + 1);
    });
}

fn record_bounds_lenient(b: &[u8]) -> Vec<u64> {
    let mut at = 16usize;
    let mut v = vec![16u64];
    while at + 4 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        at += 4 + len;
        v.push(at as u64);
    }
    v
}

/// Checks invariant 9 (docs/design.md).
#[test]
fn dedup_survives_reopen() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    for drop_checkpoint in [false, true] {
        let dir = tmp.path().join(format!("d{drop_checkpoint}"));
        rt.block_on(async {
            let s = open(&dir);
            stream(&s, StreamConfig::new("S").subjects(["a"])).await;
            publish(&s, "a", "before").await;
            let a = s
                .publish(Message::new("a", "x").with_msg_id("order-1"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(a.seq, 2);
            s.close().await.unwrap();
        });
        if drop_checkpoint {
            std::fs::remove_file(dir.join("streams/S/checkpoint")).unwrap();
        }
        rt.block_on(async {
            let s = open(&dir);
            let b = s
                .publish(Message::new("a", "x").with_msg_id("order-1"))
                .await
                .unwrap()
                .unwrap();
            assert!(b.duplicate);
            assert_eq!(b.seq, 2);
            assert_eq!(s.stream_info("S").await.unwrap().state.messages, 2);
        });
    }
}

/// Checks invariant 13 (docs/design.md).
#[test]
fn second_open_fails_with_locked_naming_our_pid_until_closed() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    match Store::open(tmp.path(), opts()) {
        Err(Error::Locked { pid, path }) => {
            assert_eq!(pid, std::process::id().to_string());
            assert_eq!(path, tmp.path());
        }
        other => panic!("{other:?}"),
    }
    rt.block_on(s.close()).unwrap();
    let s2 = open(tmp.path());
    drop(s2);
    // Dropping the last clone releases the lock too.
    let s3 = open(tmp.path());
    let clone = s3.clone();
    drop(s3);
    assert!(matches!(
        Store::open(tmp.path(), opts()),
        Err(Error::Locked { .. })
    ));
    drop(clone);
    open(tmp.path());
}

#[test]
fn newer_format_version_is_refused_and_nothing_is_modified() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("durabus.json"), br#"{"format": 3}"#).unwrap();
    match Store::open(tmp.path(), opts()) {
        Err(Error::UnsupportedFormat {
            found: 3,
            supported: 2,
            ..
        }) => {}
        other => panic!("{other:?}"),
    }
    let entries: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, ["durabus.json"]);
    assert_eq!(
        std::fs::read(tmp.path().join("durabus.json")).unwrap(),
        br#"{"format": 3}"#
    );
}

/// Checks invariant 8 (docs/design.md).
#[test]
fn segments_roll_and_deleted_indexes_are_rebuilt_with_identical_reads() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(fill(tmp.path(), 300, 2048));
    let segs = segments(tmp.path(), "S");
    assert!(segs.len() > 5, "{}", segs.len());
    let idx = files_with_ext(tmp.path(), "S", "idx");
    assert_eq!(
        idx.len(),
        segs.len() - 1,
        "every sealed segment has an index"
    );
    let (before, by_seq) = {
        let s = open(tmp.path());
        rt.block_on(async {
            let all = all_payloads(&s).await;
            let mut got = Vec::new();
            for seq in [1u64, 77, 150, 299, 300] {
                got.push(s.get_message("S", seq).await.unwrap().payload);
            }
            s.close().await.unwrap();
            (all, got)
        })
    };
    for p in &idx {
        std::fs::remove_file(p).unwrap();
    }
    // Also damage one index: it must be rebuilt too.
    let s = open(tmp.path());
    // Recovering the stream (on its first use, docs/design.md "Catalog")
    // rebuilds them, before any read needs them.
    rt.block_on(s.stream_info("S")).unwrap();
    assert_eq!(files_with_ext(tmp.path(), "S", "idx").len(), idx.len());
    rt.block_on(async {
        assert_eq!(all_payloads(&s).await, before);
        for (seq, want) in [1u64, 77, 150, 299, 300].into_iter().zip(by_seq) {
            assert_eq!(s.get_message("S", seq).await.unwrap().payload, want);
        }
        s.close().await.unwrap();
    });
    std::fs::write(&idx[1], b"garbage").unwrap();
    std::fs::remove_file(tmp.path().join("streams/S/checkpoint")).unwrap();
    let s = open(tmp.path());
    rt.block_on(async {
        assert_eq!(all_payloads(&s).await, before);
    });
    drop(s);
    assert!(std::fs::read(&idx[1]).unwrap().starts_with(b"DBUSIDX\0"));
}

/// Checks invariant 8 (docs/design.md).
#[test]
fn deleting_the_checkpoint_gives_the_same_state_after_reopen() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let info_before = rt.block_on(async {
        let s = open_with(tmp.path(), opts().segment_size(1500));
        stream(
            &s,
            StreamConfig::new("S")
                .subjects(["a.*"])
                .max_msgs_per_subject(30u64)
                .max_msgs(80u64),
        )
        .await;
        for i in 0..200u64 {
            publish(&s, &format!("a.{}", i % 4), format!("p{i}")).await;
        }
        s.delete_message("S", 190).await.unwrap();
        s.purge_stream(
            "S",
            durabus_core::PurgeRequest {
                subject: Some("a.1".into()),
                keep: Some(3),
                up_to_seq: None,
            },
        )
        .await
        .unwrap();
        publish(&s, "a.2", "after purge").await;
        let info = s.stream_info("S").await.unwrap();
        let all = all_payloads(&s).await;
        let t121 = s.get_message("S", info.state.first_seq).await.unwrap().time;
        assert_eq!(
            info.state.first_time,
            Some(t121),
            "first_time is the head message's time"
        );
        s.close().await.unwrap();
        (info.state, all)
    });
    let with_ckpt = rt.block_on(async {
        let s = open(tmp.path());
        let r = (
            s.stream_info("S").await.unwrap().state,
            all_payloads(&s).await,
        );
        s.close().await.unwrap();
        r
    });
    assert_eq!(with_ckpt, info_before);
    std::fs::remove_file(tmp.path().join("streams/S/checkpoint")).unwrap();
    let without = rt.block_on(async {
        let s = open(tmp.path());
        let r = (
            s.stream_info("S").await.unwrap().state,
            all_payloads(&s).await,
        );
        s.close().await.unwrap();
        r
    });
    assert_eq!(without, info_before);
}

#[test]
fn state_survives_unclean_drop_with_full_scan() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(async {
        let s = open(tmp.path());
        stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
        for i in 0..50 {
            publish(&s, "a.x", format!("{i}")).await;
        }
        s.purge_stream(
            "S",
            durabus_core::PurgeRequest {
                up_to_seq: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        // Simulate a crash: no close, and the checkpoint is lost.
        std::mem::forget(s);
    });
    std::fs::remove_file(tmp.path().join("streams/S/checkpoint")).ok();
    // The lock is still held by the forgotten store's file handle in this process;
    // copy the directory to open it as another process would after a crash.
    let copy = tmp.path().join("copy");
    copy_dir(tmp.path(), &copy);
    let s = Store::open(&copy, Options::default()).unwrap();
    rt.block_on(async {
        let st = s.stream_info("S").await.unwrap().state;
        assert_eq!((st.messages, st.first_seq, st.last_seq), (41, 10, 50));
    });
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

/// Where a segment's records end (at the end of the file or at zeros).
fn records_end(path: &Path) -> u64 {
    let b = std::fs::read(path).unwrap();
    let mut at = 16usize;
    while at + 4 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        at += 4 + len;
    }
    at as u64
}

/// Under `Always` the active segment keeps zeros written ahead of its
/// records; a sealed segment never does, and a clean close cuts them.
///
/// Checks invariant 22 (docs/design.md).
#[test]
fn under_always_only_the_active_segment_carries_preallocated_zeros() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    let o = Options::default()
        .durability(Durability::Always)
        .segment_size(8 * 1024);
    let s = open_with(tmp.path(), o.clone());
    rt.block_on(async {
        stream(&s, StreamConfig::new("S").subjects(["a"])).await;
        for i in 0..300 {
            publish(&s, "a", format!("payload-{i:04}-{}", "x".repeat(40))).await;
        }
    });
    let segs = segments(tmp.path(), "S");
    assert!(
        segs.len() > 2,
        "expected several segments, got {}",
        segs.len()
    );
    let (active, sealed) = segs.split_last().unwrap();
    for seg in sealed {
        assert_eq!(
            file_len(seg),
            records_end(seg),
            "{} holds more than its records",
            seg.display()
        );
    }
    let records_end = records_end(active);
    assert!(
        file_len(active) > records_end,
        "no zeros ahead of the records in the active segment ({} bytes, records end at {records_end})",
        file_len(active)
    );
    rt.block_on(s.close()).unwrap();
    assert_eq!(file_len(active), records_end, "close left the zeros behind");
    let s = open_with(tmp.path(), o);
    assert!(s.recovery_report().truncated.is_empty());
    assert_eq!(rt.block_on(all_payloads(&s)).len(), 300);
}

/// What a crash under `Always` leaves (zeros after the last record, to the
/// end of the last segment) is the end of the log: nothing reported, nothing
/// lost, appends go on over the zeros, and `verify` finds nothing wrong.
///
/// Checks invariant 22 (docs/design.md).
#[test]
fn zeros_after_the_last_record_end_the_log_without_a_torn_tail() {
    let rt = rt();
    let tmp = tempfile::tempdir().unwrap();
    rt.block_on(fill(tmp.path(), 20, 1 << 20));
    let last = segments(tmp.path(), "S").last().unwrap().clone();
    let end = file_len(&last);
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&last)
            .unwrap();
        f.write_all(&vec![0u8; 64 * 1024]).unwrap();
    }
    let torn = durabus_log::dump(tmp.path(), Some("S"), &mut |_| {}).unwrap();
    assert!(
        torn.is_empty(),
        "verify calls the zeros a torn tail: {torn:?}"
    );
    let o = Options::default().durability(Durability::Always);
    let s = open_with(tmp.path(), o.clone());
    assert!(
        s.recovery_report().truncated.is_empty(),
        "{:?}",
        s.recovery_report()
    );
    rt.block_on(async {
        assert_eq!(all_payloads(&s).await.len(), 20);
        for i in 21..=25 {
            publish(&s, "a.0", format!("payload-{i}")).await;
        }
        s.close().await.unwrap();
    });
    assert!(
        file_len(&last) > end,
        "the appends did not land in the segment"
    );
    let s = open_with(tmp.path(), o);
    assert!(s.recovery_report().truncated.is_empty());
    let got = rt.block_on(all_payloads(&s));
    assert_eq!(got.len(), 25);
    assert_eq!(got.last().unwrap(), &(25, "payload-25".to_owned()));
}
