//! `durabus stream ...`: add, ls, info, rm, purge, get, rmm.

use std::time::Duration;

use anyhow::{bail, Context as _};
use clap::{ArgGroup, Args, Subcommand, ValueEnum};
use durabus::{
    subject, validate_stream_name, Bus, DiscardPolicy, PurgeRequest, RetentionPolicy, StorageType,
    StreamConfig, StreamInfo, DEFAULT_DUPLICATE_WINDOW,
};
use serde::Serialize;
use serde_json::{json, Value};

use crate::confirm::confirm;
use crate::output::{
    age_json, bytes_human, duration_human, duration_nanos, limit_json, print_json, print_text,
    rfc3339, rfc3339_nanos, rfc3339_or_dash, stored_human, stored_json, JsonLimit, Listing,
};
use crate::parse;
use crate::session::{finish, open_bus, Access, Global};

/// The `stream` verbs.
#[derive(Debug, Subcommand)]
pub(crate) enum StreamCommand {
    /// Create a stream. An existing stream with the same configuration is left
    /// as it is; one with a different configuration is an error.
    #[command(alias = "create")]
    Add(AddArgs),
    /// Change a stream's configuration: only the options given change.
    #[command(alias = "update")]
    Edit(EditArgs),
    /// List the streams.
    #[command(alias = "list")]
    Ls,
    /// Show a stream's configuration and state.
    Info {
        /// The stream.
        name: String,
    },
    /// Delete a stream and every message in it.
    #[command(alias = "delete")]
    Rm {
        /// The stream.
        name: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Remove messages: all, only some subjects, all but the newest N, or
    /// those below a sequence.
    Purge(PurgeArgs),
    /// Print one stored message: by sequence, or the newest on a subject.
    Get(GetArgs),
    /// Delete one message by sequence.
    Rmm {
        /// The stream.
        name: String,
        /// The message's sequence.
        seq: u64,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
}

/// `--retention` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Retention {
    /// Keep messages until a limit removes the oldest.
    Limits,
    /// Keep messages while some consumer still has to acknowledge them.
    Interest,
    /// Remove a message once one consumer acknowledges it.
    #[value(name = "work_queue", alias = "workqueue", alias = "work-queue")]
    WorkQueue,
}

impl From<Retention> for RetentionPolicy {
    fn from(r: Retention) -> Self {
        match r {
            Retention::Limits => RetentionPolicy::Limits,
            Retention::Interest => RetentionPolicy::Interest,
            Retention::WorkQueue => RetentionPolicy::WorkQueue,
        }
    }
}

/// `--discard` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Discard {
    /// Remove the oldest messages to make room.
    Old,
    /// Reject new messages while the stream is full.
    New,
}

impl From<Discard> for DiscardPolicy {
    fn from(d: Discard) -> Self {
        match d {
            Discard::Old => DiscardPolicy::Old,
            Discard::New => DiscardPolicy::New,
        }
    }
}

/// `--storage` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Storage {
    /// On disk.
    File,
    /// In memory.
    Memory,
}

impl From<Storage> for StorageType {
    fn from(s: Storage) -> Self {
        match s {
            Storage::File => StorageType::File,
            Storage::Memory => StorageType::Memory,
        }
    }
}

/// Arguments of `durabus stream add`.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// Stream name: no whitespace and none of . * > / \ (e.g. ORDERS).
    name: String,

    /// Subjects the stream captures, wildcards allowed; comma-separated or
    /// repeated [default: the stream's name].
    #[arg(long, value_name = "SUBJECTS", value_delimiter = ',')]
    subjects: Vec<String>,

    /// Free-text description.
    #[arg(long)]
    description: Option<String>,

    /// Remove messages older than this (e.g. 1h, 7d) [default: unlimited].
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    max_age: Option<Duration>,

    /// Keep at most this many bytes (e.g. 1GiB) [default: unlimited].
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    max_bytes: Option<u64>,

    /// Keep at most this many messages [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_msgs: Option<u64>,

    /// Keep at most this many messages per subject [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_msgs_per_subject: Option<u64>,

    /// Reject messages larger than this (headers + payload, e.g. 1MiB) [default: unlimited].
    #[arg(long, value_name = "SIZE", value_parser = parse::size)]
    max_msg_size: Option<u64>,

    /// What a full stream does.
    #[arg(long, value_enum, default_value = "old")]
    discard: Discard,

    /// With --discard new and --max-msgs-per-subject: reject a message whose
    /// subject is full instead of evicting that subject's oldest.
    #[arg(long)]
    discard_new_per_subject: bool,

    /// Window in which a repeated message id is a duplicate.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration, default_value = "2m")]
    dupe_window: Duration,

    /// When messages are removed.
    #[arg(long, value_enum, default_value = "limits")]
    retention: Retention,

    /// Where messages are kept.
    #[arg(long, value_enum, default_value = "file")]
    storage: Storage,

    /// Copies the servers of a NATS cluster keep (1 to 5; JetStream
    /// elects a leader among them). An embedded store keeps one copy and
    /// refuses more.
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u64).range(1..=5))]
    replicas: u64,

    /// Honour Nats-Rollup headers.
    #[arg(long)]
    allow_rollup: bool,

    /// Refuse deleting single messages.
    #[arg(long)]
    deny_delete: bool,

    /// Refuse purges.
    #[arg(long)]
    deny_purge: bool,
}

