//! Handles as async-nats has them: [`Bus::stream`] names a stream once
//! ([`StreamHandle`]), [`StreamHandle::consumer`] a consumer of it
//! ([`ConsumerHandle`]), and the deliveries a consumer handle fetches or
//! streams ([`AckableDelivery`]) settle themselves (`ack`, `nak`, `term`,
//! `in_progress`). A handle is names and a [`Bus`] clone: making one does no
//! I/O, and a name that does not exist shows in the first call's error
//! ([`Error::StreamNotFound`], [`Error::ConsumerNotFound`]).
//!
//! Also here: the publishes that must be stored ([`Bus::publish_stored`],
//! [`StreamHandle::publish`]), which answer a subject no stream captures
//! with [`Error::NotCaptured`] instead of `Ok(None)`.
//!
//! Everything is written over the flat [`Bus`] methods, which stay.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Deref;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use durabus_core::{
    AckKind, Backend, ConsumerConfig, ConsumerInfo, Delivery, Error, Message, PublishAck,
    PurgeRequest, Replay, ReplayOptions, Result, StoredMessage, StreamInfo, NATS_EXPECTED_STREAM,
};
use futures::Stream;

use crate::consume::{ConsumeOptions, Outcome, RunningConsumer};
use crate::Bus;

/// Deliveries [`ConsumerHandle::messages`] fetches at a time.
pub const DEFAULT_MESSAGES_BATCH: usize = 64;
/// How long each fetch of [`ConsumerHandle::messages`] waits for a first
/// message before it asks again.
pub const DEFAULT_MESSAGES_EXPIRES: Duration = Duration::from_secs(1);

impl Bus {
    /// A handle to stream `name`: its info, purge, messages, consumers and
    /// publishes that must land in it. No I/O: a stream that does not exist
    /// is [`Error::StreamNotFound`] at the handle's first call.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> durabus::Result<()> {
    /// use durabus::{ConsumerConfig, StreamConfig};
    /// let bus = durabus::connect("memory:").await?;
    /// bus.create_stream(StreamConfig::new("ORDERS").subjects(["orders.>"])).await?;
    /// let orders = bus.stream("ORDERS");
    /// let ack = orders.publish("orders.eu.created", "order 1").await?;
    /// assert_eq!(ack.seq, 1);
    /// assert_eq!(orders.info().await?.state.messages, 1);
    /// let billing = orders.create_consumer(ConsumerConfig::durable("billing")).await?;
    /// for delivery in billing.fetch(10, std::time::Duration::from_secs(1)).await? {
    ///     assert_eq!(&delivery.message.payload[..], b"order 1");
    ///     delivery.ack().await?;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn stream(&self, name: impl Into<String>) -> StreamHandle {
        StreamHandle {
            bus: self.clone(),
            name: Arc::from(name.into()),
        }
    }

    /// Publishes `payload` to `subject`, which a stream must capture: its
    /// [`PublishAck`], where [`Bus::publish`] would return `Ok(None)` for a
    /// subject no stream captures. The message gets trace, correlation and
    /// service headers as every publish does (see [`crate::trace`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> durabus::Result<()> {
    /// let bus = durabus::connect("memory:").await?;
    /// bus.create_stream(durabus::StreamConfig::new("ORDERS").subjects(["orders.>"])).await?;
    /// assert_eq!(bus.publish_stored("orders.eu.created", "order 1").await?.seq, 1);
    /// let refused = bus.publish_stored("invoices.eu", "inv 1").await;
    /// assert!(matches!(refused, Err(durabus::Error::NotCaptured { .. })));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::NotCaptured`] when no stream captures `subject`: the
    /// message was not stored, but went out as a core message (live
    /// subscribers of the subject may have it, as with a JetStream publish
    /// on NATS). Otherwise as [`Bus::publish`].
    pub async fn publish_stored(
        &self,
        subject: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Result<PublishAck> {
        self.publish_message_stored(Message::new(subject, payload))
            .await
    }

    /// Publishes a message with headers, as [`Bus::publish_message`], to a
    /// subject a stream must capture (see [`Bus::publish_stored`]).
    ///
    /// # Errors
    ///
    /// [`Error::NotCaptured`] as [`Bus::publish_stored`]; otherwise as
    /// [`Bus::publish_message`].
    pub async fn publish_message_stored(&self, message: Message) -> Result<PublishAck> {
        let subject = message.subject.clone();
        self.publish_message(message)
            .await?
            .ok_or(Error::NotCaptured { subject })
    }
}

