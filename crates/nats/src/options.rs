//! Connection options of the NATS backend, and reading them from a URL.
//!
//! Credentials are held as [`SecretString`]s: redacted in `Debug`, zeroed
//! when dropped. The backend passes them to async-nats when it connects and
//! keeps no copy of its own; async-nats keeps one inside its connection task
//! (it needs it to reconnect), which ends when the backend is closed.

use std::path::PathBuf;
use std::time::Duration;

use durabus_core::backoff;
use durabus_core::{redact_url, ConfigError, Error, Result};
use secrecy::{ExposeSecret as _, SecretString};

/// How the client authenticates.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum NatsAuth {
    /// No credentials.
    #[default]
    None,
    /// User and password (`nats://user:password@host` in a URL).
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: SecretString,
    },
    /// A token (`nats://token@host` in a URL).
    Token(SecretString),
    /// A `.creds` file holding a user JWT and NKey seed (`?creds=<path>`).
    CredentialsFile(PathBuf),
    /// An NKey seed (`SU...`), for servers configured with NKey users.
    NKeySeed(SecretString),
}

/// TLS settings. A `tls://` URL, or any of the files, turns TLS on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NatsTls {
    /// Refuse to talk without TLS (`tls://` or `?tls=required`).
    pub required: bool,
    /// PEM file of the CA(s) the server's certificate must chain to
    /// (`?tls_ca=<path>`); the system roots when absent.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate for mutual TLS (`?tls_cert=<path>`).
    pub client_cert: Option<PathBuf>,
    /// PEM private key of the client certificate (`?tls_key=<path>`).
    pub client_key: Option<PathBuf>,
}

/// Connection options of the NATS backend.
///
/// Every field can also be set in the URL's query string (see
/// [`NatsOptions::apply_url`]); values in the URL take precedence.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct NatsOptions {
    /// Client name shown by the server (`?name=`). Default "durabus".
    pub name: String,
    /// Credentials. Default none.
    pub auth: NatsAuth,
    /// TLS. Default off (unless the server requires it).
    pub tls: NatsTls,
    /// Reconnect attempts in a row before giving up for good
    /// (`?max_reconnects=`, `unlimited`). Default `None`: never give up.
    pub max_reconnects: Option<usize>,
    /// Wait before the second reconnect attempt (`?reconnect_wait=`); it
    /// doubles with each further attempt up to `reconnect_wait_max`, and each
    /// wait is jittered to between half and all of it. The first attempt
    /// after a disconnect is immediate. Default 100 ms.
    pub reconnect_wait: Duration,
    /// The longest wait between reconnect attempts (`?reconnect_wait_max=`).
    /// Default 5 s.
    pub reconnect_wait_max: Duration,
    /// How long the first connection may take (`?connect_timeout=`).
    /// Default 5 s.
    pub connect_timeout: Duration,
    /// How long a JetStream API call or a publish acknowledgement may take
    /// (`?request_timeout=`). Default 5 s.
    pub request_timeout: Duration,
    /// Interval of the client's keep-alive pings (`?ping_interval=`): a dead
    /// connection is noticed after two missed pongs. Default 20 s.
    pub ping_interval: Duration,
    /// How long `close` waits for in-flight messages to drain
    /// (`?drain_timeout=`). Default 5 s.
    pub drain_timeout: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            name: "durabus".into(),
            auth: NatsAuth::None,
            tls: NatsTls::default(),
            max_reconnects: None,
            reconnect_wait: Duration::from_millis(100),
            reconnect_wait_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(20),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// The servers of a NATS URL, with the credentials taken out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerList {
    /// `scheme://host:port` per server, no credentials, no query.
    pub servers: Vec<String>,
}

impl ServerList {
    /// The servers joined by commas: safe to print.
    pub fn display(&self) -> String {
        self.servers.join(",")
    }
}

