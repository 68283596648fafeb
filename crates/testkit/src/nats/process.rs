//! The server process, its watchdog, and the probes that tell when it is up.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::Value;

/// `n` distinct free ports on 127.0.0.1.
///
/// All are bound at once (so they differ), read, and released. Another
/// process could take one in between; starting then fails and the caller
/// retries with fresh ports.
pub(crate) fn free_ports(n: usize) -> anyhow::Result<Vec<u16>> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding a free port"))
        .collect::<anyhow::Result<Vec<_>>>()?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr().context("reading a bound port")?.port()))
        .collect()
}

/// A name no other server of this or another test process uses.
pub(crate) fn unique_name(kind: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    format!("durabus-{kind}-{}-{seq}", std::process::id())
}

/// The watchdog: a `sh` whose stdin is a pipe from this process. It is told
/// the pid of each server incarnation (`pid N`) and when that one has been
/// reaped (`gone`). When the pipe closes (on drop, and also when this
/// process exits or is killed, when no destructor runs), it SIGKILLs the
/// current server and removes the server's directory, so neither outlives
/// the tests.
const WATCHDOG: &str = r#"
trap '' INT HUP TERM
pid=
while read -r cmd arg; do
  case "$cmd" in
    pid) pid=$arg ;;
    gone) pid= ;;
  esac
done
if [ -n "$pid" ]; then
  kill -9 "$pid" 2>/dev/null
  n=0
  while kill -0 "$pid" 2>/dev/null && [ "$n" -lt 100 ]; do sleep 0.05; n=$((n+1)); done
fi
rm -rf "$DURABUS_NATS_DIR"
"#;

#[derive(Debug)]
pub(crate) struct Watchdog {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Watchdog {
    /// Starts a watchdog that removes `dir` when its lifeline closes.
    pub(crate) fn spawn(dir: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(WATCHDOG)
            .env("DURABUS_NATS_DIR", dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning the watchdog shell")?;
        let stdin = child.stdin.take();
        Ok(Self { child, stdin })
    }

    fn send(&mut self, line: &str) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("the watchdog has finished")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .context("writing to the watchdog")
    }

    /// Tells it the pid of the server just spawned.
    pub(crate) fn watch(&mut self, pid: u32) -> anyhow::Result<()> {
        self.send(&format!("pid {pid}"))
    }

    /// Tells it the server was reaped (its pid may be reused now).
    pub(crate) fn forget(&mut self) -> anyhow::Result<()> {
        self.send("gone")
    }

    /// Closes the lifeline and waits until the directory is removed.
    pub(crate) fn finish(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// Spawns `nats-server -c config`, appending its output to `log`.
pub(crate) fn spawn_server(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<Child> {
    let out = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("opening {}", log.display()))?;
    let err = out.try_clone().context("duplicating the log file handle")?;
    Command::new(bin)
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .with_context(|| format!("spawning {}", bin.display()))
}

/// What a probe found on a port.
#[derive(Debug)]
pub(crate) enum Greeting {
    /// Nothing accepts connections (yet), or it said nothing in time.
    Silent,
    /// A NATS server greeted with this INFO.
    Info(Value),
    /// Something else answered.
    NotNats(String),
}

/// Connects to 127.0.0.1:`port` and reads the INFO greeting, which
/// nats-server 2.9 sends in plaintext first even when it requires TLS.
pub(crate) fn greet(port: u16) -> Greeting {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return Greeting::Silent;
    };
    if stream
        .set_read_timeout(Some(Duration::from_secs(2)))
        .is_err()
    {
        return Greeting::Silent;
    }
    let mut line = String::new();
    if BufReader::new(stream).read_line(&mut line).is_err() || line.is_empty() {
        return Greeting::Silent;
    }
    match line
        .strip_prefix("INFO ")
        .and_then(|json| serde_json::from_str(json.trim()).ok())
    {
        Some(info) => Greeting::Info(info),
        None => Greeting::NotNats(line),
    }
}

/// GETs `path` from the HTTP monitoring endpoint on 127.0.0.1:`port` and
/// parses the JSON body.
pub(crate) fn monitor_json(port: u16, path: &str) -> anyhow::Result<Value> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
        .with_context(|| format!("connecting to the monitoring port {port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    )
    .context("sending the monitoring request")?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .with_context(|| format!("reading GET {path} from port {port}"))?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET {path}: no HTTP body in {response:?}"))?;
    if !head.starts_with("HTTP/1.") || !head.contains(" 200 ") {
        bail!(
            "GET {path} on port {port}: {}",
            head.lines().next().unwrap_or("")
        );
    }
    serde_json::from_str(body).with_context(|| format!("GET {path}: body is not JSON"))
}

/// The last `n` lines of the server log, for error messages.
pub(crate) fn log_tail(log: &PathBuf, n: usize) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Waits (up to 2 s) until every thread of `pid` is stopped (`stopped`) or
/// none is. A signal is delivered asynchronously: right after `kill`
/// returns, a server thread may still answer a request. Linux `/proc`;
/// where it is missing this returns at once.
pub(crate) fn wait_stopped(pid: u32, stopped: bool) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let tasks = PathBuf::from(format!("/proc/{pid}/task"));
    loop {
        let Ok(entries) = std::fs::read_dir(&tasks) else {
            return Ok(());
        };
        let states: Vec<bool> = entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
            // "tid (comm) S ...": the state follows the last ')'.
            .filter_map(|stat| {
                let (_, rest) = stat.rsplit_once(')')?;
                Some(rest.trim_start().starts_with(['T', 't']))
            })
            .collect();
        if states.iter().all(|&s| s == stopped) {
            return Ok(());
        }
        if std::time::Instant::now() >= deadline {
            bail!(
                "nats-server (pid {pid}) did not {} in 2 s",
                if stopped { "stop" } else { "continue" }
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}
