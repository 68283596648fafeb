//! Real `nats-server` processes for tests: "testcontainers for nats-server".
//!
//! - [`NatsServer::start`]: JetStream with a file store, on a free port.
//! - [`NatsServer::builder`]: memory-only JetStream, no JetStream, user and
//!   password or token auth, a generated NKey user ([`NKeyUser`]),
//!   decentralized JWT auth with generated operator, accounts and `.creds`
//!   files ([`OperatorAuth`]), TLS or mutual TLS with generated certificates
//!   ([`TlsFiles`]), a fixed port, an HTTP monitoring port.
//! - [`NatsServer::shared`]: one server for a whole test process. The NATS
//!   backend's conformance run uses it for all cases; they keep apart by
//!   unique stream names and subjects.
//! - [`NatsCluster::start`]: a JetStream cluster on loopback, ready for
//!   replicated streams when it returns.
//!
//! A started server can be killed (SIGKILL), paused and resumed
//! (SIGSTOP/SIGCONT, a hung server) and restarted on the same port with the
//! same store and config. Everything listens on 127.0.0.1 only. Each server
//! lives in its own temp dir (config, certificates, store, log), and a
//! watchdog shell kills the server and removes that dir when the server is
//! dropped, and also when the test process exits or is killed, so nothing
//! outlives the tests.
//!
//! The methods block (they wait for the server with short sleeps); they are
//! fine to call from `#[tokio::test]` code, which simply pauses meanwhile.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> anyhow::Result<()> {
//! use anyhow::Context;
//! use durabus_testkit::nats::{NatsServer, TlsMode};
//!
//! let server = NatsServer::builder()
//!     .user_password("app", "secret")
//!     .tls(TlsMode::Mutual)
//!     .start()?;
//! let tls = server.tls().context("started with TLS")?;
//! let client = async_nats::ConnectOptions::with_user_and_password("app".into(), "secret".into())
//!     .add_root_certificates(tls.ca.clone())
//!     .add_client_certificate(tls.client_cert.clone(), tls.client_key.clone())
//!     .connect(server.url())
//!     .await?;
//! server.kill()?;
//! server.restart()?; // same port, same store: file streams survive
//! # drop(client); Ok(()) }
//! ```
//!
//! Facts of nats-server 2.9.10 this relies on:
//! - memory-only JetStream is `jetstream { max_file_store: 0 }`: file
//!   streams are refused (`insufficient storage resources available`,
//!   err_code 10047), memory streams work;
//! - with TLS the server still greets with a plaintext `INFO` (carrying
//!   `"tls_required":true`) and the client upgrades after it;
//! - the INFO says `"jetstream":true` as soon as clients are accepted, also
//!   for a cluster node whose meta group has no leader yet, so cluster
//!   readiness is read from each node's `/jsz` instead (a 3-node cluster is
//!   ready about 0.5 s after start; a new stream leader after its leader
//!   dies takes raft 4-9 s).
//!
//! And of async-nats 0.46 with it: credentials in a URL (`nats://u:p@h`)
//! are ignored (use `ConnectOptions::with_user_and_password` or
//! `with_token`); a comma-separated URL string is one (invalid) URL (pass a
//! `Vec<ServerAddr>`); `jetstream::Context::query_account` fails to parse
//! 2.9's account info (no `reserved_memory`): request `$JS.API.INFO` by hand.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::Value;
use tempfile::TempDir;

mod certs;
mod cluster;
mod jwt;
mod process;

pub use certs::{TlsFiles, TlsMode};
pub use cluster::NatsCluster;
pub use jwt::{NKeyUser, OperatorAuth};

use process::{free_ports, greet, log_tail, spawn_server, unique_name, Greeting, Watchdog};

/// How long a server may take to accept connections.
const START: Duration = Duration::from_secs(15);
/// How often a server started on a port it found free is tried again with
/// fresh ports, when another process took the port in between.
const PORT_ATTEMPTS: usize = 3;

/// What a test that needs a real nats-server says when there is none
/// ([`nats_server_binary`] finds nothing): such a test fails, never skips.
pub const NOT_INSTALLED: &str = "nats-server not found on PATH; install it \
     (`apt-get install -y nats-server`) — scripts/test does this";

