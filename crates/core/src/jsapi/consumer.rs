//! Consumers in the JetStream API's JSON: configuration, info, the create
//! request, pull requests and nak options, and their conversions with
//! durabus's [`ConsumerConfig`] and [`ConsumerInfo`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::time::{
    clamp_to_unix_nanos, duration_to_nanos, go_time, go_time_omitempty, nanos_to_duration,
};
use super::{go_enum, is_false, is_zero};
use crate::{AckPolicy, ConsumerConfig, ConsumerInfo, DeliverPolicy, SequencePair};

go_enum!(
    /// `ack_policy`: `none`, `all`, `explicit`.
    ack, crate::AckPolicy, lowercase = false, [
    crate::AckPolicy::None => "none",
    crate::AckPolicy::All => "all",
    crate::AckPolicy::Explicit => "explicit",
]);

/// `deliver_policy`: where a consumer starts (the start itself is
/// `opt_start_seq` or `opt_start_time`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliverPolicyJson {
    /// `all` (nats-server also reads `undefined` as this).
    #[default]
    #[serde(rename = "all", alias = "undefined")]
    All,
    /// `last`.
    #[serde(rename = "last")]
    Last,
    /// `new`.
    #[serde(rename = "new")]
    New,
    /// `by_start_sequence`, from `opt_start_seq`.
    #[serde(rename = "by_start_sequence")]
    ByStartSequence,
    /// `by_start_time`, from `opt_start_time`.
    #[serde(rename = "by_start_time")]
    ByStartTime,
    /// `last_per_subject`.
    #[serde(rename = "last_per_subject")]
    LastPerSubject,
}

/// `replay_policy`: how fast stored messages are delivered.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplayPolicy {
    /// `instant`: as fast as possible (the default; all durabus does).
    #[default]
    #[serde(rename = "instant")]
    Instant,
    /// `original`: at the pace they were stored.
    #[serde(rename = "original")]
    Original,
}

/// A consumer configuration: the `config` of a create request and of a
/// consumer info (nats-server 2.9.10's `ConsumerConfig`, fields in its
/// order, plus 2.10's `filter_subjects`).
///
/// Durations are nanoseconds; `max_deliver` and `max_ack_pending` are `-1`
/// for unlimited. The push consumer fields (`deliver_subject`,
/// `flow_control`, ...) have no durabus counterpart: a server serves push
/// consumers itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerConfigJson {
    /// The durable name (omitted for an ephemeral consumer).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub durable_name: String,
    /// The name (2.9: set to the durable name; omitted when empty).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Free text.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Where it starts.
    pub deliver_policy: DeliverPolicyJson,
    /// The start of `by_start_sequence`.
    #[serde(skip_serializing_if = "is_zero")]
    pub opt_start_seq: u64,
    /// The start of `by_start_time`.
    #[serde(with = "go_time_omitempty", skip_serializing_if = "Option::is_none")]
    pub opt_start_time: Option<SystemTime>,
    /// `none`, `all` or `explicit`. A request without one asks for `none`
    /// (Go's zero value), which a pull consumer may not have.
    #[serde(with = "ack")]
    pub ack_policy: AckPolicy,
    /// Nanoseconds before an unacknowledged delivery is redelivered.
    #[serde(skip_serializing_if = "is_zero")]
    pub ack_wait: i64,
    /// Deliveries of a message at most (`-1`: unlimited).
    #[serde(skip_serializing_if = "is_zero")]
    pub max_deliver: i64,
    /// Waits before redeliveries, in nanoseconds.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub backoff: Vec<i64>,
    /// Only subjects matching this filter.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub filter_subject: String,
    /// 2.10: several filters (2.9 ignores the field).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub filter_subjects: Vec<String>,
    /// `instant` or `original`.
    pub replay_policy: ReplayPolicy,
    /// Push: bits per second at most.
    #[serde(skip_serializing_if = "is_zero")]
    pub rate_limit_bps: u64,
    /// Sampling of ack latencies (`"50%"`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub sample_freq: String,
    /// Pull: waiting pull requests at most (nats-server's default 512).
    #[serde(skip_serializing_if = "is_zero")]
    pub max_waiting: i64,
    /// Unacknowledged deliveries at most (`-1`: unlimited).
    #[serde(skip_serializing_if = "is_zero")]
    pub max_ack_pending: i64,
    /// Push: idle heartbeat in nanoseconds.
    #[serde(skip_serializing_if = "is_zero")]
    pub idle_heartbeat: i64,
    /// Push: flow control.
    #[serde(skip_serializing_if = "is_false")]
    pub flow_control: bool,
    /// Deliver headers only (and `Nats-Msg-Size`).
    #[serde(skip_serializing_if = "is_false")]
    pub headers_only: bool,
    /// Pull: batch of one request at most.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_batch: i64,
    /// Pull: `expires` of one request at most, in nanoseconds.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_expires: i64,
    /// Pull: `max_bytes` of one request at most.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_bytes: i64,
    /// Push: where messages are delivered. Set: a push consumer.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub deliver_subject: String,
    /// Push: the queue group delivered to.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub deliver_group: String,
    /// Nanoseconds without activity before the consumer is removed.
    #[serde(skip_serializing_if = "is_zero")]
    pub inactive_threshold: i64,
    /// Copies kept (0: as the stream).
    pub num_replicas: i64,
    /// Keep its state in memory.
    #[serde(skip_serializing_if = "is_false")]
    pub mem_storage: bool,
    /// nats-server's internal direct consumers (sources, mirrors).
    #[serde(skip_serializing_if = "is_false")]
    pub direct: bool,
}

