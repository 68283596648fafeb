//! Durable and ephemeral consumers: create/info/list/delete, deliver and ack
//! policies, redelivery (ack_wait, nak delay, backoff), max_deliver,
//! max_ack_pending, and work-queue / interest retention.
//!
//! Durations are short (hundreds of milliseconds) to keep the suite quick;
//! lower bounds are asserted exactly, upper bounds generously.

use std::time::{Duration, Instant, SystemTime};

use durabus::{
    AckKind, AckPolicy, Bus, ConsumerConfig, DeliverPolicy, Error, RetentionPolicy, StreamConfig,
};

use crate::{
    assert_err, consumer, create, delivered_seqs, eventually, fetch, fetch_n, names, publish_n,
    publish_payload, settle, state, WAIT,
};

const SHORT: Duration = Duration::from_millis(300);
const NONE_DUE: Duration = Duration::from_millis(150);

/// create_consumer is create-if-absent for durables; a different
/// configuration under the same name is refused, never applied.
pub async fn create_consumer_is_create_if_absent_and_a_change_is_name_in_use(bus: &Bus) {
    let n = names("cons_create");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let c = ConsumerConfig::durable("worker").ack_wait(Duration::from_secs(10));
    let first = consumer(bus, &cfg.name, c.clone()).await;
    assert_eq!(first.name, "worker");
    assert_eq!(first.stream, cfg.name);
    assert_eq!(first.config.ack_wait, Duration::from_secs(10));
    let again = consumer(bus, &cfg.name, c.clone()).await;
    assert_eq!(again.created, first.created);
    assert_err!(
        bus.create_consumer(&cfg.name, c.clone().ack_wait(Duration::from_secs(20)))
            .await,
        Error::ConsumerNameInUse { ref name, .. } if name == "worker"
    );
    let info = bus.consumer_info(&cfg.name, "worker").await.unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(10));
    assert_eq!(state(bus, &cfg.name).await.consumer_count, 1);
}

/// Unknown consumers are ConsumerNotFound; unknown streams StreamNotFound.
pub async fn unknown_consumers_and_streams_are_not_found(bus: &Bus) {
    let n = names("cons_unknown");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    assert_err!(
        bus.consumer_info(&cfg.name, "nobody").await,
        Error::ConsumerNotFound { ref name, .. } if name == "nobody"
    );
    assert_err!(
        bus.fetch(&cfg.name, "nobody", 1, NONE_DUE).await,
        Error::ConsumerNotFound { .. }
    );
    assert_err!(
        bus.delete_consumer(&cfg.name, "nobody").await,
        Error::ConsumerNotFound { .. }
    );
    assert_err!(
        bus.create_consumer(&n.stream("MISSING"), ConsumerConfig::durable("c"))
            .await,
        Error::StreamNotFound { .. }
    );
}

/// Consumers are listed by name; a deleted one is gone with its state.
pub async fn list_consumers_is_sorted_and_delete_removes_one(bus: &Bus) {
    let n = names("cons_list");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    for name in ["charlie", "alpha", "bravo"] {
        consumer(bus, &cfg.name, ConsumerConfig::durable(name)).await;
    }
    let names: Vec<String> = bus
        .list_consumers(&cfg.name)
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert_eq!(names, ["alpha", "bravo", "charlie"]);
    bus.delete_consumer(&cfg.name, "bravo").await.unwrap();
    assert_err!(
        bus.consumer_info(&cfg.name, "bravo").await,
        Error::ConsumerNotFound { .. }
    );
    assert_eq!(state(bus, &cfg.name).await.consumer_count, 2);
}

