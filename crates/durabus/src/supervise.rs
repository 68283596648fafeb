//! Connection supervision for networked backends, written once over the
//! [`Backend`] trait (NATS today, the hub client later).
//!
//! A [`Supervised`] backend wraps another and adds:
//! - a status (`Connecting | Connected | Reconnecting | CircuitOpen | Closed`)
//!   with callbacks on connect, disconnect, reconnect and every change;
//! - a circuit breaker: after `failure_threshold` consecutive connection
//!   failures (calls that timed out or found no server, failed reconnect
//!   attempts, failed health pings) calls fail fast with
//!   [`Error::CircuitOpen`]; after a backoff (doubling per reopen, capped)
//!   the circuit half-opens and one probe ([`Backend::ping`]) decides: a
//!   success closes it, a failure opens it again. A reconnect probes at once;
//! - health pings while connected, which measure the round-trip time;
//! - [`Stats`].
//!
//! Only connection failures count. A server that answers "no such stream"
//! is healthy.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use durabus_core::{
    AckKind, AckRef, Backend, ConnectionStatus, ConsumerConfig, ConsumerInfo, Delivery, Error,
    Event, Message, Origin, PublishAck, PurgeRequest, Replay, ReplayOptions, Result, StoredMessage,
    StreamConfig, StreamInfo, Subscription,
};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

/// A callback without arguments (connect, disconnect, reconnect).
pub type Callback = Arc<dyn Fn() + Send + Sync>;
/// A callback told the new status.
pub type StatusCallback = Arc<dyn Fn(ConnectionStatus) + Send + Sync>;

/// Circuit breaker and health check settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SupervisorConfig {
    /// Consecutive connection failures that open the circuit. Default 5.
    pub failure_threshold: u32,
    /// How long the circuit stays open the first time before a probe.
    /// Default 1 s; it doubles each time a probe fails.
    pub open_backoff: Duration,
    /// The cap of that backoff. Default 1 min.
    pub max_open_backoff: Duration,
    /// Interval of health pings while connected (they measure the RTT and
    /// count as calls). Default 5 s.
    pub health_interval: Duration,
    /// How long a probe or health ping may take. Default 2 s.
    pub probe_timeout: Duration,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            open_backoff: Duration::from_secs(1),
            max_open_backoff: Duration::from_secs(60),
            health_interval: Duration::from_secs(5),
            probe_timeout: Duration::from_secs(2),
        }
    }
}

impl SupervisorConfig {
    /// Checks the settings.
    pub fn validate(&self) -> Result<()> {
        if self.failure_threshold == 0 {
            return Err(Error::invalid_config(
                durabus_core::ConfigError::Supervision {
                    setting: "failure_threshold",
                    requirement: "must be at least 1",
                },
            ));
        }
        if self.open_backoff.is_zero() || self.open_backoff > self.max_open_backoff {
            return Err(Error::invalid_config(
                durabus_core::ConfigError::Supervision {
                    setting: "open_backoff",
                    requirement: "must be above zero and at most max_open_backoff",
                },
            ));
        }
        if self.health_interval.is_zero() || self.probe_timeout.is_zero() {
            return Err(Error::invalid_config(
                durabus_core::ConfigError::Supervision {
                    setting: "health_interval and probe_timeout",
                    requirement: "must be above zero",
                },
            ));
        }
        Ok(())
    }
}

/// The callbacks of a supervised connection. They run on the supervisor's
/// task: keep them short and never block in them.
#[derive(Clone, Default)]
pub struct Callbacks {
    /// The first connection is up.
    pub on_connect: Option<Callback>,
    /// The connection was lost.
    pub on_disconnect: Option<Callback>,
    /// The connection is up again after a loss.
    pub on_reconnect: Option<Callback>,
    /// The status changed (to the given one).
    pub on_health_change: Option<StatusCallback>,
}

impl std::fmt::Debug for Callbacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Callbacks")
            .field("on_connect", &self.on_connect.is_some())
            .field("on_disconnect", &self.on_disconnect.is_some())
            .field("on_reconnect", &self.on_reconnect.is_some())
            .field("on_health_change", &self.on_health_change.is_some())
            .finish()
    }
}

