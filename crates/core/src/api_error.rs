//! The JetStream API's error answers (`code`, `err_code`, `description`)
//! and durabus's typed [`Error`]s: one table, read in both directions.
//!
//! A client of nats-server (the NATS backend) turns an answer into an
//! [`Error`] with [`ApiError::to_error`]; a server speaking the NATS
//! protocol over another engine answers an [`Error`] as nats-server 2.9 and
//! 2.10 would with [`ApiError::from_error`]. The codes are those of
//! nats-server's `server/errors.json`; each one durabus maps is checked
//! against a running nats-server by `crates/nats/tests/api_errors.rs`.
//!
//! An answer carries less than a typed error (nats-server says "stream not
//! found", not which): [`ApiRequest`] supplies what the request was about.

use serde::{Deserialize, Serialize};

use crate::{
    ArgumentError, ConfigError, Error, Message, NATS_EXPECTED_LAST_SEQUENCE,
    NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_EXPECTED_STREAM,
};

/// An error answer of the JetStream API, as its JSON has it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// The HTTP-like status: 400, 404, 500, 503.
    #[serde(default)]
    pub code: u16,
    /// The JetStream error code (`100xx`), which says what went wrong.
    #[serde(default)]
    pub err_code: u16,
    /// The server's text.
    #[serde(default)]
    pub description: String,
}

/// One JetStream error durabus maps to a typed [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiErrorCode {
    /// The status nats-server answers with.
    pub code: u16,
    /// The JetStream error code.
    pub err_code: u16,
    /// nats-server's name for it (`JSStreamNotFoundErr`).
    pub name: &'static str,
    /// nats-server's text; `{err}` and the like stand for details.
    pub description: &'static str,
}

/// The JetStream error codes durabus maps to typed errors.
pub mod codes {
    use super::ApiErrorCode;

    const fn c(
        code: u16,
        err_code: u16,
        name: &'static str,
        description: &'static str,
    ) -> ApiErrorCode {
        ApiErrorCode {
            code,
            err_code,
            name,
            description,
        }
    }

