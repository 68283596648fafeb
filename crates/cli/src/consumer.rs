//! `durabus consumer ...`: add, ls, info, rm, next.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use durabus::{
    validate_consumer_name, validate_stream_name, AckKind, AckPolicy, ConsumerConfig, ConsumerInfo,
    DeliverPolicy, Delivery,
};
use serde_json::{json, Value};

use crate::confirm::confirm;
use crate::output::{
    age_json, duration_human, duration_nanos, limit_json, print_json, print_text, rfc3339,
    rfc3339_nanos, stored_human, stored_json, Listing,
};
use crate::parse;
use crate::session::{finish, open_bus, Access, Global};

/// The `consumer` verbs.
#[derive(Debug, Subcommand)]
pub(crate) enum ConsumerCommand {
    /// Create a durable consumer on a stream. An existing one with the same
    /// configuration is left as it is; a different one is an error.
    #[command(alias = "create")]
    Add(AddArgs),
    /// Change a consumer's configuration: only the options given change.
    /// Where it starts and how it acknowledges stay as created.
    #[command(alias = "update")]
    Edit(EditArgs),
    /// List a stream's consumers.
    #[command(alias = "list")]
    Ls {
        /// The stream.
        stream: String,
    },
    /// Show a consumer's configuration and state.
    Info {
        /// The stream.
        stream: String,
        /// The consumer.
        name: String,
    },
    /// Delete a consumer and its state.
    #[command(alias = "delete")]
    Rm {
        /// The stream.
        stream: String,
        /// The consumer.
        name: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Fetch messages from a consumer, print them and acknowledge them.
    Next(NextArgs),
}

/// `--deliver` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Deliver {
    /// Every stored message.
    All,
    /// The newest message, then new ones.
    Last,
    /// Only messages stored from now on.
    New,
    /// The newest message of each subject, then new ones.
    #[value(name = "last_per_subject", alias = "last-per-subject")]
    LastPerSubject,
}

/// `--ack` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Ack {
    /// Each message is acknowledged by itself.
    Explicit,
    /// Nothing is acknowledged.
    None,
    /// Acknowledging a message acknowledges every earlier one.
    All,
}

/// Arguments of `consumer add`.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// The stream.
    stream: String,
    /// The durable name.
    name: String,
    /// Only messages on subjects matching this filter (repeatable).
    #[arg(long = "filter", value_name = "SUBJECT")]
    filters: Vec<String>,
    /// Where the consumer starts [default: all].
    #[arg(long, value_enum, conflicts_with_all = ["start_seq", "since"])]
    deliver: Option<Deliver>,
    /// Start at this stream sequence.
    #[arg(long, value_name = "SEQ", conflicts_with = "since",
          value_parser = clap::value_parser!(u64).range(1..))]
    start_seq: Option<u64>,
    /// Start at the first message stored at or after this time (RFC 3339,
    /// or an age such as 10m).
    #[arg(long, value_name = "TIME", value_parser = parse::since)]
    since: Option<std::time::SystemTime>,
    /// How deliveries are acknowledged [default: explicit].
    #[arg(long, value_enum)]
    ack: Option<Ack>,
    /// How long a delivery may stay unacknowledged before redelivery
    /// [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    ack_wait: Option<Duration>,
    /// Deliveries of one message at most [default: unlimited].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_deliver: Option<u64>,
    /// Waits before successive redeliveries, comma-separated (e.g.
    /// 1s,10s,1m); needs --max-deliver above their number.
    #[arg(long, value_name = "DURATIONS", value_delimiter = ',', value_parser = parse::duration)]
    backoff: Vec<Duration>,
    /// Unacknowledged deliveries at most before delivery pauses, or
    /// `unlimited` [default: 1000].
    #[arg(long, value_name = "N", value_parser = parse::count_limit)]
    max_ack_pending: Option<parse::Limit<u64>>,
    /// Free text.
    #[arg(long)]
    description: Option<String>,
}

