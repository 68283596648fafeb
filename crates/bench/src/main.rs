//! `durabus-bench`: the benchmark harness of docs/performance.md. `bench`
//! runs W1-W8 on a durabus backend or on a peer (raw async-nats, Redis
//! Streams); `report` turns the JSON of several runs into one Markdown
//! report with the targets checked and an SVG chart (`bench/compare` runs
//! both). The workloads themselves are the `durabus-workloads` crate, which
//! the product CLI's `durabus bench` runs too.
//!
//! Modules: [`run`] drives a bench over the peers of [`pair`], [`raw`],
//! [`hub`] (with [`fanout`]), [`redis`] and [`w8`] (nats-server's W8); [`report`] reads results back
//! and imports none of them.

mod fanout;
mod hub;
mod pair;
mod raw;
mod redis;
mod report;
mod run;
mod w8;

use std::io::IsTerminal as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Benchmarks of durabus against its peers.
#[derive(Debug, Parser)]
#[command(name = "durabus-bench", version)]
struct Cli {
    /// The backend of durabus (and of raw async-nats): file:<dir>,
    /// memory: or nats://host:4222 [default: a fresh temporary file: store]
    #[arg(
        long,
        global = true,
        env = "DURABUS_URL",
        value_name = "URL",
        display_order = 1000
    )]
    url: Option<String>,

    /// Print the report as one JSON object instead of a table.
    #[arg(long, global = true, display_order = 1001)]
    json: bool,

    #[command(subcommand)]
    command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process
enum Command {
    /// Measure publish, group commit, replay and consume throughput,
    /// latency, memory with a stalled consumer, open time and costs as the store grows (W1-W8). Runs
    /// on a fresh temporary store unless --url or DURABUS_URL names one; on
    /// nats:// W3 and W6 are skipped, and --peer async-nats measures raw
    /// async-nats, --peer redis Redis Streams.
    Bench(run::RunArgs),
    /// Turn the JSON of several `bench --json-out` runs (LABEL=FILE each)
    /// into one Markdown table with the docs/performance.md targets checked,
    /// and an SVG chart (`bench/compare` runs it).
    Report(report::ReportArgs),
    /// W8: open a store in a fresh process and report the open time and
    /// memory as JSON lines (run by `bench --workloads w8` itself).
    #[command(name = "w8-probe", hide = true)]
    W8Probe(durabus_workloads::ProbeArgs),
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Bench(args) => run::run(cli.url.as_deref(), cli.json, args).await,
        Command::Report(args) => report::run(args),
        Command::W8Probe(args) => durabus_workloads::probe(&args).await,
    }
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
        .with_writer(std::io::stderr)
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
    let result = runtime.block_on(run(cli));
    // Engine threads (fsync, readers) must not keep a finished command alive.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if json {
                eprintln!("{}", serde_json::json!({ "error": format!("{err:#}") }));
            } else {
                eprintln!("error: {err:#}");
            }
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
