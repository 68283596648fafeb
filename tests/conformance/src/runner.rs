//! The consumer runner (`Bus::consume`), written once in the facade over the
//! consumer primitives: acks, retries, dead letters, in-progress heartbeats
//! and graceful shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use durabus::consume::{DLQ_CONSUMER, DLQ_DELIVERIES, DLQ_ERROR, DLQ_SEQ, DLQ_STREAM, DLQ_SUBJECT};
use durabus::{
    AckKind, Bus, ConfigError, ConsumeOptions, ConsumerConfig, DeadLetter, Error, Event, Message,
    Outcome, ReplayOptions, RetryPolicy, StreamConfig,
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
        // 3 attempts and the delivery after them (docs/design.md,
        // "Consumer runner").
        ConsumerConfig::durable("r")
            .max_deliver(4)
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
    consumer(bus, &cfg.name, ConsumerConfig::durable("r").max_deliver(2)).await;
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

/// Dead letters of this case's runner: a subject and stream of its own.
fn own_dead_letters(n: &crate::Names) -> (String, String, ConsumeOptions) {
    let dlq_stream = n.stream("DLQ");
    let dlq_subject = format!("{}_dlq.dead", n.root());
    let options = ConsumeOptions::new()
        .backoff([Duration::from_millis(50)])
        .dead_letter(DeadLetter::Subject {
            subject: dlq_subject.clone(),
            stream: dlq_stream.clone(),
        });
    (dlq_stream, dlq_subject, options)
}

/// The letters of `dlq_stream` as (origin seq, deliveries, error).
async fn letters_of(bus: &Bus, dlq_stream: &str) -> Vec<(String, String, String)> {
    replay_all(bus, dlq_stream, ReplayOptions::from_seq(1))
        .await
        .iter()
        .map(|l| {
            let h = |name| l.headers.get(name).unwrap_or("-").to_owned();
            (h(DLQ_SEQ), h(DLQ_DELIVERIES), h(DLQ_ERROR))
        })
        .collect()
}

/// A handler that fails every attempt runs `max_attempts` times; the
/// message is then dead-lettered once, and the consumer ends with nothing
/// pending (the last attempt's failure dead-letters it at once).
///
/// Checks invariant 28 (docs/design.md).
pub async fn a_message_failing_every_attempt_reaches_the_dlq_after_max_attempts(bus: &Bus) {
    let n = names("run_every");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("r")
            .max_deliver(5)
            .ack_wait(Duration::from_secs(2)),
    )
    .await;
    let (dlq_stream, _, options) = own_dead_letters(&n);
    let calls = Arc::new(Mutex::new(0_u64));
    let c = calls.clone();
    let handle = bus
        .consume(&cfg.name, "r", options.max_attempts(3), move |d| {
            if d.stream_seq() == 2 {
                *c.lock().unwrap() += 1;
            }
            async move {
                if d.stream_seq() == 2 {
                    Outcome::Failed("always".into())
                } else {
                    Outcome::Done
                }
            }
        })
        .await
        .unwrap();
    eventually("2 acked and 1 dead-lettered", WAIT, || async {
        let s = handle.stats();
        s.acked >= 2 && s.dead_lettered == 1
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_eq!(
        *calls.lock().unwrap(),
        3,
        "the handler ran max_attempts times"
    );
    assert_eq!(
        letters_of(bus, &dlq_stream).await,
        [("2".to_owned(), "3".to_owned(), "always".to_owned())]
    );
    let info = bus.consumer_info(&cfg.name, "r").await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
}

/// A message whose every attempt stops the runner (a crash: the runner is
/// dropped while its handler runs) is dead-lettered on the delivery after
/// its last attempt, without running the handler again.
///
/// Checks invariant 28 (docs/design.md).
pub async fn a_message_whose_every_attempt_crashes_the_runner_reaches_the_dlq(bus: &Bus) {
    let n = names("run_crash");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    // ack_wait above the NATS backend's longest pull (2 s): a pull of a
    // dropped runner has expired before the message is due again.
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("r")
            .max_deliver(3)
            .ack_wait(Duration::from_millis(2500)),
    )
    .await;
    let (dlq_stream, _, options) = own_dead_letters(&n);
    for attempt in 1..=2_u64 {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let handle = bus
            .consume(&cfg.name, "r", options.clone(), move |d| {
                let _ = tx.send(d.delivered());
                async {
                    std::future::pending::<()>().await;
                    Outcome::Done
                }
            })
            .await
            .unwrap();
        let delivered = tokio::time::timeout(WAIT, rx.recv()).await.unwrap();
        assert_eq!(delivered, Some(attempt));
        drop(handle); // the crash
    }
    let ran = Arc::new(Mutex::new(0));
    let r = ran.clone();
    let handle = bus
        .consume(&cfg.name, "r", options, move |_| {
            *r.lock().unwrap() += 1;
            async { Outcome::Done }
        })
        .await
        .unwrap();
    eventually("dead-lettered", WAIT, || async {
        handle.stats().dead_lettered == 1
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_eq!(*ran.lock().unwrap(), 0, "no attempt after the last");
    assert_eq!(
        letters_of(bus, &dlq_stream).await,
        [(
            "1".to_owned(),
            "3".to_owned(),
            "attempts used up".to_owned()
        )]
    );
    let info = bus.consumer_info(&cfg.name, "r").await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
}

/// A handler that panics fails that attempt: its message is retried,
/// then dead-lettered with the panic's text; the others are handled and
/// shutdown succeeds.
///
/// Checks invariant 28 (docs/design.md).
pub async fn a_panicking_handler_s_message_reaches_the_dlq_and_the_others_are_handled(bus: &Bus) {
    let n = names("run_panic");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 5).await;
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("r")
            .max_deliver(3)
            .ack_wait(Duration::from_secs(2)),
    )
    .await;
    let (dlq_stream, _, options) = own_dead_letters(&n);
    let handle = bus
        .consume(&cfg.name, "r", options.concurrency(2), |d| async move {
            assert_ne!(d.stream_seq(), 3, "seq 3 makes the handler panic");
            Outcome::Done
        })
        .await
        .unwrap();
    eventually("4 acked and 1 dead-lettered", WAIT, || async {
        let s = handle.stats();
        s.acked >= 4 && s.dead_lettered == 1
    })
    .await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.retried, 1, "{stats:?}");
    let letters = letters_of(bus, &dlq_stream).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!((letters[0].0.as_str(), letters[0].1.as_str()), ("3", "2"));
    assert!(
        letters[0].2.starts_with("handler panicked: ")
            && letters[0].2.contains("seq 3 makes the handler panic"),
        "{letters:?}"
    );
    let info = bus.consumer_info(&cfg.name, "r").await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
}

