//! A crash-testing [`Storage`]: in-memory files with a live image (what the
//! process wrote, as the OS page cache holds it) and a durable image (what
//! fsyncs made stable). [`CrashStorage::crash`] freezes the storage (every
//! later call on it or on its open files fails, so a dropped store cannot
//! touch the image) and returns a fresh storage holding either image: the
//! live one for a process kill, the durable one for a power loss.
//!
//! Durability rules, deliberately simple but never kinder than a real file
//! system for file data: `sync_data` makes a file's bytes durable;
//! `sync_dir(d)` makes the names of everything under `d` durable (the live
//! entries replace the durable ones, renamed and removed files included).
//! Directory fsyncs are thus a little stronger than POSIX (one fsync covers
//! the whole subtree's names), which can hide bugs but never invent one.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use durabus_log::{LockOutcome, Storage, StorageFile, StorageLock};

#[derive(Debug, Default)]
struct Inode {
    live: RwLock<Vec<u8>>,
    durable: Mutex<Vec<u8>>,
}

#[derive(Debug, Default)]
struct Fs {
    files: BTreeMap<PathBuf, Arc<Inode>>,
    dirs: BTreeSet<PathBuf>,
    durable_files: BTreeMap<PathBuf, Arc<Inode>>,
    durable_dirs: BTreeSet<PathBuf>,
    locks: BTreeSet<PathBuf>,
}

/// See the module docs.
#[derive(Debug, Clone, Default)]
pub(crate) struct CrashStorage {
    fs: Arc<Mutex<Fs>>,
    dead: Arc<AtomicBool>,
}

/// Which image survives a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crash {
    /// The process died; the OS kept everything written.
    Kill,
    /// The machine lost power: only what was fsynced survives.
    PowerLoss,
}

fn norm(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn dead() -> io::Error {
    io::Error::other("crashed: storage is gone")
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

#[derive(Debug)]
struct Handle {
    inode: Arc<Inode>,
    dead: Arc<AtomicBool>,
}

impl Handle {
    fn check(&self) -> io::Result<()> {
        if self.dead.load(Ordering::SeqCst) {
            Err(dead())
        } else {
            Ok(())
        }
    }
}

impl StorageFile for Handle {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.check()?;
        let data = self.inode.live.read().unwrap();
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, src: &[u8], offset: u64) -> io::Result<()> {
        self.check()?;
        let mut data = self.inode.live.write().unwrap();
        let start = usize::try_from(offset).unwrap();
        let end = start + src.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(src);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        self.check()?;
        Ok(self.inode.live.read().unwrap().len() as u64)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.check()?;
        let live = self.inode.live.read().unwrap().clone();
        *self.inode.durable.lock().unwrap() = live;
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.check()?;
        self.inode
            .live
            .write()
            .unwrap()
            .resize(usize::try_from(len).unwrap(), 0);
        Ok(())
    }
}

#[derive(Debug)]
struct Lock {
    path: PathBuf,
    fs: Arc<Mutex<Fs>>,
}

impl StorageLock for Lock {}

impl Drop for Lock {
    fn drop(&mut self) {
        self.fs.lock().unwrap().locks.remove(&self.path);
    }
}

impl CrashStorage {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    fn fs(&self) -> io::Result<std::sync::MutexGuard<'_, Fs>> {
        let g = self.fs.lock().unwrap();
        if self.dead.load(Ordering::SeqCst) {
            return Err(dead());
        }
        Ok(g)
    }

    /// Freezes this storage and returns a new one holding what survives.
    pub(crate) fn crash(&self, kind: Crash) -> CrashStorage {
        let g = self.fs.lock().unwrap();
        self.dead.store(true, Ordering::SeqCst);
        let mut fs = Fs::default();
        let (files, dirs) = match kind {
            Crash::Kill => (
                g.files
                    .iter()
                    .map(|(p, i)| (p.clone(), i.live.read().unwrap().clone()))
                    .collect::<Vec<_>>(),
                g.dirs.clone(),
            ),
            Crash::PowerLoss => (
                g.durable_files
                    .iter()
                    .map(|(p, i)| (p.clone(), i.durable.lock().unwrap().clone()))
                    .collect(),
                g.durable_dirs.clone(),
            ),
        };
        for (p, data) in files {
            for a in p.ancestors().skip(1) {
                if !a.as_os_str().is_empty() {
                    fs.dirs.insert(a.to_path_buf());
                }
            }
            let inode = Arc::new(Inode {
                live: RwLock::new(data.clone()),
                durable: Mutex::new(data),
            });
            fs.files.insert(p, inode);
        }
        for d in dirs {
            for a in d.ancestors() {
                if !a.as_os_str().is_empty() {
                    fs.dirs.insert(a.to_path_buf());
                }
            }
        }
        fs.durable_files = fs.files.clone();
        fs.durable_dirs = fs.dirs.clone();
        CrashStorage {
            fs: Arc::new(Mutex::new(fs)),
            dead: Arc::default(),
        }
    }

    /// The live bytes of a file, if it exists.
    pub(crate) fn read_live(&self, path: &Path) -> Option<Vec<u8>> {
        let g = self.fs.lock().unwrap();
        g.files
            .get(&norm(path))
            .map(|i| i.live.read().unwrap().clone())
    }
}

