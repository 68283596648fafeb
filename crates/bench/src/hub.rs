//! `durabus-bench bench --peer async-nats,hub`: the hub (`durabus serve` on
//! a fresh `file:` store) and nats-server, measured by the same raw
//! async-nats workloads in one process, interleaved.
//!
//! Each hub is a process of its own, as nats-server is: the release
//! `durabus` binary next to this one (or `--hub-bin`), started on a free
//! loopback port over a fresh temporary directory, one per `--hub-durability`
//! value, and stopped by pid (SIGTERM, then SIGKILL) at the end. `--hub-url`
//! measures a hub that is already running instead.
//!
//! The workloads are [`raw`]'s (W1 publish awaiting each ack, W4 replay with
//! an ordered consumer, W4 consume with a durable pull consumer and explicit
//! acks), W2 as a sliding window of `--in-flight` acks
//! ([`raw::publish_window`]), and the core pub/sub fan-out of [`fanout`].
//! As in [`crate::pair`], the servers take turns within each workload
//! (W1 in turns of `--slice` messages, W2 in turns of whole windows, W4 and
//! the fan-out in [`TURNS`] turns each), the first server of a turn
//! rotating, so a change of the machine's load hits every server alike.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{bail, Context as _};
use indicatif::ProgressBar;
use tokio::io::AsyncBufReadExt as _;

use durabus_workloads::{Measurement, Plan, Workload};

use crate::fanout::{self, Fanout};
use crate::raw;

/// Turns of each server in W4 (replays, then consumes) and in the fan-out.
pub(crate) const TURNS: u64 = 4;

/// Row label of nats-server in a hub comparison.
pub(crate) const NATS_SERVER: &str = "async-nats/nats-server";

/// Row label of a hub: `async-nats/hub-<durability>`, or `async-nats/hub`
/// for a running hub (`--hub-url`) whose durability the bench does not know.
pub(crate) fn label(durability: Option<&str>) -> String {
    match durability {
        Some(d) => format!("async-nats/hub-{d}"),
        None => "async-nats/hub".to_owned(),
    }
}

/// What the hub comparison measures besides the [`Plan`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shape {
    /// W1 turns, in messages.
    pub(crate) slice: u64,
    /// W2's acks in flight.
    pub(crate) in_flight: u64,
    /// Subscribers of the fan-out.
    pub(crate) subscribers: usize,
    /// Messages the fan-out publishes per server (over all its turns).
    pub(crate) fanout_msgs: u64,
}

/// `durabus serve` running as a child process over a temporary store.
pub(crate) struct HubProcess {
    child: tokio::process::Child,
    url: String,
    durability: String,
    dir: tempfile::TempDir,
}

/// The `durabus` binary next to this executable (both are built into the
/// same `target/release`).
pub(crate) fn default_bin() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("durabus")))
        .unwrap_or_else(|| PathBuf::from("durabus"))
}

/// The last lines of `path`, for an error message.
fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

impl HubProcess {
    /// Starts `bin serve` on `127.0.0.1:0` over a fresh `file:` store with
    /// `durability`, and waits until it says where it listens.
    pub(crate) async fn start(bin: &Path, durability: &str) -> anyhow::Result<Self> {
        if !bin.is_file() {
            bail!(
                "the hub binary {} is missing: build it with `cargo build --release -p durabus-cli` \
                 (bench/compare does), or give --hub-bin PATH or --hub-url nats://host:port",
                bin.display()
            );
        }
        let dir = tempfile::Builder::new()
            .prefix("durabus-bench-hub-")
            .tempdir()
            .context("cannot create a temporary directory for the hub's store")?;
        let store = format!(
            "file:{}?durability={durability}",
            dir.path().join("store").display()
        );
        let log_path = dir.path().join("hub.log");
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("cannot create {}", log_path.display()))?;
        let mut child = tokio::process::Command::new(bin)
            .args([
                "--json",
                "serve",
                "--store",
                &store,
                "--listen",
                "127.0.0.1:0",
            ])
            .env_remove("DURABUS_URL")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        let stdout = child.stdout.take().context("the hub has no stdout")?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await;
        let url = match first {
            Ok(Ok(Some(line))) => serde_json::from_str::<serde_json::Value>(&line)
                .ok()
                .and_then(|v| v["listening"].as_str().map(str::to_owned)),
            _ => None,
        };
        let Some(url) = url else {
            let _ = child.kill().await;
            bail!(
                "{} serve --store {store} did not start:\n{}",
                bin.display(),
                tail(&log_path)
            );
        };
        Ok(Self {
            child,
            url,
            durability: durability.to_owned(),
            dir,
        })
    }

    /// `nats://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The durability of its store.
    pub(crate) fn durability(&self) -> &str {
        &self.durability
    }

    /// Stops the hub by its pid: SIGTERM (a graceful shutdown), SIGKILL if
    /// it is still running 10 s later; removes its store.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
                .await
                .is_err()
            {
                eprintln!("the hub (pid {pid}) ignored SIGTERM for 10 s: killing it");
                self.child.kill().await.context("cannot kill the hub")?;
            }
        }
        let path = self.dir.path().to_owned();
        self.dir
            .close()
            .with_context(|| format!("cannot remove the hub's store {}", path.display()))
    }
}

