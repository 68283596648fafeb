//! Core NATS messaging: plain publishes, subscriptions and requests.

use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use async_nats::{StatusCode, Subject};
use durabus_core::{subject, Error, Message, Result, Subscription};
use futures::StreamExt;

use super::wire::{from_nats_message, to_nats_headers};
use super::NatsBackend;

impl NatsBackend {
    /// Publishes `message` as core NATS: to live subscribers only, no
    /// stream consulted, no ack (see [`NatsBackend::connect_core`]). Call
    /// [`NatsBackend::flush`] to know the server has it.
    pub async fn publish_core(&self, message: Message) -> Result<()> {
        self.check()?;
        subject::validate_publish(&message.subject)?;
        self.core_publish(message).await
    }

    /// Waits until everything published so far has been written to the
    /// server.
    pub async fn flush(&self) -> Result<()> {
        self.check()?;
        self.client().flush().await.map_err(|e| self.closed_or(e))
    }

    /// A core NATS publish (no stream captures the subject).
    pub(super) async fn core_publish(&self, m: Message) -> Result<()> {
        m.headers.validate()?;
        let client = self.client();
        let headers = to_nats_headers(&m.headers);
        let r = match m.reply {
            Some(reply) => {
                client
                    .publish_with_reply_and_headers(
                        Subject::from(m.subject),
                        Subject::from(reply),
                        headers,
                        m.payload,
                    )
                    .await
            }
            None => {
                client
                    .publish_with_headers(Subject::from(m.subject), headers, m.payload)
                    .await
            }
        };
        r.map_err(|e| self.closed_or(e))
    }
    /// [`durabus_core::Backend::subscribe`].
    pub(super) async fn nats_subscribe(
        &self,
        filter: &str,
        queue_group: Option<&str>,
    ) -> Result<Subscription> {
        self.check()?;
        subject::validate_filter(filter)?;
        let client = self.client();
        let sub = match queue_group {
            Some(q) => {
                client
                    .queue_subscribe(filter.to_owned(), q.to_owned())
                    .await
            }
            None => client.subscribe(filter.to_owned()).await,
        }
        .map_err(|e| self.closed_or(e))?;
        // The server's no-responders status (sent to a reply subject when a
        // request found nobody) is a signal, not a published message: the
        // embedded backend never delivers one, so neither does this one.
        let stream = sub
            .filter(|m| futures::future::ready(m.status != Some(StatusCode::NO_RESPONDERS)))
            .map(from_nats_message)
            .take_until(self.closed_signal())
            .boxed();
        Ok(Subscription::new(
            filter,
            stream,
            Arc::new(AtomicU64::new(0)),
        ))
    }

    /// [`durabus_core::Backend::request`].
    pub(super) async fn nats_request(
        &self,
        message: Message,
        timeout: Duration,
    ) -> Result<Message> {
        self.check()?;
        subject::validate_publish(&message.subject)?;
        message.headers.validate()?;
        // The caller's timeout, not the client's request timeout.
        let request = async_nats::Request::new()
            .headers(to_nats_headers(&message.headers))
            .payload(message.payload)
            .timeout(Some(timeout));
        match self
            .client()
            .send_request(message.subject.clone(), request)
            .await
        {
            Ok(m) => Ok(from_nats_message(m)),
            Err(e) => match self.request_error(&e, timeout) {
                Error::NoResponders { .. } => Err(Error::NoResponders {
                    subject: message.subject,
                }),
                other => Err(other),
            },
        }
    }
}
