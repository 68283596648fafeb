//! The command line every bench binary shares: counts, sizes, the
//! workloads to run and where to write the results.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// A workload id, as used in `docs/performance.md` and issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Workload {
    /// Publish, await each ack, 1 publisher.
    W1,
    /// Publish in batches, 1 publisher.
    W2,
    /// Durability `Always`: 1 publisher and 64 concurrent publishers.
    W3,
    /// Replay the stream from sequence 1 to its end, and consume it with
    /// explicit acks.
    W4,
    /// Latency publish -> subscriber, one message in flight (p50/p99/p99.9).
    W5,
    /// Resident memory while a subscriber and a durable consumer stall
    /// (embedded backends).
    W6,
    /// Time to open a stream of --open-size bytes after a clean close
    /// (embedded file: only; not in the default set, as it writes that much).
    W7,
    /// Costs that must not grow with the store: memory per distinct
    /// subject, open and list time with many streams and consumers
    /// (embedded file: only; not in the default set, as it fills stores of
    /// millions of subjects and thousands of streams).
    W8,
}

/// The arguments of a bench run that do not name a peer.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// Messages published in W1 and again in W2; W4 replays both.
    #[arg(long, default_value_t = 500_000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub msgs: u64,

    /// Messages in W3 with one publisher; the 64 publishers send 50 times as
    /// many [default: the smaller of --msgs and 2000].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub sync_msgs: Option<u64>,

    /// Messages W6 publishes while its consumers stall (docs/performance.md's
    /// bar is for 10M) [default: --msgs].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub stall_msgs: Option<u64>,

    /// Payload size of W6's messages, so a long W6 (`--stall-msgs
    /// 100000000`) fits the disk: 100M records of a 16-byte payload take
    /// about 7 GB [default: --size].
    #[arg(long, value_name = "BYTES")]
    pub stall_size: Option<usize>,

    /// Payload size in bytes.
    #[arg(long, default_value_t = 128, value_name = "BYTES")]
    pub size: usize,

    /// Messages per publish_batch call in W2 (durabus-bench's Redis peer:
    /// XADDs per pipeline in W2, and the XREADGROUP COUNT of W4 consume).
    #[arg(long, default_value_t = 1000, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub batch: u64,

    /// Workloads to run, comma-separated.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        ignore_case = true,
        default_value = "w1,w2,w3,w4,w5,w6"
    )]
    pub workloads: Vec<Workload>,

    /// Bytes W7 stores before it reopens the stream.
    #[arg(long, default_value = "1GiB", value_name = "BYTES", value_parser = size)]
    pub open_size: u64,

    /// W8: distinct subjects at which to measure memory and open time,
    /// comma-separated, ascending (one stream fills up to the last) [10M:
    /// about 1 GB of disk].
    #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000",
          value_name = "N,...", value_parser = clap::value_parser!(u64).range(1..))]
    pub w8_subjects: Vec<u64>,

    /// W8: stream counts at which to measure open and list time,
    /// comma-separated, ascending (one message each; 1 is the baseline the
    /// targets compare with).
    #[arg(long, value_delimiter = ',', default_value = "1,100,1000,10000",
          value_name = "N,...", value_parser = clap::value_parser!(u64).range(1..))]
    pub w8_streams: Vec<u64>,

    /// W8: durable consumer counts at which to measure open time,
    /// comma-separated, ascending, spread evenly over --w8-consumer-streams
    /// streams.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000,100000",
          value_name = "N,...", value_parser = clap::value_parser!(u64).range(1..))]
    pub w8_consumers: Vec<u64>,

    /// W8: the streams the consumers of --w8-consumers are spread over.
    #[arg(long, default_value_t = 100, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub w8_consumer_streams: u64,

    /// Repeat the workloads this many times and report each one's median run.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    pub runs: u64,

    /// Also write the results as JSON to this file.
    #[arg(long, value_name = "FILE")]
    pub json_out: Option<PathBuf>,
}

/// A byte count: `1048576`, `512KiB`, `64MiB`, `1GB`, `10k`: the grammar of
/// every size on the `durabus` and `durabus-bench` command lines.
///
/// `KB`/`MB`/`GB`/`TB` are decimal (1000); `KiB`/`MiB`/... and the single
/// letters `K`/`M`/`G`/`T` are binary (1024), as `du` and the `nats` CLI.
///
/// # Errors
///
/// The text says what was expected, with examples.
pub fn size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let bad =
        || format!("{s:?} is not a size; write a byte count such as 1048576, 512KiB, 64MiB or 1GB");
    let n: u64 = number.parse().map_err(|_| bad())?;
    let multiplier: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1_000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        _ => return Err(bad()),
    };
    n.checked_mul(multiplier)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// The sizes W8 measures at, and the executables it runs.
#[derive(Debug, Clone, Default)]
pub struct W8Plan {
    /// Distinct subjects, ascending.
    pub subjects: Vec<u64>,
    /// Stream counts, ascending.
    pub streams: Vec<u64>,
    /// Durable consumer counts, ascending.
    pub consumers: Vec<u64>,
    /// The streams the consumers are spread over.
    pub consumer_streams: u64,
    /// An executable with the hidden `w8-probe` subcommand (`durabus` or
    /// `durabus-bench`): this one, unless told.
    pub probe: Option<PathBuf>,
    /// The `durabus` binary whose `stream ls` is timed end to end (none:
    /// no such row).
    pub cli: Option<PathBuf>,
}

impl BenchArgs {
    /// W8's sizes, each list sorted and without repeats; no executables
    /// named (the caller sets them).
    pub fn w8_plan(&self) -> W8Plan {
        let sorted = |v: &[u64]| {
            let mut v = v.to_vec();
            v.sort_unstable();
            v.dedup();
            v
        };
        W8Plan {
            subjects: sorted(&self.w8_subjects),
            streams: sorted(&self.w8_streams),
            consumers: sorted(&self.w8_consumers),
            consumer_streams: self.w8_consumer_streams,
            probe: None,
            cli: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_and_decimal_units() {
        assert_eq!(size("2MiB"), Ok(2 << 20));
        assert_eq!(size("1GiB"), Ok(1 << 30));
        assert_eq!(size("3kb"), Ok(3000));
        assert_eq!(size("512"), Ok(512));
        assert!(size("1 parsec").is_err());
        assert!(size("99999999999T").is_err());
    }
}
