//! Received subjects as durabus carries them. The JetStream API itself
//! (JSON, `$JS.ACK` subjects, ack bodies) is `durabus_core::jsapi`; its
//! errors are `durabus_core::ApiError`s (mapped in
//! `durabus_core::api_error`).

use durabus_core::ByteString;

/// A received subject as the messages durabus yields carry it. async-nats
/// gives each received subject a buffer of its own, so this moves that
/// buffer instead of copying it.
pub(crate) fn shared_subject(subject: async_nats::Subject) -> ByteString {
    ByteString::from(subject.into_string())
}