impl AddArgs {
    /// The stream configuration these options describe, validated.
    fn config(&self) -> anyhow::Result<StreamConfig> {
        let mut config = StreamConfig::new(&self.name)
            .subjects(self.subjects.iter().map(|s| s.trim().to_owned()))
            .retention(self.retention.into())
            .discard(self.discard.into())
            .discard_new_per_subject(self.discard_new_per_subject)
            .duplicate_window(self.dupe_window)
            .storage(self.storage.into())
            .replicas(usize::try_from(self.replicas).unwrap_or(1))
            .allow_rollup(self.allow_rollup)
            .deny_delete(self.deny_delete)
            .deny_purge(self.deny_purge);
        config.description.clone_from(&self.description);
        config.max_age = self.max_age;
        config.max_bytes = self.max_bytes;
        config.max_msgs = self.max_msgs;
        config.max_msgs_per_subject = self.max_msgs_per_subject;
        if let Some(size) = self.max_msg_size {
            let size = u32::try_from(size).map_err(|_| {
                anyhow::anyhow!("--max-msg-size {size} is larger than the limit of 4 GiB")
            })?;
            config.max_msg_size = Some(size);
        }
        if let Some(age) = self.max_age {
            // A window longer than the age would outlive the messages it guards.
            if self.dupe_window == DEFAULT_DUPLICATE_WINDOW && age < self.dupe_window {
                config.duplicate_window = age;
            }
        }
        config
            .validate()
            .with_context(|| format!("cannot add stream {}", self.name))?;
        Ok(config)
    }
}

/// Arguments of `durabus stream edit`: each option given replaces the
/// current value; limits take `unlimited` to clear them.
#[derive(Debug, Args)]
pub(crate) struct EditArgs {
    /// The stream.
    name: String,

    /// Replace the captured subjects (comma-separated or repeated).
    #[arg(long, value_name = "SUBJECTS", value_delimiter = ',')]
    subjects: Vec<String>,

    /// Replace the description.
    #[arg(long)]
    description: Option<String>,

    /// Maximum age (e.g. 1h, 7d) or `unlimited`.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration_limit)]
    max_age: Option<parse::Limit<Duration>>,

    /// Maximum bytes (e.g. 1GiB) or `unlimited`.
    #[arg(long, value_name = "SIZE", value_parser = parse::size_limit)]
    max_bytes: Option<parse::Limit<u64>>,

    /// Maximum messages or `unlimited`.
    #[arg(long, value_name = "N", value_parser = parse::count_limit)]
    max_msgs: Option<parse::Limit<u64>>,

    /// Maximum messages per subject or `unlimited`.
    #[arg(long, value_name = "N", value_parser = parse::count_limit)]
    max_msgs_per_subject: Option<parse::Limit<u64>>,

    /// Maximum message size (e.g. 1MiB) or `unlimited`.
    #[arg(long, value_name = "SIZE", value_parser = parse::size_limit)]
    max_msg_size: Option<parse::Limit<u64>>,

    /// What a full stream does.
    #[arg(long, value_enum)]
    discard: Option<Discard>,

    /// Reject per subject under discard new (see `stream add`).
    #[arg(long, value_name = "BOOL")]
    discard_new_per_subject: Option<bool>,

    /// Window in which a repeated message id is a duplicate.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    dupe_window: Option<Duration>,

    /// Copies the servers of a NATS cluster keep (1 to 5).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=5))]
    replicas: Option<u64>,

