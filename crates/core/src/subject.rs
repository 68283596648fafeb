//! Subjects: `.`-separated tokens; `*` matches one token, `>` one or more at the end.
//!
//! Publish subjects are literal (no wildcards). Filters (subscriptions and the
//! subjects a stream captures) may contain wildcards. Tokens are non-empty and
//! contain no whitespace.

use crate::error::{Error, Result};

/// Longest subject accepted, in bytes (a record stores the length as `u16`).
pub const MAX_SUBJECT_LEN: usize = 4096;

fn invalid(subject: &str, reason: impl Into<String>) -> Error {
    Error::InvalidSubject {
        subject: subject.to_owned(),
        reason: reason.into(),
    }
}

fn check_tokens(subject: &str, allow_wildcards: bool) -> Result<()> {
    if subject.is_empty() {
        return Err(invalid(subject, "subject is empty"));
    }
    if subject.len() > MAX_SUBJECT_LEN {
        return Err(invalid(
            subject,
            format!(
                "subject is {} bytes, the maximum is {MAX_SUBJECT_LEN}",
                subject.len()
            ),
        ));
    }
    let count = subject.split('.').count();
    for (i, token) in subject.split('.').enumerate() {
        let pos = i + 1;
        if token.is_empty() {
            return Err(invalid(subject, format!("token {pos} is empty")));
        }
        if let Some(c) = token.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(
                subject,
                format!("token {pos} {token:?} contains whitespace or a control character {c:?}"),
            ));
        }
        let has_wild = token.contains('*') || token.contains('>');
        if !has_wild {
            continue;
        }
        if !allow_wildcards {
            return Err(invalid(
                subject,
                format!("token {pos} {token:?} is a wildcard; wildcards are not allowed when publishing"),
            ));
        }
        if token.len() > 1 {
            return Err(invalid(
                subject,
                format!("token {pos} {token:?} mixes a wildcard with other characters; `*` and `>` must be whole tokens"),
            ));
        }
        if token == ">" && pos != count {
            return Err(invalid(
                subject,
                format!("token {pos} is `>`, which may only be the last token"),
            ));
        }
    }
    Ok(())
}

/// Validates a subject to publish to: literal tokens only.
pub fn validate_publish(subject: &str) -> Result<()> {
    check_tokens(subject, false)
}

/// Validates a filter (subscription or stream subject): wildcards allowed.
pub fn validate_filter(filter: &str) -> Result<()> {
    check_tokens(filter, true)
}

/// Whether `filter` contains a wildcard token.
pub fn has_wildcards(filter: &str) -> bool {
    filter.split('.').any(|t| t == "*" || t == ">")
}

/// Whether the literal `subject` matches `filter`.
///
/// Both are assumed valid (see [`validate_publish`] and [`validate_filter`]).
pub fn matches(filter: &str, subject: &str) -> bool {
    let mut f = filter.split('.');
    let mut s = subject.split('.');
    loop {
        match (f.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether some literal subject could match both filters.
///
/// Used to refuse streams whose subjects overlap, as NATS does.
pub fn overlaps(a: &str, b: &str) -> bool {
    let mut x = a.split('.');
    let mut y = b.split('.');
    loop {
        match (x.next(), y.next()) {
            (Some(">"), Some(_)) | (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Whether every subject matched by `inner` is also matched by `outer`.
pub fn is_subset(inner: &str, outer: &str) -> bool {
    let mut i = inner.split('.');
    let mut o = outer.split('.');
    loop {
        match (i.next(), o.next()) {
            (Some(_), Some(">")) => return true,
            (Some(">"), Some(_)) => return false,
            (Some(_), Some("*")) => {}
            (Some("*"), Some(_)) => return false,
            (Some(p), Some(q)) if p == q => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_subjects_reject_wildcards_empty_tokens_and_whitespace() {
        assert!(validate_publish("orders.eu.created").is_ok());
        for bad in ["", ".a", "a.", "a..b", "a.*", "a.>", "a b", "a.\tb", "a.b*"] {
            assert!(validate_publish(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn errors_name_the_offending_token() {
        let err = validate_publish("a..b").unwrap_err().to_string();
        assert!(err.contains("token 2"), "{err}");
        let err = validate_filter("a.>.b").unwrap_err().to_string();
        assert!(err.contains("token 2") && err.contains("last"), "{err}");
        let err = validate_publish("a.b c").unwrap_err().to_string();
        assert!(err.contains("\"b c\""), "{err}");
    }

    #[test]
    fn filters_accept_whole_token_wildcards_only() {
        for ok in ["a.*", "a.>", "*", ">", "*.b.>", "a.*.c"] {
            assert!(validate_filter(ok).is_ok(), "{ok:?} rejected");
        }
        for bad in ["a.>.b", "a.b*", "a.>>", "", "a..b"] {
            assert!(validate_filter(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn star_matches_exactly_one_token_and_gt_one_or_more() {
        assert!(matches("a.*", "a.b"));
        assert!(!matches("a.*", "a.b.c"));
        assert!(!matches("a.*", "a"));
        assert!(matches("a.>", "a.b.c"));
        assert!(!matches("a.>", "a"));
        assert!(matches(">", "x"));
        assert!(matches("a.*.c", "a.b.c"));
        assert!(!matches("a.*.c", "a.b.d"));
        assert!(matches("a.b", "a.b"));
        assert!(!matches("a.b", "a.bc"));
    }

    #[test]
    fn overlap_detects_any_common_subject() {
        assert!(overlaps("a.*", "a.b"));
        assert!(overlaps("a.>", "a.b.c"));
        assert!(overlaps("*.b", "a.*"));
        assert!(!overlaps("a.*", "b.*"));
        assert!(!overlaps("a.*", "a.b.c"));
        assert!(overlaps(">", "anything.at.all"));
        assert!(!overlaps("a.b", "a.c"));
    }

    #[test]
    fn subset_relation() {
        assert!(is_subset("a.b", "a.*"));
        assert!(is_subset("a.b.c", "a.>"));
        assert!(is_subset("a.*", "a.>"));
        assert!(!is_subset("a.>", "a.*"));
        assert!(!is_subset("a.*", "a.b"));
    }
}
