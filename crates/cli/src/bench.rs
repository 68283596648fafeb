//! `durabus bench`: workloads W1-W7 of `PERFORMANCE.md`, measured side by side.
//!
//! The workloads are functions over [`durabus::Bus`], so every backend (the
//! embedded log, NATS, the hub later) is measured by the same code.
//! W3 is reported as a ratio of the disk's raw 4 KiB append + fdatasync rate,
//! measured in the same run on a file in the same directory; it is about the
//! embedded engine's durability modes and does not apply to `nats://`.
//!
//! `--peer async-nats` measures W1, W2 and W4 with raw async-nats calls on a
//! `nats://` server instead (see [`raw`]), the bar the NATS backend is held to;
//! `--peer durabus,async-nats` measures both in one process, interleaved, and
//! reports the ratio (see [`pair`]). Every run uses streams and subjects of
//! its own and deletes them afterwards.
//!
//! `--peer redis --redis-url redis://host:port` measures W1-W4 on Redis
//! Streams instead (see [`redis`]).

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::{IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use comfy_table::{modifiers, presets, CellAlignment, Table};
use durabus::embedded::Durability;
use durabus::{BackendUrl, Bus, Message, ReplayOptions, StreamConfig};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

use crate::output::print_json;
use crate::session::Global;

mod pair;
mod raw;
mod redis;
pub(crate) mod report;
mod system;

/// Progress bars are advanced once per this many messages, to keep their
/// cost out of the measurement.
const PROGRESS_STEP: u64 = 1024;

/// Concurrent publishers in the second half of W3.
const W3_PUBLISHERS: u64 = 64;

/// The 64 publishers of W3 send this many times the single publisher's count
/// (group commit is that much faster; the run should last long enough to measure).
const W3_GROUP_FACTOR: u64 = 50;

/// Bytes per write of the fdatasync baseline.
const BASELINE_WRITE: usize = 4096;

/// A workload id, as used in `PERFORMANCE.md` and issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub(crate) enum Workload {
    /// Publish, await each ack, 1 publisher.
    W1,
    /// Publish in batches, 1 publisher.
    W2,
    /// Durability `Always`: 1 publisher and 64 concurrent publishers.
    W3,
    /// Replay the stream from sequence 1 to its end, and consume it with
    /// explicit acks.
    W4,
    /// Latency publish -> subscriber, one message in flight (p50/p99/p99.9).
    W5,
    /// Resident memory while a subscriber and a durable consumer stall
    /// (embedded backends).
    W6,
    /// Time to open a stream of --open-size bytes after a clean close
    /// (embedded file: only; not in the default set, as it writes that much).
    W7,
}

/// Who runs the workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Peer {
    /// durabus, on the backend of --url.
    Durabus,
    /// Raw async-nats JetStream calls on the nats:// server of --url (W1, W2, W4).
    AsyncNats,
    /// Redis Streams on the server of --redis-url (W1-W4), alone.
    Redis,
}

/// Arguments of `durabus bench`.
#[derive(Debug, Args)]
pub(crate) struct BenchArgs {
    /// Messages published in W1 and again in W2; W4 replays both.
    #[arg(long, default_value_t = 500_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    msgs: u64,

    /// Messages in W3 with one publisher; the 64 publishers send 50 times as
    /// many [default: the smaller of --msgs and 2000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    sync_msgs: Option<u64>,

    /// Messages W6 publishes while its consumers stall (PERFORMANCE.md's bar
    /// is for 10M) [default: --msgs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    stall_msgs: Option<u64>,

    /// Payload size in bytes.
    #[arg(long, default_value_t = 128, value_name = "BYTES")]
    size: usize,

    /// Messages per publish_batch call in W2 (--peer redis: XADDs per
    /// pipeline in W2, and the XREADGROUP COUNT of W4 consume).
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    batch: u64,

    /// Workloads to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        ignore_case = true,
        default_value = "w1,w2,w3,w4,w5,w6"
    )]
    workloads: Vec<Workload>,

    /// Bytes W7 stores before it reopens the stream.
    #[arg(long, default_value = "1GiB", value_name = "BYTES", value_parser = crate::parse::size)]
    open_size: u64,

    /// Repeat the workloads this many times and report each one's median run.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    runs: u64,

    /// Who runs the workloads: durabus, or raw async-nats on the same
    /// nats:// server (the peer the NATS backend is compared with), or both
    /// (durabus,async-nats): interleaved in one process, with their ratio.
    #[arg(
        long = "peer",
        value_enum,
        value_delimiter = ',',
        default_value = "durabus",
        value_name = "PEER"
    )]
    peers: Vec<Peer>,

    /// With both peers: messages per turn in W1 and W2 (W2 rounds up to
    /// whole batches).
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    slice: u64,

    /// The Redis server of --peer redis (--url is not used then).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json_out: Option<PathBuf>,
}

