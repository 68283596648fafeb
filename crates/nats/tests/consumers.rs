//! Pull consumers on a real nats-server: configuration mapping, fetch, the
//! ack kinds and the server's redelivery rules, as durabus's primitives.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant, SystemTime};

use durabus_core::{
    AckKind, AckPolicy, Backend, ConfigError, ConsumerConfig, DeliverPolicy, Delivery, Error,
    Message, RetentionPolicy, StreamConfig,
};
use durabus_nats::{NatsBackend, NatsOptions};
use durabus_testkit::nats::NatsServer;

const MS: Duration = Duration::from_millis(1);

async fn connect() -> NatsBackend {
    NatsBackend::connect(&NatsServer::shared().url(), NatsOptions::default())
        .await
        .expect("connect")
}

/// A backend with a fresh stream `name` on `<lowercase name>.>` holding
/// `n` messages on `<prefix>.<i % 3>` (payload `i`).
async fn setup(name: &str, n: usize) -> NatsBackend {
    let b = connect().await;
    let prefix = name.to_lowercase();
    let _ = b.delete_stream(name).await;
    b.create_stream(StreamConfig::new(name).subjects([format!("{prefix}.>")]))
        .await
        .unwrap();
    publish(&b, name, 0..n).await;
    b
}

async fn publish(b: &NatsBackend, stream: &str, range: std::ops::Range<usize>) {
    let prefix = stream.to_lowercase();
    for i in range {
        b.publish(Message::new(format!("{prefix}.{}", i % 3), format!("{i}")))
            .await
            .unwrap()
            .expect("captured");
    }
}

fn seqs(d: &[Delivery]) -> Vec<u64> {
    d.iter().map(Delivery::stream_seq).collect()
}

