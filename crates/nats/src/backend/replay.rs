//! Replay: an ordered consumer (an ephemeral push consumer with flow
//! control and heartbeats), recreated after the last sequence seen when a
//! gap, a reconnect or a silence shows.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use durabus_core::api_error::codes;
use durabus_core::jsapi::{
    self, clamp_to_unix_nanos, duration_to_nanos, ConsumerConfigJson, ConsumerInfoJson,
    CreateConsumerRequestJson, DeliverPolicyJson, MsgGetRequestJson, MsgGetResponseJson,
    ReplayPolicy, SuccessJson,
};
use durabus_core::ArgumentError;
use durabus_core::{
    subject, AckPolicy, ApiRequest, ByteString, Error, Event, Replay, ReplayOptions, ReplayStart,
    Result, StoredMessage,
};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::broadcast;

use super::wire::from_nats_headers;
use super::NatsBackend;
use crate::api;

/// Idle heartbeat of replay consumers.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Idle heartbeat of bounded (stop_at_end) replays.
const BOUNDED_HEARTBEAT: Duration = Duration::from_millis(250);

impl NatsBackend {
    /// [`durabus_core::Backend::replay`].
    pub(super) async fn nats_replay(&self, stream: &str, options: ReplayOptions) -> Result<Replay> {
        self.check()?;
        durabus_core::validate_stream_name(stream)?;
        if let Some(f) = &options.filter {
            subject::validate_filter(f)?;
        }
        if options.start == ReplayStart::Sequence(0) {
            return Err(Error::invalid_argument(ArgumentError::StartSequenceZero));
        }
        let info = self.fetch_info(stream).await?;
        let end = options.stop_at_end.then_some(info.state.last_seq);
        let mut state = ReplayState {
            backend: self.clone(),
            stream: ByteString::from(stream),
            filter: options.filter.clone(),
            start: options.start,
            sub: None,
            consumer: None,
            next_cseq: 1,
            last_sseq: 0,
            end,
            done: false,
            events: self.subscribe_events(),
            idle_rounds: 0,
        };
        if end == Some(0) || (end.is_some() && info.state.messages == 0) {
            state.done = true;
        } else {
            let pending = state.start_consumer().await?;
            if end.is_some() && pending == 0 {
                state.done = true;
            }
        }
        let s = futures::stream::unfold(state, |mut st| async move {
            let item = st.next().await?;
            Some((item, st))
        })
        .take_until(self.closed_signal())
        .boxed();
        Ok(Replay::new(s))
    }
}

/// Whether a replay should wait and try again rather than end.
fn retryable(e: &Error) -> bool {
    e.is_connection_failure() || matches!(e, Error::JetStreamNotEnabled)
}

impl Drop for ReplayState {
    fn drop(&mut self) {
        self.release();
    }
}

/// An ordered consumer, driven by `next()`; all state lives here, so a
/// cancelled `next()` loses nothing.
struct ReplayState {
    backend: NatsBackend,
    /// Shared by every message yielded (a reference count, not a copy).
    stream: ByteString,
    filter: Option<String>,
    start: ReplayStart,
    sub: Option<async_nats::Subscriber>,
    consumer: Option<String>,
    /// The consumer sequence the next delivery must have.
    next_cseq: u64,
    /// The last stream sequence yielded.
    last_sseq: u64,
    /// Stop after this stream sequence (stop_at_end).
    end: Option<u64>,
    done: bool,
    /// Connection events: after a reconnect the consumer is recreated at
    /// once (a restarted server has lost it).
    events: broadcast::Receiver<Event>,
    /// Idle heartbeats of a bounded replay since the last delivery.
    idle_rounds: u32,
}