/// One row of the result table.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Measurement {
    /// Workload id (`W1` ... `W4`, or `disk` for the fdatasync baseline).
    pub(crate) workload: String,
    /// Who ran it on which backend: `durabus/file`, `durabus/nats`,
    /// `async-nats/nats`, ...
    pub(crate) peer: String,
    /// What was measured.
    pub(crate) name: String,
    /// Messages (or, for the baseline, writes).
    pub(crate) messages: u64,
    /// Wall-clock seconds.
    pub(crate) seconds: f64,
    /// Messages per second.
    pub(crate) msgs_per_sec: f64,
    /// Payload megabytes (10^6) per second.
    pub(crate) mb_per_sec: f64,
    /// `msgs_per_sec` divided by the disk's fdatasync rate (W3 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) vs_fdatasync: Option<f64>,
    /// Latency percentiles (W5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) latency: Option<system::Latency>,
    /// Growth of resident memory in MiB (W6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) rss_growth_mib: Option<f64>,
    /// Context: durability, ratio to the fdatasync baseline, ...
    pub(crate) notes: String,
}

impl Measurement {
    fn new(
        workload: &str,
        name: &str,
        messages: u64,
        bytes_each: usize,
        elapsed: Duration,
    ) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        #[allow(clippy::cast_precision_loss)] // rates for display
        let msgs_per_sec = messages as f64 / seconds;
        #[allow(clippy::cast_precision_loss)]
        let mb_per_sec = msgs_per_sec * bytes_each as f64 / 1e6;
        Self {
            workload: workload.to_owned(),
            peer: String::new(),
            name: name.to_owned(),
            messages,
            seconds,
            msgs_per_sec,
            mb_per_sec,
            vs_fdatasync: None,
            latency: None,
            rss_growth_mib: None,
            notes: String::new(),
        }
    }

    #[must_use]
    fn note(mut self, note: impl Into<String>) -> Self {
        self.notes = note.into();
        self
    }

    /// Sort key: the workload order of `PERFORMANCE.md`, baseline before W3.
    fn rank(&self) -> u8 {
        match self.workload.as_str() {
            "W1" => 1,
            "W2" => 2,
            "disk" => 3,
            "W3" => 4,
            "W4" => 5,
            "W5" => 6,
            "W6" => 7,
            _ => 8,
        }
    }
}

/// The bench report: where it ran and what it measured.
#[derive(Debug, Serialize)]
struct Report {
    /// The backend URL, credentials redacted.
    url: String,
    /// The backend kind: `file`, `memory` or `nats`.
    backend: &'static str,
    /// `durabus` or `async-nats`.
    peer: &'static str,
    temporary_store: bool,
    msg_size: usize,
    /// Messages of W1 and of W2 (W4 replays both).
    msgs: u64,
    /// Messages per batch in W2.
    batch: u64,
    runs: u64,
    results: Vec<Measurement>,
    /// Workloads asked for but not applicable here, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<Skipped>,
    /// With both peers: durabus / raw async-nats per workload.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    comparison: Vec<Comparison>,
}

/// durabus on NATS against raw async-nats on one workload.
#[derive(Debug, Serialize)]
struct Comparison {
    workload: String,
    /// The row's `name` (W4 has two: replay and consume).
    name: String,
    /// Median over runs of each run's durabus msg/s divided by raw's.
    ratio: f64,
    /// Each run's ratio.
    ratios: Vec<f64>,
    /// Whether `ratio` is at least 0.95 (the bar of PERFORMANCE.md).
    within_5_percent: bool,
}

