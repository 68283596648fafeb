//! A bench run: where it runs (a temporary store unless told), which
//! workloads apply there, the runs repeated, and the report of their
//! medians as a table, JSON lines or a JSON file.

use std::io::{IsTerminal as _, Write as _};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use comfy_table::Table;
use durabus::BackendUrl;
use serde::Serialize;

use crate::args::{BenchArgs, Workload};
use crate::bus::{run_async_workloads, run_sync_workloads, with_durability, Plan};
use crate::measure::{self, Measurement, Progress};
use crate::{growth, system};

/// Where a bench runs.
#[derive(Debug, Clone, Copy)]
pub enum Where<'a> {
    /// A durabus backend: the URL given, or a fresh temporary `file:` store
    /// (removed afterwards) when none is.
    Bus(Option<&'a str>),
    /// A server of a peer's own (Redis), which durabus does not open.
    Server {
        /// Its URL.
        url: &'a str,
        /// The report's `backend`, e.g. `redis`.
        backend: &'static str,
    },
}

/// The bench report: where it ran and what it measured.
#[derive(Debug, Serialize)]
struct Report {
    /// The backend URL, credentials redacted.
    url: String,
    /// The backend kind: `file`, `memory`, `nats` or a peer's (`redis`).
    backend: &'static str,
    /// `durabus`, `async-nats`, `durabus,async-nats` or `redis`.
    peer: &'static str,
    temporary_store: bool,
    msg_size: usize,
    /// Messages of W1 and of W2 (W4 replays both).
    msgs: u64,
    /// Messages per batch in W2.
    batch: u64,
    runs: u64,
    results: Vec<Measurement>,
    /// Workloads asked for but not applicable here, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    skipped: Vec<Skipped>,
    /// With two peers: the first / the second per workload.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    comparison: Vec<Comparison>,
}

/// One peer against another on one workload (durabus on NATS against raw
/// async-nats).
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    /// The workload.
    pub workload: String,
    /// The row's `name` (W4 has two: replay and consume).
    pub name: String,
    /// Median over runs of each run's msg/s of the first peer divided by the second's.
    pub ratio: f64,
    /// Each run's ratio.
    pub ratios: Vec<f64>,
    /// Whether `ratio` is at least 0.95 (the bar of docs/performance.md).
    pub within_5_percent: bool,
}

/// Per workload row, the median of the runs' `ours` / `theirs` ratios
/// (rows told apart by their `peer`).
pub fn compare(runs: &[Vec<Measurement>], ours: &str, theirs: &str) -> Vec<Comparison> {
    let mut out: Vec<Comparison> = Vec::new();
    for run in runs {
        for d in run.iter().filter(|m| m.peer == ours) {
            let Some(r) = run
                .iter()
                .find(|m| m.peer == theirs && m.workload == d.workload && m.name == d.name)
            else {
                continue;
            };
            let ratio = d.msgs_per_sec / r.msgs_per_sec.max(f64::MIN_POSITIVE);
            match out
                .iter_mut()
                .find(|c| c.workload == d.workload && c.name == d.name)
            {
                Some(c) => c.ratios.push(ratio),
                None => out.push(Comparison {
                    workload: d.workload.clone(),
                    name: d.name.clone(),
                    ratio: 0.0,
                    ratios: vec![ratio],
                    within_5_percent: false,
                }),
            }
        }
    }
    for c in &mut out {
        let mut sorted = c.ratios.clone();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        c.ratio = match n {
            0 => 0.0,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        c.within_5_percent = c.ratio >= 0.95;
    }
    out
}

/// A workload that was not run, and why.
#[derive(Debug, Serialize)]
struct Skipped {
    workload: &'static str,
    reason: &'static str,
}

/// Why W3 is not run on `nats://`.
const W3_ON_NATS: &str = "not applicable on nats://: W3 measures the embedded engine's \
     durability modes against the disk's fdatasync rate; a NATS stream's durability is \
     the server's";

/// Row by row, the run with the median rate. Every run has the same rows in
/// the same order; a W3 row keeps its own run's fdatasync ratio, so a ratio
/// always compares figures measured side by side.
fn medians(runs: Vec<Vec<Measurement>>) -> Vec<Measurement> {
    let count = runs.len();
    let Some(rows) = runs.first().map(Vec::len) else {
        return Vec::new();
    };
    let mut columns: Vec<Vec<Measurement>> = (0..rows).map(|_| Vec::new()).collect();
    for run in runs {
        for (i, m) in run.into_iter().enumerate() {
            if let Some(column) = columns.get_mut(i) {
                column.push(m);
            }
        }
    }
    columns
        .into_iter()
        .filter_map(|mut column| {
            column.sort_by(|a, b| a.median_key().total_cmp(&b.median_key()));
            let middle = column.len() / 2;
            let mut m = column.into_iter().nth(middle)?;
            if count > 1 {
                m.notes = format!("{}; median of {count} runs", m.notes);
            }
            Some(m)
        })
        .collect()
}

/// The process's part of [`Plan::tag`]: its id and start time.
fn process_tag() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{}_{}", std::process::id(), nanos % 1_000_000_000_000)
}

