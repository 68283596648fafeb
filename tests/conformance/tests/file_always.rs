//! The conformance suite on a file-backed store with `durability=always`:
//! every ack waits for an fsync (group commit), so the suite also covers the
//! waiting paths (duplicates of not-yet-durable messages, batches sharing a
//! sync, close while acks wait). Behaviour must not depend on durability.

// Setting up the backend is part of the test: failing to is a failed test.
#![allow(clippy::expect_used)]

durabus_conformance::conformance_suite!({
    let dir = tempfile::tempdir().expect("create a temp dir");
    let url = format!("file:{}?durability=always", dir.path().display());
    let bus = durabus::connect(&url).await.expect("connect to file:");
    (bus, dir)
});
