//! durabus: durable publish/subscribe for Rust with JetStream semantics.
//!
//! One API, wherever the messages live:
//!
//! | URL | backend |
//! |---|---|
//! | `file:./data` (the default) | embedded file-backed log, in-process |
//! | `memory:` | the same engine in memory, for tests |
//! | `nats://host:4222` | NATS JetStream (feature `nats`, on by default) |
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> durabus::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("file:{}", dir.path().display());
//! let bus = durabus::connect(&url).await?;   // e.g. "file:./data"
//! bus.create_stream(durabus::StreamConfig::new("ORDERS").subjects(["orders.>"])).await?;
//! let orders = bus.stream("ORDERS");             // a handle: no I/O
//! let ack = orders.publish("orders.eu.created", "order 1").await?;
//! assert_eq!(ack.seq, 1);
//! let msg = orders.get_message(1).await?;
//! assert_eq!(&msg.payload[..], b"order 1");
//! bus.close().await?;
//! # Ok(()) }
//! ```
//!
//! # Handles and flat methods
//!
//! As async-nats does, [`Bus::stream`] gives a [`StreamHandle`] (info,
//! purge, get, delete, publishes that must land in the stream, consumers)
//! and [`StreamHandle::consumer`] a [`ConsumerHandle`] (`fetch`,
//! [`messages`](ConsumerHandle::messages), a `futures::Stream` of
//! deliveries that settle themselves with `ack`, `nak`, `term` and
//! `in_progress`). The flat `Bus` methods taking the names
//! ([`Bus::stream_info`], [`Bus::fetch`], [`Bus::ack`], ...) do the same.
//!
//! [`Bus::publish`] is core-or-captured: `Ok(None)` when no stream captures
//! the subject. [`Bus::publish_stored`] and [`StreamHandle::publish`] must
//! store: a subject no stream captures is [`Error::NotCaptured`].
//!
//! Names, subjects and keys are taken as `impl AsRef<str>`, or
//! `impl Into<String>` where they are kept; the setter of every limit of a
//! configuration takes a value or `None` for unlimited
//! (`ConsumerConfig::max_deliver(5)`, `.max_ack_pending(None)`).
//!
//! # How the crate is cut
//!
//! [`Bus`] (this file) is the facade over one [`Backend`]. Each feature
//! written once over the backend primitives is a module: [`consume`]
//! (runner, retries, dead letters), [`handle`] (stream and consumer
//! handles), [`kv`], [`request`], [`typed`], [`room`] and the
//! [`Publisher`]; `connect`, `url` and `supervise` turn a URL into a
//! (supervised) backend; [`trace`], [`context`] and `w3c` carry trace
//! context. Imports between modules point one way, never in a circle:
//! `handle` -> `consume`, `kv` -> `typed` -> `consume`, `request` -> `context` -> `w3c`;
//! `connect` -> `supervise`, `trace`, `url`; `trace` -> `context`, `w3c`.

mod connect;
pub mod consume;
pub mod context;
/// Check function of the `url` fuzz target (`fuzz/`); not a stable API.
#[doc(hidden)]
pub mod fuzzing;
pub mod handle;
pub mod kv;
mod publisher;
pub mod request;
pub mod room;
#[cfg(feature = "nats")]
pub mod share;
mod supervise;
pub mod trace;
pub mod typed;
mod url;
mod w3c;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tracing::field::{display, Empty};
use tracing::Instrument as _;

