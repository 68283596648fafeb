//! A terminal chat over a durabus room.
//!
//! ```text
//! cargo run -p durabus --example chat -- --url nats://127.0.0.1:4222 --room lobby --name alice
//! cargo run -p durabus --example chat -- --url file:./chat-data --room lobby --name bob
//! ```
//!
//! Each line read from stdin is sent to the room; messages from the other
//! peers are printed as `<sender>: <text>`. A persisted room (the default)
//! shows a new peer the last 20 messages (`~ <sender>: <text>`) and lets a
//! returning peer catch up with what it missed; `--ephemeral` keeps no
//! history. The program ends when stdin ends (Ctrl-D), or with `--count N`
//! once stdin ended and N messages from others were printed.
//!
//! A `file:` store is opened by one process at a time: to chat between
//! processes, use `nats://` (or take turns on `file:`, which shows the
//! scrollback and resuming).

use std::io::Write as _;

use durabus::room::{Room, RoomPolicy};
use tokio::io::AsyncBufReadExt as _;

/// Lines of history a new peer of a persisted room is shown.
const SCROLLBACK: usize = 20;

/// A terminal chat over a durabus room.
#[derive(clap::Parser)]
struct Args {
    /// Backend URL.
    #[arg(long, env = "DURABUS_URL", default_value = "file:./chat-data")]
    url: String,
    /// Room name.
    #[arg(long, default_value = "lobby")]
    room: String,
    /// Your name in the room.
    #[arg(long)]
    name: String,
    /// A room without history (core fan-out).
    #[arg(long)]
    ephemeral: bool,
    /// After stdin ends, wait for N messages from others.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
}

#[tokio::main]
async fn main() -> durabus::Result<()> {
    let args = <Args as clap::Parser>::parse();
    let bus = durabus::ConnectOptions::new()
        .service_name("chat")
        .connect(&args.url)
        .await?;
    let policy = if args.ephemeral {
        RoomPolicy::Ephemeral
    } else {
        RoomPolicy::persisted()
    };
    let room = Room::open(&bus, &args.room, policy).await?;
    let mut member = room.join(&args.name).await?;
    if !member.resumed() {
        for m in member.scrollback(SCROLLBACK).await? {
            println!("~ {}: {}", m.sender, String::from_utf8_lossy(&m.payload));
        }
    }
    let kind = if args.ephemeral {
        "ephemeral"
    } else {
        "persisted"
    };
    let resumed = if member.resumed() { ", resuming" } else { "" };
    eprintln!("* joined {} as {} ({kind}{resumed})", args.room, args.name);

    let sender = member.sender();
    let count = args.count;
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    // Prints what the others send until stopped, or after `count` messages.
    let printer = tokio::spawn(async move {
        let mut printed = 0u64;
        while count.is_none_or(|n| printed < n) {
            let next = tokio::select! {
                next = member.next() => next,
                _ = &mut stopped => break,
            };
            match next {
                Some(Ok(m)) => {
                    println!("{}: {}", m.sender, String::from_utf8_lossy(&m.payload));
                    let _ = std::io::stdout().flush();
                    printed += 1;
                }
                Some(Err(e)) => eprintln!("* receive failed: {e}"),
                None => break,
            }
        }
        member.leave().await
    });

    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if !line.is_empty() {
            sender.send(line).await?;
        }
    }
    if count.is_none() {
        let _ = stop.send(());
    }
    match printer.await {
        Ok(left) => left?,
        Err(e) => eprintln!("* printer failed: {e}"),
    }
    bus.close().await
}