/// Per workload row, the median of the runs' durabus / raw ratios.
fn compare(runs: &[Vec<Measurement>]) -> Vec<Comparison> {
    let mut out: Vec<Comparison> = Vec::new();
    for run in runs {
        for d in run.iter().filter(|m| m.peer == pair::DURABUS) {
            let Some(r) = run
                .iter()
                .find(|m| m.peer == pair::RAW && m.workload == d.workload && m.name == d.name)
            else {
                continue;
            };
            let ratio = d.msgs_per_sec / r.msgs_per_sec.max(f64::MIN_POSITIVE);
            match out
                .iter_mut()
                .find(|c| c.workload == d.workload && c.name == d.name)
            {
                Some(c) => c.ratios.push(ratio),
                None => out.push(Comparison {
                    workload: d.workload.clone(),
                    name: d.name.clone(),
                    ratio: 0.0,
                    ratios: vec![ratio],
                    within_5_percent: false,
                }),
            }
        }
    }
    for c in &mut out {
        let mut sorted = c.ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        c.ratio = match n {
            0 => 0.0,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        c.within_5_percent = c.ratio >= 0.95;
    }
    out
}

/// A workload that was not run, and why.
#[derive(Debug, Serialize)]
struct Skipped {
    workload: &'static str,
    reason: &'static str,
}

/// Why W3 is not run on `nats://`.
const W3_ON_NATS: &str = "not applicable on nats://: W3 measures the embedded engine's \
     durability modes against the disk's fdatasync rate; a NATS stream's durability is \
     the server's";

/// Makes one progress bar per workload, or hidden ones.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Progress {
    visible: bool,
}

impl Progress {
    /// A bar of `len` messages labelled `label`.
    pub(crate) fn bar(self, label: &str, len: u64) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len).with_prefix(label.to_owned());
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:<14} [{bar:30}] {human_pos}/{human_len} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }
}

/// Advances `bar` after message `done` (1-based) every [`PROGRESS_STEP`].
pub(crate) fn tick(bar: &ProgressBar, done: u64) {
    if done % PROGRESS_STEP == 0 {
        bar.inc(PROGRESS_STEP);
    }
}

