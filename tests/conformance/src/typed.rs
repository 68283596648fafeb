//! Typed subjects and the payload-type registry, written once over the core
//! primitives and the consumer runner.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use durabus::consume::{DLQ_DELIVERIES, DLQ_ERROR};
use durabus::typed::{Cbor, Codec, Json, MsgPack, Registry, Subject, CONTENT_TYPE, DURABUS_TYPE};
use durabus::{
    Bus, ConsumeOptions, ConsumerConfig, DeadLetter, Error, Message, Outcome, ReplayOptions,
    RequestOptions, StoredMessage,
};
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::{
    assert_err, consumer, create, eventually, names, next_message, publish_captured, replay_all,
    Names, WAIT,
};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Order {
    id: u64,
    lines: Vec<String>,
    note: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Cancelled {
    id: u64,
    reason: String,
}

fn order(id: u64) -> Order {
    Order {
        id,
        lines: vec!["tea".into(), "café".into()],
        note: None,
    }
}

/// Publishes through a typed subject and receives the same value, with the
/// codec's content type and the type name in the headers, both live and
/// stored in a stream.
async fn round_trip<C: Codec>(bus: &Bus, case: &str) {
    let n = names(case);
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let orders = Subject::<Order, C>::new(n.subject("orders.*")).unwrap();
    let mut sub = orders.subscribe(bus).await.unwrap();
    let ack = orders
        .publish_to(bus, n.subject("orders.eu"), &order(7))
        .await
        .unwrap()
        .expect("captured");
    let got = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .expect("subscription open")
        .unwrap();
    assert_eq!(got.value, order(7));
    assert_eq!(got.message.subject, n.subject("orders.eu"));
    assert_eq!(got.message.headers.get(CONTENT_TYPE), Some(C::CONTENT_TYPE));
    assert_eq!(
        got.message.headers.get(DURABUS_TYPE),
        Some(orders.type_name())
    );
    let stored = bus.get_message(&cfg.name, ack.seq).await.unwrap();
    assert_eq!(orders.decode_stored(&stored).unwrap(), order(7));
}

/// JSON values round-trip through typed subjects.
pub async fn json_values_round_trip_through_typed_subjects(bus: &Bus) {
    round_trip::<Json>(bus, "typed_json").await;
}

/// MessagePack values round-trip through typed subjects.
pub async fn msgpack_values_round_trip_through_typed_subjects(bus: &Bus) {
    round_trip::<MsgPack>(bus, "typed_msgpack").await;
}

/// CBOR values round-trip through typed subjects.
pub async fn cbor_values_round_trip_through_typed_subjects(bus: &Bus) {
    round_trip::<Cbor>(bus, "typed_cbor").await;
}

/// A typed publish to a subject the pattern does not match is refused with
/// InvalidSubject and sends nothing; so is the subject-less form on a
/// wildcard pattern.
pub async fn typed_publish_outside_the_pattern_is_refused_and_sends_nothing(bus: &Bus) {
    let n = names("typed_refused");
    let mut sub = bus.subscribe(&n.all()).await.unwrap();
    let orders = Subject::<Order>::new(n.subject("orders.*")).unwrap();
    assert_err!(
        orders.publish_to(bus, n.subject("invoices.eu"), &order(1)).await,
        Error::InvalidSubject { ref subject, .. } if *subject == n.subject("invoices.eu")
    );
    assert_err!(
        orders
            .publish_to(bus, n.subject("orders.eu.extra"), &order(1))
            .await,
        Error::InvalidSubject { .. }
    );
    assert_err!(
        orders.publish(bus, &order(1)).await,
        Error::InvalidSubject { .. }
    );
    let literal = Subject::<Order>::new(n.subject("orders.sentinel")).unwrap();
    literal.publish(bus, &order(2)).await.unwrap();
    let first = next_message(&mut sub).await;
    assert_eq!(first.subject, n.subject("orders.sentinel"), "{first:?}");
}

/// A live message that does not decode is reported in its place as a
/// Decode error, and the typed subscription goes on with the next one.
pub async fn typed_subscription_reports_undecodable_messages_and_goes_on(bus: &Bus) {
    let n = names("typed_bad_live");
    let orders = Subject::<Order>::new(n.subject("orders")).unwrap();
    let mut sub = orders.subscribe(bus).await.unwrap();
    bus.publish(n.subject("orders"), "{not json").await.unwrap();
    orders.publish(bus, &order(3)).await.unwrap();
    let bad = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_err!(bad, Error::Decode { ref subject, .. } if *subject == n.subject("orders"));
    let good = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(good.unwrap().value, order(3));
}

/// A typed request reaches a typed responder decoded and comes back as the
/// reply type; a request that does not decode gets a 400 service error.
pub async fn typed_requests_get_typed_replies_and_bad_requests_a_400(bus: &Bus) {
    let n = names("typed_request");
    let quotes = Subject::<Order, MsgPack>::new(n.subject("quote")).unwrap();
    let responder = quotes
        .respond(bus, Some("pricing"), |o: Order, _m| async move {
            Ok::<_, durabus::ReplyError>(o.lines.len() as f64 * 2.5)
        })
        .await
        .unwrap();
    let price: f64 = quotes
        .request(bus, &order(1), RequestOptions::new().timeout(WAIT))
        .await
        .unwrap();
    assert_eq!(price, 5.0);
    assert_err!(
        bus.request(n.subject("quote"), "not msgpack", WAIT).await,
        Error::ServiceError { code: 400, .. }
    );
    let stats = responder.shutdown().await.unwrap();
    assert_eq!((stats.replied, stats.errors), (1, 1), "{stats:?}");
}

/// The registry sends each message of a mixed stream to the handler of its
/// type, decoded by that type's codec.
pub async fn registry_dispatches_mixed_types_to_their_handlers(bus: &Bus) {
    let n = names("registry_mixed");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("r")).await;
    let orders = Subject::<Order>::new(n.subject("orders.*")).unwrap();
    let cancels = Subject::<Cancelled, Cbor>::new(n.subject("orders.*"))
        .unwrap()
        .with_type_name("Cancelled");
    for i in 0..4 {
        orders
            .publish_to(bus, n.subject("orders.eu"), &order(i))
            .await
            .unwrap();
        let c = Cancelled {
            id: i,
            reason: "late".into(),
        };
        cancels
            .publish_to(bus, n.subject("orders.us"), &c)
            .await
            .unwrap();
    }
    let (seen_orders, seen_cancels) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (so, sc) = (seen_orders.clone(), seen_cancels.clone());
    let handle = Registry::new()
        .on(&orders, move |o: Order, _| {
            let so = so.clone();
            async move {
                assert_eq!(o.lines.len(), 2);
                so.fetch_add(1, Ordering::Relaxed);
                Outcome::Done
            }
        })
        .unwrap()
        .on(&cancels, move |c: Cancelled, _| {
            let sc = sc.clone();
            async move {
                assert_eq!(c.reason, "late");
                sc.fetch_add(1, Ordering::Relaxed);
                Outcome::Done
            }
        })
        .unwrap()
        .consume(bus, &cfg.name, "r", dead_letters(&n))
        .await
        .unwrap();
    eventually("all 8 handled", WAIT, || async {
        handle.stats().acked == 8
    })
    .await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(stats.dead_lettered, 0, "{stats:?}");
    assert_eq!(
        (
            seen_orders.load(Ordering::Relaxed),
            seen_cancels.load(Ordering::Relaxed)
        ),
        (4, 4)
    );
}

