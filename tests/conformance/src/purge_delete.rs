//! Purging streams and deleting single messages.

use durabus::{Bus, Error, Message, PurgeRequest, ReplayOptions, StreamConfig, NATS_ROLLUP};

use crate::{assert_err, create, names, publish_captured, publish_n, replay_all, seqs, state};

fn purge_subject(subject: String) -> PurgeRequest {
    PurgeRequest {
        subject: Some(subject),
        ..PurgeRequest::default()
    }
}

/// Purging everything returns the count; first_seq becomes last_seq + 1
/// and publishing continues the sequence.
///
/// Checks invariant 1 (docs/design.md).
pub async fn purge_all_empties_stream_and_sets_first_seq_past_last(bus: &Bus) {
    let n = names("purge_all");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 5).await;
    let purged = bus
        .purge_stream(&cfg.name, PurgeRequest::default())
        .await
        .unwrap();
    assert_eq!(purged, 5);
    let st = state(bus, &cfg.name).await;
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq),
        (0, 6, 5),
        "{st:?}"
    );
    assert!(replay_all(bus, &cfg.name, ReplayOptions::from_seq(1))
        .await
        .is_empty());
    assert_eq!(publish_n(bus, &n.subject("a"), 1).await, [6]);
    let st = state(bus, &cfg.name).await;
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq),
        (1, 6, 6),
        "{st:?}"
    );
}

/// Purging by subject filter (wildcards allowed) removes only matches.
pub async fn purge_by_subject_removes_only_matching(bus: &Bus) {
    let n = names("purge_subject");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    for s in ["a.1", "b", "a.2", "b", "a.1"] {
        publish_n(bus, &n.subject(s), 1).await;
    }
    let purged = bus
        .purge_stream(&cfg.name, purge_subject(n.subject("a.*")))
        .await
        .unwrap();
    assert_eq!(purged, 3);
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(seqs(&stored), [2, 4]);
    let st = state(bus, &cfg.name).await;
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq),
        (2, 2, 5),
        "{st:?}"
    );
    assert_err!(
        bus.get_last_message(&cfg.name, &n.subject("a.1")).await,
        Error::MessageNotFound { .. }
    );
}

/// keep N removes all but the newest N.
pub async fn purge_keep_n_keeps_the_newest(bus: &Bus) {
    let n = names("purge_keep");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 5).await;
    let req = PurgeRequest {
        keep: Some(2),
        ..PurgeRequest::default()
    };
    assert_eq!(bus.purge_stream(&cfg.name, req).await.unwrap(), 3);
    let st = state(bus, &cfg.name).await;
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq),
        (2, 4, 5),
        "{st:?}"
    );
}

/// subject + keep N keeps the newest N of that subject, others untouched.
pub async fn purge_subject_with_keep_keeps_newest_of_that_subject(bus: &Bus) {
    let n = names("purge_subject_keep");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    for s in ["a", "a", "b", "a", "b"] {
        publish_n(bus, &n.subject(s), 1).await;
    }
    let req = PurgeRequest {
        subject: Some(n.subject("a")),
        keep: Some(1),
        ..PurgeRequest::default()
    };
    assert_eq!(bus.purge_stream(&cfg.name, req).await.unwrap(), 2);
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(seqs(&stored), [3, 4, 5]);
}

/// up_to_seq removes sequences strictly below it.
pub async fn purge_up_to_seq_removes_lower_sequences(bus: &Bus) {
    let n = names("purge_upto");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 5).await;
    let req = PurgeRequest {
        up_to_seq: Some(3),
        ..PurgeRequest::default()
    };
    assert_eq!(bus.purge_stream(&cfg.name, req).await.unwrap(), 2);
    let st = state(bus, &cfg.name).await;
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq),
        (3, 3, 5),
        "{st:?}"
    );
    assert_err!(
        bus.get_message(&cfg.name, 2).await,
        Error::MessageNotFound { .. }
    );
}

/// Purging an empty stream succeeds and removes nothing.
pub async fn purge_of_empty_stream_removes_nothing(bus: &Bus) {
    let n = names("purge_empty");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    assert_eq!(
        bus.purge_stream(&cfg.name, PurgeRequest::default())
            .await
            .unwrap(),
        0
    );
    assert_eq!(state(bus, &cfg.name).await.messages, 0);
}

/// Purging a missing stream is an error.
pub async fn purge_of_unknown_stream_is_stream_not_found(bus: &Bus) {
    let n = names("purge_unknown");
    assert_err!(
        bus.purge_stream(&n.stream("NOPE"), PurgeRequest::default())
            .await,
        Error::StreamNotFound { .. }
    );
}

/// A deleted message leaves a gap: get fails, replay skips it, state
/// counts it in num_deleted.
pub async fn deleted_message_leaves_a_gap_in_replay_and_get(bus: &Bus) {
    let n = names("delete_gap");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    bus.delete_message(&cfg.name, 2).await.unwrap();
    assert_err!(
        bus.get_message(&cfg.name, 2).await,
        Error::MessageNotFound { ref stream, .. } if *stream == cfg.name
    );
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(seqs(&stored), [1, 3]);
    let st = state(bus, &cfg.name).await;
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq, st.num_deleted),
        (2, 1, 3, 1),
        "{st:?}"
    );
}

