//! `durabus replay`: print a stream's stored messages in sequence order.

use std::time::SystemTime;

use anyhow::Context as _;
use clap::Args;
use durabus::{subject, validate_stream_name, ReplayOptions, ReplayStart};

use crate::output::{print_json, print_raw, print_text, stored_human, stored_json};
use crate::parse;
use crate::session::{
    finish_reader, open_bus, shutdown_signal, Access, ConnectionWatch, Global, WATCH_INTERVAL,
};

/// Arguments of `durabus replay`.
#[derive(Debug, Args)]
pub(crate) struct ReplayArgs {
    /// The stream to replay.
    stream: String,

    /// Start at this sequence [default: 1].
    #[arg(long, value_name = "N", conflicts_with = "since",
          value_parser = clap::value_parser!(u64).range(1..))]
    seq: Option<u64>,

    /// Start at the first message stored at or after TIME: RFC 3339
    /// (2026-11-23T10:00:00Z) or an age such as 10m or 2h.
    #[arg(long, value_name = "TIME", value_parser = parse::since)]
    since: Option<SystemTime>,

    /// Only messages whose subject matches this filter.
    #[arg(long, value_name = "FILTER")]
    filter: Option<String>,

    /// After the last stored message keep printing new ones until Ctrl-C.
    #[arg(short, long)]
    follow: bool,

    /// Stop after N messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// Print only each payload, as it is, followed by a newline (wins over --json).
    #[arg(long)]
    raw: bool,
}

/// Runs `durabus replay`.
pub(crate) async fn run(global: &Global, args: ReplayArgs) -> anyhow::Result<()> {
    validate_stream_name(&args.stream).context("cannot replay")?;
    if let Some(filter) = &args.filter {
        subject::validate_filter(filter).context("cannot replay")?;
    }
    let start = match (args.seq, args.since) {
        (_, Some(time)) => ReplayStart::Time(time),
        (seq, None) => ReplayStart::Sequence(seq.unwrap_or(1)),
    };
    let options = ReplayOptions {
        start,
        filter: args.filter.clone(),
        stop_at_end: !args.follow,
    };
    let bus = open_bus(global.url(), Access::ReadOnly).await?;
    let result = async {
        let mut replay = bus
            .replay(&args.stream, options)
            .await
            .with_context(|| format!("cannot replay stream {}", args.stream))?;
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut watch = ConnectionWatch::new(
            &bus,
            global.url(),
            "the replay resumes after the last message printed",
        );
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        let mut count = 0u64;
        let mut lost = 0u64;
        while args.count.is_none_or(|n| count < n) {
            let item = tokio::select! {
                item = replay.next() => item,
                () = &mut shutdown => break,
                _ = ticks.tick() => {
                    watch.check(&bus);
                    continue;
                }
            };
            let Some(item) = item else { break };
            if let Err(e @ durabus::Error::Corrupt { seqs: Some(_), .. }) = &item {
                // One damaged record: say so and go on with the rest.
                eprintln!("warning: {e}");
                lost += 1;
                continue;
            }
            let message = item.with_context(|| {
                format!(
                    "replay of stream {} failed after {count} messages",
                    args.stream
                )
            })?;
            count += 1;
            if args.raw {
                print_raw(&message.payload, true)?;
            } else if global.json {
                print_json(&stored_json(&message))?;
            } else {
                print_text(&stored_human(&message))?;
            }
        }
        if !global.json && !args.raw {
            eprintln!(
                "replayed {} from stream {}",
                crate::output::count(count, "message"),
                args.stream
            );
        }
        if lost > 0 {
            anyhow::bail!(
                "{} of stream {} could not be read (see the warnings above); \
                 `durabus repair` records them as gaps",
                crate::output::count(lost, "damaged range"),
                args.stream
            );
        }
        Ok(())
    }
    .await;
    finish_reader(&bus, global.url(), result).await
}
