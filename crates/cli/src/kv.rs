//! `durabus kv ...`: buckets in the NATS KV layout.

use std::time::{Duration, SystemTime};

use anyhow::Context as _;
use clap::{Args, Subcommand, ValueEnum};
use durabus::kv::{validate_bucket, Entry, KvConfig, KvStatus, Operation};
use durabus::{Bus, StorageType};
use serde_json::{json, Map, Value};

use crate::output::{
    age_json, bytes_human, duration_human, insert_payload, limit_json, print_json, print_raw,
    print_text, rfc3339, rfc3339_nanos, Listing,
};
use crate::parse;
use crate::publish::read_payload;
use crate::session::{
    check_replicas, finish, finish_reader, note_ephemeral, open_bus, shutdown_signal, Access,
    Global,
};

/// The `kv` verbs.
#[derive(Debug, Subcommand)]
pub(crate) enum KvCommand {
    /// Create a bucket. An existing one with the same settings is left as
    /// it is; different settings are an error.
    #[command(alias = "create-bucket")]
    Add(AddArgs),
    /// Change a bucket's settings: only the options given change.
    #[command(alias = "update-bucket")]
    Edit(EditArgs),
    /// List the buckets.
    #[command(alias = "list")]
    Ls,
    /// Show a bucket's settings and size.
    Info {
        /// The bucket.
        bucket: String,
    },
    /// Delete a bucket and every key in it.
    Rm {
        /// The bucket.
        bucket: String,
        /// Do not ask for confirmation.
        #[arg(short, long)]
        force: bool,
    },
    /// Print a key's value: the newest, at a revision, or as it was at a time.
    Get(GetArgs),
    /// Set a key (value from the argument or stdin); prints the revision.
    Put(PutArgs),
    /// Set a key only if it has no value; prints the revision.
    Create(PutArgs),
    /// Set a key only if it is at REVISION (compare-and-swap); prints the
    /// new revision.
    Update {
        #[command(flatten)]
        put: PutArgs,
        /// The revision the key must be at (0: no value yet).
        #[arg(long)]
        revision: u64,
    },
    /// Delete a key's value, keeping its history.
    #[command(alias = "rmk")]
    Del(KeyArgs),
    /// Delete a key's value and its history.
    Purge(KeyArgs),
    /// Print a key's kept entries, oldest first.
    History(KeyArgs),
    /// Print the keys that have a value, sorted.
    #[command(alias = "ls-keys")]
    Keys {
        /// The bucket.
        bucket: String,
        /// Only keys matching this filter (`*` one token, `>` the rest).
        #[arg(long, default_value = ">")]
        filter: String,
        /// Only keys starting with this text.
        #[arg(long, conflicts_with = "filter")]
        prefix: Option<String>,
    },
    /// Print the newest entry of each key, then every change, until Ctrl-C.
    ///
    /// Every client's changes arrive: on nats://, and on a file: store
    /// shared by the command holding it with the commands run beside it; a
    /// memory: store lives in one process, so there only its own can.
    Watch(WatchArgs),
}

/// `kv add` options.
#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// The bucket: letters, digits, `-` and `_`.
    bucket: String,
    /// Entries kept per key, 1 to 64.
    #[arg(long, default_value_t = 1)]
    history: u8,
    /// Remove entries older than this (e.g. 1h, 7d).
    #[arg(long, value_parser = parse::duration)]
    ttl: Option<Duration>,
    /// Largest value accepted (e.g. 1KiB).
    #[arg(long, value_parser = parse::size)]
    max_value_size: Option<u64>,
    /// Largest bucket (e.g. 1GiB); a full bucket refuses writes.
    #[arg(long, value_parser = parse::size)]
    max_bytes: Option<u64>,
    /// Where entries are kept.
    #[arg(long, value_enum, default_value_t = Storage::File)]
    storage: Storage,
    /// Copies a NATS cluster keeps (1 to 5); an embedded store keeps one.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=5))]
    replicas: u64,
    /// Free text.
    #[arg(long)]
    description: Option<String>,
}

