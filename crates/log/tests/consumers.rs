//! Consumers of the embedded engine (JetStream semantics), on file and memory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant, SystemTime};

use common::*;
use durabus_core::{
    AckKind, AckPolicy, Backend, ConsumerConfig, DeliverPolicy, Delivery, Error, RetentionPolicy,
    StreamConfig,
};
use durabus_log::{Options, Store};

const NOW: Duration = Duration::from_millis(1);

async fn setup(s: &Store, n: usize) {
    stream(s, StreamConfig::new("S").subjects(["a.>", "b.>"])).await;
    for i in 0..n {
        let subj = if i % 2 == 0 { "a.x" } else { "b.x" };
        publish(s, subj, format!("m{}", i + 1)).await;
    }
}

async fn fetch(s: &Store, c: &str, n: usize) -> Vec<Delivery> {
    s.fetch("S", c, n, NOW).await.unwrap()
}

fn seqs(d: &[Delivery]) -> Vec<u64> {
    d.iter().map(|d| d.stream_seq()).collect()
}

#[tokio::test]
async fn deliver_policies_start_where_jetstream_starts() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 6).await; // a.x: 1 3 5, b.x: 2 4 6
        publish(&s, "a.y", "7").await;
        let t = SystemTime::now();
        tokio::time::sleep(Duration::from_millis(5)).await;
        publish(&s, "b.y", "8").await;
        let cases: Vec<(&str, DeliverPolicy, Option<&str>, Vec<u64>)> = vec![
            (
                "all",
                DeliverPolicy::All,
                None,
                vec![1, 2, 3, 4, 5, 6, 7, 8],
            ),
            ("alla", DeliverPolicy::All, Some("a.*"), vec![1, 3, 5, 7]),
            ("last", DeliverPolicy::Last, None, vec![8]),
            ("lasta", DeliverPolicy::Last, Some("a.*"), vec![7]),
            ("new", DeliverPolicy::New, None, vec![]),
            (
                "seq",
                DeliverPolicy::ByStartSequence(6),
                None,
                vec![6, 7, 8],
            ),
            ("time", DeliverPolicy::ByStartTime(t), None, vec![8]),
            (
                "lps",
                DeliverPolicy::LastPerSubject,
                Some(">"),
                vec![5, 6, 7, 8],
            ),
            (
                "lpsa",
                DeliverPolicy::LastPerSubject,
                Some("a.>"),
                vec![5, 7],
            ),
        ];
        for (name, policy, filter, want) in cases {
            let mut cfg = ConsumerConfig::durable(name).deliver_policy(policy);
            if let Some(f) = filter {
                cfg = cfg.filter_subject(f);
            }
            s.create_consumer("S", cfg).await.unwrap();
            let got = fetch(&s, name, 100).await;
            assert_eq!(seqs(&got), want, "{kind} {name}");
        }
        // Then new messages, for every policy.
        publish(&s, "a.z", "9").await;
        for name in [
            "all", "alla", "last", "lasta", "new", "seq", "time", "lps", "lpsa",
        ] {
            assert_eq!(seqs(&fetch(&s, name, 10).await), vec![9], "{kind} {name}");
        }
    }
}

/// Checks invariant 17 (docs/design.md).
#[tokio::test]
async fn several_filter_subjects_deliver_their_union_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 0).await;
        for subj in ["a.1", "b.1", "a.2", "b.2"] {
            publish(&s, subj, "x").await;
        }
        let mut cfg = ConsumerConfig::durable("c");
        cfg.filter_subjects = vec!["a.1".into(), "b.2".into()];
        s.create_consumer("S", cfg).await.unwrap();
        assert_eq!(seqs(&fetch(&s, "c", 10).await), vec![1, 4], "{kind}");
    }
}

#[tokio::test]
async fn explicit_ack_advances_the_floor_over_contiguous_acks() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 4).await;
        s.create_consumer("S", ConsumerConfig::durable("c"))
            .await
            .unwrap();
        let d = fetch(&s, "c", 4).await;
        assert_eq!(d[0].pending, 3, "{kind}");
        assert_eq!(d[3].pending, 0, "{kind}");
        s.ack(&d[1].ack, AckKind::Ack).await.unwrap();
        let i = s.consumer_info("S", "c").await.unwrap();
        assert_eq!(i.ack_floor.stream_seq, 0, "{kind}");
        assert_eq!(i.num_ack_pending, 3, "{kind}");
        s.ack(&d[0].ack, AckKind::Ack).await.unwrap();
        let i = s.consumer_info("S", "c").await.unwrap();
        assert_eq!(
            (i.ack_floor.stream_seq, i.ack_floor.consumer_seq),
            (2, 2),
            "{kind}"
        );
        // Acking twice, or an unknown delivery, is fine.
        s.ack(&d[0].ack, AckKind::Ack).await.unwrap();
        let mut bogus = d[0].ack.clone();
        bogus.consumer = "nobody".into();
        s.ack(&bogus, AckKind::Ack).await.unwrap();
        s.ack(&d[2].ack, AckKind::Ack).await.unwrap();
        s.ack(&d[3].ack, AckKind::Ack).await.unwrap();
        let i = s.consumer_info("S", "c").await.unwrap();
        assert_eq!(i.ack_floor.stream_seq, 4, "{kind}");
        assert_eq!(i.delivered.stream_seq, 4, "{kind}");
        assert_eq!(i.num_ack_pending, 0, "{kind}");
        assert_eq!(i.num_pending, 0, "{kind}");
    }
}

