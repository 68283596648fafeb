//! Several `durabus` processes on one `file:` store, as two shells use it
//! (invariant 33 of docs/design.md): the first command holds the store and
//! shares it (the CLI's default), the others join it. A `sub` and a `pub`;
//! a bulk `pub --count` and a `consumer next` beside a holder; a holder
//! killed with SIGKILL while another process is joined (the next command
//! opens the store itself); a holder that does not share (`share=false`)
//! keeps writers out, saying how to share, and lets read-only verbs in.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead as _, BufReader, Lines};
use std::process::{Child, ChildStdout, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

mod common;
use common::{json, Cli};

struct Store {
    dir: tempfile::TempDir,
}

impl Cli for Store {
    fn url(&self) -> String {
        format!("file:{}", self.dir.path().display())
    }
}

impl Store {
    fn new() -> Store {
        Store {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn record(&self) -> std::path::PathBuf {
        self.dir.path().join("share.json")
    }
}

/// A long-running command (`sub`) whose JSON lines are read as they come.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Running {
    fn start(store: &Store, args: &[&str]) -> Running {
        Running::start_url(&store.url(), args)
    }

    fn start_url(url: &str, args: &[&str]) -> Running {
        let mut child = common::durabus()
            .args(["--json", "--url", url])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out: Lines<BufReader<ChildStdout>> =
            BufReader::new(child.stdout.take().unwrap()).lines();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Running { child, lines }
    }

    fn next(&self) -> serde_json::Value {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(20))
            .expect("a line within 20 s");
        json(&line)
    }

    fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    fn wait(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `sub` (subscribed to `>`) receives: publishes probes no
/// stream captures until one arrives.
fn wait_subscribed(store: &Store, sub: &Running) {
    for _ in 0..200 {
        store.ok(&["pub", "probe.ready", "p"]);
        if let Ok(line) = sub.lines.recv_timeout(Duration::from_millis(100)) {
            if json(&line)["subject"] == "probe.ready" {
                // Later probes may still be on their way.
                while sub.lines.recv_timeout(Duration::from_millis(200)).is_ok() {}
                return;
            }
        }
    }
    panic!("the subscriber never received a probe");
}

/// Waits until the holder has written its record (it does so right after
/// taking the lock).
fn wait_for_record(store: &Store) {
    for _ in 0..500 {
        if store.record().exists() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("no share record in {}", store.dir.path().display());
}

#[test]
fn a_sub_and_a_pub_in_two_processes_share_one_store() {
    let store = Store::new();
    store.ok(&["stream", "add", "ORDERS", "--subjects", "orders.>"]);
    let sub = Running::start(&store, &["sub", ">"]);
    wait_for_record(&store);
    wait_subscribed(&store, &sub);
    let ack = store.json(&["pub", "orders.eu.created", "hello"]);
    assert_eq!(ack["seq"], 1, "{ack}");
    let got = sub.next();
    assert_eq!(got["subject"], "orders.eu.created", "{got}");
    // A second writer beside them, and a reader.
    store.ok(&["pub", "orders.us.created", "again"]);
    // A hub serves what it holds; this store is held by the `sub`.
    let err = store.fail(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(err.contains("held by another durabus process"), "{err}");
    assert_eq!(sub.next()["subject"], "orders.us.created");
    let info = store.json(&["stream", "info", "ORDERS"]);
    assert_eq!(info["state"]["messages"], 2, "{info}");
    // The share record is no part of the store to check.
    store.ok(&["verify"]);
    sub.signal(Signal::SIGINT);
    assert!(sub.wait().success());
    assert!(!store.record().exists(), "the holder removes its record");
}

#[test]
fn a_bulk_publisher_and_a_consumer_beside_a_holder_see_every_message() {
    let store = Store::new();
    store.ok(&["stream", "add", "JOBS", "--subjects", "jobs.>"]);
    store.ok(&["consumer", "add", "JOBS", "workers"]);
    let holder = Running::start(&store, &["sub", "nothing.here"]);
    wait_for_record(&store);
    store.ok(&["pub", "jobs.{{i}}", "job {{i}}", "--count", "300"]);
    let got = store.json_lines(&["consumer", "next", "JOBS", "workers", "--count", "300"]);
    let seqs: Vec<u64> = got
        .iter()
        .map(|m| m["seq"].as_u64().unwrap_or_else(|| panic!("{m}")))
        .collect();
    assert_eq!(seqs, (1..=300).collect::<Vec<_>>());
    drop(holder);
    // What the joined processes did is in the store the next one opens.
    let info = store.json(&["consumer", "info", "JOBS", "workers"]);
    assert_eq!(info["ack_floor"]["stream_seq"], 300, "{info}");
}

#[test]
fn after_a_holder_is_killed_the_next_command_opens_the_store_itself() {
    let store = Store::new();
    store.ok(&["stream", "add", "ORDERS", "--subjects", "orders.>"]);
    let holder = Running::start(&store, &["sub", ">"]);
    wait_for_record(&store);
    wait_subscribed(&store, &holder);
    let joined = Running::start(&store, &["sub", ">"]);
    wait_subscribed(&store, &joined);
    while holder
        .lines
        .recv_timeout(Duration::from_millis(200))
        .is_ok()
    {}
    store.ok(&["pub", "orders.1", "before"]);
    assert_eq!(holder.next()["subject"], "orders.1");
    assert_eq!(joined.next()["subject"], "orders.1");

    holder.signal(Signal::SIGKILL);
    drop(holder);
    assert!(store.record().exists(), "a killed holder leaves its record");
    // The next command takes the lock, replaces the stale record and serves.
    let next = Running::start(&store, &["sub", ">"]);
    wait_for_record(&store);
    wait_subscribed(&store, &next);
    let ack = store.json(&["pub", "orders.2", "after"]);
    assert_eq!(ack["seq"], 2, "nothing reused: {ack}");
    assert_eq!(next.next()["subject"], "orders.2");
    drop(joined);
}

#[test]
fn a_holder_that_does_not_share_keeps_writers_out_and_readers_in() {
    let store = Store::new();
    store.ok(&["stream", "add", "ORDERS", "--subjects", "orders.>"]);
    store.ok(&["pub", "orders.1", "x"]);
    store.ok(&["consumer", "add", "ORDERS", "billing"]);
    store.ok(&["kv", "add", "config"]);
    store.ok(&["kv", "put", "config", "color", "blue"]);
    let url = format!("{}?share=false", store.url());
    let _holder = Running::start_url(&url, &["sub", ">"]);
    // Until the holder is up, a writer opens the store itself; then it is
    // kept out, told how to share.
    let mut refused = None;
    for _ in 0..200 {
        let out = store.run(&["pub", "probe.ready", "p"]);
        if !out.status.success() {
            refused = Some(String::from_utf8(out.stderr).unwrap());
            break;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    let err = refused.expect("a writer kept out by the holder");
    assert!(
        err.contains("locked") && err.contains("share=true"),
        "{err}"
    );
    assert!(!store.record().exists());
    // Readers need no lock.
    let info = store.json(&["stream", "info", "ORDERS"]);
    assert_eq!(info["state"]["messages"], 1, "{info}");
    for verb in [
        &["stream", "ls"][..],
        &["stream", "get", "ORDERS", "1"],
        &["replay", "ORDERS"],
        &["consumer", "ls", "ORDERS"],
        &["consumer", "info", "ORDERS", "billing"],
        &["kv", "ls"],
        &["kv", "get", "config", "color"],
        &["kv", "history", "config", "color"],
        &["kv", "keys", "config"],
        &["verify"],
        &["dump"],
    ] {
        store.ok(verb);
    }
}
