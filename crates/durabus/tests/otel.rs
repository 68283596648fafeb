//! durabus's `traceparent` / `tracestate` headers and OpenTelemetry's W3C
//! `TraceContextPropagator` understand each other, both ways.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use durabus::context::Context;
use durabus::trace::TraceContext;
use durabus::{ConsumeOptions, ConsumerConfig, HeaderMap, Message, MessageContext as _, Outcome};
use opentelemetry::propagation::TextMapPropagator as _;
use opentelemetry::trace::{
    SpanContext, SpanId, TraceContextExt as _, TraceFlags, TraceId, TraceState,
};
use opentelemetry_sdk::propagation::TraceContextPropagator;

fn otel_context(flags: TraceFlags, state: &[(&str, &str)]) -> SpanContext {
    SpanContext::new(
        TraceId::from_bytes(*b"\x4b\xf9\x2f\x35\x77\xb3\x4d\xa6\xa3\xce\x92\x9d\x0e\x0e\x47\x36"),
        SpanId::from_bytes(*b"\x00\xf0\x67\xaa\x0b\xa9\x02\xb7"),
        flags,
        true,
        TraceState::from_key_value(state.iter().copied()).unwrap(),
    )
}

/// What OpenTelemetry injects, as durabus headers.
fn otel_inject(sc: &SpanContext) -> HeaderMap {
    let cx = opentelemetry::Context::new().with_remote_span_context(sc.clone());
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut carrier);
    carrier.into_iter().collect()
}

/// What OpenTelemetry extracts from durabus headers.
fn otel_extract(headers: &HeaderMap) -> SpanContext {
    let carrier: HashMap<String, String> = headers
        .iter()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    let cx = TraceContextPropagator::new().extract(&carrier);
    cx.span().span_context().clone()
}

fn assert_same(ours: &TraceContext, theirs: &SpanContext) {
    assert_eq!(ours.trace_id().to_bytes(), theirs.trace_id().to_bytes());
    assert_eq!(ours.parent_id().to_bytes(), theirs.span_id().to_bytes());
    assert_eq!(ours.flags(), theirs.trace_flags().to_u8());
    let state = theirs.trace_state().header();
    assert_eq!(ours.tracestate().unwrap_or(""), state);
}

#[test]
fn durabus_extracts_what_opentelemetry_injects() {
    for (flags, state) in [
        (TraceFlags::SAMPLED, &[("vendor", "v1"), ("other", "x")][..]),
        (TraceFlags::NOT_SAMPLED, &[][..]),
    ] {
        let sc = otel_context(flags, state);
        let headers = otel_inject(&sc);
        let ours = TraceContext::from_headers(&headers).expect("valid traceparent");
        assert_same(&ours, &sc);
    }
}

#[test]
fn opentelemetry_extracts_what_durabus_injects() {
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
    for ours in [
        TraceContext::generate().with_tracestate(Some("congo=t61rcWkgMzE,rojo=00f067aa0ba902b7")),
        TraceContext::parse(unsampled).unwrap(),
        TraceContext::generate().child(),
    ] {
        let mut headers = HeaderMap::new();
        ours.inject(&mut headers);
        let theirs = otel_extract(&headers);
        assert!(theirs.is_valid() && theirs.is_remote());
        assert_same(&ours, &theirs);
    }
}

/// A trace started by OpenTelemetry goes through a `memory:` stream and a
/// consumer handler; what the handler publishes is, for OpenTelemetry, the
/// same trace under a new parent span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trace_opentelemetry_started_continues_through_a_consumer_handler() {
    let bus = durabus::connect("memory:").await.unwrap();
    bus.create_stream(durabus::StreamConfig::new("S").subjects(["s.>"]))
        .await
        .unwrap();
    let sc = otel_context(TraceFlags::SAMPLED, &[("vendor", "v1")]);
    let mut m = Message::new("s.in", "x");
    m.headers = otel_inject(&sc);
    bus.publish_message(m).await.unwrap();
    bus.create_consumer("S", ConsumerConfig::durable("c"))
        .await
        .unwrap();
    let seen: Arc<Mutex<Vec<Context>>> = Arc::default();
    let (record, relay) = (seen.clone(), bus.clone());
    let handle = bus
        .consume("S", "c", ConsumeOptions::new(), move |d| {
            let (record, relay) = (record.clone(), relay.clone());
            async move {
                if d.message.subject == "s.in" {
                    record.lock().unwrap().push(Context::current());
                    relay.publish("s.out", "y").await.unwrap();
                }
                Outcome::Done
            }
        })
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "not handled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    handle.shutdown().await.unwrap();
    let out = bus.get_last_message("S", "s.out").await.unwrap();
    let theirs = otel_extract(&out.headers);
    assert_eq!(theirs.trace_id(), sc.trace_id());
    assert_ne!(theirs.span_id(), sc.span_id());
    assert_eq!(theirs.trace_flags(), TraceFlags::SAMPLED);
    assert_eq!(theirs.trace_state().get("vendor"), Some("v1"));
    assert_eq!(
        out.trace_context().unwrap().trace_id().to_bytes(),
        sc.trace_id().to_bytes()
    );
    bus.close().await.unwrap();
}

/// With the feature `opentelemetry`, a publish outside any durabus context
/// continues the current OpenTelemetry span: its trace, its span id as the
/// parent id.
#[cfg(feature = "opentelemetry")]
#[tokio::test]
async fn a_publish_inside_an_opentelemetry_span_continues_it() {
    use opentelemetry::context::FutureExt as _;
    let bus = durabus::connect("memory:").await.unwrap();
    bus.create_stream(durabus::StreamConfig::new("S").subjects(["s.>"]))
        .await
        .unwrap();
    let sc = otel_context(TraceFlags::SAMPLED, &[("vendor", "v1")]);
    let cx = opentelemetry::Context::new().with_remote_span_context(sc.clone());
    bus.publish("s.a", "x").with_context(cx).await.unwrap();
    let stored = bus.get_message("S", 1).await.unwrap();
    assert_same(&stored.trace_context().unwrap(), &sc);
    bus.publish("s.b", "y").await.unwrap();
    let outside = bus.get_message("S", 2).await.unwrap();
    assert_ne!(
        outside.trace_context().unwrap().trace_id().to_bytes(),
        sc.trace_id().to_bytes()
    );
    bus.close().await.unwrap();
}
