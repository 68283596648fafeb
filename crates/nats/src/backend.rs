//! [`NatsBackend`]: the [`Backend`] trait over a NATS connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::connection::State;
use async_nats::{Client, StatusCode, Subject};
use bytes::Bytes;
use durabus_core::{
    subject, AckKind, AckRef, Backend, ByteString, ConnectionStatus, ConsumerConfig, ConsumerInfo,
    Delivery, Error, Event, HeaderMap, Message, PublishAck, PurgeRequest, Replay, ReplayOptions,
    ReplayStart, Result, StoredMessage, StreamConfig, StreamInfo, Subscription,
    NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_EXPECTED_STREAM,
};
use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use secrecy::ExposeSecret as _;
use serde_json::{json, Value};
use tokio::sync::{broadcast, watch};

use crate::api::{self, codes, ApiError};
use crate::options::{scrub, NatsAuth, NatsOptions, ServerList};

/// Idle heartbeat of replay consumers.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Idle heartbeat of bounded (stop_at_end) replays.
const BOUNDED_HEARTBEAT: Duration = Duration::from_millis(250);

/// What durabus remembers of a stream to route publishes.
#[derive(Debug)]
struct Route {
    /// The stream's name.
    name: String,
    /// `name` as publish acks carry it (shared, not copied per ack).
    label: ByteString,
    subjects: Vec<String>,
    max_msg_size: Option<u32>,
}

/// Most literal subjects remembered with their stream; past it the memo
/// starts over.
const MEMO_SUBJECTS: usize = 4096;

/// The route cache.
#[derive(Default)]
struct Routes {
    /// Stream name -> its route.
    streams: HashMap<String, Arc<Route>>,
    /// Literal subject -> the route capturing it, so a subject published
    /// before is validated and matched once. Cleared whenever `streams`
    /// changes.
    memo: HashMap<String, Arc<Route>>,
}

struct Inner {
    client: Client,
    /// The servers, without credentials: safe for messages.
    url: String,
    request_timeout: Duration,
    drain_timeout: Duration,
    closed: AtomicBool,
    /// async-nats gave up reconnecting (`max_reconnects`).
    link_lost: AtomicBool,
    close_tx: watch::Sender<bool>,
    events: broadcast::Sender<Event>,
    /// Stream name -> subjects, for deciding JetStream vs core publish.
    routes: RwLock<Routes>,
}

/// The NATS JetStream backend. Cheap to clone.
#[derive(Clone)]
pub struct NatsBackend {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for NatsBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBackend")
            .field("url", &self.inner.url)
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

/// Opens the async-nats connection: options, credentials, TLS, the
/// reconnect backoff and the event bridge.
async fn open(
    list: &ServerList,
    options: &NatsOptions,
    events: broadcast::Sender<Event>,
) -> std::result::Result<Client, OpenError> {
    let backoff = options.clone();
    let attempts = events.clone();
    let mut co = async_nats::ConnectOptions::new()
        .name(&options.name)
        .connection_timeout(options.connect_timeout)
        .request_timeout(Some(options.request_timeout))
        .ping_interval(options.ping_interval)
        .max_reconnects(options.max_reconnects)
        .reconnect_delay_callback(move |attempt| {
            let delay = backoff.reconnect_delay(attempt);
            let _ = attempts.send(Event::Reconnecting {
                attempt: attempt as u64,
                delay,
            });
            delay
        })
        .event_callback(move |e| {
            let events = events.clone();
            async move {
                if let Some(e) = bridge_event(e) {
                    let _ = events.send(e);
                }
            }
        });
    co = match &options.auth {
        NatsAuth::None => co,
        NatsAuth::UserPassword { user, password } => {
            co.user_and_password(user.clone(), password.expose_secret().to_owned())
        }
        NatsAuth::Token(t) => co.token(t.expose_secret().to_owned()),
        NatsAuth::NKeySeed(seed) => co.nkey(seed.expose_secret().to_owned()),
        NatsAuth::CredentialsFile(path) => co
            .credentials_file(path)
            .await
            .map_err(|e| OpenError::Credentials(format!("{}: {e}", path.display())))?,
    };
    let tls = &options.tls;
    if tls.required {
        co = co.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        co = co.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        co = co.add_client_certificate(cert.clone(), key.clone());
    }
    let servers: Vec<async_nats::ServerAddr> = list
        .servers
        .iter()
        .map(|s| s.parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e: std::io::Error| OpenError::Address(e.to_string()))?;
    // async-nats bounds each attempt by the connect timeout; this bounds the
    // whole (one attempt per server).
    let limit = options
        .connect_timeout
        .saturating_mul(u32::try_from(servers.len()).unwrap_or(1).max(1))
        + Duration::from_millis(500);
    match tokio::time::timeout(limit, co.connect(servers)).await {
        Err(_) => Err(OpenError::TimedOut),
        Ok(r) => r.map_err(OpenError::Connect),
    }
}

/// Why [`open`] failed.
#[derive(Debug)]
enum OpenError {
    Credentials(String),
    Address(String),
    TimedOut,
    Connect(async_nats::ConnectError),
}

fn connect_error(url: &str, secrets: &[String], e: OpenError, timeout: Duration) -> Error {
    use async_nats::ConnectErrorKind as K;
    let url = url.to_owned();
    let timed_out = || format!("no answer within the connect timeout ({timeout:?})");
    match e {
        OpenError::Credentials(reason) => Error::InvalidConfig(format!(
            "cannot read the credentials file {}",
            scrub(&reason, secrets)
        )),
        OpenError::Address(reason) => Error::InvalidUrl {
            url,
            reason: scrub(&reason, secrets),
        },
        OpenError::TimedOut => Error::Unreachable {
            url,
            reason: timed_out(),
        },
        OpenError::Connect(e) => {
            let reason = scrub(&e.to_string(), secrets);
            match e.kind() {
                K::Authentication | K::AuthorizationViolation => Error::AuthFailed { url, reason },
                K::Tls => Error::Tls { url, reason },
                K::TimedOut => Error::Unreachable {
                    url,
                    reason: timed_out(),
                },
                K::ServerParse | K::Dns | K::Io | K::MaxReconnects => {
                    let lower = reason.to_ascii_lowercase();
                    // A server that drops a connection after a failed TLS
                    // handshake shows as an I/O error.
                    if lower.contains("tls") || lower.contains("certificate") {
                        Error::Tls { url, reason }
                    } else if lower.contains("authorization") {
                        Error::AuthFailed { url, reason }
                    } else if lower.contains("maximum") || lower.contains("exceeded") {
                        // A limit of the server or account, e.g. "maximum
                        // account active connections exceeded".
                        Error::Server(format!("{url} refused the connection: {reason}"))
                    } else {
                        Error::Unreachable { url, reason }
                    }
                }
            }
        }
    }
}

/// An async-nats connection event as a durabus [`Event`].
fn bridge_event(e: async_nats::Event) -> Option<Event> {
    use async_nats::{ClientError, Event as E};
    Some(match e {
        E::Connected => Event::Connected,
        E::Disconnected => Event::Disconnected,
        E::LameDuckMode => Event::LameDuck,
        E::ClientError(ClientError::MaxReconnects) => Event::ConnectionClosed {
            reason: "the reconnect limit was reached".into(),
        },
        E::ServerError(e) => Event::ServerError {
            message: e.to_string(),
        },
        E::Closed | E::Draining | E::SlowConsumer(_) | E::ClientError(_) => return None,
    })
}

fn server(e: impl std::fmt::Display) -> Error {
    Error::Server(e.to_string())
}

fn to_nats_headers(h: &HeaderMap) -> async_nats::HeaderMap {
    let mut out = async_nats::HeaderMap::new();
    for (n, v) in h.iter() {
        out.append(n, v);
    }
    out
}

pub(crate) fn from_nats_headers(h: Option<&async_nats::HeaderMap>) -> HeaderMap {
    let mut out = HeaderMap::new();
    if let Some(h) = h {
        for (n, values) in h.iter() {
            for v in values {
                out.append(n.to_string(), v.as_str());
            }
        }
    }
    out
}

fn from_nats_message(m: async_nats::Message) -> Message {
    Message {
        subject: m.subject.to_string(),
        reply: m.reply.map(|r| r.to_string()),
        headers: from_nats_headers(m.headers.as_ref()),
        payload: m.payload,
    }
}

pub(crate) fn not_found(stream: &str) -> Error {
    Error::StreamNotFound {
        name: stream.to_owned(),
    }
}

pub(crate) fn generic(e: ApiError) -> Error {
    if e.err_code == codes::JETSTREAM_NOT_ENABLED_FOR_ACCOUNT {
        return Error::JetStreamNotEnabled;
    }
    if e.code == 503 {
        return Error::Unavailable {
            reason: format!("{} (err_code {})", e.description, e.err_code),
        };
    }
    Error::Server(format!(
        "{} (code {}, err_code {})",
        e.description, e.code, e.err_code
    ))
}

impl NatsBackend {
    /// Connects to `url` (`nats://[user:password@|token@]host:port`, several
    /// separated by commas, query options as in [`NatsOptions::apply_url`])
    /// and checks that JetStream answers.
    ///
    /// Errors: [`Error::InvalidUrl`] / [`Error::InvalidConfig`] before any
    /// connection; [`Error::Unreachable`] within the connect timeout when no
    /// server answers; [`Error::AuthFailed`]; [`Error::Tls`];
    /// [`Error::JetStreamNotEnabled`]. No credential appears in any of them.
    pub async fn connect(url: &str, options: NatsOptions) -> Result<Self> {
        let mut options = options;
        let list = options.apply_url(url)?;
        options.validate()?;
        let shown = list.display();
        let secrets = options.secrets();
        let (events, _) = broadcast::channel(256);
        let client = open(&list, &options, events.clone())
            .await
            .map_err(|e| connect_error(&shown, &secrets, e, options.connect_timeout))?;
        let (close_tx, _) = watch::channel(false);
        let backend = Self {
            inner: Arc::new(Inner {
                client,
                url: shown,
                request_timeout: options.request_timeout,
                drain_timeout: options.drain_timeout,
                closed: AtomicBool::new(false),
                link_lost: AtomicBool::new(false),
                close_tx,
                events,
                routes: RwLock::new(Routes::default()),
            }),
        };
        backend.watch_link();
        // IMPORTANT: the options (and the secrets in them) are dropped, and
        // zeroed, here; async-nats holds the only copy from now on.
        drop(options);
        if let Err(e) = backend.ping().await {
            let _ = backend.close().await;
            return Err(e);
        }
        Ok(backend)
    }

