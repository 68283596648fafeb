//! The nats-server runner starts a JetStream server on a free port and stops
//! it when dropped.

use std::net::TcpStream;

use durabus_testkit::nats::{nats_server_binary, NatsServer};

/// Two servers get two ports; each accepts clients; dropping one frees it.
#[test]
fn nats_servers_start_on_free_ports_and_stop_on_drop() {
    if nats_server_binary().is_none() {
        eprintln!("skipped: nats-server is not installed (./scripts/test installs it)");
        return;
    }
    let a = NatsServer::start().unwrap_or_else(|e| panic!("start a: {e:#}"));
    let b = NatsServer::start().unwrap_or_else(|e| panic!("start b: {e:#}"));
    assert_ne!(a.port(), b.port());
    assert!(a.url().starts_with("nats://127.0.0.1:"));
    assert!(TcpStream::connect(("127.0.0.1", b.port())).is_ok());
    let port = a.port();
    drop(a);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server still listening after drop"
    );
    assert!(std::ptr::eq(NatsServer::shared(), NatsServer::shared()));
}
