//! Streams in the JetStream API's JSON: configuration, state and info, and
//! their conversions with durabus's [`StreamConfig`], [`StreamState`] and
//! [`StreamInfo`].

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::time::{duration_to_nanos, go_time, nanos_to_duration};
use super::{go_enum, is_false, is_zero};
use crate::{DiscardPolicy, RetentionPolicy, StorageType, StreamConfig, StreamInfo, StreamState};

go_enum!(
    /// `retention`: `limits`, `interest`, `workqueue`.
    retention, crate::RetentionPolicy, lowercase = false, [
    crate::RetentionPolicy::Limits => "limits",
    crate::RetentionPolicy::Interest => "interest",
    crate::RetentionPolicy::WorkQueue => "workqueue",
]);
go_enum!(
    /// `discard`: `old`, `new` (nats-server reads any case).
    discard, crate::DiscardPolicy, lowercase = true, [
    crate::DiscardPolicy::Old => "old",
    crate::DiscardPolicy::New => "new",
]);
go_enum!(
    /// `storage`: `file`, `memory` (nats-server's `any` is for templates).
    storage, crate::StorageType, lowercase = false, [
    crate::StorageType::File => "file",
    crate::StorageType::Memory => "memory",
]);

/// A stream configuration: the body of `STREAM.CREATE` and `STREAM.UPDATE`
/// requests and the `config` of a stream info (nats-server's
/// `StreamConfig`, fields in its order).
///
/// Limits are Go's: `-1` (or `0` in a request) is unlimited. The features
/// durabus does not have are kept as JSON (a server refuses them: see
/// [`StreamConfigJson::unsupported`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamConfigJson {
    /// The stream's name.
    pub name: String,
    /// Free text (omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Captured subjects (omitted when empty, as a mirror's).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub subjects: Vec<String>,
    /// `limits`, `interest` or `workqueue`.
    #[serde(with = "retention")]
    pub retention: RetentionPolicy,
    /// Consumers at most (`-1`: unlimited). durabus has no such limit.
    pub max_consumers: i64,
    /// Messages kept at most (`-1`: unlimited).
    pub max_msgs: i64,
    /// Bytes kept at most (`-1`: unlimited).
    pub max_bytes: i64,
    /// Oldest message kept, in nanoseconds (`0`: unlimited).
    pub max_age: i64,
    /// Messages kept per subject at most (`-1`: unlimited).
    pub max_msgs_per_subject: i64,
    /// Largest message accepted (`-1`: unlimited; omitted when 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub max_msg_size: i32,
    /// `old` or `new`.
    #[serde(with = "discard")]
    pub discard: DiscardPolicy,
    /// `file` or `memory`.
    #[serde(with = "storage")]
    pub storage: StorageType,
    /// Copies kept.
    pub num_replicas: i64,
    /// Publishes get no ack (unsupported).
    #[serde(skip_serializing_if = "is_false")]
    pub no_ack: bool,
    /// The stream template that made it (unsupported).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub template_owner: String,
    /// The `Nats-Msg-Id` de-duplication window in nanoseconds (omitted
    /// when 0; nats-server makes 0 two minutes).
    #[serde(skip_serializing_if = "is_zero")]
    pub duplicate_window: i64,
    /// Cluster placement (unsupported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement: Option<Value>,
    /// The stream this one mirrors (unsupported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Value>,
    /// Streams this one sources from (unsupported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Value>,
    /// Republishing of stored messages (unsupported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub republish: Option<Value>,
    /// Direct gets (`$JS.API.DIRECT.GET`) allowed; KV buckets set it.
    pub allow_direct: bool,
    /// Direct gets from mirrors.
    pub mirror_direct: bool,
    /// With `discard: new`: refuse per subject (omitted when false).
    #[serde(skip_serializing_if = "is_false")]
    pub discard_new_per_subject: bool,
    /// Nothing gets in or out (unsupported).
    pub sealed: bool,
    /// Single message deletes refused.
    pub deny_delete: bool,
    /// Purges refused.
    pub deny_purge: bool,
    /// `Nats-Rollup` headers honoured.
    pub allow_rollup_hdrs: bool,
    /// 2.10: a subject transform on input (unsupported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub subject_transform: Option<Value>,
    /// 2.10: `none` or `s2` (s2 unsupported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compression: Option<Value>,
    /// 2.10: the first sequence of a new stream (unsupported but 0 and 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_seq: Option<Value>,
    /// 2.10: defaults and limits for consumers (unsupported).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub consumer_limits: Option<Value>,
    /// 2.10: free key/value metadata (kept, not interpreted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<Value>,
}

