//! Opening the async-nats connection: options, credentials, TLS, reconnect
//! backoff and connection events, and what a failed connect means.

use std::time::Duration;

use async_nats::Client;
use durabus_core::{ConfigError, Error, Event};
use secrecy::ExposeSecret as _;
use tokio::sync::broadcast;

use crate::options::{scrub, NatsAuth, NatsOptions, ServerList};

/// Opens the async-nats connection: options, credentials, TLS, the
/// reconnect backoff and the event bridge.
pub(super) async fn open(
    list: &ServerList,
    options: &NatsOptions,
    events: broadcast::Sender<Event>,
) -> std::result::Result<Client, OpenError> {
    let backoff = options.clone();
    let attempts = events.clone();
    let mut co = async_nats::ConnectOptions::new()
        .name(&options.name)
        .connection_timeout(options.connect_timeout)
        .request_timeout(Some(options.request_timeout))
        .ping_interval(options.ping_interval)
        .max_reconnects(options.max_reconnects)
        .reconnect_delay_callback(move |attempt| {
            let delay = backoff.reconnect_delay(attempt);
            let _ = attempts.send(Event::Reconnecting {
                attempt: attempt as u64,
                delay,
            });
            delay
        })
        .event_callback(move |e| {
            let events = events.clone();
            async move {
                if let Some(e) = bridge_event(e) {
                    let _ = events.send(e);
                }
            }
        });
    co = match &options.auth {
        NatsAuth::None => co,
        NatsAuth::UserPassword { user, password } => {
            co.user_and_password(user.clone(), password.expose_secret().to_owned())
        }
        NatsAuth::Token(t) => co.token(t.expose_secret().to_owned()),
        NatsAuth::NKeySeed(seed) => co.nkey(seed.expose_secret().to_owned()),
        NatsAuth::CredentialsFile(path) => co
            .credentials_file(path)
            .await
            .map_err(|e| OpenError::Credentials(format!("{}: {e}", path.display())))?,
    };
    let tls = &options.tls;
    if tls.required {
        co = co.require_tls(true);
    }
    if let Some(ca) = &tls.ca_file {
        co = co.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&tls.client_cert, &tls.client_key) {
        co = co.add_client_certificate(cert.clone(), key.clone());
    }
    let servers: Vec<async_nats::ServerAddr> = list
        .servers
        .iter()
        .map(|s| s.parse())
        .collect::<std::result::Result<_, _>>()
        .map_err(|e: std::io::Error| OpenError::Address(e.to_string()))?;
    // async-nats bounds each attempt by the connect timeout; this bounds the
    // whole (one attempt per server).
    let limit = options
        .connect_timeout
        .saturating_mul(u32::try_from(servers.len()).unwrap_or(1).max(1))
        + Duration::from_millis(500);
    match tokio::time::timeout(limit, co.connect(servers)).await {
        Err(_) => Err(OpenError::TimedOut),
        Ok(r) => r.map_err(OpenError::Connect),
    }
}

/// Why [`open`] failed.
#[derive(Debug)]
pub(super) enum OpenError {
    Credentials(String),
    Address(String),
    TimedOut,
    Connect(async_nats::ConnectError),
}

pub(super) fn connect_error(
    url: &str,
    secrets: &[String],
    e: OpenError,
    timeout: Duration,
) -> Error {
    use async_nats::ConnectErrorKind as K;
    let url = url.to_owned();
    let timed_out = || format!("no answer within the connect timeout ({timeout:?})");
    match e {
        OpenError::Credentials(reason) => Error::invalid_config(ConfigError::Credentials {
            reason: scrub(&reason, secrets),
        }),
        OpenError::Address(reason) => Error::InvalidUrl {
            url,
            reason: scrub(&reason, secrets),
        },
        OpenError::TimedOut => Error::Unreachable {
            url,
            reason: timed_out(),
        },
        OpenError::Connect(e) => {
            let reason = scrub(&e.to_string(), secrets);
            match e.kind() {
                K::Authentication | K::AuthorizationViolation => Error::AuthFailed { url, reason },
                K::Tls => Error::Tls { url, reason },
                K::TimedOut => Error::Unreachable {
                    url,
                    reason: timed_out(),
                },
                K::ServerParse | K::Dns | K::Io | K::MaxReconnects => {
                    let lower = reason.to_ascii_lowercase();
                    // A server that drops a connection after a failed TLS
                    // handshake shows as an I/O error.
                    if lower.contains("tls") || lower.contains("certificate") {
                        Error::Tls { url, reason }
                    } else if lower.contains("authorization") {
                        Error::AuthFailed { url, reason }
                    } else if lower.contains("maximum") || lower.contains("exceeded") {
                        // A limit of the server or account, e.g. "maximum
                        // account active connections exceeded".
                        // No JetStream answer: no codes.
                        Error::Server {
                            code: 0,
                            err_code: 0,
                            description: format!("{url} refused the connection: {reason}"),
                        }
                    } else {
                        Error::Unreachable { url, reason }
                    }
                }
            }
        }
    }
}

/// An async-nats connection event as a durabus [`Event`].
fn bridge_event(e: async_nats::Event) -> Option<Event> {
    use async_nats::{ClientError, Event as E};
    Some(match e {
        E::Connected => Event::Connected,
        E::Disconnected => Event::Disconnected,
        E::LameDuckMode => Event::LameDuck,
        E::ClientError(ClientError::MaxReconnects) => Event::ConnectionClosed {
            reason: "the reconnect limit was reached".into(),
        },
        E::ServerError(e) => Event::ServerError {
            message: e.to_string(),
        },
        E::Closed | E::Draining | E::SlowConsumer(_) | E::ClientError(_) => return None,
    })
}