/// Consume options whose dead letters go to this case's own stream.
fn dead_letters(n: &Names) -> ConsumeOptions {
    ConsumeOptions::new()
        .backoff([Duration::from_millis(20)])
        .dead_letter(DeadLetter::Subject {
            subject: format!("{}_dlq.dead", n.root()),
            stream: n.stream("DLQ"),
        })
}

/// The dead letters of this case, with the reason of each.
async fn letters(bus: &Bus, n: &Names) -> Vec<StoredMessage> {
    replay_all(bus, &n.stream("DLQ"), ReplayOptions::from_seq(1)).await
}

/// Through the registry, an unknown type, an untyped message and a known
/// type that does not decode are dead-lettered on their first delivery
/// with the reason; the known, valid message is handled as usual.
pub async fn unknown_and_undecodable_types_go_to_the_dlq_with_the_reason(bus: &Bus) {
    let n = names("registry_reject");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("r").max_deliver(5)).await;
    let orders = Subject::<Order>::new(n.subject("orders")).unwrap();
    orders.publish(bus, &order(1)).await.unwrap();
    let typed = |payload: &'static str, type_name: &str| {
        Message::new(n.subject("orders"), payload).with_header(DURABUS_TYPE, type_name.to_owned())
    };
    publish_captured(bus, typed("{}", "Refund")).await;
    publish_captured(bus, typed("{\"id\": \"seven\"}", orders.type_name())).await;
    publish_captured(bus, Message::new(n.subject("orders"), "{}")).await;
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let handle = Registry::new()
        .on(&orders, move |_: Order, _| {
            h.fetch_add(1, Ordering::Relaxed);
            async { Outcome::Done }
        })
        .unwrap()
        .consume(bus, &cfg.name, "r", dead_letters(&n))
        .await
        .unwrap();
    eventually("1 acked and 3 dead-lettered", WAIT, || async {
        let s = handle.stats();
        s.acked == 1 && s.dead_lettered == 3
    })
    .await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!(
        stats.retried, 0,
        "rejected messages were retried: {stats:?}"
    );
    assert_eq!(handled.load(Ordering::Relaxed), 1);
    let letters = letters(bus, &n).await;
    let mut reasons: Vec<&str> = letters
        .iter()
        .map(|l| {
            assert_eq!(l.headers.get(DLQ_DELIVERIES), Some("1"), "{l:?}");
            l.headers.get(DLQ_ERROR).unwrap_or_default()
        })
        .collect();
    reasons.sort_unstable();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons[0].contains("cannot decode"), "{reasons:?}");
    assert!(
        reasons[1].contains("has no Durabus-Type header"),
        "{reasons:?}"
    );
    assert!(
        reasons[2].contains("unknown Durabus-Type \"Refund\""),
        "{reasons:?}"
    );
}

