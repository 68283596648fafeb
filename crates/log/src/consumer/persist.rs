//! Consumer state on disk: restoring it at open and writing what changed
//! (invariants 18 and 19).

use std::path::{Path, PathBuf};
use std::sync::MutexGuard;

use durabus_core::{Error, Result, RetentionPolicy};

use crate::Durability;

use super::file::{ConsumerFile, DecodedConsumer, CONSUMER_VERSION};
use super::journal;
use super::state::Consumer;
use super::{ConsumerMap, StreamConsumers};

/// Directory of consumer files inside a stream directory.
pub(crate) const CONSUMERS_DIR: &str = "consumers";

pub(super) fn corrupt_file(path: &Path, reason: impl Into<String>) -> Error {
    Error::corrupt(path, 0, reason)
}

/// A consumer that fetched nothing for this long closes the segment file
/// its cursor reads.
const IDLE_CLOSE: std::time::Duration = std::time::Duration::from_secs(1);

impl StreamConsumers {
    pub(super) fn consumer_dir(&self) -> PathBuf {
        self.dir.join(CONSUMERS_DIR)
    }

    pub(super) fn journal_dir(&self) -> PathBuf {
        self.dir.join(journal::JOURNALS_DIR)
    }

    /// Whether journal writes are fsynced before they count (`always`).
    pub(super) fn journal_syncs(&self) -> bool {
        matches!(self.env.durability, Durability::Always)
    }

    pub(super) fn persists(&self) -> bool {
        !self.env.storage.is_volatile() && !self.env.storage.is_read_only()
    }

    /// Finds the durable consumers in `consumers/` (invariant 19): one
    /// listing, and leftover `*.tmp` files removed. On a limits stream they
    /// are loaded on first use (docs/design.md, "Consumers loaded on first
    /// use": [`StreamConsumers::lock_with`]); interest and work-queue
    /// retention need every consumer's position, so their consumers are
    /// loaded now. `known`: how many durable consumers the catalog's
    /// trusted summary counts (the stream closed cleanly and nothing
    /// changed it since): a limits stream then lists `consumers/` only
    /// when a consumer is first used. An error here is only a consumers
    /// directory that cannot be listed; a consumer that does not load is
    /// unavailable on its own ([`StreamConsumers::load_into`]).
    pub(crate) fn load_consumers(&self, known: Option<u64>) -> Result<()> {
        let limits = self.config().retention == RetentionPolicy::Limits;
        let mut map = self.consumers.lock();
        match known {
            Some(n) if limits => map.unlisted = Some(n),
            _ => self.list_into(&mut map)?,
        }
        drop(map);
        if !limits {
            drop(self.lock_all());
        }
        Ok(())
    }

