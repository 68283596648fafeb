//! Trace context, correlation id and service name: stamped by the `Bus` on
//! publish, stored unchanged by every backend, read back on receive, and
//! carried into what a consumer handler publishes.

use std::sync::{Arc, Mutex};

use durabus::context::{self, Context};
use durabus::trace::{TraceContext, CORRELATION_ID, SERVICE, TRACEPARENT, TRACESTATE};
use durabus::{
    Bus, ConsumeOptions, ConsumerConfig, DeadLetter, Message, MessageContext as _, Outcome,
    Propagation, ReplayOptions,
};

use crate::{
    consumer, create, eventually, names, next_message, publish_captured, replay_all, Names, WAIT,
};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// The valid trace context a stored message carries, or a panic saying why.
fn trace_of(headers: &durabus::HeaderMap) -> TraceContext {
    match TraceContext::from_headers(headers) {
        Some(t) => t,
        None => panic!("no valid traceparent in {headers:?}"),
    }
}

/// Runs a consumer on `stream` whose handler republishes each message to
/// `<root>.out` and records the context it ran in; returns those contexts
/// once `n` were handled.
async fn relay(bus: &Bus, n: &Names, stream: &str, count: usize) -> Vec<Context> {
    consumer(bus, stream, ConsumerConfig::durable("relay")).await;
    let seen: Arc<Mutex<Vec<Context>>> = Arc::default();
    let out = n.subject("out");
    let (record, relay_bus) = (seen.clone(), bus.clone());
    let options = ConsumeOptions::new().dead_letter(DeadLetter::Subject {
        subject: format!("{}_dlq.dead", n.root()),
        stream: n.stream("DLQ"),
    });
    let handle = bus
        .consume(stream, "relay", options, move |d| {
            let (record, bus, out) = (record.clone(), relay_bus.clone(), out.clone());
            async move {
                if d.message.subject.ends_with(".out") {
                    return Outcome::Done;
                }
                record.lock().unwrap().push(Context::current());
                match bus.publish(out, d.message.payload.clone()).await {
                    Ok(Some(_)) => Outcome::Done,
                    other => Outcome::Failed(format!("{other:?}")),
                }
            }
        })
        .await
        .unwrap();
    eventually("every message relayed", WAIT, || async {
        seen.lock().unwrap().len() >= count
    })
    .await;
    handle.shutdown().await.unwrap();
    let got = seen.lock().unwrap().clone();
    got
}

/// A message published in a traced context and consumed with
/// `Bus::consume` carries the trace to the handler, and what the handler
/// publishes continues the same trace (new parent id), with the
/// correlation id.
pub async fn trace_id_survives_publish_then_consume_and_the_handlers_publish(bus: &Bus) {
    let n = names("trace_consume");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let origin = TraceContext::parse(TP).unwrap().child();
    let ctx = Context::new()
        .with_trace(origin.clone())
        .with_correlation_id("order-7");
    let ack = context::scope(ctx, bus.publish(n.subject("in"), "x"))
        .await
        .unwrap()
        .unwrap();
    let stored = bus.get_message(&cfg.name, ack.seq).await.unwrap();
    let sent = trace_of(&stored.headers);
    assert_eq!(sent.trace_id(), origin.trace_id());

    let seen = relay(bus, &n, &cfg.name, 1).await;
    let in_handler = seen[0].trace().expect("the handler runs in a trace");
    assert_eq!(in_handler, &sent, "the handler's context is the message's");
    assert_eq!(seen[0].correlation_id(), Some("order-7"));

    let all = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    let out = all
        .iter()
        .find(|m| m.subject == n.subject("out"))
        .expect("the handler's publish is stored");
    let continued = trace_of(&out.headers);
    assert_eq!(continued.trace_id(), origin.trace_id());
    assert_ne!(continued.parent_id(), sent.parent_id());
    assert_eq!(out.correlation_id(), Some("order-7"));
}

