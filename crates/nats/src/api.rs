//! The JetStream JSON API: configuration mapping and responses (errors
//! are [`durabus_core::ApiError`]s, mapped in `durabus_core::api_error`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use bytes::Bytes;
use durabus_core::{
    ApiError, ByteString, DiscardPolicy, HeaderMap, RetentionPolicy, StorageType, StoredMessage,
    StreamConfig, StreamInfo, StreamState,
};
use serde::Deserialize;
use serde_json::{json, Value};

/// The body of a publish ack (or its error), parsed without building a
/// `Value`.
#[derive(Debug, Deserialize)]
pub(crate) struct AckBody<'a> {
    #[serde(borrow, default)]
    pub(crate) stream: Option<std::borrow::Cow<'a, str>>,
    #[serde(default)]
    pub(crate) seq: u64,
    #[serde(default)]
    pub(crate) duplicate: bool,
    #[serde(default)]
    error: Option<ApiError>,
}

/// A publish ack, or the server's error.
pub(crate) fn publish_ack(body: &[u8]) -> Result<Result<AckBody<'_>, ApiError>, String> {
    let mut ack: AckBody<'_> = serde_json::from_slice(body)
        .map_err(|e| format!("unreadable JetStream publish ack ({e})"))?;
    Ok(match ack.error.take() {
        Some(e) => Err(e),
        None => Ok(ack),
    })
}

/// Splits an API answer into its error or its body.
pub(crate) fn split(body: &[u8]) -> Result<Result<Value, ApiError>, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("unreadable JetStream API answer ({e})"))?;
    if let Some(err) = v.get("error") {
        let err: ApiError = serde_json::from_value(err.clone())
            .map_err(|e| format!("unreadable JetStream API error ({e})"))?;
        return Ok(Err(err));
    }
    Ok(Ok(v))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn limit<T: Into<i128>>(v: Option<T>) -> i128 {
    v.map(Into::into).unwrap_or(-1)
}

/// A durabus stream configuration as JetStream JSON.
pub(crate) fn config_to_json(cfg: &StreamConfig) -> Value {
    let mut v = json!({
        "name": cfg.name,
        "subjects": cfg.effective_subjects(),
        "retention": match cfg.retention {
            RetentionPolicy::Limits => "limits",
            RetentionPolicy::Interest => "interest",
            RetentionPolicy::WorkQueue => "workqueue",
        },
        "max_consumers": -1,
        "max_msgs": limit(cfg.max_msgs),
        "max_bytes": limit(cfg.max_bytes),
        "max_age": cfg.max_age.map(nanos).unwrap_or(0),
        "max_msgs_per_subject": limit(cfg.max_msgs_per_subject),
        "max_msg_size": cfg.max_msg_size.map(i128::from).unwrap_or(-1),
        "discard": match cfg.discard {
            DiscardPolicy::Old => "old",
            DiscardPolicy::New => "new",
        },
        "discard_new_per_subject": cfg.discard_new_per_subject,
        "storage": match cfg.storage {
            StorageType::File => "file",
            StorageType::Memory => "memory",
        },
        "num_replicas": cfg.replicas,
        "duplicate_window": nanos(cfg.duplicate_window),
        "allow_rollup_hdrs": cfg.allow_rollup,
        "deny_delete": cfg.deny_delete,
        "deny_purge": cfg.deny_purge,
    });
    if let Some(d) = &cfg.description {
        v["description"] = json!(d);
    }
    v
}

#[derive(Debug, Deserialize)]
struct JsConfig {
    name: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    subjects: Vec<String>,
    #[serde(default)]
    retention: String,
    #[serde(default)]
    max_msgs: i64,
    #[serde(default)]
    max_bytes: i64,
    #[serde(default)]
    max_age: u64,
    #[serde(default)]
    max_msgs_per_subject: i64,
    #[serde(default)]
    max_msg_size: i64,
    #[serde(default)]
    discard: String,
    #[serde(default)]
    discard_new_per_subject: bool,
    #[serde(default)]
    storage: String,
    #[serde(default)]
    num_replicas: usize,
    #[serde(default)]
    duplicate_window: u64,
    #[serde(default)]
    allow_rollup_hdrs: bool,
    #[serde(default)]
    deny_delete: bool,
    #[serde(default)]
    deny_purge: bool,
}

fn pos<T: TryFrom<i64>>(v: i64) -> Option<T> {
    if v <= 0 {
        None
    } else {
        T::try_from(v).ok()
    }
}

