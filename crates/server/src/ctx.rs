//! What a connection's tasks share, and how replies reach the connection:
//! the server's shared state ([`Shared`], with the table of the push
//! consumers it delivers) and one connection's context ([`ConnCtx`]):
//! its writer, its subscriptions, its CONNECT options, and delivery to a
//! reply subject.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use durabus_core::jsapi::ConsumerConfigJson;
use durabus_core::{Backend, ByteString, HeaderMap, Message, Origin};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::outbound::{Out, Outbound, SubTable};
use crate::proto::{self, ServerInfo};
use crate::ServerOptions;

/// The NATS protocol version the hub speaks (the features of nats-server
/// 2.9 that it implements).
const VERSION: &str = "2.9.10";

/// What every connection of a server shares.
pub(crate) struct Shared {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) options: ServerOptions,
    pub(crate) server_id: String,
    pub(crate) addr: SocketAddr,
    /// Cancelled by `Server::shutdown`.
    pub(crate) shutdown: CancellationToken,
    /// Every task of every connection.
    pub(crate) tracker: TaskTracker,
    pub(crate) connections: AtomicUsize,
    pub(crate) next_client: AtomicU64,
    /// The push consumers the hub delivers.
    pub(crate) push: PushConsumers,
}

impl Shared {
    /// Whether a CONNECT may go on: it gives the token, when one is set.
    pub(crate) fn authorized(&self, connect: &proto::ConnectInfo) -> bool {
        use subtle::ConstantTimeEq as _;
        match &self.options.auth_token {
            None => true,
            Some(token) => connect
                .auth_token
                .as_deref()
                .is_some_and(|given| bool::from(given.as_bytes().ct_eq(token.as_bytes()))),
        }
    }

    /// The `INFO` a new connection gets.
    pub(crate) fn info(&self, client_id: u64, peer: &str) -> ServerInfo {
        ServerInfo {
            server_id: self.server_id.clone(),
            server_name: self.options.name.clone(),
            version: VERSION.to_owned(),
            go: "durabus".to_owned(),
            host: self.addr.ip().to_string(),
            port: self.addr.port(),
            headers: true,
            max_payload: self.options.max_payload,
            proto: 1,
            client_id,
            client_ip: peer.to_owned(),
            jetstream: true,
            auth_required: self.options.auth_token.is_some(),
            tls_required: false,
        }
    }
}

pub(crate) struct Entry {
    /// Which task delivers it (a consumer deleted and created again gets
    /// another).
    pub(crate) id: u64,
    pub(crate) config: ConsumerConfigJson,
    pub(crate) stop: CancellationToken,
}

/// Ids of push consumer tasks.
pub(crate) static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// The push consumers the hub delivers, by `(stream, consumer)`.
#[derive(Default)]
pub(crate) struct PushConsumers(Mutex<HashMap<(String, String), Entry>>);

impl PushConsumers {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Entry>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The push settings of a consumer the hub delivers.
    pub(crate) fn config(&self, stream: &str, name: &str) -> Option<ConsumerConfigJson> {
        self.lock()
            .get(&(stream.to_owned(), name.to_owned()))
            .map(|e| e.config.clone())
    }

    /// Stops delivering a consumer.
    pub(crate) fn stop(&self, stream: &str, name: &str) {
        if let Some(e) = self.lock().remove(&(stream.to_owned(), name.to_owned())) {
            e.stop.cancel();
        }
    }

    /// Stops delivering every consumer of a stream (it was deleted).
    pub(crate) fn stop_stream(&self, stream: &str) {
        self.lock().retain(|(s, _), e| {
            if s == stream {
                e.stop.cancel();
            }
            s != stream
        });
    }
}

/// One publish as the publisher gets it.
pub(crate) struct PubItem {
    pub(crate) subject: ByteString,
    pub(crate) reply: Option<ByteString>,
    pub(crate) headers: HeaderMap,
    pub(crate) payload: Bytes,
}

/// A consumer's delivery as it goes out: the message's subject, its ack
/// subject, its header block and payload.
pub(crate) struct Delivered {
    pub(crate) subject: ByteString,
    pub(crate) ack: String,
    pub(crate) headers: Option<Bytes>,
    pub(crate) payload: Bytes,
}

impl Delivered {
    /// Its size as flow control counts it.
    pub(crate) fn size(&self) -> usize {
        self.subject.len()
            + self.ack.len()
            + self.headers.as_ref().map_or(0, Bytes::len)
            + self.payload.len()
    }
}

/// What a connection's tasks share.
pub(crate) struct ConnCtx {
    pub(crate) shared: Arc<Shared>,
    pub(crate) out: Outbound,
    pub(crate) subs: Arc<SubTable>,
    /// CONNECT `headers`: the client reads `HMSG`.
    pub(crate) headers: Arc<AtomicBool>,
    /// CONNECT `no_responders`: answer requests nobody listens to with 503.
    pub(crate) no_responders: AtomicBool,
    /// CONNECT `verbose`.
    pub(crate) verbose: AtomicBool,
    /// CONNECT `pedantic`.
    pub(crate) pedantic: AtomicBool,
    /// CONNECT `echo` (true unless the client said false): whether the
    /// connection's subscriptions get its own publishes.
    pub(crate) echo: AtomicBool,
    /// Whose publishes are this connection's, for `echo: false`.
    pub(crate) origin: Origin,
}

