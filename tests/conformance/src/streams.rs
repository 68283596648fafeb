//! Creating, updating, inspecting, listing and deleting streams.

use std::time::Duration;

use durabus::{Bus, DiscardPolicy, Error, StreamConfig};

use crate::{assert_err, create, names, publish_n, publish_payload, state};

/// A new stream holds nothing and reports the config it was given.
///
/// `first_seq` of a stream that never stored anything is 0 on NATS; the
/// suite accepts 0 or 1 there, since nothing can be read at either.
pub async fn create_stream_starts_empty(bus: &Bus) {
    let n = names("create_empty");
    let cfg = n.stream_config("S").max_msgs(1000u64);
    let info = create(bus, cfg.clone()).await;
    assert_eq!(info.config.name, cfg.name);
    assert_eq!(info.config.effective_subjects(), vec![n.all()]);
    assert_eq!(info.config.max_msgs, Some(1000));
    assert_eq!(info.state.messages, 0);
    assert_eq!(info.state.bytes, 0);
    assert_eq!(info.state.last_seq, 0);
    assert!(info.state.first_seq <= 1, "{:?}", info.state);
    assert_eq!(info.state.num_subjects, 0);
}

/// create_stream is create-if-absent: an equal config returns the
/// existing stream (same creation time, same messages), never a new one.
pub async fn create_stream_with_equal_config_returns_existing_unchanged(bus: &Bus) {
    let n = names("create_equal");
    let cfg = n.stream_config("S");
    let first = create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 2).await;
    let again = create(bus, cfg).await;
    assert_eq!(again.created, first.created);
    assert_eq!(again.state.messages, 2);
    assert_eq!(again.state.last_seq, 2);
}

/// A different config under an existing name is refused, never applied
/// silently.
pub async fn create_stream_with_different_config_is_name_in_use(bus: &Bus) {
    let n = names("create_diff");
    let cfg = n.stream_config("S").max_msgs(10u64);
    create(bus, cfg.clone()).await;
    let name = cfg.name.clone();
    assert_err!(
        bus.create_stream(cfg.clone().max_msgs(20u64)).await,
        Error::StreamNameInUse { name: ref got } if *got == name
    );
    let info = bus.stream_info(&name).await.unwrap();
    assert_eq!(info.config.max_msgs, Some(10));
}

/// update_stream changes the config in force and keeps stored messages.
pub async fn update_stream_changes_config_and_keeps_messages(bus: &Bus) {
    let n = names("update");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    let mut changed = cfg.max_msgs(100u64);
    changed.description = Some("changed".into());
    let info = bus.update_stream(changed.clone()).await.unwrap();
    assert_eq!(info.config.max_msgs, Some(100));
    assert_eq!(info.config.description.as_deref(), Some("changed"));
    let info = bus.stream_info(&changed.name).await.unwrap();
    assert_eq!(info.config.max_msgs, Some(100));
    assert_eq!(info.state.messages, 3);
    assert_eq!(info.state.last_seq, 3);
}

/// Lowering max_msgs applies at once: the oldest messages go.
pub async fn update_stream_with_lower_max_msgs_evicts_oldest(bus: &Bus) {
    let n = names("update_evicts");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 5).await;
    bus.update_stream(cfg.clone().max_msgs(2u64)).await.unwrap();
    let st = state(bus, &cfg.name).await;
    assert_eq!(st.messages, 2, "{st:?}");
    assert_eq!(st.first_seq, 4, "{st:?}");
    assert_eq!(st.last_seq, 5, "{st:?}");
}

/// Updating a stream that does not exist does not create it.
pub async fn update_unknown_stream_is_stream_not_found(bus: &Bus) {
    let n = names("update_unknown");
    let cfg = n.stream_config("NOPE");
    assert_err!(
        bus.update_stream(cfg.clone()).await,
        Error::StreamNotFound { .. }
    );
    assert_err!(
        bus.stream_info(&cfg.name).await,
        Error::StreamNotFound { .. }
    );
}

/// stream_info of a missing stream names it.
pub async fn stream_info_of_unknown_stream_is_stream_not_found(bus: &Bus) {
    let n = names("info_unknown");
    let name = n.stream("NOPE");
    assert_err!(
        bus.stream_info(&name).await,
        Error::StreamNotFound { name: ref got } if *got == name
    );
}

