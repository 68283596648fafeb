//! End-to-end tests of `durabus-bench bench --peer redis` against a redis-server of
//! its own (started on a free loopback port with AOF on, in a temporary
//! directory, and killed by pid on drop). redis-server must be installed
//! (`apt-get install -y redis-server`; scripts/test installs it): without
//! it the test fails, saying so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::{bench, durabus_bench, BenchRun};

/// A redis-server of this test, killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts redis-server; panics, saying how to install it, where it is
    /// missing.
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = match Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "yes", "--dir"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!(
                "cannot start redis-server ({e}): install it with \
                 `apt-get install -y redis-server` (scripts/test installs it)"
            ),
        };
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.command("PING") != "+PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        redis
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The first `lines` lines of an inline command's reply, joined by
    /// spaces (`""` when not connected yet).
    fn reply(&self, command: &str, lines: usize) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return String::new();
        };
        stream
            .write_all(format!("{command}\r\n").as_bytes())
            .unwrap();
        let mut reply = Vec::new();
        let mut byte = [0u8; 1];
        while reply.iter().filter(|b| **b == b'\n').count() < lines
            && stream.read(&mut byte).unwrap_or(0) == 1
        {
            reply.push(byte[0]);
        }
        let text = String::from_utf8(reply).unwrap();
        text.split_whitespace().collect::<Vec<_>>().join(" ")
    }

    /// An inline command's one-line reply.
    fn command(&self, command: &str) -> String {
        self.reply(command, 1)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.child.kill().ok();
        self.child.wait().ok();
    }
}

#[test]
fn bench_peer_redis_runs_every_workload_and_deletes_its_keys() {
    let redis = Redis::start();
    let before = redis.reply("CONFIG GET appendfsync", 5);
    assert!(before.ends_with("everysec"), "{before}");
    let url = redis.url();
    let BenchRun { report, .. } = bench(&[
        "--peer",
        "redis",
        "--redis-url",
        &url,
        "--msgs",
        "2000",
        "--workloads",
        "w1,w2,w3,w4",
    ]);
    assert_eq!(report["peer"], "redis", "{report}");
    let results = report["results"].as_array().unwrap();
    for workload in ["W1", "W2", "W3", "W4"] {
        assert!(
            results.iter().any(|r| r["workload"] == workload),
            "{workload} missing from {report}"
        );
    }
    // W1, W2 twice (pipelined, 4x64), W3 twice, W4 replay and consume.
    assert_eq!(results.len(), 7, "{report}");
    for r in results {
        assert_eq!(r["peer"], "redis/streams", "{r}");
        assert!(r["messages"].as_u64().unwrap() > 0, "{r}");
        assert!(r["msgs_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    }
    let replay = results
        .iter()
        .find(|r| r["workload"] == "W4" && r["name"] == "replay from seq 1")
        .unwrap();
    assert_eq!(replay["messages"], 4000, "W1 + W2: {replay}");
    // Every key is gone, and appendfsync is as it was.
    assert_eq!(redis.command("DBSIZE"), ":0");
    assert_eq!(redis.reply("CONFIG GET appendfsync", 5), before);
}

#[test]
fn bench_peer_redis_needs_a_redis_url() {
    let output = durabus_bench()
        .args(["bench", "--peer", "redis", "--msgs", "10"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--redis-url"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn bench_peer_redis_names_the_url_it_cannot_reach() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://127.0.0.1:{port}");
    let output = durabus_bench()
        .args([
            "bench",
            "--peer",
            "redis",
            "--redis-url",
            &url,
            "--msgs",
            "10",
        ])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&url), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
}
