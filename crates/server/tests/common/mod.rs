//! What the hub's test files share.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use durabus_server::{Server, ServerOptions};

/// A hub over a fresh in-memory store, on a free loopback port.
pub(crate) async fn hub(options: ServerOptions) -> Server {
    let store = durabus_log::Store::memory(durabus_log::Options::default()).unwrap();
    let backend: Arc<dyn durabus_core::Backend> = Arc::new(store);
    Server::bind(backend, "127.0.0.1:0", options).await.unwrap()
}