impl AddArgs {
    fn config(&self) -> anyhow::Result<ConsumerConfig> {
        validate_stream_name(&self.stream)?;
        let mut c = ConsumerConfig::durable(&self.name);
        c.description = self.description.clone();
        c.filter_subjects = self.filters.clone();
        c.deliver_policy = match (self.deliver, self.start_seq, self.since) {
            (_, Some(seq), _) => DeliverPolicy::ByStartSequence(seq),
            (_, _, Some(t)) => DeliverPolicy::ByStartTime(t),
            (Some(Deliver::Last), ..) => DeliverPolicy::Last,
            (Some(Deliver::New), ..) => DeliverPolicy::New,
            (Some(Deliver::LastPerSubject), ..) => DeliverPolicy::LastPerSubject,
            (Some(Deliver::All) | None, ..) => DeliverPolicy::All,
        };
        c.ack_policy = match self.ack {
            Some(Ack::None) => AckPolicy::None,
            Some(Ack::All) => AckPolicy::All,
            Some(Ack::Explicit) | None => AckPolicy::Explicit,
        };
        if let Some(wait) = self.ack_wait {
            c.ack_wait = wait;
        }
        c.max_deliver = self.max_deliver;
        c.backoff = self.backoff.clone();
        if let Some(limit) = self.max_ack_pending {
            c.max_ack_pending = limit.0;
        }
        c.validate()
            .with_context(|| format!("cannot add consumer {}", self.name))?;
        Ok(c)
    }
}

/// Arguments of `consumer edit`: each option given replaces the current
/// value; limits take `unlimited` to clear them.
#[derive(Debug, Args)]
pub(crate) struct EditArgs {
    /// The stream.
    stream: String,
    /// The durable name.
    name: String,
    /// Replace the subject filters (repeatable).
    #[arg(long = "filter", value_name = "SUBJECT")]
    filters: Vec<String>,
    /// How long a delivery may stay unacknowledged before redelivery.
    #[arg(long, value_name = "DURATION", value_parser = parse::duration)]
    ack_wait: Option<Duration>,
    /// Deliveries of one message at most, or `unlimited`.
    #[arg(long, value_name = "N", value_parser = parse::count_limit)]
    max_deliver: Option<parse::Limit<u64>>,
    /// Waits before successive redeliveries, comma-separated (e.g.
    /// 1s,10s,1m), or `none`.
    #[arg(long, value_name = "DURATIONS", value_parser = backoff)]
    backoff: Option<Backoff>,
    /// Unacknowledged deliveries at most before delivery pauses, or
    /// `unlimited`.
    #[arg(long, value_name = "N", value_parser = parse::count_limit)]
    max_ack_pending: Option<parse::Limit<u64>>,
    /// Replace the description.
    #[arg(long)]
    description: Option<String>,
}

/// A `--backoff` list of `consumer edit` (empty for `none`).
#[derive(Debug, Clone)]
struct Backoff(Vec<Duration>);

fn backoff(s: &str) -> Result<Backoff, String> {
    if s.trim() == "none" {
        return Ok(Backoff(Vec::new()));
    }
    s.split(',')
        .map(parse::duration)
        .collect::<Result<Vec<_>, _>>()
        .map(Backoff)
}

impl EditArgs {
    /// `config` with the given options applied, validated.
    fn apply(&self, mut c: ConsumerConfig) -> anyhow::Result<ConsumerConfig> {
        if !self.filters.is_empty() {
            c.filter_subjects = self.filters.clone();
        }
        if let Some(wait) = self.ack_wait {
            c.ack_wait = wait;
        }
        if let Some(parse::Limit(n)) = self.max_deliver {
            c.max_deliver = n;
        }
        if let Some(Backoff(steps)) = &self.backoff {
            c.backoff = steps.clone();
        }
        if let Some(parse::Limit(n)) = self.max_ack_pending {
            c.max_ack_pending = n;
        }
        if let Some(d) = &self.description {
            c.description = Some(d.clone());
        }
        c.validate()
            .with_context(|| format!("cannot edit consumer {}", self.name))?;
        Ok(c)
    }
}

