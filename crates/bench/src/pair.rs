//! `durabus-bench bench --peer durabus,async-nats`: the NATS backend and raw
//! async-nats measured in one process on one server, interleaved.
//!
//! On a shared machine the load changes by more than 5% from one second to
//! the next, so two runs one after the other cannot show a 5% difference.
//! Here the two peers take turns within each workload: W1 and W2 in slices
//! of `--slice` messages (W2 in whole batches), the order swapped every turn
//! (durabus first, then raw first, ...); in W4 each peer replays its stream
//! [`W4_TURNS`] times, then consumes it with a durable consumer as often,
//! taking turns the same way. Each peer publishes into a
//! stream of its own, so both replay the same count.

use std::time::Duration;

use anyhow::bail;
use durabus::Bus;
use indicatif::ProgressBar;

use durabus_workloads::{
    clean_up, consume_all, open_with_stream, publish_batched, publish_each, replay_all,
    Measurement, Plan, Workload,
};

use crate::raw;

/// Replays of each peer's stream in W4.
pub(crate) const W4_TURNS: u64 = 4;

/// Row label of durabus on NATS.
pub(crate) const DURABUS: &str = "durabus/nats";
/// Row label of raw async-nats.
pub(crate) const RAW: &str = "async-nats/nats";

/// Both peers, each with its stream.
struct Pair<'a> {
    plan: &'a Plan,
    bus: &'a Bus,
    bus_stream: &'a str,
    raw: &'a raw::Raw,
}

/// The subject of a workload for durabus (`bench.<tag>.<w>`) and for raw
/// async-nats (`benchraw.<tag>.<w>`).
fn subjects(plan: &Plan, workload: &str) -> (String, String) {
    (
        format!("bench.{}.{workload}", plan.tag),
        format!("benchraw.{}.{workload}", plan.tag),
    )
}

