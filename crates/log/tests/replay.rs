//! Ordered replay: start positions, gaps, live tail, cancel-safety.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use durabus_core::{
    Backend, Error, Message, PurgeRequest, Replay, ReplayOptions, ReplayStart, StreamConfig,
};
use durabus_log::Store;

async fn take(r: &mut Replay, n: usize) -> Vec<u64> {
    let mut v = Vec::new();
    for _ in 0..n {
        let m = tokio::time::timeout(Duration::from_secs(2), r.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        v.push(m.seq);
    }
    v
}

async fn drain(r: &mut Replay) -> Vec<u64> {
    let mut v = Vec::new();
    while let Some(m) = tokio::time::timeout(Duration::from_secs(2), r.next())
        .await
        .unwrap()
    {
        v.push(m.unwrap().seq);
    }
    v
}

fn stores(dir: &std::path::Path) -> Vec<(&'static str, Store)> {
    vec![
        ("file", open_with(dir, opts().segment_size(1024))),
        ("memory", Store::memory(opts().segment_size(1024)).unwrap()),
    ]
}

#[tokio::test]
async fn replay_from_sequence_with_gaps_then_live() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in stores(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
        for i in 1..=100u64 {
            publish(
                &s,
                if i % 10 == 0 { "a.ten" } else { "a.x" },
                format!("m{i}"),
            )
            .await;
        }
        s.delete_message("S", 5).await.unwrap();
        s.delete_message("S", 50).await.unwrap();
        s.purge_stream(
            "S",
            PurgeRequest {
                up_to_seq: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert!(matches!(
            s.replay("S", ReplayOptions::from_seq(0)).await,
            Err(Error::InvalidArgument { .. })
        ));
        let mut r = s.replay("S", ReplayOptions::from_seq(1)).await.unwrap();
        let got = take(&mut r, 96).await;
        let want: Vec<u64> = (3..=100).filter(|&x| x != 5 && x != 50).collect();
        assert_eq!(got, want, "{kind}");
        // Caught up: continues live.
        let p = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(30)).await;
            publish(&p, "a.x", "live").await;
        });
        let m = tokio::time::timeout(Duration::from_secs(2), r.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((m.seq, &m.payload[..]), (101, &b"live"[..]), "{kind}");
        // Filtered, bounded.
        let mut f = s
            .replay(
                "S",
                ReplayOptions::from_seq(1).filter("a.ten").stop_at_end(),
            )
            .await
            .unwrap();
        assert_eq!(
            drain(&mut f).await,
            (1..=10)
                .map(|i| i * 10)
                .filter(|&x| x != 50)
                .collect::<Vec<_>>(),
            "{kind}"
        );
        let mut mid = s
            .replay("S", ReplayOptions::from_seq(60).stop_at_end())
            .await
            .unwrap();
        assert_eq!(
            drain(&mut mid).await,
            (60..=101).collect::<Vec<_>>(),
            "{kind}"
        );
        s.close().await.unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(2), r.next())
                .await
                .unwrap()
                .is_none(),
            "{kind}: ends on close"
        );
    }
}

#[tokio::test]
async fn replay_from_time_and_new() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in stores(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a"])).await;
        for i in 0..30 {
            publish(&s, "a", format!("{i}")).await;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        let t = SystemTime::now();
        tokio::time::sleep(Duration::from_millis(20)).await;
        for i in 30..40 {
            publish(&s, "a", format!("{i}")).await;
        }
        let mut r = s
            .replay("S", ReplayOptions::from_time(t).stop_at_end())
            .await
            .unwrap();
        assert_eq!(drain(&mut r).await, (31..=40).collect::<Vec<_>>(), "{kind}");
        let mut all = s
            .replay(
                "S",
                ReplayOptions::from_time(SystemTime::UNIX_EPOCH).stop_at_end(),
            )
            .await
            .unwrap();
        assert_eq!(drain(&mut all).await.len(), 40);
        let opts = ReplayOptions {
            start: ReplayStart::New,
            filter: None,
            stop_at_end: false,
        };
        let mut new = s.replay("S", opts).await.unwrap();
        publish(&s, "a", "after").await;
        assert_eq!(take(&mut new, 1).await, vec![41], "{kind}");
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn replay_next_is_cancel_safe() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in stores(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a"])).await;
        publish(&s, "a", "1").await;
        let mut r = s.replay("S", ReplayOptions::from_seq(1)).await.unwrap();
        assert_eq!(take(&mut r, 1).await, vec![1]);
        // Times out while waiting live: the dropped future must lose nothing.
        for _ in 0..3 {
            assert!(tokio::time::timeout(Duration::from_millis(10), r.next())
                .await
                .is_err());
        }
        publish(&s, "a", "2").await;
        publish(&s, "a", "3").await;
        assert_eq!(take(&mut r, 2).await, vec![2, 3], "{kind}");
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn replay_skips_ahead_when_retention_removes_its_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open_with(tmp.path(), opts().segment_size(512));
    stream(&s, StreamConfig::new("S").subjects(["a"]).max_msgs(20u64)).await;
    for i in 0..20 {
        publish(&s, "a", format!("{i:04}")).await;
    }
    let mut r = s.replay("S", ReplayOptions::from_seq(1)).await.unwrap();
    assert_eq!(take(&mut r, 2).await, vec![1, 2]);
    for i in 0..100 {
        publish(&s, "a", format!("{i:04}")).await;
    }
    // Everything before 101 is gone; the replay continues at the new first
    // (messages it had already buffered may come first, all in order).
    let mut got = Vec::new();
    while got.last() != Some(&120) {
        got.extend(take(&mut r, 1).await);
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]));
    assert!(got.contains(&101) && got.len() <= 118, "{got:?}");
}

#[tokio::test]
async fn replay_ends_when_stream_is_deleted() {
    let s = Store::memory(opts()).unwrap();
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    let mut r = s.replay("S", ReplayOptions::from_seq(1)).await.unwrap();
    let p = s.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        p.delete_stream("S").await.unwrap();
    });
    assert!(tokio::time::timeout(Duration::from_secs(2), r.next())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn replay_returns_payloads_intact_across_big_messages() {
    let s = Store::memory(opts().segment_size(1 << 20)).unwrap();
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    let big = vec![7u8; 600 * 1024];
    publish(&s, "a", "small").await;
    publish(&s, "a", big.clone()).await;
    s.publish(Message::new("a", "h").with_header("K", "v"))
        .await
        .unwrap();
    let mut r = s
        .replay("S", ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let a = r.next().await.unwrap().unwrap();
    let b = r.next().await.unwrap().unwrap();
    let c = r.next().await.unwrap().unwrap();
    assert_eq!(&a.payload[..], b"small");
    assert_eq!(b.payload.len(), big.len());
    assert_eq!(c.headers.get("K"), Some("v"));
    assert!(r.next().await.is_none());
}
