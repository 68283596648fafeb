//! The supervisor's circuit breaker, callbacks and waits, over a scripted
//! backend on paused tokio time (deterministic: no real server, no sleeps).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durabus::{
    Backend, ConnectOptions, ConnectionStatus, Error, Event, Message, PublishAck, PurgeRequest,
    Replay, ReplayOptions, Result, StoredMessage, StreamConfig, StreamInfo, Subscription,
    SupervisorConfig,
};
use tokio::sync::broadcast;

/// A backend whose health a test switches; it counts the calls that reach it.
struct Scripted {
    healthy: AtomicBool,
    /// What publish answers when healthy is false: a connection failure
    /// unless this is set.
    refuse_politely: AtomicBool,
    status: Mutex<ConnectionStatus>,
    calls: AtomicU64,
    pings: Mutex<Vec<tokio::time::Instant>>,
    events: broadcast::Sender<Event>,
    /// Publishes to fail with a timeout before answering normally.
    fail_next: AtomicU64,
    /// Msg ids of every publish that reached the backend.
    msg_ids: Mutex<Vec<Option<String>>>,
}

impl Scripted {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            healthy: AtomicBool::new(true),
            refuse_politely: AtomicBool::new(false),
            status: Mutex::new(ConnectionStatus::Connected),
            calls: AtomicU64::new(0),
            pings: Mutex::new(Vec::new()),
            events: broadcast::channel(64).0,
            fail_next: AtomicU64::new(0),
            msg_ids: Mutex::new(Vec::new()),
        })
    }

    fn answer(&self) -> Result<()> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.healthy.load(Ordering::SeqCst) {
            Ok(())
        } else if self.refuse_politely.load(Ordering::SeqCst) {
            Err(Error::StreamNotFound { name: "X".into() })
        } else {
            Err(Error::Timeout(Duration::from_secs(5)))
        }
    }

    fn set_status(&self, s: ConnectionStatus) {
        *self.status.lock().unwrap() = s;
    }
}

fn no<T>() -> Result<T> {
    Err(Error::Unsupported("scripted".into()))
}

#[async_trait::async_trait]
impl Backend for Scripted {
    async fn create_stream(&self, _: StreamConfig) -> Result<StreamInfo> {
        no()
    }
    async fn update_stream(&self, _: StreamConfig) -> Result<StreamInfo> {
        no()
    }
    async fn stream_info(&self, _: &str) -> Result<StreamInfo> {
        no()
    }
    async fn list_streams(&self) -> Result<Vec<StreamInfo>> {
        no()
    }
    async fn delete_stream(&self, _: &str) -> Result<()> {
        no()
    }
    async fn purge_stream(&self, _: &str, _: PurgeRequest) -> Result<u64> {
        no()
    }
    async fn publish(&self, m: Message) -> Result<Option<PublishAck>> {
        self.msg_ids
            .lock()
            .unwrap()
            .push(m.headers.get(durabus::NATS_MSG_ID).map(str::to_owned));
        if self
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            self.calls.fetch_add(1, Ordering::SeqCst);
            return Err(Error::AckUnknown {
                subject: m.subject,
                reason: "scripted".into(),
            });
        }
        self.answer().map(|()| None)
    }
    async fn publish_batch(&self, _: Vec<Message>) -> Result<Vec<Result<Option<PublishAck>>>> {
        no()
    }
    async fn subscribe(&self, _: &str, _: Option<&str>) -> Result<Subscription> {
        no()
    }
    async fn request(&self, _: Message, _: Duration) -> Result<Message> {
        no()
    }
    async fn get_message(&self, _: &str, _: u64) -> Result<StoredMessage> {
        no()
    }
    async fn get_last_message(&self, _: &str, _: &str) -> Result<StoredMessage> {
        no()
    }
    async fn delete_message(&self, _: &str, _: u64) -> Result<()> {
        no()
    }
    async fn replay(&self, _: &str, _: ReplayOptions) -> Result<Replay> {
        no()
    }
    async fn close(&self) -> Result<()> {
        self.set_status(ConnectionStatus::Closed);
        Ok(())
    }
    async fn ping(&self) -> Result<Duration> {
        self.pings.lock().unwrap().push(tokio::time::Instant::now());
        self.answer().map(|()| Duration::from_micros(300))
    }
    fn status(&self) -> ConnectionStatus {
        *self.status.lock().unwrap()
    }
    fn events(&self) -> Option<broadcast::Receiver<Event>> {
        Some(self.events.subscribe())
    }
}

