//! Stream configuration and state, mirroring JetStream's names and defaults.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::{name, subject, ConfigError};

/// Default `duplicate_window`: two minutes, as JetStream.
pub const DEFAULT_DUPLICATE_WINDOW: Duration = Duration::from_secs(120);

/// When stored messages are removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetentionPolicy {
    /// Kept until a limit (age, count, bytes) removes the oldest. The default.
    #[default]
    Limits,
    /// Kept while some consumer still has to acknowledge them.
    Interest,
    /// Removed once one consumer acknowledges them.
    WorkQueue,
}

/// What happens when a limit is reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DiscardPolicy {
    /// Remove the oldest messages to make room. The default.
    #[default]
    Old,
    /// Reject the new message with [`Error::StreamFull`].
    New,
}

/// Where a stream keeps its messages.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StorageType {
    /// On disk. The default.
    #[default]
    File,
    /// In memory.
    Memory,
}

/// A stream's configuration. Field names and defaults follow JetStream; `None`
/// means unlimited.
///
/// Every limit's setter takes a value or `None` (unlimited), as
/// [`crate::ConsumerConfig`]'s do: `max_msgs(1000)`, `max_msgs(None)`.
///
/// ```
/// use std::time::Duration;
/// use durabus_core::StreamConfig;
/// let cfg = StreamConfig::new("ORDERS")
///     .subjects(["orders.>"])
///     .max_age(Duration::from_secs(24 * 3600))
///     .max_msgs_per_subject(10);
/// assert!(cfg.validate().is_ok());
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StreamConfig {
    /// Stream name (see [`crate::validate_stream_name`]): at most
    /// [`crate::MAX_STREAM_NAME_LEN`] (225) bytes.
    pub name: String,
    /// Free text.
    pub description: Option<String>,
    /// Subjects (filters, wildcards allowed) the stream captures. Empty means
    /// the stream's own name, as JetStream.
    pub subjects: Vec<String>,
    /// When messages are removed. Default [`RetentionPolicy::Limits`].
    pub retention: RetentionPolicy,
    /// Remove messages older than this. Default unlimited.
    pub max_age: Option<Duration>,
    /// Keep at most this many bytes. Default unlimited.
    pub max_bytes: Option<u64>,
    /// Keep at most this many messages. Default unlimited.
    pub max_msgs: Option<u64>,
    /// Keep at most this many messages per subject. Default unlimited.
    pub max_msgs_per_subject: Option<u64>,
    /// Largest accepted message (headers + payload). Default unlimited
    /// (the embedded engine caps records at 64 MiB regardless).
    pub max_msg_size: Option<u32>,
    /// What a full stream does. Default [`DiscardPolicy::Old`].
    pub discard: DiscardPolicy,
    /// With `discard: new` and `max_msgs_per_subject`: reject a message whose
    /// subject is at its limit instead of evicting that subject's oldest.
    /// Default false (as JetStream 2.9+).
    pub discard_new_per_subject: bool,
    /// Window in which a repeated `Nats-Msg-Id` is a duplicate. Default 2 minutes.
    pub duplicate_window: Duration,
    /// File or memory. Default file.
    pub storage: StorageType,
    /// Copies kept (NATS only; the embedded engine keeps 1). Default 1.
    pub replicas: usize,
    /// Honour `Nats-Rollup` headers. Default false.
    pub allow_rollup: bool,
    /// Refuse deleting single messages. Default false.
    pub deny_delete: bool,
    /// Refuse purges. Default false.
    pub deny_purge: bool,
}

impl Default for StreamConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            description: None,
            subjects: Vec::new(),
            retention: RetentionPolicy::Limits,
            max_age: None,
            max_bytes: None,
            max_msgs: None,
            max_msgs_per_subject: None,
            max_msg_size: None,
            discard: DiscardPolicy::Old,
            discard_new_per_subject: false,
            duplicate_window: DEFAULT_DUPLICATE_WINDOW,
            storage: StorageType::File,
            replicas: 1,
            allow_rollup: false,
            deny_delete: false,
            deny_purge: false,
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, v: $ty) -> Self {
            self.$name = v;
            self
        }
    };
}