/// Where the `nats-server` binary is: `$NATS_SERVER`, then `PATH`, then the
/// Debian location `/usr/sbin/nats-server`.
pub fn nats_server_binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return Some(PathBuf::from(p));
    }
    let in_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("nats-server"))
            .find(|p| p.is_file())
    });
    in_path.or_else(|| {
        let debian = PathBuf::from("/usr/sbin/nats-server");
        debian.is_file().then_some(debian)
    })
}

/// Where JetStream keeps streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Storage {
    /// Files in the server's own store dir ([`NatsServer::store_dir`]);
    /// they survive [`NatsServer::kill`] and [`NatsServer::restart`].
    #[default]
    File,
    /// Memory only (`jetstream { max_file_store: 0 }`): the server refuses
    /// file streams ("insufficient storage resources available", err_code
    /// 10047) and forgets every stream on restart.
    Memory,
}

/// How clients authenticate.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Auth {
    /// Anyone may connect.
    #[default]
    None,
    /// `authorization { user, password }`.
    UserPassword {
        /// The user name.
        user: String,
        /// The password.
        password: String,
    },
    /// `authorization { token }`.
    Token(String),
    /// `authorization { users: [ { nkey } ] }` with an NKey user generated
    /// at start ([`NatsServer::nkey_user`]).
    NKeyUser,
    /// Decentralized JWT auth with an operator, accounts and a user
    /// generated at start ([`NatsServer::operator_auth`]).
    Operator,
}

/// The cluster block of a node's config.
#[derive(Debug, Clone)]
pub(crate) struct ClusterSpec {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) routes: Vec<u16>,
}

/// Options for a [`NatsServer`]; [`NatsServerBuilder::start`] starts it.
///
/// The default is what [`NatsServer::start`] gives: JetStream on files, no
/// auth, no TLS, a free port.
#[derive(Debug, Clone)]
#[must_use]
pub struct NatsServerBuilder {
    jetstream: bool,
    storage: Storage,
    auth: Auth,
    tls: Option<TlsMode>,
    port: Option<u16>,
    monitor: bool,
    monitor_port: Option<u16>,
    name: Option<String>,
    cluster: Option<ClusterSpec>,
}

impl Default for NatsServerBuilder {
    fn default() -> Self {
        Self {
            jetstream: true,
            storage: Storage::File,
            auth: Auth::None,
            tls: None,
            port: None,
            monitor: false,
            monitor_port: None,
            name: None,
            cluster: None,
        }
    }
}

impl NatsServerBuilder {
    /// With `false`, a server without JetStream (for "the server has no
    /// JetStream" errors). JetStream is on by default.
    pub fn jetstream(mut self, enabled: bool) -> Self {
        self.jetstream = enabled;
        self
    }

    /// Where JetStream keeps streams; [`Storage::File`] by default.
    pub fn storage(mut self, storage: Storage) -> Self {
        self.storage = storage;
        self
    }

    /// Clients must log in as `user` with `password`.
    ///
    /// async-nats 0.46 ignores credentials in a URL (`nats://u:p@host`):
    /// give them to `ConnectOptions::with_user_and_password`.
    pub fn user_password(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.auth = Auth::UserPassword {
            user: user.into(),
            password: password.into(),
        };
        self
    }