impl Default for StreamConfigJson {
    /// Go's zero values: what a request leaving everything out says.
    fn default() -> Self {
        Self {
            name: String::new(),
            description: String::new(),
            subjects: Vec::new(),
            retention: RetentionPolicy::Limits,
            max_consumers: 0,
            max_msgs: 0,
            max_bytes: 0,
            max_age: 0,
            max_msgs_per_subject: 0,
            max_msg_size: 0,
            discard: DiscardPolicy::Old,
            storage: StorageType::File,
            num_replicas: 0,
            no_ack: false,
            template_owner: String::new(),
            duplicate_window: 0,
            placement: None,
            mirror: None,
            sources: None,
            republish: None,
            allow_direct: false,
            mirror_direct: false,
            discard_new_per_subject: false,
            sealed: false,
            deny_delete: false,
            deny_purge: false,
            allow_rollup_hdrs: false,
            subject_transform: None,
            compression: None,
            first_seq: None,
            consumer_limits: None,
            metadata: None,
        }
    }
}

/// A present, non-null JSON value that says more than "nothing".
fn set(v: &Option<Value>) -> bool {
    match v {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Number(_)) => true,
    }
}

impl StreamConfigJson {
    /// The first feature this configuration sets that durabus does not
    /// have, by its JSON name (`mirror`, `sources`, `republish`,
    /// `placement`, `subject_transform`, `no_ack`, `template_owner`,
    /// `sealed`, `max_consumers`, `compression`, `first_seq`,
    /// `consumer_limits`); `None` when durabus can serve it. `allow_direct`
    /// and `mirror_direct` are not counted: they open another read API,
    /// which a server may or may not answer.
    pub fn unsupported(&self) -> Option<&'static str> {
        let compression = match &self.compression {
            Some(Value::String(s)) => !(s.is_empty() || s == "none"),
            other => set(other),
        };
        let first_seq = match &self.first_seq {
            Some(Value::Number(n)) => n.as_u64().is_none_or(|n| n > 1),
            other => set(other),
        };
        [
            ("mirror", set(&self.mirror)),
            ("sources", set(&self.sources)),
            ("republish", set(&self.republish)),
            ("placement", set(&self.placement)),
            ("subject_transform", set(&self.subject_transform)),
            ("no_ack", self.no_ack),
            ("template_owner", !self.template_owner.is_empty()),
            ("sealed", self.sealed),
            ("max_consumers", self.max_consumers > 0),
            ("compression", compression),
            ("first_seq", first_seq),
            ("consumer_limits", set(&self.consumer_limits)),
        ]
        .into_iter()
        .find_map(|(name, on)| on.then_some(name))
    }
}

