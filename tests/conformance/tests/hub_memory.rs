//! The conformance suite on the hub over a `memory:` store: the NATS
//! backend against `durabus serve`'s server in this process, a fresh hub
//! per case (`tests/hub.rs` runs it over `file:`).

// Setting up the backend is part of the test: failing to is a failed test.
#![allow(clippy::expect_used)]

durabus_conformance::conformance_suite!({
    let hub = durabus_testkit::hub::Hub::memory().await;
    let bus = durabus::connect(&hub.url())
        .await
        .expect("connect to the hub");
    (bus, hub)
});