    /// Honour Nats-Rollup headers.
    #[arg(long, value_name = "BOOL")]
    allow_rollup: Option<bool>,

    /// Refuse deleting single messages.
    #[arg(long, value_name = "BOOL")]
    deny_delete: Option<bool>,

    /// Refuse purges.
    #[arg(long, value_name = "BOOL")]
    deny_purge: Option<bool>,
}

impl EditArgs {
    /// `current` with the given options applied, validated.
    fn apply(&self, mut config: StreamConfig) -> anyhow::Result<StreamConfig> {
        if !self.subjects.is_empty() {
            config.subjects = self.subjects.iter().map(|s| s.trim().to_owned()).collect();
        }
        if let Some(description) = &self.description {
            config.description = Some(description.clone());
        }
        if let Some(parse::Limit(age)) = self.max_age {
            config.max_age = age;
        }
        if let Some(parse::Limit(bytes)) = self.max_bytes {
            config.max_bytes = bytes;
        }
        if let Some(parse::Limit(n)) = self.max_msgs {
            config.max_msgs = n;
        }
        if let Some(parse::Limit(n)) = self.max_msgs_per_subject {
            config.max_msgs_per_subject = n;
        }
        if let Some(parse::Limit(size)) = self.max_msg_size {
            config.max_msg_size = size
                .map(|n| {
                    u32::try_from(n).map_err(|_| {
                        anyhow::anyhow!("--max-msg-size {n} is larger than the limit of 4 GiB")
                    })
                })
                .transpose()?;
        }
        if let Some(discard) = self.discard {
            config.discard = discard.into();
        }
        if let Some(b) = self.discard_new_per_subject {
            config.discard_new_per_subject = b;
        }
        if let Some(window) = self.dupe_window {
            config.duplicate_window = window;
        }
        if let Some(n) = self.replicas {
            config.replicas = usize::try_from(n).unwrap_or(1);
        }
        if let Some(b) = self.allow_rollup {
            config.allow_rollup = b;
        }
        if let Some(b) = self.deny_delete {
            config.deny_delete = b;
        }
        if let Some(b) = self.deny_purge {
            config.deny_purge = b;
        }
        config
            .validate()
            .with_context(|| format!("cannot edit stream {}", self.name))?;
        Ok(config)
    }
}

/// Arguments of `durabus stream purge`.
#[derive(Debug, Args)]
pub(crate) struct PurgeArgs {
    /// The stream.
    name: String,
    /// Only messages on subjects matching this filter.
    #[arg(long, value_name = "FILTER")]
    subject: Option<String>,
    /// Keep the newest N messages (of the subject, with --subject).
    #[arg(long, value_name = "N", conflicts_with = "seq")]
    keep: Option<u64>,
    /// Remove only messages with a sequence below N.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    seq: Option<u64>,
    /// Do not ask for confirmation.
    #[arg(short, long)]
    force: bool,
}

/// Arguments of `durabus stream get`.
#[derive(Debug, Args)]
#[command(group(ArgGroup::new("which").required(true).args(["seq", "last_subject"])))]
pub(crate) struct GetArgs {
    /// The stream.
    name: String,
    /// The message's sequence.
    seq: Option<u64>,
    /// Instead of a sequence: the newest message on this (literal) subject.
    #[arg(long, value_name = "SUBJECT")]
    last_subject: Option<String>,

    /// Print only the payload, byte for byte, no newline added (wins over --json).
    #[arg(long)]
    raw: bool,
}

/// Runs a `stream` verb.
pub(crate) async fn run(global: &Global, command: StreamCommand) -> anyhow::Result<()> {
    // Check what can be checked before touching the store.
    let access = match &command {
        StreamCommand::Add(args) => {
            crate::session::check_replicas(global, args.config()?.replicas)?;
            Access::Create
        }
        StreamCommand::Ls => Access::ReadOnly,
        StreamCommand::Edit(args) => {
            validate_stream_name(&args.name)?;
            if let Some(n) = args.replicas {
                crate::session::check_replicas(global, usize::try_from(n).unwrap_or(1))?;
            }
            Access::Existing
        }
        StreamCommand::Info { name } => {
            validate_stream_name(name)?;
            Access::ReadOnly
        }
        StreamCommand::Rm { name, .. } | StreamCommand::Rmm { name, .. } => {
            validate_stream_name(name)?;
            Access::Existing
        }
        StreamCommand::Purge(args) => {
            validate_stream_name(&args.name)?;
            if let Some(filter) = &args.subject {
                subject::validate_filter(filter).context("cannot purge")?;
            }
            Access::Existing
        }
        StreamCommand::Get(args) => {
            validate_stream_name(&args.name)?;
            if let Some(s) = &args.last_subject {
                subject::validate_publish(s).context("--last-subject takes a literal subject")?;
            }
            Access::ReadOnly
        }
    };
    let bus = open_bus(global.url(), access).await?;
    let result = run_on(global, &bus, command).await;
    finish(&bus, global.url(), result).await
}