/// A handler that runs past the handler timeout fails that attempt; after
/// the last attempt its message is dead-lettered with the timeout as its
/// error, and the others are handled.
///
/// Checks invariant 28 (docs/design.md).
pub async fn a_handler_past_its_timeout_fails_the_attempt(bus: &Bus) {
    let n = names("run_timeout");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("r")
            .max_deliver(3)
            .ack_wait(Duration::from_secs(2)),
    )
    .await;
    let (dlq_stream, _, options) = own_dead_letters(&n);
    let options = options
        .concurrency(3)
        .handler_timeout(Duration::from_millis(200));
    let handle = bus
        .consume(&cfg.name, "r", options, |d| async move {
            if d.stream_seq() == 1 {
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Outcome::Done
        })
        .await
        .unwrap();
    eventually("2 acked and 1 dead-lettered", WAIT, || async {
        let s = handle.stats();
        s.acked >= 2 && s.dead_lettered == 1
    })
    .await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.retried, 1, "{stats:?}");
    assert_eq!(
        letters_of(bus, &dlq_stream).await,
        [(
            "1".to_owned(),
            "2".to_owned(),
            "handler timed out after 200ms".to_owned()
        )]
    );
}

/// Under stall-in-order the dead letter counts every attempt (the
/// in-place retries too), as park-and-continue's does.
pub async fn stall_in_order_dead_letters_count_every_attempt(bus: &Bus) {
    let n = names("run_stall_dlq");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("r").max_deliver(4)).await;
    let (dlq_stream, _, options) = own_dead_letters(&n);
    let handle = bus
        .consume(
            &cfg.name,
            "r",
            options.retry(RetryPolicy::StallInOrder),
            |d| async move {
                if d.stream_seq() == 1 {
                    Outcome::Failed("no".into())
                } else {
                    Outcome::Done
                }
            },
        )
        .await
        .unwrap();
    eventually("1 acked and 1 dead-lettered", WAIT, || async {
        let s = handle.stats();
        s.acked == 1 && s.dead_lettered == 1
    })
    .await;
    handle.shutdown().await.unwrap();
    assert_eq!(
        letters_of(bus, &dlq_stream).await,
        [("1".to_owned(), "3".to_owned(), "no".to_owned())]
    );
}

