//! [`NatsBackend`]: the [`Backend`] trait over a NATS connection, each
//! operation handed to the module that does that job.
//!
//! Modules, each depending only on those listed before it: `wire`,
//! `routes`, `open` (leaves); `conn` (the backend and its connection);
//! `streams`, `messages`, `core_msg`, `consumer`; `replay` (uses
//! `streams`); `publish` (uses `streams`, `messages`, `core_msg`). The
//! JetStream API's requests and answers are `durabus_core::jsapi`'s types;
//! its errors map to typed errors in `durabus_core::api_error`.

mod conn;
mod consumer;
mod core_msg;
mod messages;
mod open;
mod publish;
mod replay;
mod routes;
mod streams;
mod wire;

use std::time::Duration;

use durabus_core::{
    AckKind, AckRef, Backend, ConnectionStatus, ConsumerConfig, ConsumerInfo, Delivery, Event,
    Message, PublishAck, PurgeRequest, Replay, ReplayOptions, Result, StoredMessage, StreamConfig,
    StreamInfo, Subscription,
};
use tokio::sync::broadcast;

pub use conn::NatsBackend;

#[async_trait::async_trait]
impl Backend for NatsBackend {
    async fn create_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        self.nats_create_stream(config).await
    }

    async fn update_stream(&self, config: StreamConfig) -> Result<StreamInfo> {
        self.nats_update_stream(config).await
    }

    async fn stream_info(&self, name: &str) -> Result<StreamInfo> {
        self.nats_stream_info(name).await
    }

    async fn list_streams(&self) -> Result<Vec<StreamInfo>> {
        self.nats_list_streams().await
    }

    async fn delete_stream(&self, name: &str) -> Result<()> {
        self.nats_delete_stream(name).await
    }

    async fn purge_stream(&self, name: &str, request: PurgeRequest) -> Result<u64> {
        self.nats_purge_stream(name, request).await
    }

    async fn publish(&self, message: Message) -> Result<Option<PublishAck>> {
        self.nats_publish(message).await
    }

    async fn publish_batch(
        &self,
        messages: Vec<Message>,
    ) -> Result<Vec<Result<Option<PublishAck>>>> {
        self.nats_publish_batch(messages).await
    }

    async fn subscribe(&self, filter: &str, queue_group: Option<&str>) -> Result<Subscription> {
        self.nats_subscribe(filter, queue_group).await
    }

    async fn request(&self, message: Message, timeout: Duration) -> Result<Message> {
        self.nats_request(message, timeout).await
    }

    async fn get_message(&self, stream: &str, seq: u64) -> Result<StoredMessage> {
        self.nats_get_message(stream, seq).await
    }

    async fn get_last_message(&self, stream: &str, subj: &str) -> Result<StoredMessage> {
        self.nats_get_last_message(stream, subj).await
    }

    async fn delete_message(&self, stream: &str, seq: u64) -> Result<()> {
        self.nats_delete_message(stream, seq).await
    }

    async fn replay(&self, stream: &str, options: ReplayOptions) -> Result<Replay> {
        self.nats_replay(stream, options).await
    }

    async fn create_consumer(&self, stream: &str, config: ConsumerConfig) -> Result<ConsumerInfo> {
        self.nats_create_consumer(stream, config).await
    }

    async fn update_consumer(&self, stream: &str, config: ConsumerConfig) -> Result<ConsumerInfo> {
        self.nats_update_consumer(stream, config).await
    }

    async fn consumer_info(&self, stream: &str, name: &str) -> Result<ConsumerInfo> {
        self.nats_consumer_info(stream, name).await
    }

    async fn list_consumers(&self, stream: &str) -> Result<Vec<ConsumerInfo>> {
        self.nats_list_consumers(stream).await
    }

    async fn delete_consumer(&self, stream: &str, name: &str) -> Result<()> {
        self.nats_delete_consumer(stream, name).await
    }

    async fn fetch(
        &self,
        stream: &str,
        consumer: &str,
        batch: usize,
        expires: Duration,
    ) -> Result<Vec<Delivery>> {
        self.nats_fetch(stream, consumer, batch, expires).await
    }

    async fn ack(&self, delivery: &AckRef, kind: AckKind) -> Result<()> {
        self.nats_ack(delivery, kind, false).await
    }

    async fn ack_confirmed(&self, delivery: &AckRef, kind: AckKind) -> Result<()> {
        self.nats_ack(delivery, kind, true).await
    }

    async fn close(&self) -> Result<()> {
        self.nats_close().await
    }

    async fn ping(&self) -> Result<Duration> {
        self.nats_ping().await
    }

    fn status(&self) -> ConnectionStatus {
        self.nats_status()
    }

    fn events(&self) -> Option<broadcast::Receiver<Event>> {
        Some(self.subscribe_events())
    }
}