/// What `consumer next` does with each message it prints.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Settle {
    /// Acknowledge it: it is done.
    Ack,
    /// Negatively acknowledge it: deliver it again.
    Nak,
    /// Terminate it: never deliver it again.
    Term,
    /// Leave it: it is delivered again after ack_wait.
    None,
}

/// Arguments of `consumer next`.
#[derive(Debug, Args)]
pub(crate) struct NextArgs {
    /// The stream.
    stream: String,
    /// The consumer.
    name: String,
    /// Messages to fetch.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u64).range(1..))]
    count: u64,
    /// How long to wait for the first message.
    #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = parse::duration)]
    wait: Duration,
    /// What to do with each message after printing it.
    #[arg(long, value_enum, default_value_t = Settle::Ack)]
    then: Settle,
}

/// Runs a `consumer` verb.
pub(crate) async fn run(global: &Global, command: ConsumerCommand) -> anyhow::Result<()> {
    // Check what can be checked before touching the store.
    match &command {
        ConsumerCommand::Add(args) => {
            args.config()?;
        }
        ConsumerCommand::Ls { stream } => validate_stream_name(stream)?,
        ConsumerCommand::Info { stream, name }
        | ConsumerCommand::Edit(EditArgs { stream, name, .. })
        | ConsumerCommand::Rm { stream, name, .. }
        | ConsumerCommand::Next(NextArgs { stream, name, .. }) => {
            validate_stream_name(stream)?;
            validate_consumer_name(name)?;
        }
    }
    let access = match &command {
        ConsumerCommand::Ls { .. } | ConsumerCommand::Info { .. } => Access::ReadOnly,
        _ => Access::Existing,
    };
    let bus = open_bus(global.url(), access).await?;
    let result = match command {
        ConsumerCommand::Add(args) => add(global, &bus, &args).await,
        ConsumerCommand::Edit(args) => edit(global, &bus, &args).await,
        ConsumerCommand::Ls { stream } => ls(global, &bus, &stream).await,
        ConsumerCommand::Info { stream, name } => {
            let info = bus.consumer_info(&stream, &name).await?;
            show_info(global, &info)
        }
        ConsumerCommand::Rm {
            stream,
            name,
            force,
        } => rm(global, &bus, &stream, &name, force).await,
        ConsumerCommand::Next(args) => next(global, &bus, &args).await,
    };
    finish(&bus, global.url(), result).await
}

async fn add(global: &Global, bus: &durabus::Bus, args: &AddArgs) -> anyhow::Result<()> {
    let config = args.config()?;
    let info = match bus.create_consumer(&args.stream, config).await {
        Ok(info) => info,
        Err(durabus::Error::ConsumerNameInUse { .. }) => anyhow::bail!(
            "cannot add consumer {name} to stream {stream}: it exists with a different \
             configuration; change it with `durabus consumer edit {stream} {name} ...` \
             (see `durabus consumer info {stream} {name}`)",
            name = args.name,
            stream = args.stream
        ),
        Err(e) => return Err(e).with_context(|| format!("cannot add consumer {}", args.name)),
    };
    crate::session::note_ephemeral(global, "the consumer");
    show_info(global, &info)
}

async fn edit(global: &Global, bus: &durabus::Bus, args: &EditArgs) -> anyhow::Result<()> {
    let current = bus.consumer_info(&args.stream, &args.name).await?;
    let config = args.apply(current.config.clone())?;
    if config == current.config {
        if global.json {
            return Ok(print_json(&info_json(&current))?);
        }
        print_text(&format!(
            "consumer {} of stream {} already has this configuration; nothing changed",
            args.name, args.stream
        ))?;
        return Ok(());
    }
    let info = bus
        .update_consumer(&args.stream, config)
        .await
        .with_context(|| format!("cannot edit consumer {}", args.name))?;
    if global.json {
        return Ok(print_json(&info_json(&info))?);
    }
    print_text(&format!(
        "updated consumer {} of stream {}\n\n{}",
        args.name,
        args.stream,
        info_human(&info)
    ))?;
    Ok(())
}