/// A consumer whose `max_deliver` leaves no delivery after the last
/// attempt is refused by `consume`, before anything is fetched.
///
/// Checks invariant 28 (docs/design.md).
pub async fn consume_refuses_a_max_deliver_without_a_delivery_after_the_last_attempt(bus: &Bus) {
    let n = names("run_refuse");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("r").max_deliver(3)).await;
    let (_, _, options) = own_dead_letters(&n);
    let refused = bus
        .consume(&cfg.name, "r", options.max_attempts(3), |_| async {
            Outcome::Done
        })
        .await
        .unwrap_err();
    assert!(
        matches!(
            &refused,
            Error::InvalidConfig {
                reason: ConfigError::MaxDeliverTooLow {
                    max_deliver: 3,
                    max_attempts: 3,
                    ..
                }
            }
        ),
        "{refused:?}"
    );
    let info = bus.consumer_info(&cfg.name, "r").await.unwrap();
    assert_eq!(info.num_pending, 1, "nothing was fetched");
}

/// The runner keeps `batch` deliveries buffered ahead of busy handlers
/// (no more), and shutdown gives back what it holds and what still runs.
pub async fn the_runner_buffers_a_batch_ahead_and_shutdown_gives_it_back(bus: &Bus) {
    let n = names("run_batch");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 10).await;
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("r").ack_wait(Duration::from_secs(60)),
    )
    .await;
    let options = ConsumeOptions::new()
        .batch(4)
        .shutdown_deadline(Duration::from_millis(100));
    let handle = bus
        .consume(&cfg.name, "r", options, |_| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            Outcome::Done
        })
        .await
        .unwrap();
    // One running, four buffered.
    eventually("5 taken", WAIT, || async {
        bus.consumer_info(&cfg.name, "r")
            .await
            .unwrap()
            .num_ack_pending
            == 5
    })
    .await;
    tokio::time::sleep(crate::QUIET).await;
    let info = bus.consumer_info(&cfg.name, "r").await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_pending), (5, 5));
    let stats = handle.shutdown().await.unwrap();
    assert_eq!((stats.delivered, stats.returned), (1, 5), "{stats:?}");
    // All ten can be fetched at once: none waits for its 60 s ack_wait.
    let back = fetch_n(bus, &cfg.name, "r", 10).await;
    let mut seqs: Vec<u64> = back.iter().map(|d| d.stream_seq()).collect();
    seqs.sort_unstable();
    assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
}