/// The URL's query keys, for error messages.
const KEYS: &str = "name, creds, nkey_seed_file, tls, tls_ca, tls_cert, tls_key, max_reconnects, \
                    reconnect_wait, reconnect_wait_max, connect_timeout, request_timeout, \
                    ping_interval, drain_timeout";

impl NatsOptions {
    /// Takes credentials and query options out of `url`
    /// (`nats://[user:password@|token@]host[:port][,nats://host2...][?key=value&...]`,
    /// also `tls://`) into these options, and returns its servers without them.
    ///
    /// Query keys: `name`, `creds` (a `.creds` file), `nkey_seed_file`,
    /// `tls=required`, `tls_ca`, `tls_cert`, `tls_key` (paths),
    /// `max_reconnects` (a count or `unlimited`), and the durations
    /// `reconnect_wait`, `reconnect_wait_max`, `connect_timeout`,
    /// `request_timeout`, `ping_interval`, `drain_timeout` (`250ms`, `2s`,
    /// `1m`). Errors name the key and never hold a credential.
    pub fn apply_url(&mut self, url: &str) -> Result<ServerList> {
        let bad = |reason: String| Error::InvalidUrl {
            url: redact_url(url),
            reason,
        };
        let url = url.trim();
        if url.is_empty() {
            return Err(bad(
                "no server URL; write nats://host:4222 (several separated by commas)".into(),
            ));
        }
        let (list, query) = match url.split_once('?') {
            Some((l, q)) => (l, q),
            None => (url, ""),
        };
        let mut servers = Vec::new();
        for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (scheme, rest) = match part.split_once("://") {
                Some((s, r)) => (s, r),
                None => ("nats", part),
            };
            match scheme {
                "nats" => {}
                "tls" => self.tls.required = true,
                other => {
                    return Err(bad(format!(
                        "scheme {other:?} in a server list; use nats:// or tls://"
                    )))
                }
            }
            let host = match rest.rfind('@') {
                Some(at) => {
                    self.auth = auth_from_userinfo(&rest[..at]).map_err(&bad)?;
                    &rest[at + 1..]
                }
                None => rest,
            };
            let host = host.trim_end_matches('/');
            if host.is_empty() {
                return Err(bad("a server without a host; write nats://host:4222".into()));
            }
            if host.contains('/') {
                return Err(bad(format!(
                    "{host:?} has a path; a NATS server address is host:port"
                )));
            }
            servers.push(format!("{scheme}://{host}"));
        }
        if servers.is_empty() {
            return Err(bad("no server; write nats://host:4222".into()));
        }
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("option {pair:?} has no value; write key=value")))?;
            let value = percent_decode(value)
                .ok_or_else(|| bad(format!("option {key}: invalid percent-encoding")))?;
            self.apply_option(key, &value).map_err(&bad)?;
        }
        Ok(ServerList { servers })
    }

    fn apply_option(&mut self, key: &str, value: &str) -> std::result::Result<(), String> {
        let duration = || {
            humantime::parse_duration(value)
                .map_err(|_| format!("{key}={value:?} is not a duration such as 250ms, 2s or 1m"))
        };
        match key {
            "name" => self.name = value.to_owned(),
            "creds" => self.auth = NatsAuth::CredentialsFile(PathBuf::from(value)),
            "nkey_seed_file" => {
                let seed = std::fs::read_to_string(value)
                    .map_err(|e| format!("nkey_seed_file {value:?}: {e}"))?;
                self.auth = NatsAuth::NKeySeed(SecretString::from(seed.trim().to_owned()));
            }
            "tls" => match value {
                "required" | "true" => self.tls.required = true,
                "false" => self.tls.required = false,
                _ => return Err(format!("tls={value:?}: expected required or false")),
            },
            "tls_ca" => self.tls.ca_file = Some(PathBuf::from(value)),
            "tls_cert" => self.tls.client_cert = Some(PathBuf::from(value)),
            "tls_key" => self.tls.client_key = Some(PathBuf::from(value)),
            "max_reconnects" => {
                self.max_reconnects = match value {
                    "unlimited" | "-1" => None,
                    n => Some(n.parse().map_err(|_| {
                        format!("max_reconnects={n:?}: expected a count or unlimited")
                    })?),
                }
            }
            "reconnect_wait" => self.reconnect_wait = duration()?,
            "reconnect_wait_max" => self.reconnect_wait_max = duration()?,
            "connect_timeout" => self.connect_timeout = duration()?,
            "request_timeout" => self.request_timeout = duration()?,
            "ping_interval" => self.ping_interval = duration()?,
            "drain_timeout" => self.drain_timeout = duration()?,
            other => return Err(format!("unknown option {other:?}; known: {KEYS}")),
        }
        Ok(())
    }

    /// Checks the options for mistakes a connection would only show later.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason| Err(Error::invalid_config(reason));
        if self.tls.client_cert.is_some() != self.tls.client_key.is_some() {
            return bad(ConfigError::TlsCertWithoutKey);
        }
        for (what, path) in [
            ("tls_ca", &self.tls.ca_file),
            ("tls_cert", &self.tls.client_cert),
            ("tls_key", &self.tls.client_key),
        ] {
            if let Some(p) = path {
                if !p.is_file() {
                    return bad(ConfigError::UnreadableFile {
                        what,
                        path: p.clone(),
                    });
                }
            }
        }
        if let NatsAuth::CredentialsFile(p) = &self.auth {
            if !p.is_file() {
                return bad(ConfigError::UnreadableFile {
                    what: "credentials file",
                    path: p.clone(),
                });
            }
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return bad(ConfigError::ZeroTimeout);
        }
        if self.reconnect_wait > self.reconnect_wait_max {
            return bad(ConfigError::ReconnectWaitAboveMax);
        }
        Ok(())
    }

    /// The wait before reconnect attempt `attempt` (1-based, consecutive):
    /// none for the first, then `reconnect_wait` doubling up to
    /// `reconnect_wait_max`, jittered to between half and all of it.
    pub fn reconnect_delay(&self, attempt: usize) -> Duration {
        if attempt <= 1 {
            return Duration::ZERO;
        }
        let step = u32::try_from(attempt - 2).unwrap_or(u32::MAX);
        let full = backoff::exponential(self.reconnect_wait, step, self.reconnect_wait_max);
        backoff::jittered(full, 0.5)
    }

    /// The secrets these options hold, to scrub from texts that came from
    /// elsewhere (server or library error messages).
    pub(crate) fn secrets(&self) -> Vec<String> {
        match &self.auth {
            NatsAuth::UserPassword { password, .. } => vec![password.expose_secret().to_owned()],
            NatsAuth::Token(t) | NatsAuth::NKeySeed(t) => vec![t.expose_secret().to_owned()],
            NatsAuth::None | NatsAuth::CredentialsFile(_) => Vec::new(),
        }
    }
}

