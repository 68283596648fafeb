//! The L1 primitives every backend implements.
//!
//! L2 features (consumer runner, KV, request retries, typed subjects, ...) are
//! written once over this trait, so they work on every backend.

use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};

use crate::config::{StreamConfig, StreamInfo};
use crate::consumer::{AckKind, AckRef, ConsumerConfig, ConsumerInfo, Delivery};
use crate::error::Result;
use crate::message::{Message, PublishAck, StoredMessage};

/// Who publishes and subscribes, for subscriptions that must not receive
/// their own publisher's messages (NATS CONNECT `echo: false`): a hub
/// connection publishes with [`Backend::publish_batch_from`] and subscribes
/// with [`Backend::subscribe_from`] under one `Origin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Origin(u64);

impl Origin {
    /// An origin no other in this process has.
    pub fn new() -> Origin {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Origin(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for Origin {
    fn default() -> Origin {
        Origin::new()
    }
}

/// Which messages a purge removes. The default removes everything.
///
/// Fields combine as JetStream's purge request: `subject` restricts the purge
/// to messages on matching subjects; `keep` keeps the newest N (of the
/// matching subject, or of the stream); `up_to_seq` removes messages with a
/// sequence strictly below it. `keep` and `up_to_seq` are exclusive.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeRequest {
    /// Only messages whose subject matches this filter.
    pub subject: Option<String>,
    /// Keep this many of the newest messages.
    pub keep: Option<u64>,
    /// Remove messages with sequence below this one.
    pub up_to_seq: Option<u64>,
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayStart {
    /// From this sequence (1-based; 0 is an error). Sequences below the
    /// stream's first start at the first.
    Sequence(u64),
    /// From the first message stored at or after this time.
    Time(SystemTime),
    /// Only messages stored after the replay starts.
    New,
    /// The newest message of each subject (matching the filter) stored when
    /// the replay starts, in sequence order, then everything stored after:
    /// JetStream's `last_per_subject`, what a KV watch starts with.
    LastPerSubject,
}

/// Options of [`Backend::replay`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOptions {
    /// Where to start.
    pub start: ReplayStart,
    /// Only messages whose subject matches this filter.
    pub filter: Option<String>,
    /// Stop after the last message present when the replay started, instead
    /// of continuing live.
    pub stop_at_end: bool,
}

impl ReplayOptions {
    /// Replay everything from sequence `seq`, then continue live.
    pub fn from_seq(seq: u64) -> Self {
        Self {
            start: ReplayStart::Sequence(seq),
            filter: None,
            stop_at_end: false,
        }
    }

    /// Replay from time `t`, then continue live.
    pub fn from_time(t: SystemTime) -> Self {
        Self {
            start: ReplayStart::Time(t),
            filter: None,
            stop_at_end: false,
        }
    }

    /// Restrict to subjects matching `filter`.
    #[must_use]
    pub fn filter(mut self, filter: impl Into<String>) -> Self {
        self.filter = Some(filter.into());
        self
    }

    /// End the replay at the last message present when it started.
    #[must_use]
    pub fn stop_at_end(mut self) -> Self {
        self.stop_at_end = true;
        self
    }
}

/// A backend's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Establishing the first connection.
    Connecting,
    /// Usable.
    Connected,
    /// Lost, trying again.
    Reconnecting,
    /// Too many consecutive failures; calls fail fast until a probe succeeds.
    CircuitOpen,
    /// Closed by the application.
    Closed,
}

/// Something that happened to a connection, for monitoring.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A subscriber's buffer was full and messages were dropped for it.
    /// Sent once when a subscriber starts dropping, then at most once per
    /// second while it keeps dropping.
    SlowConsumer {
        /// The subscription's filter.
        filter: String,
        /// Messages dropped for it so far.
        dropped: u64,
    },
    /// The connection to the server is up (the first time, or again after
    /// a disconnect).
    Connected,
    /// The connection to the server was lost; the backend reconnects.
    Disconnected,
    /// The backend is about to make reconnect attempt `attempt` (1-based,
    /// consecutive) after waiting `delay`. Attempt `n > 1` means `n - 1`
    /// attempts have failed.
    Reconnecting {
        /// The attempt about to be made.
        attempt: u64,
        /// The wait before it (backoff with jitter).
        delay: Duration,
    },
    /// The server entered lame duck mode: it will shut down soon.
    LameDuck,
    /// The backend gave up on the connection for good (e.g. its reconnect
    /// limit was reached); every later call fails.
    ConnectionClosed {
        /// Why.
        reason: String,
    },
    /// The server reported an error on the connection.
    ServerError {
        /// The server's text (no credentials).
        message: String,
    },
    /// A consumer runner (`Bus::consume`) stopped on its own, not by its
    /// handle's shutdown: e.g. its consumer was deleted under it. Its
    /// handle's `closed()` yields the error.
    ConsumerStopped {
        /// The stream.
        stream: String,
        /// The durable consumer.
        consumer: String,
        /// Why it stopped.
        error: String,
    },
}