/// update_consumer changes what JetStream lets change (ack_wait,
/// max_deliver) and refuses the deliver policy.
pub async fn update_consumer_changes_ack_wait_and_refuses_a_new_deliver_policy(bus: &Bus) {
    let n = names("cons_update");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let c = ConsumerConfig::durable("u");
    consumer(bus, &cfg.name, c.clone()).await;
    let info = bus
        .update_consumer(
            &cfg.name,
            c.clone().ack_wait(Duration::from_secs(7)).max_deliver(4),
        )
        .await
        .unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(7));
    assert_eq!(info.config.max_deliver, Some(4));
    assert_err!(
        bus.update_consumer(&cfg.name, c.deliver_policy(DeliverPolicy::New))
            .await,
        Error::InvalidConfig { .. }
    );
    assert_err!(
        bus.update_consumer(&cfg.name, ConsumerConfig::durable("nobody"))
            .await,
        Error::ConsumerNotFound { .. }
    );
}

/// Deliver all: every message in order, with stream and consumer
/// sequences, delivery count 1 and the pending count going down.
pub async fn deliver_all_fetches_every_message_in_order_with_metadata(bus: &Bus) {
    let n = names("cons_all");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 5).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("c")).await;
    let got = fetch_n(bus, &cfg.name, "c", 5).await;
    assert_eq!(delivered_seqs(&got), [1, 2, 3, 4, 5]);
    for (i, d) in got.iter().enumerate() {
        assert_eq!(d.consumer_seq(), i as u64 + 1);
        assert_eq!(d.delivered(), 1);
        assert_eq!(
            d.pending,
            4 - i as u64,
            "pending after seq {}",
            d.stream_seq()
        );
        assert_eq!(d.message.subject, n.subject("a"));
        assert_eq!(d.message.payload, i.to_string().as_bytes());
        assert_eq!(d.message.stream, cfg.name);
    }
    let info = bus.consumer_info(&cfg.name, "c").await.unwrap();
    assert_eq!(info.num_pending, 0);
    assert_eq!(info.num_ack_pending, 5);
    assert_eq!(info.delivered.stream_seq, 5);
    assert_eq!(info.delivered.consumer_seq, 5);
}

/// Deliver last, new, by start sequence and by start time start where
/// JetStream starts them.
pub async fn deliver_policies_start_where_jetstream_starts(bus: &Bus) {
    let n = names("cons_policies");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    let t = SystemTime::now();
    tokio::time::sleep(Duration::from_millis(20)).await;
    publish_n(bus, &n.subject("a"), 2).await;
    for (name, policy, first) in [
        ("last", DeliverPolicy::Last, 5),
        ("seq", DeliverPolicy::ByStartSequence(4), 4),
        ("time", DeliverPolicy::ByStartTime(t), 4),
        ("all", DeliverPolicy::All, 1),
    ] {
        consumer(
            bus,
            &cfg.name,
            ConsumerConfig::durable(name).deliver_policy(policy),
        )
        .await;
        let got = fetch(bus, &cfg.name, name, 1, Duration::from_secs(2)).await;
        assert_eq!(delivered_seqs(&got), [first], "{name}");
    }
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("new").deliver_policy(DeliverPolicy::New),
    )
    .await;
    assert!(fetch(bus, &cfg.name, "new", 1, NONE_DUE).await.is_empty());
    publish_payload(bus, &n.subject("a"), "later").await;
    let got = fetch(bus, &cfg.name, "new", 1, Duration::from_secs(2)).await;
    assert_eq!(delivered_seqs(&got), [6]);
}

/// Deliver last per subject: the newest message of each subject, then
/// new ones.
pub async fn deliver_last_per_subject_yields_the_newest_of_each_subject(bus: &Bus) {
    let n = names("cons_lps");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    for s in ["a", "b", "a", "c", "b"] {
        publish_payload(bus, &n.subject(s), s).await;
    }
    // JetStream needs a filter with this policy.
    assert_err!(
        bus.create_consumer(
            &cfg.name,
            ConsumerConfig::durable("bare").deliver_policy(DeliverPolicy::LastPerSubject)
        )
        .await,
        Error::InvalidConfig { .. }
    );
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("lps")
            .deliver_policy(DeliverPolicy::LastPerSubject)
            .filter_subject(n.all()),
    )
    .await;
    let got = fetch_n(bus, &cfg.name, "lps", 3).await;
    assert_eq!(delivered_seqs(&got), [3, 4, 5]);
}

