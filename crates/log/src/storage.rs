//! The storage trait every file operation of the engine goes through.
//!
//! Every write, fsync, rename, truncate, remove and directory fsync the engine
//! performs is a call on [`Storage`] or [`StorageFile`], so tests can plug in
//! a crash shim (live vs durable images) or a backend that fails the Nth
//! operation. Two implementations ship: [`FsStorage`] (the real file system)
//! and [`MemStorage`] (in-memory files, used by [`crate::Store::memory`]).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

/// An open file. Reads and writes are positional, so one handle can be shared
/// by threads (`&self` everywhere).
pub trait StorageFile: Send + Sync + fmt::Debug {
    /// Reads up to `buf.len()` bytes at `offset`; returns how many were read
    /// (0 at or past the end).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;

    /// Writes all of `data` at `offset`, extending the file if needed. One call
    /// is one write to the OS (for [`FsStorage`], `pwrite`).
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()>;

    /// Current length of the file.
    fn len(&self) -> io::Result<u64>;

    /// Whether the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Makes the file's data durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;

    /// Cuts (or extends with zeros) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// Reads exactly `buf.len()` bytes at `offset`, failing with
    /// [`io::ErrorKind::UnexpectedEof`] if the file is shorter.
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shorter than expected",
                ));
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// A held exclusive lock on a data directory; dropping it releases the lock.
pub trait StorageLock: Send + Sync + fmt::Debug {}

/// Outcome of [`Storage::try_lock`].
#[derive(Debug)]
pub enum LockOutcome {
    /// The lock is ours until the guard is dropped.
    Acquired(Box<dyn StorageLock>),
    /// Someone else holds it; `pid` is what the holder wrote in the lock file
    /// (`"unknown"` when unreadable, empty, or not a running process).
    Held {
        /// The holder's pid as text.
        pid: String,
    },
}

/// File-system operations used by the engine. See the module docs.
///
/// Paths are absolute or relative as given by the engine; implementations
/// must treat them as opaque keys for files and directories.
pub trait Storage: Send + Sync + fmt::Debug {
    /// Opens an existing file for reading and writing.
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;

    /// Opens an existing file for reading only (`O_RDONLY` for
    /// [`FsStorage`], so it works on a read-only file system). The default
    /// is [`Storage::open`].
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.open(path)
    }

    /// Creates a new empty file (truncating one that exists), for reading and
    /// writing. The caller fsyncs the directory to make the name durable.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>>;

    /// Whether a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;

    /// Names (not paths) of the entries of directory `path`, sorted.
    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>>;

    /// Whether `path` is a directory.
    fn is_dir(&self, path: &Path) -> io::Result<bool>;

    /// Creates a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Renames a file or directory, replacing the target file if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;

    /// Removes a file.
    fn remove_file(&self, path: &Path) -> io::Result<()>;

    /// Removes a directory and everything under it.
    fn remove_dir_all(&self, path: &Path) -> io::Result<()>;

    /// Makes the entries of directory `path` durable (fsync of the directory).
    fn sync_dir(&self, path: &Path) -> io::Result<()>;

    /// Tries to take the exclusive lock on `path` (created if absent) without
    /// blocking; on success the implementation records `pid` in the file.
    fn try_lock(&self, path: &Path, pid: &str) -> io::Result<LockOutcome>;

    /// True when nothing survives the process (memory): syncing is then
    /// pointless and `Durability::Always` acknowledges without waiting for an
    /// fsync. A crash-testing shim must return false.
    fn is_volatile(&self) -> bool {
        false
    }

    /// True when every write is refused ([`ReadOnlyStorage`]): the engine
    /// then skips the repairs and derived files it would write.
    fn is_read_only(&self) -> bool {
        false
    }

    /// Reads a whole file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open_read(path)?;
        let len = f.len()?;
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "file too large"))?;
        let mut buf = vec![0u8; len];
        f.read_exact_at(&mut buf, 0)?;
        Ok(buf)
    }
}

/// Replaces `path` with `data` atomically (invariant 6): write a temp file,
/// fsync it, rename it over `path`, fsync the directory.
pub fn write_atomic(storage: &dyn Storage, path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let f = storage.create(&tmp)?;
    f.write_all_at(data, 0)?;
    // IMPORTANT: the temp file's data must be durable before the rename makes it visible.
    f.sync_data()?;
    drop(f);
    storage.rename(&tmp, path)?;
    // IMPORTANT: fsync the directory after rename, or the rename may be lost.
    storage.sync_dir(dir)
}