/// `kv edit` options: each one given replaces the current setting; limits
/// take `unlimited` to clear them. The storage stays as created.
#[derive(Debug, Args)]
pub(crate) struct EditArgs {
    /// The bucket.
    bucket: String,
    /// Entries kept per key, 1 to 64.
    #[arg(long)]
    history: Option<u8>,
    /// Remove entries older than this (e.g. 1h, 7d), or `unlimited`.
    #[arg(long, value_parser = parse::duration_limit)]
    ttl: Option<parse::Limit<Duration>>,
    /// Largest value accepted (e.g. 1KiB), or `unlimited`.
    #[arg(long, value_parser = parse::size_limit)]
    max_value_size: Option<parse::Limit<u64>>,
    /// Largest bucket (e.g. 1GiB), or `unlimited`.
    #[arg(long, value_parser = parse::size_limit)]
    max_bytes: Option<parse::Limit<u64>>,
    /// Copies a NATS cluster keeps (1 to 5).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=5))]
    replicas: Option<u64>,
    /// Replace the description.
    #[arg(long)]
    description: Option<String>,
}

impl EditArgs {
    /// `config` with the given options applied.
    fn apply(&self, mut config: KvConfig) -> anyhow::Result<KvConfig> {
        if let Some(history) = self.history {
            config.history = history;
        }
        if let Some(parse::Limit(ttl)) = self.ttl {
            config.ttl = ttl;
        }
        if let Some(parse::Limit(size)) = self.max_value_size {
            config.max_value_size = size.map(value_size).transpose()?;
        }
        if let Some(parse::Limit(bytes)) = self.max_bytes {
            config.max_bytes = bytes;
        }
        if let Some(n) = self.replicas {
            config.replicas = usize::try_from(n).unwrap_or(1);
        }
        if let Some(d) = &self.description {
            config.description = Some(d.clone());
        }
        // The same checks `kv add` makes (history 1 to 64, ...).
        config.stream_config()?;
        Ok(config)
    }
}

/// A `--max-value-size` that fits the 4 GiB limit.
fn value_size(n: u64) -> anyhow::Result<u32> {
    u32::try_from(n).map_err(|_| anyhow::anyhow!("--max-value-size {n} is above 4 GiB"))
}

/// `--storage` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum Storage {
    /// On disk.
    File,
    /// In memory.
    Memory,
}

/// A bucket and a key.
#[derive(Debug, Args)]
pub(crate) struct KeyArgs {
    /// The bucket.
    bucket: String,
    /// The key.
    key: String,
}

/// `kv get` options.
#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// The entry at this revision instead of the newest.
    #[arg(long, conflicts_with = "at")]
    revision: Option<u64>,
    /// The value as it was at this time (RFC 3339, or an age such as 10m).
    #[arg(long, value_parser = parse::since)]
    at: Option<SystemTime>,
    /// Print only the value, as it is (wins over --json).
    #[arg(long)]
    raw: bool,
}

/// `kv put` / `create` / `update` arguments.
#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    #[command(flatten)]
    key: KeyArgs,
    /// The value. When omitted it is read from stdin.
    value: Option<String>,
}

/// `kv watch` options.
#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    /// The bucket.
    bucket: String,
    /// Only keys matching this filter (`*` one token, `>` the rest).
    #[arg(default_value = ">")]
    filter: String,
    /// Only changes made from now on.
    #[arg(long, conflicts_with = "from_revision")]
    updates_only: bool,
    /// Every entry from this revision on, then live.
    #[arg(long)]
    from_revision: Option<u64>,
    /// Stop after this many entries.
    #[arg(long)]
    count: Option<u64>,
}