impl Default for ConsumerConfigJson {
    /// Go's zero values: what a request leaving everything out says (the
    /// ack policy is `none`).
    fn default() -> Self {
        Self {
            durable_name: String::new(),
            name: String::new(),
            description: String::new(),
            deliver_policy: DeliverPolicyJson::All,
            opt_start_seq: 0,
            opt_start_time: None,
            ack_policy: AckPolicy::None,
            ack_wait: 0,
            max_deliver: 0,
            backoff: Vec::new(),
            filter_subject: String::new(),
            filter_subjects: Vec::new(),
            replay_policy: ReplayPolicy::Instant,
            rate_limit_bps: 0,
            sample_freq: String::new(),
            max_waiting: 0,
            max_ack_pending: 0,
            idle_heartbeat: 0,
            flow_control: false,
            headers_only: false,
            max_batch: 0,
            max_expires: 0,
            max_bytes: 0,
            deliver_subject: String::new(),
            deliver_group: String::new(),
            inactive_threshold: 0,
            num_replicas: 0,
            mem_storage: false,
            direct: false,
        }
    }
}

impl ConsumerConfigJson {
    /// Whether this is a push consumer (it has a `deliver_subject`).
    pub fn is_push(&self) -> bool {
        !self.deliver_subject.is_empty()
    }
}

/// A durabus limit as Go's (`-1`: unlimited).
fn limit(v: Option<u64>) -> i64 {
    v.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX))
}

/// A Go limit as durabus's: zero and negative are unlimited.
fn positive(v: i64) -> Option<u64> {
    u64::try_from(v).ok().filter(|n| *n > 0)
}

impl From<&ConsumerConfig> for ConsumerConfigJson {
    /// A pull consumer as durabus asks nats-server for it: a durable's name
    /// as both `durable_name` and `name`, limits spelled out (`-1`), the
    /// inactive threshold in force, a start time clamped to what
    /// nats-server compares. One filter is `filter_subject`; several are
    /// 2.10's `filter_subjects` (2.9 ignores them: refuse them first).
    fn from(cfg: &ConsumerConfig) -> Self {
        let (deliver_policy, opt_start_seq, opt_start_time) = match cfg.deliver_policy {
            DeliverPolicy::All => (DeliverPolicyJson::All, 0, None),
            DeliverPolicy::Last => (DeliverPolicyJson::Last, 0, None),
            DeliverPolicy::New => (DeliverPolicyJson::New, 0, None),
            DeliverPolicy::LastPerSubject => (DeliverPolicyJson::LastPerSubject, 0, None),
            DeliverPolicy::ByStartSequence(seq) => (DeliverPolicyJson::ByStartSequence, seq, None),
            DeliverPolicy::ByStartTime(t) => (
                DeliverPolicyJson::ByStartTime,
                0,
                Some(clamp_to_unix_nanos(t)),
            ),
        };
        let (filter_subject, filter_subjects) = match cfg.filter_subjects.as_slice() {
            [one] => (one.clone(), Vec::new()),
            several => (String::new(), several.to_vec()),
        };
        let name = cfg.durable_name.clone().unwrap_or_default();
        Self {
            durable_name: name.clone(),
            name,
            description: cfg.description.clone().unwrap_or_default(),
            deliver_policy,
            opt_start_seq,
            opt_start_time,
            ack_policy: cfg.ack_policy,
            ack_wait: duration_to_nanos(cfg.ack_wait),
            max_deliver: limit(cfg.max_deliver),
            backoff: cfg.backoff.iter().map(|d| duration_to_nanos(*d)).collect(),
            filter_subject,
            filter_subjects,
            max_ack_pending: limit(cfg.max_ack_pending),
            inactive_threshold: cfg
                .effective_inactive_threshold()
                .map_or(0, duration_to_nanos),
            ..Self::default()
        }
    }
}