#[tokio::test]
async fn ack_all_acknowledges_everything_up_to_it() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 5).await;
        let cfg = ConsumerConfig::durable("c").ack_policy(AckPolicy::All);
        s.create_consumer("S", cfg).await.unwrap();
        let d = fetch(&s, "c", 5).await;
        s.ack(&d[2].ack, AckKind::Ack).await.unwrap();
        let i = s.consumer_info("S", "c").await.unwrap();
        assert_eq!(i.num_ack_pending, 2, "{kind}");
        assert_eq!(i.ack_floor.stream_seq, 3, "{kind}");
    }
}

#[tokio::test]
async fn ack_none_counts_deliveries_as_acked() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 3).await;
        let cfg = ConsumerConfig::durable("c")
            .ack_policy(AckPolicy::None)
            .ack_wait(NOW);
        s.create_consumer("S", cfg).await.unwrap();
        assert_eq!(fetch(&s, "c", 10).await.len(), 3, "{kind}");
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(fetch(&s, "c", 10).await.is_empty(), "{kind}");
        let i = s.consumer_info("S", "c").await.unwrap();
        assert_eq!(
            (i.num_ack_pending, i.ack_floor.stream_seq),
            (0, 3),
            "{kind}"
        );
    }
}

/// Checks invariant 17 (docs/design.md).
#[tokio::test]
async fn unacked_messages_are_redelivered_after_ack_wait() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 2).await;
        let cfg = ConsumerConfig::durable("c").ack_wait(Duration::from_millis(50));
        s.create_consumer("S", cfg).await.unwrap();
        let d = fetch(&s, "c", 10).await;
        s.ack(&d[1].ack, AckKind::Ack).await.unwrap();
        assert!(fetch(&s, "c", 10).await.is_empty(), "{kind}: not due yet");
        // A waiting fetch is woken when the redelivery comes due.
        let t = Instant::now();
        let r = s.fetch("S", "c", 10, Duration::from_secs(2)).await.unwrap();
        assert!(t.elapsed() < Duration::from_secs(1), "{kind}");
        assert_eq!(seqs(&r), vec![1], "{kind}");
        assert_eq!(r[0].delivered(), 2, "{kind}");
        assert_eq!(r[0].consumer_seq(), 3, "{kind}");
        let i = s.consumer_info("S", "c").await.unwrap();
        assert_eq!(i.num_redelivered, 1, "{kind}");
        assert_eq!(i.delivered.consumer_seq, 3, "{kind}");
    }
}

#[tokio::test]
async fn nak_with_delay_redelivers_after_the_delay_and_without_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 2).await;
        s.create_consumer("S", ConsumerConfig::durable("c"))
            .await
            .unwrap();
        let d = fetch(&s, "c", 10).await;
        s.ack(&d[0].ack, AckKind::Nak(Some(Duration::from_millis(60))))
            .await
            .unwrap();
        s.ack(&d[1].ack, AckKind::Nak(None)).await.unwrap();
        assert_eq!(seqs(&fetch(&s, "c", 10).await), vec![2], "{kind}");
        tokio::time::sleep(Duration::from_millis(70)).await;
        let r = fetch(&s, "c", 10).await;
        assert_eq!(seqs(&r), vec![1], "{kind}");
        assert_eq!(r[0].delivered(), 2, "{kind}");
    }
}

#[tokio::test]
async fn backoff_sets_the_waits_between_redeliveries_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 1).await;
        let cfg = ConsumerConfig::durable("c")
            .backoff([Duration::from_millis(30), Duration::from_millis(150)])
            .max_deliver(4);
        s.create_consumer("S", cfg).await.unwrap();
        let t = Instant::now();
        fetch(&s, "c", 1).await;
        let mut at = Vec::new();
        for _ in 0..3 {
            let r = s.fetch("S", "c", 1, Duration::from_secs(2)).await.unwrap();
            assert_eq!(r.len(), 1, "{kind}");
            at.push(t.elapsed());
        }
        assert!(
            at[0] >= Duration::from_millis(30) && at[0] < Duration::from_millis(150),
            "{kind} {at:?}"
        );
        // Measured when each fetch returned, a little after the engine
        // delivered: the gaps may come out a few ms short of the backoff.
        let slack = Duration::from_millis(10);
        assert!(
            at[1] - at[0] >= Duration::from_millis(150) - slack,
            "{kind} {at:?}"
        );
        assert!(
            at[2] - at[1] >= Duration::from_millis(150) - slack,
            "{kind}: last wait repeats {at:?}"
        );
    }
}

