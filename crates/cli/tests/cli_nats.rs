//! End-to-end tests of the `durabus` binary against a real nats-server with
//! JetStream (started by durabus-testkit on a free port): every verb works
//! with `--url nats://...`.
//!
//! The tests share one server per test process ([`NatsServer::shared`]) and
//! keep apart by stream names and subject prefixes used by one test only.
//! A test that kills its server starts its own.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use durabus_testkit::nats::NatsServer;
use serde_json::Value;

mod common;
use common::{durabus, json, Cli};

/// How long a child may take to say it is ready, or to print a line.
const WAIT: Duration = Duration::from_secs(20);

/// A nats-server and helpers to run the binary against it.
struct Nats {
    url: String,
}

impl Nats {
    /// The server shared by this test process.
    fn shared() -> Self {
        Nats {
            url: NatsServer::shared().url(),
        }
    }

    fn on(server: &NatsServer) -> Self {
        Nats { url: server.url() }
    }

    /// Runs and asserts failure with status 1, without a panic; returns
    /// stderr.
    fn fail_cleanly(&self, args: &[&str]) -> String {
        let output = self.run(args);
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(
            !output.status.success(),
            "durabus {args:?} succeeded but should have failed:\nstdout: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        stderr
    }

    /// Adds stream `name` capturing `subjects`.
    fn add(&self, name: &str, subjects: &str) {
        self.ok(&["stream", "add", name, "--subjects", subjects]);
    }

    /// The stream sequences `durabus replay STREAM ARGS...` prints.
    fn replayed(&self, stream: &str, args: &[&str]) -> Vec<u64> {
        let mut all = vec!["replay", stream];
        all.extend_from_slice(args);
        self.json_lines(&all)
            .iter()
            .map(|m| m["seq"].as_u64().unwrap())
            .collect()
    }

    /// Starts `durabus ARGS...` in the background, returning once it has
    /// printed a stderr line containing `ready` (nothing to wait for if empty).
    fn spawn(&self, args: &[&str], ready: &str) -> Running {
        let mut child = KillOnDrop(
            self.command(args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
        let stdout = lines(child.0.stdout.take().unwrap());
        let stderr = lines(child.0.stderr.take().unwrap());
        let mut running = Running {
            child,
            stdout,
            stderr,
            stderr_seen: Vec::new(),
        };
        if !ready.is_empty() {
            running.wait_stderr(ready);
        }
        running
    }
}

impl Cli for Nats {
    fn url(&self) -> String {
        self.url.clone()
    }
}

/// The lines of a child's pipe, read on a thread.
fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Kills the child by pid when the test ends, even when it fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `durabus` command running in the background.
struct Running {
    child: KillOnDrop,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    stderr_seen: Vec<String>,
}

impl Running {
    /// Waits for a stderr line containing `text`.
    fn wait_stderr(&mut self, text: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.stderr_seen.push(line);
                    if found {
                        return;
                    }
                }
                Err(_) => panic!(
                    "no stderr line with {text:?} within {WAIT:?}; stderr so far: {:?}",
                    self.stderr_seen
                ),
            }
        }
    }

    /// The next `n` stdout lines.
    fn stdout_lines(&self, n: usize) -> Vec<String> {
        (0..n)
            .map(|i| {
                self.stdout.recv_timeout(WAIT).unwrap_or_else(|_| {
                    panic!("stdout line {} of {n} missing after {WAIT:?}", i + 1)
                })
            })
            .collect()
    }

    /// Sends `signal` (TERM, INT) through the shell's builtin `kill`, waits
    /// for the exit and returns the exit status, the time it took and all
    /// of stderr.
    #[cfg(unix)]
    fn signal(mut self, signal: &str) -> (std::process::ExitStatus, Duration, Vec<String>) {
        let pid = self.child.0.id();
        let start = Instant::now();
        let killed = Command::new("sh")
            .args(["-c", &format!("kill -{signal} {pid}")])
            .status()
            .unwrap();
        assert!(killed.success());
        let status = self.child.0.wait().unwrap();
        let took = start.elapsed();
        self.stderr_seen.extend(self.stderr.iter());
        (status, took, self.stderr_seen)
    }
}

/// A TCP port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------- stream

#[test]
fn stream_add_sets_every_option_and_info_shows_them() {
    let nats = Nats::shared();
    let info = nats.json(&[
        "stream",
        "add",
        "ADD_ALL",
        "--subjects",
        "add_all.a.>,add_all.b.*",
        "--description",
        "every option",
        "--max-age",
        "7d",
        "--max-bytes",
        "1MiB",
        "--max-msgs",
        "1000",
        "--max-msgs-per-subject",
        "10",
        "--max-msg-size",
        "1KiB",
        "--discard",
        "new",
        "--discard-new-per-subject",
        "--dupe-window",
        "30s",
        "--retention",
        "limits",
        "--storage",
        "memory",
        "--allow-rollup",
    ]);
    let c = &info["config"];
    assert_eq!(c["name"], "ADD_ALL");
    assert_eq!(
        c["subjects"],
        serde_json::json!(["add_all.a.>", "add_all.b.*"])
    );
    assert_eq!(c["description"], "every option");
    assert_eq!(c["max_age"], 7 * 86_400 * 1_000_000_000u64);
    assert_eq!(c["max_bytes"], 1 << 20);
    assert_eq!(c["max_msgs"], 1000);
    assert_eq!(c["max_msgs_per_subject"], 10);
    assert_eq!(c["max_msg_size"], 1024);
    assert_eq!(c["discard"], "new");
    assert_eq!(c["discard_new_per_subject"], true);
    assert_eq!(c["duplicate_window"], 30_000_000_000u64);
    assert_eq!(c["retention"], "limits");
    assert_eq!(c["storage"], "memory");
    assert_eq!(c["allow_rollup_hdrs"], true);
    assert_eq!(c["deny_delete"], false);
    assert_eq!(c["deny_purge"], false);
    assert_eq!(info["state"]["messages"], 0);

    // The same again is a no-op that says so; different options point to edit.
    let again = nats.ok(&[
        "stream",
        "add",
        "ADD_ALL",
        "--subjects",
        "add_all.a.>,add_all.b.*",
        "--description",
        "every option",
        "--max-age",
        "7d",
        "--max-bytes",
        "1MiB",
        "--max-msgs",
        "1000",
        "--max-msgs-per-subject",
        "10",
        "--max-msg-size",
        "1KiB",
        "--discard",
        "new",
        "--discard-new-per-subject",
        "--dupe-window",
        "30s",
        "--storage",
        "memory",
        "--allow-rollup",
    ]);
    assert!(
        again.contains("already exists with this configuration"),
        "{again}"
    );
    let stderr = nats.fail_cleanly(&["stream", "add", "ADD_ALL", "--subjects", "add_all.a.>"]);
    assert!(stderr.contains("stream edit ADD_ALL"), "{stderr}");

    // The options add does not combine with the above, on streams of their own.
    let denied = nats.json(&[
        "stream",
        "add",
        "ADD_DENY",
        "--subjects",
        "add_deny.>",
        "--deny-delete",
        "--deny-purge",
    ]);
    assert_eq!(denied["config"]["deny_delete"], true);
    assert_eq!(denied["config"]["deny_purge"], true);
    assert_eq!(denied["config"]["storage"], "file");
    let work = nats.json(&[
        "stream",
        "add",
        "ADD_WORK",
        "--subjects",
        "add_work.>",
        "--retention",
        "work_queue",
    ]);
    assert_eq!(work["config"]["retention"], "work_queue");
    let interest = nats.json(&[
        "stream",
        "add",
        "ADD_INTEREST",
        "--subjects",
        "add_interest.>",
        "--retention",
        "interest",
        "--discard",
        "old",
    ]);
    assert_eq!(interest["config"]["retention"], "interest");
    assert_eq!(interest["config"]["discard"], "old");
    // Without --subjects a stream captures its own name.
    let named = nats.json(&["stream", "add", "ADD_NAMED"]);
    assert_eq!(
        named["config"]["subjects"],
        serde_json::json!(["ADD_NAMED"])
    );

    let text = nats.ok(&["stream", "info", "ADD_ALL"]);
    for expected in [
        "Stream ADD_ALL",
        "add_all.a.>, add_all.b.*",
        "every option",
        "max msgs per subject     10",
        "max msg size             1.0 KiB",
        "discard new per subject  yes",
        "duplicate window         30s",
        "storage                  memory",
        "allow rollup             yes",
    ] {
        assert!(
            text.contains(expected),
            "{expected:?} missing from:\n{text}"
        );
    }
}

