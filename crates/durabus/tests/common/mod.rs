//! Helpers the facade's integration tests share: finding an example's
//! binary that this test run built.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::process::Command;

/// The binary of example `name`. A plain `cargo test` builds the examples
/// beside the tests (`<target>/debug/examples/<name>-<hash>`), and the newest
/// whose `--help` output contains `help_marker` is taken (an example built as a
/// test harness answers differently). `cargo test --all-targets` builds them
/// as test harnesses only; then they are built here, for the whole workspace
/// with its tests selected, so that features resolve as in that run and only
/// the examples are new to compile.
pub(crate) fn example_binary(name: &str, help_marker: &str) -> PathBuf {
    // <target>/debug/deps/<test>-<hash> -> <target>/debug/examples
    let exe = std::env::current_exe().unwrap();
    let examples = exe.parent().unwrap().parent().unwrap().join("examples");
    let prefix = format!("{name}-");
    let mut built: Vec<_> = std::fs::read_dir(&examples)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
        .filter(|e| {
            let file = e.file_name().to_string_lossy().into_owned();
            file.starts_with(&prefix) && !file.contains('.')
        })
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    built.sort();
    let answers = |path: &PathBuf| {
        Command::new(path)
            .arg("--help")
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(help_marker))
    };
    if let Some((_, path)) = built.into_iter().rev().find(|(_, p)| answers(p)) {
        return path;
    }
    let status = Command::new(env!("CARGO"))
        .args(["build", "-q", "--workspace", "--examples", "--tests"])
        .status()
        .expect("run cargo build --examples");
    assert!(status.success(), "cargo build --examples failed");
    examples.join(name)
}
