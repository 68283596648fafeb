//! `durabus-bench report`: one Markdown table and one SVG chart from the
//! JSON of several `durabus-bench bench --json-out` runs (or `durabus bench
//! --json-out`: the same JSON), with the targets of `docs/performance.md`
//! checked against the figures (`bench/compare` runs it).
//!
//! Each input is `LABEL=FILE`. A durabus row is shown under its file's
//! label; a peer's row (raw async-nats, Redis) under the peer's own name.
//! The targets look rows up by these labels: `file-none`, `file-always`,
//! `memory` and `nats` (a `--peer durabus,async-nats` run), as
//! `bench/compare` names them, and the hub's against nats-server by the
//! peers of a `--peer async-nats,hub` run (`async-nats/nats-server`,
//! `async-nats/hub-none`, ...), which also get a section of their own; a
//! target whose rows are missing says so.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context as _};
use clap::Args;
use plotters::prelude::*;
use serde_json::Value;

/// Arguments of `durabus-bench report`.
#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// Bench results as LABEL=FILE (the JSON of `durabus-bench bench --json-out`).
    #[arg(required = true, value_name = "LABEL=FILE")]
    inputs: Vec<String>,
    /// Write the Markdown report here (default: stdout).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Also draw the throughput chart as SVG here.
    #[arg(long, value_name = "FILE")]
    svg: Option<PathBuf>,
    /// Also draw W8's curves (each cost against the store's size, durabus
    /// and nats-server, and W6's memory samples) as SVG here.
    #[arg(long, value_name = "FILE")]
    w8_svg: Option<PathBuf>,
    /// A line about the machine and the run, put under the title.
    #[arg(long, value_name = "TEXT")]
    about: Option<String>,
}

/// One result row, as read back.
#[derive(Debug, Clone)]
struct Row {
    /// The column: the input's label for durabus rows, else the peer.
    column: String,
    workload: String,
    name: String,
    messages: u64,
    msgs_per_sec: f64,
    seconds: f64,
    vs_fdatasync: Option<f64>,
    p99_us: Option<f64>,
    latency: Option<String>,
    rss_mib: Option<f64>,
    /// W6: (messages so far, RSS growth in MiB) along the run.
    rss_samples: Vec<(u64, f64)>,
    /// W8: the point of a curve.
    growth: Option<Point>,
    notes: String,
}

/// One point of a W8 curve, as read back.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    axis: String,
    size: u64,
    value: f64,
    unit: String,
}

impl Point {
    /// The value for a table: `12.3 ms`, `41.0 MiB`, `57 B`.
    fn cell(&self) -> String {
        match self.unit.as_str() {
            "B" | "files" => format!("{:.0} {}", self.value, self.unit),
            "ms" if self.value >= 100.0 => format!("{:.0} ms", self.value),
            unit => format!("{:.1} {unit}", self.value),
        }
    }
}

/// A comparison of a `--peer durabus,async-nats` run.
#[derive(Debug, Clone)]
struct Ratio {
    label: String,
    workload: String,
    name: String,
    ratio: f64,
}

fn read(inputs: &[String]) -> anyhow::Result<(Vec<Row>, Vec<Ratio>)> {
    let mut rows = Vec::new();
    let mut ratios = Vec::new();
    for input in inputs {
        let Some((label, file)) = input.split_once('=') else {
            bail!("{input:?} is not LABEL=FILE (e.g. file-none=results/file-none.json)");
        };
        let text = std::fs::read_to_string(file).with_context(|| format!("cannot read {file}"))?;
        let report: Value = serde_json::from_str(&text)
            .with_context(|| format!("{file} is not the JSON of durabus bench --json-out"))?;
        let Some(results) = report["results"].as_array() else {
            bail!("{file} has no \"results\" list: is it the JSON of durabus bench --json-out?");
        };
        for r in results {
            let peer = r["peer"].as_str().unwrap_or_default();
            let column = if peer.starts_with("durabus/") || peer.is_empty() {
                label.to_owned()
            } else {
                peer.to_owned()
            };
            let latency = &r["latency"];
            rows.push(Row {
                column,
                workload: r["workload"].as_str().unwrap_or("?").to_owned(),
                name: r["name"].as_str().unwrap_or("?").to_owned(),
                messages: r["messages"].as_u64().unwrap_or(0),
                msgs_per_sec: r["msgs_per_sec"].as_f64().unwrap_or(0.0),
                seconds: r["seconds"].as_f64().unwrap_or(0.0),
                vs_fdatasync: r["vs_fdatasync"].as_f64(),
                p99_us: latency["p99_us"].as_f64(),
                latency: latency["p50_us"].as_f64().map(|p50| {
                    format!(
                        "{p50:.1} / {:.1} / {:.1} µs",
                        latency["p99_us"].as_f64().unwrap_or(0.0),
                        latency["p999_us"].as_f64().unwrap_or(0.0)
                    )
                }),
                rss_mib: r["rss_growth_mib"].as_f64(),
                rss_samples: r["rss_samples"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|s| Some((s["messages"].as_u64()?, s["rss_growth_mib"].as_f64()?)))
                    .collect(),
                growth: (|| {
                    let g = &r["growth"];
                    Some(Point {
                        axis: g["axis"].as_str()?.to_owned(),
                        size: g["size"].as_u64()?,
                        value: g["value"].as_f64()?,
                        unit: g["unit"].as_str().unwrap_or_default().to_owned(),
                    })
                })(),
                notes: r["notes"].as_str().unwrap_or_default().to_owned(),
            });
        }
        for c in report["comparison"].as_array().into_iter().flatten() {
            ratios.push(Ratio {
                label: label.to_owned(),
                workload: c["workload"].as_str().unwrap_or("?").to_owned(),
                name: c["name"].as_str().unwrap_or("?").to_owned(),
                ratio: c["ratio"].as_f64().unwrap_or(0.0),
            });
        }
    }
    Ok((rows, ratios))
}

/// The distinct values of `f` over `rows`, in first-seen order.
fn distinct<'a>(
    rows: &'a [Row],
    f: impl Fn(&'a Row) -> (&'a str, &'a str),
) -> Vec<(&'a str, &'a str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in rows {
        let k = f(r);
        if !out.contains(&k) {
            out.push(k);
        }
    }
    out
}

