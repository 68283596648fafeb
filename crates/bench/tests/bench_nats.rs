//! End-to-end tests of `durabus-bench bench` on a nats-server of its own
//! (started by durabus-testkit on a free port): durabus, raw async-nats and
//! the two interleaved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{bench, durabus_bench, stream_names, BenchRun};

#[test]
fn bench_on_nats_runs_w1_w2_w4_for_durabus_raw_async_nats_and_both_and_cleans_up() {
    let server = durabus_testkit::nats::NatsServer::start().unwrap();
    let url = server.url();
    for peer in ["durabus", "async-nats"] {
        let BenchRun {
            stdout: table,
            stderr,
            report,
        } = bench(&[
            "--url", &url, "--peer", peer, "--msgs", "200", "--batch", "50", "--runs", "2",
        ]);
        // W3 (the embedded durability modes) is skipped with a note, not failed.
        assert!(stderr.contains("W3 skipped: not applicable"), "{stderr}");
        assert!(table.contains(&format!("{peer}/nats")), "{table}");
        assert_eq!(report["backend"], "nats");
        assert_eq!(report["peer"], peer);
        assert_eq!(report["skipped"][0]["workload"], "W3");
        let results = report["results"].as_array().unwrap();
        let rows: Vec<(&str, u64)> = results
            .iter()
            .map(|r| {
                (
                    r["workload"].as_str().unwrap(),
                    r["messages"].as_u64().unwrap(),
                )
            })
            .collect();
        // W4 is a replay and a durable consumer with explicit acks; W5
        // (latency) is durabus's only.
        let mut expected = vec![("W1", 200), ("W2", 200), ("W4", 400), ("W4", 400)];
        if peer == "durabus" {
            expected.push(("W5", 200));
        }
        assert_eq!(rows, expected, "{report}");
        assert!(results
            .iter()
            .all(|r| r["msgs_per_sec"].as_f64().unwrap() > 0.0));
    }
    // Both peers interleaved in one process, with their ratio per workload.
    let BenchRun { stdout, report, .. } = bench(&[
        "--url",
        &url,
        "--peer",
        "durabus,async-nats",
        "--msgs",
        "200",
        "--batch",
        "50",
        "--slice",
        "100",
    ]);
    assert!(
        stdout.contains("W1 publish, await each ack: durabus/nats / async-nats/nats = "),
        "{stdout}"
    );
    let rows: Vec<(&str, &str, u64)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["workload"].as_str().unwrap(),
                r["peer"].as_str().unwrap(),
                r["messages"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            ("W1", "durabus/nats", 200),
            ("W1", "async-nats/nats", 200),
            ("W2", "durabus/nats", 200),
            ("W2", "async-nats/nats", 200),
            // Four replays and four consumes each, interleaved.
            ("W4", "durabus/nats", 1600),
            ("W4", "async-nats/nats", 1600),
            ("W4", "durabus/nats", 1600),
            ("W4", "async-nats/nats", 1600),
        ],
        "{report}"
    );
    assert!(
        stdout.contains("W4 consume, explicit ack: durabus/nats / async-nats/nats = "),
        "{stdout}"
    );
    let comparison = report["comparison"].as_array().unwrap();
    assert_eq!(comparison.len(), 4, "{report}");
    assert!(comparison
        .iter()
        .all(|c| c["ratio"].as_f64().unwrap() > 0.0));
    // Every run deleted the streams it created (and so their consumers).
    assert_eq!(stream_names(&url), Vec::<String>::new());
}

#[test]
fn bench_peer_async_nats_needs_a_nats_url() {
    let output = durabus_bench()
        .args(["bench", "--peer", "async-nats", "--msgs", "10"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--url nats://"), "{stderr}");
}