/// A live core subscription: messages published after it was made, on
/// subjects matching its filter.
///
/// Each subscription has a bounded buffer. When the subscriber falls behind
/// and the buffer is full, new messages are dropped for it and counted in
/// [`Subscription::dropped`] (the slow-consumer signal); memory never grows
/// with the backlog. Dropping the subscription unsubscribes.
pub struct Subscription {
    filter: String,
    inner: Messages,
    dropped: Arc<AtomicU64>,
}

/// A subscription's messages: the subscriber's own, or one copy shared by
/// every subscriber a message reached (the embedded router's).
enum Messages {
    Owned(BoxStream<'static, Message>),
    Shared(BoxStream<'static, Arc<Message>>),
}

impl Subscription {
    /// Wraps a backend's message stream. `dropped` is the counter the backend
    /// increments for each message it could not deliver to a full buffer.
    pub fn new(
        filter: impl Into<String>,
        inner: BoxStream<'static, Message>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        Self {
            filter: filter.into(),
            inner: Messages::Owned(inner),
            dropped,
        }
    }

    /// As [`Subscription::new`], for a backend that hands every subscriber
    /// the same copy of a message: it is copied only for a subscriber that
    /// takes it as its own ([`Subscription::next`]), never for one that
    /// reads it shared ([`Subscription::poll_next_shared`]).
    pub fn new_shared(
        filter: impl Into<String>,
        inner: BoxStream<'static, Arc<Message>>,
        dropped: Arc<AtomicU64>,
    ) -> Self {
        Self {
            filter: filter.into(),
            inner: Messages::Shared(inner),
            dropped,
        }
    }

    /// The next message, possibly shared with other subscribers: no copy
    /// is made (a hub writes it to each of its clients from one copy).
    pub fn poll_next_shared(&mut self, cx: &mut Context<'_>) -> Poll<Option<Arc<Message>>> {
        match &mut self.inner {
            Messages::Owned(s) => s.poll_next_unpin(cx).map(|m| m.map(Arc::new)),
            Messages::Shared(s) => s.poll_next_unpin(cx),
        }
    }

    /// The next message; `None` once the backend is closed.
    pub async fn next(&mut self) -> Option<Message> {
        StreamExt::next(self).await
    }

    /// The filter this subscription was made with.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// Messages dropped because this subscriber's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Stream for Subscription {
    type Item = Message;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        match &mut self.inner {
            Messages::Owned(s) => s.poll_next_unpin(cx),
            Messages::Shared(s) => s.poll_next_unpin(cx).map(|m| m.map(Arc::unwrap_or_clone)),
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter)
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

/// An ordered replay of a stream: messages in sequence order with their
/// authoritative sequences (gaps after deletes, purges or expiry show).
///
/// Cancel-safe: dropping the future of one [`Replay::next`] call (for example
/// in a `select!` or on a timeout) loses nothing; the next call continues.
pub struct Replay {
    inner: BoxStream<'static, Result<StoredMessage>>,
}

impl Replay {
    /// Wraps a backend's ordered stream of messages.
    pub fn new(inner: BoxStream<'static, Result<StoredMessage>>) -> Self {
        Self { inner }
    }

    /// The next message; `None` when a bounded replay reached its end or the
    /// backend closed. An error ends the replay, except one that reports
    /// messages a damaged record cost ([`crate::Error::is_lost_messages`]):
    /// the replay goes on with the next intact message.
    pub async fn next(&mut self) -> Option<Result<StoredMessage>> {
        self.inner.next().await
    }
}

impl Stream for Replay {
    type Item = Result<StoredMessage>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl fmt::Debug for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay").finish_non_exhaustive()
    }
}

/// The primitives a backend provides: layer L1 of `docs/architecture.md`.
///
/// Every method returns [`crate::Error::Closed`] after [`Backend::close`].
/// The consumer primitives have default bodies that answer
/// [`crate::Error::Unsupported`], so a backend can add them later.
#[async_trait::async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Creates a stream if absent. If a stream of that name exists it is
    /// returned unchanged when the configuration is equal, and
    /// [`crate::Error::StreamNameInUse`] otherwise: never a silent update.
    async fn create_stream(&self, config: StreamConfig) -> Result<StreamInfo>;