impl Storage for CrashStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let path = norm(path);
        let inode = self
            .fs()?
            .files
            .get(&path)
            .cloned()
            .ok_or_else(|| not_found(&path))?;
        Ok(Arc::new(Handle {
            inode,
            dead: self.dead.clone(),
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let path = norm(path);
        let mut g = self.fs()?;
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() && !g.dirs.contains(parent) {
                return Err(not_found(parent));
            }
        }
        let inode = Arc::new(Inode::default());
        g.files.insert(path, inode.clone());
        Ok(Arc::new(Handle {
            inode,
            dead: self.dead.clone(),
        }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let path = norm(path);
        let g = self.fs()?;
        Ok(g.files.contains_key(&path) || g.dirs.contains(&path))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = norm(path);
        let g = self.fs()?;
        if !g.dirs.contains(&path) {
            return Err(not_found(&path));
        }
        let child = |p: &Path| -> Option<String> {
            (p.parent() == Some(path.as_path()))
                .then(|| p.file_name().and_then(|n| n.to_str()).map(str::to_owned))
                .flatten()
        };
        let mut names = BTreeSet::new();
        names.extend(g.files.keys().filter_map(|p| child(p)));
        names.extend(g.dirs.iter().filter_map(|p| child(p)));
        Ok(names.into_iter().collect())
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        let path = norm(path);
        let g = self.fs()?;
        if g.dirs.contains(&path) {
            Ok(true)
        } else if g.files.contains_key(&path) {
            Ok(false)
        } else {
            Err(not_found(&path))
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut g = self.fs()?;
        for a in path.ancestors() {
            if !a.as_os_str().is_empty() {
                g.dirs.insert(a.to_path_buf());
            }
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (norm(from), norm(to));
        let mut g = self.fs()?;
        if let Some(f) = g.files.remove(&from) {
            g.files.insert(to, f);
            return Ok(());
        }
        if !g.dirs.contains(&from) {
            return Err(not_found(&from));
        }
        let moved: Vec<PathBuf> = g
            .dirs
            .iter()
            .filter(|d| d.starts_with(&from))
            .cloned()
            .collect();
        for d in moved {
            g.dirs.remove(&d);
            g.dirs.insert(to.join(d.strip_prefix(&from).unwrap()));
        }
        let moved: Vec<PathBuf> = g
            .files
            .keys()
            .filter(|p| p.starts_with(&from))
            .cloned()
            .collect();
        for p in moved {
            let f = g.files.remove(&p).unwrap();
            g.files.insert(to.join(p.strip_prefix(&from).unwrap()), f);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        self.fs()?
            .files
            .remove(&path)
            .map(|_| ())
            .ok_or_else(|| not_found(&path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut g = self.fs()?;
        g.files.retain(|p, _| !p.starts_with(&path));
        g.dirs.retain(|p| !p.starts_with(&path));
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut g = self.fs()?;
        let under = |p: &Path| p.starts_with(&path) && p != path;
        g.durable_files.retain(|p, _| !under(p));
        g.durable_dirs.retain(|p| !under(p));
        let files: Vec<(PathBuf, Arc<Inode>)> = g
            .files
            .iter()
            .filter(|(p, _)| under(p))
            .map(|(p, i)| (p.clone(), i.clone()))
            .collect();
        let dirs: Vec<PathBuf> = g.dirs.iter().filter(|p| under(p)).cloned().collect();
        g.durable_files.extend(files);
        g.durable_dirs.extend(dirs);
        g.durable_dirs.insert(path);
        Ok(())
    }

    fn try_lock(&self, path: &Path, _pid: &str) -> io::Result<LockOutcome> {
        let path = norm(path);
        let mut g = self.fs()?;
        if !g.locks.insert(path.clone()) {
            return Ok(LockOutcome::Held {
                pid: std::process::id().to_string(),
            });
        }
        Ok(LockOutcome::Acquired(Box::new(Lock {
            path,
            fs: self.fs.clone(),
        })))
    }
}
