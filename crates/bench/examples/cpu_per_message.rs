//! Where the time of the hub comparison's workloads goes: runs W1 (publish,
//! await each ack), W2 (publish, 256 acks in flight), W4 replay (async-nats'
//! ordered push consumer) or W4 consume (a durable pull consumer, fetch
//! 1000, `ack()` each) against one server, and prints the rate with the CPU
//! time the client (this process) and the server (by pid, from `/proc`)
//! spent per message. docs/performance.md reads the hub comparison with it: a rate
//! that a client alone cannot exceed is the client's, not the server's.
//!
//! ```text
//! cargo run --release -p durabus-bench --example cpu_per_message -- \
//!     nats://127.0.0.1:4222 <server pid> w1|w2|replay|consume <messages> <runs>
//! ```
//!
//! It creates (or reuses) the stream `PROBE` on `probe.>` and fills it to
//! `<messages>` messages of 128 bytes first (W1 and W2 publish `<messages>`
//! more on each run).

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{
    self,
    consumer::{pull, push, AckPolicy, DeliverPolicy},
    stream,
};
use futures::StreamExt as _;

/// CPU seconds (user and system) process `pid` has used.
fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("no process {pid}"))?;
    // Fields after the command name, which ends at the last ')'.
    let rest = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..))
        .context("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split(' ').collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    // utime and stime, in clock ticks (100 a second on Linux).
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// What a run measures.
#[derive(Clone, Copy)]
enum Workload {
    /// Publish with this many acks in flight (W1: 1, W2: 256).
    Publish(usize),
    Replay,
    Consume,
}

/// Publishes `n` messages with up to `window` acks in flight, awaiting
/// each ack in order.
async fn publish(
    js: &jetstream::Context,
    payload: &bytes::Bytes,
    n: u64,
    window: usize,
) -> anyhow::Result<()> {
    let mut in_flight = std::collections::VecDeque::with_capacity(window);
    for i in 0..n {
        if in_flight.len() >= window {
            if let Some(ack) = in_flight.pop_front() {
                ack.await?;
            }
        }
        in_flight.push_back(
            js.publish(format!("probe.{}", i % 16), payload.clone())
                .await?,
        );
    }
    for ack in in_flight {
        ack.await?;
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [url, pid, mode, n, runs] = args.as_slice() else {
        bail!("usage: cpu_per_message <url> <server pid> w1|w2|replay|consume <messages> <runs>");
    };
    let pid: u32 = pid.parse().context("server pid")?;
    let n: u64 = n.parse().context("messages")?;
    let runs: u32 = runs.parse().context("runs")?;
    let workload = match mode.as_str() {
        "w1" => Workload::Publish(1),
        "w2" => Workload::Publish(256),
        "replay" => Workload::Replay,
        "consume" => Workload::Consume,
        _ => bail!("the workload must be w1, w2, replay or consume, not {mode}"),
    };
    let client = async_nats::connect(url.as_str()).await?;
    let js = jetstream::new(client.clone());
    let stream = js
        .get_or_create_stream(stream::Config {
            name: "PROBE".into(),
            subjects: vec!["probe.>".into()],
            ..Default::default()
        })
        .await?;
    let payload = bytes::Bytes::from(vec![b'x'; 128]);
    let stored = stream.cached_info().state.messages;
    publish(&js, &payload, n.saturating_sub(stored), 1000).await?;
    let me = std::process::id();
    for run in 0..runs {
        let (client0, server0, start) = (cpu_seconds(me)?, cpu_seconds(pid)?, Instant::now());
        let mut count = 0u64;
        match workload {
            Workload::Publish(window) => {
                publish(&js, &payload, n, window).await?;
                count = n;
            }
            Workload::Replay => {
                let consumer = stream
                    .create_consumer(push::OrderedConfig {
                        deliver_subject: client.new_inbox(),
                        deliver_policy: DeliverPolicy::ByStartSequence { start_sequence: 1 },
                        ..Default::default()
                    })
                    .await?;
                let mut messages = consumer.messages().await?;
                while count < n {
                    match messages.next().await {
                        Some(m) => drop(m?),
                        None => bail!("the replay ended after {count}"),
                    }
                    count += 1;
                }
            }
            Workload::Consume => {
                let name = format!("probe{run}");
                let consumer = stream
                    .create_consumer(pull::Config {
                        durable_name: Some(name.clone()),
                        ack_policy: AckPolicy::Explicit,
                        ack_wait: Duration::from_secs(60),
                        max_ack_pending: -1,
                        ..Default::default()
                    })
                    .await?;
                while count < n {
                    let mut batch = consumer.fetch().max_messages(1000).messages().await?;
                    while let Some(m) = batch.next().await {
                        m.map_err(|e| anyhow::anyhow!("{e}"))?
                            .ack()
                            .await
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        count += 1;
                    }
                }
                stream.delete_consumer(&name).await?;
            }
        }
        let secs = start.elapsed().as_secs_f64();
        let per = |cpu: f64| cpu * 1e6 / count as f64;
        println!(
            "{mode} {run}: {:.0} msg/s, client {:.2} us/msg, server {:.2} us/msg",
            count as f64 / secs,
            per(cpu_seconds(me)? - client0),
            per(cpu_seconds(pid)? - server0),
        );
    }
    Ok(())
}
