//! durabus L1: the NATS JetStream backend over `async-nats`.
//!
//! Streams, message get/delete and purge go through the JetStream JSON API
//! (`$JS.API.*`) directly, so errors keep their JetStream codes and map to
//! the same typed [`durabus_core::Error`]s as the embedded engine. Publishes
//! to subjects a stream captures are JetStream publishes (request with an
//! ack); others are core publishes. Replay is an ordered consumer: an
//! ephemeral push consumer with flow control and heartbeats, recreated from
//! the last sequence seen when a gap shows. Durable and ephemeral consumers
//! are JetStream pull consumers: fetch sends `CONSUMER.MSG.NEXT` pull
//! requests, and acks are requests to the delivery's `$JS.ACK` subject, so
//! a settled delivery is confirmed by the server.
//!
//! Works with nats-server 2.9 and later; the conformance suite passes on
//! 2.9.10 (`tests/conformance/tests/nats.rs`).
//!
//! # nats-server 2.9 quirks handled here
//!
//! - Purge with `up_to_seq: 1` means "unbounded" to the server: durabus
//!   removes nothing (nothing lies below sequence 1).
//! - A stream-wide purge with `keep` compacts to `last_seq - keep + 1`,
//!   keeping fewer than asked after interior deletes: durabus sends the
//!   stream's own subject as the filter, which counts.
//! - Purge `up_to_seq: n` onto a deleted `n` reports the deleted `n` as
//!   `first_seq`: durabus compacts to the first present message at or
//!   after `n`.
//! - Once a subject's newest message is deleted the server forgets its
//!   earlier messages for last-by-subject lookups: `get_last_message` then
//!   walks the subject, and a refused `Nats-Expected-Last-Subject-Sequence`
//!   reports the real last sequence. Not fixable client-side: in that state
//!   the server also *accepts* an expectation of 0 for that subject.
//! - A filtered consumer's pending count can be too high after deletes, so
//!   bounded replays also end on an idle heartbeat (250 ms).
//! - A consumer create of an existing name is an update in 2.9 (no
//!   `action` field before 2.10): `create_consumer` looks first and answers
//!   `ConsumerNameInUse` for another configuration. A create racing another
//!   client's create of the same name can still update it.
//! - With a backoff list the server makes `ack_wait` its first wait (the
//!   consumer info says so); several filter subjects need 2.10
//!   (`Unsupported`); `last_per_subject` needs a filter subject (10094).
//! - A pull request to a missing consumer gets no answer at all: a fetch
//!   that hears nothing looks the consumer up (`ConsumerNotFound`).
//! - A `no_wait` pull with an `expires` waits up to it for the first
//!   messages (and without an `expires`, at `max_ack_pending`, forever):
//!   fetch is such pulls, of at most 2 s each.
//! - A redelivery (a delayed nak's) falling due just as a pull expires can
//!   make 2.9.10 deliver an acknowledged message again with delivery count
//!   1 and hold the redelivery until `ack_wait`. Fetch avoids short pulls,
//!   which hit it often; the risk is not zero while pulls expire.

mod api;
mod backend;
mod options;

pub use backend::NatsBackend;
pub use options::{NatsAuth, NatsOptions, NatsTls, ServerList};
pub use secrecy::SecretString;

/// A `tracing` filter directive that keeps credentials out of logs: add it
/// to your `EnvFilter` (e.g. `"info,async_nats::connection=debug"`) when you
/// enable trace logging of async-nats.
///
/// async-nats 0.46 logs the CONNECT protocol line, password and token
/// included, at trace level under this target (fixed upstream in
/// nats-io/nats.rs#1616, not yet released). durabus's own logs and errors
/// never hold a credential; the `durabus` CLI applies this directive itself.
pub const LOG_DIRECTIVE: &str = "async_nats::connection=debug";
