//! Messages as published, delivered and stored.

use std::time::SystemTime;

use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use crate::header::HeaderMap;

/// A message on a subject: what is published and what core subscribers receive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The literal subject.
    pub subject: String,
    /// Where a reply should go, for request/reply.
    pub reply: Option<String>,
    /// Headers, possibly empty.
    pub headers: HeaderMap,
    /// The payload.
    pub payload: Bytes,
}

impl Message {
    /// A message with no headers and no reply subject.
    pub fn new(subject: impl Into<String>, payload: impl Into<Bytes>) -> Self {
        Self {
            subject: subject.into(),
            reply: None,
            headers: HeaderMap::new(),
            payload: payload.into(),
        }
    }

    /// Sets a header (replacing earlier values of that name).
    #[must_use]
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name, value);
        self
    }

    /// Sets the `Nats-Msg-Id` header used for de-duplication.
    #[must_use]
    pub fn with_msg_id(self, id: impl Into<String>) -> Self {
        self.with_header(crate::NATS_MSG_ID, id)
    }

    /// Sets the reply subject.
    #[must_use]
    pub fn with_reply(mut self, reply: impl Into<String>) -> Self {
        self.reply = Some(reply.into());
        self
    }
}

/// A message read back from a stream, with its authoritative sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// The stream that stores it (shared by the messages of one read).
    pub stream: ByteString,
    /// Its sequence in the stream (1-based, assigned by the store).
    pub seq: u64,
    /// The subject it was published to (a slice of the buffer it was read
    /// from, where the backend can).
    pub subject: ByteString,
    /// When the store accepted it.
    pub time: SystemTime,
    /// Headers as stored.
    pub headers: HeaderMap,
    /// The payload.
    pub payload: Bytes,
}

/// The store's acknowledgement of a captured publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishAck {
    /// The stream that captured the message.
    pub stream: ByteString,
    /// The sequence assigned (for a duplicate: the original's sequence).
    pub seq: u64,
    /// True when the message id was seen inside the duplicate window and the
    /// message was not stored again.
    pub duplicate: bool,
}
