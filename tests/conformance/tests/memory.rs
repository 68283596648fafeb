//! The conformance suite on the embedded engine with in-memory storage.

// Setting up the backend is part of the test: failing to is a failed test.
#![allow(clippy::expect_used)]

durabus_conformance::conformance_suite!(durabus::connect("memory:")
    .await
    .expect("connect to memory:"));
