//! Stream and consumer names.
//!
//! Names follow JetStream: non-empty, at most 255 bytes, no whitespace, and
//! none of `.`, `*`, `>`, `/`, `\`. They also become directory names in the
//! embedded store, so `..`-style tricks are impossible by construction.

use crate::error::{Error, Result};

/// Longest stream or consumer name, in bytes.
pub const MAX_NAME_LEN: usize = 255;

const FORBIDDEN: &[char] = &['.', '*', '>', '/', '\\'];

fn validate(kind: &str, name: &str) -> Result<()> {
    let bad = |reason: String| Error::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad(format!("{kind} name is empty")));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(format!(
            "{kind} name is {} bytes, the maximum is {MAX_NAME_LEN}",
            name.len()
        )));
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_whitespace() || c.is_control() || FORBIDDEN.contains(c))
    {
        return Err(bad(format!(
            "{kind} name contains {c:?}; whitespace and . * > / \\ are not allowed"
        )));
    }
    Ok(())
}

/// Validates a stream name.
pub fn validate_stream_name(name: &str) -> Result<()> {
    validate("stream", name)
}

/// Validates a durable consumer name.
pub fn validate_consumer_name(name: &str) -> Result<()> {
    validate("consumer", name)
}

/// Derives a legal stream or consumer name from any id.
///
/// Forbidden characters and whitespace become `_`; an empty id becomes `_`;
/// an over-long id is cut at a character boundary. Distinct ids can map to
/// the same name (`a.b` and `a_b`), so prefer ids that are already legal.
///
/// ```
/// assert_eq!(durabus_core::sanitize("orders.eu/west"), "orders_eu_west");
/// ```
pub fn sanitize(id: &str) -> String {
    let mut out = String::with_capacity(id.len().min(MAX_NAME_LEN));
    for c in id.chars() {
        let c = if c.is_whitespace() || c.is_control() || FORBIDDEN.contains(&c) {
            '_'
        } else {
            c
        };
        if out.len() + c.len_utf8() > MAX_NAME_LEN {
            break;
        }
        out.push(c);
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_separators_wildcards_and_whitespace() {
        assert!(validate_stream_name("ORDERS_v2-eu").is_ok());
        for bad in ["", "a.b", "a*", "a>", "a/b", "a\\b", "a b", "..", "x\n"] {
            assert!(validate_stream_name(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_consumer_name(&"x".repeat(256)).is_err());
    }

    #[test]
    fn sanitize_always_yields_a_valid_name() {
        for id in ["", "a.b", "  ", "../../etc", &"é".repeat(300), "ok"] {
            let name = sanitize(id);
            assert!(validate_stream_name(&name).is_ok(), "{id:?} -> {name:?}");
        }
        assert_eq!(sanitize("ok"), "ok");
    }
}