/// A filter subject restricts deliveries (and pending) to its matches.
pub async fn filter_subject_delivers_only_matching_messages(bus: &Bus) {
    let n = names("cons_filter");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    for s in ["a.x", "b.x", "a.y", "b.y"] {
        publish_payload(bus, &n.subject(s), s).await;
    }
    let info = consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("f").filter_subject(n.subject("a.*")),
    )
    .await;
    assert_eq!(info.num_pending, 2);
    let got = fetch_n(bus, &cfg.name, "f", 2).await;
    assert_eq!(delivered_seqs(&got), [1, 3]);
    assert!(fetch(bus, &cfg.name, "f", 5, NONE_DUE).await.is_empty());
}

/// Acknowledged messages are never delivered again; the ack floor moves.
pub async fn acked_messages_are_not_redelivered(bus: &Bus) {
    let n = names("cons_ack");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("c").ack_wait(SHORT)).await;
    for d in fetch_n(bus, &cfg.name, "c", 3).await {
        settle(bus, &d, AckKind::Ack).await;
    }
    tokio::time::sleep(SHORT * 2).await;
    assert!(fetch(bus, &cfg.name, "c", 5, NONE_DUE).await.is_empty());
    let info = bus.consumer_info(&cfg.name, "c").await.unwrap();
    assert_eq!(info.num_ack_pending, 0);
    assert_eq!(info.ack_floor.stream_seq, 3);
    assert_eq!(info.num_redelivered, 0);
}

/// `ack` returns once the ack is sent; the backend applies it soon
/// after and the message is never delivered again. An ack for a
/// deleted consumer is dropped without an error; a confirmed one is
/// ConsumerNotFound.
pub async fn sent_acks_are_applied_and_never_redelivered(bus: &Bus) {
    let n = names("cons_sent");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 50).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("c").ack_wait(SHORT)).await;
    let got = fetch_n(bus, &cfg.name, "c", 50).await;
    for d in &got {
        bus.ack(d, AckKind::Ack).await.unwrap();
    }
    eventually("the 50 acks applied", WAIT, || async {
        let info = bus.consumer_info(&cfg.name, "c").await.unwrap();
        info.num_ack_pending == 0 && info.ack_floor.stream_seq == 50
    })
    .await;
    tokio::time::sleep(SHORT * 2).await;
    assert!(fetch(bus, &cfg.name, "c", 5, NONE_DUE).await.is_empty());
    assert_eq!(
        bus.consumer_info(&cfg.name, "c")
            .await
            .unwrap()
            .num_redelivered,
        0
    );
    bus.delete_consumer(&cfg.name, "c").await.unwrap();
    bus.ack(&got[0], AckKind::Ack).await.unwrap();
    assert_err!(
        bus.ack_confirmed(&got[0], AckKind::Ack).await,
        Error::ConsumerNotFound { .. }
    );
}

/// An unacknowledged delivery comes again after ack_wait, as delivery 2
/// with a new consumer sequence; not before.
pub async fn unacked_messages_are_redelivered_after_ack_wait(bus: &Bus) {
    let n = names("cons_ackwait");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("c").ack_wait(SHORT)).await;
    let first = fetch_n(bus, &cfg.name, "c", 1).await;
    let at = Instant::now();
    assert!(fetch(bus, &cfg.name, "c", 1, NONE_DUE).await.is_empty());
    let again = fetch_n(bus, &cfg.name, "c", 1).await;
    assert!(
        at.elapsed() >= SHORT - Duration::from_millis(20),
        "{:?}",
        at.elapsed()
    );
    assert_eq!(again[0].stream_seq(), 1);
    assert_eq!(again[0].delivered(), 2);
    assert!(again[0].consumer_seq() > first[0].consumer_seq());
    let info = bus.consumer_info(&cfg.name, "c").await.unwrap();
    assert_eq!(info.num_redelivered, 1);
    assert_eq!(info.num_ack_pending, 1);
}