    /// Changes an existing stream's configuration.
    async fn update_stream(&self, config: StreamConfig) -> Result<StreamInfo>;

    /// Configuration and state of a stream.
    async fn stream_info(&self, name: &str) -> Result<StreamInfo>;

    /// All streams, ordered by name.
    async fn list_streams(&self) -> Result<Vec<StreamInfo>>;

    /// Deletes a stream and everything it stores.
    async fn delete_stream(&self, name: &str) -> Result<()>;

    /// Removes messages; returns how many were removed.
    async fn purge_stream(&self, name: &str, request: PurgeRequest) -> Result<u64>;

    /// Publishes a message. When a stream captures the subject the message is
    /// stored and the ack returned; otherwise it reaches live subscribers only
    /// and `None` is returned. Live subscribers receive it in both cases.
    async fn publish(&self, message: Message) -> Result<Option<PublishAck>>;

    /// Publishes many messages; results are in input order. Backends pipeline
    /// or batch them, so this is the fast path for bulk writes.
    async fn publish_batch(
        &self,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Option<PublishAck>>>>;

    /// Subscribes to live messages on subjects matching `filter`; with a
    /// queue group, each message goes to one member of the group.
    async fn subscribe(&self, filter: &str, queue_group: Option<&str>) -> Result<Subscription>;

    /// Delivers `message` to the live subscribers of the literal subject
    /// `to`, with its own subject unchanged, storing nothing: how a server
    /// pushes a stream's message to a consumer's deliver subject or answers
    /// an inbox. Returns how many subscribers got it. Backends that cannot
    /// route on another subject than a message's own (the default) publish
    /// a copy on `to` and report one.
    async fn deliver_to(&self, to: &str, message: Message) -> Result<usize> {
        let mut message = message;
        message.subject = to.to_owned();
        self.publish(message).await.map(|_| 1)
    }

    /// As [`Backend::publish_batch`], published by `origin`: subscriptions
    /// made with [`Backend::subscribe_from`] under the same origin do not
    /// receive these messages. Backends that cannot tell publishers apart
    /// (the default) deliver them as `publish_batch` does; the embedded
    /// store can.
    async fn publish_batch_from(
        &self,
        origin: Origin,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Option<PublishAck>>>> {
        let _ = origin;
        self.publish_batch(messages).await
    }

    /// As [`Backend::subscribe`], for a subscriber that does not want the
    /// messages `origin` publishes (see [`Backend::publish_batch_from`]).
    async fn subscribe_from(
        &self,
        origin: Origin,
        filter: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription> {
        let _ = origin;
        self.subscribe(filter, queue_group).await
    }

    /// Sends a request and waits for the first reply.
    /// [`crate::Error::NoResponders`] when nobody listens on the subject.
    async fn request(&self, message: Message, timeout: Duration) -> Result<Message>;

    /// The message at `seq`.
    async fn get_message(&self, stream: &str, seq: u64) -> Result<StoredMessage>;

    /// The newest message on `subject` (a literal subject).
    async fn get_last_message(&self, stream: &str, subject: &str) -> Result<StoredMessage>;

    /// Deletes the message at `seq`.
    async fn delete_message(&self, stream: &str, seq: u64) -> Result<()>;

    /// An ordered replay of a stream.
    async fn replay(&self, stream: &str, options: ReplayOptions) -> Result<Replay>;

    /// Creates a consumer on `stream` if absent (durable: by its name;
    /// ephemeral: always new). An existing durable with an equal
    /// configuration is returned unchanged; a different one is
    /// [`crate::Error::ConsumerNameInUse`]: never a silent update.
    async fn create_consumer(&self, stream: &str, config: ConsumerConfig) -> Result<ConsumerInfo> {
        let _ = (stream, config);
        Err(unsupported_consumers())
    }

    /// Changes a durable consumer's configuration; fields JetStream keeps
    /// fixed (deliver and ack policy) are refused with
    /// [`crate::Error::InvalidConfig`].
    async fn update_consumer(&self, stream: &str, config: ConsumerConfig) -> Result<ConsumerInfo> {
        let _ = (stream, config);
        Err(unsupported_consumers())
    }

    /// A consumer's configuration and state;
    /// [`crate::Error::ConsumerNotFound`] if there is none of that name.
    async fn consumer_info(&self, stream: &str, name: &str) -> Result<ConsumerInfo> {
        let _ = (stream, name);
        Err(unsupported_consumers())
    }

    /// The consumers of a stream, ordered by name.
    async fn list_consumers(&self, stream: &str) -> Result<Vec<ConsumerInfo>> {
        let _ = stream;
        Err(unsupported_consumers())
    }

    /// Deletes a consumer and its state.
    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<()> {
        let _ = (stream, name);
        Err(unsupported_consumers())
    }

    /// Up to `batch` deliveries: messages due for (re)delivery, waiting up
    /// to `expires` for the first if none is due. An empty answer after
    /// `expires` is not an error. Delivery pauses while `max_ack_pending`
    /// deliveries are unacknowledged.
    async fn fetch(
        &self,
        stream: &str,
        consumer: &str,
        batch: usize,
        expires: Duration,
    ) -> Result<Vec<Delivery>> {
        let _ = (stream, consumer, batch, expires);
        Err(unsupported_consumers())
    }

    /// Settles a delivery. Settling one that is already acknowledged or
    /// terminated is a no-op, not an error.
    ///
    /// As a JetStream client's ack, this returns once the ack is sent, not
    /// when the server confirms it: on a networked backend an ack lost with
    /// the connection leaves the message to be delivered again after
    /// `ack_wait` (at-least-once), and an ack for a deleted consumer is
    /// dropped. The embedded engine applies it before returning. Use
    /// [`Backend::ack_confirmed`] to wait for the server.
    async fn ack(&self, delivery: &AckRef, kind: AckKind) -> Result<()> {
        let _ = (delivery, kind);
        Err(unsupported_consumers())
    }

    /// Settles a delivery as [`Backend::ack`] does, returning once the
    /// server has applied it (JetStream's double ack): a later
    /// [`Backend::consumer_info`] shows it, and an unknown consumer is
    /// [`crate::Error::ConsumerNotFound`]. Backends whose `ack` is applied
    /// before it returns keep this default.
    async fn ack_confirmed(&self, delivery: &AckRef, kind: AckKind) -> Result<()> {
        self.ack(delivery, kind).await
    }

    /// Makes everything acknowledged so far durable and releases resources.
    /// Idempotent; every later call returns [`crate::Error::Closed`].
    async fn close(&self) -> Result<()>;

    /// A round trip to the server (for networked backends, one request that
    /// the storage service answers); the time it took. Embedded backends
    /// answer at once.
    async fn ping(&self) -> Result<Duration>;

    /// The connection's state.
    fn status(&self) -> ConnectionStatus;

    /// Whether a core publish to the literal `subject` would reach a live
    /// subscriber now: a hub answers a request nobody listens to with
    /// nats-server's no-responders status. Backends that cannot tell answer
    /// `true`.
    fn has_subscribers(&self, subject: &str) -> bool {
        let _ = subject;
        true
    }

    /// Monitoring events (slow consumers, ...), if this backend reports any.
    fn events(&self) -> Option<tokio::sync::broadcast::Receiver<Event>> {
        None
    }

    /// Streams and durable consumers this backend could not open (damaged
    /// files of the embedded engine): the rest works, these refuse every
    /// operation with `Error::StreamUnavailable` / `Error::ConsumerUnavailable`.
    /// Empty for backends that have none.
    fn unavailable(&self) -> Vec<Unavailable> {
        Vec::new()
    }
}

/// A stream, or one durable consumer of a stream, that could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Unavailable {
    /// The stream.
    pub stream: String,
    /// The consumer, when only it is unavailable (the stream works).
    pub consumer: Option<String>,
    /// What failed, naming the file.
    pub reason: String,
}

impl Unavailable {
    /// A stream or consumer that could not be opened, and why.
    pub fn new(
        stream: impl Into<String>,
        consumer: Option<String>,
        reason: impl Into<String>,
    ) -> Self {
        Unavailable {
            stream: stream.into(),
            consumer,
            reason: reason.into(),
        }
    }
}

fn unsupported_consumers() -> crate::Error {
    crate::Error::Unsupported("durable consumers are not implemented by this backend yet".into())
}
