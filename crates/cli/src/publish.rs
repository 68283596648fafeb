//! `durabus pub` and `durabus sub`: core publish and live subscribe.

use std::io::{IsTerminal as _, Read as _};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use durabus::{
    subject, Message, PublishAck, NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
    NATS_EXPECTED_STREAM,
};
use serde_json::json;

use crate::output::{message_human, message_json, print_json, print_raw, print_text};
use crate::parse;
use crate::session::{
    finish, finish_reader, open_bus, shutdown_signal, Access, ConnectionWatch, Global, Kind,
    WATCH_INTERVAL,
};

/// The placeholder `--count` replaces with the message's number (1..=N).
const COUNTER: &str = "{{i}}";

/// Arguments of `durabus pub`.
#[derive(Debug, Args)]
pub(crate) struct PubArgs {
    /// Subject to publish to: literal tokens, no wildcards (e.g. orders.eu.created).
    subject: String,

    /// Payload. When omitted it is read from stdin (empty if stdin is a terminal).
    payload: Option<String>,

    /// A header `Name:Value`; repeat for several.
    #[arg(short = 'H', long = "header", value_name = "NAME:VALUE", value_parser = parse::header)]
    headers: Vec<(String, String)>,

    /// Message id for de-duplication within the stream's duplicate window (Nats-Msg-Id).
    #[arg(long, value_name = "ID")]
    msg_id: Option<String>,

    /// Store only if the stream's last sequence is this (Nats-Expected-Last-Sequence).
    #[arg(long, value_name = "SEQ")]
    expect_last_seq: Option<u64>,

    /// Store only if the subject's last sequence is this, 0 for none yet
    /// (Nats-Expected-Last-Subject-Sequence).
    #[arg(long, value_name = "SEQ")]
    expect_last_subject_seq: Option<u64>,

    /// Store only if this stream captures the subject (Nats-Expected-Stream).
    #[arg(long, value_name = "STREAM")]
    expect_stream: Option<String>,

    /// Publish N messages; `{{i}}` in the subject, payload, headers and
    /// message id becomes 1, 2, ... N.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
}

/// Replaces the counter placeholder in `text` with `i`.
fn substitute(text: &str, i: u64) -> String {
    if text.contains(COUNTER) {
        text.replace(COUNTER, &i.to_string())
    } else {
        text.to_owned()
    }
}

/// The payload from the argument, or all of stdin when it is piped.
pub(crate) fn read_payload(arg: Option<String>) -> anyhow::Result<Bytes> {
    if let Some(text) = arg {
        return Ok(Bytes::from(text));
    }
    let mut stdin = std::io::stdin();
    if stdin.is_terminal() {
        return Ok(Bytes::new());
    }
    let mut buffer = Vec::new();
    stdin
        .read_to_end(&mut buffer)
        .context("cannot read the payload from stdin; pass it as an argument instead")?;
    Ok(Bytes::from(buffer))
}

impl PubArgs {
    /// The `i`-th message (1-based) to publish.
    fn message(&self, payload: &Bytes, i: u64) -> Message {
        let payload = match std::str::from_utf8(payload) {
            Ok(text) if text.contains(COUNTER) => Bytes::from(substitute(text, i)),
            _ => payload.clone(),
        };
        let mut message = Message::new(substitute(&self.subject, i), payload);
        for (name, value) in &self.headers {
            message.headers.append(name.clone(), substitute(value, i));
        }
        if let Some(id) = &self.msg_id {
            message = message.with_msg_id(substitute(id, i));
        }
        if let Some(seq) = self.expect_last_seq {
            message = message.with_header(NATS_EXPECTED_LAST_SEQUENCE, seq.to_string());
        }
        if let Some(seq) = self.expect_last_subject_seq {
            message = message.with_header(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, seq.to_string());
        }
        if let Some(stream) = &self.expect_stream {
            message = message.with_header(NATS_EXPECTED_STREAM, stream.clone());
        }
        message
    }
}

/// Prints the outcome of one publish.
fn report_ack(global: &Global, subject: &str, ack: Option<&PublishAck>) -> anyhow::Result<()> {
    if global.json {
        let value = match ack {
            Some(ack) => json!({
                "subject": subject, "stored": true, "stream": ack.stream,
                "seq": ack.seq, "duplicate": ack.duplicate,
            }),
            None => json!({
                "subject": subject, "stored": false, "stream": null,
                "seq": null, "duplicate": false,
            }),
        };
        print_json(&value)?;
        return Ok(());
    }
    let line = match ack {
        Some(ack) if ack.duplicate => format!(
            "{subject}: duplicate of stream {} seq {} (message id seen within the duplicate window; not stored again)",
            ack.stream, ack.seq
        ),
        Some(ack) => format!("{subject}: stored in stream {} seq {}", ack.stream, ack.seq),
        None => format!("no stream captures {subject}; delivered to live subscribers only"),
    };
    print_text(&line)?;
    Ok(())
}