fn columns(rows: &[Row]) -> Vec<&str> {
    distinct(rows, |r| (r.column.as_str(), ""))
        .into_iter()
        .map(|(c, _)| c)
        .collect()
}

/// Workload rows in `docs/performance.md` order.
fn lines(rows: &[Row]) -> Vec<(&str, &str)> {
    let mut l = distinct(rows, |r| (r.workload.as_str(), r.name.as_str()));
    // The disk's fdatasync baseline sits just before W3, which it explains.
    fn rank(w: &str) -> &str {
        if w == "disk" {
            "W2~"
        } else {
            w
        }
    }
    l.sort_by(|a, b| rank(a.0).cmp(rank(b.0)));
    l
}

fn find<'a>(rows: &'a [Row], column: &str, workload: &str, name: &str) -> Option<&'a Row> {
    rows.iter()
        .find(|r| r.column == column && r.workload == workload && r.name.contains(name))
}

fn rate(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.2}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}

/// The cell of `row` in the figures table.
fn cell(row: &Row) -> String {
    match row.workload.as_str() {
        "W5" => row.latency.clone().unwrap_or_else(|| "-".into()),
        "W6" => row
            .rss_mib
            .map_or_else(|| "-".into(), |m| format!("RSS +{m:.1} MiB")),
        "W7" => format!("{:.0} ms", row.seconds * 1000.0),
        _ => match dropped(row) {
            Some((lost, of)) => {
                format!("{} ({} dropped)", rate(row.msgs_per_sec), percent(lost, of))
            }
            None => rate(row.msgs_per_sec),
        },
    }
}

/// Deliveries a fan-out row lost, and those it expected: its notes say
/// `DROPPED <lost> of <expected> deliveries`.
fn dropped(row: &Row) -> Option<(u64, u64)> {
    let rest = row.notes.split("DROPPED ").nth(1)?;
    let mut words = rest.split_whitespace();
    let lost = words.next()?.parse().ok()?;
    let of = words.nth(1)?.parse().ok()?;
    Some((lost, of))
}

/// `part` of `whole` in percent, for display.
fn percent(part: u64, whole: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    let p = part as f64 * 100.0 / whole.max(1) as f64;
    if p < 1.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.0}%")
    }
}

/// nats-server's column in a hub comparison (`--peer async-nats,hub`).
const NATS_SERVER: &str = "async-nats/nats-server";

/// The workload of the core pub/sub fan-out rows.
const PUBSUB: &str = "pubsub";

/// The hub columns of a hub comparison: `async-nats/hub-<durability>`.
fn hub_columns(rows: &[Row]) -> Vec<&str> {
    columns(rows)
        .into_iter()
        .filter(|c| c.starts_with("async-nats/hub"))
        .collect()
}

/// The hub column the targets judge: durability `none` (nats-server 2.9's
/// file store acknowledges before any fsync, as `none` does), else the one
/// of `--hub-url`, else the first.
fn judged_hub(rows: &[Row]) -> Option<&str> {
    let hubs = hub_columns(rows);
    ["async-nats/hub-none", "async-nats/hub"]
        .into_iter()
        .find_map(|want| hubs.iter().copied().find(|c| *c == want))
        .or_else(|| hubs.first().copied())
}

/// The bar of docs/performance.md for the hub on `workload`: 3x nats-server
/// on JetStream publish and consume, 0.8x on core pub/sub.
fn hub_bar(workload: &str) -> f64 {
    if workload == PUBSUB {
        0.8
    } else {
        3.0
    }
}

/// One target of `docs/performance.md`: what was measured, and whether it holds.
struct Target {
    what: &'static str,
    measured: Option<(String, bool)>,
    missing: &'static str,
}

