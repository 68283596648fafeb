//! Helpers shared by the conformance cases: unique names, bounded waits,
//! publishing and collecting with context in every panic message.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use durabus::{
    AckKind, Bus, ConsumerConfig, ConsumerInfo, Delivery, Message, PublishAck, Replay,
    ReplayOptions, StoredMessage, StreamConfig, StreamInfo, StreamState, Subscription,
};

/// The longest any single condition is awaited before a case fails.
///
/// Generous on purpose: CI machines are slow and shared. A passing case
/// never waits this long; only a failing one does.
pub const WAIT: Duration = Duration::from_secs(10);

/// How long a case watches for something that must *not* arrive, when no
/// later sentinel message can prove its absence.
pub const QUIET: Duration = Duration::from_millis(200);

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Unique stream names and subjects for one case.
///
/// Every case takes its own, so cases can run in parallel against one shared
/// server (NATS) and be re-run against a server that kept old streams. The
/// tag combines the process id, a per-process counter and the clock.
#[derive(Debug, Clone)]
pub struct Names {
    root: String,
    tag: String,
}

/// Fresh names for the case called `case` (lowercase letters and `_`).
pub fn names(case: &str) -> Names {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let clock = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() % 1_000_000)
        .unwrap_or(0);
    let tag = format!("{}_{n}_{clock}", std::process::id());
    Names {
        root: format!("cf_{case}_{tag}"),
        tag,
    }
}

impl Names {
    /// A stream name unique to this case: `<base>_<tag>`.
    pub fn stream(&self, base: &str) -> String {
        format!("{base}_{}", self.tag)
    }

    /// A subject under this case's root: `<root>.<rest>`.
    pub fn subject(&self, rest: &str) -> String {
        format!("{}.{rest}", self.root)
    }

    /// The single-token root all of this case's subjects start with.
    pub fn root(&self) -> &str {
        &self.root
    }

    /// Every subject of this case: `<root>.>`.
    pub fn all(&self) -> String {
        format!("{}.>", self.root)
    }

    /// A stream named `<base>_<tag>` capturing every subject of this case.
    pub fn stream_config(&self, base: &str) -> StreamConfig {
        StreamConfig::new(self.stream(base)).subjects([self.all()])
    }
}

/// Creates a stream, panicking with the config on failure.
pub async fn create(bus: &Bus, config: StreamConfig) -> StreamInfo {
    match bus.create_stream(config.clone()).await {
        Ok(info) => info,
        Err(e) => panic!("create_stream({config:?}) failed: {e}"),
    }
}

/// The state of stream `name`, panicking on failure.
pub async fn state(bus: &Bus, name: &str) -> StreamState {
    match bus.stream_info(name).await {
        Ok(info) => info.state,
        Err(e) => panic!("stream_info({name:?}) failed: {e}"),
    }
}

/// Publishes and expects a stream to capture the message.
pub async fn publish_captured(bus: &Bus, message: Message) -> PublishAck {
    let subject = message.subject.clone();
    match bus.publish_message(message).await {
        Ok(Some(ack)) => ack,
        Ok(None) => panic!("publish to {subject:?} was not captured by any stream"),
        Err(e) => panic!("publish to {subject:?} failed: {e}"),
    }
}

/// Publishes `payload` to `subject` and expects it to be captured.
pub async fn publish_payload(bus: &Bus, subject: &str, payload: &str) -> PublishAck {
    publish_captured(bus, Message::new(subject, payload.to_owned())).await
}

/// Publishes `n` captured messages with payloads `"<i>"` (0-based); returns
/// the acknowledged sequences.
pub async fn publish_n(bus: &Bus, subject: &str, n: usize) -> Vec<u64> {
    let mut seqs = Vec::with_capacity(n);
    for i in 0..n {
        seqs.push(publish_payload(bus, subject, &i.to_string()).await.seq);
    }
    seqs
}

/// The next message of a subscription, waiting at most [`WAIT`].
pub async fn next_message(sub: &mut Subscription) -> Message {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(m)) => m,
        Ok(None) => panic!("subscription {:?} ended unexpectedly", sub.filter()),
        Err(_) => panic!("no message on {:?} within {WAIT:?}", sub.filter()),
    }
}

/// Asserts that nothing arrives on `sub` within [`QUIET`].
pub async fn assert_quiet(sub: &mut Subscription) {
    if let Ok(Some(m)) = tokio::time::timeout(QUIET, sub.next()).await {
        panic!(
            "subscription {:?} received an unexpected message on {:?}: {:?}",
            sub.filter(),
            m.subject,
            m.payload
        );
    }
}

/// The next message of a replay, waiting at most [`WAIT`].
pub async fn next_stored(replay: &mut Replay) -> StoredMessage {
    match tokio::time::timeout(WAIT, replay.next()).await {
        Ok(Some(Ok(m))) => m,
        Ok(Some(Err(e))) => panic!("replay yielded an error: {e}"),
        Ok(None) => panic!("replay ended unexpectedly"),
        Err(_) => panic!("replay yielded nothing within {WAIT:?}"),
    }
}

