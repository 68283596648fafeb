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

struct Args {
    url: String,
    room: String,
    name: String,
    ephemeral: bool,
    count: Option<u64>,
}

fn usage() -> ! {
    eprintln!(
        "usage: chat [--url URL] [--room ROOM] --name NAME [--ephemeral] [--count N]\n\
         \x20 --url        backend (default $DURABUS_URL, else file:./chat-data)\n\
         \x20 --room       room name (default lobby)\n\
         \x20 --name       your name in the room\n\
         \x20 --ephemeral  a room without history (core fan-out)\n\
         \x20 --count N    after stdin ends, wait for N messages from others"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut args = Args {
        url: std::env::var("DURABUS_URL").unwrap_or_else(|_| "file:./chat-data".into()),
        room: "lobby".into(),
        name: String::new(),
        ephemeral: false,
        count: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| usage());
        match flag.as_str() {
            "--url" => args.url = value(),
            "--room" => args.room = value(),
            "--name" => args.name = value(),
            "--ephemeral" => args.ephemeral = true,
            "--count" => args.count = Some(value().parse().unwrap_or_else(|_| usage())),
            _ => usage(),
        }
    }
    if args.name.is_empty() {
        usage();
    }
    args
}

#[tokio::main]
async fn main() -> durabus::Result<()> {
    let args = parse_args();
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
