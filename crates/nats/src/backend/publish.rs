//! JetStream publishes: routing a subject to its stream, sending with an
//! ack (one or a batch), and what a refused or unanswered publish means.

use std::sync::Arc;

use async_nats::{StatusCode, Subject};
use durabus_core::jsapi::{PubAckResponseJson, StreamListRequestJson, StreamNamesResponseJson};
use durabus_core::{
    subject, ApiError, ApiRequest, ByteString, Error, Message, PublishAck, Result,
    NATS_EXPECTED_LAST_SEQUENCE, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
};
use futures::StreamExt;

use super::routes::Route;
use super::wire::to_nats_headers;
use super::NatsBackend;

impl NatsBackend {
    /// The stream capturing the valid literal `subj`, from the cache or (on
    /// a miss) the server.
    pub(super) async fn capturing(&self, subj: &str) -> Result<Option<Arc<Route>>> {
        if let Some(hit) = self.routes().cached_route(subj) {
            return Ok(Some(hit));
        }
        let request = StreamListRequestJson {
            offset: 0,
            subject: subj.to_owned(),
        };
        let names = match self
            .api::<StreamNamesResponseJson>("STREAM.NAMES", &request)
            .await?
        {
            Ok(names) => names,
            Err(e) => return Err(e.generic()),
        };
        for name in names.streams {
            match self.fetch_info(&name).await {
                Ok(info) => {
                    self.routes().remember(&info);
                    if info
                        .config
                        .effective_subjects()
                        .iter()
                        .any(|f| subject::matches(f, subj))
                    {
                        return Ok(self.routes().cached_route(subj));
                    }
                }
                Err(Error::StreamNotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }
    fn publish_error(&self, route: &Route, m: &Message, e: ApiError) -> Error {
        let max = route.max_msg_size.map(|m| m as usize).unwrap_or(0);
        e.to_error(&ApiRequest::publish(&route.name, m, max))
    }

    /// The outcome of a JetStream publish from its reply.
    async fn settle(
        &self,
        route: &Route,
        m: &Message,
        reply: &async_nats::Message,
    ) -> Result<Option<PublishAck>> {
        if reply.status == Some(StatusCode::NO_RESPONDERS) {
            return self.no_responders(&route.name, m).await;
        }
        let r = self.ack_from(route, m, reply);
        self.correct_subject_seq(&route.name, m, r).await
    }

    /// Nobody answered a publish to a subject `stream` was known to
    /// capture. If the stream is gone, that was a core publish; if a stream
    /// still captures the subject it did not store the message (a server
    /// restarting, say), which must not pass for success.
    async fn no_responders(&self, stream: &str, m: &Message) -> Result<Option<PublishAck>> {
        self.routes().forget(stream);
        match self.capturing(&m.subject).await? {
            None => Ok(None),
            Some(route) => Err(Error::Unavailable {
                reason: format!(
                    "stream {:?} captures {:?} but did not answer; the message was not stored",
                    route.name, m.subject
                ),
            }),
        }
    }

    fn ack_from(
        &self,
        route: &Route,
        m: &Message,
        reply: &async_nats::Message,
    ) -> Result<Option<PublishAck>> {
        let answer: PubAckResponseJson<'_> = serde_json::from_slice(&reply.payload)
            .map_err(|e| Error::internal(format!("unreadable JetStream publish ack ({e})")))?;
        match answer.into_result() {
            Err(e) => Err(self.publish_error(route, m, e)),
            Ok(ack) => Ok(Some(PublishAck {
                stream: if ack.stream.is_empty() || ack.stream == route.name {
                    route.label.clone()
                } else {
                    ByteString::from(ack.stream.into_owned())
                },
                seq: ack.seq,
                duplicate: ack.duplicate,
            })),
        }
    }
    /// A publish that was sent but not acknowledged: unknown outcome
    /// (closing is reported as [`Error::Closed`]).
    fn unconfirmed(&self, subject: &str, cause: &Error) -> Error {
        match cause {
            Error::Closed => Error::Closed,
            cause => Error::AckUnknown {
                subject: subject.to_owned(),
                reason: cause.to_string(),
            },
        }
    }

    /// A batch message that was never sent because an earlier one could
    /// not be: the same error, which says nothing was stored.
    fn not_sent(&self, cause: &Error) -> Error {
        match cause {
            Error::Closed => Error::Closed,
            Error::Unreachable { url, reason } => Error::Unreachable {
                url: url.clone(),
                reason: reason.clone(),
            },
            other => Error::internal(format!(
                "not sent: an earlier message of the batch failed ({other})"
            )),
        }
    }
    /// nats-server 2.9 reports 0 as a subject's last sequence once the
    /// subject's newest message was deleted (see [`Self::last_by_scan`]);
    /// a refused `Nats-Expected-Last-Subject-Sequence` then names the real
    /// one, looked up here.
    async fn correct_subject_seq(
        &self,
        stream: &str,
        m: &Message,
        r: Result<Option<PublishAck>>,
    ) -> Result<Option<PublishAck>> {
        match r {
            Err(Error::WrongLastSequence {
                expected,
                current: 0,
            }) if m.headers.get(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE).is_some()
                && m.headers.get(NATS_EXPECTED_LAST_SEQUENCE).is_none() =>
            {
                let what = format!("for subject {:?}", m.subject);
                let current = match self.last_by_scan(stream, &m.subject, what).await {
                    Ok(last) => last.seq,
                    Err(_) => 0,
                };
                Err(Error::WrongLastSequence { expected, current })
            }
            other => other,
        }
    }
    /// [`durabus_core::Backend::publish`].
    pub(super) async fn nats_publish(&self, message: Message) -> Result<Option<PublishAck>> {
        self.check()?;
        let route = match self.routes().memoized(&message.subject) {
            Some(route) => route,
            None => {
                subject::validate_publish(&message.subject)?;
                let Some(route) = self.capturing(&message.subject).await? else {
                    self.core_publish(message).await?;
                    return Ok(None);
                };
                route
            }
        };
        // Refused before sending (after the subject, as the embedded
        // engine): a CR or LF in a header would break the wire framing.
        message.headers.validate()?;
        // Bounded by the client's request timeout: no second timer.
        let reply = match self
            .client()
            .request_with_headers(
                Subject::from(message.subject.as_str()),
                to_nats_headers(&message.headers),
                message.payload.clone(),
            )
            .await
        {
            Err(e) => {
                return match self.request_error(&e, self.request_timeout()) {
                    Error::NoResponders { .. } => self.no_responders(&route.name, &message).await,
                    Error::Closed => Err(Error::Closed),
                    other => Err(self.unconfirmed(&message.subject, &other)),
                };
            }
            Ok(m) => m,
        };
        self.settle(&route, &message, &reply).await
    }

    /// [`durabus_core::Backend::publish_batch`].
    pub(super) async fn nats_publish_batch(
        &self,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Option<PublishAck>>>> {
        self.check()?;
        let client = self.client();
        let prefix = client.new_inbox();
        let mut acks = client
            .subscribe(format!("{prefix}.*"))
            .await
            .map_err(|e| self.closed_or(e))?;
        let mut results: Vec<Option<Result<Option<PublishAck>>>> =
            Vec::with_capacity(messages.len());
        // Slot i: message i while its ack is awaited.
        let mut waiting: Vec<Option<(Arc<Route>, Message)>> = Vec::with_capacity(messages.len());
        let mut pending = 0usize;
        // Batches mostly repeat one subject: its route is looked up once.
        let mut last: Option<(String, Arc<Route>)> = None;
        // After a failure to send, the rest of the batch is not sent: each
        // gets that error, and what was sent is still collected.
        let mut failed: Option<Error> = None;
        for (i, m) in messages.into_iter().enumerate() {
            waiting.push(None);
            if let Some(e) = &failed {
                results.push(Some(Err(self.not_sent(e))));
                continue;
            }
            let route = match &last {
                Some((subject, route)) if *subject == m.subject => Ok(Some(route.clone())),
                _ => match self.routes().memoized(&m.subject) {
                    Some(route) => Ok(Some(route)),
                    None => match subject::validate_publish(&m.subject) {
                        Err(e) => {
                            results.push(Some(Err(e)));
                            continue;
                        }
                        Ok(()) => self.capturing(&m.subject).await,
                    },
                },
            };
            if let Err(e) = m.headers.validate() {
                results.push(Some(Err(e)));
                continue;
            }
            let sent = match route {
                Err(e) => Err(e),
                Ok(None) => self.core_publish(m).await.map(|()| None),
                Ok(Some(route)) => {
                    if last.as_ref().is_none_or(|(s, _)| *s != m.subject) {
                        last = Some((m.subject.clone(), route.clone()));
                    }
                    client
                        .publish_with_reply_and_headers(
                            // async-nats copies a String subject again; a
                            // Subject made from it takes its buffer.
                            Subject::from(m.subject.clone()),
                            Subject::from(format!("{prefix}.{i}")),
                            to_nats_headers(&m.headers),
                            m.payload.clone(),
                        )
                        .await
                        .map_err(|e| self.closed_or(e))
                        .map(|()| Some((route, m)))
                }
            };
            match sent {
                Ok(Some(w)) => {
                    waiting[i] = Some(w);
                    pending += 1;
                    results.push(None);
                }
                Ok(None) => results.push(Some(Ok(None))),
                Err(e) => {
                    results.push(Some(Err(self.not_sent(&e))));
                    failed = Some(e);
                }
            }
        }
        let timeout = self.request_timeout();
        let mut lost = Error::Timeout(timeout);
        if let Err(e) = client.flush().await {
            lost = self.closed_or(e);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while pending > 0 {
            let reply = match tokio::time::timeout_at(deadline, acks.next()).await {
                Err(_) => break,
                Ok(None) => {
                    if let Err(e) = self.check() {
                        lost = e;
                    }
                    break;
                }
                Ok(Some(r)) => r,
            };
            let Some(i) = reply
                .subject
                .rsplit('.')
                .next()
                .and_then(|s| s.parse::<usize>().ok())
            else {
                continue;
            };
            if let Some((route, m)) = waiting.get_mut(i).and_then(Option::take) {
                pending -= 1;
                results[i] = Some(self.settle(&route, &m, &reply).await);
            }
        }
        for (i, slot) in waiting.into_iter().enumerate() {
            if let Some((_, m)) = slot {
                results[i] = Some(Err(self.unconfirmed(&m.subject, &lost)));
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(self.unconfirmed("", &lost))))
            .collect())
    }
}
