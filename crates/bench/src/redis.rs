//! The Redis Streams peer of `durabus-bench bench --peer redis --redis-url URL`:
//! W1-W4 written directly against Redis Streams with the `redis` crate, with
//! the same counts, payload and batch size as the durabus workloads. Each
//! entry is `XADD <key> * p <payload>`.
//!
//! - W1: XADD one at a time, each reply awaited, 1 connection.
//! - W2: pipelines of `--batch` XADDs, each pipeline's replies awaited before
//!   the next, 1 connection; then "pipelined 4x64": the same count over 4
//!   connections, each pipelining 64 XADDs (redis-benchmark's `-c 4 -P 64`,
//!   as `docs/performance.md` quotes redis), into a key of its own.
//! - W3: `CONFIG SET appendfsync always` (the previous value is restored
//!   afterwards), then XADD awaited each by 1 client, and by
//!   [`W3_CLIENTS`] concurrent clients (one connection each) sending
//!   [`W3_GROUP_FACTOR`] times as many, into a key of its own.
//! - W4 replay: XRANGE in pages of [`PAGE`] from the first entry to the last
//!   of the W1 + W2 key. W4 consume: a consumer group from the start,
//!   XREADGROUP COUNT `--batch`, then one pipeline of an XACK per id of each
//!   page, until all entries are acked.
//!
//! Every run uses keys of its own (`bench:<tag>`, `bench:<tag>:4x64`,
//! `benchsync:<tag>`), refuses keys that already exist, and DELs them
//! afterwards.

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use bytes::Bytes;
use indicatif::ProgressBar;
use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Value};

use durabus_workloads::{tick, Measurement, Plan, Workload, W3_GROUP_FACTOR};

use crate::run::Peer;

/// The rows' `peer`.
pub(crate) const PEER: &str = "redis/streams";

/// Concurrent clients in the second half of W3 (as `docs/performance.md` quotes redis).
pub(crate) const W3_CLIENTS: u64 = 50;

/// Entries per XRANGE page in W4 replay.
const PAGE: u64 = 1000;

/// Connections and pipeline depth of W2's "pipelined 4x64" row.
const X4_CONNECTIONS: u64 = 4;
/// See [`X4_CONNECTIONS`].
const X4_DEPTH: u64 = 64;

/// How long one reply (a whole pipeline's, with `appendfsync always` on a
/// busy disk too) may take; the crate's default is 500 ms.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// The consumer group and consumer of W4 consume.
const GROUP: &str = "bench";

/// The `--redis-url` to run the Redis peer on: `Some` when `--peer redis` is
/// asked for (alone, with `--redis-url`), `None` when it is not.
pub(crate) fn url_of<'a>(
    peers: &[Peer],
    redis_url: Option<&'a str>,
) -> anyhow::Result<Option<&'a str>> {
    if !peers.contains(&Peer::Redis) {
        if redis_url.is_some() {
            bail!("--redis-url is used only by --peer redis");
        }
        return Ok(None);
    }
    if peers.iter().any(|p| *p != Peer::Redis) {
        bail!("--peer redis runs alone: run durabus and redis in two bench commands");
    }
    match redis_url {
        Some(url) => Ok(Some(url)),
        None => bail!("--peer redis needs --redis-url redis://host:port"),
    }
}

/// W1-W4 of `plan` on the Redis server at `url`; every error names the URL.
pub(crate) async fn run_workloads(plan: &Plan, url: &str) -> anyhow::Result<Vec<Measurement>> {
    let shown = durabus::redact(url);
    let run = async {
        let client = redis::Client::open(url).context("invalid Redis URL")?;
        let mut con = connect(&client).await?;
        let keys = [
            format!("bench:{}", plan.tag),
            format!("bench:{}:4x64", plan.tag),
            format!("benchsync:{}", plan.tag),
        ];
        let existing: u64 = redis::cmd("EXISTS")
            .arg(&keys)
            .query_async(&mut con)
            .await
            .context("EXISTS failed")?;
        if existing > 0 {
            bail!("a bench key of this run ({}, ...) already exists", keys[0]);
        }
        let result = measure(plan, &client, &mut con, &keys).await;
        let deleted: redis::RedisResult<u64> =
            redis::cmd("DEL").arg(&keys).query_async(&mut con).await;
        let results = result?;
        deleted.with_context(|| format!("cannot DEL the bench keys {}", keys.join(" ")))?;
        Ok(results)
    };
    run.await
        .with_context(|| format!("Redis bench on {shown} failed"))
}