// ---------------------------------------------------------------------------
// FsStorage

/// The real file system through `std::fs`; positional I/O via
/// `std::os::unix::fs::FileExt`.
#[derive(Debug, Default, Clone, Copy)]
pub struct FsStorage;

impl FsStorage {
    /// The file-system storage.
    pub fn new() -> Self {
        FsStorage
    }
}

#[derive(Debug)]
struct FsFile {
    file: std::fs::File,
}

impl StorageFile for FsFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        loop {
            match self.file.read_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                r => return r,
            }
        }
    }

    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        self.file.write_all_at(data, offset)
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
}

#[derive(Debug)]
struct FsLock {
    _file: std::fs::File,
}

impl StorageLock for FsLock {}

/// Read-write open options that never follow a symbolic link at the last
/// component (`O_NOFOLLOW`): a link where the store expects its own file
/// (the lock, a config, a segment, a temp file) could otherwise make it
/// truncate or overwrite a file elsewhere.
fn no_follow() -> std::fs::OpenOptions {
    let mut o = read_no_follow();
    o.write(true);
    o
}

/// Options that open an existing file for reading, without following a link.
fn read_no_follow() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.custom_flags(libc::O_NOFOLLOW);
    }
    o
}

/// Opens `path` with `options`, turning the failure to open a symbolic link
/// into a [`durabus_core::SymlinkRefused`] error (which
/// `durabus_core::Error::io` reports as `Error::Symlink`).
fn open_no_follow(options: &std::fs::OpenOptions, path: &Path) -> io::Result<std::fs::File> {
    #[cfg(not(unix))]
    if is_symlink(path) {
        return Err(symlink_refused(path));
    }
    options.open(path).map_err(|e| {
        // O_NOFOLLOW fails with ELOOP (EMLINK on some BSDs) on a link.
        if is_symlink(path) {
            symlink_refused(path)
        } else {
            e
        }
    })
}

fn is_symlink(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink())
}

fn symlink_refused(path: &Path) -> io::Error {
    io::Error::other(durabus_core::SymlinkRefused {
        path: path.to_path_buf(),
    })
}

/// The pid a lock file names, if it names a running process; else
/// `"unknown"` (no pid yet, garbage, or a process that has exited: the
/// holder writes its pid only after it took the lock, so the text can be a
/// previous owner's for an instant).
fn holder_pid(text: &str) -> String {
    match text.trim().parse::<u32>() {
        Ok(pid) if pid > 0 && process_runs(pid) => pid.to_string(),
        _ => "unknown".to_owned(),
    }
}

/// The holder of the data directory lock at `path` (its pid, or
/// `"unknown"`), or `None` when no process holds it: whether a store is
/// open on the directory right now, so that its last segment may be being
/// written. Used by `verify`/`dump`, which read without the lock. Never
/// creates or writes the file. The lock file names its last holder, so a
/// pid that is not running means nobody holds it, and no lock is touched;
/// only when the pid runs (it may be reused, or our own process that
/// closed the store) is a non-blocking shared flock tried, and released at
/// once, to be sure. That attempt fails while an owner holds the lock, so
/// it never disturbs one.
pub(crate) fn lock_holder(path: &Path) -> io::Result<Option<String>> {
    use fs4::fs_std::FileExt;
    use std::io::Read;
    let mut file = match open_no_follow(&read_no_follow(), path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = String::new();
    file.read_to_string(&mut text)?;
    let pid = holder_pid(&text);
    if pid == "unknown" && !text.trim().is_empty() {
        // A pid that is not running: its process is gone, and so its lock.
        return Ok(None);
    }
    match FileExt::try_lock_shared(&file) {
        // Ours for an instant: nobody else holds it. Dropping `file` (the
        // only handle of this open file description) releases it.
        Ok(true) => Ok(None),
        Ok(false) => Ok(Some(pid)),
        // Locks unsupported here: go by the pid.
        Err(_) if pid != "unknown" => Ok(Some(pid)),
        Err(e) => Err(e),
    }
}

/// Whether `pid` is a running (not exited, not zombie) process. Without
/// `/proc` every pid counts as running.
fn process_runs(pid: u32) -> bool {
    let proc = Path::new("/proc");
    if !proc.join("self").exists() {
        return true;
    }
    match std::fs::read_to_string(proc.join(pid.to_string()).join("stat")) {
        // `pid (comm) S ...`: the state follows the last ')'.
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next()),
            Some('Z' | 'X' | 'x')
        ),
        Err(_) => false,
    }
}

