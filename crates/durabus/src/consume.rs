//! The consumer runner, written once over the backend's consumer primitives
//! (`fetch`, `ack`): at-least-once processing with a concurrency limit,
//! retries with backoff, dead letters and graceful shutdown.
//!
//! Every message ends in exactly one of: acknowledged (the handler
//! succeeded) or dead-lettered (published to the dead-letter subject, then
//! terminated). A redelivered message that was already dead-lettered (the
//! process died between the two steps) is terminated without running the
//! handler again.
//!
//! The dead-letter rule (docs/design.md, "Consumer runner"): the handler
//! runs on at most `max_attempts` deliveries; a failed, panicking or timed
//! out last attempt is dead-lettered at once, and the delivery after it
//! (the process died on the last attempt) is dead-lettered without running
//! the handler. So the consumer must allow one delivery more than the
//! attempts: `max_deliver` unlimited or at least `max_attempts + 1`
//! ([`Bus::consume`] refuses anything less).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, UNIX_EPOCH};

use durabus_core::{
    AckKind, ConfigError, ConsumerConfig, Delivery, Error, Event, Message, Result, StreamConfig,
    NATS_MSG_ID,
};
use futures::FutureExt as _;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::Bus;

/// Header naming the stream a dead letter came from.
pub const DLQ_STREAM: &str = "Durabus-Dlq-Stream";
/// Header naming the consumer that gave up on it.
pub const DLQ_CONSUMER: &str = "Durabus-Dlq-Consumer";
/// Header with its sequence in that stream.
pub const DLQ_SEQ: &str = "Durabus-Dlq-Seq";
/// Header with its original subject (where a redrive publishes it).
pub const DLQ_SUBJECT: &str = "Durabus-Dlq-Subject";
/// Header with the number of attempts it had: its deliveries, plus the
/// in-place retries of [`RetryPolicy::StallInOrder`].
pub const DLQ_DELIVERIES: &str = "Durabus-Dlq-Deliveries";
/// Header with the handler's last error.
pub const DLQ_ERROR: &str = "Durabus-Dlq-Error";
/// The stream the runner creates to capture `$DLQ.>` unless told otherwise.
pub const DEFAULT_DLQ_STREAM: &str = "DLQ";

/// What a handler made of a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Processed: acknowledge it.
    Done,
    /// Failed with this error: retry (per the policy), dead-letter it once
    /// the attempts are used up.
    Failed(String),
    /// Not now: retry after this delay (or the backoff in force). Counts as
    /// an attempt.
    RetryLater(Option<Duration>),
    /// Can never succeed (e.g. a payload that does not decode): dead-letter
    /// it now, without more attempts, with this reason in the
    /// [`DLQ_ERROR`] header.
    Reject(String),
}

/// How a failed message is retried.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RetryPolicy {
    /// Nak it with the backoff delay and go on with other messages; it
    /// comes back later, out of order. The default.
    #[default]
    ParkAndContinue,
    /// Retry the same message (after the backoff delay) before taking the
    /// next: order is kept (with a concurrency of 1).
    StallInOrder,
}

/// Where dead letters go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetter {
    /// `$DLQ.<stream>.<consumer>`, captured by the stream `DLQ` (created if
    /// absent). The default.
    Default,
    /// This subject, which `stream` must capture (created if absent).
    Subject {
        /// The subject dead letters are published to.
        subject: String,
        /// The stream that captures it.
        stream: String,
    },
}

type DeliveryHook = Arc<dyn Fn(&Delivery) + Send + Sync>;
type DeadLetterHook = Arc<dyn Fn(&Delivery, &str) + Send + Sync>;

/// Settings of [`Bus::consume`]; the chain ends in [`Bus::consume`].
#[derive(Clone)]
#[must_use]
pub struct ConsumeOptions {
    concurrency: usize,
    retry: RetryPolicy,
    backoff: Vec<Duration>,
    max_attempts: Option<u64>,
    handler_timeout: Option<Duration>,
    dead_letter: DeadLetter,
    /// `None`: none wait; fetch only for free handlers.
    batch: Option<usize>,
    fetch_wait: Duration,
    shutdown_deadline: Duration,
    confirm_acks: bool,
    on_deliver: Option<DeliveryHook>,
    on_ack: Option<DeliveryHook>,
    on_dead_letter: Option<DeadLetterHook>,
}

