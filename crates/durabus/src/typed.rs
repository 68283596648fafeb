//! Typed subjects: a subject pattern bound to a payload type and a codec,
//! with typed publish, subscribe, consume, request and respond, and a
//! [`Registry`] that dispatches mixed streams by a type header.
//!
//! Typed publishes set two headers: [`CONTENT_TYPE`] (the codec, e.g.
//! `application/json`) and [`DURABUS_TYPE`] (the binding's type name).
//!
//! **Type names.** A [`Subject`]'s type name defaults to its pattern
//! (`Subject::<Order>::new("orders.created")` is named `orders.created`):
//! it is what you wrote, so it changes only when you change it, and other
//! languages can set it too. It is deliberately not derived from the Rust
//! type's path (`std::any::type_name` is not promised stable, and moving a
//! type between modules would orphan stored messages). Set another with
//! [`Subject::with_type_name`], as you must when two bindings share a
//! pattern.
//!
//! **Receiving checks the type.** Every typed receive (subscribe, consume,
//! respond, [`Subject::decode`]) compares the message's [`DURABUS_TYPE`]
//! with the binding's type name, exactly, as the [`Registry`] routes: a
//! message naming another type is refused with [`Error::WrongType`]
//! (naming both types) before its payload is decoded, never decoded as the
//! wrong type. Refused, not skipped, as the registry refuses a type it has
//! no handler for: a [`TypedSubscription`] yields the error in the
//! message's place and goes on (as for a payload that does not decode), a
//! typed consumer dead-letters the message at once, a typed responder
//! answers 400. A message without the header (an untyped publisher) is
//! decoded as the binding's type. To take several types from one pattern,
//! dispatch them with a [`Registry`] (durable) or subscribe untyped and
//! [`Subject::decode`] by the header (live).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> durabus::Result<()> {
//! use durabus::typed::Subject;
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Order { id: u64 }
//!
//! let bus = durabus::connect("memory:").await?;
//! let orders = Subject::<Order>::new("orders.*")?;
//! let mut sub = orders.subscribe(&bus).await?;
//! orders.publish_to(&bus, "orders.eu", &Order { id: 7 }).await?;
//! let got = sub.next().await.expect("open")?;
//! assert_eq!(got.value, Order { id: 7 });
//! assert_eq!(got.message.subject, "orders.eu");
//! // A subject outside the pattern is refused before anything is sent.
//! assert!(orders.publish_to(&bus, "invoices.eu", &Order { id: 8 }).await.is_err());
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use durabus_core::subject;
use durabus_core::{
    Delivery, Error, HeaderMap, Message, PublishAck, Result, StoredMessage, Subscription,
};
use futures::future::BoxFuture;
use futures::{FutureExt, Stream};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::consume::{ConsumeOptions, Outcome, RunningConsumer};
use crate::request::{Reply, ReplyError, RequestOptions, Responder};
use crate::Bus;

/// Header naming the codec of a typed payload, e.g. `application/json`.
pub const CONTENT_TYPE: &str = "Content-Type";
/// Header naming the payload type of a typed message (see the module docs).
pub const DURABUS_TYPE: &str = "Durabus-Type";

/// What a codec reports when it fails.
pub type CodecError = Box<dyn std::error::Error + Send + Sync>;

/// How values become payloads and back. Codecs are types without values:
/// a [`Subject`] names its codec as a type parameter.
pub trait Codec: Send + Sync + 'static {
    /// The `Content-Type` header set on what this codec encodes.
    const CONTENT_TYPE: &'static str;

    /// The payload for `value`.
    fn encode<T: Serialize + ?Sized>(value: &T) -> std::result::Result<Vec<u8>, CodecError>;

    /// The value in `bytes`.
    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, CodecError>;
}

/// JSON (serde_json), `application/json`: the default codec.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json;

impl Codec for Json {
    const CONTENT_TYPE: &'static str = "application/json";

