//! `dump`: every record in log order, read-only, errors name segment and offset.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use durabus_core::{Backend, Error, Message, PurgeRequest, StreamConfig};

#[tokio::test]
async fn dump_prints_every_record_in_log_order_without_the_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open_with(tmp.path(), opts().segment_size(300));
    stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
    for i in 1..=10 {
        s.publish(Message::new("a.x", format!("{i}")).with_header("K", "v"))
            .await
            .unwrap();
    }
    s.delete_message("S", 3).await.unwrap();
    s.purge_stream(
        "S",
        PurgeRequest {
            up_to_seq: Some(5),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // The store is still open (locked): dump reads anyway and changes nothing.
    let mut recs = Vec::new();
    durabus_log::dump(tmp.path(), Some("S"), &mut |r| recs.push(r)).unwrap();
    let kinds: Vec<(&str, u64)> = recs.iter().map(|r| (r.kind, r.seq)).collect();
    let mut want: Vec<(&str, u64)> = (1..=10).map(|i| ("msg", i)).collect();
    want.push(("delete", 3));
    want.push(("purge", 5));
    assert_eq!(kinds, want);
    assert_eq!(recs[0].headers, vec![("K".to_owned(), "v".to_owned())]);
    assert_eq!(&recs[9].payload[..], b"10");
    assert!(recs
        .windows(2)
        .all(|w| (w[0].segment.clone(), w[0].offset) < (w[1].segment.clone(), w[1].offset)));
    assert!(matches!(
        durabus_log::dump(tmp.path(), Some("NOPE"), &mut |_| {}),
        Err(Error::StreamNotFound { .. })
    ));
    s.close().await.unwrap();

    // A bad record in a sealed segment ends the dump with its position.
    let segs = segments(tmp.path(), "S");
    let mut b = std::fs::read(&segs[0]).unwrap();
    b[16 + 12] ^= 0xff;
    std::fs::write(&segs[0], &b).unwrap();
    match durabus_log::dump(tmp.path(), None, &mut |_| {}) {
        Err(Error::Corrupt {
            segment, offset, ..
        }) => {
            assert_eq!(segment, segs[0]);
            assert_eq!(offset, 16);
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn dump_ends_at_a_torn_tail_and_reports_its_position() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    for i in 0..5 {
        publish(&s, "a", format!("{i}")).await;
    }
    s.close().await.unwrap();
    let seg = segments(tmp.path(), "S").pop().unwrap();
    let len = std::fs::metadata(&seg).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 3)
        .unwrap();
    let mut n = 0;
    let mut last_end = 0;
    let torn = durabus_log::dump(tmp.path(), None, &mut |r| {
        n += 1;
        last_end = r.offset;
    })
    .unwrap();
    assert_eq!(n, 4);
    assert_eq!(torn.len(), 1, "{torn:?}");
    let t = &torn[0];
    assert_eq!(t.stream, "S");
    assert!(t.offset > last_end, "{t:?}");
    assert_eq!(t.offset + t.bytes, len - 3, "{t:?}");
}

#[tokio::test]
async fn records_are_capped_at_64_mib() {
    let s = durabus_log::Store::memory(opts()).unwrap();
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    let err = s
        .publish(Message::new("a", vec![0u8; 64 << 20]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::MaxPayloadExceeded { size, max } if size == 64 << 20 && max < size),
        "{err}"
    );
}