/// One server under measurement: its async-nats connection with a bench
/// stream, and the fan-out's connections.
struct Server {
    label: String,
    raw: raw::Raw,
    fanout: Option<Fanout>,
}

/// Opens the bench stream (and the fan-out's connections) on `url`.
async fn open(plan: &Plan, shape: Shape, label: String, url: &str) -> anyhow::Result<Server> {
    let raw = raw::Raw::open(
        url,
        &format!("BENCH_{}", plan.tag),
        &format!("bench.{}.>", plan.tag),
    )
    .await
    .with_context(|| label.clone())?;
    let fanout = if shape.subscribers > 0 && shape.fanout_msgs > 0 {
        let per_turn = shape.fanout_msgs.div_ceil(TURNS);
        match Fanout::connect(url, shape.subscribers, per_turn).await {
            Ok(f) => Some(f),
            Err(e) => return raw.finish(Err(e)).await,
        }
    } else {
        None
    };
    Ok(Server { label, raw, fanout })
}

/// The order of the servers in turn `turn`: rotated by one every turn.
fn order(count: usize, turn: u64) -> impl Iterator<Item = usize> {
    let first = usize::try_from(turn).unwrap_or(0) % count.max(1);
    (0..count).map(move |i| (first + i) % count)
}

/// Every server's time in W1 or W2: `n` messages each, in turns of `step`.
async fn publishes(
    plan: &Plan,
    servers: &[Server],
    workload: &str,
    n: u64,
    step: u64,
    window: Option<u64>,
    bar: &ProgressBar,
) -> anyhow::Result<Vec<Duration>> {
    let subject = format!("bench.{}.{workload}", plan.tag);
    let hidden = ProgressBar::hidden();
    let mut times = vec![Duration::ZERO; servers.len()];
    let (mut done, mut turn) = (0u64, 0u64);
    while done < n {
        let this = step.min(n - done);
        for i in order(servers.len(), turn) {
            let js = &servers[i].raw.js;
            times[i] += match window {
                Some(w) => raw::publish_window(js, &subject, &plan.payload, this, w, &hidden)
                    .await
                    .with_context(|| servers[i].label.clone())?,
                None => raw::publish_each(js, &subject, &plan.payload, this, &hidden)
                    .await
                    .with_context(|| servers[i].label.clone())?,
            };
        }
        done += this;
        turn += 1;
        bar.inc(this * servers.len() as u64);
    }
    bar.finish_and_clear();
    Ok(times)
}

/// The rows of every server for one workload: `messages` each, in `times`.
fn rows(
    servers: &[Server],
    workload: &str,
    name: &str,
    messages: &[u64],
    size: usize,
    times: &[Duration],
    note: &str,
) -> Vec<Measurement> {
    servers
        .iter()
        .zip(messages.iter().zip(times))
        .map(|(s, (m, t))| {
            let mut row = Measurement::new(workload, name, *m, size, *t).note(note);
            row.peer.clone_from(&s.label);
            row
        })
        .collect()
}