/// Nak with a delay redelivers after the delay, not before; a plain nak
/// redelivers at once.
pub async fn nak_redelivers_at_once_or_after_its_delay(bus: &Bus) {
    let n = names("cons_nak");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("c").ack_wait(Duration::from_secs(30)),
    )
    .await;
    let got = fetch_n(bus, &cfg.name, "c", 2).await;
    settle(bus, &got[0], AckKind::Nak(None)).await;
    let again = fetch_n(bus, &cfg.name, "c", 1).await;
    assert_eq!((again[0].stream_seq(), again[0].delivered()), (1, 2));
    let at = Instant::now();
    settle(bus, &got[1], AckKind::Nak(Some(SHORT))).await;
    assert!(fetch(bus, &cfg.name, "c", 1, NONE_DUE).await.is_empty());
    let later = fetch_n(bus, &cfg.name, "c", 1).await;
    assert!(
        at.elapsed() >= SHORT - Duration::from_millis(20),
        "{:?}",
        at.elapsed()
    );
    assert_eq!((later[0].stream_seq(), later[0].delivered()), (2, 2));
}

/// Term: never delivered again, however long one waits.
pub async fn terminated_messages_are_never_redelivered(bus: &Bus) {
    let n = names("cons_term");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("c").ack_wait(SHORT)).await;
    let got = fetch_n(bus, &cfg.name, "c", 1).await;
    settle(bus, &got[0], AckKind::Term).await;
    tokio::time::sleep(SHORT * 2).await;
    assert!(fetch(bus, &cfg.name, "c", 1, NONE_DUE).await.is_empty());
    assert_eq!(
        bus.consumer_info(&cfg.name, "c")
            .await
            .unwrap()
            .num_ack_pending,
        0
    );
}

/// In progress restarts ack_wait: no redelivery while work goes on.
pub async fn in_progress_postpones_redelivery(bus: &Bus) {
    let n = names("cons_wpi");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    let wait = Duration::from_millis(400);
    consumer(bus, &cfg.name, ConsumerConfig::durable("c").ack_wait(wait)).await;
    let got = fetch_n(bus, &cfg.name, "c", 1).await;
    for _ in 0..3 {
        tokio::time::sleep(wait / 2).await;
        settle(bus, &got[0], AckKind::InProgress).await;
    }
    // 600 ms after delivery, beyond the 400 ms ack_wait: still held.
    assert!(fetch(bus, &cfg.name, "c", 1, Duration::from_millis(100))
        .await
        .is_empty());
    settle(bus, &got[0], AckKind::Ack).await;
    tokio::time::sleep(wait).await;
    assert!(fetch(bus, &cfg.name, "c", 1, NONE_DUE).await.is_empty());
}

/// Backoff replaces ack_wait for redeliveries, entry by entry, and
/// max_deliver ends them. As nats-server, the consumer's ack_wait becomes
/// the first backoff step.
pub async fn backoff_spaces_redeliveries_and_max_deliver_ends_them(bus: &Bus) {
    let n = names("cons_backoff");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    let steps = [Duration::from_millis(200), Duration::from_millis(600)];
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("c").backoff(steps).max_deliver(3),
    )
    .await;
    let info = bus.consumer_info(&cfg.name, "c").await.unwrap();
    assert_eq!(info.config.ack_wait, steps[0]);
    let mut times = Vec::new();
    for delivery in 1..=3u64 {
        let got = fetch_n(bus, &cfg.name, "c", 1).await;
        assert_eq!(got[0].delivered(), delivery);
        times.push(Instant::now());
    }
    let gaps: Vec<Duration> = times.windows(2).map(|w| w[1] - w[0]).collect();
    for (gap, step) in gaps.iter().zip(steps) {
        assert!(*gap >= step - Duration::from_millis(20), "{gaps:?}");
    }
    // Delivered 3 times = max_deliver: no fourth, even after the last step.
    assert!(fetch(bus, &cfg.name, "c", 1, Duration::from_millis(900))
        .await
        .is_empty());
}