impl JsConfig {
    fn into_config(self) -> StreamConfig {
        StreamConfig {
            name: self.name,
            description: self.description.filter(|d| !d.is_empty()),
            subjects: self.subjects,
            retention: match self.retention.as_str() {
                "interest" => RetentionPolicy::Interest,
                "workqueue" => RetentionPolicy::WorkQueue,
                _ => RetentionPolicy::Limits,
            },
            max_age: (self.max_age > 0).then(|| Duration::from_nanos(self.max_age)),
            max_bytes: pos(self.max_bytes),
            max_msgs: pos(self.max_msgs),
            max_msgs_per_subject: pos(self.max_msgs_per_subject),
            max_msg_size: pos(self.max_msg_size),
            discard: if self.discard == "new" {
                DiscardPolicy::New
            } else {
                DiscardPolicy::Old
            },
            discard_new_per_subject: self.discard_new_per_subject,
            duplicate_window: Duration::from_nanos(self.duplicate_window),
            storage: if self.storage == "memory" {
                StorageType::Memory
            } else {
                StorageType::File
            },
            replicas: self.num_replicas.max(1),
            allow_rollup: self.allow_rollup_hdrs,
            deny_delete: self.deny_delete,
            deny_purge: self.deny_purge,
        }
    }
}

#[derive(Debug, Deserialize)]
struct JsState {
    #[serde(default)]
    messages: u64,
    #[serde(default)]
    bytes: u64,
    #[serde(default)]
    first_seq: u64,
    #[serde(default)]
    first_ts: Option<String>,
    #[serde(default)]
    last_seq: u64,
    #[serde(default)]
    last_ts: Option<String>,
    #[serde(default)]
    num_deleted: u64,
    #[serde(default)]
    lost: Option<JsLost>,
    #[serde(default)]
    num_subjects: u64,
    #[serde(default)]
    consumer_count: u64,
}

#[derive(Debug, Deserialize)]
struct JsInfo {
    config: JsConfig,
    #[serde(default)]
    created: Option<String>,
    state: JsState,
}

/// `state.lost` of a stream info: messages nats-server lost to damage.
#[derive(Debug, Deserialize)]
struct JsLost {
    #[serde(default)]
    msgs: Vec<u64>,
}

/// Parses an RFC 3339 time; `None` for Go's zero time or anything unreadable.
pub(crate) fn parse_time(s: &str) -> Option<SystemTime> {
    let t = humantime::parse_rfc3339_weak(s.trim_end_matches('Z')).ok()?;
    (t > UNIX_EPOCH).then_some(t)
}

/// A stream info answer as durabus's [`StreamInfo`].
pub(crate) fn stream_info(v: Value) -> Result<StreamInfo, String> {
    let info: JsInfo =
        serde_json::from_value(v).map_err(|e| format!("unreadable stream info ({e})"))?;
    let s = info.state;
    Ok(StreamInfo {
        config: info.config.into_config(),
        created: info
            .created
            .as_deref()
            .and_then(parse_time)
            .unwrap_or(UNIX_EPOCH),
        state: StreamState {
            messages: s.messages,
            bytes: s.bytes,
            first_seq: s.first_seq,
            first_time: if s.messages == 0 {
                None
            } else {
                s.first_ts.as_deref().and_then(parse_time)
            },
            last_seq: s.last_seq,
            last_time: if s.messages == 0 {
                None
            } else {
                s.last_ts.as_deref().and_then(parse_time)
            },
            num_deleted: s.num_deleted,
            num_lost: s.lost.map_or(0, |l| l.msgs.len() as u64),
            num_subjects: s.num_subjects,
            consumer_count: s.consumer_count,
        },
    })
}

/// Parses a NATS header block (`NATS/1.0\r\nName: value\r\n...`), keeping
/// order and repeated names.
pub(crate) fn parse_headers(raw: &[u8]) -> HeaderMap {
    let text = String::from_utf8_lossy(raw);
    let mut out = HeaderMap::new();
    for line in text.split("\r\n").skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            out.append(name.trim(), value.trim());
        }
    }
    out
}

#[derive(Debug, Deserialize)]
struct JsStoredMsg {
    subject: String,
    seq: u64,
    #[serde(default)]
    hdrs: Option<String>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    time: Option<String>,
}

/// A STREAM.MSG.GET answer as a [`StoredMessage`].
pub(crate) fn stored_message(stream: &str, v: Value) -> Result<StoredMessage, String> {
    let msg = v
        .get("message")
        .cloned()
        .ok_or_else(|| "message get answer without a message".to_owned())?;
    let m: JsStoredMsg =
        serde_json::from_value(msg).map_err(|e| format!("unreadable stored message ({e})"))?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let decode = |s: Option<String>| -> Result<Vec<u8>, String> {
        match s {
            None => Ok(Vec::new()),
            Some(s) => b64
                .decode(s.as_bytes())
                .map_err(|e| format!("bad base64 in stored message ({e})")),
        }
    };
    let headers = decode(m.hdrs)?;
    let payload = decode(m.data)?;
    Ok(StoredMessage {
        stream: ByteString::from(stream),
        seq: m.seq,
        subject: m.subject.into(),
        time: m.time.as_deref().and_then(parse_time).unwrap_or(UNIX_EPOCH),
        headers: if headers.is_empty() {
            HeaderMap::new()
        } else {
            parse_headers(&headers)
        },
        payload: Bytes::from(payload),
    })
}