/// A stream, by name, from [`Bus::stream`]: the stream's operations
/// without repeating its name. Cheap to clone; no I/O to make one.
#[derive(Clone)]
pub struct StreamHandle {
    bus: Bus,
    name: Arc<str>,
}

impl std::fmt::Debug for StreamHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandle")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl StreamHandle {
    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The bus the handle uses.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The stream's configuration and state ([`Bus::stream_info`]).
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`].
    pub async fn info(&self) -> Result<StreamInfo> {
        self.bus.stream_info(&*self.name).await
    }

    /// Deletes the stream and its messages ([`Bus::delete_stream`]).
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`].
    pub async fn delete(&self) -> Result<()> {
        self.bus.delete_stream(&*self.name).await
    }

    /// Removes messages ([`Bus::purge_stream`]; `PurgeRequest::default()`
    /// removes all); returns how many.
    ///
    /// # Errors
    ///
    /// As [`Bus::purge_stream`].
    pub async fn purge(&self, request: PurgeRequest) -> Result<u64> {
        self.bus.purge_stream(&*self.name, request).await
    }

    /// The stored message at `seq` ([`Bus::get_message`]).
    ///
    /// # Errors
    ///
    /// As [`Bus::get_message`].
    pub async fn get_message(&self, seq: u64) -> Result<StoredMessage> {
        self.bus.get_message(&*self.name, seq).await
    }

    /// The newest stored message on `subject` ([`Bus::get_last_message`]).
    ///
    /// # Errors
    ///
    /// As [`Bus::get_last_message`].
    pub async fn get_last_message(&self, subject: impl AsRef<str>) -> Result<StoredMessage> {
        self.bus.get_last_message(&*self.name, subject).await
    }

    /// Deletes the message at `seq` ([`Bus::delete_message`]).
    ///
    /// # Errors
    ///
    /// As [`Bus::delete_message`].
    pub async fn delete_message(&self, seq: u64) -> Result<()> {
        self.bus.delete_message(&*self.name, seq).await
    }

    /// An ordered replay of the stream ([`Bus::replay`]).
    ///
    /// # Errors
    ///
    /// As [`Bus::replay`].
    pub async fn replay(&self, options: ReplayOptions) -> Result<Replay> {
        self.bus.replay(&*self.name, options).await
    }

    /// Publishes `payload` to `subject`, which this stream must capture:
    /// the message carries `Nats-Expected-Stream` with the stream's name,
    /// so no other stream stores it.
    ///
    /// # Errors
    ///
    /// [`Error::WrongStream`] when another stream captures `subject`
    /// (nothing is stored); [`Error::NotCaptured`] when no stream does (as
    /// [`Bus::publish_stored`]); otherwise as [`Bus::publish`].
    pub async fn publish(
        &self,
        subject: impl Into<String>,
        payload: impl Into<Bytes>,
    ) -> Result<PublishAck> {
        self.publish_message(Message::new(subject, payload)).await
    }

    /// Publishes a message with headers, as [`StreamHandle::publish`]
    /// does: its `Nats-Expected-Stream` header is set to this stream
    /// (replacing one it had).
    ///
    /// # Errors
    ///
    /// As [`StreamHandle::publish`], and as [`Bus::publish_message`] for
    /// the expectations the message carries.
    pub async fn publish_message(&self, mut message: Message) -> Result<PublishAck> {
        message.headers.insert(NATS_EXPECTED_STREAM, &*self.name);
        self.bus.publish_message_stored(message).await
    }

    /// A handle to consumer `name` of this stream. No I/O: a consumer that
    /// does not exist is [`Error::ConsumerNotFound`] at the handle's first
    /// call; [`StreamHandle::create_consumer`] creates one.
    pub fn consumer(&self, name: impl Into<String>) -> ConsumerHandle {
        ConsumerHandle {
            bus: self.bus.clone(),
            stream: self.name.clone(),
            name: Arc::from(name.into()),
        }
    }

    /// Creates a consumer if absent ([`Bus::create_consumer`]: an equal
    /// durable is returned unchanged) and returns its handle, named by the
    /// backend for an ephemeral one.
    ///
    /// # Errors
    ///
    /// As [`Bus::create_consumer`].
    pub async fn create_consumer(&self, config: ConsumerConfig) -> Result<ConsumerHandle> {
        let info = self.bus.create_consumer(&*self.name, config).await?;
        Ok(self.consumer(info.name))
    }

    /// The stream's consumers, ordered by name ([`Bus::list_consumers`]).
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`].
    pub async fn list_consumers(&self) -> Result<Vec<ConsumerInfo>> {
        self.bus.list_consumers(&*self.name).await
    }

    /// Deletes consumer `name` and its state ([`Bus::delete_consumer`]).
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::ConsumerNotFound`].
    pub async fn delete_consumer(&self, name: impl AsRef<str>) -> Result<()> {
        self.bus.delete_consumer(&*self.name, name).await
    }
}

