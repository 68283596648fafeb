//! `durabus`: the command-line tool for durabus stores and NATS JetStream.
//!
//! Verbs follow the `nats` CLI: `pub`, `sub`, `req`, `reply`, `replay`, `stream ...` (add,
//! edit, ls, info, rm, purge, get, rmm), `consumer ...` (add, ls, info, rm,
//! next), `dlq ...` (ls, redrive), `dump`, `verify`, `repair`, `bench` and
//! `serve` (the hub). Every
//! command takes `--url` (or `DURABUS_URL`) to pick the backend and `--json`
//! for machine-readable output. Each verb group lives in its own module; this
//! file only parses the command line and reports errors (with the hint of
//! [`hint`] naming the command that fixes one).

/// mimalloc rather than the system allocator: a listing of 10,000
/// streams touches about 8,000 fresh pages under glibc's malloc (a page
/// fault each) and about 300 under mimalloc, 114 -> 67 ms end to end
/// (docs/design.md, "The binary's allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod confirm;
mod consumer;
mod dlq;
mod dump;
mod exit;
mod hint;
mod kv;
mod output;
mod parse;
mod progress;
mod publish;
mod repair;
mod replay;
mod request;
mod serve;
mod session;
mod stream;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Durable publish/subscribe with JetStream semantics.
#[derive(Debug, Parser)]
#[command(name = "durabus", version)]
struct Cli {
    /// Backend: file:<dir>[?durability=always|none|periodic:100ms] (embedded,
    /// on disk), memory: (embedded, gone when the command ends),
    /// nats://host:4222 or tls://host:4222 (a NATS server with JetStream, or
    /// `durabus serve`; several separated by commas) [env: DURABUS_URL, then
    /// NATS_URL] [default: file:./data]
    #[arg(long, global = true, value_name = "URL", display_order = 1000)]
    url: Option<String>,

    /// The NATS server(s), as natscli takes them: --url for a server,
    /// nats:// when no scheme is given (localhost:4222).
    #[arg(
        short = 's',
        long,
        global = true,
        value_name = "URL",
        conflicts_with = "url",
        display_order = 1000
    )]
    server: Option<String>,

    #[command(flatten)]
    conn: session::ConnFlags,

    /// Machine-readable output: one JSON object per result, JSON lines for
    /// message streams.
    #[arg(long, global = true, display_order = 1001)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
enum Command {
    /// Publish a message (payload from the argument or stdin).
    Pub(publish::PubArgs),
    /// Print live messages on subjects matching a filter.
    ///
    /// Every publisher's messages arrive: on nats://, and on a file: store,
    /// which the first command holding it shares with the commands run
    /// beside it (`durabus pub` in another shell). A memory: store lives
    /// inside one process, so there `sub` sees only its own publishes.
    Sub(publish::SubArgs),
    /// Send a request and print the reply (or, with --replies, every reply
    /// that arrives in time); retries with --retries.
    ///
    /// A `durabus reply` (or any responder) on the same file: store in
    /// another shell answers: the first command holding the store shares
    /// it. A memory: store lives inside one process, so there only
    /// responders of this same process could answer.
    Req(request::ReqArgs),
    /// Answer requests on a subject with a fixed payload, their own
    /// payload (--echo) or an error (--error), printing each request.
    Reply(request::ReplyArgs),
    /// Print the messages stored in a stream, in sequence order.
    ///
    /// A damaged record costs only the messages it held: replay prints a
    /// warning for it on stderr, goes on with the next intact message and
    /// exits non-zero at the end (`durabus repair` records the loss).
    Replay(replay::ReplayArgs),
    /// Manage streams: add, ls, info, rm, purge, get, rmm.
    #[command(subcommand)]
    Stream(stream::StreamCommand),
    /// Manage durable consumers: add, ls, info, rm; next fetches and acks.
    #[command(subcommand)]
    Consumer(consumer::ConsumerCommand),
    /// Dead letters of the consumer runner: ls, redrive.
    #[command(subcommand)]
    Dlq(dlq::DlqCommand),
    /// Key-value buckets (NATS KV layout): add, ls, info, rm, get, put,
    /// create, update, del, purge, history, keys, watch.
    #[command(subcommand)]
    Kv(kv::KvCommand),
    /// Print every record of a data directory as JSON lines (read-only, no lock).
    ///
    /// Reads the files of an embedded file: store. A nats:// server keeps its
    /// own files: read its streams with `replay` and `stream info` instead.
    /// With stdout redirected and stderr a terminal, a progress bar (bytes
    /// of segment files) is drawn on stderr.
    Dump(dump::DumpArgs),
    /// Check every record of a data directory (CRC and framing), its
    /// segment manifest, indexes, checkpoints, stream configs and consumer
    /// files and journals without changing anything; exits non-zero on
    /// corruption.
    ///
    /// A damaged index or checkpoint is a warning (the next open rebuilds
    /// it); a missing or cut segment, a damaged config or consumer file is
    /// corruption. Works beside a process that has the store open (the
    /// record being written is named, not counted as damage). Reads the
    /// files of an embedded file: store; a nats:// server checks its own.
    /// On a terminal, a progress bar (bytes of segment files) is drawn on
    /// stderr.
    Verify(dump::VerifyArgs),
    /// Repair the damaged segments of a data directory: the explicit,
    /// opt-in fix after `verify` or a read reported corruption.
    ///
    /// Each damaged segment is copied to <data-dir>/quarantine/ and
    /// rewritten without its unreadable bytes; every lost sequence range
    /// becomes a gap (deleted, never assigned again); missing segments are
    /// dropped from the manifest. Prints what was lost. Needs the store
    /// closed everywhere (it takes the lock). On a terminal, a progress bar
    /// (bytes of segment files scanned) is drawn on stderr.
    Repair(repair::RepairArgs),
    /// Measure publish, group commit, replay and consume throughput,
    /// latency, memory with a stalled consumer, open time and costs as the store grows (W1-W8). Runs
    /// on a fresh temporary store unless --url or DURABUS_URL names one; on
    /// nats:// W3 and W6 are skipped.
    ///
    /// durabus alone: the comparison with raw async-nats and Redis Streams,
    /// and the report with the targets checked, are the durabus-bench
    /// harness's (`bench/compare`).
    Bench(durabus_workloads::BenchArgs),
    /// Serve a file: (or memory:) store to other processes and devices
    /// over the NATS protocol: the hub.
    ///
    /// Any NATS client connects to it (nats-py, nats.js, the nats CLI), and
    /// so does durabus with --url nats://HOST:PORT. Ctrl-C or SIGTERM stops
    /// it gracefully: no new connections, every publish already received
    /// is stored and acknowledged, then the store is closed. Like every
    /// command holding a file: store, it shares it with the durabus
    /// commands run beside it; a store another process holds is refused.
    Serve(serve::ServeArgs),
    /// W8 of `durabus bench`: open a store in a fresh process and report
    /// the open time and memory as JSON lines (run by the bench itself).
    #[command(name = "w8-probe", hide = true)]
    W8Probe(durabus_workloads::ProbeArgs),
}

