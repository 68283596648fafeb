//! `durabus-bench bench`: the workloads of `durabus-workloads`, run by
//! durabus or by a peer on the same server: `--peer async-nats` measures
//! W1, W2 and W4 with raw async-nats calls (see [`raw`]), the bar the NATS
//! backend is held to; `--peer durabus,async-nats` measures both in one
//! process, interleaved, and reports the ratio (see [`pair`]);
//! `--peer redis --redis-url redis://host:port` measures W1-W4 on Redis
//! Streams (see [`redis`]); `--peer async-nats,hub` measures the hub
//! (`durabus serve`, started by the bench) beside the nats-server of --url
//! with the same raw async-nats client, interleaved (see [`hub`]);
//! `--peer nats-server --workloads w8` measures W8 on a nats-server the
//! bench starts and restarts (see [`w8`]). Every run
//! uses streams, subjects and keys of its own and deletes them afterwards.

use std::path::PathBuf;

use anyhow::bail;
use clap::{Args, ValueEnum};
use comfy_table::{modifiers, presets, Table};
use durabus_workloads::{Bench, Where, Workload};

use crate::hub::{self, HubProcess};
use crate::{pair, raw, redis, w8};

/// Who runs the workloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Peer {
    /// durabus, on the backend of --url.
    Durabus,
    /// Raw async-nats JetStream calls on the nats:// server of --url (W1, W2, W4).
    AsyncNats,
    /// Redis Streams on the server of --redis-url (W1-W4), alone.
    Redis,
    /// The hub (`durabus serve` on a fresh file: store, started by the
    /// bench) through raw async-nats: W1, W2 with --in-flight acks, W4 and
    /// core pub/sub fan-out; with async-nats, the nats-server of --url
    /// beside it, interleaved.
    Hub,
    /// W8 alone, on a nats-server the bench starts (and restarts) itself
    /// over a fresh store (--nats-server-bin), through raw async-nats.
    NatsServer,
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

    /// With --peer hub: the durability of the hub's file: store; one hub
    /// per value, each measured beside the others (none, always,
    /// periodic:100ms, ...).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "none",
        value_name = "DURABILITY"
    )]
    hub_durability: Vec<String>,

    /// With --peer hub: the `durabus` binary to run `serve` with [default:
    /// the one next to durabus-bench].
    #[arg(long, value_name = "PATH")]
    hub_bin: Option<PathBuf>,

    /// With --peer hub: measure this running hub instead of starting one.
    #[arg(long, value_name = "URL", conflicts_with_all = ["hub_bin", "hub_durability"])]
    hub_url: Option<String>,

    /// With --peer nats-server: the nats-server binary [default:
    /// nats-server on PATH, else /usr/sbin/nats-server].
    #[arg(long, value_name = "PATH")]
    nats_server_bin: Option<PathBuf>,

    /// With --peer hub: W2's JetStream acks in flight (a sliding window).
    #[arg(long, default_value_t = 256, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    in_flight: u64,

    /// With --peer hub: subscribers of the core pub/sub fan-out, each on a
    /// connection of its own (0: no fan-out).
    #[arg(long, default_value_t = 4, value_name = "N")]
    fanout_subs: usize,

    /// With --peer hub: messages the fan-out publishes to each server
    /// [default: 10 x --msgs].
    #[arg(long, value_name = "N")]
    fanout_msgs: Option<u64>,
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
    if args.peers.contains(&Peer::Hub) {
        return run_hub(url, json, args).await;
    }
    if args.peers.contains(&Peer::NatsServer) {
        return run_nats_w8(json, args).await;
    }
    let at = match redis_url {
        Some(url) => Where::Server {
            url,
            backend: "redis",
        },
        None => Where::Bus(url),
    };
    let mut bench = Bench::new(&args.common, at, json)?;
    // W8 times `durabus stream ls` with the binary next to this one.
    let cli = args.hub_bin.clone().unwrap_or_else(hub::default_bin);
    bench.plan.w8.cli = cli.is_file().then_some(cli);
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

/// The nats-server binary: `--nats-server-bin`, else the one on PATH, else
/// Debian's.
fn nats_server_bin(given: Option<PathBuf>) -> PathBuf {
    given.unwrap_or_else(|| {
        std::env::var_os("PATH")
            .into_iter()
            .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
            .map(|dir| dir.join("nats-server"))
            .find(|p| p.is_file())
            .unwrap_or_else(|| PathBuf::from("/usr/sbin/nats-server"))
    })
}