/// Stream state counts messages, subjects and sequences and times them.
///
/// `bytes` is backend-specific accounting (NATS counts its own record
/// overhead), so only "more than the payloads are zero" is asserted.
pub async fn stream_info_reports_state(bus: &Bus) {
    let n = names("info_state");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_payload(bus, &n.subject("a"), "one").await;
    publish_payload(bus, &n.subject("b"), "two").await;
    publish_payload(bus, &n.subject("a"), "three").await;
    let st = state(bus, &cfg.name).await;
    assert_eq!(st.messages, 3, "{st:?}");
    assert_eq!(st.first_seq, 1, "{st:?}");
    assert_eq!(st.last_seq, 3, "{st:?}");
    assert_eq!(st.num_deleted, 0, "{st:?}");
    assert_eq!(st.num_subjects, 2, "{st:?}");
    assert_eq!(st.consumer_count, 0, "{st:?}");
    assert!(st.bytes > 0, "{st:?}");
    let (first, last) = (
        st.first_time.expect("first_time"),
        st.last_time.expect("last_time"),
    );
    assert!(first <= last, "{st:?}");
}

/// Every limit and policy set on create is reported back as set.
pub async fn stream_config_round_trips_through_info(bus: &Bus) {
    let n = names("config_rt");
    let mut cfg = n
        .stream_config("S")
        .max_age(Duration::from_secs(3600))
        .max_bytes(1u64 << 30)
        .max_msgs(100_000u64)
        .max_msgs_per_subject(7u64)
        .max_msg_size(65_536u32)
        .discard(DiscardPolicy::New)
        .duplicate_window(Duration::from_secs(30))
        .deny_delete(true)
        .deny_purge(true)
        .discard_new_per_subject(true);
    cfg.description = Some("round trip".into());
    create(bus, cfg.clone()).await;
    let got = bus.stream_info(&cfg.name).await.unwrap().config;
    assert_eq!(got.max_age, cfg.max_age);
    assert_eq!(got.max_bytes, cfg.max_bytes);
    assert_eq!(got.max_msgs, cfg.max_msgs);
    assert_eq!(got.max_msgs_per_subject, cfg.max_msgs_per_subject);
    assert_eq!(got.max_msg_size, cfg.max_msg_size);
    assert_eq!(got.discard, cfg.discard);
    assert_eq!(got.duplicate_window, cfg.duplicate_window);
    assert_eq!(got.deny_delete, cfg.deny_delete);
    assert_eq!(got.deny_purge, cfg.deny_purge);
    assert_eq!(got.discard_new_per_subject, cfg.discard_new_per_subject);
    assert_eq!(got.description, cfg.description);
    assert_eq!(got.retention, cfg.retention);
}

/// A subject may be captured by one stream only; a disjoint one is fine.
pub async fn overlapping_subjects_across_streams_are_refused(bus: &Bus) {
    let n = names("overlap");
    let a = StreamConfig::new(n.stream("A")).subjects([n.subject("a.>")]);
    create(bus, a.clone()).await;
    for subject in [n.subject("a.b"), n.all(), n.subject("*.b")] {
        let b = StreamConfig::new(n.stream("B")).subjects([subject.clone()]);
        assert_err!(
            bus.create_stream(b).await,
            Error::SubjectsOverlap { ref other, .. } if *other == a.name
        );
    }
    assert_err!(
        bus.stream_info(&n.stream("B")).await,
        Error::StreamNotFound { .. }
    );
    let c = StreamConfig::new(n.stream("C")).subjects([n.subject("c.>")]);
    create(bus, c).await;
}

/// With no subjects a stream captures the subject equal to its name.
pub async fn stream_without_subjects_captures_its_own_name(bus: &Bus) {
    let n = names("own_name");
    let name = n.stream("OWN");
    create(bus, StreamConfig::new(name.clone())).await;
    let ack = publish_payload(bus, &name, "x").await;
    assert_eq!(ack.stream, name);
    assert_eq!(ack.seq, 1);
}

/// list_streams includes new streams and is ordered by name.
pub async fn list_streams_is_sorted_and_contains_created_streams(bus: &Bus) {
    let n = names("list");
    let b = StreamConfig::new(n.stream("B")).subjects([n.subject("b")]);
    let a = StreamConfig::new(n.stream("A")).subjects([n.subject("a")]);
    create(bus, b.clone()).await;
    create(bus, a.clone()).await;
    let list = bus.list_streams().await.unwrap();
    let got: Vec<&str> = list.iter().map(|i| i.config.name.as_str()).collect();
    let mut sorted = got.clone();
    sorted.sort_unstable();
    assert_eq!(got, sorted, "list_streams is not ordered by name");
    let ia = got.iter().position(|s| *s == a.name).expect("A listed");
    let ib = got.iter().position(|s| *s == b.name).expect("B listed");
    assert!(ia < ib);
}

/// Deleting a stream drops its messages and releases its subjects.
pub async fn delete_stream_removes_messages_and_frees_subjects(bus: &Bus) {
    let n = names("delete_stream");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 3).await;
    bus.delete_stream(&cfg.name).await.unwrap();
    assert_err!(
        bus.stream_info(&cfg.name).await,
        Error::StreamNotFound { .. }
    );
    assert!(bus
        .publish(n.subject("a"), "after")
        .await
        .unwrap()
        .is_none());
    let other = StreamConfig::new(n.stream("T")).subjects([n.all()]);
    create(bus, other).await;
    // The name is free again too; a new stream under it starts from scratch.
    let again = create(bus, cfg.clone().subjects([format!("{}_again.>", n.root())])).await;
    assert_eq!(again.state.messages, 0);
    assert_eq!(again.state.last_seq, 0);
    assert!(!bus.list_streams().await.unwrap().is_empty());
}