/// A connection of `client` with [`RESPONSE_TIMEOUT`].
async fn connect(client: &redis::Client) -> anyhow::Result<MultiplexedConnection> {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(5)))
        .set_response_timeout(Some(RESPONSE_TIMEOUT));
    client
        .get_multiplexed_async_connection_with_config(&config)
        .await
        .context("cannot connect")
}

/// The workloads of `plan`; `keys` are the main key, the 4x64 key and W3's.
async fn measure(
    plan: &Plan,
    client: &redis::Client,
    con: &mut MultiplexedConnection,
    keys: &[String; 3],
) -> anyhow::Result<Vec<Measurement>> {
    let [key, x4_key, sync_key] = keys;
    let size = plan.payload.len();
    let mut results = Vec::new();
    let mut stored = 0u64;
    if plan.workloads.contains(&Workload::W1) {
        let bar = plan.progress.bar("W1 XADD", plan.msgs);
        let elapsed = xadd_each(con, key, &plan.payload, plan.msgs, &bar).await?;
        stored += plan.msgs;
        results.push(row(Measurement::new(
            "W1",
            "publish, await each ack",
            plan.msgs,
            size,
            elapsed,
        )
        .note("1 connection, XADD awaited each")));
    }
    if plan.workloads.contains(&Workload::W2) {
        let bar = plan.progress.bar("W2 pipeline", plan.msgs);
        let elapsed = xadd_pipelined(con, key, &plan.payload, plan.msgs, plan.batch, &bar).await?;
        stored += plan.msgs;
        results.push(row(Measurement::new(
            "W2",
            "publish_batch",
            plan.msgs,
            size,
            elapsed,
        )
        .note(format!("1 connection, pipelines of {} XADD", plan.batch))));
        let bar = plan.progress.bar("W2 4x64", plan.msgs);
        let (sent, elapsed) = xadd_concurrent(
            client,
            x4_key,
            &plan.payload,
            plan.msgs,
            X4_CONNECTIONS,
            X4_DEPTH,
            &bar,
        )
        .await?;
        results.push(row(Measurement::new(
            "W2",
            "publish, pipelined 4x64",
            sent,
            size,
            elapsed,
        )
        .note(format!(
            "{X4_CONNECTIONS} connections, pipelines of {X4_DEPTH} XADD"
        ))));
    }
    if plan.workloads.contains(&Workload::W3) {
        results.extend(measure_sync(plan, client, con, sync_key).await?);
    }
    if plan.workloads.contains(&Workload::W4) {
        if stored == 0 {
            let bar = plan.progress.bar("W4 fill", plan.msgs);
            xadd_pipelined(con, key, &plan.payload, plan.msgs, plan.batch, &bar).await?;
            stored = plan.msgs;
        }
        let bar = plan.progress.bar("W4 replay", stored);
        let (count, elapsed) = replay_all(con, key, &bar).await?;
        if count != stored {
            bail!("W4: XRANGE returned {count} entries, but {stored} were added");
        }
        results.push(row(Measurement::new(
            "W4",
            "replay from seq 1",
            count,
            size,
            elapsed,
        )
        .note(format!("XRANGE pages of {PAGE}"))));
        let bar = plan.progress.bar("W4 consume", stored);
        let elapsed = consume_all(con, key, stored, plan.batch, &bar).await?;
        results.push(row(Measurement::new(
            "W4",
            "consume, explicit ack",
            stored,
            size,
            elapsed,
        )
        .note(format!(
            "consumer group, XREADGROUP COUNT {}, pipelined XACK each",
            plan.batch
        ))));
    }
    Ok(results)
}

