//! durabus L1: the NATS JetStream backend over `async-nats`.
//!
//! Streams, message get/delete and purge go through the JetStream JSON API
//! (`$JS.API.*`) directly, so errors keep their JetStream codes and map to
//! the same typed [`durabus_core::Error`]s as the embedded engine. Publishes
//! to subjects a stream captures are JetStream publishes (request with an
//! ack); others are core publishes. Replay is an ordered consumer: an
//! ephemeral push consumer with flow control and heartbeats, recreated from
//! the last sequence seen when a gap shows.
//!
//! Works with nats-server 2.9 and later.

mod api;
mod backend;

pub use backend::{redact_url, NatsBackend, NatsOptions};
