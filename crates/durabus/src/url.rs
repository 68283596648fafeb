//! Backend URLs.

use std::path::PathBuf;
use std::time::Duration;

use durabus_core::{Error, Result};
use durabus_log::{Durability, Options};

/// The URL used when none is given: an embedded store in `./data`.
pub const DEFAULT_URL: &str = "file:./data";

/// A parsed backend URL.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum BackendUrl {
    /// `file:<path>[?options]`: the embedded engine on disk.
    File {
        /// The data directory.
        path: PathBuf,
        /// Engine options from the query string.
        options: Options,
        /// `share=true|false`: whether to share the store with other local
        /// processes while this one holds it (see the `share` module); `None`
        /// when the URL does not say.
        share: Option<bool>,
    },
    /// `memory:[?options]`: the embedded engine in memory.
    Memory {
        /// Engine options from the query string.
        options: Options,
    },
    /// `nats://host:port` (also `tls://`, several servers separated by
    /// commas, credentials as `user:pass@` or `token@`, options as a query
    /// string: see `durabus_nats::NatsOptions::apply_url`): NATS JetStream.
    #[cfg(feature = "nats")]
    Nats {
        /// The URL as given, credentials included: redacted in `Debug`,
        /// zeroed when dropped.
        url: secrecy::SecretString,
    },
}

/// The URL with any `user:password@` or `token@` part replaced by `***`.
pub fn redact(url: &str) -> String {
    durabus_core::redact_url(url)
}

fn bad(url: &str, reason: impl Into<String>) -> Error {
    Error::InvalidUrl {
        url: redact(url),
        reason: reason.into(),
    }
}

/// Parses `file:./data`, `file:///abs/path`, `memory:` (with `?key=value&...`
/// options) into a [`BackendUrl`].
pub fn parse_url(url: &str) -> Result<BackendUrl> {
    let (scheme, rest) = url.split_once(':').ok_or_else(|| {
        bad(
            url,
            "no scheme; expected file:<dir>, memory:, nats://host or tls://host",
        )
    })?;
    if matches!(scheme, "nats" | "tls") {
        return parse_nats(url, scheme, rest);
    }
    let (body, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut share = None;
    let mut engine = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("share", value)) => share = Some(parse_bool(url, "share", value)?),
            _ => engine.push(pair),
        }
    }
    let options = parse_options(url, &engine.join("&"))?;
    if share.is_some() && scheme != "file" {
        return Err(bad(url, "share applies to file: stores only"));
    }
    match scheme {
        "file" => {
            let path = body.strip_prefix("//").unwrap_or(body);
            if path.is_empty() {
                return Err(bad(
                    url,
                    "no directory; write file:./data or file:///var/lib/app",
                ));
            }
            Ok(BackendUrl::File {
                path: PathBuf::from(path),
                options,
                share,
            })
        }
        "memory" | "mem" => Ok(BackendUrl::Memory { options }),
        "ws" | "wss" => Err(bad(
            url,
            format!(
                "the {scheme}: backend is not available in this build yet; use file:, memory:, nats:// or tls://"
            ),
        )),
        other => Err(bad(
            url,
            format!("unknown scheme {other:?}; expected file:, memory:, nats:// or tls://"),
        )),
    }
}

#[cfg(feature = "nats")]
fn parse_nats(url: &str, _scheme: &str, _rest: &str) -> Result<BackendUrl> {
    // Checked now so a bad URL fails before any connection attempt.
    durabus_nats::NatsOptions::default().apply_url(url)?;
    Ok(BackendUrl::Nats {
        url: secrecy::SecretString::from(url.to_owned()),
    })
}

#[cfg(not(feature = "nats"))]
fn parse_nats(url: &str, scheme: &str, _rest: &str) -> Result<BackendUrl> {
    Err(bad(
        url,
        format!("the {scheme}: backend is not in this build; enable durabus's `nats` feature"),
    ))
}

