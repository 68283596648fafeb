//! Pull consumers on NATS: the JetStream consumer API (`$JS.API.CONSUMER.*`)
//! (durabus's [`ConsumerConfig`] as its JSON by `durabus_core::jsapi`), pull
//! requests (`CONSUMER.MSG.NEXT`) for fetches and `$JS.ACK.*` replies for
//! settling deliveries.
//!
//! # nats-server 2.9 behaviours handled here
//!
//! - A create of an existing consumer with another configuration is an
//!   update in 2.9 (the `action` field is 2.10): durabus looks first with
//!   `CONSUMER.INFO` and refuses with [`Error::ConsumerNameInUse`].
//! - With a backoff list the server sets `ack_wait` to its first wait; the
//!   comparison of an existing consumer's configuration allows for it.
//! - A pull request to a consumer that does not exist gets no answer at all
//!   (no 503): the consumer is looked up when a pull stays unanswered.
//! - A `no_wait` pull on a consumer at `max_ack_pending`, or with a delayed
//!   redelivery outstanding, waits for its `expires` (without one it never
//!   ends); every pull here carries an `expires`.
//! - Several filter subjects need 2.10.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use async_nats::Subject;
use bytes::Bytes;
use durabus_core::jsapi::{
    self, clamp_to_unix_nanos, ConsumerConfigJson, ConsumerInfoJson, ConsumerListRequestJson,
    ConsumerListResponseJson, CreateConsumerRequestJson, PullRequestJson, SuccessJson,
};
use durabus_core::{
    validate_consumer_name, validate_stream_name, AckKind, AckRef, ApiRequest, ByteString,
    ConsumerConfig, ConsumerInfo, DeliverPolicy, Delivery, Error, Result, StoredMessage,
};
use durabus_core::{ArgumentError, ConfigError};
use futures::StreamExt;
use serde_json::json;
use tokio::time::Instant;

use super::wire::from_nats_headers;
use super::NatsBackend;
use crate::api;

/// A pull unanswered for this long makes the fetch check that the
/// consumer exists (nats-server does not answer pulls to missing ones).
const PROBE_AFTER: Duration = Duration::from_millis(250);

/// The longest single pull of a fetch waiting for its first message.
const WAIT_CHUNK: Duration = Duration::from_secs(2);

/// How long past a pull's `expires` its end (a 408) may take to arrive.
const GRACE: Duration = Duration::from_millis(500);

/// Refuses what the 2.9 API cannot say: several filter subjects.
fn check_filters(cfg: &ConsumerConfig) -> Result<()> {
    if cfg.filter_subjects.len() > 1 {
        return Err(Error::Unsupported(format!(
            "a consumer with several filter subjects ({}) needs nats-server 2.10; this backend speaks the 2.9 API, which takes one",
            cfg.filter_subjects.join(", ")
        )));
    }
    Ok(())
}

/// A configuration as the server keeps it, for comparing an existing
/// consumer's with a requested one.
pub(crate) fn normalized(cfg: &ConsumerConfig) -> ConsumerConfig {
    let mut c = cfg.clone();
    c.inactive_threshold = c.effective_inactive_threshold();
    // The server replaces ack_wait by the first backoff wait.
    if let Some(first) = c.backoff.first() {
        c.ack_wait = *first;
    }
    c.description = c.description.filter(|d| !d.is_empty());
    if let DeliverPolicy::ByStartTime(t) = c.deliver_policy {
        c.deliver_policy = DeliverPolicy::ByStartTime(clamp_to_unix_nanos(t));
    }
    c
}

/// A consumer info answer as durabus's [`ConsumerInfo`], and whether it is
/// a push consumer (a replay's, or another client's).
fn parse_info(info: ConsumerInfoJson) -> (ConsumerInfo, bool) {
    let push = info.config.is_push();
    (info.into(), push)
}

/// The numbers of an ack subject, kept past the subject's buffer.
#[derive(Clone, Copy)]
struct AckNumbers {
    delivered: u64,
    stream_seq: u64,
    consumer_seq: u64,
    time_nanos: u64,
    pending: u64,
}

impl From<jsapi::AckSubject<'_>> for AckNumbers {
    fn from(a: jsapi::AckSubject<'_>) -> Self {
        AckNumbers {
            delivered: a.delivered,
            stream_seq: a.stream_seq,
            consumer_seq: a.consumer_seq,
            time_nanos: a.time_nanos,
            pending: a.pending,
        }
    }
}

fn consumer_not_found(stream: &str, name: &str) -> Error {
    Error::ConsumerNotFound {
        stream: stream.to_owned(),
        name: name.to_owned(),
    }
}

/// How a pull request ended.
#[derive(Debug, PartialEq, Eq)]
enum PullEnd {
    /// The batch is full, or the server ended it (408).
    Done,
    /// The server had nothing pending at all (404).
    NoMessages,
    /// No answer at all by the deadline: the consumer may not exist.
    Silent,
}

