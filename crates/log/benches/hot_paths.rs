//! Criterion micro-benchmarks of the embedded engine's hot paths: record
//! encode/decode, subject matching against many subscriptions, index
//! lookup, ordered replay (W4's read path), and group commit under
//! `Durability::Always`.
//!
//! `cargo bench -p durabus-log --bench hot_paths` (add `-- <filter>` for one
//! group). The entry points of `durabus_log::bench` come with the feature
//! `internals`, which the crate's dev-dependency on itself enables.
//! Whole-system throughput is `durabus bench`'s job.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use durabus_core::{subject, Backend, HeaderMap, Message, ReplayOptions, StreamConfig};
use durabus_log::bench::{decode_message, encode_message, Index};
use durabus_log::{Durability, Options, Store};

const SUBJECT: &str = "orders.eu.created";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn record(c: &mut Criterion) {
    let mut g = c.benchmark_group("record");
    let payload = vec![7u8; 128];
    let headers = HeaderMap::new().with("Nats-Msg-Id", "order-000001");
    for (name, headers) in [("128B", HeaderMap::new()), ("128B+msgid", headers)] {
        let mut buf = Vec::with_capacity(512);
        let size = encode_message(&mut buf, 1, SUBJECT, &headers, &payload);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| encode_message(&mut buf, black_box(42), SUBJECT, &headers, &payload))
        });
        let encoded = buf.clone();
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| decode_message(black_box(&encoded)).unwrap())
        });
    }
    g.finish();
}

fn matching(c: &mut Criterion) {
    let mut g = c.benchmark_group("subject_match");
    for n in [10usize, 1000, 10_000] {
        // One in a hundred filters matches, as many tenants' wildcards would.
        let filters: Vec<String> = (0..n)
            .map(|i| match i % 100 {
                0 => "orders.*.created".to_owned(),
                1 => format!("orders.t{i}.>"),
                _ => format!("tenant{i}.*.events.>"),
            })
            .collect();
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(BenchmarkId::new("filters", n), |b| {
            b.iter(|| {
                filters
                    .iter()
                    .filter(|f| subject::matches(f, black_box(SUBJECT)))
                    .count()
            })
        });
    }
    g.finish();

    // Routing a core publish through the store's subscription table.
    let rt = rt();
    let mut g = c.benchmark_group("route_publish");
    for n in [0usize, 100, 10_000] {
        let store = Store::memory(Options::default()).unwrap();
        let subs: Vec<_> = rt.block_on(async {
            let mut subs = Vec::new();
            for i in 0..n {
                let filter = if i % 2 == 0 {
                    format!("tenant{i}.*.events.>")
                } else {
                    format!("tenant{i}.orders")
                };
                subs.push(store.subscribe(&filter, None).await.unwrap());
            }
            subs
        });
        g.bench_function(BenchmarkId::new("subscriptions", n), |b| {
            b.to_async(&rt).iter(|| async {
                store
                    .publish(Message::new(SUBJECT, Bytes::from_static(b"x")))
                    .await
                    .unwrap()
            })
        });
        drop(subs);
    }
    g.finish();
}

fn index(c: &mut Criterion) {
    let mut g = c.benchmark_group("index_seek");
    // A 64 MiB segment of 200-byte records.
    let idx = Index::new(64 * 1024 * 1024 / 200, 200);
    let mut seq = 1u64;
    g.bench_function(BenchmarkId::new("entries", idx.len()), |b| {
        b.iter(|| {
            seq = (seq * 7919) % 335_000 + 1;
            idx.seek(black_box(seq))
        })
    });
    g.finish();

    // Random reads by sequence from a stream of 200k messages in 1 MiB segments.
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default().segment_size(1 << 20)).unwrap();
    const N: u64 = 200_000;
    rt.block_on(async {
        store
            .create_stream(StreamConfig::new("S").subjects(["s.>"]))
            .await
            .unwrap();
        let batch: Vec<Message> = (0..N)
            .map(|i| Message::new(format!("s.{}", i % 100), vec![0u8; 128]))
            .collect();
        for chunk in batch.chunks(1000) {
            store.publish_batch(chunk.to_vec()).await.unwrap();
        }
    });
    let mut g = c.benchmark_group("get_message");
    let mut seq = 1u64;
    g.bench_function("random_of_200k", |b| {
        b.to_async(&rt).iter(|| {
            seq = (seq * 7919) % N + 1;
            let store = &store;
            async move { store.get_message("S", seq).await.unwrap() }
        })
    });
    g.finish();
}

/// A whole replay of 500k messages of 128 bytes from a file store (the OS
/// page cache holds them, as in W4).
fn replay(c: &mut Criterion) {
    const N: u64 = 500_000;
    let rt = rt();
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), Options::default()).unwrap();
    rt.block_on(async {
        store
            .create_stream(StreamConfig::new("S").subjects(["s.>"]))
            .await
            .unwrap();
        let batch: Vec<Message> = (0..1000)
            .map(|i| Message::new(format!("s.{}", i % 100), vec![0u8; 128]))
            .collect();
        for _ in 0..N / 1000 {
            store.publish_batch(batch.clone()).await.unwrap();
        }
    });
    let mut g = c.benchmark_group("replay");
    g.sample_size(10);
    g.throughput(Throughput::Elements(N));
    g.bench_function("messages_500k", |b| {
        b.to_async(&rt).iter(|| async {
            let mut r = store
                .replay("S", ReplayOptions::from_seq(1).stop_at_end())
                .await
                .unwrap();
            let mut n = 0u64;
            while let Some(m) = r.next().await {
                black_box(m.unwrap());
                n += 1;
            }
            assert_eq!(n, N);
        })
    });
    g.finish();
}

fn group_commit(c: &mut Criterion) {
    let rt = rt();
    let mut g = c.benchmark_group("group_commit");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(5));
    for publishers in [1usize, 64] {
        const PER: usize = 20;
        g.throughput(Throughput::Elements((publishers * PER) as u64));
        g.bench_function(BenchmarkId::new("publishers", publishers), |b| {
            b.iter_batched(
                || {
                    let dir = tempfile::tempdir().unwrap();
                    let opts = Options::default().durability(Durability::Always);
                    let store = Arc::new(Store::open(dir.path(), opts).unwrap());
                    rt.block_on(store.create_stream(StreamConfig::new("S").subjects(["s.>"])))
                        .unwrap();
                    (dir, store)
                },
                |(dir, store)| {
                    rt.block_on(async {
                        let tasks: Vec<_> = (0..publishers)
                            .map(|p| {
                                let store = store.clone();
                                tokio::spawn(async move {
                                    for i in 0..PER {
                                        let m = Message::new(format!("s.{p}"), format!("{i}"));
                                        store.publish(m).await.unwrap();
                                    }
                                })
                            })
                            .collect();
                        for t in tasks {
                            t.await.unwrap();
                        }
                    });
                    // Dropped (closed) outside the measurement.
                    (dir, store)
                },
                BatchSize::PerIteration,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, record, matching, index, replay, group_commit);
criterion_main!(benches);