pub use connect::ConnectOptions;
pub use consume::{
    ConsumeOptions, ConsumeStats, DeadLetter, Outcome, RedriveStats, RetryPolicy, RunningConsumer,
};
pub use durabus_core::{
    sanitize, subject, validate_consumer_name, validate_stream_name, ArgumentError, Backend,
    ByteString, ConfigError, ConnectionStatus, DiscardPolicy, Error, Event, HeaderMap, Message,
    PublishAck, PurgeRequest, Replay, ReplayOptions, ReplayStart, Result, RetentionPolicy,
    StorageType, StoredMessage, StreamConfig, StreamInfo, StreamState, Subscription, Unavailable,
    DEFAULT_DUPLICATE_WINDOW, MAX_CONSUMER_NAME_LEN, MAX_STREAM_NAME_LEN,
    NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_EXPECTED_STREAM,
    NATS_MSG_ID, NATS_ROLLUP,
};
pub use durabus_core::{
    AckKind, AckPolicy, AckRef, ConsumerConfig, ConsumerInfo, DeliverPolicy, Delivery,
    SequencePair, DEFAULT_ACK_WAIT, DEFAULT_INACTIVE_THRESHOLD, DEFAULT_MAX_ACK_PENDING,
};
#[cfg(feature = "nats")]
pub use durabus_nats::{NatsAuth, NatsOptions, NatsTls, LOG_DIRECTIVE};
pub use handle::{AckableDelivery, ConsumerHandle, Messages, StreamHandle};
pub use kv::{Kv, KvConfig, MAX_BUCKET_NAME_LEN};
pub use publisher::{PublishEvent, Publisher};
pub use request::{
    Reply, ReplyError, RequestManyOptions, RequestOptions, Responder, ResponderStats, RetryOn,
};
pub use supervise::{
    Callback, Callbacks, Readiness, Stats, StatusCallback, Supervised, SupervisorConfig,
};
pub use trace::{MessageContext, Propagation};
pub use url::{parse_url, redact, BackendUrl, DEFAULT_URL};

/// The embedded engine, for direct use: open a [`Store`](embedded::Store)
/// with [`Options`](embedded::Options) and read what recovery found, dump a
/// data directory's records or check its files without opening it.
///
/// The storage trait the engine writes through (for crash and fault
/// injection in tests) is not here: it is `durabus_log`'s, for the test
/// crates that need it.
pub mod embedded {
    pub use durabus_log::{
        check_files, check_store, dump, dump_with_progress, repair, repair_with_progress,
        segment_bytes, DumpRecord, Durability, FileProblem, Options, Progress, RecoveryReport,
        RewrittenSegment, Store, StreamRepair, TornTail, FORMAT_VERSION,
    };
}

/// Connects to the backend named by `url` (see the crate docs for the forms)
/// with default options; [`ConnectOptions`] sets credentials, TLS,
/// reconnect and circuit-breaker settings and callbacks.
///
/// `file:` URLs take query options: `durability=always|none|periodic:<duration>`
/// (e.g. `periodic:100ms`), `segment_size=<bytes>`, `subscriber_buffer=<n>`,
/// `read_only=true|false` (open without writing anything: `Options::read_only`).
/// `nats://` URLs take theirs as listed at `NatsOptions::apply_url`.
pub async fn connect(url: &str) -> Result<Bus> {
    ConnectOptions::new().connect(url).await
}

/// A handle to one backend. Cheap to clone; all clones share the connection.
///
/// # Errors
///
/// Besides the errors each method lists, any call can fail with
/// [`Error::Closed`] once the bus is closed; on `nats://` with
/// [`Error::Unreachable`], [`Error::Timeout`], [`Error::CircuitOpen`] or
/// [`Error::Unavailable`] while the server cannot be reached; on `file:`
/// with [`Error::Io`] when the disk fails and [`Error::Poisoned`] after a
/// failed fsync, until the store is reopened.
#[derive(Clone)]
pub struct Bus {
    backend: Arc<dyn Backend>,
    /// Present for networked backends.
    supervisor: Option<Arc<Supervised>>,
    /// What publishes are stamped with (`trace`).
    stamp: trace::Stamp,
    /// Events of the facade (a consumer runner that stopped), merged with
    /// the backend's by [`Bus::events`].
    events: Arc<FacadeEvents>,
    /// The store's share with other processes, when this bus shares it.
    #[cfg(feature = "nats")]
    sharing: Option<Arc<share::Sharing>>,
}

/// The facade's event channel, shared by every clone of a [`Bus`].
struct FacadeEvents {
    tx: tokio::sync::broadcast::Sender<Event>,
    /// Whether the backend's events are forwarded into `tx` yet.
    forwarding: std::sync::Mutex<bool>,
}

impl Default for FacadeEvents {
    fn default() -> Self {
        FacadeEvents {
            tx: tokio::sync::broadcast::channel(1024).0,
            forwarding: std::sync::Mutex::new(false),
        }
    }
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus")
            .field("status", &self.backend.status())
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// Connects to the backend named by `url`. See [`connect`].
    ///
    /// # Errors
    ///
    /// As [`connect`].
    pub async fn connect(url: &str) -> Result<Bus> {
        connect(url).await
    }

