//! Durable and ephemeral consumers, mirroring JetStream's names, defaults and
//! rules (nats-server 2.9 is the oracle).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytestring::ByteString;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::message::StoredMessage;
use crate::{name, subject, ConfigError};

/// Default `ack_wait`: 30 s, as JetStream.
pub const DEFAULT_ACK_WAIT: Duration = Duration::from_secs(30);
/// Default `max_ack_pending` of pull consumers: 1000, as JetStream.
pub const DEFAULT_MAX_ACK_PENDING: u64 = 1000;
/// Default `inactive_threshold` of ephemeral consumers: 5 s, as JetStream.
pub const DEFAULT_INACTIVE_THRESHOLD: Duration = Duration::from_secs(5);
/// Deliveries a backend's fetch reserves room for before the first
/// arrives (batches are usually filled; a larger one grows as it fills).
pub const FETCH_PREALLOCATED: usize = 1024;

/// Where a new consumer starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliverPolicy {
    /// Every stored message. The default.
    #[default]
    All,
    /// The newest stored message, then new ones.
    Last,
    /// Only messages stored after the consumer was created.
    New,
    /// From this stream sequence (1-based).
    ByStartSequence(u64),
    /// From the first message stored at or after this time.
    ByStartTime(SystemTime),
    /// The newest message of each subject, then new ones.
    LastPerSubject,
}

/// How deliveries are acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckPolicy {
    /// Each message is acknowledged by itself. The default.
    #[default]
    Explicit,
    /// Nothing is acknowledged: a delivery counts as done.
    None,
    /// Acknowledging a message acknowledges every earlier one too.
    All,
}

/// A consumer's configuration. Field names and defaults follow JetStream.
///
/// Every limit's setter takes a value or `None` (unlimited), as
/// [`crate::StreamConfig`]'s do: `max_deliver(5)`, `max_ack_pending(None)`.
///
/// ```
/// use std::time::Duration;
/// use durabus_core::{AckPolicy, ConsumerConfig};
/// let cfg = ConsumerConfig::durable("billing")
///     .filter_subject("orders.*.created")
///     .ack_wait(Duration::from_secs(10))
///     .max_deliver(5)
///     .max_ack_pending(None) // unlimited
///     .backoff([Duration::from_secs(1), Duration::from_secs(10)]);
/// assert!(cfg.validate().is_ok());
/// assert_eq!(cfg.ack_policy, AckPolicy::Explicit);
/// assert_eq!((cfg.max_deliver, cfg.max_ack_pending), (Some(5), None));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ConsumerConfig {
    /// The durable name (see [`crate::validate_consumer_name`]: at most
    /// [`crate::MAX_CONSUMER_NAME_LEN`] (251) bytes); `None` for an
    /// ephemeral consumer (named by the
    /// backend, removed after `inactive_threshold` without activity).
    pub durable_name: Option<String>,
    /// Free text.
    pub description: Option<String>,
    /// Where a new consumer starts. Default [`DeliverPolicy::All`].
    pub deliver_policy: DeliverPolicy,
    /// How deliveries are acknowledged. Default [`AckPolicy::Explicit`].
    pub ack_policy: AckPolicy,
    /// How long a delivery may stay unacknowledged before it is delivered
    /// again. Default 30 s.
    pub ack_wait: Duration,
    /// Deliveries of one message at most; `None` unlimited (the default).
    pub max_deliver: Option<u64>,
    /// Waits before the 1st, 2nd, ... redelivery (the last repeats),
    /// replacing `ack_wait` for redeliveries. Its length must be below
    /// `max_deliver`.
    pub backoff: Vec<Duration>,
    /// Unacknowledged deliveries at most before delivery pauses; `None`
    /// unlimited. Default 1000.
    pub max_ack_pending: Option<u64>,
    /// Only messages on subjects matching one of these. Empty: all. More
    /// than one needs nats-server 2.10 on NATS.
    pub filter_subjects: Vec<String>,
    /// Ephemeral consumers are removed after this long without a fetch.
    /// Default 5 s for ephemeral ones; durable ones are kept.
    pub inactive_threshold: Option<Duration>,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        Self {
            durable_name: None,
            description: None,
            deliver_policy: DeliverPolicy::All,
            ack_policy: AckPolicy::Explicit,
            ack_wait: DEFAULT_ACK_WAIT,
            max_deliver: None,
            backoff: Vec::new(),
            max_ack_pending: Some(DEFAULT_MAX_ACK_PENDING),
            filter_subjects: Vec::new(),
            inactive_threshold: None,
        }
    }
}