fn targets(rows: &[Row], ratios: &[Ratio]) -> Vec<Target> {
    let r = |c: &str, w: &str, n: &str| find(rows, c, w, n);
    let ratio_of =
        |a: Option<&Row>, b: Option<&Row>| Some(a?.msgs_per_sec / b?.msgs_per_sec.max(1e-9));
    // A rate of at least `bar`, and a ratio of at least `bar` times.
    let min_rate = |what, row: Option<&Row>, bar: f64, missing| Target {
        what,
        measured: row.map(|m| (rate(m.msgs_per_sec), m.msgs_per_sec >= bar)),
        missing,
    };
    let min_times = |what, x: Option<f64>, bar: f64, missing| Target {
        what,
        measured: x.map(|x| (format!("{x:.1}x"), x >= bar)),
        missing,
    };
    let mut t = Vec::new();
    t.push(min_times(
        "W1 >= 50x JetStream sync publish (file, none / raw async-nats)",
        ratio_of(r("file-none", "W1", ""), r("async-nats/nats", "W1", "")),
        50.0,
        "needs file-none and a nats run with --peer async-nats",
    ));
    let w2 = r("file-none", "W2", "");
    t.push(min_rate(
        "W2 >= 3M msg/s (file, none)",
        w2,
        3e6,
        "needs file-none",
    ));
    // Redis's best pipelined figure (pipelines of --batch, or 4x64).
    let redis_w2 = rows
        .iter()
        .filter(|m| m.column == "redis/streams" && m.workload == "W2")
        .max_by(|a, b| a.msgs_per_sec.total_cmp(&b.msgs_per_sec));
    t.push(min_times(
        "W2 >= 5x Redis pipelined XADD",
        ratio_of(w2, redis_w2),
        5.0,
        "needs file-none and a redis run",
    ));
    let w3 = r("file-always", "W3", "1 publisher").and_then(|m| m.vs_fdatasync);
    t.push(Target {
        what: "W3 1 publisher >= 90% of the disk's fdatasync rate",
        measured: w3.map(|x| (format!("{:.0}%", x * 100.0), x >= 0.9)),
        missing: "needs file-always",
    });
    t.push(min_times(
        "W3 64 publishers >= 3x Redis appendfsync always, 50 clients",
        ratio_of(r("file-always", "W3", "64"), r("redis/streams", "W3", "50")),
        3.0,
        "needs file-always and a redis run",
    ));
    t.push(min_rate(
        "W4 replay >= 5M msg/s (file)",
        r("file-none", "W4", "replay"),
        5e6,
        "needs file-none",
    ));
    t.push(min_rate(
        "W4 explicit-ack consume >= 1M msg/s (file)",
        r("file-none", "W4", "consume"),
        1e6,
        "needs file-none",
    ));
    let w5 = r("memory", "W5", "")
        .or_else(|| r("file-none", "W5", ""))
        .and_then(|m| m.p99_us);
    t.push(Target {
        what: "W5 in-process publish -> subscriber p99 <= 10 µs",
        measured: w5.map(|p| (format!("{p:.1} µs"), p <= 10.0)),
        missing: "needs memory or file-none with W5",
    });
    // The bar is for 10M: a longer run is judged by its 10M sample.
    let w6 = r("file-none", "W6", "").and_then(|m| {
        m.rss_samples
            .iter()
            .find(|(n, _)| *n == 10_000_000)
            .map(|(n, mib)| (*mib, *n))
            .or(Some((m.rss_mib?, m.messages)))
    });
    t.push(Target {
        what: "W6 RSS < 64 MiB over baseline for 10M messages with a stalled consumer",
        measured: w6.map(|(mib, n)| {
            #[allow(clippy::cast_precision_loss)]
            let shown = rate(n as f64);
            (
                format!("+{mib:.1} MiB ({shown} messages)"),
                mib < 64.0 && n >= 10_000_000,
            )
        }),
        missing: "needs file-none with W6",
    });
    let w7 = rows.iter().find(|m| m.workload == "W7");
    t.push(Target {
        what: "W7 open a 1 GiB stream < 200 ms",
        measured: w7.map(|m| {
            (
                format!(
                    "{:.0} ms ({})",
                    m.seconds * 1000.0,
                    m.notes.split(',').next().unwrap_or("")
                ),
                m.seconds < 0.2,
            )
        }),
        missing: "needs a run with --workloads w7",
    });
    let hub = judged_hub(rows);
    for (workload, name, what) in [
        (
            "W1",
            "await each ack",
            "hub W1 >= 3x nats-server, publish awaiting each ack",
        ),
        (
            "W2",
            "in flight",
            "hub W2 >= 3x nats-server, publish with 256 acks in flight",
        ),
        (
            "W4",
            "consume",
            "hub W4 >= 3x nats-server, pull consume with explicit ack",
        ),
        ("W4", "replay", "hub W4 >= 3x nats-server, ordered replay"),
        (
            PUBSUB,
            "fan-out",
            "hub core pub/sub fan-out >= 0.8x nats-server, nothing dropped",
        ),
    ] {
        let ours = hub.and_then(|h| r(h, workload, name));
        let theirs = r(NATS_SERVER, workload, name);
        let bar = hub_bar(workload);
        t.push(Target {
            what,
            measured: ours.zip(theirs).map(|(o, n)| {
                let x = o.msgs_per_sec / n.msgs_per_sec.max(1e-9);
                let mut text = format!(
                    "{x:.2}x ({} / {}, {})",
                    rate(o.msgs_per_sec),
                    rate(n.msgs_per_sec),
                    o.column
                );
                for (who, row) in [("hub", o), ("nats-server", n)] {
                    if let Some((l, of)) = dropped(row) {
                        let _ = write!(text, "; {who} dropped {}", percent(l, of));
                    }
                }
                // The hub must deliver everything; nats-server's drops are
                // shown, not judged.
                (text, x >= bar && dropped(o).is_none())
            }),
            missing: "needs a --peer async-nats,hub run",
        });
    }
    let nats: Vec<&Ratio> = ratios.iter().filter(|c| c.label == "nats").collect();
    t.push(Target {
        what: "NATS backend within 5% of raw async-nats (W1, W2, W4)",
        measured: (!nats.is_empty()).then(|| {
            let text = nats
                .iter()
                .map(|c| format!("{} {}: {:.3}", c.workload, c.name, c.ratio))
                .collect::<Vec<_>>()
                .join("; ");
            (text, nats.iter().all(|c| c.ratio >= 0.95))
        }),
        missing: "needs nats (--peer durabus,async-nats)",
    });
    t.extend(w8_targets(rows));
    t
}

/// The SVG files a report links to.
#[derive(Debug, Clone, Copy, Default)]
struct Charts<'a> {
    /// The throughput chart.
    throughput: Option<&'a str>,
    /// W8's curves.
    w8: Option<&'a str>,
}

fn markdown(rows: &[Row], ratios: &[Ratio], about: Option<&str>, charts: Charts<'_>) -> String {
    let mut md = String::from("# durabus benchmarks\n\n");
    if let Some(a) = about {
        let _ = writeln!(md, "{a}\n");
    }
    // W8's points have a section of their own.
    let figures: Vec<Row> = rows
        .iter()
        .filter(|r| r.growth.is_none() && r.workload != "W8")
        .cloned()
        .collect();
    if !figures.is_empty() {
        let cols = columns(&figures);
        let _ = writeln!(
            md,
            "## Figures\n\nMedians; msg/s unless the row says otherwise (W5: latency p50 / p99 / p99.9, W6: memory growth, W7: open time).\n"
        );
        let _ = writeln!(md, "| workload | what | {} |", cols.join(" | "));
        let _ = writeln!(md, "|---|---|{}", "---:|".repeat(cols.len()));
        for (w, n) in lines(&figures) {
            let cells: Vec<String> = cols
                .iter()
                .map(|c| {
                    rows.iter()
                        .find(|r| r.column == *c && r.workload == w && r.name == n)
                        .map_or_else(|| "".into(), cell)
                })
                .collect();
            let _ = writeln!(md, "| {w} | {n} | {} |", cells.join(" | "));
        }
    }
    let _ = writeln!(md, "\n## Targets (docs/performance.md)\n");
    let _ = writeln!(md, "| target | measured | holds |\n|---|---|---|");
    for t in targets(rows, ratios) {
        let (m, ok) = match &t.measured {
            Some((m, ok)) => (m.clone(), if *ok { "yes" } else { "**no**" }),
            None => (format!("not measured ({})", t.missing), "-"),
        };
        let _ = writeln!(md, "| {} | {m} | {ok} |", t.what);
    }
    hub_section(&mut md, rows);
    let w6: Vec<&Row> = rows
        .iter()
        .filter(|r| r.workload == "W6" && !r.rss_samples.is_empty())
        .collect();
    if !w6.is_empty() {
        let _ = writeln!(
            md,
            "\n## W6: memory as the log grows\n\nRSS growth over the baseline after so many messages (a stalled subscriber and durable consumer).\n"
        );
        let _ = writeln!(md, "| column | messages | RSS growth |\n|---|---:|---:|");
        for r in w6 {
            for (n, mib) in &r.rss_samples {
                #[allow(clippy::cast_precision_loss)]
                let shown = rate(*n as f64);
                let _ = writeln!(md, "| {} | {shown} | +{mib:.1} MiB |", r.column);
            }
        }
    }
    w8_section(&mut md, rows, charts.w8);
    if let Some(svg) = charts.throughput {
        let _ = writeln!(md, "\n![throughput, msg/s, log scale]({svg})");
    }
    md
}