    fn encode<T: Serialize + ?Sized>(value: &T) -> std::result::Result<Vec<u8>, CodecError> {
        Ok(serde_json::to_vec(value)?)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, CodecError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

/// MessagePack (rmp-serde, structs as maps with field names),
/// `application/msgpack`. Feature `msgpack`.
#[cfg(feature = "msgpack")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgPack;

#[cfg(feature = "msgpack")]
impl Codec for MsgPack {
    const CONTENT_TYPE: &'static str = "application/msgpack";

    fn encode<T: Serialize + ?Sized>(value: &T) -> std::result::Result<Vec<u8>, CodecError> {
        Ok(rmp_serde::to_vec_named(value)?)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, CodecError> {
        Ok(rmp_serde::from_slice(bytes)?)
    }
}

/// CBOR (ciborium), `application/cbor`. Feature `cbor`.
#[cfg(feature = "cbor")]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cbor;

#[cfg(feature = "cbor")]
impl Codec for Cbor {
    const CONTENT_TYPE: &'static str = "application/cbor";

    fn encode<T: Serialize + ?Sized>(value: &T) -> std::result::Result<Vec<u8>, CodecError> {
        let mut out = Vec::new();
        ciborium::into_writer(value, &mut out)?;
        Ok(out)
    }

    fn decode<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, CodecError> {
        Ok(ciborium::from_reader(bytes)?)
    }
}

/// Decodes `message` with codec `C` as a `T` called `type_name`. A
/// `Content-Type` header naming another codec is refused as a decode error
/// (parameters such as `; charset=utf-8` and case are ignored). With
/// `check_type`, a [`DURABUS_TYPE`] header naming another type than
/// `type_name` is [`Error::WrongType`], before the payload is decoded.
fn decode_with<T: DeserializeOwned, C: Codec>(
    message: &Message,
    type_name: &str,
    check_type: bool,
) -> Result<T> {
    decode_parts::<T, C>(
        &message.subject,
        &message.headers,
        &message.payload,
        type_name,
        check_type,
    )
}

fn decode_parts<T: DeserializeOwned, C: Codec>(
    subject: &str,
    headers: &HeaderMap,
    payload: &[u8],
    type_name: &str,
    check_type: bool,
) -> Result<T> {
    if check_type {
        check_type_header(subject, headers, type_name)?;
    }
    let failed = |reason: String| Error::Decode {
        subject: subject.to_owned(),
        type_name: type_name.to_owned(),
        content_type: C::CONTENT_TYPE,
        reason,
    };
    if let Some(found) = headers.get(CONTENT_TYPE) {
        let essence = found.split(';').next().unwrap_or_default().trim();
        if !essence.eq_ignore_ascii_case(C::CONTENT_TYPE) {
            return Err(failed(format!("the message's content type is {found:?}")));
        }
    }
    C::decode(payload).map_err(|e| failed(e.to_string()))
}

/// [`Error::WrongType`] when `headers` carry a [`DURABUS_TYPE`] other than
/// `type_name` (compared exactly, as the [`Registry`] routes). A message
/// without the header passes: an untyped publisher names no type.
fn check_type_header(subject: &str, headers: &HeaderMap, type_name: &str) -> Result<()> {
    match headers.get(DURABUS_TYPE) {
        Some(found) if found != type_name => Err(Error::WrongType {
            subject: subject.to_owned(),
            expected: type_name.to_owned(),
            found: found.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn encode_with<T: Serialize + ?Sized, C: Codec>(value: &T, type_name: &str) -> Result<Vec<u8>> {
    C::encode(value).map_err(|e| Error::Encode {
        type_name: type_name.to_owned(),
        content_type: C::CONTENT_TYPE,
        reason: e.to_string(),
    })
}

/// A subject pattern (wildcards allowed) bound to payload type `T` and
/// codec `C` (JSON unless named). Cheap to clone. See the module docs for
/// headers and type names.
pub struct Subject<T, C = Json> {
    pattern: String,
    type_name: String,
    _types: PhantomData<fn() -> (T, C)>,
}

impl<T, C> Clone for Subject<T, C> {
    fn clone(&self) -> Self {
        Self {
            pattern: self.pattern.clone(),
            type_name: self.type_name.clone(),
            _types: PhantomData,
        }
    }
}

impl<T, C: Codec> fmt::Debug for Subject<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subject")
            .field("pattern", &self.pattern)
            .field("type_name", &self.type_name)
            .field("content_type", &C::CONTENT_TYPE)
            .finish()
    }
}

impl<T, C: Codec> Subject<T, C> {
    /// Binds `pattern` (a subject filter, wildcards allowed) to `T` and `C`.
    /// [`Error::InvalidSubject`] if the pattern is malformed.
    ///
    /// ```
    /// use durabus::typed::{Json, Subject};
    /// let prices = Subject::<f64, Json>::new("prices.>").unwrap();
    /// assert_eq!(prices.type_name(), "prices.>");
    /// assert!(Subject::<f64>::new("prices..eu").is_err());
    /// ```
    pub fn new(pattern: impl Into<String>) -> Result<Self> {
        let pattern = pattern.into();
        subject::validate_filter(&pattern)?;
        Ok(Self {
            type_name: pattern.clone(),
            pattern,
            _types: PhantomData,
        })
    }

    /// Sets the type name carried in [`DURABUS_TYPE`] (default: the
    /// pattern). Control characters are replaced by spaces, as a header
    /// cannot carry them.
    #[must_use]
    pub fn with_type_name(mut self, name: impl Into<String>) -> Self {
        self.type_name = name
            .into()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        self
    }

    /// The subject pattern.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The type name carried in [`DURABUS_TYPE`].
    pub fn type_name(&self) -> &str {
        &self.type_name
    }

    /// The codec's content type.
    pub fn content_type(&self) -> &'static str {
        C::CONTENT_TYPE
    }

    /// `subject` if it is a literal subject the pattern matches.
    fn check(&self, subject: &str) -> Result<()> {
        subject::validate_publish(subject)?;
        if subject::matches(&self.pattern, subject) {
            Ok(())
        } else {
            Err(Error::InvalidSubject {
                subject: subject.to_owned(),
                reason: format!(
                    "it does not match the pattern {:?} of this typed subject; use a subject the pattern matches",
                    self.pattern
                ),
            })
        }
    }

    /// The pattern, when it is literal (the forms without a subject argument).
    fn literal(&self) -> Result<&str> {
        if subject::has_wildcards(&self.pattern) {
            return Err(Error::InvalidSubject {
                subject: self.pattern.clone(),
                reason: "the typed subject's pattern has wildcards; name the subject with the `_to` form (publish_to, request_to)".into(),
            });
        }
        Ok(&self.pattern)
    }
}

impl<T: Serialize, C: Codec> Subject<T, C> {
    /// The message that carries `value` to `subject` (which the pattern
    /// must match), with the [`CONTENT_TYPE`] and [`DURABUS_TYPE`] headers.
    /// Add headers to it and send it with [`Bus::publish_message`].
    pub fn message(&self, subject: impl Into<String>, value: &T) -> Result<Message> {
        let subject = subject.into();
        self.check(&subject)?;
        let payload = encode_with::<T, C>(value, &self.type_name)?;
        Ok(Message::new(subject, payload)
            .with_header(CONTENT_TYPE, C::CONTENT_TYPE)
            .with_header(DURABUS_TYPE, self.type_name.clone()))
    }

    /// Publishes `value` to the pattern, which must be literal. As
    /// [`Bus::publish`]: `Some(ack)` when a stream stored it.
    pub async fn publish(&self, bus: &Bus, value: &T) -> Result<Option<PublishAck>> {
        let subject = self.literal()?.to_owned();
        bus.publish_message(self.message(subject, value)?).await
    }

    /// Publishes `value` to `subject`, which the pattern must match
    /// ([`Error::InvalidSubject`] otherwise, and nothing is sent).
    pub async fn publish_to(
        &self,
        bus: &Bus,
        subject: impl Into<String>,
        value: &T,
    ) -> Result<Option<PublishAck>> {
        bus.publish_message(self.message(subject, value)?).await
    }

    /// Sends `value` as a request to the pattern (which must be literal)
    /// and decodes the reply as `R` with the same codec. Retries and
    /// errors as [`Bus::request_with`]; a reply that does not decode is
    /// [`Error::Decode`].
    ///
    /// ```no_run
    /// # async fn example(bus: durabus::Bus) -> durabus::Result<()> {
    /// use durabus::{typed::Subject, RequestOptions};
    /// let quote = Subject::<u64>::new("billing.quote")?;
    /// let price: f64 = quote.request(&bus, &7, RequestOptions::new().retries(2)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request<R: DeserializeOwned>(
        &self,
        bus: &Bus,
        value: &T,
        options: RequestOptions,
    ) -> Result<R> {
        let subject = self.literal()?.to_owned();
        self.request_to(bus, subject, value, options).await
    }

    /// [`Subject::request`] to `subject`, which the pattern must match.
    pub async fn request_to<R: DeserializeOwned>(
        &self,
        bus: &Bus,
        subject: impl Into<String>,
        value: &T,
        options: RequestOptions,
    ) -> Result<R> {
        let reply = bus
            .request_with(self.message(subject, value)?, options)
            .await?;
        // A reply names no type of this binding's: only its codec is checked.
        decode_with::<R, C>(&reply, std::any::type_name::<R>(), false)
    }
}

impl<T: DeserializeOwned, C: Codec> Subject<T, C> {
    /// Decodes a message's payload as `T`: [`Error::WrongType`] if its
    /// [`DURABUS_TYPE`] header names another type than this binding's
    /// [`Subject::type_name`] (a message without the header is decoded),
    /// [`Error::Decode`] if it does not decode or its `Content-Type` names
    /// another codec.
    pub fn decode(&self, message: &Message) -> Result<T> {
        decode_with::<T, C>(message, &self.type_name, true)
    }

    /// [`Subject::decode`] for a message read from a stream (a delivery,
    /// a replay, a direct get).
    pub fn decode_stored(&self, message: &StoredMessage) -> Result<T> {
        decode_parts::<T, C>(
            &message.subject,
            &message.headers,
            &message.payload,
            &self.type_name,
            true,
        )
    }

    /// Subscribes to live messages matching the pattern, decoded; a
    /// message of another type is an [`Error::WrongType`] item (see the
    /// module docs).
    pub async fn subscribe(&self, bus: &Bus) -> Result<TypedSubscription<T, C>> {
        Ok(TypedSubscription {
            inner: bus.subscribe(&self.pattern).await?,
            subject: self.clone(),
        })
    }

    /// Runs `handler` on the decoded messages of durable `consumer` of
    /// `stream`, as [`Bus::consume`] does. A message of another type
    /// ([`Error::WrongType`]) or that does not decode is dead-lettered at
    /// once ([`Outcome::Reject`]) with the error as its reason; the handler
    /// never sees it.
    ///
    /// ```no_run
    /// # async fn example(bus: durabus::Bus) -> durabus::Result<()> {
    /// use durabus::{typed::Subject, ConsumeOptions, Outcome};
    /// let orders = Subject::<u64>::new("orders.>")?;
    /// let handle = orders
    ///     .consume(&bus, "ORDERS", "billing", ConsumeOptions::new(), |id, _delivery| async move {
    ///         println!("order {id}");
    ///         Outcome::Done
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn consume<H, F>(
        &self,
        bus: &Bus,
        stream: &str,
        consumer: &str,
        options: ConsumeOptions,
        handler: H,
    ) -> Result<RunningConsumer>
    where
        T: Send + 'static,
        H: Fn(T, Delivery) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let binding = self.clone();
        bus.consume(stream, consumer, options, move |delivery| {
            let work = binding
                .decode_stored(&delivery.message)
                .map(|value| handler(value, delivery));
            async move {
                match work {
                    Ok(work) => work.await,
                    Err(e) => Outcome::Reject(e.to_string()),
                }
            }
        })
        .await
    }

    /// Answers requests on the pattern with `handler`, as [`Bus::respond`]
    /// does: the request decoded as `T`, the reply encoded with the same
    /// codec. A request of another type ([`Error::WrongType`]) or that does
    /// not decode gets an error reply with code 400 without running the
    /// handler.
    ///
    /// ```no_run
    /// # async fn example(bus: durabus::Bus) -> durabus::Result<()> {
    /// use durabus::{typed::Subject, ReplyError};
    /// let quote = Subject::<u64>::new("billing.quote")?;
    /// let responder = quote
    ///     .respond(&bus, Some("billing"), |id, _request| async move {
    ///         Ok::<_, ReplyError>(id as f64 * 1.5)
    ///     })
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub async fn respond<R, H, F, E>(
        &self,
        bus: &Bus,
        queue_group: Option<&str>,
        handler: H,
    ) -> Result<Responder>
    where
        T: 'static,
        R: Serialize,
        H: Fn(T, Message) -> F + Send + Sync + 'static,
        F: Future<Output = std::result::Result<R, E>> + Send + 'static,
        E: Into<ReplyError>,
    {
        let binding = self.clone();
        bus.respond(&self.pattern, queue_group, move |request: Message| {
            let work = binding
                .decode(&request)
                .map(|value| handler(value, request));
            async move {
                let value = match work {
                    Ok(work) => work.await.map_err(Into::into)?,
                    Err(e) => return Err(ReplyError::new(400, e.to_string())),
                };
                let payload = encode_with::<R, C>(&value, std::any::type_name::<R>())?;
                Ok(Reply::new(payload).with_header(CONTENT_TYPE, C::CONTENT_TYPE))
            }
        })
        .await
    }
}

/// A typed message: the decoded value and the message it came in.
#[derive(Debug, Clone)]
pub struct Typed<T> {
    /// The decoded payload.
    pub value: T,
    /// The message as received (subject, headers, raw payload).
    pub message: Message,
}

/// Live messages of a [`Subject`], decoded. Each item is the decoded
/// message or, for one whose [`DURABUS_TYPE`] names another type,
/// [`Error::WrongType`], for one that does not decode, [`Error::Decode`]:
/// a bad message is reported in its place, and the subscription goes on.
///
/// A [`Stream`] ([`TypedSubscription::next`] is the same without
/// importing `StreamExt`), and cancel safe: a message is taken from the
/// subscription only in the poll that returns it, so a `next()` dropped in
/// a `select!` or under a `timeout` loses nothing and ends nothing.
pub struct TypedSubscription<T, C = Json> {
    inner: Subscription,
    subject: Subject<T, C>,
}

impl<T, C: Codec> fmt::Debug for TypedSubscription<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedSubscription")
            .field("subject", &self.subject)
            .field("inner", &self.inner)
            .finish()
    }
}

