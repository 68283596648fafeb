//! A real `nats-server` with JetStream for tests, on a free port.
//!
//! The NATS backend's conformance run uses one shared server for all cases
//! ([`NatsServer::shared`]); the cases keep apart by unique stream names and
//! subjects. A test that needs its own server (to kill it, say) starts one
//! with [`NatsServer::start`].

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tempfile::TempDir;

/// How long a server may take to accept connections.
const START: Duration = Duration::from_secs(15);

/// A running `nats-server -js`, killed (SIGKILL) and cleaned up when dropped.
#[derive(Debug)]
pub struct NatsServer {
    /// The watchdog shell; its stdin is the server's lifeline.
    child: Child,
    pid: u32,
    port: u16,
    _store: TempDir,
}

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

fn free_port() -> anyhow::Result<u16> {
    // Bind port 0, read the port, release it. Another process could take it
    // in between; start() then fails to connect and says so.
    let listener = TcpListener::bind("127.0.0.1:0").context("binding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl NatsServer {
    /// Starts a server with JetStream on a free port and a fresh store dir,
    /// and waits until it greets a client with JetStream enabled.
    pub fn start() -> anyhow::Result<Self> {
        let bin = nats_server_binary().context(
            "nats-server not found (set NATS_SERVER, or run ./scripts/test to install it)",
        )?;
        let store = tempfile::Builder::new()
            .prefix("durabus-nats-")
            .tempdir()
            .context("creating the JetStream store dir")?;
        let port = free_port()?;
        // A watchdog shell: it starts the server, prints its pid, and kills
        // it when its stdin (a pipe from this process) closes: on drop, and
        // also when this process exits or is killed, so no server outlives
        // its tests (a static's Drop never runs).
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#""$0" "$@" </dev/null >/dev/null 2>&1 & pid=$!; echo "$pid"; read -r _ignored; kill -9 "$pid" 2>/dev/null; wait "$pid"; rm -rf "$DURABUS_NATS_STORE""#)
            // The watchdog removes the store too: a shared server's TempDir
            // is in a static and never dropped.
            .env("DURABUS_NATS_STORE", store.path())
            .arg(&bin)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(store.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("spawning {} under sh", bin.display()))?;
        let mut pid_line = String::new();
        let stdout = child.stdout.take().context("watchdog stdout")?;
        BufReader::new(stdout)
            .read_line(&mut pid_line)
            .context("reading the server pid")?;
        let pid = pid_line
            .trim()
            .parse()
            .with_context(|| format!("watchdog printed {pid_line:?}, not a pid"))?;
        let mut server = NatsServer {
            child,
            pid,
            port,
            _store: store,
        };
        server.wait_ready()?;
        Ok(server)
    }

    fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + START;
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "nats-server exited at start ({status}); port {} taken?",
                    self.port
                );
            }
            if let Ok(stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                stream.set_read_timeout(Some(Duration::from_secs(2)))?;
                let mut info = String::new();
                BufReader::new(stream).read_line(&mut info)?;
                if !info.starts_with("INFO ") {
                    bail!("port {} is not a NATS server: {info:?}", self.port);
                }
                if !info.contains("\"jetstream\":true") {
                    bail!("nats-server on port {} has no JetStream: {info}", self.port);
                }
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "nats-server not accepting connections on port {} after {START:?}",
                    self.port
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// A server shared by the whole test process, started on first use and
    /// never stopped before the process exits (the OS reaps it; its store is
    /// a temp dir). Panics if none can be started.
    pub fn shared() -> &'static NatsServer {
        static SHARED: OnceLock<NatsServer> = OnceLock::new();
        SHARED.get_or_init(|| match NatsServer::start() {
            Ok(s) => s,
            Err(e) => panic!("cannot start the shared nats-server: {e:#}"),
        })
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The server's pid (to SIGKILL or SIGSTOP it in chaos tests).
    pub fn pid(&self) -> u32 {
        self.pid
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // Closing the lifeline makes the watchdog SIGKILL the server and
        // reap it; the store is a temp dir, nothing to flush.
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}
