//! A `file:` store shared between handles that cannot both open it
//! (invariant 33 of docs/design.md): the second `connect` finds the
//! directory locked and joins the first over its loopback hub
//! (`share=true`). The CLI's tests run the same across
//! real processes (`crates/cli/tests/shared_store.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use durabus::{ConnectOptions, Error, StreamConfig};

async fn next(s: &mut durabus::Subscription) -> durabus::Message {
    tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .unwrap()
        .unwrap()
}

/// A program that does not know whether it is first or second.
async fn program(dir: &Path, payload: &str) -> (durabus::Bus, u64) {
    let url = format!("file:{}", dir.display());
    let bus = ConnectOptions::new()
        .share(true)
        .connect(&url)
        .await
        .unwrap();
    bus.create_stream(StreamConfig::new("ORDERS").subjects(["orders.>"]))
        .await
        .unwrap();
    let ack = bus
        .publish("orders.eu", payload.to_owned())
        .await
        .unwrap()
        .expect("captured");
    (bus, ack.seq)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_program_works_first_and_second_on_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let (first, seq1) = program(dir.path(), "one").await;
    assert!(first.is_shared());
    assert!(dir.path().join(durabus::share::SHARE_FILE).exists());
    let (second, seq2) = program(dir.path(), "two").await;
    assert!(!second.is_shared(), "the second joins, it does not share");
    assert_eq!((seq1, seq2), (1, 2), "one store, one sequence");

    // Each sees the other's messages, stored and live.
    assert_eq!(
        &first.get_message("ORDERS", 2).await.unwrap().payload[..],
        b"two"
    );
    assert_eq!(
        &second.get_message("ORDERS", 1).await.unwrap().payload[..],
        b"one"
    );
    let mut live = first.subscribe("chat.>").await.unwrap();
    let mut live2 = second.subscribe("chat.>").await.unwrap();
    // The join's subscription is in place once a request has gone round.
    second.stream_info("ORDERS").await.unwrap();
    second.publish("chat.a", "from second").await.unwrap();
    first.publish("chat.b", "from first").await.unwrap();
    // (Two publishers: no order between them.)
    for sub in [&mut live, &mut live2] {
        let mut got = [next(sub).await.payload, next(sub).await.payload];
        got.sort();
        assert_eq!(got, [&b"from first"[..], &b"from second"[..]]);
    }

    // Only a program that takes part in sharing joins.
    let url = format!("file:{}", dir.path().display());
    let err = durabus::connect(&url).await.unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");

    second.close().await.unwrap();
    first.close().await.unwrap();
    assert!(
        !dir.path().join(durabus::share::SHARE_FILE).exists(),
        "closing the holder removes its record"
    );
    // The next open is the holder again.
    let (third, seq3) = program(dir.path(), "three").await;
    assert!(third.is_shared());
    assert_eq!(seq3, 3);
    third.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_holder_that_does_not_share_keeps_others_out_and_says_how_to_share() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file:{}", dir.path().display());
    let holder = durabus::connect(&url).await.unwrap();
    assert!(!holder.is_shared());
    let err = ConnectOptions::new()
        .share(true)
        .connect(&url)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("share=true"), "{err}");
    // Read-only handles need no lock.
    let reader = durabus::connect(&format!("{url}?read_only=true"))
        .await
        .unwrap();
    assert!(reader.list_streams().await.unwrap().is_empty());
    holder.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_left_by_a_dead_holder_is_replaced_by_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join(durabus::share::SHARE_FILE);
    // What a holder killed with -9 leaves: a record of a port no one serves.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unused.local_addr().unwrap().port();
    drop(unused);
    std::fs::write(
        &record,
        format!(r#"{{"url":"nats://127.0.0.1:{port}","token":"t","pid":1}}"#),
    )
    .unwrap();
    let (bus, seq) = program(dir.path(), "x").await;
    assert_eq!(seq, 1);
    assert!(bus.is_shared());
    let body = std::fs::read_to_string(&record).unwrap();
    assert!(
        !body.contains(&format!(":{port}\"")),
        "a new record: {body}"
    );
    bus.close().await.unwrap();
}