impl<T: DeserializeOwned, C: Codec> TypedSubscription<T, C> {
    /// The next message, decoded; `None` once the backend is closed.
    /// Cancel safe.
    pub async fn next(&mut self) -> Option<Result<Typed<T>>> {
        let message = self.inner.next().await?;
        Some(self.typed(message))
    }

    /// Messages dropped because this subscriber's buffer was full.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped()
    }

    fn typed(&self, message: Message) -> Result<Typed<T>> {
        Ok(Typed {
            value: self.subject.decode(&message)?,
            message,
        })
    }
}

impl<T: DeserializeOwned, C: Codec> Stream for TypedSubscription<T, C> {
    type Item = Result<Typed<T>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.inner)
            .poll_next(cx)
            .map(|m| m.map(|m| self.typed(m)))
    }
}

type Dispatch = Arc<dyn Fn(Delivery) -> BoxFuture<'static, Outcome> + Send + Sync>;

/// Handlers by payload type, for a stream that carries several types: each
/// delivery goes to the handler registered for its [`DURABUS_TYPE`]
/// header, decoded by that binding's codec.
///
/// A message with no type header, an unknown type, or a payload that does
/// not decode cannot succeed on a retry: it is dead-lettered at once
/// ([`Outcome::Reject`]) with the reason, never dropped and never retried.
///
/// ```no_run
/// # async fn example(bus: durabus::Bus) -> durabus::Result<()> {
/// use durabus::{typed::{Registry, Subject}, ConsumeOptions, Outcome};
/// #[derive(serde::Deserialize)]
/// struct Created { id: u64 }
/// #[derive(serde::Deserialize)]
/// struct Cancelled { id: u64, reason: String }
///
/// let created = Subject::<Created>::new("orders.created")?;
/// let cancelled = Subject::<Cancelled>::new("orders.cancelled")?;
/// let handle = Registry::new()
///     .on(&created, |c, _| async move { println!("created {}", c.id); Outcome::Done })?
///     .on(&cancelled, |c, _| async move { println!("{}: {}", c.id, c.reason); Outcome::Done })?
///     .consume(&bus, "ORDERS", "audit", ConsumeOptions::new())
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct Registry {
    handlers: HashMap<String, Dispatch>,
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.type_names().collect();
        names.sort_unstable();
        f.debug_struct("Registry").field("types", &names).finish()
    }
}