impl ReplayState {
    /// (Re)creates the consumer after `last_sseq`; returns its pending count.
    async fn start_consumer(&mut self) -> Result<u64> {
        let client = self.backend.client().clone();
        if let Some(old) = self.consumer.take() {
            let _ = self
                .backend
                .api::<SuccessJson>(
                    &format!("CONSUMER.DELETE.{}.{old}", self.stream),
                    &json!({}),
                )
                .await;
        }
        self.sub = None;
        let deliver = client.new_inbox();
        let sub = client
            .subscribe(deliver.clone())
            .await
            .map_err(|e| self.backend.closed_or(e))?;
        let mut cfg = ConsumerConfigJson {
            deliver_subject: deliver.to_string(),
            ack_policy: AckPolicy::None,
            max_deliver: 1,
            flow_control: true,
            idle_heartbeat: duration_to_nanos(self.heartbeat()),
            mem_storage: true,
            replay_policy: ReplayPolicy::Instant,
            num_replicas: 1,
            // A backstop: a dropped replay deletes its consumer itself.
            inactive_threshold: 30_000_000_000,
            ..ConsumerConfigJson::default()
        };
        if self.last_sseq > 0 {
            cfg.deliver_policy = DeliverPolicyJson::ByStartSequence;
            cfg.opt_start_seq = self.last_sseq + 1;
        } else {
            match self.start {
                ReplayStart::Sequence(s) => {
                    cfg.deliver_policy = DeliverPolicyJson::ByStartSequence;
                    cfg.opt_start_seq = s;
                }
                ReplayStart::Time(t) => {
                    // nats-server compares start times as i64 nanoseconds:
                    // a later time wraps around to the past.
                    cfg.deliver_policy = DeliverPolicyJson::ByStartTime;
                    cfg.opt_start_time = Some(clamp_to_unix_nanos(t));
                }
                ReplayStart::New => cfg.deliver_policy = DeliverPolicyJson::New,
                ReplayStart::LastPerSubject => {
                    cfg.deliver_policy = DeliverPolicyJson::LastPerSubject;
                }
            }
        }
        if let Some(f) = &self.filter {
            cfg.filter_subject = f.clone();
        } else if self.start == ReplayStart::LastPerSubject {
            // nats-server wants a filter with last_per_subject.
            cfg.filter_subject = ">".to_owned();
        }
        let body = CreateConsumerRequestJson {
            stream_name: self.stream.to_string(),
            config: cfg,
            ..CreateConsumerRequestJson::default()
        };
        let info = match self
            .backend
            .api::<ConsumerInfoJson>(&format!("CONSUMER.CREATE.{}", self.stream), &body)
            .await?
        {
            Ok(info) => info,
            Err(e) => return Err(e.to_error(&ApiRequest::stream(&self.stream))),
        };
        self.consumer = Some(info.name).filter(|n| !n.is_empty());
        self.sub = Some(sub);
        self.next_cseq = 1;
        // After a reset with New, continue from what was seen.
        if matches!(self.start, ReplayStart::New) {
            self.start = ReplayStart::Sequence(self.last_sseq + 1);
        }
        Ok(info.num_pending)
    }

    /// Unsubscribes and deletes the consumer (in the background).
    fn release(&mut self) {
        self.sub = None;
        let Some(name) = self.consumer.take() else {
            return;
        };
        if self.backend.check().is_err() {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let client = self.backend.client().clone();
            let timeout = self.backend.request_timeout();
            let subject = format!("$JS.API.CONSUMER.DELETE.{}.{name}", self.stream);
            handle.spawn(async move {
                let _ = tokio::time::timeout(timeout, client.request(subject, Bytes::new())).await;
            });
        }
    }

