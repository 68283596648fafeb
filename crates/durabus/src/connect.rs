//! [`ConnectOptions`]: how to connect, for every backend.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use durabus_core::{Backend, ConnectionStatus, Error, Result};

use crate::supervise::{Callbacks, Supervised, SupervisorConfig};
use crate::trace::Propagation;
use crate::url::{parse_url, BackendUrl};
use crate::Bus;

/// Connection settings, ending in [`ConnectOptions::connect`].
///
/// Settings that only networked backends use (credentials, TLS, reconnect,
/// circuit breaker, callbacks) are ignored by `file:` and `memory:`. For
/// `nats://` URLs, options in the URL's query string take precedence over
/// the ones set here.
///
/// ```no_run
/// # async fn example() -> durabus::Result<()> {
/// use std::time::Duration;
///
/// let bus = durabus::ConnectOptions::new()
///     .user_and_password("app", "s3cret")
///     .tls_ca_file("ca.pem")
///     .max_reconnects(Some(60))
///     .on_health_change(|status| eprintln!("bus is {status:?}"))
///     .connect("nats://127.0.0.1:4222")
///     .await?;
/// bus.wait_connected(Duration::from_secs(5)).await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct ConnectOptions {
    #[cfg(feature = "nats")]
    nats: durabus_nats::NatsOptions,
    supervisor: SupervisorConfig,
    callbacks: Callbacks,
    propagation: Propagation,
    service: Option<String>,
    share: bool,
}

impl ConnectOptions {
    /// Defaults: no credentials, reconnect forever, circuit breaker after 5
    /// consecutive failures.
    pub fn new() -> Self {
        Self::default()
    }

    /// Connects to the backend named by `url` (see [`crate::connect`]).
    pub async fn connect(self, url: &str) -> Result<Bus> {
        let bus = match parse_url(url)? {
            BackendUrl::File {
                path,
                options,
                share,
            } => {
                let share = share.unwrap_or(self.share);
                return self.open_file(path, options, share).await;
            }
            BackendUrl::Memory { options } => {
                Bus::from_backend(Arc::new(durabus_log::Store::memory(options)?))
            }
            #[cfg(feature = "nats")]
            BackendUrl::Nats { url } => {
                use secrecy::ExposeSecret as _;
                self.supervisor.validate()?;
                let backend =
                    durabus_nats::NatsBackend::connect(url.expose_secret(), self.nats.clone())
                        .await?;
                return self.supervise(Arc::new(backend));
            }
        };
        Ok(stamped(bus, self.propagation, self.service))
    }

