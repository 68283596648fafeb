//! What the verbs share: global options, opening and closing the store, and
//! the shutdown signal of long-running commands.

use anyhow::Context as _;

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
}

/// Whether a command may create a missing data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Inspecting: a missing `file:` directory is an error, not created.
    Existing,
    /// Writing or listening: a missing directory is created.
    Create,
}

/// Connects to `url`, saying which URL failed and why.
pub(crate) async fn open_bus(url: &str, access: Access) -> anyhow::Result<durabus::Bus> {
    if access == Access::Existing {
        if let Ok(durabus::BackendUrl::File { path, .. }) = durabus::parse_url(url) {
            if !path.exists() {
                anyhow::bail!(
                    "no durabus data directory at {}: nothing has been stored there yet; \
                     pass --url file:<dir> (or set DURABUS_URL) to use another store",
                    path.display()
                );
            }
        }
    }
    // A malformed URL explains itself; only failures to open get the URL prefixed.
    durabus::parse_url(url)?;
    durabus::connect(url)
        .await
        .with_context(|| format!("cannot open {url}"))
}

/// Closes `bus` after a command, keeping the command's own error first.
pub(crate) async fn finish<T>(bus: &durabus::Bus, result: anyhow::Result<T>) -> anyhow::Result<T> {
    let closed = bus.close().await;
    let value = result?;
    closed.context("closing the store failed; the last acknowledged writes may not be durable")?;
    Ok(value)
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
