//! `durabus-bench bench --peer nats-server --workloads w8`: W8 on a real
//! nats-server, the costs durabus's W8 measures where nats-server has them.
//!
//! The bench starts nats-server itself (`-a 127.0.0.1 -p <free port> -js
//! -sd <temp dir>`, file storage), because W8 times a restart: it fills the
//! server through raw async-nats (pipelined publishes, a window of acks),
//! stops it by pid (SIGTERM: a clean shutdown, as durabus's W8 closes its
//! store), starts it again on the same store directory and times from the
//! process's start until JetStream answers: a STREAM.INFO of the filled
//! stream holding every message (subjects), or STREAM.NAMES listing every
//! stream (streams), then STREAM.LIST over all its pages (the list time).
//! The server's resident memory is read from `/proc/<pid>/status`
//! (VmRSS): before and after filling, and after the recovery.
//!
//! The rows carry the names of `durabus_workloads::growth::names`, so the
//! report draws nats-server on the same curves as durabus. Consumers are
//! not measured here (durabus's W8 alone).

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use futures::StreamExt as _;

use durabus_workloads::growth::{bytes_per_subject, names};
use durabus_workloads::{Measurement, Plan};

/// The peer's label in the report.
pub(crate) const NATS_SERVER: &str = "nats-server";

/// JetStream acks in flight while filling.
const WINDOW: usize = 4096;

/// Stream creations in flight while filling.
const CREATE_WINDOW: usize = 64;

/// How long a restarted server may take to answer.
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(1800);

/// Payload of every message (as durabus's W8).
const PAYLOAD: &[u8] = b"0123456789abcdef";

/// A nats-server process of the bench's own.
struct Server {
    child: tokio::process::Child,
    port: u16,
}

/// A free loopback port.
fn free_port() -> anyhow::Result<u16> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("cannot find a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

/// Resident bytes of process `pid` (`VmRSS` of `/proc/<pid>/status`).
fn rss_of(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
    parse_vmrss(&text).with_context(|| format!("{path} has no VmRSS line"))
}

/// Open file descriptors of process `pid` (`/proc/<pid>/fd`).
fn fds_of(pid: u32) -> anyhow::Result<u64> {
    let path = format!("/proc/{pid}/fd");
    let dir = std::fs::read_dir(&path).with_context(|| format!("cannot read {path}"))?;
    Ok(dir.count() as u64)
}

/// The `VmRSS:  1234 kB` line of a `/proc/<pid>/status`, in bytes.
fn parse_vmrss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes as MiB.
#[allow(clippy::cast_precision_loss)]
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

impl Server {
    /// Starts `bin` on `port` over `dir`, logging to `dir/../<name>.log`;
    /// does not wait for it.
    fn spawn(bin: &Path, port: u16, dir: &Path, log: &Path) -> anyhow::Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("cannot open {}", log.display()))?;
        let err = log.try_clone()?;
        let child = tokio::process::Command::new(bin)
            .arg("-a")
            .arg("127.0.0.1")
            .arg("-p")
            .arg(port.to_string())
            .arg("-js")
            .arg("-sd")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {}", bin.display()))?;
        Ok(Self { child, port })
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn pid(&self) -> anyhow::Result<u32> {
        self.child.id().context("nats-server has exited")
    }

    fn rss(&self) -> anyhow::Result<u64> {
        rss_of(self.pid()?)
    }

    /// Connects, retrying until the server listens (or `timeout`).
    async fn connect(&self, timeout: Duration) -> anyhow::Result<async_nats::Client> {
        let url = self.url();
        let deadline = Instant::now() + timeout;
        loop {
            match async_nats::ConnectOptions::new()
                .name("durabus-bench-w8")
                .connection_timeout(Duration::from_secs(5))
                .connect(&url)
                .await
            {
                Ok(client) => return Ok(client),
                Err(e) if Instant::now() >= deadline => {
                    return Err(e).with_context(|| format!("nats-server on {url} never answered"))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(2)).await,
            }
        }
    }

    /// Stops it by pid: SIGTERM (a clean shutdown), SIGKILL after 60 s.
    async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            if tokio::time::timeout(Duration::from_secs(60), self.child.wait())
                .await
                .is_err()
            {
                eprintln!("nats-server (pid {pid}) ignored SIGTERM for 60 s: killing it");
                self.child.kill().await.context("cannot kill nats-server")?;
            }
        }
        Ok(())
    }
}

