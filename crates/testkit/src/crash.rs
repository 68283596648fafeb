//! The kill -9 crash harness (docs/reliability.md, R1 and R10).
//!
//! One trial: a fresh data directory; then several rounds of
//!
//! 1. spawn the `crash_publisher` child on the directory; it publishes with
//!    msg ids from several concurrent tasks (so acks share group commits) and
//!    prints `ACK <seq> <id>` after each acknowledgement;
//! 2. SIGKILL it at a random moment: sometimes while it is still opening the
//!    store (recovering the previous round's kill), usually after a random
//!    number of acks plus a random delay;
//! 3. reopen the directory in this process and check against the acks:
//!    every acknowledged message is present exactly once at its acked seq;
//!    sequences are contiguous from 1; each task's messages are stored in
//!    order with no holes and at most its one in-flight unacked message
//!    beyond its last ack; re-publishing a stored msg id is answered as a
//!    duplicate with the original seq (dedup survives the crash); and
//!    publishing continues at `last_seq + 1`.
//!
//! The next round's child reopens the same directory, so recovery after a
//! kill is itself killed and re-verified.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{anyhow, bail, ensure, Context};
use durabus::{Error, Message, ReplayOptions, StreamConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

use rand::rngs::StdRng;
use rand::{Rng as _, SeedableRng as _};

use crate::file_url;

/// The stream `crash_publisher` writes.
pub const STREAM: &str = "CRASH";

/// How long any step of a trial may take before the trial fails.
const STEP: Duration = Duration::from_secs(60);

/// What a trial does.
#[derive(Debug, Clone)]
pub struct CrashPlan {
    /// Path of the `crash_publisher` binary
    /// (`env!("CARGO_BIN_EXE_crash_publisher")` in this crate's tests).
    pub exe: PathBuf,
    /// `always`, `none` or `periodic:<d>`: the child's durability. A process
    /// kill (unlike a power loss) must lose no ack under any of them.
    pub durability: String,
    /// Segment size for the child and the reopen (`None`: the default).
    /// Small segments put kills in the middle of segment rolls.
    pub segment_size: Option<u64>,
    /// With `Some(d)`, each child task deletes one of its own earlier
    /// messages after every d-th ack; acked deletes must survive the kill.
    pub delete_every: Option<u64>,
    /// With `Some(p)`, child task 0 purges the stream below a recent seq
    /// after every p-th ack; acked purges must survive the kill, and a purge
    /// cut off by it must be all or nothing.
    pub purge_every: Option<u64>,
    /// Kills per trial, each followed by a reopen and a check.
    pub rounds: usize,
    /// Concurrent publishing tasks in the child.
    pub concurrency: usize,
    /// The kill comes after a random number of acks below this.
    pub max_acks_before_kill: u64,
    /// ... plus a random delay below this.
    pub max_delay: Duration,
}

impl CrashPlan {
    /// Defaults: `always`, 3 rounds, 4 tasks, up to 150 acks and 3 ms.
    pub fn new(exe: impl Into<PathBuf>) -> Self {
        Self {
            exe: exe.into(),
            durability: "always".into(),
            segment_size: None,
            delete_every: None,
            purge_every: None,
            rounds: 3,
            concurrency: 4,
            max_acks_before_kill: 150,
            max_delay: Duration::from_millis(3),
        }
    }

    /// Sets the child's durability.
    #[must_use]
    pub fn durability(mut self, d: impl Into<String>) -> Self {
        self.durability = d.into();
        self
    }

    /// Sets a segment size (bytes) for the child and the reopen.
    #[must_use]
    pub fn segment_size(mut self, bytes: u64) -> Self {
        self.segment_size = Some(bytes);
        self
    }

    /// Makes the child delete some of its messages (see `delete_every`).
    #[must_use]
    pub fn delete_every(mut self, d: u64) -> Self {
        self.delete_every = Some(d);
        self
    }

    /// Makes child task 0 purge periodically (see `purge_every`).
    #[must_use]
    pub fn purge_every(mut self, p: u64) -> Self {
        self.purge_every = Some(p);
        self
    }

    /// The URL the parent reopens the directory with.
    fn reopen_url(&self, dir: &Path) -> String {
        let mut url = file_url(dir, "always");
        if let Some(bytes) = self.segment_size {
            url.push_str(&format!("&segment_size={bytes}"));
        }
        url
    }
}

/// When the parent SIGKILLs one round's child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// This long after the spawn, without waiting for the child to be
    /// ready: before, during or just after its open (the recovery of the
    /// previous round's kill).
    AfterSpawn(Duration),
    /// This long after the child's n-th acknowledgement.
    AfterAcks(u64, Duration),
}

impl std::fmt::Display for Kill {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Kill::AfterSpawn(d) => write!(f, "kill {d:?} after spawn"),
            Kill::AfterAcks(n, d) => write!(f, "kill {d:?} after {n} acks"),
        }
    }
}