    /// Clients must present `token` (async-nats:
    /// `ConnectOptions::with_token`; a token in the URL is ignored).
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.auth = Auth::Token(token.into());
        self
    }

    /// Clients must log in as an NKey user generated at start: the server
    /// lists its public key, [`NatsServer::nkey_seed_file`] holds its seed
    /// (durabus: `?nkey_seed_file=<path>`).
    pub fn nkey_user(mut self) -> Self {
        self.auth = Auth::NKeyUser;
        self
    }

    /// Decentralized JWT auth ("operator mode"): an operator, a system
    /// account, an account with JetStream and a user of it are generated
    /// at start; the server trusts the operator and has both accounts
    /// preloaded (`resolver: MEMORY`). Clients log in with
    /// [`NatsServer::creds_file`]; [`OperatorAuth`] has the keys and the
    /// `.creds` of a user of an account the server does not know.
    pub fn operator_mode(mut self) -> Self {
        self.auth = Auth::Operator;
        self
    }

    /// TLS with certificates generated for this server (see [`TlsFiles`]).
    pub fn tls(mut self, mode: TlsMode) -> Self {
        self.tls = Some(mode);
        self
    }

    /// Listen on `port` (on 127.0.0.1) instead of a free one.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Also serve the HTTP monitoring endpoints (`/varz`, `/jsz`, ...) on a
    /// free port; see [`NatsServer::monitor_port`].
    pub fn monitoring(mut self) -> Self {
        self.monitor = true;
        self
    }

    pub(crate) fn cluster_node(
        mut self,
        name: String,
        port: u16,
        monitor_port: u16,
        cluster: ClusterSpec,
    ) -> Self {
        self.name = Some(name);
        self.port = Some(port);
        self.monitor = true;
        self.monitor_port = Some(monitor_port);
        self.cluster = Some(cluster);
        self
    }

    /// Starts the server and waits until it greets clients (with JetStream
    /// on, when it is on). A free port that another process took meanwhile
    /// is replaced by a fresh one, twice at most.
    pub fn start(self) -> anyhow::Result<NatsServer> {
        let bin = nats_server_binary().context(NOT_INSTALLED)?;
        let fixed = self.port.is_some() && (!self.monitor || self.monitor_port.is_some());
        let mut attempt = 1;
        loop {
            match self.try_start(&bin) {
                Ok(server) => return Ok(server),
                Err(_) if !fixed && attempt < PORT_ATTEMPTS => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    fn try_start(&self, bin: &Path) -> anyhow::Result<NatsServer> {
        let dir = tempfile::Builder::new()
            .prefix("durabus-nats-")
            .tempdir()
            .context("creating the server's temp dir")?;
        // The watchdog first: from here on, the dir goes away with the test
        // process whatever happens.
        let watchdog = Watchdog::spawn(dir.path())?;
        let store_dir = dir.path().join("store");
        std::fs::create_dir(&store_dir).context("creating the store dir")?;
        let mut ports = free_ports(2)?.into_iter();
        let port = match self.port {
            Some(p) => p,
            None => ports.next().context("free port")?,
        };
        let monitor_port = match (self.monitor, self.monitor_port) {
            (false, _) => None,
            (true, Some(p)) => Some(p),
            (true, None) => Some(ports.next().context("free port")?),
        };
        let tls = self
            .tls
            .map(|mode| TlsFiles::generate(&dir.path().join("certs"), mode))
            .transpose()?;
        let auth_dir = dir.path().join("auth");
        let nkey_user = match self.auth {
            Auth::NKeyUser => Some(NKeyUser::generate(&auth_dir)?),
            _ => None,
        };
        let operator = match self.auth {
            Auth::Operator => Some(OperatorAuth::generate(&auth_dir)?),
            _ => None,
        };
        let settings = Settings {
            name: self.name.clone().unwrap_or_else(|| unique_name("server")),
            port,
            monitor_port,
            jetstream: self.jetstream.then_some(self.storage),
            store_dir,
            auth: self.auth.clone(),
            nkey_user,
            operator,
            tls,
            cluster: self.cluster.clone(),
        };
        let config_file = dir.path().join("server.conf");
        std::fs::write(&config_file, settings.render())
            .with_context(|| format!("writing {}", config_file.display()))?;
        let log_file = dir.path().join("server.log");
        let server = NatsServer {
            bin: bin.to_path_buf(),
            config_file,
            log_file,
            settings,
            state: Mutex::new(State {
                server: None,
                pid: 0,
                paused: false,
                watchdog,
            }),
            dir,
        };
        server.spawn_and_wait(&mut server.lock())?;
        Ok(server)
    }
}

/// What the config file says; fixed for the server's life, so a restart
/// comes back the same.
#[derive(Debug)]
struct Settings {
    name: String,
    port: u16,
    monitor_port: Option<u16>,
    jetstream: Option<Storage>,
    store_dir: PathBuf,
    auth: Auth,
    /// With [`Auth::NKeyUser`].
    nkey_user: Option<NKeyUser>,
    /// With [`Auth::Operator`].
    operator: Option<OperatorAuth>,
    tls: Option<TlsFiles>,
    cluster: Option<ClusterSpec>,
}

/// A string in nats-server config syntax (JSON quoting is accepted).
fn quote(s: impl AsRef<str>) -> String {
    Value::String(s.as_ref().to_owned()).to_string()
}

fn quote_path(p: &Path) -> String {
    quote(p.to_string_lossy())
}

impl Settings {
    fn render(&self) -> String {
        let mut c = format!(
            "server_name: {}\nlisten: \"127.0.0.1:{}\"\n",
            quote(&self.name),
            self.port
        );
        if let Some(m) = self.monitor_port {
            c += &format!("http: \"127.0.0.1:{m}\"\n");
        }
        match self.jetstream {
            None => {}
            Some(Storage::File) => {
                c += &format!(
                    "jetstream {{\n  store_dir: {}\n}}\n",
                    quote_path(&self.store_dir)
                )
            }
            Some(Storage::Memory) => {
                // 2.9 has no "memory only" switch; a zero file-store limit
                // makes every file stream "insufficient storage resources".
                c += &format!(
                    "jetstream {{\n  store_dir: {}\n  max_file_store: 0\n}}\n",
                    quote_path(&self.store_dir)
                )
            }
        }
        match &self.auth {
            Auth::None => {}
            Auth::UserPassword { user, password } => {
                c += &format!(
                    "authorization {{\n  user: {}\n  password: {}\n}}\n",
                    quote(user),
                    quote(password)
                )
            }
            Auth::Token(token) => {
                c += &format!("authorization {{\n  token: {}\n}}\n", quote(token))
            }
            Auth::NKeyUser | Auth::Operator => {}
        }
        if let Some(user) = &self.nkey_user {
            c += &user.render();
        }
        if let Some(operator) = &self.operator {
            c += &operator.render();
        }
        if let Some(tls) = &self.tls {
            c += &format!(
                "tls {{\n  cert_file: {}\n  key_file: {}\n  ca_file: {}\n  verify: {}\n  timeout: 5\n}}\n",
                quote_path(&tls.server_cert),
                quote_path(&tls.server_key),
                quote_path(&tls.ca),
                tls.mode == TlsMode::Mutual,
            );
        }
        if let Some(cluster) = &self.cluster {
            let routes: Vec<String> = cluster
                .routes
                .iter()
                .map(|p| quote(format!("nats-route://127.0.0.1:{p}")))
                .collect();
            c += &format!(
                "cluster {{\n  name: {}\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n}}\n",
                quote(&cluster.name),
                cluster.port,
                routes.join(", ")
            );
        }
        c
    }
}

/// The current incarnation of the server process.
#[derive(Debug)]
struct State {
    /// `None` once killed (and reaped) or after it exited on its own.
    server: Option<Child>,
    /// The pid of the latest incarnation.
    pid: u32,
    /// SIGSTOPped by [`NatsServer::stop`].
    paused: bool,
    watchdog: Watchdog,
}

impl State {
    /// The server process if it has not exited; reaps it (and tells the
    /// watchdog) if it has.
    fn alive(&mut self) -> Option<&mut Child> {
        let exited = match self.server.as_mut().map(Child::try_wait) {
            None => return None,
            Some(Ok(None)) => false,
            Some(Ok(Some(_)) | Err(_)) => true,
        };
        if exited {
            self.server = None;
            self.paused = false;
            let _ = self.watchdog.forget();
            return None;
        }
        self.server.as_mut()
    }

    fn kill(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.server.take() {
            // SIGKILL also ends a SIGSTOPped process.
            if child.try_wait().ok().flatten().is_none() {
                child.kill().context("SIGKILL nats-server")?;
            }
            child.wait().context("reaping nats-server")?;
            self.paused = false;
            self.watchdog.forget()?;
        }
        Ok(())
    }

    fn signal(&mut self, signal: Signal) -> anyhow::Result<()> {
        let pid = self.pid;
        if self.alive().is_none() {
            bail!("nats-server (pid {pid}) is not running");
        }
        let raw = i32::try_from(pid).context("pid out of range")?;
        kill(Pid::from_raw(raw), signal).with_context(|| format!("{signal} to pid {pid}"))
    }
}

/// A running `nats-server`, killed (SIGKILL) and cleaned up when dropped.
///
/// Lifecycle methods take `&self`, so a shared server or a cluster node
/// ([`NatsCluster::node`]) can be killed and restarted too.
#[derive(Debug)]
pub struct NatsServer {
    bin: PathBuf,
    config_file: PathBuf,
    log_file: PathBuf,
    settings: Settings,
    state: Mutex<State>,
    /// Dropped last: the server is gone by then.
    dir: TempDir,
}

impl NatsServer {
    /// Options for a server: `NatsServer::builder()...start()`.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// Starts a server with JetStream on a free port and a fresh file store
    /// dir, and waits until it greets a client with JetStream enabled.
    pub fn start() -> anyhow::Result<Self> {
        Self::builder().start()
    }

    /// A server shared by the whole test process, started on first use and
    /// never stopped before the process exits (the watchdog then kills it
    /// and removes its temp dir). Panics if none can be started.
    pub fn shared() -> &'static NatsServer {
        static SHARED: OnceLock<NatsServer> = OnceLock::new();
        SHARED.get_or_init(|| match NatsServer::start() {
            Ok(s) => s,
            Err(e) => panic!("cannot start the shared nats-server: {e:#}"),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent enough
        // for a test kit: every field is updated in one step.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn_and_wait(&self, state: &mut State) -> anyhow::Result<()> {
        let child = spawn_server(&self.bin, &self.config_file, &self.log_file)?;
        state.pid = child.id();
        state.server = Some(child);
        state.paused = false;
        state.watchdog.watch(state.pid)?;
        self.wait_ready(state)
    }

    /// Waits until the server greets with INFO from this very server (its
    /// `server_name`, not another one that took the port), with JetStream
    /// when it is configured.
    fn wait_ready(&self, state: &mut State) -> anyhow::Result<()> {
        let port = self.settings.port;
        let deadline = Instant::now() + START;
        let mut last = String::from("no answer");
        loop {
            if state.alive().is_none() {
                bail!(
                    "nats-server exited at start (port {port} taken?); its log ends:\n{}",
                    log_tail(&self.log_file, 15)
                );
            }
            match greet(port) {
                Greeting::Silent => {}
                Greeting::NotNats(line) => {
                    bail!("port {port} is not our nats-server; it said {line:?}")
                }
                Greeting::Info(info) => {
                    let name = info["server_name"].as_str().unwrap_or_default();
                    if name != self.settings.name {
                        bail!(
                            "port {port} is taken by another nats-server ({name:?}, not {:?})",
                            self.settings.name
                        );
                    }
                    let js = info["jetstream"].as_bool().unwrap_or(false);
                    if js || self.settings.jetstream.is_none() {
                        return Ok(());
                    }
                    last = "INFO without \"jetstream\":true".into();
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "nats-server not ready on port {port} after {START:?} ({last}); its log ends:\n{}",
                    log_tail(&self.log_file, 15)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILLs the server (a crash: nothing is flushed) and reaps it. Does
    /// nothing if it is not running. [`NatsServer::restart`] brings it back.
    pub fn kill(&self) -> anyhow::Result<()> {
        self.lock().kill()
    }

    /// SIGSTOPs the server and waits until all its threads have stopped: it
    /// keeps its connections but answers nothing, so clients time out, as
    /// with a hung server. [`NatsServer::resume`]
    /// undoes it; a stopped server can also be killed or dropped.
    pub fn stop(&self) -> anyhow::Result<()> {
        let mut state = self.lock();
        state.signal(Signal::SIGSTOP)?;
        state.paused = true;
        process::wait_stopped(state.pid, true)
    }

    /// SIGCONTs a server paused by [`NatsServer::stop`].
    pub fn resume(&self) -> anyhow::Result<()> {
        let mut state = self.lock();
        state.signal(Signal::SIGCONT)?;
        state.paused = false;
        process::wait_stopped(state.pid, false)
    }

    /// Starts the server again on the same port with the same config and
    /// store dir, and waits until it is ready. A server still running is
    /// SIGKILLed first, so this is "crash and come back". File streams
    /// survive it; memory streams do not.
    pub fn restart(&self) -> anyhow::Result<()> {
        let mut state = self.lock();
        state.kill()?;
        self.spawn_and_wait(&mut state)
    }

    /// Whether the server process is alive (also while paused by
    /// [`NatsServer::stop`]).
    pub fn is_running(&self) -> bool {
        self.lock().alive().is_some()
    }

    /// Whether the server is paused by [`NatsServer::stop`].
    pub fn is_paused(&self) -> bool {
        let mut state = self.lock();
        state.alive().is_some() && state.paused
    }

    /// The client URL: `nats://127.0.0.1:<port>`, or `tls://127.0.0.1:<port>`
    /// with TLS.
    ///
    /// async-nats 0.46 takes either for a TLS server: with `nats://` it
    /// upgrades because the server's INFO says `tls_required`; `tls://`
    /// makes the client insist on TLS itself. The host is the IP 127.0.0.1,
    /// which the generated server certificate names.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.settings.port)
    }

    fn scheme(&self) -> &'static str {
        if self.settings.tls.is_some() {
            "tls"
        } else {
            "nats"
        }
    }

    /// The client port it listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.settings.port
    }

    /// The HTTP monitoring port, when enabled (see
    /// [`NatsServerBuilder::monitoring`]; cluster nodes always have one).
    pub fn monitor_port(&self) -> Option<u16> {
        self.settings.monitor_port
    }

    /// The pid of the latest server process (to signal it directly in chaos
    /// tests; prefer [`NatsServer::kill`] and [`NatsServer::stop`]).
    pub fn pid(&self) -> u32 {
        self.lock().pid
    }

    /// The `server_name`, unique among the servers of all test processes.
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// The JetStream store dir (kept across restarts).
    pub fn store_dir(&self) -> &Path {
        &self.settings.store_dir
    }

    /// The server's temp dir: config, certificates, store dir, log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The config file the server runs with (`nats-server -c`).
    pub fn config_file(&self) -> &Path {
        &self.config_file
    }

    /// The server's log (stdout and stderr of every incarnation).
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The certificate and key files, when started with TLS.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.settings.tls.as_ref()
    }

    /// How clients authenticate.
    pub fn auth(&self) -> &Auth {
        &self.settings.auth
    }

    /// The generated NKey user, when started with
    /// [`NatsServerBuilder::nkey_user`].
    pub fn nkey_user(&self) -> Option<&NKeyUser> {
        self.settings.nkey_user.as_ref()
    }

    /// The file holding the NKey user's seed (for `?nkey_seed_file=`),
    /// when started with [`NatsServerBuilder::nkey_user`].
    pub fn nkey_seed_file(&self) -> Option<&Path> {
        self.nkey_user().map(|u| u.seed_file.as_path())
    }

    /// The generated operator, accounts and users, when started with
    /// [`NatsServerBuilder::operator_mode`].
    pub fn operator_auth(&self) -> Option<&OperatorAuth> {
        self.settings.operator.as_ref()
    }

    /// The `.creds` file of a user of the account with JetStream, when
    /// started with [`NatsServerBuilder::operator_mode`].
    pub fn creds_file(&self) -> Option<&Path> {
        self.operator_auth().map(|o| o.creds_file.as_path())
    }

    /// Where JetStream keeps streams; `None` without JetStream.
    pub fn jetstream(&self) -> Option<Storage> {
        self.settings.jetstream
    }

    /// GETs a monitoring endpoint such as `/jsz` as JSON.
    fn monitor(&self, path: &str) -> anyhow::Result<Value> {
        let port = self
            .settings
            .monitor_port
            .context("the server has no monitoring port")?;
        process::monitor_json(port, path)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let state = self.state.get_mut().unwrap_or_else(|e| e.into_inner());
        let _ = state.kill();
        // Closing the lifeline makes the watchdog remove the temp dir; the
        // TempDir's own removal then finds nothing left.
        state.watchdog.finish();
    }
}
