//! `durabus serve`: the hub. Opens a `file:` (or `memory:`) store and serves
//! it over the NATS protocol until Ctrl-C or SIGTERM, then shuts down
//! gracefully: stops accepting, lets each connection finish what it had
//! sent, closes the store.

use std::time::Duration;

use anyhow::Context as _;
use durabus_server::{Server, ServerOptions};

use crate::session::{self, Access, Global, Kind};

/// Arguments of `durabus serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// The store to serve: file:<dir>[?durability=...] or memory:
    /// [default: --url, else file:./data]
    #[arg(long, value_name = "URL")]
    store: Option<String>,
    /// The address to listen on (port 0 picks a free one).
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:4222")]
    listen: String,
    /// The server name announced to clients.
    #[arg(long, default_value = "durabus")]
    name: String,
    /// Largest message a client may publish, headers included (bytes).
    #[arg(long, value_name = "BYTES", default_value_t = 1024 * 1024)]
    max_payload: usize,
    /// How often idle clients are pinged (a client that misses two pings
    /// is disconnected).
    #[arg(long, value_name = "DURATION", default_value = "2m", value_parser = humantime::parse_duration)]
    ping_interval: Duration,
}

/// Messages a hub subscription may queue while its connection's encoder
/// catches up (the store's `subscriber_buffer` when the URL does not set
/// it): a fan-out burst must not drop messages for clients that read, and
/// a client that does not read is closed once `max_pending` bytes wait
/// for it, so the queue stays short in the steady state.
const HUB_SUBSCRIBER_BUFFER: usize = 65_536;

/// `url` with the hub's subscriber buffer, unless it sets one.
fn with_hub_buffer(url: &str) -> String {
    if url.contains("subscriber_buffer=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}subscriber_buffer={HUB_SUBSCRIBER_BUFFER}")
}

/// Runs the hub until a shutdown signal.
pub(crate) async fn run(global: &Global, args: ServeArgs) -> anyhow::Result<()> {
    let url = args
        .store
        .clone()
        .unwrap_or_else(|| global.url().to_owned());
    if Kind::of(&url) == Some(Kind::Nats) {
        anyhow::bail!(
            "durabus serve serves an embedded store (file:<dir> or memory:), not {}: \
             a nats:// server is already reachable by every NATS client",
            durabus::redact(&url)
        );
    }
    // Installed before the store opens: a signal during startup is not lost.
    let stop = session::shutdown_signal();
    let bus = session::open_bus(&with_hub_buffer(&url), Access::Create).await?;
    // A hub serves the store it holds (and shares it with local commands);
    // one held by another process is served by that one.
    if Kind::of(&url) == Some(Kind::File) && !bus.is_shared() {
        let _ = bus.close().await;
        anyhow::bail!(
            "{} is held by another durabus process: stop it and serve again, or connect to what it shares",
            durabus::redact(&url)
        );
    }
    let options = ServerOptions::default()
        .name(args.name)
        .max_payload(args.max_payload)
        .ping(args.ping_interval, 2);
    let server = match Server::bind(bus.backend().clone(), args.listen.as_str(), options).await {
        Ok(s) => s,
        Err(e) => {
            let _ = bus.close().await;
            return Err(e).with_context(|| format!("cannot listen on {}", args.listen));
        }
    };
    if global.json {
        println!(
            "{}",
            serde_json::json!({ "listening": server.url(), "store": durabus::redact(&url) })
        );
    } else {
        println!(
            "durabus hub: serving {} on {} (connect with --url {})",
            durabus::redact(&url),
            server.local_addr(),
            server.url()
        );
    }
    stop.await;
    eprintln!("durabus hub: shutting down");
    server.shutdown().await;
    session::finish(&bus, &url, Ok(())).await
}
