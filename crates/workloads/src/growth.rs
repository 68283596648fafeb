//! W8 of `docs/performance.md`: costs that must not grow with the store.
//!
//! Three stores of their own, next to the bench store, each filled in
//! steps and measured at every step, then removed:
//!
//! - **subjects**: one stream capturing `telemetry.*.temp`, one message
//!   (16 bytes) to each of N distinct subjects `telemetry.<i>.temp`. At each
//!   step: how much this process's resident memory grew while publishing
//!   (and the bytes per subject that growth means between two steps); then,
//!   after a clean close, a fresh process opens the store and asks for the
//!   stream's info (the open time, from `connect` and from the process's
//!   start, and that process's RSS).
//! - **streams**: N streams of one message each; the same open
//!   measurements, `list_streams` in the fresh process, and `durabus stream
//!   ls` end to end (process start to exit).
//! - **consumers**: N durable consumers spread evenly over
//!   `--w8-consumer-streams` streams of one message each; the open
//!   measurements.
//!
//! The fresh process is this executable run again with the hidden
//! `w8-probe` subcommand ([`probe`]), [`PROBES`] times at each step (the
//! run with the median open time is reported, and the median list time), which both `durabus` and
//! `durabus-bench` have: reopening in the process that filled the store
//! would measure the memory its allocator kept from the fill. Everything
//! goes through the public API (`durabus::connect`, `stream_info`,
//! `list_streams`) and the CLI, so W8 measures any version of the engine.
//!
//! Each row is one point of a curve ([`crate::Growth`]): the report draws
//! cost against size.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::Args;
use durabus::{BackendUrl, Bus, ConsumerConfig, Message, StreamConfig};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncBufReadExt as _;

use crate::bus::{open_bus, open_with_stream, Plan};
use crate::measure::Measurement;
use crate::system::{count, rss_bytes};

/// Payload of every W8 message.
const PAYLOAD: &[u8] = b"0123456789abcdef";

/// Messages per `publish_batch` while filling.
const FILL_BATCH: u64 = 1000;

/// Stream of the subjects store.
const SUBJECTS_STREAM: &str = "W8_SUBJECTS";

/// How long a probe may take before W8 gives up.
const PROBE_TIMEOUT: Duration = Duration::from_secs(600);

/// Fresh processes probed at each step: one open of a few milliseconds
/// is at the mercy of the scheduler on a shared machine.
pub const PROBES: usize = 5;

/// Measure names, shared with the nats-server peer of `durabus-bench` so
/// that the report draws both on one curve.
pub mod names {
    /// RSS growth of the publishing process (of nats-server: the server's).
    pub const SUBJECTS_RSS_FILL: &str = "subjects: RSS growth while publishing";
    /// That growth per subject, between two steps.
    pub const SUBJECTS_BYTES: &str = "subjects: resident bytes per subject";
    /// `connect` until the stream answers, in a fresh process.
    pub const SUBJECTS_OPEN: &str = "subjects: open time";
    /// Process start until the stream answers (nats-server: its recovery).
    pub const SUBJECTS_START: &str = "subjects: open time from process start";
    /// RSS of the fresh process (nats-server: after its recovery).
    pub const SUBJECTS_RSS_OPEN: &str = "subjects: RSS after open";
    /// The fresh process's RSS growth over its open, per subject: what the
    /// per-subject state costs resident (the target's row), without what
    /// the publishing process's allocator kept of transient buffers.
    pub const SUBJECTS_BYTES_OPEN: &str = "subjects: resident bytes per subject after open";
    /// As [`SUBJECTS_OPEN`], with N streams.
    pub const STREAMS_OPEN: &str = "streams: open time";
    /// As [`SUBJECTS_START`]; nats-server: until STREAM.NAMES lists them all.
    pub const STREAMS_START: &str = "streams: open time from process start";
    /// Open file descriptors after the open (nats-server: its own).
    pub const STREAMS_FILES: &str = "streams: open files after open";
    /// `list_streams` (nats-server: STREAM.LIST, every page) after the open.
    pub const STREAMS_LIST: &str = "streams: list time";
    /// As [`SUBJECTS_RSS_OPEN`].
    pub const STREAMS_RSS_OPEN: &str = "streams: RSS after open";
    /// `durabus stream ls`, process start to exit.
    pub const STREAMS_CLI: &str = "streams: durabus stream ls";
    /// As [`SUBJECTS_OPEN`], with N durable consumers.
    pub const CONSUMERS_OPEN: &str = "consumers: open time";
    /// As [`SUBJECTS_START`].
    pub const CONSUMERS_START: &str = "consumers: open time from process start";
    /// As [`STREAMS_FILES`].
    pub const CONSUMERS_FILES: &str = "consumers: open files after open";
    /// As [`SUBJECTS_RSS_OPEN`].
    pub const CONSUMERS_RSS_OPEN: &str = "consumers: RSS after open";
}