/// One bench command: [`Bench::new`], [`Bench::announce`], then per run
/// [`Bench::begin_run`], the measurements, [`Bench::end_run`]; then
/// [`Bench::finish`].
#[derive(Debug)]
pub struct Bench {
    /// What every run measures; its tag changes per run.
    pub plan: Plan,
    args: BenchArgs,
    json: bool,
    process: String,
    /// The temporary store, removed by [`Bench::finish`].
    temp: Option<tempfile::TempDir>,
    url: String,
    backend: &'static str,
    peer: &'static str,
    skipped: Vec<Skipped>,
    runs: Vec<Vec<Measurement>>,
}

impl Bench {
    /// A bench of `args` at `at`; `json` prints the report as JSON (and no
    /// progress bars).
    pub fn new(args: &BenchArgs, at: Where<'_>, json: bool) -> anyhow::Result<Self> {
        let visible = !json && std::io::stdout().is_terminal() && std::io::stderr().is_terminal();
        let process = process_tag();
        let plan = Plan {
            workloads: args.workloads.iter().copied().collect(),
            msgs: args.msgs,
            sync_msgs: args.sync_msgs.unwrap_or(args.msgs.min(2000)),
            stall_msgs: args.stall_msgs.unwrap_or(args.msgs),
            batch: args.batch,
            payload: Bytes::from(vec![b'x'; args.size]),
            stall_payload: Bytes::from(vec![b'x'; args.stall_size.unwrap_or(args.size)]),
            w8: args.w8_plan(),
            progress: Progress::new(visible),
            tag: process.clone(),
        };
        let (temp, url, backend) = match at {
            Where::Server { url, backend } => (None, url.to_owned(), backend),
            Where::Bus(given) => {
                // Never touch ./data unless asked: without a URL, bench in a
                // fresh temporary store.
                let temp = match given {
                    Some(_) => None,
                    None => Some(
                        tempfile::Builder::new()
                            .prefix("durabus-bench-")
                            .tempdir()
                            .context("cannot create a temporary directory for the bench store")?,
                    ),
                };
                let url = match (&temp, given) {
                    (Some(dir), _) => format!("file:{}", dir.path().display()),
                    (None, Some(url)) => url.to_owned(),
                    (None, None) => durabus::DEFAULT_URL.to_owned(),
                };
                let backend = match durabus::parse_url(&url)? {
                    BackendUrl::File { .. } => "file",
                    BackendUrl::Memory { .. } => "memory",
                    BackendUrl::Nats { .. } => "nats",
                    _ => "other",
                };
                (temp, url, backend)
            }
        };
        Ok(Self {
            plan,
            args: args.clone(),
            json,
            process,
            temp,
            url,
            backend,
            peer: "durabus",
            skipped: Vec::new(),
            runs: Vec::new(),
        })
    }

    /// The backend's URL (credentials included: never print it, see
    /// [`durabus::redact`]).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The backend kind: `file`, `memory`, `nats`, or the server's.
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The URL W1, W2 and W4 run on: durability `none` unless the URL sets one.
    pub fn async_url(&self) -> String {
        with_durability(&self.url, "none", false)
    }

    /// How many runs to measure.
    pub fn runs(&self) -> u64 {
        self.args.runs
    }