async fn ls(global: &Global, bus: &durabus::Bus, stream: &str) -> anyhow::Result<()> {
    let consumers = bus.list_consumers(stream).await?;
    if global.json {
        let all: Vec<Value> = consumers.iter().map(info_json).collect();
        print_json(&json!({ "stream": stream, "consumers": all }))?;
        return Ok(());
    }
    if consumers.is_empty() {
        print_text(&format!(
            "no consumers on stream {stream}; add one with `durabus consumer add {stream} NAME`"
        ))?;
        return Ok(());
    }
    let mut table = Listing::new(
        [
            "consumer",
            "filter",
            "pending",
            "ack pending",
            "redelivered",
            "ack floor",
        ],
        2..6,
    );
    for c in &consumers {
        table.add_row([
            c.name.clone(),
            filters(&c.config),
            c.num_pending.to_string(),
            c.num_ack_pending.to_string(),
            c.num_redelivered.to_string(),
            c.ack_floor.stream_seq.to_string(),
        ]);
    }
    print_text(&table.text())?;
    Ok(())
}

async fn rm(
    global: &Global,
    bus: &durabus::Bus,
    stream: &str,
    name: &str,
    force: bool,
) -> anyhow::Result<()> {
    bus.consumer_info(stream, name).await?;
    confirm(
        force,
        &format!("delete consumer {name} of stream {stream} and its state"),
    )?;
    bus.delete_consumer(stream, name).await?;
    if global.json {
        print_json(&json!({ "deleted": name, "stream": stream }))?;
    } else {
        print_text(&format!("deleted consumer {name} of stream {stream}"))?;
    }
    Ok(())
}

async fn next(global: &Global, bus: &durabus::Bus, args: &NextArgs) -> anyhow::Result<()> {
    let batch = usize::try_from(args.count).unwrap_or(usize::MAX);
    let deliveries = bus
        .fetch(&args.stream, &args.name, batch, args.wait)
        .await?;
    if deliveries.is_empty() {
        // Not a failure, but a script must tell it from a message: exit 3.
        return Err(crate::exit::Exit {
            code: crate::exit::NO_MESSAGE,
            kind: "no_message",
            description: format!(
                "no message for consumer {} of stream {} within {}",
                args.name,
                args.stream,
                duration_human(args.wait)
            ),
            plain: true,
        }
        .into());
    }
    for d in &deliveries {
        if global.json {
            print_json(&delivery_json(d))?;
        } else {
            print_text(&format!(
                "[delivery {} of stream seq {}] {}",
                d.delivered(),
                d.stream_seq(),
                stored_human(&d.message)
            ))?;
        }
        let kind = match args.then {
            Settle::Ack => AckKind::Ack,
            Settle::Nak => AckKind::Nak(None),
            Settle::Term => AckKind::Term,
            Settle::None => continue,
        };
        bus.ack_confirmed(d, kind)
            .await
            .with_context(|| format!("cannot settle stream seq {}", d.stream_seq()))?;
    }
    Ok(())
}

fn delivery_json(d: &Delivery) -> Value {
    let mut v = stored_json(&d.message);
    if let Some(o) = v.as_object_mut() {
        o.insert("consumer_seq".into(), json!(d.consumer_seq()));
        o.insert("delivered".into(), json!(d.delivered()));
        o.insert("pending".into(), json!(d.pending));
    }
    v
}

fn filters(c: &ConsumerConfig) -> String {
    if c.filter_subjects.is_empty() {
        "(all)".into()
    } else {
        c.filter_subjects.join(", ")
    }
}

fn show_info(global: &Global, info: &ConsumerInfo) -> anyhow::Result<()> {
    if global.json {
        print_json(&info_json(info))?;
    } else {
        print_text(&info_human(info))?;
    }
    Ok(())
}

fn deliver_name(p: &DeliverPolicy) -> String {
    match p {
        DeliverPolicy::All => "all".into(),
        DeliverPolicy::Last => "last".into(),
        DeliverPolicy::New => "new".into(),
        DeliverPolicy::ByStartSequence(s) => format!("by_start_sequence {s}"),
        DeliverPolicy::ByStartTime(t) => format!("by_start_time {}", rfc3339(*t)),
        DeliverPolicy::LastPerSubject => "last_per_subject".into(),
    }
}

