//! Typed errors shared by every backend.

use std::path::PathBuf;
use std::time::Duration;

use crate::reason::{ArgumentError, ConfigError};

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in durabus, as kinds callers can match.
///
/// Messages say what was wrong and, where there is one, what to do next.
/// Credentials never appear in an error's text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No stream has this name.
    #[error("stream {name:?} not found; create it first with create_stream")]
    StreamNotFound {
        /// The name that was looked up.
        name: String,
    },
    /// No consumer has this name on the stream.
    #[error(
        "consumer {name:?} not found on stream {stream:?}; create it first with create_consumer"
    )]
    ConsumerNotFound {
        /// The stream.
        stream: String,
        /// The consumer name looked up.
        name: String,
    },
    /// A consumer with this name exists with a different configuration.
    #[error("consumer {name:?} already exists on stream {stream:?} with a different configuration; use update_consumer to change it")]
    ConsumerNameInUse {
        /// The stream.
        stream: String,
        /// The consumer's name.
        name: String,
    },
    /// A stream with this name exists with a different configuration.
    #[error("stream {name:?} already exists with a different configuration; use update_stream to change it")]
    StreamNameInUse {
        /// The stream's name.
        name: String,
    },
    /// The new stream's subjects overlap those of an existing stream.
    #[error("subjects overlap with stream {other:?}: {subject:?} of the new stream also matches {other_subject:?}; a subject may be captured by one stream only")]
    SubjectsOverlap {
        /// A subject filter of the new stream.
        subject: String,
        /// The stream it collides with.
        other: String,
        /// The colliding filter of that stream.
        other_subject: String,
    },
    /// `Nats-Expected-Last-Sequence` (or `…-Subject-Sequence`) did not match.
    #[error("wrong last sequence: expected {expected}, but the last sequence is {current}")]
    WrongLastSequence {
        /// The sequence the publisher expected.
        expected: u64,
        /// The actual last sequence (of the stream, or of the subject for
        /// `Nats-Expected-Last-Subject-Sequence`).
        current: u64,
    },
    /// `Nats-Expected-Stream` named another stream than the one capturing the subject.
    #[error("expected stream {expected:?}, but subject is captured by {actual:?}")]
    WrongStream {
        /// The stream the publisher expected.
        expected: String,
        /// The stream that captures the subject.
        actual: String,
    },
    /// A publish that must be stored (`Bus::publish_stored`, a stream
    /// handle's `publish`) found no stream capturing its subject. The
    /// message went out as a core message (live subscribers of the subject
    /// may have received it, as with a JetStream publish on NATS) but was
    /// not stored.
    #[error("no stream captures subject {subject:?}, so the message was not stored; create a stream whose subjects match it, or use Bus::publish for core messages that need not be stored")]
    NotCaptured {
        /// The subject published to.
        subject: String,
    },
    /// The message is larger than the stream's `max_msg_size`.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes; split it, or raise the stream's max_msg_size if that is the limit (the embedded engine caps records at 64 MiB)")]
    MaxPayloadExceeded {
        /// Size of the rejected message (headers and payload).
        size: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The stream is full and its discard policy is `new`.
    #[error("stream {stream:?} is full ({limit}); discard policy is `new`, so new messages are rejected")]
    StreamFull {
        /// The stream's name.
        stream: String,
        /// Which limit was hit, e.g. "max_msgs 1000".
        limit: String,
    },
    /// A subject failed validation.
    #[error("invalid subject {subject:?}: {reason}")]
    InvalidSubject {
        /// The offending subject.
        subject: String,
        /// What is wrong with it, naming the token.
        reason: String,
    },
    /// A stream or consumer name failed validation: empty, or holding a
    /// character names cannot hold. (A name over its byte limit is
    /// [`Error::InvalidArgument`] with [`ArgumentError::NameTooLong`].)
    #[error(
        "invalid name {name:?}: {reason} (durabus::sanitize derives a legal name from any id)"
    )]
    InvalidName {
        /// The offending name.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A configuration value is invalid or inconsistent.
    #[error("invalid configuration: {reason}")]
    InvalidConfig {
        /// What is wrong, and what to change.
        reason: ConfigError,
    },
    /// A start sequence or other argument is out of range.
    #[error("invalid argument: {reason}")]
    InvalidArgument {
        /// What is wrong.
        reason: ArgumentError,
    },
    /// No message exists at that sequence (never stored, deleted, or expired).
    #[error("no message found in stream {stream:?} {what}")]
    MessageNotFound {
        /// The stream searched.
        stream: String,
        /// What was asked for, e.g. "at sequence 7" or "for subject \"a.b\"".
        what: String,
    },
    /// The stream denies this operation (`deny_delete` / `deny_purge`).
    #[error("stream {stream:?} denies {operation}")]
    Denied {
        /// The stream.
        stream: String,
        /// The operation refused.
        operation: &'static str,
    },
    /// No KV bucket has this name.
    #[error("KV bucket {bucket:?} not found; create it first with create_kv")]
    BucketNotFound {
        /// The bucket looked up.
        bucket: String,
    },
    /// A KV key breaks the NATS key rules.
    #[error("invalid KV key {key:?}: {reason}; a key is letters, digits and `-/_=.`, not starting or ending with `.`")]
    InvalidKey {
        /// The offending key.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A KV value is larger than its bucket allows.
    #[error("value of {size} bytes for key {key:?} exceeds bucket {bucket:?}'s max value size of {max} bytes; store less, or raise the bucket's max value size")]
    ValueTooLarge {
        /// The bucket.
        bucket: String,
        /// The key written.
        key: String,
        /// Size of the rejected value.
        size: usize,
        /// The bucket's limit.
        max: usize,
    },
    /// `create` found the key holding a value.
    #[error("key {key:?} already exists in bucket {bucket:?} (revision {revision}); use update with that revision, or put")]
    KeyExists {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The key's current revision.
        revision: u64,
    },
    /// A compare-and-swap found the key at another revision.
    #[error("key {key:?} in bucket {bucket:?} is at revision {current}, not {expected}; read it again and retry")]
    WrongRevision {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The revision the writer expected.
        expected: u64,
        /// The key's revision now (0: no value).
        current: u64,
    },
    /// A read-modify-write loop gave up: other writers kept changing the key.
    #[error("update of key {key:?} in bucket {bucket:?} gave up after {attempts} attempts: it kept changing (last revision seen {revision}); retry later or allow more retries")]
    Conflict {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The last revision seen (0: no value).
        revision: u64,
        /// Attempts made.
        attempts: u32,
    },
    /// A request found nobody listening on its subject.
    #[error("no responders on subject {subject:?}")]
    NoResponders {
        /// The request subject.
        subject: String,
    },
    /// A responder answered with an error reply (the NATS micro
    /// `Nats-Service-Error` / `Nats-Service-Error-Code` headers). The request
    /// was delivered and handled; it is not retried.
    #[error("the service on {subject:?} answered with error {code}: {message}; the request was handled and refused, see the service's logs or fix the request")]
    ServiceError {
        /// The request subject.
        subject: String,
        /// The error code (`Nats-Service-Error-Code`; 500 when the header is
        /// not a number).
        code: u16,
        /// The error description (`Nats-Service-Error`).
        message: String,
    },
    /// A payload could not be decoded as the type its subject is bound to.
    #[error("cannot decode the payload on {subject:?} as {type_name} ({content_type}): {reason}; check that the publisher uses the same type and codec")]
    Decode {
        /// The subject the message came on.
        subject: String,
        /// The type name it was decoded as.
        type_name: String,
        /// The codec's content type.
        content_type: &'static str,
        /// What the codec reported.
        reason: String,
    },
    /// A typed message whose `Durabus-Type` header names another payload
    /// type than the typed subject that received it (shared patterns carry
    /// several types, told apart by that header).
    #[error("the message on {subject:?} is of type {found:?} (its Durabus-Type header), not {expected:?}; receive it with a Subject of that type name, or dispatch mixed types with a typed Registry")]
    WrongType {
        /// The subject the message came on.
        subject: String,
        /// The type name of the typed subject that received it.
        expected: String,
        /// The type name the message's `Durabus-Type` header carries.
        found: String,
    },
    /// A value could not be encoded by its codec.
    #[error("cannot encode a {type_name} as {content_type}: {reason}; the value has a shape this codec cannot represent, choose another codec")]
    Encode {
        /// The type name of the value.
        type_name: String,
        /// The codec's content type.
        content_type: &'static str,
        /// What the codec reported.
        reason: String,
    },
    /// An operation did not complete in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The connection or store was closed; create a new one.
    #[error("closed: this durabus connection was closed; connect again")]
    Closed,
    /// The data directory is locked by another process.
    #[error(
        "data directory {path:?} is locked by {}, which does not share it: stop it, use another directory, or open the store there with share=true (the durabus CLI shares by default) so other processes join it",
        lock_holder(pid)
    )]
    Locked {
        /// The data directory.
        path: PathBuf,
        /// The holder's pid as it recorded it; "unknown" when the lock file
        /// holds no pid or (on Linux) names no running process.
        pid: String,
    },
    /// A file the embedded store opens is a symbolic link. The store never
    /// follows one (a link could make it truncate or overwrite a file
    /// elsewhere); nothing was written through it.
    #[error("{path:?} is a symbolic link; durabus does not follow links in its data directory: remove the link (and restore the file it stood for if it was moved)")]
    Symlink {
        /// The link.
        path: PathBuf,
    },
    /// Files were written by a newer (or unknown) on-disk format.
    #[error("{path:?} has format version {found}, this durabus reads version {supported}; upgrade durabus (nothing was changed)")]
    UnsupportedFormat {
        /// The file that carries the version.
        path: PathBuf,
        /// The version found.
        found: u32,
        /// The version this build understands.
        supported: u32,
    },
    /// Stored bytes failed verification somewhere other than a torn tail.
    ///
    /// A read (replay, get, a consumer) that meets an unreadable record
    /// reports it once with the stream and the sequences it costs, and goes
    /// on with the next intact record: a replay yields this as one item and
    /// continues on the next `next()`.
    #[error("{}corruption in {segment:?} at offset {offset}: {reason}; nothing was cut or repaired", lost_prefix(stream.as_deref(), seqs.as_ref()))]
    Corrupt {
        /// The stream, when the bad bytes belong to one.
        stream: Option<String>,
        /// The sequences that cannot be read because of it, when known.
        seqs: Option<std::ops::RangeInclusive<u64>>,
        /// The file that holds the bad bytes.
        segment: PathBuf,
        /// Byte offset of the bad record.
        offset: u64,
        /// What check failed.
        reason: String,
    },
    /// The store was opened read-only (`Options::read_only`, `read_only=true`
    /// in a `file:` URL): nothing may be written to it.
    #[error("the store at {path:?} is open read-only: {operation} would write to it; open it without read_only, on a writable directory, to change it")]
    ReadOnly {
        /// The data directory.
        path: PathBuf,
        /// What was refused, e.g. "publish" or "create_consumer".
        operation: &'static str,
    },
    /// A stream whose files could not be opened when the store was: the
    /// other streams work, this one refuses every operation until its files
    /// are repaired or restored and the store is reopened.
    #[error("stream {name:?} could not be opened: {reason}; repair or restore its files (or remove its directory to drop it) and reopen the store")]
    StreamUnavailable {
        /// The stream (its directory name).
        name: String,
        /// What failed when it was opened.
        reason: String,
    },
    /// A durable consumer whose state file could not be read when the store
    /// opened: the stream and its other consumers work, this one refuses
    /// every operation (delete_consumer removes its file) until the file is
    /// repaired or restored and the store is reopened.
    #[error("consumer {name:?} of stream {stream:?} could not be loaded: {reason}; restore its state file and reopen the store, or delete the consumer")]
    ConsumerUnavailable {
        /// The stream.
        stream: String,
        /// The consumer.
        name: String,
        /// What failed when its file was read.
        reason: String,
    },
    /// A previous fsync or write failed: the stream accepts no writes until reopened.
    #[error(
        "stream {stream:?} is poisoned after an I/O failure ({cause}); reopen the store to recover"
    )]
    Poisoned {
        /// The stream.
        stream: String,
        /// The original failure.
        cause: String,
    },
    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// A URL could not be used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL with credentials redacted.
        url: String,
        /// What is wrong.
        reason: String,
    },
    /// The server could not be reached (refused, unreachable, timed out, or
    /// the connection was lost for good after the reconnect limit).
    #[error("cannot reach {url}: {reason}; check that the server runs at that address, or raise the connect timeout")]
    Unreachable {
        /// The server URL(s), credentials redacted.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The server refused the credentials. The text never holds a credential.
    #[error("authentication failed at {url}: {reason}; check the user and password, token or credentials file")]
    AuthFailed {
        /// The server URL(s), credentials redacted.
        url: String,
        /// What the server or client reported.
        reason: String,
    },
    /// The TLS handshake or TLS configuration failed.
    #[error("TLS failed with {url}: {reason}; check the CA file, the client certificate and key, and the server name")]
    Tls {
        /// The server URL(s), credentials redacted.
        url: String,
        /// What failed.
        reason: String,
    },
    /// The service is up but cannot serve now (e.g. a JetStream cluster
    /// without a leader); retrying later may succeed.
    #[error("temporarily unavailable: {reason}; retry later")]
    Unavailable {
        /// What the server said.
        reason: String,
    },
    /// The NATS server (or account) has no JetStream.
    #[error("JetStream is not enabled on this NATS server or account; start nats-server with -js (or a jetstream block in its config)")]
    JetStreamNotEnabled,
    /// The circuit breaker is open after consecutive connection failures:
    /// calls fail fast instead of waiting for timeouts. A probe runs when
    /// `retry_in` has passed; the circuit closes when it succeeds.
    #[error("circuit open after {failures} consecutive connection failures; failing fast, {}", next_probe(*retry_in))]
    CircuitOpen {
        /// Consecutive failures that opened (or kept open) the circuit.
        failures: u32,
        /// Time until the next probe.
        retry_in: Duration,
    },
    /// A publish was sent but its acknowledgement never arrived: the message
    /// may or may not be stored. Publishing it again with the same msg id
    /// (`Nats-Msg-Id`) inside the duplicate window stores it at most once.
    #[error("publish to {subject:?} unconfirmed ({reason}); it may or may not be stored: republish with the same msg id to be sure")]
    AckUnknown {
        /// The subject published to.
        subject: String,
        /// Why no ack arrived.
        reason: String,
    },
    /// The backend does not support this operation.
    #[error("not supported by this backend: {0}")]
    Unsupported(String),
    /// An answer of the server durabus has no typed error for, with its
    /// codes (JetStream's `code` and `err_code`; 0 for a protocol `-ERR`
    /// or a status without them).
    #[error("server error: {description} (code {code}, err_code {err_code})")]
    Server {
        /// The status (400, 404, 500, 503, ...).
        code: u16,
        /// The JetStream error code (`100xx`).
        err_code: u16,
        /// What the server said.
        description: String,
    },
    /// durabus itself failed: a background task ended abnormally, a value
    /// could not be encoded, an answer could not be read, or the client
    /// library failed. Not the caller's mistake; the text says what.
    #[error("internal error: {reason}")]
    Internal {
        /// What failed.
        reason: String,
    },
}

