//! W1-W4 on a [`durabus::Bus`]: publish one by one and in batches, the
//! durability `always` pair against the disk's fdatasync rate, replay and
//! consume; and the bench stream each of them runs in.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use durabus::embedded::Durability;
use durabus::{BackendUrl, Bus, Message, ReplayOptions, StreamConfig};
use indicatif::ProgressBar;

use crate::args::{W8Plan, Workload};
use crate::measure::{tick, Measurement, Progress};

/// Concurrent publishers in the second half of W3.
const W3_PUBLISHERS: u64 = 64;

/// The 64 publishers of W3 send this many times the single publisher's count
/// (group commit is that much faster; the run should last long enough to measure).
pub const W3_GROUP_FACTOR: u64 = 50;

/// Bytes per write of the fdatasync baseline.
const BASELINE_WRITE: usize = 4096;

/// Everything one bench run needs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The workloads to run.
    pub workloads: BTreeSet<Workload>,
    /// Messages of W1 and of W2.
    pub msgs: u64,
    /// Messages of W3's single publisher.
    pub sync_msgs: u64,
    /// Messages W6 publishes while its consumers stall.
    pub stall_msgs: u64,
    /// Messages per batch in W2 (and per fetch in W4 consume).
    pub batch: u64,
    /// The payload of every message.
    pub payload: Bytes,
    /// The payload of W6's messages.
    pub stall_payload: Bytes,
    /// W8's sizes and executables.
    pub w8: W8Plan,
    /// Where progress bars go.
    pub progress: Progress,
    /// Unique per run (process id, start time, run number), so runs on one
    /// server never meet each other's streams: they are named `BENCH_<tag>`
    /// and `BENCH_SYNC_<tag>` and capture `bench.<tag>.>`, `benchsync.<tag>.>`.
    pub tag: String,
}

/// W1: `n` publishes by one publisher, each awaiting its ack.
pub async fn publish_each(
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
pub async fn publish_batched(
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
async fn publish_concurrent(
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
pub async fn replay_all(
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
pub async fn consume_all(
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
pub(crate) fn with_durability(url: &str, value: &str, force: bool) -> String {
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
pub(crate) fn durability_of(url: &str) -> String {
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

/// A fresh connection to `url` with a stream capturing `subjects`.
pub async fn open_with_stream(url: &str, stream: &str, subjects: &str) -> anyhow::Result<Bus> {
    let bus = open_bus(url).await?;
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
pub async fn clean_up<T>(
    bus: &Bus,
    url: &str,
    stream: &str,
    result: anyhow::Result<T>,
) -> anyhow::Result<T> {
    let deleted = bus.delete_stream(stream).await;
    finish(
        bus,
        url,
        result.and_then(|v| {
            deleted.with_context(|| format!("cannot delete the bench stream {stream}"))?;
            Ok(v)
        }),
    )
    .await
}

/// Connects to `url`, saying which URL failed and why (credentials never shown).
pub(crate) async fn open_bus(url: &str) -> anyhow::Result<Bus> {
    // A malformed URL explains itself; only failures to open get the URL prefixed.
    durabus::parse_url(url)?;
    match durabus::connect(url).await {
        Ok(bus) => Ok(bus),
        // These name the (redacted) server and say what to check.
        Err(
            e @ (durabus::Error::Unreachable { .. }
            | durabus::Error::AuthFailed { .. }
            | durabus::Error::Tls { .. }
            | durabus::Error::JetStreamNotEnabled),
        ) => Err(e.into()),
        Err(e) => Err(e).with_context(|| format!("cannot open {}", durabus::redact(url))),
    }
}

/// Closes `bus` after a workload, keeping the workload's own error first.
async fn finish<T>(bus: &Bus, url: &str, result: anyhow::Result<T>) -> anyhow::Result<T> {
    let closed = bus.close().await;
    let value = result?;
    closed.with_context(|| match durabus::parse_url(url) {
        Ok(BackendUrl::Nats { .. }) => format!(
            "closing the connection to {} failed; messages published without an ack \
             (subjects no stream captures) may not have reached the server",
            durabus::redact(url)
        ),
        _ => "closing the store failed; the last acknowledged writes may not be durable".to_owned(),
    })?;
    Ok(value)
}

/// W1, W2 and W4 on one connection with durability `none` (unless the URL says otherwise).
pub(crate) async fn run_async_workloads(
    plan: &Plan,
    url: &str,
) -> anyhow::Result<Vec<Measurement>> {
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
pub(crate) async fn run_sync_workloads(plan: &Plan, url: &str) -> anyhow::Result<Vec<Measurement>> {
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

#[cfg(test)]
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
}
