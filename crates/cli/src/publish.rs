//! `durabus pub` and `durabus sub`: core publish and live subscribe.

use std::io::{IsTerminal as _, Read as _};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use durabus::{
    subject, Message, PublishAck, NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
    NATS_EXPECTED_STREAM,
};
use indicatif::ProgressBar;
use serde_json::json;

use crate::exit::Exit;
use crate::output::duration_human;

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

    /// Message id for de-duplication within the stream's duplicate window
    /// (Nats-Msg-Id) [default with --count: one per message, made up by
    /// pub, so that a retry is stored once]. A message with a msg id is sent
    /// again when its ack does not come (see --timeout).
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
    /// message id becomes 1, 2, ... N. Prints a progress bar on a terminal
    /// and one summary line (--verbose: a line per message).
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,

    /// With --count: print every message's outcome (a JSON line each with
    /// --json) instead of the summary.
    #[arg(short, long)]
    verbose: bool,

    /// How long a message may go unconfirmed, retries with the same msg id
    /// included, before pub stops and says which messages are unconfirmed.
    #[arg(long, default_value = "30s", value_name = "DURATION", value_parser = parse::duration)]
    timeout: Duration,

    /// With --count: publishes in flight at once; they share the store's
    /// fsyncs (or the server's round trips), each ack still confirms its
    /// message as stored.
    #[arg(long, default_value_t = 256, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..=10_000))]
    window: u64,
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

/// The msg id template of a run without --msg-id: unique to this process
/// and moment, `{{i}}` the message's number.
fn auto_msg_id() -> String {
    let t = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("durabus-pub-{}-{t:x}-{COUNTER}", std::process::id())
}

