//! R2: a power-loss shim over [`Storage`].
//!
//! It keeps two images of a file system: the *live* one every read sees and
//! the *durable* one a power loss leaves. A file's bytes become durable on
//! `sync_data`; a directory's entries (create, rename, remove) on
//! `sync_dir` of that directory. The shim counts mutating operations and
//! loses power at operation `crash_at`: that operation and every later one
//! fail. [`PowerLoss::image`] then writes what a disk could hold after the
//! loss into a real directory, choosing with a seeded generator:
//!
//! - per file changed since its last fsync, the size is the synced or the
//!   live one, and each 512-byte sector holds its synced or its live bytes
//!   (sectors are written whole, in any order: writes are dropped,
//!   reordered and torn at sector granularity);
//! - per directory, its entries are the durable ones, or (the metadata was
//!   flushed anyway) the live ones, so a rename can survive while the data
//!   of the file it names did not.
//!
//! [`PowerLoss::crash`] instead gives the whole live or the whole synced
//! image as a new shim, for tests that go on from it in memory.
//!
//! The store's own directory and its ancestors are durable from the start,
//! as a data directory the user created. Locks always succeed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
#![allow(dead_code, missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use durabus_log::{LockOutcome, Storage, StorageFile, StorageLock};

/// Sector size for tearing writes.
const SECTOR: u64 = 512;

type Ino = u64;
const ROOT: Ino = 0;

#[derive(Debug, Default, Clone)]
struct FileNode {
    live: Vec<u8>,
    durable: Vec<u8>,
    /// Changed since the last fsync.
    dirty: bool,
}

#[derive(Debug, Default, Clone)]
struct DirNode {
    live: BTreeMap<String, Ino>,
    durable: BTreeMap<String, Ino>,
}

#[derive(Debug, Clone)]
enum Node {
    File(FileNode),
    Dir(DirNode),
}

#[derive(Debug)]
struct Fs {
    nodes: HashMap<Ino, Node>,
    next: Ino,
}

/// The seeded generator of the trials (`StdRng::seed_from_u64`), so a failing
/// trial can be replayed from its seed.
pub(crate) type Rng = rand::rngs::StdRng;

/// Which image survives [`PowerLoss::crash`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Crash {
    /// The process died; the OS kept everything written.
    Kill,
    /// The machine lost power: only what was synced survives.
    PowerLoss,
}

/// The shim. Cheap to clone; clones share the file system.
#[derive(Debug, Clone)]
pub(crate) struct PowerLoss {
    inner: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    root: PathBuf,
    fs: Mutex<Fs>,
    ops: AtomicU64,
    /// Mutating operations from this one on fail (0 once frozen).
    crash_at: AtomicU64,
    /// When power was lost.
    lost_at: Mutex<Option<std::time::Instant>>,
}

fn lost() -> io::Error {
    io::Error::other("power lost (R2 shim)")
}

fn not_found(p: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{} not found", p.display()),
    )
}

