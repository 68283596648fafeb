//! Stream and consumer names.
//!
//! Names follow JetStream's characters: non-empty, no whitespace or control
//! characters, and none of `.`, `*`, `>`, `/`, `\`. They also become file
//! and directory names in the embedded store, so `..`-style tricks are
//! impossible by construction, and their byte lengths are capped below
//! JetStream's 255 so that every path the store derives from a name stays
//! within the 255-byte file-name limit of common file systems:
//!
//! - a stream name becomes `streams/<name>`, `streams/.creating-<name>`
//!   while it is created and `streams/.deleted-<name>-<ns>` while it is
//!   deleted (`<ns>` an i64, at most 20 characters): at most
//!   [`MAX_STREAM_NAME_LEN`] (225) bytes;
//! - a durable consumer name becomes `consumers/<name>` and, while its
//!   state is replaced, `consumers/<name>.tmp`: at most
//!   [`MAX_CONSUMER_NAME_LEN`] (251) bytes.
//!
//! Every backend (memory, file, NATS) checks the same limits before doing
//! anything, so a name is accepted or refused alike everywhere, and what
//! can be created can always be removed.

use crate::error::{Error, Result};
use crate::reason::ArgumentError;

/// Longest stream name, in bytes: 255 minus the 30 bytes the embedded
/// store adds while deleting it (`.deleted-<name>-<ns>`).
pub const MAX_STREAM_NAME_LEN: usize = 225;

/// Longest durable consumer name, in bytes: 255 minus the 4 bytes of the
/// temp file its state is written to (`<name>.tmp`).
pub const MAX_CONSUMER_NAME_LEN: usize = 251;

const FORBIDDEN: &[char] = &['.', '*', '>', '/', '\\'];

fn validate(kind: &'static str, name: &str, max: usize) -> Result<()> {
    let bad = |reason: String| Error::InvalidName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad(format!("{kind} name is empty")));
    }
    if name.len() > max {
        return Err(Error::invalid_argument(ArgumentError::NameTooLong {
            kind,
            name: name.to_owned(),
            len: name.len(),
            max,
        }));
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

/// Validates a stream name: [`Error::InvalidName`] for an empty name or a
/// forbidden character, [`Error::InvalidArgument`] with
/// [`ArgumentError::NameTooLong`] above [`MAX_STREAM_NAME_LEN`] bytes.
pub fn validate_stream_name(name: &str) -> Result<()> {
    validate("stream", name, MAX_STREAM_NAME_LEN)
}

/// Validates a durable consumer name: [`Error::InvalidName`] for an empty
/// name or a forbidden character, [`Error::InvalidArgument`] with
/// [`ArgumentError::NameTooLong`] above [`MAX_CONSUMER_NAME_LEN`] bytes.
pub fn validate_consumer_name(name: &str) -> Result<()> {
    validate("consumer", name, MAX_CONSUMER_NAME_LEN)
}

/// Derives a legal stream or consumer name from any id.
///
/// Forbidden characters and whitespace become `_`; an empty id becomes `_`;
/// an id over [`MAX_STREAM_NAME_LEN`] bytes (the shorter of the two limits)
/// is cut at a character boundary. Distinct ids can map to the same name
/// (`a.b` and `a_b`), so prefer ids that are already legal.
///
/// ```
/// assert_eq!(durabus_core::sanitize("orders.eu/west"), "orders_eu_west");
/// ```
pub fn sanitize(id: &str) -> String {
    let max = MAX_STREAM_NAME_LEN.min(MAX_CONSUMER_NAME_LEN);
    let mut out = String::with_capacity(id.len().min(max));
    for c in id.chars() {
        let c = if c.is_whitespace() || c.is_control() || FORBIDDEN.contains(&c) {
            '_'
        } else {
            c
        };
        if out.len() + c.len_utf8() > max {
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
    fn names_over_their_byte_limit_are_refused_naming_length_and_limit() {
        let at = |n: usize| "é".repeat(n / 2) + &"x".repeat(n % 2);
        assert!(validate_stream_name(&at(MAX_STREAM_NAME_LEN)).is_ok());
        assert!(validate_consumer_name(&at(MAX_CONSUMER_NAME_LEN)).is_ok());
        for (kind, len, max, r) in [
            (
                "stream",
                MAX_STREAM_NAME_LEN + 1,
                MAX_STREAM_NAME_LEN,
                validate_stream_name(&at(MAX_STREAM_NAME_LEN + 1)),
            ),
            (
                "consumer",
                MAX_CONSUMER_NAME_LEN + 1,
                MAX_CONSUMER_NAME_LEN,
                validate_consumer_name(&at(MAX_CONSUMER_NAME_LEN + 1)),
            ),
        ] {
            match r {
                Err(Error::InvalidArgument {
                    reason:
                        ArgumentError::NameTooLong {
                            kind: k,
                            len: l,
                            max: m,
                            ..
                        },
                }) => assert_eq!((k, l, m), (kind, len, max)),
                other => panic!("{kind}: {other:?}"),
            }
        }
    }

    #[test]
    fn sanitize_always_yields_a_valid_name() {
        for id in ["", "a.b", "  ", "../../etc", &"é".repeat(300), "ok"] {
            let name = sanitize(id);
            assert!(validate_stream_name(&name).is_ok(), "{id:?} -> {name:?}");
            assert!(validate_consumer_name(&name).is_ok(), "{id:?} -> {name:?}");
        }
        assert_eq!(sanitize("ok"), "ok");
    }
}
