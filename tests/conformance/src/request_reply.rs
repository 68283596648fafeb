//! Request/reply over core subjects.

use std::time::{Duration, Instant};

use durabus::{Bus, Error};

use crate::{assert_err, names, WAIT};

/// A request reaches a responder, which answers on the reply subject.
pub async fn request_receives_the_responders_reply(bus: &Bus) {
    let n = names("request");
    let subject = n.subject("echo");
    let mut sub = bus.subscribe(&subject).await.unwrap();
    let responder = bus.clone();
    let task = tokio::spawn(async move {
        for _ in 0..3 {
            let Some(m) = sub.next().await else { return };
            let reply = m.reply.clone().expect("request carries a reply subject");
            let mut body = b"re:".to_vec();
            body.extend_from_slice(&m.payload);
            responder.publish(reply, body).await.unwrap();
        }
    });
    for i in 0..3 {
        let answer = bus
            .request(subject.clone(), format!("q{i}"), WAIT)
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&answer.payload), format!("re:q{i}"));
    }
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}

/// Nobody subscribed: the request fails fast with NoResponders rather
/// than waiting for its timeout.
pub async fn request_without_responders_is_no_responders(bus: &Bus) {
    let n = names("no_responders");
    let subject = n.subject("nobody");
    let start = Instant::now();
    assert_err!(
        bus.request(subject.clone(), "ping", WAIT).await,
        Error::NoResponders { subject: ref got } if *got == subject
    );
    assert!(
        start.elapsed() < WAIT / 2,
        "NoResponders took {:?}",
        start.elapsed()
    );
}

/// A responder that never answers makes the request time out after
/// about its timeout.
pub async fn request_to_a_silent_responder_times_out(bus: &Bus) {
    let n = names("silent");
    let subject = n.subject("silent");
    let _sub = bus.subscribe(&subject).await.unwrap();
    let limit = Duration::from_millis(300);
    let start = Instant::now();
    assert_err!(bus.request(subject, "ping", limit).await, Error::Timeout(_));
    let took = start.elapsed();
    assert!(
        took >= limit - Duration::from_millis(50),
        "timed out early: {took:?}"
    );
    assert!(took < WAIT, "timed out late: {took:?}");
}

/// A request to a malformed subject is refused before anything is sent.
pub async fn request_to_invalid_subject_is_invalid_subject(bus: &Bus) {
    let n = names("bad_request");
    assert_err!(
        bus.request(n.subject("*"), "x", WAIT).await,
        Error::InvalidSubject { .. }
    );
}

/// Replies go to the request that asked: many requests in flight at once
/// each get the answer to their own question.
pub async fn concurrent_requests_each_get_their_own_reply(bus: &Bus) {
    const N: usize = 20;
    let n = names("requests");
    let subject = n.subject("double");
    let mut sub = bus.subscribe(&subject).await.unwrap();
    let responder = bus.clone();
    let task = tokio::spawn(async move {
        for _ in 0..N {
            let Some(m) = sub.next().await else { return };
            let x: u64 = String::from_utf8_lossy(&m.payload).parse().unwrap();
            let reply = m.reply.clone().expect("reply subject");
            responder.publish(reply, (2 * x).to_string()).await.unwrap();
        }
    });
    let mut requests = Vec::new();
    for i in 0..N as u64 {
        let bus = bus.clone();
        let subject = subject.clone();
        requests.push(tokio::spawn(async move {
            let answer = bus.request(subject, i.to_string(), WAIT).await.unwrap();
            (i, String::from_utf8_lossy(&answer.payload).into_owned())
        }));
    }
    for r in requests {
        let (i, answer) = r.await.unwrap();
        assert_eq!(
            answer,
            (2 * i).to_string(),
            "request {i} got another request's reply"
        );
    }
    tokio::time::timeout(WAIT, task).await.unwrap().unwrap();
}
