//! `durabus req` and `durabus reply`: request/reply over core subjects.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Args;
use durabus::{subject, Message, Reply, ReplyError, RequestManyOptions, RequestOptions};
use serde_json::json;

use crate::output::{message_human, message_json, print_json, print_raw, print_text};
use crate::parse;
use crate::publish::read_payload;
use crate::session::{finish, finish_reader, open_bus, shutdown_signal, Access, Global};

/// Arguments of `durabus req`.
#[derive(Debug, Args)]
pub(crate) struct ReqArgs {
    /// Subject to send the request to: literal tokens (e.g. billing.quote).
    subject: String,

    /// Payload. When omitted it is read from stdin (empty if stdin is a terminal).
    payload: Option<String>,

    /// A header `Name:Value`; repeat for several.
    #[arg(short = 'H', long = "header", value_name = "NAME:VALUE", value_parser = parse::header)]
    headers: Vec<(String, String)>,

    /// How long each attempt waits for its reply (with --replies: how long
    /// replies are collected).
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse::duration)]
    timeout: Duration,

    /// Attempts after the first when it times out or finds no responders,
    /// with exponential backoff and jitter.
    #[arg(
        long,
        default_value_t = 0,
        value_name = "N",
        conflicts_with = "replies"
    )]
    retries: u32,

    /// Collect up to N replies from several responders (request_many),
    /// until N arrived or --timeout passed.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    replies: Option<u64>,

    /// Print only each reply's payload, as it is, followed by a newline
    /// (wins over --json).
    #[arg(long)]
    raw: bool,
}

impl ReqArgs {
    fn message(&self, payload: Bytes) -> Message {
        let mut message = Message::new(self.subject.clone(), payload);
        for (name, value) in &self.headers {
            message.headers.append(name.clone(), value.clone());
        }
        message
    }
}

/// Prints one reply (`n`-th of this command).
fn print_reply(global: &Global, raw: bool, n: u64, reply: &Message) -> anyhow::Result<()> {
    if raw {
        print_raw(&reply.payload, true)?;
    } else if global.json {
        print_json(&message_json(reply))?;
    } else {
        print_text(&message_human(n, reply))?;
    }
    Ok(())
}

/// Runs `durabus req`.
pub(crate) async fn run_req(global: &Global, args: ReqArgs) -> anyhow::Result<()> {
    subject::validate_publish(&args.subject).context("nothing was sent")?;
    let payload = read_payload(args.payload.clone())?;
    let bus = open_bus(global.url(), Access::Create).await?;
    let result = async {
        let message = args.message(payload);
        let Some(max) = args.replies else {
            let options = RequestOptions::new()
                .timeout(args.timeout)
                .retries(args.retries);
            let reply = bus
                .request_with(message, options)
                .await
                .with_context(|| format!("request to {} failed", args.subject))?;
            return print_reply(global, args.raw, 1, &reply);
        };
        let options = RequestManyOptions::new()
            .timeout(args.timeout)
            .max_replies(usize::try_from(max).unwrap_or(usize::MAX));
        let replies = bus
            .request_many(message, options)
            .await
            .with_context(|| format!("request to {} failed", args.subject))?;
        if replies.is_empty() {
            anyhow::bail!(
                "no replies to {} within {}; check that a responder runs (`durabus reply`)",
                args.subject,
                humantime::format_duration(args.timeout)
            );
        }
        let mut n = 0;
        for reply in replies {
            n += 1;
            match reply {
                Ok(reply) => print_reply(global, args.raw, n, &reply)?,
                Err(durabus::Error::ServiceError { code, message, .. }) if global.json => {
                    print_json(&json!({ "subject": args.subject, "code": code, "error": message }))?
                }
                Err(e) => eprintln!("[#{n}] {e}"),
            }
        }
        if !global.json {
            eprintln!("received {}", crate::output::count(n, "reply"));
        }
        Ok(())
    }
    .await;
    finish_reader(&bus, global.url(), result).await
}

/// Arguments of `durabus reply`.
#[derive(Debug, Args)]
pub(crate) struct ReplyArgs {
    /// Subject filter to answer on; `*` and `>` wildcards allowed.
    subject: String,