/// A durabus limit as Go's (`-1`: unlimited).
fn limit(v: Option<u64>) -> i64 {
    v.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// A Go limit as durabus's: zero and negative are unlimited.
fn positive<T: TryFrom<i64>>(v: i64) -> Option<T> {
    if v <= 0 {
        None
    } else {
        T::try_from(v).ok()
    }
}

impl From<&StreamConfig> for StreamConfigJson {
    /// The configuration as the NATS backend asks nats-server for it: every
    /// limit spelled out, subjects as captured (the name when empty).
    fn from(cfg: &StreamConfig) -> Self {
        Self {
            name: cfg.name.clone(),
            description: cfg.description.clone().unwrap_or_default(),
            subjects: cfg.effective_subjects(),
            retention: cfg.retention,
            max_consumers: -1,
            max_msgs: limit(cfg.max_msgs),
            max_bytes: limit(cfg.max_bytes),
            max_age: cfg.max_age.map_or(0, duration_to_nanos),
            max_msgs_per_subject: limit(cfg.max_msgs_per_subject),
            max_msg_size: cfg
                .max_msg_size
                .map_or(-1, |n| i32::try_from(n).unwrap_or(i32::MAX)),
            discard: cfg.discard,
            storage: cfg.storage,
            num_replicas: i64::try_from(cfg.replicas).unwrap_or(i64::MAX),
            duplicate_window: duration_to_nanos(cfg.duplicate_window),
            discard_new_per_subject: cfg.discard_new_per_subject,
            deny_delete: cfg.deny_delete,
            deny_purge: cfg.deny_purge,
            allow_rollup_hdrs: cfg.allow_rollup,
            ..Self::default()
        }
    }
}

impl From<StreamConfigJson> for StreamConfig {
    /// durabus's configuration for this JSON: Go's "unlimited" (0 or -1)
    /// is `None`, at least one replica. Features durabus does not have are
    /// dropped: check [`StreamConfigJson::unsupported`] first. A duplicate
    /// window of 0 is nats-server's default: 2 minutes, or `max_age` when
    /// that is shorter.
    fn from(j: StreamConfigJson) -> Self {
        let max_age = (j.max_age > 0).then(|| nanos_to_duration(j.max_age));
        let duplicate_window = match j.duplicate_window {
            0 => max_age.map_or(crate::DEFAULT_DUPLICATE_WINDOW, |age| {
                age.min(crate::DEFAULT_DUPLICATE_WINDOW)
            }),
            n => nanos_to_duration(n),
        };
        Self {
            name: j.name,
            description: Some(j.description).filter(|d| !d.is_empty()),
            subjects: j.subjects,
            retention: j.retention,
            max_age,
            max_bytes: positive(j.max_bytes),
            max_msgs: positive(j.max_msgs),
            max_msgs_per_subject: positive(j.max_msgs_per_subject),
            max_msg_size: positive(i64::from(j.max_msg_size)),
            discard: j.discard,
            discard_new_per_subject: j.discard_new_per_subject,
            duplicate_window,
            storage: j.storage,
            replicas: usize::try_from(j.num_replicas).unwrap_or(0).max(1),
            allow_rollup: j.allow_rollup_hdrs,
            deny_delete: j.deny_delete,
            deny_purge: j.deny_purge,
        }
    }
}

/// `state.lost`: messages nats-server lost to damage.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LostStreamDataJson {
    /// Their sequences.
    pub msgs: Vec<u64>,
    /// Their bytes.
    pub bytes: u64,
}

/// A stream's state (nats-server's `StreamState`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamStateJson {
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Sequence of the oldest message (last + 1 when emptied).
    pub first_seq: u64,
    /// Its time (Go's zero time when none).
    #[serde(with = "go_time")]
    pub first_ts: Option<SystemTime>,
    /// Sequence of the newest message ever stored.
    pub last_seq: u64,
    /// Its time (Go's zero time when none; nats-server keeps it after a
    /// purge).
    #[serde(with = "go_time")]
    pub last_ts: Option<SystemTime>,
    /// Distinct subjects (omitted when 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub num_subjects: u64,
    /// Messages per subject, when a stream info request asked with
    /// `subjects_filter` (omitted when empty).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub subjects: BTreeMap<String, u64>,
    /// Messages deleted between first and last (omitted when 0).
    #[serde(skip_serializing_if = "is_zero")]
    pub num_deleted: u64,
    /// Their sequences, when asked with `deleted_details`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deleted: Vec<u64>,
    /// Messages lost to damage (omitted when none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lost: Option<LostStreamDataJson>,
    /// Consumers.
    pub consumer_count: u64,
}

impl From<&StreamState> for StreamStateJson {
    /// The state as nats-server would report it. durabus counts lost
    /// messages without their sequences, so `lost` is left out.
    fn from(s: &StreamState) -> Self {
        Self {
            messages: s.messages,
            bytes: s.bytes,
            first_seq: s.first_seq,
            first_ts: s.first_time,
            last_seq: s.last_seq,
            last_ts: s.last_time,
            num_subjects: s.num_subjects,
            subjects: BTreeMap::new(),
            num_deleted: s.num_deleted,
            deleted: Vec::new(),
            lost: None,
            consumer_count: s.consumer_count,
        }
    }
}

impl From<StreamStateJson> for StreamState {
    /// durabus's state: no first or last time for an empty stream (nats-server
    /// keeps the last message's time after a purge), lost messages counted.
    fn from(s: StreamStateJson) -> Self {
        let empty = s.messages == 0;
        Self {
            messages: s.messages,
            bytes: s.bytes,
            first_seq: s.first_seq,
            first_time: s.first_ts.filter(|_| !empty),
            last_seq: s.last_seq,
            last_time: s.last_ts.filter(|_| !empty),
            num_deleted: s.num_deleted,
            num_lost: s.lost.map_or(0, |l| l.msgs.len() as u64),
            num_subjects: s.num_subjects,
            consumer_count: s.consumer_count,
        }
    }
}

