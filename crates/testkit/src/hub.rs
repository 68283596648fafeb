//! A hub (the server of `durabus serve`) in the test's own process, over a
//! fresh store: the fourth backend of the conformance suite, reached through
//! the `nats://` backend exactly as a real nats-server is.

use durabus::Bus;
use durabus_server::{Server, ServerOptions};
use tempfile::TempDir;

/// A running hub on a free port of 127.0.0.1, with the store it serves.
/// Dropping it stops the server; [`Hub::stop`] does so gracefully.
pub struct Hub {
    server: Option<Server>,
    store: Bus,
    _dir: Option<TempDir>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Hub {
    /// A hub over `url`'s store (`file:` or `memory:`).
    ///
    /// # Panics
    /// If the store cannot be opened or no port bound: a test cannot
    /// proceed without its server.
    pub async fn serve(url: &str, dir: Option<TempDir>) -> Hub {
        let store = match durabus::connect(url).await {
            Ok(b) => b,
            Err(e) => panic!("cannot open {url} for the hub: {e}"),
        };
        let server = match Server::bind(
            store.backend().clone(),
            "127.0.0.1:0",
            ServerOptions::default(),
        )
        .await
        {
            Ok(s) => s,
            Err(e) => panic!("cannot start the hub: {e}"),
        };
        Hub {
            server: Some(server),
            store,
            _dir: dir,
        }
    }

    /// A hub over a `file:` store in a fresh temp dir (`durability=none`:
    /// crash durability is the kill -9 tests' job).
    pub async fn file() -> Hub {
        let dir = crate::temp_dir();
        let url = crate::file_url(dir.path(), "none");
        Hub::serve(&url, Some(dir)).await
    }

    /// A hub over a `memory:` store.
    pub async fn memory() -> Hub {
        Hub::serve("memory:", None).await
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        self.server.as_ref().map(Server::url).unwrap_or_default()
    }

    /// Stops the server gracefully, then closes the store.
    pub async fn stop(mut self) {
        if let Some(server) = self.server.take() {
            server.shutdown().await;
        }
        let _ = self.store.close().await;
    }
}

/// Runs `check` with the URL of a fresh real nats-server, then of a fresh
/// hub over `file:`: a check a real nats-server is the oracle for runs
/// unchanged against both. Panics, saying how to install it, when
/// nats-server is missing.
pub async fn against_nats_server_and_hub(check: impl AsyncFn(&str)) {
    let nats =
        crate::nats::NatsServer::start().unwrap_or_else(|e| panic!("starting nats-server: {e:#}"));
    check(&nats.url()).await;
    let hub = Hub::file().await;
    check(&hub.url()).await;
    hub.stop().await;
}
