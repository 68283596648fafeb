//! `dump_with_progress` and `repair_with_progress`: progress in bytes of
//! segment files, rising to the total, without changing what is read.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::cell::RefCell;
use std::path::Path;

use common::*;
use durabus_core::{Backend, Error, StreamConfig};
use durabus_log::Progress;

/// Two streams of several 1 KiB segments each. Closed.
async fn fill(dir: &Path) {
    let s = open_with(dir, opts().segment_size(1024));
    for (name, subject) in [("A", "a"), ("B", "b")] {
        stream(&s, StreamConfig::new(name).subjects([subject])).await;
        for i in 0..60 {
            publish(&s, subject, format!("{i}-{}", "x".repeat(80))).await;
        }
    }
    s.close().await.unwrap();
}

/// The bytes of every segment file of `streams`, read from the directory.
fn file_bytes(dir: &Path, streams: &[&str]) -> u64 {
    streams
        .iter()
        .flat_map(|s| segments(dir, s))
        .map(|p| std::fs::metadata(p).unwrap().len())
        .sum()
}

/// Every report has the same total; `done` rises strictly and ends at it.
fn assert_rises_to(reports: &[Progress], total: u64) {
    assert!(!reports.is_empty());
    assert!(reports.iter().all(|p| p.total == total), "{reports:?}");
    assert!(
        reports.windows(2).all(|w| w[0].done < w[1].done),
        "{reports:?}"
    );
    assert_eq!(reports.last().map(|p| p.done), Some(total), "{reports:?}");
}

#[test]
fn dump_progress_rises_monotonically_to_the_segment_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    rt().block_on(fill(dir));
    assert!(segments(dir, "A").len() >= 3, "{:?}", segments(dir, "A"));
    let total = file_bytes(dir, &["A", "B"]);
    assert_eq!(durabus_log::segment_bytes(dir, None).unwrap(), total);

    let reports = RefCell::new(Vec::new());
    let mut records = 0;
    durabus_log::dump_with_progress(dir, None, &mut |_| records += 1, &|p| {
        reports.borrow_mut().push(p);
    })
    .unwrap();
    assert_eq!(records, 120);
    let reports = reports.into_inner();
    assert_rises_to(&reports, total);
    // Finer than a report per segment: one per record, at least.
    assert!(reports.len() >= 120, "{}", reports.len());

    // One stream: its own bytes.
    let reports = RefCell::new(Vec::new());
    durabus_log::dump_with_progress(dir, Some("B"), &mut |_| {}, &|p| {
        reports.borrow_mut().push(p);
    })
    .unwrap();
    assert_rises_to(&reports.into_inner(), file_bytes(dir, &["B"]));
}

#[test]
fn dump_with_progress_reads_the_same_records_as_dump() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    rt().block_on(fill(dir));
    let key = |r: durabus_log::DumpRecord| (r.stream, r.segment, r.offset, r.seq);
    let mut plain = Vec::new();
    durabus_log::dump(dir, None, &mut |r| plain.push(key(r))).unwrap();
    let mut with = Vec::new();
    durabus_log::dump_with_progress(dir, None, &mut |r| with.push(key(r)), &|_| {}).unwrap();
    assert_eq!(plain, with);
}

#[test]
fn segment_bytes_of_an_unknown_stream_is_stream_not_found() {
    let tmp = tempfile::tempdir().unwrap();
    rt().block_on(fill(tmp.path()));
    assert!(matches!(
        durabus_log::segment_bytes(tmp.path(), Some("NOPE")),
        Err(Error::StreamNotFound { .. })
    ));
}

#[test]
fn repair_progress_rises_monotonically_to_the_segment_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    rt().block_on(fill(dir));
    // A flipped byte in a record of A's second segment: repair rewrites it.
    let seg = segments(dir, "A")[1].clone();
    let mut b = std::fs::read(&seg).unwrap();
    b[16 + 30] ^= 0x10;
    std::fs::write(&seg, &b).unwrap();
    let total = file_bytes(dir, &["A", "B"]);

    let reports = RefCell::new(Vec::new());
    let done = durabus_log::repair_with_progress(dir, Some("A"), &|p| {
        reports.borrow_mut().push(p);
    })
    .unwrap();
    assert_eq!(done.len(), 1, "{done:?}");
    assert_eq!(done[0].rewritten.len(), 1, "{done:?}");
    let reports = reports.into_inner();
    // The scan reads every stream, whatever is repaired: B counts too.
    assert_rises_to(&reports, total);
    // A report per segment scanned, at least.
    let segs = segments(dir, "A").len() + segments(dir, "B").len();
    assert!(reports.len() >= segs, "{} < {segs}", reports.len());
}