    /// Marks the connection lost when async-nats gives up reconnecting.
    fn watch_link(&self) {
        let weak = Arc::downgrade(&self.inner);
        let mut rx = self.inner.events.subscribe();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(Event::ConnectionClosed { .. }) => {
                        if let Some(inner) = weak.upgrade() {
                            inner.link_lost.store(true, Ordering::Release);
                        }
                        return;
                    }
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(broadcast::error::RecvError::Closed) => return,
                }
                if weak.strong_count() == 0 {
                    return;
                }
            }
        });
    }

    pub(crate) fn check(&self) -> Result<()> {
        if self.inner.closed.load(Ordering::Acquire) {
            Err(Error::Closed)
        } else if self.inner.link_lost.load(Ordering::Acquire) {
            Err(self.lost())
        } else {
            Ok(())
        }
    }

    fn lost(&self) -> Error {
        Error::Unreachable {
            url: self.inner.url.clone(),
            reason: "the connection was lost and the reconnect limit reached; connect again".into(),
        }
    }

    /// The error of a request that failed without an answer.
    pub(crate) fn request_error(&self, e: &async_nats::RequestError, timeout: Duration) -> Error {
        match e.kind() {
            async_nats::RequestErrorKind::TimedOut => Error::Timeout(timeout),
            async_nats::RequestErrorKind::NoResponders => Error::NoResponders {
                subject: String::new(),
            },
            async_nats::RequestErrorKind::Other => self.closed_or(e),
        }
    }

    /// A future that completes when the backend is closed.
    fn closed_signal(&self) -> BoxFuture<'static, ()> {
        let mut rx = self.inner.close_tx.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
        .boxed()
    }

    /// One JetStream API call: `Ok(Err(api error))` when the server refused.
    pub(crate) async fn api(
        &self,
        what: &str,
        body: Value,
    ) -> Result<std::result::Result<Value, ApiError>> {
        self.check()?;
        let subject = format!("$JS.API.{what}");
        let payload = Bytes::from(serde_json::to_vec(&body).map_err(server)?);
        // Bounded by the client's request timeout.
        let reply = match self.inner.client.request(subject, payload).await {
            Err(e) => {
                return Err(match self.request_error(&e, self.inner.request_timeout) {
                    // Nobody serves $JS.API: no JetStream here.
                    Error::NoResponders { .. } => Error::JetStreamNotEnabled,
                    other => other,
                });
            }
            Ok(m) => m,
        };
        api::split(&reply.payload).map_err(Error::Server)
    }

    /// The async-nats client.
    pub(crate) fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The client's request timeout.
    pub(crate) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    fn remember(&self, info: &StreamInfo) {
        if let Ok(mut routes) = self.inner.routes.write() {
            let route = Route {
                name: info.config.name.clone(),
                label: ByteString::from(info.config.name.as_str()),
                subjects: info.config.effective_subjects(),
                max_msg_size: info.config.max_msg_size,
            };
            routes
                .streams
                .insert(info.config.name.clone(), Arc::new(route));
            routes.memo.clear();
        }
    }

    fn forget(&self, stream: &str) {
        if let Ok(mut routes) = self.inner.routes.write() {
            routes.streams.remove(stream);
            routes.memo.clear();
        }
    }

    /// The route of a subject published before (so known to be valid): one
    /// hash lookup, no validation, no matching.
    fn memoized(&self, subject: &str) -> Option<Arc<Route>> {
        self.inner.routes.read().ok()?.memo.get(subject).cloned()
    }

    /// The cached stream capturing the valid literal `subject`, remembered
    /// in the memo.
    fn cached_route(&self, subject: &str) -> Option<Arc<Route>> {
        let hit = {
            let routes = self.inner.routes.read().ok()?;
            if let Some(hit) = routes.memo.get(subject) {
                return Some(hit.clone());
            }
            routes
                .streams
                .values()
                .find(|r| r.subjects.iter().any(|f| subject::matches(f, subject)))
                .cloned()?
        };
        if let Ok(mut routes) = self.inner.routes.write() {
            // Unless the stream was forgotten or replaced meanwhile.
            if routes
                .streams
                .get(&hit.name)
                .is_some_and(|r| Arc::ptr_eq(r, &hit))
            {
                if routes.memo.len() >= MEMO_SUBJECTS {
                    routes.memo.clear();
                }
                routes.memo.insert(subject.to_owned(), hit.clone());
            }
        }
        Some(hit)
    }

    /// The stream capturing the valid literal `subj`, from the cache or (on
    /// a miss) the server.
    async fn capturing(&self, subj: &str) -> Result<Option<Arc<Route>>> {
        if let Some(hit) = self.cached_route(subj) {
            return Ok(Some(hit));
        }
        let names = match self
            .api("STREAM.NAMES", json!({"offset": 0, "subject": subj}))
            .await?
        {
            Ok(v) => v,
            Err(e) => return Err(generic(e)),
        };
        let candidates: Vec<String> = names
            .get("streams")
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .unwrap_or_default();
        for name in candidates {
            match self.fetch_info(&name).await {
                Ok(info) => {
                    self.remember(&info);
                    if info
                        .config
                        .effective_subjects()
                        .iter()
                        .any(|f| subject::matches(f, subj))
                    {
                        return Ok(self.cached_route(subj));
                    }
                }
                Err(Error::StreamNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    async fn fetch_info(&self, name: &str) -> Result<StreamInfo> {
        match self.api(&format!("STREAM.INFO.{name}"), json!({})).await? {
            Ok(v) => api::stream_info(v).map_err(Error::Server),
            Err(e) if e.err_code == codes::STREAM_NOT_FOUND => Err(not_found(name)),
            Err(e) => Err(generic(e)),
        }
    }

    async fn all_streams(&self) -> Result<Vec<StreamInfo>> {
        let mut out = Vec::new();
        loop {
            let v = match self
                .api("STREAM.LIST", json!({"offset": out.len()}))
                .await?
            {
                Ok(v) => v,
                Err(e) => return Err(generic(e)),
            };
            let total = v.get("total").and_then(Value::as_u64).unwrap_or(0);
            let page = v
                .get("streams")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            if page.is_empty() {
                break;
            }
            for s in page {
                out.push(api::stream_info(s).map_err(Error::Server)?);
            }
            if out.len() as u64 >= total {
                break;
            }
        }
        out.sort_by(|a, b| a.config.name.cmp(&b.config.name));
        Ok(out)
    }

    /// Names the stream whose subjects collide with `cfg`'s.
    async fn overlap_error(&self, cfg: &StreamConfig, e: ApiError) -> Error {
        let Ok(streams) = self.all_streams().await else {
            return generic(e);
        };
        for s in &cfg.effective_subjects() {
            for other in streams.iter().filter(|o| o.config.name != cfg.name) {
                for o in other.config.effective_subjects() {
                    if subject::overlaps(s, &o) {
                        return Error::SubjectsOverlap {
                            subject: s.clone(),
                            other: other.config.name.clone(),
                            other_subject: o,
                        };
                    }
                }
            }
        }
        generic(e)
    }

    fn normalized(cfg: &StreamConfig) -> StreamConfig {
        let mut c = cfg.clone();
        c.subjects = c.effective_subjects();
        c
    }

    fn publish_error(&self, route: &Route, m: &Message, e: ApiError) -> Error {
        let stream = route.name.as_str();
        match e.err_code {
            codes::WRONG_LAST_SEQUENCE => {
                let current = e
                    .description
                    .rsplit(' ')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let expected = m
                    .headers
                    .get(NATS_EXPECTED_LAST_SEQUENCE)
                    .or_else(|| m.headers.get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE))
                    .and_then(|s| s.trim().parse().ok())
                    .unwrap_or(0);
                Error::WrongLastSequence { expected, current }
            }
            codes::WRONG_STREAM => Error::WrongStream {
                expected: m
                    .headers
                    .get(NATS_EXPECTED_STREAM)
                    .unwrap_or_default()
                    .to_owned(),
                actual: stream.to_owned(),
            },
            codes::MESSAGE_TOO_LARGE => Error::MaxPayloadExceeded {
                size: m.payload.len() + m.headers.encoded_len(),
                max: route.max_msg_size.map(|m| m as usize).unwrap_or(0),
            },
            codes::STORE_FAILED if e.description.contains("exceeded") => Error::StreamFull {
                stream: stream.to_owned(),
                limit: e.description,
            },
            _ if e.description.contains("rollup") => Error::Denied {
                stream: stream.to_owned(),
                operation: "rollup",
            },
            _ => generic(e),
        }
    }

    /// The outcome of a JetStream publish from its reply.
    async fn settle(
        &self,
        route: &Route,
        m: &Message,
        reply: &async_nats::Message,
    ) -> Result<Option<PublishAck>> {
        if reply.status == Some(StatusCode::NO_RESPONDERS) {
            return self.no_responders(&route.name, m).await;
        }
        let r = self.ack_from(route, m, reply);
        self.correct_subject_seq(&route.name, m, r).await
    }

    /// Nobody answered a publish to a subject `stream` was known to
    /// capture. If the stream is gone, that was a core publish; if a stream
    /// still captures the subject it did not store the message (a server
    /// restarting, say), which must not pass for success.
    async fn no_responders(&self, stream: &str, m: &Message) -> Result<Option<PublishAck>> {
        self.forget(stream);
        match self.capturing(&m.subject).await? {
            None => Ok(None),
            Some(route) => Err(Error::Unavailable {
                reason: format!(
                    "stream {:?} captures {:?} but did not answer; the message was not stored",
                    route.name, m.subject
                ),
            }),
        }
    }

    fn ack_from(
        &self,
        route: &Route,
        m: &Message,
        reply: &async_nats::Message,
    ) -> Result<Option<PublishAck>> {
        match api::publish_ack(&reply.payload).map_err(Error::Server)? {
            Err(e) => Err(self.publish_error(route, m, e)),
            Ok(ack) => Ok(Some(PublishAck {
                stream: match ack.stream {
                    Some(s) if s != route.name => ByteString::from(s.into_owned()),
                    _ => route.label.clone(),
                },
                seq: ack.seq,
                duplicate: ack.duplicate,
            })),
        }
    }

    async fn core_publish(&self, m: Message) -> Result<()> {
        let client = &self.inner.client;
        let headers = to_nats_headers(&m.headers);
        let r = match m.reply {
            Some(reply) => {
                client
                    .publish_with_reply_and_headers(
                        Subject::from(m.subject),
                        Subject::from(reply),
                        headers,
                        m.payload,
                    )
                    .await
            }
            None => {
                client
                    .publish_with_headers(Subject::from(m.subject), headers, m.payload)
                    .await
            }
        };
        r.map_err(|e| self.closed_or(e))
    }

    pub(crate) fn closed_or(&self, e: impl std::fmt::Display) -> Error {
        if self.inner.closed.load(Ordering::Acquire) {
            Error::Closed
        } else if self.inner.link_lost.load(Ordering::Acquire) {
            self.lost()
        } else {
            server(e)
        }
    }

    /// A publish that was sent but not acknowledged: unknown outcome
    /// (closing is reported as [`Error::Closed`]).
    fn unconfirmed(&self, subject: &str, cause: &Error) -> Error {
        match cause {
            Error::Closed => Error::Closed,
            cause => Error::AckUnknown {
                subject: subject.to_owned(),
                reason: cause.to_string(),
            },
        }
    }

    /// A batch message that was never sent because an earlier one could
    /// not be: the same error, which says nothing was stored.
    fn not_sent(&self, cause: &Error) -> Error {
        match cause {
            Error::Closed => Error::Closed,
            Error::Unreachable { url, reason } => Error::Unreachable {
                url: url.clone(),
                reason: reason.clone(),
            },
            other => Error::Server(format!(
                "not sent: an earlier message of the batch failed ({other})"
            )),
        }
    }

    fn map_get_error(stream: &str, what: String, e: ApiError) -> Error {
        match e.err_code {
            codes::STREAM_NOT_FOUND => not_found(stream),
            codes::NO_MESSAGE_FOUND => Error::MessageNotFound {
                stream: stream.to_owned(),
                what,
            },
            _ => generic(e),
        }
    }

    /// The newest message on `subj`, found by walking the subject forward.
    ///
    /// nats-server 2.9 forgets a subject's earlier messages for
    /// last-by-subject lookups once the subject's newest message is deleted
    /// (its per-subject index keeps the deleted sequence as the last). When
    /// the server still counts messages on the subject, this finds the
    /// newest one with next-by-subject reads, one per stored message.
    async fn last_by_scan(&self, stream: &str, subj: &str, what: String) -> Result<StoredMessage> {
        let missing = || Error::MessageNotFound {
            stream: stream.to_owned(),
            what: what.clone(),
        };
        let info = match self
            .api(
                &format!("STREAM.INFO.{stream}"),
                json!({ "subjects_filter": subj }),
            )
            .await?
        {
            Ok(v) => v,
            Err(e) if e.err_code == codes::STREAM_NOT_FOUND => return Err(not_found(stream)),
            Err(e) => return Err(generic(e)),
        };
        let count = info
            .pointer("/state/subjects")
            .and_then(|m| m.get(subj))
            .and_then(Value::as_u64)
            .unwrap_or(0);
        if count == 0 {
            return Err(missing());
        }
        let mut seq = info
            .pointer("/state/first_seq")
            .and_then(Value::as_u64)
            .unwrap_or(1);
        let mut last = None;
        loop {
            let body = json!({ "seq": seq, "next_by_subj": subj });
            match self.msg_get(stream, body, what.clone()).await {
                Ok(m) => {
                    seq = m.seq + 1;
                    last = Some(m);
                }
                Err(Error::MessageNotFound { .. }) => break,
                Err(e) => return Err(e),
            }
        }
        last.ok_or_else(missing)
    }

    /// nats-server 2.9 reports 0 as a subject's last sequence once the
    /// subject's newest message was deleted (see [`Self::last_by_scan`]);
    /// a refused `Nats-Expected-Last-Subject-Sequence` then names the real
    /// one, looked up here.
    async fn correct_subject_seq(
        &self,
        stream: &str,
        m: &Message,
        r: Result<Option<PublishAck>>,
    ) -> Result<Option<PublishAck>> {
        match r {
            Err(Error::WrongLastSequence {
                expected,
                current: 0,
            }) if m.headers.get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE).is_some()
                && m.headers.get(NATS_EXPECTED_LAST_SEQUENCE).is_none() =>
            {
                let what = format!("for subject {:?}", m.subject);
                let current = match self.last_by_scan(stream, &m.subject, what).await {
                    Ok(last) => last.seq,
                    Err(_) => 0,
                };
                Err(Error::WrongLastSequence { expected, current })
            }
            other => other,
        }
    }

    async fn msg_get(&self, stream: &str, body: Value, what: String) -> Result<StoredMessage> {
        durabus_core::validate_stream_name(stream)?;
        match self.api(&format!("STREAM.MSG.GET.{stream}"), body).await? {
            Ok(v) => api::stored_message(stream, v).map_err(Error::Server),
            Err(e) => Err(Self::map_get_error(stream, what, e)),
        }
    }
}

#[async_trait::async_trait]
impl Backend for NatsBackend {
    async fn create_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        self.check()?;
        config.validate()?;
        match self.fetch_info(&config.name).await {
            Ok(info) => {
                return if Self::normalized(&info.config) == Self::normalized(&config) {
                    self.remember(&info);
                    Ok(info)
                } else {
                    Err(Error::StreamNameInUse { name: config.name })
                };
            }
            Err(Error::StreamNotFound { .. }) => {}
            Err(e) => return Err(e),
        }
        let body = api::config_to_json(&config);
        match self
            .api(&format!("STREAM.CREATE.{}", config.name), body)
            .await?
        {
            Ok(v) => {
                let info = api::stream_info(v).map_err(Error::Server)?;
                self.remember(&info);
                Ok(info)
            }
            Err(e) if e.err_code == codes::STREAM_NAME_IN_USE => {
                Err(Error::StreamNameInUse { name: config.name })
            }
            Err(e) if e.err_code == codes::SUBJECTS_OVERLAP => {
                Err(self.overlap_error(&config, e).await)
            }
            Err(e) => Err(generic(e)),
        }
    }

    async fn update_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        self.check()?;
        config.validate()?;
        let body = api::config_to_json(&config);
        match self
            .api(&format!("STREAM.UPDATE.{}", config.name), body)
            .await?
        {
            Ok(v) => {
                let info = api::stream_info(v).map_err(Error::Server)?;
                self.remember(&info);
                Ok(info)
            }
            Err(e) if e.err_code == codes::STREAM_NOT_FOUND => Err(not_found(&config.name)),
            Err(e) if e.err_code == codes::SUBJECTS_OVERLAP => {
                Err(self.overlap_error(&config, e).await)
            }
            Err(e) => Err(Error::InvalidConfig(e.description)),
        }
    }

    async fn stream_info(&self, name: &str) -> Result<StreamInfo> {
        self.check()?;
        durabus_core::validate_stream_name(name)?;
        self.fetch_info(name).await
    }

    async fn list_streams(&self) -> Result<Vec<StreamInfo>> {
        self.check()?;
        self.all_streams().await
    }

    async fn delete_stream(&self, name: &str) -> Result<()> {
        self.check()?;
        durabus_core::validate_stream_name(name)?;
        let r = self
            .api(&format!("STREAM.DELETE.{name}"), json!({}))
            .await?;
        self.forget(name);
        match r {
            Ok(_) => Ok(()),
            Err(e) if e.err_code == codes::STREAM_NOT_FOUND => Err(not_found(name)),
            Err(e) => Err(generic(e)),
        }
    }

    async fn purge_stream(&self, name: &str, request: PurgeRequest) -> Result<u64> {
        self.check()?;
        durabus_core::validate_stream_name(name)?;
        if request.keep.is_some() && request.up_to_seq.is_some() {
            return Err(Error::InvalidArgument(
                "purge: keep and up_to_seq are exclusive".into(),
            ));
        }
        if let Some(f) = &request.subject {
            subject::validate_filter(f)?;
        }
        let mut filter = request.subject.clone();
        if matches!(request.up_to_seq, Some(0 | 1)) || request.keep.is_some() {
            let info = self.fetch_info(name).await?;
            if info.config.deny_purge {
                return Err(Error::Denied {
                    stream: name.to_owned(),
                    operation: "purge",
                });
            }
            // nats-server 2.9 reads "up to 1" as "no bound": nothing lies
            // below sequence 1, so nothing is removed.
            if matches!(request.up_to_seq, Some(0 | 1)) {
                return Ok(0);
            }
            // nats-server 2.9 implements a stream-wide keep as "compact to
            // last_seq - keep + 1", which keeps fewer than asked when
            // messages were deleted in between; the filtered path counts.
            if filter.is_none() && info.state.num_deleted > 0 {
                let subjects = info.config.effective_subjects();
                match subjects.as_slice() {
                    [one] if one != ">" => filter = Some(one.clone()),
                    _ => {}
                }
            }
        }
        let mut up_to = request.up_to_seq;
        if let (None, Some(n)) = (&filter, up_to) {
            // nats-server 2.9 compacts to exactly `n` and reports it as
            // first_seq even when `n` itself was deleted: compact to the
            // first message present at or after `n` instead (or purge all).
            match self
                .api(
                    &format!("STREAM.MSG.GET.{name}"),
                    json!({ "seq": n, "next_by_subj": ">" }),
                )
                .await?
            {
                Ok(v) => {
                    up_to = v
                        .get("message")
                        .and_then(|m| m.get("seq"))
                        .and_then(Value::as_u64)
                        .or(up_to);
                }
                Err(e) if e.err_code == codes::NO_MESSAGE_FOUND => up_to = None,
                Err(e) if e.err_code == codes::STREAM_NOT_FOUND => return Err(not_found(name)),
                Err(_) => {}
            }
        }
        let mut body = json!({});
        if let Some(f) = &filter {
            body["filter"] = json!(f);
        }
        if let Some(k) = request.keep {
            body["keep"] = json!(k);
        }
        if let Some(s) = up_to {
            body["seq"] = json!(s);
        }
        match self.api(&format!("STREAM.PURGE.{name}"), body).await? {
            Ok(v) => Ok(v.get("purged").and_then(Value::as_u64).unwrap_or(0)),
            Err(e) if e.err_code == codes::STREAM_NOT_FOUND => Err(not_found(name)),
            Err(e) if e.description.contains("not permitted") => Err(Error::Denied {
                stream: name.to_owned(),
                operation: "purge",
            }),
            Err(e) => Err(generic(e)),
        }
    }

    async fn publish(&self, message: Message) -> Result<Option<PublishAck>> {
        self.check()?;
        let route = match self.memoized(&message.subject) {
            Some(route) => route,
            None => {
                subject::validate_publish(&message.subject)?;
                let Some(route) = self.capturing(&message.subject).await? else {
                    self.core_publish(message).await?;
                    return Ok(None);
                };
                route
            }
        };
        // Bounded by the client's request timeout: no second timer.
        let reply = match self
            .inner
            .client
            .request_with_headers(
                Subject::from(message.subject.as_str()),
                to_nats_headers(&message.headers),
                message.payload.clone(),
            )
            .await
        {
            Err(e) => {
                return match self.request_error(&e, self.inner.request_timeout) {
                    Error::NoResponders { .. } => self.no_responders(&route.name, &message).await,
                    Error::Closed => Err(Error::Closed),
                    other => Err(self.unconfirmed(&message.subject, &other)),
                };
            }
            Ok(m) => m,
        };
        self.settle(&route, &message, &reply).await
    }

    async fn publish_batch(
        &self,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Option<PublishAck>>>> {
        self.check()?;
        let client = &self.inner.client;
        let prefix = client.new_inbox();
        let mut acks = client
            .subscribe(format!("{prefix}.*"))
            .await
            .map_err(|e| self.closed_or(e))?;
        let mut results: Vec<Option<Result<Option<PublishAck>>>> =
            Vec::with_capacity(messages.len());
        // Slot i: message i while its ack is awaited.
        let mut waiting: Vec<Option<(Arc<Route>, Message)>> = Vec::with_capacity(messages.len());
        let mut pending = 0usize;
        // Batches mostly repeat one subject: its route is looked up once.
        let mut last: Option<(String, Arc<Route>)> = None;
        // After a failure to send, the rest of the batch is not sent: each
        // gets that error, and what was sent is still collected.
        let mut failed: Option<Error> = None;
        for (i, m) in messages.into_iter().enumerate() {
            waiting.push(None);
            if let Some(e) = &failed {
                results.push(Some(Err(self.not_sent(e))));
                continue;
            }
            let route = match &last {
                Some((subject, route)) if *subject == m.subject => Ok(Some(route.clone())),
                _ => match self.memoized(&m.subject) {
                    Some(route) => Ok(Some(route)),
                    None => match subject::validate_publish(&m.subject) {
                        Err(e) => {
                            results.push(Some(Err(e)));
                            continue;
                        }
                        Ok(()) => self.capturing(&m.subject).await,
                    },
                },
            };
            let sent = match route {
                Err(e) => Err(e),
                Ok(None) => self.core_publish(m).await.map(|()| None),
                Ok(Some(route)) => {
                    if last.as_ref().is_none_or(|(s, _)| *s != m.subject) {
                        last = Some((m.subject.clone(), route.clone()));
                    }
                    client
                        .publish_with_reply_and_headers(
                            // async-nats copies a String subject again; a
                            // Subject made from it takes its buffer.
                            Subject::from(m.subject.clone()),
                            Subject::from(format!("{prefix}.{i}")),
                            to_nats_headers(&m.headers),
                            m.payload.clone(),
                        )
                        .await
                        .map_err(|e| self.closed_or(e))
                        .map(|()| Some((route, m)))
                }
            };
            match sent {
                Ok(Some(w)) => {
                    waiting[i] = Some(w);
                    pending += 1;
                    results.push(None);
                }
                Ok(None) => results.push(Some(Ok(None))),
                Err(e) => {
                    results.push(Some(Err(self.not_sent(&e))));
                    failed = Some(e);
                }
            }
        }
        let timeout = self.inner.request_timeout;
        let mut lost = Error::Timeout(timeout);
        if let Err(e) = client.flush().await {
            lost = self.closed_or(e);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while pending > 0 {
            let reply = match tokio::time::timeout_at(deadline, acks.next()).await {
                Err(_) => break,
                Ok(None) => {
                    if let Err(e) = self.check() {
                        lost = e;
                    }
                    break;
                }
                Ok(Some(r)) => r,
            };
            let Some(i) = reply
                .subject
                .rsplit('.')
                .next()
                .and_then(|s| s.parse::<usize>().ok())
            else {
                continue;
            };
            if let Some((route, m)) = waiting.get_mut(i).and_then(Option::take) {
                pending -= 1;
                results[i] = Some(self.settle(&route, &m, &reply).await);
            }
        }
        for (i, slot) in waiting.into_iter().enumerate() {
            if let Some((_, m)) = slot {
                results[i] = Some(Err(self.unconfirmed(&m.subject, &lost)));
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(self.unconfirmed("", &lost))))
            .collect())
    }

    async fn subscribe(&self, filter: &str, queue_group: Option<&str>) -> Result<Subscription> {
        self.check()?;
        subject::validate_filter(filter)?;
        let client = &self.inner.client;
        let sub = match queue_group {
            Some(q) => {
                client
                    .queue_subscribe(filter.to_owned(), q.to_owned())
                    .await
            }
            None => client.subscribe(filter.to_owned()).await,
        }
        .map_err(|e| self.closed_or(e))?;
        // The server's no-responders status (sent to a reply subject when a
        // request found nobody) is a signal, not a published message: the
        // embedded backend never delivers one, so neither does this one.
        let stream = sub
            .filter(|m| futures::future::ready(m.status != Some(StatusCode::NO_RESPONDERS)))
            .map(from_nats_message)
            .take_until(self.closed_signal())
            .boxed();
        Ok(Subscription::new(
            filter,
            stream,
            Arc::new(AtomicU64::new(0)),
        ))
    }

    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        self.check()?;
        subject::validate_publish(&message.subject)?;
        // The caller's timeout, not the client's request timeout.
        let request = async_nats::Request::new()
            .headers(to_nats_headers(&message.headers))
            .payload(message.payload)
            .timeout(Some(timeout));
        match self
            .inner
            .client
            .send_request(message.subject.clone(), request)
            .await
        {
            Ok(m) => Ok(from_nats_message(m)),
            Err(e) => match self.request_error(&e, timeout) {
                Error::NoResponders { .. } => Err(Error::NoResponders {
                    subject: message.subject,
                }),
                other => Err(other),
            },
        }
    }

    async fn get_message(&self, stream: &str, seq: u64) -> Result<StoredMessage> {
        self.check()?;
        self.msg_get(stream, json!({ "seq": seq }), format!("at sequence {seq}"))
            .await
    }

    async fn get_last_message(&self, stream: &str, subj: &str) -> Result<StoredMessage> {
        self.check()?;
        subject::validate_publish(subj)?;
        let what = format!("for subject {subj:?}");
        match self
            .msg_get(stream, json!({ "last_by_subj": subj }), what.clone())
            .await
        {
            Err(Error::MessageNotFound { .. }) => self.last_by_scan(stream, subj, what).await,
            other => other,
        }
    }

    async fn delete_message(&self, stream: &str, seq: u64) -> Result<()> {
        self.check()?;
        durabus_core::validate_stream_name(stream)?;
        match self
            .api(
                &format!("STREAM.MSG.DELETE.{stream}"),
                json!({ "seq": seq, "no_erase": true }),
            )
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) if e.err_code == codes::STREAM_NOT_FOUND => Err(not_found(stream)),
            Err(e) if e.description.contains("not permitted") => Err(Error::Denied {
                stream: stream.to_owned(),
                operation: "delete",
            }),
            Err(e)
                if e.err_code == codes::NO_MESSAGE_FOUND
                    || e.err_code == codes::SEQUENCE_NOT_FOUND
                    || (e.err_code == codes::MSG_DELETE_FAILED
                        && ["not found", "no message", "EOF"]
                            .iter()
                            .any(|w| e.description.contains(w))) =>
            {
                Err(Error::MessageNotFound {
                    stream: stream.to_owned(),
                    what: format!("at sequence {seq}"),
                })
            }
            Err(e) => Err(generic(e)),
        }
    }

    async fn replay(&self, stream: &str, options: ReplayOptions) -> Result<Replay> {
        self.check()?;
        durabus_core::validate_stream_name(stream)?;
        if let Some(f) = &options.filter {
            subject::validate_filter(f)?;
        }
        if options.start == ReplayStart::Sequence(0) {
            return Err(Error::InvalidArgument(
                "replay from sequence 0: sequences start at 1".into(),
            ));
        }
        let info = self.fetch_info(stream).await?;
        let end = options.stop_at_end.then_some(info.state.last_seq);
        let mut state = ReplayState {
            backend: self.clone(),
            stream: ByteString::from(stream),
            filter: options.filter.clone(),
            start: options.start,
            sub: None,
            consumer: None,
            next_cseq: 1,
            last_sseq: 0,
            end,
            done: false,
            events: self.inner.events.subscribe(),
            idle_rounds: 0,
        };
        if end == Some(0) || (end.is_some() && info.state.messages == 0) {
            state.done = true;
        } else {
            let pending = state.start_consumer().await?;
            if end.is_some() && pending == 0 {
                state.done = true;
            }
        }
        let s = futures::stream::unfold(state, |mut st| async move {
            let item = st.next().await?;
            Some((item, st))
        })
        .take_until(self.closed_signal())
        .boxed();
        Ok(Replay::new(s))
    }

    async fn create_consumer(&self, stream: &str, config: ConsumerConfig) -> Result<ConsumerInfo> {
        self.nats_create_consumer(stream, config).await
    }

    async fn update_consumer(&self, stream: &str, config: ConsumerConfig) -> Result<ConsumerInfo> {
        self.nats_update_consumer(stream, config).await
    }

    async fn consumer_info(&self, stream: &str, name: &str) -> Result<ConsumerInfo> {
        self.nats_consumer_info(stream, name).await
    }

    async fn list_consumers(&self, stream: &str) -> Result<Vec<ConsumerInfo>> {
        self.nats_list_consumers(stream).await
    }

    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<()> {
        self.nats_delete_consumer(stream, name).await
    }

    async fn fetch(
        &self,
        stream: &str,
        consumer: &str,
        batch: usize,
        expires: Duration,
    ) -> Result<Vec<Delivery>> {
        self.nats_fetch(stream, consumer, batch, expires).await
    }

    async fn ack(&self, delivery: &AckRef, kind: AckKind) -> Result<()> {
        self.nats_ack(delivery, kind, false).await
    }

    async fn ack_confirmed(&self, delivery: &AckRef, kind: AckKind) -> Result<()> {
        self.nats_ack(delivery, kind, true).await
    }

    async fn close(&self) -> Result<()> {
        if self.inner.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        self.inner.close_tx.send_replace(true);
        let drain = self.inner.drain_timeout;
        let client = &self.inner.client;
        let _ = tokio::time::timeout(drain, async {
            let _ = client.flush().await;
            let _ = client.drain().await;
        })
        .await;
        Ok(())
    }

    async fn ping(&self) -> Result<Duration> {
        let start = std::time::Instant::now();
        match self.api("INFO", json!({})).await? {
            Ok(_) => Ok(start.elapsed()),
            Err(e) => Err(generic(e)),
        }
    }

    fn status(&self) -> ConnectionStatus {
        if self.inner.closed.load(Ordering::Acquire) || self.inner.link_lost.load(Ordering::Acquire)
        {
            return ConnectionStatus::Closed;
        }
        match self.inner.client.connection_state() {
            State::Connected => ConnectionStatus::Connected,
            State::Disconnected => ConnectionStatus::Reconnecting,
            State::Pending => ConnectionStatus::Connecting,
        }
    }

    fn events(&self) -> Option<broadcast::Receiver<Event>> {
        Some(self.inner.events.subscribe())
    }
}

