//! Large pull requests through the hub: every message once, in order, with
//! the counts nats-server puts in the ack subjects, and a no-wait request
//! that ends after what is there.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, stream, AckKind};
use durabus_server::{Server, ServerOptions};
use futures::StreamExt as _;

/// A hub with the stream `S` of `n` messages (payloads "0", "1", ...) and
/// a durable pull consumer on it.
async fn durable_on(n: u64) -> (Server, jetstream::consumer::PullConsumer) {
    let server = common::hub(ServerOptions::default()).await;
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let s = js
        .create_stream(stream::Config {
            name: "S".into(),
            subjects: vec!["s.>".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    let mut acks = Vec::new();
    for i in 0..n {
        acks.push(
            js.publish(format!("s.{}", i % 7), i.to_string().into())
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap();
    }
    let c = s
        .create_consumer(pull::Config {
            durable_name: Some("c".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    (server, c)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_of_a_thousand_arrives_whole_and_in_order() {
    let (server, mut c) = durable_on(1000).await;
    let mut got = c.fetch().max_messages(1000).messages().await.unwrap();
    let mut n = 0u64;
    while let Some(m) = got.next().await {
        let m = m.unwrap();
        let info = m.info().unwrap();
        n += 1;
        assert_eq!(
            (info.stream_sequence, info.consumer_sequence, info.pending),
            (n, n, 1000 - n)
        );
        assert_eq!(m.payload, (n - 1).to_string());
        m.ack().await.unwrap();
    }
    assert_eq!(n, 1000);
    // Every ack was applied before the info request (a connection's
    // operations run in order).
    let info = c.info().await.unwrap();
    assert_eq!(
        (info.num_ack_pending, info.ack_floor.stream_sequence),
        (0, 1000)
    );
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_no_wait_batch_larger_than_the_stream_ends_after_what_is_there() {
    let (server, c) = durable_on(300).await;
    // async-nats' fetch is a no-wait request: it ends with the 404 or 408
    // status once nothing more is there.
    let mut got = c.fetch().max_messages(1000).messages().await.unwrap();
    let mut seqs = Vec::new();
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = got.next().await {
            let m = m.unwrap();
            seqs.push(m.info().unwrap().stream_sequence);
            m.ack_with(AckKind::Ack).await.unwrap();
        }
    })
    .await;
    assert!(end.is_ok(), "the request did not end");
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    server.shutdown().await;
}
