//! Child process of the kill -9 harness (`durabus_testkit::crash`).
//!
//! ```text
//! crash_publisher <dir> publish [--durability always] [--segment-size B] [--tag T] [--concurrency K] [--count N] [--delete-every D] [--purge-every P]
//! crash_publisher <dir> hold
//! ```
//!
//! `publish` opens `file:<dir>?durability=<d>`, ensures stream `CRASH`
//! (subjects `crash.>`), prints `READY <pid>`, then runs K tasks; task k
//! publishes payload and msg id `<tag>-<k>-<i>` for i = 0, 1, ... to
//! `crash.<tag>.<k>`, each only after the previous one was acknowledged, and
//! prints `ACK <seq> <id>` (flushed) after each ack. It stops after N
//! messages per task (`DONE`), or runs until killed.
//!
//! With `--delete-every D`, after every D-th ack a task deletes its own
//! message from 3 acks earlier, printing `DELETING <seq> <id>` before the
//! call and `DEL <seq> <id>` after it succeeded.
//!
//! With `--purge-every P`, task 0 purges the stream up to (not including)
//! its own ack's seq minus 20 after every P-th ack, printing
//! `PURGING <up_to>` before and `PURGED <up_to> <count>` after.
//!
//! `hold` opens the directory, prints `READY <pid>` and idles until killed
//! or until stdin closes, keeping the data directory locked.
//!
//! Errors go to stderr and the exit code is non-zero.

use std::io::Write;
use std::sync::Arc;

use anyhow::{bail, Context};
use durabus::{Message, StreamConfig};
use tokio::io::AsyncReadExt;

/// The stream the crash publisher writes.
const STREAM: &str = "CRASH";

fn say(line: &str) -> anyhow::Result<()> {
    // One write per line and a flush: the parent must see every ack that
    // was printed before the kill, and never half of one that matters.
    let mut out = std::io::stdout().lock();
    out.write_all(format!("{line}\n").as_bytes())
        .and_then(|()| out.flush())
        .context("writing to stdout")
}

struct Args {
    dir: String,
    mode: String,
    durability: String,
    segment_size: Option<u64>,
    tag: String,
    concurrency: usize,
    count: Option<u64>,
    delete_every: Option<u64>,
    purge_every: Option<u64>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut it = std::env::args().skip(1);
    let dir = it
        .next()
        .context("usage: crash_publisher <dir> publish|hold [options]")?;
    let mode = it.next().context("missing mode: publish or hold")?;
    let mut args = Args {
        dir,
        mode,
        durability: "always".into(),
        segment_size: None,
        tag: "r0".into(),
        concurrency: 1,
        count: None,
        delete_every: None,
        purge_every: None,
    };
    while let Some(flag) = it.next() {
        let value = it.next().with_context(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--durability" => args.durability = value,
            "--segment-size" => args.segment_size = Some(value.parse().context("--segment-size")?),
            "--tag" => args.tag = value,
            "--concurrency" => args.concurrency = value.parse().context("--concurrency")?,
            "--count" => args.count = Some(value.parse().context("--count")?),
            "--delete-every" => args.delete_every = Some(value.parse().context("--delete-every")?),
            "--purge-every" => args.purge_every = Some(value.parse().context("--purge-every")?),
            other => bail!("unknown option {other}"),
        }
    }
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    Ok(args)
}

async fn run() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mut url = format!("file:{}?durability={}", args.dir, args.durability);
    if let Some(bytes) = args.segment_size {
        url.push_str(&format!("&segment_size={bytes}"));
    }
    let bus = durabus::connect(&url)
        .await
        .with_context(|| format!("opening {url}"))?;
    let pid = std::process::id();
    match args.mode.as_str() {
        "hold" => {
            say(&format!("READY {pid}"))?;
            // Idle until the parent kills us or closes our stdin.
            let mut buf = [0u8; 64];
            let mut stdin = tokio::io::stdin();
            while stdin.read(&mut buf).await.unwrap_or(0) > 0 {}
            bus.close().await?;
            Ok(())
        }
        "publish" => {
            bus.create_stream(StreamConfig::new(STREAM).subjects(["crash.>"]))
                .await
                .context("ensuring stream CRASH")?;
            say(&format!("READY {pid}"))?;
            let tag = Arc::new(args.tag);
            let mut tasks = Vec::new();
            for k in 0..args.concurrency {
                let bus = bus.clone();
                let tag = Arc::clone(&tag);
                let count = args.count;
                let delete_every = args.delete_every.filter(|d| *d > 0);
                let purge_every = args.purge_every.filter(|p| *p > 0 && k == 0);
                tasks.push(tokio::spawn(async move {
                    let subject = format!("crash.{tag}.{k}");
                    let mut acked: Vec<(u64, String)> = Vec::new();
                    let mut i = 0u64;
                    while count.is_none_or(|c| i < c) {
                        let id = format!("{tag}-{k}-{i}");
                        let msg = Message::new(subject.clone(), id.clone()).with_msg_id(id.clone());
                        let ack = bus
                            .publish_message(msg)
                            .await
                            .with_context(|| format!("publishing {id}"))?
                            .context("stream CRASH did not capture the message")?;
                        say(&format!("ACK {} {id}", ack.seq))?;
                        acked.push((ack.seq, id));
                        i += 1;
                        if let Some(p) = purge_every {
                            let up_to = acked
                                .last()
                                .map_or(1, |(seq, _)| seq.saturating_sub(20).max(1));
                            if i % p == 0 {
                                say(&format!("PURGING {up_to}"))?;
                                let request = durabus::PurgeRequest {
                                    up_to_seq: Some(up_to),
                                    ..durabus::PurgeRequest::default()
                                };
                                let n = bus
                                    .purge_stream(STREAM, request)
                                    .await
                                    .with_context(|| format!("purging up to {up_to}"))?;
                                say(&format!("PURGED {up_to} {n}"))?;
                            }
                        }
                        if let Some(d) = delete_every {
                            if i % d == 0 && acked.len() > 3 {
                                let (seq, id) = acked[acked.len() - 4].clone();
                                say(&format!("DELETING {seq} {id}"))?;
                                bus.delete_message(STREAM, seq)
                                    .await
                                    .with_context(|| format!("deleting seq {seq}"))?;
                                say(&format!("DEL {seq} {id}"))?;
                            }
                        }
                    }
                    anyhow::Ok(())
                }));
            }
            for t in tasks {
                t.await.context("publisher task panicked")??;
            }
            bus.close().await?;
            say("DONE")
        }
        other => bail!("unknown mode {other:?}: expected publish or hold"),
    }
}

#[tokio::main]
async fn main() {
    if let Err(e) = run().await {
        eprintln!("crash_publisher: {e:#}");
        std::process::exit(2);
    }
}