    /// The consumer map, `consumers/` listed first if it was not yet.
    pub(super) fn lock_listed(&self) -> MutexGuard<'_, ConsumerMap> {
        let mut map = self.consumers.lock();
        if map.unlisted.is_some() {
            if let Err(e) = self.list_into(&mut map) {
                // Tried again by the next use; until then none is found.
                tracing::warn!(stream = %self.name, error = %e, "could not list the stream's consumers");
            }
        }
        map
    }

    /// Lists `consumers/` into `map.unloaded` (removing leftover `*.tmp`
    /// files, interrupted atomic writes whose previous file is the truth).
    fn list_into(&self, map: &mut ConsumerMap) -> Result<()> {
        let st = self.storage();
        let dir = self.consumer_dir();
        if st.exists(&dir).unwrap_or(false) {
            let names = st
                .list_dir(&dir)
                .map_err(|e| Error::io(format!("listing {}", dir.display()), e))?;
            for n in names {
                if n.ends_with(".tmp") {
                    if !st.is_read_only() {
                        let _ = st.remove_file(&dir.join(&n));
                    }
                    continue;
                }
                if !map.loaded.contains_key(&n) {
                    map.unloaded.insert(n);
                }
            }
        }
        map.unlisted = None;
        Ok(())
    }

    /// Loads consumer `n` (taken out of `unloaded` by the caller, who holds
    /// the map) into `map`. A file that cannot be read or decoded (or, on a
    /// writable store, cannot be opened for writing: an immutable file)
    /// makes that consumer unavailable, named with the reason; the stream
    /// and its other consumers work, and nothing is changed on disk for
    /// it. While one is unavailable, interest and work-queue retention
    /// remove nothing (invariant 21: it may still need every message).
    /// A closed stream (the store closed, or the stream deleted) loads
    /// nothing: a load may write (a journal cut or started), and the
    /// directory is no longer this store's to change.
    pub(super) fn load_into(&self, map: &mut ConsumerMap, n: &str) {
        if self.is_closed() {
            map.unloaded.insert(n.to_owned());
            return;
        }
        let path = self.consumer_dir().join(n);
        match self.load_one(&path, n) {
            Ok(mut c) => {
                // Its inactivity clock started when the stream was opened:
                // nothing used it since (see `consumer_tick`).
                c.last_active = self.consumers.opened;
                map.loaded.insert(n.to_owned(), c);
            }
            Err(e) => {
                tracing::warn!(stream = %self.name, consumer = %n, error = %e,
                    "consumer unavailable: its state file could not be loaded; the stream and its other consumers work");
                self.consumers.broken().insert(n.to_owned(), e.to_string());
            }
        }
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
        let mut c = Consumer::from_file(f);
        // The journal continues the state file: replay its entries.
        let jdir = self.journal_dir();
        let jpath = jdir.join(n);
        let read = match st.read_file(&jpath) {
            Ok(b) => journal::decode(&b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => journal::Read::default(),
            Err(e) => return Err(Error::io(format!("reading {}", jpath.display()), e)),
        };
        let current = read.gen == Some(c.journal.gen);
        if current {
            for e in read.entries {
                c.apply_entry(e);
            }
        } else if let Some(g) = read.gen.filter(|g| *g > c.journal.gen) {
            return Err(corrupt_file(
                &jpath,
                format!(
                    "consumer journal generation {g} is newer than its state file's {}",
                    c.journal.gen
                ),
            ));
        }
        c.pending.touched.clear();
        c.journal.last = Some((
            c.state.delivered,
            c.state.ack_floor,
            c.state.next_seq,
            c.start_queue.len(),
        ));
        if self.persists() {
            if current {
                let file = st
                    .open(&jpath)
                    .map_err(|e| Error::io(format!("opening {}", jpath.display()), e))?;
                // A write the process did not finish is cut before appends.
                if file
                    .len()
                    .map_err(|e| Error::io(format!("reading {}", jpath.display()), e))?
                    > read.end
                {
                    file.set_len(read.end)
                        .and_then(|()| file.sync_data())
                        .map_err(|e| Error::io(format!("truncating {}", jpath.display()), e))?;
                }
                drop(file);
                c.journal.len = read.end;
            } else {
                // None yet (a store from before journals), or one the state
                // file already holds: start this generation's.
                journal::create(st, &jdir, &jpath, c.journal.gen)
                    .map_err(|e| Error::io(format!("creating {}", jpath.display()), e))?;
                c.journal.len = journal::HEADER;
            }
            c.journal.path = Some(jpath);
        }
        Ok(c)
    }

    /// Folds `c`'s journal into its state file: writes the state (with the
    /// next journal generation) atomically, then starts that generation's
    /// empty journal. A crash in between leaves an older journal the next
    /// open ignores (the state file holds it).
    fn compact(&self, name: &str, c: &mut Consumer) -> Result<()> {
        c.journal_entry();
        c.journal.buf.clear();
        c.journal.gen += 1;
        c.dirty = false;
        let bytes = c.to_file().encode()?;
        self.write_consumer_file(name, &bytes)?;
        let jdir = self.journal_dir();
        let jpath = jdir.join(name);
        // The old generation's file closes; the new one opens when written to.
        c.journal.file = None;
        journal::create(self.storage(), &jdir, &jpath, c.journal.gen)
            .map_err(|e| Error::io(format!("starting the journal of consumer {name:?}"), e))?;
        c.journal.path = Some(jpath);
        c.journal.len = journal::HEADER;
        c.journal.unsynced = false;
        Ok(())
    }

    /// Writes `name`'s buffered journal entries now (fsynced under
    /// `always`): what `ack_confirmed` and a fetch wait for.
    pub(super) fn flush_journal(&self, c: &mut Consumer) -> Result<()> {
        c.journal_entry();
        let sync = self.journal_syncs();
        c.journal.flush(self.storage(), sync).map_err(|e| {
            Error::io(
                format!("writing the journal of a consumer of stream {}", self.name),
                e,
            )
        })
    }

    /// Writes one consumer's file now (create, update), folding its journal in.
    pub(super) fn persist_one(&self, name: &str) -> Result<()> {
        if !self.persists() {
            return Ok(());
        }
        let _io = self.consumers.io();
        let mut map = self.consumers.lock();
        let Some(c) = map.loaded.get_mut(name) else {
            return Ok(());
        };
        if !c.is_durable() {
            return Ok(());
        }
        self.compact(name, c)
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

    /// Writes buffered journal entries of every loaded durable consumer
    /// (fsynced when `sync`), and folds journals into state files: every
    /// changed one when `force` (clean close), else those past
    /// [`journal::COMPACT_AT`]; closes the files of consumers idle since the
    /// last call (journals written to nothing, cursors that fetched nothing
    /// for [`IDLE_CLOSE`]). A consumer not loaded has nothing to write: its
    /// files are left as they are.
    pub(crate) fn persist_consumers(&self, force: bool) -> Result<()> {
        if !self.persists() || self.is_closed() {
            return Ok(());
        }
        let _io = self.consumers.io();
        let sync = force || !matches!(self.env.durability, Durability::None);
        let mut map = self.consumers.lock();
        let mut first = None;
        for (n, c) in map.loaded.iter_mut() {
            if c.waiting == 0 && c.last_active.elapsed() >= IDLE_CLOSE {
                if let Some(cur) = &mut c.cursor {
                    cur.close_file();
                }
            }
            if !c.is_durable() {
                continue;
            }
            let r = if (force && (c.dirty || c.journal.len > journal::HEADER))
                || c.journal.len >= journal::COMPACT_AT
            {
                self.compact(n, c)
            } else {
                c.journal_entry();
                let r = c
                    .journal
                    .flush(self.storage(), sync)
                    .map_err(|e| Error::io(format!("writing the journal of consumer {n:?}"), e));
                if !force {
                    c.journal.close_if_idle();
                }
                r
            };
            if let Err(e) = r {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    /// Maintenance: removes consumers inactive past their threshold, then
    /// writes changed state.
    ///
    /// Only loaded consumers are looked at: whether a consumer not loaded
    /// yet has an `inactive_threshold` is in its file, and reading every
    /// file is what loading on first use avoids. Its inactivity clock
    /// starts when the stream was opened (as for a loaded one: nothing used
    /// it in this process), so the first tick after anything loads it (a
    /// use by name, a list, `Store::unavailable`) removes it if its
    /// threshold has passed; one nothing loads stays on disk, idle.
    pub(crate) fn consumer_tick(&self) {
        if self.storage().is_read_only() {
            // Nothing is removed or written on a read-only store.
            return;
        }
        let expired: Vec<String> = self
            .consumers
            .lock()
            .loaded
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