impl CrashPlan {
    /// The kills of the trial with `seed`, one per round: one in 8 during
    /// open (up to 50 ms after the spawn), the others after up to
    /// `max_acks_before_kill` acks plus up to `max_delay`. A seed fixes
    /// these, not the moment the child is at when the signal lands.
    pub fn kills(&self, seed: u64) -> Vec<Kill> {
        let mut rng = StdRng::seed_from_u64(seed);
        (0..self.rounds)
            .map(|_| {
                let early = rng.random_ratio(1, 8);
                let target = rng.random_range(0..self.max_acks_before_kill.max(1));
                let delay =
                    Duration::from_micros(rng.random_range(0..=self.max_delay.as_micros() as u64));
                // Up to 50 ms after spawn: before, during or just after open.
                let early_delay = Duration::from_micros(rng.random_range(0..50_000));
                if early {
                    Kill::AfterSpawn(early_delay)
                } else {
                    Kill::AfterAcks(target, delay)
                }
            })
            .collect()
    }
}

/// What a passing trial saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrialReport {
    /// Acknowledgements received (child and parent).
    pub acked: usize,
    /// Messages stored at the end.
    pub stored: u64,
    /// Stored messages whose ack the kill cut off (allowed: in flight).
    pub stored_unacked: usize,
    /// Kills made before the child reported ready (during open/recovery).
    pub early_kills: usize,
    /// Deletes acknowledged.
    pub deleted: usize,
    /// Purges acknowledged.
    pub purges: usize,
}

impl TrialReport {
    fn add(&mut self, r: &TrialReport) {
        self.acked += r.acked;
        self.stored += r.stored;
        self.stored_unacked += r.stored_unacked;
        self.early_kills += r.early_kills;
        self.deleted += r.deleted;
        self.purges += r.purges;
    }
}

/// A child process of `crash_publisher`, with its output being read.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    lines: BufReader<ChildStdout>,
    stderr: tokio::task::JoinHandle<String>,
}

impl ChildProcess {
    /// Spawns `exe <dir> <args...>` with stdout and stderr captured and stdin
    /// piped (closing it ends a `hold` child).
    pub fn spawn(exe: &Path, dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut child = Command::new(exe)
            .arg(dir)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("spawning {}", exe.display()))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let mut stderr = child.stderr.take().context("child stderr")?;
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s).await;
            s
        });
        Ok(Self {
            child,
            lines: BufReader::new(stdout),
            stderr,
        })
    }

    /// The child's pid.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The next complete line, `None` at end of output. A last line cut
    /// short by a kill (no newline) is discarded: it was never fully said.
    pub async fn next_line(&mut self) -> anyhow::Result<Option<String>> {
        let mut line = String::new();
        let n = tokio::time::timeout(STEP, self.lines.read_line(&mut line))
            .await
            .map_err(|_| anyhow!("child printed nothing for {STEP:?}"))?
            .context("reading child stdout")?;
        if n == 0 || !line.ends_with('\n') {
            return Ok(None);
        }
        line.pop();
        Ok(Some(line))
    }

    /// Waits for the `READY <pid>` line; returns the pid it names.
    pub async fn ready(&mut self) -> anyhow::Result<u32> {
        match self.next_line().await? {
            Some(l) if l.starts_with("READY ") => {
                l[6..].trim().parse().context("READY line without a pid")
            }
            Some(l) => bail!("expected READY, child said {l:?}"),
            None => bail!("child exited before READY: {}", self.finish_stderr().await),
        }
    }

    /// Whether the child has exited on its own.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILLs the child (on unix `start_kill` is SIGKILL) and reaps it.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.start_kill().context("sending SIGKILL")?;
        tokio::time::timeout(STEP, self.child.wait())
            .await
            .map_err(|_| anyhow!("child not dead {STEP:?} after SIGKILL"))?
            .context("reaping child")?;
        Ok(())
    }

    /// Closes the child's stdin (ends a `hold` child gracefully) and waits.
    pub async fn close_stdin_and_wait(&mut self) -> anyhow::Result<std::process::ExitStatus> {
        drop(self.child.stdin.take());
        tokio::time::timeout(STEP, self.child.wait())
            .await
            .map_err(|_| anyhow!("child did not exit {STEP:?} after stdin closed"))?
            .context("waiting for child")
    }

    /// Everything the child wrote to stderr (after it exited).
    pub async fn finish_stderr(&mut self) -> String {
        match tokio::time::timeout(STEP, &mut self.stderr).await {
            Ok(Ok(s)) => s,
            _ => "<stderr unavailable>".into(),
        }
    }
}

/// A line of the child's output.
#[derive(Debug, PartialEq)]
enum Line {
    /// `ACK <seq> <id>`: a publish was acknowledged.
    Ack(u64, String),
    /// `DELETING <seq> <id>`: a delete is about to be requested.
    Deleting(u64, String),
    /// `DEL <seq> <id>`: a delete was acknowledged.
    Deleted(u64, String),
    /// `PURGING <up_to>`: a purge below `up_to` is about to be requested.
    Purging(u64),
    /// `PURGED <up_to> <count>`: that purge was acknowledged.
    Purged(u64),
    /// `READY <pid>`.
    Ready,
}