/// W1: `n` publishes by one publisher, each awaiting its ack.
pub(crate) async fn publish_each(
    bus: &Bus,
    subject: &str,
    payload: &Bytes,
    n: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for i in 1..=n {
        let ack = bus
            .publish(subject.to_owned(), payload.clone())
            .await
            .with_context(|| format!("publish {i} of {n} failed"))?;
        if ack.is_none() {
            bail!("no stream captured {subject}; the bench stream is missing");
        }
        tick(bar, i);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(elapsed)
}

/// W2: `n` messages by one publisher in `publish_batch` calls of `batch`.
pub(crate) async fn publish_batched(
    bus: &Bus,
    subject: &str,
    payload: &Bytes,
    n: u64,
    batch: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        let this = batch.min(n - sent);
        let messages: Vec<Message> = (0..this)
            .map(|_| Message::new(subject, payload.clone()))
            .collect();
        let acks = bus
            .publish_batch(messages)
            .await
            .with_context(|| format!("publish_batch after {sent} of {n} messages failed"))?;
        if acks.len() as u64 != this {
            bail!(
                "publish_batch of {this} messages returned {} results",
                acks.len()
            );
        }
        for (i, ack) in acks.into_iter().enumerate() {
            let ack =
                ack.with_context(|| format!("message {} of {n} failed", sent + i as u64 + 1))?;
            if ack.is_none() {
                bail!("no stream captured {subject}; the bench stream is missing");
            }
        }
        sent += this;
        bar.inc(this);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(elapsed)
}

/// W3 (64 publishers): `n` publishes spread over `publishers` concurrent
/// tasks, each awaiting every ack. Returns the messages sent and the time.
pub(crate) async fn publish_concurrent(
    bus: &Bus,
    subject: &str,
    payload: &Bytes,
    n: u64,
    publishers: u64,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, Duration)> {
    let per_publisher = n.div_ceil(publishers).max(1);
    let start = Instant::now();
    let tasks: Vec<_> = (0..publishers)
        .map(|_| {
            let (bus, subject, payload, bar) = (
                bus.clone(),
                subject.to_owned(),
                payload.clone(),
                bar.clone(),
            );
            tokio::spawn(async move {
                for _ in 0..per_publisher {
                    let ack = bus.publish(subject.clone(), payload.clone()).await?;
                    if ack.is_none() {
                        bail!("no stream captured {subject}; the bench stream is missing");
                    }
                    bar.inc(1);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("a publisher task panicked")??;
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok((per_publisher * publishers, elapsed))
}

/// W4: replays `stream` from sequence 1 to its end; returns the count and time.
pub(crate) async fn replay_all(
    bus: &Bus,
    stream: &str,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, Duration)> {
    let start = Instant::now();
    let mut replay = bus
        .replay(stream, ReplayOptions::from_seq(1).stop_at_end())
        .await
        .with_context(|| format!("cannot replay stream {stream}"))?;
    let mut count = 0u64;
    while let Some(message) = replay.next().await {
        message.with_context(|| format!("replay failed after {count} messages"))?;
        count += 1;
        tick(bar, count);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok((count, elapsed))
}

/// W4 (consume): a durable consumer from sequence 1, fetching `batch` at a
/// time and acking each delivery, until `n` were acked; returns the time.
pub(crate) async fn consume_all(
    bus: &Bus,
    stream: &str,
    n: u64,
    batch: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let batch = usize::try_from(batch).unwrap_or(usize::MAX);
    let config = durabus::ConsumerConfig::durable("bench")
        .max_ack_pending(None)
        .ack_wait(Duration::from_secs(60));
    let start = Instant::now();
    bus.create_consumer(stream, config).await?;
    let mut acked = 0u64;
    while acked < n {
        let deliveries = bus
            .fetch(stream, "bench", batch, Duration::from_secs(5))
            .await
            .with_context(|| format!("fetch failed after {acked} acks"))?;
        if deliveries.is_empty() {
            bail!("W4 consume: nothing to fetch after {acked} of {n} acks");
        }
        for d in &deliveries {
            bus.ack(d, durabus::AckKind::Ack)
                .await
                .with_context(|| format!("ack {} failed", acked + 1))?;
            acked += 1;
            tick(bar, acked);
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    bus.delete_consumer(stream, "bench").await?;
    Ok(elapsed)
}

/// The disk's raw rate of 4 KiB appends each followed by fdatasync, on a
/// temporary file in `dir`: at most `max_ops` writes or about `max_time`.
pub(crate) fn fsync_baseline(
    dir: &Path,
    max_ops: u64,
    max_time: Duration,
    bar: &ProgressBar,
) -> anyhow::Result<Measurement> {
    let file = tempfile::Builder::new()
        .prefix(".durabus-bench-fsync-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    let mut handle = OpenOptions::new()
        .append(true)
        .open(file.path())
        .with_context(|| format!("cannot open {}", file.path().display()))?;
    let block = vec![0xA5u8; BASELINE_WRITE];
    let mut latencies = Vec::with_capacity(usize::try_from(max_ops).unwrap_or(0));
    let start = Instant::now();
    while (latencies.len() as u64) < max_ops && start.elapsed() < max_time {
        let t = Instant::now();
        handle.write_all(&block).context("baseline write failed")?;
        handle.sync_data().context("baseline fdatasync failed")?;
        latencies.push(t.elapsed());
        bar.inc(1);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    latencies.sort_unstable();
    let p50 = latencies
        .get(latencies.len() / 2)
        .copied()
        .unwrap_or_default();
    Ok(Measurement::new(
        "disk",
        "4 KiB append + fdatasync",
        latencies.len() as u64,
        BASELINE_WRITE,
        elapsed,
    )
    .note(format!(
        "baseline for W3, p50 {:.3} ms",
        p50.as_secs_f64() * 1e3
    )))
}

/// `url` with `durability=<value>` in its query: added when absent, or
/// replacing any given one when `force`. Only `file:` and `memory:` URLs
/// take the option; others are returned unchanged.
fn with_durability(url: &str, value: &str, force: bool) -> String {
    if !matches!(
        durabus::parse_url(url),
        Ok(BackendUrl::File { .. } | BackendUrl::Memory { .. })
    ) {
        return url.to_owned();
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut pairs: Vec<String> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let given = pairs.iter().any(|p| p.starts_with("durability="));
    if given && !force {
        return url.to_owned();
    }
    pairs.retain(|p| !p.starts_with("durability="));
    pairs.push(format!("durability={value}"));
    format!("{base}?{}", pairs.join("&"))
}

/// The durability a URL asks for, for the notes column.
fn durability_of(url: &str) -> String {
    let options = match durabus::parse_url(url) {
        Ok(BackendUrl::File { options, .. } | BackendUrl::Memory { options }) => options,
        Ok(BackendUrl::Nats { .. }) => return "set by the server".to_owned(),
        _ => return "backend default".to_owned(),
    };
    match options.durability {
        Durability::None => "none".to_owned(),
        Durability::Always => "always".to_owned(),
        Durability::Periodic(every) => format!("periodic {every:?}"),
    }
}

/// A rate with thousands separators: `1,234,567`.
fn thousands(value: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // display only
    let digits = (value.round().max(0.0) as u64).to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The result table for people.
fn table(results: &[Measurement]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .apply_modifier(modifiers::UTF8_ROUND_CORNERS)
        .set_header([
            "workload",
            "peer",
            "what",
            "messages",
            "seconds",
            "msg/s",
            "MB/s",
            "p50 / p99 / p99.9 µs",
            "notes",
        ]);
    for m in results {
        table.add_row([
            m.workload.clone(),
            m.peer.clone(),
            m.name.clone(),
            thousands(m.messages as f64),
            format!("{:.3}", m.seconds),
            thousands(m.msgs_per_sec),
            format!("{:.1}", m.mb_per_sec),
            m.latency.map_or_else(|| "-".to_owned(), |l| l.cell()),
            m.notes.clone(),
        ]);
    }
    for column in 3..8 {
        if let Some(c) = table.column_mut(column) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

/// A fresh connection to `url` with a stream capturing `subjects`.
pub(crate) async fn open_with_stream(
    url: &str,
    stream: &str,
    subjects: &str,
) -> anyhow::Result<Bus> {
    let bus = crate::session::open_bus(url, crate::session::Access::Create).await?;
    match bus
        .create_stream(StreamConfig::new(stream).subjects([subjects]))
        .await
    {
        Err(e) => {
            bus.close().await.ok();
            Err(e).with_context(|| format!("cannot create the bench stream {stream}"))
        }
        // create_stream returns an existing stream of the same config: never
        // measure (or delete) someone else's messages.
        Ok(info) if info.state.messages > 0 => {
            bus.close().await.ok();
            bail!(
                "the bench stream {stream} already holds {} messages",
                info.state.messages
            )
        }
        Ok(_) => Ok(bus),
    }
}

/// Deletes the bench stream and closes, keeping the workload's error first.
pub(crate) async fn clean_up<T>(
    bus: &Bus,
    url: &str,
    stream: &str,
    result: anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deleted = bus.delete_stream(stream).await;
    crate::session::finish(
        bus,
        url,
        result.and_then(|v| {
            deleted.with_context(|| format!("cannot delete the bench stream {stream}"))?;
            Ok(v)
        }),
    )
    .await
}

/// Everything one bench run needs.
pub(crate) struct Plan {
    workloads: BTreeSet<Workload>,
    msgs: u64,
    sync_msgs: u64,
    stall_msgs: u64,
    batch: u64,
    payload: Bytes,
    progress: Progress,
    /// Unique per run (process id, start time, run number), so runs on one
    /// server never meet each other's streams: they are named `BENCH_<tag>`
    /// and `BENCH_SYNC_<tag>` and capture `bench.<tag>.>`, `benchsync.<tag>.>`.
    tag: String,
}

/// The process's part of [`Plan::tag`]: its id and start time.
fn process_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// W1, W2 and W4 on one connection with durability `none` (unless the URL says otherwise).
async fn run_async_workloads(plan: &Plan, url: &str) -> anyhow::Result<Vec<Measurement>> {
    let stream = format!("BENCH_{}", plan.tag);
    let bus = open_with_stream(url, &stream, &format!("bench.{}.>", plan.tag)).await?;
    let result = async {
        let size = plan.payload.len();
        let durability = format!("durability {}", durability_of(url));
        let mut results = Vec::new();
        let mut stored = 0u64;
        if plan.workloads.contains(&Workload::W1) {
            let bar = plan.progress.bar("W1 publish", plan.msgs);
            let subject = format!("bench.{}.w1", plan.tag);
            let elapsed = publish_each(&bus, &subject, &plan.payload, plan.msgs, &bar).await?;
            stored += plan.msgs;
            results.push(
                Measurement::new("W1", "publish, await each ack", plan.msgs, size, elapsed)
                    .note(format!("1 publisher, {durability}")),
            );
        }
        if plan.workloads.contains(&Workload::W2) {
            let bar = plan.progress.bar("W2 batch", plan.msgs);
            let subject = format!("bench.{}.w2", plan.tag);
            let elapsed =
                publish_batched(&bus, &subject, &plan.payload, plan.msgs, plan.batch, &bar).await?;
            stored += plan.msgs;
            results.push(
                Measurement::new("W2", "publish_batch", plan.msgs, size, elapsed)
                    .note(format!("batches of {}, {durability}", plan.batch)),
            );
        }
        if plan.workloads.contains(&Workload::W4) {
            if stored == 0 {
                let bar = plan.progress.bar("W4 fill", plan.msgs);
                let subject = format!("bench.{}.w4", plan.tag);
                publish_batched(&bus, &subject, &plan.payload, plan.msgs, plan.batch, &bar).await?;
                stored = plan.msgs;
            }
            let bar = plan.progress.bar("W4 replay", stored);
            let (count, elapsed) = replay_all(&bus, &stream, &bar).await?;
            if count != stored {
                bail!("W4: replay returned {count} messages, but {stored} were stored");
            }
            results.push(
                Measurement::new("W4", "replay from seq 1", count, size, elapsed)
                    .note("ordered, stop at end"),
            );
            let bar = plan.progress.bar("W4 consume", stored);
            match consume_all(&bus, &stream, stored, plan.batch, &bar).await {
                Ok(elapsed) => results.push(
                    Measurement::new("W4", "consume, explicit ack", stored, size, elapsed)
                        .note(format!("durable consumer, fetch {}, ack each", plan.batch)),
                ),
                // A backend without consumers still reports the rest.
                Err(e)
                    if e.downcast_ref::<durabus::Error>()
                        .is_some_and(|e| matches!(e, durabus::Error::Unsupported(_))) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(results)
    }
    .await;
    clean_up(&bus, url, &stream, result).await
}

/// W3: durability `always`, 1 publisher then 64, against the fdatasync
/// baseline measured first in the same directory.
async fn run_sync_workloads(plan: &Plan, url: &str) -> anyhow::Result<Vec<Measurement>> {
    let mut results = Vec::new();
    let baseline_dir = match durabus::parse_url(url) {
        Ok(BackendUrl::File { path, .. }) => Some(path),
        _ => None,
    };
    let mut baseline_rate = None;
    if let Some(dir) = baseline_dir {
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let max_ops = plan.sync_msgs.max(500);
        let bar = plan.progress.bar("disk fdatasync", max_ops);
        let baseline = tokio::task::spawn_blocking(move || {
            fsync_baseline(&dir, max_ops, Duration::from_secs(2), &bar)
        })
        .await
        .context("the fdatasync baseline task panicked")??;
        baseline_rate = Some(baseline.msgs_per_sec);
        results.push(baseline);
    }
    // Sets the ratio to the baseline and says it in the notes.
    let compare = |mut m: Measurement, prefix: &str| {
        let note = match baseline_rate {
            Some(base) if base > 0.0 => {
                let ratio = m.msgs_per_sec / base;
                m.vs_fdatasync = Some(ratio);
                format!("{prefix}{:.0}% of fdatasync rate", ratio * 100.0)
            }
            _ => format!("{prefix}no fdatasync baseline for this backend"),
        };
        m.note(note)
    };
    // Only the embedded engine takes durability=always from the URL.
    let (one_name, many_name, many_note) = if durability_of(url) == "always" {
        (
            "durability always, 1 publisher",
            "durability always, 64 publishers",
            "group commit, ",
        )
    } else {
        (
            "1 publisher, durability set by the server",
            "64 publishers, durability set by the server",
            "",
        )
    };
    let stream = format!("BENCH_SYNC_{}", plan.tag);
    let subject = format!("benchsync.{}.w3", plan.tag);
    let bus = open_with_stream(url, &stream, &format!("benchsync.{}.>", plan.tag)).await?;
    let size = plan.payload.len();
    let result = async {
        let bar = plan.progress.bar("W3 1 pub", plan.sync_msgs);
        let elapsed = publish_each(&bus, &subject, &plan.payload, plan.sync_msgs, &bar).await?;
        let one = Measurement::new("W3", one_name, plan.sync_msgs, size, elapsed);
        results.push(compare(one, ""));

        let n = plan.sync_msgs * W3_GROUP_FACTOR;
        let bar = plan
            .progress
            .bar("W3 64 pubs", n.div_ceil(W3_PUBLISHERS) * W3_PUBLISHERS);
        let (sent, elapsed) =
            publish_concurrent(&bus, &subject, &plan.payload, n, W3_PUBLISHERS, &bar).await?;
        let many = Measurement::new("W3", many_name, sent, size, elapsed);
        results.push(compare(many, many_note));
        Ok(results)
    }
    .await;
    clean_up(&bus, url, &stream, result).await
}

/// Row by row, the run with the median rate. Every run has the same rows in
/// the same order; a W3 row keeps its own run's fdatasync ratio, so a ratio
/// always compares figures measured side by side.
fn medians(runs: Vec<Vec<Measurement>>) -> Vec<Measurement> {
    let count = runs.len();
    let Some(rows) = runs.first().map(Vec::len) else {
        return Vec::new();
    };
    let mut columns: Vec<Vec<Measurement>> = (0..rows).map(|_| Vec::new()).collect();
    for run in runs {
        for (i, m) in run.into_iter().enumerate() {
            if let Some(column) = columns.get_mut(i) {
                column.push(m);
            }
        }
    }
    columns
        .into_iter()
        .filter_map(|mut column| {
            column.sort_by(|a, b| a.msgs_per_sec.total_cmp(&b.msgs_per_sec));
            let middle = column.len() / 2;
            let mut m = column.into_iter().nth(middle)?;
            if count > 1 {
                m.notes = format!("{}; median of {count} runs", m.notes);
            }
            Some(m)
        })
        .collect()
}

/// Runs `durabus bench`.
pub(crate) async fn run(global: &Global, args: BenchArgs) -> anyhow::Result<()> {
    let visible =
        !global.json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
    let process = process_tag();
    let mut plan = Plan {
        workloads: args.workloads.iter().copied().collect(),
        msgs: args.msgs,
        sync_msgs: args.sync_msgs.unwrap_or(args.msgs.min(2000)),
        stall_msgs: args.stall_msgs.unwrap_or(args.msgs),
        batch: args.batch,
        payload: Bytes::from(vec![b'x'; args.size]),
        progress: Progress { visible },
        tag: process.clone(),
    };
    let redis_url = redis::url_of(&args.peers, args.redis_url.as_deref())?;
    // Never touch ./data unless asked: without --url, bench in a fresh temporary store.
    let temp = match &global.url {
        Some(_) => None,
        None if redis_url.is_some() => None,
        None => Some(
            tempfile::Builder::new()
                .prefix("durabus-bench-")
                .tempdir()
                .context("cannot create a temporary directory for the bench store")?,
        ),
    };
    let url = match &temp {
        Some(dir) => format!("file:{}", dir.path().display()),
        None => global.url().to_owned(),
    };
    let backend = match durabus::parse_url(&url)? {
        BackendUrl::File { .. } => "file",
        BackendUrl::Memory { .. } => "memory",
        BackendUrl::Nats { .. } => "nats",
        _ => "other",
    };
    let backend = if redis_url.is_some() {
        "redis"
    } else {
        backend
    };
    let mut peers: Vec<Peer> = Vec::new();
    for p in &args.peers {
        if !peers.contains(p) {
            peers.push(*p);
        }
    }
    if peers.contains(&Peer::AsyncNats) && backend != "nats" {
        bail!(
            "--peer async-nats measures a NATS server: give --url nats://host:port (not {})",
            durabus::redact(&url)
        );
    }
    let both = peers.len() > 1;
    let peer = match peers.as_slice() {
        [Peer::AsyncNats] => "async-nats",
        [Peer::Redis] => "redis",
        [_] => "durabus",
        _ => "durabus,async-nats",
    };
    let label = format!("{peer}/{backend}");
    let shown = durabus::redact(redis_url.unwrap_or(&url));
    let mut skipped = Vec::new();
    if backend == "nats" && plan.workloads.remove(&Workload::W3) {
        skipped.push(Skipped {
            workload: "W3",
            reason: W3_ON_NATS,
        });
    }
    if backend != "file" && plan.workloads.remove(&Workload::W6) {
        skipped.push(Skipped {
            workload: "W6",
            reason:
                "only on file: W6 measures that memory stays flat while the messages go to disk",
        });
    }
    if backend != "file" && plan.workloads.remove(&Workload::W7) {
        skipped.push(Skipped {
            workload: "W7",
            reason: "only on file: W7 measures opening an embedded store from disk",
        });
    }
    if !global.json {
        let which = if temp.is_some() {
            " (temporary, removed afterwards)"
        } else {
            ""
        };
        eprintln!(
            "{peer} bench on {shown}{which}: {} messages of {} bytes",
            plan.msgs, args.size
        );
    }
    let mut runs = Vec::new();
    for run in 1..=args.runs {
        plan.tag = format!("{process}_{run}");
        if let Some(redis_url) = redis_url {
            runs.push(redis::run_workloads(&plan, redis_url).await?);
            continue;
        }
        let mut results = Vec::new();
        let async_set = [Workload::W1, Workload::W2, Workload::W4];
        if async_set.iter().any(|w| plan.workloads.contains(w)) {
            let url = with_durability(&url, "none", false);
            results.extend(match peers.as_slice() {
                _ if both => pair::run(&plan, &url, args.slice).await?,
                [Peer::AsyncNats] => raw::run_workloads(&plan, &url).await?,
                _ => run_async_workloads(&plan, &url).await?,
            });
        }
        if plan.workloads.contains(&Workload::W3) {
            results
                .extend(run_sync_workloads(&plan, &with_durability(&url, "always", true)).await?);
        }
        // W5-W7 are durabus's alone (no peer runs them).
        if peers.as_slice() == [Peer::Durabus] {
            let url = with_durability(&url, "none", false);
            if plan.workloads.contains(&Workload::W5) {
                results.push(system::latency(&plan, &url).await?);
            }
            if plan.workloads.contains(&Workload::W6) {
                results.push(system::stalled_memory(&plan, &url).await?);
            }
            if plan.workloads.contains(&Workload::W7) {
                results.push(system::open_time(&plan, &url, args.open_size).await?);
            }
        }
        results.sort_by_key(Measurement::rank);
        for m in results.iter_mut().filter(|m| m.peer.is_empty()) {
            m.peer.clone_from(&label);
        }
        runs.push(results);
    }
    let comparison = compare(&runs);
    let results = medians(runs);
    let report = Report {
        url: shown,
        backend,
        peer,
        temporary_store: temp.is_some(),
        msg_size: args.size,
        msgs: plan.msgs,
        batch: plan.batch,
        runs: args.runs,
        results,
        skipped,
        comparison,
    };
    if let Some(path) = &args.json_out {
        let text = serde_json::to_string_pretty(&report).context("cannot encode the results")?;
        std::fs::write(path, text + "\n")
            .with_context(|| format!("cannot write the results to {}", path.display()))?;
    }
    if global.json {
        print_json(&serde_json::to_value(&report).context("cannot encode the results")?)?;
    } else {
        crate::output::print_text(&crate::output::table_text(&table(&report.results)))?;
        for c in &report.comparison {
            let (low, high) = c
                .ratios
                .iter()
                .fold((f64::INFINITY, 0.0f64), |(l, h), r| (l.min(*r), h.max(*r)));
            let of = match c.ratios.len() {
                1 => "1 run".to_owned(),
                n => format!("median of {n} runs, {low:.3}-{high:.3}"),
            };
            println!(
                "{} {}: {} / {} = {:.3} ({of}): {}",
                c.workload,
                c.name,
                pair::DURABUS,
                pair::RAW,
                c.ratio,
                if c.within_5_percent {
                    "within 5%"
                } else {
                    "more than 5% slower"
                }
            );
        }
        for s in &report.skipped {
            eprintln!("{} skipped: {}", s.workload, s.reason);
        }
    }
    if let Some(dir) = temp {
        let path = dir.path().to_owned();
        dir.close()
            .with_context(|| format!("cannot remove the bench store {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn durability_is_added_to_file_urls_unless_given() {
        assert_eq!(
            with_durability("file:/x", "none", false),
            "file:/x?durability=none"
        );
        assert_eq!(
            with_durability("file:/x?durability=always", "none", false),
            "file:/x?durability=always"
        );
        assert_eq!(
            with_durability("file:/x?segment_size=1024&durability=none", "always", true),
            "file:/x?segment_size=1024&durability=always"
        );
        assert_eq!(
            with_durability("memory:", "none", false),
            "memory:?durability=none"
        );
        assert_eq!(
            with_durability("nats://h:4222", "none", false),
            "nats://h:4222"
        );
    }

    #[test]
    fn medians_pick_the_middle_run_per_row() {
        let run = |rate: f64| {
            vec![Measurement::new(
                "W1",
                "x",
                1,
                1,
                Duration::from_secs_f64(1.0 / rate),
            )]
        };
        let picked = medians(vec![run(10.0), run(30.0), run(20.0)]);
        assert_eq!(picked.len(), 1);
        assert!((picked[0].msgs_per_sec - 20.0).abs() < 1e-6);
        assert!(picked[0].notes.contains("median of 3 runs"));
    }

    #[test]
    fn the_comparison_is_the_median_of_each_runs_ratio() {
        let row = |peer: &str, rate: f64| {
            let mut m = Measurement::new("W1", "x", 1, 1, Duration::from_secs_f64(1.0 / rate));
            m.peer = peer.to_owned();
            m
        };
        let run = |d: f64, r: f64| vec![row(pair::DURABUS, d), row(pair::RAW, r)];
        let c = compare(&[run(90.0, 100.0), run(200.0, 100.0), run(97.0, 100.0)]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].workload, "W1");
        assert_eq!(c[0].ratios.len(), 3);
        assert!((c[0].ratio - 0.97).abs() < 1e-6);
        assert!(c[0].within_5_percent);
        assert!(compare(&[run(94.0, 100.0)])
            .iter()
            .all(|c| !c.within_5_percent));
        // Two rows of one workload (W4 replay and consume) compare apart.
        let mut two = run(50.0, 100.0);
        for (m, name) in two.iter_mut().zip(["y", "y"]) {
            m.name = name.to_owned();
        }
        two.extend(run(100.0, 100.0));
        let c = compare(&[two]);
        let ratios: Vec<(&str, f64)> = c.iter().map(|c| (c.name.as_str(), c.ratio)).collect();
        assert_eq!(ratios, [("y", 0.5), ("x", 1.0)]);
    }

    #[test]
    fn rates_print_with_thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(100_000.0), "100,000");
    }
}
