//! Many clients at once on one hub: hundreds of connections, a fan-out to a
//! hundred subscribers, queue groups spread over many connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use durabus_server::{Server, ServerOptions};
use futures::StreamExt as _;

async fn hub() -> Server {
    let store = durabus_log::Store::memory(durabus_log::Options::default()).unwrap();
    let backend: Arc<dyn durabus_core::Backend> = Arc::new(store);
    Server::bind(backend, "127.0.0.1:0", ServerOptions::default())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_connections_each_get_every_message_of_a_fan_out() {
    let server = hub().await;
    let mut clients = Vec::new();
    for _ in 0..500 {
        clients.push(async_nats::connect(server.url()).await.unwrap());
    }
    assert_eq!(server.connections(), 500);
    // A hundred of them subscribe; one publishes 50 messages.
    let mut subs = Vec::new();
    for c in clients.iter().take(100) {
        subs.push(c.subscribe("fan.out").await.unwrap());
    }
    let publisher = &clients[499];
    // A subscription is in place once a probe reaches it (async-nats's
    // flush sends, it does not wait for the server).
    let mut ready = vec![false; subs.len()];
    while ready.contains(&false) {
        publisher.publish("fan.out", "probe".into()).await.unwrap();
        publisher.flush().await.unwrap();
        for (n, sub) in subs.iter_mut().enumerate() {
            if !ready[n] {
                ready[n] = tokio::time::timeout(Duration::from_millis(20), sub.next())
                    .await
                    .is_ok();
            }
        }
    }
    for i in 0..50 {
        publisher
            .publish("fan.out", format!("{i}").into())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    for (n, sub) in subs.iter_mut().enumerate() {
        let mut i = 0;
        while i < 50 {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .unwrap_or_else(|_| panic!("subscriber {n} missed message {i}"))
                .unwrap();
            if m.payload == "probe" {
                continue;
            }
            assert_eq!(m.payload, format!("{i}").as_bytes(), "subscriber {n}");
            i += 1;
        }
    }
    drop(clients);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_group_over_many_connections_gets_each_message_once() {
    let server = hub().await;
    let mut members = Vec::new();
    for _ in 0..20 {
        let c = async_nats::connect(server.url()).await.unwrap();
        let sub = c.queue_subscribe("jobs", "workers".into()).await.unwrap();
        // A request round trip: the SUB sent before it is in place.
        c.request("nobody.listens", "".into()).await.unwrap_err();
        members.push((c, sub));
    }
    let publisher = async_nats::connect(server.url()).await.unwrap();
    for i in 0..400 {
        publisher
            .publish("jobs", format!("{i}").into())
            .await
            .unwrap();
    }
    publisher.flush().await.unwrap();
    let mut seen = std::collections::BTreeSet::new();
    let mut busy = 0;
    for (_, sub) in &mut members {
        let mut got = 0;
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), sub.next()).await {
            assert!(
                seen.insert(String::from_utf8(m.payload.to_vec()).unwrap()),
                "a message reached two members"
            );
            got += 1;
        }
        if got > 0 {
            busy += 1;
        }
    }
    assert_eq!(seen.len(), 400, "every message reached one member");
    assert!(busy > 1, "the group's messages are spread over its members");
    server.shutdown().await;
}
