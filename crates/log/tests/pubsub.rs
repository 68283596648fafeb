//! Core pub/sub: wildcards, queue groups, slow consumers, request/reply.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use durabus_core::{Backend, Error, Event, Message, StreamConfig};
use durabus_log::{Options, Store};

async fn recv(sub: &mut durabus_core::Subscription) -> Message {
    tokio::time::timeout(Duration::from_secs(2), sub.next())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn subscribers_get_matching_messages_whether_or_not_a_stream_captures() {
    let s = Store::memory(opts()).unwrap();
    stream(&s, StreamConfig::new("S").subjects(["stored.>"])).await;
    let mut all = s.subscribe(">", None).await.unwrap();
    let mut star = s.subscribe("stored.*", None).await.unwrap();
    let mut lit = s.subscribe("plain", None).await.unwrap();
    assert!(s
        .publish(Message::new("stored.a", "1"))
        .await
        .unwrap()
        .is_some());
    assert!(s
        .publish(Message::new("plain", "2"))
        .await
        .unwrap()
        .is_none());
    assert_eq!(recv(&mut all).await.subject, "stored.a");
    assert_eq!(recv(&mut all).await.subject, "plain");
    assert_eq!(recv(&mut star).await.subject, "stored.a");
    assert_eq!(recv(&mut lit).await.subject, "plain");
    assert!(tokio::time::timeout(Duration::from_millis(50), star.next())
        .await
        .is_err());
}

#[tokio::test]
async fn queue_group_delivers_each_message_to_one_member_round_robin() {
    let s = Store::memory(opts()).unwrap();
    let mut a = s.subscribe("q.*", Some("workers")).await.unwrap();
    let mut b = s.subscribe("q.*", Some("workers")).await.unwrap();
    let mut plain = s.subscribe("q.*", None).await.unwrap();
    for i in 0..10 {
        s.publish(Message::new("q.x", format!("{i}")))
            .await
            .unwrap();
    }
    let mut na = 0;
    let mut nb = 0;
    while tokio::time::timeout(Duration::from_millis(30), a.next())
        .await
        .is_ok()
    {
        na += 1;
    }
    while tokio::time::timeout(Duration::from_millis(30), b.next())
        .await
        .is_ok()
    {
        nb += 1;
    }
    assert_eq!(na + nb, 10);
    assert_eq!((na, nb), (5, 5));
    for _ in 0..10 {
        recv(&mut plain).await;
    }
}

#[tokio::test]
async fn dropping_a_subscription_unsubscribes() {
    let s = Store::memory(opts()).unwrap();
    let a = s.subscribe("x", Some("g")).await.unwrap();
    let mut b = s.subscribe("x", Some("g")).await.unwrap();
    drop(a);
    for i in 0..4 {
        s.publish(Message::new("x", format!("{i}"))).await.unwrap();
    }
    for _ in 0..4 {
        recv(&mut b).await;
    }
}

/// Checks invariant 12 (docs/design.md).
#[tokio::test]
async fn slow_consumer_drops_counts_and_signals() {
    let s = Store::memory(opts().subscriber_buffer(4)).unwrap();
    let mut events = s.events().unwrap();
    let mut sub = s.subscribe("x", None).await.unwrap();
    for i in 0..10 {
        s.publish(Message::new("x", format!("{i}"))).await.unwrap();
    }
    assert_eq!(sub.dropped(), 6);
    match events.try_recv().unwrap() {
        Event::SlowConsumer { filter, dropped } => {
            assert_eq!(filter, "x");
            assert_eq!(dropped, 1);
        }
        other => panic!("{other:?}"),
    }
    // Rate-limited: one event for the burst.
    assert!(events.try_recv().is_err());
    for i in 0..4 {
        assert_eq!(&recv(&mut sub).await.payload[..], format!("{i}").as_bytes());
    }
}

#[tokio::test]
async fn request_reply_no_responders_and_timeout() {
    let s = Store::memory(opts()).unwrap();
    let err = s
        .request(Message::new("svc", "hi"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::NoResponders { ref subject } if subject == "svc"),
        "{err}"
    );
    let mut server = s.subscribe("svc", None).await.unwrap();
    let responder = s.clone();
    let task = tokio::spawn(async move {
        let req = server.next().await.unwrap();
        let reply = req.reply.clone().unwrap();
        assert!(reply.starts_with("_INBOX."));
        responder
            .publish(Message::new(
                reply,
                [b"re: ".as_slice(), &req.payload].concat(),
            ))
            .await
            .unwrap();
        server
    });
    let rep = s
        .request(Message::new("svc", "hi"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(&rep.payload[..], b"re: hi");
    let _server = task.await.unwrap();
    let err = s
        .request(Message::new("svc", "again"), Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout(_)), "{err}");
}

#[tokio::test]
async fn close_ends_subscriptions() {
    let s = Store::memory(Options::default()).unwrap();
    let mut sub = s.subscribe(">", None).await.unwrap();
    s.close().await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(1), sub.next())
        .await
        .unwrap()
        .is_none());
}

/// Regression: a dropped subscription stayed in the routing table until a
/// message reached it, so every finished request leaked its inbox entry and
/// kept routing on the slow path.
#[tokio::test]
async fn dropped_subscriptions_and_finished_requests_leave_no_routing_entries() {
    let s = Store::memory(Options::default()).unwrap();
    let mut responder = s.subscribe("svc.echo", None).await.unwrap();
    let echo = s.clone();
    let task = tokio::spawn(async move {
        while let Some(m) = responder.next().await {
            let reply = m.reply.clone().unwrap();
            echo.publish(Message::new(reply, m.payload)).await.unwrap();
        }
    });
    for i in 0..50 {
        let r = s
            .request(
                Message::new("svc.echo", format!("{i}")),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        assert_eq!(r.payload, format!("{i}").into_bytes());
    }
    {
        let _a = s.subscribe("x.*", None).await.unwrap();
        let _b = s.subscribe("x.y", Some("q")).await.unwrap();
        assert_eq!(s.subscription_count(), 3);
    }
    // Only the responder is left.
    assert_eq!(s.subscription_count(), 1);
    task.abort();
}

/// Regression: a publish that needs no fsync never yielded, so a tight
/// publish loop starved every other task on its worker (a racing `close`
/// hung until the loop ended).
#[tokio::test(flavor = "current_thread")]
async fn a_tight_publish_loop_lets_other_tasks_run() {
    let s = Store::memory(Options::default()).unwrap();
    stream(&s, StreamConfig::new("S").subjects(["s"])).await;
    let ran = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = ran.clone();
    tokio::spawn(async move { flag.store(true, std::sync::atomic::Ordering::SeqCst) });
    let mut published_before_it_ran = 0;
    for _ in 0..10_000 {
        s.publish(Message::new("s", "x")).await.unwrap();
        if ran.load(std::sync::atomic::Ordering::SeqCst) {
            break;
        }
        published_before_it_ran += 1;
    }
    assert!(
        published_before_it_ran < 10_000,
        "the spawned task never ran during 10000 publishes"
    );
}
