//! What a workload reports: one [`Measurement`] row, its latency
//! percentiles, the progress bars shown while it runs, and the table the
//! rows are printed in.

use std::time::Duration;

use comfy_table::{CellAlignment, Table};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

/// Progress bars are advanced once per this many messages, to keep their
/// cost out of the measurement.
const PROGRESS_STEP: u64 = 1024;

/// One row of the result table.
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// Workload id (`W1` ... `W7`, or `disk` for the fdatasync baseline).
    pub workload: String,
    /// Who ran it on which backend: `durabus/file`, `durabus/nats`,
    /// `async-nats/nats`, ...
    pub peer: String,
    /// What was measured.
    pub name: String,
    /// Messages (or, for the baseline, writes).
    pub messages: u64,
    /// Wall-clock seconds.
    pub seconds: f64,
    /// Messages per second.
    pub msgs_per_sec: f64,
    /// Payload megabytes (10^6) per second.
    pub mb_per_sec: f64,
    /// `msgs_per_sec` divided by the disk's fdatasync rate (W3 only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vs_fdatasync: Option<f64>,
    /// Latency percentiles (W5).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
    /// Growth of resident memory in MiB (W6).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rss_growth_mib: Option<f64>,
    /// W6: the growth of resident memory when the log held 1M, 10M, 100M
    /// ... messages (the powers of ten from 1M below `messages`), then at
    /// `messages`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rss_samples: Vec<RssSample>,
    /// W8: one point of a cost-against-size curve.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub growth: Option<Growth>,
    /// Context: durability, ratio to the fdatasync baseline, ...
    pub notes: String,
}

/// One point of a W8 curve: what a cost was (`value` in `unit`) when
/// the store held `size` of `axis` (subjects, streams, consumers).
#[derive(Debug, Clone, Serialize)]
pub struct Growth {
    /// What grows: `subjects`, `streams` or `consumers`.
    pub axis: String,
    /// How many of them the store held.
    pub size: u64,
    /// The cost measured.
    pub value: f64,
    /// Its unit: `ms`, `MiB` or `B`.
    pub unit: String,
}

impl Growth {
    /// `12.3 ms`, `41.0 MiB`, `57 B` for tables.
    pub fn cell(&self) -> String {
        match self.unit.as_str() {
            "B" | "files" => format!("{:.0} {}", self.value, self.unit),
            "ms" if self.value >= 100.0 => format!("{:.0} ms", self.value),
            unit => format!("{:.1} {unit}", self.value),
        }
    }
}

/// Resident memory growth after so many messages (W6).
#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssSample {
    /// Messages published so far.
    pub messages: u64,
    /// Growth of resident memory in MiB since before the first.
    pub rss_growth_mib: f64,
}

impl Measurement {
    /// `messages` of `bytes_each` payload bytes in `elapsed`; the peer is
    /// filled in by the run unless the workload sets it.
    pub fn new(
        workload: &str,
        name: &str,
        messages: u64,
        bytes_each: usize,
        elapsed: Duration,
    ) -> Self {
        let seconds = elapsed.as_secs_f64().max(1e-9);
        #[allow(clippy::cast_precision_loss)] // rates for display
        let msgs_per_sec = messages as f64 / seconds;
        #[allow(clippy::cast_precision_loss)]
        let mb_per_sec = msgs_per_sec * bytes_each as f64 / 1e6;
        Self {
            workload: workload.to_owned(),
            peer: String::new(),
            name: name.to_owned(),
            messages,
            seconds,
            msgs_per_sec,
            mb_per_sec,
            vs_fdatasync: None,
            latency: None,
            rss_growth_mib: None,
            rss_samples: Vec::new(),
            growth: None,
            notes: String::new(),
        }
    }

    /// The row with `note` as its notes.
    #[must_use]
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.notes = note.into();
        self
    }

    /// A W8 row: the cost `name` was `value` `unit` at `size` of `axis`
    /// (`messages` is the size; the rates are 0).
    pub fn point(name: &str, axis: &str, size: u64, value: f64, unit: &str) -> Self {
        let mut m = Self::new("W8", name, size, 0, Duration::ZERO);
        m.seconds = 0.0;
        m.msgs_per_sec = 0.0;
        m.growth = Some(Growth {
            axis: axis.to_owned(),
            size,
            value,
            unit: unit.to_owned(),
        });
        m
    }

    /// What the median of several runs is taken over: the cost of a W8
    /// point, the rate of the others.
    pub(crate) fn median_key(&self) -> f64 {
        self.growth.as_ref().map_or(self.msgs_per_sec, |g| g.value)
    }

    /// Sort key: the workload order of `docs/performance.md`, baseline before W3.
    pub(crate) fn rank(&self) -> u8 {
        match self.workload.as_str() {
            "W1" => 1,
            "W2" => 2,
            "disk" => 3,
            "W3" => 4,
            "W4" => 5,
            "W5" => 6,
            "W6" => 7,
            "W7" => 8,
            _ => 9,
        }
    }
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Latency {
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
}