fn parse_line(line: &str) -> anyhow::Result<Line> {
    let mut parts = line.split(' ');
    let (kind, a, b, rest) = (parts.next(), parts.next(), parts.next(), parts.next());
    let seq = |s: &str| -> anyhow::Result<u64> {
        s.parse().with_context(|| format!("bad seq in {line:?}"))
    };
    match (kind, a, b, rest) {
        (Some("ACK"), Some(q), Some(id), None) => Ok(Line::Ack(seq(q)?, id.to_owned())),
        (Some("DELETING"), Some(q), Some(id), None) => Ok(Line::Deleting(seq(q)?, id.to_owned())),
        (Some("DEL"), Some(q), Some(id), None) => Ok(Line::Deleted(seq(q)?, id.to_owned())),
        (Some("PURGING"), Some(q), None, None) => Ok(Line::Purging(seq(q)?)),
        (Some("PURGED"), Some(q), Some(_), None) => Ok(Line::Purged(seq(q)?)),
        (Some("READY"), Some(_), None, None) => Ok(Line::Ready),
        _ => bail!("unexpected line from child: {line:?}"),
    }
}

/// What the children said, over all rounds of a trial.
#[derive(Debug, Default)]
struct Said {
    /// Acknowledged publishes: seq -> id.
    acked: BTreeMap<u64, String>,
    /// Deletes requested (acknowledged or cut off by the kill).
    deleting: BTreeMap<u64, String>,
    /// Deletes acknowledged.
    deleted: BTreeMap<u64, String>,
    /// Highest `up_to` of a purge requested (acknowledged or cut off).
    purge_requested: u64,
    /// Every `up_to` requested: one child per round, so several purges can
    /// be cut off by kills, each applied entirely or not at all.
    purge_bounds: BTreeSet<u64>,
    /// Highest `up_to` of an acknowledged purge.
    purge_acked: u64,
    /// Purges acknowledged.
    purges: usize,
}

impl Said {
    fn take(&mut self, line: Line, what: &str) -> anyhow::Result<()> {
        match line {
            Line::Ack(seq, id) => {
                if let Some(prev) = self.acked.insert(seq, id.clone()) {
                    bail!("{what}: seq {seq} acked twice, for {prev} and {id}");
                }
            }
            Line::Deleting(seq, id) => {
                self.deleting.insert(seq, id);
            }
            Line::Deleted(seq, id) => {
                self.deleted.insert(seq, id);
            }
            Line::Purging(up_to) => {
                self.purge_requested = self.purge_requested.max(up_to);
                self.purge_bounds.insert(up_to);
            }
            Line::Purged(up_to) => {
                self.purge_acked = self.purge_acked.max(up_to);
                self.purges += 1;
            }
            Line::Ready => {}
        }
        Ok(())
    }
}

/// `<tag>-<task>-<i>` -> (`<tag>-<task>`, i). Parent ids have no index.
fn producer_of(id: &str) -> (String, Option<u64>) {
    match id.rsplit_once('-') {
        Some((producer, i)) => match i.parse() {
            Ok(i) => (producer.to_owned(), Some(i)),
            Err(_) => (id.to_owned(), None),
        },
        None => (id.to_owned(), None),
    }
}

/// Runs one trial of `plan` with `seed` (the kills [`CrashPlan::kills`]
/// draws from it) in a fresh temp dir.
///
/// On failure the data directory is kept and its path is in the error, with
/// the round, the kill plan and the child's stderr.
pub async fn run_trial(plan: &CrashPlan, seed: u64) -> anyhow::Result<TrialReport> {
    run_kills(plan, &plan.kills(seed)).await
}

/// Runs one trial of `plan` with the given kills (one per round) in a fresh
/// temp dir; kept on failure, as by [`run_trial`].
pub async fn run_kills(plan: &CrashPlan, kills: &[Kill]) -> anyhow::Result<TrialReport> {
    let dir = crate::temp_dir();
    match trial_in(plan, kills, dir.path()).await {
        Ok(r) => Ok(r),
        Err(e) => {
            let kept = dir.keep();
            Err(e.context(format!("data directory kept at {}", kept.display())))
        }
    }
}