impl Storage for FsStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = open_no_follow(&no_follow(), path)?;
        Ok(Arc::new(FsFile { file }))
    }

    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = open_no_follow(&read_no_follow(), path)?;
        Ok(Arc::new(FsFile { file }))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let file = open_no_follow(no_follow().create(true).truncate(true), path)?;
        Ok(Arc::new(FsFile { file }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if let Some(name) = entry.file_name().to_str() {
                names.push(name.to_owned());
            }
        }
        names.sort();
        Ok(names)
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        Ok(std::fs::metadata(path)?.is_dir())
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir_all(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::File::open(path)?.sync_all()
    }

    fn try_lock(&self, path: &Path, pid: &str) -> io::Result<LockOutcome> {
        use fs4::fs_std::FileExt;
        use std::io::{Read, Seek, Write};
        // Never truncated here: only the process that took the lock
        // rewrites the file, so a refused open leaves the holder's pid.
        let mut file = open_no_follow(no_follow().create(true).truncate(false), path)?;
        // flock locks belong to the open file description, so a second open in
        // the same process conflicts too (invariant 13).
        if !FileExt::try_lock_exclusive(&file)? {
            let mut text = String::new();
            let pid = match file.read_to_string(&mut text) {
                Ok(_) => holder_pid(&text),
                Err(_) => "unknown".to_owned(),
            };
            return Ok(LockOutcome::Held { pid });
        }
        file.set_len(0)?;
        file.seek(io::SeekFrom::Start(0))?;
        file.write_all(pid.as_bytes())?;
        file.sync_data()?;
        Ok(LockOutcome::Acquired(Box::new(FsLock { _file: file })))
    }
}

// ---------------------------------------------------------------------------
// ReadOnlyStorage

/// Another [`Storage`] with every write refused: files are opened with
/// [`Storage::open_read`], and every create, write, truncate, rename,
/// remove, fsync of a written file and lock fails with
/// [`io::ErrorKind::ReadOnlyFilesystem`]. A read-only store
/// (`Options::read_only`) runs on it, so no code path can change a byte.
#[derive(Debug, Clone)]
pub struct ReadOnlyStorage {
    inner: Arc<dyn Storage>,
}

impl ReadOnlyStorage {
    /// `inner`, read-only.
    pub fn new(inner: Arc<dyn Storage>) -> Self {
        ReadOnlyStorage { inner }
    }
}

fn refused(what: &str, path: Option<&Path>) -> io::Error {
    let what = match path {
        Some(p) => format!("{what} {}", p.display()),
        None => what.to_owned(),
    };
    io::Error::new(
        io::ErrorKind::ReadOnlyFilesystem,
        format!("{what}: the store is open read-only"),
    )
}

/// A file of a [`ReadOnlyStorage`]: reads pass, writes fail.
#[derive(Debug)]
struct ReadOnlyFile(Arc<dyn StorageFile>);

impl StorageFile for ReadOnlyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, _data: &[u8], _offset: u64) -> io::Result<()> {
        Err(refused("writing a file", None))
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn sync_data(&self) -> io::Result<()> {
        // Nothing was written through this handle: nothing to make durable.
        Ok(())
    }
    fn set_len(&self, _len: u64) -> io::Result<()> {
        Err(refused("truncating a file", None))
    }
}

impl Storage for ReadOnlyStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.open_read(path)
    }
    fn open_read(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Ok(Arc::new(ReadOnlyFile(self.inner.open_read(path)?)))
    }
    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        Err(refused("creating", Some(path)))
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
        Err(refused("creating", Some(path)))
    }
    fn rename(&self, from: &Path, _to: &Path) -> io::Result<()> {
        Err(refused("renaming", Some(from)))
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        Err(refused("removing", Some(path)))
    }
    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        Err(refused("removing", Some(path)))
    }
    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }
    fn try_lock(&self, path: &Path, _pid: &str) -> io::Result<LockOutcome> {
        Err(refused("locking", Some(path)))
    }
    fn is_volatile(&self) -> bool {
        self.inner.is_volatile()
    }
    fn is_read_only(&self) -> bool {
        true
    }
}

// ---------------------------------------------------------------------------
// MemStorage

/// In-memory files and directories. Cheap to clone; clones share the image.
///
/// Used by [`crate::Store::memory`]; also a base for test shims.
#[derive(Debug, Clone, Default)]
pub struct MemStorage {
    inner: Arc<MemInner>,
}