impl std::fmt::Debug for ConsumeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumeOptions")
            .field("concurrency", &self.concurrency)
            .field("retry", &self.retry)
            .field("backoff", &self.backoff)
            .field("max_attempts", &self.max_attempts)
            .field("handler_timeout", &self.handler_timeout)
            .field("dead_letter", &self.dead_letter)
            .field("batch", &self.batch)
            .field("confirm_acks", &self.confirm_acks)
            .finish_non_exhaustive()
    }
}

impl Default for ConsumeOptions {
    fn default() -> Self {
        Self {
            concurrency: 1,
            retry: RetryPolicy::ParkAndContinue,
            backoff: vec![
                Duration::from_secs(1),
                Duration::from_secs(5),
                Duration::from_secs(30),
            ],
            max_attempts: None,
            handler_timeout: None,
            dead_letter: DeadLetter::Default,
            batch: None,
            fetch_wait: Duration::from_secs(1),
            shutdown_deadline: Duration::from_secs(10),
            confirm_acks: false,
            on_deliver: None,
            on_ack: None,
            on_dead_letter: None,
        }
    }
}

impl ConsumeOptions {
    /// Defaults: one message at a time, park-and-continue, backoff 1 s, 5 s,
    /// 30 s, attempts one fewer than the consumer's `max_deliver` (5 when
    /// it is unlimited), no handler timeout, batches of 64, dead letters to
    /// `$DLQ.<stream>.<consumer>`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Messages handled at the same time (at least 1).
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// How failures are retried.
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Delays before the 1st, 2nd, ... retry (the last repeats).
    pub fn backoff(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        self.backoff = delays.into_iter().collect();
        self
    }

    /// Attempts before a message is dead-lettered; default one fewer than
    /// the consumer's `max_deliver`, else 5. Attempts are deliveries, as
    /// `max_deliver` counts them (plus in-place retries under
    /// [`RetryPolicy::StallInOrder`]): a delivery lost with a killed process
    /// (running or still buffered) counts too, so a message that keeps
    /// killing its consumer ends as a dead letter ("attempts used up") on
    /// the delivery after its last attempt instead of looping forever. The
    /// consumer's `max_deliver` must be unlimited or at least `n + 1`.
    pub fn max_attempts(mut self, n: u64) -> Self {
        self.max_attempts = Some(n.max(1));
        self
    }

    /// Stops a handler that runs longer than `limit`: the attempt counts as
    /// failed (retried, or dead-lettered when it was the last) with the
    /// error "handler timed out after ...". None by default. The handler's
    /// future is dropped at the limit, so work it does after an `.await`
    /// point stops there.
    pub fn handler_timeout(mut self, limit: Duration) -> Self {
        self.handler_timeout = Some(limit);
        self
    }

    /// Where dead letters go.
    pub fn dead_letter(mut self, to: DeadLetter) -> Self {
        self.dead_letter = to;
        self
    }

    /// The most deliveries held waiting for busy handlers (at least 1;
    /// by default none wait: the runner fetches only for free handlers):
    /// it fetches ahead to keep this many, sends in-progress for them
    /// while they wait, and gives them back (nak) at shutdown. Each
    /// delivery held is a delivery made: if the process dies, every message
    /// it held was delivered once more, so a handler that crashes its
    /// process costs each waiting message an attempt (docs/design.md,
    /// "Consumer runner").
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = Some(n.max(1));
        self
    }

    /// How long graceful shutdown waits for handlers in flight.
    pub fn shutdown_deadline(mut self, deadline: Duration) -> Self {
        self.shutdown_deadline = deadline;
        self
    }

    /// Waits for the server to confirm each ack of a handled message
    /// ([`Bus::ack_confirmed`], one round trip each on `nats://`) before
    /// `on_ack` runs. Off by default: acks are sent as JetStream clients
    /// send them, and one lost with the connection means the message is
    /// handled again (at-least-once). Dead letters' terms are always
    /// confirmed.
    pub fn confirm_acks(mut self, on: bool) -> Self {
        self.confirm_acks = on;
        self
    }

    /// Called for each delivery before its handler runs.
    pub fn on_deliver(mut self, f: impl Fn(&Delivery) + Send + Sync + 'static) -> Self {
        self.on_deliver = Some(Arc::new(f));
        self
    }

    /// Called after a delivery was acknowledged (the ack sent, or confirmed
    /// under [`ConsumeOptions::confirm_acks`]).
    pub fn on_ack(mut self, f: impl Fn(&Delivery) + Send + Sync + 'static) -> Self {
        self.on_ack = Some(Arc::new(f));
        self
    }

    /// Called after a delivery was dead-lettered, with the last error.
    pub fn on_dead_letter(mut self, f: impl Fn(&Delivery, &str) + Send + Sync + 'static) -> Self {
        self.on_dead_letter = Some(Arc::new(f));
        self
    }

    fn delay(&self, attempt: u64) -> Duration {
        let i = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        self.backoff
            .get(i)
            .or(self.backoff.last())
            .copied()
            .unwrap_or(Duration::ZERO)
    }
}