/// Arguments of the hidden `w8-probe` subcommand.
#[derive(Debug, Clone, Args)]
pub struct ProbeArgs {
    /// The store to open (a `file:` URL).
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// The stream whose info ends the open.
    #[arg(long, value_name = "NAME")]
    pub stream: String,
    /// Then time `list_streams`.
    #[arg(long)]
    pub list: bool,
}

/// What a probe reports, one JSON line after the open and one after the list.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct ProbeLine {
    /// Milliseconds of `connect` and `stream_info` (or of `list_streams`).
    ms: f64,
    /// Messages in the stream (or streams listed).
    count: u64,
    /// The process's resident bytes before `connect`.
    rss_before: u64,
    /// Its resident bytes now.
    rss: u64,
    /// Its open file descriptors now.
    #[serde(default)]
    fds: u64,
}

/// Open file descriptors of this process (`/proc/self/fd`).
fn fd_count() -> u64 {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count() as u64)
}

/// Bytes as MiB.
#[allow(clippy::cast_precision_loss)]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Milliseconds of `d`.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Writes `line` as one JSON line on stdout, flushed.
fn emit(line: &ProbeLine) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, line).context("cannot encode the probe's line")?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(())
}

/// The hidden `w8-probe` subcommand: opens the store, asks for the stream's
/// info, prints a line; with `--list`, lists the streams and prints another.
pub async fn probe(args: &ProbeArgs) -> anyhow::Result<()> {
    let rss_before = rss_bytes().unwrap_or(0);
    let start = Instant::now();
    let bus = durabus::connect(&args.store)
        .await
        .with_context(|| format!("cannot open {}", durabus::redact(&args.store)))?;
    let info = bus.stream_info(&args.stream).await?;
    let open = start.elapsed();
    emit(&ProbeLine {
        ms: ms(open),
        count: info.state.messages,
        rss_before,
        rss: rss_bytes().unwrap_or(0),
        fds: fd_count(),
    })?;
    if args.list {
        let start = Instant::now();
        let streams = bus.list_streams().await?;
        let list = start.elapsed();
        emit(&ProbeLine {
            ms: ms(list),
            count: streams.len() as u64,
            rss_before,
            rss: rss_bytes().unwrap_or(0),
            fds: fd_count(),
        })?;
    }
    bus.close().await?;
    Ok(())
}

/// A probe's findings, with the time from its start to its first line.
#[derive(Debug)]
struct Probed {
    from_start: Duration,
    open: ProbeLine,
    list: Option<ProbeLine>,
}

/// Runs [`probe_once`] [`PROBES`] times: the run with the median open
/// time, with the median list time.
async fn run_probe(exe: &Path, url: &str, stream: &str, list: bool) -> anyhow::Result<Probed> {
    let mut runs = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        runs.push(probe_once(exe, url, stream, list).await?);
    }
    let mut lists: Vec<ProbeLine> = runs.iter().filter_map(|r| r.list.clone()).collect();
    lists.sort_by(|a, b| a.ms.total_cmp(&b.ms));
    runs.sort_by(|a, b| a.open.ms.total_cmp(&b.open.ms));
    let mut median = runs.swap_remove(runs.len() / 2);
    median.list = lists.get(lists.len() / 2).cloned();
    Ok(median)
}

