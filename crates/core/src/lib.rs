//! durabus L0: the types every backend and every feature share.
//!
//! Nothing here does I/O. Subjects, names, headers, messages, stream
//! configuration, typed errors, and the [`Backend`] trait that every backend
//! implements: the embedded log (`durabus-log`, on files or in memory) and
//! NATS JetStream (`durabus-nats`). Features built once for every
//! backend (L2) are written against [`Backend`] only.
//!
//! [`jsapi`] is the JetStream API's JSON, shared by the NATS backend (a
//! client of nats-server) and a server answering that API.

pub mod api_error;
mod backend;
pub mod backoff;
mod config;
mod consumer;
mod error;
mod header;
pub mod jsapi;
mod message;
mod name;
mod reason;
pub mod subject;

pub use api_error::{ApiError, ApiRequest};
pub use backend::{
    Backend, ConnectionStatus, Event, Origin, PurgeRequest, Replay, ReplayOptions, ReplayStart,
    Subscription, Unavailable,
};
pub use bytestring::ByteString;
pub use config::{
    DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo, StreamState,
    DEFAULT_DUPLICATE_WINDOW,
};
pub use consumer::{
    AckKind, AckPolicy, AckRef, ConsumerConfig, ConsumerInfo, DeliverPolicy, Delivery,
    SequencePair, DEFAULT_ACK_WAIT, DEFAULT_INACTIVE_THRESHOLD, DEFAULT_MAX_ACK_PENDING,
    FETCH_PREALLOCATED,
};
pub use error::{redact_url, Error, Result, SymlinkRefused};
pub use header::{
    HeaderMap, NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
    NATS_EXPECTED_STREAM, NATS_MSG_ID, NATS_ROLLUP,
};
pub use message::{Message, PublishAck, StoredMessage};
pub use name::{
    sanitize, validate_consumer_name, validate_stream_name, MAX_CONSUMER_NAME_LEN,
    MAX_STREAM_NAME_LEN,
};
pub use reason::{ArgumentError, ConfigError};