    /// Opens the store in `dir`; with `share`, shares it, or joins the
    /// process that holds and shares it (see the `share` module).
    #[cfg_attr(
        not(feature = "nats"),
        allow(unused_mut, unused_variables, clippy::never_loop)
    )]
    async fn open_file(
        self,
        dir: PathBuf,
        options: durabus_log::Options,
        share: bool,
    ) -> Result<Bus> {
        let read_only = options.read_only;
        let mut attempts = 0;
        let store = loop {
            let (d, o) = (dir.clone(), options.clone());
            let opened = tokio::task::spawn_blocking(move || durabus_log::Store::open(d, o))
                .await
                .map_err(|e| Error::internal(format!("open task failed: {e}")))?;
            match opened {
                Ok(store) => break Arc::new(store),
                #[cfg(feature = "nats")]
                Err(locked @ Error::Locked { .. }) if share && !read_only => {
                    attempts += 1;
                    let Some((url, token)) = crate::share::find(&dir).await else {
                        return Err(locked);
                    };
                    match self.clone().join(&url, token).await {
                        Ok(bus) => return Ok(bus),
                        // The holder is gone since (its lock with it): open again.
                        Err(Error::Unreachable { .. }) if attempts < 3 => continue,
                        Err(e) => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        };
        let mut bus = Bus::from_backend(store.clone());
        #[cfg(feature = "nats")]
        if !read_only {
            // This process holds the lock: a record left is a dead holder's.
            crate::share::remove_stale(&dir);
            if share {
                match crate::share::Sharing::start(store, &dir).await {
                    Ok(sharing) => bus = bus.with_sharing(sharing),
                    Err(e) => {
                        tracing::warn!(error = %e, dir = %dir.display(), "the store is not shared");
                    }
                }
            }
        }
        Ok(stamped(bus, self.propagation, self.service))
    }

    /// Connects to the hub of a process sharing its store, as a NATS client.
    #[cfg(feature = "nats")]
    async fn join(mut self, url: &str, token: String) -> Result<Bus> {
        self.nats.auth = durabus_nats::NatsAuth::Token(durabus_nats::SecretString::from(token));
        // When the holder goes, its store is opened by the next process,
        // elsewhere: give up after a few attempts rather than wait forever.
        self.nats.max_reconnects = Some(JOIN_RECONNECTS);
        self.supervisor.validate()?;
        let backend = durabus_nats::NatsBackend::connect(url, self.nats.clone()).await?;
        tracing::debug!(url, "joined the process that shares the store");
        self.supervise(Arc::new(backend))
    }

    /// Takes part in sharing a `file:` store with other local processes
    /// (off by default; the URL option `share=true|false` takes
    /// precedence): a process that opens the store shares it while it holds
    /// it, and one that finds it held by a sharing process joins that one
    /// (over a loopback port, with a token in a file only the store's owner
    /// can read) and uses the same store through the same API. Off, a
    /// process neither shares nor joins. It is off by default because it
    /// opens a listening port in the application; the `durabus` CLI turns
    /// it on.
    pub fn share(mut self, share: bool) -> Self {
        self.share = share;
        self
    }

    /// Supervises an already connected networked backend and wraps it in a
    /// [`Bus`] (for backends connected by hand, e.g. a hub client).
    pub fn supervise(self, backend: Arc<dyn Backend>) -> Result<Bus> {
        let ConnectOptions {
            supervisor,
            callbacks,
            propagation,
            service,
            ..
        } = self;
        let supervised = Supervised::new(backend, supervisor, callbacks)?;
        Ok(stamped(Bus::supervised(supervised), propagation, service))
    }

    /// The service name stamped on every message published (the
    /// `Durabus-Service` header, see [`crate::trace`]), unless the current
    /// [`Context`](crate::context::Context) names another.
    pub fn service_name(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// How publishes are stamped with trace, correlation and service
    /// headers: [`Propagation::Continue`] (the default) continues a trace in
    /// context, [`Propagation::Always`] also starts one for every other
    /// message, [`Propagation::Off`] sends messages as given.
    pub fn propagation(mut self, propagation: Propagation) -> Self {
        self.propagation = propagation;
        self
    }

    /// Circuit breaker and health check settings.
    pub fn supervisor(mut self, config: SupervisorConfig) -> Self {
        self.supervisor = config;
        self
    }

    /// Consecutive connection failures that open the circuit (default 5).
    pub fn failure_threshold(mut self, failures: u32) -> Self {
        self.supervisor.failure_threshold = failures;
        self
    }

    /// The cap of the circuit's open backoff (default 1 min).
    pub fn max_open_backoff(mut self, cap: Duration) -> Self {
        self.supervisor.max_open_backoff = cap;
        self
    }

    /// Called once when the first connection is up.
    pub fn on_connect(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.callbacks.on_connect = Some(Arc::new(f));
        self
    }

    /// Called when the connection is lost.
    pub fn on_disconnect(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.callbacks.on_disconnect = Some(Arc::new(f));
        self
    }

    /// Called when the connection is up again after a loss.
    pub fn on_reconnect(mut self, f: impl Fn() + Send + Sync + 'static) -> Self {
        self.callbacks.on_reconnect = Some(Arc::new(f));
        self
    }

    /// Called with the new status on every status change.
    pub fn on_health_change(
        mut self,
        f: impl Fn(ConnectionStatus) + Send + Sync + 'static,
    ) -> Self {
        self.callbacks.on_health_change = Some(Arc::new(f));
        self
    }
}

/// Settings of the NATS backend.
#[cfg(feature = "nats")]
impl ConnectOptions {
    /// All NATS settings at once (replacing the ones set so far).
    pub fn nats(mut self, options: durabus_nats::NatsOptions) -> Self {
        self.nats = options;
        self
    }

    /// Client name shown by the server (default "durabus").
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.nats.name = name.into();
        self
    }

    /// Authenticate with a user and password.
    pub fn user_and_password(
        mut self,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.nats.auth = durabus_nats::NatsAuth::UserPassword {
            user: user.into(),
            password: durabus_nats::SecretString::from(password.into()),
        };
        self
    }

    /// Authenticate with a token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.nats.auth =
            durabus_nats::NatsAuth::Token(durabus_nats::SecretString::from(token.into()));
        self
    }

    /// Authenticate with an NKey seed (`SU...`), for NKey users.
    pub fn nkey_seed(mut self, seed: impl Into<String>) -> Self {
        self.nats.auth =
            durabus_nats::NatsAuth::NKeySeed(durabus_nats::SecretString::from(seed.into()));
        self
    }

    /// Authenticate with a `.creds` file (user JWT and NKey seed).
    pub fn credentials_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.nats.auth = durabus_nats::NatsAuth::CredentialsFile(path.into());
        self
    }

    /// Require TLS, even if the server does not ask for it.
    pub fn require_tls(mut self, required: bool) -> Self {
        self.nats.tls.required = required;
        self
    }

    /// The CA(s) the server certificate must chain to (PEM).
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.nats.tls.ca_file = Some(path.into());
        self
    }

    /// A client certificate and its key (PEM), for mutual TLS.
    pub fn tls_client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.nats.tls.client_cert = Some(cert.into());
        self.nats.tls.client_key = Some(key.into());
        self
    }

    /// Reconnect attempts in a row before giving up; `None` (the default)
    /// never gives up.
    pub fn max_reconnects(mut self, attempts: Option<usize>) -> Self {
        self.nats.max_reconnects = attempts;
        self
    }

    /// The first and the longest wait between reconnect attempts (default
    /// 100 ms doubling to 5 s, with jitter).
    pub fn reconnect_wait(mut self, first: Duration, max: Duration) -> Self {
        self.nats.reconnect_wait = first;
        self.nats.reconnect_wait_max = max;
        self
    }

    /// How long the first connection may take (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.nats.connect_timeout = timeout;
        self
    }

    /// How long an API call or a publish ack may take (default 5 s).
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.nats.request_timeout = timeout;
        self
    }

    /// Keep-alive ping interval (default 20 s).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.nats.ping_interval = interval;
        self
    }

    /// How long `close` may drain (default 5 s).
    pub fn drain_timeout(mut self, timeout: Duration) -> Self {
        self.nats.drain_timeout = timeout;
        self
    }
}

/// Reconnect attempts of a process joined to another's shared store.
#[cfg(feature = "nats")]
const JOIN_RECONNECTS: usize = 10;

/// `bus` with the configured propagation and service name.
fn stamped(bus: Bus, propagation: Propagation, service: Option<String>) -> Bus {
    let bus = bus.with_propagation(propagation);
    match service {
        Some(name) => bus.with_service(name),
        None => bus,
    }
}