impl Registry {
    /// A registry without handlers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `handler` for messages of `subject`'s type name.
    /// [`Error::InvalidConfig`] if that name already has a handler (give
    /// one binding another name with [`Subject::with_type_name`]).
    pub fn on<T, C, H, F>(mut self, subject: &Subject<T, C>, handler: H) -> Result<Self>
    where
        T: DeserializeOwned + Send + 'static,
        C: Codec,
        H: Fn(T, Delivery) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let name = subject.type_name().to_owned();
        if self.handlers.contains_key(&name) {
            return Err(Error::invalid_config(
                durabus_core::ConfigError::DuplicateTypeName { name },
            ));
        }
        let binding = subject.clone();
        let dispatch: Dispatch =
            Arc::new(
                move |delivery: Delivery| match binding.decode_stored(&delivery.message) {
                    Ok(value) => handler(value, delivery).boxed(),
                    Err(e) => futures::future::ready(Outcome::Reject(e.to_string())).boxed(),
                },
            );
        self.handlers.insert(name, dispatch);
        Ok(self)
    }

    /// The registered type names, in no particular order.
    pub fn type_names(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// Runs the handler registered for the delivery's type; an untyped or
    /// unknown message, or one that does not decode, is
    /// [`Outcome::Reject`] with the reason.
    pub async fn dispatch(&self, delivery: Delivery) -> Outcome {
        self.route(delivery).await
    }

    fn route(&self, delivery: Delivery) -> BoxFuture<'static, Outcome> {
        let message = &delivery.message;
        let Some(name) = message.headers.get(DURABUS_TYPE) else {
            let reason = format!(
                "message on {:?} has no {DURABUS_TYPE} header; publish it through a typed Subject",
                message.subject
            );
            return futures::future::ready(Outcome::Reject(reason)).boxed();
        };
        match self.handlers.get(name) {
            Some(dispatch) => dispatch(delivery),
            None => {
                let reason = format!(
                    "unknown {DURABUS_TYPE} {name:?} on {:?}; register a handler for it",
                    message.subject
                );
                futures::future::ready(Outcome::Reject(reason)).boxed()
            }
        }
    }

    /// Runs the registry as the handler of durable `consumer` of `stream`
    /// (see [`Bus::consume`]).
    pub async fn consume(
        self,
        bus: &Bus,
        stream: &str,
        consumer: &str,
        options: ConsumeOptions,
    ) -> Result<RunningConsumer> {
        let registry = Arc::new(self);
        bus.consume(stream, consumer, options, move |delivery| {
            registry.route(delivery)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize)]
    struct Point {
        x: i32,
        label: String,
    }

    fn round_trip<C: Codec>() {
        let s = Subject::<Point, C>::new("points.*").unwrap();
        let p = Point {
            x: -3,
            label: "ü".into(),
        };
        let m = s.message("points.a", &p).unwrap();
        assert_eq!(m.headers.get(CONTENT_TYPE), Some(C::CONTENT_TYPE));
        assert_eq!(m.headers.get(DURABUS_TYPE), Some("points.*"));
        assert_eq!(s.decode(&m).unwrap(), p);
        let garbage = Message::new("points.a", vec![0xc1, 0xff, 0x00]);
        assert!(matches!(s.decode(&garbage), Err(Error::Decode { .. })));
    }

    #[test]
    fn every_codec_round_trips_and_reports_garbage() {
        round_trip::<Json>();
        #[cfg(feature = "msgpack")]
        round_trip::<MsgPack>();
        #[cfg(feature = "cbor")]
        round_trip::<Cbor>();
    }

    #[test]
    fn subjects_outside_the_pattern_and_wildcard_publishes_are_refused() {
        let s = Subject::<u8>::new("a.*").unwrap();
        let err = s.message("b.x", &1).unwrap_err().to_string();
        assert!(err.contains("does not match the pattern \"a.*\""), "{err}");
        assert!(s.message("a.*", &1).is_err());
        assert!(matches!(s.literal(), Err(Error::InvalidSubject { .. })));
        assert!(Subject::<u8>::new("a.b").unwrap().literal().is_ok());
    }

    #[test]
    fn another_codecs_content_type_is_a_decode_error() {
        let s = Subject::<u8>::new("a").unwrap();
        let m = Message::new("a", "1").with_header(CONTENT_TYPE, "application/cbor");
        assert!(matches!(s.decode(&m), Err(Error::Decode { .. })));
        let m = Message::new("a", "1").with_header(CONTENT_TYPE, "Application/JSON; charset=utf-8");
        assert_eq!(s.decode(&m).unwrap(), 1);
    }

    /// Checks invariant 30 (docs/design.md).
    #[test]
    fn another_type_name_is_wrong_type_naming_both_and_no_header_decodes() {
        let created = Subject::<u8>::new("orders.*")
            .unwrap()
            .with_type_name("Created");
        let refunded = Subject::<u8>::new("orders.*")
            .unwrap()
            .with_type_name("Refunded");
        let m = refunded.message("orders.eu", &3).unwrap();
        let e = created.decode(&m).unwrap_err();
        assert!(
            matches!(&e, Error::WrongType { expected, found, subject }
                if expected == "Created" && found == "Refunded" && subject == "orders.eu"),
            "{e:?}"
        );
        let text = e.to_string();
        assert!(
            text.contains("\"Created\"") && text.contains("\"Refunded\""),
            "{text}"
        );
        assert_eq!(refunded.decode(&m).unwrap(), 3);
        assert_eq!(created.decode(&Message::new("orders.eu", "4")).unwrap(), 4);
    }

    #[test]
    fn a_type_name_registered_twice_is_refused() {
        let a = Subject::<u8>::new("a").unwrap();
        let r = Registry::new()
            .on(&a, |_, _| async { Outcome::Done })
            .unwrap();
        assert!(r.on(&a, |_, _| async { Outcome::Done }).is_err());
    }
}
