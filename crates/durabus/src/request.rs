//! Request/reply, written once over the backend's core primitives
//! (`request`, `publish`, `subscribe`): retries with backoff, responders in
//! queue groups, error replies, and requests that collect many replies.
//!
//! Error replies follow the NATS micro convention: a reply carrying the
//! [`SERVICE_ERROR`] and [`SERVICE_ERROR_CODE`] headers is an error, so
//! `nats req` and NATS services understand durabus responders and the other
//! way round. The requesting side turns such a reply into
//! [`Error::ServiceError`].

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use durabus_core::{backoff, Error, HeaderMap, Message, Result};
use rand::Rng;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::Bus;

/// Header with the description of an error reply (NATS micro convention).
pub const SERVICE_ERROR: &str = "Nats-Service-Error";
/// Header with the numeric code of an error reply (NATS micro convention).
pub const SERVICE_ERROR_CODE: &str = "Nats-Service-Error-Code";

/// Handlers of one responder running at the same time; further requests
/// wait in the subscription's buffer.
const RESPONDER_CONCURRENCY: usize = 64;

/// Which failed attempts of [`Bus::request_with`] are tried again.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RetryOn {
    /// Only attempts that timed out.
    Timeout,
    /// Attempts that timed out and attempts that found no responders: a
    /// responder may be starting, or reconnecting. The default.
    #[default]
    TimeoutOrNoResponders,
}

/// Settings of [`Bus::request_with`]: a timeout per attempt, retries with
/// exponential backoff and jitter.
///
/// ```
/// use std::time::Duration;
/// use durabus::RequestOptions;
/// let options = RequestOptions::new()
///     .timeout(Duration::from_millis(500))
///     .retries(3)
///     .backoff(Duration::from_millis(50), Duration::from_secs(1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct RequestOptions {
    timeout: Duration,
    retries: u32,
    initial_backoff: Duration,
    max_backoff: Duration,
    retry_on: RetryOn,
}

impl Default for RequestOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(5),
            retries: 0,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            retry_on: RetryOn::default(),
        }
    }
}

impl RequestOptions {
    /// Defaults: 5 s per attempt, no retries; when retries are set, backoff
    /// from 100 ms doubling up to 5 s, retrying timeouts and no-responders.
    pub fn new() -> Self {
        Self::default()
    }

    /// How long each attempt waits for its reply.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Attempts after the first one that failed (see [`RequestOptions::retry_on`]).
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The delay before the first retry, doubled for each further retry up
    /// to `max`. Each delay is drawn at random between half of it and all of
    /// it (jitter), so clients that failed together do not retry together.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Which failures are retried. [`Error::Timeout`] always is;
    /// [`Error::NoResponders`] too by default. Other errors (including
    /// [`Error::ServiceError`]: the request was handled) never are.
    pub fn retry_on(mut self, retry_on: RetryOn) -> Self {
        self.retry_on = retry_on;
        self
    }

    fn retries_after(&self, e: &Error) -> bool {
        match e {
            Error::Timeout(_) => true,
            Error::NoResponders { .. } => self.retry_on == RetryOn::TimeoutOrNoResponders,
            _ => false,
        }
    }

    /// The jittered delay before retry number `retry` (1-based).
    fn delay(&self, retry: u32) -> Duration {
        let full = backoff::exponential(
            self.initial_backoff,
            retry.saturating_sub(1),
            self.max_backoff,
        );
        backoff::jittered(full, 0.5)
    }
}

/// Settings of [`Bus::request_many`]: when to stop collecting replies.
///
/// ```
/// use std::time::Duration;
/// use durabus::RequestManyOptions;
/// let options = RequestManyOptions::new()
///     .timeout(Duration::from_secs(1))
///     .max_replies(3)
///     .stall(Duration::from_millis(100));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct RequestManyOptions {
    timeout: Duration,
    max_replies: Option<usize>,
    stall: Option<Duration>,
}

impl Default for RequestManyOptions {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(2),
            max_replies: None,
            stall: None,
        }
    }
}

impl RequestManyOptions {
    /// Defaults: collect for 2 s, any number of replies, no stall limit.
    pub fn new() -> Self {
        Self::default()
    }

