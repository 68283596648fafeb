//! The hub's listener: accepts connections, hands each to `conn`, and
//! shuts down gracefully (stop accepting, let every connection finish the
//! operations it had read, flush its answers, close).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::BytesMut;
use durabus_core::Backend;
use rand::Rng as _;
use tokio::io::AsyncWriteExt as _;
use tokio::net::{TcpListener, ToSocketAddrs};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ctx::{PushConsumers, Shared};
use crate::proto;
use crate::ServerOptions;

/// A running hub.
pub struct Server {
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Listens on `addr` (port 0 picks a free one) and serves `backend` to
    /// every client that connects. The backend stays the caller's: close it
    /// after [`Server::shutdown`].
    pub async fn bind(
        backend: Arc<dyn Backend>,
        addr: impl ToSocketAddrs,
        options: ServerOptions,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            backend,
            options,
            server_id: server_id(),
            addr,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            connections: AtomicUsize::new(0),
            next_client: AtomicU64::new(1),
            push: PushConsumers::default(),
        });
        let accept = tokio::spawn(accept_loop(shared.clone(), listener));
        tracing::info!(%addr, "hub listening");
        Ok(Server { shared, accept })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `nats://<address>`: what clients connect to.
    pub fn url(&self) -> String {
        format!("nats://{}", self.shared.addr)
    }

    /// Clients connected now.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Relaxed)
    }

    /// Stops accepting, lets each connection finish the operations it has
    /// read (publishes stored and acknowledged, answers written), then
    /// closes every connection; waits at most the options'
    /// `shutdown_timeout`.
    pub async fn shutdown(self) {
        self.shared.shutdown.cancel();
        self.accept.abort();
        self.shared.tracker.close();
        if tokio::time::timeout(
            self.shared.options.shutdown_timeout,
            self.shared.tracker.wait(),
        )
        .await
        .is_err()
        {
            tracing::warn!("hub shutdown: some connections did not finish in time");
        }
        tracing::info!(addr = %self.shared.addr, "hub stopped");
    }
}

impl Drop for Server {
    /// Stops accepting and closes every connection, without waiting.
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
        self.accept.abort();
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    loop {
        let (socket, peer) = match listener.accept().await {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                tracing::warn!(error = %e, "hub: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = socket.set_nodelay(true);
        let n = shared.connections.fetch_add(1, Ordering::AcqRel);
        if n >= shared.options.max_connections {
            shared.connections.fetch_sub(1, Ordering::AcqRel);
            tokio::spawn(refuse(socket, "maximum connections exceeded"));
            continue;
        }
        let client_id = shared.next_client.fetch_add(1, Ordering::Relaxed);
        let s = shared.clone();
        shared.tracker.spawn(async move {
            crate::conn::serve(s.clone(), socket, client_id, peer.ip().to_string()).await;
            s.connections.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

async fn refuse(mut socket: tokio::net::TcpStream, why: &str) {
    let mut b = BytesMut::new();
    proto::write_err(&mut b, why);
    let _ = socket.write_all(&b).await;
    let _ = socket.shutdown().await;
}

/// A random id, shaped as nats-server's (56 characters of A-Z and 2-7).
fn server_id() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut rng = rand::rng();
    std::iter::once('N')
        .chain((0..55).map(|_| char::from(ALPHABET[rng.random_range(0..ALPHABET.len())])))
        .collect()
}