    /// [`crate::Error::StreamNotFound`].
    pub const STREAM_NOT_FOUND: ApiErrorCode =
        c(404, 10059, "JSStreamNotFoundErr", "stream not found");
    /// [`crate::Error::ConsumerNotFound`].
    pub const CONSUMER_NOT_FOUND: ApiErrorCode =
        c(404, 10014, "JSConsumerNotFoundErr", "consumer not found");
    /// [`crate::Error::StreamNameInUse`].
    pub const STREAM_NAME_IN_USE: ApiErrorCode = c(
        400,
        10058,
        "JSStreamNameExistErr",
        "stream name already in use with a different configuration",
    );
    /// [`crate::Error::ConsumerNameInUse`]: 2.9 and 2.10, a name taken by
    /// another kind of consumer.
    pub const CONSUMER_NAME_IN_USE: ApiErrorCode = c(
        400,
        10013,
        "JSConsumerNameExistErr",
        "consumer name already in use",
    );
    /// [`crate::Error::ConsumerNameInUse`]: 2.10, a create (`action`
    /// `create`) of an existing consumer with another configuration.
    pub const CONSUMER_ALREADY_EXISTS: ApiErrorCode = c(
        400,
        10148,
        "JSConsumerAlreadyExists",
        "consumer already exists",
    );
    /// [`crate::Error::ConsumerNameInUse`]: a push consumer of that name
    /// still has a subscriber.
    pub const CONSUMER_EXISTING_ACTIVE: ApiErrorCode = c(
        400,
        10105,
        "JSConsumerExistingActiveErr",
        "consumer already exists and is still active",
    );
    /// [`crate::Error::SubjectsOverlap`].
    pub const SUBJECTS_OVERLAP: ApiErrorCode = c(
        400,
        10065,
        "JSStreamSubjectOverlapErr",
        "subjects overlap with an existing stream",
    );
    /// [`crate::Error::WrongLastSequence`].
    pub const WRONG_LAST_SEQUENCE: ApiErrorCode = c(
        400,
        10071,
        "JSStreamWrongLastSequenceErrF",
        "wrong last sequence: {seq}",
    );
    /// [`crate::Error::WrongStream`].
    pub const WRONG_STREAM: ApiErrorCode = c(
        400,
        10060,
        "JSStreamNotMatchErr",
        "expected stream does not match",
    );
    /// [`crate::Error::MaxPayloadExceeded`].
    pub const MESSAGE_TOO_LARGE: ApiErrorCode = c(
        400,
        10054,
        "JSStreamMessageExceedsMaximumErr",
        "message size exceeds maximum allowed",
    );
    /// [`crate::Error::StreamFull`] when the text names an exceeded limit
    /// (`maximum messages exceeded`, `maximum bytes exceeded`, `maximum
    /// messages per subject exceeded`); otherwise a failed store.
    pub const STORE_FAILED: ApiErrorCode = c(503, 10077, "JSStreamStoreFailedF", "{err}");
    /// [`crate::Error::MessageNotFound`].
    pub const NO_MESSAGE_FOUND: ApiErrorCode =
        c(404, 10037, "JSNoMessageFoundErr", "no message found");
    /// [`crate::Error::MessageNotFound`]: a delete of a sequence the
    /// stream never had.
    pub const SEQUENCE_NOT_FOUND: ApiErrorCode = c(
        400,
        10043,
        "JSSequenceNotFoundErrF",
        "sequence {seq} not found",
    );
    /// [`crate::Error::Denied`] `delete` ("message delete not permitted"),
    /// or [`crate::Error::MessageNotFound`] for a message already gone.
    pub const MSG_DELETE_FAILED: ApiErrorCode = c(500, 10057, "JSStreamMsgDeleteFailedF", "{err}");
    /// [`crate::Error::Denied`] `purge` ("stream purge not permitted").
    pub const PURGE_FAILED: ApiErrorCode = c(500, 10110, "JSStreamPurgeFailedF", "{err}");
    /// [`crate::Error::Denied`] `rollup` ("rollup not permitted").
    pub const ROLLUP_FAILED: ApiErrorCode = c(500, 10111, "JSStreamRollupFailedF", "{err}");
    /// [`crate::Error::InvalidConfig`]: a stream configuration the server
    /// refuses.
    pub const INVALID_STREAM_CONFIG: ApiErrorCode =
        c(500, 10052, "JSStreamInvalidConfigF", "{err}");
    /// [`crate::Error::InvalidConfig`]: a stream update the server refuses.
    pub const STREAM_UPDATE: ApiErrorCode = c(500, 10069, "JSStreamUpdateErrF", "{err}");
    /// [`crate::Error::InvalidConfig`]: nats-server 2.9 wraps a refused
    /// consumer create or update in it.
    pub const CONSUMER_CREATE: ApiErrorCode = c(500, 10012, "JSConsumerCreateErrF", "{err}");
    /// [`crate::Error::InvalidArgument`]: a request the server cannot read.
    pub const BAD_REQUEST: ApiErrorCode = c(400, 10003, "JSBadRequestErr", "bad request");
    /// [`crate::Error::JetStreamNotEnabled`]: not for this account.
    pub const NOT_ENABLED_FOR_ACCOUNT: ApiErrorCode = c(
        503,
        10039,
        "JSNotEnabledForAccountErr",
        "JetStream not enabled for account",
    );
    /// [`crate::Error::JetStreamNotEnabled`]: not on this server.
    pub const NOT_ENABLED: ApiErrorCode = c(503, 10076, "JSNotEnabledErr", "JetStream not enabled");
    /// [`crate::Error::Unavailable`]: e.g. a cluster without a leader.
    pub const CLUSTER_NOT_AVAILABLE: ApiErrorCode = c(
        503,
        10008,
        "JSClusterNotAvailErr",
        "JetStream system temporarily unavailable",
    );
    /// A request body that is not JSON. Answered by the hub; not in [`ALL`]:
    /// a client reads it as a generic server error, as the next three.
    pub const INVALID_JSON: ApiErrorCode = c(400, 10025, "JSInvalidJSONErr", "invalid JSON");
    /// A stream create or update whose body names another stream than its
    /// subject (answered by the hub).
    pub const STREAM_MISMATCH: ApiErrorCode = c(
        400,
        10056,
        "JSStreamMismatchErr",
        "stream name in subject does not match request",
    );
    /// A consumer create whose body names another consumer than its
    /// subject (answered by the hub).
    pub const CONSUMER_NAME_MISMATCH: ApiErrorCode = c(
        400,
        10017,
        "JSConsumerDurableNameNotMatchSubjectErr",
        "consumer name in subject does not match durable name in request",
    );
    /// A cluster operation (peer remove, leader step-down) on a server that
    /// is not clustered (answered by the hub).
    pub const CLUSTER_REQUIRED: ApiErrorCode = c(
        503,
        10010,
        "JSClusterRequiredErr",
        "JetStream clustering support required",
    );
    /// A pull consumer asking for flow control (answered by the hub).
    pub const FLOW_CONTROL_NEEDS_PUSH: ApiErrorCode = c(
        400,
        10089,
        "JSConsumerFCRequiresPushErr",
        "consumer flow control requires a push based consumer",
    );
    /// A push consumer with flow control and no idle heartbeat (answered
    /// by the hub).
    pub const FLOW_CONTROL_NEEDS_HEARTBEATS: ApiErrorCode = c(
        400,
        10108,
        "JSConsumerWithFlowControlNeedsHeartbeats",
        "consumer with flow control also needs heartbeats",
    );
    /// Any other failure of a stream operation; how durabus answers an
    /// error the table has no entry for.
    pub const STREAM_GENERAL: ApiErrorCode = c(500, 10051, "JSStreamGeneralErrorF", "{err}");

