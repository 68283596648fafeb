//! What the verbs share: global options, opening and closing the store, and
//! the shutdown signal of long-running commands.

use std::time::Duration;

use anyhow::Context as _;
use durabus::ConnectionStatus;

/// What every command needs besides its own arguments.
#[derive(Debug, Clone)]
pub(crate) struct Global {
    /// The URL as given, if any (`bench` treats "none given" specially).
    pub(crate) url: Option<String>,
    /// Machine-readable output.
    pub(crate) json: bool,
}

impl Global {
    /// The backend URL, defaulting to [`durabus::DEFAULT_URL`].
    pub(crate) fn url(&self) -> &str {
        self.url.as_deref().unwrap_or(durabus::DEFAULT_URL)
    }

    /// The backend URL for messages: credentials replaced by `***`.
    pub(crate) fn shown_url(&self) -> String {
        durabus::redact(self.url())
    }
}

/// Which kind of backend a URL names, for wording messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `file:`: the embedded engine on disk, locked by one process.
    File,
    /// `memory:`: the embedded engine in this process's memory.
    Memory,
    /// `nats://`, `tls://`: a NATS server.
    Nats,
}

impl Kind {
    /// The kind of `url`, if it parses.
    pub(crate) fn of(url: &str) -> Option<Kind> {
        match durabus::parse_url(url).ok()? {
            durabus::BackendUrl::File { .. } => Some(Kind::File),
            durabus::BackendUrl::Memory { .. } => Some(Kind::Memory),
            durabus::BackendUrl::Nats { .. } => Some(Kind::Nats),
            _ => None,
        }
    }
}

/// Whether a command may create a missing data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Inspecting: a missing `file:` directory is an error, not created.
    Existing,
    /// Writing or listening: a missing directory is created.
    Create,
    /// Only reading (`stream ls`, `stream info`, `stream get`, `replay`): as
    /// `Existing`, and a `file:` store is opened read-only
    /// (`read_only=true`): no lock, nothing written, so it works on a
    /// read-only file system, on a backup, and beside a running owner
    /// (showing what was on disk when the command started).
    ReadOnly,
}

/// `url` with `read_only=true` added when it is a `file:` URL that does not
/// say otherwise.
fn read_only_url(url: &str) -> String {
    match durabus::parse_url(url) {
        Ok(durabus::BackendUrl::File { .. }) if !url.contains("read_only=") => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}read_only=true")
        }
        _ => url.to_owned(),
    }
}

/// `url` with `share=true` added when it is a `file:` URL that does not
/// say otherwise: while a command holds a store, other commands (another
/// shell's `pub` beside a `sub`) join it instead of finding it locked.
fn shared_url(url: &str) -> String {
    match durabus::parse_url(url) {
        Ok(durabus::BackendUrl::File { share: None, .. }) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}share=true")
        }
        _ => url.to_owned(),
    }
}

/// Connects to `url`, saying which URL failed and why (credentials never shown).
pub(crate) async fn open_bus(url: &str, access: Access) -> anyhow::Result<durabus::Bus> {
    if access != Access::Create {
        if let Ok(durabus::BackendUrl::File { path, .. }) = durabus::parse_url(url) {
            if !path.exists() {
                anyhow::bail!(
                    "no durabus data directory at {}: nothing has been stored there yet; \
                     pass --url file:<dir> or nats://host:4222 (or set DURABUS_URL) to use another store",
                    path.display()
                );
            }
        }
    }
    // A malformed URL explains itself; only failures to open get the URL prefixed.
    durabus::parse_url(url)?;
    let shown = durabus::redact(url);
    let url = match access {
        Access::ReadOnly => read_only_url(url),
        _ => shared_url(url),
    };
    match durabus::connect(&url).await {
        Ok(bus) => Ok(bus),
        // These name the (redacted) server and say what to check.
        Err(
            e @ (durabus::Error::Unreachable { .. }
            | durabus::Error::AuthFailed { .. }
            | durabus::Error::Tls { .. }
            | durabus::Error::JetStreamNotEnabled),
        ) => Err(e.into()),
        Err(e) => Err(e).with_context(|| format!("cannot open {shown}")),
    }
}

