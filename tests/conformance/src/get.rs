//! Direct get by sequence and last-by-subject.

use durabus::{Bus, Error};

use crate::{assert_err, create, names, publish_n, publish_payload};

/// get_message returns what was stored at that sequence.
pub async fn get_message_returns_the_stored_message(bus: &Bus) {
    let n = names("get");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_payload(bus, &n.subject("a"), "first").await;
    let ack = publish_payload(bus, &n.subject("b"), "second").await;
    let m = bus.get_message(&cfg.name, ack.seq).await.unwrap();
    assert_eq!(m.seq, 2);
    assert_eq!(m.stream, cfg.name);
    assert_eq!(m.subject, n.subject("b"));
    assert_eq!(&m.payload[..], b"second");
}

/// A sequence past the end holds no message.
pub async fn get_message_beyond_last_is_message_not_found(bus: &Bus) {
    let n = names("get_beyond");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    assert_err!(
        bus.get_message(&cfg.name, 3).await,
        Error::MessageNotFound { .. }
    );
    assert_err!(
        bus.get_message(&cfg.name, u64::MAX).await,
        Error::MessageNotFound { .. }
    );
}

/// Reads from a missing stream name it as missing.
pub async fn get_from_unknown_stream_is_stream_not_found(bus: &Bus) {
    let n = names("get_unknown");
    let name = n.stream("NOPE");
    assert_err!(
        bus.get_message(&name, 1).await,
        Error::StreamNotFound { .. }
    );
    assert_err!(
        bus.get_last_message(&name, &n.subject("a")).await,
        Error::StreamNotFound { .. }
    );
}

/// get_last_message returns the newest message of each subject.
pub async fn get_last_message_returns_newest_per_subject(bus: &Bus) {
    let n = names("get_last");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_payload(bus, &n.subject("a"), "a1").await;
    publish_payload(bus, &n.subject("b"), "b1").await;
    publish_payload(bus, &n.subject("a"), "a2").await;
    publish_payload(bus, &n.subject("c"), "c1").await;
    let a = bus
        .get_last_message(&cfg.name, &n.subject("a"))
        .await
        .unwrap();
    assert_eq!((a.seq, &a.payload[..]), (3, &b"a2"[..]));
    assert_eq!(a.subject, n.subject("a"));
    let b = bus
        .get_last_message(&cfg.name, &n.subject("b"))
        .await
        .unwrap();
    assert_eq!((b.seq, &b.payload[..]), (2, &b"b1"[..]));
}

/// A subject with no stored message has no last message.
pub async fn get_last_message_without_match_is_message_not_found(bus: &Bus) {
    let n = names("get_last_none");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    assert_err!(
        bus.get_last_message(&cfg.name, &n.subject("zzz")).await,
        Error::MessageNotFound { ref stream, .. } if *stream == cfg.name
    );
}