/// `m` as a row of this peer.
fn row(mut m: Measurement) -> Measurement {
    m.peer = PEER.to_owned();
    m
}

/// W3 with `appendfsync always`, restoring the server's previous setting.
async fn measure_sync(
    plan: &Plan,
    client: &redis::Client,
    con: &mut MultiplexedConnection,
    key: &str,
) -> anyhow::Result<Vec<Measurement>> {
    let aof: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendonly")
        .query_async(con)
        .await
        .context("CONFIG GET appendonly failed")?;
    let aof_note = match aof.get(1).map(String::as_str) {
        Some("yes") => "AOF on, appendfsync always",
        _ => "appendfsync always, but AOF is off: nothing is fsynced",
    };
    let previous: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("appendfsync")
        .query_async(con)
        .await
        .context("CONFIG GET appendfsync failed")?;
    let Some(previous) = previous.get(1).cloned() else {
        bail!("CONFIG GET appendfsync returned no value");
    };
    set_appendfsync(con, "always").await?;
    let size = plan.payload.len();
    let result = async {
        let bar = plan.progress.bar("W3 1 client", plan.sync_msgs);
        let elapsed = xadd_each(con, key, &plan.payload, plan.sync_msgs, &bar).await?;
        let one = Measurement::new(
            "W3",
            "durability always, 1 publisher",
            plan.sync_msgs,
            size,
            elapsed,
        )
        .note(format!("1 client, XADD awaited each, {aof_note}"));
        let n = plan.sync_msgs * W3_GROUP_FACTOR;
        let bar = plan
            .progress
            .bar("W3 50 clients", n.div_ceil(W3_CLIENTS) * W3_CLIENTS);
        let (sent, elapsed) =
            xadd_concurrent(client, key, &plan.payload, n, W3_CLIENTS, 1, &bar).await?;
        let many = Measurement::new(
            "W3",
            &format!("durability always, {W3_CLIENTS} clients"),
            sent,
            size,
            elapsed,
        )
        .note(format!(
            "{W3_CLIENTS} connections, XADD awaited each, {aof_note}"
        ));
        anyhow::Ok(vec![row(one), row(many)])
    }
    .await;
    let restored = set_appendfsync(con, &previous).await;
    let results = result?;
    restored?;
    Ok(results)
}

/// `CONFIG SET appendfsync <value>`.
async fn set_appendfsync(con: &mut MultiplexedConnection, value: &str) -> anyhow::Result<()> {
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("appendfsync")
        .arg(value)
        .query_async(con)
        .await
        .with_context(|| format!("CONFIG SET appendfsync {value} failed"))?;
    Ok(())
}

/// `XADD <key> * p <payload>`.
fn xadd(key: &str, payload: &Bytes) -> redis::Cmd {
    let mut cmd = redis::cmd("XADD");
    cmd.arg(key).arg("*").arg("p").arg(payload.as_ref());
    cmd
}

