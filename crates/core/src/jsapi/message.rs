//! Messages in the JetStream API's JSON: stored messages (base64 headers
//! and payload), the NATS header block they carry, and publish acks.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use super::is_false;
use super::time::go_time;
use crate::{ApiError, HeaderMap, PublishAck, StoredMessage};

/// The first line of a NATS header block without a status.
pub const NATS_HEADER_LINE: &str = "NATS/1.0";

/// A NATS header block: `NATS/1.0[ <status>[ <description>]]\r\n`, then
/// `Name: value\r\n` lines, then `\r\n`. Stored messages keep it as their
/// `hdrs`; statuses (`404 No Messages`, `408 Request Timeout`, `100 Idle
/// Heartbeat`, `409 ...`) come to pull requests and push consumers in it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HeaderBlock {
    /// The status code of the first line, if any.
    pub status: Option<u16>,
    /// The text after the status code (empty when none).
    pub description: String,
    /// The headers, in order, repeated names kept.
    pub headers: HeaderMap,
}

impl HeaderBlock {
    /// A block of `headers` without a status.
    pub fn new(headers: HeaderMap) -> Self {
        Self {
            headers,
            ..Self::default()
        }
    }

    /// A block with a status line (`NATS/1.0 404 No Messages`).
    pub fn status(status: u16, description: impl Into<String>, headers: HeaderMap) -> Self {
        Self {
            status: Some(status),
            description: description.into(),
            headers,
        }
    }

    /// Reads a block. Lenient, as NATS clients are: text after the last
    /// line break is read as a line, lines without a `:` are skipped, names
    /// and values are trimmed, and a status that is not a number is none
    /// (its text is the description).
    pub fn parse(raw: &[u8]) -> Self {
        let text = String::from_utf8_lossy(raw);
        let mut lines = text.split("\r\n");
        let first = lines.next().unwrap_or_default();
        let rest = first.strip_prefix(NATS_HEADER_LINE).unwrap_or(first).trim();
        let (code, description) = rest.split_once(' ').unwrap_or((rest, ""));
        let status = code.parse::<u16>().ok();
        let description = if status.is_some() { description } else { rest };
        let mut headers = HeaderMap::new();
        for line in lines {
            if let Some((name, value)) = line.split_once(':') {
                headers.append(name.trim(), value.trim());
            }
        }
        Self {
            status,
            description: description.trim().to_owned(),
            headers,
        }
    }

    /// The block's bytes.
    pub fn encode(&self) -> Vec<u8> {
        let status = self.status.map(|code| (code, self.description.as_str()));
        header_block(&self.headers, status)
    }
}

/// The bytes of a header block of `headers`, with a status line when
/// `status` is given (what [`HeaderBlock::encode`] writes, without building
/// one).
pub fn header_block(headers: &HeaderMap, status: Option<(u16, &str)>) -> Vec<u8> {
    let description = status.map_or(0, |(_, d)| d.len());
    let mut out =
        Vec::with_capacity(NATS_HEADER_LINE.len() + 8 + description + headers.encoded_len());
    out.extend_from_slice(NATS_HEADER_LINE.as_bytes());
    if let Some((code, description)) = status {
        out.extend_from_slice(format!(" {code}").as_bytes());
        if !description.is_empty() {
            out.push(b' ');
            out.extend_from_slice(description.as_bytes());
        }
    }
    out.extend_from_slice(b"\r\n");
    for (name, value) in headers.iter() {
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `headers` as a NATS header block (`NATS/1.0\r\nName: value\r\n\r\n`).
pub fn encode_headers(headers: &HeaderMap) -> Vec<u8> {
    header_block(headers, None)
}

/// The headers of a NATS header block, in order, repeated names kept (the
/// status line, if any, is dropped: see [`HeaderBlock::parse`]).
pub fn parse_headers(raw: &[u8]) -> HeaderMap {
    HeaderBlock::parse(raw).headers
}

/// Serde for Go's `[]byte`: standard base64 with padding.
mod base64_bytes {
    use base64::Engine as _;
    use bytes::Bytes;
    use serde::{Deserialize, Deserializer, Serializer};

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    pub(super) fn serialize<S: Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&B64.encode(b))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Bytes, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(Bytes::new()),
            Some(s) => B64
                .decode(s.as_bytes())
                .map(Bytes::from)
                .map_err(|e| serde::de::Error::custom(format!("bad base64 ({e})"))),
        }
    }
}

/// A stored message as `STREAM.MSG.GET` answers it (nats-server's
/// `StoredMsg`): `hdrs` and `data` are base64 in the JSON and decoded here.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StoredMessageJson {
    /// The subject.
    pub subject: String,
    /// The stream sequence.
    pub seq: u64,
    /// The raw NATS header block (omitted when none).
    #[serde(with = "base64_bytes", skip_serializing_if = "Bytes::is_empty")]
    pub hdrs: Bytes,
    /// The payload (omitted when empty).
    #[serde(with = "base64_bytes", skip_serializing_if = "Bytes::is_empty")]
    pub data: Bytes,
    /// When it was stored.
    #[serde(with = "go_time")]
    pub time: Option<SystemTime>,
}

