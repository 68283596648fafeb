//! `durabus-bench bench`: the workloads of `durabus-workloads`, run by
//! durabus or by a peer on the same server: `--peer async-nats` measures
//! W1, W2 and W4 with raw async-nats calls (see [`raw`]), the bar the NATS
//! backend is held to; `--peer durabus,async-nats` measures both in one
//! process, interleaved, and reports the ratio (see [`pair`]);
//! `--peer redis --redis-url redis://host:port` measures W1-W4 on Redis
//! Streams (see [`redis`]). Every run uses streams, subjects and keys of
//! its own and deletes them afterwards.

use anyhow::bail;
use clap::{Args, ValueEnum};
use comfy_table::{modifiers, presets, Table};
use durabus_workloads::{Bench, Where};

use crate::{pair, raw, redis};

/// Who runs the workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Peer {
    /// durabus, on the backend of --url.
    Durabus,
    /// Raw async-nats JetStream calls on the nats:// server of --url (W1, W2, W4).
    AsyncNats,
    /// Redis Streams on the server of --redis-url (W1-W4), alone.
    Redis,
}

/// Arguments of `durabus-bench bench`.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    common: durabus_workloads::BenchArgs,

    /// Who runs the workloads: durabus, or raw async-nats on the same
    /// nats:// server (the peer the NATS backend is compared with), or both
    /// (durabus,async-nats): interleaved in one process, with their ratio;
    /// or Redis Streams (redis, alone, with --redis-url).
    #[arg(
        long = "peer",
        value_enum,
        value_delimiter = ',',
        default_value = "durabus",
        value_name = "PEER"
    )]
    peers: Vec<Peer>,

    /// With both peers: messages per turn in W1 and W2 (W2 rounds up to
    /// whole batches).
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    slice: u64,

    /// The Redis server of --peer redis (--url is not used then).
    #[arg(long, value_name = "URL")]
    redis_url: Option<String>,
}

/// The result table's style.
fn table() -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::UTF8_FULL_CONDENSED)
        .apply_modifier(modifiers::UTF8_ROUND_CORNERS);
    table
}

/// Runs `durabus-bench bench` on `url` (None: a fresh temporary store).
pub(crate) async fn run(url: Option<&str>, json: bool, args: RunArgs) -> anyhow::Result<()> {
    let redis_url = redis::url_of(&args.peers, args.redis_url.as_deref())?;
    let at = match redis_url {
        Some(url) => Where::Server {
            url,
            backend: "redis",
        },
        None => Where::Bus(url),
    };
    let mut bench = Bench::new(&args.common, at, json)?;
    let mut peers: Vec<Peer> = Vec::new();
    for p in &args.peers {
        if !peers.contains(p) {
            peers.push(*p);
        }
    }
    if peers.contains(&Peer::AsyncNats) && bench.backend() != "nats" {
        bail!(
            "--peer async-nats measures a NATS server: give --url nats://host:port (not {})",
            durabus::redact(bench.url())
        );
    }
    let peer = match peers.as_slice() {
        [Peer::AsyncNats] => "async-nats",
        [Peer::Redis] => "redis",
        [_] => "durabus",
        _ => "durabus,async-nats",
    };
    bench.announce(peer);
    for run in 1..=bench.runs() {
        bench.begin_run(run);
        let results = if let Some(redis_url) = redis_url {
            redis::run_workloads(&bench.plan, redis_url).await?
        } else {
            let url = bench.async_url();
            match peers.as_slice() {
                [Peer::Durabus] => bench.measure(None::<std::future::Ready<_>>).await?,
                [Peer::AsyncNats] => {
                    let peer = raw::run_workloads(&bench.plan, &url);
                    bench.measure(Some(peer)).await?
                }
                _ => {
                    let peer = pair::run(&bench.plan, &url, args.slice);
                    bench.measure(Some(peer)).await?
                }
            }
        };
        bench.end_run(results);
    }
    bench.finish(Some((pair::DURABUS, pair::RAW)), table())
}
