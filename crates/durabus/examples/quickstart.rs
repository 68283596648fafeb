//! durabus in one minute: a durable stream on disk, no broker to run.
//! Run it twice: the second run finds the first run's messages.

use std::time::Duration;

use durabus::{Message, ReplayOptions, StreamConfig};

#[tokio::main]
async fn main() -> durabus::Result<()> {
    // "file:DIR" is the embedded, crash-safe store (the default backend);
    // "memory:" is the same engine in memory; "nats://host:4222" is NATS
    // JetStream. Same program, another URL.
    let url = std::env::args().nth(1).unwrap_or_else(|| {
        let dir = std::env::temp_dir().join("durabus-quickstart");
        format!("file:{}", dir.display())
    });
    println!("store: {url}");
    let bus = durabus::connect(&url).await?;

    // A stream captures subjects. Creating an equal stream again is a no-op;
    // a different configuration needs update_stream. A handle names the
    // stream once (no I/O).
    bus.create_stream(StreamConfig::new("ORDERS").subjects(["orders.>"]))
        .await?;
    let orders = bus.stream("ORDERS");

    // Live subscribers see the messages published after they subscribe.
    let mut live = bus.subscribe("orders.*.created").await?;

    // A publish through the handle must be stored in ORDERS: it is
    // acknowledged with its sequence number once it is on disk (durability
    // "always", the default, fsyncs before the ack), or it is an error.
    let n = orders.info().await?.state.messages + 1;
    let order =
        Message::new("orders.eu.created", format!("order {n}")).with_msg_id(format!("order-{n}"));
    let ack = orders.publish_message(order.clone()).await?;
    println!("published order {n}: seq {}", ack.seq);

    // The same msg id inside the duplicate window is not stored twice.
    let again = orders.publish_message(order).await?;
    println!(
        "published it again: seq {}, duplicate {}",
        again.seq, again.duplicate
    );

    if let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), live.next()).await {
        let text = String::from_utf8_lossy(&msg.payload);
        println!("live subscriber got {text:?} on {}", msg.subject);
    }

    // Replay what is stored, in order; without stop_at_end it goes on live.
    let mut replay = orders
        .replay(ReplayOptions::from_seq(1).stop_at_end())
        .await?;
    while let Some(stored) = replay.next().await {
        let stored = stored?;
        let text = String::from_utf8_lossy(&stored.payload);
        println!("replay: seq {} {} {text:?}", stored.seq, stored.subject);
    }

    // Request/reply over core subjects (not stored).
    let mut service = bus.subscribe("svc.echo").await?;
    let responder = bus.clone();
    tokio::spawn(async move {
        while let Some(request) = service.next().await {
            if let Some(reply) = request.reply {
                let _ = responder.publish(reply, request.payload).await;
            }
        }
    });
    let answer = bus
        .request("svc.echo", "ping", Duration::from_secs(1))
        .await?;
    println!(
        "request answered: {:?}",
        String::from_utf8_lossy(&answer.payload)
    );

    bus.close().await // idempotent; every later call returns Error::Closed
}