impl StoredMessageJson {
    /// The message as durabus's, stored in `stream`.
    pub fn into_stored(self, stream: ByteString) -> StoredMessage {
        StoredMessage {
            stream,
            seq: self.seq,
            subject: self.subject.into(),
            time: self.time.unwrap_or(UNIX_EPOCH),
            headers: if self.hdrs.is_empty() {
                HeaderMap::new()
            } else {
                parse_headers(&self.hdrs)
            },
            payload: self.data,
        }
    }
}

impl From<&StoredMessage> for StoredMessageJson {
    fn from(m: &StoredMessage) -> Self {
        Self {
            subject: m.subject.to_string(),
            seq: m.seq,
            hdrs: if m.headers.is_empty() {
                Bytes::new()
            } else {
                Bytes::from(encode_headers(&m.headers))
            },
            data: m.payload.clone(),
            time: Some(m.time),
        }
    }
}

/// A publish ack (nats-server's `PubAck`). The stream name borrows from
/// the answer it was read from where it can.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PubAckJson<'a> {
    /// The stream that stored the message.
    #[serde(borrow)]
    pub stream: Cow<'a, str>,
    /// Its sequence (the original's for a duplicate).
    pub seq: u64,
    /// The JetStream domain (omitted when empty).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub domain: Cow<'a, str>,
    /// The message id was seen in the duplicate window (omitted when not).
    #[serde(skip_serializing_if = "is_false")]
    pub duplicate: bool,
}

impl From<&PublishAck> for PubAckJson<'static> {
    fn from(a: &PublishAck) -> Self {
        Self {
            stream: Cow::Owned(a.stream.to_string()),
            seq: a.seq,
            domain: Cow::Borrowed(""),
            duplicate: a.duplicate,
        }
    }
}

impl From<PubAckJson<'_>> for PublishAck {
    fn from(a: PubAckJson<'_>) -> Self {
        Self {
            stream: ByteString::from(a.stream.into_owned()),
            seq: a.seq,
            duplicate: a.duplicate,
        }
    }
}

/// The answer to a JetStream publish: an ack, or an error with the stream
/// that refused (`{"error":{...},"stream":"S","seq":0}`). It has no `type`.
/// nats-server writes successful acks by hand (`{"stream":"S", "seq":1}`,
/// `"duplicate": true`); the JSON is the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PubAckResponseJson<'a> {
    /// Why the message was not stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<ApiError>,
    /// The stream.
    #[serde(borrow)]
    pub stream: Cow<'a, str>,
    /// The sequence (0 with an error).
    pub seq: u64,
    /// The JetStream domain (omitted when empty).
    #[serde(skip_serializing_if = "str::is_empty")]
    pub domain: Cow<'a, str>,
    /// A duplicate (omitted when not).
    #[serde(skip_serializing_if = "is_false")]
    pub duplicate: bool,
}

impl<'a> PubAckResponseJson<'a> {
    /// The answer for a stored message.
    pub fn ack(ack: PubAckJson<'a>) -> Self {
        Self {
            error: None,
            stream: ack.stream,
            seq: ack.seq,
            domain: ack.domain,
            duplicate: ack.duplicate,
        }
    }

    /// The answer of `stream` refusing a message.
    pub fn error(stream: impl Into<Cow<'a, str>>, error: ApiError) -> Self {
        Self {
            error: Some(error),
            stream: stream.into(),
            ..Self::default()
        }
    }

    /// The ack, or the error.
    pub fn into_result(self) -> Result<PubAckJson<'a>, ApiError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(PubAckJson {
                stream: self.stream,
                seq: self.seq,
                domain: self.domain,
                duplicate: self.duplicate,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api_error::codes;

    /// `STREAM.MSG.GET` answers of nats-server 2.9.10: a message with
    /// headers (`Nats-Msg-Id: m1`, `Tag: x`, `Tag: y`) and one without
    /// headers or payload.
    const GOT: &str = r#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"a.one","seq":2,"hdrs":"TkFUUy8xLjANCk5hdHMtTXNnLUlkOiBtMQ0KVGFnOiB4DQpUYWc6IHkNCg0K","data":"aGVsbG8=","time":"2026-12-06T23:25:21.241753965Z"}}"#;
    const GOT_EMPTY: &str = r#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"a.two","seq":3,"time":"2026-12-06T23:25:21.242134907Z"}}"#;

    fn message(s: &str) -> serde_json::Value {
        serde_json::from_str::<serde_json::Value>(s).unwrap()["message"].clone()
    }