/// Deleting a missing stream is an error, not a silent success.
pub async fn delete_unknown_stream_is_stream_not_found(bus: &Bus) {
    let n = names("delete_unknown");
    assert_err!(
        bus.delete_stream(&n.stream("NOPE")).await,
        Error::StreamNotFound { .. }
    );
}

/// Illegal stream names are refused with the name and what is wrong.
pub async fn invalid_stream_name_is_refused_with_the_reason(bus: &Bus) {
    for (bad, needle) in [
        ("bad.name", "'.'"),
        ("a b", "' '"),
        ("", "empty"),
        ("x>", "'>'"),
    ] {
        assert_err!(
            bus.create_stream(StreamConfig::new(bad)).await,
            Error::InvalidName { ref name, ref reason } if name == bad && reason.contains(needle)
        );
    }
}

/// A malformed stream subject is refused naming the offending token.
pub async fn invalid_stream_subject_names_the_token(bus: &Bus) {
    let n = names("bad_stream_subject");
    let bad = format!("{}..b", n.root());
    assert_err!(
        bus.create_stream(StreamConfig::new(n.stream("S")).subjects([bad.clone()])).await,
        Error::InvalidSubject { ref subject, ref reason } if *subject == bad && reason.contains("token 2")
    );
    let bad = format!("{}.>.b", n.root());
    assert_err!(
        bus.create_stream(StreamConfig::new(n.stream("S")).subjects([bad])).await,
        Error::InvalidSubject { ref reason, .. } if reason.contains("token 2")
    );
}

/// Subjects can be edited: new ones are captured, dropped ones are not,
/// and an edit may not overlap another stream either.
pub async fn update_stream_can_change_captured_subjects(bus: &Bus) {
    let n = names("update_subjects");
    let cfg = StreamConfig::new(n.stream("S")).subjects([n.subject("a")]);
    create(bus, cfg.clone()).await;
    let other = StreamConfig::new(n.stream("O")).subjects([n.subject("o.>")]);
    create(bus, other.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    let info = bus
        .update_stream(cfg.clone().subjects([n.subject("b")]))
        .await
        .unwrap();
    assert_eq!(info.config.subjects, [n.subject("b")]);
    assert!(bus.publish(n.subject("a"), "x").await.unwrap().is_none());
    let ack = bus
        .publish(n.subject("b"), "y")
        .await
        .unwrap()
        .expect("captured");
    assert_eq!((&*ack.stream, ack.seq), (cfg.name.as_str(), 2));
    assert_err!(
        bus.update_stream(cfg.clone().subjects([n.subject("o.x")])).await,
        Error::SubjectsOverlap { ref other, .. } if *other == n.stream("O")
    );
    assert_eq!(
        bus.stream_info(&cfg.name).await.unwrap().config.subjects,
        [n.subject("b")]
    );
}

/// Inconsistent configurations are refused, saying which field.
pub async fn invalid_config_is_refused_with_the_reason(bus: &Bus) {
    let n = names("bad_config");
    let zero = n.stream_config("S").max_msgs(0u64);
    assert_err!(
        bus.create_stream(zero).await,
        Error::InvalidConfig {
            reason: durabus::ConfigError::ZeroLimit {
                field: "max_msgs",
                ..
            }
        }
    );
    let window = n
        .stream_config("S")
        .max_age(Duration::from_secs(10))
        .duplicate_window(Duration::from_secs(60));
    assert_err!(
        bus.create_stream(window).await,
        Error::InvalidConfig {
            reason: durabus::ConfigError::DuplicateWindowTooLarge { .. }
        }
    );
    // JetStream: per-subject discard needs discard new.
    let per_subject = n
        .stream_config("S")
        .max_msgs_per_subject(3u64)
        .discard_new_per_subject(true);
    assert_err!(
        bus.create_stream(per_subject).await,
        Error::InvalidConfig {
            reason: durabus::ConfigError::DiscardNewPerSubject { .. }
        }
    );
    let own = n
        .stream_config("S")
        .subjects([n.subject("a.*"), n.subject("a.b")]);
    assert_err!(
        bus.create_stream(own).await,
        Error::InvalidConfig {
            reason: durabus::ConfigError::SubjectsOverlapEachOther { .. }
        }
    );
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    assert_err!(
        bus.update_stream(cfg.max_msgs_per_subject(0u64)).await,
        Error::InvalidConfig {
            reason: durabus::ConfigError::ZeroLimit {
                field: "max_msgs_per_subject",
                ..
            }
        }
    );
}
