//! Push consumers: a consumer created with a `deliver_subject` is the
//! backend's consumer plus a task of the hub that fetches from it and
//! pushes each delivery to that subject, with idle heartbeats and flow
//! control (what ordered consumers, replays and KV watches use). With a
//! deliver group, each delivery goes to one member of that queue group.
//! The task belongs to the connection that created the consumer and ends
//! with it, with a
//! `CONSUMER.DELETE`, or once nobody has listened on the deliver subject
//! for the consumer's inactive threshold; an ephemeral consumer is then
//! deleted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use durabus_core::api_error::codes;
use durabus_core::jsapi::{self, ConsumerConfigJson, ConsumerInfoJson};
use durabus_core::{subject, ApiError, ConsumerConfig, Error, HeaderMap, Subscription};
use futures::FutureExt as _;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pull;
use crate::ctx::{ConnCtx, Delivered, Entry, NEXT_ID};
use crate::proto;

/// Most deliveries fetched at once.
const BATCH: usize = 256;
/// The longest a fetch waits, so the task notices a client gone quiet.
const ROUND: Duration = Duration::from_secs(1);
/// How often a push consumer nobody listens to looks again.
const INTEREST_POLL: Duration = Duration::from_millis(10);
/// How long an ephemeral push consumer outlives its last subscriber when
/// its configuration does not say.
const DEFAULT_INACTIVE: Duration = Duration::from_secs(5);

/// Creates a push consumer on `stream` and starts delivering it.
pub(crate) async fn create(
    ctx: &Arc<ConnCtx>,
    stream: &str,
    cfg: ConsumerConfigJson,
) -> Result<ConsumerInfoJson, ApiError> {
    let deliver = cfg.deliver_subject.clone();
    if subject::validate_publish(&deliver).is_err() {
        return Err(ApiError::new(
            codes::BAD_REQUEST,
            "consumer deliver subject has wildcards",
        ));
    }
    let config = ConsumerConfig::from(cfg.clone());
    let ephemeral = config.durable_name.is_none();
    let inactive = config.inactive_threshold.unwrap_or(DEFAULT_INACTIVE);
    let info = ctx
        .shared
        .backend
        .create_consumer(stream, config)
        .await
        .map_err(|e| super::api::consumer_error(&e))?;
    let key = (stream.to_owned(), info.name.clone());
    let stop = CancellationToken::new();
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    {
        let mut table = ctx.shared.push.lock();
        if table.contains_key(&key) {
            return Err(ApiError::new(
                codes::CONSUMER_EXISTING_ACTIVE,
                codes::CONSUMER_EXISTING_ACTIVE.description,
            ));
        }
        table.insert(
            key,
            Entry {
                id,
                config: cfg.clone(),
                stop: stop.clone(),
            },
        );
    }
    let task = Task {
        id,
        ctx: ctx.clone(),
        stream: stream.to_owned(),
        name: info.name.clone(),
        deliver,
        heartbeat: (cfg.idle_heartbeat > 0).then(|| jsapi::nanos_to_duration(cfg.idle_heartbeat)),
        headers_only: cfg.headers_only,
        group: !cfg.deliver_group.is_empty(),
        flow_control: cfg.flow_control,
        inactive,
        ephemeral,
    };
    ctx.shared.tracker.spawn(task.run(stop));
    let mut json = ConsumerInfoJson::from(&info);
    json.config = cfg;
    json.push_bound = true;
    Ok(json)
}

struct Task {
    id: u64,
    ctx: Arc<ConnCtx>,
    stream: String,
    name: String,
    deliver: String,
    heartbeat: Option<Duration>,
    headers_only: bool,
    /// A deliver group: each message to one member of the queue group.
    group: bool,
    flow_control: bool,
    inactive: Duration,
    ephemeral: bool,
}

impl Task {
    async fn run(self, stop: CancellationToken) {
        let closed = self.ctx.out.closed.clone();
        tokio::select! {
            () = stop.cancelled() => {}
            () = closed.cancelled() => {}
            () = self.deliver_loop() => {}
        }
        let key = (self.stream.clone(), self.name.clone());
        {
            let mut table = self.ctx.shared.push.lock();
            if table.get(&key).is_some_and(|e| e.id == self.id) {
                table.remove(&key);
            }
        }
        if self.ephemeral {
            let _ = self
                .ctx
                .shared
                .backend
                .delete_consumer(&self.stream, &self.name)
                .await;
        }
    }

