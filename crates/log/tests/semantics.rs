//! JetStream stream semantics of the embedded engine, on file and memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use durabus_core::{
    Backend, DiscardPolicy, Error, Message, PurgeRequest, StorageType, StreamConfig,
    NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_EXPECTED_STREAM,
    NATS_ROLLUP,
};

#[tokio::test]
async fn create_stream_is_create_if_absent_and_never_a_silent_update() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        let cfg = StreamConfig::new("S").subjects(["a.>"]);
        let a = s.create_stream(cfg.clone()).await.unwrap();
        publish(&s, "a.1", "x").await;
        let b = s.create_stream(cfg.clone()).await.unwrap();
        assert_eq!(a.created, b.created, "{kind}");
        assert_eq!(b.state.messages, 1, "{kind}");
        let err = s
            .create_stream(cfg.clone().max_msgs(5u64))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::StreamNameInUse { .. }),
            "{kind}: {err}"
        );
        let err = s
            .create_stream(StreamConfig::new("T").subjects(["a.b"]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::SubjectsOverlap { ref other, .. } if other == "S"),
            "{kind}: {err}"
        );
        // Explicit update works and re-applies limits.
        publish(&s, "a.2", "y").await;
        let info = s.update_stream(cfg.clone().max_msgs(1u64)).await.unwrap();
        assert_eq!(info.state.messages, 1, "{kind}");
        assert_eq!(info.state.first_seq, 2, "{kind}");
        let err = s
            .update_stream(cfg.clone().storage(StorageType::Memory))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{kind}: {err}");
        let err = s
            .update_stream(StreamConfig::new("NOPE"))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::StreamNotFound { .. }), "{kind}");
        s.close().await.unwrap();
    }
}

/// Checks invariant 15 (docs/design.md).
#[tokio::test]
async fn publish_assigns_sequences_and_uncaptured_subjects_return_none() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
        assert_eq!(publish(&s, "a.x", "1").await, 1, "{kind}");
        assert_eq!(publish(&s, "a.y", "2").await, 2, "{kind}");
        assert_eq!(
            s.publish(Message::new("b.x", "3")).await.unwrap(),
            None,
            "{kind}"
        );
        let err = s.publish(Message::new("a.*", "bad")).await.unwrap_err();
        assert!(matches!(err, Error::InvalidSubject { .. }), "{kind}");
        let m = s.get_message("S", 2).await.unwrap();
        assert_eq!((&*m.subject, &m.payload[..]), ("a.y", &b"2"[..]), "{kind}");
        let last = s.get_last_message("S", "a.x").await.unwrap();
        assert_eq!(last.seq, 1, "{kind}");
        assert!(matches!(
            s.get_message("S", 3).await,
            Err(Error::MessageNotFound { .. })
        ));
        assert!(matches!(
            s.get_last_message("S", "a.z").await,
            Err(Error::MessageNotFound { .. })
        ));
        let info = s.stream_info("S").await.unwrap();
        assert_eq!(
            (
                info.state.messages,
                info.state.first_seq,
                info.state.last_seq
            ),
            (2, 1, 2)
        );
        assert_eq!(info.state.num_subjects, 2);
        assert!(info.state.first_time.is_some() && info.state.last_time.is_some());
        assert_eq!(s.list_streams().await.unwrap().len(), 1);
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn expected_headers_are_enforced() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
        publish(&s, "a.x", "1").await;
        let m = Message::new("a.x", "2").with_header(NATS_EXPECTED_STREAM, "OTHER");
        assert!(
            matches!(s.publish(m).await, Err(Error::WrongStream { .. })),
            "{kind}"
        );
        let m = Message::new("a.x", "2").with_header(NATS_EXPECTED_LAST_SEQUENCE, "5");
        let err = s.publish(m).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::WrongLastSequence {
                    expected: 5,
                    current: 1
                }
            ),
            "{kind}: {err}"
        );
        let m = Message::new("a.x", "2").with_header(NATS_EXPECTED_LAST_SEQUENCE, "1");
        assert_eq!(s.publish(m).await.unwrap().unwrap().seq, 2);
        let m = Message::new("a.y", "3").with_header(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        assert_eq!(s.publish(m).await.unwrap().unwrap().seq, 3);
        let m = Message::new("a.x", "4").with_header(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "1");
        let err = s.publish(m).await.unwrap_err();
        assert!(
            matches!(
                err,
                Error::WrongLastSequence {
                    expected: 1,
                    current: 2
                }
            ),
            "{kind}: {err}"
        );
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn msg_id_dedup_returns_the_original_sequence() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a"])).await;
        let a = s
            .publish(Message::new("a", "1").with_msg_id("m1"))
            .await
            .unwrap()
            .unwrap();
        let b = s
            .publish(Message::new("a", "1").with_msg_id("m1"))
            .await
            .unwrap()
            .unwrap();
        assert!(!a.duplicate && b.duplicate, "{kind}");
        assert_eq!(a.seq, b.seq);
        assert_eq!(s.stream_info("S").await.unwrap().state.messages, 1);
        s.close().await.unwrap();
    }
}

