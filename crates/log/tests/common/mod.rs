//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, missing_docs)]

use std::path::Path;

use durabus_core::{Backend, Message, StreamConfig};
use durabus_log::{Durability, Options, Store};

pub(crate) fn opts() -> Options {
    Options::default().durability(Durability::None)
}

pub(crate) fn open(dir: &Path) -> Store {
    Store::open(dir, opts()).unwrap()
}

pub(crate) fn open_with(dir: &Path, o: Options) -> Store {
    Store::open(dir, o).unwrap()
}

pub(crate) async fn stream(store: &Store, cfg: StreamConfig) {
    store.create_stream(cfg).await.unwrap();
}

pub(crate) async fn publish(store: &Store, subject: &str, payload: impl Into<bytes::Bytes>) -> u64 {
    store
        .publish(Message::new(subject, payload))
        .await
        .unwrap()
        .expect("captured")
        .seq
}

/// Both flavours of the engine: on disk and in memory.
pub(crate) fn both(dir: &Path) -> Vec<(&'static str, Store)> {
    vec![
        ("file", open(dir)),
        ("memory", Store::memory(opts()).unwrap()),
    ]
}

/// The segment files of a stream, sorted.
pub(crate) fn segments(dir: &Path, stream: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("streams").join(stream).join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

pub(crate) fn files_with_ext(dir: &Path, stream: &str, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("streams").join(stream).join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}
pub(crate) mod faults;
pub(crate) mod power_loss;
pub(crate) mod workload;
