//! The core NATS protocol of the hub, as clients see it: async-nats (a
//! client no one here wrote) and raw bytes on a socket, against nats-server's
//! answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

mod common;

use common::hub;
use durabus_server::{Server, ServerOptions};
use futures::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// A raw connection: reads INFO, then speaks bytes.
struct Raw {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    async fn connect(server: &Server) -> (Raw, serde_json::Value) {
        let s = TcpStream::connect(server.local_addr()).await.unwrap();
        let (r, w) = s.into_split();
        let mut raw = Raw {
            r: BufReader::new(r),
            w,
        };
        let line = raw.line().await;
        let info = line.strip_prefix("INFO ").expect("INFO first");
        (raw, serde_json::from_str(info).unwrap())
    }

    async fn send(&mut self, b: &[u8]) {
        self.w.write_all(b).await.unwrap();
    }

    async fn line(&mut self) -> String {
        let mut s = String::new();
        tokio::time::timeout(Duration::from_secs(5), self.r.read_line(&mut s))
            .await
            .expect("a line within 5 s")
            .unwrap();
        s.trim_end().to_owned()
    }

    /// Whether the server closed the connection (EOF within 5 s).
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.r.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        )
    }
}

/// Checks invariant 31 (docs/design.md).
#[tokio::test]
async fn info_announces_headers_jetstream_and_limits_and_ping_gets_pong() {
    let server = hub(ServerOptions::default()).await;
    let (mut c, info) = Raw::connect(&server).await;
    assert_eq!(info["headers"], true);
    assert_eq!(info["jetstream"], true);
    assert_eq!(info["proto"], 1);
    assert_eq!(info["max_payload"], 1024 * 1024);
    assert_eq!(info["server_id"].as_str().unwrap().len(), 56);
    c.send(b"CONNECT {\"verbose\":true}\r\nPING\r\n").await;
    assert_eq!(c.line().await, "+OK");
    assert_eq!(c.line().await, "PONG");
    c.send(b"SUB a 1\r\nPUB a 2\r\nhi\r\n").await;
    assert_eq!(c.line().await, "+OK");
    assert_eq!(c.line().await, "+OK");
    assert_eq!(c.line().await, "MSG a 1 2");
    assert_eq!(c.line().await, "hi");
    server.shutdown().await;
}

#[tokio::test]
async fn protocol_violations_get_nats_server_errors_and_close_only_that_connection() {
    let server = hub(ServerOptions::default()).await;
    let (mut other, _) = Raw::connect(&server).await;
    for (input, err) in [
        (&b"FOO\r\n"[..], "-ERR 'Unknown Protocol Operation'"),
        (
            &b"PUB a 2000000\r\n"[..],
            "-ERR 'Maximum Payload Violation'",
        ),
        (&[b'x'; 5000][..], "-ERR 'maximum control line exceeded'"),
    ] {
        let (mut c, _) = Raw::connect(&server).await;
        c.send(input).await;
        assert_eq!(c.line().await, err);
        assert!(c.closed().await, "closed after {err}");
    }
    // An invalid subject is refused, the connection stays.
    let (mut c, _) = Raw::connect(&server).await;
    c.send(b"SUB a..b 1\r\nPING\r\n").await;
    assert_eq!(c.line().await, "-ERR 'Invalid Subject'");
    assert_eq!(c.line().await, "PONG");
    other.send(b"PING\r\n").await;
    assert_eq!(other.line().await, "PONG");
    server.shutdown().await;
}

#[tokio::test]
async fn with_a_token_only_a_connect_that_gives_it_is_served() {
    let server = hub(ServerOptions::default().auth_token("s3cret")).await;
    for first in [
        &b"PING\r\n"[..],
        &b"PUB a 1\r\nx\r\n"[..],
        &b"CONNECT {}\r\n"[..],
        &b"CONNECT {\"auth_token\":\"wrong\"}\r\n"[..],
    ] {
        let (mut c, info) = Raw::connect(&server).await;
        assert_eq!(info["auth_required"], true);
        c.send(first).await;
        assert_eq!(c.line().await, "-ERR 'Authorization Violation'");
        assert!(c.closed().await);
    }
    let (mut c, _) = Raw::connect(&server).await;
    c.send(b"CONNECT {\"auth_token\":\"s3cret\"}\r\nPING\r\n")
        .await;
    assert_eq!(c.line().await, "PONG");
    let client = async_nats::ConnectOptions::with_token("s3cret".into())
        .connect(server.local_addr().to_string())
        .await
        .unwrap();
    client.publish("a", "x".into()).await.unwrap();
    client.flush().await.unwrap();
    server.shutdown().await;
}