/// Counters of a supervised connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// The status now.
    pub status: ConnectionStatus,
    /// Connection failures counted since connecting (calls, reconnect
    /// attempts, health pings).
    pub failures: u64,
    /// Connection failures since the last success.
    pub consecutive_failures: u32,
    /// Times the connection came back after a loss.
    pub reconnects: u64,
    /// Times the circuit opened.
    pub circuit_opens: u64,
    /// The last measured round-trip time to the server.
    pub rtt: Option<Duration>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Breaker {
    Closed,
    /// Failing fast until `until`, then a probe.
    Open {
        until: Instant,
    },
    /// A probe is running.
    HalfOpen,
}

#[derive(Debug)]
struct State {
    breaker: Breaker,
    /// The next open period.
    backoff: Duration,
    consecutive: u32,
    failures: u64,
    reconnects: u64,
    opens: u64,
    rtt: Option<Duration>,
    /// The link was lost and has not come back.
    disconnected: bool,
    /// The last status reported to callbacks.
    reported: ConnectionStatus,
    next_health: Instant,
}

struct Shared {
    backend: Arc<dyn Backend>,
    config: SupervisorConfig,
    callbacks: Callbacks,
    state: Mutex<State>,
    /// The breaker is closed and no failure is counted: calls pass and a
    /// success changes nothing, so neither takes the lock.
    calm: AtomicBool,
    closed: AtomicBool,
    status_tx: watch::Sender<ConnectionStatus>,
}

/// A backend under supervision. See the module docs.
pub struct Supervised {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Supervised {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervised")
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}

impl Supervised {
    /// Counts a batch as a connection failure if its last message failed.
    fn record_batch(
        &self,
        result: Result<Vec<Result<Option<PublishAck>>>>,
    ) -> Result<Vec<Result<Option<PublishAck>>>> {
        let last = match &result {
            Err(e) => Some(e),
            Ok(items) => items.last().and_then(|r| r.as_ref().err()),
        };
        self.shared.record(last);
        result
    }