impl PubArgs {
    /// The `i`-th message (1-based) to publish, with msg id `msg_id`
    /// (a template) when given.
    fn message(&self, payload: &Bytes, i: u64, msg_id: Option<&str>) -> Message {
        let payload = match std::str::from_utf8(payload) {
            Ok(text) if text.contains(COUNTER) => Bytes::from(substitute(text, i)),
            _ => payload.clone(),
        };
        let mut message = Message::new(substitute(&self.subject, i), payload);
        for (name, value) in &self.headers {
            message.headers.append(name.clone(), substitute(value, i));
        }
        if let Some(id) = msg_id {
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

    /// Whether the messages carry expectations only JetStream can check.
    fn expectations(&self) -> bool {
        self.expect_last_seq.is_some()
            || self.expect_last_subject_seq.is_some()
            || self.expect_stream.is_some()
    }
}

/// Prints the outcome of one publish.
fn report_ack(json: bool, subject: &str, ack: Option<&PublishAck>) -> anyhow::Result<()> {
    if json {
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

/// What a `pub` run has done so far.
#[derive(Debug, Default)]
struct Tally {
    /// Stored by a stream (not duplicates).
    stored: u64,
    /// Acknowledged as duplicates of a message stored before.
    duplicates: u64,
    /// Captured by no stream: live subscribers only.
    unstored: u64,
    /// Publishes retried after a connection failure.
    retries: u64,
}

impl Tally {
    fn confirmed(&self) -> u64 {
        self.stored + self.duplicates + self.unstored
    }
}

/// Where a run stopped before its end.
#[derive(Debug)]
enum Stop {
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// A message stayed unconfirmed for --timeout.
    Unconfirmed {
        /// The first such message.
        first: u64,
        /// Why its ack did not come.
        reason: String,
    },
}

/// One `pub` run: the messages, how they are sent and what came back.
struct Run<'a> {
    global: &'a Global,
    args: &'a PubArgs,
    payload: Bytes,
    msg_id: Option<String>,
    tally: Tally,
    bar: ProgressBar,
    /// Messages of the window being sent whose ack has not come (yet).
    pending: Vec<u64>,
    /// The last message sent so far (those after it were not).
    sent_to: u64,
    started: Instant,
}

/// Whether a failed publish is worth sending again with the same msg id:
/// the connection, not the message, failed.
fn retryable(e: &durabus::Error) -> bool {
    e.is_connection_failure() || matches!(e, durabus::Error::CircuitOpen { .. })
}

impl Run<'_> {
    /// Counts (and with --verbose or a single message prints) one ack.
    fn confirm(&mut self, subject: &str, ack: Option<&PublishAck>) -> anyhow::Result<()> {
        match ack {
            Some(a) if a.duplicate => self.tally.duplicates += 1,
            Some(_) => self.tally.stored += 1,
            None => self.tally.unstored += 1,
        }
        if self.args.count == 1 || self.args.verbose {
            let json = self.global.json;
            self.bar.suspend(|| report_ack(json, subject, ack))?;
        }
        self.bar.inc(1);
        Ok(())
    }

    /// Publishes messages `from..=to` as one window, sending the
    /// unconfirmed ones again (same msg ids) until each is confirmed or
    /// --timeout has passed since the window was first sent.
    async fn window(
        &mut self,
        bus: &durabus::Bus,
        from: u64,
        to: u64,
    ) -> anyhow::Result<Option<Stop>> {
        let first_sent = Instant::now();
        self.pending = (from..=to).collect();
        self.sent_to = to;
        let mut attempt = 0u32;
        loop {
            let messages: Vec<Message> = self
                .pending
                .iter()
                .map(|&i| self.args.message(&self.payload, i, self.msg_id.as_deref()))
                .collect();
            let subjects: Vec<String> = messages.iter().map(|m| m.subject.clone()).collect();
            let results = match bus.publish_batch(messages).await {
                Ok(results) => results,
                // The whole window failed the same way: each is unconfirmed.
                Err(e) if retryable(&e) && self.msg_id.is_some() => {
                    let reason = e.to_string();
                    self.pending
                        .iter()
                        .map(|_| {
                            Err(durabus::Error::Unavailable {
                                reason: reason.clone(),
                            })
                        })
                        .collect()
                }
                Err(e) => return Err(e).context("publishing stopped"),
            };
            let sent = std::mem::take(&mut self.pending);
            let mut reason = None;
            let mut refused = None;
            for ((i, subject), result) in sent.into_iter().zip(subjects).zip(results) {
                match result {
                    Ok(ack) => self.confirm(&subject, ack.as_ref())?,
                    // Sent again only with a msg id, which makes it
                    // stored once.
                    Err(e) if retryable(&e) && self.msg_id.is_some() => {
                        self.pending.push(i);
                        reason.get_or_insert_with(|| e.to_string());
                    }
                    Err(e) => {
                        refused.get_or_insert((i, subject, e));
                    }
                }
            }
            if let Some((i, subject, e)) = refused {
                let what = if self.args.count == 1 {
                    format!("publish to {subject} failed")
                } else {
                    format!("publish {i} of {} to {subject} failed", self.args.count)
                };
                return Err(anyhow::Error::new(e).context(what));
            }
            if self.pending.is_empty() {
                return Ok(None);
            }
            let reason = reason.unwrap_or_default();
            let left = self.args.timeout.saturating_sub(first_sent.elapsed());
            if left.is_zero() {
                return Ok(Some(Stop::Unconfirmed {
                    first: self.pending[0],
                    reason,
                }));
            }
            attempt += 1;
            if attempt == 1 {
                let n = self.pending.len() as u64;
                let timeout = duration_human(self.args.timeout);
                self.bar.suspend(|| {
                    eprintln!(
                        "warning: {} unconfirmed ({reason}); sending again with the same msg id \
                         for up to {timeout}",
                        crate::output::count(n, "message")
                    );
                });
            }
            self.tally.retries += self.pending.len() as u64;
            let wait = Duration::from_millis(100)
                .saturating_mul(1 << attempt.min(5))
                .min(Duration::from_secs(2))
                .min(left);
            tokio::time::sleep(wait).await;
        }
    }

    /// What is left undone when the run stops early: the messages sent
    /// without an ack, and those never sent.
    fn left_undone(&self) -> String {
        let mut parts = Vec::new();
        if !self.pending.is_empty() {
            let ids = match &self.msg_id {
                Some(id) => format!(" (msg ids {id})"),
                None => String::new(),
            };
            parts.push(format!(
                "{} unconfirmed: {}{ids}; each may or may not be stored, and publishing it \
                 again with the same msg id within the duplicate window stores it once",
                crate::output::count(self.pending.len() as u64, "message"),
                ranges(&self.pending)
            ));
        }
        if self.sent_to < self.args.count {
            parts.push(format!(
                "{} not sent: {}..={}",
                crate::output::count(self.args.count - self.sent_to, "message"),
                self.sent_to + 1,
                self.args.count
            ));
        }
        parts.join("; ")
    }

    /// The summary of a --count run: published, duplicates, rate.
    fn summary(&self, core: bool) -> anyhow::Result<()> {
        let elapsed = self.started.elapsed();
        let confirmed = self.tally.confirmed();
        #[allow(clippy::cast_precision_loss)] // display only
        let rate = if elapsed.is_zero() {
            0.0
        } else {
            confirmed as f64 / elapsed.as_secs_f64()
        };
        let unconfirmed = self.pending.len() as u64;
        let not_sent = self.args.count - self.sent_to;
        let verbose = self.args.verbose;
        if self.global.json {
            let value = json!({
                "published": confirmed,
                "stored": self.tally.stored,
                "duplicates": self.tally.duplicates,
                "unstored": self.tally.unstored,
                "core": core,
                "retries": self.tally.retries,
                "unconfirmed": unconfirmed,
                "not_sent": not_sent,
                "seconds": elapsed.as_secs_f64(),
                "rate": rate.round(),
            });
            if verbose {
                eprintln!("{value}");
                return Ok(());
            }
            return Ok(print_json(&value)?);
        }
        let mut line = format!(
            "published {} in {:.2}s ({} msg/s)",
            crate::output::count(confirmed, "message"),
            elapsed.as_secs_f64(),
            durabus_workloads::measure::thousands(rate)
        );
        if core {
            line.push_str(" as core NATS: no JetStream, so no stream captured them");
        } else {
            line.push_str(&format!(
                ": {} stored, {} {}",
                self.tally.stored,
                self.tally.duplicates,
                if self.tally.duplicates == 1 {
                    "duplicate"
                } else {
                    "duplicates"
                }
            ));
            if self.tally.unstored > 0 {
                line.push_str(&format!(
                    ", {} captured by no stream (live subscribers only)",
                    self.tally.unstored
                ));
            }
        }
        if self.tally.retries > 0 {
            line.push_str(&format!(
                "; {} sent again after a timeout",
                crate::output::count(self.tally.retries, "message")
            ));
        }
        if unconfirmed + not_sent > 0 {
            line.push_str(&format!("; {unconfirmed} unconfirmed, {not_sent} not sent"));
        }
        if verbose {
            eprintln!("{line}");
            return Ok(());
        }
        Ok(print_text(&line)?)
    }
}

/// Sorted numbers as ranges: `3, 7..=9`.
fn ranges(numbers: &[u64]) -> String {
    let mut sorted = numbers.to_vec();
    sorted.sort_unstable();
    let mut parts: Vec<String> = Vec::new();
    let mut iter = sorted.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}..={end}")
        });
    }
    parts.join(", ")
}

