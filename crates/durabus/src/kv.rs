//! Key-value buckets in the NATS KV layout, written once over the backend
//! primitives so they work on every backend.
//!
//! A bucket `b` is the stream `KV_b` capturing `$KV.b.>`; key `k` is the
//! subject `$KV.b.k`; a key's revision is the stream sequence of its newest
//! entry; history is `max_msgs_per_subject`. A delete is a message with the
//! header `KV-Operation: DEL`, a purge one with `KV-Operation: PURGE` and
//! `Nats-Rollup: sub` (removing the key's older entries). This is what NATS
//! clients use, so a bucket written through durabus on `nats://` is read by
//! any NATS client, and the other way round.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> durabus::Result<()> {
//! use durabus::kv::KvConfig;
//! let bus = durabus::connect("memory:").await?;
//! let kv = bus.create_kv(KvConfig::new("settings").history(5)).await?;
//! let r1 = kv.put("theme", "dark").await?;
//! let r2 = kv.update("theme", "light", r1).await?;
//! assert_eq!(kv.get("theme").await?.as_deref(), Some(&b"light"[..]));
//! assert!(matches!(
//!     kv.update("theme", "blue", r1).await,
//!     Err(durabus::Error::WrongRevision { current, .. }) if current == r2
//! ));
//! let (count, _) = kv.update_json("visits", |n: Option<u64>| n.unwrap_or(0) + 1).await?;
//! assert_eq!(count, 1);
//! # Ok(()) }
//! ```

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use durabus_core::backoff;
use futures::future::BoxFuture;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::field::Empty;

use crate::typed::{Codec, Json};
use crate::{
    ArgumentError, Bus, DiscardPolicy, Error, Message, Replay, ReplayOptions, ReplayStart, Result,
    StorageType, StoredMessage, StreamConfig, StreamInfo, DEFAULT_DUPLICATE_WINDOW,
    NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_ROLLUP,
};

/// Header naming a KV entry's operation: `DEL` or `PURGE` (absent: a put).
pub const KV_OPERATION: &str = "KV-Operation";
/// Most entries a key keeps (NATS KV's limit).
pub const MAX_HISTORY: u8 = 64;

/// What an entry did to its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    /// Set a value.
    Put,
    /// Deleted the value (history kept).
    Delete,
    /// Deleted the value and the key's history.
    Purge,
}

/// One revision of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The value (empty for a delete or purge).
    pub value: Bytes,
    /// The revision: the stream sequence of this entry.
    pub revision: u64,
    /// When it was stored.
    pub created: SystemTime,
    /// What it did.
    pub operation: Operation,
}

/// A bucket's settings, as NATS KV names them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvConfig {
    /// Bucket name: letters, digits, `-` and `_`.
    pub bucket: String,
    /// Free text.
    pub description: Option<String>,
    /// Entries kept per key, 1 to 64. Default 1.
    pub history: u8,
    /// Entries older than this are removed. Default: kept.
    pub ttl: Option<Duration>,
    /// Largest value accepted. Default unlimited. As on NATS, the store
    /// applies it to the whole message: the header an `update` carries
    /// (about 45 bytes) counts too, so leave room for it.
    pub max_value_size: Option<u32>,
    /// Largest bucket; a full bucket refuses writes. Default unlimited.
    pub max_bytes: Option<u64>,
    /// File or memory. Default file.
    pub storage: StorageType,
    /// Copies kept (NATS only). Default 1.
    pub replicas: usize,
}

impl KvConfig {
    /// Default settings for bucket `bucket`.
    pub fn new(bucket: impl Into<String>) -> Self {
        KvConfig {
            bucket: bucket.into(),
            description: None,
            history: 1,
            ttl: None,
            max_value_size: None,
            max_bytes: None,
            storage: StorageType::File,
            replicas: 1,
        }
    }

    /// Entries kept per key (1 to 64).
    #[must_use]
    pub fn history(mut self, n: u8) -> Self {
        self.history = n;
        self
    }

    /// Remove entries older than `ttl` (`None`: keep them, the default).
    #[must_use]
    pub fn ttl(mut self, ttl: impl Into<Option<Duration>>) -> Self {
        self.ttl = ttl.into();
        self
    }

    /// Refuse values larger than `bytes` (`None`: unlimited, the default).
    #[must_use]
    pub fn max_value_size(mut self, bytes: impl Into<Option<u32>>) -> Self {
        self.max_value_size = bytes.into();
        self
    }