fn ack_name(p: AckPolicy) -> &'static str {
    match p {
        AckPolicy::Explicit => "explicit",
        AckPolicy::None => "none",
        AckPolicy::All => "all",
    }
}

/// A consumer as JSON, with JetStream's field names: durations in
/// nanoseconds, unlimited as JetStream writes it (`-1`, `0` for
/// `inactive_threshold`).
fn info_json(info: &ConsumerInfo) -> Value {
    let c = &info.config;
    let (policy, start_seq, start_time) = match c.deliver_policy {
        DeliverPolicy::ByStartSequence(s) => ("by_start_sequence", Some(s), None),
        DeliverPolicy::ByStartTime(t) => ("by_start_time", None, Some(rfc3339_nanos(t))),
        DeliverPolicy::All => ("all", None, None),
        DeliverPolicy::Last => ("last", None, None),
        DeliverPolicy::New => ("new", None, None),
        DeliverPolicy::LastPerSubject => ("last_per_subject", None, None),
    };
    json!({
        "stream_name": info.stream,
        "name": info.name,
        "created": rfc3339_nanos(info.created),
        "config": {
            "durable_name": c.durable_name,
            "description": c.description,
            "deliver_policy": policy,
            "opt_start_seq": start_seq,
            "opt_start_time": start_time,
            "ack_policy": ack_name(c.ack_policy),
            "ack_wait": duration_nanos(c.ack_wait),
            "max_deliver": limit_json(c.max_deliver),
            "backoff": c.backoff.iter().map(|d| duration_nanos(*d)).collect::<Vec<_>>(),
            "max_ack_pending": limit_json(c.max_ack_pending),
            "filter_subjects": c.filter_subjects,
            "inactive_threshold": age_json(c.inactive_threshold),
        },
        "delivered": {
            "consumer_seq": info.delivered.consumer_seq,
            "stream_seq": info.delivered.stream_seq,
        },
        "ack_floor": {
            "consumer_seq": info.ack_floor.consumer_seq,
            "stream_seq": info.ack_floor.stream_seq,
        },
        "num_pending": info.num_pending,
        "num_ack_pending": info.num_ack_pending,
        "num_redelivered": info.num_redelivered,
        "num_lost": info.num_lost,
    })
}

fn info_human(info: &ConsumerInfo) -> String {
    let c = &info.config;
    let unlimited = |v: Option<u64>| v.map_or_else(|| "unlimited".to_owned(), |n| n.to_string());
    let mut lines = vec![
        format!("consumer {} on stream {}", info.name, info.stream),
        format!("  created          {}", rfc3339(info.created)),
        format!("  filter           {}", filters(c)),
        format!("  deliver          {}", deliver_name(&c.deliver_policy)),
        format!("  ack              {}", ack_name(c.ack_policy)),
        format!("  ack wait         {}", duration_human(c.ack_wait)),
        format!("  max deliver      {}", unlimited(c.max_deliver)),
        format!("  max ack pending  {}", unlimited(c.max_ack_pending)),
    ];
    if !c.backoff.is_empty() {
        let steps: Vec<String> = c.backoff.iter().map(|d| duration_human(*d)).collect();
        lines.push(format!("  backoff          {}", steps.join(", ")));
    }
    if let Some(d) = &c.description {
        lines.push(format!("  description      {d}"));
    }
    lines.extend([
        format!(
            "  delivered        stream seq {}, consumer seq {}",
            info.delivered.stream_seq, info.delivered.consumer_seq
        ),
        format!(
            "  ack floor        stream seq {}, consumer seq {}",
            info.ack_floor.stream_seq, info.ack_floor.consumer_seq
        ),
        format!("  pending          {}", info.num_pending),
        format!("  ack pending      {}", info.num_ack_pending),
        format!("  redelivered      {}", info.num_redelivered),
    ]);
    if info.num_lost > 0 {
        lines.push(format!(
            "  lost to damage   {} (stepped over; `durabus repair` records them as gaps)",
            info.num_lost
        ));
    }
    lines.join("\n")
}