/// Health pings out of the way (an hour apart) unless a test wants them.
fn config() -> SupervisorConfig {
    let mut c = SupervisorConfig::default();
    c.health_interval = Duration::from_secs(3600);
    c.max_open_backoff = Duration::from_secs(8);
    c
}

type Seen = Arc<Mutex<Vec<String>>>;

fn supervise(backend: &Arc<Scripted>, config: SupervisorConfig) -> (durabus::Bus, Seen) {
    let seen: Seen = Arc::default();
    let (a, b, c, d) = (seen.clone(), seen.clone(), seen.clone(), seen.clone());
    let bus = ConnectOptions::new()
        .supervisor(config)
        .on_connect(move || a.lock().unwrap().push("connect".into()))
        .on_disconnect(move || b.lock().unwrap().push("disconnect".into()))
        .on_reconnect(move || c.lock().unwrap().push("reconnect".into()))
        .on_health_change(move |s| d.lock().unwrap().push(format!("{s:?}")))
        .supervise(backend.clone())
        .unwrap();
    (bus, seen)
}

async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Checks invariant 16 (docs/design.md).
#[tokio::test(start_paused = true)]
async fn the_circuit_opens_after_five_consecutive_failures_and_then_fails_fast() {
    let backend = Scripted::new();
    let (bus, seen) = supervise(&backend, config());
    backend.healthy.store(false, Ordering::SeqCst);
    for _ in 0..5 {
        let e = bus.publish("a", "x").await.unwrap_err();
        assert!(matches!(e, Error::Timeout(_)), "{e}");
    }
    assert_eq!(bus.status(), ConnectionStatus::CircuitOpen);
    let e = bus.publish("a", "x").await.unwrap_err();
    match e {
        Error::CircuitOpen { failures, retry_in } => {
            assert_eq!(failures, 5);
            assert!(retry_in <= Duration::from_secs(1) && retry_in > Duration::ZERO);
        }
        other => panic!("expected CircuitOpen, got {other}"),
    }
    assert_eq!(
        backend.calls.load(Ordering::SeqCst),
        5,
        "fail fast: not sent"
    );
    let stats = bus.stats().unwrap();
    assert_eq!((stats.failures, stats.circuit_opens), (5, 1));
    assert_eq!(*seen.lock().unwrap(), ["connect", "CircuitOpen"]);
}

/// Checks invariant 16 (docs/design.md).
#[tokio::test(start_paused = true)]
async fn an_open_circuit_half_opens_after_the_backoff_and_a_good_probe_closes_it() {
    let backend = Scripted::new();
    let (bus, seen) = supervise(&backend, config());
    backend.healthy.store(false, Ordering::SeqCst);
    for _ in 0..5 {
        let _ = bus.publish("a", "x").await;
    }
    assert_eq!(bus.status(), ConnectionStatus::CircuitOpen);
    backend.healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(
        bus.status(),
        ConnectionStatus::CircuitOpen,
        "not before 1 s"
    );
    assert!(backend.pings.lock().unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(200)).await;
    settle().await;
    assert_eq!(backend.pings.lock().unwrap().len(), 1, "one probe");
    assert_eq!(bus.status(), ConnectionStatus::Connected);
    bus.publish("a", "x").await.unwrap();
    let stats = bus.stats().unwrap();
    assert_eq!(stats.consecutive_failures, 0);
    assert_eq!(stats.rtt, Some(Duration::from_micros(300)));
    assert_eq!(
        *seen.lock().unwrap(),
        ["connect", "CircuitOpen", "Connected"]
    );
}

