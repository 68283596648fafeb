//! The consumer runner, written once over the backend's consumer primitives
//! (`fetch`, `ack`): at-least-once processing with a concurrency limit,
//! retries with backoff, dead letters and graceful shutdown.
//!
//! Every message ends in exactly one of: acknowledged (the handler
//! succeeded) or dead-lettered (published to the dead-letter subject, then
//! terminated). A redelivered message that was already dead-lettered (the
//! process died between the two steps) is terminated without running the
//! handler again.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use durabus_core::{AckKind, Delivery, Error, Message, Result, StreamConfig, NATS_MSG_ID};
use tokio::sync::{watch, Semaphore};
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
/// Header with the number of deliveries it had.
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
    dead_letter: DeadLetter,
    batch: usize,
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
            .field("dead_letter", &self.dead_letter)
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
            dead_letter: DeadLetter::Default,
            batch: 64,
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
    /// 30 s, attempts from the consumer's `max_deliver` (else 5), dead
    /// letters to `$DLQ.<stream>.<consumer>`.
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

    /// Attempts before a message is dead-lettered; default the consumer's
    /// `max_deliver`, else 5. Attempts are deliveries, as `max_deliver`
    /// counts them: a delivery lost with a killed process (running or
    /// still buffered) counts too, so a message that keeps killing its
    /// consumer ends as a dead letter ("attempts used up") instead of
    /// looping forever.
    pub fn max_attempts(mut self, n: u64) -> Self {
        self.max_attempts = Some(n.max(1));
        self
    }

    /// Where dead letters go.
    pub fn dead_letter(mut self, to: DeadLetter) -> Self {
        self.dead_letter = to;
        self
    }

    /// Deliveries fetched at once (the channel between fetching and
    /// handling holds as many).
    pub fn batch(mut self, n: usize) -> Self {
        self.batch = n.max(1);
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

/// What a consumer did, from [`ConsumerHandle::shutdown`].
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
/// come back after `ack_wait`); [`ConsumerHandle::shutdown`] stops it
/// gracefully.
#[derive(Debug)]
pub struct ConsumerHandle {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<Result<()>>>,
    counters: Arc<Counters>,
}

impl ConsumerHandle {
    /// The counters so far.
    pub fn stats(&self) -> ConsumeStats {
        self.counters.snapshot()
    }

    /// Stops fetching, lets handlers in flight finish within the deadline,
    /// naks what was taken but not handled, and returns the counters (or
    /// the error that stopped the consumer).
    pub async fn shutdown(mut self) -> Result<ConsumeStats> {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.await
                .map_err(|e| Error::internal(format!("consumer task failed: {e}")))??;
        }
        Ok(self.counters.snapshot())
    }
}

impl Drop for ConsumerHandle {
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
    ack_wait: Duration,
    dlq_subject: String,
    counters: Arc<Counters>,
}