    /// Drops the workloads that do not apply to the backend (saying why in
    /// the report) and, unless printing JSON, says on stderr what runs
    /// where; `peer` names who measures (`durabus`, `async-nats`, ...).
    pub fn announce(&mut self, peer: &'static str) {
        self.peer = peer;
        let backend = self.backend;
        if backend == "nats" && self.plan.workloads.remove(&Workload::W3) {
            self.skipped.push(Skipped {
                workload: "W3",
                reason: W3_ON_NATS,
            });
        }
        if backend != "file" && self.plan.workloads.remove(&Workload::W6) {
            self.skipped.push(Skipped {
                workload: "W6",
                reason:
                    "only on file: W6 measures that memory stays flat while the messages go to disk",
            });
        }
        if backend != "file" && self.plan.workloads.remove(&Workload::W7) {
            self.skipped.push(Skipped {
                workload: "W7",
                reason: "only on file: W7 measures opening an embedded store from disk",
            });
        }
        // A nats-server the bench starts itself measures W8 (its peer).
        if backend != "file"
            && backend != "nats-server"
            && self.plan.workloads.remove(&Workload::W8)
        {
            self.skipped.push(Skipped {
                workload: "W8",
                reason: "only on file: W8 measures embedded stores as they grow (durabus-bench \
                         --peer nats-server measures nats-server)",
            });
        }
        if !self.json {
            let which = if self.temp.is_some() {
                " (temporary, removed afterwards)"
            } else {
                ""
            };
            let what = if self.plan.workloads.iter().eq([&Workload::W8]) {
                let w8 = &self.plan.w8;
                let list = |v: &[u64]| {
                    v.iter()
                        .map(|n| system::count(*n))
                        .collect::<Vec<_>>()
                        .join(",")
                };
                format!(
                    "W8 at {} subjects, {} streams, {} consumers",
                    list(&w8.subjects),
                    list(&w8.streams),
                    list(&w8.consumers)
                )
            } else {
                format!("{} messages of {} bytes", self.plan.msgs, self.args.size)
            };
            eprintln!(
                "{peer} bench on {}{which}: {what}",
                durabus::redact(&self.url)
            );
        }
    }

    /// Starts run `run` (1-based): the streams get names of their own.
    pub fn begin_run(&mut self, run: u64) {
        self.plan.tag = format!("{}_{run}", self.process);
    }

    /// One run's rows, measured by durabus: W1, W2 and W4 by `peers` instead
    /// when given (a peer's rows, on [`Bench::async_url`]); W3 by durabus;
    /// W5-W8 by durabus when no peer measured.
    pub async fn measure<F>(&self, peers: Option<F>) -> anyhow::Result<Vec<Measurement>>
    where
        F: std::future::Future<Output = anyhow::Result<Vec<Measurement>>>,
    {
        let plan = &self.plan;
        let alone = peers.is_none();
        let mut results = Vec::new();
        let async_set = [Workload::W1, Workload::W2, Workload::W4];
        if async_set.iter().any(|w| plan.workloads.contains(w)) {
            results.extend(match peers {
                Some(peers) => peers.await?,
                None => run_async_workloads(plan, &self.async_url()).await?,
            });
        }
        if plan.workloads.contains(&Workload::W3) {
            let url = with_durability(&self.url, "always", true);
            results.extend(run_sync_workloads(plan, &url).await?);
        }
        // W5-W8 are durabus's alone (no peer runs them here).
        if alone {
            let url = self.async_url();
            if plan.workloads.contains(&Workload::W5) {
                results.push(system::latency(plan, &url).await?);
            }
            if plan.workloads.contains(&Workload::W6) {
                results.push(system::stalled_memory(plan, &url).await?);
            }
            if plan.workloads.contains(&Workload::W7) {
                results.push(system::open_time(plan, &url, self.args.open_size).await?);
            }
            if plan.workloads.contains(&Workload::W8) {
                results.extend(growth::run(plan, &url).await?);
            }
        }
        Ok(results)
    }

    /// Ends a run with its rows: in workload order, each without a peer of
    /// its own labelled `<peer>/<backend>`.
    pub fn end_run(&mut self, mut results: Vec<Measurement>) {
        results.sort_by_key(Measurement::rank);
        let label = format!("{}/{}", self.peer, self.backend);
        for m in results.iter_mut().filter(|m| m.peer.is_empty()) {
            m.peer.clone_from(&label);
        }
        self.runs.push(results);
    }

