//! The hub's settings, with nats-server's defaults.

use std::time::Duration;

use crate::proto::{DEFAULT_MAX_CONTROL_LINE, DEFAULT_MAX_PAYLOAD};

/// How a [`crate::Server`] serves its clients. The defaults are
/// nats-server's.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerOptions {
    /// The name it announces in `INFO` (`server_name`).
    pub name: String,
    /// Largest message payload, headers included (1 MiB).
    pub max_payload: usize,
    /// Longest control line (4 KiB).
    pub max_control_line: usize,
    /// Outbound bytes a connection may have waiting before it is closed
    /// as a slow consumer (64 MiB).
    pub max_pending: usize,
    /// Most connections at once (65 536).
    pub max_connections: usize,
    /// How often the server pings an idle client (2 minutes).
    pub ping_interval: Duration,
    /// Unanswered pings after which the connection is closed as stale (2).
    pub max_pings_out: u32,
    /// How long shutdown waits for connections to finish what they were
    /// doing (10 s).
    pub shutdown_timeout: Duration,
    /// The token every client must give in CONNECT (`auth_token`), if
    /// any: a connection that sends anything else first, or another
    /// token, gets `-ERR 'Authorization Violation'` and is closed, as
    /// nats-server closes it. None by default.
    pub auth_token: Option<String>,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            name: "durabus".to_owned(),
            max_payload: DEFAULT_MAX_PAYLOAD,
            max_control_line: DEFAULT_MAX_CONTROL_LINE,
            max_pending: 64 * 1024 * 1024,
            max_connections: 64 * 1024,
            ping_interval: Duration::from_secs(120),
            max_pings_out: 2,
            shutdown_timeout: Duration::from_secs(10),
            auth_token: None,
        }
    }
}

impl ServerOptions {
    /// Requires clients to give `token` in CONNECT.
    #[must_use]
    pub fn auth_token(mut self, token: impl Into<String>) -> Self {
        self.auth_token = Some(token.into());
        self
    }

    /// Sets the announced name.
    #[must_use]
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Sets the largest payload.
    #[must_use]
    pub fn max_payload(mut self, bytes: usize) -> Self {
        self.max_payload = bytes;
        self
    }

    /// Sets the longest control line.
    #[must_use]
    pub fn max_control_line(mut self, bytes: usize) -> Self {
        self.max_control_line = bytes;
        self
    }

    /// Sets the outbound bytes a connection may have waiting.
    #[must_use]
    pub fn max_pending(mut self, bytes: usize) -> Self {
        self.max_pending = bytes;
        self
    }

    /// Sets the most connections at once.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets the ping interval and the unanswered pings that close a
    /// connection.
    #[must_use]
    pub fn ping(mut self, interval: Duration, max_out: u32) -> Self {
        self.ping_interval = interval;
        self.max_pings_out = max_out;
        self
    }
}
