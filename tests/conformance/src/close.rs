//! Closing a connection.

use std::time::Duration;

use durabus::{Bus, ConnectionStatus, Error, PurgeRequest, ReplayOptions, StreamConfig};

use crate::{assert_err, create, names, next_stored, publish_n, WAIT};

/// close may be called any number of times; only the first does work.
pub async fn close_is_idempotent(bus: &Bus) {
    assert_eq!(bus.status(), ConnectionStatus::Connected);
    bus.close().await.unwrap();
    bus.close().await.unwrap();
    bus.close().await.unwrap();
    assert_eq!(bus.status(), ConnectionStatus::Closed);
}

/// After close every operation fails with Closed.
pub async fn every_call_after_close_returns_closed(bus: &Bus) {
    let n = names("closed");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    bus.close().await.unwrap();
    let s = cfg.name.as_str();
    assert_err!(bus.create_stream(cfg.clone()).await, Error::Closed);
    assert_err!(bus.update_stream(cfg.clone()).await, Error::Closed);
    assert_err!(bus.stream_info(s).await, Error::Closed);
    assert_err!(bus.list_streams().await, Error::Closed);
    assert_err!(
        bus.purge_stream(s, PurgeRequest::default()).await,
        Error::Closed
    );
    assert_err!(bus.publish(n.subject("a"), "x").await, Error::Closed);
    assert_err!(
        bus.publish(format!("{}_uncaptured.x", n.root()), "x").await,
        Error::Closed
    );
    assert_err!(
        bus.publish_batch(vec![durabus::Message::new(n.subject("a"), "x")])
            .await,
        Error::Closed
    );
    assert_err!(bus.subscribe(&n.all()).await, Error::Closed);
    assert_err!(bus.queue_subscribe(&n.all(), "q").await, Error::Closed);
    assert_err!(
        bus.request(n.subject("a"), "x", Duration::from_millis(100))
            .await,
        Error::Closed
    );
    assert_err!(bus.get_message(s, 1).await, Error::Closed);
    assert_err!(
        bus.get_last_message(s, &n.subject("a")).await,
        Error::Closed
    );
    assert_err!(bus.delete_message(s, 1).await, Error::Closed);
    assert_err!(
        bus.replay(s, ReplayOptions::from_seq(1)).await,
        Error::Closed
    );
    assert_err!(bus.delete_stream(s).await, Error::Closed);
    assert_err!(
        bus.create_stream(StreamConfig::new(n.stream("NEW"))).await,
        Error::Closed
    );
    assert_eq!(bus.status(), ConnectionStatus::Closed);
}

/// Clones share one connection: closing one closes all.
pub async fn close_through_a_clone_closes_every_clone(bus: &Bus) {
    let clone = bus.clone();
    clone.close().await.unwrap();
    assert_err!(bus.list_streams().await, Error::Closed);
    assert_eq!(bus.status(), ConnectionStatus::Closed);
}

/// Open subscriptions and live replays end (yield None) on close instead
/// of hanging.
pub async fn close_ends_open_subscriptions_and_replays(bus: &Bus) {
    let n = names("close_ends");
    let cfg = n.stream_config("S");
    create(bus, cfg.clone()).await;
    publish_n(bus, &n.subject("a"), 1).await;
    let mut sub = bus.subscribe(&n.all()).await.unwrap();
    let mut replay = bus
        .replay(&cfg.name, ReplayOptions::from_seq(1))
        .await
        .unwrap();
    assert_eq!(next_stored(&mut replay).await.seq, 1);
    bus.close().await.unwrap();
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(None) => {}
        Ok(Some(m)) => panic!("subscription yielded {m:?} after close"),
        Err(_) => panic!("subscription still open {WAIT:?} after close"),
    }
    match tokio::time::timeout(WAIT, replay.next()).await {
        Ok(None) | Ok(Some(Err(Error::Closed))) => {}
        Ok(Some(other)) => panic!("replay yielded {other:?} after close"),
        Err(_) => panic!("replay still open {WAIT:?} after close"),
    }
}
