//! R13: the NATS backend under a real nats-server that is SIGKILLed and
//! restarted, or hung with SIGSTOP, while the application keeps working.
//!
//! What must hold: no acknowledged publish is lost; a publish that was not
//! acknowledged returns an error (never `Ok(None)`, never a silent drop);
//! the circuit breaker opens and closes again; a replay resumes after a
//! reconnect without gaps or repeats; a replicas-3 stream keeps accepting
//! publishes with one node of three killed.
//!
//! `DURABUS_NATS_CHAOS_TRIALS` sets the kills per run (default 3; the soak
//! runs more).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use durabus::{
    Bus, ConnectOptions, ConnectionStatus, Error, Message, ReplayOptions, StorageType, StreamConfig,
};
use durabus_testkit::nats::{NatsCluster, NatsServer};
use rand::Rng as _;

fn trials() -> usize {
    std::env::var("DURABUS_NATS_CHAOS_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
}

/// Short timeouts and quick reconnects, so a kill costs seconds, not minutes.
fn options() -> ConnectOptions {
    ConnectOptions::new()
        .request_timeout(Duration::from_millis(1500))
        .reconnect_wait(Duration::from_millis(50), Duration::from_millis(400))
        .connect_timeout(Duration::from_secs(2))
}

/// Publishes until `stop`, recording each acked msg id with its seq and
/// each error's kind. A failed publish is retried with the same msg id, so
/// it ends stored exactly once or reported.
#[derive(Default)]
struct Ledger {
    acked: BTreeMap<String, u64>,
    errors: Vec<String>,
}

async fn publisher(bus: Bus, task: usize, stop: Arc<AtomicBool>, ledger: Arc<Mutex<Ledger>>) {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let id = format!("t{task}-{i}");
        let m = Message::new(format!("chaos.t{task}"), id.clone()).with_msg_id(id.clone());
        match bus.publish_message(m).await {
            Ok(Some(ack)) => {
                let mut l = ledger.lock().unwrap();
                if let Some(prev) = l.acked.insert(id.clone(), ack.seq) {
                    assert_eq!(prev, ack.seq, "{id} acked at two seqs");
                }
                i += 1;
            }
            Ok(None) => panic!("{id}: a captured publish answered Ok(None): a silent drop"),
            Err(e) => {
                let kind = match &e {
                    Error::AckUnknown { .. } => "ack-unknown",
                    Error::Timeout(_) => "timeout",
                    Error::CircuitOpen { .. } => "circuit-open",
                    Error::Unreachable { .. } => "unreachable",
                    Error::Unavailable { .. } => "unavailable",
                    Error::JetStreamNotEnabled => "jetstream-starting",
                    other => panic!("{id}: unexpected error under chaos: {other}"),
                };
                ledger.lock().unwrap().errors.push(kind.to_owned());
                // Retry the same id: dedup keeps one copy if it was stored.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !f().await {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Checks invariant 15 (docs/design.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_publishes_survive_server_kill9_and_unacked_ones_are_errors() {
    let server = NatsServer::builder().start().unwrap();
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let seen = statuses.clone();
    let bus = options()
        .on_health_change(move |s| seen.lock().unwrap().push(s))
        .connect(&server.url())
        .await
        .unwrap();
    bus.create_stream(
        StreamConfig::new("CHAOS")
            .subjects(["chaos.>"])
            .storage(StorageType::File),
    )
    .await
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let tasks: Vec<_> = (0..4)
        .map(|t| tokio::spawn(publisher(bus.clone(), t, stop.clone(), ledger.clone())))
        .collect();

    let mut rng = rand::rng();
    for _ in 0..trials() {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await;
        server.kill().unwrap();
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..1200))).await;
        server.restart().unwrap();
    }
    bus.wait_connected(Duration::from_secs(20)).await.unwrap();
    // Let every publisher get at least one more ack after the last restart.
    let after = ledger.lock().unwrap().acked.len();
    eventually("publishing resumes", Duration::from_secs(20), || {
        let n = ledger.lock().unwrap().acked.len();
        async move { n >= after + 20 }
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }

    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(
        ledger.acked.len() > 100,
        "too little traffic to mean anything"
    );
    let mut stored: HashMap<String, Vec<u64>> = HashMap::new();
    let mut replay = bus
        .replay("CHAOS", ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    while let Some(m) = replay.next().await {
        let m = m.unwrap();
        let id = String::from_utf8(m.payload.to_vec()).unwrap();
        stored.entry(id).or_default().push(m.seq);
    }
    for (id, seq) in &ledger.acked {
        assert_eq!(
            stored.get(id).map(Vec::as_slice),
            Some(&[*seq][..]),
            "acked {id} at seq {seq} is not stored exactly once there"
        );
    }
    let dups: Vec<_> = stored.iter().filter(|(_, s)| s.len() > 1).collect();
    assert!(dups.is_empty(), "stored twice despite the msg id: {dups:?}");
    assert!(
        !ledger.errors.is_empty(),
        "kills produced no errors: the test did not bite"
    );
    eprintln!(
        "chaos: {} kills, {} acked, {} errors ({:?}), stats {:?}",
        trials(),
        ledger.acked.len(),
        ledger.errors.len(),
        count(&ledger.errors),
        bus.stats()
    );
    assert_eq!(bus.status(), ConnectionStatus::Connected);
    let stats = bus.stats().unwrap();
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert!(
        statuses
            .lock()
            .unwrap()
            .contains(&ConnectionStatus::Reconnecting),
        "{statuses:?}"
    );
    bus.close().await.unwrap();
}

/// Calls `f` until it succeeds or fails with something other than a
/// connection failure (within 30 s).
async fn retry<T, F, Fut>(mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = durabus::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match f().await {
            Ok(v) => return v,
            Err(e) if e.is_connection_failure() || matches!(e, Error::CircuitOpen { .. }) => {
                assert!(Instant::now() < deadline, "still failing: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
}

fn count(kinds: &[String]) -> BTreeMap<&str, usize> {
    let mut m = BTreeMap::new();
    for k in kinds {
        *m.entry(k.as_str()).or_default() += 1;
    }
    m
}

/// Checks invariant 16 (docs/design.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_breaker_opens_while_the_server_hangs_fails_fast_and_closes_after() {
    let server = NatsServer::builder().start().unwrap();
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let seen = statuses.clone();
    let bus = options()
        .request_timeout(Duration::from_millis(300))
        .on_health_change(move |s| seen.lock().unwrap().push(s))
        .connect(&server.url())
        .await
        .unwrap();
    bus.create_stream(StreamConfig::new("HANG").subjects(["hang.>"]))
        .await
        .unwrap();
    bus.publish("hang.a", "before").await.unwrap().unwrap();

    server.stop().unwrap();
    let mut kinds = Vec::new();
    for _ in 0..5 {
        let e = bus.publish("hang.a", "during").await.unwrap_err();
        assert!(e.is_connection_failure(), "{e}");
        kinds.push(e);
    }
    assert_eq!(bus.status(), ConnectionStatus::CircuitOpen);
    let start = Instant::now();
    let e = bus.publish("hang.a", "fast").await.unwrap_err();
    assert!(matches!(e, Error::CircuitOpen { .. }), "{e}");
    assert!(
        start.elapsed() < Duration::from_millis(50),
        "not fast: {:?}",
        start.elapsed()
    );
    let r = bus.readiness(Duration::from_millis(200)).await;
    assert!(!r.ready);
    assert_eq!(r.http_status(), 503);

    server.resume().unwrap();
    // The probe after the backoff (1 s, then 2 s, ...) closes the circuit.
    eventually("the circuit closes", Duration::from_secs(15), || {
        let s = bus.status();
        async move { s == ConnectionStatus::Connected }
    })
    .await;
    let ack = bus.publish("hang.a", "after").await.unwrap().unwrap();
    assert!(ack.seq >= 2);
    let stats = bus.stats().unwrap();
    assert!(stats.circuit_opens >= 1 && stats.rtt.is_some(), "{stats:?}");
    let st = statuses.lock().unwrap().clone();
    let open = st.iter().position(|s| *s == ConnectionStatus::CircuitOpen);
    let closed = st.iter().rposition(|s| *s == ConnectionStatus::Connected);
    assert!(open.is_some() && closed > open, "{st:?}");
    assert!(bus.readiness(Duration::from_secs(1)).await.ready);
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_resumes_after_a_server_restart_without_gaps_or_repeats() {
    let server = NatsServer::builder().start().unwrap();
    let bus = options().connect(&server.url()).await.unwrap();
    bus.create_stream(StreamConfig::new("RESUME").subjects(["resume.>"]))
        .await
        .unwrap();
    for i in 0..100 {
        bus.publish("resume.a", format!("{i}")).await.unwrap();
    }
    let mut replay = bus
        .replay("RESUME", ReplayOptions::from_seq(1))
        .await
        .unwrap();
    let mut seqs = Vec::new();
    for _ in 0..50 {
        seqs.push(replay.next().await.unwrap().unwrap().seq);
    }
    server.kill().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    server.restart().unwrap();
    bus.wait_connected(Duration::from_secs(20)).await.unwrap();
    let mut published = 0;
    while published < 100 {
        match bus.publish("resume.a", format!("late {published}")).await {
            Ok(Some(_)) => published += 1,
            Ok(None) => panic!("captured publish not stored"),
            Err(e) if e.is_connection_failure() || matches!(e, Error::CircuitOpen { .. }) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let started = Instant::now();
    while seqs.len() < 200 {
        let next = tokio::time::timeout(Duration::from_secs(20), replay.next())
            .await
            .expect("the replay resumed");
        seqs.push(next.unwrap().unwrap().seq);
    }
    assert_eq!(seqs, (1..=200).collect::<Vec<u64>>());
    eprintln!("replay resumed and caught up in {:?}", started.elapsed());
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas3_stream_keeps_working_with_one_node_of_three_killed() {
    let cluster = NatsCluster::start(3).unwrap();
    let bus = options().connect(&cluster.urls()).await.unwrap();
    let config = StreamConfig::new("R3")
        .subjects(["r3.>"])
        .replicas(3)
        .storage(StorageType::File);
    retry(|| bus.create_stream(config.clone())).await;
    let publish = |i: usize| {
        let bus = bus.clone();
        async move {
            let id = format!("m{i}");
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let m = Message::new("r3.a", id.clone()).with_msg_id(id.clone());
                match bus.publish_message(m).await {
                    Ok(Some(ack)) => return ack.seq,
                    Ok(None) => panic!("captured publish not stored"),
                    Err(e) => {
                        assert!(Instant::now() < deadline, "{id} never stored: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    };
    for i in 0..50 {
        publish(i).await;
    }
    let victim = cluster.node(0).unwrap();
    victim.kill().unwrap();
    for i in 50..150 {
        publish(i).await;
    }
    victim.restart().unwrap();
    for i in 150..200 {
        publish(i).await;
    }
    // A node rejoining can hold up API calls for a moment (leader
    // elections): retried as an application would.
    let info = retry(|| bus.stream_info("R3")).await;
    assert_eq!(info.config.replicas, 3);
    assert_eq!(info.state.messages, 200, "{:?}", info.state);
    let mut replay = retry(|| bus.replay("R3", ReplayOptions::from_seq(1).stop_at_end())).await;
    let mut n = 0;
    while let Some(m) = replay.next().await {
        m.unwrap();
        n += 1;
    }
    assert_eq!(n, 200);
    bus.close().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_max_reconnects_the_connection_is_given_up_with_a_clear_error() {
    let server = NatsServer::builder().start().unwrap();
    let bus = options()
        .max_reconnects(Some(8))
        .connect(&server.url())
        .await
        .unwrap();
    server.kill().unwrap();
    eventually(
        "the connection is given up",
        Duration::from_secs(20),
        || {
            let s = bus.status();
            async move { s == ConnectionStatus::Closed }
        },
    )
    .await;
    let e = bus.publish("gone.a", "x").await.unwrap_err();
    assert!(
        matches!(e, Error::Unreachable { ref reason, .. } if reason.contains("reconnect limit")),
        "{e}"
    );
    let stats = bus.stats().unwrap();
    assert!(
        stats.circuit_opens >= 1,
        "8 failed attempts open the circuit: {stats:?}"
    );
    // Restarting the server does not bring a given-up connection back.
    server.restart().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(bus.status(), ConnectionStatus::Closed);
    bus.close().await.unwrap();
}