/// Counters of a running consumer.
#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    acked: AtomicU64,
    retried: AtomicU64,
    dead_lettered: AtomicU64,
    returned: AtomicU64,
}

/// What a consumer did, from [`RunningConsumer::shutdown`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumeStats {
    /// Deliveries handed to the handler.
    pub delivered: u64,
    /// Messages acknowledged after success.
    pub acked: u64,
    /// Retries (naks or in-place retries).
    pub retried: u64,
    /// Messages dead-lettered.
    pub dead_lettered: u64,
    /// Deliveries taken but not handled at shutdown, given back with a nak.
    pub returned: u64,
}

impl Counters {
    fn snapshot(&self) -> ConsumeStats {
        ConsumeStats {
            delivered: self.delivered.load(Ordering::Relaxed),
            acked: self.acked.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            dead_lettered: self.dead_lettered.load(Ordering::Relaxed),
            returned: self.returned.load(Ordering::Relaxed),
        }
    }
}

/// A running consumer. Dropping it stops it abruptly (unsettled messages
/// come back after `ack_wait`); [`RunningConsumer::shutdown`] stops it
/// gracefully; [`RunningConsumer::closed`] says when it stopped on its own.
#[derive(Debug)]
pub struct RunningConsumer {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    counters: Arc<Counters>,
}

impl RunningConsumer {
    /// The counters so far.
    pub fn stats(&self) -> ConsumeStats {
        self.counters.snapshot()
    }

    /// Whether the runner has ended (on its own, or after a shutdown).
    pub fn is_closed(&self) -> bool {
        self.task
            .as_ref()
            .is_none_or(tokio::task::JoinHandle::is_finished)
    }

    /// Waits until the runner ends on its own, which it does only on an
    /// error it cannot retry (its consumer or stream deleted, the bus
    /// closed, ...), and yields that error. It does not stop the runner: in
    /// normal operation it never resolves (use it in a `select!` beside
    /// the signal that calls [`RunningConsumer::shutdown`]). The runner
    /// also logs its end (`tracing::error!`) and sends
    /// [`Event::ConsumerStopped`] on [`Bus::events`].
    ///
    /// # Errors
    ///
    /// The error that stopped the runner, once: a later call, and
    /// [`RunningConsumer::shutdown`] after it, return the counters.
    pub async fn closed(&mut self) -> Result<ConsumeStats> {
        if let Some(task) = self.task.as_mut() {
            let end = task.await;
            self.task = None;
            end.map_err(|e| Error::internal(format!("consumer task failed: {e}")))??;
        }
        Ok(self.counters.snapshot())
    }

    /// Stops fetching, lets handlers in flight finish within the deadline,
    /// naks what was taken but not started (and what was still running at
    /// the deadline), and returns the counters.
    ///
    /// # Errors
    ///
    /// The error that stopped the runner on its own before, unless
    /// [`RunningConsumer::closed`] returned it already.
    pub async fn shutdown(mut self) -> Result<ConsumeStats> {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.await
                .map_err(|e| Error::internal(format!("consumer task failed: {e}")))??;
        }
        Ok(self.counters.snapshot())
    }
}

impl Drop for RunningConsumer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Everything a worker needs.
struct Runner<H> {
    bus: Bus,
    stream: String,
    consumer: String,
    options: ConsumeOptions,
    handler: H,
    max_attempts: u64,
    /// How often a delivery that waits or runs is kept alive.
    beat: Duration,
    dlq_subject: String,
    counters: Arc<Counters>,
}