/// Where a part runs: a store directory, a log, and the server's port.
struct Site {
    bin: PathBuf,
    store: PathBuf,
    log: PathBuf,
    port: u16,
}

impl Site {
    fn new(bin: &Path, root: &Path, part: &str) -> anyhow::Result<Self> {
        let store = root.join(part);
        std::fs::create_dir_all(&store)
            .with_context(|| format!("cannot create {}", store.display()))?;
        Ok(Self {
            bin: bin.to_owned(),
            store,
            log: root.join(format!("{part}.log")),
            port: free_port()?,
        })
    }

    fn start(&self) -> anyhow::Result<Server> {
        Server::spawn(&self.bin, self.port, &self.store, &self.log)
    }
}

/// W8 on nats-server `bin`: the subjects and streams parts, each on a
/// server of its own over a fresh store, removed afterwards.
pub(crate) async fn run(plan: &Plan, bin: &Path) -> anyhow::Result<Vec<Measurement>> {
    if !bin.is_file() {
        bail!(
            "nats-server is missing at {} (apt-get install -y nats-server, or give --nats-server-bin)",
            bin.display()
        );
    }
    let root = tempfile::Builder::new()
        .prefix("durabus-bench-w8-nats-")
        .tempdir()
        .context("cannot create a temporary directory for nats-server's store")?;
    let mut rows = Vec::new();
    let site = Site::new(bin, root.path(), "subjects")?;
    rows.extend(
        subjects(plan, &site)
            .await
            .with_context(|| log_hint(&site))?,
    );
    std::fs::remove_dir_all(&site.store).ok();
    let site = Site::new(bin, root.path(), "streams")?;
    rows.extend(
        streams(plan, &site)
            .await
            .with_context(|| log_hint(&site))?,
    );
    for m in &mut rows {
        NATS_SERVER.clone_into(&mut m.peer);
    }
    let path = root.path().to_owned();
    root.close()
        .with_context(|| format!("cannot remove {}", path.display()))?;
    Ok(rows)
}

/// Where the server's log is, for an error.
fn log_hint(site: &Site) -> String {
    format!("W8 on nats-server (its log: {})", site.log.display())
}

/// Runs `part` on a started server, and stops the server whatever happens.
async fn with_server<T>(
    server: Server,
    part: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    let result = part.await;
    let stopped = server.stop().await;
    let value = result?;
    stopped?;
    Ok(value)
}

/// Publishes one message to each subject of `subjects`, `WINDOW` acks in flight.
async fn publish_pipelined(
    js: &jetstream::Context,
    subjects: impl Iterator<Item = String>,
) -> anyhow::Result<()> {
    let mut pending: VecDeque<jetstream::context::PublishAckFuture> =
        VecDeque::with_capacity(WINDOW);
    let payload = Bytes::from_static(PAYLOAD);
    for subject in subjects {
        if pending.len() >= WINDOW {
            if let Some(ack) = pending.pop_front() {
                ack.await.context("a publish was not acknowledged")?;
            }
        }
        pending.push_back(
            js.publish(subject, payload.clone())
                .await
                .context("publish failed")?,
        );
    }
    for ack in pending {
        ack.await.context("a publish was not acknowledged")?;
    }
    Ok(())
}