    /// The longest the collection runs, from the publish.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Stop once this many replies arrived (at least 1).
    pub fn max_replies(mut self, n: usize) -> Self {
        self.max_replies = Some(n.max(1));
        self
    }

    /// Stop when no further reply arrived this long after the previous one
    /// (as nats.go's `RequestManyStall`); the wait for the first reply is
    /// bounded by the timeout only.
    pub fn stall(mut self, gap: Duration) -> Self {
        self.stall = Some(gap);
        self
    }
}

/// A responder's answer: payload and headers, sent to the request's reply
/// subject. Made from bytes or strings with `From`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// Headers of the reply.
    pub headers: HeaderMap,
    /// The payload of the reply.
    pub payload: Bytes,
}

impl Reply {
    /// A reply with this payload and no headers.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            headers: HeaderMap::new(),
            payload: payload.into(),
        }
    }

    /// Sets a header (replacing earlier values of that name).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }
}

impl From<Bytes> for Reply {
    fn from(payload: Bytes) -> Self {
        Reply::new(payload)
    }
}

impl From<Vec<u8>> for Reply {
    fn from(payload: Vec<u8>) -> Self {
        Reply::new(payload)
    }
}

impl From<String> for Reply {
    fn from(payload: String) -> Self {
        Reply::new(payload)
    }
}

impl From<&'static str> for Reply {
    fn from(payload: &'static str) -> Self {
        Reply::new(payload)
    }
}

/// A responder's refusal, sent as an error reply the requester receives as
/// [`Error::ServiceError`] with the same code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyError {
    /// The error code; HTTP-like by convention (400 bad request, 500 failure).
    pub code: u16,
    /// What went wrong, for the requester.
    pub message: String,
}

impl ReplyError {
    /// An error reply with this code and message.
    pub fn new(code: u16, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ReplyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code, self.message)
    }
}

impl std::error::Error for ReplyError {}

impl From<Error> for ReplyError {
    /// Code 500 with the error's text.
    fn from(e: Error) -> Self {
        ReplyError::new(500, e.to_string())
    }
}

impl From<String> for ReplyError {
    /// Code 500 with this text.
    fn from(message: String) -> Self {
        ReplyError::new(500, message)
    }
}

impl From<&str> for ReplyError {
    /// Code 500 with this text.
    fn from(message: &str) -> Self {
        ReplyError::new(500, message)
    }
}

/// Counters of a responder.
#[derive(Debug, Default)]
struct Counters {
    received: AtomicU64,
    replied: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    send_failed: AtomicU64,
}

/// What a responder did, from [`Responder::stats`] or [`Responder::shutdown`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponderStats {
    /// Requests handed to the handler.
    pub received: u64,
    /// Successful replies sent.
    pub replied: u64,
    /// Error replies sent.
    pub errors: u64,
    /// Messages without a reply subject, not handled.
    pub skipped: u64,
    /// Replies (or error replies) that could not be sent.
    pub send_failed: u64,
}

impl Counters {
    fn snapshot(&self) -> ResponderStats {
        ResponderStats {
            received: self.received.load(Ordering::Relaxed),
            replied: self.replied.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            skipped: self.skipped.load(Ordering::Relaxed),
            send_failed: self.send_failed.load(Ordering::Relaxed),
        }
    }
}

/// A running responder from [`Bus::respond`]. Dropping it stops it at once
/// (handlers in flight are cancelled, their requesters time out);
/// [`Responder::shutdown`] stops it gracefully.
#[derive(Debug)]
pub struct Responder {
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    counters: Arc<Counters>,
}

impl Responder {
    /// The counters so far.
    pub fn stats(&self) -> ResponderStats {
        self.counters.snapshot()
    }

