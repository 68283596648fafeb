//! [`Publisher`]: publishing with a subject prefix, retries with backoff
//! and a hook that sees every outcome and its latency.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use durabus_core::{backoff, Error, Message, PublishAck, Result, NATS_MSG_ID};

use crate::Bus;

/// What the `on_publish` hook is told.
#[derive(Debug)]
pub struct PublishEvent<'a> {
    /// The full subject published to.
    pub subject: &'a str,
    /// Attempts made (1 without retries).
    pub attempts: u32,
    /// From the first attempt to the outcome.
    pub latency: Duration,
    /// The outcome.
    pub result: &'a Result<Option<PublishAck>>,
}

type PublishHook = Arc<dyn Fn(&PublishEvent<'_>) + Send + Sync>;

/// A publishing handle over a [`Bus`]: `bus.publisher()`, then settings,
/// then [`Publisher::publish`]. Cheap to clone.
///
/// Retries are for connection failures only (timeouts, an unreachable
/// server, an unconfirmed ack, an open circuit), never for refusals such as
/// a wrong expected sequence. A message retried gets a msg id first (unless
/// it has one), so a retry after an unconfirmed ack stores it once.
///
/// ```no_run
/// # async fn example(bus: durabus::Bus) -> durabus::Result<()> {
/// use std::time::Duration;
/// let orders = bus
///     .publisher()
///     .subject_prefix("orders.")
///     .retries(3, Duration::from_millis(100))
///     .on_publish(|e| eprintln!("{} took {:?}", e.subject, e.latency));
/// orders.publish("eu.created", "order 1").await?;   // to orders.eu.created
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct Publisher {
    bus: Bus,
    prefix: String,
    retries: u32,
    backoff: Duration,
    on_publish: Option<PublishHook>,
    ids: Arc<AtomicU64>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("prefix", &self.prefix)
            .field("retries", &self.retries)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// A [`Publisher`] with no prefix, no retries and no hook.
    pub fn publisher(&self) -> Publisher {
        Publisher {
            bus: self.clone(),
            prefix: String::new(),
            retries: 0,
            backoff: Duration::from_millis(100),
            on_publish: None,
            ids: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Publisher {
    /// Put in front of every subject (e.g. `"orders."`).
    pub fn subject_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Up to `retries` more attempts after a connection failure, waiting
    /// `backoff`, then twice as long each time (with jitter).
    pub fn retries(mut self, retries: u32, backoff: Duration) -> Self {
        self.retries = retries;
        self.backoff = backoff;
        self
    }

    /// Called after every publish with its subject, attempts, latency and
    /// outcome.
    pub fn on_publish(mut self, f: impl Fn(&PublishEvent<'_>) + Send + Sync + 'static) -> Self {
        self.on_publish = Some(Arc::new(f));
        self
    }

    /// Publishes `payload` to the prefix followed by `subject`.
    pub async fn publish(
        &self,
        subject: impl AsRef<str>,
        payload: impl Into<Bytes>,
    ) -> Result<Option<PublishAck>> {
        self.publish_message(Message::new(subject.as_ref(), payload))
            .await
    }

    /// Publishes a message (its subject gets the prefix).
    pub async fn publish_message(&self, mut message: Message) -> Result<Option<PublishAck>> {
        if !self.prefix.is_empty() {
            message.subject = format!("{}{}", self.prefix, message.subject);
        }
        if self.retries > 0 && message.headers.get(NATS_MSG_ID).is_none() {
            message = message.with_msg_id(self.next_id());
        }
        let start = Instant::now();
        let mut attempts = 0u32;
        let result = loop {
            attempts += 1;
            let r = self.bus.publish_message(message.clone()).await;
            let retry = match &r {
                Err(e) => {
                    (e.is_connection_failure() || matches!(e, Error::CircuitOpen { .. }))
                        && attempts <= self.retries
                }
                Ok(_) => false,
            };
            if !retry {
                break r;
            }
            let wait = backoff::exponential(self.backoff, (attempts - 1).min(16), Duration::MAX);
            tokio::time::sleep(backoff::jittered(wait, 0.5)).await;
        };
        if let Some(hook) = &self.on_publish {
            hook(&PublishEvent {
                subject: &message.subject,
                attempts,
                latency: start.elapsed(),
                result: &result,
            });
        }
        result
    }

    /// A msg id unique to this publisher: time, process and a counter.
    fn next_id(&self) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let t = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("pub-{}-{t:x}-{n}", std::process::id())
    }
}
