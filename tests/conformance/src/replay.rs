//! Ordered replay of stored messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use durabus::{Bus, Error, Message, ReplayOptions, ReplayStart};

use crate::{
    assert_err, create, names, next_stored, publish_n, publish_payload, replay_all, seqs, WAIT,
};

/// Replay from seq yields that seq and every later one, in order, with
/// subjects and payloads.
pub async fn replay_from_sequence_yields_stored_messages_in_order(bus: &Bus) {
    let n = names("replay_seq");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 5).await;
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(3)).await;
    assert_eq!(seqs(&stored), [3, 4, 5]);
    assert_eq!(&stored[0].payload[..], b"2");
    assert_eq!(stored[0].subject, n.subject("a"));
    assert!(stored.iter().all(|m| m.stream == cfg.name));
}

/// Sequences start at 1: replay from 0 is an invalid argument.
pub async fn replay_from_sequence_zero_is_invalid_argument(bus: &Bus) {
    let n = names("replay_zero");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    assert_err!(
        bus.replay(&cfg.name, ReplayOptions::from_seq(0)).await,
        Error::InvalidArgument { .. }
    );
}

/// A start below the first stored sequence starts at the first.
pub async fn replay_from_sequence_below_first_starts_at_first(bus: &Bus) {
    let n = names("replay_below");
    let cfg = n.stream_config("S").max_msgs(2u64);
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 5).await;
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(seqs(&stored), [4, 5]);
}

/// Replay from a time starts at the first message stored at or after it.
pub async fn replay_from_time_starts_at_first_message_at_or_after_it(bus: &Bus) {
    let n = names("replay_time");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 6).await;
    let all = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    let t = all[3].time;
    let first_at_or_after = all
        .iter()
        .find(|m| m.time >= t)
        .expect("seq 4 qualifies")
        .seq;
    let from_t = replay_all(bus, &cfg.name, ReplayOptions::from_time(t)).await;
    assert_eq!(seqs(&from_t), (first_at_or_after..=6).collect::<Vec<_>>());
    let from_epoch = replay_all(bus, &cfg.name, ReplayOptions::from_time(UNIX_EPOCH)).await;
    assert_eq!(seqs(&from_epoch), (1..=6).collect::<Vec<_>>());
    let future = SystemTime::now() + Duration::from_secs(3600);
    assert!(replay_all(bus, &cfg.name, ReplayOptions::from_time(future))
        .await
        .is_empty());
    // Past the year 2262 (i64 nanoseconds): still after every message.
    let far = UNIX_EPOCH + Duration::from_secs(32_000_000_000);
    assert!(replay_all(bus, &cfg.name, ReplayOptions::from_time(far))
        .await
        .is_empty());
}