async fn trial_in(plan: &CrashPlan, kills: &[Kill], dir: &Path) -> anyhow::Result<TrialReport> {
    let mut said = Said::default();
    let mut report = TrialReport::default();
    for round in 0..plan.rounds {
        let tag = format!("r{round}");
        let concurrency = plan.concurrency.to_string();
        let mut args = vec![
            "publish".to_owned(),
            "--durability".to_owned(),
            plan.durability.clone(),
            "--tag".to_owned(),
            tag.clone(),
            "--concurrency".to_owned(),
            concurrency,
        ];
        if let Some(bytes) = plan.segment_size {
            args.extend(["--segment-size".to_owned(), bytes.to_string()]);
        }
        if let Some(d) = plan.delete_every {
            args.extend(["--delete-every".to_owned(), d.to_string()]);
        }
        if let Some(p) = plan.purge_every {
            args.extend(["--purge-every".to_owned(), p.to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = ChildProcess::spawn(&plan.exe, dir, &args)?;
        let kill = kills
            .get(round)
            .copied()
            .unwrap_or(Kill::AfterAcks(0, Duration::ZERO));
        let what = format!("round {round}: {kill}");
        match kill {
            Kill::AfterSpawn(early_delay) => {
                // Kill during open: recovery of the previous round's kill.
                tokio::time::sleep(early_delay).await;
                report.early_kills += 1;
            }
            Kill::AfterAcks(target, delay) => {
                child.ready().await.with_context(|| what.clone())?;
                let mut acks_seen = 0u64;
                while acks_seen < target {
                    match child.next_line().await.with_context(|| what.clone())? {
                        Some(l) => {
                            let line = parse_line(&l).with_context(|| what.clone())?;
                            acks_seen += u64::from(matches!(line, Line::Ack(..)));
                            said.take(line, &what)?;
                        }
                        None => bail!(
                            "{what}: child exited after {acks_seen} acks: {}",
                            child.finish_stderr().await
                        ),
                    }
                }
                // A blocking sleep for sub-millisecond precision; the child
                // keeps publishing meanwhile.
                std::thread::sleep(delay);
            }
        }
        if let Some(status) = child.exited() {
            bail!(
                "{what}: child exited on its own ({status}): {}",
                child.finish_stderr().await
            );
        }
        child.kill9().await.with_context(|| what.clone())?;
        // Acks printed before the kill are acks: read them all.
        while let Some(l) = child.next_line().await? {
            said.take(parse_line(&l).with_context(|| what.clone())?, &what)?;
        }
        let stderr = child.finish_stderr().await;
        // The reopen below recovers (cuts a torn tail, removes dropped
        // segments, rewrites the checkpoint): keep the files as the kill
        // left them until the round passed, for the failure report.
        let as_killed = dir.with_file_name(format!(
            "{}-round{round}-as-killed",
            dir.file_name().and_then(|n| n.to_str()).unwrap_or("trial")
        ));
        copy_dir(dir, &as_killed).context("copying the data directory before the reopen")?;
        verify(&plan.reopen_url(dir), &mut said, round, &mut report)
            .await
            .with_context(|| {
                format!(
                    "{what}; the files as the kill left them: {}; child stderr: {stderr:?}",
                    as_killed.display()
                )
            })?;
        std::fs::remove_dir_all(&as_killed)
            .with_context(|| format!("removing {}", as_killed.display()))?;
    }
    report.acked = said.acked.len();
    report.deleted = said.deleted.len();
    report.purges = said.purges;
    Ok(report)
}

/// Copies directory `from` (recursively; files and directories only) to `to`.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("listing {}", from.display()))? {
        let entry = entry?;
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type()?.is_dir() {
            copy_dir(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

/// Reopens the store at `url` and checks it against what the children
/// said; then re-publishes a stored id (must be a duplicate) and publishes
/// one more message (recorded as acked).
async fn verify(
    url: &str,
    said: &mut Said,
    round: usize,
    report: &mut TrialReport,
) -> anyhow::Result<()> {
    let bus = durabus::connect(url)
        .await
        .context("reopening the data directory after the kill")?;
    let cfg = StreamConfig::new(STREAM).subjects(["crash.>"]);
    let state = match bus.stream_info(STREAM).await {
        Ok(info) => info.state,
        Err(Error::StreamNotFound { .. }) => {
            ensure!(
                said.acked.is_empty(),
                "stream {STREAM} lost after {} acks",
                said.acked.len()
            );
            bus.create_stream(cfg.clone()).await?.state
        }
        Err(e) => return Err(e).context("stream_info after reopen"),
    };
    let mut replay = bus
        .replay(STREAM, ReplayOptions::from_seq(1).stop_at_end())
        .await
        .context("replay after reopen")?;
    let mut stored: BTreeMap<u64, String> = BTreeMap::new();
    let mut order = Vec::new();
    while let Some(m) = tokio::time::timeout(STEP, replay.next())
        .await
        .map_err(|_| anyhow!("replay stalled"))?
    {
        let m = m.context("replay after reopen")?;
        let payload = String::from_utf8(m.payload.to_vec()).context("payload not UTF-8")?;
        let msg_id = m.headers.get(durabus::NATS_MSG_ID).unwrap_or_default();
        ensure!(
            payload == msg_id,
            "seq {}: payload {payload:?} but msg id {msg_id:?} (torn or mixed record)",
            m.seq
        );
        ensure!(
            order.last().is_none_or(|p| *p < m.seq),
            "replay out of order at seq {}",
            m.seq
        );
        order.push(m.seq);
        stored.insert(m.seq, payload);
    }
    drop(replay);

    // State agrees with what replay shows.
    let last = state.last_seq;
    ensure!(
        state.messages == stored.len() as u64,
        "state says {} messages, replay yielded {}",
        state.messages,
        stored.len()
    );
    match stored.keys().next() {
        Some(first) => {
            ensure!(
                state.first_seq == *first,
                "first_seq {} but the first stored seq is {first}",
                state.first_seq
            );
            ensure!(
                state.num_deleted == last - first + 1 - state.messages,
                "num_deleted {} disagrees with {} messages in {first}..={last}",
                state.num_deleted,
                state.messages
            );
            ensure!(
                stored.keys().next_back() <= Some(&last),
                "a stored seq lies beyond last_seq {last}"
            );
        }
        None if last > 0 => ensure!(
            state.first_seq == last + 1,
            "empty stream with last_seq {last} has first_seq {}",
            state.first_seq
        ),
        None => {}
    }

    // Gaps only where a delete or purge was requested: sequences are
    // contiguous.
    let (purge_acked, purge_requested) = (said.purge_acked, said.purge_requested);
    for seq in 1..=last {
        ensure!(
            stored.contains_key(&seq) || said.deleting.contains_key(&seq) || seq < purge_requested,
            "seq {seq} is missing and was never deleted or purged (lost or not contiguous)"
        );
    }
    // An acknowledged purge stays done.
    if let Some((seq, id)) = stored.range(..purge_acked).next() {
        bail!("RESURRECTED: seq {seq} ({id}) is below an acknowledged purge up to {purge_acked}");
    }
    // Each purge cut off by a kill happened entirely or not at all: what is
    // left in the range is everything from one requested bound on (the
    // highest applied one; the acked bound if none was).
    if purge_requested > purge_acked {
        let maybe = |seq: &u64| !said.deleting.contains_key(seq);
        let present: Vec<u64> = stored
            .range(purge_acked..purge_requested)
            .map(|(s, _)| *s)
            .filter(maybe)
            .collect();
        let all: Vec<u64> = (purge_acked.max(1)..purge_requested.min(last + 1))
            .filter(maybe)
            .collect();
        let from = |b: u64| -> Vec<u64> { all.iter().copied().filter(|s| *s >= b).collect() };
        let whole = std::iter::once(purge_acked)
            .chain(said.purge_bounds.range(purge_acked..).copied())
            .any(|b| present == from(b));
        ensure!(
            present.is_empty() || whole,
            "a purge up to {purge_requested} cut off by the kill was applied partly: \
             {} of {} messages in {purge_acked}..{purge_requested} remain",
            present.len(),
            all.len()
        );
    }
    // An acknowledged delete stays deleted.
    for (seq, id) in &said.deleted {
        ensure!(
            !stored.contains_key(seq),
            "RESURRECTED: seq {seq} ({id}) was deleted and acknowledged, but is back after the kill"
        );
    }
    // Every ack present at its seq, unless a delete of it was requested.
    for (seq, id) in &said.acked {
        match stored.get(seq) {
            Some(got) if got == id => {}
            Some(got) => bail!("acked {id} at seq {seq}, but seq {seq} holds {got}"),
            None if said.deleting.contains_key(seq) || *seq < purge_requested => {}
            None => bail!("LOST ACK: {id} was acked at seq {seq}, store ends at {last}"),
        }
    }

    // Each producer: indexes in seq order; stored plus deleted indexes are
    // 0..m with no hole; m within one of its last ack.
    let mut indexes: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut seen = BTreeMap::new();
    for (seq, id) in &stored {
        if let Some(prev) = seen.insert(id.clone(), *seq) {
            bail!("{id} stored twice, at seq {prev} and {seq}");
        }
        if let (producer, Some(i)) = producer_of(id) {
            let v = indexes.entry(producer).or_default();
            ensure!(
                v.last().is_none_or(|p| *p < i),
                "{id} at seq {seq} is stored after a later message of its producer"
            );
            v.push(i);
        }
    }
    for id in said.deleting.values() {
        if let (producer, Some(i)) = producer_of(id) {
            indexes.entry(producer).or_default().push(i);
        }
    }
    let mut max_acked: BTreeMap<String, u64> = BTreeMap::new();
    for id in said.acked.values() {
        if let (producer, Some(i)) = producer_of(id) {
            let e = max_acked.entry(producer).or_insert(0);
            *e = (*e).max(i + 1);
        }
    }
    for (producer, v) in &mut indexes {
        v.sort_unstable();
        v.dedup();
        // A purge removes a producer's oldest messages: its indexes then
        // start above 0, but still have no hole.
        if purge_requested > 0 {
            let lowest_stored = seen
                .keys()
                .filter_map(|id| match producer_of(id) {
                    (p, Some(i)) if p == *producer => Some(i),
                    _ => None,
                })
                .min();
            match lowest_stored {
                Some(lo) => v.retain(|i| *i >= lo),
                None => v.clear(),
            }
        }
        let lo = v.first().copied().unwrap_or(0);
        let count = v.last().map_or(0, |m| m + 1);
        ensure!(
            v.iter().copied().eq(lo..count),
            "{producer}: stored and deleted indexes {v:?} have a hole"
        );
        let acked_count = max_acked.get(producer).copied().unwrap_or(0);
        ensure!(
            count <= acked_count + 1,
            "{producer}: {count} stored but only {acked_count} acked; at most one can be in flight"
        );
    }
    report.stored = state.messages;
    report.stored_unacked = stored
        .iter()
        .filter(|(seq, _)| !said.acked.contains_key(seq))
        .count();

    // R10: dedup state survives the kill.
    if let Some((seq, id)) = stored.iter().next_back() {
        let ack = bus
            .publish_message(Message::new("crash.retry", id.clone()).with_msg_id(id.clone()))
            .await
            .context("re-publishing a stored msg id")?
            .context("not captured")?;
        ensure!(
            ack.duplicate && ack.seq == *seq,
            "re-publishing {id} (stored at seq {seq}) after the kill gave {ack:?}"
        );
    }

    // Publishing continues after recovery.
    let id = format!("parent-{round}");
    let ack = bus
        .publish_message(Message::new("crash.parent", id.clone()).with_msg_id(id.clone()))
        .await
        .context("publishing after reopen")?
        .context("not captured")?;
    ensure!(
        ack.seq == last + 1 && !ack.duplicate,
        "first publish after reopen got {ack:?}, expected seq {}",
        last + 1
    );
    said.acked.insert(ack.seq, id);
    bus.close().await.context("closing after verify")?;
    Ok(())
}

/// The child binary under a name of this run's own: a hard link (a copy
/// across file systems) in a temp dir, removed when dropped. Cargo replaces
/// `target/debug/crash_publisher` when anything rebuilds it (unlinks it,
/// links the new file), so a build during a long run made spawns fail with
/// "No such file or directory", or could have switched the child to another
/// build half-way; the pinned name keeps the binary the run started with.
struct PinnedExe {
    /// Removed (with the link) when the run ends, passed or not.
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl PinnedExe {
    fn new(exe: &Path) -> anyhow::Result<PinnedExe> {
        let dir = crate::temp_dir();
        let path = dir.path().join(
            exe.file_name()
                .context("the child binary has no file name")?,
        );
        if std::fs::hard_link(exe, &path).is_err() {
            std::fs::copy(exe, &path)
                .with_context(|| format!("copying {} to {}", exe.display(), path.display()))?;
        }
        Ok(PinnedExe { _dir: dir, path })
    }

    /// `plan` with its child binary pinned.
    fn plan(&self, plan: &CrashPlan) -> CrashPlan {
        CrashPlan {
            exe: self.path.clone(),
            ..plan.clone()
        }
    }
}

/// One crash test at a time per process. The parent opens and closes the
/// store between kills; while it holds the LOCK fd, a child spawned by
/// another test thread gets a copy of that fd until it execs (O_CLOEXEC
/// closes it only then), so the next child could find the directory still
/// locked for a moment. That is flock's fork semantics, not a lost lock;
/// serializing the trials keeps spawns and store handles apart.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A trial that once failed, run by default on every run beside the random
/// ones. It fixes the kills, not the moment the child is at when each
/// lands, so [`run_cases`] runs it a few times.
#[derive(Debug, Clone, Copy)]
pub enum Case {
    /// The kills [`CrashPlan::kills`] draws from this seed.
    Seed(u64),
    /// These kills, one per round (a seed's kills under an earlier
    /// generator, which the seed no longer draws).
    Kills(&'static [Kill]),
}

/// Runs each case `repeats` times. Panics on the first failure naming the
/// case.
pub async fn run_cases(
    plan: &CrashPlan,
    cases: &[Case],
    repeats: u64,
    test_name: &str,
) -> TrialReport {
    let _serial = SERIAL.lock().await;
    let pinned = match PinnedExe::new(&plan.exe) {
        Ok(p) => p,
        Err(e) => panic!("{test_name}: {e:#}"),
    };
    let plan = &pinned.plan(plan);
    let mut total = TrialReport::default();
    for case in cases {
        let kills = match case {
            Case::Seed(seed) => plan.kills(*seed),
            Case::Kills(k) => k.to_vec(),
        };
        for r in 0..repeats {
            match run_kills(plan, &kills).await {
                Ok(report) => total.add(&report),
                Err(e) => panic!(
                    "{test_name}: regression case {case:?} failed on repeat {r} of {repeats}: {e:#}\n\
                     its kills: {kills:?}"
                ),
            }
        }
    }
    eprintln!(
        "{test_name}: {} regression cases x {repeats} passed: {total:?}",
        cases.len()
    );
    total
}

/// Runs `trials` trials of `plan`, seeds `base_seed + t`. Panics on the first
/// failure with the seed and a command line that reproduces it.
///
/// `DURABUS_CRASH_SEED` overrides the base seed; otherwise it is random and
/// printed.
pub async fn run_trials(plan: &CrashPlan, trials: u64, test_name: &str) -> TrialReport {
    let _serial = SERIAL.lock().await;
    let base: u64 = match std::env::var("DURABUS_CRASH_SEED") {
        Ok(s) => match s.parse() {
            Ok(n) => n,
            Err(_) => panic!("DURABUS_CRASH_SEED={s:?} is not a number"),
        },
        Err(_) => rand::random(),
    };
    eprintln!(
        "{test_name}: {trials} trials, durability {}, base seed {base}",
        plan.durability
    );
    let pinned = match PinnedExe::new(&plan.exe) {
        Ok(p) => p,
        Err(e) => panic!("{test_name}: {e:#}"),
    };
    let plan = &pinned.plan(plan);
    let mut total = TrialReport::default();
    for t in 0..trials {
        let seed = base.wrapping_add(t);
        match run_trial(plan, seed).await {
            Ok(r) => total.add(&r),
            Err(e) => panic!(
                "{test_name}: trial {t} of {trials} failed (seed {seed}): {e:#}\n\
                 reproduce: DURABUS_CRASH_SEED={seed} DURABUS_CRASH_TRIALS=1 \
                 cargo test -p durabus-testkit --test kill9 {test_name}"
            ),
        }
    }
    eprintln!("{test_name}: passed: {total:?}");
    total
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// A seed names its kills only under this generator: a change of
    /// generator (as from testkit's SplitMix to rand's `StdRng`) silently
    /// changes what every recorded seed and `Case::Seed` reproduces. This
    /// pins it; if it must change, move seeds worth keeping to
    /// `Case::Kills` first.
    #[test]
    fn a_seed_draws_the_same_kills() {
        let plan = CrashPlan::new("unused");
        let ms = |us| Duration::from_micros(us);
        assert_eq!(
            plan.kills(12_526_061_570_303_276_835),
            [
                Kill::AfterAcks(133, ms(2_293)),
                Kill::AfterAcks(8, ms(575)),
                Kill::AfterAcks(149, ms(1_318)),
            ]
        );
        assert_eq!(plan.kills(7), plan.kills(7));
        assert_eq!(
            Kill::AfterSpawn(ms(1_500)).to_string(),
            "kill 1.5ms after spawn"
        );
    }

    #[test]
    fn ack_lines_and_ids_parse() {
        assert_eq!(
            parse_line("ACK 7 r0-1-3").unwrap(),
            Line::Ack(7, "r0-1-3".into())
        );
        assert_eq!(
            parse_line("DEL 2 r0-1-0").unwrap(),
            Line::Deleted(2, "r0-1-0".into())
        );
        assert_eq!(parse_line("READY 42").unwrap(), Line::Ready);
        assert!(parse_line("ACK 7").is_err());
        assert!(parse_line("garbage").is_err());
        assert_eq!(producer_of("r0-1-3"), ("r0-1".into(), Some(3)));
        assert_eq!(producer_of("parent-2"), ("parent".into(), Some(2)));
    }

    /// Stores `ids` in order in a fresh CRASH stream and runs `verify` with
    /// `acked`; returns its error text ("" when it passed).
    async fn verify_with(ids: &[&str], acked: &[(u64, &str)]) -> String {
        verify_with_deletes(ids, acked, &[], &[], &[]).await
    }

    /// As `verify_with`, also deleting `really_deleted` seqs from the store
    /// and telling `verify` about `deleting` / `deleted` as a child would.
    async fn verify_with_deletes(
        ids: &[&str],
        acked: &[(u64, &str)],
        really_deleted: &[u64],
        deleting: &[(u64, &str)],
        deleted: &[(u64, &str)],
    ) -> String {
        let dir = crate::temp_dir();
        let bus = durabus::connect(&file_url(dir.path(), "none"))
            .await
            .unwrap();
        bus.create_stream(StreamConfig::new(STREAM).subjects(["crash.>"]))
            .await
            .unwrap();
        for id in ids {
            let msg = Message::new("crash.t", id.to_string()).with_msg_id(id.to_string());
            bus.publish_message(msg).await.unwrap().unwrap();
        }
        for seq in really_deleted {
            bus.delete_message(STREAM, *seq).await.unwrap();
        }
        bus.close().await.unwrap();
        let map = |v: &[(u64, &str)]| v.iter().map(|(s, i)| (*s, i.to_string())).collect();
        let mut said = Said {
            acked: map(acked),
            deleting: map(deleting),
            deleted: map(deleted),
            ..Said::default()
        };
        let url = file_url(dir.path(), "always");
        match verify(&url, &mut said, 0, &mut TrialReport::default()).await {
            Ok(()) => String::new(),
            Err(e) => format!("{e:#}"),
        }
    }

    // Negative controls: the checker must catch what it exists to catch.

    #[tokio::test]
    async fn verify_accepts_acks_plus_one_in_flight_message() {
        let err = verify_with(&["r0-0-0", "r0-0-1"], &[(1, "r0-0-0")]).await;
        assert_eq!(err, "");
    }

    #[tokio::test]
    async fn verify_reports_a_lost_ack() {
        let err = verify_with(&["r0-0-0"], &[(1, "r0-0-0"), (2, "r0-0-1")]).await;
        assert!(err.contains("LOST ACK"), "{err}");
    }

    #[tokio::test]
    async fn verify_reports_an_ack_at_the_wrong_seq() {
        let err = verify_with(&["r0-0-0", "r0-1-0"], &[(1, "r0-1-0")]).await;
        assert!(err.contains("holds"), "{err}");
    }

    #[tokio::test]
    async fn verify_reports_a_hole_in_a_producers_messages() {
        let err = verify_with(&["r0-0-0", "r0-0-2"], &[(1, "r0-0-0"), (2, "r0-0-2")]).await;
        assert!(err.contains("hole"), "{err}");
    }

    #[tokio::test]
    async fn verify_accepts_acked_and_in_flight_deletes() {
        let ids = ["r0-0-0", "r0-0-1", "r0-0-2"];
        let acked = [(1, "r0-0-0"), (2, "r0-0-1"), (3, "r0-0-2")];
        let err = verify_with_deletes(&ids, &acked, &[1], &[(1, "r0-0-0")], &[(1, "r0-0-0")]).await;
        assert_eq!(err, "");
        // A delete cut off by the kill may or may not have happened.
        let err = verify_with_deletes(&ids, &acked, &[], &[(2, "r0-0-1")], &[]).await;
        assert_eq!(err, "");
    }

    #[tokio::test]
    async fn verify_reports_a_resurrected_delete() {
        let ids = ["r0-0-0", "r0-0-1"];
        let acked = [(1, "r0-0-0"), (2, "r0-0-1")];
        let err = verify_with_deletes(&ids, &acked, &[], &[(1, "r0-0-0")], &[(1, "r0-0-0")]).await;
        assert!(err.contains("RESURRECTED"), "{err}");
    }

    #[tokio::test]
    async fn verify_reports_a_gap_no_delete_explains() {
        let ids = ["r0-0-0", "r0-0-1", "r0-0-2"];
        let acked = [(1, "r0-0-0"), (2, "r0-0-1"), (3, "r0-0-2")];
        let err = verify_with_deletes(&ids, &acked, &[2], &[], &[]).await;
        assert!(err.contains("never deleted"), "{err}");
    }

    /// Stores r0-0-0..n, purges below `really_purged` (if any), then runs
    /// `verify` told that purges up to `requested` / `acked` were made.
    async fn verify_with_purge(
        n: u64,
        really_purged: Option<u64>,
        requested: u64,
        acked: u64,
    ) -> String {
        verify_with_purges(n, really_purged, &[requested], acked).await
    }

    /// `requested`: the purge bounds the children asked for, in order.
    async fn verify_with_purges(
        n: u64,
        really_purged: Option<u64>,
        requested: &[u64],
        acked: u64,
    ) -> String {
        let dir = crate::temp_dir();
        let bus = durabus::connect(&file_url(dir.path(), "none"))
            .await
            .unwrap();
        bus.create_stream(StreamConfig::new(STREAM).subjects(["crash.>"]))
            .await
            .unwrap();
        let mut said = Said::default();
        for i in 0..n {
            let id = format!("r0-0-{i}");
            let msg = Message::new("crash.t", id.clone()).with_msg_id(id.clone());
            let ack = bus.publish_message(msg).await.unwrap().unwrap();
            said.acked.insert(ack.seq, id);
        }
        if let Some(up_to) = really_purged {
            let req = durabus::PurgeRequest {
                up_to_seq: Some(up_to),
                ..durabus::PurgeRequest::default()
            };
            bus.purge_stream(STREAM, req).await.unwrap();
        }
        bus.close().await.unwrap();
        said.purge_requested = requested.iter().copied().max().unwrap_or(0);
        said.purge_bounds.extend(requested.iter().copied());
        said.purge_acked = acked;
        let url = file_url(dir.path(), "always");
        match verify(&url, &mut said, 0, &mut TrialReport::default()).await {
            Ok(()) => String::new(),
            Err(e) => format!("{e:#}"),
        }
    }

    #[tokio::test]
    async fn verify_accepts_acked_and_cut_off_purges() {
        assert_eq!(verify_with_purge(10, Some(5), 5, 5).await, "");
        assert_eq!(verify_with_purge(10, Some(5), 5, 0).await, "");
        assert_eq!(verify_with_purge(10, None, 5, 0).await, "");
    }

    #[tokio::test]
    async fn verify_reports_a_resurrected_purge() {
        let err = verify_with_purge(10, None, 5, 5).await;
        assert!(err.contains("RESURRECTED"), "{err}");
    }

    /// Two rounds each cut off a purge (up to 8, then up to 6): only the
    /// second was applied. Each was whole, so nothing is reported; a purge
    /// of something in between is still reported as partial.
    #[tokio::test]
    async fn verify_accepts_two_cut_off_purges_when_each_is_whole() {
        assert_eq!(verify_with_purges(10, Some(6), &[8, 6], 0).await, "");
        let err = verify_with_purges(10, Some(7), &[8, 6], 0).await;
        assert!(err.contains("partly"), "{err}");
    }

    #[tokio::test]
    async fn verify_reports_a_partly_applied_purge() {
        let err = verify_with_purge(10, Some(3), 6, 0).await;
        assert!(err.contains("partly"), "{err}");
    }

    #[tokio::test]
    async fn verify_reports_more_unacked_messages_than_can_be_in_flight() {
        let err = verify_with(&["r0-0-0", "r0-0-1", "r0-0-2"], &[(1, "r0-0-0")]).await;
        assert!(err.contains("at most one"), "{err}");
    }
}
