//! End-to-end test of `durabus-bench report`: the JSON of real bench runs
//! becomes the Markdown report, with the targets checked, and the SVG chart.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
use common::durabus_bench;

#[test]
fn report_turns_bench_runs_into_markdown_with_targets_and_a_chart() {
    let dir = tempfile::tempdir().unwrap();
    let json_out = dir.path().join("file-none.json");
    let output = durabus_bench()
        .args(["bench", "--msgs", "500", "--workloads", "w1,w2,w4"])
        .arg("--json-out")
        .arg(&json_out)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(stderr.contains("durabus bench on file:"), "{stderr}");

    let md = dir.path().join("report.md");
    let svg = dir.path().join("report.svg");
    let output = durabus_bench()
        .args(["report", "--about", "a test machine", "--out"])
        .arg(&md)
        .arg("--svg")
        .arg(&svg)
        .arg(format!("file-none={}", json_out.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let md = std::fs::read_to_string(&md).unwrap();
    assert!(
        md.starts_with("# durabus benchmarks\n\na test machine\n"),
        "{md}"
    );
    assert!(md.contains("| workload | what | file-none |"), "{md}");
    for row in [
        "| W1 | publish, await each ack |",
        "| W2 | publish_batch |",
        "| W4 | replay from seq 1 |",
        "| W4 | consume, explicit ack |",
    ] {
        assert!(md.contains(row), "{row} missing from {md}");
    }
    assert!(md.contains("## Targets (docs/performance.md)"), "{md}");
    assert!(
        md.contains("| W1 >= 50x JetStream sync publish (file, none / raw async-nats) | not measured (needs file-none and a nats run with --peer async-nats) | - |"),
        "{md}"
    );
    assert!(
        md.contains("![throughput, msg/s, log scale](report.svg)"),
        "{md}"
    );
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg"), "{svg}");
    assert!(svg.contains("file-none"), "{svg}");

    // An input that is not LABEL=FILE is refused, saying what is expected.
    let output = durabus_bench()
        .args(["report", "nolabel.json"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is not LABEL=FILE"), "{stderr}");
}
