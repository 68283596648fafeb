//! End-to-end tests of `durabus-bench bench --peer async-nats,hub`: the
//! same raw async-nats workloads on a nats-server and on a hub (here one in
//! the test's process, given by --hub-url: the test cannot build the
//! release `durabus` binary the bench starts by default), interleaved.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::{bench, durabus_bench, stream_names, BenchRun};

#[test]
fn the_hub_and_nats_server_run_the_same_workloads_side_by_side() {
    let server = durabus_testkit::nats::NatsServer::start().unwrap();
    let url = server.url();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let hub = runtime.block_on(durabus_testkit::hub::Hub::file());
    let hub_url = hub.url();
    let BenchRun { stdout, report, .. } = bench(&[
        "--url",
        &url,
        "--peer",
        "async-nats,hub",
        "--hub-url",
        &hub_url,
        "--msgs",
        "300",
        "--batch",
        "50",
        "--in-flight",
        "16",
        "--slice",
        "100",
        "--fanout-msgs",
        "400",
        "--runs",
        "2",
    ]);
    let rows: Vec<(&str, &str, &str, u64)> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["workload"].as_str().unwrap(),
                r["peer"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
                r["messages"].as_u64().unwrap(),
            )
        })
        .collect();
    let (nats, hub_peer) = ("async-nats/nats-server", "async-nats/hub");
    let mut expected = Vec::new();
    for (w, name, n) in [
        ("W1", "publish, await each ack", 300),
        ("W2", "publish, 16 in flight", 300),
        // Four replays and four consumes of W1's and W2's messages each.
        ("W4", "replay from seq 1", 2400),
        ("W4", "consume, explicit ack", 2400),
    ] {
        expected.push((w, nats, name, n));
        expected.push((w, hub_peer, name, n));
    }
    assert_eq!(rows[..8], expected[..], "{report}");
    // The fan-out: each of 400 messages to 4 subscribers (fewer if a
    // server dropped some, which its notes would say).
    let fan: Vec<_> = rows[8..].iter().map(|r| (r.0, r.1, r.2)).collect();
    let name = "core fan-out, 1 publisher -> 4 subscribers";
    assert_eq!(
        fan,
        [("pubsub", nats, name), ("pubsub", hub_peer, name)],
        "{report}"
    );
    // Every fan-out row delivered all 1600, or its notes count the drops.
    for row in &report["results"].as_array().unwrap()[8..] {
        let got = row["messages"].as_u64().unwrap();
        let notes = row["notes"].as_str().unwrap_or_default();
        assert!(
            got == 1600 || notes.contains(&format!("DROPPED {} of 1600", 1600 - got)),
            "{report}"
        );
    }
    assert!(report["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["msgs_per_sec"].as_f64().unwrap() > 0.0));
    assert_eq!(report["peer"], "async-nats,hub");
    assert!(
        stdout.contains("W1 publish, await each ack: async-nats/hub / async-nats/nats-server = "),
        "{stdout}"
    );
    // Every run deleted the streams it created, on both servers.
    assert_eq!(stream_names(&url), Vec::<String>::new());
    assert_eq!(stream_names(&hub_url), Vec::<String>::new());
    runtime.block_on(hub.stop());
}

#[test]
fn a_missing_hub_binary_is_named_with_the_way_to_build_it() {
    let output = durabus_bench()
        .args([
            "bench",
            "--peer",
            "hub",
            "--hub-bin",
            "/nonexistent/durabus",
            "--msgs",
            "10",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("/nonexistent/durabus is missing")
            && stderr.contains("cargo build --release -p durabus-cli"),
        "{stderr}"
    );
}

#[test]
fn the_hub_beside_async_nats_needs_a_nats_server_url() {
    let output = durabus_bench()
        .args(["bench", "--peer", "async-nats,hub", "--msgs", "10"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("--url nats://"), "{stderr}");
}