    /// Every entry, for iteration (tests, documentation).
    pub const ALL: &[ApiErrorCode] = &[
        STREAM_NOT_FOUND,
        CONSUMER_NOT_FOUND,
        STREAM_NAME_IN_USE,
        CONSUMER_NAME_IN_USE,
        CONSUMER_ALREADY_EXISTS,
        CONSUMER_EXISTING_ACTIVE,
        SUBJECTS_OVERLAP,
        WRONG_LAST_SEQUENCE,
        WRONG_STREAM,
        MESSAGE_TOO_LARGE,
        STORE_FAILED,
        NO_MESSAGE_FOUND,
        SEQUENCE_NOT_FOUND,
        MSG_DELETE_FAILED,
        PURGE_FAILED,
        ROLLUP_FAILED,
        INVALID_STREAM_CONFIG,
        STREAM_UPDATE,
        CONSUMER_CREATE,
        BAD_REQUEST,
        NOT_ENABLED_FOR_ACCOUNT,
        NOT_ENABLED,
        CLUSTER_NOT_AVAILABLE,
        STREAM_GENERAL,
    ];
}

/// Where two streams' subjects collide, for [`Error::SubjectsOverlap`]
/// (nats-server's answer does not say).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overlap<'a> {
    /// A subject filter of the stream being created or updated.
    pub subject: &'a str,
    /// The stream it collides with.
    pub other: &'a str,
    /// The colliding filter of that stream.
    pub other_subject: &'a str,
}

/// What a request was about: the parts of a typed [`Error`] that
/// nats-server's answer leaves out. Unset parts are empty or zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiRequest<'a> {
    /// The stream the request named (or a publish was routed to).
    pub stream: &'a str,
    /// The consumer the request named.
    pub consumer: &'a str,
    /// What a message lookup asked for, e.g. "at sequence 7".
    pub what: &'a str,
    /// A publish's `Nats-Expected-Last-Sequence` (or `…-Subject-Sequence`).
    pub expected_last_sequence: u64,
    /// A publish's `Nats-Expected-Stream`.
    pub expected_stream: &'a str,
    /// A publish's size (headers and payload).
    pub message_size: usize,
    /// The stream's `max_msg_size` (0: unknown).
    pub max_msg_size: usize,
    /// For a create or update refused with overlapping subjects: where.
    pub overlap: Option<Overlap<'a>>,
    /// A create or update: any refusal with code 400 (but a bad request)
    /// is a configuration the server does not accept.
    pub config: bool,
}