    #[test]
    fn stored_messages_from_nats_server() {
        let j: StoredMessageJson = serde_json::from_value(message(GOT)).unwrap();
        assert_eq!(serde_json::to_value(&j).unwrap(), message(GOT));
        assert_eq!(
            &j.hdrs[..],
            b"NATS/1.0\r\nNats-Msg-Id: m1\r\nTag: x\r\nTag: y\r\n\r\n"
        );
        let m = j.into_stored("S".into());
        assert_eq!((&*m.stream, m.seq, &*m.subject), ("S", 2, "a.one"));
        assert_eq!(m.payload, "hello");
        assert_eq!(m.headers.get_all("Tag").collect::<Vec<_>>(), ["x", "y"]);
        assert_eq!(m.headers.get("Nats-Msg-Id"), Some("m1"));
        assert_eq!(
            m.time,
            UNIX_EPOCH + Duration::new(1_796_599_521, 241_753_965)
        );
        // Back: the same JSON.
        assert_eq!(
            serde_json::to_value(StoredMessageJson::from(&m)).unwrap(),
            message(GOT)
        );
        let j: StoredMessageJson = serde_json::from_value(message(GOT_EMPTY)).unwrap();
        assert_eq!(serde_json::to_value(&j).unwrap(), message(GOT_EMPTY));
        let m = j.into_stored("S".into());
        assert!(m.headers.is_empty() && m.payload.is_empty());
        assert!(serde_json::from_str::<StoredMessageJson>(r#"{"data":"!!"}"#).is_err());
    }

    #[test]
    fn header_blocks_keep_order_repeats_and_status() {
        let h = parse_headers(b"NATS/1.0\r\nTag: a\r\nX: y\r\nTag: b\r\n\r\n");
        assert_eq!(h.get_all("Tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(h.get("X"), Some("y"));
        assert_eq!(
            encode_headers(&h),
            b"NATS/1.0\r\nTag: a\r\nX: y\r\nTag: b\r\n\r\n"
        );
        assert_eq!(encode_headers(&HeaderMap::new()), b"NATS/1.0\r\n\r\n");
        // As a 2.9.10 pull request gets them.
        let b = HeaderBlock::parse(
            b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\nNats-Pending-Bytes: 0\r\n\r\n",
        );
        assert_eq!(
            (b.status, b.description.as_str()),
            (Some(408), "Request Timeout")
        );
        assert_eq!(b.headers.get("Nats-Pending-Messages"), Some("1"));
        assert_eq!(
            b.encode(),
            b"NATS/1.0 408 Request Timeout\r\nNats-Pending-Messages: 1\r\nNats-Pending-Bytes: 0\r\n\r\n"
        );
        let b = HeaderBlock::parse(b"NATS/1.0 409 Consumer is push based\r\n\r\n");
        assert_eq!(
            (b.status, b.description.as_str()),
            (Some(409), "Consumer is push based")
        );
        assert!(b.headers.is_empty());
        let b = HeaderBlock::status(503, "", HeaderMap::new());
        assert_eq!(b.encode(), b"NATS/1.0 503\r\n\r\n");
        assert_eq!(HeaderBlock::parse(&b.encode()), b);
        let b = HeaderBlock::parse(b"NATS/1.0\r\nA: 1\r\nNats-Msg-Size: 1\r\n\r\n");
        assert_eq!(b.status, None);
        assert_eq!(b.headers.len(), 2);
    }

    #[test]
    fn publish_acks_and_refusals_from_nats_server() {
        let ack: PubAckResponseJson<'_> =
            serde_json::from_str(r#"{"stream":"S", "seq":1}"#).unwrap();
        let ack = ack.into_result().unwrap();
        assert!(matches!(ack.stream, Cow::Borrowed("S")));
        assert_eq!(
            PublishAck::from(ack.clone()),
            PublishAck {
                stream: "S".into(),
                seq: 1,
                duplicate: false
            }
        );
        assert_eq!(
            serde_json::to_string(&ack).unwrap(),
            r#"{"stream":"S","seq":1}"#
        );
        let dup: PubAckResponseJson<'_> =
            serde_json::from_str(r#"{"stream":"S", "seq":2,"duplicate": true}"#).unwrap();
        let dup = PublishAck::from(dup.into_result().unwrap());
        assert!(dup.duplicate);
        assert_eq!(
            serde_json::to_string(&PubAckJson::from(&dup)).unwrap(),
            r#"{"stream":"S","seq":2,"duplicate":true}"#
        );
        let refused = r#"{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 3"},"stream":"S","seq":0}"#;
        let r: PubAckResponseJson<'_> = serde_json::from_str(refused).unwrap();
        assert_eq!(serde_json::to_string(&r).unwrap(), refused);
        let e = r.into_result().unwrap_err();
        assert!(e.is(codes::WRONG_LAST_SEQUENCE));
        let back = PubAckResponseJson::error("S", e);
        assert_eq!(serde_json::to_string(&back).unwrap(), refused);
        let with_domain: PubAckResponseJson<'_> =
            serde_json::from_str(r#"{"stream":"S", "domain":"hub", "seq":4}"#).unwrap();
        assert_eq!(with_domain.domain, "hub");
        assert_eq!(
            serde_json::to_string(&PubAckResponseJson::ack(with_domain.into_result().unwrap()))
                .unwrap(),
            r#"{"stream":"S","seq":4,"domain":"hub"}"#
        );
    }
}
