//! The durabus hub: serves any [`durabus_core::Backend`] (usually the
//! embedded store of a `file:` directory) over the NATS client protocol and
//! the JetStream JSON API, so the `nats://` backend of durabus, and any NATS
//! client in any language, reach that store.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! # let backend: std::sync::Arc<dyn durabus_core::Backend> = todo!();
//! let server = durabus_server::Server::bind(backend, "127.0.0.1:4222", Default::default()).await?;
//! println!("serving on {}", server.url());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Modules, each depending only on those listed before it: `proto` (the
//! wire format, pure), `options`, `outbound` (a connection's writer),
//! `ctx` (what a connection's tasks share, and replies), `jetstream` (the
//! `$JS.API` and `$JS.ACK` subjects), `conn` (one connection's reader and
//! publisher), `server` (listeners and shutdown).

pub mod proto;

#[doc(hidden)]
pub mod fuzzing;

mod conn;
mod ctx;
mod jetstream;
mod options;
mod outbound;
mod server;

pub use options::ServerOptions;
pub use server::Server;