    /// Refuse writes once the bucket holds `bytes` (`None`: unlimited, the
    /// default).
    #[must_use]
    pub fn max_bytes(mut self, bytes: impl Into<Option<u64>>) -> Self {
        self.max_bytes = bytes.into();
        self
    }

    /// File or memory storage.
    #[must_use]
    pub fn storage(mut self, storage: StorageType) -> Self {
        self.storage = storage;
        self
    }

    /// Copies kept (NATS only).
    #[must_use]
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }

    /// Free text.
    #[must_use]
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// The stream holding the bucket, configured as NATS KV does.
    pub fn stream_config(&self) -> Result<StreamConfig> {
        validate_bucket(&self.bucket)?;
        if self.history == 0 || self.history > MAX_HISTORY {
            return Err(Error::invalid_config(
                durabus_core::ConfigError::KvHistory {
                    bucket: self.bucket.clone(),
                    history: u64::from(self.history),
                    max: u64::from(MAX_HISTORY),
                },
            ));
        }
        let mut cfg = StreamConfig::new(format!("KV_{}", self.bucket))
            .subjects([format!("$KV.{}.>", self.bucket)])
            .max_msgs_per_subject(u64::from(self.history))
            .discard(DiscardPolicy::New)
            .allow_rollup(true)
            .deny_delete(true)
            .storage(self.storage)
            .replicas(self.replicas)
            .duplicate_window(self.ttl.map_or(DEFAULT_DUPLICATE_WINDOW, |t| {
                t.min(DEFAULT_DUPLICATE_WINDOW)
            }));
        cfg.description = self.description.clone();
        cfg.max_age = self.ttl;
        cfg.max_msg_size = self.max_value_size;
        cfg.max_bytes = self.max_bytes;
        Ok(cfg)
    }

    /// The settings of the bucket a stream holds, if it is one.
    fn from_stream(cfg: &StreamConfig) -> Option<KvConfig> {
        let bucket = cfg.name.strip_prefix("KV_")?;
        let history = u8::try_from(cfg.max_msgs_per_subject?).ok()?;
        (cfg.subjects == [format!("$KV.{bucket}.>")]).then(|| KvConfig {
            bucket: bucket.to_owned(),
            description: cfg.description.clone(),
            history,
            ttl: cfg.max_age,
            max_value_size: cfg.max_msg_size,
            max_bytes: cfg.max_bytes,
            storage: cfg.storage,
            replicas: cfg.replicas,
        })
    }
}

/// A bucket's settings and size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvStatus {
    /// Its settings.
    pub config: KvConfig,
    /// Entries stored (all revisions, deletes included).
    pub values: u64,
    /// Bytes stored.
    pub bytes: u64,
}

fn status_of(info: &StreamInfo) -> Option<KvStatus> {
    Some(KvStatus {
        config: KvConfig::from_stream(&info.config)?,
        values: info.state.messages,
        bytes: info.state.bytes,
    })
}

/// Longest KV bucket name, in bytes: its stream `KV_<bucket>` must fit
/// [`durabus_core::MAX_STREAM_NAME_LEN`].
pub const MAX_BUCKET_NAME_LEN: usize = durabus_core::MAX_STREAM_NAME_LEN - "KV_".len();

/// Checks a bucket name: letters, digits, `-` and `_`, as NATS KV, at most
/// [`MAX_BUCKET_NAME_LEN`] bytes (over it: [`Error::InvalidArgument`] with
/// [`ArgumentError::NameTooLong`]).
pub fn validate_bucket(bucket: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(Error::InvalidName {
            name: bucket.to_owned(),
            reason: reason.to_owned(),
        })
    };
    if bucket.is_empty() {
        return bad("a KV bucket name is empty");
    }
    if bucket.len() > MAX_BUCKET_NAME_LEN {
        return Err(Error::invalid_argument(ArgumentError::NameTooLong {
            kind: "KV bucket",
            name: bucket.to_owned(),
            len: bucket.len(),
            max: MAX_BUCKET_NAME_LEN,
        }));
    }
    if let Some(c) = bucket
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return bad(&format!(
            "{c:?} is not allowed in a KV bucket name (letters, digits, `-` and `_` only)"
        ));
    }
    Ok(())
}