impl ConsumerConfig {
    /// A durable consumer named `name`, with JetStream's defaults.
    pub fn durable(name: impl Into<String>) -> Self {
        Self {
            durable_name: Some(name.into()),
            ..Self::default()
        }
    }

    /// An ephemeral consumer, with JetStream's defaults.
    pub fn ephemeral() -> Self {
        Self::default()
    }

    /// Sets the deliver policy.
    #[must_use]
    pub fn deliver_policy(mut self, policy: DeliverPolicy) -> Self {
        self.deliver_policy = policy;
        self
    }

    /// Sets the ack policy.
    #[must_use]
    pub fn ack_policy(mut self, policy: AckPolicy) -> Self {
        self.ack_policy = policy;
        self
    }

    /// Sets `ack_wait`.
    #[must_use]
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait;
        self
    }

    /// Sets `max_deliver`: a limit, or `None` for unlimited (the default).
    #[must_use]
    pub fn max_deliver(mut self, n: impl Into<Option<u64>>) -> Self {
        self.max_deliver = n.into();
        self
    }

    /// Sets the redelivery backoff.
    #[must_use]
    pub fn backoff(mut self, waits: impl IntoIterator<Item = Duration>) -> Self {
        self.backoff = waits.into_iter().collect();
        self
    }

    /// Sets `max_ack_pending`: a limit, or `None` for unlimited (default
    /// 1000, [`DEFAULT_MAX_ACK_PENDING`]).
    #[must_use]
    pub fn max_ack_pending(mut self, n: impl Into<Option<u64>>) -> Self {
        self.max_ack_pending = n.into();
        self
    }

    /// Restricts to one subject filter (replacing earlier ones).
    #[must_use]
    pub fn filter_subject(mut self, filter: impl Into<String>) -> Self {
        self.filter_subjects = vec![filter.into()];
        self
    }

    /// Sets the inactive threshold, or `None` for the default (5 s for an
    /// ephemeral consumer, never for a durable one).
    #[must_use]
    pub fn inactive_threshold(mut self, after: impl Into<Option<Duration>>) -> Self {
        self.inactive_threshold = after.into();
        self
    }

    /// The inactive threshold in force: the configured one, else 5 s for an
    /// ephemeral consumer and none for a durable one.
    pub fn effective_inactive_threshold(&self) -> Option<Duration> {
        match (&self.durable_name, self.inactive_threshold) {
            (_, Some(t)) => Some(t),
            (None, None) => Some(DEFAULT_INACTIVE_THRESHOLD),
            (Some(_), None) => None,
        }
    }

    /// Checks the configuration as JetStream does; errors name the field.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason| Err(Error::invalid_config(reason));
        if let Some(n) = &self.durable_name {
            name::validate_consumer_name(n)?;
        }
        for f in &self.filter_subjects {
            subject::validate_filter(f)?;
        }
        for (i, a) in self.filter_subjects.iter().enumerate() {
            for b in &self.filter_subjects[..i] {
                if subject::overlaps(a, b) {
                    return bad(ConfigError::ConsumerFiltersOverlap {
                        first: b.clone(),
                        second: a.clone(),
                    });
                }
            }
        }
        if self.ack_wait.is_zero() {
            return bad(ConfigError::ConsumerZeroDuration { field: "ack_wait" });
        }
        if self.max_deliver == Some(0) {
            return bad(ConfigError::ConsumerZeroLimit {
                field: "max_deliver",
            });
        }
        if self.max_ack_pending == Some(0) {
            return bad(ConfigError::ConsumerZeroLimit {
                field: "max_ack_pending",
            });
        }
        if !self.backoff.is_empty() {
            if self.backoff.iter().any(Duration::is_zero) {
                return bad(ConfigError::ConsumerZeroDuration {
                    field: "backoff waits",
                });
            }
            match self.max_deliver {
                Some(max) if (self.backoff.len() as u64) < max => {}
                _ => return bad(ConfigError::BackoffNeedsMaxDeliver),
            }
        }
        if self.deliver_policy == DeliverPolicy::LastPerSubject && self.filter_subjects.is_empty() {
            // nats-server 2.9's rule and words.
            return bad(ConfigError::LastPerSubjectNeedsFilter);
        }
        if let DeliverPolicy::ByStartSequence(0) = self.deliver_policy {
            return bad(ConfigError::StartSequenceZero);
        }
        if self.inactive_threshold.is_some_and(|t| t.is_zero()) {
            return bad(ConfigError::ConsumerZeroDuration {
                field: "inactive_threshold",
            });
        }
        Ok(())
    }

    /// Checks that `self` may replace `old` by an update (JetStream's rules:
    /// the deliver and ack policies and the start cannot change).
    pub fn validate_update(&self, old: &ConsumerConfig) -> Result<()> {
        let refuse = |field| Err(Error::invalid_config(ConfigError::ConsumerChange { field }));
        if self.deliver_policy != old.deliver_policy {
            return refuse("deliver policy");
        }
        if self.ack_policy != old.ack_policy {
            return refuse("ack policy");
        }
        if self.durable_name != old.durable_name {
            return refuse("durable name");
        }
        Ok(())
    }
}