impl Error {
    /// Whether this reports messages a damaged record cost
    /// ([`Error::Corrupt`] with `seqs`): a replay that yields it goes on
    /// with the next intact message.
    pub fn is_lost_messages(&self) -> bool {
        matches!(self, Error::Corrupt { seqs: Some(_), .. })
    }

    /// Whether this error says the connection (not the request) failed: the
    /// failures a circuit breaker counts. Retrying later may succeed.
    pub fn is_connection_failure(&self) -> bool {
        matches!(
            self,
            Error::Timeout(_)
                | Error::Unreachable { .. }
                | Error::AckUnknown { .. }
                | Error::Unavailable { .. }
        )
    }

    /// [`Error::InvalidConfig`] with `reason`.
    pub fn invalid_config(reason: ConfigError) -> Self {
        Error::InvalidConfig { reason }
    }

    /// [`Error::InvalidArgument`] with `reason`.
    pub fn invalid_argument(reason: ArgumentError) -> Self {
        Error::InvalidArgument { reason }
    }

    /// [`Error::Internal`]: what failed.
    pub fn internal(reason: String) -> Self {
        Error::Internal { reason }
    }

    /// [`Error::Corrupt`] of a file: the bad bytes at `offset` of `file`.
    pub fn corrupt(file: impl Into<PathBuf>, offset: u64, reason: impl Into<String>) -> Self {
        Error::Corrupt {
            stream: None,
            seqs: None,
            segment: file.into(),
            offset,
            reason: reason.into(),
        }
    }