impl<'a> ApiRequest<'a> {
    /// A request about `stream`.
    pub fn stream(stream: &'a str) -> Self {
        Self {
            stream,
            ..Self::default()
        }
    }

    /// A request about consumer `consumer` of `stream`.
    pub fn consumer(stream: &'a str, consumer: &'a str) -> Self {
        Self {
            stream,
            consumer,
            ..Self::default()
        }
    }

    /// A publish of `message` to `stream`, whose `max_msg_size` is
    /// `max_msg_size` (0: unknown).
    pub fn publish(stream: &'a str, message: &'a Message, max_msg_size: usize) -> Self {
        let h = &message.headers;
        Self {
            stream,
            expected_last_sequence: h
                .get(NATS_EXPECTED_LAST_SEQUENCE)
                .or_else(|| h.get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE))
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0),
            expected_stream: h.get(NATS_EXPECTED_STREAM).unwrap_or_default(),
            message_size: message.payload.len() + h.encoded_len(),
            max_msg_size,
            ..Self::default()
        }
    }

    /// The same request, asking for `what` (a message lookup).
    pub fn what(mut self, what: &'a str) -> Self {
        self.what = what;
        self
    }

    /// The same request, a create or update of a configuration.
    pub fn config(mut self) -> Self {
        self.config = true;
        self
    }

    /// The same request, with the overlap the caller found.
    pub fn overlap(mut self, overlap: Overlap<'a>) -> Self {
        self.overlap = Some(overlap);
        self
    }
}

impl ApiError {
    /// An answer with `entry`'s codes and this description.
    pub fn new(entry: ApiErrorCode, description: impl Into<String>) -> Self {
        Self {
            code: entry.code,
            err_code: entry.err_code,
            description: description.into(),
        }
    }

    /// Whether this answer has `entry`'s error code.
    pub fn is(&self, entry: ApiErrorCode) -> bool {
        self.err_code == entry.err_code
    }