    /// Unsubscribes, waits for the handlers in flight to finish and send
    /// their replies, and returns the counters.
    pub async fn shutdown(mut self) -> Result<ResponderStats> {
        self.stop.send_replace(true);
        if let Some(task) = self.task.take() {
            task.await
                .map_err(|e| Error::internal(format!("responder task failed: {e}")))?;
        }
        Ok(self.counters.snapshot())
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `reply` as the answer to a request on `subject`: an error reply becomes
/// [`Error::ServiceError`].
pub(crate) fn check_reply(subject: &str, reply: Message) -> Result<Message> {
    let Some(code) = reply.headers.get(SERVICE_ERROR_CODE) else {
        return Ok(reply);
    };
    Err(Error::ServiceError {
        subject: subject.to_owned(),
        code: code.trim().parse().unwrap_or(500),
        message: reply
            .headers
            .get(SERVICE_ERROR)
            .unwrap_or_default()
            .to_owned(),
    })
}

/// A fresh, unique inbox subject.
fn new_inbox() -> String {
    let token: String = rand::rng()
        .sample_iter(&rand::distr::Alphanumeric)
        .take(22)
        .map(char::from)
        .collect();
    format!("_INBOX.{token}")
}

/// A header value without line breaks or other control characters, which
/// the NATS wire cannot carry.
fn header_value(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(1024)
        .collect()
}

impl Bus {
    /// Sends a request with headers and waits for the reply, retrying per
    /// `options` (see [`RequestOptions`]). An error reply from the
    /// responder is [`Error::ServiceError`]; after the last attempt the
    /// error is that attempt's ([`Error::Timeout`] or
    /// [`Error::NoResponders`]).
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] or [`Error::NoResponders`] from the last attempt;
    /// [`Error::ServiceError`] for an error reply (not retried);
    /// [`Error::InvalidSubject`].
    ///
    /// ```no_run
    /// # async fn example(bus: durabus::Bus) -> durabus::Result<()> {
    /// use std::time::Duration;
    /// use durabus::{Message, RequestOptions};
    /// let request = Message::new("billing.quote", "order 7").with_header("Tenant", "acme");
    /// let options = RequestOptions::new().timeout(Duration::from_secs(1)).retries(3);
    /// let reply = bus.request_with(request, options).await?;
    /// # Ok(()) }
    /// ```
    pub async fn request_with(
        &self,
        mut message: Message,
        options: RequestOptions,
    ) -> Result<Message> {
        // Stamped once: every attempt carries the same trace.
        let trace_id = self.stamp(std::slice::from_mut(&mut message));
        let mut attempt: u32 = 1;
        loop {
            let span = tracing::info_span!(
                "durabus.request",
                subject = %message.subject,
                timeout = ?options.timeout,
                attempt,
                trace_id = tracing::field::Empty,
            );
            if let Some(id) = trace_id {
                span.record("trace_id", tracing::field::display(id));
            }
            let result = self
                .backend
                .request(message.clone(), options.timeout)
                .instrument(span)
                .await;
            match result {
                Ok(reply) => return check_reply(&message.subject, reply),
                Err(e) if attempt <= options.retries && options.retries_after(&e) => {
                    let delay = options.delay(attempt);
                    tracing::debug!(subject = %message.subject, attempt, error = %e, ?delay, "request failed; retrying");
                    tokio::time::sleep(delay).await;
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Publishes `message` once with a fresh inbox as its reply subject and
    /// collects the replies until the timeout, the maximum count or a stall
    /// (see [`RequestManyOptions`]). Returns the replies in arrival order,
    /// each `Ok`, or [`Error::ServiceError`] for an error reply. Nobody
    /// answering is an empty list, not an error.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSubject`]; the errors of publishing the request. Error
    /// replies are entries of the list, not an error of the call.
    ///
    /// ```no_run
    /// # async fn example(bus: durabus::Bus) -> durabus::Result<()> {
    /// use std::time::Duration;
    /// use durabus::{Message, RequestManyOptions};
    /// let options = RequestManyOptions::new().timeout(Duration::from_secs(1)).max_replies(3);
    /// let replies = bus.request_many(Message::new("workers.ping", ""), options).await?;
    /// for reply in replies {
    ///     println!("{:?}", reply?.payload);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn request_many(
        &self,
        mut message: Message,
        options: RequestManyOptions,
    ) -> Result<Vec<Result<Message>>> {
        let trace_id = self.stamp(std::slice::from_mut(&mut message));
        let span = tracing::info_span!(
            "durabus.request_many",
            subject = %message.subject,
            timeout = ?options.timeout,
            trace_id = tracing::field::Empty,
        );
        if let Some(id) = trace_id {
            span.record("trace_id", tracing::field::display(id));
        }
        self.collect_replies(message, options)
            .instrument(span)
            .await
    }

    async fn collect_replies(
        &self,
        message: Message,
        options: RequestManyOptions,
    ) -> Result<Vec<Result<Message>>> {
        durabus_core::subject::validate_publish(&message.subject)?;
        let inbox = new_inbox();
        // Subscribed before the publish, so no early reply is missed.
        let mut replies = self.backend.subscribe(&inbox, None).await?;
        let subject = message.subject.clone();
        self.backend.publish(message.with_reply(inbox)).await?;
        let deadline = tokio::time::Instant::now() + options.timeout;
        let mut collected = Vec::new();
        loop {
            if options.max_replies.is_some_and(|n| collected.len() >= n) {
                break;
            }
            let until = match (options.stall, collected.is_empty()) {
                (Some(gap), false) => deadline.min(tokio::time::Instant::now() + gap),
                _ => deadline,
            };
            match tokio::time::timeout_at(until, replies.next()).await {
                Ok(Some(reply)) => collected.push(check_reply(&subject, reply)),
                Ok(None) => return Err(Error::Closed),
                Err(_) => break,
            }
        }
        Ok(collected)
    }

    /// Answers requests on subjects matching `filter` with `handler`, as a
    /// member of `queue_group` if given (each request then goes to one
    /// member of the group), until [`Responder::shutdown`].
    ///
    /// The handler's `Ok` value is the reply; its `Err` is sent as an error
    /// reply ([`SERVICE_ERROR`], [`SERVICE_ERROR_CODE`]) that the requester
    /// receives as [`Error::ServiceError`]. Messages without a reply subject
    /// are skipped and counted in [`ResponderStats::skipped`]. Up to 64
    /// handlers run at once.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidSubject`] for a bad filter or queue group. A failed
    /// reply is counted in [`ResponderStats`], not returned.
    ///
    /// ```no_run
    /// # async fn example(bus: durabus::Bus) -> durabus::Result<()> {
    /// use durabus::{Message, ReplyError};
    /// let responder = bus
    ///     .respond("billing.quote", Some("billing"), |request: Message| async move {
    ///         if request.payload.is_empty() {
    ///             return Err(ReplyError::new(400, "empty request"));
    ///         }
    ///         Ok(format!("quote for {} bytes", request.payload.len()))
    ///     })
    ///     .await?;
    /// // ...
    /// let stats = responder.shutdown().await?;
    /// # Ok(()) }
    /// ```
    pub async fn respond<H, F, R, E>(
        &self,
        filter: impl AsRef<str>,
        queue_group: Option<&str>,
        handler: H,
    ) -> Result<Responder>
    where
        H: Fn(Message) -> F + Send + Sync + 'static,
        F: Future<Output = std::result::Result<R, E>> + Send + 'static,
        R: Into<Reply>,
        E: Into<ReplyError>,
    {
        let filter = filter.as_ref();
        let mut requests = self.backend.subscribe(filter, queue_group).await?;
        let counters = Arc::new(Counters::default());
        let (stop, mut stopped) = watch::channel(false);
        let bus = self.clone();
        let handler = Arc::new(handler);
        let tally = counters.clone();
        let task = tokio::spawn(async move {
            let permits = Arc::new(Semaphore::new(RESPONDER_CONCURRENCY));
            let mut workers = JoinSet::new();
            loop {
                let next = tokio::select! {
                    m = requests.next() => m,
                    _ = stopped.changed() => break,
                };
                let Some(request) = next else { break };
                while workers.try_join_next().is_some() {}
                let Some(reply_to) = request.reply.clone() else {
                    tally.skipped.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                tally.received.fetch_add(1, Ordering::Relaxed);
                let Ok(permit) = permits.clone().acquire_owned().await else {
                    break;
                };
                let (bus, handler, tally) = (bus.clone(), handler.clone(), tally.clone());
                let context = crate::context::Context::from_headers(&request.headers);
                let span = tracing::info_span!(
                    "durabus.respond",
                    subject = %request.subject,
                    trace_id = tracing::field::Empty,
                );
                if let Some(t) = context.trace() {
                    span.record("trace_id", tracing::field::display(t.trace_id()));
                }
                // The handler and its reply continue the request's trace.
                let work = crate::context::scope(context, async move {
                    let subject = request.subject.clone();
                    let (reply, counter) = match handler(request).await {
                        Ok(r) => {
                            let r: Reply = r.into();
                            let mut m = Message::new(reply_to, r.payload);
                            m.headers = r.headers;
                            (m, &tally.replied)
                        }
                        Err(e) => {
                            let e: ReplyError = e.into();
                            let m = Message::new(reply_to, Bytes::new())
                                .with_header(SERVICE_ERROR, header_value(&e.message))
                                .with_header(SERVICE_ERROR_CODE, e.code.to_string());
                            (m, &tally.errors)
                        }
                    };
                    match bus.publish_message(reply).await {
                        Ok(_) => counter.fetch_add(1, Ordering::Relaxed),
                        Err(e) => {
                            tracing::warn!(%subject, error = %e, "reply could not be sent; the requester will time out");
                            tally.send_failed.fetch_add(1, Ordering::Relaxed)
                        }
                    };
                    drop(permit);
                });
                workers.spawn(work.instrument(span));
            }
            // Graceful: no new requests; those in flight finish and reply.
            drop(requests);
            while workers.join_next().await.is_some() {}
        });
        Ok(Responder {
            stop,
            task: Some(task),
            counters,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter_below_it() {
        let o =
            RequestOptions::new().backoff(Duration::from_millis(100), Duration::from_millis(350));
        for _ in 0..50 {
            let d1 = o.delay(1);
            assert!(
                d1 >= Duration::from_millis(50) && d1 <= Duration::from_millis(100),
                "{d1:?}"
            );
            let d2 = o.delay(2);
            assert!(
                d2 >= Duration::from_millis(100) && d2 <= Duration::from_millis(200),
                "{d2:?}"
            );
            let d9 = o.delay(9);
            assert!(
                d9 >= Duration::from_millis(175) && d9 <= Duration::from_millis(350),
                "{d9:?}"
            );
        }
        // Far past any exponent: saturates instead of overflowing.
        assert!(o.delay(u32::MAX) <= Duration::from_millis(350));
    }

    #[test]
    fn no_responders_is_retried_unless_told_otherwise() {
        let nobody = Error::NoResponders {
            subject: "a".into(),
        };
        assert!(RequestOptions::new().retries_after(&nobody));
        assert!(!RequestOptions::new()
            .retry_on(RetryOn::Timeout)
            .retries_after(&nobody));
        assert!(RequestOptions::new()
            .retry_on(RetryOn::Timeout)
            .retries_after(&Error::Timeout(Duration::ZERO)));
        assert!(!RequestOptions::new().retries_after(&Error::Closed));
    }

    #[test]
    fn error_replies_become_service_errors_and_others_pass() {
        let reply = Message::new("_INBOX.x", "")
            .with_header(SERVICE_ERROR, "bad input")
            .with_header(SERVICE_ERROR_CODE, "400");
        match check_reply("svc.a", reply) {
            Err(Error::ServiceError {
                subject,
                code,
                message,
            }) => {
                assert_eq!(
                    (subject.as_str(), code, message.as_str()),
                    ("svc.a", 400, "bad input")
                );
            }
            other => panic!("{other:?}"),
        }
        let odd = Message::new("_INBOX.x", "").with_header(SERVICE_ERROR_CODE, "teapot");
        assert!(matches!(
            check_reply("s", odd),
            Err(Error::ServiceError { code: 500, .. })
        ));
        assert!(check_reply("s", Message::new("_INBOX.x", "fine")).is_ok());
    }

    #[test]
    fn error_texts_lose_line_breaks_before_going_into_a_header() {
        assert_eq!(header_value("a\r\nb"), "a  b");
    }
}
