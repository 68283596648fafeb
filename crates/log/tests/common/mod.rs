//! Helpers shared by the integration tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, missing_docs)]

use std::path::Path;

use durabus_core::{Backend, Message, StreamConfig};
use durabus_log::{Durability, Options, Store};

/// A current-thread runtime for the synchronous tests.
pub(crate) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Copies a data directory (as a crash would leave it: files that vanish
/// while copying are skipped).
pub(crate) fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let p = e.path();
        if p == to {
            continue;
        }
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&p, &t);
        } else {
            // The forgotten store's background threads still run: a temp
            // file of an atomic replace can vanish between listing and
            // copying, as it could at a crash.
            match std::fs::copy(&p, &t) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => {
                    r.unwrap();
                }
            }
        }
    }
}

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
pub(crate) mod readonly;
pub(crate) mod workload;