/// With `Propagation::Always`, a message without a `traceparent` gets a
/// valid one, a new trace each time outside any context; one that has a valid one keeps it (and its
/// `tracestate`) byte for byte.
pub async fn traceparent_is_generated_when_absent_and_kept_when_present(bus: &Bus) {
    let always = bus.clone().with_propagation(Propagation::Always);
    let bus = &always;
    let n = names("trace_inject");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let a = publish_captured(bus, Message::new(n.subject("a"), "1")).await;
    let b = publish_captured(bus, Message::new(n.subject("a"), "2")).await;
    let kept = Message::new(n.subject("a"), "3")
        .with_header(TRACEPARENT, TP)
        .with_header(TRACESTATE, "vendor=opaque,other=1");
    let c = publish_captured(bus, kept).await;

    let a = bus.get_message(&cfg.name, a.seq).await.unwrap();
    let b = bus.get_message(&cfg.name, b.seq).await.unwrap();
    let (ta, tb) = (trace_of(&a.headers), trace_of(&b.headers));
    assert_ne!(ta.trace_id(), tb.trace_id(), "each publish starts a trace");
    assert!(ta.is_sampled());
    assert_eq!(a.headers.get_all(TRACEPARENT).count(), 1);
    let c = bus.get_message(&cfg.name, c.seq).await.unwrap();
    assert_eq!(c.headers.get(TRACEPARENT), Some(TP));
    assert_eq!(c.headers.get(TRACESTATE), Some("vendor=opaque,other=1"));
    assert_eq!(c.headers.get_all(TRACEPARENT).count(), 1);
}

/// A malformed `traceparent` is never kept on publish, and one that came
/// from the wire (written past the `Bus`) is ignored on receive: the
/// handler's publish starts a valid trace of its own.
pub async fn malformed_traceparent_is_replaced_and_ignored_on_receive(bus: &Bus) {
    let always = bus.clone().with_propagation(Propagation::Always);
    let bus = &always;
    let n = names("trace_malformed");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let junk = "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01";
    let m = Message::new(n.subject("a"), "1")
        .with_header(TRACEPARENT, junk)
        .with_header(TRACESTATE, "orphan=1");
    let ack = publish_captured(bus, m.clone()).await;
    let stored = bus.get_message(&cfg.name, ack.seq).await.unwrap();
    assert_ne!(stored.headers.get(TRACEPARENT), Some(junk));
    trace_of(&stored.headers);
    assert_eq!(stored.headers.get(TRACESTATE), None);

    // Straight to the backend: stored with the bad header.
    let raw = bus.backend().publish(m).await.unwrap().unwrap();
    let stored = bus.get_message(&cfg.name, raw.seq).await.unwrap();
    assert_eq!(stored.headers.get(TRACEPARENT), Some(junk));
    assert!(stored.trace_context().is_none());
    bus.purge_stream(&cfg.name, durabus::PurgeRequest::default())
        .await
        .unwrap();
    bus.backend()
        .publish(
            Message::new(n.subject("in"), "2")
                .with_header(TRACEPARENT, "ff-garbage")
                .with_header(TRACESTATE, "orphan=1"),
        )
        .await
        .unwrap();
    let seen = relay(bus, &n, &cfg.name, 1).await;
    assert!(seen[0].trace().is_none(), "{:?}", seen[0]);
    let all = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    let out = all.iter().find(|m| m.subject == n.subject("out")).unwrap();
    trace_of(&out.headers);
    assert_eq!(out.headers.get(TRACESTATE), None);
}

/// Every message of a `publish_batch` call gets a `traceparent`, those
/// without one all the same (one producer span); one the caller set is kept.
pub async fn publish_batch_stamps_every_message_and_keeps_given_traceparents(bus: &Bus) {
    let always = bus.clone().with_propagation(Propagation::Always);
    let bus = &always;
    let n = names("trace_batch");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let mut batch: Vec<Message> = (0..4)
        .map(|i| Message::new(n.subject("a"), i.to_string()))
        .collect();
    batch[2].headers.insert(TRACEPARENT, TP);
    for r in bus.publish_batch(batch).await.unwrap() {
        r.unwrap().unwrap();
    }
    let all = replay_all(bus, &cfg.name, ReplayOptions::from_seq(1)).await;
    assert_eq!(all.len(), 4);
    assert_eq!(all[2].headers.get(TRACEPARENT), Some(TP));
    let first = trace_of(&all[0].headers);
    for i in [1, 3] {
        assert_eq!(trace_of(&all[i].headers), first, "message {i}");
    }
}