/// A runner whose consumer is deleted under it stops: `closed()` yields
/// the error promptly and an `Event::ConsumerStopped` is sent.
pub async fn closed_yields_the_error_when_the_consumer_is_deleted_under_the_runner(bus: &Bus) {
    let n = names("run_closed");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("r")).await;
    let mut events = bus.events().expect("the facade sends events");
    let (_, _, options) = own_dead_letters(&n);
    let mut handle = bus
        .consume(&cfg.name, "r", options, |_| async { Outcome::Done })
        .await
        .unwrap();
    eventually("2 acked", WAIT, || async { handle.stats().acked == 2 }).await;
    assert!(!handle.is_closed());
    bus.delete_consumer(&cfg.name, "r").await.unwrap();
    let end = tokio::time::timeout(WAIT, handle.closed())
        .await
        .expect("closed() resolves once the consumer is gone");
    let error = end.unwrap_err();
    assert!(matches!(error, Error::ConsumerNotFound { .. }), "{error:?}");
    assert!(handle.is_closed());
    let event = tokio::time::timeout(WAIT, async {
        loop {
            match events.recv().await {
                Ok(Event::ConsumerStopped {
                    stream,
                    consumer,
                    error,
                }) if stream == cfg.name => break (consumer, error),
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(e) => panic!("events ended: {e}"),
            }
        }
    })
    .await
    .expect("a ConsumerStopped event");
    assert_eq!(event.0, "r");
    assert!(!event.1.is_empty());
    // The error was given once; shutdown returns the counters.
    assert_eq!(handle.shutdown().await.unwrap().acked, 2);
}

/// A letter published to a dead-letter stream for redrive, as the runner
/// writes it.
async fn letter(bus: &Bus, dlq_subject: &str, origin: &str, payload: &str) -> u64 {
    let m = Message::new(dlq_subject, payload.to_owned()).with_header(DLQ_SUBJECT, origin);
    bus.publish_message(m).await.unwrap().unwrap().seq
}

/// Redrive after the dead-letter stream was deleted and created again
/// (its sequences start over) republishes the new letter too: a letter is
/// never taken for an older one with the same seq.
pub async fn redrive_after_the_dlq_stream_was_recreated_loses_no_letter(bus: &Bus) {
    let n = names("run_redrive_again");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let dlq = StreamConfig::new(n.stream("DLQ")).subjects([format!("{}_dlq.>", n.root())]);
    let dlq_subject = format!("{}_dlq.dead", n.root());
    create(bus, dlq.clone()).await;
    assert_eq!(letter(bus, &dlq_subject, &n.subject("a"), "first").await, 1);
    assert_eq!(bus.redrive(&dlq.name, None).await.unwrap().republished, 1);
    bus.delete_stream(&dlq.name).await.unwrap();
    create(bus, dlq.clone()).await;
    assert_eq!(
        letter(bus, &dlq_subject, &n.subject("a"), "second").await,
        1
    );
    assert_eq!(bus.redrive(&dlq.name, None).await.unwrap().republished, 1);
    let origin = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    let payloads: Vec<&[u8]> = origin.iter().map(|m| &m.payload[..]).collect();
    assert_eq!(payloads, [&b"first"[..], &b"second"[..]]);
    assert!(replay_all(bus, &dlq.name, ReplayOptions::from_seq(1))
        .await
        .is_empty());
}

/// A republish the origin answers as a duplicate of a different message
/// (its msg id taken) stops the redrive with an error and leaves the
/// letter in the dead-letter stream.
pub async fn redrive_leaves_a_letter_whose_msg_id_names_a_different_message(bus: &Bus) {
    let n = names("run_redrive_dup");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let dlq = StreamConfig::new(n.stream("DLQ")).subjects([format!("{}_dlq.>", n.root())]);
    let dlq_subject = format!("{}_dlq.dead", n.root());
    create(bus, dlq.clone()).await;
    let seq = letter(bus, &dlq_subject, &n.subject("a"), "letter").await;
    let stored = bus.get_message(&dlq.name, seq).await.unwrap();
    let ns = stored
        .time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let taken = Message::new(n.subject("a"), "another")
        .with_msg_id(format!("redrive:{}:{seq}:{ns}", dlq.name));
    bus.publish_message(taken).await.unwrap().unwrap();
    let refused = bus.redrive(&dlq.name, None).await.unwrap_err();
    assert!(
        matches!(
            &refused,
            Error::InvalidConfig {
                reason: ConfigError::RedriveIdInUse { letter_seq, origin_seq: 1, .. }
            } if *letter_seq == seq
        ),
        "{refused:?}"
    );
    let left = replay_all(bus, &dlq.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(left.len(), 1, "the letter stays");
    assert_eq!(bus.stream_info(&cfg.name).await.unwrap().state.messages, 1);
}
