//! Quick throughput check of the embedded engine (not a benchmark suite;
//! `durabus bench` is). Run: `cargo run -p durabus-log --release --example throughput`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

use durabus_core::{Backend, Message, ReplayOptions, StreamConfig};
use durabus_log::{Durability, Options, Store};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir =
        tempfile::tempdir_in(std::env::var("BENCH_DIR").unwrap_or_else(|_| ".".into())).unwrap();
    let payload = bytes::Bytes::from(vec![b'x'; 128]);

    // W1: publish, await each ack, Durability::None.
    let s = Store::open(
        dir.path().join("w1"),
        Options::default().durability(Durability::None),
    )
    .unwrap();
    s.create_stream(StreamConfig::new("S").subjects(["bench.>"]))
        .await
        .unwrap();
    let n = 1_000_000u64;
    let t = Instant::now();
    for _ in 0..n {
        s.publish(Message::new("bench.a", payload.clone()))
            .await
            .unwrap();
    }
    let w1 = n as f64 / t.elapsed().as_secs_f64();
    println!("W1 publish (None, await each)  {:>12.0} msg/s", w1);

    // W4: replay.
    let t = Instant::now();
    let mut r = s
        .replay("S", ReplayOptions::from_seq(1).stop_at_end())
        .await
        .unwrap();
    let mut k = 0u64;
    while let Some(m) = r.next().await {
        m.unwrap();
        k += 1;
    }
    assert_eq!(k, n);
    println!(
        "W4 replay                      {:>12.0} msg/s",
        k as f64 / t.elapsed().as_secs_f64()
    );
    s.close().await.unwrap();

    // W2: publish_batch.
    let seg = std::env::var("SEG")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64u64 << 20);
    let s = Store::open(
        dir.path().join("w2"),
        Options::default()
            .durability(Durability::None)
            .segment_size(seg),
    )
    .unwrap();
    s.create_stream(StreamConfig::new("S").subjects(["bench.>"]))
        .await
        .unwrap();
    let batch = 1000;
    let t = Instant::now();
    for _ in 0..(3 * n / batch) {
        let msgs: Vec<Message> = (0..batch)
            .map(|_| Message::new("bench.a", payload.clone()))
            .collect();
        s.publish_batch(msgs).await.unwrap();
    }
    println!(
        "W2 publish_batch (1000)        {:>12.0} msg/s",
        (3 * n) as f64 / t.elapsed().as_secs_f64()
    );
    s.close().await.unwrap();

    // W2 on memory storage: the CPU ceiling.
    let s = Store::memory(Options::default().durability(Durability::None)).unwrap();
    s.create_stream(StreamConfig::new("S").subjects(["bench.>"]))
        .await
        .unwrap();
    let t = Instant::now();
    for _ in 0..(3 * n / batch) {
        let msgs: Vec<Message> = (0..batch)
            .map(|_| Message::new("bench.a", payload.clone()))
            .collect();
        s.publish_batch(msgs).await.unwrap();
    }
    println!(
        "W2 publish_batch, memory:      {:>12.0} msg/s",
        (3 * n) as f64 / t.elapsed().as_secs_f64()
    );
    s.close().await.unwrap();

    // The disk's own rate: 128-byte append + fdatasync.
    {
        use std::io::Write;
        let mut f = std::fs::File::create(dir.path().join("raw")).unwrap();
        let t = Instant::now();
        for _ in 0..2000 {
            f.write_all(&payload).unwrap();
            f.sync_data().unwrap();
        }
        println!(
            "disk append+fdatasync          {:>12.0} /s",
            2000.0 / t.elapsed().as_secs_f64()
        );
    }

    // W3: Always, 1 publisher and 64 concurrent publishers.
    let s = Store::open(dir.path().join("w3"), Options::default()).unwrap();
    s.create_stream(StreamConfig::new("S").subjects(["bench.>"]))
        .await
        .unwrap();
    let m = 2000u64;
    let t = Instant::now();
    for _ in 0..m {
        s.publish(Message::new("bench.a", payload.clone()))
            .await
            .unwrap();
    }
    println!(
        "W3 Always, 1 publisher         {:>12.0} msg/s",
        m as f64 / t.elapsed().as_secs_f64()
    );
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..64 {
        let s = s.clone();
        let p = payload.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..(m / 8) {
                s.publish(Message::new("bench.a", p.clone())).await.unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "W3 Always, 64 publishers       {:>12.0} msg/s",
        (64 * m / 8) as f64 / t.elapsed().as_secs_f64()
    );
    s.close().await.unwrap();
}

#[allow(dead_code)]
async fn memory_batch() {}
