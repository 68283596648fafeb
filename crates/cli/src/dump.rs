//! `durabus dump`: every record of a data directory as JSON lines.
//!
//! Reads the files directly, without the lock and without changing
//! anything, so it works beside a running process and on a damaged store.

use std::io::{self, BufWriter, IsTerminal as _, Write};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use base64::Engine as _;
use clap::Args;
use durabus::embedded::DumpRecord;
use durabus::{validate_stream_name, BackendUrl};
use serde::Serialize;

use crate::output::{count, print_json, print_text, rfc3339_nanos, time_from_unix_nanos};
use crate::progress::{self, Unit};
use crate::session::Global;

/// Arguments of `durabus dump`.
#[derive(Debug, Args)]
pub(crate) struct DumpArgs {
    /// The data directory of an embedded store (a `file:` URL works too; not
    /// a nats:// server) [default: the directory of --url].
    data_dir: Option<String>,

    /// Only this stream.
    #[arg(long, value_name = "STREAM")]
    stream: Option<String>,
}

/// One output line. Field order is the order people read a record in.
#[derive(Serialize)]
struct Line<'a> {
    stream: &'a str,
    segment: &'a str,
    offset: u64,
    kind: &'a str,
    seq: u64,
    time: String,
    time_ns: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    subject: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    headers: Option<&'a [(String, String)]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    size: Option<usize>,
    /// The payload when it is UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload: Option<&'a str>,
    /// The payload, base64, when it is not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    payload_base64: Option<String>,
}

impl<'a> Line<'a> {
    fn new(record: &'a DumpRecord) -> Self {
        let is_msg = record.kind == "msg";
        let text = std::str::from_utf8(&record.payload).ok();
        Line {
            stream: &record.stream,
            segment: &record.segment,
            offset: record.offset,
            kind: record.kind,
            seq: record.seq,
            time: rfc3339_nanos(time_from_unix_nanos(record.time_ns)),
            time_ns: record.time_ns,
            subject: record.subject.as_deref(),
            headers: is_msg.then_some(record.headers.as_slice()),
            size: is_msg.then_some(record.payload.len()),
            payload: if is_msg { text } else { None },
            payload_base64: (is_msg && text.is_none())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&record.payload)),
        }
    }
}

/// Arguments of `durabus verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The data directory of an embedded store (a `file:` URL works too; not
    /// a nats:// server) [default: the directory of --url].
    data_dir: Option<String>,

    /// Only this stream.
    #[arg(long, value_name = "STREAM")]
    stream: Option<String>,
}

/// What reading one stream's records found.
#[derive(Debug, Serialize)]
struct Verdict {
    stream: String,
    ok: bool,
    records: u64,
    messages: u64,
    segments: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    torn_tail: Option<durabus::embedded::TornTail>,
    /// The store is open in another process, which is writing these bytes
    /// after the last complete record: the end of what can be read now,
    /// not damage.
    #[serde(skip_serializing_if = "Option::is_none")]
    in_flight_tail: Option<durabus::embedded::TornTail>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// Problems in the files beside the segments.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    files: Vec<FileVerdict>,
}

/// A problem in an index, the checkpoint or a consumer-state file.
#[derive(Debug, Serialize)]
struct FileVerdict {
    path: String,
    problem: String,
    /// The store refuses to open over it.
    fatal: bool,
}