    /// A bus over a supervised backend.
    fn supervised(supervisor: Arc<Supervised>) -> Bus {
        Bus {
            backend: supervisor.clone(),
            supervisor: Some(supervisor),
            stamp: trace::Stamp::default(),
            events: Arc::default(),
            #[cfg(feature = "nats")]
            sharing: None,
        }
    }

    /// Wraps any backend, unsupervised (see [`ConnectOptions::supervise`]).
    pub fn from_backend(backend: Arc<dyn Backend>) -> Bus {
        Bus {
            backend,
            supervisor: None,
            stamp: trace::Stamp::default(),
            events: Arc::default(),
            #[cfg(feature = "nats")]
            sharing: None,
        }
    }

    /// This bus, sharing its store until closed.
    #[cfg(feature = "nats")]
    fn with_sharing(mut self, sharing: share::Sharing) -> Bus {
        self.sharing = Some(Arc::new(sharing));
        self
    }

    /// Whether this bus shares its `file:` store with other local
    /// processes (see [`ConnectOptions::share`]).
    pub fn is_shared(&self) -> bool {
        #[cfg(feature = "nats")]
        return self.sharing.is_some();
        #[cfg(not(feature = "nats"))]
        false
    }

    /// This handle, publishing as service `name` (the [`trace::SERVICE`]
    /// header) unless the [`context::Context`] names another. Other clones
    /// keep their own setting.
    #[must_use]
    pub fn with_service(mut self, name: impl Into<String>) -> Bus {
        self.stamp.service = Some(Arc::from(name.into()));
        self
    }

    /// This handle, stamping trace, correlation and service headers on
    /// publish or not (see [`trace`]). Other clones keep their own setting.
    #[must_use]
    pub fn with_propagation(mut self, propagation: Propagation) -> Bus {
        self.stamp.propagation = propagation;
        self
    }

    /// The service name this handle publishes as.
    pub fn service(&self) -> Option<&str> {
        self.stamp.service.as_deref()
    }

    /// Stamps messages with the trace, correlation and service headers
    /// (the rule in [`trace`]), as every `Bus` publish does; for L2 code
    /// that calls the backend directly. The trace id of the first message.
    pub(crate) fn stamp(&self, messages: &mut [Message]) -> Option<trace::TraceId> {
        self.stamp.apply(messages)
    }

