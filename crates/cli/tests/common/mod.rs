//! What the CLI's end-to-end tests share: running the real binary against a
//! backend URL and reading its output.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

use serde_json::Value;

/// A backend the binary runs against; the methods run `durabus --url <url>`.
pub(crate) trait Cli {
    /// The `--url` of every command.
    fn url(&self) -> String;

    /// `durabus --url <url> ARGS...`, not started.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = durabus();
        command.arg("--url").arg(self.url()).args(args);
        command
    }

    /// Runs to completion.
    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            output.status.success(),
            "durabus {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).unwrap()
    }

    /// Runs and asserts failure; returns stderr.
    fn fail(&self, args: &[&str]) -> String {
        let output = self.run(args);
        assert!(
            !output.status.success(),
            "durabus {args:?} succeeded but should have failed:\nstdout: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        String::from_utf8(output.stderr).unwrap()
    }

    /// Runs with `--json` and parses the one JSON object on stdout.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        json(&self.ok(&all))
    }

    /// Runs with `--json` and parses the JSON lines on stdout.
    fn json_lines(&self, args: &[&str]) -> Vec<Value> {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        json_lines(&self.ok(&all))
    }
}

/// The binary, without a `DURABUS_URL`, `NATS_URL` or `RUST_LOG` from the
/// environment.
pub(crate) fn durabus() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_durabus"));
    command
        .env_remove("DURABUS_URL")
        .env_remove("NATS_URL")
        .env_remove("RUST_LOG");
    command
}

/// `text` as one JSON value.
pub(crate) fn json(text: &str) -> Value {
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// `text` as JSON lines.
pub(crate) fn json_lines(text: &str) -> Vec<Value> {
    text.lines().map(json).collect()
}

pub(crate) use durabus_testkit::BenchRun;

/// Runs `durabus bench ARGS --json-out <temp file>`, asserts success and
/// reads the report.
pub(crate) fn bench(args: &[&str]) -> BenchRun {
    durabus_testkit::bench_run(durabus(), args)
}
