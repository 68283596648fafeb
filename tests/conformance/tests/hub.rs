//! The conformance suite on the hub: the NATS backend (`nats://`) against
//! `durabus serve`'s server in this process, over a `file:` store, a fresh
//! hub per case. Where the hub and a real nats-server answer differently,
//! nats-server is right unless docs/design.md says why not.

// Setting up the backend is part of the test: failing to is a failed test.
#![allow(clippy::expect_used)]

durabus_conformance::conformance_suite!({
    let hub = durabus_testkit::hub::Hub::file().await;
    let bus = durabus::connect(&hub.url())
        .await
        .expect("connect to the hub");
    (bus, hub)
});