/// The duplicate window is measured on the store's clock: a manual clock
/// moved past the window, with no sleep.
///
/// Checks invariant 9 (docs/design.md).
#[tokio::test]
async fn dedup_window_expires() {
    let clock = std::sync::Arc::new(durabus_log::ManualClock::new());
    let s = durabus_log::Store::memory(opts().clock(clock.clone())).unwrap();
    stream(
        &s,
        StreamConfig::new("S")
            .subjects(["a"])
            .duplicate_window(Duration::from_millis(50)),
    )
    .await;
    let publish = || s.publish(Message::new("a", "1").with_msg_id("m"));
    let a = publish().await.unwrap().unwrap();
    assert!(!a.duplicate);
    // Inside the window: the original.
    clock.advance(Duration::from_millis(49));
    let b = publish().await.unwrap().unwrap();
    assert!(b.duplicate, "{b:?}");
    assert_eq!(b.seq, a.seq);
    // Past it: a new message.
    clock.advance(Duration::from_millis(2));
    let c = publish().await.unwrap().unwrap();
    assert!(!c.duplicate, "{c:?}");
    assert_eq!(c.seq, a.seq + 1);
    assert_eq!(s.stream_info("S").await.unwrap().state.messages, 2);
}

#[tokio::test]
async fn max_msgs_discard_old_evicts_oldest_and_discard_new_rejects() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        stream(&s, StreamConfig::new("OLD").subjects(["o"]).max_msgs(3u64)).await;
        for i in 0..10 {
            publish(&s, "o", format!("{i}")).await;
        }
        let st = s.stream_info("OLD").await.unwrap().state;
        assert_eq!(
            (st.messages, st.first_seq, st.last_seq),
            (3, 8, 10),
            "{kind}"
        );
        assert_eq!(&s.get_message("OLD", 8).await.unwrap().payload[..], b"7");
        stream(
            &s,
            StreamConfig::new("NEW")
                .subjects(["n"])
                .max_msgs(3u64)
                .discard(DiscardPolicy::New),
        )
        .await;
        for i in 0..3 {
            publish(&s, "n", format!("{i}")).await;
        }
        let err = s.publish(Message::new("n", "x")).await.unwrap_err();
        assert!(
            matches!(err, Error::StreamFull { ref limit, .. } if limit.contains("max_msgs")),
            "{kind}: {err}"
        );
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn max_bytes_discard_old_and_new() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        // Each record: 35 + 1 (subject) + 100 payload = 136 bytes.
        stream(
            &s,
            StreamConfig::new("OLD").subjects(["o"]).max_bytes(500u64),
        )
        .await;
        for _ in 0..10 {
            publish(&s, "o", vec![0u8; 100]).await;
        }
        let st = s.stream_info("OLD").await.unwrap().state;
        assert_eq!((st.messages, st.bytes), (3, 3 * 136), "{kind}");
        assert_eq!(st.first_seq, 8);
        stream(
            &s,
            StreamConfig::new("NEW")
                .subjects(["n"])
                .max_bytes(500u64)
                .discard(DiscardPolicy::New),
        )
        .await;
        for _ in 0..3 {
            publish(&s, "n", vec![0u8; 100]).await;
        }
        let err = s
            .publish(Message::new("n", vec![0u8; 100]))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::StreamFull { ref limit, .. } if limit.contains("max_bytes")),
            "{kind}: {err}"
        );
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn max_msgs_per_subject_keeps_newest_and_discard_new_per_subject_rejects() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        stream(
            &s,
            StreamConfig::new("OLD")
                .subjects(["o.*"])
                .max_msgs_per_subject(2u64),
        )
        .await;
        for i in 0..5 {
            publish(&s, "o.a", format!("a{i}")).await;
            publish(&s, "o.b", format!("b{i}")).await;
        }
        let st = s.stream_info("OLD").await.unwrap().state;
        assert_eq!((st.messages, st.num_subjects), (4, 2), "{kind}");
        assert_eq!(
            &s.get_last_message("OLD", "o.a").await.unwrap().payload[..],
            b"a4"
        );
        assert_eq!(s.get_message("OLD", 7).await.unwrap().subject, "o.a");
        assert!(s.get_message("OLD", 5).await.is_err());
        stream(
            &s,
            StreamConfig::new("NEW")
                .subjects(["n.*"])
                .max_msgs_per_subject(1u64)
                .discard(DiscardPolicy::New)
                .discard_new_per_subject(true),
        )
        .await;
        publish(&s, "n.a", "1").await;
        publish(&s, "n.b", "1").await;
        let err = s.publish(Message::new("n.a", "2")).await.unwrap_err();
        assert!(
            matches!(err, Error::StreamFull { ref limit, .. } if limit.contains("max_msgs_per_subject")),
            "{kind}: {err}"
        );
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn max_msg_size_rejects_with_both_sizes() {
    let s = durabus_log::Store::memory(opts()).unwrap();
    stream(
        &s,
        StreamConfig::new("S").subjects(["a"]).max_msg_size(10u32),
    )
    .await;
    publish(&s, "a", vec![1u8; 10]).await;
    let err = s
        .publish(Message::new("a", vec![1u8; 11]))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::MaxPayloadExceeded { size: 11, max: 10 }),
        "{err}"
    );
    let m = Message::new("a", vec![1u8; 5]).with_header("X", "123456");
    assert!(matches!(
        s.publish(m).await,
        Err(Error::MaxPayloadExceeded { .. })
    ));
}

