//! `Nats-Msg-Id` de-duplication inside the duplicate window.

use std::time::Duration;

use durabus::{Bus, Message};

use crate::{create, eventually, names, publish_captured, state, WAIT};

/// A repeated msg id answers with the original's seq, flagged duplicate,
/// and stores nothing.
///
/// Checks invariant 9 (docs/design.md).
pub async fn duplicate_msg_id_returns_original_seq_and_stores_nothing(bus: &Bus) {
    let n = names("dup");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let first = publish_captured(bus, Message::new(n.subject("a"), "1").with_msg_id("id-1")).await;
    publish_captured(bus, Message::new(n.subject("a"), "other")).await;
    let again = publish_captured(bus, Message::new(n.subject("a"), "1").with_msg_id("id-1")).await;
    assert_eq!(first.seq, 1);
    assert!(!first.duplicate);
    assert_eq!(again.seq, first.seq);
    assert!(again.duplicate);
    assert_eq!(again.stream, cfg.name);
    let st = state(bus, &cfg.name).await;
    assert_eq!((st.messages, st.last_seq), (2, 2), "{st:?}");
}

/// Different msg ids are different messages.
pub async fn distinct_msg_ids_are_all_stored(bus: &Bus) {
    let n = names("dup_distinct");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    for i in 0..5 {
        let ack = publish_captured(
            bus,
            Message::new(n.subject("a"), "same payload").with_msg_id(format!("id-{i}")),
        )
        .await;
        assert!(!ack.duplicate);
        assert_eq!(ack.seq, i + 1);
    }
    assert_eq!(state(bus, &cfg.name).await.messages, 5);
}

/// Identical payloads without a msg id are stored every time.
pub async fn messages_without_id_are_never_duplicates(bus: &Bus) {
    let n = names("dup_noid");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let a = publish_captured(bus, Message::new(n.subject("a"), "same")).await;
    let b = publish_captured(bus, Message::new(n.subject("a"), "same")).await;
    assert!(!a.duplicate && !b.duplicate);
    assert_eq!((a.seq, b.seq), (1, 2));
}

/// Each stream has its own dedup window: one id in two streams is two
/// messages.
pub async fn msg_ids_are_scoped_per_stream(bus: &Bus) {
    let n = names("dup_scope");
    let a = durabus::StreamConfig::new(n.stream("A")).subjects([n.subject("a")]);
    let b = durabus::StreamConfig::new(n.stream("B")).subjects([n.subject("b")]);
    create(bus, a.clone()).await;
    create(bus, b.clone()).await;
    let x = publish_captured(bus, Message::new(n.subject("a"), "x").with_msg_id("same")).await;
    let y = publish_captured(bus, Message::new(n.subject("b"), "y").with_msg_id("same")).await;
    assert!(!x.duplicate && !y.duplicate);
    assert_eq!((&*x.stream, &*y.stream), (a.name.as_str(), b.name.as_str()));
}

/// Once the duplicate window has passed, an id is new again.
pub async fn msg_id_can_be_reused_after_duplicate_window(bus: &Bus) {
    let n = names("dup_window");
    let cfg = n
        .stream_config("S")
        .duplicate_window(Duration::from_secs(1));
    create(bus, cfg.clone()).await;
    let first = publish_captured(bus, Message::new(n.subject("a"), "1").with_msg_id("w")).await;
    assert!(!first.duplicate);
    let subject = n.subject("a");
    eventually("msg id accepted again after the window", WAIT, || async {
        let ack = publish_captured(bus, Message::new(subject.clone(), "1").with_msg_id("w")).await;
        if ack.duplicate {
            assert_eq!(ack.seq, first.seq);
        }
        !ack.duplicate
    })
    .await;
    let st = state(bus, &cfg.name).await;
    assert_eq!((st.messages, st.last_seq), (2, 2), "{st:?}");
}

/// A batch repeating an id stores it once and flags the repeat.
pub async fn duplicate_inside_a_batch_is_stored_once(bus: &Bus) {
    let n = names("dup_batch");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let batch = vec![
        Message::new(n.subject("a"), "1").with_msg_id("x"),
        Message::new(n.subject("a"), "2").with_msg_id("y"),
        Message::new(n.subject("a"), "1").with_msg_id("x"),
    ];
    let acks: Vec<_> = bus
        .publish_batch(batch)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.unwrap().expect("captured"))
        .collect();
    assert_eq!((acks[0].seq, acks[0].duplicate), (1, false));
    assert_eq!((acks[1].seq, acks[1].duplicate), (2, false));
    assert_eq!((acks[2].seq, acks[2].duplicate), (1, true));
    assert_eq!(state(bus, &cfg.name).await.messages, 2);
}

/// Purging or deleting a message does not forget its msg id: within the
/// window a re-publish is still a duplicate of the original seq (as
/// JetStream, while the server runs; restarts are backend-specific).
///
/// Checks invariant 9 (docs/design.md).
pub async fn purged_or_deleted_msg_id_is_still_a_duplicate_inside_the_window(bus: &Bus) {
    let n = names("dup_purged");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let x = publish_captured(bus, Message::new(n.subject("a"), "x").with_msg_id("x")).await;
    publish_captured(bus, Message::new(n.subject("a"), "y").with_msg_id("y")).await;
    bus.purge_stream(&cfg.name, durabus::PurgeRequest::default())
        .await
        .unwrap();
    let again = publish_captured(bus, Message::new(n.subject("a"), "x").with_msg_id("x")).await;
    assert!(again.duplicate, "purged id stored again: {again:?}");
    assert_eq!(again.seq, x.seq);
    let z = publish_captured(bus, Message::new(n.subject("a"), "z").with_msg_id("z")).await;
    bus.delete_message(&cfg.name, z.seq).await.unwrap();
    let again = publish_captured(bus, Message::new(n.subject("a"), "z").with_msg_id("z")).await;
    assert!(again.duplicate, "deleted id stored again: {again:?}");
    assert_eq!(again.seq, z.seq);
    let st = state(bus, &cfg.name).await;
    assert_eq!((st.messages, st.last_seq), (0, 3), "{st:?}");
}
