//! Connecting: bad input, unreachable servers, and credentials that never
//! show in an error or a log line.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use durabus_core::{Backend, ConnectionStatus, Error, Message, StreamConfig};
use durabus_nats::{NatsBackend, NatsOptions};
use durabus_testkit::nats::NatsServer;

/// Every log line of this test process, at every level, with the one
/// directive durabus documents for async-nats (see
/// [`durabus_nats::LOG_DIRECTIVE`]).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = buf.clone();
        let filter = format!("trace,{}", durabus_nats::LOG_DIRECTIVE);
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_ansi(false)
            .with_writer(move || Sink(writer.clone()))
            .try_init();
        buf
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logged() -> String {
    String::from_utf8_lossy(&logs().lock().unwrap()).into_owned()
}

/// A port nobody listens on.
fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn quick() -> NatsOptions {
    let mut o = NatsOptions::default();
    o.connect_timeout = Duration::from_millis(500);
    o
}

/// Checks invariant 14 (docs/design.md).
#[tokio::test]
async fn an_unreachable_server_is_reported_with_the_url_redacted_within_the_connect_timeout() {
    logs();
    let url = format!("nats://app:hunter2-pw@127.0.0.1:{}", dead_port());
    let start = Instant::now();
    let e = NatsBackend::connect(&url, quick()).await.unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let text = e.to_string();
    assert!(matches!(e, Error::Unreachable { .. }), "{text}");
    assert!(text.contains("127.0.0.1"), "{text}");
    assert!(
        !text.contains("hunter2-pw") && !text.contains("app:"),
        "{text}"
    );
    assert!(!logged().contains("hunter2-pw"));
}

#[tokio::test]
async fn a_server_that_never_greets_times_out_within_the_connect_timeout() {
    // Accepts the TCP connection but never sends INFO.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let _hold = std::thread::spawn(move || {
        let conns: Vec<_> = listener.incoming().take(4).collect();
        std::thread::sleep(Duration::from_secs(5));
        drop(conns);
    });
    let start = Instant::now();
    let e = NatsBackend::connect(&format!("nats://tok-s3cr3t@127.0.0.1:{port}"), quick())
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert!(!e.to_string().contains("tok-s3cr3t"), "{e}");
}

#[tokio::test]
async fn bad_urls_and_options_fail_before_connecting_and_say_what_to_fix() {
    for (url, says) in [
        ("", "nats://host:4222"),
        ("nats://127.0.0.1:4222?tls_cert=/nonexistent.pem", "tls_key"),
        (
            "nats://127.0.0.1:4222?creds=/nonexistent.creds",
            "credentials file",
        ),
        (
            "nats://127.0.0.1:4222?max_reconnects=many",
            "max_reconnects",
        ),
        ("nats://127.0.0.1:4222/path", "path"),
    ] {
        let e = NatsBackend::connect(url, quick())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{url:?}: {e}");
    }
}

/// Checks invariant 14 (docs/design.md).
#[tokio::test]
async fn credentials_never_show_in_errors_or_logs_while_working_with_a_server() {
    logs();
    let server = NatsServer::shared();
    // A server without auth accepts any credentials.
    let url = format!("nats://someone:pw-xyzzy-42@127.0.0.1:{}", server.port());
    let b = NatsBackend::connect(&url, NatsOptions::default())
        .await
        .unwrap();
    assert!(!format!("{b:?}").contains("pw-xyzzy-42"));
    b.create_stream(StreamConfig::new("CREDLOG").subjects(["credlog.>"]))
        .await
        .unwrap();
    b.publish(Message::new("credlog.a", "x")).await.unwrap();
    let e = b.stream_info("NOPE_CREDLOG").await.unwrap_err();
    assert!(!e.to_string().contains("pw-xyzzy-42"));
    b.delete_stream("CREDLOG").await.unwrap();
    b.close().await.unwrap();
    assert_eq!(b.status(), ConnectionStatus::Closed);
    let all = logged();
    assert!(!all.is_empty(), "the capture works");
    let leaks: Vec<&str> = all.lines().filter(|l| l.contains("pw-xyzzy-42")).collect();
    assert!(leaks.is_empty(), "log lines hold the password: {leaks:#?}");
}

#[tokio::test]
async fn the_connection_name_defaults_to_durabus() {
    assert_eq!(NatsOptions::default().name, "durabus");
}