    /// Puts `backend` under supervision and starts the supervisor task
    /// (it ends when the last handle is dropped or on close). Needs a tokio
    /// runtime.
    pub fn new(
        backend: Arc<dyn Backend>,
        config: SupervisorConfig,
        callbacks: Callbacks,
    ) -> Result<Arc<Self>> {
        config.validate()?;
        let now = Instant::now();
        let initial = backend.status();
        let events = backend.events();
        let (status_tx, _) = watch::channel(initial);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                breaker: Breaker::Closed,
                backoff: config.open_backoff,
                consecutive: 0,
                failures: 0,
                reconnects: 0,
                opens: 0,
                rtt: None,
                disconnected: initial == ConnectionStatus::Reconnecting,
                reported: initial,
                next_health: now + config.health_interval,
            }),
            backend,
            config,
            callbacks,
            calm: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            status_tx,
        });
        if initial == ConnectionStatus::Connected {
            if let Some(cb) = &shared.callbacks.on_connect {
                cb();
            }
        }
        tokio::spawn(run(Arc::downgrade(&shared), events));
        Ok(Arc::new(Self { shared }))
    }

    /// The counters now.
    pub fn stats(&self) -> Stats {
        let st = self.shared.lock();
        Stats {
            status: self.shared.status_of(&st),
            failures: st.failures,
            consecutive_failures: st.consecutive,
            reconnects: st.reconnects,
            circuit_opens: st.opens,
            rtt: st.rtt,
        }
    }

    /// Waits until the status is `Connected`. [`Error::Timeout`] after
    /// `timeout`, [`Error::Closed`] if closed first.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        let mut rx = self.shared.status_tx.subscribe();
        let wait = async move {
            rx.wait_for(|s| matches!(s, ConnectionStatus::Connected | ConnectionStatus::Closed))
                .await
                .map(|s| *s)
        };
        match tokio::time::timeout(timeout, wait).await {
            Err(_) => Err(Error::Timeout(timeout)),
            Ok(Err(_) | Ok(ConnectionStatus::Closed)) => Err(Error::Closed),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// A receiver of status changes.
    pub fn status_changes(&self) -> watch::Receiver<ConnectionStatus> {
        self.shared.status_tx.subscribe()
    }

    /// Runs `call` unless the circuit is open, and counts its outcome.
    async fn guard<T>(&self, call: impl Future<Output = Result<T>>) -> Result<T> {
        self.shared.admit()?;
        let result = call.await;
        self.shared.record(result.as_ref().err());
        result
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A callback never runs under this lock, so poison can only come
        // from a bug here; the state stays usable either way.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn status_of(&self, st: &State) -> ConnectionStatus {
        if self.closed.load(Ordering::Acquire) {
            return ConnectionStatus::Closed;
        }
        match self.backend.status() {
            // Closed by the backend (it gave up reconnecting): for good.
            ConnectionStatus::Closed => ConnectionStatus::Closed,
            _ if st.breaker != Breaker::Closed => ConnectionStatus::CircuitOpen,
            link => link,
        }
    }

    fn admit(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if self.calm.load(Ordering::Acquire) {
            return Ok(());
        }
        let st = self.lock();
        match st.breaker {
            // A backend that gave up says so itself, at once.
            _ if self.backend.status() == ConnectionStatus::Closed => Ok(()),
            Breaker::Closed => Ok(()),
            Breaker::Open { until } => Err(Error::CircuitOpen {
                failures: st.consecutive,
                retry_in: until.saturating_duration_since(Instant::now()),
            }),
            Breaker::HalfOpen => Err(Error::CircuitOpen {
                failures: st.consecutive,
                retry_in: Duration::ZERO,
            }),
        }
    }

    /// Counts an outcome: connection failures move towards (or keep) the
    /// circuit open; anything else is a success of the connection.
    fn record(&self, error: Option<&Error>) {
        let failed = error.is_some_and(Error::is_connection_failure);
        if !failed && self.calm.load(Ordering::Acquire) {
            return;
        }
        {
            let mut st = self.lock();
            if failed {
                st.failures += 1;
                st.consecutive = st.consecutive.saturating_add(1);
                let reopen = st.breaker == Breaker::HalfOpen;
                if reopen
                    || (st.breaker == Breaker::Closed
                        && st.consecutive >= self.config.failure_threshold)
                {
                    st.breaker = Breaker::Open {
                        until: Instant::now() + st.backoff,
                    };
                    st.backoff = (st.backoff * 2).min(self.config.max_open_backoff);
                    st.opens += 1;
                    tracing::warn!(
                        failures = st.consecutive,
                        "durabus: circuit open after consecutive connection failures"
                    );
                }
            } else if !matches!(error, Some(Error::Closed | Error::CircuitOpen { .. })) {
                st.consecutive = 0;
                if st.breaker != Breaker::Closed {
                    tracing::info!("durabus: circuit closed, the connection works again");
                }
                st.breaker = Breaker::Closed;
                st.backoff = self.config.open_backoff;
            }
            self.calm.store(
                st.breaker == Breaker::Closed && st.consecutive == 0,
                Ordering::Release,
            );
        }
        self.report();
    }

    /// Tells callbacks and watchers about a status change.
    fn report(&self) {
        let status = {
            let mut st = self.lock();
            let status = self.status_of(&st);
            if status == st.reported {
                return;
            }
            st.reported = status;
            status
        };
        self.status_tx.send_replace(status);
        if let Some(cb) = &self.callbacks.on_health_change {
            cb(status);
        }
    }

    /// One probe or health ping.
    async fn ping(&self) {
        let r = match tokio::time::timeout(self.config.probe_timeout, self.backend.ping()).await {
            Err(_) => Err(Error::Timeout(self.config.probe_timeout)),
            Ok(r) => r,
        };
        if let Ok(rtt) = &r {
            self.lock().rtt = Some(*rtt);
        }
        self.record(r.as_ref().err());
    }

    fn on_event(&self, event: &Event) {
        match event {
            Event::Disconnected => {
                let first = !std::mem::replace(&mut self.lock().disconnected, true);
                if first {
                    if let Some(cb) = &self.callbacks.on_disconnect {
                        cb();
                    }
                }
            }
            Event::Connected => {
                let was_lost = std::mem::replace(&mut self.lock().disconnected, false);
                if was_lost {
                    self.lock().reconnects += 1;
                    if let Some(cb) = &self.callbacks.on_reconnect {
                        cb();
                    }
                }
            }
            // Attempt n > 1 means attempt n - 1 failed.
            Event::Reconnecting { attempt, .. } if *attempt > 1 => {
                self.record(Some(&Error::Unreachable {
                    url: String::new(),
                    reason: "reconnect attempt failed".into(),
                }));
            }
            _ => {}
        }
        self.report();
    }
}