#[tokio::test(start_paused = true)]
async fn failed_probes_back_off_exponentially_up_to_the_cap() {
    let backend = Scripted::new();
    let (bus, _) = supervise(&backend, config());
    backend.healthy.store(false, Ordering::SeqCst);
    for _ in 0..5 {
        let _ = bus.publish("a", "x").await;
    }
    let opened = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(40)).await;
    let gaps: Vec<u64> = {
        let pings = backend.pings.lock().unwrap();
        let mut prev = opened;
        pings
            .iter()
            .map(|t| {
                let gap = t.duration_since(prev).as_secs();
                prev = *t;
                gap
            })
            .collect()
    };
    // 1, 2, 4, 8, then capped at 8 (config's max_open_backoff).
    assert_eq!(&gaps[..6], [1, 2, 4, 8, 8, 8], "{gaps:?}");
    assert_eq!(bus.status(), ConnectionStatus::CircuitOpen);
    assert_eq!(bus.stats().unwrap().circuit_opens as usize, gaps.len() + 1);
}

#[tokio::test(start_paused = true)]
async fn errors_the_server_answered_do_not_count_as_connection_failures() {
    let backend = Scripted::new();
    let (bus, _) = supervise(&backend, config());
    backend.healthy.store(false, Ordering::SeqCst);
    backend.refuse_politely.store(true, Ordering::SeqCst);
    for _ in 0..20 {
        let e = bus.publish("a", "x").await.unwrap_err();
        assert!(matches!(e, Error::StreamNotFound { .. }), "{e}");
    }
    assert_eq!(bus.status(), ConnectionStatus::Connected);
    assert_eq!(bus.stats().unwrap().failures, 0);
}

#[tokio::test(start_paused = true)]
async fn a_success_resets_the_count_of_consecutive_failures() {
    let backend = Scripted::new();
    let (bus, _) = supervise(&backend, config());
    for _ in 0..3 {
        backend.healthy.store(false, Ordering::SeqCst);
        for _ in 0..4 {
            let _ = bus.publish("a", "x").await;
        }
        backend.healthy.store(true, Ordering::SeqCst);
        bus.publish("a", "x").await.unwrap();
    }
    assert_eq!(bus.status(), ConnectionStatus::Connected);
    assert_eq!(bus.stats().unwrap().failures, 12);
}

#[tokio::test(start_paused = true)]
async fn disconnects_failed_reconnects_and_reconnects_drive_status_and_callbacks() {
    let backend = Scripted::new();
    let (bus, seen) = supervise(&backend, config());
    backend.healthy.store(false, Ordering::SeqCst);
    backend.set_status(ConnectionStatus::Reconnecting);
    backend.events.send(Event::Disconnected).unwrap();
    settle().await;
    assert_eq!(bus.status(), ConnectionStatus::Reconnecting);
    // Attempt 1 is immediate; attempts 2..=6 each report one failure.
    for attempt in 1..=6 {
        backend
            .events
            .send(Event::Reconnecting {
                attempt,
                delay: Duration::from_millis(100),
            })
            .unwrap();
    }
    settle().await;
    assert_eq!(bus.status(), ConnectionStatus::CircuitOpen);
    assert!(matches!(
        bus.publish("a", "x").await,
        Err(Error::CircuitOpen { .. })
    ));

    backend.healthy.store(true, Ordering::SeqCst);
    backend.set_status(ConnectionStatus::Connected);
    backend.events.send(Event::Connected).unwrap();
    settle().await;
    // Back: probed at once, not after the backoff.
    assert_eq!(bus.status(), ConnectionStatus::Connected);
    assert_eq!(backend.pings.lock().unwrap().len(), 1);
    let stats = bus.stats().unwrap();
    assert_eq!((stats.reconnects, stats.failures), (1, 5));
    assert_eq!(
        *seen.lock().unwrap(),
        [
            "connect",
            "disconnect",
            "Reconnecting",
            "CircuitOpen",
            "reconnect",
            "Connected"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn wait_connected_returns_once_connected_and_times_out_otherwise() {
    let backend = Scripted::new();
    backend.set_status(ConnectionStatus::Reconnecting);
    let (bus, _) = supervise(&backend, config());
    let e = bus
        .wait_connected(Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout(_)), "{e}");
    let waiter = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.wait_connected(Duration::from_secs(10)).await })
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    backend.set_status(ConnectionStatus::Connected);
    backend.events.send(Event::Connected).unwrap();
    waiter.await.unwrap().unwrap();
    bus.close().await.unwrap();
    assert_eq!(bus.status(), ConnectionStatus::Closed);
    assert!(matches!(
        bus.wait_connected(Duration::from_secs(1)).await,
        Err(Error::Closed)
    ));
    assert!(matches!(bus.publish("a", "x").await, Err(Error::Closed)));
}