/// The progress bar of a --count run: on a terminal, without --verbose
/// or --json.
fn progress(global: &Global, args: &PubArgs) -> ProgressBar {
    let show = args.count > 1 && !args.verbose && !global.json;
    crate::progress::bar(args.count, crate::progress::Unit::Messages, show)
}

/// Whether `err` says the NATS server has no JetStream.
fn no_jetstream(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        matches!(
            c.downcast_ref::<durabus::Error>(),
            Some(durabus::Error::JetStreamNotEnabled)
        )
    })
}

/// Runs `durabus pub`.
pub(crate) async fn run_pub(global: &Global, args: PubArgs) -> anyhow::Result<()> {
    // Check every subject before opening the store, so a typo changes nothing.
    for i in [1, args.count] {
        let s = substitute(&args.subject, i);
        subject::validate_publish(&s).context("nothing was published")?;
    }
    let payload = read_payload(args.payload.clone())?;
    let bus = match open_bus(global.url(), Access::Create).await {
        Ok(bus) => bus,
        Err(e) if no_jetstream(&e) => return run_core(global, &args, payload).await,
        Err(e) => return Err(e),
    };
    let mut run = Run {
        global,
        args: &args,
        payload,
        // A retry must be deduplicated: with --count every message gets a
        // msg id; a single message keeps exactly the headers given.
        msg_id: args
            .msg_id
            .clone()
            .or_else(|| (args.count > 1).then(auto_msg_id)),
        tally: Tally::default(),
        bar: progress(global, &args),
        pending: Vec::new(),
        sent_to: 0,
        started: Instant::now(),
    };
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let outcome: anyhow::Result<Option<Stop>> = async {
        let mut next = 1;
        while next <= args.count {
            let to = next.saturating_add(args.window - 1).min(args.count);
            let stop = tokio::select! {
                stop = run.window(&bus, next, to) => stop?,
                () = &mut shutdown => Some(Stop::Interrupted),
            };
            if stop.is_some() {
                return Ok(stop);
            }
            next = to + 1;
        }
        Ok(None)
    }
    .await;
    run.bar.finish_and_clear();
    if args.count > 1 {
        run.summary(false)?;
    }
    let result = match outcome {
        Ok(None) => Ok(()),
        Ok(Some(Stop::Interrupted)) => Err(Exit {
            code: crate::exit::INTERRUPTED,
            kind: "interrupted",
            description: format!("interrupted; {}", run.left_undone()),
            plain: false,
        }
        .into()),
        Ok(Some(Stop::Unconfirmed { first, reason })) => Err(Exit {
            code: crate::exit::UNCONFIRMED,
            kind: "unconfirmed",
            description: format!(
                "stopped: message {first} had no ack for {} ({reason}); {}",
                duration_human(args.timeout),
                run.left_undone()
            ),
            plain: false,
        }
        .into()),
        Err(e) if run.pending.is_empty() && run.sent_to >= args.count => Err(e),
        Err(e) => Err(e.context(run.left_undone())),
    };
    finish(&bus, global.url(), result).await
}