impl PowerLoss {
    /// A shim whose store lives at `root`, losing power at mutating
    /// operation `crash_at` (1-based; `u64::MAX` never).
    pub(crate) fn new(root: &Path, crash_at: u64) -> PowerLoss {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::Dir(DirNode::default()));
        PowerLoss {
            inner: Arc::new(Shared {
                root: root.to_path_buf(),
                fs: Mutex::new(Fs { nodes, next: 1 }),
                ops: AtomicU64::new(0),
                crash_at: AtomicU64::new(crash_at),
                lost_at: Mutex::new(None),
            }),
        }
    }

    /// Mutating operations so far (the failed one included).
    pub(crate) fn ops(&self) -> u64 {
        self.inner.ops.load(Ordering::SeqCst)
    }

    /// When power was lost, if it was.
    pub(crate) fn lost_at(&self) -> Option<std::time::Instant> {
        *self.inner.lost_at.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether power was lost.
    pub(crate) fn crashed(&self) -> bool {
        self.ops() >= self.inner.crash_at.load(Ordering::SeqCst)
    }

    fn fs(&self) -> MutexGuard<'_, Fs> {
        self.inner.fs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts one mutating operation; fails it (and every later one) once
    /// power is lost.
    fn tick(&self) -> io::Result<()> {
        let n = self.inner.ops.fetch_add(1, Ordering::SeqCst) + 1;
        let crash_at = self.inner.crash_at.load(Ordering::SeqCst);
        if n >= crash_at {
            if n == crash_at {
                let mut at = self.inner.lost_at.lock().unwrap_or_else(|e| e.into_inner());
                *at = Some(std::time::Instant::now());
            }
            return Err(lost());
        }
        Ok(())
    }

    fn check(&self) -> io::Result<()> {
        if self.crashed() {
            return Err(lost());
        }
        Ok(())
    }

    /// The components of `path` below the root, or None for paths at or
    /// above it (durable from the start).
    fn rel(&self, path: &Path) -> Option<Vec<String>> {
        let rest = path.strip_prefix(&self.inner.root).ok()?;
        let parts: Vec<String> = rest
            .components()
            .filter_map(|c| match c {
                Component::Normal(s) => Some(s.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect();
        Some(parts)
    }

    /// Writes the durable image after the loss into `dir`, choosing as the
    /// module docs say with `rng`.
    pub(crate) fn image(&self, dir: &Path, rng: &mut Rng) {
        let fs = self.fs();
        std::fs::create_dir_all(dir).unwrap();
        write_image(&fs, ROOT, dir, rng);
    }

    /// Freezes this shim (every later operation on it fails, so a dropped
    /// store cannot touch the image) and returns a new one at the same root
    /// holding what survives `crash`: everything written for a kill, only
    /// what was synced (file bytes and directory entries) for a power loss.
    pub(crate) fn crash(&self, crash: Crash) -> PowerLoss {
        self.inner.crash_at.store(0, Ordering::SeqCst);
        let fs = self.fs();
        let kill = crash == Crash::Kill;
        let nodes = fs
            .nodes
            .iter()
            .map(|(ino, node)| {
                let node = match node {
                    Node::File(f) => {
                        let bytes = if kill { &f.live } else { &f.durable };
                        Node::File(FileNode {
                            live: bytes.clone(),
                            durable: bytes.clone(),
                            dirty: false,
                        })
                    }
                    Node::Dir(d) => {
                        let entries = if kill { &d.live } else { &d.durable };
                        Node::Dir(DirNode {
                            live: entries.clone(),
                            durable: entries.clone(),
                        })
                    }
                };
                (*ino, node)
            })
            .collect();
        let after = PowerLoss::new(&self.inner.root, u64::MAX);
        *after.fs() = Fs {
            nodes,
            next: fs.next,
        };
        after
    }

    /// The live bytes of the file at `path`, if there is one.
    pub(crate) fn read_live(&self, path: &Path) -> Option<Vec<u8>> {
        let parts = self.rel(path)?;
        let fs = self.fs();
        match fs.nodes.get(&fs.resolve(&parts)?) {
            Some(Node::File(f)) => Some(f.live.clone()),
            _ => None,
        }
    }

    /// Writes the live image (what the running process sees: no power
    /// loss) into `dir`.
    pub(crate) fn live_image(&self, dir: &Path) {
        let fs = self.fs();
        std::fs::create_dir_all(dir).unwrap();
        write_image(&fs, ROOT, dir, &mut Live);
    }
}

/// How an image picks each directory's entries and each file's bytes.
trait Pick {
    /// The live version (else the synced one)?
    fn live(&mut self) -> bool;
}

impl Pick for Rng {
    fn live(&mut self) -> bool {
        rand::Rng::random_bool(self, 0.5)
    }
}

/// Always the live version.
struct Live;

impl Pick for Live {
    fn live(&mut self) -> bool {
        true
    }
}

fn write_image(fs: &Fs, ino: Ino, at: &Path, rng: &mut impl Pick) {
    let Some(Node::Dir(d)) = fs.nodes.get(&ino) else {
        return;
    };
    let entries = if d.live != d.durable && rng.live() {
        &d.live
    } else {
        &d.durable
    };
    for (name, child) in entries {
        let path = at.join(name);
        match fs.nodes.get(child) {
            Some(Node::Dir(_)) => {
                std::fs::create_dir_all(&path).unwrap();
                write_image(fs, *child, &path, rng);
            }
            Some(Node::File(f)) => {
                let bytes = after_loss(f, rng);
                std::fs::write(&path, bytes).unwrap();
            }
            None => {}
        }
    }
}

/// A file's bytes after the loss: the size is the synced one or the live
/// one, and each 512-byte sector holds its synced or its live content (the
/// disk writes whole sectors, in any order, from the page cache).
fn after_loss(f: &FileNode, rng: &mut impl Pick) -> Vec<u8> {
    if !f.dirty {
        return f.durable.clone();
    }
    let len = if rng.live() {
        f.live.len()
    } else {
        f.durable.len()
    };
    let mut out = vec![0u8; len];
    let sector = SECTOR as usize;
    for start in (0..len).step_by(sector) {
        let end = (start + sector).min(len);
        let src = if rng.live() { &f.live } else { &f.durable };
        if start < src.len() {
            let to = end.min(src.len());
            out[start..to].copy_from_slice(&src[start..to]);
        }
    }
    out
}

fn write_at(bytes: &mut Vec<u8>, offset: u64, data: &[u8]) {
    let at = usize::try_from(offset).unwrap();
    if bytes.len() < at + data.len() {
        bytes.resize(at + data.len(), 0);
    }
    bytes[at..at + data.len()].copy_from_slice(data);
}

impl Fs {
    fn dir(&self, ino: Ino) -> Option<&DirNode> {
        match self.nodes.get(&ino) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    fn dir_mut(&mut self, ino: Ino) -> Option<&mut DirNode> {
        match self.nodes.get_mut(&ino) {
            Some(Node::Dir(d)) => Some(d),
            _ => None,
        }
    }

    /// The inode at `parts` in the live tree.
    fn resolve(&self, parts: &[String]) -> Option<Ino> {
        let mut ino = ROOT;
        for p in parts {
            ino = *self.dir(ino)?.live.get(p)?;
        }
        Some(ino)
    }

    /// The directory holding the last component, and that name.
    fn parent<'a>(&self, parts: &'a [String]) -> Option<(Ino, &'a str)> {
        let (name, dirs) = parts.split_last()?;
        Some((self.resolve(dirs)?, name.as_str()))
    }

    fn alloc(&mut self, node: Node) -> Ino {
        let ino = self.next;
        self.next += 1;
        self.nodes.insert(ino, node);
        ino
    }
}

#[derive(Debug)]
struct ShimFile {
    shim: PowerLoss,
    ino: Ino,
}

impl ShimFile {
    fn with<T>(&self, f: impl FnOnce(&mut FileNode) -> T) -> io::Result<T> {
        let mut fs = self.shim.fs();
        match fs.nodes.get_mut(&self.ino) {
            Some(Node::File(node)) => Ok(f(node)),
            _ => Err(io::Error::other("not a file")),
        }
    }
}

impl StorageFile for ShimFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.with(|f| {
            let Ok(at) = usize::try_from(offset) else {
                return 0;
            };
            if at >= f.live.len() {
                return 0;
            }
            let n = buf.len().min(f.live.len() - at);
            buf[..n].copy_from_slice(&f.live[at..at + n]);
            n
        })
    }

    fn write_all_at(&self, data: &[u8], offset: u64) -> io::Result<()> {
        self.shim.tick()?;
        self.with(|f| {
            write_at(&mut f.live, offset, data);
            f.dirty = true;
        })
    }

    fn len(&self) -> io::Result<u64> {
        self.with(|f| f.live.len() as u64)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.shim.tick()?;
        self.with(|f| {
            f.durable = f.live.clone();
            f.dirty = false;
        })
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.shim.tick()?;
        self.with(|f| {
            f.live.resize(usize::try_from(len).unwrap_or(usize::MAX), 0);
            f.dirty = true;
        })
    }
}

#[derive(Debug)]
struct ShimLock;
impl StorageLock for ShimLock {}

impl Storage for PowerLoss {
    fn open(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.check()?;
        let parts = self.rel(path).ok_or_else(|| not_found(path))?;
        let fs = self.fs();
        let ino = fs.resolve(&parts).ok_or_else(|| not_found(path))?;
        if !matches!(fs.nodes.get(&ino), Some(Node::File(_))) {
            return Err(io::Error::other(format!(
                "{} is a directory",
                path.display()
            )));
        }
        Ok(Arc::new(ShimFile {
            shim: self.clone(),
            ino,
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn StorageFile>> {
        self.tick()?;
        let parts = self.rel(path).ok_or_else(|| not_found(path))?;
        let mut fs = self.fs();
        let (dir, name) = fs.parent(&parts).ok_or_else(|| not_found(path))?;
        // A new inode: the old file, if any, keeps its own bytes for
        // whichever directory image still names it.
        let ino = fs.alloc(Node::File(FileNode::default()));
        fs.dir_mut(dir)
            .ok_or_else(|| not_found(path))?
            .live
            .insert(name.to_owned(), ino);
        Ok(Arc::new(ShimFile {
            shim: self.clone(),
            ino,
        }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        self.check()?;
        match self.rel(path) {
            None => Ok(true),
            Some(parts) => Ok(self.fs().resolve(&parts).is_some()),
        }
    }

    fn list_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        self.check()?;
        let parts = self.rel(path).ok_or_else(|| not_found(path))?;
        let fs = self.fs();
        let ino = fs.resolve(&parts).ok_or_else(|| not_found(path))?;
        let d = fs.dir(ino).ok_or_else(|| not_found(path))?;
        Ok(d.live.keys().cloned().collect())
    }

    fn is_dir(&self, path: &Path) -> io::Result<bool> {
        self.check()?;
        match self.rel(path) {
            None => Ok(true),
            Some(parts) => {
                let fs = self.fs();
                Ok(fs.resolve(&parts).is_some_and(|i| fs.dir(i).is_some()))
            }
        }
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        self.tick()?;
        let Some(parts) = self.rel(path) else {
            return Ok(());
        };
        let mut fs = self.fs();
        let mut ino = ROOT;
        for p in &parts {
            let next = fs
                .dir(ino)
                .ok_or_else(|| not_found(path))?
                .live
                .get(p)
                .copied();
            ino = match next {
                Some(i) => i,
                None => {
                    let i = fs.alloc(Node::Dir(DirNode::default()));
                    fs.dir_mut(ino)
                        .ok_or_else(|| not_found(path))?
                        .live
                        .insert(p.clone(), i);
                    i
                }
            };
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.tick()?;
        let f = self.rel(from).ok_or_else(|| not_found(from))?;
        let t = self.rel(to).ok_or_else(|| not_found(to))?;
        let mut fs = self.fs();
        let (fd, fname) = fs.parent(&f).ok_or_else(|| not_found(from))?;
        let (td, tname) = fs.parent(&t).ok_or_else(|| not_found(to))?;
        let ino = fs
            .dir_mut(fd)
            .ok_or_else(|| not_found(from))?
            .live
            .remove(fname)
            .ok_or_else(|| not_found(from))?;
        fs.dir_mut(td)
            .ok_or_else(|| not_found(to))?
            .live
            .insert(tname.to_owned(), ino);
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.tick()?;
        let parts = self.rel(path).ok_or_else(|| not_found(path))?;
        let mut fs = self.fs();
        let (dir, name) = fs.parent(&parts).ok_or_else(|| not_found(path))?;
        fs.dir_mut(dir)
            .ok_or_else(|| not_found(path))?
            .live
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        // Unlinking the directory from its parent is enough here: what it
        // holds is unreachable in the live tree. Like any entry change, it
        // is durable once the parent is synced.
        self.remove_file(path)
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        self.tick()?;
        let Some(parts) = self.rel(path) else {
            return Ok(());
        };
        let mut fs = self.fs();
        let ino = fs.resolve(&parts).ok_or_else(|| not_found(path))?;
        let d = fs.dir_mut(ino).ok_or_else(|| not_found(path))?;
        d.durable = d.live.clone();
        Ok(())
    }

    fn try_lock(&self, _path: &Path, _pid: &str) -> io::Result<LockOutcome> {
        self.check()?;
        Ok(LockOutcome::Acquired(Box::new(ShimLock)))
    }
}