/// A setter of a limit: a value, or `None` for unlimited (the one style of
/// every limit of [`StreamConfig`] and [`crate::ConsumerConfig`]).
macro_rules! limit {
    ($(#[$doc:meta])* $name:ident: $ty:ty) => {
        $(#[$doc])*
        #[must_use]
        pub fn $name(mut self, v: impl Into<Option<$ty>>) -> Self {
            self.$name = v.into();
            self
        }
    };
}

impl StreamConfig {
    /// Checks that `self` may replace `old` by an update (JetStream's
    /// rules): storage stays, and deny_delete / deny_purge cannot be lifted.
    pub fn validate_update(&self, old: &StreamConfig) -> Result<()> {
        let stream = || self.name.clone();
        if old.storage != self.storage {
            return Err(Error::invalid_config(ConfigError::StorageChange {
                stream: stream(),
                from: old.storage,
                to: self.storage,
            }));
        }
        let lifted = |what| {
            Err(Error::invalid_config(ConfigError::DenyLifted {
                stream: stream(),
                what,
            }))
        };
        if old.deny_delete && !self.deny_delete {
            return lifted("message deletes");
        }
        if old.deny_purge && !self.deny_purge {
            return lifted("purge");
        }
        Ok(())
    }

    /// A configuration with JetStream defaults for stream `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            ..Self::default()
        }
    }

    /// Sets the captured subjects.
    #[must_use]
    pub fn subjects<I, S>(mut self, subjects: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.subjects = subjects.into_iter().map(Into::into).collect();
        self
    }

    setter!(/// Sets the retention policy.
        retention: RetentionPolicy);
    limit!(/// Sets `max_age`: a limit, or `None` for unlimited (the default).
        max_age: Duration);
    limit!(/// Sets `max_bytes`: a limit, or `None` for unlimited (the default).
        max_bytes: u64);
    limit!(/// Sets `max_msgs`: a limit, or `None` for unlimited (the default).
        max_msgs: u64);
    limit!(/// Sets `max_msgs_per_subject`: a limit, or `None` for unlimited (the default).
        max_msgs_per_subject: u64);
    limit!(/// Sets `max_msg_size`: a limit, or `None` for unlimited (the default).
        max_msg_size: u32);
    setter!(/// Sets the discard policy.
        discard: DiscardPolicy);
    setter!(/// Reject per subject under `discard: new` (see the field).
        discard_new_per_subject: bool);
    setter!(/// Sets the duplicate window.
        duplicate_window: Duration);
    setter!(/// Sets the storage type.
        storage: StorageType);
    setter!(/// Sets the replica count (NATS only).
        replicas: usize);
    setter!(/// Honour `Nats-Rollup` headers.
        allow_rollup: bool);
    setter!(/// Refuse single-message deletes.
        deny_delete: bool);
    setter!(/// Refuse purges.
        deny_purge: bool);

    /// The subjects actually captured: `subjects`, or the name when empty.
    pub fn effective_subjects(&self) -> Vec<String> {
        if self.subjects.is_empty() {
            vec![self.name.clone()]
        } else {
            self.subjects.clone()
        }
    }

    /// Checks names, subjects and limits; says what is wrong.
    pub fn validate(&self) -> Result<()> {
        name::validate_stream_name(&self.name)?;
        let subjects = self.effective_subjects();
        for (i, s) in subjects.iter().enumerate() {
            subject::validate_filter(s)?;
            for t in &subjects[..i] {
                if subject::overlaps(s, t) {
                    return Err(Error::invalid_config(
                        ConfigError::SubjectsOverlapEachOther {
                            stream: self.name.clone(),
                            first: t.clone(),
                            second: s.clone(),
                        },
                    ));
                }
            }
        }
        let stream = || self.name.clone();
        let zero = |field| {
            Err(Error::invalid_config(ConfigError::ZeroLimit {
                stream: stream(),
                field,
            }))
        };
        if self.max_msgs == Some(0) {
            return zero("max_msgs");
        }
        if self.max_bytes == Some(0) {
            return zero("max_bytes");
        }
        if self.max_msgs_per_subject == Some(0) {
            return zero("max_msgs_per_subject");
        }
        if self.max_msg_size == Some(0) {
            return zero("max_msg_size");
        }
        if self.max_age == Some(Duration::ZERO) {
            return zero("max_age");
        }
        if self.discard_new_per_subject
            && (self.discard != DiscardPolicy::New || self.max_msgs_per_subject.is_none())
        {
            return Err(Error::invalid_config(ConfigError::DiscardNewPerSubject {
                stream: stream(),
            }));
        }
        if self.allow_rollup && self.deny_purge {
            return Err(Error::invalid_config(ConfigError::RollupWithDenyPurge {
                stream: stream(),
            }));
        }
        if self.replicas == 0 {
            return Err(Error::invalid_config(ConfigError::NoReplicas {
                stream: stream(),
            }));
        }
        if let Some(age) = self.max_age {
            if self.duplicate_window > age {
                return Err(Error::invalid_config(
                    ConfigError::DuplicateWindowTooLarge {
                        stream: stream(),
                        duplicate_window: self.duplicate_window,
                        max_age: age,
                    },
                ));
            }
        }
        Ok(())
    }
}

