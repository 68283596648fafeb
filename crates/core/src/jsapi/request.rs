//! The smaller JetStream API requests and their answers' bodies: purge,
//! message get and delete, stream info options, lists and names (paged),
//! deletes, stream create, and account info (`$JS.API.INFO`).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::response::ApiBody;
use super::{is_false, is_zero, ConsumerInfoJson, StoredMessageJson, StreamInfoJson};
use crate::PurgeRequest;

/// The body of `STREAM.PURGE.<stream>` (nats-server's
/// `JSApiStreamPurgeRequest`): all three omitted purges everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PurgeRequestJson {
    /// Remove messages below this sequence (`seq` and `keep` exclude each
    /// other).
    #[serde(skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// Only messages on subjects matching this filter.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub filter: String,
    /// Keep this many of the newest.
    #[serde(skip_serializing_if = "is_zero")]
    pub keep: u64,
}

impl From<&PurgeRequest> for PurgeRequestJson {
    fn from(r: &PurgeRequest) -> Self {
        Self {
            seq: r.up_to_seq.unwrap_or(0),
            filter: r.subject.clone().unwrap_or_default(),
            keep: r.keep.unwrap_or(0),
        }
    }
}

impl From<PurgeRequestJson> for PurgeRequest {
    /// 0 and empty are "not set", as nats-server reads them.
    fn from(r: PurgeRequestJson) -> Self {
        Self {
            subject: Some(r.filter).filter(|f| !f.is_empty()),
            keep: (r.keep > 0).then_some(r.keep),
            up_to_seq: (r.seq > 0).then_some(r.seq),
        }
    }
}

/// The body of a purge answer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PurgeResponseJson {
    /// The purge was done (omitted when not).
    #[serde(skip_serializing_if = "is_false")]
    pub success: bool,
    /// Messages removed (also sent, as 0, with an error).
    pub purged: u64,
}

/// The body of `STREAM.MSG.GET.<stream>`: one of `seq` (the message there),
/// `last_by_subj` (the newest on a subject), or `seq` with `next_by_subj`
/// (the first at or after `seq` on a subject filter).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MsgGetRequestJson {
    /// A sequence.
    #[serde(skip_serializing_if = "is_zero")]
    pub seq: u64,
    /// The newest message on this subject.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_by_subj: String,
    /// The first message at or after `seq` on this filter.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub next_by_subj: String,
}

impl MsgGetRequestJson {
    /// The message at `seq`.
    pub fn seq(seq: u64) -> Self {
        Self {
            seq,
            ..Self::default()
        }
    }

    /// The newest message on `subject`.
    pub fn last_by_subject(subject: impl Into<String>) -> Self {
        Self {
            last_by_subj: subject.into(),
            ..Self::default()
        }
    }

    /// The first message at or after `seq` on `filter`.
    pub fn next_by_subject(seq: u64, filter: impl Into<String>) -> Self {
        Self {
            seq,
            next_by_subj: filter.into(),
            ..Self::default()
        }
    }
}

/// The body of a message get answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MsgGetResponseJson {
    /// The message (omitted with an error).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<StoredMessageJson>,
}

/// The body of `STREAM.MSG.DELETE.<stream>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MsgDeleteRequestJson {
    /// The message's sequence.
    pub seq: u64,
    /// Delete without overwriting its bytes on disk (faster).
    #[serde(skip_serializing_if = "is_false")]
    pub no_erase: bool,
}

/// The body of stream delete, consumer delete and message delete answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SuccessJson {
    /// Done (omitted with an error).
    #[serde(skip_serializing_if = "is_false")]
    pub success: bool,
}

/// The body of `STREAM.INFO.<stream>` (it may be empty): details asked for
/// beside the info, paged by `offset`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamInfoRequestJson {
    /// The first subject (of `state.subjects`) wanted.
    pub offset: u64,
    /// List the deleted sequences in `state.deleted`.
    #[serde(skip_serializing_if = "is_false")]
    pub deleted_details: bool,
    /// Count messages per subject matching this filter in
    /// `state.subjects`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subjects_filter: String,
}

/// Paging of an answer (nats-server's `ApiPaged`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiPaged {
    /// Entries in all.
    pub total: u64,
    /// Where this page starts.
    pub offset: u64,
    /// Entries a page holds at most (nats-server: 1024 names, 256 infos).
    pub limit: u64,
}