impl NatsBackend {
    /// The consumer `name` of `stream` as the server has it.
    async fn lookup_consumer(&self, stream: &str, name: &str) -> Result<ConsumerInfo> {
        self.lookup_kind(stream, name).await.map(|(info, _)| info)
    }

    /// The consumer `name` of `stream`, and whether it is a push consumer.
    async fn lookup_kind(&self, stream: &str, name: &str) -> Result<(ConsumerInfo, bool)> {
        match self
            .api::<ConsumerInfoJson>(&format!("CONSUMER.INFO.{stream}.{name}"), &json!({}))
            .await?
        {
            // An answer without an error and without the consumer: it was
            // being removed while the server answered (it sends the info of
            // a consumer that closed meanwhile as nothing), as after its
            // inactive threshold.
            Ok(info) if info.name.is_empty() => Err(consumer_not_found(stream, name)),
            Ok(info) => Ok(parse_info(info)),
            Err(e) => Err(e.to_error(&ApiRequest::consumer(stream, name))),
        }
    }

    /// Sends a create (in 2.9 also an update) of `config` on `stream`.
    async fn send_create(&self, stream: &str, config: &ConsumerConfig) -> Result<ConsumerInfo> {
        check_filters(config)?;
        let body = CreateConsumerRequestJson {
            stream_name: stream.to_owned(),
            config: ConsumerConfigJson::from(config),
            ..CreateConsumerRequestJson::default()
        };
        let what = match &config.durable_name {
            Some(name) => format!("CONSUMER.CREATE.{stream}.{name}"),
            None => format!("CONSUMER.CREATE.{stream}"),
        };
        match self.api::<ConsumerInfoJson>(&what, &body).await? {
            Ok(info) => Ok(info.into()),
            // A refusal is a configuration the server does not accept.
            Err(e) => {
                let name = config.durable_name.as_deref().unwrap_or_default();
                Err(e.to_error(&ApiRequest::consumer(stream, name).config()))
            }
        }
    }