/// The correlation id and service name set in a context, or the service
/// set on the bus, reach stored messages, live subscribers and consumers;
/// headers the caller set win.
pub async fn correlation_id_and_service_name_round_trip(bus: &Bus) {
    let n = names("trace_corr");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let mut sub = bus.subscribe(&n.all()).await.unwrap();
    let ctx = Context::new()
        .with_correlation_id("corr-1")
        .with_service("billing");
    let ack = context::scope(ctx.clone(), bus.publish(n.subject("a"), "1"))
        .await
        .unwrap()
        .unwrap();
    let stored = bus.get_message(&cfg.name, ack.seq).await.unwrap();
    assert_eq!(stored.correlation_id(), Some("corr-1"));
    assert_eq!(stored.service(), Some("billing"));
    let live = next_message(&mut sub).await;
    assert_eq!(live.correlation_id(), Some("corr-1"));
    assert_eq!(live.service(), Some("billing"));

    let shop = bus.clone().with_service("shop");
    let own = Message::new(n.subject("b"), "2").with_header(CORRELATION_ID, "mine");
    let ack = context::scope(ctx, shop.publish_message(own))
        .await
        .unwrap()
        .unwrap();
    let stored = bus.get_message(&cfg.name, ack.seq).await.unwrap();
    assert_eq!(stored.correlation_id(), Some("mine"));
    assert_eq!(
        stored.service(),
        Some("billing"),
        "the context's service wins"
    );
    let ack = shop.publish(n.subject("c"), "3").await.unwrap().unwrap();
    consumer(bus, &cfg.name, ConsumerConfig::durable("c")).await;
    let got = crate::fetch_n(bus, &cfg.name, "c", 3).await;
    let d = got.iter().find(|d| d.stream_seq() == ack.seq).unwrap();
    assert_eq!(d.service(), Some("shop"));
    assert_eq!(d.correlation_id(), None);
    assert_eq!(d.message.headers.get(SERVICE), Some("shop"));
}

/// A request made in a traced context reaches the responder with that
/// trace and correlation id.
pub async fn request_carries_the_callers_trace_to_the_responder(bus: &Bus) {
    let n = names("trace_request");
    let subject = n.subject("svc");
    let mut sub = bus.subscribe(&subject).await.unwrap();
    let responder = bus.clone();
    let task = tokio::spawn(async move {
        let m = sub.next().await.expect("a request");
        let reply = m.reply.clone().expect("request carries a reply subject");
        responder.publish(reply, "ok").await.unwrap();
        m
    });
    let origin = TraceContext::generate();
    let ctx = Context::new()
        .with_trace(origin.clone())
        .with_correlation_id("req-1");
    context::scope(ctx, bus.request(subject, "q", WAIT))
        .await
        .unwrap();
    let got = tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
    assert_eq!(got.trace_context().unwrap().trace_id(), origin.trace_id());
    assert_eq!(got.correlation_id(), Some("req-1"));
}

/// With propagation off, messages are stored exactly as given.
pub async fn propagation_off_publishes_messages_unchanged(bus: &Bus) {
    let n = names("trace_off");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let quiet = bus
        .clone()
        .with_propagation(Propagation::Off)
        .with_service("x");
    let ctx = Context::new().with_correlation_id("c");
    let ack = context::scope(ctx, quiet.publish(n.subject("a"), "1"))
        .await
        .unwrap()
        .unwrap();
    let stored = bus.get_message(&cfg.name, ack.seq).await.unwrap();
    for name in [TRACEPARENT, TRACESTATE, CORRELATION_ID, SERVICE] {
        assert_eq!(stored.headers.get(name), None, "{:?}", stored.headers);
    }
}

/// With the default propagation a publish outside any trace is stored as
/// given (no trace header), while one inside a scope continues its trace.
pub async fn default_propagation_adds_no_trace_outside_a_trace(bus: &Bus) {
    let n = names("trace_default");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    let plain = publish_captured(bus, Message::new(n.subject("a"), "1")).await;
    let stored = bus.get_message(&cfg.name, plain.seq).await.unwrap();
    assert!(stored.headers.is_empty(), "{:?}", stored.headers);
    let parent = TraceContext::parse(TP).unwrap();
    let inside = context::scope(Context::new().with_trace(parent.clone()), async {
        publish_captured(bus, Message::new(n.subject("a"), "2")).await
    })
    .await;
    let stored = bus.get_message(&cfg.name, inside.seq).await.unwrap();
    assert_eq!(trace_of(&stored.headers).trace_id(), parent.trace_id());
}