    async fn next(&mut self) -> Option<Result<StoredMessage>> {
        loop {
            if self.done {
                self.release();
                return None;
            }
            if self.sub.is_none() {
                match self.start_consumer().await {
                    Ok(_) => {}
                    // The server is away or busy: the replay goes on once
                    // it answers again, from after the last message yielded.
                    Err(e) if retryable(&e) && self.backend.check().is_ok() => {
                        tracing::debug!(stream = %self.stream, error = %e, "replay waits for the server");
                        self.wait_reconnect(Duration::from_secs(1)).await;
                        continue;
                    }
                    Err(e) => {
                        self.done = true;
                        return Some(Err(e));
                    }
                }
            }
            let wait = self.heartbeat() * 3;
            let sub = self.sub.as_mut()?;
            let next = tokio::select! {
                m = tokio::time::timeout(wait, sub.next()) => m,
                e = self.events.recv() => {
                    if matches!(e, Ok(Event::Connected)) {
                        self.sub = None;
                    }
                    continue;
                }
            };
            let m = match next {
                Err(_) => {
                    // Heartbeats stopped: recreate the consumer.
                    self.sub = None;
                    continue;
                }
                Ok(None) => {
                    if self.backend.check().is_err() {
                        self.done = true;
                        return None;
                    }
                    self.sub = None;
                    continue;
                }
                Ok(Some(m)) => m,
            };
            if m.status.is_some() {
                let idle = self.control(m).await;
                if idle && self.end.is_some() && self.sub.is_some() && !self.remaining().await {
                    self.done = true;
                    return None;
                }
                continue;
            }
            let Some(ack) = m.reply.as_deref().and_then(jsapi::AckSubject::parse) else {
                continue;
            };
            if ack.consumer_seq != self.next_cseq {
                // A gap: start again after the last message yielded.
                self.sub = None;
                continue;
            }
            self.next_cseq += 1;
            if let Some(end) = self.end {
                if ack.stream_seq > end {
                    self.done = true;
                    return None;
                }
            }
            self.last_sseq = ack.stream_seq;
            if let Some(end) = self.end {
                // A pending count of 0 can come from a replica still
                // catching up: ask the stream before ending early.
                if ack.stream_seq >= end || (ack.pending == 0 && !self.remaining().await) {
                    self.done = true;
                }
            }
            self.idle_rounds = 0;
            let stored = StoredMessage {
                stream: self.stream.clone(),
                seq: ack.stream_seq,
                subject: api::shared_subject(m.subject),
                time: SystemTime::UNIX_EPOCH + Duration::from_nanos(ack.time_nanos),
                headers: from_nats_headers(m.headers.as_ref()),
                payload: m.payload,
            };
            return Some(Ok(stored));
        }
    }

    /// After an idle heartbeat of a bounded replay: whether messages up to
    /// the end remain to be delivered.
    ///
    /// An idle consumer is not proof: in a cluster it may sit on a replica
    /// still catching up, and nats-server 2.9's pending count can be too
    /// high after deletes. The stream (its leader) is asked for the next
    /// message after the last one yielded; a consumer that stays idle for
    /// 20 heartbeats (5 s) ends the replay anyway.
    async fn remaining(&mut self) -> bool {
        self.idle_rounds += 1;
        let Some(end) = self.end else { return false };
        if self.idle_rounds > 20 {
            tracing::warn!(stream = %self.stream, after = self.last_sseq, "bounded replay ends on a consumer idle for 5 s");
            return false;
        }
        let from = match (self.last_sseq, self.start) {
            (0, ReplayStart::Sequence(s)) => s,
            (0, _) => return self.idle_rounds < 2,
            (last, _) => last + 1,
        };
        if from > end {
            return false;
        }
        let body = MsgGetRequestJson::next_by_subject(from, self.filter.as_deref().unwrap_or(">"));
        match self
            .backend
            .api::<MsgGetResponseJson>(&format!("STREAM.MSG.GET.{}", self.stream), &body)
            .await
        {
            Ok(Ok(got)) => got.message.is_some_and(|m| m.seq <= end),
            Ok(Err(e)) if e.is(codes::NO_MESSAGE_FOUND) => false,
            // Unknown: wait for the next heartbeat.
            _ => true,
        }
    }

    /// Waits for a reconnect, or `at_most`.
    async fn wait_reconnect(&mut self, at_most: Duration) {
        let reconnected = async {
            loop {
                match self.events.recv().await {
                    Ok(Event::Connected) | Err(broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
            }
        };
        let _ = tokio::time::timeout(at_most, reconnected).await;
    }

    /// Idle heartbeat interval: short for bounded replays, whose end a
    /// heartbeat signals.
    fn heartbeat(&self) -> Duration {
        if self.end.is_some() {
            BOUNDED_HEARTBEAT
        } else {
            HEARTBEAT
        }
    }

    /// Flow control and heartbeats; true for an idle heartbeat.
    async fn control(&mut self, m: async_nats::Message) -> bool {
        let client = self.backend.client().clone();
        if let Some(reply) = m.reply {
            let _ = client.publish(reply, Bytes::new()).await;
            return false;
        }
        let Some(headers) = m.headers.as_ref() else {
            return true;
        };
        if let Some(stalled) = headers.get("Nats-Consumer-Stalled") {
            let _ = client
                .publish(stalled.as_str().to_owned(), Bytes::new())
                .await;
        }
        if let Some(last) = headers
            .get("Nats-Last-Consumer")
            .and_then(|v| v.as_str().parse::<u64>().ok())
        {
            if last + 1 != self.next_cseq {
                self.sub = None;
            }
        }
        true
    }
}