/// A pair of sequences: in the consumer's own count and in the stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SequencePair {
    /// The consumer sequence (counts deliveries, redeliveries included).
    pub consumer_seq: u64,
    /// The stream sequence.
    pub stream_seq: u64,
}

/// A consumer's configuration and state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerInfo {
    /// The stream it reads.
    pub stream: String,
    /// Its name (the durable name, or the backend's for an ephemeral one).
    pub name: String,
    /// Its configuration.
    pub config: ConsumerConfig,
    /// When it was created.
    pub created: SystemTime,
    /// The last delivery.
    pub delivered: SequencePair,
    /// Everything at or below this is acknowledged.
    pub ack_floor: SequencePair,
    /// Messages matching the filter not delivered yet.
    pub num_pending: u64,
    /// Deliveries waiting for an acknowledgement.
    pub num_ack_pending: u64,
    /// Messages delivered more than once and not acknowledged yet.
    pub num_redelivered: u64,
    /// Sequences it stepped over because a damaged record lost them (the
    /// stream's lost messages up to its last delivery; a repair makes them
    /// deleted). Always 0 on NATS.
    pub num_lost: u64,
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckKind {
    /// Done: never deliver it again.
    Ack,
    /// Failed: deliver it again, after `delay` if given (else at once,
    /// or after the backoff in force).
    Nak(Option<Duration>),
    /// Never deliver it again, and do not count it as processed.
    Term,
    /// Still working: restart its `ack_wait`.
    InProgress,
}

/// What identifies a delivery to its backend when it is settled.
///
/// The stream and consumer names are shared by every delivery of a fetch
/// (a reference count each, not a copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AckRef {
    /// The stream.
    pub stream: Arc<str>,
    /// The consumer.
    pub consumer: Arc<str>,
    /// The message's stream sequence.
    pub stream_seq: u64,
    /// This delivery's consumer sequence.
    pub consumer_seq: u64,
    /// Which delivery of the message this is (1 for the first).
    pub delivered: u64,
    /// A backend's own token (on NATS: the reply subject).
    pub token: Option<ByteString>,
}

/// A message delivered by a consumer, with its metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The stored message (stream, stream sequence, subject, time, headers,
    /// payload).
    pub message: StoredMessage,
    /// How to settle it ([`crate::Backend::ack`]).
    pub ack: AckRef,
    /// Messages still pending for the consumer after this one.
    pub pending: u64,
}

impl Delivery {
    /// The stream sequence.
    pub fn stream_seq(&self) -> u64 {
        self.ack.stream_seq
    }

    /// The consumer sequence.
    pub fn consumer_seq(&self) -> u64 {
        self.ack.consumer_seq
    }

    /// Which delivery of the message this is (1 for the first).
    pub fn delivered(&self) -> u64 {
        self.ack.delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_needs_max_deliver_above_its_length() {
        let cfg = ConsumerConfig::durable("c").backoff([Duration::from_secs(1)]);
        assert!(cfg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("max deliver"));
        assert!(cfg.clone().max_deliver(2).validate().is_ok());
        assert!(cfg.max_deliver(1).validate().is_err());
    }

    #[test]
    fn updates_cannot_change_the_policies() {
        let old = ConsumerConfig::durable("c");
        let e = old
            .clone()
            .deliver_policy(DeliverPolicy::New)
            .validate_update(&old)
            .unwrap_err()
            .to_string();
        assert!(e.contains("deliver policy"), "{e}");
        assert!(old.clone().max_deliver(3).validate_update(&old).is_ok());
    }

    #[test]
    fn ephemeral_consumers_expire_by_default_and_durable_ones_do_not() {
        assert_eq!(
            ConsumerConfig::ephemeral().effective_inactive_threshold(),
            Some(DEFAULT_INACTIVE_THRESHOLD)
        );
        assert_eq!(
            ConsumerConfig::durable("d").effective_inactive_threshold(),
            None
        );
    }
}