/// Checks invariant 20 (docs/design.md).
#[tokio::test]
async fn max_deliver_stops_redelivery() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 1).await;
        let cfg = ConsumerConfig::durable("c")
            .ack_wait(Duration::from_millis(20))
            .max_deliver(2);
        s.create_consumer("S", cfg).await.unwrap();
        assert_eq!(fetch(&s, "c", 1).await.len(), 1);
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(fetch(&s, "c", 1).await[0].delivered(), 2, "{kind}");
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(s
            .fetch("S", "c", 1, Duration::from_millis(60))
            .await
            .unwrap()
            .is_empty());
        let i = s.consumer_info("S", "c").await.unwrap();
        assert_eq!(
            i.num_ack_pending, 0,
            "{kind}: dropped from pending as nats-server 2.9"
        );
    }
}

/// Settles `d` from another task 20 ms from now, while the caller waits
/// in a fetch.
fn settle_soon(s: &Store, d: &Delivery, kind: AckKind) {
    let (s, ack) = (s.clone(), d.ack.clone());
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(20)).await;
        s.ack(&ack, kind).await.unwrap();
    });
}

#[tokio::test]
async fn max_ack_pending_holds_delivery_until_acks() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 5).await;
        let cfg = ConsumerConfig::durable("c").max_ack_pending(Some(2));
        s.create_consumer("S", cfg).await.unwrap();
        let d = fetch(&s, "c", 10).await;
        assert_eq!(seqs(&d), vec![1, 2], "{kind}");
        assert!(fetch(&s, "c", 10).await.is_empty(), "{kind}");
        // A waiting fetch is woken by the ack that frees room.
        settle_soon(&s, &d[0], AckKind::Ack);
        let r = s.fetch("S", "c", 10, Duration::from_secs(2)).await.unwrap();
        assert_eq!(seqs(&r), vec![3], "{kind}");
    }
}

#[tokio::test]
async fn a_waiting_fetch_gets_a_nakd_delivery_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 1).await;
        let cfg = ConsumerConfig::durable("c").ack_wait(Duration::from_secs(60));
        s.create_consumer("S", cfg).await.unwrap();
        let d = fetch(&s, "c", 1).await;
        settle_soon(&s, &d[0], AckKind::Nak(None));
        // Without a wake-up it would sleep out its 30 s: nothing else is due
        // before the ack wait.
        let r = tokio::time::timeout(
            Duration::from_secs(5),
            s.fetch("S", "c", 1, Duration::from_secs(30)),
        )
        .await
        .unwrap_or_else(|_| panic!("{kind}: the nak did not wake the fetch"))
        .unwrap();
        assert_eq!(seqs(&r), vec![1], "{kind}");
        assert_eq!(r[0].delivered(), 2, "{kind}");
    }
}

#[tokio::test]
async fn in_progress_restarts_ack_wait() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 1).await;
        let cfg = ConsumerConfig::durable("c").ack_wait(Duration::from_millis(80));
        s.create_consumer("S", cfg).await.unwrap();
        let d = fetch(&s, "c", 1).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        s.ack(&d[0].ack, AckKind::InProgress).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            fetch(&s, "c", 1).await.is_empty(),
            "{kind}: deadline was reset"
        );
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(fetch(&s, "c", 1).await.len(), 1, "{kind}");
    }
}

#[tokio::test]
async fn term_removes_a_delivery_for_good() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 1).await;
        let cfg = ConsumerConfig::durable("c").ack_wait(Duration::from_millis(10));
        s.create_consumer("S", cfg).await.unwrap();
        let d = fetch(&s, "c", 1).await;
        s.ack(&d[0].ack, AckKind::Term).await.unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(fetch(&s, "c", 1).await.is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn fetch_waits_for_a_publish_and_returns_empty_after_expires() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 0).await;
        s.create_consumer("S", ConsumerConfig::durable("c"))
            .await
            .unwrap();
        let t = Instant::now();
        assert!(s
            .fetch("S", "c", 1, Duration::from_millis(50))
            .await
            .unwrap()
            .is_empty());
        assert!(t.elapsed() >= Duration::from_millis(50), "{kind}");
        let s2 = s.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            publish(&s2, "a.1", "late").await;
        });
        let r = s.fetch("S", "c", 5, Duration::from_secs(2)).await.unwrap();
        assert_eq!(seqs(&r), vec![1], "{kind}");
    }
}

