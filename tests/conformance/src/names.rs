//! Name byte limits: the longest stream, consumer and KV bucket names every
//! backend accepts work from create to remove, and one byte more is refused
//! alike everywhere (docs/design.md, "Data directory layout").

use std::time::Duration;

use durabus::{
    AckKind, ArgumentError, Bus, ConsumerConfig, Error, KvConfig, StreamConfig,
    MAX_BUCKET_NAME_LEN, MAX_CONSUMER_NAME_LEN, MAX_STREAM_NAME_LEN,
};

use crate::{assert_err, consumer, create, fetch, names, publish_n, state};

/// `prefix` (unique to the case) padded with `x` to exactly `len` bytes.
fn padded(prefix: &str, len: usize) -> String {
    assert!(prefix.len() <= len, "{prefix:?} is longer than {len}");
    format!("{prefix}{}", "x".repeat(len - prefix.len()))
}

/// Whether `r` is `NameTooLong` for `name` with its length and `max`.
fn is_too_long<T>(r: &durabus::Result<T>, name: &str, max: usize) -> bool {
    matches!(
        r,
        Err(Error::InvalidArgument {
            reason: ArgumentError::NameTooLong { name: n, len, max: m, .. },
        }) if n == name && *len == name.len() && *m == max
    )
}

/// A stream and a durable consumer with the longest names allowed can be
/// created, written, read, acknowledged and removed again (remove always
/// works on what create made).
///
/// Checks invariant 26 (docs/design.md).
pub async fn longest_allowed_stream_and_consumer_names_work_from_create_to_remove(bus: &Bus) {
    let n = names("longest_names");
    let stream = padded(&n.stream("L"), MAX_STREAM_NAME_LEN);
    let durable = padded(&n.stream("C"), MAX_CONSUMER_NAME_LEN);
    create(bus, StreamConfig::new(&stream).subjects([n.all()])).await;
    let seqs = publish_n(bus, &n.subject("a"), 3).await;
    assert_eq!(seqs, [1, 2, 3]);
    assert_eq!(
        &bus.get_message(&stream, 2).await.unwrap().payload[..],
        b"1"
    );
    let info = consumer(bus, &stream, ConsumerConfig::durable(&durable)).await;
    assert_eq!(info.name, durable);
    let got = fetch(bus, &stream, &durable, 3, Duration::from_secs(2)).await;
    assert_eq!(got.len(), 3);
    for d in &got {
        // Confirmed, so the consumer's state (its file on `file:`) is written.
        bus.ack_confirmed(d, AckKind::Ack).await.unwrap();
    }
    assert_eq!(
        bus.consumer_info(&stream, &durable)
            .await
            .unwrap()
            .ack_floor
            .stream_seq,
        3
    );
    assert_eq!(state(bus, &stream).await.messages, 3);
    bus.delete_consumer(&stream, &durable).await.unwrap();
    bus.delete_stream(&stream).await.unwrap();
    assert_err!(bus.stream_info(&stream).await, Error::StreamNotFound { .. });
}

/// One byte over a limit is `InvalidArgument(NameTooLong)` naming the
/// name, its length and the limit, on every call that takes the name and
/// before anything is created.
///
/// Checks invariant 26 (docs/design.md).
pub async fn names_one_byte_over_the_limit_are_refused_with_name_too_long(bus: &Bus) {
    let n = names("too_long");
    let long_stream = padded(&n.stream("L"), MAX_STREAM_NAME_LEN + 1);
    let r = bus
        .create_stream(StreamConfig::new(&long_stream).subjects([n.all()]))
        .await;
    assert!(
        is_too_long(&r, &long_stream, MAX_STREAM_NAME_LEN),
        "{:?}",
        r.map(|_| ())
    );
    let r = bus.stream_info(&long_stream).await;
    assert!(
        is_too_long(&r, &long_stream, MAX_STREAM_NAME_LEN),
        "{:?}",
        r.map(|_| ())
    );
    let r = bus.delete_stream(&long_stream).await;
    assert!(is_too_long(&r, &long_stream, MAX_STREAM_NAME_LEN), "{r:?}");

    let stream = n.stream("S");
    create(bus, StreamConfig::new(&stream).subjects([n.all()])).await;
    let long_durable = padded(&n.stream("C"), MAX_CONSUMER_NAME_LEN + 1);
    let r = bus
        .create_consumer(&stream, ConsumerConfig::durable(&long_durable))
        .await;
    assert!(
        is_too_long(&r, &long_durable, MAX_CONSUMER_NAME_LEN),
        "{:?}",
        r.map(|_| ())
    );
    let r = bus.consumer_info(&stream, &long_durable).await;
    assert!(
        is_too_long(&r, &long_durable, MAX_CONSUMER_NAME_LEN),
        "{:?}",
        r.map(|_| ())
    );
    assert!(bus.list_consumers(&stream).await.unwrap().is_empty());

    let long_bucket = padded(&n.stream("B"), MAX_BUCKET_NAME_LEN + 1);
    let r = bus.create_kv(KvConfig::new(&long_bucket)).await;
    assert!(
        is_too_long(&r, &long_bucket, MAX_BUCKET_NAME_LEN),
        "{:?}",
        r.map(|_| ())
    );
    bus.delete_stream(&stream).await.unwrap();
}

/// A KV bucket with the longest name allowed (its stream `KV_<bucket>` is
/// the longest stream name) works and can be deleted.
///
/// Checks invariant 26 (docs/design.md).
pub async fn longest_allowed_kv_bucket_name_works_from_create_to_delete(bus: &Bus) {
    let n = names("longest_bucket");
    let bucket = padded(&n.stream("B"), MAX_BUCKET_NAME_LEN);
    let kv = bus.create_kv(KvConfig::new(&bucket)).await.unwrap();
    kv.put("k", "v").await.unwrap();
    assert_eq!(kv.get("k").await.unwrap().as_deref(), Some(&b"v"[..]));
    let stream = format!("KV_{bucket}");
    assert_eq!(stream.len(), MAX_STREAM_NAME_LEN);
    assert_eq!(state(bus, &stream).await.messages, 1);
    bus.delete_kv(&bucket).await.unwrap();
    assert_err!(bus.kv(&bucket).await, Error::BucketNotFound { .. });
}