/// The body of a stream info answer: paging (of `state.subjects`, zeros
/// without a `subjects_filter`), then the info.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamInfoResponseJson {
    /// Paging of `state.subjects`.
    #[serde(flatten)]
    pub paged: ApiPaged,
    /// The info (omitted with an error).
    #[serde(flatten)]
    pub info: Option<StreamInfoJson>,
}

/// The body of a stream create answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamCreateResponseJson {
    /// The stream's info.
    #[serde(flatten)]
    pub info: StreamInfoJson,
    /// 2.9.10 says true for a create of an existing stream with the same
    /// configuration too (omitted when false).
    #[serde(skip_serializing_if = "is_false")]
    pub did_create: bool,
}

/// The body of `STREAM.NAMES` and `STREAM.LIST`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamListRequestJson {
    /// The first entry wanted.
    pub offset: u64,
    /// Only streams whose subjects this subject (a filter) can match.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub subject: String,
}

/// The body of `CONSUMER.NAMES.<stream>` and `CONSUMER.LIST.<stream>`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerListRequestJson {
    /// The first entry wanted.
    pub offset: u64,
}

/// Go's nil slice: an empty list is `null` (nats-server's stream names).
fn null_if_empty<S: Serializer>(v: &[String], s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        v.serialize(s)
    }
}

/// A list that may be `null`.
fn null_as_empty<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// The body of a stream names answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamNamesResponseJson {
    /// Paging.
    #[serde(flatten)]
    pub paged: ApiPaged,
    /// The names: `null` when there are none (2.9.10), as here.
    #[serde(serialize_with = "null_if_empty", deserialize_with = "null_as_empty")]
    pub streams: Vec<String>,
}

/// The body of a stream list answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamListResponseJson {
    /// Paging.
    #[serde(flatten)]
    pub paged: ApiPaged,
    /// The streams (`[]` when none).
    #[serde(deserialize_with = "null_as_empty")]
    pub streams: Vec<StreamInfoJson>,
    /// Streams a cluster could not ask about (omitted when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// The body of a consumer names answer.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerNamesResponseJson {
    /// Paging.
    #[serde(flatten)]
    pub paged: ApiPaged,
    /// The names (`[]` when none).
    #[serde(deserialize_with = "null_as_empty")]
    pub consumers: Vec<String>,
}

/// The body of a consumer list answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerListResponseJson {
    /// Paging.
    #[serde(flatten)]
    pub paged: ApiPaged,
    /// The consumers (`[]` when none).
    #[serde(deserialize_with = "null_as_empty")]
    pub consumers: Vec<ConsumerInfoJson>,
    /// Consumers a cluster could not ask about (omitted when none).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
}

/// An account's JetStream limits (`-1`: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountLimitsJson {
    /// Memory storage bytes.
    pub max_memory: i64,
    /// File storage bytes.
    pub max_storage: i64,
    /// Streams.
    pub max_streams: i64,
    /// Consumers.
    pub max_consumers: i64,
    /// A consumer's `max_ack_pending`.
    pub max_ack_pending: i64,
    /// A memory stream's `max_bytes`.
    pub memory_max_stream_bytes: i64,
    /// A file stream's `max_bytes`.
    pub storage_max_stream_bytes: i64,
    /// Streams must set `max_bytes`.
    pub max_bytes_required: bool,
}

impl AccountLimitsJson {
    /// No limits at all (every one `-1`).
    pub fn unlimited() -> Self {
        Self {
            max_memory: -1,
            max_storage: -1,
            max_streams: -1,
            max_consumers: -1,
            max_ack_pending: -1,
            memory_max_stream_bytes: -1,
            storage_max_stream_bytes: -1,
            max_bytes_required: false,
        }
    }
}

/// Counts of JetStream API requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ApiStatsJson {
    /// Requests.
    pub total: u64,
    /// Requests answered with an error.
    pub errors: u64,
    /// Requests being served (omitted when 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub inflight: u64,
}

