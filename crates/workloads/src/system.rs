//! W5-W7 of `docs/performance.md`: end-to-end latency, memory with a
//! stalled consumer, and the time to open a large stream.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use durabus::{BackendUrl, ConsumerConfig, Message};

use crate::bus::{clean_up, open_bus, open_with_stream, publish_batched, Plan};
use crate::measure::{tick, Latency, Measurement, RssSample};

/// Messages W5 sends, one at a time.
const W5_MSGS: u64 = 20_000;

/// Bytes per message while W7 fills its stream.
const W7_MSG: usize = 1024;

/// W5: one publisher, one subscriber on the same subject (captured by a
/// stream, so the message is stored first). Each message carries its send
/// time; the subscriber records when it arrived; the next is sent once it
/// did, so the figure is latency without queueing.
pub(crate) async fn latency(plan: &Plan, url: &str) -> anyhow::Result<Measurement> {
    let stream = format!("BENCH_LAT_{}", plan.tag);
    let subject = format!("benchlat.{}.w5", plan.tag);
    let bus = open_with_stream(url, &stream, &format!("benchlat.{}.>", plan.tag)).await?;
    let result = async {
        let mut sub = bus.subscribe(&subject).await?;
        let n = plan.msgs.min(W5_MSGS);
        let bar = plan.progress.bar("W5 latency", n);
        let base = Instant::now();
        let mut nanos = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        let mut payload = plan.payload.to_vec();
        payload.resize(payload.len().max(8), b'x');
        let start = Instant::now();
        for i in 1..=n {
            let sent = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
            payload[..8].copy_from_slice(&sent.to_le_bytes());
            bus.publish(subject.as_str(), Bytes::copy_from_slice(&payload))
                .await?;
            let m = tokio::time::timeout(Duration::from_secs(10), sub.next())
                .await
                .context("W5: the subscriber got nothing within 10 s")?
                .context("W5: the subscription ended")?;
            let now = u64::try_from(base.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let sent = m
                .payload
                .get(..8)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_le_bytes)
                .context("W5: a message came back without its send time")?;
            nanos.push(now.saturating_sub(sent));
            tick(&bar, i);
        }
        let elapsed = start.elapsed();
        bar.finish_and_clear();
        let mut m = Measurement::new(
            "W5",
            "publish -> subscriber latency",
            n,
            plan.payload.len(),
            elapsed,
        );
        m.latency = Some(Latency::of(&mut nanos));
        Ok(m.note("1 publisher, 1 subscriber, one message in flight; stored by a stream"))
    }
    .await;
    clean_up(&bus, url, &stream, result).await
}

/// Resident memory of this process in bytes (Linux `/proc/self/statm`).
pub(crate) fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// `n` as 10M, 500k or 1234.
pub(crate) fn count(n: u64) -> String {
    if n >= 1_000_000 && n % 1_000_000 == 0 {
        format!("{}M", n / 1_000_000)
    } else if n >= 1000 && n % 1000 == 0 {
        format!("{}k", n / 1000)
    } else {
        n.to_string()
    }
}

