//! `durabus repair`: the explicit fix of a data directory's damaged
//! segments (docs/design.md "Repair").

use anyhow::Context as _;
use clap::Args;
use durabus::validate_stream_name;
use serde_json::json;

use crate::dump::data_dir;
use crate::output::{count, print_json};
use crate::progress::{self, Unit};
use crate::session::Global;

/// Arguments of `durabus repair`.
#[derive(Debug, Args)]
pub(crate) struct RepairArgs {
    /// The data directory of an embedded store (a `file:` URL works too)
    /// [default: the directory of --url].
    data_dir: Option<String>,

    /// Only this stream.
    #[arg(long, value_name = "STREAM")]
    stream: Option<String>,
}

fn range(lo: u64, hi: u64) -> String {
    if lo == hi {
        format!("message {lo}")
    } else {
        format!("messages {lo}..={hi} ({})", hi - lo + 1)
    }
}

/// Runs `durabus repair`.
pub(crate) fn run(global: &Global, args: RepairArgs) -> anyhow::Result<()> {
    let dir = data_dir(global, "repair", args.data_dir.as_deref())?;
    if let Some(s) = &args.stream {
        validate_stream_name(s).context("cannot repair")?;
    }
    if !dir.is_dir() {
        anyhow::bail!("no data directory at {}", dir.display());
    }
    // Bytes of segment files scanned: the slow part (every stream is read).
    let bar = progress::bar(0, Unit::Bytes, true);
    let done = if bar.is_hidden() {
        durabus::embedded::repair(&dir, args.stream.as_deref())
    } else {
        durabus::embedded::repair_with_progress(&dir, args.stream.as_deref(), &|p| {
            progress::show(&bar, p);
        })
    };
    bar.finish_and_clear();
    let done = done.with_context(|| format!("cannot repair {}", dir.display()))?;
    if global.json {
        let streams: Vec<_> = done
            .iter()
            .map(|r| {
                json!({
                    "stream": r.stream,
                    "lost": r.lost.iter().map(|(lo, hi)| json!({"first_seq": lo, "last_seq": hi})).collect::<Vec<_>>(),
                    "rewritten": r.rewritten.iter().map(|w| json!({
                        "segment": w.segment.display().to_string(),
                        "bytes_dropped": w.bytes_dropped,
                        "quarantined": w.quarantined.display().to_string(),
                    })).collect::<Vec<_>>(),
                    "missing": r.missing.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
                })
            })
            .collect();
        print_json(&json!({ "repaired": streams }))?;
        return Ok(());
    }
    if done.is_empty() {
        println!("nothing to repair in {}", dir.display());
        return Ok(());
    }
    for r in &done {
        let lost: u64 = r.lost.iter().map(|(lo, hi)| hi - lo + 1).sum();
        println!("stream {}: {} lost", r.stream, count(lost, "sequence"));
        for (lo, hi) in &r.lost {
            println!("  lost {}", range(*lo, *hi));
        }
        for w in &r.rewritten {
            println!(
                "  rewrote {} without {} (the damaged copy is {})",
                w.segment.display(),
                count(w.bytes_dropped, "byte"),
                w.quarantined.display()
            );
        }
        for p in &r.missing {
            println!("  dropped the missing segment {}", p.display());
        }
    }
    Ok(())
}