/// Time lookups land on the first message at or after the time, at
/// any depth of a long history (on small segments: in any segment).
pub async fn replay_from_time_finds_its_start_in_a_long_history(bus: &Bus) {
    const N: usize = 600;
    let n = names("replay_time_long");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    for chunk in 0..N / 50 {
        let batch = (0..50)
            .map(|i| Message::new(n.subject("t"), format!("{chunk}-{i}-{}", "x".repeat(60))))
            .collect();
        for r in bus.publish_batch(batch).await.unwrap() {
            r.unwrap().expect("captured");
        }
        // Spread the history over time so lookups have distinct answers.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let all = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(all.len(), N);
    for k in [0, 1, 49, 50, 51, 137, 299, 300, 451, 598, 599] {
        let t = all[k].time;
        let first = all.iter().find(|m| m.time >= t).expect("k qualifies").seq;
        let mut r = bus
            .replay(&cfg.name, ReplayOptions::from_time(t).stop_at_end())
            .await
            .unwrap();
        let got = next_stored(&mut r).await.seq;
        assert_eq!(
            got, first,
            "replay from the time of seq {} started at {got}",
            all[k].seq
        );
    }
    let after_last = all[N - 1].time + Duration::from_millis(1);
    assert!(
        replay_all(bus, &cfg.name, ReplayOptions::from_time(after_last))
            .await
            .is_empty()
    );
}

/// Start New skips history and yields only messages stored afterwards.
pub async fn replay_new_yields_only_later_messages(bus: &Bus) {
    let n = names("replay_new");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    let opts = ReplayOptions {
        start: ReplayStart::New,
        filter: None,
        stop_at_end: false,
    };
    let mut replay = bus.replay(&cfg.name, opts).await.unwrap();
    publish_payload(bus, &n.subject("a"), "new").await;
    let m = next_stored(&mut replay).await;
    assert_eq!((m.seq, &m.payload[..]), (4, &b"new"[..]));
}

/// Start LastPerSubject yields the newest message of each matching
/// subject in sequence order, then continues live with every message.
pub async fn replay_last_per_subject_yields_newest_of_each_then_live(bus: &Bus) {
    let n = names("replay_lps");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    for s in ["a.1", "a.2", "a.1", "b.1", "a.2", "a.3"] {
        publish_n(bus, &n.subject(s), 1).await;
    }
    bus.delete_message(&cfg.name, 6).await.unwrap(); // a.3 has none left
    let opts = ReplayOptions {
        start: ReplayStart::LastPerSubject,
        filter: Some(n.subject("a.*")),
        stop_at_end: false,
    };
    let mut replay = bus.replay(&cfg.name, opts.clone()).await.unwrap();
    assert_eq!(next_stored(&mut replay).await.seq, 3);
    let m = next_stored(&mut replay).await;
    assert_eq!((m.seq, &*m.subject), (5, n.subject("a.2").as_str()));
    publish_n(bus, &n.subject("b.1"), 1).await; // 7, filtered out
    publish_n(bus, &n.subject("a.1"), 2).await; // 8, 9: both live
    assert_eq!(next_stored(&mut replay).await.seq, 8);
    assert_eq!(next_stored(&mut replay).await.seq, 9);
    let all = replay_all(
        bus,
        &cfg.name,
        ReplayOptions {
            filter: None,
            ..opts
        },
    )
    .await;
    assert_eq!(seqs(&all), [5, 7, 9]);
}

/// A filter yields only the matching subjects, history and live.
pub async fn replay_filter_yields_only_matching_subjects(bus: &Bus) {
    let n = names("replay_filter");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    for s in ["a.1", "b.1", "a.2", "b.2", "a.3.x"] {
        publish_n(bus, &n.subject(s), 1).await;
    }
    let stored = replay_all(
        bus,
        &cfg.name,
        ReplayOptions::from_seq(1).filter(n.subject("a.*")),
    )
    .await;
    assert_eq!(seqs(&stored), [1, 3]);
    let mut live = bus
        .replay(
            &cfg.name,
            ReplayOptions::from_seq(2).filter(n.subject("b.>")),
        )
        .await
        .unwrap();
    assert_eq!(next_stored(&mut live).await.seq, 2);
    assert_eq!(next_stored(&mut live).await.seq, 4);
    publish_n(bus, &n.subject("a.9"), 1).await; // 6, filtered out
    publish_n(bus, &n.subject("b.9"), 1).await; // 7
    assert_eq!(next_stored(&mut live).await.seq, 7);
}

/// Without stop_at_end a replay runs through history and then yields new
/// messages as they are stored.
pub async fn replay_continues_live_after_history(bus: &Bus) {
    let n = names("replay_live");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    let mut replay = bus
        .replay(&cfg.name, ReplayOptions::from_seq(1))
        .await
        .unwrap();
    assert_eq!(next_stored(&mut replay).await.seq, 1);
    assert_eq!(next_stored(&mut replay).await.seq, 2);
    let writer = bus.clone();
    let subject = n.subject("a");
    let task = tokio::spawn(async move {
        for i in 0..20 {
            writer
                .publish(subject.clone(), format!("live{i}"))
                .await
                .unwrap();
        }
    });
    for seq in 3..=22 {
        assert_eq!(next_stored(&mut replay).await.seq, seq);
    }
    task.await.unwrap();
}

/// stop_at_end ends after the last message present when the replay
/// started; later messages are not included.
pub async fn replay_stop_at_end_ends_at_last_message_present_at_start(bus: &Bus) {
    let n = names("replay_stop");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    let mut replay = bus
        .replay(&cfg.name, ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    assert_eq!(next_stored(&mut replay).await.seq, 1);
    publish_n(bus, &n.subject("a"), 2).await;
    assert_eq!(next_stored(&mut replay).await.seq, 2);
    assert_eq!(next_stored(&mut replay).await.seq, 3);
    match tokio::time::timeout(WAIT, replay.next()).await {
        Ok(None) => {}
        Ok(Some(m)) => panic!("bounded replay went past its end: {:?}", m.map(|m| m.seq)),
        Err(_) => panic!("bounded replay did not end within {WAIT:?}"),
    }
}

/// A bounded replay of an empty stream ends at once.
pub async fn replay_stop_at_end_of_empty_stream_ends_immediately(bus: &Bus) {
    let n = names("replay_empty");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    assert!(replay_all(bus, &cfg.name, ReplayOptions::from_seq(1))
        .await
        .is_empty());
}

/// Checks invariant 29 (docs/design.md).
///
/// Dropping a pending next() (timeout, select!) loses and repeats
/// nothing: the following calls still yield every message once, in
/// order.
pub async fn replay_next_is_cancel_safe(bus: &Bus) {
    const N: u64 = 100;
    let n = names("replay_cancel");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    let mut replay = bus
        .replay(&cfg.name, ReplayOptions::from_seq(1))
        .await
        .unwrap();
    assert_eq!(next_stored(&mut replay).await.seq, 1);
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_millis(30), replay.next()).await;
        assert!(r.is_err(), "replay yielded beyond the stream's end");
    }
    publish_n(bus, &n.subject("a"), 1).await;
    assert_eq!(next_stored(&mut replay).await.seq, 2);

    // Cancel constantly while messages are being written.
    let writer = bus.clone();
    let subject = n.subject("a");
    let task = tokio::spawn(async move {
        for i in 0..N {
            writer
                .publish_message(Message::new(subject.clone(), format!("c{i}")))
                .await
                .unwrap();
            if i % 10 == 0 {
                tokio::task::yield_now().await;
            }
        }
    });
    let mut expected = 3;
    let deadline = tokio::time::Instant::now() + WAIT;
    while expected <= N + 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "stuck at seq {expected}"
        );
        if let Ok(item) = tokio::time::timeout(Duration::from_micros(200), replay.next()).await {
            let m = item.expect("replay ended").expect("replay error");
            assert_eq!(
                m.seq, expected,
                "message lost or repeated after a cancelled next()"
            );
            expected += 1;
        }
    }
    task.await.unwrap();
}