/// Every message of a bounded replay (`stop_at_end` is forced on), in order.
pub async fn replay_all(bus: &Bus, stream: &str, options: ReplayOptions) -> Vec<StoredMessage> {
    let options = options.stop_at_end();
    let mut replay = match bus.replay(stream, options.clone()).await {
        Ok(r) => r,
        Err(e) => panic!("replay({stream:?}, {options:?}) failed: {e}"),
    };
    let mut out = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, replay.next()).await {
            Ok(Some(Ok(m))) => out.push(m),
            Ok(Some(Err(e))) => panic!("replay of {stream:?} yielded an error: {e}"),
            Ok(None) => return out,
            Err(_) => panic!(
                "bounded replay of {stream:?} did not end within {WAIT:?} (got {} messages)",
                out.len()
            ),
        }
    }
}

/// Sequences of messages.
pub fn seqs(messages: &[StoredMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.seq).collect()
}

/// Polls `condition` every 20 ms until it holds, failing after `limit`.
///
/// For conditions only a clock can bring about (age expiry, dedup window),
/// where there is no event to await.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if condition().await {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            panic!("{what}: not true within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Asserts that a result is an error matching a pattern, printing what it
/// was otherwise. An optional `if` guard checks the error's fields.
#[macro_export]
macro_rules! assert_err {
    ($result:expr, $pattern:pat $(if $guard:expr)? $(,)?) => {
        match $result {
            Err($pattern) $(if $guard)? => {}
            other => panic!(
                "expected Err({}){}, got {:?}",
                stringify!($pattern),
                concat!($(" if ", stringify!($guard))?),
                other.map(|_| "Ok(..)")
            ),
        }
    };
}

/// Creates a consumer on `stream`, panicking with the config on failure.
pub async fn consumer(bus: &Bus, stream: &str, config: ConsumerConfig) -> ConsumerInfo {
    match bus.create_consumer(stream, config.clone()).await {
        Ok(info) => info,
        Err(e) => panic!("create_consumer({stream:?}, {config:?}) failed: {e}"),
    }
}

/// One fetch of up to `batch`, waiting up to `expires`, panicking on error.
pub async fn fetch(
    bus: &Bus,
    stream: &str,
    consumer: &str,
    batch: usize,
    expires: Duration,
) -> Vec<Delivery> {
    match bus.fetch(stream, consumer, batch, expires).await {
        Ok(d) => d,
        Err(e) => panic!("fetch({stream:?}, {consumer:?}) failed: {e}"),
    }
}

/// Fetches until `n` deliveries arrived (each fetch waiting up to 1 s),
/// failing after [`WAIT`].
pub async fn fetch_n(bus: &Bus, stream: &str, consumer: &str, n: usize) -> Vec<Delivery> {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut out = Vec::new();
    while out.len() < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} deliveries within {WAIT:?}",
            out.len()
        );
        let more = fetch(bus, stream, consumer, n - out.len(), Duration::from_secs(1)).await;
        out.extend(more);
    }
    out
}

/// Settles a delivery and waits for the backend to apply it, panicking on
/// error.
pub async fn settle(bus: &Bus, delivery: &Delivery, kind: AckKind) {
    if let Err(e) = bus.ack_confirmed(delivery, kind).await {
        panic!(
            "{kind:?} of stream seq {} failed: {e}",
            delivery.stream_seq()
        );
    }
}

/// Stream sequences of deliveries.
pub fn delivered_seqs(deliveries: &[Delivery]) -> Vec<u64> {
    deliveries.iter().map(Delivery::stream_seq).collect()
}

/// `tasks` tasks each try `per_task` JSON increments of `key` with
/// `update_json_with` (up to 100 retries); returns how many returned Ok.
/// A `Conflict` is a lost increment, any other error a failure.
pub async fn increment_concurrently(
    kv: &durabus::Kv,
    key: &str,
    tasks: usize,
    per_task: usize,
) -> u64 {
    let ok = std::sync::Arc::new(AtomicU64::new(0));
    let retry = durabus::kv::CasRetry {
        max_retries: 100,
        ..Default::default()
    };
    let handles: Vec<_> = (0..tasks)
        .map(|_| {
            let (kv, ok, key) = (kv.clone(), ok.clone(), key.to_owned());
            tokio::spawn(async move {
                for _ in 0..per_task {
                    match kv
                        .update_json_with(&key, retry, |n: Option<u64>| n.unwrap_or(0) + 1)
                        .await
                    {
                        Ok(_) => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(durabus::Error::Conflict { .. }) => {}
                        Err(e) => panic!("update_json of {key:?} failed: {e}"),
                    }
                }
            })
        })
        .collect();
    for h in handles {
        match tokio::time::timeout(WAIT * 6, h).await {
            Ok(joined) => joined.unwrap(),
            Err(_) => panic!("increments of {key:?} did not finish within {:?}", WAIT * 6),
        }
    }
    ok.load(Ordering::Relaxed)
}

/// Awaits `next` impatiently, to check cancel safety: round by round it is
/// polled once and dropped if not ready, or dropped after a timeout of 1
/// to 50 µs. `None` when it was cancelled (the future dropped unfinished).
pub async fn impatient<F: Future>(round: u64, next: F) -> Option<F::Output> {
    use futures::FutureExt as _;
    if round % 3 == 0 {
        next.now_or_never()
    } else {
        tokio::time::timeout(Duration::from_micros(1 + round % 50), next)
            .await
            .ok()
    }
}