/// What the hub section compares, and why its targets judge durability `none`.
const HUB_ABOUT: &str = "The same raw async-nats client and workloads against \
    nats-server (file storage) and against `durabus serve` on a fresh `file:` store, each \
    a process of its own, interleaved in one run; medians, msg/s (the fan-out counts \
    deliveries to all subscribers, and what a server dropped). Durability: nats-server \
    2.9's file store acknowledges a publish before any fsync (it syncs on a timer), as the \
    hub does under `none` (each record handed to the OS with a write before the ack, no \
    fsync), so `none` is the like-for-like column; `always` (an fsync before each ack, \
    shared by concurrent publishers) shows what per-message durability costs.";

/// The hub against nats-server: every row of a `--peer async-nats,hub`
/// run, each hub's ratio to nats-server and the bar it is held to.
fn hub_section(md: &mut String, rows: &[Row]) {
    let hubs = hub_columns(rows);
    if hubs.is_empty() || !rows.iter().any(|r| r.column == NATS_SERVER) {
        return;
    }
    let _ = writeln!(
        md,
        "\n## Hub vs nats-server\n\n{HUB_ABOUT} The targets judge `{}`.\n",
        judged_hub(rows).unwrap_or_default()
    );
    let mut header = String::from("| workload | what | nats-server |");
    let mut rule = String::from("|---|---|---:|");
    for h in &hubs {
        let _ = write!(header, " {h} | / nats-server |");
        rule.push_str("---:|---:|");
    }
    let _ = writeln!(md, "{header} target |\n{rule}---|");
    let mine: Vec<Row> = rows
        .iter()
        .filter(|r| r.column == NATS_SERVER || hubs.contains(&r.column.as_str()))
        .cloned()
        .collect();
    for (w, n) in lines(&mine) {
        let exact = |c: &str| {
            mine.iter()
                .find(|r| r.column == c && r.workload == w && r.name == n)
        };
        let Some(theirs) = exact(NATS_SERVER) else {
            continue;
        };
        let mut line = format!("| {w} | {n} | {} |", cell(theirs));
        for h in &hubs {
            match exact(h) {
                Some(o) => {
                    let x = o.msgs_per_sec / theirs.msgs_per_sec.max(1e-9);
                    let _ = write!(line, " {} | {x:.2}x |", cell(o));
                }
                None => line.push_str(" | |"),
            }
        }
        let drops = if w == PUBSUB { ", no drops" } else { "" };
        let _ = writeln!(line, " >= {}x{drops} |", hub_bar(w));
        md.push_str(&line);
    }
}

/// Grouped horizontal bars of the throughput rows (W1-W4, the disk
/// baseline and the core pub/sub fan-out), msg/s on a log scale, one colour
/// per column.
fn chart(rows: &[Row], path: &std::path::Path) -> anyhow::Result<()> {
    let throughput: Vec<&Row> = rows
        .iter()
        .filter(|r| {
            matches!(
                r.workload.as_str(),
                "W1" | "W2" | "W3" | "W4" | "disk" | PUBSUB
            )
        })
        .filter(|r| r.msgs_per_sec > 0.0)
        .collect();
    let owned: Vec<Row> = throughput.iter().map(|r| (*r).clone()).collect();
    let groups = lines(&owned);
    let cols = columns(&owned);
    if groups.is_empty() {
        bail!("no throughput rows to chart");
    }
    let per = cols.len() + 1;
    let height = 60 + groups.len() * per * 12;
    let max = throughput
        .iter()
        .map(|r| r.msgs_per_sec)
        .fold(1.0f64, f64::max)
        * 50.0; // room on the right for the legend
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1000, u32::try_from(height).unwrap_or(2000)))
            .into_drawing_area();
        root.fill(&WHITE)?;
        let mut c = ChartBuilder::on(&root)
            .caption("durabus bench: msg/s (log scale)", ("sans-serif", 18))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(330)
            .build_cartesian_2d((100f64..max).log_scale(), 0f64..(groups.len() * per) as f64)?;
        c.configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .x_desc("msg/s")
            .x_label_formatter(&|v| rate(*v))
            .draw()?;
        // The first group at the top.
        let top = |gi: usize| (groups.len() - 1 - gi) * per;
        for (ci, col) in cols.iter().enumerate() {
            let color = Palette99::pick(ci).to_rgba();
            let bars: Vec<Rectangle<(f64, f64)>> = groups
                .iter()
                .enumerate()
                .filter_map(|(gi, (w, n))| {
                    let r = owned
                        .iter()
                        .find(|r| r.column == *col && r.workload == *w && r.name == *n)?;
                    let y = (top(gi) + cols.len() - 1 - ci) as f64;
                    Some(Rectangle::new(
                        [(100.0, y + 0.1), (r.msgs_per_sec, y + 0.9)],
                        color.filled(),
                    ))
                })
                .collect();
            c.draw_series(bars)?.label(*col).legend(move |(x, y)| {
                Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
            });
        }
        for (gi, (w, n)) in groups.iter().enumerate() {
            let y = top(gi) as f64 + cols.len() as f64 / 2.0;
            let (px, py) = c.backend_coord(&(100.0, y));
            root.draw(&Text::new(
                format!("{w} {n}"),
                (px.saturating_sub(320), py),
                ("sans-serif", 12),
            ))?;
        }
        c.configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .position(SeriesLabelPosition::UpperRight)
            .draw()?;
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