impl Bus {
    /// Runs `handler` on every message of durable `consumer` of `stream`
    /// until [`ConsumerHandle::shutdown`]. See the module docs of
    /// `durabus::consume` for the guarantees.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`] or [`Error::ConsumerNotFound`]: the consumer
    /// must exist (create it with [`Bus::create_consumer`]); the errors of
    /// creating the dead-letter stream (see [`Bus::create_stream`]). What goes
    /// wrong later is counted in [`ConsumeStats`] and returned by
    /// [`ConsumerHandle::shutdown`].
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
        stream: &str,
        consumer: &str,
        options: ConsumeOptions,
        handler: H,
    ) -> Result<ConsumerHandle>
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let info = self.consumer_info(stream, consumer).await?;
        let max_attempts = options
            .max_attempts
            .or(info.config.max_deliver)
            .unwrap_or(5);
        let dlq_subject = self.ensure_dead_letters(stream, consumer, &options).await?;
        let counters = Arc::new(Counters::default());
        let runner = Arc::new(Runner {
            bus: self.clone(),
            stream: stream.to_owned(),
            consumer: consumer.to_owned(),
            options,
            handler,
            max_attempts,
            ack_wait: info.config.ack_wait,
            dlq_subject,
            counters: counters.clone(),
        });
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(runner.run(stopped));
        Ok(ConsumerHandle {
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
                    return Err(Error::invalid_config(
                        durabus_core::ConfigError::DeadLetterNotCaptured {
                            stream: dlq_stream.to_string(),
                            subject,
                        },
                    ));
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
    async fn run(self: Arc<Self>, mut stopped: watch::Receiver<bool>) -> Result<()> {
        let permits = Arc::new(Semaphore::new(self.options.concurrency));
        let mut workers = JoinSet::new();
        // Deliveries being handled, by stream seq: given back if stopped.
        let in_flight: Arc<std::sync::Mutex<std::collections::HashMap<u64, Delivery>>> =
            Arc::default();
        let mut taken: std::collections::VecDeque<Delivery> = Default::default();
        let mut failure = None;
        while !*stopped.borrow() {
            // A free handler first, then a fetch sized to the free ones:
            // nothing waits in memory while its ack_wait runs.
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => p,
                _ = stopped.changed() => break,
            };
            let Ok(permit) = permit else { break };
            if taken.is_empty() {
                let want = self.options.batch.min(permits.available_permits() + 1);
                let fetched = tokio::select! {
                    r = self.bus.fetch(&self.stream, &self.consumer, want, self.options.fetch_wait) => r,
                    _ = stopped.changed() => break,
                };
                match fetched {
                    Ok(d) => taken.extend(d),
                    Err(e)
                        if e.is_connection_failure() || matches!(e, Error::CircuitOpen { .. }) =>
                    {
                        tracing::debug!(error = %e, "consumer fetch failed; retrying");
                        tokio::select! {
                            () = tokio::time::sleep(Duration::from_millis(200)) => {}
                            _ = stopped.changed() => break,
                        }
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let Some(delivery) = taken.pop_front() else {
                continue;
            };
            let runner = self.clone();
            let seq = delivery.stream_seq();
            lock(&in_flight).insert(seq, delivery.clone());
            let registry = in_flight.clone();
            workers.spawn(async move {
                runner.handle(delivery).await;
                lock(&registry).remove(&seq);
                drop(permit);
            });
            while workers.try_join_next().is_some() {}
        }
        // Graceful shutdown: what was taken but not started goes back.
        for d in taken.drain(..) {
            self.counters.returned.fetch_add(1, Ordering::Relaxed);
            let _ = self.bus.ack(&d, AckKind::Nak(None)).await;
        }
        let deadline = tokio::time::Instant::now() + self.options.shutdown_deadline;
        while !workers.is_empty() {
            match tokio::time::timeout_at(deadline, workers.join_next()).await {
                Ok(_) => {}
                Err(_) => {
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
        }
        failure.map_or(Ok(()), Err)
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
            // Dead-lettered before, but the process stopped before the
            // term; the publish is deduplicated by its msg id.
            self.dead_letter(&delivery, "attempts used up").await;
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
                    self.dead_letter(&delivery, &reason).await;
                    return;
                }
                Outcome::Failed(e) => (e, None),
                Outcome::RetryLater(d) => ("retry later".to_owned(), d),
            };
            if attempt >= self.max_attempts {
                self.dead_letter(&delivery, &error).await;
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

    /// Runs the handler, sending in-progress heartbeats every ack_wait / 2,
    /// inside a `durabus.consume` span and the message's context (so what
    /// the handler publishes continues its trace).
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
        let work = crate::context::scope(context, async { (self.handler)(delivery.clone()).await });
        self.keep_alive(delivery, work.instrument(span)).await
    }

    /// Awaits `work`, telling the backend the delivery is in progress every
    /// half ack_wait.
    async fn keep_alive<T>(&self, delivery: &Delivery, work: impl Future<Output = T>) -> T {
        let beat = (self.ack_wait / 2).max(Duration::from_millis(10));
        tokio::pin!(work);
        let mut next = tokio::time::Instant::now() + beat;
        loop {
            tokio::select! {
                out = &mut work => return out,
                () = tokio::time::sleep_until(next) => {
                    let _ = self.bus.ack(delivery, AckKind::InProgress).await;
                    next += beat;
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
    async fn dead_letter(&self, delivery: &Delivery, error: &str) {
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
        letter = letter
            .with_header(DLQ_STREAM, self.stream.clone())
            .with_header(DLQ_CONSUMER, self.consumer.clone())
            .with_header(DLQ_SEQ, m.seq.to_string())
            .with_header(DLQ_SUBJECT, m.subject.clone())
            .with_header(DLQ_DELIVERIES, delivery.delivered().to_string())
            .with_header(DLQ_ERROR, error.clone())
            .with_msg_id(format!("dlq:{}:{}:{}", self.stream, self.consumer, m.seq));
        let started = Instant::now();
        loop {
            match self.bus.publish_message(letter.clone()).await {
                Ok(Some(_)) => break,
                Ok(None) => {
                    tracing::error!(subject = %self.dlq_subject, "no stream captures the dead-letter subject; the message is left unsettled");
                    return;
                }
                Err(e) if started.elapsed() < self.ack_wait / 2 => {
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

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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
    /// `redrive:<dlq stream>:<seq>`, so a redrive cut short and run again
    /// stores no copy twice (inside the origin's duplicate window).
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`] for `dlq_stream`; [`Error::InvalidSubject`] for
    /// a bad `filter`; [`Error::InvalidConfig`] when no stream captures a
    /// letter's origin subject any more. The first failed republish or
    /// delete stops the redrive with its error; run it again: nothing is
    /// stored twice.
    pub async fn redrive(&self, dlq_stream: &str, filter: Option<&str>) -> Result<RedriveStats> {
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
            let mut m = Message::new(origin, letter.payload.clone());
            for (name, value) in letter.headers.iter() {
                if !name.starts_with("Durabus-Dlq-") && name != NATS_MSG_ID {
                    m.headers.append(name, value);
                }
            }
            m = m.with_msg_id(format!("redrive:{dlq_stream}:{}", letter.seq));
            match self.publish_message(m).await? {
                Some(_) => {}
                None => {
                    return Err(Error::invalid_config(
                        durabus_core::ConfigError::NoLongerCaptured {
                            subject: letter
                                .headers
                                .get(DLQ_SUBJECT)
                                .unwrap_or_default()
                                .to_owned(),
                            consequence: format!("dead letter {} left in {dlq_stream}", letter.seq),
                        },
                    ))
                }
            }
            self.delete_message(dlq_stream, letter.seq).await?;
            stats.republished += 1;
        }
        Ok(stats)
    }
}