/// The streams of a data directory, from its `streams/` folder (docs/design.md).
fn stream_names(dir: &Path) -> anyhow::Result<Vec<String>> {
    let streams = dir.join("streams");
    if !streams.is_dir() {
        return Ok(Vec::new());
    }
    let mut names = Vec::new();
    for entry in
        std::fs::read_dir(&streams).with_context(|| format!("cannot list {}", streams.display()))?
    {
        let entry = entry.with_context(|| format!("cannot list {}", streams.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Other entries are reported by `check_store` (open ignores them).
        if entry.path().is_dir() && validate_stream_name(&name).is_ok() {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Runs `durabus verify`: reads every record of every stream and checks it.
pub(crate) fn run_verify(global: &Global, args: VerifyArgs) -> anyhow::Result<()> {
    let dir = data_dir(global, "verify", args.data_dir.as_deref())?;
    if !dir.is_dir() {
        bail!(
            "no data directory at {}; give the directory a `file:` URL points to, e.g. `durabus verify ./data`",
            dir.display()
        );
    }
    let names = match args.stream {
        Some(stream) => {
            validate_stream_name(&stream).context("cannot verify")?;
            vec![stream]
        }
        None => stream_names(&dir)?,
    };
    // The files outside the streams: the format marker, stray entries.
    let store_files: Vec<FileVerdict> = durabus::embedded::check_store(&dir)
        .with_context(|| format!("cannot check {}", dir.display()))?
        .into_iter()
        .map(|p| FileVerdict {
            path: p.path.display().to_string(),
            problem: p.problem,
            fatal: p.fatal,
        })
        .collect();
    let store_ok = !store_files.iter().any(|f| f.fatal);
    if !store_files.is_empty() {
        if global.json {
            print_json(&serde_json::json!({
                "store": dir.display().to_string(),
                "ok": store_ok,
                "files": &store_files,
            }))?;
        } else {
            let mut text = String::new();
            for f in &store_files {
                let label = if f.fatal { "CORRUPT" } else { "warning" };
                text.push_str(&format!("{label}  {}: {}\n", f.path, f.problem));
            }
            print_text(&text)?;
        }
    }
    // Bytes of segment files read, over every stream verified.
    let bar = progress::bar(0, Unit::Bytes, true);
    if !bar.is_hidden() {
        let total = names
            .iter()
            .map(|n| durabus::embedded::segment_bytes(&dir, Some(n)).unwrap_or(0))
            .sum();
        bar.set_length(total);
    }
    // Bytes of the streams verified before this one.
    let mut before = 0u64;
    let mut verdicts = Vec::with_capacity(names.len());
    for name in names {
        let (mut records, mut messages) = (0u64, 0u64);
        let mut segments = std::collections::BTreeSet::new();
        let mut count_record = |record: DumpRecord| {
            records += 1;
            if record.kind == "msg" {
                messages += 1;
            }
            if !segments.contains(&record.segment) {
                segments.insert(record.segment);
            }
        };
        let result = if bar.is_hidden() {
            durabus::embedded::dump(&dir, Some(&name), &mut count_record)
        } else {
            bar.set_message(name.clone());
            let stream_total = std::cell::Cell::new(0);
            let result =
                durabus::embedded::dump_with_progress(&dir, Some(&name), &mut count_record, &|p| {
                    stream_total.set(p.total);
                    bar.set_position(before + p.done);
                });
            before += stream_total.get();
            result
        };
        let (result, tail) = match result {
            Ok(mut torn) => (Ok(()), torn.pop()),
            Err(e) => (Err(e), None),
        };
        let (in_flight_tail, torn_tail) = match tail {
            Some(t) if t.in_flight => (Some(t), None),
            t => (None, t),
        };
        let files: Vec<FileVerdict> = durabus::embedded::check_files(&dir, &name)
            .with_context(|| format!("cannot check the files of stream {name}"))?
            .into_iter()
            .map(|p| FileVerdict {
                path: p.path.display().to_string(),
                problem: p.problem,
                fatal: p.fatal,
            })
            .collect();
        verdicts.push(Verdict {
            ok: result.is_ok() && !files.iter().any(|f| f.fatal),
            files,
            stream: name,
            torn_tail,
            in_flight_tail,
            records,
            messages,
            segments: segments.len(),
            // The engine's advice to run verify is moot here.
            error: result.err().map(|e| {
                let text = e.to_string();
                match text.split_once("; nothing was cut or repaired") {
                    Some((reason, _)) => reason.to_owned(),
                    None => text,
                }
            }),
        });
    }
    bar.finish_and_clear();
    if global.json {
        for verdict in &verdicts {
            print_json(&serde_json::to_value(verdict).context("cannot encode the result")?)?;
        }
    } else if verdicts.is_empty() && store_files.is_empty() {
        print_text(&format!("{} holds no streams", dir.display()))?;
    } else {
        let width = verdicts.iter().map(|v| v.stream.len()).max().unwrap_or(0);
        let mut text = String::new();
        for v in &verdicts {
            let status = match &v.error {
                None => {
                    let torn = v.torn_tail.as_ref().map_or(String::new(), |t| {
                        format!(
                            "; torn tail of {} at offset {} of {} (the next open truncates it)",
                            count(t.bytes, "byte"),
                            t.offset,
                            t.segment
                        )
                    });
                    let in_flight = v.in_flight_tail.as_ref().map_or(String::new(), |t| {
                        format!(
                            "; in-flight tail: {} after the last complete record (offset {} of {}), \
                             being written by the process that has the store open",
                            count(t.bytes, "byte"),
                            t.offset,
                            t.segment
                        )
                    });
                    // Records fine, but a consumer-state file is not.
                    let word = if v.ok { "ok     " } else { "CORRUPT" };
                    format!(
                        "{word}  {} ({}) in {}{torn}{in_flight}",
                        count(v.records, "record"),
                        count(v.messages, "message"),
                        count(v.segments as u64, "segment")
                    )
                }
                Some(error) => format!("CORRUPT  {error}"),
            };
            text.push_str(&format!("{:<width$}  {status}\n", v.stream));
            for f in &v.files {
                let label = if f.fatal { "CORRUPT" } else { "warning" };
                text.push_str(&format!(
                    "{:<width$}  {label}  {}: {}\n",
                    "", f.path, f.problem
                ));
            }
        }
        print_text(&text)?;
    }
    let bad: Vec<&str> = verdicts
        .iter()
        .filter(|v| !v.ok)
        .map(|v| v.stream.as_str())
        .collect();
    if !store_ok {
        bail!(
            "verification failed: {} cannot be opened (see above); nothing was changed (keep a copy of it before any repair)",
            dir.display()
        );
    }
    if !bad.is_empty() {
        bail!(
            "verification failed for {}: {}; nothing was changed. `durabus repair {}` rewrites \
             damaged segments and records what they lost as gaps (it keeps a copy of each in \
             quarantine/)",
            count(bad.len() as u64, "stream"),
            bad.join(", "),
            dir.display()
        );
    }
    Ok(())
}

/// The data directory `verb` (`dump` or `verify`) reads: the argument (a
/// path or a `file:` URL), else the `--url` / `DURABUS_URL` directory. Any
/// other URL is refused with what to use instead.
pub(crate) fn data_dir(global: &Global, verb: &str, arg: Option<&str>) -> anyhow::Result<PathBuf> {
    let (url, from) = match arg {
        Some(dir) if looks_like_url(dir) => (dir.to_owned(), "the argument"),
        Some(dir) => return Ok(PathBuf::from(dir)),
        None if global.url.is_some() => (global.url().to_owned(), "--url (or DURABUS_URL)"),
        None => (global.url().to_owned(), "the default URL"),
    };
    let shown = durabus::redact(&url);
    let parsed = durabus::parse_url(&url).with_context(|| format!("cannot {verb} {shown}"))?;
    let (what, instead) = match parsed {
        BackendUrl::File { path, .. } => return Ok(path),
        BackendUrl::Memory { .. } => (
            "an in-memory store, which keeps nothing on disk",
            String::new(),
        ),
        BackendUrl::Nats { .. } => (
            "a NATS server (its files belong to nats-server)",
            format!("read its streams with `durabus --url {shown} replay STREAM`, or "),
        ),
        _ => ("no embedded store", String::new()),
    };
    bail!(
        "{verb} reads the data directory of an embedded file: store, but {from} names {shown}, \
         {what}; {instead}give a directory: `durabus {verb} ./data`"
    )
}

/// Whether a positional `dump`/`verify` argument is a URL rather than a
/// path: `file:`, `memory:` or anything with `://`.
fn looks_like_url(arg: &str) -> bool {
    arg.contains("://")
        || arg.starts_with("file:")
        || matches!(
            arg.split_once(':'),
            Some(("memory" | "mem" | "nats" | "tls", _))
        )
}

/// Runs `durabus dump`.
pub(crate) fn run(global: &Global, args: DumpArgs) -> anyhow::Result<()> {
    let dir = data_dir(global, "dump", args.data_dir.as_deref())?;
    if let Some(stream) = &args.stream {
        validate_stream_name(stream).context("cannot dump")?;
    }
    if !dir.is_dir() {
        bail!(
            "no data directory at {}; give the directory a `file:` URL points to, e.g. `durabus dump ./data`",
            dir.display()
        );
    }
    // Records on a terminal show their own progress; a bar would be drawn
    // through them.
    let bar = progress::bar(0, Unit::Bytes, !io::stdout().is_terminal());
    let mut out = BufWriter::new(io::stdout().lock());
    let mut write_error: Option<io::Error> = None;
    let mut records = 0u64;
    let mut write = |record: DumpRecord| {
        if write_error.is_some() {
            return;
        }
        records += 1;
        let written = serde_json::to_writer(&mut out, &Line::new(&record))
            .map_err(io::Error::from)
            .and_then(|()| out.write_all(b"\n"));
        if let Err(e) = written {
            if e.kind() == io::ErrorKind::BrokenPipe {
                // The reader has gone (`dump | head`): nothing more to do, and
                // dump changes nothing, so stopping here is safe.
                bar.finish_and_clear();
                std::process::exit(0);
            }
            write_error = Some(e);
        }
    };
    let dumped = if bar.is_hidden() {
        durabus::embedded::dump(&dir, args.stream.as_deref(), &mut write)
    } else {
        durabus::embedded::dump_with_progress(&dir, args.stream.as_deref(), &mut write, &|p| {
            progress::show(&bar, p);
        })
    };
    bar.finish_and_clear();
    let flushed = out.flush();
    if let Some(e) = write_error {
        return Err(e).context("cannot write to stdout");
    }
    flushed.context("cannot write to stdout")?;
    let torn = dumped
        .with_context(|| format!("dump of {} stopped after {records} records", dir.display()))?;
    for t in torn {
        if t.in_flight {
            eprintln!(
                "stream {}: in-flight tail: {} bytes after the last complete record (offset {} of segment {}), being written by the process that has the store open",
                t.stream, t.bytes, t.offset, t.segment
            );
        } else {
            eprintln!(
                "stream {}: torn tail of {} bytes at offset {} of segment {} (the next open truncates it)",
                t.stream, t.bytes, t.offset, t.segment
            );
        }
    }
    if records == 0 {
        let scope = args
            .stream
            .map(|s| format!("stream {s} in "))
            .unwrap_or_default();
        eprintln!("{scope}{} holds no records", dir.display());
    }
    Ok(())
}