/// Deleting a sequence that holds no message is an error, also the
/// second time.
pub async fn deleting_a_missing_message_is_message_not_found(bus: &Bus) {
    let n = names("delete_missing");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    assert_err!(
        bus.delete_message(&cfg.name, 99).await,
        Error::MessageNotFound { .. }
    );
    bus.delete_message(&cfg.name, 1).await.unwrap();
    assert_err!(
        bus.delete_message(&cfg.name, 1).await,
        Error::MessageNotFound { .. }
    );
    assert_err!(
        bus.delete_message(&n.stream("NOPE"), 1).await,
        Error::StreamNotFound { .. }
    );
}

/// Deleting the oldest message moves first_seq to the next one.
pub async fn deleting_the_first_message_moves_first_seq(bus: &Bus) {
    let n = names("delete_first");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    bus.delete_message(&cfg.name, 1).await.unwrap();
    let st = state(bus, &cfg.name).await;
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq),
        (2, 2, 3),
        "{st:?}"
    );
}

/// Sequences are never reused: deleting the newest message does not
/// lower last_seq, and the next publish gets last_seq + 1.
///
/// Checks invariant 1 (docs/design.md).
pub async fn sequences_are_not_reused_after_deleting_the_last_message(bus: &Bus) {
    let n = names("delete_last");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    bus.delete_message(&cfg.name, 3).await.unwrap();
    assert_eq!(state(bus, &cfg.name).await.last_seq, 3);
    assert_eq!(publish_n(bus, &n.subject("a"), 1).await, [4]);
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(seqs(&stored), [1, 2, 4]);
}

/// deny_delete and deny_purge refuse those operations and keep data.
pub async fn deny_delete_and_deny_purge_are_enforced(bus: &Bus) {
    let n = names("deny");
    let cfg = StreamConfig::new(n.stream("S"))
        .subjects([n.all()])
        .deny_delete(true)
        .deny_purge(true);
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    assert_err!(bus.delete_message(&cfg.name, 1).await, Error::Denied { .. });
    assert_err!(
        bus.purge_stream(&cfg.name, PurgeRequest::default()).await,
        Error::Denied { .. }
    );
    assert_eq!(state(bus, &cfg.name).await.messages, 2);
    // JetStream: once set, neither can be lifted by an update.
    for lifted in [
        cfg.clone().deny_delete(false),
        cfg.clone().deny_purge(false),
    ] {
        assert_err!(
            bus.update_stream(lifted).await,
            Error::InvalidConfig { ref reason } if reason.to_string().contains("can not cancel deny")
        );
    }
    let info = bus.stream_info(&cfg.name).await.unwrap();
    assert!(info.config.deny_delete && info.config.deny_purge);
    // Rollups purge, so they cannot be allowed when purges are denied.
    let rollup = StreamConfig::new(n.stream("R"))
        .subjects([n.subject("r.>")])
        .allow_rollup(true)
        .deny_purge(true);
    assert_err!(
        bus.create_stream(rollup).await,
        Error::InvalidConfig {
            reason: durabus::ConfigError::RollupWithDenyPurge { .. }
        }
    );
}

/// `Nats-Rollup: sub` stores the message and removes every older one on
/// its subject; other subjects keep theirs.
pub async fn rollup_sub_replaces_the_history_of_its_subject(bus: &Bus) {
    let n = names("rollup_sub");
    let cfg = n.stream_config("S").allow_rollup(true);
    create(bus, cfg.clone()).await;
    for s in ["a", "a", "b"] {
        publish_n(bus, &n.subject(s), 1).await;
    }
    let roll = Message::new(n.subject("a"), "snapshot").with_header(NATS_ROLLUP, "sub");
    assert_eq!(publish_captured(bus, roll).await.seq, 4);
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(seqs(&stored), [3, 4]);
    let st = state(bus, &cfg.name).await;
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq),
        (2, 3, 4),
        "{st:?}"
    );
    let last = bus
        .get_last_message(&cfg.name, &n.subject("a"))
        .await
        .unwrap();
    assert_eq!(&last.payload[..], b"snapshot");
}

/// `Nats-Rollup: all` stores the message and removes everything older
/// in the stream.
pub async fn rollup_all_leaves_only_the_rollup_message(bus: &Bus) {
    let n = names("rollup_all");
    let cfg = n.stream_config("S").allow_rollup(true);
    create(bus, cfg.clone()).await;
    for s in ["a", "b", "c"] {
        publish_n(bus, &n.subject(s), 1).await;
    }
    let roll = Message::new(n.subject("z"), "all").with_header(NATS_ROLLUP, "all");
    assert_eq!(publish_captured(bus, roll).await.seq, 4);
    let st = state(bus, &cfg.name).await;
    assert_eq!(
        (st.messages, st.first_seq, st.last_seq),
        (1, 4, 4),
        "{st:?}"
    );
    assert_err!(
        bus.get_last_message(&cfg.name, &n.subject("a")).await,
        Error::MessageNotFound { .. }
    );
}

/// Without allow_rollup a rollup header is refused and nothing changes.
pub async fn rollup_needs_allow_rollup(bus: &Bus) {
    let n = names("rollup_denied");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    let roll = Message::new(n.subject("a"), "x").with_header(NATS_ROLLUP, "sub");
    assert_err!(bus.publish_message(roll).await, Error::Denied { .. });
    let st = state(bus, &cfg.name).await;
    assert_eq!((st.messages, st.last_seq), (2, 2), "{st:?}");
}
