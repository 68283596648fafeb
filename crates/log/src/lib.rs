//! durabus L1: the embedded, file-backed log engine.
//!
//! A [`Store`] owns one data directory (or an in-memory image) and implements
//! [`durabus_core::Backend`]. Formats, recovery rules and the numbered
//! invariants cited in the code are in `docs/design.md`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use durabus_core::{
    Backend, ConnectionStatus, Message, PublishAck, PurgeRequest, Replay, ReplayOptions, Result,
    StoredMessage, StreamConfig, StreamInfo, Subscription,
};

/// When an acknowledged publish is on stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// Written to the OS before the ack (survives a process crash); the OS
    /// decides when it reaches the disk (a power loss may lose a suffix).
    None,
    /// As `None`, plus an fsync at this interval: a power loss loses at most
    /// the last interval.
    Periodic(Duration),
    /// fsync before the ack, shared by all publishes waiting (group commit).
    #[default]
    Always,
}

/// Options of a [`Store`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// When acks are durable. Default [`Durability::Always`].
    pub durability: Durability,
    /// A segment is sealed and a new one started past this size. Default 64 MiB.
    pub segment_size: u64,
    /// Per-subscriber buffer, in messages. Default 4096.
    pub subscriber_buffer: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            durability: Durability::Always,
            segment_size: 64 * 1024 * 1024,
            subscriber_buffer: 4096,
        }
    }
}

impl Options {
    /// Sets the durability.
    #[must_use]
    pub fn durability(mut self, d: Durability) -> Self {
        self.durability = d;
        self
    }

    /// Sets the segment size.
    #[must_use]
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = bytes;
        self
    }

    /// Sets the per-subscriber buffer.
    #[must_use]
    pub fn subscriber_buffer(mut self, messages: usize) -> Self {
        self.subscriber_buffer = messages;
        self
    }
}

/// What recovery found when a store was opened.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Per stream: bytes of a torn tail that were truncated, with the segment.
    pub truncated: Vec<(String, PathBuf, u64)>,
}

/// One record as `durabus dump` prints it (a JSON line each).
#[derive(Debug, Clone, serde::Serialize)]
pub struct DumpRecord {
    /// The stream.
    pub stream: String,
    /// The segment file name.
    pub segment: String,
    /// Byte offset of the record in the segment.
    pub offset: u64,
    /// `msg`, `delete` or `purge`.
    pub kind: &'static str,
    /// The record's sequence (for `delete`: the deleted one; `purge`: the new first).
    pub seq: u64,
    /// Unix time in nanoseconds.
    pub time_ns: i64,
    /// Subject (`msg` only).
    pub subject: Option<String>,
    /// Headers (`msg` only).
    pub headers: Vec<(String, String)>,
    /// Payload (`msg` only).
    #[serde(skip)]
    pub payload: bytes::Bytes,
}

/// Reads every record of `stream` (or of all streams) in a data directory,
/// without taking the lock and without modifying anything, calling `f` for
/// each in log order. A bad record ends that stream's dump with an error
/// naming segment and offset.
pub fn dump(
    dir: impl AsRef<Path>,
    stream: Option<&str>,
    f: &mut dyn FnMut(DumpRecord),
) -> Result<()> {
    let _ = (dir.as_ref(), stream, f);
    todo!()
}

/// The embedded store: a data directory (or memory image) of streams.
#[derive(Clone)]
pub struct Store {
    _private: Arc<()>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating if needed) the data directory `dir`, locking it and
    /// recovering every stream.
    pub fn open(dir: impl AsRef<Path>, options: Options) -> Result<Store> {
        let _ = (dir.as_ref(), options);
        todo!()
    }

    /// The same engine on in-memory storage.
    pub fn memory(options: Options) -> Result<Store> {
        let _ = options;
        todo!()
    }

    /// What recovery found at open.
    pub fn recovery_report(&self) -> RecoveryReport {
        todo!()
    }
}

#[async_trait::async_trait]
impl Backend for Store {
    async fn create_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        let _ = config;
        todo!()
    }
    async fn update_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        let _ = config;
        todo!()
    }
    async fn stream_info(&self, name: &str) -> Result<StreamInfo> {
        let _ = name;
        todo!()
    }
    async fn list_streams(&self) -> Result<Vec<StreamInfo>> {
        todo!()
    }
    async fn delete_stream(&self, name: &str) -> Result<()> {
        let _ = name;
        todo!()
    }
    async fn purge_stream(&self, name: &str, request: PurgeRequest) -> Result<u64> {
        let _ = (name, request);
        todo!()
    }
    async fn publish(&self, message: Message) -> Result<Option<PublishAck>> {
        let _ = message;
        todo!()
    }
    async fn publish_batch(
        &self,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Option<PublishAck>>>> {
        let _ = messages;
        todo!()
    }
    async fn subscribe(&self, filter: &str, queue_group: Option<&str>) -> Result<Subscription> {
        let _ = (filter, queue_group);
        todo!()
    }
    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        let _ = (message, timeout);
        todo!()
    }
    async fn get_message(&self, stream: &str, seq: u64) -> Result<StoredMessage> {
        let _ = (stream, seq);
        todo!()
    }
    async fn get_last_message(&self, stream: &str, subject: &str) -> Result<StoredMessage> {
        let _ = (stream, subject);
        todo!()
    }
    async fn delete_message(&self, stream: &str, seq: u64) -> Result<()> {
        let _ = (stream, seq);
        todo!()
    }
    async fn replay(&self, stream: &str, options: ReplayOptions) -> Result<Replay> {
        let _ = (stream, options);
        todo!()
    }
    async fn close(&self) -> Result<()> {
        todo!()
    }
    fn status(&self) -> ConnectionStatus {
        todo!()
    }
}