/// The supervisor task: connection events, probes when the circuit's
/// backoff has passed, health pings while closed.
async fn run(shared: Weak<Shared>, mut events: Option<broadcast::Receiver<Event>>) {
    loop {
        let Some(sh) = shared.upgrade() else { return };
        if sh.closed.load(Ordering::Acquire) || sh.backend.status() == ConnectionStatus::Closed {
            sh.report();
            return;
        }
        let now = Instant::now();
        let (wake, action) = {
            let mut st = sh.lock();
            match st.breaker {
                Breaker::Open { until } if until <= now => {
                    st.breaker = Breaker::HalfOpen;
                    (now, true)
                }
                Breaker::Open { until } => (until, false),
                Breaker::HalfOpen => (now, true),
                Breaker::Closed if st.next_health <= now => {
                    st.next_health = now + sh.config.health_interval;
                    (now, !st.disconnected)
                }
                Breaker::Closed => (st.next_health, false),
            }
        };
        if action {
            sh.report();
            sh.ping().await;
            continue;
        }
        // Never hold a strong reference while waiting: dropping the last
        // handle ends this task.
        drop(sh);
        let wake = wake.min(now + Duration::from_secs(1));
        let event = match events.as_mut() {
            Some(rx) => tokio::select! {
                e = rx.recv() => Some(e),
                () = tokio::time::sleep_until(wake) => None,
            },
            None => {
                tokio::time::sleep_until(wake).await;
                None
            }
        };
        let Some(sh) = shared.upgrade() else { return };
        match event {
            Some(Ok(e)) => {
                let reconnected = matches!(e, Event::Connected);
                sh.on_event(&e);
                if reconnected && sh.lock().breaker != Breaker::Closed {
                    // Back: probe now rather than after the backoff.
                    sh.lock().breaker = Breaker::HalfOpen;
                }
            }
            Some(Err(broadcast::error::RecvError::Lagged(_))) => sh.report(),
            Some(Err(broadcast::error::RecvError::Closed)) => events = None,
            None => {}
        }
    }
}