/// A typed consumer dead-letters a payload that does not decode at once,
/// without calling the handler, and handles the valid ones.
pub async fn typed_consume_dead_letters_undecodable_payloads_at_once(bus: &Bus) {
    let n = names("typed_consume_reject");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("r").max_deliver(5)).await;
    let orders = Subject::<Order>::new(n.subject("orders")).unwrap();
    publish_captured(bus, Message::new(n.subject("orders"), vec![0xff, 0x00])).await;
    orders.publish(bus, &order(2)).await.unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let handle = orders
        .consume(bus, &cfg.name, "r", dead_letters(&n), move |o, _| {
            assert_eq!(o, order(2));
            h.fetch_add(1, Ordering::Relaxed);
            async { Outcome::Done }
        })
        .await
        .unwrap();
    eventually("1 acked and 1 dead-lettered", WAIT, || async {
        let s = handle.stats();
        s.acked == 1 && s.dead_lettered == 1
    })
    .await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!((stats.retried, handled.load(Ordering::Relaxed)), (0, 1));
    let letters = letters(bus, &n).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = letters[0].headers.get(DLQ_ERROR).unwrap_or_default();
    assert!(reason.contains("cannot decode"), "{reason}");
}

/// Two event types of the same shape, so either payload decodes as the
/// other: only the type header tells them apart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Created {
    id: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Refunded {
    id: u64,
}

/// `Created` and `Refunded` bindings sharing this case's `orders.*`.
fn shared_pattern(n: &Names) -> (Subject<Created>, Subject<Refunded>) {
    let pattern = n.subject("orders.*");
    let created = Subject::new(&pattern).unwrap().with_type_name("Created");
    let refunded = Subject::new(&pattern).unwrap().with_type_name("Refunded");
    (created, refunded)
}