async fn run_on(global: &Global, bus: &Bus, command: StreamCommand) -> anyhow::Result<()> {
    match command {
        StreamCommand::Add(args) => add(global, bus, &args).await,
        StreamCommand::Ls => list(global, bus).await,
        StreamCommand::Edit(args) => {
            let current = info_of(bus, &args.name).await?;
            let config = args.apply(current.config.clone())?;
            if config == current.config {
                if !global.json {
                    print_text(&format!(
                        "stream {} already has this configuration; nothing changed",
                        args.name
                    ))?;
                    return Ok(());
                }
                return Ok(print_json(&info_json(&current))?);
            }
            let info = bus
                .update_stream(config)
                .await
                .with_context(|| format!("cannot edit stream {}", args.name))?;
            if global.json {
                return Ok(print_json(&info_json(&info))?);
            }
            print_text(&format!(
                "updated stream {}\n\n{}",
                args.name,
                info_human(&info)
            ))?;
            Ok(())
        }
        StreamCommand::Info { name } => {
            let info = info_of(bus, &name).await?;
            show_info(global, &info)
        }
        StreamCommand::Rm { name, force } => {
            let info = info_of(bus, &name).await?;
            confirm(
                force,
                &format!(
                    "delete stream {name} and its {}",
                    crate::output::count(info.state.messages, "message")
                ),
            )?;
            bus.delete_stream(&name)
                .await
                .with_context(|| format!("cannot delete stream {name}"))?;
            if global.json {
                print_json(&json!({ "stream": name, "deleted": true }))?;
            } else {
                print_text(&format!("deleted stream {name}"))?;
            }
            Ok(())
        }
        StreamCommand::Purge(args) => purge(global, bus, args).await,
        StreamCommand::Get(args) => {
            let message = match (&args.last_subject, args.seq) {
                (Some(subject), _) => bus.get_last_message(&args.name, subject).await,
                (None, Some(seq)) => bus.get_message(&args.name, seq).await,
                (None, None) => bail!("give a sequence or --last-subject SUBJECT"),
            }
            .context("cannot get the message")?;
            if args.raw {
                crate::output::print_raw(&message.payload, false)?;
            } else if global.json {
                print_json(&stored_json(&message))?;
            } else {
                print_text(&stored_human(&message))?;
            }
            Ok(())
        }
        StreamCommand::Rmm { name, seq, force } => {
            info_of(bus, &name).await?;
            confirm(force, &format!("delete message {seq} from stream {name}"))?;
            bus.delete_message(&name, seq)
                .await
                .with_context(|| format!("cannot delete message {seq} from stream {name}"))?;
            if global.json {
                print_json(&json!({ "stream": name, "seq": seq, "deleted": true }))?;
            } else {
                print_text(&format!("deleted message {seq} from stream {name}"))?;
            }
            Ok(())
        }
    }
}

async fn info_of(bus: &Bus, name: &str) -> anyhow::Result<StreamInfo> {
    bus.stream_info(name)
        .await
        .with_context(|| format!("cannot read stream {name}"))
}