#[tokio::test]
async fn stale_connections_are_pinged_then_closed() {
    let server = hub(ServerOptions::default().ping(Duration::from_millis(100), 2)).await;
    let (mut c, _) = Raw::connect(&server).await;
    assert_eq!(c.line().await, "PING");
    assert_eq!(c.line().await, "PING");
    assert_eq!(c.line().await, "-ERR 'Stale Connection'");
    assert!(c.closed().await);
    server.shutdown().await;
}

#[tokio::test]
async fn async_nats_pub_sub_queue_groups_and_request_reply_work() {
    let server = hub(ServerOptions::default()).await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let mut all = client.subscribe("orders.>").await.unwrap();
    let mut q1 = client.queue_subscribe("work", "g".into()).await.unwrap();
    let mut q2 = client.queue_subscribe("work", "g".into()).await.unwrap();
    client.flush().await.unwrap();
    let mut h = async_nats::HeaderMap::new();
    h.insert("Tag", "x");
    client
        .publish_with_headers("orders.eu.created", h, "one".into())
        .await
        .unwrap();
    let m = all.next().await.unwrap();
    assert_eq!(&m.payload[..], b"one");
    assert_eq!(m.subject.as_str(), "orders.eu.created");
    assert_eq!(m.headers.unwrap().get("Tag").unwrap().as_str(), "x");
    for i in 0..10 {
        client.publish("work", format!("{i}").into()).await.unwrap();
    }
    client.flush().await.unwrap();
    let mut got = 0;
    while tokio::time::timeout(Duration::from_millis(300), async {
        tokio::select! { m = q1.next() => m, m = q2.next() => m }
    })
    .await
    .is_ok()
    {
        got += 1;
    }
    assert_eq!(got, 10, "each message to exactly one member of the group");

    let mut service = client.subscribe("svc.echo").await.unwrap();
    let responder = client.clone();
    tokio::spawn(async move {
        while let Some(m) = service.next().await {
            responder
                .publish(m.reply.unwrap(), m.payload)
                .await
                .unwrap();
        }
    });
    client.flush().await.unwrap();
    let answer = client.request("svc.echo", "ping".into()).await.unwrap();
    assert_eq!(&answer.payload[..], b"ping");
    let err = client.request("svc.nobody", "x".into()).await.unwrap_err();
    assert_eq!(err.kind(), async_nats::RequestErrorKind::NoResponders);
    server.shutdown().await;
}

/// Checks invariant 31 (docs/design.md).
#[tokio::test]
async fn unsub_with_max_ends_after_that_many_messages() {
    let server = hub(ServerOptions::default()).await;
    let (mut c, _) = Raw::connect(&server).await;
    c.send(b"SUB a 1\r\nUNSUB 1 2\r\nPUB a 1\r\nx\r\nPUB a 1\r\ny\r\nPUB a 1\r\nz\r\nPING\r\n")
        .await;
    assert_eq!(c.line().await, "MSG a 1 1");
    assert_eq!(c.line().await, "x");
    assert_eq!(c.line().await, "MSG a 1 1");
    assert_eq!(c.line().await, "y");
    assert_eq!(c.line().await, "PONG");
    server.shutdown().await;
}

#[tokio::test]
async fn async_nats_reads_the_hubs_account_info() {
    let server = hub(ServerOptions::default()).await;
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "A".into(),
        subjects: vec!["a.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let account = js.query_account().await.unwrap();
    assert_eq!(account.streams, 1);
    server.shutdown().await;
}

#[tokio::test]
async fn connections_past_the_cap_are_refused_and_the_others_keep_working() {
    let server = hub(ServerOptions::default().max_connections(3)).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Raw::connect(&server).await.0);
    }
    let mut extra = TcpStream::connect(server.local_addr()).await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), extra.read_to_string(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(answer, "-ERR 'maximum connections exceeded'\r\n");
    for c in &mut held {
        c.send(b"PING\r\n").await;
        assert_eq!(c.line().await, "PONG");
    }
    // A closed connection frees its place.
    drop(held.pop());
    let until = tokio::time::Instant::now() + Duration::from_secs(5);
    while server.connections() > 2 {
        assert!(
            tokio::time::Instant::now() < until,
            "the place was not freed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let (mut again, _) = Raw::connect(&server).await;
    again.send(b"PING\r\n").await;
    assert_eq!(again.line().await, "PONG");
    server.shutdown().await;
}
