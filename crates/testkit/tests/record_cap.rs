//! The embedded engine caps a record at 64 MiB (docs/design.md, "Record":
//! a longer `len` decodes as corrupt). A larger message must therefore be
//! refused at publish, never written: written, it would make the next open
//! fail with `Corrupt`.

// A failed setup step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use durabus::{Error, StreamConfig};
use durabus_testkit::{file_url, temp_dir};

const MIB: usize = 1024 * 1024;

/// Just under the cap is stored and survives a reopen; just over it is
/// refused with MaxPayloadExceeded even without a max_msg_size, and the
/// store reopens with everything acknowledged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_over_the_record_cap_are_refused_and_the_store_reopens() {
    let dir = temp_dir();
    let url = file_url(dir.path(), "none");
    let bus = durabus::connect(&url).await.unwrap();
    bus.create_stream(StreamConfig::new("BIG").subjects(["big.>"]))
        .await
        .unwrap();
    let small = bus.publish("big.a", "before").await.unwrap().unwrap();
    let near = vec![7u8; 63 * MIB];
    let big = bus.publish("big.a", near.clone()).await.unwrap().unwrap();
    let over = bus.publish("big.a", vec![7u8; 65 * MIB]).await;
    match over {
        Err(Error::MaxPayloadExceeded { size, max }) => {
            assert!(size >= 65 * MIB && max <= 64 * MIB, "size {size} max {max}");
        }
        other => panic!(
            "a 65 MiB message was not refused: {:?}",
            other.map(|a| a.map(|a| a.seq))
        ),
    }
    let after = bus.publish("big.a", "after").await.unwrap().unwrap();
    assert_eq!((small.seq, big.seq, after.seq), (1, 2, 3));
    bus.close().await.unwrap();

    let bus = durabus::connect(&url)
        .await
        .expect("reopen after large messages");
    assert_eq!(bus.stream_info("BIG").await.unwrap().state.messages, 3);
    assert_eq!(
        bus.get_message("BIG", 2).await.unwrap().payload.len(),
        63 * MIB
    );
    assert_eq!(
        &bus.get_message("BIG", 3).await.unwrap().payload[..],
        b"after"
    );
    bus.close().await.unwrap();
}

/// The record format stores the subject length, the header count and each
/// header name length in 16 bits. Messages past those sizes must be refused
/// or stored intact, never silently truncated into a record that fails to
/// decode (or decodes to something else) at the next open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_at_the_record_field_limits_are_refused_or_stored_intact() {
    let dir = temp_dir();
    let url = file_url(dir.path(), "none");
    // Stored exactly as given: no traceparent stamped (durabus::trace).
    let bus = durabus::connect(&url)
        .await
        .unwrap()
        .with_propagation(durabus::Propagation::Off);
    bus.create_stream(StreamConfig::new("EDGE").subjects(["e.>"]))
        .await
        .unwrap();

    let long_subject = format!("e.{}", "s".repeat(durabus::subject::MAX_SUBJECT_LEN - 2));
    let mut many_headers = durabus::Message::new("e.many", "m");
    for i in 0..70_000 {
        many_headers.headers.append("H", i.to_string());
    }
    let long_name = durabus::Message::new("e.name", "n").with_header("N".repeat(70_000), "v");
    let long_value = durabus::Message::new("e.value", "v").with_header("V", "x".repeat(100_000));
    let cases = vec![
        (
            "4096-byte subject",
            durabus::Message::new(long_subject, "s"),
        ),
        ("70000 headers", many_headers),
        ("70000-byte header name", long_name),
        ("100000-byte header value", long_value),
    ];
    let mut stored = Vec::new();
    for (what, msg) in cases {
        match bus.publish_message(msg.clone()).await {
            Ok(Some(ack)) => stored.push((what, ack.seq, msg)),
            Ok(None) => panic!("{what}: not captured"),
            Err(e) => eprintln!("{what}: refused: {e}"),
        }
    }
    bus.close().await.unwrap();

    let bus = durabus::connect(&url)
        .await
        .expect("reopen after messages at the field limits");
    for (what, seq, msg) in &stored {
        let got = bus.get_message("EDGE", *seq).await.unwrap();
        assert_eq!(got.subject, msg.subject, "{what}: subject changed");
        assert_eq!(got.payload, msg.payload, "{what}: payload changed");
        assert_eq!(
            got.headers.len(),
            msg.headers.len(),
            "{what}: header count changed"
        );
        assert!(
            got.headers.iter().eq(msg.headers.iter()),
            "{what}: headers changed"
        );
    }
    bus.close().await.unwrap();
}