async fn add(global: &Global, bus: &Bus, args: &AddArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let existed = bus.stream_info(&config.name).await.is_ok();
    let info = match bus.create_stream(config).await {
        Ok(info) => info,
        Err(durabus::Error::StreamNameInUse { name }) => bail!(
            "cannot add stream {name}: it exists with a different configuration; \
             change it with `durabus stream edit {name} ...` (see `durabus stream info {name}`)"
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot add stream {}", args.name)),
    };
    crate::session::note_ephemeral(global, "the stream");
    if global.json {
        return Ok(print_json(&info_json(&info))?);
    }
    let verdict = if existed {
        format!(
            "stream {} already exists with this configuration; nothing changed",
            args.name
        )
    } else {
        format!("created stream {}", args.name)
    };
    print_text(&format!("{verdict}\n\n{}", info_human(&info)))?;
    Ok(())
}

async fn list(global: &Global, bus: &Bus) -> anyhow::Result<()> {
    let streams = bus.list_streams().await.context("cannot list streams")?;
    // Streams (and consumers) whose files could not be opened: the rest works.
    let unavailable = bus.unavailable();
    if global.json {
        #[derive(Serialize)]
        struct Streams<'a> {
            streams: Vec<StreamJson<'a>>,
            unavailable: Vec<durabus::Unavailable>,
        }
        let streams = streams.iter().map(info_json).collect();
        return Ok(print_json(&Streams {
            streams,
            unavailable,
        })?);
    }
    for u in &unavailable {
        let what = match &u.consumer {
            Some(c) => format!("consumer {c} of stream {}", u.stream),
            None => format!("stream {}", u.stream),
        };
        eprintln!("warning: {what} is unavailable: {}", u.reason);
    }
    if !unavailable.is_empty() {
        eprintln!("hint: check the data directory with `durabus verify`");
    }
    if streams.is_empty() {
        print_text(&format!(
            "no streams in {}; add one with `durabus stream add NAME --subjects 'orders.>'`",
            global.shown_url()
        ))?;
        return Ok(());
    }
    let mut table = Listing::new(
        [
            "stream",
            "subjects",
            "messages",
            "bytes",
            "first seq",
            "last seq",
            "last message",
        ],
        2..6,
    );
    for info in &streams {
        let s = &info.state;
        table.add_row([
            info.config.name.clone(),
            info.config.effective_subjects().join(", "),
            s.messages.to_string(),
            bytes_human(s.bytes),
            s.first_seq.to_string(),
            s.last_seq.to_string(),
            rfc3339_or_dash(s.last_time),
        ]);
    }
    print_text(&table.text())?;
    Ok(())
}

async fn purge(global: &Global, bus: &Bus, args: PurgeArgs) -> anyhow::Result<()> {
    let info = info_of(bus, &args.name).await?;
    let mut what = match &args.subject {
        Some(filter) => format!("purge messages on {filter} from stream {}", args.name),
        None => format!(
            "purge stream {} ({} messages)",
            args.name, info.state.messages
        ),
    };
    if let Some(keep) = args.keep {
        what.push_str(&format!(", keeping the newest {keep}"));
    }
    if let Some(seq) = args.seq {
        what.push_str(&format!(", below sequence {seq}"));
    }
    confirm(args.force, &what)?;
    let request = PurgeRequest {
        subject: args.subject.clone(),
        keep: args.keep,
        up_to_seq: args.seq,
    };
    let purged = bus
        .purge_stream(&args.name, request)
        .await
        .with_context(|| format!("cannot purge stream {}", args.name))?;
    if global.json {
        print_json(&json!({ "stream": args.name, "purged": purged }))?;
    } else {
        print_text(&format!(
            "purged {} from stream {}",
            crate::output::count(purged, "message"),
            args.name
        ))?;
    }
    Ok(())
}

/// A limit for people: the value or `unlimited`.
fn limit<T>(value: Option<T>, show: impl Fn(T) -> String) -> String {
    value.map_or_else(|| "unlimited".to_owned(), show)
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_owned()
}

/// An enum's serde name (`limits`, `work_queue`, `old`, `file`).
fn serde_name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(Value::String(s)) => s,
        _ => "?".to_owned(),
    }
}

/// Rows of `label  value`, labels padded to one width, under a title.
fn section(title: &str, rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(l, _)| l.len()).max().unwrap_or(0);
    let mut text = format!("{title}\n");
    for (label, value) in rows {
        text.push_str(&format!("  {label:<width$}  {value}\n"));
    }
    text
}

