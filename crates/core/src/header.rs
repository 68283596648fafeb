//! Multi-valued message headers, with the NATS header names durabus honours.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::reason::ArgumentError;

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

    /// Checks every header as NATS does, so a message is refused alike on
    /// every backend: a name is one or more printable ASCII characters
    /// (33-126) other than `:` ([`ArgumentError::HeaderName`]); a value
    /// holds no CR or LF ([`ArgumentError::HeaderValue`]). These are
    /// async-nats's `HeaderName` and `HeaderValue` rules (NATS ADR-4); a
    /// header breaking them would break the protocol's framing.
    ///
    /// ```
    /// use durabus_core::HeaderMap;
    /// assert!(HeaderMap::new().with("Tag", "a b: c").validate().is_ok());
    /// assert!(HeaderMap::new().with("Bad Name", "v").validate().is_err());
    /// assert!(HeaderMap::new().with("Tag", "a\r\nX: y").validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        for (name, value) in &self.entries {
            validate_header(name, value)?;
        }
        Ok(())
    }

    /// Bytes the headers occupy (names and values), used for size limits.
    pub fn encoded_len(&self) -> usize {
        self.entries
            .iter()
            .map(|(n, v)| n.len() + v.len() + 4)
            .sum()
    }
}

/// One header against the NATS rules (see [`HeaderMap::validate`]).
fn validate_header(name: &str, value: &str) -> Result<()> {
    let bad_name = |found| {
        Error::invalid_argument(ArgumentError::HeaderName {
            name: name.to_owned(),
            found,
        })
    };
    if name.is_empty() {
        return Err(bad_name(None));
    }
    if let Some(c) = name.chars().find(|&c| c == ':' || !(c.is_ascii_graphic())) {
        return Err(bad_name(Some(c)));
    }
    if let Some(offset) = value.bytes().position(|b| b == b'\r' || b == b'\n') {
        return Err(Error::invalid_argument(ArgumentError::HeaderValue {
            name: name.to_owned(),
            offset,
            cr: value.as_bytes()[offset] == b'\r',
        }));
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(h: HeaderMap) -> ArgumentError {
        match h.validate() {
            Err(Error::InvalidArgument { reason }) => reason,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn header_names_are_printable_ascii_without_colon_and_values_have_no_line_breaks() {
        let ok = HeaderMap::new()
            .with("Nats-Msg-Id", "x")
            .with("a!#$%&'*+-.^_`|~z", "")
            .with("Tag", " spaced\tvalue: é ");
        assert!(ok.validate().is_ok());
        for (name, found) in [
            ("", None),
            ("a b", Some(' ')),
            ("a:b", Some(':')),
            ("a\tb", Some('\t')),
            ("é", Some('é')),
            ("x\x7f", Some('\x7f')),
        ] {
            let r = reason(HeaderMap::new().with(name, "v"));
            assert_eq!(
                r,
                ArgumentError::HeaderName {
                    name: name.to_owned(),
                    found
                }
            );
        }
        let r = reason(HeaderMap::new().with("T", "ab\r\nX: y"));
        assert_eq!(
            r,
            ArgumentError::HeaderValue {
                name: "T".into(),
                offset: 2,
                cr: true
            }
        );
        assert!(!r.to_string().contains("X: y"), "{r}");
        let r = reason(HeaderMap::new().with("T", "a\nb"));
        assert!(r.to_string().contains("LF"), "{r}");
    }
}