/// Runs a `kv` verb.
pub(crate) async fn run(global: &Global, command: KvCommand) -> anyhow::Result<()> {
    let access = match &command {
        KvCommand::Ls
        | KvCommand::Info { .. }
        | KvCommand::Get(_)
        | KvCommand::History(_)
        | KvCommand::Keys { .. } => Access::ReadOnly,
        KvCommand::Edit(_) | KvCommand::Rm { .. } => Access::Existing,
        _ => Access::Create,
    };
    if let Some(bucket) = command.bucket() {
        validate_bucket(bucket)?;
    }
    match &command {
        KvCommand::Add(a) => check_replicas(global, usize::try_from(a.replicas).unwrap_or(1))?,
        KvCommand::Edit(EditArgs {
            replicas: Some(n), ..
        }) => check_replicas(global, usize::try_from(*n).unwrap_or(1))?,
        _ => {}
    }
    if let KvCommand::Rm { bucket, force } = &command {
        crate::confirm::confirm(
            *force,
            &format!("delete KV bucket {bucket} and every key in it"),
        )?;
    }
    let bus = open_bus(global.url(), access).await?;
    let reader = matches!(command, KvCommand::Watch(_));
    let result = run_on(global, &bus, command).await;
    if reader {
        finish_reader(&bus, global.url(), result).await
    } else {
        finish(&bus, global.url(), result).await
    }
}

impl KvCommand {
    fn bucket(&self) -> Option<&str> {
        Some(match self {
            KvCommand::Ls => return None,
            KvCommand::Add(a) => &a.bucket,
            KvCommand::Edit(a) => &a.bucket,
            KvCommand::Info { bucket }
            | KvCommand::Rm { bucket, .. }
            | KvCommand::Keys { bucket, .. } => bucket,
            KvCommand::Get(g) => &g.key.bucket,
            KvCommand::Put(p) | KvCommand::Create(p) | KvCommand::Update { put: p, .. } => {
                &p.key.bucket
            }
            KvCommand::Del(k) | KvCommand::Purge(k) | KvCommand::History(k) => &k.bucket,
            KvCommand::Watch(w) => &w.bucket,
        })
    }
}