/// Checks a key against the NATS KV rules; with `wildcards`, `*` and `>`
/// tokens are allowed too (a key filter).
pub fn validate_key(key: &str, wildcards: bool) -> Result<()> {
    let bad = |reason: String| {
        Err(Error::InvalidKey {
            key: key.to_owned(),
            reason,
        })
    };
    if key.is_empty() {
        return bad("it is empty".into());
    }
    if key.starts_with('.') || key.ends_with('.') {
        return bad("it starts or ends with `.`".into());
    }
    let tokens: Vec<&str> = key.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return bad("it has an empty token (`..`)".into());
        }
        if wildcards && (*t == "*" || (*t == ">" && i == tokens.len() - 1)) {
            continue;
        }
        if let Some(c) = t
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || "-/_=".contains(*c)))
        {
            return bad(format!("{c:?} is not allowed"));
        }
    }
    Ok(())
}

/// How `update_json` retries a lost compare-and-swap: exponential backoff
/// with full jitter, then [`Error::Conflict`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CasRetry {
    /// Attempts after the first. Default 10.
    pub max_retries: u32,
    /// Backoff ceiling of the first retry. Default 2 ms.
    pub initial: Duration,
    /// Largest backoff ceiling. Default 250 ms.
    pub max: Duration,
}

impl Default for CasRetry {
    fn default() -> Self {
        CasRetry {
            max_retries: 10,
            initial: Duration::from_millis(2),
            max: Duration::from_millis(250),
        }
    }
}

impl CasRetry {
    /// A random wait in `[0, min(max, initial * 2^retry)]`.
    fn delay(&self, retry: u32) -> Duration {
        backoff::jittered(backoff::exponential(self.initial, retry, self.max), 0.0)
    }
}