#[async_trait::async_trait]
impl Backend for Supervised {
    async fn create_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        self.guard(self.shared.backend.create_stream(config)).await
    }

    async fn update_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        self.guard(self.shared.backend.update_stream(config)).await
    }

    async fn stream_info(&self, name: &str) -> Result<StreamInfo> {
        self.guard(self.shared.backend.stream_info(name)).await
    }

    async fn list_streams(&self) -> Result<Vec<StreamInfo>> {
        self.guard(self.shared.backend.list_streams()).await
    }

    async fn delete_stream(&self, name: &str) -> Result<()> {
        self.guard(self.shared.backend.delete_stream(name)).await
    }

    async fn purge_stream(&self, name: &str, request: PurgeRequest) -> Result<u64> {
        self.guard(self.shared.backend.purge_stream(name, request))
            .await
    }

    async fn publish(&self, message: Message) -> Result<Option<PublishAck>> {
        self.guard(self.shared.backend.publish(message)).await
    }

    async fn publish_batch(
        &self,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Option<PublishAck>>>> {
        self.shared.admit()?;
        let result = self.shared.backend.publish_batch(messages).await;
        self.record_batch(result)
    }

    async fn deliver_to(&self, to: &str, message: Message) -> Result<usize> {
        self.guard(self.shared.backend.deliver_to(to, message))
            .await
    }

    async fn publish_batch_from(
        &self,
        origin: Origin,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Option<PublishAck>>>> {
        self.shared.admit()?;
        let result = self
            .shared
            .backend
            .publish_batch_from(origin, messages)
            .await;
        self.record_batch(result)
    }

    async fn subscribe_from(
        &self,
        origin: Origin,
        filter: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription> {
        self.guard(
            self.shared
                .backend
                .subscribe_from(origin, filter, queue_group),
        )
        .await
    }

    async fn subscribe(&self, filter: &str, queue_group: Option<&str>) -> Result<Subscription> {
        self.guard(self.shared.backend.subscribe(filter, queue_group))
            .await
    }

    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        self.shared.admit()?;
        let result = self.shared.backend.request(message, timeout).await;
        // A request's timeout is the responder's, not the connection's.
        let counted = match &result {
            Err(Error::Timeout(_)) => None,
            other => other.as_ref().err(),
        };
        self.shared.record(counted);
        result
    }

    async fn get_message(&self, stream: &str, seq: u64) -> Result<StoredMessage> {
        self.guard(self.shared.backend.get_message(stream, seq))
            .await
    }

    async fn get_last_message(&self, stream: &str, subject: &str) -> Result<StoredMessage> {
        self.guard(self.shared.backend.get_last_message(stream, subject))
            .await
    }

    async fn delete_message(&self, stream: &str, seq: u64) -> Result<()> {
        self.guard(self.shared.backend.delete_message(stream, seq))
            .await
    }

    async fn replay(&self, stream: &str, options: ReplayOptions) -> Result<Replay> {
        self.guard(self.shared.backend.replay(stream, options))
            .await
    }

    async fn create_consumer(&self, stream: &str, config: ConsumerConfig) -> Result<ConsumerInfo> {
        self.guard(self.shared.backend.create_consumer(stream, config))
            .await
    }

    async fn update_consumer(&self, stream: &str, config: ConsumerConfig) -> Result<ConsumerInfo> {
        self.guard(self.shared.backend.update_consumer(stream, config))
            .await
    }

    async fn consumer_info(&self, stream: &str, name: &str) -> Result<ConsumerInfo> {
        self.guard(self.shared.backend.consumer_info(stream, name))
            .await
    }

    async fn list_consumers(&self, stream: &str) -> Result<Vec<ConsumerInfo>> {
        self.guard(self.shared.backend.list_consumers(stream)).await
    }

    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<()> {
        self.guard(self.shared.backend.delete_consumer(stream, name))
            .await
    }

    async fn fetch(
        &self,
        stream: &str,
        consumer: &str,
        batch: usize,
        expires: Duration,
    ) -> Result<Vec<Delivery>> {
        self.guard(self.shared.backend.fetch(stream, consumer, batch, expires))
            .await
    }

    async fn ack(&self, delivery: &AckRef, kind: AckKind) -> Result<()> {
        self.guard(self.shared.backend.ack(delivery, kind)).await
    }

    async fn ack_confirmed(&self, delivery: &AckRef, kind: AckKind) -> Result<()> {
        self.guard(self.shared.backend.ack_confirmed(delivery, kind))
            .await
    }

    async fn close(&self) -> Result<()> {
        self.shared.closed.store(true, Ordering::Release);
        let r = self.shared.backend.close().await;
        self.shared.report();
        r
    }

    async fn ping(&self) -> Result<Duration> {
        let r = self.guard(self.shared.backend.ping()).await;
        if let Ok(rtt) = &r {
            self.shared.lock().rtt = Some(*rtt);
        }
        r
    }

    fn status(&self) -> ConnectionStatus {
        let st = self.shared.lock();
        self.shared.status_of(&st)
    }

    fn has_subscribers(&self, subject: &str) -> bool {
        self.shared.backend.has_subscribers(subject)
    }

    fn events(&self) -> Option<broadcast::Receiver<Event>> {
        self.shared.backend.events()
    }

    fn unavailable(&self) -> Vec<durabus_core::Unavailable> {
        self.shared.backend.unavailable()
    }
}

/// The answer of [`crate::Bus::readiness`], shaped for an HTTP handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    /// Connected and answering.
    pub ready: bool,
    /// The status at the time of the answer.
    pub status: ConnectionStatus,
}

impl Readiness {
    /// 200 when ready, 503 otherwise.
    pub fn http_status(&self) -> u16 {
        if self.ready {
            200
        } else {
            503
        }
    }

    /// A JSON body, e.g. `{"ready":true,"status":"connected"}`: the status
    /// only, no URL, server name or credential.
    pub fn body(&self) -> String {
        let status = match self.status {
            ConnectionStatus::Connecting => "connecting",
            ConnectionStatus::Connected => "connected",
            ConnectionStatus::Reconnecting => "reconnecting",
            ConnectionStatus::CircuitOpen => "circuit_open",
            ConnectionStatus::Closed => "closed",
        };
        format!("{{\"ready\":{},\"status\":\"{status}\"}}", self.ready)
    }
}
