//! Hub features a real nats-server is the oracle for: every check runs
//! unchanged against nats-server and against the hub. CONNECT `echo:
//! false`, push consumers with a deliver group, and push flow control
//! (requests, the stall at a full window with its heartbeat, and the
//! answer that resumes delivery).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::push, stream};
use durabus_testkit::hub::against_nats_server_and_hub;
use futures::StreamExt as _;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// Returns once the server has run everything `client` sent before: a
/// request's answer comes after them (async-nats's `flush` only writes).
async fn sync(client: &async_nats::Client) {
    client.request("$JS.API.INFO", "".into()).await.unwrap();
}

/// Every message `sub` gets within `quiet` of the previous one.
async fn drain(sub: &mut async_nats::Subscriber, quiet: Duration) -> Vec<async_nats::Message> {
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(quiet, sub.next()).await {
        got.push(m);
    }
    got
}

fn payloads(msgs: &[async_nats::Message]) -> Vec<String> {
    let mut v: Vec<String> = msgs
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_without_echo_never_gets_its_own_publishes() {
    against_nats_server_and_hub(async |url: &str| {
        let quiet = async_nats::ConnectOptions::new()
            .no_echo()
            .connect(url)
            .await
            .unwrap();
        let other = async_nats::connect(url).await.unwrap();
        let mut quiet_plain = quiet.subscribe("echo.x").await.unwrap();
        let mut other_plain = other.subscribe("echo.x").await.unwrap();
        let mut quiet_member = quiet.queue_subscribe("echo.q", "g".into()).await.unwrap();
        let mut other_member = other.queue_subscribe("echo.q", "g".into()).await.unwrap();
        sync(&quiet).await;
        sync(&other).await;

        quiet.publish("echo.x", "from-quiet".into()).await.unwrap();
        other.publish("echo.x", "from-other".into()).await.unwrap();
        for i in 0..20 {
            quiet
                .publish("echo.q", format!("q{i}").into())
                .await
                .unwrap();
        }
        quiet.flush().await.unwrap();
        other.flush().await.unwrap();

        let wait = Duration::from_millis(500);
        assert_eq!(
            payloads(&drain(&mut quiet_plain, wait).await),
            ["from-other"],
            "{url}"
        );
        assert_eq!(
            payloads(&drain(&mut other_plain, wait).await),
            ["from-other", "from-quiet"],
            "{url}"
        );
        // A queue group skips the publisher's own member: the other gets all.
        assert!(drain(&mut quiet_member, wait).await.is_empty(), "{url}");
        assert_eq!(drain(&mut other_member, wait).await.len(), 20, "{url}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deliver_group_gives_each_message_to_one_member_with_its_own_subject() {
    against_nats_server_and_hub(async |url: &str| {
        let client = async_nats::connect(url).await.unwrap();
        let js = jetstream::new(client.clone());
        let s = js
            .create_stream(stream::Config {
                name: "DG".into(),
                subjects: vec!["dg.>".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        for i in 1..=100 {
            js.publish(format!("dg.{i}"), "x".into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let members = [
            async_nats::connect(url).await.unwrap(),
            async_nats::connect(url).await.unwrap(),
        ];
        let mut subs = Vec::new();
        for m in &members {
            subs.push(m.queue_subscribe("work.dg", "g".into()).await.unwrap());
            sync(m).await;
        }
        s.create_consumer(push::Config {
            durable_name: Some("W".into()),
            deliver_subject: "work.dg".into(),
            deliver_group: Some("g".into()),
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();

        let mut seen = BTreeSet::new();
        let mut per_member = Vec::new();
        for sub in &mut subs {
            let got = drain(sub, Duration::from_secs(1)).await;
            per_member.push(got.len());
            for m in got {
                // A push delivery shows the stream message's subject.
                assert!(m.subject.starts_with("dg."), "{url}: {}", m.subject);
                assert!(
                    seen.insert(m.subject.to_string()),
                    "{url}: twice: {}",
                    m.subject
                );
            }
        }
        assert_eq!(seen.len(), 100, "{url}: {per_member:?}");
        assert!(per_member.iter().all(|&n| n > 0), "{url}: {per_member:?}");
    })
    .await;
}

/// A raw subscriber, to see flow-control requests and heartbeats that
/// client libraries answer and hide.
struct Raw {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

/// One MSG or HMSG as it arrived.
struct Frame {
    reply: Option<String>,
    headers: String,
    payload_len: usize,
}

impl Raw {
    async fn connect(url: &str) -> Raw {
        let addr = url.trim_start_matches("nats://");
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut raw = Raw {
            r: BufReader::new(r),
            w,
        };
        let mut info = String::new();
        raw.r.read_line(&mut info).await.unwrap();
        assert!(info.starts_with("INFO "));
        raw.w
            .write_all(b"CONNECT {\"verbose\":false,\"headers\":true}\r\n")
            .await
            .unwrap();
        raw
    }

    /// The next MSG or HMSG within `wait` (PINGs answered).
    async fn frame(&mut self, wait: Duration) -> Option<Frame> {
        loop {
            let mut line = String::new();
            tokio::time::timeout(wait, self.r.read_line(&mut line))
                .await
                .ok()?
                .unwrap();
            let parts: Vec<&str> = line.split_whitespace().collect();

            let (reply, hdr, total): (Option<String>, usize, usize) = match parts.as_slice() {
                ["PING"] => {
                    self.w.write_all(b"PONG\r\n").await.unwrap();
                    continue;
                }
                ["MSG", _, _, n] => (None, 0, n.parse().unwrap()),
                ["MSG", _, _, r, n] => (Some(r.to_string()), 0, n.parse().unwrap()),
                ["HMSG", _, _, h, n] => (None, h.parse().unwrap(), n.parse().unwrap()),
                ["HMSG", _, _, r, h, n] => {
                    (Some(r.to_string()), h.parse().unwrap(), n.parse().unwrap())
                }
                _ => continue,
            };
            let mut body = vec![0; total + 2];
            self.r.read_exact(&mut body).await.unwrap();
            return Some(Frame {
                reply,
                headers: String::from_utf8_lossy(&body[..hdr]).into_owned(),
                payload_len: total - hdr,
            });
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_stalls_at_a_full_window_until_the_subscriber_answers() {
    const MESSAGES: usize = 40;
    const SIZE: usize = 100 * 1024;
    against_nats_server_and_hub(async |url: &str| {
        let client = async_nats::connect(url).await.unwrap();
        let js = jetstream::new(client.clone());
        let s = js
            .create_stream(stream::Config {
                name: "FC".into(),
                subjects: vec!["fc.in".into()],
                ..Default::default()
            })
            .await
            .unwrap();
        for _ in 0..MESSAGES {
            js.publish("fc.in", vec![7u8; SIZE].into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
        let mut raw = Raw::connect(url).await;
        // Both servers wait for a subscriber before delivering.
        raw.w.write_all(b"SUB fc.out 1\r\n").await.unwrap();
        s.create_consumer(push::Config {
            durable_name: Some("C".into()),
            deliver_subject: "fc.out".into(),
            flow_control: true,
            idle_heartbeat: Duration::from_secs(1),
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .unwrap();

        // Deliveries and the first flow-control request; nothing answered,
        // so delivery stops short of the stream and a heartbeat says it is
        // stalled on that request.
        let mut data = 0;
        let mut request: Option<String> = None;
        let stalled_on = loop {
            let f = raw
                .frame(Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("{url}: silence after {data} deliveries"));
            if f.headers.contains("FlowControl Request") {
                request.get_or_insert(f.reply.expect("a flow-control request has a reply"));
            } else if f.headers.contains("Idle Heartbeat") {
                let stalled = f
                    .headers
                    .lines()
                    .find_map(|l| l.strip_prefix("Nats-Consumer-Stalled: "))
                    .map(str::to_owned);
                if let Some(s) = stalled {
                    break s;
                }
            } else {
                assert_eq!(f.payload_len, SIZE, "{url}: {:?}", f.headers);
                data += 1;
            }
        };
        let request = request.unwrap_or_else(|| panic!("{url}: no flow-control request"));
        assert!(
            request.starts_with("$JS.FC.FC.C."),
            "{url}: request reply {request}"
        );
        assert_eq!(stalled_on, request, "{url}");
        assert!(
            data < MESSAGES,
            "{url}: all {data} delivered without an answer"
        );
        assert!(data * SIZE >= 1024 * 1024, "{url}: stalled after {data}");

        // The answer resumes delivery; later requests are answered too.
        let answer = |to: &str| format!("PUB {to} 0\r\n\r\n").into_bytes();
        raw.w.write_all(&answer(&request)).await.unwrap();
        while data < MESSAGES {
            let f = raw
                .frame(Duration::from_secs(5))
                .await
                .unwrap_or_else(|| panic!("{url}: stuck at {data} after the answer"));
            if f.headers.contains("FlowControl Request") {
                raw.w.write_all(&answer(&f.reply.unwrap())).await.unwrap();
            } else if f.payload_len > 0 {
                data += 1;
            }
        }
    })
    .await;
}