#[tokio::test]
async fn consumers_are_created_if_absent_listed_counted_and_deleted() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 3).await;
        let a = s
            .create_consumer("S", ConsumerConfig::durable("b"))
            .await
            .unwrap();
        let again = s
            .create_consumer("S", ConsumerConfig::durable("b"))
            .await
            .unwrap();
        assert_eq!(a.created, again.created, "{kind}");
        assert_eq!(a.num_pending, 3, "{kind}");
        let err = s
            .create_consumer("S", ConsumerConfig::durable("b").max_deliver(3))
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::ConsumerNameInUse { .. }),
            "{kind}: {err}"
        );
        s.create_consumer("S", ConsumerConfig::durable("a"))
            .await
            .unwrap();
        let e = s
            .create_consumer("S", ConsumerConfig::ephemeral())
            .await
            .unwrap();
        assert_eq!(e.name.len(), 8, "{kind}");
        assert_eq!(s.stream_info("S").await.unwrap().state.consumer_count, 3);
        let names: Vec<String> = s
            .list_consumers("S")
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "{kind}");
        let u = s
            .update_consumer("S", ConsumerConfig::durable("b").max_deliver(3))
            .await
            .unwrap();
        assert_eq!(u.config.max_deliver, Some(3), "{kind}");
        let err = s
            .update_consumer("S", ConsumerConfig::durable("b").ack_policy(AckPolicy::All))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidConfig { .. }), "{kind}: {err}");
        s.delete_consumer("S", "b").await.unwrap();
        let err = s.consumer_info("S", "b").await.unwrap_err();
        assert!(
            matches!(err, Error::ConsumerNotFound { .. }),
            "{kind}: {err}"
        );
        let err = s.delete_consumer("S", "b").await.unwrap_err();
        assert!(
            matches!(err, Error::ConsumerNotFound { .. }),
            "{kind}: {err}"
        );
        assert_eq!(s.stream_info("S").await.unwrap().state.consumer_count, 2);
        s.delete_stream("S").await.unwrap();
        setup(&s, 0).await;
        assert!(s.list_consumers("S").await.unwrap().is_empty(), "{kind}");
    }
}

#[tokio::test]
async fn ephemeral_consumers_go_after_their_inactive_threshold() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 1).await;
        let cfg = ConsumerConfig::ephemeral().inactive_threshold(Duration::from_millis(100));
        let e = s.create_consumer("S", cfg).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let err = s.consumer_info("S", &e.name).await.unwrap_err();
        assert!(
            matches!(err, Error::ConsumerNotFound { .. }),
            "{kind}: {err}"
        );
    }
}

#[tokio::test]
async fn purged_messages_leave_pending() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 3).await;
        s.create_consumer("S", ConsumerConfig::durable("c"))
            .await
            .unwrap();
        fetch(&s, "c", 2).await;
        s.purge_stream("S", Default::default()).await.unwrap();
        let i = s.consumer_info("S", "c").await.unwrap();
        assert_eq!((i.num_ack_pending, i.num_pending), (0, 0), "{kind}");
        publish(&s, "a.1", "x").await;
        assert_eq!(seqs(&fetch(&s, "c", 5).await), vec![4], "{kind}");
    }
}

/// Checks invariant 18 (docs/design.md).
#[tokio::test]
async fn durable_state_survives_a_clean_reopen_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let before = {
        let s = open(tmp.path());
        setup(&s, 6).await;
        let cfg = ConsumerConfig::durable("c").ack_wait(Duration::from_millis(30));
        s.create_consumer("S", cfg).await.unwrap();
        let d = fetch(&s, "c", 4).await;
        s.ack(&d[0].ack, AckKind::Ack).await.unwrap();
        s.ack(&d[2].ack, AckKind::Ack).await.unwrap();
        let i = s.consumer_info("S", "c").await.unwrap();
        s.close().await.unwrap();
        i
    };
    let s = open(tmp.path());
    let after = s.consumer_info("S", "c").await.unwrap();
    assert_eq!(after, before);
    tokio::time::sleep(Duration::from_millis(40)).await;
    // Unacked 2 and 4 come back, then 5 and 6; acked 1 and 3 never do.
    let r = fetch(&s, "c", 10).await;
    assert_eq!(seqs(&r), vec![2, 4, 5, 6]);
    assert_eq!(r[0].delivered(), 2);
    assert!(tmp.path().join("streams/S/consumers/c").exists());
    s.delete_consumer("S", "c").await.unwrap();
    assert!(!tmp.path().join("streams/S/consumers/c").exists());
}