/// `--peer nats-server --workloads w8`: W8 on a nats-server of the bench's own.
async fn run_nats_w8(json: bool, args: RunArgs) -> anyhow::Result<()> {
    if args.peers.len() != 1 {
        bail!("--peer nats-server runs alone (W8 on a nats-server the bench starts)");
    }
    if args.common.workloads != [Workload::W8] {
        bail!("--peer nats-server measures W8 only: give --workloads w8");
    }
    let bin = nats_server_bin(args.nats_server_bin.clone());
    let at = Where::Server {
        url: "nats-server (started by the bench)",
        backend: w8::NATS_SERVER,
    };
    let mut bench = Bench::new(&args.common, at, json)?;
    bench.announce(w8::NATS_SERVER);
    for run in 1..=bench.runs() {
        bench.begin_run(run);
        let results = w8::run(&bench.plan, &bin).await?;
        bench.end_run(results);
    }
    bench.finish(None, table())
}

/// `--peer hub` (the hubs alone) or `--peer async-nats,hub` (beside the
/// nats-server of `url`): starts the hubs, measures, stops them.
async fn run_hub(url: Option<&str>, json: bool, args: RunArgs) -> anyhow::Result<()> {
    let mut peers: Vec<Peer> = Vec::new();
    for p in &args.peers {
        if !peers.contains(p) {
            peers.push(*p);
        }
    }
    let with_nats = match peers.as_slice() {
        [Peer::Hub] => false,
        [Peer::Hub, Peer::AsyncNats] | [Peer::AsyncNats, Peer::Hub] => true,
        _ => bail!(
            "--peer hub runs alone, or beside nats-server as --peer async-nats,hub (--url nats://...)"
        ),
    };
    if with_nats && !url.is_some_and(|u| u.starts_with("nats://")) {
        bail!("--peer async-nats,hub compares the hub with a nats-server: give --url nats://host:port");
    }
    let mut hubs: Vec<HubProcess> = Vec::new();
    let mut targets: Vec<(String, String)> = Vec::new();
    let mut started = Ok(());
    match &args.hub_url {
        Some(hub_url) => targets.push((hub::label(None), hub_url.clone())),
        None => {
            let bin = args.hub_bin.clone().unwrap_or_else(hub::default_bin);
            for durability in &args.hub_durability {
                match HubProcess::start(&bin, durability).await {
                    Ok(h) => {
                        if !json {
                            eprintln!(
                                "hub: {} serve on {} (file: store, durability {})",
                                bin.display(),
                                h.url(),
                                h.durability()
                            );
                        }
                        targets.push((hub::label(Some(durability)), h.url().to_owned()));
                        hubs.push(h);
                    }
                    Err(e) => {
                        started = Err(e);
                        break;
                    }
                }
            }
        }
    }
    let mut result = match started {
        Ok(()) => measure_hub(if with_nats { url } else { None }, json, &args, targets).await,
        Err(e) => Err(e),
    };
    for h in hubs {
        let stopped = h.stop().await;
        if result.is_ok() {
            result = stopped;
        }
    }
    result
}

/// The runs of the hub comparison on `targets` (and the nats-server of
/// `nats_url` first, when given).
async fn measure_hub(
    nats_url: Option<&str>,
    json: bool,
    args: &RunArgs,
    mut targets: Vec<(String, String)>,
) -> anyhow::Result<()> {
    let Some(first_hub) = targets.first().map(|t| t.1.clone()) else {
        bail!("--hub-durability names no hub");
    };
    let at = match nats_url {
        Some(url) => Where::Bus(Some(url)),
        None => Where::Server {
            url: &first_hub,
            backend: "nats",
        },
    };
    let mut bench = Bench::new(&args.common, at, json)?;
    if let Some(url) = nats_url {
        targets.insert(0, (hub::NATS_SERVER.to_owned(), url.to_owned()));
    }
    bench.announce(if nats_url.is_some() {
        "async-nats,hub"
    } else {
        "hub"
    });
    let shape = hub::Shape {
        slice: args.slice,
        in_flight: args.in_flight,
        subscribers: args.fanout_subs,
        fanout_msgs: args
            .fanout_msgs
            .unwrap_or_else(|| bench.plan.msgs.saturating_mul(10)),
    };
    let mut runs = Vec::new();
    for run in 1..=bench.runs() {
        bench.begin_run(run);
        let results = hub::run(&bench.plan, shape, &targets).await?;
        runs.push(results.clone());
        bench.end_run(results);
    }
    bench.finish(None, table())?;
    if nats_url.is_some() && !json {
        for (label, _) in targets.iter().skip(1) {
            for r in durabus_workloads::compare(&runs, label, hub::NATS_SERVER) {
                let of = match r.ratios.len() {
                    1 => "1 run".to_owned(),
                    n => format!("median of {n} runs"),
                };
                println!(
                    "{} {}: {label} / {} = {:.2} ({of})",
                    r.workload,
                    r.name,
                    hub::NATS_SERVER,
                    r.ratio
                );
            }
        }
    }
    Ok(())
}