/// The curve of W6's memory samples in W8's chart.
const W6_CURVE: &str = "W6: RSS growth with a stalled consumer";

/// The nats-server column of W8 (`durabus-bench bench --peer nats-server`).
const W8_NATS: &str = "nats-server";

/// One panel of W8's chart: a cost against a size, one line per column.
#[derive(Debug, Clone, PartialEq)]
struct Curve {
    /// The measure (a row's name).
    name: String,
    /// What the size counts: subjects, streams, consumers, messages.
    axis: String,
    /// The cost's unit.
    unit: String,
    /// Per column, its points (size, cost) by size.
    lines: Vec<(String, Vec<(u64, f64)>)>,
}

/// W8's points (and W6's memory samples) as curves, in the order first seen,
/// W6 last.
fn curves(rows: &[Row]) -> Vec<Curve> {
    let mut out: Vec<Curve> = Vec::new();
    let mut add = |name: &str, axis: &str, unit: &str, column: &str, point: (u64, f64)| {
        let i = match out.iter().position(|c| c.name == name) {
            Some(i) => i,
            None => {
                out.push(Curve {
                    name: name.to_owned(),
                    axis: axis.to_owned(),
                    unit: unit.to_owned(),
                    lines: Vec::new(),
                });
                out.len() - 1
            }
        };
        let curve = &mut out[i];
        match curve.lines.iter_mut().find(|(c, _)| c == column) {
            Some((_, points)) => points.push(point),
            None => curve.lines.push((column.to_owned(), vec![point])),
        }
    };
    for r in rows {
        if let Some(p) = &r.growth {
            add(&r.name, &p.axis, &p.unit, &r.column, (p.size, p.value));
        }
    }
    for r in rows.iter().filter(|r| r.workload == "W6") {
        for &(n, mib) in &r.rss_samples {
            add(W6_CURVE, "messages", "MiB", &r.column, (n, mib));
        }
    }
    for c in &mut out {
        for (_, points) in &mut c.lines {
            points.sort_by_key(|p| p.0);
        }
    }
    out
}

/// A log axis holding sizes `min..=max`: from the power of ten at or
/// below the smallest to the one at or above the largest, one decade at
/// least.
fn decades(min: u64, max: u64) -> (f64, f64) {
    #[allow(clippy::cast_precision_loss)]
    let (lo, hi) = (min.max(1) as f64, max.max(1) as f64);
    let low = 10f64.powf(lo.log10().floor());
    let high = 10f64.powf(hi.log10().ceil()).max(low * 10.0);
    (low, high)
}

/// The top of a linear axis from 0 holding `max`: a round number (1, 1.5,
/// 2, 3, 5 or 7.5 times a power of ten) at least 10% above it.
fn y_top(max: f64) -> f64 {
    let want = (max * 1.1).max(f64::MIN_POSITIVE);
    if !want.is_finite() || max <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(want.log10().floor());
    [1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|top| *top >= want)
        .unwrap_or(10.0 * power)
}

/// A size for an axis or a table: 1, 100, 10k, 1M, 2.5M.
fn short(n: f64) -> String {
    let (v, unit) = if n >= 1e6 {
        (n / 1e6, "M")
    } else if n >= 1e3 {
        (n / 1e3, "k")
    } else {
        (n, "")
    };
    if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}{unit}")
    } else {
        format!("{v:.1}{unit}")
    }
}

/// The column of durabus's W8 points: the first with any that is not
/// nats-server's.
fn w8_column(rows: &[Row]) -> Option<&str> {
    rows.iter()
        .find(|r| r.growth.is_some() && r.column != W8_NATS)
        .map(|r| r.column.as_str())
}

/// The point of measure `name` in `column` at the largest size measured,
/// or at `size` when given.
fn w8_point<'a>(rows: &'a [Row], column: &str, name: &str, size: Option<u64>) -> Option<&'a Point> {
    rows.iter()
        .filter(|r| r.column == column && r.name == name)
        .filter_map(|r| r.growth.as_ref())
        .filter(|p| size.is_none_or(|s| p.size == s))
        .max_by_key(|p| p.size)
}

/// W8's targets of docs/performance.md.
fn w8_targets(rows: &[Row]) -> Vec<Target> {
    use durabus_workloads::growth::names;
    let col = w8_column(rows).unwrap_or_default();
    let point = |name, size| w8_point(rows, col, name, size);
    let per_subject = point(names::SUBJECTS_BYTES_OPEN, None);
    let base = point(names::STREAMS_OPEN, Some(1));
    let streams = point(names::STREAMS_OPEN, None);
    let consumers = point(names::CONSUMERS_OPEN, None);
    let list = point(names::STREAMS_LIST, None);
    let cli = point(names::STREAMS_CLI, None);
    let times = |p: &Point, b: &Point| p.value / b.value.max(1e-9);
    vec![
        Target {
            what: "W8 per-subject state <= 64 B resident per subject",
            measured: per_subject.map(|p| {
                (
                    format!("{} ({} subjects, {col})", p.cell(), short_u(p.size)),
                    p.value <= 64.0,
                )
            }),
            missing: "needs a run with --workloads w8",
        },
        Target {
            what: "W8 open with 10k streams and 100k consumers within 2x of a store with one",
            measured: base.zip(streams).zip(consumers).map(|((b, s), c)| {
                let (xs, xc) = (times(s, b), times(c, b));
                (
                    format!(
                        "{} streams {xs:.1}x ({}), {} consumers {xc:.1}x ({}); one stream {}",
                        short_u(s.size),
                        s.cell(),
                        short_u(c.size),
                        c.cell(),
                        b.cell()
                    ),
                    xs <= 2.0 && xc <= 2.0 && s.size >= 10_000 && c.size >= 100_000,
                )
            }),
            missing: "needs a run with --workloads w8 whose --w8-streams starts at 1",
        },
        Target {
            what: "W8 stream ls < 100 ms at 10k streams (list_streams, and the CLI end to end when timed)",
            measured: list.map(|p| {
                let fast = |p: &Point| p.value < 100.0 && p.size >= 10_000;
                let mut text = format!("list_streams {} ({} streams)", p.cell(), short_u(p.size));
                let mut holds = fast(p);
                if let Some(c) = cli {
                    text += &format!("; durabus stream ls {} ({} streams)", c.cell(), short_u(c.size));
                    holds &= fast(c);
                }
                (text, holds)
            }),
            missing: "needs a run with --workloads w8",
        },
    ]
}

