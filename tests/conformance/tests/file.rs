//! The conformance suite on the embedded engine with a file-backed store.
//!
//! `durability=none` keeps the suite fast: fsync policy does not change any
//! behaviour the suite checks (crash durability is the testkit's kill -9
//! harness's job). Each case gets its own temp dir, removed after the bus is
//! closed.

// Setting up the backend is part of the test: failing to is a failed test.
#![allow(clippy::expect_used)]

durabus_conformance::conformance_suite!({
    let dir = tempfile::tempdir().expect("create a temp dir");
    let url = format!("file:{}?durability=none", dir.path().display());
    let bus = durabus::connect(&url).await.expect("connect to file:");
    (bus, dir)
});
