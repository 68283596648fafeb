//! R9 (poison message): a handler that aborts its whole process on one
//! message, run again after every crash. The message reaches the
//! dead-letter queue after `max_attempts` deliveries instead of looping
//! forever, and every other message is handled: on a `file:` store (whose
//! consumer records each delivery before handing it out, invariant 18) and
//! on a nats-server of its own.
//!
//! Checks invariant 18 (docs/design.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use durabus::consume::{DEFAULT_DLQ_STREAM, DLQ_SEQ, DLQ_STREAM};
use durabus::{ConsumerConfig, ReplayOptions, StreamConfig};
use durabus_testkit::crash::ChildProcess;
use durabus_testkit::nats::NatsServer;
use durabus_testkit::{file_url, temp_dir};

const MESSAGES: u64 = 20;
const POISON: u64 = 7;

async fn run(url: &str) {
    {
        let bus = durabus::connect(url).await.unwrap();
        bus.create_stream(StreamConfig::new("POISON").subjects(["poison.>"]))
            .await
            .unwrap();
        bus.create_consumer(
            "POISON",
            ConsumerConfig::durable("p").ack_wait(Duration::from_millis(300)),
        )
        .await
        .unwrap();
        for seq in 1..=MESSAGES {
            let payload = if seq == POISON { "poison" } else { "fine" };
            bus.publish(format!("poison.{seq}"), payload).await.unwrap();
        }
        bus.close().await.unwrap();
    }
    let exe = std::path::PathBuf::from(env!("CARGO_BIN_EXE_crash_consumer"));
    let mut aborts = 0;
    loop {
        assert!(
            aborts <= 6,
            "{url}: the poison message crashed the consumer {aborts} times"
        );
        let mut child = ChildProcess::spawn(&exe, std::path::Path::new(url), &["poison"]).unwrap();
        child.ready().await.unwrap();
        let mut said = None;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < deadline {
            match child.next_line().await {
                Ok(Some(l)) => {
                    said = Some(l);
                    break;
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
        if said.as_deref() == Some("DRAINED") {
            break;
        }
        let status = child.close_stdin_and_wait().await.unwrap();
        assert!(
            !status.success(),
            "{url}: the child ended without draining: {status:?}"
        );
        aborts += 1;
    }
    assert_eq!(aborts, 3, "{url}: one crash per allowed attempt");
    let bus = durabus::connect(url).await.unwrap();
    let info = bus.consumer_info("POISON", "p").await.unwrap();
    assert_eq!(
        (
            info.num_pending,
            info.num_ack_pending,
            info.ack_floor.stream_seq
        ),
        (0, 0, MESSAGES),
        "{url}: {info:?}"
    );
    let mut dlq = bus
        .replay(DEFAULT_DLQ_STREAM, ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let mut letters = Vec::new();
    while let Some(m) = dlq.next().await {
        let m = m.unwrap();
        assert_eq!(m.headers.get(DLQ_STREAM), Some("POISON"));
        letters.push(m.headers.get(DLQ_SEQ).unwrap().parse::<u64>().unwrap());
    }
    assert_eq!(letters, vec![POISON], "{url}");
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_aborts_its_handler_reaches_the_dlq_after_max_attempts_on_file() {
    let dir = temp_dir();
    run(&file_url(dir.path(), "always")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_aborts_its_handler_reaches_the_dlq_after_max_attempts_on_nats() {
    let server = NatsServer::start().unwrap();
    run(&server.url()).await;
}
