//! Whether a server loses core messages in a fan-out: one async-nats
//! publisher and four subscribers that read the protocol from raw TCP
//! sockets (no client library on the receiving side), in turns; prints each
//! turn's deliveries and time, and each subscriber's count when one missed
//! anything. docs/performance.md tells the server's drops from the bench
//! client's with it.
//!
//! ```text
//! cargo run --release -p durabus-bench --example raw_fanout -- \
//!     127.0.0.1:4222 <messages per turn> <turns>
//! ```

use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Subscribers per turn.
const SUBSCRIBERS: usize = 4;
/// How long a subscriber waits for more before it counts the rest missed.
const IDLE: Duration = Duration::from_secs(5);

/// Counts the `MSG`s in `pending`, consuming every whole operation.
fn count_msgs(pending: &mut Vec<u8>) -> anyhow::Result<u64> {
    let (mut at, mut count) = (0, 0);
    while let Some(eol) = pending[at..].windows(2).position(|w| w == b"\r\n") {
        let line = &pending[at..at + eol];
        let mut next = at + eol + 2;
        if line.starts_with(b"MSG ") {
            let size: usize =
                std::str::from_utf8(line.rsplit(|b| *b == b' ').next().unwrap_or(b""))?
                    .parse()
                    .context("a MSG without a size")?;
            if pending.len() < next + size + 2 {
                break;
            }
            next += size + 2;
            count += 1;
        } else if line.starts_with(b"-ERR") {
            bail!("the server said {}", String::from_utf8_lossy(line));
        }
        at = next;
    }
    pending.drain(..at);
    Ok(count)
}

/// A subscriber on its own connection: subscribed (the server answered the
/// PING after the SUB) when this returns; its task counts up to `n`.
async fn subscriber(
    addr: &str,
    subject: &str,
    n: u64,
) -> anyhow::Result<tokio::task::JoinHandle<anyhow::Result<u64>>> {
    let mut socket = TcpStream::connect(addr).await?;
    socket
        .write_all(
            format!("CONNECT {{\"verbose\":false}}\r\nSUB {subject} 1\r\nPING\r\n").as_bytes(),
        )
        .await?;
    let mut buf = vec![0u8; 1 << 20];
    let mut seen = Vec::new();
    while !seen.windows(6).any(|w| w == b"PONG\r\n") {
        let read = socket.read(&mut buf).await?;
        if read == 0 {
            bail!("the server closed the connection");
        }
        seen.extend_from_slice(&buf[..read]);
    }
    Ok(tokio::spawn(async move {
        let (mut count, mut pending) = (0u64, Vec::new());
        while count < n {
            match tokio::time::timeout(IDLE, socket.read(&mut buf)).await {
                Ok(Ok(read)) if read > 0 => {
                    pending.extend_from_slice(&buf[..read]);
                    count += count_msgs(&mut pending)?;
                }
                _ => break,
            }
        }
        Ok(count)
    }))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [addr, n, turns] = args.as_slice() else {
        bail!("usage: raw_fanout <host:port> <messages per turn> <turns>");
    };
    let n: u64 = n.parse().context("messages per turn")?;
    let turns: u32 = turns.parse().context("turns")?;
    let publisher = async_nats::connect(format!("nats://{addr}")).await?;
    let payload = bytes::Bytes::from(vec![b'x'; 128]);
    let (mut lost_turns, mut total) = (0, 0u64);
    for turn in 0..turns {
        let subject = format!("raw_fanout.{}.{turn}", std::process::id());
        let mut subs = Vec::new();
        for _ in 0..SUBSCRIBERS {
            subs.push(subscriber(addr, &subject, n).await?);
        }
        let start = Instant::now();
        for _ in 0..n {
            publisher.publish(subject.clone(), payload.clone()).await?;
        }
        publisher.flush().await?;
        let mut counts = Vec::new();
        for s in subs {
            counts.push(s.await??);
        }
        let got: u64 = counts.iter().sum();
        total += got;
        let missed = counts.iter().any(|c| *c < n);
        lost_turns += u32::from(missed);
        println!(
            "turn {turn}: {got} of {} deliveries in {:?}{}",
            n * SUBSCRIBERS as u64,
            start.elapsed(),
            if missed {
                format!(", per subscriber {counts:?}")
            } else {
                String::new()
            }
        );
    }
    println!("{lost_turns} of {turns} turns missed deliveries; {total} delivered");
    Ok(())
}