/// `user:password` or `token` (percent-decoded).
fn auth_from_userinfo(info: &str) -> std::result::Result<NatsAuth, String> {
    let decode = |s: &str| {
        percent_decode(s)
            .ok_or_else(|| "credentials in the URL are not valid percent-encoding".to_owned())
    };
    Ok(match info.split_once(':') {
        Some((user, password)) => NatsAuth::UserPassword {
            user: decode(user)?,
            password: SecretString::from(decode(password)?),
        },
        None => NatsAuth::Token(SecretString::from(decode(info)?)),
    })
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Replaces every secret in `text` by `***`.
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_owned();
    for s in secrets.iter().filter(|s| !s.is_empty()) {
        out = out.replace(s.as_str(), "***");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_leave_the_url_and_go_into_options() {
        let mut o = NatsOptions::default();
        let list = o
            .apply_url("nats://al%40x:p%3Ass@127.0.0.1:4222,nats://127.0.0.1:4223")
            .unwrap();
        assert_eq!(
            list.servers,
            ["nats://127.0.0.1:4222", "nats://127.0.0.1:4223"]
        );
        match &o.auth {
            NatsAuth::UserPassword { user, password } => {
                assert_eq!(user, "al@x");
                assert_eq!(password.expose_secret(), "p:ss");
            }
            other => panic!("{other:?}"),
        }
        assert!(!format!("{o:?}").contains("p:ss"));
        let mut o = NatsOptions::default();
        o.apply_url("tls://s3cret@h:4222").unwrap();
        assert!(matches!(&o.auth, NatsAuth::Token(t) if t.expose_secret() == "s3cret"));
        assert!(o.tls.required);
    }

    #[test]
    fn query_options_set_every_field_and_unknown_keys_are_named() {
        let mut o = NatsOptions::default();
        o.apply_url(
            "nats://h?name=app&max_reconnects=3&reconnect_wait=50ms&reconnect_wait_max=2s\
             &connect_timeout=1s&request_timeout=3s&ping_interval=10s&drain_timeout=1s&tls=required\
             &tls_ca=/ca.pem&tls_cert=/c.pem&tls_key=/k.pem&creds=/u.creds",
        )
        .unwrap();
        assert_eq!(o.name, "app");
        assert_eq!(o.max_reconnects, Some(3));
        assert_eq!(o.reconnect_wait, Duration::from_millis(50));
        assert_eq!(o.reconnect_wait_max, Duration::from_secs(2));
        assert_eq!(o.connect_timeout, Duration::from_secs(1));
        assert_eq!(o.request_timeout, Duration::from_secs(3));
        assert_eq!(o.ping_interval, Duration::from_secs(10));
        assert_eq!(o.drain_timeout, Duration::from_secs(1));
        assert!(o.tls.required);
        assert_eq!(o.tls.client_key, Some(PathBuf::from("/k.pem")));
        assert!(matches!(o.auth, NatsAuth::CredentialsFile(_)));
        let mut o = NatsOptions::default();
        o.apply_url("nats://h?creds=/a%26b%3Fc.creds").unwrap();
        assert!(
            matches!(&o.auth, NatsAuth::CredentialsFile(p) if p == &PathBuf::from("/a&b?c.creds"))
        );

        let e = NatsOptions::default()
            .apply_url("nats://u:hunter2@h?colour=red")
            .unwrap_err()
            .to_string();
        assert!(e.contains("colour") && e.contains("known:"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        let e = NatsOptions::default()
            .apply_url("nats://h?connect_timeout=soon")
            .unwrap_err()
            .to_string();
        assert!(e.contains("connect_timeout"), "{e}");
    }

    #[test]
    fn a_missing_url_is_a_clear_error() {
        for url in ["", "  ", "nats://", "nats://u:p@"] {
            let e = NatsOptions::default()
                .apply_url(url)
                .unwrap_err()
                .to_string();
            assert!(e.contains("nats://host:4222"), "{url:?}: {e}");
        }
    }

    #[test]
    fn reconnect_waits_grow_to_the_cap_with_jitter() {
        let o = NatsOptions::default();
        assert_eq!(o.reconnect_delay(1), Duration::ZERO);
        for _ in 0..100 {
            let d2 = o.reconnect_delay(2);
            assert!(d2 >= Duration::from_millis(50) && d2 <= Duration::from_millis(100));
            let d5 = o.reconnect_delay(5);
            assert!(d5 >= Duration::from_millis(400) && d5 <= Duration::from_millis(800));
            let d40 = o.reconnect_delay(40);
            assert!(d40 >= Duration::from_millis(2500) && d40 <= Duration::from_secs(5));
        }
    }

    #[test]
    fn mismatched_tls_files_are_refused_before_connecting() {
        let mut o = NatsOptions::default();
        o.tls.client_cert = Some(PathBuf::from("/nonexistent.pem"));
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("tls_key"), "{e}");
    }
}