impl Pair<'_> {
    /// `n` messages in turns of `step`, each turn once per peer, the order
    /// swapped every turn; returns the total time of durabus and of raw.
    async fn alternate(
        &self,
        workload: &str,
        n: u64,
        step: u64,
        batched: bool,
        bar: &ProgressBar,
    ) -> anyhow::Result<(Duration, Duration)> {
        let plan = self.plan;
        let (ours, theirs) = subjects(plan, workload);
        let hidden = ProgressBar::hidden();
        let (mut durabus, mut raw) = (Duration::ZERO, Duration::ZERO);
        let (mut done, mut turn) = (0u64, 0u64);
        while done < n {
            let this = step.min(n - done);
            for durabus_now in [turn % 2 == 0, turn % 2 == 1] {
                if durabus_now {
                    durabus += if batched {
                        publish_batched(self.bus, &ours, &plan.payload, this, plan.batch, &hidden)
                            .await?
                    } else {
                        publish_each(self.bus, &ours, &plan.payload, this, &hidden).await?
                    };
                } else {
                    let js = &self.raw.js;
                    raw += if batched {
                        raw::publish_batched(js, &theirs, &plan.payload, this, plan.batch, &hidden)
                            .await?
                    } else {
                        raw::publish_each(js, &theirs, &plan.payload, this, &hidden).await?
                    };
                }
            }
            done += this;
            turn += 1;
            bar.inc(2 * this);
        }
        bar.finish_and_clear();
        Ok((durabus, raw))
    }

    /// W1, W2 and W4 for both peers: rows durabus, raw per workload.
    async fn measure(&self, slice: u64) -> anyhow::Result<Vec<Measurement>> {
        let plan = self.plan;
        let size = plan.payload.len();
        let mut results = Vec::new();
        let mut stored = 0u64;
        let mut push =
            |workload: &str, name: &str, n: u64, times: (Duration, Duration), note: String| {
                let (d, r) = times;
                let mut m = Measurement::new(workload, name, n, size, d).note(note.clone());
                m.peer = DURABUS.to_owned();
                results.push(m);
                let mut m = Measurement::new(workload, name, n, size, r).note(note);
                m.peer = RAW.to_owned();
                results.push(m);
            };
        if plan.workloads.contains(&Workload::W1) {
            let bar = plan.progress.bar("W1 pair", 2 * plan.msgs);
            let times = self.alternate("w1", plan.msgs, slice, false, &bar).await?;
            stored += plan.msgs;
            let note = format!("1 publisher; interleaved, turns of {slice}");
            push("W1", "publish, await each ack", plan.msgs, times, note);
        }
        let step = slice.div_ceil(plan.batch).max(1) * plan.batch;
        if plan.workloads.contains(&Workload::W2) {
            let bar = plan.progress.bar("W2 pair", 2 * plan.msgs);
            let times = self.alternate("w2", plan.msgs, step, true, &bar).await?;
            stored += plan.msgs;
            let note = format!("batches of {}; interleaved, turns of {step}", plan.batch);
            push("W2", "publish_batch", plan.msgs, times, note);
        }
        if plan.workloads.contains(&Workload::W4) {
            if stored == 0 {
                let bar = plan.progress.bar("W4 fill", 2 * plan.msgs);
                self.alternate("w4", plan.msgs, step, true, &bar).await?;
                stored = plan.msgs;
            }
            let (mut durabus, mut raw) = (Duration::ZERO, Duration::ZERO);
            let bar = plan.progress.bar("W4 replays", 2 * W4_TURNS * stored);
            let hidden = ProgressBar::hidden();
            for turn in 0..W4_TURNS {
                for durabus_now in [turn % 2 == 0, turn % 2 == 1] {
                    let (count, took) = if durabus_now {
                        replay_all(self.bus, self.bus_stream, &hidden).await?
                    } else {
                        raw::replay_all(&self.raw.js, &self.raw.stream, &hidden).await?
                    };
                    if count != stored {
                        bail!("W4: a replay returned {count} messages, but {stored} were stored");
                    }
                    *if durabus_now { &mut durabus } else { &mut raw } += took;
                    bar.inc(stored);
                }
            }
            bar.finish_and_clear();
            let note =
                format!("ordered consumer, to the end; {W4_TURNS} replays each, interleaved");
            push(
                "W4",
                "replay from seq 1",
                W4_TURNS * stored,
                (durabus, raw),
                note,
            );
            let (mut durabus, mut raw) = (Duration::ZERO, Duration::ZERO);
            let bar = plan.progress.bar("W4 consumes", 2 * W4_TURNS * stored);
            for turn in 0..W4_TURNS {
                for durabus_now in [turn % 2 == 0, turn % 2 == 1] {
                    let batch = plan.batch;
                    if durabus_now {
                        durabus +=
                            consume_all(self.bus, self.bus_stream, stored, batch, &hidden).await?;
                    } else {
                        let (js, s) = (&self.raw.js, &self.raw.stream);
                        raw += raw::consume_all(js, s, stored, batch, &hidden).await?;
                    }
                    bar.inc(stored);
                }
            }
            bar.finish_and_clear();
            let note = format!(
                "durable pull consumer, fetch {}, ack each; {W4_TURNS} consumes each, interleaved",
                plan.batch
            );
            push(
                "W4",
                "consume, explicit ack",
                W4_TURNS * stored,
                (durabus, raw),
                note,
            );
        }
        Ok(results)
    }
}

/// W1, W2 and W4 of `plan` for durabus and raw async-nats on the server of
/// `url`, interleaved; deletes both streams afterwards.
pub(crate) async fn run(plan: &Plan, url: &str, slice: u64) -> anyhow::Result<Vec<Measurement>> {
    let bus_stream = format!("BENCH_{}", plan.tag);
    let bus = open_with_stream(url, &bus_stream, &format!("bench.{}.>", plan.tag)).await?;
    let raw = match raw::Raw::open(
        url,
        &format!("BENCH_RAW_{}", plan.tag),
        &format!("benchraw.{}.>", plan.tag),
    )
    .await
    {
        Ok(raw) => raw,
        Err(e) => return clean_up(&bus, url, &bus_stream, Err(e)).await,
    };
    let pair = Pair {
        plan,
        bus: &bus,
        bus_stream: &bus_stream,
        raw: &raw,
    };
    let result = pair.measure(slice).await;
    let result = raw.finish(result).await;
    clean_up(&bus, url, &bus_stream, result).await
}
