//! The consumer runner (`Bus::consume`), written once in the facade over the
//! consumer primitives: acks, retries, dead letters, in-progress heartbeats
//! and graceful shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use durabus::consume::{DLQ_CONSUMER, DLQ_DELIVERIES, DLQ_ERROR, DLQ_SEQ, DLQ_STREAM, DLQ_SUBJECT};
use durabus::{
    AckKind, Bus, ConsumeOptions, ConsumerConfig, DeadLetter, Outcome, ReplayOptions, RetryPolicy,
};

use crate::{
    consumer, create, eventually, fetch, fetch_n, names, publish_n, replay_all, settle, WAIT,
};

type Seen = Arc<Mutex<Vec<(u64, u64)>>>;

/// Every message the handler completes is acknowledged once.
pub async fn consume_acks_every_message_the_handler_completes(bus: &Bus) {
    let n = names("run_ack");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 20).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("r")).await;
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let handle = bus
        .consume(
            &cfg.name,
            "r",
            ConsumeOptions::new().concurrency(4),
            move |d| {
                s.lock().unwrap().push((d.stream_seq(), d.delivered()));
                async { Outcome::Done }
            },
        )
        .await
        .unwrap();
    eventually("all 20 handled", WAIT, || async {
        handle.stats().acked == 20
    })
    .await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(
        (stats.acked, stats.dead_lettered, stats.retried),
        (20, 0, 0)
    );
    let mut seqs: Vec<u64> = seen.lock().unwrap().iter().map(|s| s.0).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=20).collect::<Vec<_>>());
    let info = bus.consumer_info(&cfg.name, "r").await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
}

/// A message that keeps failing is retried until its attempts are used
/// up, then dead-lettered exactly once with its origin in headers; the
/// others are acked.
///
/// nats-server 2.9.10 sometimes answers a nak of a redelivered message
/// by delivering an acked message again (delivery count 1) and holding
/// the naked one until its ack_wait: at-least-once still, so the case
/// allows extra acks and uses a 2 s ack_wait (docs/design.md).
pub async fn failing_messages_are_dead_lettered_once_with_their_origin(bus: &Bus) {
    let n = names("run_dlq");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 4).await;
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("r")
            .max_deliver(3)
            .ack_wait(Duration::from_secs(2)),
    )
    .await;
    let dlq_stream = n.stream("DLQ");
    let dlq_subject = format!("{}_dlq.dead", n.root());
    let options = ConsumeOptions::new()
        .backoff([Duration::from_millis(50)])
        .dead_letter(DeadLetter::Subject {
            subject: dlq_subject.clone(),
            stream: dlq_stream.clone(),
        });
    let handle = bus
        .consume(&cfg.name, "r", options, |d| async move {
            if d.stream_seq() == 2 {
                Outcome::Failed(format!("cannot handle seq {}", d.stream_seq()))
            } else {
                Outcome::Done
            }
        })
        .await
        .unwrap();
    eventually("3 acked and 1 dead-lettered", WAIT, || async {
        let s = handle.stats();
        s.acked >= 3 && s.dead_lettered == 1
    })
    .await;
    let stats = handle.shutdown().await.unwrap();
    // 2 naks; 1 when nats-server 2.9.10 lost a redelivery (see above).
    assert!((1..=2).contains(&stats.retried), "{stats:?}");
    let letters = replay_all(bus, &dlq_stream, ReplayOptions::from_seq(1)).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let h = &letters[0].headers;
    assert_eq!(letters[0].subject, dlq_subject);
    assert_eq!(h.get(DLQ_STREAM), Some(cfg.name.as_str()));
    assert_eq!(h.get(DLQ_CONSUMER), Some("r"));
    assert_eq!(h.get(DLQ_SEQ), Some("2"));
    assert_eq!(h.get(DLQ_SUBJECT), Some(n.subject("a").as_str()));
    assert_eq!(h.get(DLQ_DELIVERIES), Some("3"));
    assert_eq!(h.get(DLQ_ERROR), Some("cannot handle seq 2"));
    assert_eq!(letters[0].payload, "1".as_bytes());
    let info = bus.consumer_info(&cfg.name, "r").await.unwrap();
    assert_eq!(info.num_ack_pending, 0, "the dead letter was terminated");
}