impl Bus {
    /// Creates a KV bucket if absent. An existing bucket with the same
    /// settings is returned unchanged; different settings are
    /// [`Error::StreamNameInUse`].
    ///
    /// # Errors
    ///
    /// [`Error::InvalidName`] for a bad bucket name, [`Error::InvalidConfig`] for
    /// bad settings; [`Error::StreamNameInUse`] as above.
    #[tracing::instrument(level = "debug", name = "kv.create_bucket", skip_all, fields(bucket = %config.bucket))]
    pub async fn create_kv(&self, config: KvConfig) -> Result<Kv> {
        let stream = config.stream_config()?;
        match self.create_stream(stream).await {
            Ok(info) => Ok(Kv::from_info(self, &info)),
            Err(Error::StreamNameInUse { name }) => {
                // Made elsewhere (e.g. by a NATS client, with fields durabus
                // does not set): equal if the KV settings are.
                let info = self.stream_info(&name).await?;
                match KvConfig::from_stream(&info.config) {
                    Some(existing) if existing == config => Ok(Kv::from_info(self, &info)),
                    _ => Err(Error::StreamNameInUse { name }),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Opens an existing bucket; [`Error::BucketNotFound`] if there is none.
    ///
    /// # Errors
    ///
    /// [`Error::BucketNotFound`]; [`Error::InvalidName`] for a bad bucket name;
    /// [`Error::InvalidConfig`] when a stream of that name exists but is not a
    /// KV bucket.
    pub async fn kv(&self, bucket: impl AsRef<str>) -> Result<Kv> {
        let bucket = bucket.as_ref();
        validate_bucket(bucket)?;
        let info = self
            .stream_info(&format!("KV_{bucket}"))
            .await
            .map_err(|e| bucket_error(e, bucket))?;
        if KvConfig::from_stream(&info.config).is_none() {
            return Err(Error::invalid_config(
                durabus_core::ConfigError::NotAKvBucket {
                    stream: info.config.name,
                    bucket: bucket.to_owned(),
                },
            ));
        }
        Ok(Kv::from_info(self, &info))
    }

    /// Deletes a bucket and all its keys.
    ///
    /// # Errors
    ///
    /// [`Error::BucketNotFound`]; [`Error::InvalidName`] for a bad bucket name.
    pub async fn delete_kv(&self, bucket: impl AsRef<str>) -> Result<()> {
        let bucket = bucket.as_ref();
        validate_bucket(bucket)?;
        self.delete_stream(&format!("KV_{bucket}"))
            .await
            .map_err(|e| bucket_error(e, bucket))
    }

    /// Every bucket, ordered by name.
    ///
    /// # Errors
    ///
    /// Only the errors every call can return (see [`Bus`]).
    pub async fn list_kv(&self) -> Result<Vec<KvStatus>> {
        Ok(self
            .list_streams()
            .await?
            .iter()
            .filter_map(status_of)
            .collect())
    }
}

/// `StreamNotFound` of a bucket's stream as `BucketNotFound`.
fn bucket_error(e: Error, bucket: &str) -> Error {
    match e {
        Error::StreamNotFound { .. } => Error::BucketNotFound {
            bucket: bucket.to_owned(),
        },
        e => e,
    }
}

/// A handle to one bucket. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Kv {
    bus: Bus,
    bucket: String,
    stream: String,
    /// `$KV.<bucket>.`
    prefix: String,
    max_value_size: Option<u32>,
}

impl Kv {
    fn from_info(bus: &Bus, info: &StreamInfo) -> Kv {
        let bucket = info
            .config
            .name
            .strip_prefix("KV_")
            .unwrap_or(&info.config.name)
            .to_owned();
        Kv {
            bus: bus.clone(),
            prefix: format!("$KV.{bucket}."),
            stream: info.config.name.clone(),
            max_value_size: info.config.max_msg_size,
            bucket,
        }
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The bucket's settings and size.
    pub async fn status(&self) -> Result<KvStatus> {
        let info = self
            .bus
            .stream_info(&self.stream)
            .await
            .map_err(|e| self.err(e))?;
        status_of(&info).ok_or_else(|| Error::BucketNotFound {
            bucket: self.bucket.clone(),
        })
    }

    fn subject(&self, key: &str, wildcards: bool) -> Result<String> {
        validate_key(key, wildcards)?;
        Ok(format!("{}{key}", self.prefix))
    }

    fn err(&self, e: Error) -> Error {
        bucket_error(e, &self.bucket)
    }

    fn entry_of(&self, m: StoredMessage) -> Option<Entry> {
        let key = m.subject.strip_prefix(&self.prefix)?.to_owned();
        let operation = match m.headers.get(KV_OPERATION) {
            Some("DEL") => Operation::Delete,
            Some("PURGE") => Operation::Purge,
            _ => Operation::Put,
        };
        Some(Entry {
            bucket: self.bucket.clone(),
            key,
            value: m.payload,
            revision: m.seq,
            created: m.time,
            operation,
        })
    }

    /// The newest entry of `key`, a delete or purge included; `None` if the
    /// key never had one (or it expired).
    #[tracing::instrument(level = "debug", name = "kv.entry", skip_all, fields(bucket = %self.bucket, key, revision = Empty))]
    pub async fn entry(&self, key: impl AsRef<str>) -> Result<Option<Entry>> {
        let key = key.as_ref();
        let subject = self.subject(key, false)?;
        match self.bus.get_last_message(&self.stream, &subject).await {
            Ok(m) => {
                tracing::Span::current().record("revision", m.seq);
                Ok(self.entry_of(m))
            }
            Err(Error::MessageNotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The value of `key`; `None` if it has none (never set, deleted, purged).
    pub async fn get(&self, key: impl AsRef<str>) -> Result<Option<Bytes>> {
        let key = key.as_ref();
        Ok(self
            .entry(key)
            .await?
            .filter(|e| e.operation == Operation::Put)
            .map(|e| e.value))
    }

    /// The entry of `key` at `revision`; `None` if that revision is not an
    /// entry of this key (another key's, or no longer kept).
    #[tracing::instrument(level = "debug", name = "kv.entry_at_revision", skip_all, fields(bucket = %self.bucket, key, revision))]
    pub async fn entry_at_revision(
        &self,
        key: impl AsRef<str>,
        revision: u64,
    ) -> Result<Option<Entry>> {
        let key = key.as_ref();
        let subject = self.subject(key, false)?;
        if revision == 0 {
            return Ok(None);
        }
        match self.bus.get_message(&self.stream, revision).await {
            Ok(m) if m.subject == subject => Ok(self.entry_of(m)),
            Ok(_) | Err(Error::MessageNotFound { .. }) => Ok(None),
            Err(e) => Err(self.err(e)),
        }
    }

    /// The entry of `key` that was current at `time`: the newest stored at
    /// or before it; `None` if the key had no value then.
    pub async fn entry_at_time(
        &self,
        key: impl AsRef<str>,
        time: SystemTime,
    ) -> Result<Option<Entry>> {
        let key = key.as_ref();
        let history = self.history(key).await?;
        let i = history.partition_point(|e| e.created <= time);
        Ok(i.checked_sub(1)
            .and_then(|i| history.into_iter().nth(i))
            .filter(|e| e.operation == Operation::Put))
    }

    fn check_size(&self, key: &str, value: &Bytes) -> Result<()> {
        match self.max_value_size {
            Some(max) if value.len() > max as usize => Err(Error::ValueTooLarge {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                size: value.len(),
                max: max as usize,
            }),
            _ => Ok(()),
        }
    }

    async fn write(&self, key: &str, message: Message) -> Result<u64> {
        let expected = message
            .headers
            .get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE)
            .and_then(|v| v.parse().ok());
        let has_headers = !message.headers.is_empty();
        match self.bus.backend().publish(message).await {
            Ok(Some(ack)) => {
                tracing::Span::current().record("revision", ack.seq);
                Ok(ack.seq)
            }
            // Nothing captured the key's subject: the bucket is gone.
            Ok(None) => Err(Error::BucketNotFound {
                bucket: self.bucket.clone(),
            }),
            Err(Error::WrongLastSequence { current, .. }) => Err(Error::WrongRevision {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                expected: expected.unwrap_or(0),
                current,
            }),
            // With headers (a CAS update, a marker) the store's size is not
            // the value's: its own error says so.
            Err(Error::MaxPayloadExceeded { size, max }) if !has_headers => {
                Err(Error::ValueTooLarge {
                    bucket: self.bucket.clone(),
                    key: key.to_owned(),
                    size,
                    max,
                })
            }
            Err(e) => Err(self.err(e)),
        }
    }

    /// Sets `key` to `value`; returns the new revision.
    #[tracing::instrument(level = "debug", name = "kv.put", skip_all, fields(bucket = %self.bucket, key, revision = Empty))]
    pub async fn put(&self, key: impl AsRef<str>, value: impl Into<Bytes>) -> Result<u64> {
        let key = key.as_ref();
        let value = value.into();
        let subject = self.subject(key, false)?;
        self.check_size(key, &value)?;
        self.write(key, Message::new(subject, value)).await
    }

    /// Sets `key` only if it is at `revision` (0: has no entry);
    /// [`Error::WrongRevision`] otherwise. Returns the new revision.
    #[tracing::instrument(level = "debug", name = "kv.update", skip_all, fields(bucket = %self.bucket, key, expected = revision, revision = Empty))]
    pub async fn update(
        &self,
        key: impl AsRef<str>,
        value: impl Into<Bytes>,
        revision: u64,
    ) -> Result<u64> {
        let key = key.as_ref();
        let value = value.into();
        let subject = self.subject(key, false)?;
        self.check_size(key, &value)?;
        let m = Message::new(subject, value)
            .with_header(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, revision.to_string());
        self.write(key, m).await
    }

    /// Sets `key` only if it has no value (never set, deleted or purged);
    /// [`Error::KeyExists`] otherwise. Returns the new revision.
    #[tracing::instrument(level = "debug", name = "kv.create", skip_all, fields(bucket = %self.bucket, key, revision = Empty))]
    pub async fn create(&self, key: impl AsRef<str>, value: impl Into<Bytes>) -> Result<u64> {
        let key = key.as_ref();
        let value = value.into();
        let first = match self.update(key, value.clone(), 0).await {
            Err(e @ Error::WrongRevision { .. }) => e,
            other => return other,
        };
        match self.entry(key).await? {
            Some(e) if e.operation != Operation::Put => {
                match self.update(key, value, e.revision).await {
                    // Someone else created it meanwhile.
                    Err(Error::WrongRevision { current, .. }) => Err(Error::KeyExists {
                        bucket: self.bucket.clone(),
                        key: key.to_owned(),
                        revision: current,
                    }),
                    other => other,
                }
            }
            Some(e) => Err(Error::KeyExists {
                bucket: self.bucket.clone(),
                key: key.to_owned(),
                revision: e.revision,
            }),
            None => Err(first),
        }
    }

    async fn marker(&self, key: &str, op: &str, revision: Option<u64>) -> Result<u64> {
        let subject = self.subject(key, false)?;
        let mut m = Message::new(subject, Bytes::new()).with_header(KV_OPERATION, op);
        if op == "PURGE" {
            m.headers.insert(NATS_ROLLUP, "sub");
        }
        if let Some(r) = revision {
            m.headers
                .insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, r.to_string());
        }
        self.write(key, m).await
    }

    /// Deletes the value of `key`, keeping its history; returns the
    /// revision of the delete marker.
    #[tracing::instrument(level = "debug", name = "kv.delete", skip_all, fields(bucket = %self.bucket, key, revision = Empty))]
    pub async fn delete(&self, key: impl AsRef<str>) -> Result<u64> {
        let key = key.as_ref();
        self.marker(key, "DEL", None).await
    }

    /// Deletes the value of `key` only if it is at `revision`.
    pub async fn delete_expect_revision(&self, key: impl AsRef<str>, revision: u64) -> Result<u64> {
        let key = key.as_ref();
        self.marker(key, "DEL", Some(revision)).await
    }

    /// Deletes the value and the history of `key`, leaving one purge
    /// marker; returns its revision.
    #[tracing::instrument(level = "debug", name = "kv.purge", skip_all, fields(bucket = %self.bucket, key, revision = Empty))]
    pub async fn purge(&self, key: impl AsRef<str>) -> Result<u64> {
        let key = key.as_ref();
        self.marker(key, "PURGE", None).await
    }

    async fn replay(&self, filter: &str, start: ReplayStart, bounded: bool) -> Result<Replay> {
        let subject = self.subject(filter, true)?;
        let mut options = ReplayOptions::from_seq(1).filter(subject);
        options.start = start;
        options.stop_at_end = bounded;
        self.bus
            .replay(&self.stream, options)
            .await
            .map_err(|e| self.err(e))
    }

    async fn collect(&self, mut replay: Replay) -> Result<Vec<Entry>> {
        let mut out = Vec::new();
        while let Some(m) = replay.next().await {
            out.extend(self.entry_of(m.map_err(|e| self.err(e))?));
        }
        Ok(out)
    }

    /// Every kept entry of `key`, oldest first (deletes included).
    #[tracing::instrument(level = "debug", name = "kv.history", skip_all, fields(bucket = %self.bucket, key))]
    pub async fn history(&self, key: impl AsRef<str>) -> Result<Vec<Entry>> {
        let key = key.as_ref();
        validate_key(key, false)?;
        let replay = self.replay(key, ReplayStart::Sequence(1), true).await?;
        self.collect(replay).await
    }

    /// The keys that have a value, sorted.
    pub async fn keys(&self) -> Result<Vec<String>> {
        self.keys_matching(">").await
    }

    /// The keys with a value that match `filter`, a key whose tokens may be
    /// `*` (one token) or a final `>` (the rest), sorted.
    #[tracing::instrument(level = "debug", name = "kv.keys", skip_all, fields(bucket = %self.bucket, filter))]
    pub async fn keys_matching(&self, filter: impl AsRef<str>) -> Result<Vec<String>> {
        let filter = filter.as_ref();
        let replay = self
            .replay(filter, ReplayStart::LastPerSubject, true)
            .await?;
        let mut keys: Vec<String> = self
            .collect(replay)
            .await?
            .into_iter()
            .filter(|e| e.operation == Operation::Put)
            .map(|e| e.key)
            .collect();
        keys.sort_unstable();
        Ok(keys)
    }

    /// The keys with a value that start with `prefix` (any string), sorted.
    pub async fn keys_with_prefix(&self, prefix: impl AsRef<str>) -> Result<Vec<String>> {
        let prefix = prefix.as_ref();
        let mut keys = self.keys().await?;
        keys.retain(|k| k.starts_with(prefix));
        Ok(keys)
    }

    /// Watches the keys matching `filter` (see [`Kv::keys_matching`]):
    /// first the newest entry of each (deletes included), then every change
    /// as it is stored. [`Watch::caught_up`] tells the two apart.
    pub async fn watch(&self, filter: impl AsRef<str>) -> Result<Watch> {
        let filter = filter.as_ref();
        validate_key(filter, true)?;
        let start_last = self
            .bus
            .stream_info(&self.stream)
            .await
            .map_err(|e| self.err(e))?
            .state
            .last_seq;
        let initial = self
            .replay(filter, ReplayStart::LastPerSubject, true)
            .await?;
        Watch::with_initial(self.clone(), filter, initial, start_last + 1).await
    }

    /// Watches every entry of the keys matching `filter` from revision
    /// `revision` on, history then live.
    pub async fn watch_from(&self, filter: impl AsRef<str>, revision: u64) -> Result<Watch> {
        let filter = filter.as_ref();
        let start = ReplayStart::Sequence(revision.max(1));
        self.live_watch(filter, start).await
    }

    /// Watches only the changes stored from now on.
    pub async fn watch_updates(&self, filter: impl AsRef<str>) -> Result<Watch> {
        let filter = filter.as_ref();
        self.live_watch(filter, ReplayStart::New).await
    }

    async fn live_watch(&self, filter: &str, start: ReplayStart) -> Result<Watch> {
        let replay = self.replay(filter, start, false).await?;
        Ok(Watch::live(self.clone(), filter, replay))
    }

    /// The value of `key` decoded from JSON.
    pub async fn get_json<T: DeserializeOwned>(&self, key: impl AsRef<str>) -> Result<Option<T>> {
        let key = key.as_ref();
        self.get(key)
            .await?
            .map(|v| self.decode(key, &v))
            .transpose()
    }

    /// Sets `key` to `value` encoded as JSON; returns the revision.
    pub async fn put_json<T: Serialize>(&self, key: impl AsRef<str>, value: &T) -> Result<u64> {
        let key = key.as_ref();
        let bytes = self.encode(value)?;
        self.put(key, bytes).await
    }

    /// Read-modify-write of a JSON value with compare-and-swap: `f` gets the
    /// current value (`None` if absent) and returns the new one, which is
    /// stored only if the key did not change meanwhile; otherwise it runs
    /// again on the newer value, with [`CasRetry::default`]. Returns the
    /// value stored and its revision.
    pub async fn update_json<T, F>(&self, key: impl AsRef<str>, f: F) -> Result<(T, u64)>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        let key = key.as_ref();
        self.update_json_with(key, CasRetry::default(), f).await
    }

    /// [`Kv::update_json`] with its own retry settings. When the retries
    /// are used up: [`Error::Conflict`] with the last revision seen.
    #[tracing::instrument(level = "debug", name = "kv.update_json", skip_all, fields(bucket = %self.bucket, key, revision = Empty))]
    pub async fn update_json_with<T, F>(
        &self,
        key: impl AsRef<str>,
        retry: CasRetry,
        mut f: F,
    ) -> Result<(T, u64)>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> T,
    {
        let key = key.as_ref();
        let mut seen = 0;
        for attempt in 0..=retry.max_retries {
            if attempt > 0 {
                tokio::time::sleep(retry.delay(attempt - 1)).await;
            }
            let current = self.entry(key).await?;
            seen = current.as_ref().map_or(0, |e| e.revision);
            let old = match current {
                Some(e) if e.operation == Operation::Put => Some(self.decode(key, &e.value)?),
                _ => None,
            };
            let new = f(old);
            let bytes = self.encode(&new)?;
            match self.update(key, bytes, seen).await {
                Ok(rev) => return Ok((new, rev)),
                Err(Error::WrongRevision { current, .. }) => seen = current,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
            revision: seen,
            attempts: retry.max_retries + 1,
        })
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, v: &[u8]) -> Result<T> {
        Json::decode(v).map_err(|e| Error::Decode {
            subject: format!("{}{key}", self.prefix),
            type_name: std::any::type_name::<T>().to_owned(),
            content_type: Json::CONTENT_TYPE,
            reason: e.to_string(),
        })
    }

    fn encode<T: Serialize>(&self, value: &T) -> Result<Bytes> {
        Json::encode(value)
            .map(Bytes::from)
            .map_err(|e| Error::Encode {
                type_name: std::any::type_name::<T>().to_owned(),
                content_type: Json::CONTENT_TYPE,
                reason: e.to_string(),
            })
    }
}

/// Changes to a bucket's keys, from [`Kv::watch`], [`Kv::watch_from`] or
/// [`Kv::watch_updates`]. Entries come in revision order. Live until
/// dropped, the bucket is deleted or the bus is closed.
///
/// A watch is a [`Stream`] of entries ([`Watch::next`] is the same
/// without importing `StreamExt`), and it is **cancel safe**: a `next()`
/// (or `poll_next`) dropped at any point, in a `select!` or under a
/// `timeout`, loses no entry and does not end the watch; the entry comes
/// with the next call. Everything in flight (the entry read ahead, the
/// replay of the starting state, the opening of the live replay) lives in
/// the watch, never in the future `next()` returns.
///
/// A watch reads the bucket's stream as it goes: an entry removed before
/// the watch reaches it (by the history limit, a purge or the ttl) is not
/// yielded on the embedded backends, while NATS may already have pushed it.
/// Either way the newest entry of every key is yielded.
pub struct Watch {
    kv: Kv,
    filter: String,
    phase: Phase,
    /// The starting state's newest entry read so far, yielded once the
    /// one after it (or the end of the starting state) is known, so that
    /// [`Watch::caught_up`] is true right after its last one.
    ahead: Option<Result<Entry>>,
    /// Where the live part starts, after the starting state.
    resume: u64,
}

/// Where a [`Watch`] reads from.
enum Phase {
    /// The starting state: a bounded `LastPerSubject` replay.
    Initial(Replay),
    /// Opening the live replay from `Watch::resume`.
    Opening(BoxFuture<'static, Result<Replay>>),
    /// Every change as it is stored.
    Live(Replay),
    /// Ended: the live replay ended or could not be opened.
    Done,
}

impl std::fmt::Debug for Watch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watch")
            .field("bucket", &self.kv.bucket)
            .field("filter", &self.filter)
            .field("caught_up", &self.caught_up())
            .finish_non_exhaustive()
    }
}

impl Watch {
    /// A watch of the live replay `replay` only.
    fn live(kv: Kv, filter: &str, replay: Replay) -> Watch {
        Watch {
            kv,
            filter: filter.to_owned(),
            phase: Phase::Live(replay),
            ahead: None,
            resume: 0,
        }
    }

    /// A watch yielding the starting state first, from `replay` (bounded),
    /// then what is stored from `resume` on. Reads the starting state's
    /// first entry, or opens the live replay when there is none, so
    /// [`Watch::caught_up`] is right from the start and an error opening
    /// the live replay is this call's.
    async fn with_initial(kv: Kv, filter: &str, mut replay: Replay, resume: u64) -> Result<Watch> {
        let mut resume = resume;
        loop {
            let ahead = match replay.next().await {
                Some(Ok(m)) => {
                    resume = resume.max(m.seq + 1);
                    match kv.entry_of(m) {
                        Some(e) => Ok(e),
                        None => continue,
                    }
                }
                Some(Err(e)) => Err(kv.err(e)),
                None => {
                    let live = kv
                        .replay(filter, ReplayStart::Sequence(resume), false)
                        .await?;
                    return Ok(Watch::live(kv, filter, live));
                }
            };
            return Ok(Watch {
                kv,
                filter: filter.to_owned(),
                phase: Phase::Initial(replay),
                ahead: Some(ahead),
                resume,
            });
        }
    }

    /// The future opening the live replay from `self.resume`; it owns
    /// what it needs, so it is kept in the watch across cancelled calls.
    fn open_live(&self) -> BoxFuture<'static, Result<Replay>> {
        let kv = self.kv.clone();
        let filter = self.filter.clone();
        let start = ReplayStart::Sequence(self.resume);
        Box::pin(async move { kv.replay(&filter, start, false).await })
    }

    /// The next entry; `None` once the bucket is gone or the bus closed.
    /// Cancel safe (see [`Watch`]).
    pub async fn next(&mut self) -> Option<Result<Entry>> {
        std::future::poll_fn(|cx| Pin::new(&mut *self).poll_next(cx)).await
    }

    /// Whether every entry of the starting state has been yielded, so what
    /// comes next is a change made after the watch began. Always true for
    /// [`Kv::watch_from`] and [`Kv::watch_updates`].
    pub fn caught_up(&self) -> bool {
        self.ahead.is_none() && !matches!(self.phase, Phase::Initial(_))
    }
}

impl Stream for Watch {
    type Item = Result<Entry>;

    /// Takes an entry out of the watch's state only in the step that
    /// returns it: every `Pending` leaves the state as it was (or further
    /// along with nothing taken), which is what makes `next()` cancel safe.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.phase {
                Phase::Initial(replay) => match ready!(replay.poll_next_unpin(cx)) {
                    Some(Ok(m)) => {
                        this.resume = this.resume.max(m.seq + 1);
                        if let Some(e) = this.kv.entry_of(m) {
                            if let Some(prev) = this.ahead.replace(Ok(e)) {
                                return Poll::Ready(Some(prev));
                            }
                        }
                    }
                    Some(Err(e)) => {
                        if let Some(prev) = this.ahead.replace(Err(this.kv.err(e))) {
                            return Poll::Ready(Some(prev));
                        }
                    }
                    None => {
                        this.phase = Phase::Opening(this.open_live());
                        if let Some(prev) = this.ahead.take() {
                            return Poll::Ready(Some(prev));
                        }
                    }
                },
                Phase::Opening(open) => match ready!(open.as_mut().poll(cx)) {
                    Ok(replay) => this.phase = Phase::Live(replay),
                    Err(e) => {
                        this.phase = Phase::Done;
                        return Poll::Ready(Some(Err(this.kv.err(e))));
                    }
                },
                Phase::Live(replay) => match ready!(replay.poll_next_unpin(cx)) {
                    Some(Ok(m)) => {
                        if let Some(e) = this.kv.entry_of(m) {
                            return Poll::Ready(Some(Ok(e)));
                        }
                    }
                    Some(Err(e)) => return Poll::Ready(Some(Err(this.kv.err(e)))),
                    None => {
                        this.phase = Phase::Done;
                        return Poll::Ready(None);
                    }
                },
                Phase::Done => return Poll::Ready(None),
            }
        }
    }
}