/// max_ack_pending holds delivery while that many are unacknowledged;
/// each ack lets one more through.
pub async fn max_ack_pending_holds_delivery_until_acks_arrive(bus: &Bus) {
    let n = names("cons_map");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 5).await;
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("c").max_ack_pending(Some(2)),
    )
    .await;
    let got = fetch_n(bus, &cfg.name, "c", 2).await;
    assert_eq!(delivered_seqs(&got), [1, 2]);
    assert!(fetch(bus, &cfg.name, "c", 5, NONE_DUE).await.is_empty());
    settle(bus, &got[0], AckKind::Ack).await;
    let more = fetch_n(bus, &cfg.name, "c", 1).await;
    assert_eq!(delivered_seqs(&more), [3]);
    assert!(fetch(bus, &cfg.name, "c", 5, NONE_DUE).await.is_empty());
}

/// Ack policy none: deliveries are done when made, never redelivered.
pub async fn ack_policy_none_never_redelivers(bus: &Bus) {
    let n = names("cons_acknone");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("c")
            .ack_policy(AckPolicy::None)
            .ack_wait(SHORT),
    )
    .await;
    assert_eq!(
        delivered_seqs(&fetch_n(bus, &cfg.name, "c", 3).await),
        [1, 2, 3]
    );
    tokio::time::sleep(SHORT * 2).await;
    assert!(fetch(bus, &cfg.name, "c", 3, NONE_DUE).await.is_empty());
    assert_eq!(
        bus.consumer_info(&cfg.name, "c")
            .await
            .unwrap()
            .num_ack_pending,
        0
    );
}

/// Ack policy all: acknowledging one acknowledges every earlier one.
pub async fn ack_policy_all_acks_everything_before(bus: &Bus) {
    let n = names("cons_ackall");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 4).await;
    consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("c")
            .ack_policy(AckPolicy::All)
            .ack_wait(SHORT),
    )
    .await;
    let got = fetch_n(bus, &cfg.name, "c", 4).await;
    settle(bus, &got[2], AckKind::Ack).await;
    let info = bus.consumer_info(&cfg.name, "c").await.unwrap();
    assert_eq!(info.ack_floor.stream_seq, 3);
    assert_eq!(info.num_ack_pending, 1);
    let again = fetch_n(bus, &cfg.name, "c", 1).await;
    assert_eq!(
        delivered_seqs(&again),
        [4],
        "only the unacked one comes back"
    );
}

