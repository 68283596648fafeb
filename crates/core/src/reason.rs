//! Why a configuration or an argument was refused: the typed reasons of
//! [`crate::Error::InvalidConfig`] and [`crate::Error::InvalidArgument`].

use std::path::PathBuf;
use std::time::Duration;

use crate::StorageType;

/// Why a configuration (of a stream, consumer, connection, bucket or
/// feature) was refused. Each message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Two subjects of one stream overlap.
    #[error("stream {stream:?}: subjects {first:?} and {second:?} overlap each other")]
    SubjectsOverlapEachOther {
        /// The stream.
        stream: String,
        /// One subject.
        first: String,
        /// The subject overlapping it.
        second: String,
    },
    /// A stream limit is 0.
    #[error("stream {stream:?}: {field} is 0; leave it unset for unlimited")]
    ZeroLimit {
        /// The stream.
        stream: String,
        /// The limit, e.g. `max_msgs`.
        field: &'static str,
    },
    /// `discard_new_per_subject` without `discard: new` and a per-subject limit.
    #[error(
        "stream {stream:?}: discard_new_per_subject needs discard new and max_msgs_per_subject"
    )]
    DiscardNewPerSubject {
        /// The stream.
        stream: String,
    },
    /// `allow_rollup` with `deny_purge`.
    #[error("stream {stream:?}: roll-ups require the purge permission; allow_rollup and deny_purge exclude each other")]
    RollupWithDenyPurge {
        /// The stream.
        stream: String,
    },
    /// `replicas` is 0.
    #[error("stream {stream:?}: replicas must be at least 1")]
    NoReplicas {
        /// The stream.
        stream: String,
    },
    /// The duplicate window is longer than `max_age`.
    #[error("stream {stream:?}: duplicate_window {duplicate_window:?} is longer than max_age {max_age:?}")]
    DuplicateWindowTooLarge {
        /// The stream.
        stream: String,
        /// The duplicate window asked for.
        duplicate_window: Duration,
        /// The stream's `max_age`.
        max_age: Duration,
    },
    /// An update changes the storage type.
    #[error("stream {stream:?}: stream configuration update can not change storage from {from:?} to {to:?}; create a new stream and copy the messages")]
    StorageChange {
        /// The stream.
        stream: String,
        /// Its storage.
        from: StorageType,
        /// The storage asked for.
        to: StorageType,
    },
    /// An update lifts `deny_delete` or `deny_purge`.
    #[error("stream {stream:?}: stream configuration update can not cancel deny {what}")]
    DenyLifted {
        /// The stream.
        stream: String,
        /// "message deletes" or "purge".
        what: &'static str,
    },
    /// Two filter subjects of one consumer overlap.
    #[error("consumer filter subjects {first:?} and {second:?} overlap")]
    ConsumerFiltersOverlap {
        /// One filter.
        first: String,
        /// The filter overlapping it.
        second: String,
    },
    /// A consumer limit is 0.
    #[error("consumer {field} is 0; leave it unset for unlimited")]
    ConsumerZeroLimit {
        /// The limit, e.g. `max_deliver`.
        field: &'static str,
    },
    /// A consumer duration is zero.
    #[error("consumer {field} must be above zero")]
    ConsumerZeroDuration {
        /// The setting, e.g. `ack_wait`.
        field: &'static str,
    },
    /// A backoff list without a `max_deliver` above its length.
    #[error("max deliver is required to be > length of backoff values")]
    BackoffNeedsMaxDeliver,
    /// `last_per_subject` without a filter subject (nats-server 2.9's rule
    /// and words).
    #[error("consumer delivery policy is deliver last per subject, but optional filter subject is not set")]
    LastPerSubjectNeedsFilter,
    /// `by_start_sequence` 0.
    #[error("consumer deliver policy by_start_sequence needs a sequence of 1 or more")]
    StartSequenceZero,
    /// An update changes what a consumer cannot change.
    #[error("consumer configuration update can not change {field}")]
    ConsumerChange {
        /// "deliver policy", "ack policy" or "durable name".
        field: &'static str,
    },
    /// An update of a consumer without a durable name.
    #[error("update_consumer needs a durable name: ephemeral consumers cannot be updated")]
    UpdateNeedsDurableName,
    /// A consumer of a work-queue stream that does not ack explicitly.
    #[error("workqueue stream requires explicit ack")]
    WorkQueueNeedsExplicitAck,
    /// A consumer of a work-queue stream that does not start at the first message.
    #[error("consumer must be deliver all on workqueue stream")]
    WorkQueueNeedsDeliverAll,
    /// Two consumers of a work-queue stream would get the same messages.
    #[error("{}", if *.unfiltered { "multiple non-filtered consumers not allowed on workqueue stream" } else { "filtered consumer not unique on workqueue stream" })]
    WorkQueueNotUnique {
        /// One of the two has no filter.
        unfiltered: bool,
    },
    /// A TLS client certificate without its key, or a key without its certificate.
    #[error(
        "a TLS client certificate needs its key and the key its certificate (tls_cert and tls_key)"
    )]
    TlsCertWithoutKey,
    /// A file the connection needs cannot be read.
    #[error("{what} {} is not a readable file", path.display())]
    UnreadableFile {
        /// What the file is, e.g. "credentials file".
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// The credentials file could not be loaded.
    #[error("cannot read the credentials file {reason}")]
    Credentials {
        /// The file and what failed, without any credential.
        reason: String,
    },
    /// A connection timeout is zero.
    #[error("connect_timeout and request_timeout must be above zero")]
    ZeroTimeout,
    /// `reconnect_wait` is above `reconnect_wait_max`.
    #[error("reconnect_wait is above reconnect_wait_max")]
    ReconnectWaitAboveMax,
    /// A KV bucket's history is out of range.
    #[error(
        "KV bucket {bucket:?}: history {history} is out of range; keep 1 to {max} entries per key"
    )]
    KvHistory {
        /// The bucket.
        bucket: String,
        /// The history asked for.
        history: u64,
        /// The most allowed.
        max: u64,
    },
    /// A stream exists under a bucket's name but is not a KV bucket.
    #[error("stream {stream:?} is not a KV bucket (it must capture only \"$KV.{bucket}.>\" and set max_msgs_per_subject)")]
    NotAKvBucket {
        /// The stream.
        stream: String,
        /// The bucket name.
        bucket: String,
    },
    /// Two typed subject bindings share a type name.
    #[error("type name {name:?} is registered twice; give one binding another name with Subject::with_type_name")]
    DuplicateTypeName {
        /// The type name.
        name: String,
    },
    /// A dead-letter stream that does not capture its subject.
    #[error("dead-letter stream {stream:?} does not capture {subject:?}; add the subject to it or choose another stream")]
    DeadLetterNotCaptured {
        /// The dead-letter stream.
        stream: String,
        /// The dead-letter subject.
        subject: String,
    },
    /// A consumer whose `max_deliver` leaves the consumer runner no
    /// delivery to dead-letter a message on after its last attempt.
    #[error("consumer {consumer:?} has max_deliver {max_deliver}, but running {max_attempts} attempt(s) needs max_deliver of at least {} (one delivery more, on which the runner dead-letters); raise max_deliver, leave it unlimited, or lower max_attempts", max_attempts + 1)]
    MaxDeliverTooLow {
        /// The consumer.
        consumer: String,
        /// Its `max_deliver`.
        max_deliver: u64,
        /// The attempts asked for (at least 1).
        max_attempts: u64,
    },
    /// A redrive's msg id was already used, inside the origin stream's
    /// duplicate window, by a different message: the letter is left in
    /// the dead-letter stream.
    #[error("redrive of dead letter {letter_seq} of {dlq_stream:?}: msg id {msg_id:?} is a duplicate of seq {origin_seq} of {origin_stream:?}, a different message; the letter is left in {dlq_stream:?} (run the redrive again after the origin's duplicate window)")]
    RedriveIdInUse {
        /// The dead-letter stream.
        dlq_stream: String,
        /// The letter's sequence there.
        letter_seq: u64,
        /// The msg id the republish carried.
        msg_id: String,
        /// The origin stream.
        origin_stream: String,
        /// The sequence the duplicate ack named.
        origin_seq: u64,
    },
    /// No stream captures a subject that one captured before.
    #[error("no stream captures {subject:?} any more; {consequence}")]
    NoLongerCaptured {
        /// The subject.
        subject: String,
        /// What that means and what to do.
        consequence: String,
    },
    /// A supervision setting is out of range.
    #[error("{setting} {requirement}")]
    Supervision {
        /// The setting(s), e.g. "failure_threshold".
        setting: &'static str,
        /// What it must be, e.g. "must be at least 1".
        requirement: &'static str,
    },
    /// The server refused the configuration, in its words.
    #[error("{description}")]
    Refused {
        /// What the server said.
        description: String,
    },
}

