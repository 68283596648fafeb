//! The README's Quickstart: its code is the quickstart example, and the
//! example prints what the README says it prints, on both runs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

mod common;

const README: &str = include_str!("../../../README.md");
const EXAMPLE: &str = include_str!("../examples/quickstart.rs");

/// The fenced blocks of the README's Quickstart section, with their info string.
fn quickstart_blocks() -> Vec<(&'static str, String)> {
    let section = README
        .split("\n## ")
        .find(|s| s.starts_with("Quickstart\n"))
        .expect("a Quickstart section in README.md");
    let mut blocks = Vec::new();
    let mut lines = section.lines();
    while let Some(line) = lines.next() {
        if let Some(info) = line.strip_prefix("```") {
            let body: Vec<&str> = lines.by_ref().take_while(|l| *l != "```").collect();
            blocks.push((info, body.join("\n") + "\n"));
        }
    }
    blocks
}

#[test]
fn the_readme_quickstart_code_is_the_quickstart_example() {
    let blocks = quickstart_blocks();
    let (_, code) = blocks
        .iter()
        .find(|(info, _)| info.starts_with("rust"))
        .expect("a rust block in the Quickstart section");
    assert_eq!(
        code, EXAMPLE,
        "README.md's Quickstart block and crates/durabus/examples/quickstart.rs differ: copy one onto the other"
    );
}

#[test]
fn the_quickstart_prints_what_the_readme_shows_and_its_second_run_finds_the_first() {
    let expected: Vec<String> = quickstart_blocks()
        .into_iter()
        .filter(|(info, _)| *info == "text")
        .map(|(_, body)| body)
        .collect();
    assert_eq!(
        expected.len(),
        2,
        "the README shows the first and second run"
    );
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file:{}", dir.path().display());
    // An example built as a test harness answers --help with libtest's
    // usage; the program itself takes it as its URL and prints it first.
    let binary = common::example_binary("quickstart", "store: --help");
    for (run, expected) in expected.iter().enumerate() {
        let out = Command::new(&binary).arg(&url).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "run {}: {stdout}{}",
            run + 1,
            String::from_utf8_lossy(&out.stderr)
        );
        let expected = expected.replace("file:/tmp/durabus-quickstart", &url);
        assert_eq!(stdout, expected, "run {}", run + 1);
    }
}
