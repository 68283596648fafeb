//! The workloads W1-W8 of `docs/performance.md`, measured on any durabus
//! backend, and the run that repeats them and reports the medians.
//!
//! The workloads are functions over [`durabus::Bus`], so every backend (the
//! embedded log, NATS, the hub later) is measured by the same code. W3 is
//! reported as a ratio of the disk's raw 4 KiB append + fdatasync rate,
//! measured in the same run on a file in the same directory; it is about
//! the embedded engine's durability modes and does not apply to `nats://`.
//!
//! Two binaries use this crate: the product CLI (`durabus bench`: durabus
//! alone) and the benchmark harness `durabus-bench` (crates/bench), which
//! adds the peers (raw async-nats, Redis Streams), the comparison report and
//! its chart. This crate links no peer.
//!
//! Modules import one way: [`args`] (the command line) and [`measure`] (the
//! rows) know no other module; [`bus`] (W1-W4) and [`system`] (W5-W7) build
//! on them, and [`growth`] (W8) on [`bus`] and [`system`]; [`run`] drives
//! them all.

pub mod args;
pub mod bus;
pub mod growth;
pub mod measure;
pub mod run;
pub mod system;

pub use args::{BenchArgs, W8Plan, Workload};
pub use bus::{
    clean_up, consume_all, open_with_stream, publish_batched, publish_each, replay_all, Plan,
    W3_GROUP_FACTOR,
};
pub use growth::{probe, ProbeArgs};
pub use measure::{tick, Growth, Latency, Measurement, Progress, RssSample};
pub use run::{compare, Bench, Comparison, Where};