/// Redrive publishes dead letters to their origin subject again,
/// without the dead-letter headers, and removes them from the DLQ.
pub async fn redrive_republishes_dead_letters_to_their_origin(bus: &Bus) {
    let n = names("run_redrive");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("r").max_deliver(1)).await;
    let dlq_stream = n.stream("DLQ");
    let options = ConsumeOptions::new().dead_letter(DeadLetter::Subject {
        subject: format!("{}_dlq.dead", n.root()),
        stream: dlq_stream.clone(),
    });
    let handle = bus
        .consume(&cfg.name, "r", options, |d| async move {
            if d.stream_seq() == 1 {
                Outcome::Failed("no".into())
            } else {
                Outcome::Done
            }
        })
        .await
        .unwrap();
    eventually("dead-lettered", WAIT, || async {
        handle.stats().dead_lettered == 1
    })
    .await;
    handle.shutdown().await.unwrap();
    let stats = bus.redrive(&dlq_stream, None).await.unwrap();
    assert_eq!(stats.republished, 1);
    assert!(replay_all(bus, &dlq_stream, ReplayOptions::from_seq(1))
        .await
        .is_empty());
    let again = bus.get_message(&cfg.name, 3).await.unwrap();
    assert_eq!(again.subject, n.subject("a"));
    assert_eq!(again.payload, "0".as_bytes());
    assert!(again
        .headers
        .iter()
        .all(|(name, _)| !name.starts_with("Durabus-Dlq-")));
    // Run again: nothing left to redrive.
    assert_eq!(bus.redrive(&dlq_stream, None).await.unwrap().republished, 0);
}

/// Stall in order: a failing message is retried before the next one is
/// taken, so the handler sees the stream's order.
pub async fn stall_in_order_retries_a_message_before_taking_the_next(bus: &Bus) {
    let n = names("run_stall");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 4).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("r").max_deliver(5)).await;
    let seen: Arc<Mutex<Vec<u64>>> = Arc::default();
    let failures = Arc::new(Mutex::new(0));
    let (s, f) = (seen.clone(), failures.clone());
    let options = ConsumeOptions::new()
        .retry(RetryPolicy::StallInOrder)
        .backoff([Duration::from_millis(30)]);
    let handle = bus
        .consume(&cfg.name, "r", options, move |d| {
            s.lock().unwrap().push(d.stream_seq());
            let fail = d.stream_seq() == 2 && {
                let mut f = f.lock().unwrap();
                *f += 1;
                *f <= 2
            };
            async move {
                if fail {
                    Outcome::RetryLater(None)
                } else {
                    Outcome::Done
                }
            }
        })
        .await
        .unwrap();
    eventually("4 acked", WAIT, || async { handle.stats().acked == 4 }).await;
    handle.shutdown().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [1, 2, 2, 2, 3, 4]);
}

/// A handler that runs longer than ack_wait is kept alive with
/// in-progress heartbeats: handled once, never redelivered meanwhile.
pub async fn long_handlers_are_kept_alive_past_ack_wait(bus: &Bus) {
    let n = names("run_wpi");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("r").ack_wait(Duration::from_millis(400)),
    )
    .await;
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let handle = bus
        .consume(
            &cfg.name,
            "r",
            ConsumeOptions::new().concurrency(2),
            move |d| {
                s.lock().unwrap().push((d.stream_seq(), d.delivered()));
                async {
                    tokio::time::sleep(Duration::from_millis(1200)).await;
                    Outcome::Done
                }
            },
        )
        .await
        .unwrap();
    eventually("acked", WAIT, || async { handle.stats().acked == 1 }).await;
    handle.shutdown().await.unwrap();
    assert_eq!(*seen.lock().unwrap(), [(1, 1)]);
}

/// Shutdown lets handlers finish within its deadline; those still
/// running then are stopped and their messages given back at once (a
/// nak, not an ack_wait expiry).
pub async fn shutdown_finishes_in_flight_work_and_gives_back_the_rest(bus: &Bus) {
    let n = names("run_shutdown");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("r").ack_wait(Duration::from_secs(60)),
    )
    .await;
    let started = Arc::new(tokio::sync::Semaphore::new(0));
    let go = started.clone();
    let options = ConsumeOptions::new()
        .concurrency(2)
        .shutdown_deadline(Duration::from_millis(200));
    let handle = bus
        .consume(&cfg.name, "r", options, move |d| {
            go.add_permits(1);
            async move {
                if d.stream_seq() == 1 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                } else {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                }
                Outcome::Done
            }
        })
        .await
        .unwrap();
    // Seq 1 finishes; seqs 2 and 3 are being handled when shutdown comes.
    drop(started.acquire_many(3).await.unwrap());
    let stats = handle.shutdown().await.unwrap();
    assert_eq!((stats.acked, stats.returned), (1, 2), "{stats:?}");
    // Both come back at once, not after the 60 s ack_wait.
    let back = fetch_n(bus, &cfg.name, "r", 2).await;
    let mut seqs: Vec<u64> = back.iter().map(|d| d.stream_seq()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, [2, 3]);
    for d in &back {
        settle(bus, d, AckKind::Ack).await;
    }
    assert!(fetch(bus, &cfg.name, "r", 3, Duration::from_millis(150))
        .await
        .is_empty());
}
