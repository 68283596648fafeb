//! Stream and consumer handles (`Bus::stream`, `StreamHandle::consumer`):
//! the stream's operations through its handle, publishes that must be
//! stored (`Error::NotCaptured`, `Error::WrongStream`), deliveries that
//! settle themselves, and the `messages()` stream (order, redelivery of a
//! nak, cancel safety, stop).

use std::time::Duration;

use durabus::{
    AckKind, AckableDelivery, Bus, ConsumerConfig, Error, Message, Messages, PurgeRequest,
    ReplayOptions, NATS_EXPECTED_STREAM,
};

use crate::{assert_err, create, impatient, names, state, WAIT};

const SHORT: Duration = Duration::from_millis(300);
const NONE_DUE: Duration = Duration::from_millis(150);

/// The next delivery of `messages`, waiting at most [`WAIT`].
async fn next(messages: &mut Messages) -> AckableDelivery {
    match tokio::time::timeout(WAIT, messages.next()).await {
        Ok(Some(Ok(d))) => d,
        Ok(Some(Err(e))) => panic!("messages() yielded an error: {e}"),
        Ok(None) => panic!("messages() ended"),
        Err(_) => panic!("messages() yielded nothing within {WAIT:?}"),
    }
}

fn text(d: &AckableDelivery) -> String {
    String::from_utf8_lossy(&d.message.payload).into_owned()
}

/// A stream handle does what the flat methods do on its stream: info,
/// get, get last, delete a message, purge, replay, and its consumers
/// (created, listed, deleted; an ephemeral one named by the backend).
pub async fn stream_handle_reads_and_changes_its_own_stream(bus: &Bus) {
    let n = names("h_stream");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let stream = bus.stream(&cfg.name);
    assert_eq!(stream.name(), cfg.name);
    for (i, rest) in ["a", "b", "a"].into_iter().enumerate() {
        let ack = stream
            .publish(n.subject(rest), format!("m{i}"))
            .await
            .unwrap();
        assert_eq!((&*ack.stream, ack.seq), (&*cfg.name, i as u64 + 1));
    }
    let info = stream.info().await.unwrap();
    assert_eq!(
        (info.config.name.as_str(), info.state.messages),
        (&*cfg.name, 3)
    );
    assert_eq!(&stream.get_message(2).await.unwrap().payload[..], b"m1");
    assert_eq!(
        stream.get_last_message(n.subject("a")).await.unwrap().seq,
        3
    );
    stream.delete_message(1).await.unwrap();
    assert_err!(stream.get_message(1).await, Error::MessageNotFound { .. });
    let mut replay = stream
        .replay(ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let mut seqs = Vec::new();
    while let Some(m) = replay.next().await {
        seqs.push(m.unwrap().seq);
    }
    assert_eq!(seqs, [2, 3]);

    let durable = stream
        .create_consumer(ConsumerConfig::durable("billing"))
        .await
        .unwrap();
    assert_eq!(
        (durable.name(), durable.stream_name()),
        ("billing", &*cfg.name)
    );
    assert_eq!(durable.info().await.unwrap().num_pending, 2);
    let ephemeral = stream
        .create_consumer(ConsumerConfig::ephemeral())
        .await
        .unwrap();
    assert!(!ephemeral.name().is_empty());
    assert_eq!(ephemeral.info().await.unwrap().name, ephemeral.name());
    let listed: Vec<String> = stream
        .list_consumers()
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.name)
        .collect();
    assert!(listed.contains(&"billing".to_owned()), "{listed:?}");
    stream.delete_consumer("billing").await.unwrap();
    assert_err!(durable.info().await, Error::ConsumerNotFound { .. });

    assert_eq!(stream.purge(PurgeRequest::default()).await.unwrap(), 2);
    assert_eq!(stream.info().await.unwrap().state.messages, 0);
    stream.delete().await.unwrap();
    assert_err!(stream.info().await, Error::StreamNotFound { .. });
}

/// A handle to a stream that does not exist is made without I/O; its
/// first call is StreamNotFound (ConsumerNotFound for a consumer handle).
pub async fn handles_to_missing_streams_and_consumers_fail_at_their_first_call(bus: &Bus) {
    let n = names("h_missing");
    let missing = bus.stream(n.stream("MISSING"));
    assert_err!(missing.info().await, Error::StreamNotFound { .. });
    assert_err!(
        missing.consumer("c").fetch(1, NONE_DUE).await,
        Error::StreamNotFound { .. } | Error::ConsumerNotFound { .. }
    );
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let nobody = bus.stream(&cfg.name).consumer("nobody");
    assert_err!(
        nobody.info().await,
        Error::ConsumerNotFound { ref name, .. } if name == "nobody"
    );
    assert_err!(
        nobody.fetch(1, NONE_DUE).await,
        Error::ConsumerNotFound { .. }
    );
}