/// W6: publishes `--stall-msgs` messages in batches while a live subscriber and a
/// durable consumer on the same subjects read nothing; reports how much
/// resident memory grew (the bar: less than 64 MiB over the baseline).
pub(crate) async fn stalled_memory(plan: &Plan, url: &str) -> anyhow::Result<Measurement> {
    let stream = format!("BENCH_MEM_{}", plan.tag);
    let subject = format!("benchmem.{}.w6", plan.tag);
    let bus = open_with_stream(url, &stream, &format!("benchmem.{}.>", plan.tag)).await?;
    let result = async {
        let stalled_sub = bus.subscribe(&subject).await?;
        bus.create_consumer(&stream, ConsumerConfig::durable("stalled"))
            .await?;
        let before = rss_bytes().context("W6: cannot read /proc/self/statm")?;
        let n = plan.stall_msgs;
        let payload = &plan.stall_payload;
        // RSS at 1M, 10M, 100M, ... messages on the way, then at n.
        let mut stops: Vec<u64> = std::iter::successors(Some(1_000_000u64), |s| s.checked_mul(10))
            .take_while(|s| *s < n)
            .collect();
        stops.push(n);
        let mut samples = Vec::with_capacity(stops.len());
        let mut elapsed = Duration::ZERO;
        let mut sent = 0;
        for stop in stops {
            let bar = plan.progress.bar(&format!("W6 stalled to {stop}"), stop - sent);
            elapsed += publish_batched(&bus, &subject, payload, stop - sent, plan.batch, &bar).await?;
            sent = stop;
            let now = rss_bytes().context("W6: cannot read /proc/self/statm")?;
            #[allow(clippy::cast_precision_loss)]
            let growth = now.saturating_sub(before) as f64 / (1024.0 * 1024.0);
            samples.push(RssSample {
                messages: stop,
                rss_growth_mib: growth,
            });
        }
        let dropped = stalled_sub.dropped();
        drop(stalled_sub);
        let growth = samples.last().map_or(0.0, |s| s.rss_growth_mib);
        let mut m = Measurement::new(
            "W6",
            "publish with a stalled consumer",
            n,
            payload.len(),
            elapsed,
        );
        m.rss_growth_mib = Some(growth);
        let along = samples
            .iter()
            .map(|s| format!("{}: +{:.1}", count(s.messages), s.rss_growth_mib))
            .collect::<Vec<_>>()
            .join(", ");
        m.rss_samples = samples;
        Ok(m.note(format!(
            "RSS +{growth:.1} MiB (bar: < 64; MiB at {along}); stalled subscriber dropped {dropped}, durable consumer fetched nothing"
        )))
    }
    .await;
    clean_up(&bus, url, &stream, result).await
}

/// W7: fills a stream with `bytes` of 1 KiB messages in a store of its own
/// next to the bench store, closes it, and times opening it again (until
/// the stream answers). Embedded `file:` only.
pub(crate) async fn open_time(plan: &Plan, url: &str, bytes: u64) -> anyhow::Result<Measurement> {
    let dir = match durabus::parse_url(url)? {
        BackendUrl::File { path, .. } => path.join(format!("w7_{}", plan.tag)),
        _ => bail!("W7 measures opening an embedded file: store"),
    };
    let result = open_time_in(plan, &dir, bytes).await;
    let removed = std::fs::remove_dir_all(&dir)
        .with_context(|| format!("cannot remove the W7 store {}", dir.display()));
    let m = result?;
    removed?;
    Ok(m)
}

async fn open_time_in(plan: &Plan, dir: &Path, bytes: u64) -> anyhow::Result<Measurement> {
    let url = format!("file:{}?durability=none", dir.display());
    let stream = "BENCH_OPEN";
    let bus = open_with_stream(&url, stream, "benchopen.>").await?;
    let n = bytes.div_ceil(W7_MSG as u64);
    let bar = plan.progress.bar("W7 fill", n);
    let payload = Bytes::from(vec![b'o'; W7_MSG]);
    let batch = 1000u64;
    let mut sent = 0;
    while sent < n {
        let k = batch.min(n - sent);
        let messages = (0..k)
            .map(|i| Message::new(format!("benchopen.s{}", (sent + i) % 64), payload.clone()))
            .collect();
        for r in bus.publish_batch(messages).await? {
            r?;
        }
        sent += k;
        bar.inc(k);
    }
    bar.finish_and_clear();
    let stored = bus.stream_info(stream).await?.state;
    bus.close().await?;

    let start = Instant::now();
    let bus = open_bus(&url).await?;
    let info = bus.stream_info(stream).await?;
    let elapsed = start.elapsed();
    bus.close().await?;
    if info.state.messages != stored.messages || info.state.last_seq != stored.last_seq {
        bail!(
            "W7: the reopened stream holds {} messages up to {}, not {} up to {}",
            info.state.messages,
            info.state.last_seq,
            stored.messages,
            stored.last_seq
        );
    }
    #[allow(clippy::cast_precision_loss)]
    let mib = stored.bytes as f64 / (1024.0 * 1024.0);
    let mut m = Measurement::new("W7", "open a large stream", 1, 0, elapsed);
    m.msgs_per_sec = 0.0;
    Ok(m.note(format!(
        "{:.0} MiB, {} messages of 1 KiB; clean close, then open until the stream answers (bar: < 200 ms for 1 GiB)",
        mib, stored.messages
    )))
}