#[test]
fn stream_ls_lists_a_stream_with_its_counts() {
    let nats = Nats::shared();
    nats.add("LS", "ls.>");
    nats.ok(&["pub", "ls.{{i}}", "x", "--count", "3"]);
    let table = nats.ok(&["stream", "ls"]);
    // The one table style of every listing: `│ a ┆ b │` rows under borders.
    let rows: Vec<Vec<&str>> = table
        .lines()
        .filter(|l| l.starts_with('│'))
        .map(|l| l.trim_matches('│').split('┆').map(str::trim).collect())
        .collect();
    assert_eq!(
        rows[0],
        [
            "stream",
            "subjects",
            "messages",
            "bytes",
            "first seq",
            "last seq",
            "last message"
        ],
        "{table}"
    );
    let row = rows
        .iter()
        .find(|cells| cells[0] == "LS")
        .unwrap_or_else(|| panic!("no LS row in:\n{table}"));
    assert_eq!(&row[..3], ["LS", "ls.>", "3"], "{table}");

    let list = nats.json(&["stream", "ls"]);
    let ours = list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["config"]["name"] == "LS")
        .unwrap_or_else(|| panic!("no LS in {list}"));
    assert_eq!(ours["state"]["messages"], 3);
    assert_eq!(ours["state"]["last_seq"], 3);
}