/// A consumer of a stream, by name, from [`StreamHandle::consumer`] or
/// [`StreamHandle::create_consumer`]: fetch deliveries that settle
/// themselves, stream them ([`ConsumerHandle::messages`]) or run a handler
/// over them ([`ConsumerHandle::consume`]). Cheap to clone; no I/O to make
/// one.
#[derive(Clone)]
pub struct ConsumerHandle {
    bus: Bus,
    stream: Arc<str>,
    name: Arc<str>,
}

impl std::fmt::Debug for ConsumerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerHandle")
            .field("stream", &self.stream)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl ConsumerHandle {
    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The name of the stream it reads.
    pub fn stream_name(&self) -> &str {
        &self.stream
    }

    /// The consumer's configuration and state ([`Bus::consumer_info`]).
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::ConsumerNotFound`].
    pub async fn info(&self) -> Result<ConsumerInfo> {
        self.bus.consumer_info(&*self.stream, &*self.name).await
    }

    /// Deletes the consumer and its state ([`Bus::delete_consumer`]).
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::ConsumerNotFound`].
    pub async fn delete(&self) -> Result<()> {
        self.bus.delete_consumer(&*self.stream, &*self.name).await
    }

    /// Up to `batch` deliveries, waiting up to `expires` for the first
    /// ([`Bus::fetch`]); each settles itself.
    ///
    /// # Errors
    ///
    /// [`Error::StreamNotFound`]; [`Error::ConsumerNotFound`]. No message
    /// within `expires` is an empty list, not an error.
    pub async fn fetch(&self, batch: usize, expires: Duration) -> Result<Vec<AckableDelivery>> {
        let deliveries = self
            .bus
            .fetch(&*self.stream, &*self.name, batch, expires)
            .await?;
        let backend = self.bus.backend();
        Ok(deliveries
            .into_iter()
            .map(|delivery| AckableDelivery {
                delivery,
                backend: backend.clone(),
            })
            .collect())
    }

    /// Every delivery of the consumer, as a [`futures::Stream`] that
    /// fetches [`DEFAULT_MESSAGES_BATCH`] at a time, each fetch waiting up
    /// to [`DEFAULT_MESSAGES_EXPIRES`] before it asks again (see
    /// [`Messages`]).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> durabus::Result<()> {
    /// use durabus::{ConsumerConfig, StreamConfig};
    /// let bus = durabus::connect("memory:").await?;
    /// bus.create_stream(StreamConfig::new("ORDERS").subjects(["orders.>"])).await?;
    /// let orders = bus.stream("ORDERS");
    /// orders.publish("orders.eu.created", "order 1").await?;
    /// let billing = orders.create_consumer(ConsumerConfig::durable("billing")).await?;
    /// let mut messages = billing.messages();
    /// while let Some(delivery) = messages.next().await {
    ///     let delivery = delivery?;
    ///     println!("seq {}: {:?}", delivery.stream_seq(), delivery.message.payload);
    ///     delivery.ack().await?;
    ///     # break;
    /// }
    /// # Ok(()) }
    /// ```
    pub fn messages(&self) -> Messages {
        self.messages_with(DEFAULT_MESSAGES_BATCH, DEFAULT_MESSAGES_EXPIRES)
    }

    /// [`ConsumerHandle::messages`], fetching up to `batch` deliveries at
    /// a time (at least 1), each fetch waiting up to `expires`.
    pub fn messages_with(&self, batch: usize, expires: Duration) -> Messages {
        Messages {
            backend: self.bus.backend().clone(),
            stream: self.stream.clone(),
            consumer: self.name.clone(),
            batch: batch.max(1),
            expires,
            buffered: VecDeque::new(),
            fetching: None,
            done: false,
        }
    }

    /// Runs `handler` on every message of the consumer with the consumer
    /// runner ([`Bus::consume`]: retries, dead letters, graceful shutdown).
    ///
    /// # Errors
    ///
    /// As [`Bus::consume`].
    pub async fn consume<H, F>(
        &self,
        options: ConsumeOptions,
        handler: H,
    ) -> Result<RunningConsumer>
    where
        H: Fn(Delivery) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        self.bus
            .consume(&*self.stream, &*self.name, options, handler)
            .await
    }
}