impl ConnCtx {
    /// Delivers a message to `to`, as a reply: to this connection's own
    /// subscriptions matching `to` when it has any (the usual case, a
    /// request's inbox), otherwise through the backend to whoever
    /// subscribes. `display` is the subject the `MSG` shows (a stream
    /// message delivered to an inbox shows its own subject).
    pub(crate) async fn deliver(
        &self,
        to: &str,
        display: Option<&str>,
        reply: Option<&str>,
        headers: Option<Bytes>,
        payload: Bytes,
    ) {
        let sids = self.subs.matching(to);
        if !sids.is_empty() {
            let headers = headers.filter(|_| self.headers.load(Ordering::Relaxed));
            for sid in sids {
                let mut frame = BytesMut::new();
                proto::write_msg(
                    &mut frame,
                    display.unwrap_or(to),
                    &sid,
                    reply,
                    headers.as_deref(),
                    &payload,
                );
                self.out.send(Out::Msg {
                    sid,
                    frame: frame.freeze(),
                });
            }
            return;
        }
        self.route(to, display, reply, headers, payload).await;
    }

    /// Delivers a message to whoever subscribes to `to`, through the
    /// backend (other connections, the serving process, queue groups).
    async fn route(
        &self,
        to: &str,
        display: Option<&str>,
        reply: Option<&str>,
        headers: Option<Bytes>,
        payload: Bytes,
    ) {
        let mut m = Message::new(display.unwrap_or(to), payload);
        m.reply = reply.map(str::to_owned);
        if let Some(block) = headers {
            m.headers = proto::routed_headers(&block);
        }
        if let Err(e) = self.shared.backend.deliver_to(to, m).await {
            tracing::debug!(subject = to, error = %e, "a message could not be delivered");
        }
    }

    /// Deliveries of a consumer to `to`, each with its own subject and its
    /// ack subject as the reply: one frame for the lot when `to` is this
    /// connection's (and no subscription of it counts toward a max),
    /// otherwise one by one as [`ConnCtx::deliver`].
    pub(crate) async fn deliver_all(&self, to: &str, items: Vec<Delivered>) {
        let (sids, limited) = self.subs.matching_unlimited(to);
        if sids.is_empty() || limited {
            for d in items {
                self.deliver(to, Some(&*d.subject), Some(&d.ack), d.headers, d.payload)
                    .await;
            }
            return;
        }
        let headers_ok = self.headers.load(Ordering::Relaxed);
        for sid in sids {
            let mut frame = BytesMut::new();
            for d in &items {
                let headers = d.headers.as_deref().filter(|_| headers_ok);
                proto::write_msg(
                    &mut frame,
                    &d.subject,
                    &sid,
                    Some(&d.ack),
                    headers,
                    &d.payload,
                );
            }
            self.out.send(Out::Msgs {
                sid,
                frame: frame.freeze(),
                count: items.len() as u64,
            });
        }
    }

    /// Deliveries of a consumer with a deliver group to `to`: each through
    /// the backend, whose queue groups pick one member per message (this
    /// connection's subscriptions included).
    pub(crate) async fn deliver_routed(&self, to: &str, items: Vec<Delivered>) {
        for d in items {
            self.route(to, Some(&*d.subject), Some(&d.ack), d.headers, d.payload)
                .await;
        }
    }

    /// A JSON answer to `to`.
    pub(crate) async fn answer(&self, to: &str, body: Vec<u8>) {
        self.deliver(to, None, None, None, Bytes::from(body)).await;
    }

    /// A status message (`NATS/1.0 <code> <description>`, no payload) to
    /// `to`, with extra headers.
    pub(crate) async fn status(&self, to: &str, code: u16, description: &str, headers: HeaderMap) {
        let block = proto::header_block(&headers, Some((code, description)));
        self.deliver(to, None, None, Some(block), Bytes::new())
            .await;
    }

    /// Whether anyone listens on `subject`: a subscription of this
    /// connection or of the backend (nats-server drops pull requests and
    /// pauses push consumers nobody listens to).
    pub(crate) fn has_interest(&self, subject: &str) -> bool {
        !self.subs.matching(subject).is_empty() || self.shared.backend.has_subscribers(subject)
    }

    /// The origin this connection publishes and subscribes under, when it
    /// does not want its own messages back (CONNECT `echo: false`).
    pub(crate) fn no_echo(&self) -> Option<Origin> {
        (!self.echo.load(Ordering::Relaxed)).then_some(self.origin)
    }

    /// Whether the client asked for no-responders statuses (it reads
    /// headers and said `no_responders`).
    pub(crate) fn wants_no_responders(&self) -> bool {
        self.no_responders.load(Ordering::Relaxed) && self.headers.load(Ordering::Relaxed)
    }
}