impl From<ConsumerConfigJson> for ConsumerConfig {
    /// durabus's configuration for this JSON: Go's "unlimited" is `None`,
    /// an `ack_wait` of 0 is the default 30 s, `by_start_time` without a
    /// time starts at the epoch, `filter_subject` comes first among the
    /// filters. Push fields are dropped.
    fn from(j: ConsumerConfigJson) -> Self {
        let deliver_policy = match j.deliver_policy {
            DeliverPolicyJson::All => DeliverPolicy::All,
            DeliverPolicyJson::Last => DeliverPolicy::Last,
            DeliverPolicyJson::New => DeliverPolicy::New,
            DeliverPolicyJson::LastPerSubject => DeliverPolicy::LastPerSubject,
            DeliverPolicyJson::ByStartSequence => DeliverPolicy::ByStartSequence(j.opt_start_seq),
            DeliverPolicyJson::ByStartTime => DeliverPolicy::ByStartTime(clamp_to_unix_nanos(
                j.opt_start_time.unwrap_or(UNIX_EPOCH),
            )),
        };
        let mut filter_subjects = j.filter_subjects;
        if !j.filter_subject.is_empty() && !filter_subjects.contains(&j.filter_subject) {
            filter_subjects.insert(0, j.filter_subject);
        }
        ConsumerConfig {
            durable_name: Some(j.durable_name).filter(|d| !d.is_empty()),
            description: Some(j.description).filter(|d| !d.is_empty()),
            deliver_policy,
            ack_policy: j.ack_policy,
            ack_wait: if j.ack_wait <= 0 {
                crate::DEFAULT_ACK_WAIT
            } else {
                nanos_to_duration(j.ack_wait)
            },
            max_deliver: positive(j.max_deliver),
            backoff: j.backoff.into_iter().map(nanos_to_duration).collect(),
            max_ack_pending: positive(j.max_ack_pending),
            filter_subjects,
            inactive_threshold: (j.inactive_threshold > 0)
                .then(|| nanos_to_duration(j.inactive_threshold)),
        }
    }
}

/// Consumer and stream sequence of a consumer's last delivery or ack
/// floor, with the time of that activity (nats-server's `SequenceInfo`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SequenceInfoJson {
    /// The consumer sequence.
    pub consumer_seq: u64,
    /// The stream sequence.
    pub stream_seq: u64,
    /// When (omitted before any).
    #[serde(with = "go_time_omitempty", skip_serializing_if = "Option::is_none")]
    pub last_active: Option<SystemTime>,
}

impl From<SequencePair> for SequenceInfoJson {
    fn from(p: SequencePair) -> Self {
        Self {
            consumer_seq: p.consumer_seq,
            stream_seq: p.stream_seq,
            last_active: None,
        }
    }
}

impl From<SequenceInfoJson> for SequencePair {
    fn from(p: SequenceInfoJson) -> Self {
        Self {
            consumer_seq: p.consumer_seq,
            stream_seq: p.stream_seq,
        }
    }
}

