//! Publishing: acks, sequences, fan-out, validation.

use std::time::SystemTime;

use bytes::Bytes;
use durabus::{Bus, Error, Message};

use crate::{
    assert_err, create, names, next_message, publish_captured, publish_n, replay_all, seqs, state,
};
use durabus::ReplayOptions;

/// The store assigns sequences 1, 2, 3, ... and names itself in the ack.
///
/// Checks invariant 1 (docs/design.md), and 31 on the hub.
pub async fn sequences_start_at_one_and_increase_by_one(bus: &Bus) {
    let n = names("seqs");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    for expected in 1..=5u64 {
        let ack = bus
            .publish(n.subject("a"), "x")
            .await
            .unwrap()
            .expect("captured");
        assert_eq!(ack.seq, expected);
        assert_eq!(ack.stream, cfg.name);
        assert!(!ack.duplicate);
    }
    assert_eq!(state(bus, &cfg.name).await.last_seq, 5);
}

/// No stream captures the subject: Ok(None), and live subscribers get it.
pub async fn uncaptured_publish_returns_none_and_reaches_subscribers(bus: &Bus) {
    let n = names("uncaptured");
    let mut sub = bus.subscribe(&n.all()).await.unwrap();
    let got = bus.publish(n.subject("x"), "hello").await.unwrap();
    assert!(got.is_none(), "uncaptured publish returned an ack: {got:?}");
    let m = next_message(&mut sub).await;
    assert_eq!(m.subject, n.subject("x"));
    assert_eq!(&m.payload[..], b"hello");
}

/// A captured message is stored and also fanned out to live subscribers.
pub async fn captured_publish_reaches_live_subscribers(bus: &Bus) {
    let n = names("captured_fanout");
    create(bus, n.stream_config("S")).await;
    let mut sub = bus.subscribe(&n.subject("*")).await.unwrap();
    let ack = bus.publish(n.subject("a"), "stored").await.unwrap();
    assert!(ack.is_some());
    let m = next_message(&mut sub).await;
    assert_eq!(&m.payload[..], b"stored");
}

/// Subject, headers (multi-valued, in order) and payload survive storage
/// and fan-out. Backends may add headers of their own, so only ours are
/// checked.
pub async fn publish_preserves_subject_headers_and_payload(bus: &Bus) {
    let n = names("headers");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let mut sub = bus.subscribe(&n.all()).await.unwrap();
    let mut msg = Message::new(n.subject("h"), Bytes::from_static(b"\x00\x01binary\xff"))
        .with_header("X-Trace", "abc");
    msg.headers.append("Tag", "first");
    msg.headers.append("Tag", "second");
    let ack = publish_captured(bus, msg).await;
    let stored = bus.get_message(&cfg.name, ack.seq).await.unwrap();
    assert_eq!(stored.stream, cfg.name);
    assert_eq!(stored.seq, ack.seq);
    assert_eq!(stored.subject, n.subject("h"));
    assert_eq!(&stored.payload[..], b"\x00\x01binary\xff");
    assert_eq!(stored.headers.get("X-Trace"), Some("abc"));
    assert_eq!(
        stored.headers.get_all("Tag").collect::<Vec<_>>(),
        ["first", "second"]
    );
    let live = next_message(&mut sub).await;
    assert_eq!(live.headers.get("X-Trace"), Some("abc"));
    assert_eq!(
        live.headers.get_all("Tag").collect::<Vec<_>>(),
        ["first", "second"]
    );
    assert_eq!(&live.payload[..], b"\x00\x01binary\xff");
}

/// Publishing to a malformed subject is refused, naming the token, and
/// stores nothing.
pub async fn publish_to_invalid_subject_names_the_token(bus: &Bus) {
    let n = names("bad_publish");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let cases = [
        (format!("{}..x", n.root()), "token 2"),
        (n.subject("*"), "token 2"),
        (n.subject(">"), "token 2"),
        (n.subject("a b"), "\"a b\""),
        (String::new(), "empty"),
    ];
    for (bad, needle) in cases {
        assert_err!(
            bus.publish(bad.clone(), "x").await,
            Error::InvalidSubject { ref subject, ref reason } if *subject == bad && reason.contains(needle)
        );
    }
    assert_eq!(state(bus, &cfg.name).await.messages, 0);
}