async fn run_on(global: &Global, bus: &Bus, command: KvCommand) -> anyhow::Result<()> {
    match command {
        KvCommand::Add(a) => {
            let max_value_size = a.max_value_size.map(value_size).transpose()?;
            let config = KvConfig {
                bucket: a.bucket,
                description: a.description,
                history: a.history,
                ttl: a.ttl,
                max_value_size,
                max_bytes: a.max_bytes,
                storage: match a.storage {
                    Storage::File => StorageType::File,
                    Storage::Memory => StorageType::Memory,
                },
                replicas: usize::try_from(a.replicas).unwrap_or(1),
            };
            let bucket = config.bucket.clone();
            let kv = match bus.create_kv(config).await {
                Ok(kv) => kv,
                Err(durabus::Error::StreamNameInUse { .. }) => anyhow::bail!(
                    "cannot add KV bucket {bucket}: it exists with different settings; \
                     change them with `durabus kv edit {bucket} ...` (see `durabus kv info {bucket}`)"
                ),
                Err(e) => return Err(e.into()),
            };
            note_ephemeral(global, "the bucket");
            print_status(global, &kv.status().await?)
        }
        KvCommand::Edit(a) => {
            let current = bus.kv(&a.bucket).await?.status().await?;
            let config = a.apply(current.config.clone())?;
            if config == current.config {
                if global.json {
                    return print_json(&status_json(&current)).map_err(Into::into);
                }
                return print_text(&format!(
                    "KV bucket {} already has these settings; nothing changed",
                    a.bucket
                ))
                .map_err(Into::into);
            }
            bus.update_stream(config.stream_config()?)
                .await
                .with_context(|| format!("cannot edit KV bucket {}", a.bucket))?;
            let status = bus.kv(&a.bucket).await?.status().await?;
            if !global.json {
                print_text(&format!("updated KV bucket {}\n", a.bucket))?;
            }
            print_status(global, &status)
        }
        KvCommand::Ls => {
            let buckets = bus.list_kv().await?;
            if global.json {
                return print_json(&Value::Array(buckets.iter().map(status_json).collect()))
                    .map_err(Into::into);
            }
            if buckets.is_empty() {
                return print_text("no KV buckets").map_err(Into::into);
            }
            let mut table = Listing::new(["bucket", "entries", "size", "history", "ttl"], 1..4);
            for s in &buckets {
                table.add_row([
                    s.config.bucket.clone(),
                    s.values.to_string(),
                    bytes_human(s.bytes),
                    s.config.history.to_string(),
                    s.config.ttl.map_or_else(|| "-".into(), duration_human),
                ]);
            }
            print_text(&table.text()).map_err(Into::into)
        }
        KvCommand::Info { bucket } => print_status(global, &bus.kv(&bucket).await?.status().await?),
        KvCommand::Rm { bucket, .. } => {
            bus.delete_kv(&bucket).await?;
            done(
                global,
                json!({ "deleted": bucket }),
                &format!("deleted KV bucket {bucket}"),
            )
        }
        KvCommand::Get(g) => {
            let kv = bus.kv(&g.key.bucket).await?;
            let key = &g.key.key;
            let entry = match (g.revision, g.at) {
                (Some(rev), _) => kv.entry_at_revision(key, rev).await?,
                (None, Some(t)) => kv.entry_at_time(key, t).await?,
                (None, None) => kv.entry(key).await?,
            };
            let entry = entry.filter(|e| e.operation == Operation::Put);
            let Some(entry) = entry else {
                anyhow::bail!(
                    "key {key:?} has no value in bucket {:?}{}",
                    g.key.bucket,
                    match (g.revision, g.at) {
                        (Some(r), _) => format!(" at revision {r}"),
                        (None, Some(t)) => format!(" at {}", rfc3339(t)),
                        (None, None) => String::new(),
                    }
                );
            };
            if g.raw {
                print_raw(&entry.value, false).map_err(Into::into)
            } else if global.json {
                print_json(&entry_json(&entry)).map_err(Into::into)
            } else {
                print_raw(&entry.value, true).map_err(Into::into)
            }
        }
        KvCommand::Put(p) => {
            let (kv, value) = (bus.kv(&p.key.bucket).await?, read_payload(p.value)?);
            let rev = kv.put(&p.key.key, value).await?;
            print_revision(global, &p.key, rev)
        }
        KvCommand::Create(p) => {
            let (kv, value) = (bus.kv(&p.key.bucket).await?, read_payload(p.value)?);
            let rev = kv.create(&p.key.key, value).await?;
            print_revision(global, &p.key, rev)
        }
        KvCommand::Update { put: p, revision } => {
            let (kv, value) = (bus.kv(&p.key.bucket).await?, read_payload(p.value)?);
            let rev = kv.update(&p.key.key, value, revision).await?;
            print_revision(global, &p.key, rev)
        }
        KvCommand::Del(k) => {
            let rev = bus.kv(&k.bucket).await?.delete(&k.key).await?;
            print_revision(global, &k, rev)
        }
        KvCommand::Purge(k) => {
            let rev = bus.kv(&k.bucket).await?.purge(&k.key).await?;
            print_revision(global, &k, rev)
        }
        KvCommand::History(k) => {
            let history = bus.kv(&k.bucket).await?.history(&k.key).await?;
            if global.json {
                for e in &history {
                    print_json(&entry_json(e))?;
                }
                return Ok(());
            }
            if history.is_empty() {
                return print_text(&format!("key {:?} has no entries", k.key)).map_err(Into::into);
            }
            for e in &history {
                print_text(&entry_human(e))?;
            }
            Ok(())
        }
        KvCommand::Keys {
            bucket,
            filter,
            prefix,
        } => {
            let kv = bus.kv(&bucket).await?;
            let keys = match prefix {
                Some(p) => kv.keys_with_prefix(&p).await?,
                None => kv.keys_matching(&filter).await?,
            };
            if global.json {
                return print_json(&json!(keys)).map_err(Into::into);
            }
            for k in &keys {
                print_text(k)?;
            }
            Ok(())
        }
        KvCommand::Watch(args) => watch(global, bus, args).await,
    }
}

