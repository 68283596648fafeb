//! Bad input to the hub, with a real nats-server as the oracle: the same
//! bytes go to both, and the hub answers as nats-server does. Garbage, a
//! control line that never ends (1 GiB offered), a payload over the limit,
//! a SUB to an invalid subject, a pull request for a consumer that does
//! not exist, a JetStream API request whose body is not JSON. After each,
//! a message stored before is intact and another client is still served.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use durabus_testkit::hub::{against_nats_server_and_hub, Hub};
use durabus_testkit::nats::NatsServer;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// A connection speaking raw protocol bytes.
struct Raw {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

impl Raw {
    /// Connects, reads INFO, sends CONNECT (headers and no-responders on).
    async fn connect(url: &str) -> Raw {
        let addr = url.trim_start_matches("nats://");
        let (r, w) = TcpStream::connect(addr).await.unwrap().into_split();
        let mut raw = Raw {
            r: BufReader::new(r),
            w,
        };
        assert!(raw.line().await.starts_with("INFO "));
        raw.send(b"CONNECT {\"verbose\":false,\"headers\":true,\"no_responders\":true}\r\n")
            .await;
        raw
    }

    async fn send(&mut self, b: &[u8]) {
        // The server may have closed already: that is an answer too.
        let _ = self.w.write_all(b).await;
    }

    async fn line(&mut self) -> String {
        let mut s = String::new();
        match tokio::time::timeout(Duration::from_secs(5), self.r.read_line(&mut s)).await {
            Ok(Ok(_)) => s.trim_end().to_owned(),
            Ok(Err(e)) => format!("<error {e}>"),
            Err(_) => "<silence>".to_owned(),
        }
    }

    /// The next line that is not a PING (answered) or INFO.
    async fn answer(&mut self) -> String {
        loop {
            let l = self.line().await;
            if l == "PING" {
                self.send(b"PONG\r\n").await;
                continue;
            }
            if !l.starts_with("INFO ") {
                return l;
            }
        }
    }

