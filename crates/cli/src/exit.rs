//! Exit codes and how errors are reported: `error: ...` and `hint: ...`
//! lines for people, `{"error": {"kind", "description", "hint"}}` on
//! stderr with `--json`.
//!
//! | code | meaning |
//! |------|---------|
//! | 0    | success |
//! | 1    | an error (the message says what) |
//! | 2    | the command line could not be parsed |
//! | 3    | `consumer next`: no message arrived within `--wait` |
//! | 4    | `pub`: stopped with publishes unconfirmed (may or may not be stored) |
//! | 130  | interrupted by Ctrl-C (`pub --count`: the summary so far is printed) |

use std::fmt;

/// Every error not listed below.
pub(crate) const FAILURE: u8 = 1;
/// `consumer next` found nothing to fetch.
pub(crate) const NO_MESSAGE: u8 = 3;
/// `pub` stopped with publishes whose ack never came.
pub(crate) const UNCONFIRMED: u8 = 4;
/// Ctrl-C.
pub(crate) const INTERRUPTED: u8 = 130;

/// An outcome that ends the command with its own exit code.
#[derive(Debug)]
pub(crate) struct Exit {
    /// The process's exit code.
    pub(crate) code: u8,
    /// The JSON error's `kind`.
    pub(crate) kind: &'static str,
    /// What happened, for people and as the JSON error's `description`.
    pub(crate) description: String,
    /// Printed without `error: ` in front (not a failure of the command:
    /// an answer such as "no message").
    pub(crate) plain: bool,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.description)
    }
}

impl std::error::Error for Exit {}

/// The exit code of `err`.
pub(crate) fn code(err: &anyhow::Error) -> u8 {
    err.chain()
        .find_map(|c| c.downcast_ref::<Exit>())
        .map_or(FAILURE, |e| e.code)
}

/// Whether `err` is printed without `error: `.
pub(crate) fn plain(err: &anyhow::Error) -> bool {
    err.chain()
        .find_map(|c| c.downcast_ref::<Exit>())
        .is_some_and(|e| e.plain)
}

/// The JSON error's `kind`: the library error's variant in snake case
/// (`stream_not_found`, `unreachable`, `invalid_url`, ...), `io` for an
/// I/O error, the kind of an [`Exit`], else `other`.
pub(crate) fn kind(err: &anyhow::Error) -> String {
    for cause in err.chain() {
        if let Some(exit) = cause.downcast_ref::<Exit>() {
            return exit.kind.to_owned();
        }
        if let Some(error) = cause.downcast_ref::<durabus::Error>() {
            // The variant's name leads its Debug form: `StreamNotFound { .. }`.
            let debug = format!("{error:?}");
            let name: String = debug
                .chars()
                .take_while(char::is_ascii_alphanumeric)
                .collect();
            return snake_case(&name);
        }
        if cause.downcast_ref::<std::io::Error>().is_some() {
            return "io".to_owned();
        }
    }
    "other".to_owned()
}

fn snake_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The JSON error object.
pub(crate) fn json(
    err: &anyhow::Error,
    description: &str,
    hint: Option<&str>,
) -> serde_json::Value {
    let mut error = serde_json::json!({
        "kind": kind(err),
        "description": description,
    });
    if let Some(hint) = hint {
        error["hint"] = serde_json::Value::String(hint.to_owned());
    }
    serde_json::json!({ "error": error })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use anyhow::Context as _;

    use super::*;

    #[test]
    fn library_errors_are_kinds_in_snake_case() {
        let err = Err::<(), _>(durabus::Error::StreamNotFound { name: "S".into() })
            .context("cannot read stream S")
            .unwrap_err();
        assert_eq!(kind(&err), "stream_not_found");
        let err = anyhow::Error::from(durabus::Error::JetStreamNotEnabled);
        assert_eq!(kind(&err), "jet_stream_not_enabled");
        assert_eq!(kind(&anyhow::anyhow!("plain")), "other");
    }

    #[test]
    fn an_exit_outcome_carries_its_code() {
        let err = anyhow::Error::from(Exit {
            code: NO_MESSAGE,
            kind: "no_message",
            description: "none".into(),
            plain: true,
        });
        assert_eq!(code(&err), NO_MESSAGE);
        assert!(plain(&err));
        assert_eq!(code(&anyhow::anyhow!("x")), FAILURE);
        let value = json(&err, "none", None);
        assert_eq!(value["error"]["kind"], "no_message");
        assert_eq!(value["error"]["description"], "none");
    }
}
