//! What the harness's end-to-end tests share: running the real
//! `durabus-bench` binary and reading its output.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use serde_json::Value;

/// The binary, without a `DURABUS_URL` or `RUST_LOG` from the environment.
pub(crate) fn durabus_bench() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_durabus-bench"));
    command.env_remove("DURABUS_URL").env_remove("RUST_LOG");
    command
}

/// `text` as one JSON value.
pub(crate) fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// What one `durabus-bench bench` run printed and wrote.
pub(crate) struct BenchRun {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    /// The `--json-out` report.
    pub(crate) report: Value,
}

/// Runs `durabus-bench bench ARGS --json-out <temp file>`, asserts success
/// and reads the report.
pub(crate) fn bench(args: &[&str]) -> BenchRun {
    let out_dir = tempfile::tempdir().unwrap();
    let json_out = out_dir.path().join("bench.json");
    let output = durabus_bench()
        .arg("bench")
        .args(args)
        .arg("--json-out")
        .arg(&json_out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "durabus-bench bench {args:?}: {stderr}"
    );
    BenchRun {
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr,
        report: json(&std::fs::read_to_string(&json_out).unwrap()),
    }
}

/// The names of the streams on the server at `url`.
pub(crate) fn stream_names(url: &str) -> Vec<String> {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let bus = durabus::connect(url).await.unwrap();
        let names = bus
            .list_streams()
            .await
            .unwrap()
            .into_iter()
            .map(|s| s.config.name)
            .collect();
        bus.close().await.unwrap();
        names
    })
}