/// What a JetStream ack subject says about a delivered message:
/// `$JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<nanos>.<pending>`
/// (v1), or the v2 form with domain and account hash (and a trailing token).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AckInfo {
    /// Which delivery of the message this is (1 for the first).
    pub(crate) delivered: u64,
    pub(crate) stream_seq: u64,
    pub(crate) consumer_seq: u64,
    pub(crate) time_nanos: u64,
    pub(crate) pending: u64,
}

/// A non-empty run of ASCII digits as a u64; `None` otherwise or on overflow.
fn decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        let d = d.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// A received subject as the messages durabus yields carry it. async-nats
/// gives each received subject a buffer of its own, so this moves that
/// buffer instead of copying it.
pub(crate) fn shared_subject(subject: async_nats::Subject) -> ByteString {
    ByteString::from(subject.into_string())
}

pub(crate) fn parse_ack_subject(reply: &str) -> Option<AckInfo> {
    // The first 12 tokens (all of the v2 form) on the stack: no allocation.
    let mut t: [&[u8]; 12] = [b""; 12];
    let mut len = 0;
    for token in reply.as_bytes().split(|b| *b == b'.') {
        if let Some(slot) = t.get_mut(len) {
            *slot = token;
        }
        len += 1;
    }
    if len < 9 || t[0] != b"$JS" || t[1] != b"ACK" {
        return None;
    }
    let base = if len == 9 { 4 } else { 6 };
    let num = |i: usize| t.get(base + i).and_then(|s| decimal(s));
    Some(AckInfo {
        delivered: num(0)?,
        stream_seq: num(1)?,
        consumer_seq: num(2)?,
        time_nanos: num(3)?,
        pending: num(4)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_through_jetstream_json() {
        let mut cfg = StreamConfig::new("S")
            .subjects(["a.>"])
            .max_msgs(10u64)
            .max_age(Duration::from_secs(3600))
            .max_msg_size(100u32)
            .discard(DiscardPolicy::New)
            .deny_purge(true);
        cfg.description = Some("d".into());
        let js: JsConfig = serde_json::from_value(config_to_json(&cfg)).unwrap();
        assert_eq!(js.into_config(), cfg);
    }

    #[test]
    fn headers_keep_order_and_repeats() {
        let h = parse_headers(b"NATS/1.0\r\nTag: a\r\nX: y\r\nTag: b\r\n\r\n");
        assert_eq!(h.get_all("Tag").collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(h.get("X"), Some("y"));
    }

    #[test]
    fn ack_subjects_v1_and_v2_parse() {
        let v1 = parse_ack_subject("$JS.ACK.S.C.1.7.3.1700000000000000000.2").unwrap();
        assert_eq!((v1.stream_seq, v1.consumer_seq, v1.pending), (7, 3, 2));
        assert_eq!(v1.delivered, 1);
        let v2 = parse_ack_subject("$JS.ACK.dom.acc.S.C.1.7.3.1700000000000000000.2.tok").unwrap();
        assert_eq!((v2.stream_seq, v2.consumer_seq, v2.pending), (7, 3, 2));
        assert!(parse_ack_subject("_INBOX.x").is_none());
        // Signs, empty tokens and overflow are not numbers.
        for bad in [
            "$JS.ACK.S.C.+1.7.3.1.2",
            "$JS.ACK.S.C.1..3.1.2",
            "$JS.ACK.S.C.1.7.3.18446744073709551616.2",
            "$JS.ACK.S.C.1.7a.3.1.2",
        ] {
            assert!(parse_ack_subject(bad).is_none(), "{bad}");
        }
        let max = parse_ack_subject("$JS.ACK.S.C.1.7.3.18446744073709551615.2").unwrap();
        assert_eq!(max.time_nanos, u64::MAX);
    }

    #[test]
    fn times_parse_and_zero_time_is_none() {
        assert!(parse_time("0001-01-01T00:00:00Z").is_none());
        assert!(parse_time("2024-05-01T10:00:00.123456789Z").is_some());
        assert!(parse_time("2024-05-01T10:00:00.1234Z").is_some());
    }
}