/// The backend URL the flags and the environment name, in this order:
/// `--url`, `-s`/`--server`, `DURABUS_URL`, `NATS_URL` (as `-s`); `None`
/// for the default. The connection flags are applied to it.
fn resolve_url(cli: &Cli) -> anyhow::Result<Option<String>> {
    let env = |name| {
        std::env::var(name)
            .ok()
            .filter(|v: &String| !v.trim().is_empty())
    };
    let url = cli
        .url
        .clone()
        .or_else(|| cli.server.as_deref().map(session::server_url))
        .or_else(|| env("DURABUS_URL"))
        .or_else(|| env("NATS_URL").map(|u| session::server_url(&u)));
    let with_flags =
        session::apply_flags(url.as_deref().unwrap_or(durabus::DEFAULT_URL), &cli.conn)?;
    Ok(url.map(|_| with_flags))
}

async fn run(global: session::Global, command: Command) -> anyhow::Result<()> {
    let global = &global;
    match command {
        Command::Pub(args) => publish::run_pub(global, args).await,
        Command::Sub(args) => publish::run_sub(global, args).await,
        Command::Req(args) => request::run_req(global, args).await,
        Command::Reply(args) => request::run_reply(global, args).await,
        Command::Replay(args) => replay::run(global, args).await,
        Command::Stream(cmd) => stream::run(global, cmd).await,
        Command::Consumer(cmd) => consumer::run(global, cmd).await,
        Command::Dlq(cmd) => dlq::run(global, cmd).await,
        Command::Kv(cmd) => kv::run(global, cmd).await,
        Command::Dump(args) => dump::run(global, args),
        Command::Verify(args) => dump::run_verify(global, args),
        Command::Repair(args) => repair::run(global, args),
        Command::Bench(args) => bench::run(global, args).await,
        Command::Serve(args) => serve::run(global, args).await,
        Command::W8Probe(args) => durabus_workloads::probe(&args).await,
    }
}

/// Whether the error is a closed stdout (`durabus dump | head`): not a failure.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// The error and its causes joined by `: ` (as `{err:#}`), each cause
/// shown once: a library error that already prints its source (an I/O
/// error's OS error) is not followed by that source again.
fn render(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let part = cause.to_string();
        if text.ends_with(&part) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(&part);
    }
    text
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json;
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"))
                // async-nats traces the CONNECT line, credentials included.
                .add_directive(durabus::LOG_DIRECTIVE.parse().unwrap_or_default()),
        )
        .with_writer(|| progress::LogWriter)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (global, url) = match resolve_url(&cli) {
        Ok(url) => {
            let global = session::Global { url, json };
            let shown = global.url().to_owned();
            (global, shown)
        }
        Err(err) => return report(&err, durabus::DEFAULT_URL, json),
    };
    let result = runtime.block_on(run(global, cli.command));
    // Engine threads (fsync, readers) must not keep a finished command alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => report(&err, &url, json),
    }
}

/// Prints `err` (with the hint naming the command that fixes it) on
/// stderr, as text or as the JSON error object, and returns its exit code
/// (see [`exit`]).
fn report(err: &anyhow::Error, url: &str, json: bool) -> ExitCode {
    let hint = hint::hint(err, url);
    let text = render(err);
    if json {
        eprintln!("{}", exit::json(err, &text, hint.as_deref()));
    } else {
        if exit::plain(err) {
            eprintln!("{text}");
        } else {
            eprintln!("error: {text}");
        }
        if let Some(hint) = hint {
            eprintln!("hint: {hint}");
        }
    }
    ExitCode::from(exit::code(err))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn an_os_error_is_printed_once() {
        use anyhow::Context as _;
        let os = std::io::Error::from_raw_os_error(28);
        let err = Err::<(), _>(durabus::Error::io("writing checkpoint", os))
            .context("closing the store failed")
            .unwrap_err();
        let text = super::render(&err);
        let os_text = std::io::Error::from_raw_os_error(28).to_string();
        assert_eq!(text.matches(&os_text).count(), 1, "{text}");
        assert!(
            text.starts_with("closing the store failed: writing checkpoint: "),
            "{text}"
        );
    }
}
