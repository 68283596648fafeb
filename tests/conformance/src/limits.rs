//! Retention limits and the discard policy.

use std::time::Duration;

use durabus::{Bus, DiscardPolicy, Error, ReplayOptions};

use crate::{assert_err, create, eventually, names, publish_n, replay_all, seqs, state, WAIT};

/// max_msgs keeps the newest N; older ones are gone from get and replay.
pub async fn max_msgs_evicts_oldest(bus: &Bus) {
    let n = names("max_msgs");
    let cfg = n.stream_config("S").max_msgs(3u64);
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 5).await;
    let st = state(bus, &cfg.name).await;
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq),
        (3, 3, 5),
        "{st:?}"
    );
    assert_err!(
        bus.get_message(&cfg.name, 1).await,
        Error::MessageNotFound { .. }
    );
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(seqs(&stored), [3, 4, 5]);
}

/// max_bytes keeps the newest messages that fit.
///
/// Byte accounting is backend-specific (each counts its own overhead),
/// so the limit is set to exactly three of this backend's own measured
/// messages of identical shape, after one was stored.
pub async fn max_bytes_evicts_oldest(bus: &Bus) {
    let n = names("max_bytes");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    let one = state(bus, &cfg.name).await.bytes;
    assert!(one > 0);
    bus.update_stream(cfg.clone().max_bytes(3 * one))
        .await
        .unwrap();
    publish_n(bus, &n.subject("a"), 5).await;
    let st = state(bus, &cfg.name).await;
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq),
        (3, 4, 6),
        "{st:?}"
    );
    assert!(st.bytes <= 3 * one, "{st:?}");
}

/// max_msgs_per_subject evicts only the oldest of the subject that
/// overflowed.
pub async fn max_msgs_per_subject_evicts_oldest_of_that_subject(bus: &Bus) {
    let n = names("per_subject");
    let cfg = n.stream_config("S").max_msgs_per_subject(2u64);
    create(bus, cfg.clone()).await;
    let (a, b) = (n.subject("a"), n.subject("b"));
    publish_n(bus, &a, 1).await; // 1
    publish_n(bus, &b, 1).await; // 2
    publish_n(bus, &a, 1).await; // 3
    publish_n(bus, &a, 1).await; // 4: evicts 1
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(seqs(&stored), [2, 3, 4]);
    let st = state(bus, &cfg.name).await;
    assert_eq!((st.messages, st.first_seq), (3, 2), "{st:?}");
    assert_eq!(bus.get_last_message(&cfg.name, &b).await.unwrap().seq, 2);
}

/// Messages older than max_age expire; an emptied stream's first_seq is
/// last_seq + 1 and new messages continue the sequence.
pub async fn max_age_expires_old_messages(bus: &Bus) {
    let n = names("max_age");
    let cfg = n
        .stream_config("S")
        .max_age(Duration::from_secs(1))
        .duplicate_window(Duration::from_secs(1));
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    assert_eq!(state(bus, &cfg.name).await.messages, 3);
    let name = cfg.name.clone();
    eventually("messages expired by max_age", WAIT, || async {
        state(bus, &name).await.messages == 0
    })
    .await;
    let st = state(bus, &cfg.name).await;
    assert_eq!((st.first_seq, st.last_seq), (4, 3), "{st:?}");
    assert_err!(
        bus.get_message(&cfg.name, 3).await,
        Error::MessageNotFound { .. }
    );
    assert_eq!(publish_n(bus, &n.subject("a"), 1).await, [4]);
}

/// A message larger than max_msg_size is refused with both sizes; one
/// that fits is stored. Sizes keep a wide margin because backends may
/// count headers of their own.
pub async fn max_msg_size_rejects_larger_messages(bus: &Bus) {
    let n = names("max_size");
    let cfg = n.stream_config("S").max_msg_size(1000u32);
    create(bus, cfg.clone()).await;
    assert_err!(
        bus.publish(n.subject("a"), vec![7u8; 2000]).await,
        Error::MaxPayloadExceeded { size, max: 1000 } if size >= 2000
    );
    assert!(bus
        .publish(n.subject("a"), vec![7u8; 100])
        .await
        .unwrap()
        .is_some());
    let st = state(bus, &cfg.name).await;
    assert_eq!((st.messages, st.last_seq), (1, 1), "{st:?}");
}

/// With discard new a full stream refuses new messages and keeps the old.
pub async fn discard_new_rejects_when_full_with_stream_full(bus: &Bus) {
    let n = names("discard_new");
    let cfg = n
        .stream_config("S")
        .max_msgs(2u64)
        .discard(DiscardPolicy::New);
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    assert_err!(
        bus.publish(n.subject("a"), "3").await,
        Error::StreamFull { ref stream, .. } if *stream == cfg.name
    );
    let st = state(bus, &cfg.name).await;
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq),
        (2, 1, 2),
        "{st:?}"
    );
}
/// `discard: new` governs the stream-wide limits only: a subject at its
/// max_msgs_per_subject still evicts its oldest message (JetStream
/// rejects per subject only with `discard_new_per_subject`).
pub async fn max_msgs_per_subject_evicts_oldest_even_with_discard_new(bus: &Bus) {
    let n = names("per_subject_discard_new");
    let cfg = n
        .stream_config("S")
        .max_msgs(100u64)
        .max_msgs_per_subject(2u64)
        .discard(DiscardPolicy::New);
    create(bus, cfg.clone()).await;
    assert_eq!(publish_n(bus, &n.subject("a"), 4).await, [1, 2, 3, 4]);
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(seqs(&stored), [3, 4]);
}

/// With discard_new_per_subject (and discard new) a subject at its
/// max_msgs_per_subject refuses new messages with StreamFull; other
/// subjects are not affected.
pub async fn discard_new_per_subject_rejects_at_the_subject_limit(bus: &Bus) {
    let n = names("discard_new_per_subject");
    let cfg = n
        .stream_config("S")
        .max_msgs_per_subject(2u64)
        .discard(DiscardPolicy::New)
        .discard_new_per_subject(true);
    create(bus, cfg.clone()).await;
    assert_eq!(publish_n(bus, &n.subject("a"), 2).await, [1, 2]);
    assert_err!(
        bus.publish(n.subject("a"), "3").await,
        Error::StreamFull { ref stream, .. } if *stream == cfg.name
    );
    assert_eq!(publish_n(bus, &n.subject("b"), 1).await, [3]);
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(seqs(&stored), [1, 2, 3]);
}