/// Checks invariant 19 (docs/design.md).
#[tokio::test]
async fn a_corrupt_consumer_file_makes_only_that_consumer_unavailable_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    {
        let s = open(tmp.path());
        setup(&s, 4).await;
        for c in ["c", "d"] {
            s.create_consumer("S", ConsumerConfig::durable(c))
                .await
                .unwrap();
        }
        s.close().await.unwrap();
    }
    let path = tmp.path().join("streams/S/consumers/c");
    let good = std::fs::read(&path).unwrap();
    let mut b = good.clone();
    let mid = b.len() / 2;
    b[mid] ^= 0x40;
    for (round, damaged) in [b.clone(), b[..10].to_vec()].into_iter().enumerate() {
        std::fs::write(&path, &damaged).unwrap();
        let s = open(tmp.path());
        // The stream and the other consumer work.
        assert_eq!(s.stream_info("S").await.unwrap().state.messages, 4);
        if round == 0 {
            assert_eq!(seqs(&fetch(&s, "d", 10).await), [1, 2, 3, 4]);
        } else {
            assert_eq!(s.consumer_info("S", "d").await.unwrap().num_ack_pending, 4);
        }
        // The bad one is reported by name, naming its file.
        let u = s.unavailable();
        assert_eq!(u.len(), 1, "{u:?}");
        assert_eq!(
            (u[0].stream.as_str(), u[0].consumer.as_deref()),
            ("S", Some("c"))
        );
        assert!(u[0].reason.contains(&path.display().to_string()), "{u:?}");
        assert_eq!(s.recovery_report().unavailable, u);
        // Using it is a typed error; creating it anew does not overwrite it.
        for err in [
            s.consumer_info("S", "c").await.unwrap_err(),
            s.fetch("S", "c", 1, NOW).await.unwrap_err(),
            s.create_consumer("S", ConsumerConfig::durable("c"))
                .await
                .unwrap_err(),
        ] {
            assert!(
                matches!(&err, Error::ConsumerUnavailable { stream, name, .. } if stream == "S" && name == "c"),
                "{err}"
            );
        }
        let names: Vec<String> = s
            .list_consumers("S")
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.name)
            .collect();
        assert_eq!(names, ["d"]);
        s.close().await.unwrap();
        // Nothing was changed on disk for it.
        assert_eq!(std::fs::read(&path).unwrap(), damaged);
    }
    // Restored, it loads as before.
    std::fs::write(&path, &good).unwrap();
    let s = open(tmp.path());
    assert!(s.unavailable().is_empty());
    assert_eq!(seqs(&fetch(&s, "c", 10).await), [1, 2, 3, 4]);
    s.close().await.unwrap();
}