/// A consumer's configuration and state (nats-server's `ConsumerInfo`): the
/// body of consumer create and info answers and of each entry of a
/// consumer list.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerInfoJson {
    /// The stream.
    pub stream_name: String,
    /// The consumer's name.
    pub name: String,
    /// When it was created.
    #[serde(with = "go_time")]
    pub created: Option<SystemTime>,
    /// Its configuration (defaults filled in).
    pub config: ConsumerConfigJson,
    /// The last delivery.
    pub delivered: SequenceInfoJson,
    /// Everything up to here is acknowledged.
    pub ack_floor: SequenceInfoJson,
    /// Deliveries awaiting an ack.
    pub num_ack_pending: u64,
    /// Messages delivered more than once, unacknowledged.
    pub num_redelivered: u64,
    /// Pull requests waiting.
    pub num_waiting: u64,
    /// Messages not delivered yet.
    pub num_pending: u64,
    /// The cluster serving it (omitted outside a cluster).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<Value>,
    /// Push: a subscriber listens on the deliver subject.
    #[serde(skip_serializing_if = "is_false")]
    pub push_bound: bool,
}

impl From<&ConsumerInfo> for ConsumerInfoJson {
    fn from(info: &ConsumerInfo) -> Self {
        Self {
            stream_name: info.stream.clone(),
            name: info.name.clone(),
            created: Some(info.created),
            config: ConsumerConfigJson::from(&info.config),
            delivered: info.delivered.into(),
            ack_floor: info.ack_floor.into(),
            num_ack_pending: info.num_ack_pending,
            num_redelivered: info.num_redelivered,
            num_waiting: 0,
            num_pending: info.num_pending,
            cluster: None,
            push_bound: false,
        }
    }
}

impl From<ConsumerInfoJson> for ConsumerInfo {
    fn from(info: ConsumerInfoJson) -> Self {
        Self {
            stream: info.stream_name,
            name: info.name,
            config: info.config.into(),
            created: info.created.unwrap_or(UNIX_EPOCH),
            delivered: info.delivered.into(),
            ack_floor: info.ack_floor.into(),
            num_pending: info.num_pending,
            num_ack_pending: info.num_ack_pending,
            num_redelivered: info.num_redelivered,
            num_lost: 0,
        }
    }
}

/// 2.10's `action` of a consumer create: whether an existing consumer may
/// be updated or must not exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConsumerAction {
    /// `""` or absent: create, or update an existing one (all 2.9 knows).
    #[default]
    #[serde(rename = "")]
    CreateOrUpdate,
    /// `create`: refuse if one with another configuration exists.
    #[serde(rename = "create")]
    Create,
    /// `update`: refuse if none exists.
    #[serde(rename = "update")]
    Update,
}

impl ConsumerAction {
    fn is_default(&self) -> bool {
        *self == Self::CreateOrUpdate
    }
}

/// The body of `CONSUMER.CREATE.<stream>[.<name>]` (and 2.9's
/// `CONSUMER.DURABLE.CREATE`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct CreateConsumerRequestJson {
    /// The stream.
    pub stream_name: String,
    /// The consumer.
    pub config: ConsumerConfigJson,
    /// 2.10: create only, update only, or either (omitted).
    #[serde(skip_serializing_if = "ConsumerAction::is_default")]
    pub action: ConsumerAction,
}

/// The body of a pull request (`CONSUMER.MSG.NEXT.<stream>.<consumer>`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PullRequestJson {
    /// Nanoseconds the request lasts (omitted: until answered).
    #[serde(skip_serializing_if = "is_zero")]
    pub expires: i64,
    /// Messages at most (nats-server reads 0 as 1).
    #[serde(skip_serializing_if = "is_zero")]
    pub batch: u64,
    /// Bytes at most.
    #[serde(skip_serializing_if = "is_zero")]
    pub max_bytes: u64,
    /// Answer at once with 404 when nothing is pending.
    #[serde(skip_serializing_if = "is_false")]
    pub no_wait: bool,
    /// Nanoseconds between heartbeats while waiting.
    #[serde(skip_serializing_if = "is_zero")]
    pub idle_heartbeat: i64,
}

impl PullRequestJson {
    /// A pull of `batch` messages lasting `expires`.
    pub fn new(batch: u64, expires: Duration) -> Self {
        Self {
            batch,
            expires: duration_to_nanos(expires),
            ..Self::default()
        }
    }

    /// A pull request's payload as nats-server 2.9 reads it: empty is a
    /// batch of 1, JSON is this, anything else is a batch count in decimal.
    pub fn parse(payload: &[u8]) -> Result<Self, serde_json::Error> {
        let text = payload.trim_ascii();
        if text.is_empty() {
            return Ok(Self::new(1, Duration::ZERO));
        }
        if text.first() == Some(&b'{') {
            return serde_json::from_slice(text);
        }
        serde_json::from_slice::<u64>(text).map(|batch| Self::new(batch, Duration::ZERO))
    }
}

