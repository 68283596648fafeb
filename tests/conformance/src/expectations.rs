//! Optimistic concurrency: `Nats-Expected-*` headers.

use durabus::{
    Bus, Error, Message, NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
    NATS_EXPECTED_STREAM,
};

use crate::{assert_err, create, names, publish_captured, publish_n, state};

/// A matching expected last sequence is accepted.
pub async fn expected_last_sequence_match_is_stored(bus: &Bus) {
    let n = names("exp_last");
    create(bus, n.stream_config("S")).await;
    publish_n(bus, &n.subject("a"), 2).await;
    let msg = Message::new(n.subject("a"), "3").with_header(NATS_EXPECTED_LAST_SEQUENCE, "2");
    assert_eq!(publish_captured(bus, msg).await.seq, 3);
}

/// Expecting 0 on a stream that never stored anything is accepted.
pub async fn expected_last_sequence_zero_on_empty_stream_is_stored(bus: &Bus) {
    let n = names("exp_zero");
    create(bus, n.stream_config("S")).await;
    let msg = Message::new(n.subject("a"), "1").with_header(NATS_EXPECTED_LAST_SEQUENCE, "0");
    assert_eq!(publish_captured(bus, msg).await.seq, 1);
}

/// A wrong expected last sequence is refused with both numbers and
/// nothing is stored.
pub async fn expected_last_sequence_mismatch_is_wrong_last_sequence_and_stores_nothing(bus: &Bus) {
    let n = names("exp_wrong");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    let msg = Message::new(n.subject("a"), "x").with_header(NATS_EXPECTED_LAST_SEQUENCE, "5");
    assert_err!(
        bus.publish_message(msg).await,
        Error::WrongLastSequence {
            expected: 5,
            current: 3
        }
    );
    let st = state(bus, &cfg.name).await;
    assert_eq!((st.messages, st.last_seq), (3, 3), "{st:?}");
}

/// The expected last subject sequence is the last seq *of that subject*;
/// 0 means the subject has no message yet.
pub async fn expected_last_subject_sequence_is_checked_per_subject(bus: &Bus) {
    let n = names("exp_subject");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let (a, b, c) = (n.subject("a"), n.subject("b"), n.subject("c"));
    publish_n(bus, &a, 1).await; // 1
    publish_n(bus, &b, 1).await; // 2
    publish_n(bus, &a, 1).await; // 3
    let ok = Message::new(a.clone(), "x").with_header(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "3");
    assert_eq!(publish_captured(bus, ok).await.seq, 4);
    let bad = Message::new(b.clone(), "x").with_header(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "4");
    assert_err!(
        bus.publish_message(bad).await,
        Error::WrongLastSequence {
            expected: 4,
            current: 2
        }
    );
    let fresh = Message::new(c.clone(), "x").with_header(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
    assert_eq!(publish_captured(bus, fresh).await.seq, 5);
    let stale = Message::new(c, "y").with_header(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
    assert_err!(
        bus.publish_message(stale).await,
        Error::WrongLastSequence {
            expected: 0,
            current: 5
        }
    );
    assert_eq!(state(bus, &cfg.name).await.messages, 5);
}

/// Expecting another stream than the capturing one is refused; naming
/// the right one is accepted.
pub async fn expected_stream_mismatch_is_wrong_stream(bus: &Bus) {
    let n = names("exp_stream");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let other = n.stream("OTHER");
    let bad = Message::new(n.subject("a"), "x").with_header(NATS_EXPECTED_STREAM, other.clone());
    assert_err!(
        bus.publish_message(bad).await,
        Error::WrongStream { ref expected, .. } if *expected == other
    );
    let good =
        Message::new(n.subject("a"), "x").with_header(NATS_EXPECTED_STREAM, cfg.name.clone());
    assert_eq!(publish_captured(bus, good).await.seq, 1);
    assert_eq!(state(bus, &cfg.name).await.messages, 1);
}
