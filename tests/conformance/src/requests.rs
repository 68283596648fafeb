//! Request/reply written once over the core primitives: retries, responders
//! (queue groups, error replies, graceful shutdown) and request_many.

use std::sync::Arc;
use std::time::Duration;

use durabus::{Bus, Error, Message, ReplyError, RequestManyOptions, RequestOptions, Responder};
use tokio::sync::Notify;

use crate::{assert_err, eventually, names, WAIT};

/// Options that retry quickly and often: a case never waits long for one.
fn patient() -> RequestOptions {
    RequestOptions::new()
        .timeout(WAIT)
        .retries(100)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
}

/// A responder answering `<tag>:<payload>`, in `group` if given.
async fn tagged(bus: &Bus, subject: &str, group: Option<&str>, tag: &'static str) -> Responder {
    bus.respond(subject, group, move |m: Message| async move {
        let mut body = format!("{tag}:").into_bytes();
        body.extend_from_slice(&m.payload);
        Ok::<_, ReplyError>(body)
    })
    .await
    .unwrap()
}

/// A request made before any responder exists is retried until one starts,
/// and then answered.
pub async fn retried_request_succeeds_when_a_responder_appears_late(bus: &Bus) {
    let n = names("late_responder");
    let subject = n.subject("svc");
    let requester = {
        let (bus, subject) = (bus.clone(), subject.clone());
        tokio::spawn(async move {
            bus.request_with(Message::new(subject, "hello"), patient())
                .await
        })
    };
    // Setup, not an assertion: let the first attempts find nobody.
    tokio::time::sleep(Duration::from_millis(150)).await;
    let responder = tagged(bus, &subject, None, "late").await;
    let reply = tokio::time::timeout(WAIT, requester)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&reply.payload[..], b"late:hello");
    let stats = responder.shutdown().await.unwrap();
    assert_eq!(stats.replied, 1, "{stats:?}");
}

/// With nobody answering, the last attempt's NoResponders is returned once
/// the retries are used up (and a timeout-only policy does not retry it).
pub async fn no_responders_after_the_retries_are_used_up(bus: &Bus) {
    let n = names("no_responders_retry");
    let subject = n.subject("nobody");
    let options = RequestOptions::new()
        .timeout(WAIT)
        .retries(3)
        .backoff(Duration::from_millis(5), Duration::from_millis(10));
    assert_err!(
        bus.request_with(Message::new(subject.clone(), "x"), options.clone()).await,
        Error::NoResponders { subject: ref got } if *got == subject
    );
    assert_err!(
        bus.request_with(
            Message::new(subject.clone(), "x"),
            options.retry_on(durabus::RetryOn::Timeout)
        )
        .await,
        Error::NoResponders { .. }
    );
}

/// A handler's error reaches the requester as ServiceError with its code
/// and message (NATS micro headers on the wire); successes still pass, and
/// the request headers reach the handler.
pub async fn service_errors_arrive_typed_with_code_and_message(bus: &Bus) {
    let n = names("service_error");
    let subject = n.subject("orders");
    let responder = bus
        .respond(&subject, None, |m: Message| async move {
            if m.headers.get("Tenant") != Some("acme") {
                return Err(ReplyError::new(403, "unknown tenant"));
            }
            if &m.payload[..] == b"bad" {
                return Err(ReplyError::new(422, "order has no lines"));
            }
            Ok(m.payload)
        })
        .await
        .unwrap();
    let ask = |payload: &'static str, tenant: &'static str| {
        Message::new(subject.clone(), payload).with_header("Tenant", tenant)
    };
    assert_err!(
        bus.request_with(ask("bad", "acme"), RequestOptions::new().timeout(WAIT)).await,
        Error::ServiceError { ref subject, code: 422, ref message }
            if *subject == n.subject("orders") && message == "order has no lines"
    );
    assert_err!(
        bus.request(subject.clone(), "good", WAIT).await,
        Error::ServiceError { code: 403, .. }
    );
    let ok = bus
        .request_with(ask("good", "acme"), RequestOptions::new().timeout(WAIT))
        .await
        .unwrap();
    assert_eq!(&ok.payload[..], b"good");
    let raw = bus
        .request_many(
            ask("bad", "acme"),
            RequestManyOptions::new().timeout(WAIT).max_replies(1),
        )
        .await
        .unwrap();
    assert!(
        matches!(raw[..], [Err(Error::ServiceError { code: 422, .. })]),
        "{raw:?}"
    );
    let stats = responder.shutdown().await.unwrap();
    assert_eq!((stats.replied, stats.errors), (1, 3), "{stats:?}");
}

/// A message without a reply subject cannot be answered: the responder
/// skips it, counts it, and goes on answering requests.
pub async fn responders_skip_messages_without_a_reply_subject(bus: &Bus) {
    let n = names("skip_no_reply");
    let subject = n.subject("svc");
    let responder = tagged(bus, &subject, None, "r").await;
    bus.publish(subject.clone(), "fire and forget")
        .await
        .unwrap();
    let reply = bus.request(subject.clone(), "q", WAIT).await.unwrap();
    assert_eq!(&reply.payload[..], b"r:q");
    eventually("the plain message is counted as skipped", WAIT, || async {
        responder.stats().skipped == 1
    })
    .await;
    let stats = responder.shutdown().await.unwrap();
    assert_eq!((stats.received, stats.replied), (1, 1), "{stats:?}");
}