/// The JSON after `-NAK ` in a nak with a delay (nats-server's
/// `ConsumerNakOptions`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct NakOptionsJson {
    /// Nanoseconds before the redelivery.
    pub delay: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers of nats-server 2.9.10 to consumer creates (a durable pull
    /// with backoff, an ephemeral by start time with ack none, a push
    /// consumer, a pull with the pull limits, a push one with the push
    /// options) and a consumer info after one delivery.
    const CREATED: &[&str] = &[
        r#"{"type":"io.nats.jetstream.api.v1.consumer_create_response","stream_name":"S","name":"C","created":"2026-12-06T23:25:21.245271081Z","config":{"durable_name":"C","name":"C","deliver_policy":"all","ack_policy":"explicit","ack_wait":1000000000,"max_deliver":5,"backoff":[1000000000,2000000000],"filter_subject":"a.one","replay_policy":"instant","max_waiting":512,"max_ack_pending":1000,"num_replicas":0},"delivered":{"consumer_seq":0,"stream_seq":0},"ack_floor":{"consumer_seq":0,"stream_seq":0},"num_ack_pending":0,"num_redelivered":0,"num_waiting":0,"num_pending":2}"#,
        r#"{"type":"io.nats.jetstream.api.v1.consumer_create_response","stream_name":"S","name":"qCydrI7o","created":"2026-12-06T23:25:21.246099348Z","config":{"deliver_policy":"by_start_time","opt_start_time":"2024-01-02T03:04:05.5Z","ack_policy":"none","max_deliver":-1,"replay_policy":"instant","max_waiting":512,"inactive_threshold":5000000000,"num_replicas":0},"delivered":{"consumer_seq":0,"stream_seq":0},"ack_floor":{"consumer_seq":0,"stream_seq":0},"num_ack_pending":0,"num_redelivered":0,"num_waiting":0,"num_pending":3}"#,
        r#"{"type":"io.nats.jetstream.api.v1.consumer_create_response","stream_name":"S","name":"P","created":"2026-12-06T23:25:21.246920144Z","config":{"durable_name":"P","name":"P","deliver_policy":"all","ack_policy":"explicit","ack_wait":30000000000,"max_deliver":-1,"replay_policy":"instant","max_ack_pending":1000,"idle_heartbeat":5000000000,"flow_control":true,"deliver_subject":"push.p","num_replicas":0},"delivered":{"consumer_seq":0,"stream_seq":0},"ack_floor":{"consumer_seq":0,"stream_seq":0},"num_ack_pending":0,"num_redelivered":0,"num_waiting":0,"num_pending":3}"#,
        r#"{"type":"io.nats.jetstream.api.v1.consumer_create_response","stream_name":"S","name":"C","created":"2026-12-06T23:36:41.997623072Z","config":{"durable_name":"C","name":"C","description":"dd","deliver_policy":"by_start_sequence","opt_start_seq":1,"ack_policy":"explicit","ack_wait":30000000000,"max_deliver":-1,"replay_policy":"instant","sample_freq":"50%","max_waiting":10,"max_ack_pending":20,"headers_only":true,"max_batch":5,"max_expires":2000000000,"max_bytes":1000,"inactive_threshold":60000000000,"num_replicas":1,"mem_storage":true},"delivered":{"consumer_seq":0,"stream_seq":0},"ack_floor":{"consumer_seq":0,"stream_seq":0},"num_ack_pending":0,"num_redelivered":0,"num_waiting":0,"num_pending":0}"#,
        r#"{"type":"io.nats.jetstream.api.v1.consumer_create_response","stream_name":"S","name":"E","created":"2026-12-06T23:36:41.999190981Z","config":{"durable_name":"E","name":"E","deliver_policy":"all","ack_policy":"all","ack_wait":2000000000,"max_deliver":3,"replay_policy":"original","rate_limit_bps":1000,"max_ack_pending":1000,"deliver_subject":"push.e","deliver_group":"g","num_replicas":0},"delivered":{"consumer_seq":0,"stream_seq":0},"ack_floor":{"consumer_seq":0,"stream_seq":0},"num_ack_pending":0,"num_redelivered":0,"num_waiting":0,"num_pending":0}"#,
        r#"{"type":"io.nats.jetstream.api.v1.consumer_info_response","stream_name":"S","name":"C","created":"2026-12-06T23:25:21.245271081Z","config":{"durable_name":"C","name":"C","deliver_policy":"all","ack_policy":"explicit","ack_wait":1000000000,"max_deliver":5,"backoff":[1000000000,2000000000],"filter_subject":"a.one","replay_policy":"instant","max_waiting":512,"max_ack_pending":1000,"num_replicas":0},"delivered":{"consumer_seq":1,"stream_seq":1,"last_active":"2026-12-06T23:25:21.247750295Z"},"ack_floor":{"consumer_seq":0,"stream_seq":0},"num_ack_pending":1,"num_redelivered":0,"num_waiting":0,"num_pending":1}"#,
    ];

    fn without_type(s: &str) -> Value {
        let mut v: Value = serde_json::from_str(s).unwrap();
        if let Value::Object(o) = &mut v {
            o.remove("type");
        }
        v
    }

    #[test]
    fn consumer_infos_from_nats_server_parse_and_serialize_back_unchanged() {
        for fixture in CREATED {
            let info: ConsumerInfoJson = serde_json::from_str(fixture).unwrap();
            assert_eq!(
                serde_json::to_value(&info).unwrap(),
                without_type(fixture),
                "{fixture}"
            );
        }
    }

    #[test]
    fn consumer_infos_map_to_durabus() {
        let parse = |i: usize| -> (ConsumerInfo, bool) {
            let j: ConsumerInfoJson = serde_json::from_str(CREATED[i]).unwrap();
            let push = j.config.is_push();
            (j.into(), push)
        };
        let (c, push) = parse(5);
        assert!(!push);
        let want = ConsumerConfig::durable("C")
            .ack_wait(Duration::from_secs(1))
            .max_deliver(5)
            .backoff([Duration::from_secs(1), Duration::from_secs(2)])
            .filter_subject("a.one");
        assert_eq!(c.config, want);
        assert_eq!((c.stream.as_str(), c.name.as_str()), ("S", "C"));
        assert_eq!(
            c.delivered,
            SequencePair {
                consumer_seq: 1,
                stream_seq: 1
            }
        );
        assert_eq!((c.num_ack_pending, c.num_pending), (1, 1));
        assert_eq!(
            c.created,
            UNIX_EPOCH + Duration::new(1_796_599_521, 245_271_081)
        );
        let (e, push) = parse(1);
        assert!(!push);
        assert_eq!(e.config.durable_name, None);
        assert_eq!(e.config.ack_policy, AckPolicy::None);
        assert_eq!(e.config.max_ack_pending, None);
        assert_eq!(
            e.config.deliver_policy,
            DeliverPolicy::ByStartTime(UNIX_EPOCH + Duration::new(1_704_164_645, 500_000_000))
        );
        assert_eq!(e.config.inactive_threshold, Some(Duration::from_secs(5)));
        assert!(parse(2).1 && parse(4).1);
        let (f, _) = parse(3);
        assert_eq!(f.config.deliver_policy, DeliverPolicy::ByStartSequence(1));
        assert_eq!(f.config.description.as_deref(), Some("dd"));
    }

    /// What `config_to_json` of the NATS backend compared: the server
    /// makes `ack_wait` the first backoff wait and fills in the ephemeral
    /// inactive threshold.
    fn normalized(cfg: &ConsumerConfig) -> ConsumerConfig {
        let mut c = cfg.clone();
        c.inactive_threshold = c.effective_inactive_threshold();
        if let Some(first) = c.backoff.first() {
            c.ack_wait = *first;
        }
        if let DeliverPolicy::ByStartTime(t) = c.deliver_policy {
            c.deliver_policy = DeliverPolicy::ByStartTime(clamp_to_unix_nanos(t));
        }
        c
    }

    fn round_trip(cfg: &ConsumerConfig) -> ConsumerConfig {
        let json = serde_json::to_string(&ConsumerConfigJson::from(cfg)).unwrap();
        serde_json::from_str::<ConsumerConfigJson>(&json)
            .unwrap()
            .into()
    }

    #[test]
    fn configs_round_trip() {
        let t = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        for policy in [
            DeliverPolicy::All,
            DeliverPolicy::Last,
            DeliverPolicy::New,
            DeliverPolicy::LastPerSubject,
            DeliverPolicy::ByStartSequence(7),
            DeliverPolicy::ByStartTime(t),
            DeliverPolicy::ByStartTime(UNIX_EPOCH),
            DeliverPolicy::ByStartTime(UNIX_EPOCH - Duration::from_secs(5)),
        ] {
            let mut cfg = ConsumerConfig::durable("c")
                .deliver_policy(policy)
                .ack_policy(AckPolicy::All)
                .ack_wait(Duration::from_millis(300))
                .max_deliver(4)
                .backoff([Duration::from_secs(1), Duration::from_secs(2)])
                .max_ack_pending(None)
                .filter_subject("a.*")
                .inactive_threshold(Duration::from_secs(9));
            cfg.description = Some("d".into());
            assert_eq!(
                normalized(&round_trip(&cfg)),
                normalized(&cfg),
                "{policy:?}"
            );
        }
        let eph = ConsumerConfig::ephemeral();
        assert_eq!(normalized(&round_trip(&eph)), normalized(&eph));
        assert_eq!(round_trip(&eph).max_ack_pending, Some(1000));
        let mut several = ConsumerConfig::durable("c");
        several.filter_subjects = vec!["a".into(), "b".into()];
        let j = ConsumerConfigJson::from(&several);
        assert_eq!(
            (j.filter_subject.as_str(), j.filter_subjects.len()),
            ("", 2)
        );
        assert_eq!(round_trip(&several), several);
    }

    #[test]
    fn the_json_of_a_pull_consumer_is_what_the_nats_backend_sent() {
        let cfg = ConsumerConfig::durable("c")
            .deliver_policy(DeliverPolicy::ByStartSequence(3))
            .filter_subject("a.>");
        let json = serde_json::to_value(ConsumerConfigJson::from(&cfg)).unwrap();
        let want: Value = serde_json::from_str(
            r#"{"durable_name":"c","name":"c","deliver_policy":"by_start_sequence","opt_start_seq":3,
            "ack_policy":"explicit","ack_wait":30000000000,"max_deliver":-1,"filter_subject":"a.>",
            "replay_policy":"instant","max_ack_pending":1000,"num_replicas":0}"#,
        )
        .unwrap();
        assert_eq!(json, want);
    }

    #[test]
    fn a_request_leaving_everything_out_has_go_zero_values() {
        let j: CreateConsumerRequestJson =
            serde_json::from_str(r#"{"stream_name":"S","config":{"durable_name":"D"}}"#).unwrap();
        assert_eq!(j.config.ack_policy, AckPolicy::None);
        assert_eq!(j.config.deliver_policy, DeliverPolicyJson::All);
        assert_eq!(j.action, ConsumerAction::CreateOrUpdate);
        let v = serde_json::to_value(&j).unwrap();
        assert!(v.get("action").is_none());
        let j: CreateConsumerRequestJson = serde_json::from_str(
            r#"{"stream_name":"S","action":"create","config":{"deliver_policy":"undefined",
            "filter_subjects":["a.x","a.y"]}}"#,
        )
        .unwrap();
        assert_eq!(j.action, ConsumerAction::Create);
        assert_eq!(j.config.deliver_policy, DeliverPolicyJson::All);
        assert_eq!(serde_json::to_value(&j).unwrap()["action"], "create");
        assert!(
            serde_json::from_str::<ConsumerConfigJson>(r#"{"ack_policy":"Explicit"}"#).is_err()
        );
    }

    #[test]
    fn pull_requests_and_naks() {
        let p = PullRequestJson {
            no_wait: true,
            ..PullRequestJson::new(10, Duration::from_secs(1))
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"expires":1000000000,"batch":10,"no_wait":true}"#
        );
        assert_eq!(
            PullRequestJson::parse(br#"{"batch":10,"expires":1000000000,"no_wait":true}"#).unwrap(),
            p
        );
        assert_eq!(PullRequestJson::parse(b"").unwrap().batch, 1);
        assert_eq!(PullRequestJson::parse(b" 7 ").unwrap().batch, 7);
        assert!(PullRequestJson::parse(b"x").is_err());
        let nak: NakOptionsJson = serde_json::from_str(r#"{"delay": 5000000}"#).unwrap();
        assert_eq!(nak.delay, 5_000_000);
    }
}
