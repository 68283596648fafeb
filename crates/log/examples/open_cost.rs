//! What opening a store costs with many streams and consumers (issue #26).
//!
//! ```text
//! cargo run --release -p durabus-log --example open_cost -- build DIR STREAMS CONSUMERS
//! cargo run --release -p durabus-log --example open_cost -- measure DIR [ROUNDS [ro]]
//! ```
//!
//! `build` creates `STREAMS` streams (`S0`, `S1`, ... capturing `s0.>`,
//! `s1.>`, ...), publishes three messages to each, and spreads `CONSUMERS`
//! durable consumers over them (build on a tmpfs: every create fsyncs), a
//! thousand streams per open.
//! `measure` times, `ROUNDS` times each (median printed): a writable open
//! and close (not with `ro`), a read-only open, `list_streams` on it, and
//! its close.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use durabus_core::{Backend, ConsumerConfig, Message, StreamConfig};
use durabus_log::{Durability, Options, Store};

fn opts() -> Options {
    Options::default().durability(Durability::None)
}

async fn build(dir: &Path, streams: usize, consumers: usize) {
    // In chunks of 1,000 streams, each chunk's store closed before the
    // next: an open stream holds a descriptor, an open durable consumer one
    // more (its journal).
    let per_stream = consumers.div_ceil(streams.max(1));
    let mut c = 0;
    for chunk in (0..streams).step_by(1000) {
        let store = Store::open(dir, opts()).unwrap();
        for i in chunk..(chunk + 1000).min(streams) {
            store
                .create_stream(StreamConfig::new(format!("S{i}")).subjects([format!("s{i}.>")]))
                .await
                .unwrap();
            for k in 0..3 {
                store
                    .publish(Message::new(format!("s{i}.{k}"), "payload"))
                    .await
                    .unwrap();
            }
            for _ in 0..per_stream {
                if c < consumers {
                    store
                        .create_consumer(&format!("S{i}"), ConsumerConfig::durable(format!("C{c}")))
                        .await
                        .unwrap();
                    c += 1;
                }
            }
        }
        store.close().await.unwrap();
    }
}

fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort();
    v.get(v.len() / 2).copied()
}

async fn measure(dir: &Path, rounds: usize, writable: bool) {
    let (mut open, mut close, mut ro_open, mut ls, mut ro_close) =
        (vec![], vec![], vec![], vec![], vec![]);
    let mut n = 0;
    for _ in 0..rounds {
        if writable {
            let t = Instant::now();
            let store = Store::open(dir, opts()).unwrap();
            open.push(t.elapsed());
            let t = Instant::now();
            store.close().await.unwrap();
            close.push(t.elapsed());
        }

        let t = Instant::now();
        let store = Store::open(dir, opts().read_only(true)).unwrap();
        ro_open.push(t.elapsed());
        let t = Instant::now();
        n = store.list_streams().await.unwrap().len();
        ls.push(t.elapsed());
        for u in store.unavailable().iter().take(3) {
            println!("unavailable: {u:?}");
        }
        let t = Instant::now();
        store.close().await.unwrap();
        ro_close.push(t.elapsed());
    }
    println!(
        "streams {n}: open {:?} close {:?} | read-only open {:?} list_streams {:?} close {:?}",
        median(open),
        median(close),
        median(ro_open),
        median(ls),
        median(ro_close)
    );
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let dir = Path::new(&args[2]);
    match args[1].as_str() {
        "build" => build(dir, args[3].parse().unwrap(), args[4].parse().unwrap()).await,
        "measure" => {
            let rounds = args.get(3).map_or(3, |r| r.parse().unwrap());
            measure(dir, rounds, args.get(4).is_none_or(|m| m != "ro")).await;
        }
        other => panic!("unknown command {other}"),
    }
}
