//! Test helpers for durabus, useful in applications' tests too.
//!
//! - [`temp_url`], [`temp_bus`]: a file-backed store in a fresh temp dir.
//! - [`crash`]: the kill -9 harness. A child process (the `crash_publisher`
//!   binary of this crate) publishes and prints every ack; the harness
//!   SIGKILLs it at a random moment, reopens the data directory and checks
//!   that everything acknowledged is there exactly once, in order.
//! - [`nats`]: real `nats-server` processes: [`nats::NatsServer`] (file or
//!   memory JetStream, none, auth, TLS with generated certificates; kill,
//!   pause, restart) and [`nats::NatsCluster`] (a JetStream cluster).
//! - [`hub`]: a hub (`durabus serve`'s server) in this process over a fresh
//!   store, reached with its `nats://` URL.
//!
//! ```no_run
//! # #[tokio::main] async fn main() -> durabus::Result<()> {
//! let (bus, _dir) = durabus_testkit::temp_bus("always").await?;
//! bus.create_stream(durabus::StreamConfig::new("T").subjects(["t.>"])).await?;
//! # Ok(()) }
//! ```

use std::path::Path;

use durabus::Bus;
use tempfile::TempDir;

pub mod crash;
pub mod hub;
pub mod nats;

/// A fresh temporary directory, removed when dropped.
///
/// # Panics
/// If the OS cannot create one (a test cannot proceed without it).
pub fn temp_dir() -> TempDir {
    match tempfile::Builder::new().prefix("durabus-test-").tempdir() {
        Ok(d) => d,
        Err(e) => panic!("cannot create a temp dir: {e}"),
    }
}

/// The `file:` URL of data directory `dir` with `durability`
/// (`always`, `none` or `periodic:<duration>`).
pub fn file_url(dir: &Path, durability: &str) -> String {
    format!("file:{}?durability={durability}", dir.display())
}

/// A temp dir and the `file:` URL of a store inside it. Keep the [`TempDir`]
/// alive as long as the store is used.
pub fn temp_url(durability: &str) -> (TempDir, String) {
    let dir = temp_dir();
    let url = file_url(dir.path(), durability);
    (dir, url)
}

/// A connected file-backed bus in a fresh temp dir. Close the bus before
/// dropping the [`TempDir`].
pub async fn temp_bus(durability: &str) -> durabus::Result<(Bus, TempDir)> {
    let (dir, url) = temp_url(durability);
    let bus = durabus::connect(&url).await?;
    Ok((bus, dir))
}

/// Reads a count from environment variable `name`, or `default` when unset.
///
/// # Panics
/// If the variable is set but not a number, naming it.
pub fn env_count(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse() {
            Ok(n) => n,
            Err(_) => panic!("{name}={v:?} is not a number"),
        },
        Err(_) => default,
    }
}

/// What one `bench` run of a benchmark binary printed and wrote.
#[derive(Debug)]
pub struct BenchRun {
    /// Its standard output.
    pub stdout: String,
    /// Its standard error.
    pub stderr: String,
    /// The `--json-out` report.
    pub report: serde_json::Value,
}

/// Runs `binary bench ARGS --json-out <temp file>` (the `durabus` CLI or
/// `durabus-bench`), asserts success and reads the report.
///
/// # Panics
/// When the run fails or its report is not JSON: it is for tests.
pub fn bench_run(mut binary: std::process::Command, args: &[&str]) -> BenchRun {
    let out_dir = temp_dir();
    let json_out = out_dir.path().join("bench.json");
    let program = binary.get_program().to_string_lossy().into_owned();
    let output = binary
        .arg("bench")
        .args(args)
        .arg("--json-out")
        .arg(&json_out)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "{program} bench {args:?}: {stderr}"
    );
    let report = std::fs::read_to_string(&json_out)
        .unwrap_or_else(|e| panic!("{program} wrote no --json-out report: {e}"));
    BenchRun {
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr,
        report: serde_json::from_str(report.trim())
            .unwrap_or_else(|e| panic!("{program}'s report is not JSON ({e}): {report}")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn file_url_carries_durability() {
        let url = file_url(Path::new("/tmp/x"), "always");
        assert_eq!(url, "file:/tmp/x?durability=always");
    }
}