    /// Reports the medians of the runs: writes `--json-out`, prints JSON or
    /// the rows into `table` (a table in the caller's style), then, with
    /// `pair` (two row peers), the ratio of the first to the second per
    /// workload; removes the temporary store.
    pub fn finish(self, pair: Option<(&str, &str)>, table: Table) -> anyhow::Result<()> {
        let comparison = match pair {
            Some((ours, theirs)) => compare(&self.runs, ours, theirs),
            None => Vec::new(),
        };
        let report = Report {
            url: durabus::redact(&self.url),
            backend: self.backend,
            peer: self.peer,
            temporary_store: self.temp.is_some(),
            msg_size: self.args.size,
            msgs: self.plan.msgs,
            batch: self.plan.batch,
            runs: self.args.runs,
            results: medians(self.runs),
            skipped: self.skipped,
            comparison,
        };
        if let Some(path) = &self.args.json_out {
            let text =
                serde_json::to_string_pretty(&report).context("cannot encode the results")?;
            std::fs::write(path, text + "\n")
                .with_context(|| format!("cannot write the results to {}", path.display()))?;
        }
        if self.json {
            let value = serde_json::to_value(&report).context("cannot encode the results")?;
            print_line(&value.to_string())?;
        } else {
            let table = measure::table(&report.results, table);
            let text: Vec<String> = table
                .lines()
                .map(|line| line.trim_end().to_owned())
                .collect();
            print_line(&text.join("\n"))?;
            if let Some((ours, theirs)) = pair {
                for c in &report.comparison {
                    let (low, high) = c
                        .ratios
                        .iter()
                        .fold((f64::INFINITY, 0.0f64), |(l, h), r| (l.min(*r), h.max(*r)));
                    let of = match c.ratios.len() {
                        1 => "1 run".to_owned(),
                        n => format!("median of {n} runs, {low:.3}-{high:.3}"),
                    };
                    println!(
                        "{} {}: {ours} / {theirs} = {:.3} ({of}): {}",
                        c.workload,
                        c.name,
                        c.ratio,
                        if c.within_5_percent {
                            "within 5%"
                        } else {
                            "more than 5% slower"
                        }
                    );
                }
            }
            for s in &report.skipped {
                eprintln!("{} skipped: {}", s.workload, s.reason);
            }
        }
        if let Some(dir) = self.temp {
            let path = dir.path().to_owned();
            dir.close()
                .with_context(|| format!("cannot remove the bench store {}", path.display()))?;
        }
        Ok(())
    }
}

/// Writes `text` and a newline on stdout.
fn print_line(text: &str) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    if !text.ends_with('\n') {
        out.write_all(b"\n")?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn medians_pick_the_middle_run_per_row() {
        let run = |rate: f64| {
            vec![Measurement::new(
                "W1",
                "x",
                1,
                1,
                Duration::from_secs_f64(1.0 / rate),
            )]
        };
        let picked = medians(vec![run(10.0), run(30.0), run(20.0)]);
        assert_eq!(picked.len(), 1);
        assert!((picked[0].msgs_per_sec - 20.0).abs() < 1e-6);
        assert!(picked[0].notes.contains("median of 3 runs"));
    }

    #[test]
    fn the_comparison_is_the_median_of_each_runs_ratio() {
        let row = |peer: &str, rate: f64| {
            let mut m = Measurement::new("W1", "x", 1, 1, Duration::from_secs_f64(1.0 / rate));
            m.peer = peer.to_owned();
            m
        };
        let run = |d: f64, r: f64| vec![row("a/nats", d), row("b/nats", r)];
        let c = compare(
            &[run(90.0, 100.0), run(200.0, 100.0), run(97.0, 100.0)],
            "a/nats",
            "b/nats",
        );
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].workload, "W1");
        assert_eq!(c[0].ratios.len(), 3);
        assert!((c[0].ratio - 0.97).abs() < 1e-6);
        assert!(c[0].within_5_percent);
        assert!(compare(&[run(94.0, 100.0)], "a/nats", "b/nats")
            .iter()
            .all(|c| !c.within_5_percent));
        // Two rows of one workload (W4 replay and consume) compare apart.
        let mut two = run(50.0, 100.0);
        for (m, name) in two.iter_mut().zip(["y", "y"]) {
            m.name = name.to_owned();
        }
        two.extend(run(100.0, 100.0));
        let c = compare(&[two], "a/nats", "b/nats");
        let ratios: Vec<(&str, f64)> = c.iter().map(|c| (c.name.as_str(), c.ratio)).collect();
        assert_eq!(ratios, [("y", 0.5), ("x", 1.0)]);
    }
}