/// publish_batch answers each message in input order, captured or not.
pub async fn publish_batch_results_are_in_input_order(bus: &Bus) {
    let n = names("batch");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let mut batch: Vec<Message> = (0..10)
        .map(|i| Message::new(n.subject("a"), format!("{i}")))
        .collect();
    batch.insert(
        5,
        Message::new(format!("{}_other.x", n.root()), "uncaptured"),
    );
    let results = bus.publish_batch(batch).await.unwrap();
    assert_eq!(results.len(), 11);
    let mut expected = 1;
    for (i, r) in results.into_iter().enumerate() {
        let r = r.unwrap();
        if i == 5 {
            assert!(r.is_none(), "uncaptured message got {r:?}");
        } else {
            assert_eq!(r.expect("captured").seq, expected);
            expected += 1;
        }
    }
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    let payloads: Vec<String> = stored
        .iter()
        .map(|m| String::from_utf8_lossy(&m.payload).into_owned())
        .collect();
    let want: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    assert_eq!(payloads, want);
}

/// Zero-byte and 512 KiB payloads are stored and read back byte for byte.
pub async fn empty_and_large_payloads_round_trip(bus: &Bus) {
    let n = names("payload_sizes");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let empty = publish_captured(bus, Message::new(n.subject("e"), Bytes::new())).await;
    let big: Vec<u8> = (0..512 * 1024).map(|i| (i % 251) as u8).collect();
    let large = publish_captured(bus, Message::new(n.subject("l"), big.clone())).await;
    assert!(bus
        .get_message(&cfg.name, empty.seq)
        .await
        .unwrap()
        .payload
        .is_empty());
    assert_eq!(
        bus.get_message(&cfg.name, large.seq).await.unwrap().payload,
        big
    );
}

/// Stored times never go backwards and lie around the time of publishing.
///
/// Checks invariant 2 (docs/design.md).
pub async fn timestamps_never_decrease(bus: &Bus) {
    let n = names("times");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let before = SystemTime::now();
    publish_n(bus, &n.subject("t"), 50).await;
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(seqs(&stored), (1..=50).collect::<Vec<_>>());
    for w in stored.windows(2) {
        assert!(w[0].time <= w[1].time, "time went back at seq {}", w[1].seq);
    }
    // The server's clock may differ from ours a little (NATS); allow 5 s.
    let slack = std::time::Duration::from_secs(5);
    assert!(stored[0].time + slack >= before);
    assert!(stored[49].time <= SystemTime::now() + slack);
}

/// Many publishers at once: every ack has its own seq, the seqs are
/// exactly 1..=N, and each stored message is the one its ack named.
///
/// Checks invariant 1 (docs/design.md).
pub async fn concurrent_publishers_get_unique_contiguous_sequences(bus: &Bus) {
    const TASKS: usize = 8;
    const EACH: usize = 150;
    let n = names("concurrent");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let bus = bus.clone();
        let subject = n.subject(&format!("t{t}"));
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..EACH {
                let payload = format!("{t}/{i}");
                let ack = if i % 3 == 0 {
                    let batch = vec![Message::new(subject.clone(), payload.clone())];
                    let mut r = bus.publish_batch(batch).await.unwrap();
                    r.remove(0).unwrap().expect("captured")
                } else {
                    bus.publish(subject.clone(), payload.clone())
                        .await
                        .unwrap()
                        .expect("captured")
                };
                acks.push((ack.seq, payload));
            }
            acks
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        let acks = tokio::time::timeout(crate::WAIT, t)
            .await
            .expect("publishers finished")
            .unwrap();
        // One publisher's acks increase: its messages are stored in order.
        assert!(
            acks.windows(2).all(|w| w[0].0 < w[1].0),
            "a publisher's seqs went backwards"
        );
        all.extend(acks);
    }
    all.sort();
    let total = (TASKS * EACH) as u64;
    assert_eq!(
        all.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        (1..=total).collect::<Vec<_>>()
    );
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(stored.len() as u64, total);
    for (m, (seq, payload)) in stored.iter().zip(&all) {
        assert_eq!(m.seq, *seq);
        assert_eq!(
            m.payload,
            payload.as_bytes(),
            "seq {seq} holds another message than acked"
        );
    }
}

