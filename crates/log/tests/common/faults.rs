//! R5: a [`Storage`] that fails operations of one kind from the Nth on,
//! once or persistently, over another storage. Reads never fail.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, missing_docs)]

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use durabus_log::{LockOutcome, Storage, StorageFile};

/// Which operations count and fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// File writes and truncations, creations, renames and removals.
    Writes,
    /// `sync_data` and `sync_dir`.
    Syncs,
}

#[derive(Debug)]
struct Plan {
    kind: Kind,
    at: AtomicU64,
    persistent: bool,
    seen: AtomicU64,
    failed: AtomicU64,
    off: AtomicBool,
}

/// The wrapper. Cheap to clone; clones share the plan.
#[derive(Debug, Clone)]
pub(crate) struct Faults {
    inner: Arc<dyn Storage>,
    plan: Arc<Plan>,
}

impl Faults {
    /// Fails the `at`-th operation of `kind` (1-based), and every later one
    /// of that kind if `persistent`.
    pub(crate) fn new(inner: Arc<dyn Storage>, kind: Kind, at: u64, persistent: bool) -> Faults {
        Faults {
            inner,
            plan: Arc::new(Plan {
                kind,
                at: AtomicU64::new(at),
                persistent,
                seen: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                off: AtomicBool::new(false),
            }),
        }
    }

    /// Operations that failed so far.
    pub(crate) fn failures(&self) -> u64 {
        self.plan.failed.load(Ordering::SeqCst)
    }

    /// Fails every operation of its kind from the next one on (with a
    /// persistent plan): the disk filled up now.
    pub(crate) fn fail_from_next(&self) {
        let p = &self.plan;
        p.at.store(p.seen.load(Ordering::SeqCst) + 1, Ordering::SeqCst);
    }

    /// No more failures (the disk was fixed).
    pub(crate) fn heal(&self) {
        self.plan.off.store(true, Ordering::SeqCst);
    }

    fn gate(&self, kind: Kind) -> io::Result<()> {
        let p = &self.plan;
        if kind != p.kind || p.off.load(Ordering::SeqCst) {
            return Ok(());
        }
        let n = p.seen.fetch_add(1, Ordering::SeqCst) + 1;
        let at = p.at.load(Ordering::SeqCst);
        if n == at || (p.persistent && n > at) {
            p.failed.fetch_add(1, Ordering::SeqCst);
            return Err(io::Error::other(format!("injected {kind:?} failure #{n}")));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct File {
    inner: Arc<dyn StorageFile>,
    faults: Faults,
}

impl StorageFile for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.inner.read_at(buf, offset)
    }
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.faults.gate(Kind::Writes)?;
        self.inner.write_all_at(data, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.inner.len()
    }
    fn sync_data(&self) -> io::Result<()> {
        self.faults.gate(Kind::Syncs)?;
        self.inner.sync_data()
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.faults.gate(Kind::Writes)?;
        self.inner.set_len(len)
    }
}

impl Faults {
    fn wrap(&self, f: Arc<dyn StorageFile>) -> Arc<dyn StorageFile> {
        Arc::new(File {
            inner: f,
            faults: self.clone(),
        })
    }
}

impl Storage for Faults {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(self.wrap(self.inner.open(path)?))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.gate(Kind::Writes)?;
        Ok(self.wrap(self.inner.create(path)?))
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.inner.exists(path)
    }
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.inner.list_dir(path)
    }
    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        self.inner.is_dir(path)
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.gate(Kind::Writes)?;
        self.inner.create_dir_all(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.gate(Kind::Writes)?;
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.gate(Kind::Writes)?;
        self.inner.remove_file(path)
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        self.gate(Kind::Writes)?;
        self.inner.remove_dir_all(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.gate(Kind::Syncs)?;
        self.inner.sync_dir(path)
    }
    fn try_lock(&self, path: &Path, pid: &str) -> io::Result<LockOutcome> {
        self.inner.try_lock(path, pid)
    }
}