    /// The typed error for this answer to `request`.
    pub fn to_error(&self, request: &ApiRequest<'_>) -> Error {
        use codes::*;
        let r = request;
        let d = self.description.as_str();
        let stream = || r.stream.to_owned();
        let missing = || Error::MessageNotFound {
            stream: stream(),
            what: r.what.to_owned(),
        };
        let denied = |operation| Error::Denied {
            stream: stream(),
            operation,
        };
        if let (true, Some(o)) = (self.is(SUBJECTS_OVERLAP), r.overlap) {
            return Error::SubjectsOverlap {
                subject: o.subject.to_owned(),
                other: o.other.to_owned(),
                other_subject: o.other_subject.to_owned(),
            };
        }
        match self.err_code {
            e if e == STREAM_NOT_FOUND.err_code => Error::StreamNotFound { name: stream() },
            e if e == CONSUMER_NOT_FOUND.err_code => Error::ConsumerNotFound {
                stream: stream(),
                name: r.consumer.to_owned(),
            },
            e if e == STREAM_NAME_IN_USE.err_code => Error::StreamNameInUse { name: stream() },
            e if e == CONSUMER_NAME_IN_USE.err_code
                || e == CONSUMER_ALREADY_EXISTS.err_code
                || e == CONSUMER_EXISTING_ACTIVE.err_code =>
            {
                Error::ConsumerNameInUse {
                    stream: stream(),
                    name: r.consumer.to_owned(),
                }
            }
            e if e == WRONG_LAST_SEQUENCE.err_code => Error::WrongLastSequence {
                expected: r.expected_last_sequence,
                current: d
                    .rsplit(' ')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0),
            },
            e if e == WRONG_STREAM.err_code => Error::WrongStream {
                expected: r.expected_stream.to_owned(),
                actual: stream(),
            },
            e if e == MESSAGE_TOO_LARGE.err_code => Error::MaxPayloadExceeded {
                size: r.message_size,
                max: r.max_msg_size,
            },
            e if e == STORE_FAILED.err_code && d.contains("exceeded") => Error::StreamFull {
                stream: stream(),
                limit: d.to_owned(),
            },
            e if e == NO_MESSAGE_FOUND.err_code || e == SEQUENCE_NOT_FOUND.err_code => missing(),
            e if e == MSG_DELETE_FAILED.err_code && d.contains("not permitted") => denied("delete"),
            e if e == MSG_DELETE_FAILED.err_code
                && ["not found", "no message", "EOF"]
                    .iter()
                    .any(|w| d.contains(w)) =>
            {
                missing()
            }
            e if e == PURGE_FAILED.err_code && d.contains("not permitted") => denied("purge"),
            e if e == ROLLUP_FAILED.err_code => denied("rollup"),
            e if e == INVALID_STREAM_CONFIG.err_code
                || e == STREAM_UPDATE.err_code
                || e == CONSUMER_CREATE.err_code =>
            {
                self.refused_config()
            }
            e if e == BAD_REQUEST.err_code => Error::invalid_argument(ArgumentError::Refused {
                description: self.description.clone(),
            }),
            _ if r.config && self.code == 400 => self.refused_config(),
            _ => self.generic(),
        }
    }

    /// The typed error for an answer that names nothing durabus knows
    /// about the request: JetStream missing, the server busy, or the
    /// server's own text.
    pub fn generic(&self) -> Error {
        if self.is(codes::NOT_ENABLED_FOR_ACCOUNT) || self.is(codes::NOT_ENABLED) {
            return Error::JetStreamNotEnabled;
        }
        if self.code == 503 {
            return Error::Unavailable {
                reason: format!("{} (err_code {})", self.description, self.err_code),
            };
        }
        Error::Server {
            code: self.code,
            err_code: self.err_code,
            description: self.description.clone(),
        }
    }

    fn refused_config(&self) -> Error {
        Error::invalid_config(ConfigError::Refused {
            description: self.description.clone(),
        })
    }

    /// The answer nats-server 2.9/2.10 gives for what `error` describes.
    /// Errors the table has no entry for are [`codes::STREAM_GENERAL`]
    /// with the error's text.
    pub fn from_error(error: &Error) -> Self {
        use codes::*;
        let fixed = |entry: ApiErrorCode| Self::new(entry, entry.description);
        match error {
            Error::StreamNotFound { .. } => fixed(STREAM_NOT_FOUND),
            Error::ConsumerNotFound { .. } => fixed(CONSUMER_NOT_FOUND),
            Error::StreamNameInUse { .. } => fixed(STREAM_NAME_IN_USE),
            // As 2.10 answers a create of a consumer that exists.
            Error::ConsumerNameInUse { .. } => fixed(CONSUMER_ALREADY_EXISTS),
            Error::SubjectsOverlap { .. } => fixed(SUBJECTS_OVERLAP),
            Error::WrongLastSequence { current, .. } => Self::new(
                WRONG_LAST_SEQUENCE,
                format!("wrong last sequence: {current}"),
            ),
            Error::WrongStream { .. } => fixed(WRONG_STREAM),
            Error::MaxPayloadExceeded { .. } => fixed(MESSAGE_TOO_LARGE),
            Error::StreamFull { limit, .. } => Self::new(STORE_FAILED, exceeded(limit)),
            Error::MessageNotFound { .. } => fixed(NO_MESSAGE_FOUND),
            Error::Denied { operation, .. } => {
                if operation.starts_with("rollup") {
                    Self::new(ROLLUP_FAILED, "rollup not permitted")
                } else if operation.starts_with("purge") {
                    Self::new(PURGE_FAILED, "stream purge not permitted")
                } else {
                    Self::new(MSG_DELETE_FAILED, "message delete not permitted")
                }
            }
            Error::InvalidConfig { reason } => Self::new(INVALID_STREAM_CONFIG, reason.to_string()),
            // nats-server says "bad request"; durabus's text says what is.
            Error::InvalidArgument { reason } => Self::new(BAD_REQUEST, reason.to_string()),
            Error::InvalidName { .. } | Error::InvalidSubject { .. } => {
                Self::new(BAD_REQUEST, error.to_string())
            }
            Error::JetStreamNotEnabled => fixed(NOT_ENABLED_FOR_ACCOUNT),
            Error::Unavailable { .. } => fixed(CLUSTER_NOT_AVAILABLE),
            Error::Server {
                code,
                err_code,
                description,
            } if *code != 0 => Self {
                code: *code,
                err_code: *err_code,
                description: description.clone(),
            },
            other => Self::new(STREAM_GENERAL, other.to_string()),
        }
    }
}