#[tokio::test(start_paused = true)]
async fn health_pings_measure_rtt_and_count_failures() {
    let backend = Scripted::new();
    let mut c = config();
    c.health_interval = Duration::from_secs(5);
    let (bus, _) = supervise(&backend, c);
    tokio::time::sleep(Duration::from_secs(6)).await;
    settle().await;
    assert_eq!(bus.stats().unwrap().rtt, Some(Duration::from_micros(300)));
    backend.healthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(26)).await;
    settle().await;
    // Five failed pings in a row (at 10, 15, 20, 25, 30 s) open the circuit.
    assert_eq!(bus.status(), ConnectionStatus::CircuitOpen);
}

#[tokio::test(start_paused = true)]
async fn readiness_says_ready_only_when_connected_and_its_body_holds_only_the_status() {
    let backend = Scripted::new();
    let (bus, _) = supervise(&backend, config());
    let r = bus.readiness(Duration::from_secs(1)).await;
    assert!(r.ready);
    assert_eq!(r.http_status(), 200);
    assert_eq!(r.body(), r#"{"ready":true,"status":"connected"}"#);
    backend.healthy.store(false, Ordering::SeqCst);
    let r = bus.readiness(Duration::from_secs(1)).await;
    assert!(!r.ready, "a failing ping is not ready");
    assert_eq!(r.http_status(), 503);
    bus.close().await.unwrap();
    let r = bus.readiness(Duration::from_secs(1)).await;
    assert_eq!(r.body(), r#"{"ready":false,"status":"closed"}"#);
}

#[test]
fn invalid_supervisor_settings_are_refused() {
    let mut c = SupervisorConfig::default();
    c.failure_threshold = 0;
    assert!(c
        .validate()
        .unwrap_err()
        .to_string()
        .contains("failure_threshold"));
}

#[tokio::test(start_paused = true)]
async fn a_publisher_retries_connection_failures_with_one_msg_id_and_reports_each_publish() {
    let backend = Scripted::new();
    let (bus, _) = supervise(&backend, config());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let publisher = bus
        .publisher()
        .subject_prefix("orders.")
        .retries(3, Duration::from_millis(100))
        .on_publish(move |e| {
            s.lock()
                .unwrap()
                .push((e.subject.to_owned(), e.attempts, e.result.is_ok()));
        });
    backend.fail_next.store(2, Ordering::SeqCst);
    publisher.publish("eu", "x").await.unwrap();
    let ids = backend.msg_ids.lock().unwrap().clone();
    assert_eq!(ids.len(), 3, "two failures, then success");
    assert!(
        ids[0].is_some() && ids.iter().all(|id| *id == ids[0]),
        "{ids:?}"
    );
    assert_eq!(*seen.lock().unwrap(), [("orders.eu".to_owned(), 3, true)]);

    // Retries used up: the last error, after 1 + 3 attempts.
    backend.fail_next.store(10, Ordering::SeqCst);
    let e = publisher.publish("eu", "y").await.unwrap_err();
    assert!(matches!(e, Error::AckUnknown { .. }), "{e}");
    assert_eq!(seen.lock().unwrap().last().unwrap().1, 4);
}
