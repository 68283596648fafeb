//! Multi-valued message headers, with the NATS header names durabus honours.

use serde::{Deserialize, Serialize};

/// Message id for de-duplication within the stream's duplicate window.
pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
/// Publish only if the subject is captured by this stream.
pub const NATS_EXPECTED_STREAM: &str = "Nats-Expected-Stream";
/// Publish only if the stream's last sequence is this value.
pub const NATS_EXPECTED_LAST_SEQUENCE: &str = "Nats-Expected-Last-Sequence";
/// Publish only if the last sequence stored for this subject is this value (0: none yet).
pub const NATS_EXPECTED_LAST_SUBJECT_SEQUENCE: &str = "Nats-Expected-Last-Subject-Sequence";

/// Roll up: `sub` removes older messages on the subject, `all` the whole stream
/// (only on streams with `allow_rollup`).
pub const NATS_ROLLUP: &str = "Nats-Rollup";

/// Ordered, multi-valued headers. Names compare exactly (case-sensitive), as
/// on the NATS wire.
///
/// ```
/// use durabus_core::HeaderMap;
/// let mut h = HeaderMap::new();
/// h.append("Tag", "a");
/// h.append("Tag", "b");
/// h.insert("Nats-Msg-Id", "order-7");
/// assert_eq!(h.get("Tag"), Some("a"));
/// assert_eq!(h.get_all("Tag").collect::<Vec<_>>(), ["a", "b"]);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeaderMap {
    entries: Vec<(String, String)>,
}

impl HeaderMap {
    /// An empty map (allocates nothing).
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Adds a value, keeping existing values of the same name.
    pub fn append(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.entries.push((name.into(), value.into()));
    }

    /// Sets the only value of `name`, removing earlier values.
    pub fn insert(&mut self, name: impl Into<String>, value: impl Into<String>) {
        let name = name.into();
        self.remove(&name);
        self.entries.push((name, value.into()));
    }

    /// Builder form of [`HeaderMap::insert`].
    #[must_use]
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.insert(name, value);
        self
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in insertion order.
    pub fn get_all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.entries
            .iter()
            .filter(move |(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Removes every value of `name`; returns whether any was present.
    pub fn remove(&mut self, name: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(n, _)| n != name);
        before != self.entries.len()
    }

    /// All (name, value) pairs in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Number of (name, value) pairs.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes the headers occupy (names and values), used for size limits.
    pub fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum()
    }
}

impl<N: Into<String>, V: Into<String>> FromIterator<(N, V)> for HeaderMap {
    fn from_iter<I: IntoIterator<Item = (N, V)>>(iter: I) -> Self {
        Self {
            entries: iter
                .into_iter()
                .map(|(n, v)| (n.into(), v.into()))
                .collect(),
        }
    }
}