/// request_many gathers one reply from each of several responders, and
/// stops at the count, at a stall after the last reply, or at the timeout.
pub async fn request_many_collects_from_several_responders_and_stops_at_count_or_timeout(
    bus: &Bus,
) {
    let n = names("request_many");
    let subject = n.subject("census");
    let responders = vec![
        tagged(bus, &subject, None, "a").await,
        tagged(bus, &subject, None, "b").await,
        tagged(bus, &subject, None, "c").await,
    ];
    let payloads = |replies: Vec<durabus::Result<Message>>| {
        let mut v: Vec<String> = replies
            .into_iter()
            .map(|r| String::from_utf8_lossy(&r.unwrap().payload).into_owned())
            .collect();
        v.sort();
        v
    };
    // Count: all three, without waiting for the (long) timeout.
    let all = tokio::time::timeout(
        WAIT,
        bus.request_many(
            Message::new(subject.clone(), "x"),
            RequestManyOptions::new().timeout(3 * WAIT).max_replies(3),
        ),
    )
    .await
    .expect("request_many did not stop at its max count")
    .unwrap();
    assert_eq!(payloads(all), ["a:x", "b:x", "c:x"]);
    // A smaller count stops early.
    let two = bus
        .request_many(
            Message::new(subject.clone(), "y"),
            RequestManyOptions::new().timeout(WAIT).max_replies(2),
        )
        .await
        .unwrap();
    assert_eq!(two.len(), 2, "{two:?}");
    // Timeout: everything that came in time.
    let timed = bus
        .request_many(
            Message::new(subject.clone(), "z"),
            RequestManyOptions::new().timeout(Duration::from_millis(500)),
        )
        .await
        .unwrap();
    assert_eq!(payloads(timed), ["a:z", "b:z", "c:z"]);
    // Stall: stops after the replies stop, long before its timeout.
    let stalled = tokio::time::timeout(
        WAIT,
        bus.request_many(
            Message::new(subject.clone(), "s"),
            RequestManyOptions::new()
                .timeout(3 * WAIT)
                .stall(Duration::from_millis(300)),
        ),
    )
    .await
    .expect("request_many did not stop at the stall")
    .unwrap();
    assert!(!stalled.is_empty());
    // Nobody there: no replies, not an error.
    let none = bus
        .request_many(
            Message::new(n.subject("nobody"), "?"),
            RequestManyOptions::new().timeout(Duration::from_millis(200)),
        )
        .await
        .unwrap();
    assert!(none.is_empty(), "{none:?}");
    for r in responders {
        r.shutdown().await.unwrap();
    }
}

/// Responders in one queue group share the requests: each request is
/// handled by exactly one member, and more than one member works.
pub async fn queue_group_responders_answer_each_request_once(bus: &Bus) {
    const N: u64 = 30;
    let n = names("queue_responders");
    let subject = n.subject("work");
    let group = Some("workers");
    let members = vec![
        tagged(bus, &subject, group, "a").await,
        tagged(bus, &subject, group, "b").await,
        tagged(bus, &subject, group, "c").await,
    ];
    for i in 0..N {
        let reply = bus
            .request(subject.clone(), i.to_string(), WAIT)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&reply.payload).into_owned();
        assert!(body.ends_with(&format!(":{i}")), "{body}");
    }
    let mut received = Vec::new();
    for m in members {
        received.push(m.shutdown().await.unwrap().received);
    }
    assert_eq!(received.iter().sum::<u64>(), N, "{received:?}");
    assert!(
        received.iter().filter(|r| **r > 0).count() >= 2,
        "one member took every request: {received:?}"
    );
}

/// Shutdown stops taking requests but lets a handler in flight finish and
/// send its reply.
pub async fn responder_shutdown_finishes_requests_in_flight(bus: &Bus) {
    let n = names("responder_shutdown");
    let subject = n.subject("slow");
    let release = Arc::new(Notify::new());
    let gate = release.clone();
    let responder = bus
        .respond(&subject, None, move |m: Message| {
            let gate = gate.clone();
            async move {
                gate.notified().await;
                Ok::<_, ReplyError>(m.payload)
            }
        })
        .await
        .unwrap();
    let requester = {
        let (bus, subject) = (bus.clone(), subject.clone());
        tokio::spawn(async move { bus.request(subject, "in flight", WAIT).await })
    };
    eventually("the request reaches the handler", WAIT, || async {
        responder.stats().received == 1
    })
    .await;
    let stopping = tokio::spawn(responder.shutdown());
    release.notify_one();
    let reply = tokio::time::timeout(WAIT, requester)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(&reply.payload[..], b"in flight");
    let stats = tokio::time::timeout(WAIT, stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(stats.replied, 1, "{stats:?}");
    // Stopped: nobody answers any more.
    assert_err!(
        bus.request(subject, "late", Duration::from_millis(300))
            .await,
        Error::NoResponders { .. } | Error::Timeout(_)
    );
}
