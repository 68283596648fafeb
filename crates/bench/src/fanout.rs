//! Core NATS pub/sub fan-out (no JetStream), the hub comparison's fifth
//! row: one publisher and `subscribers` subscribers, each on a connection of
//! its own, on one subject. The publisher sends `n` messages as fast as
//! async-nats takes them (`client.publish`, then one `flush`); the time runs
//! from the first publish until the last subscriber got its last message.
//! The rate counts deliveries (each message `subscribers` times). A
//! subscriber that hears nothing for [`IDLE`] stops: what it missed is
//! reported as dropped, not waited for.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use bytes::Bytes;
use futures::StreamExt as _;

/// The workload id of the fan-out rows.
pub(crate) const WORKLOAD: &str = "pubsub";

/// How long a subscriber waits for the next message before it counts the
/// rest as dropped.
const IDLE: Duration = Duration::from_secs(2);

/// async-nats' default subscription buffer, in messages.
const MIN_BUFFERED: usize = 64 * 1024;

/// The most messages a fan-out subscriber buffers.
const MAX_BUFFERED: usize = 4 * 1024 * 1024;

/// The row's name for `subscribers` subscribers.
pub(crate) fn name(subscribers: usize) -> String {
    format!("core fan-out, 1 publisher -> {subscribers} subscribers")
}

/// One fan-out turn: deliveries made and expected, and the time taken.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Outcome {
    /// Messages received, summed over the subscribers.
    pub(crate) delivered: u64,
    /// Messages published times subscribers.
    pub(crate) expected: u64,
    /// From the first publish to the last delivery.
    pub(crate) elapsed: Duration,
}

impl Outcome {
    /// Adds another turn.
    pub(crate) fn add(&mut self, other: Outcome) {
        self.delivered += other.delivered;
        self.expected += other.expected;
        self.elapsed += other.elapsed;
    }
}

/// The publisher's and the subscribers' connections to one server.
pub(crate) struct Fanout {
    publisher: async_nats::Client,
    subscribers: Vec<async_nats::Client>,
}

/// A connection named `name` to `url`, whose subscriptions buffer up to
/// `capacity` messages before async-nats drops any.
async fn connect(url: &str, name: &str, capacity: usize) -> anyhow::Result<async_nats::Client> {
    async_nats::ConnectOptions::new()
        .name(name)
        .subscription_capacity(capacity)
        .connect(url)
        .await
        .with_context(|| format!("cannot connect to {}", durabus::redact(url)))
}

impl Fanout {
    /// Connects the publisher and `subscribers` subscribers to `url`, for
    /// turns of up to `per_turn` messages: a subscriber buffers a whole turn
    /// (up to [`MAX_BUFFERED`]), so what is lost is lost by the server, not
    /// by a client task that was not scheduled in time.
    pub(crate) async fn connect(
        url: &str,
        subscribers: usize,
        per_turn: u64,
    ) -> anyhow::Result<Self> {
        let capacity = usize::try_from(per_turn)
            .unwrap_or(MAX_BUFFERED)
            .clamp(MIN_BUFFERED, MAX_BUFFERED);
        let publisher = connect(url, "durabus-bench-fanout-pub", MIN_BUFFERED).await?;
        let mut subs = Vec::with_capacity(subscribers);
        for _ in 0..subscribers {
            subs.push(connect(url, "durabus-bench-fanout-sub", capacity).await?);
        }
        Ok(Self {
            publisher,
            subscribers: subs,
        })
    }

    /// Publishes `n` messages of `payload` on `subject` (which nothing else
    /// uses) and waits until every subscriber got them, or went idle.
    pub(crate) async fn run(
        &self,
        subject: &str,
        payload: &Bytes,
        n: u64,
    ) -> anyhow::Result<Outcome> {
        let mut subscriptions = Vec::with_capacity(self.subscribers.len());
        for client in &self.subscribers {
            let sub = client
                .subscribe(subject.to_owned())
                .await
                .with_context(|| format!("cannot subscribe to {subject}"))?;
            subscriptions.push(sub);
        }
        // The server has every SUB once it answered each connection's PING.
        for client in &self.subscribers {
            client
                .flush()
                .await
                .context("cannot flush a subscriber's connection")?;
        }
        let start = Instant::now();
        let receivers: Vec<_> = subscriptions
            .into_iter()
            .map(|mut sub| {
                tokio::spawn(async move {
                    let (mut count, mut last) = (0u64, None);
                    while count < n {
                        match tokio::time::timeout(IDLE, sub.next()).await {
                            Ok(Some(_)) => {
                                count += 1;
                                last = Some(Instant::now());
                            }
                            Ok(None) | Err(_) => break,
                        }
                    }
                    let _ = sub.unsubscribe().await;
                    (count, last)
                })
            })
            .collect();
        let published = async {
            for i in 1..=n {
                self.publisher
                    .publish(subject.to_owned(), payload.clone())
                    .await
                    .with_context(|| format!("core publish {i} of {n} failed"))?;
            }
            self.publisher
                .flush()
                .await
                .context("cannot flush the publisher")
        }
        .await;
        let mut outcome = Outcome {
            expected: n * self.subscribers.len() as u64,
            ..Outcome::default()
        };
        let mut end = start;
        for receiver in receivers {
            let (count, last) = receiver.await.context("a subscriber task panicked")?;
            outcome.delivered += count;
            end = end.max(last.unwrap_or(start));
        }
        published?;
        outcome.elapsed = end - start;
        Ok(outcome)
    }

    /// Closes every connection.
    pub(crate) async fn close(self) {
        let _ = self.publisher.drain().await;
        for client in self.subscribers {
            let _ = client.drain().await;
        }
    }
}
