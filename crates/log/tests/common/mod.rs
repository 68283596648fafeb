//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;

use durabus_core::{Backend, Message, StreamConfig};
use durabus_log::{Durability, Options, Store};

pub fn opts() -> Options {
    Options::default().durability(Durability::None)
}

pub fn open(dir: &Path) -> Store {
    Store::open(dir, opts()).unwrap()
}

pub fn open_with(dir: &Path, o: Options) -> Store {
    Store::open(dir, o).unwrap()
}

pub async fn stream(store: &Store, cfg: StreamConfig) {
    store.create_stream(cfg).await.unwrap();
}

pub async fn publish(store: &Store, subject: &str, payload: impl Into<bytes::Bytes>) -> u64 {
    store
        .publish(Message::new(subject, payload))
        .await
        .unwrap()
        .expect("captured")
        .seq
}

/// Both flavours of the engine: on disk and in memory.
pub fn both(dir: &Path) -> Vec<(&'static str, Store)> {
    vec![
        ("file", open(dir)),
        ("memory", Store::memory(opts()).unwrap()),
    ]
}

/// The segment files of a stream, sorted.
pub fn segments(dir: &Path, stream: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("streams").join(stream).join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

pub fn files_with_ext(dir: &Path, stream: &str, ext: &str) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("streams").join(stream).join("segments"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}
