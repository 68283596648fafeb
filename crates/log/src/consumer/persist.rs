//! Consumer state on disk: restoring it at open and writing what changed
//! (invariants 18 and 19).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use durabus_core::{Error, Result};

use super::file::{ConsumerFile, DecodedConsumer, CONSUMER_VERSION};
use super::state::Consumer;
use super::StreamConsumers;

/// Directory of consumer files inside a stream directory.
pub(crate) const CONSUMERS_DIR: &str = "consumers";

/// Changed durable consumer state is written at most this often (and on
/// create, update, delete and clean close): the kill -9 bound of invariant 18.
pub(crate) const PERSIST_INTERVAL: Duration = Duration::from_secs(1);

pub(super) fn corrupt_file(path: &Path, reason: impl Into<String>) -> Error {
    Error::corrupt(path, 0, reason)
}

impl StreamConsumers {
    pub(super) fn consumer_dir(&self) -> PathBuf {
        self.dir.join(CONSUMERS_DIR)
    }

    pub(super) fn persists(&self) -> bool {
        !self.env.storage.is_volatile() && !self.env.storage.is_read_only()
    }

    /// Restores durable consumers from `consumers/` (invariant 19). A file
    /// that cannot be read or decoded (or, on a writable store, cannot be
    /// opened for writing: an immutable file) makes that consumer
    /// unavailable, named with the reason; the stream and its other
    /// consumers work, and nothing is changed on disk for it. While one is
    /// unavailable, interest and work-queue retention remove nothing
    /// (invariant 21: it may still need every message). An error here is
    /// only a consumers directory that cannot be listed.
    pub(crate) fn load_consumers(&self) -> Result<()> {
        let st = self.storage();
        let dir = self.consumer_dir();
        if !st.exists(&dir).unwrap_or(false) {
            return Ok(());
        }
        let names = st
            .list_dir(&dir)
            .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
        let mut map = self.consumers.lock();
        let mut broken = self.consumers.broken();
        for n in names {
            let path = dir.join(&n);
            if n.ends_with(".tmp") {
                // An interrupted atomic write: the previous file is the truth.
                if !st.is_read_only() {
                    let _ = st.remove_file(&path);
                }
                continue;
            }
            match self.load_one(&path, &n) {
                Ok(c) => {
                    map.insert(n, c);
                }
                Err(e) => {
                    tracing::warn!(stream = %self.name, consumer = %n, error = %e,
                        "consumer unavailable: its state file could not be loaded; the stream and its other consumers work");
                    broken.insert(n, e.to_string());
                }
            }
        }
        Ok(())
    }

    fn load_one(&self, path: &Path, n: &str) -> Result<Consumer> {
        let st = self.storage();
        let bytes = st
            .read_file(path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let f = match ConsumerFile::decode(&bytes) {
            DecodedConsumer::Ok(f) => *f,
            DecodedConsumer::Newer(v) => {
                return Err(Error::UnsupportedFormat {
                    path: path.to_path_buf(),
                    found: v,
                    supported: CONSUMER_VERSION,
                })
            }
            DecodedConsumer::Corrupt(r) => {
                return Err(corrupt_file(path, format!("consumer state file: {r}")))
            }
        };
        if f.name != n {
            return Err(corrupt_file(
                path,
                format!("consumer state file names consumer {:?}", f.name),
            ));
        }
        if self.persists() {
            // A file the store could not replace later (immutable, or owned
            // by someone else) would fail every state write and the close.
            st.open(path).map_err(|e| {
                Error::io(
                    format!(
                        "opening {} for writing (its state could not be saved)",
                        path.display()
                    ),
                    e,
                )
            })?;
        }
        Ok(Consumer::from_file(f))
    }

    /// Writes one consumer's file now (create, update).
    pub(super) fn persist_one(&self, name: &str) -> Result<()> {
        if !self.persists() {
            return Ok(());
        }
        let _io = self.consumers.io();
        let bytes = {
            let mut map = self.consumers.lock();
            let Some(c) = map.get_mut(name) else {
                return Ok(());
            };
            if !c.is_durable() {
                return Ok(());
            }
            c.dirty = false;
            c.last_persist = Instant::now();
            c.to_file().encode()?
        };
        self.write_consumer_file(name, &bytes)
    }

    pub(super) fn write_consumer_file(&self, name: &str, bytes: &[u8]) -> Result<()> {
        let st = self.storage();
        let dir = self.consumer_dir();
        if !st.exists(&dir).unwrap_or(false) {
            st.create_dir_all(&dir)
                .and_then(|()| st.sync_dir(&self.dir))
                .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
        }
        // Invariant 6: write temp, fsync, rename, fsync the directory.
        crate::storage::write_atomic(st, &dir.join(name), bytes).map_err(|e| {
            Error::io(
                format!("writing consumer state {name:?} of stream {}", self.name),
                e,
            )
        })
    }

    /// Writes changed durable consumer state: all of it when `force` (clean
    /// close), else what changed at least [`PERSIST_INTERVAL`] ago.
    pub(crate) fn persist_consumers(&self, force: bool) -> Result<()> {
        if !self.persists() || self.is_closed() {
            return Ok(());
        }
        let _io = self.consumers.io();
        let due: Vec<(String, Vec<u8>)> = {
            let mut map = self.consumers.lock();
            let mut out = Vec::new();
            for (n, c) in map.iter_mut() {
                if c.is_durable()
                    && c.dirty
                    && (force || c.last_persist.elapsed() >= PERSIST_INTERVAL)
                {
                    c.dirty = false;
                    c.last_persist = Instant::now();
                    out.push((n.clone(), c.to_file().encode()?));
                }
            }
            out
        };
        let mut first = None;
        for (n, b) in due {
            if let Err(e) = self.write_consumer_file(&n, &b) {
                if let Some(c) = self.consumers.lock().get_mut(&n) {
                    c.dirty = true;
                }
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Maintenance: removes consumers inactive past their threshold, then
    /// writes changed state.
    pub(crate) fn consumer_tick(&self) {
        if self.storage().is_read_only() {
            // Nothing is removed or written on a read-only store.
            return;
        }
        let expired: Vec<String> = self
            .consumers
            .lock()
            .iter()
            .filter(|(_, c)| {
                c.config()
                    .effective_inactive_threshold()
                    .is_some_and(|t| c.waiting == 0 && c.last_active.elapsed() >= t)
            })
            .map(|(n, _)| n.clone())
            .collect();
        for n in expired {
            tracing::debug!(stream = %self.name, consumer = %n, "removing inactive consumer");
            if let Err(e) = self.delete_consumer(&n) {
                tracing::warn!(stream = %self.name, consumer = %n, error = %e, "could not remove inactive consumer");
            }
        }
        if let Err(e) = self.persist_consumers(false) {
            tracing::warn!(stream = %self.name, error = %e, "could not write consumer state");
        }
    }
}