#[derive(Debug, Default)]
struct MemInner {
    files: Mutex<BTreeMap<PathBuf, Arc<MemFile>>>,
    dirs: Mutex<BTreeSet<PathBuf>>,
    locks: Arc<Mutex<BTreeSet<PathBuf>>>,
}

/// One in-memory file.
#[derive(Debug, Default)]
struct MemFile {
    data: RwLock<Vec<u8>>,
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

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", path.display()),
    )
}

impl MemStorage {
    /// An empty in-memory image.
    pub fn new() -> Self {
        Self::default()
    }

    fn files(&self) -> std::sync::MutexGuard<'_, BTreeMap<PathBuf, Arc<MemFile>>> {
        self.inner.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn dirs(&self) -> std::sync::MutexGuard<'_, BTreeSet<PathBuf>> {
        self.inner.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl StorageFile for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let data = self.data.read().unwrap_or_else(|e| e.into_inner());
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(data.len());
        let n = buf.len().min(data.len() - start);
        buf[..n].copy_from_slice(&data[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, src: &[u8], offset: u64) -> io::Result<()> {
        let mut data = self.data.write().unwrap_or_else(|e| e.into_inner());
        let start = usize::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "offset too large"))?;
        let end = start + src.len();
        if data.len() < end {
            data.resize(end, 0);
        }
        data[start..end].copy_from_slice(src);
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.data.read().unwrap_or_else(|e| e.into_inner()).len() as u64)
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
        self.data
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .resize(len, 0);
        Ok(())
    }
}

#[derive(Debug)]
struct MemLock {
    path: PathBuf,
    locks: Arc<Mutex<BTreeSet<PathBuf>>>,
}

impl StorageLock for MemLock {}

impl Drop for MemLock {
    fn drop(&mut self) {
        self.locks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.path);
    }
}

/// Wraps a shared [`MemFile`] as a handle.
#[derive(Debug)]
struct MemHandle(Arc<MemFile>);

impl StorageFile for MemHandle {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.0.read_at(buf, offset)
    }
    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(data, offset)
    }
    fn len(&self) -> io::Result<u64> {
        self.0.len()
    }
    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }
}