/// Runs `exe w8-probe` on `url` and reads its lines.
async fn probe_once(exe: &Path, url: &str, stream: &str, list: bool) -> anyhow::Result<Probed> {
    let mut command = tokio::process::Command::new(exe);
    command
        .args(["w8-probe", "--store", url, "--stream", stream])
        .env_remove("DURABUS_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if list {
        command.arg("--list");
    }
    let start = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("cannot start {} w8-probe", exe.display()))?;
    let stdout = child.stdout.take().context("the probe has no stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let read = async {
        let first = lines.next_line().await?;
        let from_start = start.elapsed();
        let second = if list { lines.next_line().await? } else { None };
        anyhow::Ok((first, from_start, second))
    };
    let (first, from_start, second) = tokio::time::timeout(PROBE_TIMEOUT, read)
        .await
        .context("W8: the probe did not answer within 10 minutes")??;
    let output = child.wait_with_output().await?;
    if !output.status.success() {
        bail!(
            "W8: {} w8-probe on {} failed: {}",
            exe.display(),
            durabus::redact(url),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let parse = |line: Option<String>| -> anyhow::Result<ProbeLine> {
        let line = line.context("W8: the probe ended without its line")?;
        serde_json::from_str(&line).with_context(|| format!("W8: the probe said {line:?}"))
    };
    Ok(Probed {
        from_start,
        open: parse(first)?,
        list: if list { Some(parse(second)?) } else { None },
    })
}

/// The bytes each subject added between two steps: the growth from the
/// step before (`prev`: subjects and growth in bytes) to this one, over
/// the subjects added; from nothing at the first step.
pub fn bytes_per_subject(prev: (u64, u64), now: (u64, u64)) -> f64 {
    let added = now.0.saturating_sub(prev.0).max(1);
    #[allow(clippy::cast_precision_loss)]
    let grown = now.1 as f64 - prev.1 as f64;
    #[allow(clippy::cast_precision_loss)]
    let per = grown / added as f64;
    per.max(0.0)
}

/// W8 on the `file:` store of `url`: the three stores, each in a directory
/// of its own beside it, removed afterwards.
pub(crate) async fn run(plan: &Plan, url: &str) -> anyhow::Result<Vec<Measurement>> {
    let base = match durabus::parse_url(url)? {
        BackendUrl::File { path, .. } => path.join(format!("w8_{}", plan.tag)),
        _ => bail!("W8 measures embedded file: stores"),
    };
    let probe = match &plan.w8.probe {
        Some(p) => p.clone(),
        None => std::env::current_exe().context("W8: cannot find this executable to probe")?,
    };
    let mut rows = Vec::new();
    let parts: [(&str, u8); 3] = [("subjects", 0), ("streams", 1), ("consumers", 2)];
    for (part, which) in parts {
        let dir = base.join(part);
        let mut measured = Vec::new();
        let result = match which {
            0 => subjects(plan, &probe, &dir, &mut measured).await,
            1 => streams(plan, &probe, &dir, &mut measured).await,
            _ => consumers(plan, &probe, &dir, &mut measured).await,
        };
        let removed = std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove the W8 store {}", dir.display()));
        // A part that fails (the store refuses more streams, the process
        // runs out of file descriptors) is a finding: keep what it
        // measured, say where it stopped, and go on with the next part.
        if let Err(e) = result {
            let last = measured
                .iter()
                .filter_map(|m| m.growth.as_ref().map(|g| g.size))
                .max();
            let after = last.map_or_else(
                || "before its first step".to_owned(),
                |n| format!("after {} {part}", count(n)),
            );
            eprintln!("W8 {part} stopped {after}: {e:#}");
            measured.push(
                Measurement::new("W8", &format!("{part}: stopped"), 0, 0, Duration::ZERO)
                    .note(format!("stopped {after}: {e:#}")),
            );
        }
        rows.extend(measured);
        removed?;
    }
    std::fs::remove_dir_all(&base).ok();
    Ok(rows)
}

/// The `file:` URL of a W8 store: durability none, so filling is fast.
fn store_url(dir: &Path) -> String {
    format!("file:{}?durability=none", dir.display())
}

/// Publishes `messages` in batches, failing on any refusal or uncaptured subject.
async fn publish_all(bus: &Bus, messages: Vec<Message>) -> anyhow::Result<()> {
    for ack in bus.publish_batch(messages).await? {
        if ack?.is_none() {
            bail!("W8: a message was not captured by any stream");
        }
    }
    Ok(())
}

/// The subjects part: fill, and at each step measure the fill's memory and a
/// fresh process's open.
async fn subjects(
    plan: &Plan,
    probe: &Path,
    dir: &Path,
    rows: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let Some(&last) = plan.w8.subjects.last() else {
        return Ok(());
    };
    let url = store_url(dir);
    let payload = Bytes::from_static(PAYLOAD);
    let mut bus = open_with_stream(&url, SUBJECTS_STREAM, "telemetry.*.temp").await?;
    let before = rss_bytes().context("W8: cannot read /proc/self/statm")?;
    let mut prev = (0u64, 0u64);
    let mut sent = 0u64;
    let bar = plan.progress.bar("W8 subjects", last);
    for &stop in &plan.w8.subjects {
        let start = Instant::now();
        while sent < stop {
            let k = FILL_BATCH.min(stop - sent);
            let messages = (sent..sent + k)
                .map(|i| Message::new(format!("telemetry.{i}.temp"), payload.clone()))
                .collect();
            publish_all(&bus, messages).await?;
            sent += k;
            bar.inc(k);
        }
        let fill = start.elapsed();
        let grown = rss_bytes()
            .context("W8: cannot read /proc/self/statm")?
            .saturating_sub(before);
        let per = bytes_per_subject(prev, (stop, grown));
        let from = if prev.0 == 0 {
            "the empty store".to_owned()
        } else {
            count(prev.0)
        };
        prev = (stop, grown);
        rows.push(
            Measurement::point(names::SUBJECTS_RSS_FILL, "subjects", stop, mib(grown), "MiB")
                .note(format!(
                    "this process, since the stream was empty; publishing the subjects after {from} took {:.1} s",
                    fill.as_secs_f64()
                )),
        );
        rows.push(
            Measurement::point(names::SUBJECTS_BYTES, "subjects", stop, per, "B").note(format!(
                "RSS growth from {from} to {} over the subjects added (with what the allocator kept of transient buffers)",
                count(stop)
            )),
        );
        bus.close().await?;
        let probed = run_probe(probe, &url, SUBJECTS_STREAM, false).await?;
        if probed.open.count != stop {
            bail!(
                "W8: the reopened stream holds {} messages, not {stop}",
                probed.open.count
            );
        }
        rows.extend(open_rows(
            [
                names::SUBJECTS_OPEN,
                names::SUBJECTS_START,
                names::SUBJECTS_RSS_OPEN,
            ],
            None,
            "subjects",
            stop,
            &probed,
        ));
        #[allow(clippy::cast_precision_loss)]
        let per_open =
            probed.open.rss.saturating_sub(probed.open.rss_before) as f64 / stop.max(1) as f64;
        rows.push(
            Measurement::point(names::SUBJECTS_BYTES_OPEN, "subjects", stop, per_open, "B")
                .note("a fresh process: RSS growth over the open, per subject (bar: <= 64 B)"),
        );
        bus = open_bus(&url).await?;
    }
    bar.finish_and_clear();
    bus.close().await?;
    Ok(())
}

/// The open rows of a probe: open time, open time from process start,
/// RSS, and open files when `files` names that row.
fn open_rows(
    names: [&str; 3],
    files: Option<&str>,
    axis: &str,
    size: u64,
    probed: &Probed,
) -> Vec<Measurement> {
    let [open, start, rss] = names;
    let mut rows = vec![
        Measurement::point(open, axis, size, probed.open.ms, "ms")
            .note("a fresh process: durabus::connect until the stream's info answers"),
        Measurement::point(start, axis, size, ms(probed.from_start), "ms")
            .note("a fresh process: from its start until the stream's info answers"),
        Measurement::point(rss, axis, size, mib(probed.open.rss), "MiB").note(format!(
            "a fresh process after the open; +{:.1} MiB over before connect",
            mib(probed.open.rss.saturating_sub(probed.open.rss_before))
        )),
    ];
    if let Some(files) = files {
        #[allow(clippy::cast_precision_loss)]
        let fds = probed.open.fds as f64;
        rows.push(
            Measurement::point(files, axis, size, fds, "files")
                .note("file descriptors of the fresh process after the open (/proc/self/fd)"),
        );
    }
    rows
}

/// Creates streams `W8_<prefix><i>` for `i` in `from..to`, capturing
/// `w8<prefix>.<i>.>`, with one message each.
async fn add_streams(bus: &Bus, prefix: &str, from: u64, to: u64) -> anyhow::Result<()> {
    let lower = prefix.to_ascii_lowercase();
    let mut messages = Vec::new();
    for i in from..to {
        bus.create_stream(
            StreamConfig::new(format!("W8_{prefix}{i}")).subjects([format!("w8{lower}.{i}.>")]),
        )
        .await
        .with_context(|| format!("W8: cannot create stream {i}"))?;
        messages.push(Message::new(
            format!("w8{lower}.{i}.m"),
            Bytes::from_static(PAYLOAD),
        ));
        if messages.len() as u64 >= FILL_BATCH {
            publish_all(bus, std::mem::take(&mut messages)).await?;
        }
    }
    if !messages.is_empty() {
        publish_all(bus, messages).await?;
    }
    Ok(())
}

/// Runs `cli --url <url> --json stream ls` to its end [`PROBES`] times;
/// returns the median wall time.
async fn time_cli_ls(cli: &Path, url: &str, streams: u64) -> anyhow::Result<Duration> {
    let mut walls = Vec::with_capacity(PROBES);
    for _ in 0..PROBES {
        walls.push(time_cli_ls_once(cli, url, streams).await?);
    }
    walls.sort_unstable();
    Ok(walls[PROBES / 2])
}

/// One timed run of `cli --url <url> --json stream ls`, checked to list
/// `streams` streams.
async fn time_cli_ls_once(cli: &Path, url: &str, streams: u64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let output = tokio::process::Command::new(cli)
        .args(["--url", url, "--json", "stream", "ls"])
        .env_remove("DURABUS_URL")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .with_context(|| format!("cannot run {} stream ls", cli.display()))?;
    let elapsed = start.elapsed();
    if !output.status.success() {
        bail!(
            "W8: {} stream ls failed: {}",
            cli.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let listed = serde_json::from_slice::<serde_json::Value>(&output.stdout)
        .ok()
        .and_then(|v| v["streams"].as_array().map(Vec::len))
        .unwrap_or(0);
    if listed as u64 != streams {
        bail!("W8: durabus stream ls listed {listed} streams, not {streams}");
    }
    Ok(elapsed)
}

/// The streams part: at each step, a fresh process's open and
/// `list_streams`, and `durabus stream ls`.
async fn streams(
    plan: &Plan,
    probe: &Path,
    dir: &Path,
    rows: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let Some(&last) = plan.w8.streams.last() else {
        return Ok(());
    };
    let url = store_url(dir);
    let bar = plan.progress.bar("W8 streams", last);
    let mut made = 0u64;
    for &stop in &plan.w8.streams {
        let bus = open_bus(&url).await?;
        let filled = add_streams(&bus, "S", made, stop).await;
        let closed = bus.close().await;
        filled?;
        closed?;
        bar.inc(stop - made);
        made = stop;
        let probed = run_probe(probe, &url, "W8_S0", true).await?;
        rows.extend(open_rows(
            [
                names::STREAMS_OPEN,
                names::STREAMS_START,
                names::STREAMS_RSS_OPEN,
            ],
            Some(names::STREAMS_FILES),
            "streams",
            stop,
            &probed,
        ));
        let list = probed.list.unwrap_or_default();
        if list.count != stop {
            bail!(
                "W8: list_streams returned {} streams, not {stop}",
                list.count
            );
        }
        rows.push(
            Measurement::point(names::STREAMS_LIST, "streams", stop, list.ms, "ms")
                .note("list_streams after the open, in the fresh process (bar: < 100 ms at 10k)"),
        );
        if let Some(cli) = &plan.w8.cli {
            let wall = time_cli_ls(cli, &url, stop).await?;
            rows.push(
                Measurement::point(names::STREAMS_CLI, "streams", stop, ms(wall), "ms").note(
                    format!(
                        "`{} --json stream ls`, process start to exit (median of {PROBES}; bar: < 100 ms at 10k)",
                        cli.file_name()
                            .map_or_else(|| "durabus".into(), |n| n.to_string_lossy())
                    ),
                ),
            );
        }
    }
    bar.finish_and_clear();
    Ok(())
}

/// The consumers part: durable consumers spread over the streams, a fresh
/// process's open at each step.
async fn consumers(
    plan: &Plan,
    probe: &Path,
    dir: &Path,
    rows: &mut Vec<Measurement>,
) -> anyhow::Result<()> {
    let Some(&last) = plan.w8.consumers.last() else {
        return Ok(());
    };
    let url = store_url(dir);
    let spread = plan.w8.consumer_streams.max(1);
    let bar = plan.progress.bar("W8 consumers", last);
    let bus = open_bus(&url).await?;
    let filled = add_streams(&bus, "C", 0, spread).await;
    let closed = bus.close().await;
    filled?;
    closed?;
    let mut made = 0u64;
    for &stop in &plan.w8.consumers {
        let bus = open_bus(&url).await?;
        let filled = async {
            for j in made..stop {
                bus.create_consumer(
                    format!("W8_C{}", j % spread),
                    ConsumerConfig::durable(format!("c{j}")),
                )
                .await
                .with_context(|| format!("W8: cannot create consumer {j}"))?;
                if j % 1024 == 1023 {
                    bar.inc(1024);
                }
            }
            anyhow::Ok(())
        }
        .await;
        let closed = bus.close().await;
        filled?;
        closed?;
        made = stop;
        let probed = run_probe(probe, &url, "W8_C0", false).await?;
        let mut open = open_rows(
            [
                names::CONSUMERS_OPEN,
                names::CONSUMERS_START,
                names::CONSUMERS_RSS_OPEN,
            ],
            Some(names::CONSUMERS_FILES),
            "consumers",
            stop,
            &probed,
        );
        for m in &mut open {
            m.notes = format!("{}; over {spread} streams", m.notes);
        }
        rows.extend(open);
    }
    bar.finish_and_clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_per_subject_is_the_slope_between_steps() {
        // 1M subjects grew 64 MiB, 10M grew 640 MiB: 67.1 bytes each.
        let first = bytes_per_subject((0, 0), (1_000_000, 64 << 20));
        assert!((first - 67.108_864).abs() < 1e-6, "{first}");
        let second = bytes_per_subject((1_000_000, 64 << 20), (10_000_000, 640 << 20));
        assert!((second - 67.108_864).abs() < 1e-6, "{second}");
        // A fixed cost paid at the first step is not charged to later subjects.
        let flat = bytes_per_subject((10_000, 8 << 20), (100_000, 8 << 20));
        assert_eq!(flat, 0.0);
        // Memory given back counts as nothing, not as a negative size.
        assert_eq!(bytes_per_subject((10, 100), (20, 50)), 0.0);
    }
}