/// [`short`] of a count.
fn short_u(n: u64) -> String {
    #[allow(clippy::cast_precision_loss)]
    short(n as f64)
}

/// What W8's section says before its table.
const W8_ABOUT: &str = "Each cost against the size of the store (docs/performance.md \
    \"W8\"): durabus opens its stores in a fresh process; nats-server is stopped \
    (SIGTERM) and started again on its store, timed from the new process's start. \
    Memory is resident memory (durabus: of the process; nats-server: its VmRSS).";

/// W8: a table of every curve's points, a column per peer.
fn w8_section(md: &mut String, rows: &[Row], svg: Option<&str>) {
    let w8: Vec<Curve> = curves(rows)
        .into_iter()
        .filter(|c| c.name != W6_CURVE)
        .collect();
    // A part that failed says where it stopped.
    let stopped: Vec<&Row> = rows
        .iter()
        .filter(|r| r.workload == "W8" && r.growth.is_none())
        .collect();
    if w8.is_empty() && stopped.is_empty() {
        return;
    }
    let _ = writeln!(md, "\n## W8: costs as the store grows\n\n{W8_ABOUT}\n");
    for r in &stopped {
        let _ = writeln!(md, "- **{}**: {}: {}", r.column, r.name, r.notes);
    }
    if !stopped.is_empty() {
        md.push('\n');
    }
    if let Some(svg) = svg {
        let _ = writeln!(md, "![W8: cost against size, log x axis]({svg})\n");
    }
    let mut cols: Vec<&str> = Vec::new();
    for c in &w8 {
        for (col, _) in &c.lines {
            if !cols.contains(&col.as_str()) {
                cols.push(col);
            }
        }
    }
    let _ = writeln!(md, "| measure | size | {} |", cols.join(" | "));
    let _ = writeln!(md, "|---|---:|{}", "---:|".repeat(cols.len()));
    for c in &w8 {
        let mut sizes: Vec<u64> = c
            .lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|p| p.0))
            .collect();
        sizes.sort_unstable();
        sizes.dedup();
        for size in sizes {
            let cells: Vec<String> = cols
                .iter()
                .map(|col| {
                    w8_point(rows, col, &c.name, Some(size)).map_or_else(String::new, Point::cell)
                })
                .collect();
            let _ = writeln!(
                md,
                "| {} | {} {} | {} |",
                c.name,
                short_u(size),
                c.axis,
                cells.join(" | ")
            );
        }
    }
}

/// W8's curves (and W6's memory samples): a panel per measure, cost
/// against size on a log x axis, a line per column (durabus, nats-server).
fn w8_chart(rows: &[Row], path: &std::path::Path) -> anyhow::Result<()> {
    let all = curves(rows);
    if all.is_empty() {
        bail!("no W8 points (or W6 samples) to draw");
    }
    let mut cols: Vec<String> = Vec::new();
    for c in &all {
        for (col, _) in &c.lines {
            if !cols.contains(col) {
                cols.push(col.clone());
            }
        }
    }
    let panels_down = all.len().div_ceil(2);
    let height = u32::try_from(panels_down * 300).unwrap_or(6000);
    let draw = || -> Result<(), Box<dyn std::error::Error>> {
        let root = SVGBackend::new(path, (1100, height)).into_drawing_area();
        root.fill(&WHITE)?;
        let areas = root.split_evenly((panels_down, 2));
        for (curve, area) in all.iter().zip(areas.iter()) {
            let sizes = curve.lines.iter().flat_map(|(_, p)| p.iter().map(|p| p.0));
            let (min, max) = sizes.fold((u64::MAX, 0), |(lo, hi), s| (lo.min(s), hi.max(s)));
            let (x0, x1) = decades(min, max);
            let top = y_top(
                curve
                    .lines
                    .iter()
                    .flat_map(|(_, p)| p.iter().map(|p| p.1))
                    .fold(0.0, f64::max),
            );
            let mut c = ChartBuilder::on(area)
                .caption(&curve.name, ("sans-serif", 15))
                .margin(12)
                .x_label_area_size(32)
                .y_label_area_size(55)
                .build_cartesian_2d((x0..x1).log_scale(), 0f64..top)?;
            c.configure_mesh()
                .x_desc(format!("{} (log scale)", curve.axis))
                .y_desc(curve.unit.as_str())
                .x_label_formatter(&|v| short(*v))
                .draw()?;
            for (col, points) in &curve.lines {
                let ci = cols.iter().position(|c| c == col).unwrap_or(0);
                let color = Palette99::pick(ci).to_rgba();
                #[allow(clippy::cast_precision_loss)]
                let xy: Vec<(f64, f64)> = points.iter().map(|&(n, v)| (n as f64, v)).collect();
                c.draw_series(LineSeries::new(xy.clone(), color.stroke_width(2)))?
                    .label(col.as_str())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 14, y)], color.stroke_width(2))
                    });
                c.draw_series(xy.into_iter().map(|p| Circle::new(p, 3, color.filled())))?;
            }
            c.configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .position(SeriesLabelPosition::UpperLeft)
                .draw()?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("cannot draw {}: {e}", path.display()))
}