/// `stream info` for people: configuration, then state.
fn info_human(info: &StreamInfo) -> String {
    let c = &info.config;
    let s = &info.state;
    let mut config = vec![
        ("subjects", c.effective_subjects().join(", ")),
        ("created", rfc3339(info.created)),
    ];
    if let Some(description) = &c.description {
        config.push(("description", description.clone()));
    }
    config.extend([
        ("retention", serde_name(&c.retention)),
        ("storage", serde_name(&c.storage)),
        ("discard", serde_name(&c.discard)),
        ("discard new per subject", yes_no(c.discard_new_per_subject)),
        ("max age", limit(c.max_age, duration_human)),
        ("max bytes", limit(c.max_bytes, bytes_human)),
        ("max msgs", limit(c.max_msgs, |n| n.to_string())),
        (
            "max msgs per subject",
            limit(c.max_msgs_per_subject, |n| n.to_string()),
        ),
        (
            "max msg size",
            limit(c.max_msg_size, |n| bytes_human(u64::from(n))),
        ),
        ("duplicate window", duration_human(c.duplicate_window)),
        ("replicas", c.replicas.to_string()),
        ("allow rollup", yes_no(c.allow_rollup)),
        ("deny delete", yes_no(c.deny_delete)),
        ("deny purge", yes_no(c.deny_purge)),
    ]);
    let at = |seq: u64, time| match time {
        Some(t) => format!("{seq} at {}", rfc3339(t)),
        None => seq.to_string(),
    };
    let mut state = vec![
        ("messages", s.messages.to_string()),
        ("bytes", bytes_human(s.bytes)),
        ("first seq", at(s.first_seq, s.first_time)),
        ("last seq", at(s.last_seq, s.last_time)),
        ("deleted", s.num_deleted.to_string()),
        ("distinct subjects", s.num_subjects.to_string()),
        ("consumers", s.consumer_count.to_string()),
    ];
    if s.num_lost > 0 {
        state.insert(5, ("lost to damage", s.num_lost.to_string()));
    }
    format!(
        "{}\n{}",
        section(&format!("Stream {}", c.name), &config),
        section("State", &state)
    )
}

fn show_info(global: &Global, info: &StreamInfo) -> anyhow::Result<()> {
    if global.json {
        print_json(&info_json(info))?;
    } else {
        print_text(&info_human(info))?;
    }
    Ok(())
}

/// A stream as JSON, with JetStream's field names: durations in
/// nanoseconds, times in RFC 3339, unlimited as JetStream writes it (`-1`,
/// `0` for `max_age`).
pub(crate) fn info_json(info: &StreamInfo) -> StreamJson<'_> {
    let c = &info.config;
    let s = &info.state;
    StreamJson {
        config: ConfigJson {
            name: &c.name,
            description: c.description.as_deref(),
            subjects: c.effective_subjects(),
            retention: &c.retention,
            max_age: age_json(c.max_age),
            max_bytes: limit_json(c.max_bytes),
            max_msgs: limit_json(c.max_msgs),
            max_msgs_per_subject: limit_json(c.max_msgs_per_subject),
            max_msg_size: limit_json(c.max_msg_size),
            discard: &c.discard,
            discard_new_per_subject: c.discard_new_per_subject,
            duplicate_window: duration_nanos(c.duplicate_window),
            storage: &c.storage,
            num_replicas: c.replicas,
            allow_rollup_hdrs: c.allow_rollup,
            deny_delete: c.deny_delete,
            deny_purge: c.deny_purge,
        },
        created: rfc3339_nanos(info.created),
        state: StateJson {
            messages: s.messages,
            bytes: s.bytes,
            first_seq: s.first_seq,
            first_ts: s.first_time.map(rfc3339_nanos),
            last_seq: s.last_seq,
            last_ts: s.last_time.map(rfc3339_nanos),
            num_deleted: s.num_deleted,
            num_lost: s.num_lost,
            num_subjects: s.num_subjects,
            consumer_count: s.consumer_count,
        },
    }
}

/// What [`info_json`] writes: serialized as it is, with no JSON tree built
/// (`stream ls` writes 10,000 of them).
#[derive(Serialize)]
pub(crate) struct StreamJson<'a> {
    config: ConfigJson<'a>,
    created: String,
    state: StateJson,
}

#[derive(Serialize)]
struct ConfigJson<'a> {
    name: &'a str,
    description: Option<&'a str>,
    subjects: Vec<String>,
    retention: &'a RetentionPolicy,
    max_age: u64,
    max_bytes: JsonLimit,
    max_msgs: JsonLimit,
    max_msgs_per_subject: JsonLimit,
    max_msg_size: JsonLimit,
    discard: &'a DiscardPolicy,
    discard_new_per_subject: bool,
    duplicate_window: u64,
    storage: &'a StorageType,
    num_replicas: usize,
    allow_rollup_hdrs: bool,
    deny_delete: bool,
    deny_purge: bool,
}

#[derive(Serialize)]
struct StateJson {
    messages: u64,
    bytes: u64,
    first_seq: u64,
    first_ts: Option<String>,
    last_seq: u64,
    last_ts: Option<String>,
    num_deleted: u64,
    num_lost: u64,
    num_subjects: u64,
    consumer_count: u64,
}
