//! What the verbs share: global options, opening and closing the store, and
//! the shutdown signal of long-running commands.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use durabus::ConnectionStatus;

/// What every command needs besides its own arguments.
#[derive(Debug, Clone)]
pub(crate) struct Global {
    /// The URL as given (`--url`, `-s`, `DURABUS_URL` or `NATS_URL`) with
    /// the connection flags applied, if any was given (`bench` treats "none
    /// given" specially).
    pub(crate) url: Option<String>,
    /// Machine-readable output.
    pub(crate) json: bool,
}

/// The connection flags natscli users type: each becomes the `nats://`
/// URL option (or credentials) the library already understands, so there
/// is one way to connect.
#[derive(Debug, Clone, Default, clap::Args)]
pub(crate) struct ConnFlags {
    /// NATS credentials file (JWT and seed): the URL option creds=FILE.
    #[arg(long, global = true, value_name = "FILE", conflicts_with_all = ["user", "password"],
          display_order = 1010)]
    pub(crate) creds: Option<PathBuf>,
    /// NATS user name, or the token when given without --password: as
    /// nats://USER:PASSWORD@host in the URL.
    #[arg(long, global = true, value_name = "USER", display_order = 1011)]
    pub(crate) user: Option<String>,
    /// NATS password (needs --user).
    #[arg(long, global = true, value_name = "PASSWORD", display_order = 1012)]
    pub(crate) password: Option<String>,
    /// CA certificate file to verify the server with: the URL option tls_ca=FILE.
    #[arg(long, global = true, value_name = "FILE", display_order = 1013)]
    pub(crate) tlsca: Option<PathBuf>,
    /// Client certificate file (with --tlskey): the URL option tls_cert=FILE.
    #[arg(long, global = true, value_name = "FILE", display_order = 1014)]
    pub(crate) tlscert: Option<PathBuf>,
    /// Client key file (with --tlscert): the URL option tls_key=FILE.
    #[arg(long, global = true, value_name = "FILE", display_order = 1015)]
    pub(crate) tlskey: Option<PathBuf>,
    /// How long to wait for a NATS server to answer the connection
    /// (e.g. 10s): the URL option connect_timeout [default: 5s].
    #[arg(long, global = true, value_name = "DURATION", value_parser = crate::parse::duration,
          display_order = 1016)]
    pub(crate) connect_timeout: Option<Duration>,
}