/// Checks invariant 30 (docs/design.md).
///
/// On a pattern shared by several types, a typed subscription yields a
/// message whose Durabus-Type names another type as WrongType naming both
/// types (never decoded as its own type, although the payload would
/// decode), decodes its own type and untyped messages, and goes on; it is
/// a `Stream` (`take` and `collect` read it).
pub async fn typed_subscription_refuses_another_type_naming_both(bus: &Bus) {
    let n = names("typed_wrong_type");
    let (created, refunded) = shared_pattern(&n);
    let mut sub = created.subscribe(bus).await.unwrap();
    let eu = n.subject("orders.eu");
    created
        .publish_to(bus, &eu, &Created { id: 1 })
        .await
        .unwrap();
    refunded
        .publish_to(bus, &eu, &Refunded { id: 2 })
        .await
        .unwrap();
    bus.publish(&eu, r#"{"id": 3}"#).await.unwrap();
    created
        .publish_to(bus, &eu, &Created { id: 4 })
        .await
        .unwrap();
    let items: Vec<_> = tokio::time::timeout(WAIT, sub.by_ref().take(4).collect())
        .await
        .unwrap();
    let mut items = items.into_iter();
    assert_eq!(items.next().unwrap().unwrap().value, Created { id: 1 });
    let wrong = items.next().unwrap();
    let text = match &wrong {
        Err(
            e @ Error::WrongType {
                subject,
                expected,
                found,
            },
        ) => {
            assert_eq!(
                (subject, expected.as_str(), found.as_str()),
                (&eu, "Created", "Refunded")
            );
            e.to_string()
        }
        other => panic!("a Refunded decoded as Created: {other:?}"),
    };
    assert!(
        text.contains("\"Created\"") && text.contains("\"Refunded\""),
        "{text}"
    );
    assert_eq!(items.next().unwrap().unwrap().value, Created { id: 3 });
    assert_eq!(items.next().unwrap().unwrap().value, Created { id: 4 });
    created
        .publish_to(bus, &eu, &Created { id: 5 })
        .await
        .unwrap();
    let next = tokio::time::timeout(WAIT, sub.next()).await.unwrap();
    assert_eq!(next.expect("open").unwrap().value, Created { id: 5 });
}

/// Checks invariant 30 (docs/design.md).
///
/// A typed consumer on a stream shared by several types dead-letters a
/// message of another type at once, with the reason naming both types, as
/// the registry does with a type it has no handler for; the handler sees
/// only its own type.
pub async fn typed_consume_dead_letters_another_type_at_once(bus: &Bus) {
    let n = names("typed_consume_wrong_type");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    consumer(bus, &cfg.name, ConsumerConfig::durable("r").max_deliver(5)).await;
    let (created, refunded) = shared_pattern(&n);
    let eu = n.subject("orders.eu");
    created
        .publish_to(bus, &eu, &Created { id: 1 })
        .await
        .unwrap();
    refunded
        .publish_to(bus, &eu, &Refunded { id: 2 })
        .await
        .unwrap();
    created
        .publish_to(bus, &eu, &Created { id: 3 })
        .await
        .unwrap();
    let handled = Arc::new(AtomicU64::new(0));
    let h = handled.clone();
    let handle = created
        .consume(bus, &cfg.name, "r", dead_letters(&n), move |c, _| {
            assert_ne!(c.id, 2, "a Refunded reached the Created handler");
            h.fetch_add(1, Ordering::Relaxed);
            async { Outcome::Done }
        })
        .await
        .unwrap();
    eventually("2 acked and 1 dead-lettered", WAIT, || async {
        let s = handle.stats();
        s.acked == 2 && s.dead_lettered == 1
    })
    .await;
    let stats = handle.shutdown().await.unwrap();
    assert_eq!((stats.retried, handled.load(Ordering::Relaxed)), (0, 2));
    let letters = letters(bus, &n).await;
    assert_eq!(letters.len(), 1, "{letters:?}");
    let reason = letters[0].headers.get(DLQ_ERROR).unwrap_or_default();
    assert!(
        reason.contains("\"Refunded\"") && reason.contains("\"Created\""),
        "{reason}"
    );
}
