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

pub(crate) use durabus_testkit::BenchRun;

/// Runs `durabus-bench bench ARGS --json-out <temp file>`, asserts success and
/// reads the report.
pub(crate) fn bench(args: &[&str]) -> BenchRun {
    durabus_testkit::bench_run(durabus_bench(), args)
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
