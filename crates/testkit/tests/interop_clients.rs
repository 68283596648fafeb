//! Clients nobody here wrote, against a NATS + JetStream server: nats-py
//! (`tests/interop/python/interop.py`) and nats.js for Node
//! (`tests/interop/js/interop.mjs`), each run as a child process with the
//! server's URL. Each program publishes with msg ids, pull-consumes with
//! explicit acks and naks, uses KV (CAS, history, keys, watch), request and
//! reply, queue groups and headers, and stream admin; it prints `ok <check>`
//! per check and exits 0 only when all passed.
//!
//! A real nats-server 2.9.10 is the oracle: every check passes against it.
//! [`run_client`] takes any URL, so another server speaking the protocol
//! (`durabus serve`) becomes one more test of a line or two.
//!
//! `tests/interop/install.sh` installs the pinned clients (a venv with
//! nats-py, npm's `nats` 2.x) under `target/interop`, once per test process
//! and idempotently across processes; the second run finds them installed.
//! Where python3 or node cannot be installed, the tests fail saying how to
//! install them: they never pass by skipping.

use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use durabus_testkit::nats::NatsServer;

/// How long one program may run (it takes a few seconds; each group of
/// checks inside has its own 60 s limit).
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// A foreign client library with its interop program.
#[derive(Debug, Clone, Copy)]
enum Client {
    /// nats-py (asyncio), from the venv of install.sh.
    NatsPy,
    /// nats.js v2 on Node, from install.sh's `node_modules`.
    NatsJs,
}

fn repo_root() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Where install.sh puts the clients: `$DURABUS_INTEROP_DIR`, else
/// `<repo>/target/interop` (ignored by git).
fn install_dir() -> PathBuf {
    std::env::var_os("DURABUS_INTEROP_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target/interop"))
}

/// Runs `tests/interop/install.sh` once for the whole test process (the
/// tests of this binary run in parallel and wait for the first); the script
/// takes a file lock itself against other processes. Panics, saying how to
/// install python3 and node, when it fails.
fn install() -> &'static Path {
    static INSTALLED: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let outcome = INSTALLED.get_or_init(|| {
        let script = repo_root().join("tests/interop/install.sh");
        let dir = install_dir();
        let out = Command::new("bash")
            .arg(&script)
            .env("DURABUS_INTEROP_DIR", &dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(dir)
        } else {
            Err(format!(
                "{} failed ({}):\n{}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ))
        }
    });
    match outcome {
        Ok(dir) => dir,
        Err(e) => panic!(
            "the foreign NATS clients (nats-py, nats.js) are not installed: {e}\n\
             These tests need python3 with venv and node with npm, and PyPI and the \
             npm registry reachable. Install them (Debian, as root: \
             `apt-get install -y python3 python3-venv nodejs npm`), then run \
             tests/interop/install.sh (it runs as root does this itself)."
        ),
    }
}

/// Runs `client`'s interop program against the server at `url` and asserts
/// that every check passed (exit 0, no `FAIL` line, some `ok` lines);
/// prints the program's output when not.
fn run_client(client: Client, url: &str) {
    let dir = install();
    let root = repo_root();
    let mut cmd = match client {
        Client::NatsPy => {
            let mut c = Command::new(dir.join("venv/bin/python"));
            c.arg(root.join("tests/interop/python/interop.py"));
            c
        }
        Client::NatsJs => {
            let mut c = Command::new("node");
            c.arg(root.join("tests/interop/js/interop.mjs"));
            c
        }
    };
    cmd.arg(url)
        .env("DURABUS_INTEROP_DIR", dir)
        .stdin(Stdio::null());
    let (status, output) = run_with_limit(&mut cmd, RUN_LIMIT)
        .unwrap_or_else(|e| panic!("{client:?}: cannot run {cmd:?}: {e}"));
    let failed: Vec<&str> = output.lines().filter(|l| l.starts_with("FAIL ")).collect();
    let passed = output.lines().filter(|l| l.starts_with("ok ")).count();
    assert!(
        status == Some(0) && failed.is_empty() && passed > 0,
        "{client:?} against {url}: exit {status:?}, {passed} checks passed, failed: {failed:#?}\n\
         --- output of {cmd:?} ---\n{output}--- end of output ---"
    );
}

/// Runs `cmd` with stdout and stderr into one temp file (interleaved as
/// written), killing it after `limit`. Returns its exit code (`None` when
/// killed or ended by a signal) and its output.
fn run_with_limit(cmd: &mut Command, limit: Duration) -> std::io::Result<(Option<i32>, String)> {
    let mut log = tempfile::tempfile()?;
    cmd.stdout(log.try_clone()?).stderr(log.try_clone()?);
    let mut child = cmd.spawn()?;
    let started = Instant::now();
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status.code();
        }
        if started.elapsed() > limit {
            child.kill()?;
            child.wait()?;
            killed = true;
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut output = String::new();
    log.rewind()?;
    log.read_to_string(&mut output)?;
    if killed {
        output.push_str(&format!("(killed after {limit:?})\n"));
    }
    Ok((status, output))
}

/// A real nats-server with JetStream (file store) on a free port.
fn nats_server() -> NatsServer {
    NatsServer::start().unwrap_or_else(|e| panic!("starting nats-server: {e:#}"))
}

#[test]
fn nats_py_works_against_nats_server() {
    let server = nats_server();
    run_client(Client::NatsPy, &server.url());
}

#[test]
fn nats_js_works_against_nats_server() {
    let server = nats_server();
    run_client(Client::NatsJs, &server.url());
}

/// A hub (`durabus serve`'s server) over a fresh `file:` store, on a
/// runtime of its own so it serves while the client runs.
fn hub() -> (tokio::runtime::Runtime, durabus_testkit::hub::Hub) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("starting a runtime: {e}"));
    let hub = rt.block_on(durabus_testkit::hub::Hub::file());
    (rt, hub)
}

#[test]
fn nats_py_works_against_the_hub() {
    let (rt, hub) = hub();
    run_client(Client::NatsPy, &hub.url());
    rt.block_on(hub.stop());
}

#[test]
fn nats_js_works_against_the_hub() {
    let (rt, hub) = hub();
    run_client(Client::NatsJs, &hub.url());
    rt.block_on(hub.stop());
}