/// `publish_stored` returns the ack of a captured publish, and a subject
/// no stream captures is NotCaptured naming it, where `publish` returns
/// `Ok(None)`.
pub async fn publish_stored_is_not_captured_where_no_stream_captures_the_subject(bus: &Bus) {
    let n = names("h_stored");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let ack = bus.publish_stored(n.subject("a"), "x").await.unwrap();
    assert_eq!((&*ack.stream, ack.seq), (&*cfg.name, 1));
    let with_id = Message::new(n.subject("b"), "y").with_msg_id("one");
    assert_eq!(
        bus.publish_message_stored(with_id.clone())
            .await
            .unwrap()
            .seq,
        2
    );
    assert!(bus.publish_message_stored(with_id).await.unwrap().duplicate);

    let loose = format!("{}_loose.a", n.root());
    assert_err!(
        bus.publish_stored(loose.as_str(), "z").await,
        Error::NotCaptured { ref subject } if *subject == loose
    );
    assert_err!(
        bus.publish_message_stored(Message::new(loose.as_str(), "z"))
            .await,
        Error::NotCaptured { .. }
    );
    assert!(bus.publish(loose.as_str(), "z").await.unwrap().is_none());
    assert_eq!(state(bus, &cfg.name).await.messages, 2);
}

/// A stream handle's publish must land in its own stream: a subject
/// another stream captures is WrongStream (stored by neither), one that
/// no stream captures NotCaptured; an expected stream the message carried
/// is replaced by the handle's.
pub async fn stream_handle_publish_lands_in_its_stream_or_fails(bus: &Bus) {
    let n = names("h_wrong");
    let mine = n.stream("MINE");
    let theirs = n.stream("THEIRS");
    create(
        bus,
        durabus::StreamConfig::new(&mine).subjects([n.subject("mine.>")]),
    )
    .await;
    create(
        bus,
        durabus::StreamConfig::new(&theirs).subjects([n.subject("theirs.>")]),
    )
    .await;
    let stream = bus.stream(&mine);
    assert_eq!(
        stream.publish(n.subject("mine.a"), "1").await.unwrap().seq,
        1
    );
    assert_err!(
        stream.publish(n.subject("theirs.a"), "2").await,
        Error::WrongStream { ref expected, ref actual } if *expected == mine && *actual == theirs
    );
    assert_err!(
        stream.publish(n.subject("nobody.a"), "3").await,
        Error::NotCaptured { .. }
    );
    let carried = Message::new(n.subject("mine.b"), "4").with_header(NATS_EXPECTED_STREAM, &theirs);
    assert_eq!(stream.publish_message(carried).await.unwrap().seq, 2);
    assert_eq!(state(bus, &mine).await.messages, 2);
    assert_eq!(state(bus, &theirs).await.messages, 0);
}