/// Runs `durabus pub`.
pub(crate) async fn run_pub(global: &Global, args: PubArgs) -> anyhow::Result<()> {
    // Check every subject before opening the store, so a typo changes nothing.
    for i in [1, args.count] {
        let s = substitute(&args.subject, i);
        subject::validate_publish(&s).context("nothing was published")?;
    }
    let payload = read_payload(args.payload.clone())?;
    let bus = open_bus(global.url(), Access::Create).await?;
    let result = async {
        for i in 1..=args.count {
            let message = args.message(&payload, i);
            let subject = message.subject.clone();
            let ack = bus.publish_message(message).await.with_context(|| {
                if args.count == 1 {
                    format!("publish to {subject} failed")
                } else {
                    format!(
                        "publish {i} of {} to {subject} failed ({} published before it)",
                        args.count,
                        i - 1
                    )
                }
            })?;
            report_ack(global, &subject, ack.as_ref())?;
        }
        Ok(())
    }
    .await;
    finish(&bus, global.url(), result).await
}

/// Arguments of `durabus sub`.
#[derive(Debug, Args)]
pub(crate) struct SubArgs {
    /// Subject filter; `*` matches one token, `>` one or more at the end (e.g. orders.>).
    filter: String,

    /// Join queue group G: each message goes to one member of the group.
    #[arg(short, long, value_name = "G")]
    queue: Option<String>,

    /// Exit after N messages.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,

    /// Print only each payload, as it is, followed by a newline (wins over --json).
    #[arg(long)]
    raw: bool,
}

/// Runs `durabus sub` until Ctrl-C, SIGTERM or `--count` messages.
pub(crate) async fn run_sub(global: &Global, args: SubArgs) -> anyhow::Result<()> {
    subject::validate_filter(&args.filter).context("cannot subscribe")?;
    let bus = open_bus(global.url(), Access::Create).await?;
    let result = async {
        let mut sub = match &args.queue {
            Some(group) => bus.queue_subscribe(&args.filter, group).await,
            None => bus.subscribe(&args.filter).await,
        }
        .with_context(|| format!("cannot subscribe to {}", args.filter))?;
        let group = args
            .queue
            .as_deref()
            .map(|g| format!(" in queue group {g}"))
            .unwrap_or_default();
        let shutdown = shutdown_signal();
        tokio::pin!(shutdown);
        let mut watch = ConnectionWatch::new(
            &bus,
            global.url(),
            "messages published meanwhile are missed (live subjects keep nothing; \
             `durabus replay --follow` reads a stream without gaps)",
        );
        let mut ticks = tokio::time::interval(WATCH_INTERVAL);
        // Tests and scripts wait for this line: the store is open, subscribed,
        // and Ctrl-C / SIGTERM end the command cleanly from here on.
        eprintln!(
            "listening on {}{group} at {}; Ctrl-C to stop",
            args.filter,
            global.shown_url()
        );
        let mut received = 0u64;
        while args.count.is_none_or(|n| received < n) {
            let message = tokio::select! {
                message = sub.next() => message,
                () = &mut shutdown => break,
                _ = ticks.tick() => {
                    watch.check(&bus);
                    continue;
                }
            };
            let Some(message) = message else {
                eprintln!("{}; stopping", closed_note(global));
                break;
            };
            received += 1;
            if args.raw {
                print_raw(&message.payload, true)?;
            } else if global.json {
                print_json(&message_json(&message))?;
            } else {
                print_text(&message_human(received, &message))?;
            }
        }
        let dropped = sub.dropped();
        if dropped > 0 {
            eprintln!(
                "warning: {} dropped because this subscriber fell behind",
                crate::output::count(dropped, "message")
            );
        }
        if !global.json {
            eprintln!("received {}", crate::output::count(received, "message"));
        }
        Ok(())
    }
    .await;
    finish_reader(&bus, global.url(), result).await
}

/// Why a live subscription ended by itself.
fn closed_note(global: &Global) -> String {
    match Kind::of(global.url()) {
        Some(Kind::Nats) => format!("the connection to {} was closed", global.shown_url()),
        _ => "the store was closed".to_owned(),
    }
}