/// A [`Delivery`] that settles itself, from [`ConsumerHandle::fetch`] or
/// [`ConsumerHandle::messages`]. It derefs to the delivery (`.message`,
/// `.stream_seq()`, `.delivered()`, ...).
///
/// Settling is as [`Bus::ack`]: it returns once the ack is sent, and
/// settling an acknowledged or terminated delivery again is a no-op.
/// [`AckableDelivery::ack_confirmed`] waits for the server.
#[derive(Clone)]
pub struct AckableDelivery {
    delivery: Delivery,
    backend: Arc<dyn Backend>,
}

impl std::fmt::Debug for AckableDelivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AckableDelivery")
            .field("delivery", &self.delivery)
            .finish_non_exhaustive()
    }
}

impl Deref for AckableDelivery {
    type Target = Delivery;

    fn deref(&self) -> &Delivery {
        &self.delivery
    }
}

impl AckableDelivery {
    /// The delivery.
    pub fn delivery(&self) -> &Delivery {
        &self.delivery
    }

    /// The delivery, without the means to settle it (settle it with
    /// [`Bus::ack`]).
    pub fn into_delivery(self) -> Delivery {
        self.delivery
    }

    /// Done: never deliver it again ([`AckKind::Ack`]).
    ///
    /// # Errors
    ///
    /// As [`Bus::ack`].
    pub async fn ack(&self) -> Result<()> {
        self.ack_with(AckKind::Ack).await
    }

    /// Failed: deliver it again, after `delay` if given (else at once, or
    /// after the consumer's backoff) ([`AckKind::Nak`]).
    ///
    /// # Errors
    ///
    /// As [`Bus::ack`].
    pub async fn nak(&self, delay: Option<Duration>) -> Result<()> {
        self.ack_with(AckKind::Nak(delay)).await
    }

    /// Never deliver it again, and do not count it as processed
    /// ([`AckKind::Term`]).
    ///
    /// # Errors
    ///
    /// As [`Bus::ack`].
    pub async fn term(&self) -> Result<()> {
        self.ack_with(AckKind::Term).await
    }

    /// Still working: restart its `ack_wait` ([`AckKind::InProgress`]).
    ///
    /// # Errors
    ///
    /// As [`Bus::ack`].
    pub async fn in_progress(&self) -> Result<()> {
        self.ack_with(AckKind::InProgress).await
    }

    /// Settles it as `kind` says ([`Bus::ack`]).
    ///
    /// # Errors
    ///
    /// As [`Bus::ack`].
    pub async fn ack_with(&self, kind: AckKind) -> Result<()> {
        self.backend.ack(&self.delivery.ack, kind).await
    }