/// A stream limit in nats-server's words ("maximum messages exceeded"),
/// from the embedded engine's ("max_msgs 1000") or as it is.
fn exceeded(limit: &str) -> String {
    if limit.contains("exceeded") {
        return limit.to_owned();
    }
    let which = limit.split(' ').next().unwrap_or_default();
    match which {
        "max_msgs_per_subject" => "maximum messages per subject exceeded",
        "max_bytes" => "maximum bytes exceeded",
        _ => "maximum messages exceeded",
    }
    .to_owned()
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (code {}, err_code {})",
            self.description, self.code, self.err_code
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HeaderMap;
    use bytes::Bytes;

    /// The request every case below is about.
    fn request(message: &Message) -> ApiRequest<'_> {
        ApiRequest {
            consumer: "C",
            what: "at sequence 9",
            overlap: Some(Overlap {
                subject: "a.>",
                other: "OTHER",
                other_subject: "a.b",
            }),
            ..ApiRequest::publish("S", message, 100)
        }
    }

    fn message() -> Message {
        let mut headers = HeaderMap::new();
        headers.append(NATS_EXPECTED_LAST_SEQUENCE, "5");
        headers.append(NATS_EXPECTED_STREAM, "X");
        Message {
            subject: "a.b".into(),
            reply: None,
            headers,
            payload: Bytes::from_static(&[0; 200]),
        }
    }

    /// Each table entry with an answer as nats-server words it, and the
    /// typed error it stands for.
    fn cases(m: &Message) -> Vec<(ApiErrorCode, &'static str, Error)> {
        use codes::*;
        let size = m.payload.len() + m.headers.encoded_len();
        let in_use = || Error::ConsumerNameInUse {
            stream: "S".into(),
            name: "C".into(),
        };
        let missing = || Error::MessageNotFound {
            stream: "S".into(),
            what: "at sequence 9".into(),
        };
        let denied = |operation| Error::Denied {
            stream: "S".into(),
            operation,
        };
        let config = |why: &str| {
            Error::invalid_config(ConfigError::Refused {
                description: why.into(),
            })
        };
        vec![
            (
                STREAM_NOT_FOUND,
                "stream not found",
                Error::StreamNotFound { name: "S".into() },
            ),
            (
                CONSUMER_NOT_FOUND,
                "consumer not found",
                Error::ConsumerNotFound {
                    stream: "S".into(),
                    name: "C".into(),
                },
            ),
            (
                STREAM_NAME_IN_USE,
                "stream name already in use with a different configuration",
                Error::StreamNameInUse { name: "S".into() },
            ),
            (
                CONSUMER_NAME_IN_USE,
                "consumer name already in use",
                in_use(),
            ),
            (CONSUMER_ALREADY_EXISTS, "consumer already exists", in_use()),
            (
                CONSUMER_EXISTING_ACTIVE,
                "consumer already exists and is still active",
                in_use(),
            ),
            (
                SUBJECTS_OVERLAP,
                "subjects overlap with an existing stream",
                Error::SubjectsOverlap {
                    subject: "a.>".into(),
                    other: "OTHER".into(),
                    other_subject: "a.b".into(),
                },
            ),
            (
                WRONG_LAST_SEQUENCE,
                "wrong last sequence: 7",
                Error::WrongLastSequence {
                    expected: 5,
                    current: 7,
                },
            ),
            (
                WRONG_STREAM,
                "expected stream does not match",
                Error::WrongStream {
                    expected: "X".into(),
                    actual: "S".into(),
                },
            ),
            (
                MESSAGE_TOO_LARGE,
                "message size exceeds maximum allowed",
                Error::MaxPayloadExceeded { size, max: 100 },
            ),
            (
                STORE_FAILED,
                "maximum messages per subject exceeded",
                Error::StreamFull {
                    stream: "S".into(),
                    limit: "maximum messages per subject exceeded".into(),
                },
            ),
            (NO_MESSAGE_FOUND, "no message found", missing()),
            (SEQUENCE_NOT_FOUND, "sequence 9 not found", missing()),
            (
                MSG_DELETE_FAILED,
                "message delete not permitted",
                denied("delete"),
            ),
            (PURGE_FAILED, "stream purge not permitted", denied("purge")),
            (ROLLUP_FAILED, "rollup not permitted", denied("rollup")),
            (
                INVALID_STREAM_CONFIG,
                "max age needs to be >= 100ms",
                config("max age needs to be >= 100ms"),
            ),
            (
                STREAM_UPDATE,
                "stream configuration update can not change storage type",
                config("stream configuration update can not change storage type"),
            ),
            (
                CONSUMER_CREATE,
                "deliver policy can not be updated",
                config("deliver policy can not be updated"),
            ),
            (
                BAD_REQUEST,
                "bad request",
                Error::invalid_argument(ArgumentError::Refused {
                    description: "bad request".into(),
                }),
            ),
            (
                NOT_ENABLED_FOR_ACCOUNT,
                "JetStream not enabled for account",
                Error::JetStreamNotEnabled,
            ),
            (
                NOT_ENABLED,
                "JetStream not enabled",
                Error::JetStreamNotEnabled,
            ),
            (
                CLUSTER_NOT_AVAILABLE,
                "JetStream system temporarily unavailable",
                Error::Unavailable {
                    reason: "JetStream system temporarily unavailable (err_code 10008)".into(),
                },
            ),
            (
                STREAM_GENERAL,
                "stream is offline",
                Error::Server {
                    code: 500,
                    err_code: 10051,
                    description: "stream is offline".into(),
                },
            ),
        ]
    }

    #[test]
    fn every_entry_maps_to_its_error_and_back() {
        let m = message();
        let r = request(&m);
        let cases = cases(&m);
        for entry in codes::ALL {
            assert!(
                cases.iter().any(|(e, _, _)| e == entry),
                "{} has no case",
                entry.name
            );
        }
        for (entry, description, want) in cases {
            let got = ApiError::new(entry, description).to_error(&r);
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{}", entry.name);
            // Error -> answer -> Error gives the same error back.
            let back = ApiError::from_error(&got);
            assert_eq!(
                format!("{:?}", back.to_error(&r)),
                format!("{want:?}"),
                "{} answered as {back:?}",
                entry.name
            );
            // The answer has a code of the table with its status.
            let same = codes::ALL
                .iter()
                .find(|e| e.err_code == back.err_code)
                .unwrap_or_else(|| panic!("{} answered with {back:?}", entry.name));
            assert_eq!(same.code, back.code, "{}", entry.name);
        }
    }

    #[test]
    fn the_embedded_engines_limits_are_answered_in_nats_server_words() {
        for (limit, text) in [
            ("max_msgs 10", "maximum messages exceeded"),
            ("max_bytes 1024", "maximum bytes exceeded"),
            (
                "max_msgs_per_subject 1",
                "maximum messages per subject exceeded",
            ),
        ] {
            let e = Error::StreamFull {
                stream: "S".into(),
                limit: limit.into(),
            };
            let a = ApiError::from_error(&e);
            assert_eq!((a.code, a.err_code), (503, 10077));
            assert_eq!(a.description, text);
        }
    }

    #[test]
    fn answers_parse_from_the_servers_json() {
        let a: ApiError = serde_json::from_str(
            r#"{"code":404,"err_code":10059,"description":"stream not found"}"#,
        )
        .unwrap();
        assert_eq!(
            a,
            ApiError::new(codes::STREAM_NOT_FOUND, "stream not found")
        );
        assert!(a.is(codes::STREAM_NOT_FOUND));
    }
}
