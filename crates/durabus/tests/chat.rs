//! The chat example, run as real processes with piped stdin: a persisted
//! room on `file:` (peers take turns: scrollback, then resuming), and an
//! ephemeral room on a real nats-server (two peers at once).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead as _, BufReader, Write as _};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

mod common;

/// The longest one chat process may run before the test fails.
const WAIT: Duration = Duration::from_secs(30);

/// The chat example's binary (see [`common::example_binary`]).
fn chat_binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| common::example_binary("chat", "--ephemeral"))
        .clone()
}

fn chat(args: &[&str]) -> Command {
    let mut c = Command::new(chat_binary());
    c.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Runs a chat process that reads `input`, and waits for it to end.
fn run(args: &[&str], input: &str) -> Output {
    let mut child = chat(args).spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    finish(child)
}

/// Waits (at most [`WAIT`]) for a chat process to exit successfully.
fn finish(mut child: Child) -> Output {
    let deadline = std::time::Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!("chat did not end within {WAIT:?}: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "chat failed: {out:?}");
    out
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn persisted_room_shows_scrollback_to_a_late_joiner_and_resumes_a_returning_peer() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file:{}", dir.path().display());
    let base = ["--url", url.as_str(), "--room", "lobby"];
    let alice = [&base[..], &["--name", "alice"]].concat();
    run(&alice, "hello\nanyone here?\n");

    let out = run(&[&base[..], &["--name", "bob"]].concat(), "hi alice\n");
    assert_eq!(stdout(&out), "~ alice: hello\n~ alice: anyone here?\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("(persisted)"));

    // Alice comes back: no scrollback, but what she missed, once.
    let mut again = alice.clone();
    again.extend(["--count", "1"]);
    let out = run(&again, "");
    assert_eq!(stdout(&out), "bob: hi alice\n");
    assert!(String::from_utf8_lossy(&out.stderr).contains("resuming"));
}

#[test]
fn ephemeral_room_keeps_no_history() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file:{}", dir.path().display());
    let base = ["--url", url.as_str(), "--room", "lobby", "--ephemeral"];
    run(&[&base[..], &["--name", "alice"]].concat(), "hello\n");
    let out = run(&[&base[..], &["--name", "bob"]].concat(), "");
    assert_eq!(stdout(&out), "");
    assert!(String::from_utf8_lossy(&out.stderr).contains("(ephemeral)"));
}

#[test]
fn ephemeral_room_delivers_between_two_live_processes_on_nats() {
    let server = durabus_testkit::nats::NatsServer::shared();
    let url = server.url();
    let base = ["--url", url.as_str(), "--room", "live", "--ephemeral"];
    // Bob listens for one message; his stdin is closed at once.
    let mut bob = chat(&[&base[..], &["--name", "bob", "--count", "1"]].concat())
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(bob.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    assert!(line.contains("joined live as bob"), "{line:?}");
    run(&[&base[..], &["--name", "alice"]].concat(), "hello bob\n");
    let out = finish(bob);
    assert_eq!(stdout(&out), "alice: hello bob\n");
}
