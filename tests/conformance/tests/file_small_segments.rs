//! The conformance suite on a file-backed store whose segments roll every
//! 1 KiB, so every case also crosses segment boundaries: replay and get
//! across segments, eviction and purge dropping whole segments, dedup and
//! per-subject state spanning them. Behaviour must not depend on the
//! segment size.

// Setting up the backend is part of the test: failing to is a failed test.
#![allow(clippy::expect_used)]

durabus_conformance::conformance_suite!({
    let dir = tempfile::tempdir().expect("create a temp dir");
    let url = format!(
        "file:{}?durability=none&segment_size=1024",
        dir.path().display()
    );
    let bus = durabus::connect(&url).await.expect("connect to file:");
    (bus, dir)
});
