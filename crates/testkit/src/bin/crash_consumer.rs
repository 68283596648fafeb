//! Child process of the R9 consumer crash test (`tests/kill9_consumer.rs`).
//!
//! ```text
//! crash_consumer <url> consume [--concurrency K] [--drain]
//! crash_consumer <url> confirm
//! crash_consumer <url> poison
//! ```
//!
//! `poison` (`tests/poison_message.rs`): runs the consumer runner
//! (`max_attempts(3)`) on consumer `p` of stream `POISON`; its handler
//! aborts the process on the payload `poison` and succeeds on any other.
//! Prints `DRAINED` and exits once nothing is pending.
//!
//! `confirm` (`tests/kill9_confirmed_acks.rs`): fetches from consumer `c`
//! of stream `CONF` in small batches until killed, printing
//! `DELIVERED <seq> <count>` for each delivery once `fetch` returned, then
//! acking two of three with `ack_confirmed`, printing `ACKING <seq>` before
//! the call and `ACKED <seq>` once it returned; the rest are left to be
//! redelivered.
//!
//! Connects to `<url>` (a `file:` store or a `nats://` server where stream
//! `WORK` and durable consumer `worker` exist), prints `READY <pid>` and
//! runs the consumer runner:
//! a message whose payload is `fail` always fails (so it is retried, then
//! dead-lettered to `$DLQ.WORK.worker` in stream `DLQ`); every other one
//! succeeds after a short random pause. Runs until killed; with `--drain`
//! it stops once the consumer has nothing pending or unacknowledged,
//! closes the bus and prints `DRAINED`.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Context};
use durabus::{ConsumeOptions, Outcome};

fn say(line: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .context("usage: crash_consumer <url> consume [--concurrency K] [--drain]")?;
    match args.next().as_deref() {
        Some("consume") => {}
        Some("confirm") => return confirm(&url).await,
        Some("poison") => return poison(&url).await,
        _ => bail!("the modes are consume and confirm"),
    }
    let mut concurrency = 1;
    let mut drain = false;
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--concurrency" => {
                concurrency = args
                    .next()
                    .context("--concurrency needs a value")?
                    .parse()
                    .context("--concurrency")?;
            }
            "--drain" => drain = true,
            other => bail!("unknown flag {other}"),
        }
    }
    let bus = durabus::connect(&url).await?;
    let options = ConsumeOptions::new()
        .concurrency(concurrency)
        .max_attempts(3)
        .backoff([Duration::from_millis(10)]);
    let handle = bus
        .consume("WORK", "worker", options, |d| async move {
            if &d.message.payload[..] == b"fail" {
                return Outcome::Failed(format!("seq {} always fails", d.stream_seq()));
            }
            let pause = d.stream_seq() % 3;
            tokio::time::sleep(Duration::from_millis(pause)).await;
            Outcome::Done
        })
        .await?;
    say(&format!("READY {}", std::process::id()))?;
    if !drain {
        std::future::pending::<()>().await;
    }
    loop {
        let info = bus.consumer_info("WORK", "worker").await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown().await?;
    bus.close().await?;
    say("DRAINED")
}

/// The `confirm` mode (see the crate docs).
async fn confirm(url: &str) -> anyhow::Result<()> {
    let bus = durabus::connect(url).await?;
    say(&format!("READY {}", std::process::id()))?;
    loop {
        let got = bus.fetch("CONF", "c", 5, Duration::from_millis(20)).await?;
        for d in &got {
            say(&format!("DELIVERED {} {}", d.stream_seq(), d.delivered()))?;
        }
        for d in got {
            if (d.stream_seq() + d.delivered()) % 3 != 0 {
                say(&format!("ACKING {}", d.stream_seq()))?;
                bus.ack_confirmed(&d, durabus::AckKind::Ack).await?;
                say(&format!("ACKED {}", d.stream_seq()))?;
            }
        }
    }
}

/// The `poison` mode (see the crate docs).
async fn poison(url: &str) -> anyhow::Result<()> {
    let bus = durabus::connect(url).await?;
    let options = ConsumeOptions::new().max_attempts(3);
    // Before the runner starts: its first delivery may end the process.
    say(&format!("READY {}", std::process::id()))?;
    let handle = bus
        .consume("POISON", "p", options, |d| async move {
            if &d.message.payload[..] == b"poison" {
                // A handler that takes the whole process down.
                std::process::abort();
            }
            Outcome::Done
        })
        .await?;
    loop {
        let info = bus.consumer_info("POISON", "p").await?;
        if info.num_pending == 0 && info.num_ack_pending == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown().await?;
    bus.close().await?;
    say("DRAINED")
}