/// A stream's current contents.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamState {
    /// Messages stored.
    pub messages: u64,
    /// Bytes stored (backend-specific accounting; see docs/design.md).
    pub bytes: u64,
    /// Sequence of the oldest stored message (last_seq + 1 when empty after a purge).
    pub first_seq: u64,
    /// Time of the oldest stored message.
    pub first_time: Option<SystemTime>,
    /// Sequence of the newest message ever stored (0 when none).
    pub last_seq: u64,
    /// Time of the newest stored message.
    pub last_time: Option<SystemTime>,
    /// Messages deleted between first and last sequence.
    pub num_deleted: u64,
    /// Messages between first and last sequence known lost to damage
    /// (unreadable; not counted in `messages` or `num_deleted`) until a
    /// repair records them as deleted. nats-server: the length of
    /// `state.lost.msgs`.
    #[serde(default)]
    pub num_lost: u64,
    /// Distinct subjects with stored messages.
    pub num_subjects: u64,
    /// Consumers on the stream.
    pub consumer_count: u64,
}

/// Configuration and state of a stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamInfo {
    /// The configuration in force.
    pub config: StreamConfig,
    /// When the stream was created.
    pub created: SystemTime,
    /// What it holds now.
    pub state: StreamState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_jetstream() {
        let c = StreamConfig::new("S");
        assert_eq!(c.duplicate_window, Duration::from_secs(120));
        assert_eq!(c.retention, RetentionPolicy::Limits);
        assert_eq!(c.discard, DiscardPolicy::Old);
        assert_eq!(c.effective_subjects(), ["S"]);
        assert_eq!(c.replicas, 1);
    }

    #[test]
    fn validate_rejects_overlapping_own_subjects_and_zero_limits() {
        assert!(StreamConfig::new("S")
            .subjects(["a.*", "a.b"])
            .validate()
            .is_err());
        assert!(StreamConfig::new("S").max_msgs(0).validate().is_err());
        assert!(StreamConfig::new("a.b").validate().is_err());
        assert!(StreamConfig::new("S")
            .subjects(["a..b"])
            .validate()
            .is_err());
    }

    #[test]
    fn config_round_trips_through_json_with_missing_fields_defaulted() {
        let c: StreamConfig = serde_json::from_str(r#"{"name":"S","subjects":["a.>"]}"#).unwrap();
        assert_eq!(c, StreamConfig::new("S").subjects(["a.>"]));
    }
}