impl Storage for MemStorage {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let path = norm(path);
        let file = self
            .files()
            .get(&path)
            .cloned()
            .ok_or_else(|| not_found(&path))?;
        Ok(Arc::new(MemHandle(file)))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        let path = norm(path);
        if let Some(parent) = path.parent() {
            if !parent.as_os_str().is_empty() && !self.dirs().contains(parent) {
                return Err(not_found(parent));
            }
        }
        let file = Arc::new(MemFile::default());
        self.files().insert(path, file.clone());
        Ok(Arc::new(MemHandle(file)))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let path = norm(path);
        Ok(self.files().contains_key(&path) || self.dirs().contains(&path))
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let path = norm(path);
        if !self.dirs().contains(&path) {
            return Err(not_found(&path));
        }
        let mut names = BTreeSet::new();
        let child_name = |p: &Path| -> Option<String> {
            if p.parent() == Some(path.as_path()) {
                p.file_name().and_then(|n| n.to_str()).map(str::to_owned)
            } else {
                None
            }
        };
        names.extend(self.files().keys().filter_map(|p| child_name(p)));
        names.extend(self.dirs().iter().filter_map(|p| child_name(p)));
        Ok(names.into_iter().collect())
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        let path = norm(path);
        if self.dirs().contains(&path) {
            Ok(true)
        } else if self.files().contains_key(&path) {
            Ok(false)
        } else {
            Err(not_found(&path))
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        let mut dirs = self.dirs();
        for anc in path.ancestors() {
            if !anc.as_os_str().is_empty() {
                dirs.insert(anc.to_path_buf());
            }
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let (from, to) = (norm(from), norm(to));
        let mut files = self.files();
        if let Some(f) = files.remove(&from) {
            files.insert(to, f);
            return Ok(());
        }
        let mut dirs = self.dirs();
        if !dirs.contains(&from) {
            return Err(not_found(&from));
        }
        let moved_dirs: Vec<PathBuf> = dirs
            .iter()
            .filter(|d| d.starts_with(&from))
            .cloned()
            .collect();
        for d in moved_dirs {
            dirs.remove(&d);
            if let Ok(rest) = d.strip_prefix(&from) {
                dirs.insert(to.join(rest));
            }
        }
        let moved_files: Vec<PathBuf> = files
            .keys()
            .filter(|p| p.starts_with(&from))
            .cloned()
            .collect();
        for p in moved_files {
            if let (Some(f), Ok(rest)) = (files.remove(&p), p.strip_prefix(&from)) {
                files.insert(to.join(rest), f);
            }
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        self.files()
            .remove(&path)
            .map(|_| ())
            .ok_or_else(|| not_found(&path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let path = norm(path);
        self.files().retain(|p, _| !p.starts_with(&path));
        self.dirs().retain(|p| !p.starts_with(&path));
        Ok(())
    }

    fn sync_dir(&self, _path: &Path) -> io::Result<()> {
        Ok(())
    }

    fn try_lock(&self, path: &Path, _pid: &str) -> io::Result<LockOutcome> {
        let path = norm(path);
        let mut locks = self.inner.locks.lock().unwrap_or_else(|e| e.into_inner());
        if !locks.insert(path.clone()) {
            return Ok(LockOutcome::Held {
                pid: std::process::id().to_string(),
            });
        }
        Ok(LockOutcome::Acquired(Box::new(MemLock {
            path,
            locks: self.inner.locks.clone(),
        })))
    }

    fn is_volatile(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exercise(storage: &dyn Storage, root: &Path) {
        let dir = root.join("a/b");
        storage.create_dir_all(&dir).unwrap();
        let f = storage.create(&dir.join("x")).unwrap();
        f.write_all_at(b"hello", 0).unwrap();
        f.write_all_at(b"!", 5).unwrap();
        assert_eq!(f.len().unwrap(), 6);
        let mut buf = [0u8; 10];
        assert_eq!(f.read_at(&mut buf, 1).unwrap(), 5);
        assert_eq!(&buf[..5], b"ello!");
        f.set_len(2).unwrap();
        assert_eq!(storage.read_file(&dir.join("x")).unwrap(), b"he");
        write_atomic(storage, &dir.join("y"), b"atomic").unwrap();
        assert_eq!(storage.list_dir(&dir).unwrap(), ["x", "y"]);
        storage.rename(&dir.join("y"), &dir.join("z")).unwrap();
        assert!(!storage.exists(&dir.join("y")).unwrap());
        assert_eq!(storage.read_file(&dir.join("z")).unwrap(), b"atomic");
        storage.remove_file(&dir.join("z")).unwrap();
        storage.rename(&root.join("a"), &root.join("c")).unwrap();
        assert_eq!(storage.read_file(&root.join("c/b/x")).unwrap(), b"he");
        storage.remove_dir_all(&root.join("c")).unwrap();
        assert!(!storage.exists(&root.join("c/b/x")).unwrap());
    }

    #[test]
    fn fs_and_mem_storage_behave_alike() {
        let tmp = tempfile::tempdir().unwrap();
        exercise(&FsStorage, tmp.path());
        exercise(&MemStorage::new(), Path::new("/mem"));
    }

    #[test]
    fn second_lock_on_same_path_is_refused_even_in_one_process() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("LOCK");
        let me = std::process::id().to_string();
        let first = FsStorage.try_lock(&p, &me).unwrap();
        assert!(matches!(first, LockOutcome::Acquired(_)));
        match FsStorage.try_lock(&p, "43").unwrap() {
            LockOutcome::Held { pid } => assert_eq!(pid, me),
            other => panic!("{other:?}"),
        }
        // The refused attempt wrote nothing.
        assert_eq!(std::fs::read_to_string(&p).unwrap(), me);
        drop(first);
        assert!(matches!(
            FsStorage.try_lock(&p, "44").unwrap(),
            LockOutcome::Acquired(_)
        ));
    }

    #[test]
    fn lock_holder_tells_a_held_lock_from_a_released_one_and_never_takes_it() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("LOCK");
        assert_eq!(lock_holder(&p).unwrap(), None, "no LOCK file");
        assert!(!p.exists(), "lock_holder created the file");
        let me = std::process::id().to_string();
        let held = FsStorage.try_lock(&p, &me).unwrap();
        assert!(matches!(held, LockOutcome::Acquired(_)));
        // Held (by this very process, through another open file).
        assert_eq!(lock_holder(&p).unwrap(), Some(me.clone()));
        drop(held);
        // Released, though the pid in the file still runs (our own).
        assert_eq!(lock_holder(&p).unwrap(), None);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), me);
        // The check left the lock free.
        assert!(matches!(
            FsStorage.try_lock(&p, &me).unwrap(),
            LockOutcome::Acquired(_)
        ));
    }
}