/// The attempts the runner makes, checked against the consumer's
/// `max_deliver` (the dead-letter rule in the module docs).
fn attempts(options: &ConsumeOptions, config: &ConsumerConfig) -> Result<u64> {
    let too_low = |max_deliver, max_attempts| {
        Err(Error::invalid_config(ConfigError::MaxDeliverTooLow {
            consumer: config.durable_name.clone().unwrap_or_default(),
            max_deliver,
            max_attempts,
        }))
    };
    match (options.max_attempts, config.max_deliver) {
        (Some(a), Some(m)) if m <= a => too_low(m, a),
        (Some(a), _) => Ok(a),
        (None, Some(m)) if m < 2 => too_low(m, 1),
        (None, Some(m)) => Ok(m - 1),
        (None, None) => Ok(5),
    }
}

/// A fetch in flight, kept across the runner's loop (never dropped half
/// way while the runner goes on).
type Fetching = Pin<Box<dyn Future<Output = Result<Vec<Delivery>>> + Send>>;

/// Deliveries being handled, by stream seq: given back if stopped.
type InFlight = Arc<std::sync::Mutex<HashMap<u64, Delivery>>>;

impl Bus {
    /// Runs `handler` on every message of durable `consumer` of `stream`
    /// until [`RunningConsumer::shutdown`]. See the module docs of
    /// `durabus::consume` for the guarantees.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`] or [`Error::ConsumerNotFound`]: the consumer
    /// must exist (create it with [`Bus::create_consumer`]);
    /// [`Error::InvalidConfig`] ([`ConfigError::MaxDeliverTooLow`]) when its
    /// `max_deliver` is below `max_attempts + 1` (or below 2 with the
    /// default attempts): the runner needs the delivery after the last
    /// attempt; the errors of creating the dead-letter stream (see
    /// [`Bus::create_stream`]). What goes wrong later is counted in
    /// [`ConsumeStats`] and returned by [`RunningConsumer::closed`] or
    /// [`RunningConsumer::shutdown`].
    ///
    /// ```no_run
    /// # async fn example(bus: durabus::Bus) -> durabus::Result<()> {
    /// use durabus::{ConsumeOptions, Outcome};
    /// let handle = bus
    ///     .consume("ORDERS", "billing", ConsumeOptions::new().concurrency(4), |d| async move {
    ///         match std::str::from_utf8(&d.message.payload) {
    ///             Ok(_) => Outcome::Done,
    ///             Err(e) => Outcome::Failed(e.to_string()),
    ///         }
    ///     })
    ///     .await?;
    /// // ...
    /// let stats = handle.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn consume<H, F>(
        &self,
        stream: impl AsRef<str>,
        consumer: impl AsRef<str>,
        options: ConsumeOptions,
        handler: H,
    ) -> Result<RunningConsumer>
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let stream = stream.as_ref();
        let consumer = consumer.as_ref();
        let info = self.consumer_info(stream, consumer).await?;
        let max_attempts = attempts(&options, &info.config)?;
        // The shortest wait before a redelivery: ack_wait, or the first
        // backoff step when one is set (nats-server then sets ack_wait to
        // it too).
        let wait = info
            .config
            .backoff
            .first()
            .map_or(info.config.ack_wait, |b| (*b).min(info.config.ack_wait));
        let dlq_subject = self.ensure_dead_letters(stream, consumer, &options).await?;
        let counters = Arc::new(Counters::default());
        let runner = Arc::new(Runner {
            bus: self.clone(),
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            options,
            handler,
            max_attempts,
            beat: (wait / 2).max(Duration::from_millis(10)),
            dlq_subject,
            counters: counters.clone(),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(runner.run(stopped));
        Ok(RunningConsumer {
            stop,
            task: Some(task),
            counters,
        })
    }

    /// The dead-letter subject, its stream created if absent.
    async fn ensure_dead_letters(
        &self,
        stream: &str,
        consumer: &str,
        options: &ConsumeOptions,
    ) -> Result<String> {
        let (subject, dlq_stream, capture) = match &options.dead_letter {
            DeadLetter::Default => (
                format!("$DLQ.{stream}.{consumer}"),
                DEFAULT_DLQ_STREAM.to_owned(),
                "$DLQ.>".to_owned(),
            ),
            DeadLetter::Subject { subject, stream } => {
                (subject.clone(), stream.clone(), subject.clone())
            }
        };
        durabus_core::subject::validate_publish(&subject)?;
        match self.stream_info(&dlq_stream).await {
            Ok(info) => {
                let captures = info
                    .config
                    .effective_subjects()
                    .iter()
                    .any(|f| durabus_core::subject::matches(f, &subject));
                if !captures {
                    return Err(Error::invalid_config(ConfigError::DeadLetterNotCaptured {
                        stream: dlq_stream.to_string(),
                        subject,
                    }));
                }
            }
            Err(Error::StreamNotFound { .. }) => {
                self.create_stream(StreamConfig::new(&dlq_stream).subjects([capture]))
                    .await?;
            }
            Err(e) => return Err(e),
        }
        Ok(subject)
    }
}