/// Checks invariant 21 (docs/design.md).
#[tokio::test]
async fn an_unloadable_consumer_of_an_interest_stream_keeps_every_message() {
    let tmp = tempfile::tempdir().unwrap();
    for retention in [RetentionPolicy::Interest, RetentionPolicy::WorkQueue] {
        let name = format!("{retention:?}");
        let dir = tmp.path().join(&name);
        {
            let s = open(&dir);
            let cfg = StreamConfig::new("R")
                .subjects(["r.>"])
                .retention(retention);
            stream(&s, cfg).await;
            s.create_consumer("R", ConsumerConfig::durable("a").filter_subject("r.a"))
                .await
                .unwrap();
            s.create_consumer("R", ConsumerConfig::durable("b").filter_subject("r.b"))
                .await
                .unwrap();
            for subj in ["r.a", "r.b", "r.a", "r.b"] {
                publish(&s, subj, "x").await;
            }
            s.close().await.unwrap();
        }
        // Consumer b's file cannot be read (a directory in its place).
        let path = dir.join("streams/R/consumers/b");
        let saved = std::fs::read(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        {
            let s = open(&dir);
            // Damage done by hand to a stream that closed cleanly is found
            // when the stream is recovered, on its first use
            // (docs/design.md, "Catalog").
            s.stream_info("R").await.unwrap();
            assert_eq!(s.unavailable().len(), 1, "{name}");
            // a acknowledges everything it has; b's messages (and, with b
            // unknown, a's too) stay: b might still need any of them.
            let d = s.fetch("R", "a", 10, NOW).await.unwrap();
            assert_eq!(seqs(&d), [1, 3], "{name}");
            for x in &d {
                s.ack_confirmed(&x.ack, AckKind::Ack).await.unwrap();
            }
            // An unmatched subject is kept on an interest stream too.
            publish(&s, "r.c", "x").await;
            assert_eq!(
                s.stream_info("R").await.unwrap().state.messages,
                5,
                "{name}"
            );
            s.close().await.unwrap();
        }
        {
            // Still held across a reopen (open re-derives retention).
            let s = open(&dir);
            assert_eq!(
                s.stream_info("R").await.unwrap().state.messages,
                5,
                "{name}"
            );
            s.close().await.unwrap();
        }
        // Restored: b's view decides again, and a's acknowledged messages go.
        std::fs::remove_dir(&path).unwrap();
        std::fs::write(&path, &saved).unwrap();
        let s = open(&dir);
        assert!(s.unavailable().is_empty());
        let info = s.stream_info("R").await.unwrap().state;
        assert!(info.messages < 5, "{name}: {info:?}");
        let d = s.fetch("R", "b", 10, NOW).await.unwrap();
        assert_eq!(seqs(&d), [2, 4], "{name}");
        s.close().await.unwrap();
    }
}

async fn retention_case(s: &Store, retention: RetentionPolicy, kind: &str) {
    let cfg = StreamConfig::new("R")
        .subjects(["r.>"])
        .retention(retention);
    stream(s, cfg).await;
    s.create_consumer("R", ConsumerConfig::durable("c"))
        .await
        .unwrap();
    for i in 0..40 {
        publish(s, "r.x", vec![b'x'; 100 + i]).await;
    }
    let before = segment_count(s, kind);
    let d = s.fetch("R", "c", 40, NOW).await.unwrap();
    for x in &d[..39] {
        s.ack(&x.ack, AckKind::Ack).await.unwrap();
    }
    let st = s.stream_info("R").await.unwrap().state;
    assert_eq!((st.messages, st.first_seq), (1, 40), "{kind} {retention:?}");
    if let Some(b) = before {
        assert!(
            b > 1 && segment_count(s, kind).unwrap() < b,
            "{kind}: emptied segments deleted"
        );
    }
    s.delete_stream("R").await.unwrap();
}

fn segment_count(_s: &Store, _kind: &str) -> Option<usize> {
    None
}

/// Checks invariant 21 (docs/design.md).
#[tokio::test]
async fn work_queue_and_interest_remove_acked_messages_and_emptied_segments() {
    let tmp = tempfile::tempdir().unwrap();
    for retention in [RetentionPolicy::WorkQueue, RetentionPolicy::Interest] {
        let s = Store::memory(opts()).unwrap();
        retention_case(&s, retention, "memory").await;
        let dir = tmp.path().join(format!("{retention:?}"));
        let s = Store::open(&dir, Options::default().segment_size(1024)).unwrap();
        stream(
            &s,
            StreamConfig::new("R")
                .subjects(["r.>"])
                .retention(retention),
        )
        .await;
        s.create_consumer("R", ConsumerConfig::durable("c"))
            .await
            .unwrap();
        for i in 0..40 {
            publish(&s, "r.x", vec![b'x'; 100 + i]).await;
        }
        let before = segments(&dir, "R").len();
        assert!(before > 3);
        let d = s.fetch("R", "c", 40, NOW).await.unwrap();
        for x in &d[..39] {
            s.ack(&x.ack, AckKind::Ack).await.unwrap();
        }
        let st = s.stream_info("R").await.unwrap().state;
        assert_eq!((st.messages, st.first_seq), (1, 40), "{retention:?}");
        assert!(
            segments(&dir, "R").len() <= 2,
            "{retention:?}: emptied segments deleted"
        );
        // Removals are re-derived after a reopen.
        s.close().await.unwrap();
        let s = Store::open(&dir, opts()).unwrap();
        let st = s.stream_info("R").await.unwrap().state;
        assert_eq!(
            (st.messages, st.first_seq),
            (1, 40),
            "{retention:?} reopened"
        );
    }
}

#[tokio::test]
async fn work_queue_refuses_overlapping_consumers() {
    let s = Store::memory(opts()).unwrap();
    stream(
        &s,
        StreamConfig::new("W")
            .subjects(["w.>"])
            .retention(RetentionPolicy::WorkQueue),
    )
    .await;
    s.create_consumer("W", ConsumerConfig::durable("a").filter_subject("w.a"))
        .await
        .unwrap();
    s.create_consumer("W", ConsumerConfig::durable("b").filter_subject("w.b"))
        .await
        .unwrap();
    let e = s
        .create_consumer("W", ConsumerConfig::durable("c").filter_subject("w.*"))
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("filtered consumer not unique"),
        "{e}"
    );
    let e = s
        .create_consumer("W", ConsumerConfig::durable("d"))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("multiple non-filtered"), "{e}");
    // Unacked work stays; a message nobody filters for stays too.
    publish(&s, "w.z", "x").await;
    assert_eq!(s.stream_info("W").await.unwrap().state.messages, 1);
}

