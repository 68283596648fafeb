//! Core (live, non-durable) publish/subscribe.

use std::collections::BTreeSet;
use std::time::Duration;

use durabus::{Bus, Error};

use crate::{assert_err, assert_quiet, eventually, names, next_message, WAIT};

async fn subjects_received(sub: &mut durabus::Subscription, n: usize) -> Vec<String> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(next_message(sub).await.subject);
    }
    out
}

/// `*` matches exactly one token. Messages from one publisher arrive in
/// order, so the last matching message proves the skipped ones were not
/// delivered.
pub async fn star_matches_exactly_one_token(bus: &Bus) {
    let n = names("star");
    let mut sub = bus.subscribe(&n.subject("*")).await.unwrap();
    assert_eq!(sub.filter(), n.subject("*"));
    for s in ["a", "a.b", "b", "a.b.c", "c"] {
        bus.publish(n.subject(s), s).await.unwrap();
    }
    assert_eq!(
        subjects_received(&mut sub, 3).await,
        [n.subject("a"), n.subject("b"), n.subject("c")]
    );
    let mut mid = bus.subscribe(&n.subject("*.b")).await.unwrap();
    for s in ["a.b", "a.c", "x.b", "b"] {
        bus.publish(n.subject(s), s).await.unwrap();
    }
    assert_eq!(
        subjects_received(&mut mid, 2).await,
        [n.subject("a.b"), n.subject("x.b")]
    );
}

/// `>` matches one or more trailing tokens, never zero.
pub async fn gt_matches_one_or_more_tokens(bus: &Bus) {
    let n = names("gt");
    let mut sub = bus.subscribe(&n.subject("a.>")).await.unwrap();
    for s in ["a", "a.b", "b.c", "a.b.c.d", "ab.c", "a.z"] {
        bus.publish(n.subject(s), s).await.unwrap();
    }
    assert_eq!(
        subjects_received(&mut sub, 3).await,
        [n.subject("a.b"), n.subject("a.b.c.d"), n.subject("a.z")]
    );
}

/// One publisher's messages reach a subscriber in publish order.
pub async fn subscriber_receives_messages_in_publish_order(bus: &Bus) {
    let n = names("order");
    let mut sub = bus.subscribe(&n.all()).await.unwrap();
    for i in 0..200 {
        bus.publish(n.subject("x"), i.to_string()).await.unwrap();
    }
    for i in 0..200 {
        let m = next_message(&mut sub).await;
        assert_eq!(String::from_utf8_lossy(&m.payload), i.to_string());
    }
}

/// Core subscriptions are live only: nothing published before them.
///
/// Checks invariant 31 (docs/design.md) on the hub.
pub async fn subscription_receives_only_messages_published_after_it(bus: &Bus) {
    let n = names("live_only");
    bus.publish(n.subject("x"), "before").await.unwrap();
    let mut sub = bus.subscribe(&n.all()).await.unwrap();
    bus.publish(n.subject("x"), "after").await.unwrap();
    assert_eq!(&next_message(&mut sub).await.payload[..], b"after");
}

/// Plain subscribers each receive every message.
pub async fn every_subscriber_receives_each_message(bus: &Bus) {
    let n = names("fanout");
    let mut s1 = bus.subscribe(&n.all()).await.unwrap();
    let mut s2 = bus.subscribe(&n.subject("x")).await.unwrap();
    for i in 0..10 {
        bus.publish(n.subject("x"), i.to_string()).await.unwrap();
    }
    for sub in [&mut s1, &mut s2] {
        for i in 0..10 {
            assert_eq!(
                String::from_utf8_lossy(&next_message(sub).await.payload),
                i.to_string()
            );
        }
    }
}

/// A queue group shares messages: each goes to exactly one member, while
/// a plain subscriber still sees all of them.
pub async fn queue_group_delivers_each_message_to_exactly_one_member(bus: &Bus) {
    const N: usize = 40;
    let n = names("queue");
    let filter = n.subject("work");
    let mut m1 = bus.queue_subscribe(&filter, "workers").await.unwrap();
    let mut m2 = bus.queue_subscribe(&filter, "workers").await.unwrap();
    let mut plain = bus.subscribe(&filter).await.unwrap();
    for i in 0..N {
        bus.publish(filter.clone(), i.to_string()).await.unwrap();
    }
    let mut seen = Vec::new();
    let collect = async {
        while seen.len() < N {
            let m = tokio::select! {
                Some(m) = m1.next() => m,
                Some(m) = m2.next() => m,
                else => panic!("both queue members' subscriptions ended"),
            };
            seen.push(String::from_utf8_lossy(&m.payload).into_owned());
        }
    };
    tokio::time::timeout(WAIT, collect)
        .await
        .unwrap_or_else(|_| panic!("queue group delivered fewer than {N} messages"));
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), N, "a message reached two members: {seen:?}");
    assert_quiet(&mut m1).await;
    assert_quiet(&mut m2).await;
    for _ in 0..N {
        next_message(&mut plain).await;
    }
}

/// Dropping a subscription stops delivery: a request to its subject then
/// finds no responders.
pub async fn dropping_a_subscription_unsubscribes(bus: &Bus) {
    let n = names("unsub");
    let subject = n.subject("svc");
    let sub = bus.subscribe(&subject).await.unwrap();
    drop(sub);
    eventually(
        "request after unsubscribe finds no responders",
        WAIT,
        || async {
            matches!(
                bus.request(subject.clone(), "ping", Duration::from_millis(200))
                    .await,
                Err(Error::NoResponders { .. })
            )
        },
    )
    .await;
}

/// Malformed filters are refused naming the token.
pub async fn invalid_filter_names_the_token(bus: &Bus) {
    let n = names("bad_filter");
    let bad = format!("{}.>.x", n.root());
    assert_err!(
        bus.subscribe(&bad).await,
        Error::InvalidSubject { ref reason, .. } if reason.contains("token 2")
    );
    assert_err!(
        bus.subscribe(&format!("{}.a*", n.root())).await,
        Error::InvalidSubject { ref reason, .. } if reason.contains("token 2")
    );
    assert_err!(bus.subscribe("").await, Error::InvalidSubject { .. });
    assert_err!(
        bus.queue_subscribe(&format!("{}..x", n.root()), "q").await,
        Error::InvalidSubject { .. }
    );
}