    /// The reply payload, the same for every request.
    #[arg(required_unless_present_any = ["echo", "error"])]
    response: Option<String>,

    /// Reply with each request's own payload and headers.
    #[arg(long, conflicts_with_all = ["response", "error"])]
    echo: bool,

    /// Answer every request with an error reply `CODE:MESSAGE` (the NATS
    /// micro Nats-Service-Error headers), e.g. 503:maintenance.
    #[arg(long, value_name = "CODE:MESSAGE", value_parser = service_error, conflicts_with = "response")]
    error: Option<ReplyError>,

    /// A header `Name:Value` on each reply; repeat for several.
    #[arg(short = 'H', long = "header", value_name = "NAME:VALUE", value_parser = parse::header)]
    headers: Vec<(String, String)>,

    /// Join queue group G: each request goes to one member of the group.
    #[arg(short, long, value_name = "G")]
    queue: Option<String>,

    /// Exit after answering N requests.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    count: Option<u64>,
}

/// `CODE:MESSAGE` for `--error`.
fn service_error(s: &str) -> Result<ReplyError, String> {
    let (code, message) = s
        .split_once(':')
        .ok_or_else(|| format!("{s:?} has no ':'; write CODE:MESSAGE, e.g. 503:maintenance"))?;
    let code = code.trim().parse().map_err(|_| {
        format!("{code:?} is not a code from 0 to 65535; write e.g. 503:maintenance")
    })?;
    Ok(ReplyError::new(code, message.trim()))
}

impl ReplyArgs {
    /// The answer to `request`.
    fn answer(&self, request: &Message) -> Result<Reply, ReplyError> {
        if let Some(e) = &self.error {
            return Err(e.clone());
        }
        let mut reply = if self.echo {
            Reply {
                headers: request.headers.clone(),
                payload: request.payload.clone(),
            }
        } else {
            Reply::new(self.response.clone().unwrap_or_default())
        };
        for (name, value) in &self.headers {
            reply.headers.append(name.clone(), value.clone());
        }
        Ok(reply)
    }
}

/// Runs `durabus reply` until Ctrl-C, SIGTERM or `--count` answers.
pub(crate) async fn run_reply(global: &Global, args: ReplyArgs) -> anyhow::Result<()> {
    subject::validate_filter(&args.subject).context("cannot answer requests")?;
    let bus = open_bus(global.url(), Access::Create).await?;
    let result = async {
        let args = Arc::new(args);
        let answered = Arc::new(AtomicU64::new(0));
        let done = Arc::new(tokio::sync::Notify::new());
        let json_output = global.json;
        let responder = {
            let (handler_args, answered, done) = (args.clone(), answered.clone(), done.clone());
            bus.respond(&args.subject, args.queue.as_deref(), move |request| {
                let n = answered.fetch_add(1, Ordering::Relaxed) + 1;
                let shown = if json_output {
                    print_json(&message_json(&request))
                } else {
                    print_text(&message_human(n, &request))
                };
                if let Err(e) = shown {
                    eprintln!("warning: cannot print request {n}: {e}");
                }
                let answer = handler_args.answer(&request);
                if handler_args.count.is_some_and(|c| n >= c) {
                    done.notify_one();
                }
                std::future::ready(answer)
            })
            .await
            .with_context(|| format!("cannot answer requests on {}", args.subject))?
        };
        let group = args
            .queue
            .as_deref()
            .map(|g| format!(" in queue group {g}"))
            .unwrap_or_default();
        // Tests and scripts wait for this line: subscribed from here on.
        eprintln!(
            "listening for requests on {}{group} at {}; Ctrl-C to stop",
            args.subject,
            global.shown_url()
        );
        tokio::select! {
            () = shutdown_signal() => {}
            () = done.notified() => {}
        }
        let stats = responder.shutdown().await?;
        if !global.json {
            eprintln!(
                "answered {} ({} with an error)",
                crate::output::count(stats.replied + stats.errors, "request"),
                stats.errors
            );
        }
        Ok(())
    }
    .await;
    finish(&bus, global.url(), result).await
}
