//! The connection: [`NatsBackend`] itself, its state (open, closed, lost)
//! and the one JetStream API call every operation goes through.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::connection::State;
use async_nats::Client;
use bytes::Bytes;
use durabus_core::jsapi::{self, AccountInfoJson};
use durabus_core::{ApiError, ConnectionStatus, Error, Event, Result};
use futures::future::BoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{broadcast, watch};

use super::open::{connect_error, open};
use super::routes::RouteCache;
use crate::options::NatsOptions;

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
    routes: RouteCache,
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
            .field("status", &self.nats_status())
            .finish_non_exhaustive()
    }
}

/// A failure of the client library (or of encoding a request).
pub(super) fn internal(e: impl std::fmt::Display) -> Error {
    Error::internal(e.to_string())
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
        let backend = Self::connect_core(url, options).await?;
        if let Err(e) = backend.nats_ping().await {
            let _ = backend.nats_close().await;
            return Err(e);
        }
        Ok(backend)
    }

    /// Connects as [`NatsBackend::connect`] does (same URL, options and
    /// errors) without asking for JetStream: for publishing core NATS to a
    /// server that has none ([`NatsBackend::publish_core`]), as `nats pub`
    /// does. Calls that need JetStream fail with
    /// [`Error::JetStreamNotEnabled`] on such a server.
    pub async fn connect_core(url: &str, options: NatsOptions) -> Result<Self> {
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
                routes: RouteCache::default(),
            }),
        };
        backend.watch_link();
        // IMPORTANT: the options (and the secrets in them) are dropped, and
        // zeroed, here; async-nats holds the only copy from now on.
        drop(options);
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

    pub(super) fn check(&self) -> Result<()> {
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
    pub(super) fn request_error(&self, e: &async_nats::RequestError, timeout: Duration) -> Error {
        match e.kind() {
            async_nats::RequestErrorKind::TimedOut => Error::Timeout(timeout),
            async_nats::RequestErrorKind::NoResponders => Error::NoResponders {
                subject: String::new(),
            },
            async_nats::RequestErrorKind::Other => self.closed_or(e),
        }
    }

    /// A future that completes when the backend is closed.
    pub(super) fn closed_signal(&self) -> BoxFuture<'static, ()> {
        let mut rx = self.inner.close_tx.subscribe();
        async move {
            let _ = rx.wait_for(|c| *c).await;
        }
        .boxed()
    }

    /// One JetStream API call (`what` after `$JS.API.`, `body` its
    /// request) read as its answer's body `T`: `Ok(Err(api error))` when
    /// the server refused.
    pub(super) async fn api<T: DeserializeOwned>(
        &self,
        what: &str,
        body: &impl Serialize,
    ) -> Result<std::result::Result<T, ApiError>> {
        self.check()?;
        let subject = format!("$JS.API.{what}");
        let payload = Bytes::from(serde_json::to_vec(body).map_err(internal)?);
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
        jsapi::parse_response(&reply.payload).map_err(|e| {
            Error::internal(format!("unreadable JetStream API answer to {what} ({e})"))
        })
    }

    /// The async-nats client.
    pub(super) fn client(&self) -> &Client {
        &self.inner.client
    }

    /// The client's request timeout.
    pub(super) fn request_timeout(&self) -> Duration {
        self.inner.request_timeout
    }

    pub(super) fn closed_or(&self, e: impl std::fmt::Display) -> Error {
        if self.inner.closed.load(Ordering::Acquire) {
            Error::Closed
        } else if self.inner.link_lost.load(Ordering::Acquire) {
            self.lost()
        } else {
            internal(e)
        }
    }

    /// The route cache.
    pub(super) fn routes(&self) -> &RouteCache {
        &self.inner.routes
    }

    /// A new receiver of the connection events.
    pub(super) fn subscribe_events(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    /// [`durabus_core::Backend::close`].
    pub(super) async fn nats_close(&self) -> Result<()> {
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

    /// [`durabus_core::Backend::ping`].
    pub(super) async fn nats_ping(&self) -> Result<Duration> {
        let start = std::time::Instant::now();
        match self.api::<AccountInfoJson>("INFO", &json!({})).await? {
            Ok(_) => Ok(start.elapsed()),
            Err(e) => Err(e.generic()),
        }
    }

    /// [`durabus_core::Backend::status`].
    pub(super) fn nats_status(&self) -> ConnectionStatus {
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
}