/// A history larger than any read chunk comes back complete and in order.
pub async fn replay_of_a_large_history_is_complete_and_ordered(bus: &Bus) {
    const N: u64 = 3000;
    let n = names("replay_large");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    for chunk in 0..N / 100 {
        let batch = (0..100)
            .map(|i| Message::new(n.subject("a"), vec![(i % 256) as u8; 700 + chunk as usize]))
            .collect();
        for r in bus.publish_batch(batch).await.unwrap() {
            r.unwrap().expect("captured");
        }
    }
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(stored.len() as u64, N);
    assert!(
        stored.iter().zip(1..).all(|(m, s)| m.seq == s),
        "out of order"
    );
}

/// Replaying a missing stream is an error.
pub async fn replay_of_unknown_stream_is_stream_not_found(bus: &Bus) {
    let n = names("replay_unknown");
    assert_err!(
        bus.replay(&n.stream("NOPE"), ReplayOptions::from_seq(1))
            .await,
        Error::StreamNotFound { .. }
    );
}

/// A malformed filter is refused up front.
pub async fn replay_with_invalid_filter_is_invalid_subject(bus: &Bus) {
    let n = names("replay_bad_filter");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    assert_err!(
        bus.replay(&cfg.name, ReplayOptions::from_seq(1).filter(format!("{}..a", n.root()))).await,
        Error::InvalidSubject { ref reason, .. } if reason.contains("token 2")
    );
}