    /// Whether the server closes the connection within 5 s.
    async fn closed(&mut self) -> bool {
        let mut rest = Vec::new();
        matches!(
            tokio::time::timeout(Duration::from_secs(5), self.r.read_to_end(&mut rest)).await,
            Ok(Ok(_))
        )
    }
}

/// What a server answered to one bad input.
#[derive(Debug, PartialEq, Eq)]
struct Answer {
    lines: Vec<String>,
    closed: bool,
}

/// Sends `input` on a fresh connection; the first `lines` answer lines and
/// whether the connection was closed (only asked when `closes` is
/// expected, a live connection would make it wait).
async fn ask(url: &str, input: &[u8], lines: usize, closes: bool) -> Answer {
    let mut c = Raw::connect(url).await;
    c.send(input).await;
    let mut out = Vec::new();
    for _ in 0..lines {
        out.push(c.answer().await);
    }
    let closed = if closes {
        c.closed().await
    } else {
        c.send(b"PING\r\n").await;
        c.answer().await != "PONG"
    };
    Answer { lines: out, closed }
}

/// The `err_code` of a JSON API answer line pair (`MSG ...`, body).
fn err_code(answer: &Answer) -> Option<u64> {
    let body: serde_json::Value = serde_json::from_str(answer.lines.last()?).ok()?;
    body["error"]["err_code"].as_u64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_are_answered_as_nats_server_answers_them() {
    let nats = NatsServer::start().unwrap_or_else(|e| panic!("starting nats-server: {e:#}"));
    let hub = Hub::file().await;
    let cases: Vec<(&str, Vec<u8>, usize, bool)> = vec![
        ("garbage", b"\x00\x01garbage here\r\n".to_vec(), 1, true),
        (
            "payload over max_payload",
            b"PUB a 2000000\r\n".to_vec(),
            1,
            true,
        ),
        (
            "sub to an invalid subject",
            b"SUB a..b 1\r\n".to_vec(),
            1,
            false,
        ),
        (
            "pull request for a missing consumer",
            b"SUB _INBOX.x 1\r\nPUB $JS.API.CONSUMER.MSG.NEXT.NOPE.nope _INBOX.x 0\r\n\r\n"
                .to_vec(),
            2,
            false,
        ),
    ];
    for (what, input, lines, closes) in cases {
        let want = ask(&nats.url(), &input, lines, closes).await;
        let got = ask(&hub.url(), &input, lines, closes).await;
        assert_eq!(
            got, want,
            "{what}: the hub answered otherwise than nats-server"
        );
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_line_that_never_ends_is_cut_off_at_the_limit() {
    against_nats_server_and_hub(async |url: &str| {
        let mut c = Raw::connect(url).await;
        c.send(b"PUB ").await;
        let chunk = vec![b'a'; 64 * 1024];
        // Up to 1 GiB; the server must give up long before.
        let mut sent = 0usize;
        while sent < 1 << 30 {
            let w = tokio::time::timeout(Duration::from_secs(5), c.w.write_all(&chunk)).await;
            if !matches!(w, Ok(Ok(()))) {
                break;
            }
            sent += chunk.len();
        }
        assert!(
            sent < 64 << 20,
            "{url} took {sent} bytes of one control line"
        );
        assert_eq!(
            c.answer().await,
            "-ERR 'maximum control line exceeded'",
            "{url}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_requests_that_are_not_json_get_nats_server_error_codes() {
    let nats = NatsServer::start().unwrap_or_else(|e| panic!("starting nats-server: {e:#}"));
    let hub = Hub::file().await;
    for (what, subject, body) in [
        ("stream create", "$JS.API.STREAM.CREATE.X", "hello"),
        ("consumer create", "$JS.API.CONSUMER.CREATE.X", "{not json"),
        ("message get", "$JS.API.STREAM.MSG.GET.X", "[1,2]"),
    ] {
        let input = format!(
            "SUB _INBOX.y 1\r\nPUB {subject} _INBOX.y {}\r\n{body}\r\n",
            body.len()
        );
        let want = ask(&nats.url(), input.as_bytes(), 2, false).await;
        let got = ask(&hub.url(), input.as_bytes(), 2, false).await;
        assert!(
            want.lines[0].starts_with("MSG _INBOX.y 1"),
            "{what}: {want:?}"
        );
        assert_eq!(
            err_code(&got),
            err_code(&want),
            "{what}: {got:?} vs {want:?}"
        );
        assert!(!got.closed, "{what}: the hub closed the connection");
    }
    hub.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_on_one_connection_loses_nothing_and_others_are_served() {
    let hub = Hub::file().await;
    let bus = durabus::connect(&hub.url()).await.unwrap();
    bus.create_stream(durabus::StreamConfig::new("KEEP").subjects(["keep.>"]))
        .await
        .unwrap();
    let ack = bus.publish("keep.one", "precious").await.unwrap().unwrap();
    let mut bystander = Raw::connect(&hub.url()).await;
    for input in [
        &b"\xff\xfe\xfd\r\n"[..],
        b"PUB keep.two 9999999\r\n",
        b"HPUB keep.two 10 5\r\n",
        b"SUB keep.> q\r\n",
        b"PUB $JS.API.STREAM.DELETE.KEEP\r\n",
        b"CONNECT {\"verbose\":\r\n",
    ] {
        let mut c = Raw::connect(&hub.url()).await;
        c.send(input).await;
        let _ = c.answer().await;
        bystander.send(b"PING\r\n").await;
        assert_eq!(bystander.answer().await, "PONG", "after {input:?}");
    }
    let m = bus.get_message("KEEP", ack.seq).await.unwrap();
    assert_eq!(&m.payload[..], b"precious");
    assert_eq!(bus.stream_info("KEEP").await.unwrap().state.messages, 1);
    bus.close().await.unwrap();
    hub.stop().await;
}