    /// [`durabus_core::Backend::create_consumer`].
    pub(super) async fn nats_create_consumer(
        &self,
        stream: &str,
        config: ConsumerConfig,
    ) -> Result<ConsumerInfo> {
        self.check()?;
        validate_stream_name(stream)?;
        config.validate()?;
        // Refuse several filters before anything reaches the server.
        check_filters(&config)?;
        if let Some(name) = &config.durable_name {
            match self.lookup_kind(stream, name).await {
                Ok((info, push)) => {
                    // A push consumer of that name (another client's) is
                    // not the pull consumer asked for.
                    return if !push && normalized(&info.config) == normalized(&config) {
                        Ok(info)
                    } else {
                        Err(Error::ConsumerNameInUse {
                            stream: stream.to_owned(),
                            name: name.clone(),
                        })
                    };
                }
                Err(Error::ConsumerNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        self.send_create(stream, &config).await
    }

    /// [`durabus_core::Backend::update_consumer`].
    pub(super) async fn nats_update_consumer(
        &self,
        stream: &str,
        config: ConsumerConfig,
    ) -> Result<ConsumerInfo> {
        self.check()?;
        validate_stream_name(stream)?;
        config.validate()?;
        check_filters(&config)?;
        let Some(name) = &config.durable_name else {
            return Err(Error::invalid_config(ConfigError::UpdateNeedsDurableName));
        };
        // Without this a 2.9 "update" of a missing consumer creates it.
        let old = self.lookup_consumer(stream, name).await?;
        config.validate_update(&old.config)?;
        self.send_create(stream, &config).await
    }

    /// [`durabus_core::Backend::consumer_info`].
    pub(super) async fn nats_consumer_info(
        &self,
        stream: &str,
        name: &str,
    ) -> Result<ConsumerInfo> {
        self.check()?;
        validate_stream_name(stream)?;
        validate_consumer_name(name)?;
        self.lookup_consumer(stream, name).await
    }

    /// [`durabus_core::Backend::list_consumers`]: the pull consumers
    /// (replays' push consumers and other clients' are left out).
    pub(super) async fn nats_list_consumers(&self, stream: &str) -> Result<Vec<ConsumerInfo>> {
        self.check()?;
        validate_stream_name(stream)?;
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            let request = ConsumerListRequestJson {
                offset: offset as u64,
            };
            let page = match self
                .api::<ConsumerListResponseJson>(&format!("CONSUMER.LIST.{stream}"), &request)
                .await?
            {
                Ok(page) => page,
                Err(e) => return Err(e.to_error(&ApiRequest::stream(stream))),
            };
            if page.consumers.is_empty() {
                break;
            }
            offset += page.consumers.len();
            for c in page.consumers {
                let (info, push) = parse_info(c);
                if !push {
                    out.push(info);
                }
            }
            if offset as u64 >= page.paged.total {
                break;
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    /// [`durabus_core::Backend::delete_consumer`].
    pub(super) async fn nats_delete_consumer(&self, stream: &str, name: &str) -> Result<()> {
        self.check()?;
        validate_stream_name(stream)?;
        validate_consumer_name(name)?;
        match self
            .api::<SuccessJson>(&format!("CONSUMER.DELETE.{stream}.{name}"), &json!({}))
            .await?
        {
            Ok(_) => Ok(()),
            Err(e) => Err(e.to_error(&ApiRequest::consumer(stream, name))),
        }
    }

    /// [`durabus_core::Backend::fetch`].
    ///
    /// `no_wait` pulls of `batch` with an `expires`, which nats-server 2.9
    /// answers as the fetch contract says: at once with what is due, else
    /// with the first messages that fall due before `expires` (then 408).
    /// They last [`WAIT_CHUNK`] at most, one after the other until
    /// `expires`: a pull the server lost (a restart) is soon replaced.
    /// A server that answers an empty `no_wait` pull with 404 at once gets
    /// waiting pulls of one message instead, then a `no_wait` pull for the
    /// rest. A pull never asks for more than the fetch returns, so no
    /// delivery is left to a pull nobody reads, except when the fetch
    /// future is dropped: its inbox is unsubscribed, and what the server
    /// sends there before that pull ends (within [`WAIT_CHUNK`]) is
    /// delivered again after `ack_wait`.
    ///
    /// Pulls are long rather than many: nats-server 2.9.10 can mishandle a
    /// redelivery that falls due just as a pull expires (it delivers an
    /// acknowledged message again, with delivery count 1, and holds the
    /// redelivery until `ack_wait`); fewer expiring pulls make that rare.
    pub(super) async fn nats_fetch(
        &self,
        stream: &str,
        consumer: &str,
        batch: usize,
        expires: Duration,
    ) -> Result<Vec<Delivery>> {
        self.check()?;
        validate_stream_name(stream)?;
        validate_consumer_name(consumer)?;
        if batch == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + expires;
        // Batches are usually filled: grow once, not ten times.
        let mut out = Vec::with_capacity(batch.min(durabus_core::FETCH_PREALLOCATED));
        // Whether the server answers empty no_wait pulls with 404 at once.
        let mut eager_404 = false;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = left.min(WAIT_CHUNK).max(Duration::from_millis(1));
            let end = if eager_404 {
                self.pull(stream, consumer, 1, false, wait, &mut out)
                    .await?
            } else {
                self.pull(stream, consumer, batch, true, wait, &mut out)
                    .await?
            };
            if !out.is_empty() {
                break;
            }
            match end {
                PullEnd::NoMessages => eager_404 = true,
                // Unanswered: is there a consumer at all?
                PullEnd::Silent => {
                    self.lookup_consumer(stream, consumer).await?;
                }
                PullEnd::Done => {}
            }
            if Instant::now() >= deadline {
                return Ok(out);
            }
        }
        if eager_404 && batch > 1 {
            let left = deadline.saturating_duration_since(Instant::now());
            let wait = left.max(Duration::from_millis(1));
            self.pull(stream, consumer, batch - 1, true, wait, &mut out)
                .await?;
        }
        Ok(out)
    }

    /// One pull request for `batch` messages, collected into `out` until the
    /// batch is full or the server ends the request.
    async fn pull(
        &self,
        stream: &str,
        consumer: &str,
        batch: usize,
        no_wait: bool,
        expires: Duration,
        out: &mut Vec<Delivery>,
    ) -> Result<PullEnd> {
        let client = self.client();
        let inbox = client.new_inbox();
        // Dropped (so unsubscribed) when this future is.
        let mut sub = client
            .subscribe(inbox.clone())
            .await
            .map_err(|e| self.closed_or(e))?;
        // Zero would mean "never expires" to the server.
        let expires = expires.max(Duration::from_millis(1));
        let body = PullRequestJson {
            no_wait,
            ..PullRequestJson::new(batch as u64, expires)
        };
        let body = serde_json::to_vec(&body).map_err(|e| Error::internal(e.to_string()))?;
        client
            .publish_with_reply(
                format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
                inbox,
                Bytes::from(body),
            )
            .await
            .map_err(|e| self.closed_or(e))?;
        let until = Instant::now() + expires + GRACE;
        let mut probing = true;
        // One timer for the whole pull, moved from the probe to `until`.
        let timer = tokio::time::sleep_until((Instant::now() + PROBE_AFTER).min(until));
        tokio::pin!(timer);
        let mut got = 0usize;
        let mut answered = false;
        let names: (Arc<str>, Arc<str>) = (Arc::from(stream), Arc::from(consumer));
        let label = ByteString::from(stream);
        while got < batch {
            let next = tokio::select! {
                biased;
                m = sub.next() => Some(m),
                () = &mut timer => None,
            };
            let m = match next {
                None if probing && Instant::now() < until => {
                    // Unanswered so far: is there a consumer at all?
                    probing = false;
                    timer.as_mut().reset(until);
                    self.lookup_consumer(stream, consumer).await?;
                    continue;
                }
                None => break,
                Some(None) => {
                    self.check()?;
                    return Err(self.closed_or("the connection ended a fetch"));
                }
                Some(Some(m)) => m,
            };
            answered = true;
            if probing {
                probing = false;
                timer.as_mut().reset(until);
            }
            if let Some(status) = m.status {
                let description = m.description.unwrap_or_default();
                match status.as_u16() {
                    // Heartbeats.
                    100 => continue,
                    404 if got == 0 => return Ok(PullEnd::NoMessages),
                    404 | 408 => return Ok(PullEnd::Done),
                    409 if description.contains("Consumer Deleted") => {
                        return Err(consumer_not_found(stream, consumer));
                    }
                    409 if description.contains("push based") => {
                        return Err(Error::invalid_argument(ArgumentError::PushConsumer {
                            stream: stream.to_owned(),
                            consumer: consumer.to_owned(),
                        }));
                    }
                    // No responders: nobody serves this consumer.
                    503 => return Ok(PullEnd::Silent),
                    code => {
                        if got > 0 {
                            return Ok(PullEnd::Done);
                        }
                        return Err(Error::Server {
                            code,
                            err_code: 0,
                            description: format!(
                                "fetch from consumer {consumer:?} of stream {stream:?}: {description}"
                            ),
                        });
                    }
                }
            }
            let Some(reply) = m.reply else { continue };
            let Some(ack) = jsapi::AckSubject::parse(&reply).map(AckNumbers::from) else {
                continue;
            };
            got += 1;
            out.push(Delivery {
                message: StoredMessage {
                    stream: label.clone(),
                    seq: ack.stream_seq,
                    subject: api::shared_subject(m.subject),
                    time: UNIX_EPOCH + Duration::from_nanos(ack.time_nanos),
                    headers: from_nats_headers(m.headers.as_ref()),
                    payload: m.payload,
                },
                ack: AckRef {
                    stream: names.0.clone(),
                    consumer: names.1.clone(),
                    stream_seq: ack.stream_seq,
                    consumer_seq: ack.consumer_seq,
                    delivered: ack.delivered,
                    token: Some(api::shared_subject(reply)),
                },
                pending: ack.pending,
            });
        }
        Ok(if answered {
            PullEnd::Done
        } else {
            PullEnd::Silent
        })
    }

    /// [`durabus_core::Backend::ack`] (`confirm` false): a publish to the
    /// delivery's reply subject, as async-nats' `ack()`.
    /// [`durabus_core::Backend::ack_confirmed`] (`confirm` true): a request
    /// to it, so `Ok` means the server applied it (nats-server answers every
    /// ack that carries a reply, repeated ones included).
    pub(super) async fn nats_ack(
        &self,
        delivery: &AckRef,
        kind: AckKind,
        confirm: bool,
    ) -> Result<()> {
        self.check()?;
        let Some(token) = delivery.token.as_ref() else {
            return Err(Error::invalid_argument(ArgumentError::NoAckToken {
                stream: delivery.stream.to_string(),
                seq: delivery.stream_seq,
            }));
        };
        // A cheap check: the full parse ran when the delivery was fetched.
        if !token.starts_with("$JS.ACK.") {
            return Err(Error::invalid_argument(ArgumentError::NotAnAckSubject {
                token: token.to_string(),
            }));
        }
        // The token's own bytes (a reference count, no copy).
        let subject =
            Subject::try_from(token.as_bytes().clone()).unwrap_or_else(|_| Subject::from(&**token));
        if !confirm {
            return self
                .client()
                .publish(subject, jsapi::ack_payload(kind))
                .await
                .map_err(|e| Error::Unavailable {
                    reason: format!("cannot send the ack: {e}"),
                });
        }
        let timeout = self.request_timeout();
        match self
            .client()
            .request(subject, jsapi::ack_payload(kind))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => match self.request_error(&e, timeout) {
                // The consumer is gone: nobody takes acks for it.
                Error::NoResponders { .. } => {
                    Err(consumer_not_found(&delivery.stream, &delivery.consumer))
                }
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_filters_need_nats_server_2_10() {
        let mut cfg = ConsumerConfig::durable("c");
        cfg.filter_subjects = vec!["a".into(), "b".into()];
        let e = check_filters(&cfg).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("2.10"), "{e}");
        assert!(check_filters(&ConsumerConfig::durable("c").filter_subject("a")).is_ok());
    }
}