    async fn deliver_loop(&self) {
        let backend = &self.ctx.shared.backend;
        let mut flow = match self.flow_control {
            true => Flow::start(self).await,
            false => None,
        };
        let (mut last_cseq, mut last_sseq) = (0u64, 0u64);
        let mut last_sent = Instant::now();
        let mut unheard: Option<Instant> = None;
        loop {
            // As nats-server: nothing is delivered while nobody listens (a
            // client may subscribe to the deliver subject after creating
            // the consumer).
            let now = Instant::now();
            if !self.ctx.has_interest(&self.deliver) {
                let since = *unheard.get_or_insert(now);
                if now >= since + self.inactive {
                    return;
                }
                tokio::time::sleep(INTEREST_POLL).await;
                continue;
            }
            unheard = None;
            let wait = self.heartbeat.map_or(ROUND, |hb| hb.min(ROUND));
            if let Some(flow) = &mut flow {
                flow.read_answers();
                if flow.stalled() {
                    // Nothing more until the subscriber answers; heartbeats
                    // say what it owes an answer to.
                    match tokio::time::timeout(wait, flow.answers.next()).await {
                        Ok(Some(m)) => flow.answered(&m.subject),
                        Ok(None) => return,
                        Err(_) => {
                            let stalled = flow.asked.as_ref().map(|(id, _)| id.as_str());
                            self.heartbeat(last_cseq, last_sseq, stalled).await;
                            last_sent = Instant::now();
                        }
                    }
                    continue;
                }
            }
            let batch = flow.as_ref().map_or(BATCH, Flow::batch);
            let got = match backend.fetch(&self.stream, &self.name, batch, wait).await {
                Ok(got) => got,
                Err(
                    Error::ConsumerNotFound { .. } | Error::StreamNotFound { .. } | Error::Closed,
                ) => return,
                Err(e) => {
                    tracing::warn!(stream = self.stream, consumer = self.name, error = %e, "push consumer: fetch failed");
                    tokio::time::sleep(ROUND).await;
                    continue;
                }
            };
            if let Some(d) = got.last() {
                last_cseq = d.consumer_seq();
                last_sseq = d.stream_seq();
                last_sent = Instant::now();
                let out: Vec<Delivered> = got
                    .iter()
                    .map(|d| pull::delivered_form(&self.stream, &self.name, d, self.headers_only))
                    .collect();
                let mut ask = None;
                if let Some(f) = &mut flow {
                    for d in &out {
                        ask = f.delivered(d.size()).or(ask);
                    }
                }
                if self.group {
                    self.ctx.deliver_routed(&self.deliver, out).await;
                } else {
                    self.ctx.deliver_all(&self.deliver, out).await;
                }
                if let Some(reply) = ask {
                    let block =
                        proto::header_block(&HeaderMap::new(), Some((100, "FlowControl Request")));
                    self.ctx
                        .deliver(&self.deliver, None, Some(&reply), Some(block), Bytes::new())
                        .await;
                }
            }
            let now = Instant::now();
            if let Some(hb) = self.heartbeat {
                if got.is_empty() && now >= last_sent + hb {
                    self.heartbeat(last_cseq, last_sseq, None).await;
                    last_sent = now;
                }
            }
        }
    }

    /// An idle heartbeat, saying the last delivery and, when delivery is
    /// stalled on flow control, the request it waits an answer to.
    async fn heartbeat(&self, last_cseq: u64, last_sseq: u64, stalled: Option<&str>) {
        let mut h = HeaderMap::new()
            .with("Nats-Last-Consumer", last_cseq.to_string())
            .with("Nats-Last-Stream", last_sseq.to_string());
        if let Some(id) = stalled {
            h = h.with("Nats-Consumer-Stalled", id);
        }
        self.ctx
            .status(&self.deliver, 100, "Idle Heartbeat", h)
            .await;
    }
}

/// The most bytes a flow-controlled push consumer has out unanswered, as
/// nats-server: the window starts at a sixteenth of it and doubles with
/// each answer.
const FLOW_LIMIT: usize = 32 * 1024 * 1024;

/// Flow control as nats-server does it: once half the window is out, the
/// subscriber gets a `100 FlowControl Request` with a reply subject under
/// `$JS.FC.<stream>.<consumer>.`; delivery stops while more than a whole
/// window is out, until it answers there.
struct Flow {
    /// Answers to flow-control requests.
    answers: Subscription,
    prefix: String,
    next: u64,
    window: usize,
    /// Bytes delivered and not yet covered by an answer.
    pending: usize,
    /// The (moving) mean size of deliveries, once there are some.
    mean: Option<usize>,
    /// The request waiting for an answer, and the bytes it covers.
    asked: Option<(String, usize)>,
}

impl Flow {
    async fn start(task: &Task) -> Option<Flow> {
        let prefix = format!("$JS.FC.{}.{}.", task.stream, task.name);
        let filter = format!("{prefix}*");
        match task.ctx.shared.backend.subscribe(&filter, None).await {
            Ok(answers) => Some(Flow {
                answers,
                prefix,
                next: 0,
                window: FLOW_LIMIT / 16,
                pending: 0,
                mean: None,
                asked: None,
            }),
            Err(e) => {
                tracing::warn!(stream = task.stream, consumer = task.name, error = %e, "push consumer: no flow control");
                None
            }
        }
    }

    fn stalled(&self) -> bool {
        self.pending > self.window
    }

    /// How many deliveries to fetch next: what fits in the window's room
    /// at the mean size so far (one while it is unknown), so delivery stops
    /// near the window as nats-server's, which counts message by message.
    fn batch(&self) -> usize {
        let room = self.window.saturating_sub(self.pending);
        self.mean
            .map_or(1, |mean| room / mean.max(1))
            .clamp(1, BATCH)
    }

    /// Counts a delivery of `size` bytes; the reply subject of a request
    /// to send when one is due.
    fn delivered(&mut self, size: usize) -> Option<String> {
        self.pending += size;
        self.mean = Some(self.mean.map_or(size, |m| (m * 7 + size) / 8));
        match &mut self.asked {
            None if self.pending > self.window / 2 => {
                self.next += 1;
                let id = format!("{}{}", self.prefix, self.next);
                self.asked = Some((id.clone(), self.pending));
                Some(id)
            }
            // An answer covers what was out when it was asked, and what
            // went out while more than a window was out then.
            Some((_, covered)) if self.pending - *covered >= self.window => {
                *covered += size;
                None
            }
            _ => None,
        }
    }

    /// An answer on `subject`: only the latest request's counts.
    fn answered(&mut self, subject: &str) {
        if let Some((_, covered)) = self.asked.take_if(|(id, _)| id == subject) {
            self.window = (self.window * 2).min(FLOW_LIMIT);
            self.pending = self.pending.saturating_sub(covered);
        }
    }

    /// Takes the answers already in.
    fn read_answers(&mut self) {
        while let Some(Some(m)) = self.answers.next().now_or_never() {
            self.answered(&m.subject);
        }
    }
}