/// Runs `durabus-bench report`.
pub(crate) fn run(args: ReportArgs) -> anyhow::Result<()> {
    let (rows, ratios) = read(&args.inputs)?;
    // A report of W8 alone has no throughput to chart.
    let throughput = args.svg.as_ref().filter(|_| {
        rows.iter()
            .any(|r| r.growth.is_none() && r.msgs_per_sec > 0.0 && r.workload != "W6")
    });
    if let Some(svg) = throughput {
        chart(&rows, svg)?;
    }
    if let Some(svg) = &args.w8_svg {
        w8_chart(&rows, svg)?;
    }
    let name = |p: Option<&PathBuf>| {
        p.and_then(|p| p.file_name())
            .map(|n| n.to_string_lossy().into_owned())
    };
    let (svg_name, w8_name) = (name(throughput), name(args.w8_svg.as_ref()));
    let charts = Charts {
        throughput: svg_name.as_deref(),
        w8: w8_name.as_deref(),
    };
    let md = markdown(&rows, &ratios, args.about.as_deref(), charts);
    match &args.out {
        Some(path) => {
            std::fs::write(path, md).with_context(|| format!("cannot write {}", path.display()))?
        }
        None => {
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", md.trim_end())?;
            out.flush()?;
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn row(column: &str, workload: &str, name: &str, rate: f64) -> Row {
        Row {
            column: column.into(),
            workload: workload.into(),
            name: name.into(),
            messages: rate as u64,
            msgs_per_sec: rate,
            seconds: 1.0,
            vs_fdatasync: None,
            p99_us: None,
            latency: None,
            rss_mib: None,
            rss_samples: Vec::new(),
            growth: None,
            notes: String::new(),
        }
    }

    #[test]
    fn targets_compare_the_named_rows_and_say_what_is_missing() {
        let rows = vec![
            row("file-none", "W1", "publish", 1_000_000.0),
            row("async-nats/nats", "W1", "publish", 10_000.0),
            row("file-none", "W2", "publish_batch", 2_000_000.0),
        ];
        let t = targets(&rows, &[]);
        let w1 = t.iter().find(|t| t.what.starts_with("W1")).unwrap();
        assert_eq!(w1.measured, Some(("100.0x".to_owned(), true)));
        let w2 = t.iter().find(|t| t.what.starts_with("W2 >= 3M")).unwrap();
        assert_eq!(w2.measured, Some(("2.00M".to_owned(), false)));
        let redis = t
            .iter()
            .find(|t| t.what.contains("Redis pipelined"))
            .unwrap();
        assert!(redis.measured.is_none());
        let md = markdown(&rows, &[], Some("test machine"), Charts::default());
        assert!(md.contains("| W1 | publish | 1.00M | 10.0k |"), "{md}");
        assert!(
            md.contains("not measured (needs file-none and a redis run)"),
            "{md}"
        );
    }

    #[test]
    fn the_w6_target_holds_only_for_ten_million_messages() {
        let w6 = |messages: u64| {
            let mut r = row("file-none", "W6", "publish with a stalled consumer", 1e6);
            r.messages = messages;
            r.rss_mib = Some(0.6);
            let t = targets(&[r], &[]);
            t.into_iter()
                .find(|t| t.what.starts_with("W6"))
                .unwrap()
                .measured
        };
        assert_eq!(
            w6(10_000_000),
            Some(("+0.6 MiB (10.00M messages)".to_owned(), true))
        );
        assert_eq!(
            w6(500_000),
            Some(("+0.6 MiB (500.0k messages)".to_owned(), false))
        );
    }

    #[test]
    fn a_long_w6_is_judged_at_ten_million_and_shows_every_sample() {
        let mut r = row("file-none", "W6", "publish with a stalled consumer", 1e6);
        r.messages = 100_000_000;
        r.rss_mib = Some(70.0);
        r.rss_samples = vec![(1_000_000, 1.0), (10_000_000, 2.5), (100_000_000, 70.0)];
        let t = targets(std::slice::from_ref(&r), &[]);
        let w6 = t.iter().find(|t| t.what.starts_with("W6")).unwrap();
        assert_eq!(
            w6.measured,
            Some(("+2.5 MiB (10.00M messages)".to_owned(), true))
        );
        let md = markdown(&[r], &[], None, Charts::default());
        assert!(md.contains("| file-none | 100.00M | +70.0 MiB |"), "{md}");
        assert!(md.contains("| file-none | 10.00M | +2.5 MiB |"), "{md}");
    }

    #[test]
    fn hub_rows_are_judged_against_nats_server_with_drops_failing_the_fan_out() {
        let mut fan = row(
            "async-nats/hub-none",
            "pubsub",
            "core fan-out, 1 publisher -> 4 subscribers",
            900_000.0,
        );
        fan.notes = "1 publisher; DROPPED 50 of 1000 deliveries".into();
        let rows = vec![
            row(
                "async-nats/nats-server",
                "W1",
                "publish, await each ack",
                10_000.0,
            ),
            row(
                "async-nats/hub-none",
                "W1",
                "publish, await each ack",
                35_000.0,
            ),
            row(
                "async-nats/hub-always",
                "W1",
                "publish, await each ack",
                3_000.0,
            ),
            row(
                "async-nats/nats-server",
                "W2",
                "publish, 256 in flight",
                100_000.0,
            ),
            row(
                "async-nats/hub-none",
                "W2",
                "publish, 256 in flight",
                200_000.0,
            ),
            row(
                "async-nats/nats-server",
                "pubsub",
                "core fan-out, 1 publisher -> 4 subscribers",
                1_000_000.0,
            ),
            fan,
        ];
        let t = targets(&rows, &[]);
        let measured = |start: &str| {
            t.iter()
                .find(|t| t.what.starts_with(start))
                .unwrap()
                .measured
                .clone()
        };
        assert_eq!(
            measured("hub W1"),
            Some((
                "3.50x (35.0k / 10.0k, async-nats/hub-none)".to_owned(),
                true
            ))
        );
        assert_eq!(measured("hub W2").map(|m| m.1), Some(false));
        let (text, holds) = measured("hub core").unwrap();
        assert!(!holds, "{text}");
        assert!(
            text.contains("0.90x") && text.contains("hub dropped 5%"),
            "{text}"
        );
        assert!(measured("hub W4 >= 3x nats-server, ordered").is_none());
        let md = markdown(&rows, &[], None, Charts::default());
        assert!(md.contains("## Hub vs nats-server"), "{md}");
        assert!(
            md.contains("| workload | what | nats-server | async-nats/hub-none | / nats-server | async-nats/hub-always | / nats-server | target |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| W1 | publish, await each ack | 10.0k | 35.0k | 3.50x | 3.0k | 0.30x | >= 3x |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| pubsub | core fan-out, 1 publisher -> 4 subscribers | 1.00M | 900.0k (5% dropped) | 0.90x | | | >= 0.8x, no drops |"),
            "{md}"
        );
    }

    fn point(column: &str, name: &str, axis: &str, size: u64, value: f64, unit: &str) -> Row {
        let mut r = row(column, "W8", name, 0.0);
        r.messages = size;
        r.growth = Some(Point {
            axis: axis.into(),
            size,
            value,
            unit: unit.into(),
        });
        r
    }

    #[test]
    fn w8_log_axes_span_whole_decades_around_the_sizes() {
        assert_eq!(decades(1, 10_000), (1.0, 10_000.0));
        assert_eq!(decades(10_000, 1_000_000), (10_000.0, 1_000_000.0));
        assert_eq!(decades(100, 3_000_000), (100.0, 10_000_000.0));
        // One size still gets a decade to sit in.
        assert_eq!(decades(1000, 1000), (1000.0, 10_000.0));
        assert_eq!(decades(0, 0), (1.0, 10.0));
    }

    #[test]
    fn w8_value_axes_end_at_a_round_number_above_the_largest_cost() {
        assert_eq!(y_top(45.0), 50.0);
        assert_eq!(y_top(50.0), 75.0);
        assert_eq!(y_top(0.9), 1.0);
        assert_eq!(y_top(130.0), 150.0);
        assert_eq!(y_top(0.0), 1.0);
        for max in [0.013, 7.0, 99.0, 1234.5, 9e6] {
            let top = y_top(max);
            assert!(top >= max * 1.1 && top <= max * 11.0, "{max} -> {top}");
        }
    }

    #[test]
    fn w8_curves_put_both_peers_on_one_panel_per_measure_sorted_by_size() {
        let open = "subjects: open time from process start";
        let mut w6 = row("file-none", "W6", "publish with a stalled consumer", 1e6);
        w6.rss_samples = vec![(1_000_000, 1.0), (10_000_000, 2.0)];
        let rows = vec![
            point("durabus", open, "subjects", 100_000, 30.0, "ms"),
            point("durabus", open, "subjects", 10_000, 20.0, "ms"),
            point("nats-server", open, "subjects", 10_000, 90.0, "ms"),
            point("durabus", "streams: list time", "streams", 1, 0.1, "ms"),
            w6,
        ];
        let c = curves(&rows);
        let names: Vec<&str> = c.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, [open, "streams: list time", W6_CURVE]);
        assert_eq!(
            c[0].lines,
            vec![
                ("durabus".to_owned(), vec![(10_000, 20.0), (100_000, 30.0)]),
                ("nats-server".to_owned(), vec![(10_000, 90.0)]),
            ]
        );
        assert_eq!(c[2].axis, "messages");
        let md = markdown(&rows, &[], None, Charts::default());
        assert!(
            md.contains("| measure | size | durabus | nats-server |"),
            "{md}"
        );
        assert!(
            md.contains(&format!("| {open} | 10k subjects | 20.0 ms | 90.0 ms |")),
            "{md}"
        );
        // W8's points stay out of the throughput table.
        assert!(!md.contains("| W8 |"), "{md}");
    }

    #[test]
    fn w8_targets_judge_the_largest_store_against_the_one_with_one_stream() {
        use durabus_workloads::growth::names;
        let rows = vec![
            point(
                "durabus",
                names::SUBJECTS_BYTES_OPEN,
                "subjects",
                100_000,
                120.0,
                "B",
            ),
            point(
                "durabus",
                names::SUBJECTS_BYTES_OPEN,
                "subjects",
                1_000_000,
                48.0,
                "B",
            ),
            point(
                "nats-server",
                names::SUBJECTS_BYTES_OPEN,
                "subjects",
                1_000_000,
                300.0,
                "B",
            ),
            point("durabus", names::STREAMS_OPEN, "streams", 1, 10.0, "ms"),
            point(
                "durabus",
                names::STREAMS_OPEN,
                "streams",
                10_000,
                15.0,
                "ms",
            ),
            point(
                "durabus",
                names::CONSUMERS_OPEN,
                "consumers",
                100_000,
                45.0,
                "ms",
            ),
            point("durabus", names::STREAMS_LIST, "streams", 1000, 5.0, "ms"),
        ];
        let t = w8_targets(&rows);
        assert_eq!(
            t[0].measured,
            Some(("48 B (1M subjects, durabus)".to_owned(), true))
        );
        let (text, holds) = t[1].measured.clone().unwrap();
        assert!(!holds, "{text}");
        assert!(
            text.contains("10k streams 1.5x") && text.contains("100k consumers 4.5x"),
            "{text}"
        );
        // Fast, but not measured at 10k streams: the target is not met.
        assert_eq!(t[2].measured.as_ref().map(|m| m.1), Some(false));
        // At 10k streams both list_streams and the CLI must be under 100 ms.
        let list = point(
            "durabus",
            names::STREAMS_LIST,
            "streams",
            10_000,
            40.0,
            "ms",
        );
        let cli = |ms| point("durabus", names::STREAMS_CLI, "streams", 10_000, ms, "ms");
        let ls = |rows: &[Row]| w8_targets(rows)[2].measured.clone().unwrap();
        assert!(ls(std::slice::from_ref(&list)).1);
        let (text, holds) = ls(&[list.clone(), cli(150.0)]);
        assert!(
            !holds && text.contains("durabus stream ls 150 ms"),
            "{text}"
        );
        assert!(ls(&[list, cli(80.0)]).1);
        assert!(w8_targets(&[]).iter().all(|t| t.measured.is_none()));
    }

    #[test]
    fn a_w8_part_that_stopped_is_reported_with_its_reason() {
        let mut stopped = row("durabus", "W8", "consumers: stopped", 0.0);
        stopped.notes = "stopped after 10k consumers: Too many open files".into();
        let rows = vec![
            point(
                "durabus",
                "consumers: open time",
                "consumers",
                10_000,
                50.0,
                "ms",
            ),
            stopped,
        ];
        let md = markdown(&rows, &[], None, Charts::default());
        assert!(
            md.contains("- **durabus**: consumers: stopped: stopped after 10k consumers: Too many open files"),
            "{md}"
        );
        assert!(!md.contains("## Figures"), "{md}");
    }
}