/// The body of the `$JS.API.INFO` answer (nats-server's
/// `JetStreamAccountStats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct AccountInfoJson {
    /// Memory storage bytes used.
    pub memory: u64,
    /// File storage bytes used.
    pub storage: u64,
    /// Memory storage bytes reserved: 2.10 sends it, 2.9 does not, and
    /// async-nats 0.46 cannot read an answer without it (a server that
    /// wants async-nats's `query_account` to work sets it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_memory: Option<u64>,
    /// File storage bytes reserved (as `reserved_memory`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reserved_storage: Option<u64>,
    /// Streams.
    pub streams: u64,
    /// Consumers.
    pub consumers: u64,
    /// Limits.
    pub limits: AccountLimitsJson,
    /// The JetStream domain (omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// API request counts.
    pub api: ApiStatsJson,
    /// Usage per tier (omitted without tiers).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tiers: Option<Value>,
}

impl ApiBody for StreamInfoJson {}
impl ApiBody for StreamCreateResponseJson {}
impl ApiBody for ConsumerInfoJson {}
impl ApiBody for MsgGetResponseJson {}
impl ApiBody for SuccessJson {}
impl ApiBody for AccountInfoJson {}

/// Bodies nats-server embeds by value: their zero values go with an error.
macro_rules! zero_with_error {
    ($($ty:ty),+) => {$(
        impl ApiBody for $ty {
            fn error_body() -> Option<Self> {
                Some(Self::default())
            }
        }
    )+};
}
zero_with_error!(
    PurgeResponseJson,
    StreamInfoResponseJson,
    StreamNamesResponseJson,
    StreamListResponseJson,
    ConsumerNamesResponseJson,
    ConsumerListResponseJson
);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::jsapi::{parse_response, types, ApiResponse};

    fn value(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    fn reserialized<T: serde::de::DeserializeOwned + Serialize>(s: &str) -> Value {
        let r: ApiResponse<T> = serde_json::from_str(s).unwrap();
        serde_json::to_value(&r).unwrap()
    }

    /// Answers of nats-server 2.9.10 serialize back to themselves.
    #[test]
    fn answers_from_nats_server_round_trip() {
        type Reserialize = fn(&str) -> Value;
        let cases: &[(&str, Reserialize)] = &[
            (
                r#"{"type":"io.nats.jetstream.api.v1.account_info_response","memory":0,"storage":164,"streams":2,"consumers":3,"limits":{"max_memory":-1,"max_storage":-1,"max_streams":-1,"max_consumers":-1,"max_ack_pending":-1,"memory_max_stream_bytes":-1,"storage_max_stream_bytes":-1,"max_bytes_required":false},"api":{"total":31,"errors":6}}"#,
                reserialized::<AccountInfoJson>,
            ),
            (
                r#"{"type":"io.nats.jetstream.api.v1.stream_names_response","total":3,"offset":0,"limit":1024,"streams":["S","S2","S5"]}"#,
                reserialized::<StreamNamesResponseJson>,
            ),
            (
                r#"{"type":"io.nats.jetstream.api.v1.stream_names_response","total":0,"offset":0,"limit":1024,"streams":null}"#,
                reserialized::<StreamNamesResponseJson>,
            ),
            (
                r#"{"type":"io.nats.jetstream.api.v1.stream_list_response","total":0,"offset":0,"limit":256,"streams":[]}"#,
                reserialized::<StreamListResponseJson>,
            ),
            (
                r#"{"type":"io.nats.jetstream.api.v1.consumer_names_response","total":3,"offset":0,"limit":1024,"consumers":["C","P","qCydrI7o"]}"#,
                reserialized::<ConsumerNamesResponseJson>,
            ),
            (
                r#"{"type":"io.nats.jetstream.api.v1.consumer_names_response","total":0,"offset":0,"limit":1024,"consumers":[]}"#,
                reserialized::<ConsumerNamesResponseJson>,
            ),
            (
                r#"{"type":"io.nats.jetstream.api.v1.consumer_list_response","total":0,"offset":0,"limit":256,"consumers":[]}"#,
                reserialized::<ConsumerListResponseJson>,
            ),
            (
                r#"{"type":"io.nats.jetstream.api.v1.stream_purge_response","success":true,"purged":0}"#,
                reserialized::<PurgeResponseJson>,
            ),
            (
                r#"{"type":"io.nats.jetstream.api.v1.stream_msg_delete_response","success":true}"#,
                reserialized::<SuccessJson>,
            ),
            (
                r#"{"type":"io.nats.jetstream.api.v1.stream_msg_get_response","message":{"subject":"a.q","seq":1,"data":"eA==","time":"2026-12-06T23:26:14.062350293Z"}}"#,
                reserialized::<MsgGetResponseJson>,
            ),
            (
                r#"{"type":"io.nats.jetstream.api.v1.stream_info_response","total":0,"offset":0,"limit":0,"config":{"name":"S","subjects":["a.\u003e"],"retention":"limits","max_consumers":-1,"max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":1,"duplicate_window":120000000000,"allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false},"created":"2026-12-06T23:36:51.523324864Z","state":{"messages":1,"bytes":34,"first_seq":3,"first_ts":"2026-12-06T23:36:51.635277957Z","last_seq":3,"last_ts":"2026-12-06T23:36:51.635277957Z","num_subjects":1,"consumer_count":6}}"#,
                reserialized::<StreamInfoResponseJson>,
            ),
            (
                r#"{"type":"io.nats.jetstream.api.v1.stream_create_response","config":{"name":"S2","subjects":["S2"],"retention":"limits","max_consumers":-1,"max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":1,"duplicate_window":120000000000,"allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false},"created":"2026-12-06T23:25:21.238371333Z","state":{"messages":0,"bytes":0,"first_seq":0,"first_ts":"0001-01-01T00:00:00Z","last_seq":0,"last_ts":"0001-01-01T00:00:00Z","consumer_count":0},"did_create":true}"#,
                reserialized::<StreamCreateResponseJson>,
            ),
        ];
        for (answer, again) in cases {
            assert_eq!(again(answer), value(answer), "{answer}");
        }
    }

    #[test]
    fn account_info_is_the_unlimited_account_of_a_fresh_server() {
        let fresh = ApiResponse::ok(
            types::ACCOUNT_INFO,
            AccountInfoJson {
                limits: AccountLimitsJson::unlimited(),
                ..AccountInfoJson::default()
            },
        );
        assert_eq!(
            serde_json::to_string(&fresh).unwrap(),
            r#"{"type":"io.nats.jetstream.api.v1.account_info_response","memory":0,"storage":0,"streams":0,"consumers":0,"limits":{"max_memory":-1,"max_storage":-1,"max_streams":-1,"max_consumers":-1,"max_ack_pending":-1,"memory_max_stream_bytes":-1,"storage_max_stream_bytes":-1,"max_bytes_required":false},"api":{"total":0,"errors":0}}"#
        );
    }

    #[test]
    fn requests_round_trip_and_read_as_nats_server_does() {
        for (r, json) in [
            (
                PurgeRequest {
                    subject: Some("a.one".into()),
                    keep: Some(1),
                    up_to_seq: None,
                },
                r#"{"filter":"a.one","keep":1}"#,
            ),
            (
                PurgeRequest {
                    subject: None,
                    keep: None,
                    up_to_seq: Some(7),
                },
                r#"{"seq":7}"#,
            ),
            (PurgeRequest::default(), "{}"),
        ] {
            let j = PurgeRequestJson::from(&r);
            assert_eq!(serde_json::to_string(&j).unwrap(), json);
            let back: PurgeRequestJson = serde_json::from_str(json).unwrap();
            assert_eq!(PurgeRequest::from(back), r);
        }
        assert_eq!(
            serde_json::to_string(&MsgGetRequestJson::next_by_subject(4, ">")).unwrap(),
            r#"{"seq":4,"next_by_subj":">"}"#
        );
        assert_eq!(
            serde_json::to_string(&MsgGetRequestJson::last_by_subject("a.b")).unwrap(),
            r#"{"last_by_subj":"a.b"}"#
        );
        assert_eq!(
            serde_json::to_string(&MsgDeleteRequestJson {
                seq: 1,
                no_erase: true
            })
            .unwrap(),
            r#"{"seq":1,"no_erase":true}"#
        );
        assert_eq!(
            serde_json::to_string(&StreamListRequestJson {
                offset: 0,
                subject: "a.one".into()
            })
            .unwrap(),
            r#"{"offset":0,"subject":"a.one"}"#
        );
        let info: StreamInfoRequestJson = serde_json::from_str("{}").unwrap();
        assert_eq!(info, StreamInfoRequestJson::default());
        let names = parse_response::<StreamNamesResponseJson>(
            br#"{"type":"io.nats.jetstream.api.v1.stream_names_response","total":0,"offset":0,"limit":1024,"streams":null}"#,
        )
        .unwrap()
        .unwrap();
        assert!(names.streams.is_empty());
    }
}