/// W1: `n` XADDs, each reply awaited before the next.
async fn xadd_each(
    con: &mut MultiplexedConnection,
    key: &str,
    payload: &Bytes,
    n: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let cmd = xadd(key, payload);
    let start = Instant::now();
    for i in 1..=n {
        let _id: String = cmd
            .query_async(con)
            .await
            .with_context(|| format!("XADD {i} of {n} failed"))?;
        tick(bar, i);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(elapsed)
}

/// W2: `n` XADDs in pipelines of `depth`, each pipeline's replies awaited
/// before the next pipeline is sent.
async fn xadd_pipelined(
    con: &mut MultiplexedConnection,
    key: &str,
    payload: &Bytes,
    n: u64,
    depth: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let cmd = xadd(key, payload);
    let start = Instant::now();
    let mut sent = 0;
    while sent < n {
        let this = depth.min(n - sent);
        let mut pipe = redis::pipe();
        for _ in 0..this {
            pipe.add_command(cmd.clone());
        }
        let ids: Vec<String> = pipe
            .query_async(con)
            .await
            .with_context(|| format!("a pipeline of XADD failed after {sent} of {n}"))?;
        if ids.len() as u64 != this {
            bail!("a pipeline of {this} XADD returned {} replies", ids.len());
        }
        sent += this;
        bar.inc(this);
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok(elapsed)
}

/// `n` XADDs spread over `clients` connections of their own (opened before
/// the clock starts), each sending pipelines of `depth` (1: each awaited).
/// Returns the entries added and the time.
async fn xadd_concurrent(
    client: &redis::Client,
    key: &str,
    payload: &Bytes,
    n: u64,
    clients: u64,
    depth: u64,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, Duration)> {
    let per_client = n.div_ceil(clients).max(1);
    let mut connections = Vec::new();
    for _ in 0..clients {
        connections.push(connect(client).await?);
    }
    let start = Instant::now();
    let tasks: Vec<_> = connections
        .into_iter()
        .map(|mut con| {
            let (key, payload, bar) = (key.to_owned(), payload.clone(), bar.clone());
            tokio::spawn(async move {
                if depth == 1 {
                    let cmd = xadd(&key, &payload);
                    for i in 1..=per_client {
                        let _id: String = cmd
                            .query_async(&mut con)
                            .await
                            .with_context(|| format!("XADD {i} of {per_client} failed"))?;
                        bar.inc(1);
                    }
                } else {
                    let hidden = ProgressBar::hidden();
                    xadd_pipelined(&mut con, &key, &payload, per_client, depth, &hidden).await?;
                    bar.inc(per_client);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for task in tasks {
        task.await.context("a client task panicked")??;
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok((per_client * clients, elapsed))
}

/// W4: XRANGE from the first entry to the last in pages of [`PAGE`], each
/// page starting after the previous page's last id; returns the count and time.
async fn replay_all(
    con: &mut MultiplexedConnection,
    key: &str,
    bar: &ProgressBar,
) -> anyhow::Result<(u64, Duration)> {
    let start = Instant::now();
    let mut from = "-".to_owned();
    let mut count = 0u64;
    loop {
        let page: Value = redis::cmd("XRANGE")
            .arg(key)
            .arg(&from)
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(con)
            .await
            .with_context(|| format!("XRANGE failed after {count} entries"))?;
        let ids = entry_ids(page).context("unexpected XRANGE reply")?;
        let Some(last) = ids.last() else { break };
        from = format!("({last}");
        for _ in &ids {
            count += 1;
            tick(bar, count);
        }
        if (ids.len() as u64) < PAGE {
            break;
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    Ok((count, elapsed))
}

/// W4 (consume): a consumer group from the start of `key`; XREADGROUP of
/// `batch` new entries, then a pipeline of one XACK per id, until `n` were
/// acked; then the group is destroyed. The time includes the group's creation.
async fn consume_all(
    con: &mut MultiplexedConnection,
    key: &str,
    n: u64,
    batch: u64,
    bar: &ProgressBar,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(GROUP)
        .arg("0")
        .query_async(con)
        .await
        .context("XGROUP CREATE failed")?;
    let mut acked = 0u64;
    while acked < n {
        let reply: Value = redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(GROUP)
            .arg(GROUP)
            .arg("COUNT")
            .arg(batch)
            .arg("STREAMS")
            .arg(key)
            .arg(">")
            .query_async(con)
            .await
            .with_context(|| format!("XREADGROUP failed after {acked} acks"))?;
        let ids = read_group_ids(reply).context("unexpected XREADGROUP reply")?;
        if ids.is_empty() {
            bail!("W4 consume: nothing to read after {acked} of {n} acks");
        }
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("XACK").arg(key).arg(GROUP).arg(id);
        }
        let counts: Vec<u64> = pipe
            .query_async(con)
            .await
            .with_context(|| format!("XACK failed after {acked} acks"))?;
        let confirmed: u64 = counts.iter().sum();
        if confirmed != ids.len() as u64 {
            bail!("{} XACK acknowledged {confirmed} entries", ids.len());
        }
        for _ in &ids {
            acked += 1;
            tick(bar, acked);
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    let _destroyed: u64 = redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg(key)
        .arg(GROUP)
        .query_async(con)
        .await
        .context("XGROUP DESTROY failed")?;
    Ok(elapsed)
}

/// The ids of an XRANGE reply: an array of `[id, [field, value, ...]]`.
fn entry_ids(reply: Value) -> anyhow::Result<Vec<String>> {
    let Value::Array(entries) = reply else {
        bail!("expected an array of entries, got {}", kind(&reply));
    };
    entries
        .into_iter()
        .map(|entry| match entry {
            Value::Array(parts) => match parts.into_iter().next() {
                Some(Value::BulkString(id)) => {
                    String::from_utf8(id).context("an entry id is not UTF-8")
                }
                Some(Value::SimpleString(id)) => Ok(id),
                other => bail!(
                    "expected an entry id, got {}",
                    other.as_ref().map_or("nothing", kind)
                ),
            },
            other => bail!("expected an entry, got {}", kind(&other)),
        })
        .collect()
}

/// The ids of an XREADGROUP reply on one key: nil (nothing new), or
/// `[[key, entries]]` (RESP2) or `{key: entries}` (RESP3).
fn read_group_ids(reply: Value) -> anyhow::Result<Vec<String>> {
    let entries = match reply {
        Value::Nil => return Ok(Vec::new()),
        Value::Array(streams) => match streams.into_iter().next() {
            Some(Value::Array(pair)) => pair.into_iter().nth(1),
            _ => None,
        },
        Value::Map(streams) => streams.into_iter().next().map(|(_, entries)| entries),
        other => bail!("expected the streams read, got {}", kind(&other)),
    };
    match entries {
        Some(entries) => entry_ids(entries),
        None => bail!("expected one stream's entries"),
    }
}

/// A reply's kind, for error messages (never the whole reply).
fn kind(value: &Value) -> &'static str {
    match value {
        Value::Nil => "nil",
        Value::Int(_) => "an integer",
        Value::BulkString(_) => "a string",
        Value::Array(_) => "an array",
        Value::SimpleString(_) => "a status",
        Value::Okay => "OK",
        Value::Map(_) => "a map",
        Value::ServerError(_) => "an error",
        _ => "another kind of reply",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn entry(id: &str) -> Value {
        Value::Array(vec![
            Value::BulkString(id.as_bytes().to_vec()),
            Value::Array(vec![
                Value::BulkString(b"p".to_vec()),
                Value::BulkString(b"x".to_vec()),
            ]),
        ])
    }

    #[test]
    fn replies_give_their_entry_ids() {
        let entries = Value::Array(vec![entry("1-0"), entry("1-1")]);
        assert_eq!(entry_ids(entries.clone()).unwrap(), ["1-0", "1-1"]);
        let resp2 = Value::Array(vec![Value::Array(vec![
            Value::BulkString(b"k".to_vec()),
            entries.clone(),
        ])]);
        assert_eq!(read_group_ids(resp2).unwrap(), ["1-0", "1-1"]);
        let resp3 = Value::Map(vec![(Value::BulkString(b"k".to_vec()), entries)]);
        assert_eq!(read_group_ids(resp3).unwrap(), ["1-0", "1-1"]);
        assert!(read_group_ids(Value::Nil).unwrap().is_empty());
        assert!(entry_ids(Value::Int(3)).is_err());
        assert!(entry_ids(Value::Array(vec![Value::Okay])).is_err());
        assert!(read_group_ids(Value::Array(vec![])).is_err());
    }

    #[test]
    fn the_redis_peer_needs_its_url_and_runs_alone() {
        let url = Some("redis://127.0.0.1:1");
        assert_eq!(url_of(&[Peer::Redis], url).unwrap(), url);
        assert_eq!(url_of(&[Peer::Durabus], None).unwrap(), None);
        let missing = url_of(&[Peer::Redis], None).unwrap_err().to_string();
        assert!(missing.contains("--redis-url"), "{missing}");
        assert!(url_of(&[Peer::Durabus, Peer::Redis], url).is_err());
        assert!(url_of(&[Peer::Durabus], url).is_err());
    }
}