/// A stream's configuration and state (nats-server's `StreamInfo`): the
/// body of stream create, update and info answers, and of each entry of a
/// stream list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamInfoJson {
    /// The configuration in force (defaults filled in).
    pub config: StreamConfigJson,
    /// When the stream was created.
    #[serde(with = "go_time")]
    pub created: Option<SystemTime>,
    /// What it holds.
    pub state: StreamStateJson,
    /// The JetStream domain (omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// The cluster serving it (omitted outside a cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Value>,
    /// A mirror's progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mirror: Option<Value>,
    /// Sources' progress.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sources: Option<Value>,
    /// Mirrors serving direct gets for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alternates: Option<Value>,
}

impl From<&StreamInfo> for StreamInfoJson {
    fn from(info: &StreamInfo) -> Self {
        Self {
            config: StreamConfigJson::from(&info.config),
            created: Some(info.created),
            state: StreamStateJson::from(&info.state),
            ..Self::default()
        }
    }
}

impl From<StreamInfoJson> for StreamInfo {
    fn from(info: StreamInfoJson) -> Self {
        Self {
            config: info.config.into(),
            created: info.created.unwrap_or(UNIX_EPOCH),
            state: info.state.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// `STREAM.CREATE.S` of `{"name":"S","subjects":["a.>"],"max_msgs":100,
    /// "description":"d","max_age":3600000000000}`, nats-server 2.9.10.
    const CREATED: &str = r#"{"type":"io.nats.jetstream.api.v1.stream_create_response","config":{"name":"S","description":"d","subjects":["a.\u003e"],"retention":"limits","max_consumers":-1,"max_msgs":100,"max_bytes":-1,"max_age":3600000000000,"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":1,"duplicate_window":120000000000,"allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false},"created":"2026-12-06T23:25:21.236399014Z","state":{"messages":0,"bytes":0,"first_seq":0,"first_ts":"0001-01-01T00:00:00Z","last_seq":0,"last_ts":"0001-01-01T00:00:00Z","consumer_count":0},"did_create":true}"#;

    /// `STREAM.INFO.S` with `{"subjects_filter":">"}` after three publishes.
    const INFO_SUBJECTS: &str = r#"{"type":"io.nats.jetstream.api.v1.stream_info_response","total":2,"offset":0,"limit":100000,"config":{"name":"S","description":"d","subjects":["a.\u003e"],"retention":"limits","max_consumers":-1,"max_msgs":100,"max_bytes":-1,"max_age":3600000000000,"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":1,"duplicate_window":120000000000,"allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false},"created":"2026-12-06T23:25:21.236399014Z","state":{"messages":3,"bytes":164,"first_seq":1,"first_ts":"2026-12-06T23:25:21.241429179Z","last_seq":3,"last_ts":"2026-12-06T23:25:21.242134907Z","num_subjects":2,"subjects":{"a.one":2,"a.two":1},"consumer_count":0}}"#;

    /// `STREAM.INFO.S` after a purge of everything: no messages, yet
    /// `last_ts` kept.
    const INFO_PURGED: &str = r#"{"type":"io.nats.jetstream.api.v1.stream_info_response","total":0,"offset":0,"limit":0,"config":{"name":"S","description":"d","subjects":["a.\u003e"],"retention":"limits","max_consumers":-1,"max_msgs":100,"max_bytes":-1,"max_age":3600000000000,"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":1,"duplicate_window":120000000000,"allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false},"created":"2026-12-06T23:25:21.236399014Z","state":{"messages":0,"bytes":0,"first_seq":4,"first_ts":"0001-01-01T00:00:00Z","last_seq":3,"last_ts":"2026-12-06T23:25:21.242134907Z","consumer_count":2}}"#;

    /// A create of a workqueue stream with most options, and `republish`.
    const CREATED_FULL: &str = r#"{"type":"io.nats.jetstream.api.v1.stream_create_response","config":{"name":"S","subjects":["a.\u003e"],"retention":"workqueue","max_consumers":-1,"max_msgs":-1,"max_bytes":100000,"max_age":0,"max_msgs_per_subject":3,"max_msg_size":1024,"discard":"new","storage":"memory","num_replicas":1,"duplicate_window":120000000000,"republish":{"src":"\u003e","dest":"re.\u003e"},"allow_direct":true,"mirror_direct":false,"discard_new_per_subject":true,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":true},"created":"2026-12-06T23:26:14.059904934Z","state":{"messages":0,"bytes":0,"first_seq":0,"first_ts":"0001-01-01T00:00:00Z","last_seq":0,"last_ts":"0001-01-01T00:00:00Z","consumer_count":0},"did_create":true}"#;

    /// A mirror in a stream list: no `subjects`, `mirror` in the config and
    /// in the info.
    const MIRROR: &str = r#"{"config":{"name":"S5","retention":"limits","max_consumers":-1,"max_msgs":-1,"max_bytes":-1,"max_age":0,"max_msgs_per_subject":-1,"max_msg_size":-1,"discard":"old","storage":"file","num_replicas":1,"mirror":{"name":"S"},"allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false},"created":"2026-12-06T23:25:21.240156327Z","state":{"messages":3,"bytes":164,"first_seq":1,"first_ts":"2026-12-06T23:25:21.241429179Z","last_seq":3,"last_ts":"2026-12-06T23:25:21.242134907Z","num_subjects":2,"consumer_count":0},"mirror":{"name":"S","lag":0,"active":2708340}}"#;

    fn value(s: &str) -> Value {
        serde_json::from_str(s).unwrap()
    }

    /// `s`'s object without the keys of the API answer around it.
    fn without_envelope(s: &str) -> Value {
        let mut v = value(s);
        if let Value::Object(o) = &mut v {
            for k in ["type", "total", "offset", "limit", "did_create"] {
                o.remove(k);
            }
        }
        v
    }

    #[test]
    fn stream_infos_from_nats_server_parse_and_serialize_back_unchanged() {
        for fixture in [CREATED, INFO_SUBJECTS, INFO_PURGED, CREATED_FULL, MIRROR] {
            let info: StreamInfoJson = serde_json::from_str(fixture).unwrap();
            assert_eq!(
                serde_json::to_value(&info).unwrap(),
                without_envelope(fixture),
                "{fixture}"
            );
        }
    }

    #[test]
    fn a_stream_info_maps_to_durabus() {
        let info: StreamInfo = serde_json::from_str::<StreamInfoJson>(INFO_SUBJECTS)
            .unwrap()
            .into();
        let mut want = StreamConfig::new("S")
            .subjects(["a.>"])
            .max_msgs(100u64)
            .max_age(Duration::from_secs(3600));
        want.description = Some("d".into());
        assert_eq!(info.config, want);
        assert_eq!(
            info.created,
            UNIX_EPOCH + Duration::new(1_796_599_521, 236_399_014)
        );
        let s = &info.state;
        assert_eq!(
            (s.messages, s.bytes, s.first_seq, s.last_seq),
            (3, 164, 1, 3)
        );
        assert_eq!(s.num_subjects, 2);
        assert_eq!(
            s.last_time,
            Some(UNIX_EPOCH + Duration::new(1_796_599_521, 242_134_907))
        );
        let purged: StreamInfo = serde_json::from_str::<StreamInfoJson>(INFO_PURGED)
            .unwrap()
            .into();
        assert_eq!(
            (purged.state.first_time, purged.state.last_time),
            (None, None)
        );
        assert_eq!(purged.state.first_seq, 4);
        let full: StreamConfig = serde_json::from_str::<StreamInfoJson>(CREATED_FULL)
            .unwrap()
            .config
            .into();
        assert_eq!(full.retention, RetentionPolicy::WorkQueue);
        assert_eq!(full.storage, StorageType::Memory);
        assert_eq!(full.discard, DiscardPolicy::New);
        assert_eq!(full.max_msg_size, Some(1024));
        assert_eq!(full.max_msgs_per_subject, Some(3));
        assert!(full.discard_new_per_subject && full.allow_rollup);
    }

    #[test]
    fn configs_round_trip() {
        let mut cfg = StreamConfig::new("S")
            .subjects(["a.>"])
            .max_msgs(10u64)
            .max_age(Duration::from_secs(3600))
            .max_msg_size(100u32)
            .discard(DiscardPolicy::New)
            .retention(RetentionPolicy::Interest)
            .storage(StorageType::Memory)
            .deny_purge(true);
        cfg.description = Some("d".into());
        let json = serde_json::to_string(&StreamConfigJson::from(&cfg)).unwrap();
        let back: StreamConfigJson = serde_json::from_str(&json).unwrap();
        assert_eq!(StreamConfig::from(back), cfg);
        let info = StreamInfo {
            config: cfg,
            created: UNIX_EPOCH + Duration::new(1_700_000_000, 5),
            state: StreamState {
                messages: 2,
                first_seq: 3,
                first_time: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_001)),
                last_seq: 5,
                last_time: Some(UNIX_EPOCH + Duration::from_secs(1_700_000_002)),
                num_deleted: 1,
                num_subjects: 1,
                consumer_count: 4,
                bytes: 99,
                num_lost: 0,
            },
        };
        let json = serde_json::to_string(&StreamInfoJson::from(&info)).unwrap();
        let back: StreamInfoJson = serde_json::from_str(&json).unwrap();
        assert_eq!(StreamInfo::from(back), info);
    }

