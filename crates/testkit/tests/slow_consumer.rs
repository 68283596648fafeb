//! R12 (in-process part): a subscriber that stops reading costs a bounded
//! buffer, not memory growing with the backlog, and says so.
//!
//! Checks invariant 12 (docs/design.md).

// A failed setup step is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use durabus::{Event, StreamConfig};

/// With an 8-message buffer, 100 unread messages leave 8 queued and 92
/// counted as dropped, a SlowConsumer event names the filter, publishing is
/// never blocked, other subscribers lose nothing, and the store keeps
/// everything.
#[tokio::test]
async fn stalled_subscriber_drops_beyond_its_buffer_and_reports_it() {
    let bus = durabus::connect("memory:?subscriber_buffer=8")
        .await
        .unwrap();
    let mut events = bus.events().expect("the embedded engine reports events");
    bus.create_stream(StreamConfig::new("S").subjects(["s.>"]))
        .await
        .unwrap();
    let mut stalled = bus.subscribe("s.>").await.unwrap();
    let mut reader = bus.subscribe("s.>").await.unwrap();
    let reading = tokio::spawn(async move {
        let mut got = 0;
        while got < 100 {
            reader.next().await.expect("reader open");
            got += 1;
        }
        got
    });
    for i in 0..100 {
        tokio::time::timeout(Duration::from_secs(5), bus.publish("s.x", format!("{i}")))
            .await
            .expect("a stalled subscriber blocked publishing")
            .unwrap();
        tokio::task::yield_now().await;
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), reading)
            .await
            .expect("reader got everything")
            .unwrap(),
        100
    );
    assert_eq!(stalled.dropped(), 92, "dropped count");
    let mut queued = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(100), stalled.next()).await {
        queued.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    // The buffer holds the oldest undelivered messages; later ones dropped.
    assert_eq!(queued, (0..8).map(|i| i.to_string()).collect::<Vec<_>>());
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("a slow-consumer event")
        .unwrap();
    match event {
        Event::SlowConsumer { filter, dropped } => {
            assert_eq!(filter, "s.>");
            assert!(dropped >= 1);
        }
        other => panic!("unexpected event {other:?}"),
    }
    assert_eq!(bus.stream_info("S").await.unwrap().state.messages, 100);
    bus.close().await.unwrap();
}