async fn watch(global: &Global, bus: &Bus, args: WatchArgs) -> anyhow::Result<()> {
    let kv = bus.kv(&args.bucket).await?;
    let mut w = match (args.updates_only, args.from_revision) {
        (true, _) => kv.watch_updates(&args.filter).await?,
        (false, Some(rev)) => kv.watch_from(&args.filter, rev).await?,
        (false, None) => kv.watch(&args.filter).await?,
    };
    let shutdown = shutdown_signal();
    tokio::pin!(shutdown);
    // Tests and scripts wait for this line.
    eprintln!(
        "watching {} in bucket {}; Ctrl-C to stop",
        args.filter, args.bucket
    );
    let mut seen = 0u64;
    while args.count.is_none_or(|n| seen < n) {
        let entry = tokio::select! {
            e = w.next() => e,
            () = &mut shutdown => break,
        };
        let Some(entry) = entry else { break };
        let entry = entry?;
        seen += 1;
        if global.json {
            print_json(&entry_json(&entry))?;
        } else {
            print_text(&entry_human(&entry))?;
        }
    }
    Ok(())
}

fn op_name(op: Operation) -> &'static str {
    match op {
        Operation::Put => "PUT",
        Operation::Delete => "DEL",
        Operation::Purge => "PURGE",
    }
}

fn entry_json(e: &Entry) -> Value {
    let mut o = Map::new();
    o.insert("bucket".into(), json!(e.bucket));
    o.insert("key".into(), json!(e.key));
    o.insert("revision".into(), json!(e.revision));
    o.insert("created".into(), json!(rfc3339_nanos(e.created)));
    o.insert("operation".into(), json!(op_name(e.operation)));
    insert_payload(&mut o, &e.value);
    Value::Object(o)
}

fn entry_human(e: &Entry) -> String {
    let value = match e.operation {
        Operation::Put => format!(": {}", String::from_utf8_lossy(&e.value)),
        _ => String::new(),
    };
    format!(
        "[{}] {} {} (revision {}){value}",
        rfc3339(e.created),
        op_name(e.operation),
        e.key,
        e.revision
    )
}

fn print_revision(global: &Global, k: &KeyArgs, revision: u64) -> anyhow::Result<()> {
    done(
        global,
        json!({ "bucket": k.bucket, "key": k.key, "revision": revision }),
        &revision.to_string(),
    )
}

fn done(global: &Global, json: Value, text: &str) -> anyhow::Result<()> {
    if global.json {
        print_json(&json)?;
    } else {
        print_text(text)?;
    }
    Ok(())
}

fn status_json(s: &KvStatus) -> Value {
    json!({
        "bucket": s.config.bucket,
        "description": s.config.description,
        "history": s.config.history,
        "ttl_ns": age_json(s.config.ttl),
        "max_value_size": limit_json(s.config.max_value_size),
        "max_bytes": limit_json(s.config.max_bytes),
        "storage": match s.config.storage { StorageType::File => "file", StorageType::Memory => "memory" },
        "replicas": s.config.replicas,
        "entries": s.values,
        "bytes": s.bytes,
    })
}

fn print_status(global: &Global, s: &KvStatus) -> anyhow::Result<()> {
    if global.json {
        return print_json(&status_json(s)).map_err(Into::into);
    }
    let c = &s.config;
    let lines = [
        format!("bucket:         {}", c.bucket),
        format!("entries:        {}", s.values),
        format!("size:           {}", bytes_human(s.bytes)),
        format!("history:        {}", c.history),
        format!(
            "ttl:            {}",
            c.ttl.map_or_else(|| "unlimited".into(), duration_human)
        ),
        format!(
            "max value size: {}",
            c.max_value_size
                .map_or_else(|| "unlimited".into(), |n| bytes_human(u64::from(n)))
        ),
        format!(
            "max bytes:      {}",
            c.max_bytes.map_or_else(|| "unlimited".into(), bytes_human)
        ),
        format!("storage:        {:?}", c.storage).to_lowercase(),
        format!("replicas:       {}", c.replicas),
    ];
    let mut lines = lines.to_vec();
    if let Some(d) = &c.description {
        lines.push(format!("description:    {d}"));
    }
    print_text(&lines.join("\n")).map_err(Into::into)
}