async fn fetch(b: &NatsBackend, s: &str, c: &str, n: usize, wait_ms: u64) -> Vec<Delivery> {
    b.fetch(s, c, n, Duration::from_millis(wait_ms))
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_if_absent_returns_an_equal_consumer_and_refuses_a_different_one() {
    let b = setup("CREATE", 3).await;
    let cfg = ConsumerConfig::durable("c")
        .filter_subject("create.1")
        .ack_wait(Duration::from_secs(7))
        .max_deliver(3)
        .backoff([Duration::from_secs(1), Duration::from_secs(2)]);
    let first = b.create_consumer("CREATE", cfg.clone()).await.unwrap();
    assert_eq!(first.name, "c");
    assert_eq!(first.stream, "CREATE");
    assert_eq!(first.num_pending, 1);
    assert_eq!(first.config.filter_subjects, ["create.1"]);
    let again = b.create_consumer("CREATE", cfg.clone()).await.unwrap();
    assert_eq!(again.created, first.created);
    let e = b
        .create_consumer("CREATE", cfg.clone().max_deliver(5))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ConsumerNameInUse { .. }), "{e}");
    // Nothing changed.
    let info = b.consumer_info("CREATE", "c").await.unwrap();
    assert_eq!(info.config.max_deliver, Some(3));
    let e = b
        .create_consumer("NOPE", ConsumerConfig::durable("c"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::StreamNotFound { .. }), "{e}");
    let e = b
        .create_consumer("CREATE", ConsumerConfig::durable("c").max_deliver(0))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::InvalidConfig { .. }), "{e}");
    let e = b
        .create_consumer(
            "CREATE",
            ConsumerConfig::durable("d").filter_subject("other.x"),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidConfig { reason } if reason.to_string().contains("filter subject")),
        "{e}"
    );
    let mut two = ConsumerConfig::durable("two");
    two.filter_subjects = vec!["create.1".into(), "create.2".into()];
    let e = b.create_consumer("CREATE", two).await.unwrap_err();
    assert!(
        matches!(&e, Error::Unsupported(m) if m.contains("2.10")),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn update_changes_limits_and_refuses_a_deliver_policy_change() {
    let b = setup("UPDATE", 2).await;
    b.create_consumer("UPDATE", ConsumerConfig::durable("c"))
        .await
        .unwrap();
    let e = b
        .update_consumer(
            "UPDATE",
            ConsumerConfig::durable("c").deliver_policy(DeliverPolicy::New),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::InvalidConfig {
                reason: ConfigError::ConsumerChange {
                    field: "deliver policy"
                }
            }
        ),
        "{e}"
    );
    let e = b
        .update_consumer(
            "UPDATE",
            ConsumerConfig::durable("c").ack_policy(AckPolicy::All),
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, Error::InvalidConfig { .. }), "{e}");
    let mut cfg = ConsumerConfig::durable("c")
        .ack_wait(Duration::from_secs(3))
        .max_deliver(4)
        .max_ack_pending(Some(5))
        .filter_subject("update.1");
    cfg.description = Some("updated".into());
    let info = b.update_consumer("UPDATE", cfg.clone()).await.unwrap();
    assert_eq!(info.config, cfg);
    assert_eq!(b.consumer_info("UPDATE", "c").await.unwrap().config, cfg);
    let e = b
        .update_consumer("UPDATE", ConsumerConfig::durable("missing"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ConsumerNotFound { .. }), "{e}");
    assert!(b.consumer_info("UPDATE", "missing").await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_deliver_policy_starts_where_it_says() {
    // 6 messages: subjects cycle .0 .1 .2, so the last per subject are 4, 5, 6.
    let b = setup("DELIVER", 6).await;
    let start = async |name: &str, policy: DeliverPolicy| {
        let cfg = ConsumerConfig::durable(name)
            .deliver_policy(policy)
            .filter_subject("deliver.>");
        let info = b.create_consumer("DELIVER", cfg).await.unwrap();
        assert_eq!(info.config.deliver_policy, policy, "{name}");
        seqs(&fetch(&b, "DELIVER", name, 10, 200).await)
    };
    assert_eq!(start("all", DeliverPolicy::All).await, [1, 2, 3, 4, 5, 6]);
    assert_eq!(start("last", DeliverPolicy::Last).await, [6]);
    assert_eq!(start("new", DeliverPolicy::New).await, Vec::<u64>::new());
    assert_eq!(
        start("seq", DeliverPolicy::ByStartSequence(4)).await,
        [4, 5, 6]
    );
    assert_eq!(start("lps", DeliverPolicy::LastPerSubject).await, [4, 5, 6]);
    // nats-server 2.9 wants a filter with last_per_subject.
    let e = b
        .create_consumer(
            "DELIVER",
            ConsumerConfig::durable("lps2").deliver_policy(DeliverPolicy::LastPerSubject),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            &e,
            Error::InvalidConfig {
                reason: ConfigError::LastPerSubjectNeedsFilter
            }
        ),
        "{e}"
    );
    let t4 = b.get_message("DELIVER", 4).await.unwrap().time;
    assert_eq!(
        start("time", DeliverPolicy::ByStartTime(t4)).await,
        [4, 5, 6]
    );
    let future = SystemTime::now() + Duration::from_secs(3600);
    assert_eq!(
        start("later", DeliverPolicy::ByStartTime(future)).await,
        Vec::<u64>::new()
    );
    publish(&b, "DELIVER", 6..7).await;
    assert_eq!(seqs(&fetch(&b, "DELIVER", "new", 10, 1000).await), [7]);
    assert_eq!(seqs(&fetch(&b, "DELIVER", "last", 10, 1000).await), [7]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_carry_the_message_and_its_metadata() {
    let b = setup("META", 0).await;
    b.publish(
        Message::new("meta.x", "hello")
            .with_header("Tag", "a")
            .with_msg_id("m1"),
    )
    .await
    .unwrap();
    b.create_consumer("META", ConsumerConfig::durable("c"))
        .await
        .unwrap();
    let d = fetch(&b, "META", "c", 5, 500).await;
    assert_eq!(d.len(), 1);
    let stored = b.get_message("META", 1).await.unwrap();
    assert_eq!(d[0].message.subject, "meta.x");
    assert_eq!(d[0].message.payload, "hello");
    assert_eq!(d[0].message.headers.get("Tag"), Some("a"));
    assert_eq!(d[0].message.stream, "META");
    assert_eq!(d[0].message.time, stored.time);
    assert_eq!(
        (d[0].stream_seq(), d[0].consumer_seq(), d[0].delivered()),
        (1, 1, 1)
    );
    assert_eq!(d[0].pending, 0);
    assert_eq!((&*d[0].ack.stream, &*d[0].ack.consumer), ("META", "c"));
    assert!(d[0]
        .ack
        .token
        .as_deref()
        .unwrap()
        .starts_with("$JS.ACK.META.c."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_returns_what_is_due_at_once_and_waits_up_to_expires_for_the_first() {
    let b = setup("FETCH", 3).await;
    b.create_consumer("FETCH", ConsumerConfig::durable("c"))
        .await
        .unwrap();
    let t = Instant::now();
    assert_eq!(seqs(&fetch(&b, "FETCH", "c", 10, 5000).await), [1, 2, 3]);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let t = Instant::now();
    assert!(fetch(&b, "FETCH", "c", 10, 400).await.is_empty());
    let took = t.elapsed();
    assert!(took >= 400 * MS && took < 1500 * MS, "{took:?}");
    let b2 = b.clone();
    let later = tokio::spawn(async move {
        tokio::time::sleep(300 * MS).await;
        publish(&b2, "FETCH", 3..5).await;
    });
    let t = Instant::now();
    let got = fetch(&b, "FETCH", "c", 10, 5000).await;
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    later.await.unwrap();
    let mut all = seqs(&got);
    if all.len() < 2 {
        all.extend(seqs(&fetch(&b, "FETCH", "c", 10, 1000).await));
    }
    assert_eq!(all, [4, 5]);
    // Batches are bounded.
    publish(&b, "FETCH", 5..9).await;
    assert_eq!(seqs(&fetch(&b, "FETCH", "c", 2, 1000).await), [6, 7]);
    assert_eq!(seqs(&fetch(&b, "FETCH", "c", 5, 1000).await), [8, 9]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn explicit_ack_removes_from_pending_and_repeating_it_is_a_no_op() {
    let b = setup("ACK", 2).await;
    b.create_consumer("ACK", ConsumerConfig::durable("c").ack_wait(300 * MS))
        .await
        .unwrap();
    let d = fetch(&b, "ACK", "c", 10, 500).await;
    assert_eq!(seqs(&d), [1, 2]);
    assert_eq!(
        b.consumer_info("ACK", "c").await.unwrap().num_ack_pending,
        2
    );
    b.ack_confirmed(&d[0].ack, AckKind::Ack).await.unwrap();
    b.ack_confirmed(&d[0].ack, AckKind::Ack).await.unwrap();
    let info = b.consumer_info("ACK", "c").await.unwrap();
    assert_eq!(info.num_ack_pending, 1);
    assert_eq!(info.ack_floor.stream_seq, 1);
    // Only the unacked one comes back after ack_wait.
    let again = fetch(&b, "ACK", "c", 10, 1500).await;
    assert_eq!(seqs(&again), [2]);
    assert_eq!(again[0].delivered(), 2);
    b.ack_confirmed(&again[0].ack, AckKind::Ack).await.unwrap();
    // Settling the first delivery of an acked message: a no-op.
    b.ack_confirmed(&d[1].ack, AckKind::Nak(None))
        .await
        .unwrap();
    b.ack_confirmed(&d[1].ack, AckKind::Term).await.unwrap();
    assert!(fetch(&b, "ACK", "c", 10, 600).await.is_empty());
    let info = b.consumer_info("ACK", "c").await.unwrap();
    assert_eq!((info.num_ack_pending, info.ack_floor.stream_seq), (0, 2));

    let mut tokenless = d[0].ack.clone();
    tokenless.token = None;
    let e = b.ack_confirmed(&tokenless, AckKind::Ack).await.unwrap_err();
    assert!(matches!(e, Error::InvalidArgument { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nak_with_delay_redelivers_after_the_delay() {
    let b = setup("NAK", 1).await;
    b.create_consumer(
        "NAK",
        ConsumerConfig::durable("c").ack_wait(Duration::from_secs(30)),
    )
    .await
    .unwrap();
    let d = fetch(&b, "NAK", "c", 1, 500).await;
    let t = Instant::now();
    b.ack_confirmed(&d[0].ack, AckKind::Nak(Some(600 * MS)))
        .await
        .unwrap();
    assert!(fetch(&b, "NAK", "c", 1, 300).await.is_empty());
    let again = fetch(&b, "NAK", "c", 1, 2000).await;
    assert!(t.elapsed() >= 600 * MS, "{:?}", t.elapsed());
    assert_eq!(seqs(&again), [1]);
    assert_eq!(again[0].delivered(), 2);
    // A plain nak redelivers at once.
    b.ack_confirmed(&again[0].ack, AckKind::Nak(None))
        .await
        .unwrap();
    let t = Instant::now();
    let third = fetch(&b, "NAK", "c", 1, 2000).await;
    assert!(t.elapsed() < 500 * MS, "{:?}", t.elapsed());
    assert_eq!(third[0].delivered(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_wait_expiry_redelivers() {
    let b = setup("WAIT", 1).await;
    b.create_consumer("WAIT", ConsumerConfig::durable("c").ack_wait(400 * MS))
        .await
        .unwrap();
    let t = Instant::now();
    assert_eq!(fetch(&b, "WAIT", "c", 1, 500).await[0].delivered(), 1);
    let again = fetch(&b, "WAIT", "c", 1, 2000).await;
    assert!(t.elapsed() >= 400 * MS, "{:?}", t.elapsed());
    assert_eq!((again[0].stream_seq(), again[0].delivered()), (1, 2));
    assert_eq!(again[0].consumer_seq(), 2);
    let info = b.consumer_info("WAIT", "c").await.unwrap();
    assert_eq!(info.num_redelivered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backoff_waits_apply_in_order_and_the_last_repeats() {
    let b = setup("BACKOFF", 1).await;
    let cfg = ConsumerConfig::durable("c")
        .max_deliver(5)
        .backoff([200 * MS, 800 * MS]);
    let info = b.create_consumer("BACKOFF", cfg).await.unwrap();
    // nats-server 2.9 makes the first backoff wait the ack_wait.
    assert_eq!(info.config.ack_wait, 200 * MS);
    let mut at = vec![];
    let t = Instant::now();
    for _ in 0..4 {
        let d = fetch(&b, "BACKOFF", "c", 1, 3000).await;
        assert_eq!(d.len(), 1);
        at.push((d[0].delivered(), t.elapsed()));
    }
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1].1 - w[0].1).collect();
    assert_eq!(at.iter().map(|a| a.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert!(gaps[0] >= 180 * MS && gaps[0] < 700 * MS, "{gaps:?}");
    assert!(gaps[1] >= 750 * MS, "{gaps:?}");
    assert!(gaps[2] >= 750 * MS, "{gaps:?}");
}

/// Checks invariant 20 (docs/design.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_deliver_stops_redelivery() {
    let b = setup("MAXDEL", 1).await;
    b.create_consumer(
        "MAXDEL",
        ConsumerConfig::durable("c")
            .ack_wait(200 * MS)
            .max_deliver(2),
    )
    .await
    .unwrap();
    assert_eq!(fetch(&b, "MAXDEL", "c", 1, 500).await[0].delivered(), 1);
    assert_eq!(fetch(&b, "MAXDEL", "c", 1, 1500).await[0].delivered(), 2);
    assert!(fetch(&b, "MAXDEL", "c", 1, 800).await.is_empty());
    let info = b.consumer_info("MAXDEL", "c").await.unwrap();
    assert_eq!(info.delivered.consumer_seq, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_ack_pending_holds_fetches_until_an_ack() {
    let b = setup("MAXACK", 4).await;
    b.create_consumer(
        "MAXACK",
        ConsumerConfig::durable("c").max_ack_pending(Some(2)),
    )
    .await
    .unwrap();
    let d = fetch(&b, "MAXACK", "c", 10, 500).await;
    assert_eq!(seqs(&d), [1, 2]);
    let t = Instant::now();
    assert!(fetch(&b, "MAXACK", "c", 10, 400).await.is_empty());
    assert!(t.elapsed() >= 400 * MS, "{:?}", t.elapsed());
    b.ack_confirmed(&d[0].ack, AckKind::Ack).await.unwrap();
    assert_eq!(seqs(&fetch(&b, "MAXACK", "c", 10, 500).await), [3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn term_stops_redelivery() {
    let b = setup("TERM", 2).await;
    b.create_consumer("TERM", ConsumerConfig::durable("c").ack_wait(200 * MS))
        .await
        .unwrap();
    let d = fetch(&b, "TERM", "c", 2, 500).await;
    b.ack_confirmed(&d[0].ack, AckKind::Term).await.unwrap();
    b.ack_confirmed(&d[0].ack, AckKind::Term).await.unwrap();
    let again = fetch(&b, "TERM", "c", 2, 1000).await;
    assert_eq!(seqs(&again), [2]);
    let info = b.consumer_info("TERM", "c").await.unwrap();
    assert_eq!(info.num_ack_pending, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_progress_extends_ack_wait() {
    let b = setup("WPI", 1).await;
    b.create_consumer("WPI", ConsumerConfig::durable("c").ack_wait(500 * MS))
        .await
        .unwrap();
    let d = fetch(&b, "WPI", "c", 1, 500).await;
    let t = Instant::now();
    for _ in 0..4 {
        tokio::time::sleep(300 * MS).await;
        b.ack_confirmed(&d[0].ack, AckKind::InProgress)
            .await
            .unwrap();
    }
    // 1.2 s past the delivery, beyond ack_wait, and not redelivered.
    assert!(t.elapsed() > Duration::from_secs(1));
    assert!(fetch(&b, "WPI", "c", 1, 200).await.is_empty());
    let again = fetch(&b, "WPI", "c", 1, 1500).await;
    assert_eq!(again[0].delivered(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_counts_pending_ack_pending_redelivered_and_floors() {
    let b = setup("COUNT", 5).await;
    let info = b
        .create_consumer("COUNT", ConsumerConfig::durable("c").ack_wait(300 * MS))
        .await
        .unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (5, 0));
    let d = fetch(&b, "COUNT", "c", 3, 500).await;
    let info = b.consumer_info("COUNT", "c").await.unwrap();
    assert_eq!((info.num_pending, info.num_ack_pending), (2, 3));
    assert_eq!(
        (info.delivered.stream_seq, info.delivered.consumer_seq),
        (3, 3)
    );
    assert_eq!(info.ack_floor.stream_seq, 0);
    b.ack_confirmed(&d[0].ack, AckKind::Ack).await.unwrap();
    b.ack_confirmed(&d[2].ack, AckKind::Ack).await.unwrap();
    let info = b.consumer_info("COUNT", "c").await.unwrap();
    assert_eq!(info.num_ack_pending, 1);
    assert_eq!(
        (info.ack_floor.stream_seq, info.ack_floor.consumer_seq),
        (1, 1)
    );
    // 2 comes back first, before 4 and 5.
    tokio::time::sleep(400 * MS).await;
    let again = fetch(&b, "COUNT", "c", 1, 1500).await;
    assert_eq!((again[0].stream_seq(), again[0].delivered()), (2, 2));
    let info = b.consumer_info("COUNT", "c").await.unwrap();
    assert_eq!(info.num_redelivered, 1);
    assert_eq!(info.delivered.consumer_seq, 4);
    b.ack_confirmed(&again[0].ack, AckKind::Ack).await.unwrap();
    let info = b.consumer_info("COUNT", "c").await.unwrap();
    assert_eq!(info.ack_floor.stream_seq, 3);
    assert_eq!((info.num_ack_pending, info.num_redelivered), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_consumers_are_consumer_not_found() {
    let b = setup("UNKNOWN", 1).await;
    let nf = |e: Error| assert!(matches!(e, Error::ConsumerNotFound { .. }), "{e}");
    nf(b.consumer_info("UNKNOWN", "x").await.unwrap_err());
    nf(b.delete_consumer("UNKNOWN", "x").await.unwrap_err());
    let t = Instant::now();
    nf(b.fetch("UNKNOWN", "x", 1, Duration::from_secs(5))
        .await
        .unwrap_err());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let e = b.consumer_info("NOSTREAM", "x").await.unwrap_err();
    assert!(matches!(e, Error::StreamNotFound { .. }), "{e}");
    let e = b.fetch("NOSTREAM", "x", 1, 100 * MS).await.unwrap_err();
    assert!(matches!(e, Error::StreamNotFound { .. }), "{e}");
    let e = b.consumer_info("UNKNOWN", "a.b").await.unwrap_err();
    assert!(matches!(e, Error::InvalidName { .. }), "{e}");

    // Deleted while a fetch waits, and acked after.
    b.create_consumer("UNKNOWN", ConsumerConfig::durable("gone"))
        .await
        .unwrap();
    let d = fetch(&b, "UNKNOWN", "gone", 1, 500).await;
    let b2 = b.clone();
    let waiting =
        tokio::spawn(async move { b2.fetch("UNKNOWN", "gone", 1, Duration::from_secs(5)).await });
    tokio::time::sleep(300 * MS).await;
    b.delete_consumer("UNKNOWN", "gone").await.unwrap();
    nf(waiting.await.unwrap().unwrap_err());
    nf(b.ack_confirmed(&d[0].ack, AckKind::Ack).await.unwrap_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ephemeral_consumer_disappears_after_its_inactive_threshold() {
    let b = setup("EPHEMERAL", 2).await;
    let info = b
        .create_consumer(
            "EPHEMERAL",
            ConsumerConfig::ephemeral().inactive_threshold(500 * MS),
        )
        .await
        .unwrap();
    assert!(!info.name.is_empty());
    assert_eq!(info.config.durable_name, None);
    assert_eq!(info.config.inactive_threshold, Some(500 * MS));
    assert_eq!(
        seqs(&fetch(&b, "EPHEMERAL", &info.name, 5, 300).await),
        [1, 2]
    );
    // Ephemeral consumers are always new.
    let other = b
        .create_consumer("EPHEMERAL", ConsumerConfig::ephemeral())
        .await
        .unwrap();
    assert_ne!(other.name, info.name);
    assert_eq!(
        other.config.inactive_threshold,
        Some(Duration::from_secs(5))
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match b.consumer_info("EPHEMERAL", &info.name).await {
            Err(Error::ConsumerNotFound { .. }) => break,
            Ok(_) => assert!(Instant::now() < deadline, "ephemeral consumer still there"),
            Err(e) => panic!("{e}"),
        }
        tokio::time::sleep(100 * MS).await;
    }
    b.delete_consumer("EPHEMERAL", &other.name).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_is_sorted_by_name_across_pages_and_delete_removes() {
    let b = setup("LIST", 0).await;
    // More than one page (the server pages by 256).
    let names: Vec<String> = (0..260).rev().map(|i| format!("c{i:03}")).collect();
    for n in &names {
        b.create_consumer("LIST", ConsumerConfig::durable(n.clone()))
            .await
            .unwrap();
    }
    let listed: Vec<String> = b
        .list_consumers("LIST")
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(listed, sorted);
    b.delete_consumer("LIST", "c000").await.unwrap();
    assert_eq!(b.list_consumers("LIST").await.unwrap().len(), 259);
    let e = b.list_consumers("NOLIST").await.unwrap_err();
    assert!(matches!(e, Error::StreamNotFound { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queue_acks_remove_messages_and_overlapping_consumers_are_refused() {
    let b = connect().await;
    let _ = b.delete_stream("WQ").await;
    b.create_stream(
        StreamConfig::new("WQ")
            .subjects(["wq.>"])
            .retention(RetentionPolicy::WorkQueue),
    )
    .await
    .unwrap();
    for i in 0..3 {
        b.publish(Message::new(format!("wq.a.{i}"), "x"))
            .await
            .unwrap();
    }
    b.create_consumer("WQ", ConsumerConfig::durable("w").filter_subject("wq.a.>"))
        .await
        .unwrap();
    let d = fetch(&b, "WQ", "w", 10, 500).await;
    assert_eq!(seqs(&d), [1, 2, 3]);
    b.ack_confirmed(&d[1].ack, AckKind::Ack).await.unwrap();
    let st = b.stream_info("WQ").await.unwrap().state;
    assert_eq!(st.messages, 2);
    assert!(b.get_message("WQ", 2).await.is_err());
    let e = b
        .create_consumer("WQ", ConsumerConfig::durable("w2").filter_subject("wq.>"))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, Error::InvalidConfig { reason } if reason.to_string().contains("not unique on workqueue")),
        "{e}"
    );
    // Disjoint filters may share it.
    b.create_consumer("WQ", ConsumerConfig::durable("w3").filter_subject("wq.b"))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_fetch_loses_nothing_for_good() {
    let b = setup("DROPPED", 0).await;
    b.create_consumer("DROPPED", ConsumerConfig::durable("c").ack_wait(300 * MS))
        .await
        .unwrap();
    let r = tokio::time::timeout(
        200 * MS,
        b.fetch("DROPPED", "c", 10, Duration::from_millis(700)),
    )
    .await;
    assert!(r.is_err(), "the fetch should still wait");
    publish(&b, "DROPPED", 0..3).await;
    // The dropped fetch's pull (alive until its expires) may have taken
    // them; they come back after ack_wait.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 3 && Instant::now() < deadline {
        for d in fetch(&b, "DROPPED", "c", 10, 500).await {
            b.ack_confirmed(&d.ack, AckKind::Ack).await.unwrap();
            got.push(d.stream_seq());
        }
    }
    got.sort_unstable();
    assert_eq!(got, [1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_survives_a_server_restart() {
    let server = std::sync::Arc::new(NatsServer::start().unwrap());
    let b = NatsBackend::connect(&server.url(), NatsOptions::default())
        .await
        .unwrap();
    b.create_stream(StreamConfig::new("RESTART").subjects(["restart.>"]))
        .await
        .unwrap();
    b.create_consumer("RESTART", ConsumerConfig::durable("c"))
        .await
        .unwrap();
    let b2 = b.clone();
    let t = Instant::now();
    let waiting =
        tokio::spawn(async move { b2.fetch("RESTART", "c", 5, Duration::from_secs(15)).await });
    tokio::time::sleep(300 * MS).await;
    let s = server.clone();
    tokio::task::spawn_blocking(move || s.restart())
        .await
        .unwrap()
        .unwrap();
    // The pull the server had is gone with it; the fetch pulls again.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.publish(Message::new("restart.a", "x")).await.is_err() {
        assert!(Instant::now() < deadline, "no publish after the restart");
        tokio::time::sleep(100 * MS).await;
    }
    let got = waiting.await.unwrap().unwrap();
    assert_eq!(seqs(&got), [1]);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ack_policy_all_acks_earlier_deliveries_and_none_needs_no_acks() {
    let b = setup("ACKALL", 3).await;
    b.create_consumer(
        "ACKALL",
        ConsumerConfig::durable("all")
            .ack_policy(AckPolicy::All)
            .ack_wait(300 * MS),
    )
    .await
    .unwrap();
    let d = fetch(&b, "ACKALL", "all", 3, 500).await;
    b.ack_confirmed(&d[1].ack, AckKind::Ack).await.unwrap();
    let info = b.consumer_info("ACKALL", "all").await.unwrap();
    assert_eq!((info.ack_floor.stream_seq, info.num_ack_pending), (2, 1));
    assert_eq!(seqs(&fetch(&b, "ACKALL", "all", 3, 1500).await), [3]);

    b.create_consumer(
        "ACKALL",
        ConsumerConfig::durable("none")
            .ack_policy(AckPolicy::None)
            .ack_wait(200 * MS),
    )
    .await
    .unwrap();
    assert_eq!(seqs(&fetch(&b, "ACKALL", "none", 5, 500).await), [1, 2, 3]);
    let info = b.consumer_info("ACKALL", "none").await.unwrap();
    assert_eq!((info.num_ack_pending, info.ack_floor.stream_seq), (0, 3));
    assert!(fetch(&b, "ACKALL", "none", 5, 500).await.is_empty());
}

/// nats-server 2.9.10 can deliver an acknowledged message again (delivery
/// count 1) and hold a delayed nak's redelivery until ack_wait when the
/// redelivery falls due as a pull expires. Fetches that pulled in 50 ms
/// steps hit it in about 1 of 4 runs of this pattern (a consumer runner's
/// retry with a 50 ms backoff); long pulls avoid it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn naks_with_short_delays_redeliver_promptly_and_acked_messages_stay_acked() {
    let b = connect().await;
    for trial in 0..20 {
        let s = format!("NAKRUN{trial}");
        let _ = b.delete_stream(&s).await;
        b.create_stream(StreamConfig::new(&s).subjects([format!("nakrun{trial}.>")]))
            .await
            .unwrap();
        for i in 0..4 {
            b.publish(Message::new(format!("nakrun{trial}.a"), format!("{i}")))
                .await
                .unwrap();
        }
        let cfg = ConsumerConfig::durable("r")
            .max_deliver(3)
            .ack_wait(Duration::from_secs(2));
        b.create_consumer(&s, cfg).await.unwrap();
        let mut log = vec![];
        let t = Instant::now();
        let mut termed = false;
        while !termed && t.elapsed() < Duration::from_secs(5) {
            for d in fetch(&b, &s, "r", 4, 300).await {
                log.push((d.stream_seq(), d.delivered()));
                let kind = match (d.stream_seq(), d.delivered()) {
                    (2, n) if n >= 3 => {
                        termed = true;
                        AckKind::Term
                    }
                    (2, _) => AckKind::Nak(Some(50 * MS)),
                    _ => AckKind::Ack,
                };
                b.ack_confirmed(&d.ack, kind).await.unwrap();
            }
        }
        assert_eq!(
            log,
            [(1, 1), (2, 1), (3, 1), (4, 1), (2, 2), (2, 3)],
            "trial {trial}"
        );
        // Two 50 ms naks, well below the 2 s ack_wait.
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "trial {trial}: {:?}",
            t.elapsed()
        );
        b.delete_stream(&s).await.unwrap();
    }
}