#[tokio::test]
async fn max_age_expires_on_publish_and_by_timer_without_publishes() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        stream(
            &s,
            StreamConfig::new("S")
                .subjects(["a"])
                .max_age(Duration::from_millis(300))
                .duplicate_window(Duration::from_millis(100)),
        )
        .await;
        publish(&s, "a", "1").await;
        publish(&s, "a", "2").await;
        tokio::time::sleep(Duration::from_millis(350)).await;
        publish(&s, "a", "3").await;
        let st = s.stream_info("S").await.unwrap().state;
        assert_eq!((st.messages, st.first_seq), (1, 3), "{kind}: on publish");
        // Now no publishes: the background timer expires it.
        tokio::time::sleep(Duration::from_millis(600)).await;
        let st = s.stream_info("S").await.unwrap().state;
        assert_eq!(
            (st.messages, st.first_seq, st.last_seq),
            (0, 4, 3),
            "{kind}: by timer"
        );
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn purge_variants_and_deny_purge() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
        for i in 0..10 {
            publish(
                &s,
                if i % 2 == 0 { "a.even" } else { "a.odd" },
                format!("{i}"),
            )
            .await;
        }
        // by subject, keep 2
        let n = s
            .purge_stream(
                "S",
                PurgeRequest {
                    subject: Some("a.even".into()),
                    keep: Some(2),
                    up_to_seq: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(n, 3, "{kind}");
        let st = s.stream_info("S").await.unwrap().state;
        assert_eq!(
            (st.messages, st.first_seq, st.num_deleted),
            (7, 2, 2),
            "{kind}"
        );
        // up_to_seq
        let n = s
            .purge_stream(
                "S",
                PurgeRequest {
                    up_to_seq: Some(5),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(n, 2, "{kind}"); // 2 and 4
        assert_eq!(s.stream_info("S").await.unwrap().state.first_seq, 6);
        // keep N
        let n = s
            .purge_stream(
                "S",
                PurgeRequest {
                    keep: Some(2),
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(n, 3, "{kind}"); // 6 7 8 removed; 9 10 kept
        let st = s.stream_info("S").await.unwrap().state;
        assert_eq!((st.messages, st.first_seq), (2, 9), "{kind}");
        // all
        let n = s.purge_stream("S", PurgeRequest::default()).await.unwrap();
        assert_eq!(n, 2);
        let st = s.stream_info("S").await.unwrap().state;
        assert_eq!(
            (st.messages, st.first_seq, st.last_seq, st.bytes),
            (0, 11, 10, 0),
            "{kind}"
        );
        assert_eq!(publish(&s, "a.x", "z").await, 11);
        stream(
            &s,
            StreamConfig::new("D")
                .subjects(["d"])
                .deny_purge(true)
                .deny_delete(true),
        )
        .await;
        publish(&s, "d", "1").await;
        assert!(matches!(
            s.purge_stream("D", PurgeRequest::default()).await,
            Err(Error::Denied { .. })
        ));
        assert!(matches!(
            s.delete_message("D", 1).await,
            Err(Error::Denied { .. })
        ));
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn delete_message_leaves_a_gap_and_updates_state() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a.*"])).await;
        for i in 1..=5 {
            publish(&s, "a.x", format!("{i}")).await;
        }
        s.delete_message("S", 3).await.unwrap();
        s.delete_message("S", 5).await.unwrap();
        assert!(matches!(
            s.delete_message("S", 3).await,
            Err(Error::MessageNotFound { .. })
        ));
        let st = s.stream_info("S").await.unwrap().state;
        assert_eq!(
            (st.messages, st.num_deleted, st.last_seq),
            (3, 2, 5),
            "{kind}"
        );
        assert_eq!(
            s.get_last_message("S", "a.x").await.unwrap().seq,
            4,
            "{kind}"
        );
        s.delete_message("S", 1).await.unwrap();
        let st = s.stream_info("S").await.unwrap().state;
        assert_eq!((st.first_seq, st.num_deleted), (2, 2), "{kind}");
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn rollup_sub_and_all() {
    let s = durabus_log::Store::memory(opts()).unwrap();
    stream(
        &s,
        StreamConfig::new("S").subjects(["a.*"]).allow_rollup(true),
    )
    .await;
    publish(&s, "a.x", "1").await;
    publish(&s, "a.x", "2").await;
    publish(&s, "a.y", "3").await;
    let ack = s
        .publish(Message::new("a.x", "R").with_header(NATS_ROLLUP, "sub"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack.seq, 4);
    let st = s.stream_info("S").await.unwrap().state;
    assert_eq!(st.messages, 2);
    s.publish(Message::new("a.y", "ALL").with_header(NATS_ROLLUP, "all"))
        .await
        .unwrap();
    let st = s.stream_info("S").await.unwrap().state;
    assert_eq!((st.messages, st.first_seq), (1, 5));
    stream(&s, StreamConfig::new("N").subjects(["n"])).await;
    let err = s
        .publish(Message::new("n", "R").with_header(NATS_ROLLUP, "sub"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Denied { .. }), "{err}");
}

#[tokio::test]
async fn publish_batch_returns_results_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a"]).max_msgs(50u64)).await;
        let mut msgs: Vec<Message> = (0..100)
            .map(|i| Message::new("a", format!("{i}")))
            .collect();
        msgs.insert(10, Message::new("zzz", "uncaptured"));
        msgs.insert(20, Message::new("a..b", "bad"));
        msgs.insert(30, Message::new("a", "dup").with_msg_id("x"));
        msgs.insert(31, Message::new("a", "dup").with_msg_id("x"));
        let r = s.publish_batch(msgs).await.unwrap();
        assert_eq!(r.len(), 104);
        assert_eq!(r[0].as_ref().unwrap().as_ref().unwrap().seq, 1, "{kind}");
        assert!(r[10].as_ref().unwrap().is_none());
        assert!(r[20].is_err());
        let a = r[30].as_ref().unwrap().as_ref().unwrap();
        let b = r[31].as_ref().unwrap().as_ref().unwrap();
        assert!(b.duplicate && a.seq == b.seq);
        assert_eq!(r[103].as_ref().unwrap().as_ref().unwrap().seq, 101);
        let st = s.stream_info("S").await.unwrap().state;
        assert_eq!(
            (st.messages, st.first_seq, st.last_seq),
            (50, 52, 101),
            "{kind}"
        );
        assert_eq!(&s.get_message("S", 101).await.unwrap().payload[..], b"99");
        s.close().await.unwrap();
    }
}

#[tokio::test]
async fn delete_stream_removes_it_and_its_files() {
    let tmp = tempfile::tempdir().unwrap();
    let s = open(tmp.path());
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    publish(&s, "a", "1").await;
    s.delete_stream("S").await.unwrap();
    assert!(matches!(
        s.stream_info("S").await,
        Err(Error::StreamNotFound { .. })
    ));
    assert_eq!(s.publish(Message::new("a", "x")).await.unwrap(), None);
    assert!(!tmp.path().join("streams/S").exists());
    stream(&s, StreamConfig::new("S").subjects(["a"])).await;
    assert_eq!(publish(&s, "a", "again").await, 1);
}

#[tokio::test]
async fn after_close_every_call_returns_closed() {
    let tmp = tempfile::tempdir().unwrap();
    for (_, s) in both(tmp.path()) {
        stream(&s, StreamConfig::new("S").subjects(["a"])).await;
        s.close().await.unwrap();
        s.close().await.unwrap();
        assert!(matches!(
            s.publish(Message::new("a", "x")).await,
            Err(Error::Closed)
        ));
        assert!(matches!(s.stream_info("S").await, Err(Error::Closed)));
        assert!(matches!(s.subscribe("a", None).await, Err(Error::Closed)));
        assert_eq!(s.status(), durabus_core::ConnectionStatus::Closed);
    }
}

/// Reads by sequence find records of every size, below, around and far
/// above the lookup's first read (8 KiB), wherever they sit after an index
/// entry, and so does the time lookup.
#[tokio::test]
async fn get_finds_records_of_every_size_around_the_first_read() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        s.create_stream(StreamConfig::new("S").subjects(["a.>"]))
            .await
            .unwrap();
        let sizes = [1usize, 100, 4000, 8100, 8192, 9000, 300_000, 3, 70_000, 50];
        let mut sent = Vec::new();
        for round in 0..3u8 {
            for (i, n) in sizes.iter().enumerate() {
                let payload = vec![round * 16 + i as u8; *n];
                let ack = s
                    .publish(Message::new(format!("a.{i}"), payload.clone()))
                    .await
                    .unwrap()
                    .unwrap();
                sent.push((ack.seq, payload));
            }
        }
        for (seq, payload) in &sent {
            let m = s.get_message("S", *seq).await.unwrap();
            assert_eq!(m.seq, *seq, "{kind}");
            assert_eq!(&m.payload[..], &payload[..], "{kind} seq {seq}");
        }
        for (seq, _) in sent.iter().step_by(7) {
            let m = s.get_message("S", *seq).await.unwrap();
            let from_time = s
                .replay(
                    "S",
                    durabus_core::ReplayOptions::from_time(m.time).stop_at_end(),
                )
                .await
                .unwrap()
                .next()
                .await
                .unwrap()
                .unwrap();
            assert!(from_time.seq <= *seq && from_time.time == m.time, "{kind}");
        }
    }
}