#[test]
fn stream_info_shows_state_as_text_and_json() {
    let nats = Nats::shared();
    nats.add("INFO", "info.>");
    nats.ok(&["pub", "info.a", "first"]);
    nats.ok(&["pub", "info.b", "second"]);
    let text = nats.ok(&["stream", "info", "INFO"]);
    let value = |label: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(label))
            .unwrap_or_else(|| panic!("no {label} line in:\n{text}"))
            .split_whitespace()
            .nth(label.split_whitespace().count())
            .unwrap()
            .to_owned()
    };
    assert_eq!(value("messages"), "2", "{text}");
    assert_eq!(value("last seq"), "2", "{text}");
    assert_eq!(value("distinct subjects"), "2", "{text}");

    let info = nats.json(&["stream", "info", "INFO"]);
    assert_eq!(info["config"]["name"], "INFO");
    assert_eq!(info["state"]["messages"], 2);
    assert_eq!(info["state"]["first_seq"], 1);
    assert_eq!(info["state"]["last_seq"], 2);
    assert_eq!(info["state"]["num_subjects"], 2);
    assert!(info["state"]["last_ts"].as_str().unwrap().ends_with('Z'));
    assert!(info["created"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn edit_changes_only_the_options_given() {
    let nats = Nats::shared();
    nats.ok(&[
        "stream",
        "add",
        "EDIT",
        "--subjects",
        "edit.>",
        "--max-msgs",
        "10",
        "--max-age",
        "1h",
        "--description",
        "before",
    ]);
    let edited = nats.json(&[
        "stream",
        "edit",
        "EDIT",
        "--max-msgs",
        "unlimited",
        "--max-bytes",
        "2MiB",
        "--deny-delete",
        "true",
    ]);
    let c = &edited["config"];
    assert_eq!(c["max_msgs"], -1);
    assert_eq!(c["max_bytes"], 2 << 20);
    assert_eq!(c["deny_delete"], true);
    // Untouched:
    assert_eq!(c["max_age"], 3_600_000_000_000u64);
    assert_eq!(c["description"], "before");
    assert_eq!(c["subjects"], serde_json::json!(["edit.>"]));
    assert_eq!(c["duplicate_window"], 120_000_000_000u64);
    assert_eq!(c["deny_purge"], false);

    let edited = nats.json(&[
        "stream",
        "edit",
        "EDIT",
        "--subjects",
        "edit.>,edit2.>",
        "--description",
        "after",
        "--max-age",
        "unlimited",
        "--dupe-window",
        "1m",
    ]);
    let c = &edited["config"];
    assert_eq!(c["subjects"], serde_json::json!(["edit.>", "edit2.>"]));
    assert_eq!(c["description"], "after");
    assert_eq!(c["max_age"], 0);
    assert_eq!(c["duplicate_window"], 60_000_000_000u64);
    assert_eq!(c["max_bytes"], 2 << 20);
    assert_eq!(c["deny_delete"], true);
    // The new subject is captured at once.
    let ack = nats.json(&["pub", "edit2.x", "y"]);
    assert_eq!(ack["stream"], "EDIT");

    let same = nats.ok(&["stream", "edit", "EDIT", "--description", "after"]);
    assert!(
        same.contains("already has this configuration; nothing changed"),
        "{same}"
    );
}

#[test]
fn get_prints_a_message_by_sequence_and_by_last_subject() {
    let nats = Nats::shared();
    nats.add("GET", "get.>");
    nats.ok(&["pub", "get.a", "a1", "-H", "Tenant:acme"]);
    nats.ok(&["pub", "get.b", "b1"]);
    nats.ok(&["pub", "get.a", "a2"]);

    let text = nats.ok(&["stream", "get", "GET", "1"]);
    assert!(
        text.contains("[GET #1]") && text.contains("get.a"),
        "{text}"
    );
    assert!(
        text.contains("Tenant: acme") && text.contains("a1"),
        "{text}"
    );
    let got = nats.json(&["stream", "get", "GET", "2"]);
    assert_eq!(got["seq"], 2);
    assert_eq!(got["subject"], "get.b");
    assert_eq!(got["payload"], "b1");
    let last = nats.json(&["stream", "get", "GET", "--last-subject", "get.a"]);
    assert_eq!(last["seq"], 3);
    assert_eq!(last["payload"], "a2");
    let raw = nats.run(&["stream", "get", "GET", "--last-subject", "get.b", "--raw"]);
    assert!(raw.status.success());
    assert_eq!(raw.stdout, b"b1");

    let stderr = nats.fail_cleanly(&["stream", "get", "GET", "9"]);
    assert!(
        stderr.contains("no message found") && stderr.contains('9'),
        "{stderr}"
    );
    let stderr = nats.fail_cleanly(&["stream", "get", "GET", "--last-subject", "get.none"]);
    assert!(stderr.contains("get.none"), "{stderr}");
    let stderr = nats.fail_cleanly(&["stream", "get", "GET", "--last-subject", "get.*"]);
    assert!(stderr.contains("literal subject"), "{stderr}");
}

#[test]
fn rmm_deletes_one_message_after_confirmation() {
    let nats = Nats::shared();
    nats.add("RMM", "rmm.>");
    nats.ok(&["pub", "rmm.{{i}}", "m{{i}}", "--count", "3"]);
    let stderr = nats.fail_cleanly(&["stream", "rmm", "RMM", "2"]);
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(nats.replayed("RMM", &[]), [1, 2, 3]);

    let text = nats.ok(&["stream", "rmm", "RMM", "2", "--force"]);
    assert!(text.contains("deleted message 2 from stream RMM"), "{text}");
    assert_eq!(nats.replayed("RMM", &[]), [1, 3]);
    let info = nats.json(&["stream", "info", "RMM"]);
    assert_eq!(info["state"]["messages"], 2);
    assert_eq!(info["state"]["num_deleted"], 1);
    let stderr = nats.fail_cleanly(&["stream", "get", "RMM", "2"]);
    assert!(stderr.contains("no message found"), "{stderr}");
    let stderr = nats.fail_cleanly(&["stream", "rmm", "RMM", "2", "-f"]);
    assert!(stderr.contains("no message found"), "{stderr}");

    nats.ok(&[
        "stream",
        "add",
        "RMM_DENY",
        "--subjects",
        "rmm_deny.>",
        "--deny-delete",
    ]);
    nats.ok(&["pub", "rmm_deny.a", "x"]);
    let stderr = nats.fail_cleanly(&["stream", "rmm", "RMM_DENY", "1", "-f"]);
    assert!(stderr.contains("denies delete"), "{stderr}");
}

#[test]
fn purge_by_subject_keep_and_seq_removes_exactly_those() {
    let nats = Nats::shared();
    nats.add("PURGE", "purge.>");
    nats.ok(&["pub", "purge.{{i}}", "m{{i}}", "--count", "6"]); // 1-6
    nats.ok(&["pub", "purge.a", "a{{i}}", "--count", "4"]); // 7-10

    let stderr = nats.fail_cleanly(&["stream", "purge", "PURGE", "--subject", "purge.a"]);
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(nats.replayed("PURGE", &[]).len(), 10);

    // --subject with --keep: the newest of that subject stays.
    let purged = nats.json(&[
        "stream",
        "purge",
        "PURGE",
        "--subject",
        "purge.a",
        "--keep",
        "1",
        "--force",
    ]);
    assert_eq!(purged["purged"], 3);
    assert_eq!(nats.replayed("PURGE", &[]), [1, 2, 3, 4, 5, 6, 10]);
    // --seq: below that sequence only.
    let purged = nats.json(&["stream", "purge", "PURGE", "--seq", "3", "-f"]);
    assert_eq!(purged["purged"], 2);
    assert_eq!(nats.replayed("PURGE", &[]), [3, 4, 5, 6, 10]);
    // --keep: the newest N of the stream.
    let text = nats.ok(&["stream", "purge", "PURGE", "--keep", "2", "-f"]);
    assert!(
        text.contains("purged 3 messages from stream PURGE"),
        "{text}"
    );
    assert_eq!(nats.replayed("PURGE", &[]), [6, 10]);
    // --subject alone, with a wildcard.
    let purged = nats.json(&["stream", "purge", "PURGE", "--subject", "purge.*", "-f"]);
    assert_eq!(purged["purged"], 2);
    nats.ok(&["pub", "purge.z", "z"]);
    let purged = nats.json(&["stream", "purge", "PURGE", "-f"]);
    assert_eq!(purged["purged"], 1);
    let info = nats.json(&["stream", "info", "PURGE"]);
    assert_eq!(info["state"]["messages"], 0);
    assert_eq!(info["state"]["last_seq"], 11);

    nats.ok(&[
        "stream",
        "add",
        "PURGE_DENY",
        "--subjects",
        "purge_deny.>",
        "--deny-purge",
    ]);
    let stderr = nats.fail_cleanly(&["stream", "purge", "PURGE_DENY", "-f"]);
    assert!(stderr.contains("denies purge"), "{stderr}");
}

#[test]
fn rm_deletes_the_stream_after_confirmation() {
    let nats = Nats::shared();
    nats.add("RM", "rm.>");
    nats.ok(&["pub", "rm.a", "x"]);
    let stderr = nats.fail_cleanly(&["stream", "rm", "RM"]);
    assert!(
        stderr.contains("--force") && stderr.contains("1 message"),
        "{stderr}"
    );
    nats.ok(&["stream", "info", "RM"]);

    let text = nats.ok(&["stream", "rm", "RM", "--force"]);
    assert!(text.contains("deleted stream RM"), "{text}");
    let stderr = nats.fail_cleanly(&["stream", "info", "RM"]);
    assert!(stderr.contains("not found"), "{stderr}");
    // Its subjects are no longer captured.
    let ack = nats.json(&["pub", "rm.a", "y"]);
    assert_eq!(ack["stored"], false);
}

// ---------------------------------------------------------------- pub

#[test]
fn pub_takes_the_payload_from_the_argument_or_stdin() {
    let nats = Nats::shared();
    nats.add("PUB", "pub.>");
    let out = nats.ok(&["pub", "pub.arg", "from the argument", "-H", "Tenant:acme"]);
    assert!(out.contains("pub.arg: stored in stream PUB seq 1"), "{out}");

    let mut child = nats
        .command(&["pub", "pub.stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&[0xff, 0x00, 0x01])
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("seq 2"));

    let first = nats.json(&["stream", "get", "PUB", "1"]);
    assert_eq!(first["payload"], "from the argument");
    assert_eq!(first["headers"], serde_json::json!([["Tenant", "acme"]]));
    let second = nats.json(&["stream", "get", "PUB", "2"]);
    assert_eq!(second["payload_base64"], "/wAB");
    let raw = nats.run(&["stream", "get", "PUB", "2", "--raw"]);
    assert_eq!(raw.stdout, [0xff, 0x00, 0x01]);
}

/// NATS keeps the values of one header name in order, but not the order
/// between names (async-nats's header map is a hash map): a documented
/// difference from the embedded backend.
#[test]
fn headers_keep_the_order_of_each_names_values() {
    let nats = Nats::shared();
    nats.add("HDRORDER", "hdrorder.>");
    nats.ok(&[
        "pub",
        "hdrorder.a",
        "x",
        "-H",
        "Z:1",
        "-H",
        "A:2",
        "-H",
        "Z:3",
        "-H",
        "M:4",
    ]);
    let got = nats.json(&["stream", "get", "HDRORDER", "1"]);
    let pairs: Vec<(String, String)> = serde_json::from_value(got["headers"].clone()).unwrap();
    let values = |name: &str| -> Vec<&str> {
        pairs
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("Z"), ["1", "3"], "{pairs:?}");
    assert_eq!(values("A"), ["2"], "{pairs:?}");
    assert_eq!(values("M"), ["4"], "{pairs:?}");
    assert_eq!(pairs.len(), 4, "{pairs:?}");
}

#[test]
fn count_publishes_numbered_copies_and_msg_ids_deduplicate() {
    let nats = Nats::shared();
    nats.add("COUNT", "count.>");
    let acks = nats.json_lines(&[
        "pub",
        "count.n{{i}}",
        "body {{i}}",
        "--count",
        "3",
        "--msg-id",
        "id-{{i}}",
        "-H",
        "Copy:{{i}}",
        "--verbose",
    ]);
    let seqs: Vec<_> = acks.iter().map(|a| a["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs, [1, 2, 3]);
    assert!(acks.iter().all(|a| a["duplicate"] == false));

    let again = nats.ok(&["pub", "count.n2", "body 2", "--msg-id", "id-2"]);
    assert!(
        again.contains("duplicate of stream COUNT seq 2") && again.contains("not stored again"),
        "{again}"
    );
    let again = nats.json(&["pub", "count.n2", "body 2", "--msg-id", "id-2"]);
    assert_eq!(again["duplicate"], true);
    assert_eq!(again["seq"], 2);
    assert_eq!(
        nats.json(&["stream", "info", "COUNT"])["state"]["messages"],
        3
    );

    let third = nats.json(&["stream", "get", "COUNT", "3"]);
    assert_eq!(third["subject"], "count.n3");
    assert_eq!(third["payload"], "body 3");
    let headers = third["headers"].as_array().unwrap();
    assert!(
        headers.contains(&serde_json::json!(["Copy", "3"])),
        "{third}"
    );
    assert!(
        headers.contains(&serde_json::json!(["Nats-Msg-Id", "id-3"])),
        "{third}"
    );
}

#[test]
fn a_wrong_expectation_is_refused_with_both_numbers() {
    let nats = Nats::shared();
    nats.add("EXPECT", "expect.>");
    nats.ok(&["pub", "expect.a", "1"]);
    let stderr = nats.fail_cleanly(&["pub", "expect.a", "2", "--expect-last-seq", "7"]);
    assert!(
        stderr.contains("expected 7") && stderr.contains("last sequence is 1"),
        "{stderr}"
    );
    nats.ok(&["pub", "expect.a", "2", "--expect-last-seq", "1"]);

    let stderr = nats.fail_cleanly(&["pub", "expect.a", "3", "--expect-last-subject-seq", "1"]);
    assert!(
        stderr.contains("expected 1") && stderr.contains("last sequence is 2"),
        "{stderr}"
    );
    nats.ok(&["pub", "expect.b", "x", "--expect-last-subject-seq", "0"]);

    let stderr = nats.fail_cleanly(&["pub", "expect.a", "4", "--expect-stream", "OTHER"]);
    assert!(
        stderr.contains("OTHER") && stderr.contains("EXPECT"),
        "{stderr}"
    );
    nats.ok(&["pub", "expect.a", "4", "--expect-stream", "EXPECT"]);
    assert_eq!(nats.replayed("EXPECT", &[]), [1, 2, 3, 4]);
}

#[test]
fn a_message_no_stream_captures_goes_to_live_subscribers_only() {
    let nats = Nats::shared();
    let out = nats.ok(&["pub", "nocapture.login", "x"]);
    assert!(
        out.contains("no stream captures nocapture.login; delivered to live subscribers only"),
        "{out}"
    );
    let ack = nats.json(&["pub", "nocapture.login", "x"]);
    assert_eq!(ack["stored"], false);
    assert_eq!(ack["seq"], Value::Null);
}

#[test]
fn a_too_large_message_is_refused_with_the_limit() {
    let nats = Nats::shared();
    nats.ok(&[
        "stream",
        "add",
        "LARGE",
        "--subjects",
        "large.>",
        "--max-msg-size",
        "16",
    ]);
    let stderr = nats.fail_cleanly(&["pub", "large.a", "0123456789abcdefXYZ"]);
    assert!(
        stderr.contains("19 bytes") && stderr.contains("16"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------- sub

#[cfg(unix)]
#[test]
fn sub_receives_publishes_of_other_processes_and_stops_on_sigterm() {
    let nats = Nats::shared();
    nats.add("SUB", "sub.stored.>");
    let sub = nats.spawn(&["--json", "sub", "sub.>"], "listening on");
    // Unlike an embedded store, the server delivers every process's publishes.
    nats.ok(&["pub", "sub.stored.a", "stored", "-H", "Tenant:acme"]);
    nats.ok(&["pub", "sub.core.b", "core"]);
    let lines = sub.stdout_lines(2);
    let first = json(&lines[0]);
    assert_eq!(first["subject"], "sub.stored.a");
    assert_eq!(first["payload"], "stored");
    assert!(
        first["headers"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["Tenant", "acme"])),
        "{first}"
    );
    let second = json(&lines[1]);
    assert_eq!(second["subject"], "sub.core.b");
    assert_eq!(second["payload"], "core");

    let (status, took, stderr) = sub.signal("TERM");
    assert!(status.success(), "sub exited with {status}: {stderr:?}");
    assert!(took < Duration::from_secs(3), "sub took {took:?} to stop");
    assert!(!stderr.iter().any(|l| l.contains("panicked")), "{stderr:?}");
}

#[cfg(unix)]
#[test]
fn sub_counts_what_it_printed_and_stops_on_sigint() {
    let nats = Nats::shared();
    let sub = nats.spawn(&["sub", "subint.*"], "listening on");
    nats.ok(&["pub", "subint.x", "hello"]);
    let lines = sub.stdout_lines(2);
    assert!(lines[0].contains("subint.x"), "{lines:?}");
    assert_eq!(lines[1], "hello");
    let (status, took, stderr) = sub.signal("INT");
    assert!(status.success(), "sub exited with {status}: {stderr:?}");
    assert!(took < Duration::from_secs(3), "sub took {took:?} to stop");
    assert!(
        stderr.iter().any(|l| l.contains("received 1 message")),
        "{stderr:?}"
    );
}

#[test]
fn sub_count_exits_after_n_messages_with_raw_payloads() {
    let nats = Nats::shared();
    let sub = nats.spawn(
        &["sub", "subcount.>", "--count", "2", "--raw"],
        "listening on",
    );
    nats.ok(&["pub", "subcount.{{i}}", "payload {{i}}", "--count", "3"]);
    let lines = sub.stdout_lines(2);
    assert_eq!(lines, ["payload 1", "payload 2"]);
    let mut child = sub.child;
    let status = child.0.wait().unwrap();
    assert!(status.success(), "{status}");
}

#[cfg(unix)]
#[test]
fn queue_group_members_share_the_messages() {
    let nats = Nats::shared();
    let a = nats.spawn(
        &["--json", "sub", "queue.>", "-q", "workers"],
        "listening on",
    );
    let b = nats.spawn(
        &["--json", "sub", "queue.>", "-q", "workers"],
        "listening on",
    );
    nats.ok(&["pub", "queue.{{i}}", "job {{i}}", "--count", "20"]);
    let mut seen = Vec::new();
    let deadline = Instant::now() + WAIT;
    while seen.len() < 20 && Instant::now() < deadline {
        for sub in [&a, &b] {
            while let Ok(line) = sub.stdout.recv_timeout(Duration::from_millis(20)) {
                seen.push(json(&line)["payload"].as_str().unwrap().to_owned());
            }
        }
    }
    seen.sort();
    let mut expected: Vec<String> = (1..=20).map(|i| format!("job {i}")).collect();
    expected.sort();
    assert_eq!(seen, expected, "each message goes to exactly one member");
    for sub in [a, b] {
        let (status, _, stderr) = sub.signal("TERM");
        assert!(status.success(), "{stderr:?}");
        assert!(
            stderr.iter().any(|l| l.contains("in queue group workers")),
            "{stderr:?}"
        );
    }
}

#[cfg(unix)]
#[test]
fn sub_says_when_the_server_goes_away_and_still_stops_promptly() {
    let server = NatsServer::start().unwrap();
    let nats = Nats::on(&server);
    let mut sub = nats.spawn(&["sub", "gone.>"], "listening on");
    drop(server); // SIGKILL
    sub.wait_stderr("lost the connection");
    let (status, took, stderr) = sub.signal("TERM");
    assert!(status.success(), "sub exited with {status}: {stderr:?}");
    assert!(took < Duration::from_secs(3), "sub took {took:?} to stop");
    assert!(
        stderr.iter().any(|l| l.contains("received 0 messages")),
        "{stderr:?}"
    );
}

// ---------------------------------------------------------------- req, reply

#[test]
fn req_gets_the_echo_of_a_reply_process_with_its_headers() {
    let nats = Nats::shared();
    let reply = nats.spawn(
        &["reply", "reqecho.svc", "--echo", "--count", "1"],
        "listening for requests",
    );
    let answer = nats.json(&["req", "reqecho.svc", "hello", "-H", "Tenant:acme"]);
    assert_eq!(answer["payload"], "hello", "{answer}");
    assert!(
        answer["headers"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(["Tenant", "acme"])),
        "{answer}"
    );
    let mut child = reply.child;
    let status = child.0.wait().unwrap();
    assert!(status.success(), "reply exited with {status}");
}

#[test]
fn req_reports_the_error_reply_of_a_service_with_its_code() {
    let nats = Nats::shared();
    let _reply = nats.spawn(
        &["reply", "reqerr.svc", "--error", "422:order has no lines"],
        "listening for requests",
    );
    let stderr = nats.fail_cleanly(&["req", "reqerr.svc", "x"]);
    assert!(
        stderr.contains("answered with error 422: order has no lines"),
        "{stderr}"
    );
}

#[test]
fn req_with_replies_collects_the_answer_of_every_responder() {
    let nats = Nats::shared();
    let _a = nats.spawn(
        &["reply", "reqmany.svc", "from-a"],
        "listening for requests",
    );
    let _b = nats.spawn(
        &["reply", "reqmany.svc", "from-b"],
        "listening for requests",
    );
    let mut payloads: Vec<String> = nats
        .json_lines(&[
            "req",
            "reqmany.svc",
            "x",
            "--replies",
            "2",
            "--timeout",
            "20s",
        ])
        .iter()
        .map(|m| m["payload"].as_str().unwrap().to_owned())
        .collect();
    payloads.sort();
    assert_eq!(payloads, ["from-a", "from-b"]);
}

// ---------------------------------------------------------------- replay

#[test]
fn replay_starts_at_seq_or_time_and_filters_subjects() {
    let nats = Nats::shared();
    nats.add("REPLAY", "replay.>");
    nats.ok(&["pub", "replay.{{i}}", "m{{i}}", "--count", "5"]);
    nats.ok(&["pub", "replay.eu.x", "eu"]); // 6

    let all = nats.json_lines(&["replay", "REPLAY"]);
    assert_eq!(all.len(), 6);
    assert_eq!(all[0]["stream"], "REPLAY");
    assert_eq!(all[0]["subject"], "replay.1");
    assert_eq!(all[0]["payload"], "m1");
    let text = nats.ok(&["replay", "REPLAY", "--count", "1"]);
    assert!(
        text.contains("[REPLAY #1]") && text.contains("m1"),
        "{text}"
    );

    assert_eq!(nats.replayed("REPLAY", &["--seq", "4"]), [4, 5, 6]);
    assert_eq!(nats.replayed("REPLAY", &["--seq", "40"]), Vec::<u64>::new());
    assert_eq!(nats.replayed("REPLAY", &["--count", "2"]), [1, 2]);
    assert_eq!(nats.replayed("REPLAY", &["--filter", "replay.5"]), [5]);
    assert_eq!(
        nats.replayed("REPLAY", &["--filter", "replay.*"]),
        [1, 2, 3, 4, 5]
    );
    assert_eq!(nats.replayed("REPLAY", &["--filter", "replay.eu.>"]), [6]);
    assert_eq!(
        nats.replayed("REPLAY", &["--filter", "replay.none"]),
        Vec::<u64>::new()
    );
    assert_eq!(
        nats.replayed("REPLAY", &["--since", "1h"]),
        [1, 2, 3, 4, 5, 6]
    );
    // Since the third message's own time: from it on.
    let third_time = all[2]["time"].as_str().unwrap();
    assert_eq!(
        nats.replayed("REPLAY", &["--since", third_time]),
        [3, 4, 5, 6]
    );
    assert_eq!(
        nats.replayed("REPLAY", &["--since", "2100-01-01T00:00:00Z"]),
        Vec::<u64>::new()
    );
    let raw = nats.ok(&["replay", "REPLAY", "--seq", "5", "--raw"]);
    assert_eq!(raw, "m5\neu\n");
}

#[test]
fn replay_since_a_far_future_time_prints_nothing() {
    let nats = Nats::shared();
    nats.add("FUTURE", "future.>");
    nats.ok(&["pub", "future.a", "x"]);
    assert_eq!(
        nats.replayed("FUTURE", &["--since", "2999-01-01T00:00:00Z"]),
        Vec::<u64>::new()
    );
}

#[cfg(unix)]
#[test]
fn replay_follow_prints_a_later_publish_and_stops_on_sigterm() {
    let nats = Nats::shared();
    nats.add("FOLLOW", "follow.>");
    nats.ok(&["pub", "follow.a", "before"]);
    let follow = nats.spawn(&["--json", "replay", "FOLLOW", "--follow"], "");
    let first = json(&follow.stdout_lines(1)[0]);
    assert_eq!(first["seq"], 1);
    assert_eq!(first["payload"], "before");

    nats.ok(&["pub", "follow.b", "after"]);
    nats.ok(&["pub", "other.subject", "not captured"]);
    let later = json(&follow.stdout_lines(1)[0]);
    assert_eq!(later["seq"], 2);
    assert_eq!(later["payload"], "after");

    let (status, took, stderr) = follow.signal("TERM");
    assert!(status.success(), "replay exited with {status}: {stderr:?}");
    assert!(
        took < Duration::from_secs(3),
        "replay took {took:?} to stop"
    );
}

#[cfg(unix)]
#[test]
fn replay_follow_with_a_filter_skips_other_subjects() {
    let nats = Nats::shared();
    nats.add("FOLLOWF", "followf.>");
    let follow = nats.spawn(
        &[
            "replay",
            "FOLLOWF",
            "--follow",
            "--filter",
            "followf.eu.*",
            "--raw",
        ],
        "",
    );
    nats.ok(&["pub", "followf.us.1", "us"]);
    nats.ok(&["pub", "followf.eu.1", "eu"]);
    assert_eq!(follow.stdout_lines(1), ["eu"]);
    let (status, _, stderr) = follow.signal("INT");
    assert!(status.success(), "{stderr:?}");
}

// ---------------------------------------------------------------- errors

#[test]
fn unknown_streams_say_how_to_create_one() {
    let nats = Nats::shared();
    for args in [
        &["stream", "info", "NOPE"][..],
        &["stream", "edit", "NOPE", "--max-msgs", "1"],
        &["stream", "get", "NOPE", "1"],
        &["stream", "rmm", "NOPE", "1", "-f"],
        &["stream", "purge", "NOPE", "-f"],
        &["stream", "rm", "NOPE", "-f"],
        &["replay", "NOPE"],
    ] {
        let stderr = nats.fail(args);
        assert!(
            stderr.contains("NOPE") && stderr.contains("durabus stream add NOPE"),
            "{args:?}: {stderr}"
        );
    }
}

#[test]
fn invalid_subjects_are_refused_naming_the_token() {
    let nats = Nats::shared();
    nats.add("BADSUBJ", "badsubj.>");
    let stderr = nats.fail_cleanly(&["pub", "badsubj..created", "x"]);
    assert!(
        stderr.contains("token 2") && stderr.contains("badsubj..created"),
        "{stderr}"
    );
    let stderr = nats.fail_cleanly(&["pub", "badsubj.*", "x"]);
    assert!(stderr.contains("wildcard"), "{stderr}");
    let stderr = nats.fail_cleanly(&["pub", "badsubj.{{i}}.", "x", "--count", "2"]);
    assert!(stderr.contains("token 3"), "{stderr}");
    let stderr = nats.fail_cleanly(&["sub", "badsubj..x"]);
    assert!(stderr.contains("token 2"), "{stderr}");
    let stderr = nats.fail_cleanly(&["replay", "BADSUBJ", "--filter", "badsubj.>.x"]);
    assert!(stderr.contains("badsubj.>.x"), "{stderr}");
    let stderr = nats.fail_cleanly(&["stream", "purge", "BADSUBJ", "--subject", "a..b", "-f"]);
    assert!(stderr.contains("token 2"), "{stderr}");
    let stderr = nats.fail_cleanly(&["stream", "add", "BADSUBJ2", "--subjects", "x..y"]);
    assert!(stderr.contains("token 2"), "{stderr}");
    let stderr = nats.fail_cleanly(&["stream", "add", "a.b"]);
    assert!(stderr.contains("invalid name"), "{stderr}");
    // Nothing was published.
    assert_eq!(
        nats.json(&["stream", "info", "BADSUBJ"])["state"]["messages"],
        0
    );
}

#[test]
fn overlapping_subjects_name_the_other_stream() {
    let nats = Nats::shared();
    nats.add("OVERLAP", "overlap.>");
    let stderr = nats.fail_cleanly(&["stream", "add", "OVERLAP2", "--subjects", "overlap.eu.*"]);
    assert!(
        stderr.contains("OVERLAP") && stderr.contains("overlap"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_server_is_named_without_credentials() {
    let url = format!("nats://user:s3cret@127.0.0.1:{}", closed_port());
    for args in [
        &["stream", "ls"][..],
        &["pub", "a.b", "x"],
        &["sub", "a.>"],
        &["replay", "S"],
    ] {
        let started = Instant::now();
        let output = durabus()
            .arg("--url")
            .arg(&url)
            .args(args)
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(started.elapsed() < Duration::from_secs(8), "{args:?} hung");
        assert!(!stderr.contains("s3cret"), "{args:?}: {stderr}");
        assert!(stderr.contains("nats://"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("check that the server runs at that address"),
            "{args:?}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
}

/// Checks invariant 14 (docs/design.md).
#[cfg(unix)]
#[test]
fn credentials_in_the_url_never_show_in_output() {
    // A server without authentication accepts any credentials. Its own
    // server, so its bench streams meet no other test's stream listing.
    let server = NatsServer::start().unwrap();
    let url = format!("nats://user:s3cret@127.0.0.1:{}", server.port());
    let nats = Nats { url };
    nats.add("CREDS", "creds.>");
    let sub = nats.spawn(&["sub", "creds.>"], "listening on");
    nats.ok(&["pub", "creds.a", "x"]);
    sub.stdout_lines(2);
    let (status, _, stderr) = sub.signal("TERM");
    assert!(status.success());
    let stderr = stderr.join("\n");
    assert!(stderr.contains("at nats://***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("s3cret"), "{stderr}");
    let out = nats.ok(&[
        "bench",
        "--msgs",
        "10",
        "--sync-msgs",
        "10",
        "--workloads",
        "w1",
    ]);
    assert!(!out.contains("s3cret"), "{out}");
    let dump = nats.fail_cleanly(&["dump"]);
    assert!(!dump.contains("s3cret"), "{dump}");
}

#[test]
fn errors_under_json_are_json_on_stderr() {
    let nats = Nats::shared();
    let stderr = nats.fail_cleanly(&["--json", "pub", "a..b", "x"]);
    let error = json(&stderr);
    assert!(
        error["error"]["description"]
            .as_str()
            .unwrap()
            .contains("token 2"),
        "{error}"
    );
    let stderr = nats.fail_cleanly(&["--json", "stream", "info", "NOPE_JSON"]);
    let error = json(&stderr);
    assert!(
        error["error"]["description"]
            .as_str()
            .unwrap()
            .contains("\"NOPE_JSON\" not found"),
        "{error}"
    );
    assert_eq!(
        error["error"]["hint"],
        "create it with `durabus stream add NOPE_JSON --subjects ...`"
    );
}

#[test]
fn json_output_of_every_command_parses() {
    let nats = Nats::shared();
    let added = nats.json(&["stream", "add", "JSON", "--subjects", "json.>"]);
    assert_eq!(added["config"]["name"], "JSON");
    let ack = nats.json(&["pub", "json.eu", "hello"]);
    assert_eq!(ack["stream"], "JSON");
    assert_eq!(ack["seq"], 1);
    assert_eq!(ack["stored"], true);
    assert_eq!(ack["duplicate"], false);
    nats.json(&["pub", "json.us", "again"]);
    let info = nats.json(&["stream", "info", "JSON"]);
    assert_eq!(info["state"]["messages"], 2);
    let list = nats.json(&["stream", "ls"]);
    assert!(list["streams"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["config"]["name"] == "JSON"));
    let edited = nats.json(&["stream", "edit", "JSON", "--max-msgs", "100"]);
    assert_eq!(edited["config"]["max_msgs"], 100);
    let unchanged = nats.json(&["stream", "edit", "JSON", "--max-msgs", "100"]);
    assert_eq!(unchanged["config"]["max_msgs"], 100);
    let replayed = nats.json_lines(&["replay", "JSON"]);
    assert_eq!(replayed.len(), 2);
    assert_eq!(replayed[0]["payload"], "hello");
    let got = nats.json(&["stream", "get", "JSON", "1"]);
    assert_eq!(got["subject"], "json.eu");
    let last = nats.json(&["stream", "get", "JSON", "--last-subject", "json.us"]);
    assert_eq!(last["seq"], 2);
    let deleted = nats.json(&["stream", "rmm", "JSON", "1", "-f"]);
    assert_eq!(deleted["deleted"], true);
    assert_eq!(deleted["seq"], 1);
    let purged = nats.json(&["stream", "purge", "JSON", "--force"]);
    assert_eq!(purged["purged"], 1);
    let removed = nats.json(&["stream", "rm", "JSON", "--force"]);
    assert_eq!(removed["deleted"], true);
    assert_eq!(removed["stream"], "JSON");
}

// ---------------------------------------------------------------- dump, verify, bench

#[test]
fn dump_and_verify_refuse_a_nats_url_saying_what_to_use() {
    let nats = Nats::shared();
    let check = |stderr: &str, verb: &str| {
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(
            stderr.contains(&format!(
                "{verb} reads the data directory of an embedded file: store"
            )),
            "{stderr}"
        );
        assert!(stderr.contains("a NATS server"), "{stderr}");
        assert!(stderr.contains("replay STREAM"), "{stderr}");
        assert!(
            stderr.contains(&format!("durabus {verb} ./data")),
            "{stderr}"
        );
    };
    for verb in ["dump", "verify"] {
        // --url
        check(&nats.fail_cleanly(&[verb]), verb);
        check(&nats.fail_cleanly(&[verb, "--stream", "X"]), verb);
        // DURABUS_URL
        let output = durabus()
            .env("DURABUS_URL", &nats.url)
            .arg(verb)
            .output()
            .unwrap();
        assert_eq!(output.status.code(), Some(1));
        check(&String::from_utf8(output.stderr).unwrap(), verb);
        // As the argument.
        let output = durabus().arg(verb).arg(&nats.url).output().unwrap();
        assert_eq!(output.status.code(), Some(1));
        check(&String::from_utf8(output.stderr).unwrap(), verb);
        // --json: the error is JSON too.
        let error = json(&nats.fail_cleanly(&["--json", verb]));
        assert!(
            error["error"]["description"]
                .as_str()
                .unwrap()
                .contains("NATS server"),
            "{error}"
        );
    }
    // A memory: store has no files either.
    let output = durabus().args(["verify", "memory:"]).output().unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(stderr.contains("keeps nothing on disk"), "{stderr}");
}

#[test]
fn bench_runs_on_nats_without_a_disk_baseline() {
    let nats = Nats::shared();
    let out_dir = tempfile::tempdir().unwrap();
    let json_out = out_dir.path().join("bench.json");
    let output = nats
        .command(&["bench", "--msgs", "300", "--sync-msgs", "50", "--json-out"])
        .arg(&json_out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let table = String::from_utf8(output.stdout).unwrap();
    for workload in ["W1", "W2", "W4"] {
        assert!(
            table.contains(workload),
            "{workload} missing from:\n{table}"
        );
    }
    // W3 measures the embedded durability modes against the disk.
    assert!(
        stderr.contains("W3 skipped: not applicable on nats://"),
        "{stderr}"
    );
    assert!(table.contains("durability set by the server"), "{table}");
    assert!(!table.contains("durability always"), "{table}");
    let report = json(&std::fs::read_to_string(&json_out).unwrap());
    assert_eq!(report["temporary_store"], false);
    assert_eq!(report["url"], nats.url.as_str());
    let results = report["results"].as_array().unwrap();
    assert_eq!(
        results.len(),
        5,
        "W1, W2, W4 replay and consume, W5; no W3, W6 or fdatasync row on a server: {report}"
    );
    assert!(stderr.contains("W6 skipped: only on file:"), "{stderr}");
    assert!(results
        .iter()
        .all(|r| r["msgs_per_sec"].as_f64().unwrap() > 0.0));
    // The bench streams are gone.
    let list = nats.json(&["stream", "ls"]);
    assert!(
        !list["streams"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["config"]["name"].as_str().unwrap().starts_with("BENCH")),
        "{list}"
    );
}

#[test]
fn kv_watch_in_one_process_sees_puts_from_another() {
    let nats = Nats::shared();
    nats.ok(&["kv", "add", "cli_watch", "--history", "5"]);
    nats.ok(&["kv", "put", "cli_watch", "a", "before"]);
    let watch = nats.spawn(
        &["--json", "kv", "watch", "cli_watch", "--count", "3"],
        "watching",
    );
    nats.ok(&["kv", "put", "cli_watch", "b", "live"]);
    nats.ok(&["kv", "del", "cli_watch", "a"]);
    let lines = watch.stdout_lines(3);
    let entries: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let v = json(l);
            (
                v["key"].as_str().unwrap().to_owned(),
                v["operation"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("a".into(), "PUT".into()),
            ("b".into(), "PUT".into()),
            ("a".into(), "DEL".into())
        ]
    );
    nats.ok(&["kv", "rm", "cli_watch", "--force"]);
}

// ------------------------------------------------------ natscli's habits

#[test]
fn dash_s_and_nats_url_name_the_server_as_natscli_takes_them() {
    let nats = Nats::shared();
    nats.add("DASH_S", "dash_s.>");
    let port = NatsServer::shared().port();
    // -s without a scheme is nats://.
    let out = durabus()
        .args([
            "-s",
            &format!("127.0.0.1:{port}"),
            "stream",
            "info",
            "DASH_S",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    // NATS_URL when neither --url, -s nor DURABUS_URL is given.
    let out = durabus()
        .env("NATS_URL", &nats.url)
        .args(["--json", "stream", "info", "DASH_S"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        json(&String::from_utf8(out.stdout).unwrap())["config"]["name"],
        "DASH_S"
    );
    // --url wins over NATS_URL.
    let out = durabus()
        .env("NATS_URL", "nats://127.0.0.1:1")
        .args(["--url", &nats.url, "stream", "info", "DASH_S"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn user_and_password_flags_reach_a_server_with_auth() {
    let server = NatsServer::builder()
        .user_password("bob", "s3:cr@t")
        .start()
        .unwrap();
    let nats = Nats::on(&server);
    let stderr = nats.fail_cleanly(&["stream", "ls"]);
    assert!(stderr.contains("authentication failed"), "{stderr}");
    assert!(
        stderr.contains("hint: pass the credentials with --user"),
        "{stderr}"
    );
    let stderr = nats.fail_cleanly(&["--user", "bob", "--password", "wrong", "stream", "ls"]);
    assert!(!stderr.contains("wrong"), "no password is shown: {stderr}");
    nats.ok(&[
        "--user",
        "bob",
        "--password",
        "s3:cr@t",
        "stream",
        "add",
        "AUTHED",
        "--subjects",
        "authed.>",
    ]);
    let out = nats.ok(&[
        "--user",
        "bob",
        "--password",
        "s3:cr@t",
        "pub",
        "authed.x",
        "hi",
    ]);
    assert!(out.contains("stored in stream AUTHED seq 1"), "{out}");
}

#[test]
fn replicas_on_a_single_server_give_the_servers_answer_and_one_is_accepted() {
    let nats = Nats::shared();
    let stderr = nats.fail_cleanly(&["stream", "add", "REPL3", "--replicas", "3"]);
    assert!(
        stderr.starts_with("error: cannot add stream REPL3: ") && stderr.contains("replicas"),
        "{stderr}"
    );
    let info = nats.json(&["stream", "add", "REPL1", "--replicas", "1"]);
    assert_eq!(info["config"]["num_replicas"], 1);
}

#[test]
fn pub_to_a_server_without_jetstream_publishes_core_nats_with_a_note() {
    let server = NatsServer::builder().jetstream(false).start().unwrap();
    let nats = Nats::on(&server);
    let output = nats.run(&["pub", "core.x", "hello"]);
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stdout.contains("core.x: published as core NATS"),
        "{stdout}"
    );
    assert!(
        stderr.contains("has no JetStream: published as core NATS"),
        "{stderr}"
    );
    let summary = nats.json(&["pub", "core.{{i}}", "x", "--count", "5"]);
    assert_eq!(summary["published"], 5, "{summary}");
    assert_eq!(summary["core"], true, "{summary}");
    // Expectations need a stream: refused, nothing sent.
    let stderr = nats.fail_cleanly(&["pub", "core.x", "y", "--expect-last-seq", "1"]);
    assert!(stderr.contains("no JetStream"), "{stderr}");
}

#[test]
fn pub_count_sends_unconfirmed_messages_again_with_the_same_msg_id() {
    let server = NatsServer::start().unwrap();
    let nats = Nats::on(&server);
    nats.add("RETRY", "retry.>");
    // Short request timeout: the pause below makes acks time out.
    let url = format!("{}?request_timeout=300ms", server.url());
    let mut running = Nats { url }.spawn(
        &[
            "--json",
            "pub",
            "retry.{{i}}",
            "m{{i}}",
            "--count",
            "2000",
            "--window",
            "20",
            "--verbose",
            "--timeout",
            "30s",
        ],
        "",
    );
    running.stdout_lines(1);
    server.stop().unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    server.resume().unwrap();
    let status = running.child.0.wait().unwrap();
    running.stderr_seen.extend(running.stderr.iter());
    let stderr = running.stderr_seen.join("\n");
    assert!(status.success(), "{status}: {stderr}");
    assert!(
        stderr.contains("sending again with the same msg id"),
        "{stderr}"
    );
    let summary = json(running.stderr_seen.last().unwrap());
    assert!(summary["retries"].as_u64().unwrap() > 0, "{summary}");
    assert_eq!(summary["unconfirmed"], 0, "{summary}");
    // Stored exactly once each, whatever the pause did to the first tries.
    let info = nats.json(&["stream", "info", "RETRY"]);
    assert_eq!(info["state"]["messages"], 2000, "{info}");
}

#[test]
fn pub_count_stops_after_its_timeout_saying_what_is_unconfirmed() {
    let server = NatsServer::start().unwrap();
    let nats = Nats::on(&server);
    nats.add("GIVEUP", "giveup.>");
    let url = format!("{}?request_timeout=200ms", server.url());
    let mut running = Nats { url }.spawn(
        &[
            "pub",
            "giveup.{{i}}",
            "m",
            "--count",
            "100000",
            "--window",
            "10",
            "--verbose",
            "--timeout",
            "1s",
        ],
        "",
    );
    running.stdout_lines(1);
    server.stop().unwrap();
    let status = running.child.0.wait().unwrap();
    server.resume().unwrap();
    running.stderr_seen.extend(running.stderr.iter());
    let stderr = running.stderr_seen.join("\n");
    assert_eq!(status.code(), Some(4), "{stderr}");
    assert!(stderr.contains("unconfirmed: "), "{stderr}");
    assert!(stderr.contains("not sent: "), "{stderr}");
    assert!(stderr.contains("msg ids durabus-pub-"), "{stderr}");
}