    /// Settles it as `kind` says and waits until the server applied it
    /// ([`Bus::ack_confirmed`], JetStream's double ack).
    ///
    /// # Errors
    ///
    /// As [`Bus::ack_confirmed`].
    pub async fn ack_confirmed(&self, kind: AckKind) -> Result<()> {
        self.backend.ack_confirmed(&self.delivery.ack, kind).await
    }
}

/// A fetch in flight, kept across polls.
type Fetching = Pin<Box<dyn Future<Output = Result<Vec<Delivery>>> + Send>>;

/// The deliveries of a consumer, from [`ConsumerHandle::messages`]: a
/// [`futures::Stream`] of [`AckableDelivery`]s, in the order the consumer
/// delivers them (a nak'ed message comes again later). It fetches a batch
/// when the one before is handed out, so at most a batch waits here, its
/// `ack_wait` running: settle each delivery, or send
/// [`AckableDelivery::in_progress`] for slow work.
///
/// An error (the consumer deleted, a lost connection) is an item, and the
/// next poll fetches again; the stream ends once the bus is closed.
/// Cancel safe: a `next()` dropped at an await point keeps its fetch in
/// flight for the next call, so nothing is lost. Dropping the stream leaves
/// what it fetched and did not hand out to come back after `ack_wait`;
/// [`Messages::stop`] gives it back at once.
pub struct Messages {
    backend: Arc<dyn Backend>,
    stream: Arc<str>,
    consumer: Arc<str>,
    batch: usize,
    expires: Duration,
    buffered: VecDeque<Delivery>,
    fetching: Option<Fetching>,
    done: bool,
}

impl std::fmt::Debug for Messages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messages")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("batch", &self.batch)
            .field("expires", &self.expires)
            .field("buffered", &self.buffered.len())
            .field("fetching", &self.fetching.is_some())
            .finish_non_exhaustive()
    }
}

impl Messages {
    /// The next delivery; `None` once the bus is closed. Cancel safe (see
    /// [`Messages`]).
    pub async fn next(&mut self) -> Option<Result<AckableDelivery>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Stops: awaits a fetch a cancelled [`Messages::next`] left in flight
    /// (up to its `expires`), then gives back (nak) every delivery fetched
    /// and not handed out, so it is delivered again at once.
    ///
    /// # Errors
    ///
    /// The error of a nak (the bus closed, a lost connection); the
    /// deliveries not given back come again after `ack_wait`.
    pub async fn stop(mut self) -> Result<()> {
        if let Some(fetch) = self.fetching.take() {
            if let Ok(more) = fetch.await {
                self.buffered.extend(more);
            }
        }
        for d in self.buffered.drain(..) {
            self.backend.ack(&d.ack, AckKind::Nak(None)).await?;
        }
        Ok(())
    }
}

impl Stream for Messages {
    type Item = Result<AckableDelivery>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        if let Some(delivery) = this.buffered.pop_front() {
            return Poll::Ready(Some(Ok(AckableDelivery {
                delivery,
                backend: this.backend.clone(),
            })));
        }
        if this.done {
            return Poll::Ready(None);
        }
        let fetch = this.fetching.get_or_insert_with(|| {
            let (backend, stream, consumer) = (
                this.backend.clone(),
                this.stream.clone(),
                this.consumer.clone(),
            );
            let (batch, expires) = (this.batch, this.expires);
            Box::pin(async move { backend.fetch(&stream, &consumer, batch, expires).await })
        });
        let fetched = ready!(fetch.as_mut().poll(cx));
        this.fetching = None;
        match fetched {
            Ok(more) => {
                this.buffered.extend(more);
                match this.buffered.pop_front() {
                    Some(delivery) => Poll::Ready(Some(Ok(AckableDelivery {
                        delivery,
                        backend: this.backend.clone(),
                    }))),
                    // Nothing within `expires`: fetch again, after letting
                    // other tasks run (a backend that answers at once must
                    // not make this poll spin).
                    None => {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    }
                }
            }
            Err(Error::Closed) => {
                this.done = true;
                Poll::Ready(None)
            }
            Err(e) => Poll::Ready(Some(Err(e))),
        }
    }
}