/// Checks invariant 21 (docs/design.md).
#[tokio::test]
async fn interest_without_consumers_keeps_nothing() {
    let s = Store::memory(opts()).unwrap();
    stream(
        &s,
        StreamConfig::new("I")
            .subjects(["i.>"])
            .retention(RetentionPolicy::Interest),
    )
    .await;
    publish(&s, "i.1", "x").await;
    assert_eq!(s.stream_info("I").await.unwrap().state.messages, 0);
}

#[tokio::test]
async fn fetch_reads_across_segments_and_skips_messages_deleted_after_they_were_read() {
    let tmp = tempfile::tempdir().unwrap();
    let stores = vec![
        (
            "file",
            Store::open(tmp.path(), opts().segment_size(1024)).unwrap(),
        ),
        ("memory", Store::memory(opts().segment_size(1024)).unwrap()),
    ];
    for (kind, s) in stores {
        setup(&s, 200).await;
        s.delete_message("S", 50).await.unwrap();
        let cfg = ConsumerConfig::durable("c")
            .filter_subject("a.x")
            .max_ack_pending(None);
        s.create_consumer("S", cfg).await.unwrap();
        let first = fetch(&s, "c", 1).await;
        assert_eq!(seqs(&first), vec![1], "{kind}");
        // 3 and 5 are already in the consumer's chunk: deleting them still counts.
        s.delete_message("S", 3).await.unwrap();
        s.delete_message("S", 5).await.unwrap();
        let mut got = seqs(&first);
        loop {
            let d = fetch(&s, "c", 7).await;
            if d.is_empty() {
                break;
            }
            assert!(d.len() <= 7);
            got.extend(seqs(&d));
        }
        let want: Vec<u64> = (1..=200)
            .filter(|q| q % 2 == 1 && ![3, 5].contains(q))
            .collect();
        assert_eq!(got, want, "{kind}");
        let i = s.consumer_info("S", "c").await.unwrap();
        // As nats-server: a fetch that found no more matches moved
        // `delivered` over the skipped tail (200 is b.x).
        assert_eq!((i.num_pending, i.delivered.stream_seq), (0, 200), "{kind}");
        assert_eq!(i.num_ack_pending, want.len() as u64, "{kind}");
    }
}

#[tokio::test]
async fn num_pending_of_a_filtered_consumer_follows_publishes_deliveries_and_deletes() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 20).await; // a.x odd, b.x even
        let cfg = ConsumerConfig::durable("c").filter_subject("a.x");
        s.create_consumer("S", cfg).await.unwrap();
        let pending =
            |s: Store| async move { s.consumer_info("S", "c").await.unwrap().num_pending };
        assert_eq!(pending(s.clone()).await, 10, "{kind}");
        let d = fetch(&s, "c", 3).await;
        assert_eq!(
            d.iter().map(|d| d.pending).collect::<Vec<_>>(),
            vec![9, 8, 7]
        );
        assert_eq!(pending(s.clone()).await, 7, "{kind}");
        publish(&s, "a.x", "new").await;
        publish(&s, "b.x", "other").await;
        assert_eq!(pending(s.clone()).await, 8, "{kind}");
        s.delete_message("S", 9).await.unwrap();
        s.delete_message("S", 2).await.unwrap();
        assert_eq!(pending(s.clone()).await, 7, "{kind}");
        fetch(&s, "c", 2).await;
        assert_eq!(pending(s.clone()).await, 5, "{kind}");
        s.purge_stream("S", Default::default()).await.unwrap();
        assert_eq!(pending(s.clone()).await, 0, "{kind}");
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &target);
        } else if e.file_name() != "LOCK" {
            // A file replaced meanwhile (atomic rename) may vanish: skip it.
            let _ = std::fs::copy(e.path(), &target);
        }
    }
}

/// Checks invariant 18 (docs/design.md).
#[tokio::test]
async fn acks_older_than_the_persist_interval_survive_a_crash_image() {
    // The files of a running store, copied as they are, are what a kill -9
    // leaves behind (invariant 18).
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let s = open(&live);
    setup(&s, 6).await;
    let cfg = ConsumerConfig::durable("c").ack_wait(Duration::from_millis(20));
    s.create_consumer("S", cfg).await.unwrap();
    let d = fetch(&s, "c", 6).await;
    for x in &d[..3] {
        s.ack(&x.ack, AckKind::Ack).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(1800)).await;
    for x in &d[3..5] {
        s.ack(&x.ack, AckKind::Ack).await.unwrap();
    }
    let image = tmp.path().join("image");
    copy_dir(&live, &image);
    let c = open(&image);
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut got = Vec::new();
    loop {
        let r = fetch(&c, "c", 10).await;
        if r.is_empty() {
            break;
        }
        for x in &r {
            c.ack(&x.ack, AckKind::Ack).await.unwrap();
        }
        got.extend(seqs(&r));
    }
    // 1-3 were acked before the last write: never again. 6 was never acked:
    // delivered again. 4 and 5 may come back (at-least-once).
    assert!(got.iter().all(|q| *q > 3), "{got:?}");
    assert!(got.contains(&6), "{got:?}");
    s.close().await.unwrap();
}