impl<H, F> Runner<H>
where
    H: Fn(Delivery) -> F + Send + Sync + 'static,
    F: Future<Output = Outcome> + Send + 'static,
{
    async fn run(self: Arc<Self>, stopped: watch::Receiver<bool>) -> Result<()> {
        let end = self.clone().work(stopped).await;
        if let Err(e) = &end {
            tracing::error!(
                stream = %self.stream,
                consumer = %self.consumer,
                error = %e,
                "consumer runner stopped on its own"
            );
            self.bus.emit(Event::ConsumerStopped {
                stream: self.stream.clone(),
                consumer: self.consumer.clone(),
                error: e.to_string(),
            });
        }
        end
    }

    /// A fetch of up to `n` deliveries; a connection failure is an empty
    /// fetch after a pause (the runner retries).
    fn fetch(&self, n: usize) -> Fetching {
        let bus = self.bus.clone();
        let (stream, consumer) = (self.stream.clone(), self.consumer.clone());
        let wait = self.options.fetch_wait;
        Box::pin(async move {
            match bus.fetch(&stream, &consumer, n, wait).await {
                Err(e) if e.is_connection_failure() || matches!(e, Error::CircuitOpen { .. }) => {
                    tracing::debug!(error = %e, "consumer fetch failed; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    Ok(Vec::new())
                }
                other => other,
            }
        })
    }

    async fn work(self: Arc<Self>, mut stopped: watch::Receiver<bool>) -> Result<()> {
        let permits = Arc::new(Semaphore::new(self.options.concurrency));
        let mut workers = JoinSet::new();
        let in_flight: InFlight = Arc::default();
        // Fetched ahead of free handlers, at most `batch`: kept alive while
        // they wait, given back at shutdown.
        let mut taken: VecDeque<Delivery> = VecDeque::new();
        let mut fetching: Option<Fetching> = None;
        let mut next_beat = tokio::time::Instant::now() + self.beat;
        let mut failure = None;
        while !*stopped.borrow() {
            let want = match self.options.batch {
                Some(ahead) => ahead.saturating_sub(taken.len()),
                // Nothing waits: fetch for the free handlers only.
                None if taken.is_empty() => permits.available_permits(),
                None => 0,
            };
            if fetching.is_none() && want > 0 {
                fetching = Some(self.fetch(want));
            }
            tokio::select! {
                biased;
                _ = stopped.changed() => break,
                Some(_) = workers.join_next(), if !workers.is_empty() => {}
                permit = permits.clone().acquire_owned(), if !taken.is_empty() => {
                    let Ok(permit) = permit else { break };
                    if let Some(delivery) = taken.pop_front() {
                        self.start(&mut workers, &in_flight, delivery, permit);
                    }
                }
                fetched = poll_fetch(&mut fetching), if fetching.is_some() => {
                    fetching = None;
                    match fetched {
                        Ok(d) => {
                            if taken.is_empty() {
                                next_beat = tokio::time::Instant::now() + self.beat;
                            }
                            taken.extend(d);
                        }
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                }
                () = tokio::time::sleep_until(next_beat), if !taken.is_empty() => {
                    // Buffered deliveries are not started yet: keep their
                    // ack_wait from running out.
                    for d in &taken {
                        let _ = self.bus.ack(d, AckKind::InProgress).await;
                    }
                    next_beat = tokio::time::Instant::now() + self.beat;
                }
            }
        }
        // Shutdown: a fetch in flight ends (its deliveries are given back
        // with the rest), then what was taken but not started goes back.
        if let Some(f) = fetching.take() {
            if failure.is_none() {
                let limit = self.options.fetch_wait + Duration::from_secs(2);
                if let Ok(Ok(d)) = tokio::time::timeout(limit, f).await {
                    taken.extend(d);
                }
            }
        }
        for d in taken.drain(..) {
            self.counters.returned.fetch_add(1, Ordering::Relaxed);
            let _ = self.bus.ack(&d, AckKind::Nak(None)).await;
        }
        let deadline = tokio::time::Instant::now() + self.options.shutdown_deadline;
        while !workers.is_empty() {
            if tokio::time::timeout_at(deadline, workers.join_next())
                .await
                .is_err()
            {
                // Handlers past the deadline are stopped and their
                // messages given back.
                tracing::warn!(
                    left = workers.len(),
                    "consumer shutdown deadline passed; stopping handlers"
                );
                workers.abort_all();
                while workers.join_next().await.is_some() {}
                let stopped: Vec<Delivery> = lock(&in_flight).drain().map(|(_, d)| d).collect();
                for d in stopped {
                    self.counters.returned.fetch_add(1, Ordering::Relaxed);
                    let _ = self.bus.ack(&d, AckKind::Nak(None)).await;
                }
                break;
            }
        }
        failure.map_or(Ok(()), Err)
    }

    /// Starts handling one delivery on a worker holding `permit`.
    fn start(
        self: &Arc<Self>,
        workers: &mut JoinSet<()>,
        in_flight: &InFlight,
        delivery: Delivery,
        permit: OwnedSemaphorePermit,
    ) {
        let runner = self.clone();
        let seq = delivery.stream_seq();
        lock(in_flight).insert(seq, delivery.clone());
        let registry = in_flight.clone();
        workers.spawn(async move {
            // A panic here is outside the handler (which is caught as a
            // failed attempt): a hook's, say. The delivery goes back.
            let handled = AssertUnwindSafe(runner.handle(delivery.clone()))
                .catch_unwind()
                .await;
            if let Err(panic) = handled {
                tracing::error!(
                    seq,
                    panic = %panic_text(panic.as_ref()),
                    "consumer worker panicked; the message is given back"
                );
                let _ = runner.bus.ack(&delivery, AckKind::Nak(None)).await;
            }
            lock(&registry).remove(&seq);
            drop(permit);
        });
    }

    /// One delivery, from handler to ack or dead letter.
    async fn handle(&self, delivery: Delivery) {
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = &self.options.on_deliver {
            hook(&delivery);
        }
        let mut attempt = delivery.delivered();
        if attempt > 1 && self.already_dead(&delivery).await {
            let _ = self.bus.ack_confirmed(&delivery, AckKind::Term).await;
            return;
        }
        if attempt > self.max_attempts {
            // The delivery after the last attempt, which did not settle it
            // (the process stopped, or its nak was lost): dead-letter it
            // without running the handler. Also a dead-lettering cut off
            // before its term: the publish is deduplicated by its msg id.
            self.dead_letter(&delivery, attempt, "attempts used up")
                .await;
            return;
        }
        loop {
            let outcome = self.run_handler(&delivery).await;
            let (error, delay) = match outcome {
                Outcome::Done => {
                    let acked = if self.options.confirm_acks {
                        self.bus.ack_confirmed(&delivery, AckKind::Ack).await
                    } else {
                        self.bus.ack(&delivery, AckKind::Ack).await
                    };
                    match acked {
                        Ok(()) => {
                            self.counters.acked.fetch_add(1, Ordering::Relaxed);
                            if let Some(hook) = &self.options.on_ack {
                                hook(&delivery);
                            }
                        }
                        Err(e) => {
                            tracing::warn!(seq = delivery.stream_seq(), error = %e, "ack failed; the message will be redelivered");
                        }
                    }
                    return;
                }
                Outcome::Reject(reason) => {
                    self.dead_letter(&delivery, attempt, &reason).await;
                    return;
                }
                Outcome::Failed(e) => (e, None),
                Outcome::RetryLater(d) => ("retry later".to_owned(), d),
            };
            if attempt >= self.max_attempts {
                self.dead_letter(&delivery, attempt, &error).await;
                return;
            }
            self.counters.retried.fetch_add(1, Ordering::Relaxed);
            let delay = delay.unwrap_or_else(|| self.options.delay(attempt));
            match self.options.retry {
                RetryPolicy::ParkAndContinue => {
                    if let Err(e) = self.bus.ack(&delivery, AckKind::Nak(Some(delay))).await {
                        tracing::debug!(error = %e, "nak failed; the message comes back after ack_wait");
                    }
                    return;
                }
                RetryPolicy::StallInOrder => {
                    self.keep_alive(&delivery, tokio::time::sleep(delay)).await;
                    attempt += 1;
                }
            }
        }
    }

    /// Runs the handler, sending in-progress heartbeats while it runs,
    /// inside a `durabus.consume` span and the message's context (so what
    /// the handler publishes continues its trace). A panic, or running
    /// past the handler timeout, is a failed attempt.
    async fn run_handler(&self, delivery: &Delivery) -> Outcome {
        let context = crate::context::Context::from_headers(&delivery.message.headers);
        let span = tracing::info_span!(
            "durabus.consume",
            stream = %self.stream,
            consumer = %self.consumer,
            subject = %delivery.message.subject,
            seq = delivery.stream_seq(),
            delivered = delivery.delivered(),
            trace_id = tracing::field::Empty,
        );
        if let Some(t) = context.trace() {
            span.record("trace_id", tracing::field::display(t.trace_id()));
        }
        let work = crate::context::scope(context, async {
            let called =
                std::panic::catch_unwind(AssertUnwindSafe(|| (self.handler)(delivery.clone())));
            let ran = match called {
                Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            ran.unwrap_or_else(|panic| {
                let text = panic_text(panic.as_ref());
                tracing::warn!(seq = delivery.stream_seq(), panic = %text, "handler panicked; a failed attempt");
                Outcome::Failed(format!("handler panicked: {text}"))
            })
        });
        let limited = async {
            match self.options.handler_timeout {
                Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                    Outcome::Failed(format!("handler timed out after {limit:?}"))
                }),
                None => work.await,
            }
        };
        self.keep_alive(delivery, limited.instrument(span)).await
    }

    /// Awaits `work`, telling the backend the delivery is in progress every
    /// half of its shortest wait.
    async fn keep_alive<T>(&self, delivery: &Delivery, work: impl Future<Output = T>) -> T {
        tokio::pin!(work);
        let mut next = tokio::time::Instant::now() + self.beat;
        loop {
            tokio::select! {
                out = &mut work => return out,
                () = tokio::time::sleep_until(next) => {
                    let _ = self.bus.ack(delivery, AckKind::InProgress).await;
                    next += self.beat;
                }
            }
        }
    }

    /// Whether the newest dead letter of this consumer is this message: a
    /// dead-lettering cut off before its term.
    async fn already_dead(&self, delivery: &Delivery) -> bool {
        let stream = match &self.options.dead_letter {
            DeadLetter::Default => DEFAULT_DLQ_STREAM,
            DeadLetter::Subject { stream, .. } => stream.as_str(),
        };
        match self.bus.get_last_message(stream, &self.dlq_subject).await {
            Ok(m) => {
                m.headers.get(DLQ_STREAM) == Some(self.stream.as_str())
                    && m.headers.get(DLQ_SEQ) == Some(&delivery.stream_seq().to_string())
            }
            Err(_) => false,
        }
    }

    /// Publishes the message to the dead-letter subject, then terminates it.
    /// `attempts`: the attempts it had (the [`DLQ_DELIVERIES`] header).
    async fn dead_letter(&self, delivery: &Delivery, attempts: u64, error: &str) {
        let m = &delivery.message;
        let mut letter = Message::new(self.dlq_subject.clone(), m.payload.clone());
        for (name, value) in m.headers.iter() {
            if name != NATS_MSG_ID {
                letter.headers.append(name, value);
            }
        }
        let error: String = error
            .chars()
            .filter(|c| !c.is_control())
            .take(512)
            .collect();
        // The msg id names the message by its stream, seq and stored time:
        // a stream deleted and created again reuses its sequences, never
        // a seq with its time.
        letter = letter
            .with_header(DLQ_STREAM, self.stream.clone())
            .with_header(DLQ_CONSUMER, self.consumer.clone())
            .with_header(DLQ_SEQ, m.seq.to_string())
            .with_header(DLQ_SUBJECT, m.subject.clone())
            .with_header(DLQ_DELIVERIES, attempts.to_string())
            .with_header(DLQ_ERROR, error.clone())
            .with_msg_id(format!(
                "dlq:{}:{}:{}:{}",
                self.stream,
                self.consumer,
                m.seq,
                unix_ns(m.time)
            ));
        let started = Instant::now();
        loop {
            match self.bus.publish_message(letter.clone()).await {
                Ok(Some(_)) => break,
                Ok(None) => {
                    tracing::error!(subject = %self.dlq_subject, "no stream captures the dead-letter subject; the message is left unsettled");
                    return;
                }
                Err(e) if started.elapsed() < self.beat => {
                    tracing::debug!(error = %e, "dead-letter publish failed; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "dead-letter publish failed; the message will be redelivered");
                    return;
                }
            }
        }
        let _ = self.bus.ack_confirmed(delivery, AckKind::Term).await;
        self.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
        if let Some(hook) = &self.options.on_dead_letter {
            hook(delivery, &error);
        }
    }
}

/// Awaits the fetch in flight (never called without one).
async fn poll_fetch(fetching: &mut Option<Fetching>) -> Result<Vec<Delivery>> {
    match fetching {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The text of a panic's payload.
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a non-text panic payload".to_owned())
}

/// Unix nanoseconds of `time` (0 before 1970).
fn unix_ns(time: std::time::SystemTime) -> u128 {
    time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

pub(crate) fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What [`Bus::redrive`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedriveStats {
    /// Dead letters published to their origin subject again (and removed).
    pub republished: u64,
    /// Dead letters without the origin headers, left where they are.
    pub skipped: u64,
}

impl Bus {
    /// Republishes the dead letters stored in `dlq_stream` (those on
    /// subjects matching `filter`, default all) to their origin subjects,
    /// without the dead-letter headers, and deletes each from the DLQ once
    /// the origin stream acknowledged it. Each republish carries the msg id
    /// `redrive:<dlq stream>:<seq>:<unix ns>` (the letter's seq and stored
    /// time there), so a redrive cut short and run again stores no copy
    /// twice (inside the origin's duplicate window), and a letter of a DLQ
    /// stream deleted and created again (whose sequences start over) is
    /// never taken for an older one. A duplicate ack naming a different
    /// message leaves the letter in place with an error.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`] for `dlq_stream`; [`Error::InvalidSubject`] for
    /// a bad `filter`; [`Error::InvalidConfig`] when no stream captures a
    /// letter's origin subject any more ([`ConfigError::NoLongerCaptured`]),
    /// or when the origin answers a republish as a duplicate of a different
    /// message ([`ConfigError::RedriveIdInUse`]). The first failed republish
    /// or delete stops the redrive with its error, the letter left in
    /// place; run it again: nothing is stored twice.
    pub async fn redrive(
        &self,
        dlq_stream: impl AsRef<str>,
        filter: Option<&str>,
    ) -> Result<RedriveStats> {
        let dlq_stream = dlq_stream.as_ref();
        let mut options = crate::ReplayOptions::from_seq(1).stop_at_end();
        if let Some(f) = filter {
            options = options.filter(f);
        }
        let mut replay = self.replay(dlq_stream, options).await?;
        let mut stats = RedriveStats::default();
        while let Some(letter) = replay.next().await {
            let letter = letter?;
            let Some(origin) = letter.headers.get(DLQ_SUBJECT).map(str::to_owned) else {
                stats.skipped += 1;
                continue;
            };
            let mut m = Message::new(origin.clone(), letter.payload.clone());
            for (name, value) in letter.headers.iter() {
                if !name.starts_with("Durabus-Dlq-") && name != NATS_MSG_ID {
                    m.headers.append(name, value);
                }
            }
            let msg_id = format!(
                "redrive:{dlq_stream}:{}:{}",
                letter.seq,
                unix_ns(letter.time)
            );
            m = m.with_msg_id(msg_id.clone());
            let Some(ack) = self.publish_message(m).await? else {
                return Err(Error::invalid_config(ConfigError::NoLongerCaptured {
                    subject: origin,
                    consequence: format!("dead letter {} left in {dlq_stream}", letter.seq),
                }));
            };
            if ack.duplicate {
                // Ours (a redrive cut off before the delete) unless the
                // origin holds a different message under that seq; one
                // removed since (acked on a work queue, say) was ours.
                let same = match self.get_message(&ack.stream, ack.seq).await {
                    Ok(stored) => {
                        stored.subject == origin.as_str()
                            && stored.payload == letter.payload
                            && stored
                                .headers
                                .get(NATS_MSG_ID)
                                .is_none_or(|id| id == msg_id)
                    }
                    Err(Error::MessageNotFound { .. }) => true,
                    Err(e) => return Err(e),
                };
                if !same {
                    return Err(Error::invalid_config(ConfigError::RedriveIdInUse {
                        dlq_stream: dlq_stream.to_owned(),
                        letter_seq: letter.seq,
                        msg_id,
                        origin_stream: ack.stream.to_string(),
                        origin_seq: ack.seq,
                    }));
                }
            }
            self.delete_message(dlq_stream, letter.seq).await?;
            stats.republished += 1;
        }
        Ok(stats)
    }
}