/// Why an argument was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgumentError {
    /// A start at sequence 0.
    #[error("replay from sequence 0: sequences start at 1")]
    StartSequenceZero,
    /// A purge with both `keep` and `up_to_seq`.
    #[error("purge: keep and up_to_seq are exclusive")]
    PurgeKeepAndSequence,
    /// A queue group name that is empty or has whitespace.
    #[error("queue group {group:?} must be non-empty without whitespace")]
    QueueGroup {
        /// The group.
        group: String,
    },
    /// A `Nats-Rollup` value other than `sub` or `all`.
    #[error("Nats-Rollup must be \"sub\" or \"all\", got {value:?}")]
    RollupValue {
        /// The value.
        value: String,
    },
    /// A stream, consumer or KV bucket name longer than its limit (in
    /// bytes: the embedded store derives file names from it, and every
    /// backend applies the same limits).
    #[error("{kind} name {name:?} is {len} bytes; the limit is {max} bytes (so that every file the store derives from it fits a 255-byte file name)")]
    NameTooLong {
        /// "stream", "consumer" or "KV bucket".
        kind: &'static str,
        /// The name.
        name: String,
        /// Its length in bytes.
        len: usize,
        /// The most allowed, in bytes.
        max: usize,
    },
    /// A header name NATS cannot carry: empty, or holding a character that
    /// is not printable ASCII (33-126) or is `:` (async-nats's
    /// `HeaderName` rule and the NATS header format, ADR-4).
    #[error("{}", header_name_text(name, *found))]
    HeaderName {
        /// The header name.
        name: String,
        /// The first character not allowed (`None`: the name is empty).
        found: Option<char>,
    },
    /// A header value holding CR or LF, which would end the header line on
    /// the NATS wire (async-nats's `HeaderValue` rule). The value is not
    /// shown: headers may carry credentials.
    #[error("the value of header {name:?} contains {} at byte {offset}; NATS header values cannot hold CR or LF", if *.cr { "CR (\\r)" } else { "LF (\\n)" })]
    HeaderValue {
        /// The header name.
        name: String,
        /// Byte offset of the first CR or LF in the value.
        offset: usize,
        /// Whether it is a CR (else an LF).
        cr: bool,
    },
    /// More or larger headers than a record holds.
    #[error("too many or too large headers (at most 65535 headers, names up to 65535 bytes)")]
    HeadersTooLarge,
    /// A header that must hold a sequence number does not.
    #[error("header {header} must be a sequence number, got {value:?}")]
    NotASequence {
        /// The header.
        header: String,
        /// Its value.
        value: String,
    },
    /// A fetch from a push consumer.
    #[error("consumer {consumer:?} of stream {stream:?} is a push consumer; fetch needs a pull consumer")]
    PushConsumer {
        /// The stream.
        stream: String,
        /// The consumer.
        consumer: String,
    },
    /// A settle of a delivery that did not come from this backend.
    #[error("delivery {seq} of stream {stream:?} has no NATS ack subject (token); only deliveries fetched from a NATS consumer can be settled here")]
    NoAckToken {
        /// The stream.
        stream: String,
        /// The delivery's stream sequence.
        seq: u64,
    },
    /// An ack token that is not a JetStream ack subject.
    #[error("{token:?} is not a JetStream ack subject ($JS.ACK...)")]
    NotAnAckSubject {
        /// The token.
        token: String,
    },
    /// The server could not read the request, in its words.
    #[error("{description}")]
    Refused {
        /// What the server said.
        description: String,
    },
}

fn header_name_text(name: &str, found: Option<char>) -> String {
    const RULE: &str =
        "a NATS header name is one or more printable ASCII characters (33-126) other than ':'";
    match found {
        None => format!("empty header name; {RULE}"),
        Some(c) => format!("header name {name:?} contains {c:?}; {RULE}"),
    }
}