/// Whether a replay should wait and try again rather than end.
fn retryable(e: &Error) -> bool {
    e.is_connection_failure() || matches!(e, Error::JetStreamNotEnabled)
}

impl Drop for ReplayState {
    fn drop(&mut self) {
        self.release();
    }
}

/// An ordered consumer, driven by `next()`; all state lives here, so a
/// cancelled `next()` loses nothing.
struct ReplayState {
    backend: NatsBackend,
    /// Shared by every message yielded (a reference count, not a copy).
    stream: ByteString,
    filter: Option<String>,
    start: ReplayStart,
    sub: Option<async_nats::Subscriber>,
    consumer: Option<String>,
    /// The consumer sequence the next delivery must have.
    next_cseq: u64,
    /// The last stream sequence yielded.
    last_sseq: u64,
    /// Stop after this stream sequence (stop_at_end).
    end: Option<u64>,
    done: bool,
    /// Connection events: after a reconnect the consumer is recreated at
    /// once (a restarted server has lost it).
    events: broadcast::Receiver<Event>,
    /// Idle heartbeats of a bounded replay since the last delivery.
    idle_rounds: u32,
}

impl ReplayState {
    /// (Re)creates the consumer after `last_sseq`; returns its pending count.
    async fn start_consumer(&mut self) -> Result<u64> {
        let client = self.backend.inner.client.clone();
        if let Some(old) = self.consumer.take() {
            let _ = self
                .backend
                .api(&format!("CONSUMER.DELETE.{}.{old}", self.stream), json!({}))
                .await;
        }
        self.sub = None;
        let deliver = client.new_inbox();
        let sub = client
            .subscribe(deliver.clone())
            .await
            .map_err(|e| self.backend.closed_or(e))?;
        let mut cfg = json!({
            "deliver_subject": deliver,
            "ack_policy": "none",
            "max_deliver": 1,
            "flow_control": true,
            "idle_heartbeat": u64::try_from(self.heartbeat().as_nanos()).unwrap_or(u64::MAX),
            "mem_storage": true,
            "replay_policy": "instant",
            "num_replicas": 1,
            // A backstop: a dropped replay deletes its consumer itself.
            "inactive_threshold": 30_000_000_000u64,
        });
        if self.last_sseq > 0 {
            cfg["deliver_policy"] = json!("by_start_sequence");
            cfg["opt_start_seq"] = json!(self.last_sseq + 1);
        } else {
            match self.start {
                ReplayStart::Sequence(s) => {
                    cfg["deliver_policy"] = json!("by_start_sequence");
                    cfg["opt_start_seq"] = json!(s);
                }
                ReplayStart::Time(t) => {
                    // nats-server compares start times as i64 nanoseconds:
                    // a later time wraps around to the past.
                    let latest = UNIX_EPOCH + Duration::from_nanos(i64::MAX as u64);
                    let t = t.clamp(UNIX_EPOCH, latest);
                    cfg["deliver_policy"] = json!("by_start_time");
                    cfg["opt_start_time"] = json!(humantime::format_rfc3339_nanos(t).to_string());
                }
                ReplayStart::New => cfg["deliver_policy"] = json!("new"),
                ReplayStart::LastPerSubject => cfg["deliver_policy"] = json!("last_per_subject"),
            }
        }
        if let Some(f) = &self.filter {
            cfg["filter_subject"] = json!(f);
        } else if self.start == ReplayStart::LastPerSubject {
            // nats-server wants a filter with last_per_subject.
            cfg["filter_subject"] = json!(">");
        }
        let body = json!({ "stream_name": self.stream, "config": cfg });
        let v = match self
            .backend
            .api(&format!("CONSUMER.CREATE.{}", self.stream), body)
            .await?
        {
            Ok(v) => v,
            Err(e) if e.err_code == codes::STREAM_NOT_FOUND => return Err(not_found(&self.stream)),
            Err(e) => return Err(generic(e)),
        };
        self.consumer = v.get("name").and_then(Value::as_str).map(str::to_owned);
        self.sub = Some(sub);
        self.next_cseq = 1;
        // After a reset with New, continue from what was seen.
        if matches!(self.start, ReplayStart::New) {
            self.start = ReplayStart::Sequence(self.last_sseq + 1);
        }
        Ok(v.get("num_pending").and_then(Value::as_u64).unwrap_or(0))
    }

