//! Replays on NATS clean up their ephemeral consumers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use durabus_core::{Backend, Message, ReplayOptions, StreamConfig};
use durabus_nats::{NatsBackend, NatsOptions};
use durabus_testkit::nats::NatsServer;

async fn consumers(b: &NatsBackend, stream: &str) -> u64 {
    b.stream_info(stream).await.unwrap().state.consumer_count
}

async fn eventually_no_consumers(b: &NatsBackend, stream: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while consumers(b, stream).await != 0 {
        assert!(Instant::now() < deadline, "replay consumer left behind");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_and_dropped_replays_delete_their_consumers() {
    let server = NatsServer::shared();
    let b = NatsBackend::connect(&server.url(), NatsOptions::default())
        .await
        .expect("connect");
    b.create_stream(StreamConfig::new("RC").subjects(["rc.>"]))
        .await
        .unwrap();
    for i in 0..3 {
        b.publish(Message::new("rc.a", format!("{i}")))
            .await
            .unwrap();
    }
    let mut bounded = b
        .replay("RC", ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let mut seqs = Vec::new();
    while let Some(m) = bounded.next().await {
        seqs.push(m.unwrap().seq);
    }
    assert_eq!(seqs, [1, 2, 3]);
    eventually_no_consumers(&b, "RC").await;

    let mut live = b.replay("RC", ReplayOptions::from_seq(2)).await.unwrap();
    assert_eq!(live.next().await.unwrap().unwrap().seq, 2);
    assert_eq!(consumers(&b, "RC").await, 1);
    drop(live);
    eventually_no_consumers(&b, "RC").await;
    b.close().await.unwrap();
}