/// `pub` to a NATS server without JetStream: core NATS, as `nats pub`
/// does, saying that no stream captured the messages.
async fn run_core(global: &Global, args: &PubArgs, payload: Bytes) -> anyhow::Result<()> {
    let url = global.shown_url();
    if args.expectations() {
        anyhow::bail!(
            "{url} has no JetStream, so no stream can check --expect-last-seq, \
             --expect-last-subject-seq or --expect-stream; nothing was published"
        );
    }
    let backend = durabus_nats::NatsBackend::connect_core(global.url(), Default::default())
        .await
        .with_context(|| format!("cannot open {url}"))?;
    let mut run = Run {
        global,
        args,
        payload,
        msg_id: args.msg_id.clone(),
        tally: Tally::default(),
        bar: progress(global, args),
        pending: Vec::new(),
        sent_to: 0,
        started: Instant::now(),
    };
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    let outcome: anyhow::Result<bool> = async {
        for i in 1..=args.count {
            let message = args.message(&run.payload, i, args.msg_id.as_deref());
            let subject = message.subject.clone();
            tokio::select! {
                sent = backend.publish_core(message) => {
                    sent.with_context(|| format!("publish to {subject} failed"))?;
                }
                () = &mut shutdown => return Ok(false),
            }
            run.sent_to = i;
            run.tally.unstored += 1;
            run.bar.inc(1);
            if args.verbose && args.count > 1 {
                run.bar
                    .suspend(|| report_ack(global.json, &subject, None))?;
            }
        }
        backend
            .flush()
            .await
            .with_context(|| format!("the messages did not reach {url}"))?;
        Ok(true)
    }
    .await;
    run.bar.finish_and_clear();
    let closed = durabus::Backend::close(&backend).await;
    let completed = outcome?;
    if args.count > 1 {
        run.summary(true)?;
    } else if global.json {
        print_json(&json!({
            "subject": substitute(&args.subject, 1), "stored": false, "stream": null,
            "seq": null, "duplicate": false, "core": true,
        }))?;
    } else {
        print_text(&format!(
            "{}: published as core NATS (live subscribers only)",
            substitute(&args.subject, 1)
        ))?;
    }
    eprintln!(
        "note: {url} has no JetStream: published as core NATS, so no stream captured \
         anything (as `nats pub` does); start nats-server with -js to store messages"
    );
    if !completed {
        return Err(Exit {
            code: crate::exit::INTERRUPTED,
            kind: "interrupted",
            description: format!("interrupted; {}", run.left_undone()),
            plain: false,
        }
        .into());
    }
    closed.with_context(|| format!("closing the connection to {url} failed"))?;
    Ok(())
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