/// The workloads of `plan` on every server, interleaved.
async fn measure(
    plan: &Plan,
    shape: Shape,
    servers: &[Server],
) -> anyhow::Result<Vec<Measurement>> {
    let size = plan.payload.len();
    let count = servers.len();
    let all = |n: u64| vec![n; count];
    let mut results = Vec::new();
    let mut stored = 0u64;
    if plan.workloads.contains(&Workload::W1) {
        let bar = plan.progress.bar("W1 hub", count as u64 * plan.msgs);
        let slice = shape.slice;
        let times = publishes(plan, servers, "w1", plan.msgs, slice, None, &bar).await?;
        stored += plan.msgs;
        let note =
            format!("1 publisher, js.publish().await?.await?; interleaved, turns of {slice}");
        let name = "publish, await each ack";
        results.extend(rows(
            servers,
            "W1",
            name,
            &all(plan.msgs),
            size,
            &times,
            &note,
        ));
    }
    let window = shape.in_flight;
    // Whole windows, at least 16 of them a turn: the drain at the end of
    // a turn costs a round trip.
    let step = shape.slice.max(16 * window).div_ceil(window) * window;
    if plan.workloads.contains(&Workload::W2) {
        let bar = plan.progress.bar("W2 hub", count as u64 * plan.msgs);
        let times = publishes(plan, servers, "w2", plan.msgs, step, Some(window), &bar).await?;
        stored += plan.msgs;
        let note =
            format!("1 publisher, a sliding window of {window} acks; interleaved, turns of {step}");
        let name = format!("publish, {window} in flight");
        results.extend(rows(
            servers,
            "W2",
            &name,
            &all(plan.msgs),
            size,
            &times,
            &note,
        ));
    }
    if plan.workloads.contains(&Workload::W4) {
        if stored == 0 {
            let bar = plan.progress.bar("W4 fill", count as u64 * plan.msgs);
            publishes(plan, servers, "w4", plan.msgs, step, Some(window), &bar).await?;
            stored = plan.msgs;
        }
        let hidden = ProgressBar::hidden();
        let mut times = vec![Duration::ZERO; count];
        let bar = plan
            .progress
            .bar("W4 replays", count as u64 * TURNS * stored);
        for turn in 0..TURNS {
            for i in order(count, turn) {
                let s = &servers[i];
                let (got, took) = raw::replay_all(&s.raw.js, &s.raw.stream, &hidden)
                    .await
                    .with_context(|| s.label.clone())?;
                if got != stored {
                    bail!(
                        "W4 on {}: a replay returned {got} messages, but {stored} were stored",
                        s.label
                    );
                }
                times[i] += took;
                bar.inc(stored);
            }
        }
        bar.finish_and_clear();
        let note = format!(
            "async-nats ordered push consumer, to the end; {TURNS} replays each, interleaved"
        );
        results.extend(rows(
            servers,
            "W4",
            "replay from seq 1",
            &all(TURNS * stored),
            size,
            &times,
            &note,
        ));
        let mut times = vec![Duration::ZERO; count];
        let bar = plan
            .progress
            .bar("W4 consumes", count as u64 * TURNS * stored);
        for turn in 0..TURNS {
            for i in order(count, turn) {
                let s = &servers[i];
                times[i] += raw::consume_all(&s.raw.js, &s.raw.stream, stored, plan.batch, &hidden)
                    .await
                    .with_context(|| s.label.clone())?;
                bar.inc(stored);
            }
        }
        bar.finish_and_clear();
        let note = format!(
            "durable pull consumer, fetch {}, ack() each; {TURNS} consumes each, interleaved",
            plan.batch
        );
        results.extend(rows(
            servers,
            "W4",
            "consume, explicit ack",
            &all(TURNS * stored),
            size,
            &times,
            &note,
        ));
    }
    if shape.subscribers > 0 && shape.fanout_msgs > 0 {
        let per_turn = shape.fanout_msgs.div_ceil(TURNS);
        let mut outcomes = vec![fanout::Outcome::default(); count];
        let bar = plan
            .progress
            .bar("core fan-out", count as u64 * TURNS * per_turn);
        for turn in 0..TURNS {
            for i in order(count, turn) {
                let s = &servers[i];
                let Some(f) = &s.fanout else { continue };
                let subject = format!("benchcore.{}.{turn}", plan.tag);
                let outcome = f
                    .run(&subject, &plan.payload, per_turn)
                    .await
                    .with_context(|| s.label.clone())?;
                outcomes[i].add(outcome);
                bar.inc(per_turn);
            }
        }
        bar.finish_and_clear();
        let name = fanout::name(shape.subscribers);
        for (s, o) in servers.iter().zip(&outcomes) {
            let mut note = format!(
                "1 publisher, {} subscribers, a connection each; msg/s counts deliveries; {TURNS} turns each, interleaved",
                shape.subscribers
            );
            if o.delivered < o.expected {
                note = format!(
                    "{note}; DROPPED {} of {} deliveries",
                    o.expected - o.delivered,
                    o.expected
                );
            }
            let mut row =
                Measurement::new(fanout::WORKLOAD, &name, o.delivered, size, o.elapsed).note(note);
            row.peer.clone_from(&s.label);
            results.push(row);
        }
    }
    Ok(results)
}

/// The workloads of `plan` on every server of `targets` (label, URL),
/// interleaved; deletes the bench streams afterwards.
pub(crate) async fn run(
    plan: &Plan,
    shape: Shape,
    targets: &[(String, String)],
) -> anyhow::Result<Vec<Measurement>> {
    let mut servers = Vec::with_capacity(targets.len());
    let mut opened = Ok(());
    for (label, url) in targets {
        match open(plan, shape, label.clone(), url).await {
            Ok(s) => servers.push(s),
            Err(e) => {
                opened = Err(e);
                break;
            }
        }
    }
    let mut result = match opened {
        Ok(()) => measure(plan, shape, &servers).await,
        Err(e) => Err(e),
    };
    for s in servers {
        if let Some(f) = s.fanout {
            f.close().await;
        }
        let finished = s.raw.finish(Ok(())).await;
        if result.is_ok() {
            if let Err(e) = finished {
                result = Err(e.context(s.label));
            }
        }
    }
    result
}