/// A fetch waits for a message published while it waits; with nothing
/// to deliver it returns empty after its expiry, not an error.
pub async fn fetch_waits_up_to_its_expiry_for_new_messages(bus: &Bus) {
    let n = names("cons_wait");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("c")).await;
    let at = Instant::now();
    assert!(fetch(bus, &cfg.name, "c", 1, Duration::from_millis(200))
        .await
        .is_empty());
    assert!(
        at.elapsed() >= Duration::from_millis(180),
        "{:?}",
        at.elapsed()
    );
    let waiting = {
        let bus = bus.clone();
        let stream = cfg.name.clone();
        tokio::spawn(async move { bus.fetch(&stream, "c", 1, Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    publish_payload(bus, &n.subject("a"), "late").await;
    let got = waiting.await.unwrap().unwrap();
    assert_eq!(delivered_seqs(&got), [1]);
}

/// Settling a delivery again (ack after ack, ack after term) is a no-op.
pub async fn settling_twice_is_a_no_op(bus: &Bus) {
    let n = names("cons_twice");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("c")).await;
    let got = fetch_n(bus, &cfg.name, "c", 2).await;
    settle(bus, &got[0], AckKind::Ack).await;
    settle(bus, &got[0], AckKind::Ack).await;
    settle(bus, &got[1], AckKind::Term).await;
    settle(bus, &got[1], AckKind::Ack).await;
    let info = bus.consumer_info(&cfg.name, "c").await.unwrap();
    assert_eq!(info.num_ack_pending, 0);
}

/// An ephemeral consumer gets a name from the backend and works.
pub async fn ephemeral_consumers_are_named_and_deliver(bus: &Bus) {
    let n = names("cons_ephemeral");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    let info = consumer(bus, &cfg.name, ConsumerConfig::ephemeral()).await;
    assert!(!info.name.is_empty());
    assert_eq!(info.config.durable_name, None);
    let got = fetch_n(bus, &cfg.name, &info.name, 2).await;
    assert_eq!(delivered_seqs(&got), [1, 2]);
}

/// Work-queue retention: a message is removed once acked; a second
/// consumer overlapping the first is refused.
pub async fn work_queue_removes_acked_messages_and_allows_one_consumer_per_subject(bus: &Bus) {
    let n = names("cons_wq");
    let cfg = StreamConfig::new(n.stream("S"))
        .subjects([n.all()])
        .retention(RetentionPolicy::WorkQueue);
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("w")).await;
    assert_err!(
        bus.create_consumer(&cfg.name, ConsumerConfig::durable("other"))
            .await,
        Error::InvalidConfig { .. }
    );
    let got = fetch_n(bus, &cfg.name, "w", 3).await;
    settle(bus, &got[0], AckKind::Ack).await;
    settle(bus, &got[2], AckKind::Ack).await;
    eventually("acked messages removed", crate::WAIT, || async {
        state(bus, &cfg.name).await.messages == 1
    })
    .await;
    assert_err!(
        bus.get_message(&cfg.name, 1).await,
        Error::MessageNotFound { .. }
    );
    assert_eq!(bus.get_message(&cfg.name, 2).await.unwrap().seq, 2);
}

/// Interest retention: a message stays until every consumer it matches
/// has acked it.
pub async fn interest_retention_keeps_messages_until_every_consumer_acked(bus: &Bus) {
    let n = names("cons_interest");
    let cfg = StreamConfig::new(n.stream("S"))
        .subjects([n.all()])
        .retention(RetentionPolicy::Interest);
    create(bus, cfg.clone()).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("one")).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("two")).await;
    publish_n(bus, &n.subject("a"), 2).await;
    let one = fetch_n(bus, &cfg.name, "one", 2).await;
    let two = fetch_n(bus, &cfg.name, "two", 2).await;
    settle(bus, &one[0], AckKind::Ack).await;
    settle(bus, &one[1], AckKind::Ack).await;
    settle(bus, &two[0], AckKind::Ack).await;
    eventually("seq 1 removed once both acked it", crate::WAIT, || async {
        state(bus, &cfg.name).await.messages == 1
    })
    .await;
    assert_eq!(bus.get_message(&cfg.name, 2).await.unwrap().seq, 2);
}

/// A consumer given a backoff reports (and applies) `ack_wait` equal to
/// its first step, as nats-server sets it, after create and update.
pub async fn a_backoff_sets_ack_wait_to_its_first_step(bus: &Bus) {
    let n = names("cons_backoff_wait");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let info = consumer(
        bus,
        &cfg.name,
        ConsumerConfig::durable("c")
            .max_deliver(3)
            .backoff([Duration::from_secs(1), Duration::from_secs(2)]),
    )
    .await;
    assert_eq!(info.config.ack_wait, Duration::from_secs(1));
    let info = bus.consumer_info(&cfg.name, "c").await.unwrap();
    assert_eq!(info.config.ack_wait, Duration::from_secs(1));
    let updated = bus
        .update_consumer(
            &cfg.name,
            ConsumerConfig::durable("c")
                .max_deliver(3)
                .backoff([Duration::from_secs(3), Duration::from_secs(4)]),
        )
        .await
        .unwrap();
    assert_eq!(updated.config.ack_wait, Duration::from_secs(3));
    // Creating it again as first asked for is the same consumer.
    let again = bus
        .create_consumer(
            &cfg.name,
            ConsumerConfig::durable("c")
                .max_deliver(3)
                .backoff([Duration::from_secs(3), Duration::from_secs(4)]),
        )
        .await
        .unwrap();
    assert_eq!(again.config.ack_wait, Duration::from_secs(3));
}
