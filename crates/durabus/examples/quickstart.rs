//! durabus in one minute: an embedded, durable stream in `./data`.
//!
//! ```sh
//! cargo run --release -p durabus --example quickstart
//! ```
//!
//! Run it twice: the second run finds the messages of the first (sequence
//! numbers continue), because every acknowledged publish was fsynced
//! (`durability=always`, the default).

// An example states its expectations as `expect`s: if one fails, stop loudly.
#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use durabus::{Message, ReplayOptions, StreamConfig};

#[tokio::main]
async fn main() -> durabus::Result<()> {
    // The default URL: an embedded, file-backed store. No broker to start.
    let bus = durabus::connect(durabus::DEFAULT_URL).await?;

    // A stream captures subjects; creating an existing, equal stream is a no-op.
    bus.create_stream(StreamConfig::new("ORDERS").subjects(["orders.>"]))
        .await?;

    // A live subscriber sees every message published from now on.
    let mut live = bus.subscribe("orders.*.created").await?;

    // Publish: the ack carries the stream's sequence number.
    let ack = bus
        .publish_message(
            Message::new("orders.eu.created", r#"{"id": 1, "total": 42}"#)
                .with_msg_id(format!("order-{}", std::process::id())),
        )
        .await?
        .expect("the ORDERS stream captures orders.>");
    println!("stored order at seq {} of stream {}", ack.seq, ack.stream);

    let got = tokio::time::timeout(Duration::from_secs(5), live.next())
        .await
        .ok()
        .flatten()
        .expect("the live subscriber receives the message");
    println!(
        "live subscriber got {} bytes on {}",
        got.payload.len(),
        got.subject
    );

    // Bulk: 10,000 messages in batches, each batch acknowledged once durable.
    let start = Instant::now();
    for batch in 0..10 {
        let messages = (0..1000)
            .map(|i| Message::new(format!("orders.us.item{}", i % 10), format!("{batch}/{i}")))
            .collect();
        for result in bus.publish_batch(messages).await? {
            result?;
        }
    }
    println!("published 10000 durable messages in {:?}", start.elapsed());

    // Replay everything stored, in order, then stop.
    let start = Instant::now();
    let mut replay = bus
        .replay("ORDERS", ReplayOptions::from_seq(1).stop_at_end())
        .await?;
    let mut count = 0u64;
    while let Some(message) = replay.next().await {
        message?;
        count += 1;
    }
    println!("replayed {count} stored messages in {:?}", start.elapsed());

    let info = bus.stream_info("ORDERS").await?;
    println!(
        "stream ORDERS: {} messages, seq {}..={}, {} bytes",
        info.state.messages, info.state.first_seq, info.state.last_seq, info.state.bytes
    );

    // Makes everything acknowledged durable and releases the directory lock.
    bus.close().await
}