impl Latency {
    /// Percentiles of `nanos` (sorted in place).
    pub(crate) fn of(nanos: &mut [u64]) -> Latency {
        nanos.sort_unstable();
        let at = |q: f64| {
            if nanos.is_empty() {
                return 0.0;
            }
            #[allow(
                clippy::cast_possible_truncation,
                clippy::cast_sign_loss,
                clippy::cast_precision_loss
            )]
            let i = ((nanos.len() as f64 * q).ceil() as usize).clamp(1, nanos.len()) - 1;
            #[allow(clippy::cast_precision_loss)]
            let us = nanos[i] as f64 / 1000.0;
            us
        };
        Latency {
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
        }
    }

    /// `p50 / p99 / p99.9` for the table.
    pub fn cell(&self) -> String {
        format!(
            "{:.1} / {:.1} / {:.1}",
            self.p50_us, self.p99_us, self.p999_us
        )
    }
}

/// Makes one progress bar per workload, or hidden ones.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    visible: bool,
}

impl Progress {
    /// Bars shown (on a terminal) or hidden.
    pub fn new(visible: bool) -> Self {
        Self { visible }
    }

    /// A bar of `len` messages labelled `label`.
    pub fn bar(self, label: &str, len: u64) -> ProgressBar {
        if !self.visible {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(len).with_prefix(label.to_owned());
        if let Ok(style) = ProgressStyle::with_template(
            "{prefix:<14} [{bar:30}] {human_pos}/{human_len} eta {eta}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar
    }
}

/// Advances `bar` after message `done` (1-based) every [`PROGRESS_STEP`].
pub fn tick(bar: &ProgressBar, done: u64) {
    if done % PROGRESS_STEP == 0 {
        bar.inc(PROGRESS_STEP);
    }
}

/// A count or rate with thousands separators: `1,234,567`.
pub fn thousands(value: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // display only
    indicatif::HumanCount(value.round().max(0.0) as u64).to_string()
}

/// The result table for people: `results` as rows of `table`, which the
/// caller gives with its own style.
pub(crate) fn table(results: &[Measurement], mut table: Table) -> Table {
    table.set_header([
        "workload",
        "peer",
        "what",
        "messages",
        "seconds",
        "msg/s",
        "MB/s",
        "p50 / p99 / p99.9 µs",
        "notes",
    ]);
    for m in results {
        #[allow(clippy::cast_precision_loss)] // display only
        let messages = m.messages as f64;
        if let Some(g) = &m.growth {
            #[allow(clippy::cast_precision_loss)] // display only
            let size = g.size as f64;
            table.add_row([
                m.workload.clone(),
                m.peer.clone(),
                m.name.clone(),
                format!("{} {}", thousands(size), g.axis),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                format!("{}; {}", g.cell(), m.notes),
            ]);
            continue;
        }
        table.add_row([
            m.workload.clone(),
            m.peer.clone(),
            m.name.clone(),
            thousands(messages),
            format!("{:.3}", m.seconds),
            thousands(m.msgs_per_sec),
            format!("{:.1}", m.mb_per_sec),
            m.latency.map_or_else(|| "-".to_owned(), |l| l.cell()),
            m.notes.clone(),
        ]);
    }
    for column in 3..8 {
        if let Some(c) = table.column_mut(column) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_print_with_thousands_separators() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1_234_567.0), "1,234,567");
        assert_eq!(thousands(100_000.0), "100,000");
    }

    #[test]
    fn percentiles_pick_the_nearest_rank() {
        let mut v: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let l = Latency::of(&mut v);
        assert!((l.p50_us - 500.0).abs() < 1e-9);
        assert!((l.p99_us - 990.0).abs() < 1e-9);
        assert!((l.p999_us - 999.0).abs() < 1e-9);
        assert_eq!(Latency::of(&mut []).p50_us, 0.0);
    }
}
