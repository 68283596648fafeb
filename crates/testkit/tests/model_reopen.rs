//! The conformance model run (random operations vs a JetStream model) on a
//! file store with 1 KiB segments that is closed and reopened at random
//! points: recovery must restore exactly the state the model holds.

// A failed setup step is a failed test.
#![allow(clippy::expect_used)]

use std::sync::{Arc, Mutex};

use durabus::Bus;
use durabus_conformance::model;
use tempfile::TempDir;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_operations_with_reopens_match_the_jetstream_model() {
    // Keep every seed's directory alive until the end.
    let dirs: Arc<Mutex<Vec<TempDir>>> = Arc::default();
    let url_of = |dir: &TempDir| {
        format!(
            "file:{}?durability=none&segment_size=1024",
            dir.path().display()
        )
    };
    let current_url: Arc<Mutex<String>> = Arc::default();
    let make = {
        let dirs = Arc::clone(&dirs);
        let current_url = Arc::clone(&current_url);
        move |_seed: u64| {
            let dir = durabus_testkit::temp_dir();
            let url = url_of(&dir);
            dirs.lock().expect("dirs").push(dir);
            *current_url.lock().expect("url") = url.clone();
            async move { durabus::connect(&url).await.expect("connect") }
        }
    };
    let reopen = {
        let current_url = Arc::clone(&current_url);
        move |bus: Bus| {
            let url = current_url.lock().expect("url").clone();
            async move {
                bus.close().await.expect("close before reopen");
                drop(bus);
                durabus::connect(&url).await.expect("reopen")
            }
        }
    };
    model::run_all(500, make, Some(reopen)).await;
}
