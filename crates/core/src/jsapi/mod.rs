//! The JetStream API's requests and answers as serde types, written once
//! for both sides: the NATS backend (a client of nats-server) and a server
//! answering JetStream API requests over another engine.
//!
//! Field names, shapes and omitted fields are those of nats-server 2.9.10
//! (its `server/stream.go`, `consumer.go`, `store.go` and
//! `jetstream_api.go`), checked against answers captured from a running
//! 2.9.10 (the tests' fixtures). Every field has a default, so a request
//! that leaves fields out parses as nats-server reads it (Go's zero values);
//! fields nats-server leaves out when empty (`omitempty`) are left out when
//! serialized. A few 2.10 fields are read and written too (they say so).
//!
//! - Times: Go's `time.Time` ([`format_time`], [`parse_time`]) and
//!   `time.Duration` (nanoseconds: [`duration_to_nanos`]).
//! - Streams: [`StreamConfigJson`], [`StreamStateJson`], [`StreamInfoJson`].
//! - Consumers: [`ConsumerConfigJson`], [`ConsumerInfoJson`],
//!   [`CreateConsumerRequestJson`], [`PullRequestJson`].
//! - Acks: the `$JS.ACK` subject ([`AckSubject`]) and ack bodies
//!   ([`ack_payload`], [`parse_ack_payload`]).
//! - Messages: [`StoredMessageJson`], the NATS header block
//!   ([`HeaderBlock`]), publish acks ([`PubAckJson`],
//!   [`PubAckResponseJson`]).
//! - Other requests and answers: purge, message get and delete, lists and
//!   names, deletes, account info.
//! - Every answer: [`ApiResponse`] (`type`, `error`, then the body), the
//!   `type` strings in [`types`], and [`parse_response`] for clients.
//!
//! Errors are [`crate::ApiError`]s (see [`crate::api_error`]).

mod ack;
mod consumer;
mod message;
mod request;
mod response;
mod stream;
mod time;

pub use ack::{ack_payload, parse_ack_payload, AckRequest, AckSubject};
pub use consumer::{
    ConsumerAction, ConsumerConfigJson, ConsumerInfoJson, CreateConsumerRequestJson,
    DeliverPolicyJson, NakOptionsJson, PullRequestJson, ReplayPolicy, SequenceInfoJson,
};
pub use message::{
    encode_headers, header_block, parse_headers, HeaderBlock, PubAckJson, PubAckResponseJson,
    StoredMessageJson, NATS_HEADER_LINE,
};
pub use request::{
    AccountInfoJson, AccountLimitsJson, ApiPaged, ApiStatsJson, ConsumerListRequestJson,
    ConsumerListResponseJson, ConsumerNamesResponseJson, MsgDeleteRequestJson, MsgGetRequestJson,
    MsgGetResponseJson, PurgeRequestJson, PurgeResponseJson, StreamCreateResponseJson,
    StreamInfoRequestJson, StreamInfoResponseJson, StreamListRequestJson, StreamListResponseJson,
    StreamNamesResponseJson, SuccessJson,
};
pub use response::{parse_response, types, ApiBody, ApiResponse};
pub use stream::{LostStreamDataJson, StreamConfigJson, StreamInfoJson, StreamStateJson};
pub use time::{
    clamp_to_unix_nanos, duration_to_nanos, format_time, nanos_to_duration, parse_time,
    GO_ZERO_TIME,
};

/// For `skip_serializing_if`: Go's `omitempty` on a number.
fn is_zero<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// For `skip_serializing_if`: Go's `omitempty` on a bool.
fn is_false(v: &bool) -> bool {
    !*v
}

/// Serde for an enum of durabus's as the Go strings of nats-server:
/// `go_enum!(module, Type, [Type::A => "a", ...])`. Unknown strings are an
/// error, as nats-server's `UnmarshalJSON` makes them; `lowercase` reads
/// any case (nats-server does for the discard policy only).
macro_rules! go_enum {
    ($(#[$doc:meta])* $module:ident, $ty:ty, lowercase = $lower:expr, [$($variant:path => $text:literal),+ $(,)?]) => {
        $(#[$doc])*
        pub(crate) mod $module {
            use serde::{Deserialize, Deserializer, Serializer};

            const NAMES: &[&str] = &[$($text),+];

            pub(crate) fn serialize<S: Serializer>(v: &$ty, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(match v {
                    $($variant => $text,)+
                })
            }

            pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
                let text = String::deserialize(d)?;
                let key = if $lower { text.to_ascii_lowercase() } else { text };
                match key.as_str() {
                    $($text => Ok($variant),)+
                    other => Err(serde::de::Error::unknown_variant(other, NAMES)),
                }
            }
        }
    };
}
pub(crate) use go_enum;