impl ConnFlags {
    /// The flags given, as they are spelled on the command line.
    fn given(&self) -> Vec<&'static str> {
        [
            ("--creds", self.creds.is_some()),
            ("--user", self.user.is_some()),
            ("--password", self.password.is_some()),
            ("--tlsca", self.tlsca.is_some()),
            ("--tlscert", self.tlscert.is_some()),
            ("--tlskey", self.tlskey.is_some()),
            ("--connect-timeout", self.connect_timeout.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

/// `-s`/`--server` and `NATS_URL` as natscli takes them: a server without
/// a scheme (`localhost:4222`, `a:4222,b:4222`) is `nats://`.
pub(crate) fn server_url(server: &str) -> String {
    let server = server.trim();
    let has_scheme = server.contains("://")
        || ["file:", "memory:", "mem:"]
            .iter()
            .any(|scheme| server.starts_with(scheme));
    if has_scheme {
        server.to_owned()
    } else {
        format!("nats://{server}")
    }
}

/// Everything but RFC 3986's unreserved characters, percent-encoded: a
/// value that is safe in a URL's userinfo and query.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `url` with the connection flags applied: `--user`/`--password` replace
/// the credentials of every server in the list, the others are added as
/// query options (after the URL's own, so the flags win). Refused, saying
/// why, on a backend that is not a NATS server.
pub(crate) fn apply_flags(url: &str, flags: &ConnFlags) -> anyhow::Result<String> {
    let given = flags.given();
    if given.is_empty() {
        return Ok(url.to_owned());
    }
    if flags.password.is_some() && flags.user.is_none() {
        anyhow::bail!("--password needs --user (a token alone goes in --user)");
    }
    if let Some(kind @ (Kind::File | Kind::Memory)) = Kind::of(url) {
        let what = if kind == Kind::File {
            "an embedded file: store"
        } else {
            "an embedded memory: store"
        };
        anyhow::bail!(
            "{} {} only to a NATS server (nats:// or tls://), but the URL names {what} ({}), \
             which has no login or TLS; leave {} out or pass -s nats://host:4222",
            given.join(", "),
            if given.len() == 1 { "applies" } else { "apply" },
            durabus::redact(url),
            if given.len() == 1 { "it" } else { "them" },
        );
    }
    let (list, query) = url.split_once('?').unwrap_or((url, ""));
    let mut servers = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (scheme, rest) = part.split_once("://").unwrap_or(("nats", part));
        let host = match (&flags.user, rest.rfind('@')) {
            (Some(_), Some(at)) => &rest[at + 1..],
            _ => rest,
        };
        let userinfo = match (&flags.user, &flags.password) {
            (Some(user), Some(password)) => {
                format!("{}:{}@", percent_encode(user), percent_encode(password))
            }
            (Some(token), None) => format!("{}@", percent_encode(token)),
            _ => String::new(),
        };
        servers.push(format!("{scheme}://{userinfo}{host}"));
    }
    let mut options: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let path = |key: &str, value: &Option<PathBuf>, options: &mut Vec<String>| {
        if let Some(path) = value {
            options.push(format!("{key}={}", percent_encode(&path.to_string_lossy())));
        }
    };
    path("creds", &flags.creds, &mut options);
    path("tls_ca", &flags.tlsca, &mut options);
    path("tls_cert", &flags.tlscert, &mut options);
    path("tls_key", &flags.tlskey, &mut options);
    if let Some(timeout) = flags.connect_timeout {
        options.push(format!("connect_timeout={}ms", timeout.as_millis()));
    }
    let mut url = servers.join(",");
    if !options.is_empty() {
        url.push('?');
        url.push_str(&options.join("&"));
    }
    // Checked now, so a bad combination is reported before connecting.
    durabus::parse_url(&url)?;
    Ok(url)
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
    /// `file:`: the embedded engine on disk, opened by one process (the
    /// others join it when it shares it).
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

/// Says on stderr that `what` (created by this command) is gone when it
/// exits, when the URL is `memory:`: each command is a process of its own.
pub(crate) fn note_ephemeral(global: &Global, what: &str) {
    if Kind::of(global.url()) == Some(Kind::Memory) {
        eprintln!(
            "note: memory: lasts one command: {what} is gone when this command exits; \
             use --url file:DIR or a NATS server to keep it"
        );
    }
}

/// Refuses more than one replica on an embedded store, which keeps one
/// copy: accepting it would promise a redundancy that is not there.
pub(crate) fn check_replicas(global: &Global, replicas: usize) -> anyhow::Result<()> {
    if replicas > 1 && matches!(Kind::of(global.url()), Some(Kind::File | Kind::Memory)) {
        anyhow::bail!(
            "--replicas {replicas}: an embedded store ({}) keeps one copy of each message; \
             replicas are for a NATS cluster (-s nats://host:4222); leave --replicas out here",
            global.shown_url()
        );
    }
    Ok(())
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

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_server_without_a_scheme_is_nats() {
        assert_eq!(server_url("localhost:4222"), "nats://localhost:4222");
        assert_eq!(server_url("tls://h:4222"), "tls://h:4222");
        assert_eq!(server_url("file:./data"), "file:./data");
        assert_eq!(server_url("memory:"), "memory:");
    }

    #[test]
    fn connection_flags_become_url_credentials_and_options() {
        let flags = ConnFlags {
            user: Some("bob".into()),
            password: Some("p@ss:w/rd".into()),
            tlsca: Some(PathBuf::from("/etc/ca dir/ca.pem")),
            connect_timeout: Some(Duration::from_secs(3)),
            ..ConnFlags::default()
        };
        let url = apply_flags("nats://old:pw@a:4222,b:4222?name=x", &flags).unwrap();
        assert_eq!(
            url,
            "nats://bob:p%40ss%3Aw%2Frd@a:4222,nats://bob:p%40ss%3Aw%2Frd@b:4222\
             ?name=x&tls_ca=%2Fetc%2Fca%20dir%2Fca.pem&connect_timeout=3000ms"
        );
        assert_eq!(durabus::redact(&url).matches("***@").count(), 2);
        let token = ConnFlags {
            user: Some("t0ken".into()),
            ..ConnFlags::default()
        };
        assert_eq!(
            apply_flags("nats://h:4222", &token).unwrap(),
            "nats://t0ken@h:4222"
        );
        assert_eq!(
            apply_flags("file:./x", &ConnFlags::default()).unwrap(),
            "file:./x"
        );
    }

    #[test]
    fn connection_flags_on_an_embedded_store_are_refused_saying_why() {
        let flags = ConnFlags {
            creds: Some(PathBuf::from("x.creds")),
            ..ConnFlags::default()
        };
        let e = apply_flags("file:./data", &flags).unwrap_err().to_string();
        assert!(e.contains("--creds applies only to a NATS server"), "{e}");
        let e = apply_flags(
            "nats://h",
            &ConnFlags {
                password: Some("x".into()),
                ..ConnFlags::default()
            },
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("--password needs --user"), "{e}");
    }
}