    /// The backend behind this handle.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Creates a stream if absent; returns an existing equal one unchanged.
    /// A different configuration under the same name is an error: use
    /// [`Bus::update_stream`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`], [`Error::InvalidSubject`] or [`Error::InvalidConfig`]
    /// for a configuration the backend refuses, [`Error::InvalidArgument`]
    /// ([`ArgumentError::NameTooLong`]) for a name over
    /// [`MAX_STREAM_NAME_LEN`] (225) bytes; [`Error::StreamNameInUse`] when
    /// a different stream has the name; [`Error::SubjectsOverlap`] when another
    /// stream captures one of its subjects.
    pub async fn create_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        self.backend.create_stream(config).await
    }

    /// Changes an existing stream's configuration.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::InvalidConfig`] for a change the
    /// backend cannot make (a different storage type or retention, for one);
    /// [`Error::SubjectsOverlap`] as for [`Bus::create_stream`].
    pub async fn update_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        self.backend.update_stream(config).await
    }

    /// Configuration and state of a stream.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`].
    pub async fn stream_info(&self, name: impl AsRef<str>) -> Result<StreamInfo> {
        self.backend.stream_info(name.as_ref()).await
    }

    /// All streams, ordered by name.
    ///
    /// # Errors
    ///
    /// Only the errors every call can return (see [`Bus`]).
    pub async fn list_streams(&self) -> Result<Vec<StreamInfo>> {
        self.backend.list_streams().await
    }

    /// Deletes a stream and its messages.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`].
    pub async fn delete_stream(&self, name: impl AsRef<str>) -> Result<()> {
        self.backend.delete_stream(name.as_ref()).await
    }

    /// Removes messages from a stream; returns how many.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::Denied`] when the stream denies purge;
    /// [`Error::InvalidSubject`] for a bad subject filter.
    pub async fn purge_stream(&self, name: impl AsRef<str>, request: PurgeRequest) -> Result<u64> {
        self.backend.purge_stream(name.as_ref(), request).await
    }

    /// Publishes `payload` to `subject`. `Some(ack)` when a stream stored it,
    /// `None` when no stream captures the subject (live subscribers only);
    /// [`Bus::publish_stored`] (or [`StreamHandle::publish`]) returns the
    /// ack alone and makes `None` an [`Error::NotCaptured`].
    /// The message gets trace, correlation and service headers (see
    /// [`trace`]).
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSubject`]; [`Error::MaxPayloadExceeded`]; [`Error::StreamFull`]
    /// when the stream's discard policy is `new`; [`Error::AckUnknown`] on
    /// `nats://` when the ack was lost (the message may be stored).
    pub async fn publish(
        &self,
        subject: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Result<Option<PublishAck>> {
        self.publish_message(Message::new(subject, payload)).await
    }

    /// Publishes a message with headers (msg id, expectations, ...), adding
    /// trace, correlation and service headers it lacks (see [`trace`]).
    ///
    /// # Errors
    ///
    /// As [`Bus::publish`], and for the expectations a message carries:
    /// [`Error::WrongLastSequence`] and [`Error::WrongStream`]. A header NATS
    /// cannot carry (see [`HeaderMap::validate`]) is [`Error::InvalidArgument`]
    /// with [`ArgumentError::HeaderName`] or [`ArgumentError::HeaderValue`],
    /// on every backend, before anything is stored or sent.
    pub async fn publish_message(&self, mut message: Message) -> Result<Option<PublishAck>> {
        let trace_id = self.stamp(std::slice::from_mut(&mut message));
        let span = tracing::debug_span!(
            "durabus.publish",
            subject = %message.subject,
            trace_id = Empty,
            stream = Empty,
            seq = Empty
        );
        if span.is_disabled() {
            return self.backend.publish(message).await;
        }
        if let Some(id) = trace_id {
            span.record("trace_id", display(id));
        }
        let result = self.backend.publish(message).instrument(span.clone()).await;
        if let Ok(Some(ack)) = &result {
            span.record("stream", &*ack.stream);
            span.record("seq", ack.seq);
        }
        result
    }

    /// Publishes many messages at once; results in input order. Messages
    /// without a `traceparent` all get the same one: one batch is one
    /// producer span (see [`trace`]).
    ///
    /// # Errors
    ///
    /// The outer result fails as a whole only for the errors every call can
    /// return (see [`Bus`]); each message's own failure, as in
    /// [`Bus::publish_message`], is its entry in the list.
    pub async fn publish_batch(
        &self,
        mut messages: Vec<Message>,
    ) -> Result<Vec<Result<Option<PublishAck>>>> {
        let trace_id = self.stamp(&mut messages);
        let span = tracing::debug_span!(
            "durabus.publish_batch",
            count = messages.len(),
            trace_id = Empty
        );
        if span.is_disabled() {
            return self.backend.publish_batch(messages).await;
        }
        if let Some(id) = trace_id {
            span.record("trace_id", display(id));
        }
        self.backend.publish_batch(messages).instrument(span).await
    }

    /// Subscribes to live messages matching `filter`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSubject`] for a bad filter.
    pub async fn subscribe(&self, filter: impl AsRef<str>) -> Result<Subscription> {
        self.backend.subscribe(filter.as_ref(), None).await
    }

    /// Subscribes as a member of queue group `group`: each message goes to one member.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSubject`] for a bad filter or group name.
    pub async fn queue_subscribe(
        &self,
        filter: impl AsRef<str>,
        group: impl AsRef<str>,
    ) -> Result<Subscription> {
        self.backend
            .subscribe(filter.as_ref(), Some(group.as_ref()))
            .await
    }

    /// Sends a request and waits up to `timeout` for the reply. The
    /// request gets trace, correlation and service headers (see [`trace`]);
    /// a responder continues with `request.context()`
    /// ([`MessageContext::context`]). An error reply is
    /// [`Error::ServiceError`]. [`Bus::request_with`] adds headers and
    /// retries.
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] when no reply came in time; [`Error::NoResponders`]
    /// when nobody subscribes to `subject`; [`Error::ServiceError`] for an
    /// error reply; [`Error::InvalidSubject`].
    pub async fn request(
        &self,
        subject: impl Into<String>,
        payload: impl Into<Bytes>,
        timeout: Duration,
    ) -> Result<Message> {
        self.request_with(
            Message::new(subject, payload),
            RequestOptions::new().timeout(timeout),
        )
        .await
    }

    /// The stored message at `seq`.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::MessageNotFound`] when no message is
    /// stored at `seq` (never stored, deleted or expired).
    pub async fn get_message(&self, stream: impl AsRef<str>, seq: u64) -> Result<StoredMessage> {
        self.backend.get_message(stream.as_ref(), seq).await
    }

    /// The newest stored message on `subject`.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::MessageNotFound`] when the stream holds
    /// nothing on `subject`.
    pub async fn get_last_message(
        &self,
        stream: impl AsRef<str>,
        subject: impl AsRef<str>,
    ) -> Result<StoredMessage> {
        self.backend
            .get_last_message(stream.as_ref(), subject.as_ref())
            .await
    }

    /// Deletes the message at `seq`.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::MessageNotFound`]; [`Error::Denied`]
    /// when the stream denies delete.
    pub async fn delete_message(&self, stream: impl AsRef<str>, seq: u64) -> Result<()> {
        self.backend.delete_message(stream.as_ref(), seq).await
    }

    /// An ordered replay of a stream from a sequence or a time.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::InvalidArgument`] for a start the
    /// stream cannot serve. Errors while reading (a damaged record, a lost
    /// connection) are items of the [`Replay`].
    pub async fn replay(&self, stream: impl AsRef<str>, options: ReplayOptions) -> Result<Replay> {
        self.backend.replay(stream.as_ref(), options).await
    }

    /// Creates a consumer on `stream` if absent; returns an existing equal
    /// durable unchanged. A different configuration under the same durable
    /// name is [`Error::ConsumerNameInUse`]: use [`Bus::update_consumer`].
    /// With a `backoff`, `ack_wait` becomes its first step, as nats-server
    /// sets it (on every backend; so does [`Bus::update_consumer`]).
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::ConsumerNameInUse`];
    /// [`Error::InvalidName`], [`Error::InvalidSubject`] (a filter) or
    /// [`Error::InvalidConfig`] for a configuration the backend refuses;
    /// [`Error::InvalidArgument`] ([`ArgumentError::NameTooLong`]) for a
    /// durable name over [`MAX_CONSUMER_NAME_LEN`] (251) bytes.
    pub async fn create_consumer(
        &self,
        stream: impl AsRef<str>,
        config: ConsumerConfig,
    ) -> Result<ConsumerInfo> {
        self.backend.create_consumer(stream.as_ref(), config).await
    }

    /// Changes a durable consumer's configuration.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::ConsumerNotFound`];
    /// [`Error::InvalidConfig`] for a change the backend cannot make (the
    /// deliver policy or the filter of an existing consumer, for one).
    pub async fn update_consumer(
        &self,
        stream: impl AsRef<str>,
        config: ConsumerConfig,
    ) -> Result<ConsumerInfo> {
        self.backend.update_consumer(stream.as_ref(), config).await
    }

    /// A consumer's configuration and state.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::ConsumerNotFound`].
    pub async fn consumer_info(
        &self,
        stream: impl AsRef<str>,
        name: impl AsRef<str>,
    ) -> Result<ConsumerInfo> {
        self.backend
            .consumer_info(stream.as_ref(), name.as_ref())
            .await
    }

    /// The consumers of a stream, ordered by name.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`].
    pub async fn list_consumers(&self, stream: impl AsRef<str>) -> Result<Vec<ConsumerInfo>> {
        self.backend.list_consumers(stream.as_ref()).await
    }

    /// Deletes a consumer and its state.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::ConsumerNotFound`].
    pub async fn delete_consumer(
        &self,
        stream: impl AsRef<str>,
        name: impl AsRef<str>,
    ) -> Result<()> {
        self.backend
            .delete_consumer(stream.as_ref(), name.as_ref())
            .await
    }

    /// Up to `batch` deliveries of `consumer`, waiting up to `expires` for
    /// the first.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::ConsumerNotFound`]. No message within
    /// `expires` is an empty list, not an error.
    pub async fn fetch(
        &self,
        stream: impl AsRef<str>,
        consumer: impl AsRef<str>,
        batch: usize,
        expires: Duration,
    ) -> Result<Vec<Delivery>> {
        self.backend
            .fetch(stream.as_ref(), consumer.as_ref(), batch, expires)
            .await
    }

    /// Settles a delivery: ack, nak (with an optional delay), term or
    /// in-progress. Returns once the ack is sent: on `nats://` the server
    /// applies it shortly after, and an ack lost with the connection means
    /// the message is delivered again after `ack_wait` (see
    /// [`Backend::ack`]).
    ///
    /// # Errors
    ///
    /// Only the errors every call can return (see [`Bus`]). Settling a
    /// delivery that is already acknowledged or terminated is a no-op, and
    /// on `nats://` an ack for a deleted consumer is dropped.
    pub async fn ack(&self, delivery: &Delivery, kind: AckKind) -> Result<()> {
        self.backend.ack(&delivery.ack, kind).await
    }

    /// Settles a delivery as [`Bus::ack`] does, returning once the server
    /// has applied it (JetStream's double ack; one round trip on `nats://`).
    ///
    /// # Errors
    ///
    /// [`Error::ConsumerNotFound`] when the consumer is gone; on `nats://`,
    /// [`Error::Timeout`] when the confirmation does not come in time (the
    /// ack may still have been applied).
    pub async fn ack_confirmed(&self, delivery: &Delivery, kind: AckKind) -> Result<()> {
        self.backend.ack_confirmed(&delivery.ack, kind).await
    }

    /// Streams and durable consumers the backend could not open (damaged
    /// files of an embedded store), each with the reason; the rest works.
    pub fn unavailable(&self) -> Vec<Unavailable> {
        self.backend.unavailable()
    }

    /// Monitoring events: the backend's (slow consumers, reconnects, ...)
    /// and the facade's ([`Event::ConsumerStopped`]). Call it inside a
    /// tokio runtime: the backend's events are forwarded by a task started
    /// by the first call that has one.
    pub fn events(&self) -> Option<tokio::sync::broadcast::Receiver<Event>> {
        let rx = self.events.tx.subscribe();
        let mut forwarding = consume::lock(&self.events.forwarding);
        if !*forwarding {
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                *forwarding = true;
                if let Some(mut from) = self.backend.events() {
                    let tx = self.events.tx.clone();
                    runtime.spawn(async move {
                        loop {
                            match from.recv().await {
                                Ok(e) => {
                                    let _ = tx.send(e);
                                }
                                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                            }
                        }
                    });
                }
            }
        }
        Some(rx)
    }

    /// Sends a facade event to every [`Bus::events`] receiver.
    pub(crate) fn emit(&self, event: Event) {
        let _ = self.events.tx.send(event);
    }

    /// The connection's state.
    pub fn status(&self) -> ConnectionStatus {
        self.backend.status()
    }

    /// Waits until the connection is up: at once for embedded backends.
    /// [`Error::Timeout`] after `timeout`, [`Error::Closed`] once closed.
    pub async fn wait_connected(&self, timeout: Duration) -> Result<()> {
        match &self.supervisor {
            Some(s) => s.wait_connected(timeout).await,
            None if self.status() == ConnectionStatus::Closed => Err(Error::Closed),
            None => Ok(()),
        }
    }

    /// Failures, reconnects, circuit opens and the last round-trip time of a
    /// networked backend; `None` for embedded ones.
    pub fn stats(&self) -> Option<Stats> {
        self.supervisor.as_ref().map(|s| s.stats())
    }

    /// A round trip to the backend; the time it took.
    ///
    /// # Errors
    ///
    /// Only the errors every call can return (see [`Bus`]).
    pub async fn ping(&self) -> Result<Duration> {
        self.backend.ping().await
    }

    /// Whether the bus can serve requests now, for a readiness endpoint:
    /// connected and answering a ping within `timeout`. The answer's body
    /// holds the status only, never a URL or credential.
    pub async fn readiness(&self, timeout: Duration) -> Readiness {
        let status = self.status();
        let ready = status == ConnectionStatus::Connected
            && matches!(tokio::time::timeout(timeout, self.ping()).await, Ok(Ok(_)));
        Readiness {
            ready,
            status: self.status(),
        }
    }

    /// Makes acknowledged writes durable and closes. Idempotent; every call
    /// after it returns [`Error::Closed`].
    ///
    /// # Errors
    ///
    /// [`Error::Io`] or [`Error::Poisoned`] when the final flush fails (on
    /// `file:`). Calling it again is not an error.
    pub async fn close(&self) -> Result<()> {
        // Processes joined to a shared store finish first.
        #[cfg(feature = "nats")]
        if let Some(sharing) = &self.sharing {
            sharing.stop().await;
        }
        self.backend.close().await
    }
}

/// The README's Rust examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
