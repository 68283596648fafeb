//! Push consumers: a consumer created with a `deliver_subject` is the
//! backend's consumer plus a task of the hub that fetches from it and
//! pushes each delivery to that subject, with idle heartbeats (what
//! ordered consumers, replays and KV watches use). The task belongs to the
//! connection that created the consumer and ends with it, with a
//! `CONSUMER.DELETE`, or once nobody has listened on the deliver subject
//! for the consumer's inactive threshold; an ephemeral consumer is then
//! deleted.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use durabus_core::api_error::codes;
use durabus_core::jsapi::{self, ConsumerConfigJson, ConsumerInfoJson};
use durabus_core::{subject, ApiError, ConsumerConfig, Error, HeaderMap};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::pull;
use crate::ctx::{ConnCtx, Entry, NEXT_ID};

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
    if !cfg.deliver_group.is_empty() {
        return Err(ApiError::new(
            codes::BAD_REQUEST,
            "push consumers with a deliver group are not supported by the durabus hub",
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
            let got = match backend.fetch(&self.stream, &self.name, BATCH, wait).await {
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
                let out = got
                    .iter()
                    .map(|d| pull::delivered_form(&self.stream, &self.name, d, self.headers_only))
                    .collect();
                self.ctx.deliver_all(&self.deliver, out).await;
            }
            let now = Instant::now();
            if let Some(hb) = self.heartbeat {
                if got.is_empty() && now >= last_sent + hb {
                    let h = HeaderMap::new()
                        .with("Nats-Last-Consumer", last_cseq.to_string())
                        .with("Nats-Last-Stream", last_sseq.to_string());
                    self.ctx
                        .status(&self.deliver, 100, "Idle Heartbeat", h)
                        .await;
                    last_sent = now;
                }
            }
        }
    }
}