fn parse_options(url: &str, query: &str) -> Result<Options> {
    let mut options = Options::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').ok_or_else(|| {
            bad(
                url,
                format!("option {pair:?} has no value; write key=value"),
            )
        })?;
        match key {
            "durability" => options.durability = parse_durability(url, value)?,
            "segment_size" => {
                options.segment_size = value
                    .parse()
                    .map_err(|_| bad(url, format!("segment_size {value:?} is not a byte count")))?;
            }
            "subscriber_buffer" => {
                options.subscriber_buffer = value
                    .parse()
                    .map_err(|_| bad(url, format!("subscriber_buffer {value:?} is not a count")))?;
            }
            "read_only" => options.read_only = parse_bool(url, "read_only", value)?,
            other => {
                return Err(bad(
                    url,
                    format!(
                    "unknown option {other:?}; known: durability, segment_size, subscriber_buffer, read_only, share"
                ),
                ))
            }
        }
    }
    Ok(options)
}

fn parse_bool(url: &str, key: &str, value: &str) -> Result<bool> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(bad(url, format!("{key} {value:?} is not true or false"))),
    }
}

fn parse_durability(url: &str, value: &str) -> Result<Durability> {
    match value {
        "always" => Ok(Durability::Always),
        "none" => Ok(Durability::None),
        _ => {
            let interval = value
                .strip_prefix("periodic:")
                .and_then(parse_duration)
                .ok_or_else(|| {
                    bad(
                        url,
                        format!("durability {value:?}: expected always, none or periodic:<duration> such as periodic:100ms"),
                    )
                })?;
            Ok(Durability::Periodic(interval))
        }
    }
}

/// Parses `250ms`, `2s`, `1m`, `100us`.
fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit {
        "us" => Some(Duration::from_micros(n)),
        "ms" => Some(Duration::from_millis(n)),
        "s" => Some(Duration::from_secs(n)),
        "m" => Some(Duration::from_secs(n.checked_mul(60)?)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_accept_relative_and_absolute_paths_with_options() {
        match parse_url("file:./data?durability=periodic:100ms&segment_size=1024").unwrap() {
            BackendUrl::File { path, options, .. } => {
                assert_eq!(path, PathBuf::from("./data"));
                assert_eq!(
                    options.durability,
                    Durability::Periodic(Duration::from_millis(100))
                );
                assert_eq!(options.segment_size, 1024);
            }
            other => panic!("{other:?}"),
        }
        match parse_url("file:///var/lib/x").unwrap() {
            BackendUrl::File { path, .. } => assert_eq!(path, PathBuf::from("/var/lib/x")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_urls_say_what_is_wrong() {
        let e = parse_url("data").unwrap_err().to_string();
        assert!(e.contains("no scheme"), "{e}");
        let e = parse_url("file:x?durability=sometimes")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sometimes"), "{e}");
        let e = parse_url("file:x?color=red").unwrap_err().to_string();
        assert!(e.contains("color"), "{e}");
        let e = parse_url("ftp://x").unwrap_err().to_string();
        assert!(e.contains("ftp"), "{e}");
        // Only the schemes that work are offered.
        assert!(e.contains("tls://") && !e.contains("ws://"), "{e}");
    }

    #[cfg(feature = "nats")]
    #[test]
    fn nats_urls_parse_and_credentials_are_redacted() {
        use secrecy::ExposeSecret as _;
        let parsed = parse_url("nats://u:secret@127.0.0.1:4222").unwrap();
        assert!(!format!("{parsed:?}").contains("secret"));
        match parsed {
            BackendUrl::Nats { url } => {
                assert_eq!(url.expose_secret(), "nats://u:secret@127.0.0.1:4222")
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(redact("nats://u:secret@h:4222"), "nats://***@h:4222");
        let e = parse_url("nats://u:secret@h:4222?x=1")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("secret") && e.contains("\"x\""), "{e}");
        let e = parse_url("nats://").unwrap_err().to_string();
        assert!(e.contains("nats://host:4222"), "{e}");
    }
}
