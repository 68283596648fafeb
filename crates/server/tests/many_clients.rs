//! Many clients at once on one hub: hundreds of connections, a fan-out to a
//! hundred subscribers, queue groups spread over many connections.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

mod common;

use durabus_server::{Server, ServerOptions};
use futures::StreamExt as _;

async fn hub() -> Server {
    common::hub(ServerOptions::default()).await
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

/// This process's resident memory, in bytes (Linux).
fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_closed_as_a_slow_consumer_and_slows_no_one() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let store = durabus_log::Store::memory(durabus_log::Options::default()).unwrap();
    let backend: Arc<dyn durabus_core::Backend> = Arc::new(store);
    let options = ServerOptions::default().max_pending(8 * 1024 * 1024);
    let server = Server::bind(backend, "127.0.0.1:0", options).await.unwrap();
    // A client that subscribes and then never reads again.
    let mut stalled = tokio::net::TcpStream::connect(server.local_addr())
        .await
        .unwrap();
    let mut info = [0u8; 4096];
    let _ = stalled.read(&mut info).await.unwrap();
    stalled
        .write_all(b"CONNECT {}\r\nSUB flood 1\r\nPING\r\n")
        .await
        .unwrap();
    let healthy = async_nats::connect(server.url()).await.unwrap();
    let mut sub = healthy.subscribe("flood").await.unwrap();
    healthy.request("nobody", "".into()).await.unwrap_err();
    let publisher = async_nats::connect(server.url()).await.unwrap();
    let before = rss();
    let payload = bytes::Bytes::from(vec![b'x'; 1024]);
    const N: usize = 100_000;
    let (progress, mut seen) = tokio::sync::watch::channel(0usize);
    let reader = tokio::spawn(async move {
        for i in 0..N {
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .unwrap_or_else(|_| panic!("the healthy subscriber stalled at {i}"))
                .unwrap();
            assert_eq!(m.payload.len(), 1024);
            if i % 500 == 0 {
                let _ = progress.send(i);
            }
        }
    });
    for i in 0..N {
        publisher.publish("flood", payload.clone()).await.unwrap();
        if i % 1000 == 999 {
            // Paced by the healthy subscriber (at most 2000 messages
            // behind: within its bounded buffer), never by the stalled one.
            let behind = i.saturating_sub(2000);
            seen.wait_for(|n| *n >= behind).await.unwrap();
        }
    }
    reader.await.unwrap();
    let grown = rss().saturating_sub(before);
    // 100 MiB went to the stalled subscriber; the hub held at most
    // max_pending (8 MiB) of it, then closed the connection.
    assert!(
        grown < 48 * 1024 * 1024,
        "RSS grew {} MiB while a subscriber stalled",
        grown >> 20
    );
    let mut rest = Vec::new();
    let closed =
        tokio::time::timeout(Duration::from_secs(10), stalled.read_to_end(&mut rest)).await;
    assert!(
        matches!(closed, Ok(Ok(_)) | Ok(Err(_))),
        "the stalled subscriber's connection was not closed"
    );
    assert!(rest.len() < 48 * 1024 * 1024);
    server.shutdown().await;
}