/// Stops `server`, starts it again on its store and waits until `ready`
/// says the recovered state is whole; returns the new server and the time
/// from its start.
async fn restart<F, Fut>(
    server: Server,
    site: &Site,
    ready: F,
) -> anyhow::Result<(Server, async_nats::Client, Duration)>
where
    F: Fn(jetstream::Context) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    server.stop().await?;
    let start = Instant::now();
    let server = site.start()?;
    let deadline = start + RECOVERY_TIMEOUT;
    let client = server.connect(RECOVERY_TIMEOUT).await?;
    let js = jetstream::new(client.clone());
    loop {
        // Until JetStream answers with the whole state (it may answer
        // "unavailable" or time out while it recovers).
        if let Ok(true) = ready(js.clone()).await {
            return Ok((server, client, start.elapsed()));
        }
        if Instant::now() >= deadline {
            bail!("nats-server did not recover within {RECOVERY_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// The subjects part: fill one stream with a message per distinct
/// subject, and at each step restart the server and time its recovery.
async fn subjects(plan: &Plan, site: &Site) -> anyhow::Result<Vec<Measurement>> {
    let mut rows = Vec::new();
    let Some(&last) = plan.w8.subjects.last() else {
        return Ok(rows);
    };
    let mut server = site.start()?;
    let client = match server.connect(Duration::from_secs(30)).await {
        Ok(c) => c,
        Err(e) => {
            server.stop().await.ok();
            return Err(e);
        }
    };
    let mut js = jetstream::new(client);
    let created = js
        .create_stream(stream::Config {
            name: "W8_SUBJECTS".to_owned(),
            subjects: vec!["telemetry.*.temp".to_owned()],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .context("cannot create W8_SUBJECTS");
    if let Err(e) = created {
        server.stop().await.ok();
        return Err(e);
    }
    let before = server.rss()?;
    let bar = plan.progress.bar("W8 nats subjects", last);
    let mut sent = 0u64;
    let mut prev = (0u64, 0u64);
    for &stop in &plan.w8.subjects {
        let start = Instant::now();
        let filled = publish_pipelined(&js, (sent..stop).map(|i| format!("telemetry.{i}.temp")));
        if let Err(e) = filled.await {
            server.stop().await.ok();
            return Err(e);
        }
        bar.inc(stop - sent);
        let fill = start.elapsed();
        sent = stop;
        let grown = server.rss()?.saturating_sub(before);
        let per = bytes_per_subject(prev, (stop, grown));
        prev = (stop, grown);
        rows.push(
            Measurement::point(names::SUBJECTS_RSS_FILL, "subjects", stop, mib(grown), "MiB")
                .note(format!(
                    "nats-server's VmRSS since the stream was empty; this step's publishes took {:.1} s",
                    fill.as_secs_f64()
                )),
        );
        rows.push(
            Measurement::point(names::SUBJECTS_BYTES, "subjects", stop, per, "B")
                .note("nats-server's RSS growth from the step before, over the subjects added"),
        );
        let (next, client, took) = restart(server, site, |js| async move {
            let mut s = js.get_stream("W8_SUBJECTS").await?;
            Ok(s.info().await?.state.messages == stop)
        })
        .await?;
        server = next;
        rows.push(
            Measurement::point(names::SUBJECTS_START, "subjects", stop, ms(took), "ms").note(
                "SIGTERM, then from the new process's start until STREAM.INFO shows every message",
            ),
        );
        rows.push(
            Measurement::point(
                names::SUBJECTS_RSS_OPEN,
                "subjects",
                stop,
                mib(server.rss()?),
                "MiB",
            )
            .note("nats-server's VmRSS right after the recovery"),
        );
        js = jetstream::new(client);
    }
    bar.finish_and_clear();
    with_server(server, async { Ok(()) }).await?;
    Ok(rows)
}

/// Milliseconds of `d`.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Creates streams `from..to` (`W8_S<i>` capturing `w8s.<i>.>`, file
/// storage), `CREATE_WINDOW` at a time, then one message each.
async fn add_streams(js: &jetstream::Context, from: u64, to: u64) -> anyhow::Result<()> {
    let creations = futures::stream::iter(from..to)
        .map(|i| {
            let js = js.clone();
            async move {
                js.create_stream(stream::Config {
                    name: format!("W8_S{i}"),
                    subjects: vec![format!("w8s.{i}.>")],
                    storage: stream::StorageType::File,
                    ..Default::default()
                })
                .await
                .with_context(|| format!("cannot create stream W8_S{i}"))
                .map(|_| ())
            }
        })
        .buffer_unordered(CREATE_WINDOW);
    let results: Vec<anyhow::Result<()>> = creations.collect().await;
    for r in results {
        r?;
    }
    publish_pipelined(js, (from..to).map(|i| format!("w8s.{i}.m"))).await
}

/// Counts what a paged JetStream listing yields.
async fn count_all<S, T, E>(mut items: S) -> anyhow::Result<u64>
where
    S: futures::Stream<Item = Result<T, E>> + Unpin,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut n = 0u64;
    while let Some(item) = items.next().await {
        item?;
        n += 1;
    }
    Ok(n)
}

/// The streams part: at each step, restart the server and time until
/// STREAM.NAMES lists every stream, then STREAM.LIST.
async fn streams(plan: &Plan, site: &Site) -> anyhow::Result<Vec<Measurement>> {
    let mut rows = Vec::new();
    let Some(&last) = plan.w8.streams.last() else {
        return Ok(rows);
    };
    let mut server = site.start()?;
    let mut client = match server.connect(Duration::from_secs(30)).await {
        Ok(c) => c,
        Err(e) => {
            server.stop().await.ok();
            return Err(e);
        }
    };
    let bar = plan.progress.bar("W8 nats streams", last);
    let mut made = 0u64;
    for &stop in &plan.w8.streams {
        let js = jetstream::new(client.clone());
        if let Err(e) = add_streams(&js, made, stop).await {
            server.stop().await.ok();
            return Err(e);
        }
        bar.inc(stop - made);
        made = stop;
        let (next, next_client, took) = restart(server, site, |js| async move {
            Ok(count_all(js.stream_names()).await? == stop)
        })
        .await?;
        server = next;
        client = next_client;
        let rss = server.rss()?;
        let fds = fds_of(server.pid()?)?;
        let js = jetstream::new(client.clone());
        let start = Instant::now();
        let listed = count_all(js.streams()).await;
        let list = start.elapsed();
        let listed = match listed {
            Ok(n) => n,
            Err(e) => {
                server.stop().await.ok();
                return Err(e);
            }
        };
        if listed != stop {
            server.stop().await.ok();
            bail!("STREAM.LIST returned {listed} streams, not {stop}");
        }
        rows.push(
            Measurement::point(names::STREAMS_START, "streams", stop, ms(took), "ms").note(
                "SIGTERM, then from the new process's start until STREAM.NAMES lists every stream",
            ),
        );
        rows.push(
            Measurement::point(names::STREAMS_LIST, "streams", stop, ms(list), "ms")
                .note("STREAM.LIST, every page, after the recovery"),
        );
        rows.push(
            Measurement::point(names::STREAMS_RSS_OPEN, "streams", stop, mib(rss), "MiB")
                .note("nats-server's VmRSS right after the recovery"),
        );
        #[allow(clippy::cast_precision_loss)]
        rows.push(
            Measurement::point(names::STREAMS_FILES, "streams", stop, fds as f64, "files")
                .note("nats-server's file descriptors right after the recovery"),
        );
    }
    bar.finish_and_clear();
    with_server(server, async { Ok(()) }).await?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vmrss_is_read_in_bytes_from_proc_status() {
        let status = "Name:\tnats-server\nVmPeak:\t  900000 kB\nVmRSS:\t   12345 kB\nThreads:\t9\n";
        assert_eq!(parse_vmrss(status), Some(12345 * 1024));
        assert_eq!(parse_vmrss("Name:\tx\n"), None);
    }
}