    #[test]
    fn a_request_leaving_everything_out_parses_with_go_zero_values() {
        let j: StreamConfigJson = serde_json::from_str(r#"{"name":"S2"}"#).unwrap();
        assert_eq!(
            j,
            StreamConfigJson {
                name: "S2".into(),
                ..StreamConfigJson::default()
            }
        );
        let cfg = StreamConfig::from(j);
        assert_eq!((cfg.max_msgs, cfg.max_age, cfg.replicas), (None, None, 1));
        // Only the fields nats-server never omits, in its order.
        assert_eq!(
            serde_json::to_string(&StreamConfigJson::default()).unwrap(),
            r#"{"name":"","retention":"limits","max_consumers":0,"max_msgs":0,"max_bytes":0,"max_age":0,"max_msgs_per_subject":0,"discard":"old","storage":"file","num_replicas":0,"allow_direct":false,"mirror_direct":false,"sealed":false,"deny_delete":false,"deny_purge":false,"allow_rollup_hdrs":false}"#
        );
    }

    #[test]
    fn policies_are_go_strings_and_unknown_ones_are_refused() {
        let j: StreamConfigJson =
            serde_json::from_str(r#"{"name":"S","discard":"NEW","retention":"workqueue"}"#)
                .unwrap();
        assert_eq!(j.discard, DiscardPolicy::New);
        assert_eq!(j.retention, RetentionPolicy::WorkQueue);
        for bad in [
            r#"{"retention":"Limits"}"#,
            r#"{"retention":"work_queue"}"#,
            r#"{"storage":"any"}"#,
            r#"{"discard":"oldest"}"#,
        ] {
            assert!(
                serde_json::from_str::<StreamConfigJson>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn unsupported_features_are_named() {
        let parse = |s: &str| {
            serde_json::from_str::<StreamConfigJson>(s)
                .unwrap()
                .unsupported()
        };
        assert_eq!(parse(r#"{"name":"S","allow_direct":true}"#), None);
        assert_eq!(
            parse(r#"{"name":"S","placement":null,"max_consumers":-1}"#),
            None
        );
        assert_eq!(
            parse(r#"{"name":"S","compression":"none","first_seq":1}"#),
            None
        );
        assert_eq!(
            parse(r#"{"name":"S","mirror":{"name":"O"}}"#),
            Some("mirror")
        );
        assert_eq!(
            parse(r#"{"name":"S","sources":[{"name":"O"}]}"#),
            Some("sources")
        );
        assert_eq!(
            parse(r#"{"name":"S","republish":{"src":">","dest":"x.>"}}"#),
            Some("republish")
        );
        assert_eq!(
            parse(r#"{"name":"S","placement":{"cluster":"x"}}"#),
            Some("placement")
        );
        assert_eq!(
            parse(r#"{"name":"S","subject_transform":{"src":"a","dest":"b"}}"#),
            Some("subject_transform")
        );
        assert_eq!(parse(r#"{"name":"S","no_ack":true}"#), Some("no_ack"));
        assert_eq!(
            parse(r#"{"name":"S","template_owner":"T"}"#),
            Some("template_owner")
        );
        assert_eq!(parse(r#"{"name":"S","sealed":true}"#), Some("sealed"));
        assert_eq!(
            parse(r#"{"name":"S","max_consumers":3}"#),
            Some("max_consumers")
        );
        assert_eq!(
            parse(r#"{"name":"S","compression":"s2"}"#),
            Some("compression")
        );
        assert_eq!(parse(r#"{"name":"S","first_seq":100}"#), Some("first_seq"));
        assert_eq!(
            parse(r#"{"name":"S","consumer_limits":{"max_ack_pending":5}}"#),
            Some("consumer_limits")
        );
        // Kept as they came, for a server that passes them on.
        let j: StreamConfigJson =
            serde_json::from_str(r#"{"name":"S","metadata":{"k":"v"}}"#).unwrap();
        assert_eq!(j.unsupported(), None);
        assert_eq!(
            serde_json::to_value(&j).unwrap()["metadata"],
            value(r#"{"k":"v"}"#)
        );
    }
}