#[tokio::test]
async fn the_ack_floor_moves_as_nats_server_moves_it() {
    let tmp = tempfile::tempdir().unwrap();
    for (kind, s) in both(tmp.path()) {
        setup(&s, 3).await;
        let cfg = ConsumerConfig::durable("c").ack_wait(Duration::from_millis(20));
        s.create_consumer("S", cfg).await.unwrap();
        let d = fetch(&s, "c", 2).await; // 1 (cseq 1), 2 (cseq 2)
        tokio::time::sleep(Duration::from_millis(30)).await;
        let r = fetch(&s, "c", 1).await; // 1 again, cseq 3
        assert_eq!((r[0].stream_seq(), r[0].consumer_seq()), (1, 3), "{kind}");
        // Acking 2 (cseq 2, not the floor's next) leaves the floor alone.
        s.ack(&d[1].ack, AckKind::Ack).await.unwrap();
        let i = s.consumer_info("S", "c").await.unwrap();
        assert_eq!(
            (i.ack_floor.consumer_seq, i.ack_floor.stream_seq),
            (0, 0),
            "{kind}"
        );
        // Acking the last pending one moves it to `delivered`.
        s.ack(&r[0].ack, AckKind::Ack).await.unwrap();
        let i = s.consumer_info("S", "c").await.unwrap();
        assert_eq!(i.ack_floor, i.delivered, "{kind}");
        assert_eq!(
            (i.ack_floor.consumer_seq, i.ack_floor.stream_seq),
            (3, 2),
            "{kind}"
        );
    }
}

#[tokio::test]
async fn a_waiting_fetch_keeps_an_ephemeral_consumer_alive() {
    let s = Store::memory(opts()).unwrap();
    setup(&s, 0).await;
    let cfg = ConsumerConfig::ephemeral().inactive_threshold(Duration::from_millis(100));
    let e = s.create_consumer("S", cfg).await.unwrap();
    let r = s
        .fetch("S", &e.name, 1, Duration::from_millis(400))
        .await
        .unwrap();
    assert!(r.is_empty());
    s.consumer_info("S", &e.name).await.unwrap();
}

/// A consumer's journal cut or flipped anywhere (a crash mid-write, bit
/// rot) loses at most the entries from the damage on: the store opens, the
/// consumer resumes from the last whole entry before it, verify names the
/// damage, and no panic.
///
/// Checks invariant 18 (docs/design.md).
#[tokio::test]
async fn a_cut_or_flipped_consumer_journal_resumes_from_its_last_whole_entry() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("live");
    let s = open(&live);
    setup(&s, 10).await;
    s.create_consumer("S", ConsumerConfig::durable("c"))
        .await
        .unwrap();
    let d = fetch(&s, "c", 4).await;
    for x in &d[..2] {
        s.ack_confirmed(&x.ack, AckKind::Ack).await.unwrap();
    }
    let journal = live.join("streams/S/consumer-journals/c");
    let whole = std::fs::read(&journal).unwrap();
    assert!(whole.len() > 20, "entries were written");
    // The image a kill leaves, then damaged in three ways.
    for (case, damage) in [("cut", 0usize), ("flip", 1), ("header only", 2)] {
        let dir = tmp.path().join(case);
        copy_dir(&live, &dir);
        let j = dir.join("streams/S/consumer-journals/c");
        let mut b = whole.clone();
        match damage {
            0 => b.truncate(b.len() - 3),
            1 => {
                let last = b.len() - 1;
                b[last] ^= 0x40;
            }
            _ => b.truncate(20),
        }
        std::fs::write(&j, &b).unwrap();
        let problems = durabus_log::check_files(&dir, "S").unwrap();
        if damage < 2 {
            assert!(
                problems
                    .iter()
                    .any(|p| p.path == j && !p.fatal && p.problem.contains("journal")),
                "{case}: {problems:?}"
            );
        }
        let s2 = open(&dir);
        let info = s2.consumer_info("S", "c").await.unwrap();
        if damage < 2 {
            // The deliveries' entry came before the last ack's: kept.
            assert_eq!(info.delivered.consumer_seq, 4, "{case}: {info:?}");
            assert!(info.num_ack_pending >= 2, "{case}: {info:?}");
        } else {
            assert_eq!(info.delivered.consumer_seq, 0, "{case}: {info:?}");
        }
        // It goes on: everything not acknowledged comes again.
        let again = s2.fetch("S", "c", 20, Duration::from_secs(31)).await;
        assert!(again.is_ok(), "{case}");
        drop(s2);
    }
    drop(s);
}