/// Deliveries fetched through a consumer handle settle themselves: ack
/// ends a message, nak brings it back (with its delivery count), term
/// ends it without processing, in_progress holds it past ack_wait.
pub async fn consumer_handle_deliveries_ack_nak_term_and_in_progress(bus: &Bus) {
    let n = names("h_settle");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let stream = bus.stream(&cfg.name);
    for i in 1..=4 {
        stream
            .publish(n.subject("a"), format!("m{i}"))
            .await
            .unwrap();
    }
    let wait = Duration::from_millis(400);
    let consumer = stream
        .create_consumer(ConsumerConfig::durable("c").ack_wait(wait))
        .await
        .unwrap();
    let mut got = Vec::new();
    while got.len() < 4 {
        got.extend(
            consumer
                .fetch(4 - got.len(), Duration::from_secs(1))
                .await
                .unwrap(),
        );
    }
    let seqs: Vec<u64> = got.iter().map(|d| d.stream_seq()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    got[0].ack().await.unwrap();
    got[1].nak(None).await.unwrap();
    got[2].term().await.unwrap();
    for _ in 0..3 {
        tokio::time::sleep(wait / 2).await;
        got[3].in_progress().await.unwrap();
    }
    // 600 ms after delivery, beyond the 400 ms ack_wait: only the nak'ed
    // message comes again, once more.
    let again = consumer.fetch(4, Duration::from_millis(100)).await.unwrap();
    let seen: Vec<(u64, u64)> = again
        .iter()
        .map(|d| (d.stream_seq(), d.delivered()))
        .collect();
    assert_eq!(seen, [(2, 2)]);
    got[3].ack_confirmed(AckKind::Ack).await.unwrap();
    again[0].ack_confirmed(AckKind::Ack).await.unwrap();
    let info = consumer.info().await.unwrap();
    assert_eq!((info.num_ack_pending, info.num_pending), (0, 0));
    tokio::time::sleep(wait).await;
    assert!(consumer.fetch(4, NONE_DUE).await.unwrap().is_empty());
}

/// `messages()` yields the consumer's deliveries in order across batches,
/// and a message nak'ed on the way comes again (in the next batch, before
/// new messages, as JetStream redelivers), then what is published later.
pub async fn messages_yields_in_order_and_redelivers_a_nak(bus: &Bus) {
    let n = names("h_messages");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let stream = bus.stream(&cfg.name);
    for i in 1..=5 {
        stream
            .publish(n.subject("a"), format!("m{i}"))
            .await
            .unwrap();
    }
    let consumer = stream
        .create_consumer(ConsumerConfig::durable("c").ack_wait(Duration::from_secs(30)))
        .await
        .unwrap();
    let mut messages = consumer.messages_with(2, Duration::from_secs(1));
    let mut seen = Vec::new();
    for _ in 0..6 {
        let d = next(&mut messages).await;
        seen.push((text(&d), d.delivered()));
        if (d.stream_seq(), d.delivered()) == (3, 1) {
            d.ack_confirmed(AckKind::Nak(None)).await.unwrap();
        } else {
            d.ack_confirmed(AckKind::Ack).await.unwrap();
        }
    }
    // Batches of 2: [m1 m2] [m3 m4] [m3 again, m5], as JetStream
    // delivers a redelivery before new messages.
    let want = [
        ("m1", 1),
        ("m2", 1),
        ("m3", 1),
        ("m4", 1),
        ("m3", 2),
        ("m5", 1),
    ];
    let want: Vec<(String, u64)> = want.iter().map(|(t, n)| (t.to_string(), *n)).collect();
    assert_eq!(seen, want);
    stream.publish(n.subject("a"), "m6").await.unwrap();
    assert_eq!(text(&next(&mut messages).await), "m6");
}

/// A `next()` of `messages()` dropped at any point loses nothing: every
/// message is yielded once, in order.
pub async fn messages_next_is_cancel_safe(bus: &Bus) {
    const N: usize = 40;
    let n = names("h_cancel");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let stream = bus.stream(&cfg.name);
    let consumer = stream
        .create_consumer(ConsumerConfig::durable("c").ack_wait(Duration::from_secs(30)))
        .await
        .unwrap();
    let mut messages = consumer.messages_with(3, Duration::from_millis(200));
    // Published while the consumer waits, so calls are cancelled mid-fetch.
    let subject = n.subject("a");
    let publisher = tokio::spawn(async move {
        for i in 0..N {
            stream
                .publish(subject.as_str(), i.to_string())
                .await
                .unwrap();
            if i % 4 == 0 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    let (mut got, mut cancelled, mut round) = (Vec::new(), 0u64, 0u64);
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    while got.len() < N {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {N} messages ({cancelled} calls cancelled)",
            got.len()
        );
        round += 1;
        match impatient(round, messages.next()).await {
            None => cancelled += 1,
            Some(Some(Ok(d))) => {
                got.push(text(&d));
                d.ack().await.unwrap();
            }
            Some(Some(Err(e))) => panic!("error after {} messages: {e}", got.len()),
            Some(None) => panic!("ended after {} messages", got.len()),
        }
    }
    let want: Vec<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(
        got, want,
        "lost, repeated or out of order ({cancelled} calls cancelled)"
    );
    assert!(cancelled > 0);
    publisher.await.unwrap();
}

/// `Messages::stop` gives back at once what was fetched and not handed
/// out; what was handed out and acked stays acked.
pub async fn messages_stop_gives_back_what_was_not_handed_out(bus: &Bus) {
    let n = names("h_stop");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let stream = bus.stream(&cfg.name);
    for i in 1..=3 {
        stream
            .publish(n.subject("a"), format!("m{i}"))
            .await
            .unwrap();
    }
    let consumer = stream
        .create_consumer(ConsumerConfig::durable("c").ack_wait(Duration::from_secs(30)))
        .await
        .unwrap();
    let mut messages = consumer.messages_with(10, Duration::from_secs(1));
    let first = next(&mut messages).await;
    first.ack_confirmed(AckKind::Ack).await.unwrap();
    messages.stop().await.unwrap();
    let mut back = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while back.len() < 2 && tokio::time::Instant::now() < deadline {
        back.extend(consumer.fetch(10, SHORT).await.unwrap());
    }
    let back: Vec<(u64, u64)> = back
        .iter()
        .map(|d| (d.stream_seq(), d.delivered()))
        .collect();
    assert_eq!(back, [(2, 2), (3, 2)]);
}

/// `messages()` reports a consumer deleted under it as an error item and
/// goes on; it ends once the bus is closed.
pub async fn messages_reports_a_deleted_consumer_and_ends_when_the_bus_closes(bus: &Bus) {
    let n = names("h_end");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let stream = bus.stream(&cfg.name);
    let consumer = stream
        .create_consumer(ConsumerConfig::durable("c"))
        .await
        .unwrap();
    let mut messages = consumer.messages_with(1, Duration::from_millis(100));
    consumer.delete().await.unwrap();
    match tokio::time::timeout(WAIT, messages.next()).await {
        Ok(Some(Err(Error::ConsumerNotFound { .. }))) => {}
        other => panic!("expected a ConsumerNotFound item, got {other:?}"),
    }
    bus.close().await.unwrap();
    for _ in 0..10 {
        match tokio::time::timeout(WAIT, messages.next()).await {
            Ok(None) => return,
            Ok(Some(Err(_))) => {}
            other => panic!("expected the end after close, got {other:?}"),
        }
    }
    panic!("messages() did not end after close");
}