/// Closes `bus` after a command, keeping the command's own error first.
pub(crate) async fn finish<T>(
    bus: &durabus::Bus,
    url: &str,
    result: anyhow::Result<T>,
) -> anyhow::Result<T> {
    let closed = bus.close().await;
    let value = result?;
    closed.with_context(|| match Kind::of(url) {
        Some(Kind::Nats) => format!(
            "closing the connection to {} failed; messages published without an ack \
             (subjects no stream captures) may not have reached the server",
            durabus::redact(url)
        ),
        _ => "closing the store failed; the last acknowledged writes may not be durable".to_owned(),
    })?;
    Ok(value)
}

/// How long a command that only reads (`sub`, `replay`) waits for the
/// backend to close: an unreachable server must not hold up Ctrl-C.
const READER_CLOSE: Duration = Duration::from_secs(1);

/// [`finish`] for commands that wrote nothing: closing is bounded by
/// [`READER_CLOSE`], and skipped while the connection is down, since
/// nothing is left to flush.
pub(crate) async fn finish_reader<T>(
    bus: &durabus::Bus,
    url: &str,
    result: anyhow::Result<T>,
) -> anyhow::Result<T> {
    let grace = match bus.status() {
        ConnectionStatus::Reconnecting | ConnectionStatus::CircuitOpen => Duration::ZERO,
        _ => READER_CLOSE,
    };
    match tokio::time::timeout(grace, finish(bus, url, Ok(()))).await {
        Ok(closed) => {
            let value = result?;
            closed?;
            Ok(value)
        }
        Err(_) => {
            let value = result?;
            if !grace.is_zero() {
                eprintln!(
                    "warning: {} did not confirm the close within {READER_CLOSE:?}; \
                     exiting anyway (nothing was pending)",
                    durabus::redact(url)
                );
            }
            Ok(value)
        }
    }
}

/// Tells on stderr when a server connection is lost and restored, for the
/// long-running commands (`sub`, `replay --follow`): the embedded backends
/// never change state, a NATS connection reconnects by itself.
#[derive(Debug)]
pub(crate) struct ConnectionWatch {
    url: String,
    last: ConnectionStatus,
    /// What a gap means for this command, said when the connection is lost.
    consequence: &'static str,
}

/// How often [`ConnectionWatch::check`] should be called.
pub(crate) const WATCH_INTERVAL: Duration = Duration::from_millis(250);

impl ConnectionWatch {
    /// Watches `bus` (connected to `url`); `consequence` completes
    /// "lost the connection to URL; reconnecting, ...".
    pub(crate) fn new(bus: &durabus::Bus, url: &str, consequence: &'static str) -> Self {
        ConnectionWatch {
            url: durabus::redact(url),
            last: bus.status(),
            consequence,
        }
    }

    /// Compares the status with the last one seen and reports a change.
    pub(crate) fn check(&mut self, bus: &durabus::Bus) {
        let now = bus.status();
        if now == self.last {
            return;
        }
        match now {
            ConnectionStatus::Reconnecting | ConnectionStatus::CircuitOpen => eprintln!(
                "warning: lost the connection to {}; reconnecting, {}",
                self.url, self.consequence
            ),
            ConnectionStatus::Connected => eprintln!("reconnected to {}", self.url),
            _ => {}
        }
        self.last = now;
    }
}

/// A future that resolves on Ctrl-C or, on Unix, SIGTERM: the end of `sub`
/// and `replay --follow`.
///
/// The handlers are installed when this is called, not when the future is
/// first polled, so a signal that arrives after a command said it is ready
/// (e.g. `sub`'s "listening on") is never lost to the default action.
pub(crate) fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, Signal, SignalKind};
        async fn recv(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        }
        let interrupt = signal(SignalKind::interrupt()).ok();
        let terminate = signal(SignalKind::terminate()).ok();
        async move {
            tokio::select! {
                () = recv(interrupt) => {}
                () = recv(terminate) => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }
}
