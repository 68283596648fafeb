//! The raw async-nats peer of `durabus-bench bench --peer async-nats`: W1, W2 and
//! W4 (replay and consume) written directly against async-nats' JetStream API, on the same
//! nats-server, with the same counts, payload, batch size and subjects as the
//! durabus workloads, so the two rows differ only in what durabus adds.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{
    self,
    consumer::{pull, push, AckPolicy, DeliverPolicy},
    stream,
};
use bytes::Bytes;
use futures::StreamExt as _;
use indicatif::ProgressBar;

use durabus_workloads::{tick, Measurement, Plan, Workload};

/// W1: `n` JetStream publishes, each ack awaited before the next publish:
/// `publish(..).await?.await?`.
pub(crate) async fn publish_each(
    js: &jetstream::Context,
    subject: &str,
    payload: &Bytes,
    n: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    for i in 1..=n {
        js.publish(subject.to_owned(), payload.clone())
            .await
            .with_context(|| format!("publish {i} of {n} failed"))?
            .await
            .with_context(|| format!("ack {i} of {n} failed"))?;
        tick(bar, i);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(elapsed)
}

/// W2: `n` messages in rounds of `batch`: publish the round, then await its
/// ack futures (the pipelining of durabus' `publish_batch`).
pub(crate) async fn publish_batched(
    js: &jetstream::Context,
    subject: &str,
    payload: &Bytes,
    n: u64,
    batch: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut sent = 0;
    let mut acks = Vec::with_capacity(usize::try_from(batch).unwrap_or(0));
    while sent < n {
        let this = batch.min(n - sent);
        for i in 0..this {
            let ack = js
                .publish(subject.to_owned(), payload.clone())
                .await
                .with_context(|| format!("publish {} of {n} failed", sent + i + 1))?;
            acks.push(ack);
        }
        for (i, ack) in acks.drain(..).enumerate() {
            ack.await
                .with_context(|| format!("ack {} of {n} failed", sent + i as u64 + 1))?;
        }
        sent += this;
        bar.inc(this);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(elapsed)
}

/// W2 of the hub comparison: `n` messages with up to `window` acks in
/// flight: each publish waits for the oldest ack once `window` are pending,
/// and the last ones are awaited at the end (nats bench's `--pubbatch`
/// style, but a sliding window rather than rounds).
pub(crate) async fn publish_window(
    js: &jetstream::Context,
    subject: &str,
    payload: &Bytes,
    n: u64,
    window: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let window = usize::try_from(window).unwrap_or(usize::MAX).max(1);
    let mut pending: VecDeque<jetstream::context::PublishAckFuture> =
        VecDeque::with_capacity(window);
    let start = Instant::now();
    let mut acked = 0u64;
    for i in 1..=n {
        if pending.len() >= window {
            if let Some(ack) = pending.pop_front() {
                ack.await
                    .with_context(|| format!("ack {} of {n} failed", acked + 1))?;
                acked += 1;
            }
        }
        let ack = js
            .publish(subject.to_owned(), payload.clone())
            .await
            .with_context(|| format!("publish {i} of {n} failed"))?;
        pending.push_back(ack);
        tick(bar, i);
    }
    for ack in pending {
        ack.await
            .with_context(|| format!("ack {} of {n} failed", acked + 1))?;
        acked += 1;
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(elapsed)
}

/// W4: an ordered push consumer (async-nats' own) from sequence 1, counting
/// messages up to the stream's message count read from its info first (as
/// durabus' bounded replay reads its end). The time includes the info call
/// and the consumer's creation. The bench stream has no deletes, so the
/// count ends the replay; reading each message's sequence would parse its
/// reply subject a second time (the ordered consumer already does).
pub(crate) async fn replay_all(
    js: &jetstream::Context,
    stream: &str,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, Duration)> {
    let start = Instant::now();
    let handle = js
        .get_stream(stream)
        .await
        .with_context(|| format!("cannot get stream {stream}"))?;
    let total = handle.cached_info().state.messages;
    let mut count = 0u64;
    if total > 0 {
        let consumer = handle
            .create_consumer(push::OrderedConfig {
                deliver_subject: js.client().new_inbox(),
                deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: 1 },
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create an ordered consumer on {stream}"))?;
        let mut messages = consumer
            .messages()
            .await
            .context("cannot subscribe the ordered consumer")?;
        while let Some(message) = messages.next().await {
            message.with_context(|| format!("replay failed after {count} messages"))?;
            count += 1;
            tick(bar, count);
            if count >= total {
                break;
            }
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok((count, elapsed))
}

/// W4 (consume): a durable pull consumer from sequence 1, `fetch()` of
/// `batch` messages at a time (async-nats' own no-wait pull) and
/// `message.ack().await` for each (async-nats' ack: published, not
/// confirmed), until `n` were acked; then the consumer is deleted. The time
/// includes the consumer's creation, as durabus' does.
pub(crate) async fn consume_all(
    js: &jetstream::Context,
    stream: &str,
    n: u64,
    batch: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let batch = usize::try_from(batch).unwrap_or(usize::MAX);
    let start = Instant::now();
    let handle = js
        .get_stream(stream)
        .await
        .with_context(|| format!("cannot get stream {stream}"))?;
    let consumer = handle
        .create_consumer(pull::Config {
            durable_name: Some("bench".to_owned()),
            ack_policy: AckPolicy::Explicit,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: -1,
            ..Default::default()
        })
        .await
        .with_context(|| format!("cannot create a pull consumer on {stream}"))?;
    let mut acked = 0u64;
    while acked < n {
        let mut messages = consumer
            .fetch()
            .max_messages(batch)
            .messages()
            .await
            .with_context(|| format!("fetch failed after {acked} acks"))?;
        let before = acked;
        while let Some(message) = messages.next().await {
            let message =
                message.map_err(|e| anyhow::anyhow!("fetch failed after {acked} acks: {e}"))?;
            message
                .ack()
                .await
                .map_err(|e| anyhow::anyhow!("ack {} failed: {e}", acked + 1))?;
            acked += 1;
            tick(bar, acked);
        }
        if acked == before {
            bail!("W4 consume: nothing to fetch after {acked} of {n} acks");
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    handle
        .delete_consumer("bench")
        .await
        .with_context(|| format!("cannot delete the bench consumer of {stream}"))?;
    Ok(elapsed)
}

/// An async-nats connection with a bench stream of its own.
pub(crate) struct Raw {
    client: async_nats::Client,
    /// The JetStream context the workloads use.
    pub(crate) js: jetstream::Context,
    /// The bench stream's name.
    pub(crate) stream: String,
}

impl Raw {
    /// Connects to `url` and creates `stream` capturing `subjects` (file
    /// storage, server defaults otherwise, as durabus creates it); refuses a
    /// stream that already holds messages.
    pub(crate) async fn open(url: &str, stream: &str, subjects: &str) -> anyhow::Result<Self> {
        let client = async_nats::ConnectOptions::new()
            .name("durabus-bench-raw")
            .connect(url)
            .await
            .with_context(|| format!("cannot connect to {}", durabus::redact(url)))?;
        let js = jetstream::new(client.clone());
        let raw = Self {
            client,
            js,
            stream: stream.to_owned(),
        };
        let created = raw
            .js
            .create_stream(stream::Config {
                name: stream.to_owned(),
                subjects: vec![subjects.to_owned()],
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .with_context(|| format!("cannot create the bench stream {stream}"));
        match created {
            Err(e) => {
                raw.client.drain().await.ok();
                Err(e)
            }
            // An existing stream of the same config is returned as is: never
            // measure (or delete) someone else's messages.
            Ok(s) if s.cached_info().state.messages > 0 => {
                raw.client.drain().await.ok();
                bail!(
                    "the bench stream {stream} already holds {} messages",
                    s.cached_info().state.messages
                )
            }
            Ok(_) => Ok(raw),
        }
    }

    /// Deletes the stream and closes the connection, keeping `result`'s error first.
    pub(crate) async fn finish<T>(self, result: anyhow::Result<T>) -> anyhow::Result<T> {
        let deleted = self.js.delete_stream(&self.stream).await;
        let drained = self.client.drain().await;
        let value = result?;
        deleted.with_context(|| format!("cannot delete the bench stream {}", self.stream))?;
        drained.context("cannot drain the connection")?;
        Ok(value)
    }
}

/// W1, W2 and W4 on one async-nats connection to `url`, in a stream of their
/// own, deleted afterwards.
pub(crate) async fn run_workloads(plan: &Plan, url: &str) -> anyhow::Result<Vec<Measurement>> {
    let raw = Raw::open(
        url,
        &format!("BENCH_{}", plan.tag),
        &format!("bench.{}.>", plan.tag),
    )
    .await?;
    let result = measure(plan, &raw.js, &raw.stream).await;
    raw.finish(result).await
}

/// The workloads of `plan` on `stream`.
async fn measure(
    plan: &Plan,
    js: &jetstream::Context,
    stream: &str,
) -> anyhow::Result<Vec<Measurement>> {
    let size = plan.payload.len();
    let mut results = Vec::new();
    let mut stored = 0u64;
    if plan.workloads.contains(&Workload::W1) {
        let bar = plan.progress.bar("W1 publish", plan.msgs);
        let subject = format!("bench.{}.w1", plan.tag);
        let elapsed = publish_each(js, &subject, &plan.payload, plan.msgs, &bar).await?;
        stored += plan.msgs;
        results.push(
            Measurement::new("W1", "publish, await each ack", plan.msgs, size, elapsed)
                .note("1 publisher, js.publish().await?.await?"),
        );
    }
    if plan.workloads.contains(&Workload::W2) {
        let bar = plan.progress.bar("W2 batch", plan.msgs);
        let subject = format!("bench.{}.w2", plan.tag);
        let elapsed =
            publish_batched(js, &subject, &plan.payload, plan.msgs, plan.batch, &bar).await?;
        stored += plan.msgs;
        results.push(
            Measurement::new("W2", "publish_batch", plan.msgs, size, elapsed).note(format!(
                "batches of {}: publish all, then await the acks",
                plan.batch
            )),
        );
    }
    if plan.workloads.contains(&Workload::W4) {
        if stored == 0 {
            let bar = plan.progress.bar("W4 fill", plan.msgs);
            let subject = format!("bench.{}.w4", plan.tag);
            publish_batched(js, &subject, &plan.payload, plan.msgs, plan.batch, &bar).await?;
            stored = plan.msgs;
        }
        let bar = plan.progress.bar("W4 replay", stored);
        let (count, elapsed) = replay_all(js, stream, &bar).await?;
        if count != stored {
            bail!("W4: replay returned {count} messages, but {stored} were stored");
        }
        results.push(
            Measurement::new("W4", "replay from seq 1", count, size, elapsed)
                .note("async-nats ordered push consumer"),
        );
        let bar = plan.progress.bar("W4 consume", stored);
        let elapsed = consume_all(js, stream, stored, plan.batch, &bar).await?;
        results.push(
            Measurement::new("W4", "consume, explicit ack", stored, size, elapsed)
                .note(format!("pull consumer, fetch {}, ack() each", plan.batch)),
        );
    }
    Ok(results)
}