    /// Unsubscribes and deletes the consumer (in the background).
    fn release(&mut self) {
        self.sub = None;
        let Some(name) = self.consumer.take() else {
            return;
        };
        if self.backend.check().is_err() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let client = self.backend.inner.client.clone();
            let timeout = self.backend.inner.request_timeout;
            let subject = format!("$JS.API.CONSUMER.DELETE.{}.{name}", self.stream);
            handle.spawn(async move {
                let _ = tokio::time::timeout(timeout, client.request(subject, Bytes::new())).await;
            });
        }
    }

    async fn next(&mut self) -> Option<Result<StoredMessage>> {
        loop {
            if self.done {
                self.release();
                return None;
            }
            if self.sub.is_none() {
                match self.start_consumer().await {
                    Ok(_) => {}
                    // The server is away or busy: the replay goes on once
                    // it answers again, from after the last message yielded.
                    Err(e) if retryable(&e) && self.backend.check().is_ok() => {
                        tracing::debug!(stream = %self.stream, error = %e, "replay waits for the server");
                        self.wait_reconnect(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            let wait = self.heartbeat() * 3;
            let sub = self.sub.as_mut()?;
            let next = tokio::select! {
                m = tokio::time::timeout(wait, sub.next()) => m,
                e = self.events.recv() => {
                    if matches!(e, Ok(Event::Connected)) {
                        self.sub = None;
                    }
                    continue;
                }
            };
            let m = match next {
                Err(_) => {
                    // Heartbeats stopped: recreate the consumer.
                    self.sub = None;
                    continue;
                }
                Ok(None) => {
                    if self.backend.check().is_err() {
                        self.done = true;
                        return None;
                    }
                    self.sub = None;
                    continue;
                }
                Ok(Some(m)) => m,
            };
            if m.status.is_some() {
                let idle = self.control(m).await;
                if idle && self.end.is_some() && self.sub.is_some() && !self.remaining().await {
                    self.done = true;
                    return None;
                }
                continue;
            }
            let Some(ack) = m.reply.as_deref().and_then(api::parse_ack_subject) else {
                continue;
            };
            if ack.consumer_seq != self.next_cseq {
                // A gap: start again after the last message yielded.
                self.sub = None;
                continue;
            }
            self.next_cseq += 1;
            if let Some(end) = self.end {
                if ack.stream_seq > end {
                    self.done = true;
                    return None;
                }
            }
            self.last_sseq = ack.stream_seq;
            if let Some(end) = self.end {
                // A pending count of 0 can come from a replica still
                // catching up: ask the stream before ending early.
                if ack.stream_seq >= end || (ack.pending == 0 && !self.remaining().await) {
                    self.done = true;
                }
            }
            self.idle_rounds = 0;
            let stored = StoredMessage {
                stream: self.stream.clone(),
                seq: ack.stream_seq,
                subject: api::shared_subject(m.subject),
                time: SystemTime::UNIX_EPOCH + Duration::from_nanos(ack.time_nanos),
                headers: from_nats_headers(m.headers.as_ref()),
                payload: m.payload,
            };
            return Some(Ok(stored));
        }
    }

    /// After an idle heartbeat of a bounded replay: whether messages up to
    /// the end remain to be delivered.
    ///
    /// An idle consumer is not proof: in a cluster it may sit on a replica
    /// still catching up, and nats-server 2.9's pending count can be too
    /// high after deletes. The stream (its leader) is asked for the next
    /// message after the last one yielded; a consumer that stays idle for
    /// 20 heartbeats (5 s) ends the replay anyway.
    async fn remaining(&mut self) -> bool {
        self.idle_rounds += 1;
        let Some(end) = self.end else { return false };
        if self.idle_rounds > 20 {
            tracing::warn!(stream = %self.stream, after = self.last_sseq, "bounded replay ends on a consumer idle for 5 s");
            return false;
        }
        let from = match (self.last_sseq, self.start) {
            (0, ReplayStart::Sequence(s)) => s,
            (0, _) => return self.idle_rounds < 2,
            (last, _) => last + 1,
        };
        if from > end {
            return false;
        }
        let body = json!({ "seq": from, "next_by_subj": self.filter.as_deref().unwrap_or(">") });
        match self
            .backend
            .api(&format!("STREAM.MSG.GET.{}", self.stream), body)
            .await
        {
            Ok(Ok(v)) => v
                .pointer("/message/seq")
                .and_then(Value::as_u64)
                .is_some_and(|seq| seq <= end),
            Ok(Err(e)) if e.err_code == codes::NO_MESSAGE_FOUND => false,
            // Unknown: wait for the next heartbeat.
            _ => true,
        }
    }

    /// Waits for a reconnect, or `at_most`.
    async fn wait_reconnect(&mut self, at_most: Duration) {
        let reconnected = async {
            loop {
                match self.events.recv().await {
                    Ok(Event::Connected) | Err(broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
            }
        };
        let _ = tokio::time::timeout(at_most, reconnected).await;
    }

    /// Idle heartbeat interval: short for bounded replays, whose end a
    /// heartbeat signals.
    fn heartbeat(&self) -> Duration {
        if self.end.is_some() {
            BOUNDED_HEARTBEAT
        } else {
            HEARTBEAT
        }
    }

    /// Flow control and heartbeats; true for an idle heartbeat.
    async fn control(&mut self, m: async_nats::Message) -> bool {
        let client = self.backend.inner.client.clone();
        if let Some(reply) = m.reply {
            let _ = client.publish(reply, Bytes::new()).await;
            return false;
        }
        let Some(headers) = m.headers.as_ref() else {
            return true;
        };
        if let Some(stalled) = headers.get("Nats-Consumer-Stalled") {
            let _ = client
                .publish(stalled.as_str().to_owned(), Bytes::new())
                .await;
        }
        if let Some(last) = headers
            .get("Nats-Last-Consumer")
            .and_then(|v| v.as_str().parse::<u64>().ok())
        {
            if last + 1 != self.next_cseq {
                self.sub = None;
            }
        }
        true
    }
}