    /// Wraps an [`std::io::Error`] with what was being done; an error
    /// carrying [`SymlinkRefused`] becomes [`Error::Symlink`].
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        if let Some(link) = source
            .get_ref()
            .and_then(|e| e.downcast_ref::<SymlinkRefused>())
        {
            return Error::Symlink {
                path: link.path.clone(),
            };
        }
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

fn lock_holder(pid: &str) -> String {
    if pid == "unknown" {
        "an unknown process".to_owned()
    } else {
        format!("another process (pid {pid})")
    }
}

/// The payload of an [`std::io::Error`] a storage returns when it refused to
/// open a symbolic link; [`Error::io`] turns it into [`Error::Symlink`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymlinkRefused {
    /// The link.
    pub path: PathBuf,
}

impl std::fmt::Display for SymlinkRefused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is a symbolic link; refusing to follow it",
            self.path.display()
        )
    }
}

impl std::error::Error for SymlinkRefused {}

/// The URL with any `user:password@` or `token@` part replaced by `***`,
/// for every server of a comma-separated list.
pub fn redact_url(url: &str) -> String {
    url.split(',').map(redact_one).collect::<Vec<_>>().join(",")
}

fn redact_one(url: &str) -> String {
    let (body, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let Some(start) = body.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let redacted = match body[start..].rfind('@') {
        Some(at) => format!("{}***@{}", &body[..start], &body[start + at + 1..]),
        None => body.to_owned(),
    };
    match query {
        Some(q) => format!("{redacted}?{q}"),
        None => redacted,
    }
}

/// When the circuit breaker probes next: "next probe in 750ms", or "a
/// probe is due now" once the wait is over (half-open).
fn next_probe(retry_in: Duration) -> String {
    if retry_in.is_zero() {
        "a probe is due now (the next call tries the connection)".to_owned()
    } else {
        format!("next probe in {}ms", retry_in.as_millis().max(1))
    }
}

/// "stream S: messages a..=b are unreadable: " before a corruption report.
fn lost_prefix(stream: Option<&str>, seqs: Option<&std::ops::RangeInclusive<u64>>) -> String {
    match (stream, seqs) {
        (Some(s), Some(r)) if r.start() == r.end() => {
            format!("stream {s:?}: message {} is unreadable: ", r.start())
        }
        (Some(s), Some(r)) => format!(
            "stream {s:?}: messages {}..={} are unreadable: ",
            r.start(),
            r.end()
        ),
        (Some(s), None) => format!("stream {s:?}: "),
        (None, _) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_captured_names_the_subject_and_what_to_do() {
        let text = Error::NotCaptured {
            subject: "invoices.eu".to_owned(),
        }
        .to_string();
        assert!(text.contains("\"invoices.eu\""), "{text}");
        assert!(text.contains("create a stream"), "{text}");
        assert!(text.contains("Bus::publish"), "{text}");
    }

    #[test]
    fn urls_lose_their_credentials_in_messages() {
        assert_eq!(redact_url("nats://u:pw@h:4222"), "nats://***@h:4222");
        assert_eq!(redact_url("nats://tok@h"), "nats://***@h");
        assert_eq!(redact_url("nats://h:4222"), "nats://h:4222");
        assert_eq!(
            redact_url("nats://a:b@h1,nats://c@h2?name=x"),
            "nats://***@h1,nats://***@h2?name=x"
        );
    }
}