/// A batch answers each message on its own: a failing message gets its
/// error in place, the others are stored in order (expectations see the
/// earlier messages of the same batch) and reach subscribers.
/// Rejected messages may or may not reach subscribers (NATS delivers
/// them: core fan-out does not wait for the stream), so that is not
/// asserted.
pub async fn publish_batch_reports_each_failure_in_place(bus: &Bus) {
    let n = names("batch_errors");
    let cfg = n.stream_config("S").max_msg_size(1000u32);
    create(bus, cfg.clone()).await;
    let mut sub = bus.subscribe(&n.all()).await.unwrap();
    let batch = vec![
        Message::new(n.subject("a"), "1"),
        Message::new(n.subject("a"), vec![0u8; 4000]),
        Message::new(n.subject("a"), "2"),
        Message::new(n.subject("a"), "3").with_header(durabus::NATS_EXPECTED_LAST_SEQUENCE, "2"),
        Message::new(n.subject("a"), "4").with_header(durabus::NATS_EXPECTED_LAST_SEQUENCE, "1"),
        Message::new(n.subject("a"), "5"),
    ];
    let mut r = bus.publish_batch(batch).await.unwrap().into_iter();
    assert_eq!(r.next().unwrap().unwrap().expect("captured").seq, 1);
    assert_err!(r.next().unwrap(), Error::MaxPayloadExceeded { .. });
    assert_eq!(r.next().unwrap().unwrap().expect("captured").seq, 2);
    assert_eq!(r.next().unwrap().unwrap().expect("captured").seq, 3);
    assert_err!(
        r.next().unwrap(),
        Error::WrongLastSequence {
            expected: 1,
            current: 3
        }
    );
    assert_eq!(r.next().unwrap().unwrap().expect("captured").seq, 4);
    assert!(r.next().is_none());
    // Whether subscribers also see the rejected messages is
    // backend-specific (on NATS core fan-out ignores the stream's
    // verdict): only the stored ones are required, in order.
    let mut live = Vec::new();
    while live.last().map(String::as_str) != Some("5") {
        let m = next_message(&mut sub).await;
        live.push(String::from_utf8_lossy(&m.payload).into_owned());
    }
    live.retain(|p| ["1", "2", "3", "5"].contains(&p.as_str()));
    assert_eq!(live, ["1", "2", "3", "5"]);
    let stored = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(seqs(&stored), [1, 2, 3, 4]);
}

/// Subject tokens are any non-whitespace UTF-8: such subjects are
/// stored, matched by wildcards and filters, and read back unchanged.
pub async fn non_ascii_subjects_round_trip(bus: &Bus) {
    let n = names("utf8");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let subject = n.subject("café.日本.Ωmega");
    let mut sub = bus.subscribe(&n.subject("*.日本.>")).await.unwrap();
    let ack = publish_captured(bus, Message::new(subject.clone(), "ünïcödé")).await;
    assert_eq!(next_message(&mut sub).await.subject, subject);
    let got = bus.get_last_message(&cfg.name, &subject).await.unwrap();
    assert_eq!((got.seq, &*got.subject), (ack.seq, subject.as_str()));
    assert_eq!(got.payload, "ünïcödé".as_bytes());
    let filtered = replay_all(
        bus,
        &cfg.name,
        ReplayOptions::from_seq(1).filter(n.subject("café.*.*")),
    )
    .await;
    assert_eq!(seqs(&filtered), [ack.seq]);
}
