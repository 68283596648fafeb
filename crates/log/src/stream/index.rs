//! Sparse indexes of segments (docs/design.md "Index file"): the active
//! segment's lives in memory; a sealed segment's lives in its `.idx` file
//! and is read on demand through the store's bounded [`IndexCache`], so
//! memory does not grow with the log (W6). A sealed segment whose index is
//! not on disk yet (just sealed, rebuilt, or in a read-only store) keeps it
//! in memory until the maintenance thread writes it.
//!
//! [`IndexCache`]: crate::index_cache::IndexCache

use std::path::Path;

use durabus_core::{Error, Result};

use crate::index_cache::SharedIndex;
use crate::record::Kind;
use crate::segment::{self, Damage, HeaderCheck, IndexEntry, ScanEnd, SEGMENT_HEADER};
use crate::storage::{Storage, StorageFile};

use super::state::Inner;
use super::{damage, scan_error};

/// The index of a sealed segment from its `.idx` file, if present and sane
/// (entries in order, inside the segment's `size` bytes, at or above `base`).
pub(super) fn load_index(
    storage: &dyn Storage,
    segdir: &Path,
    base: u64,
    size: u64,
) -> Option<Vec<IndexEntry>> {
    let b = storage
        .read_file(&segdir.join(segment::idx_name(base)))
        .ok()?;
    let entries = segment::decode_index(&b)?;
    let sane = entries
        .windows(2)
        .all(|w| w[0].offset < w[1].offset && w[0].seq < w[1].seq && w[0].time <= w[1].time)
        && entries
            .iter()
            .all(|e| e.offset >= SEGMENT_HEADER && e.offset < size && e.seq >= base);
    sane.then_some(entries)
}

/// Checks a segment header; `Ok(false)` when it is short (torn creation).
pub(super) fn check_header(file: &dyn StorageFile, path: &Path) -> Result<bool> {
    let mut h = [0u8; 16];
    let n = segment::read_full(file, &mut h, 0)
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    match segment::check_header(&h[..n]) {
        HeaderCheck::Ok => Ok(true),
        HeaderCheck::Short => Ok(false),
        HeaderCheck::BadMagic => Err(Error::corrupt(path, 0, "not a durabus segment (bad magic)")),
        HeaderCheck::Version(v) => Err(Error::UnsupportedFormat {
            path: path.to_path_buf(),
            found: v,
            supported: segment::SEGMENT_VERSION,
        }),
    }
}

/// Rebuilds the index of a sealed segment by reading it (verifying every
/// record), with the damaged spans it stepped over. `base..=last_seq` are
/// the sequences it may hold.
pub(super) fn rebuild_index(
    file: &dyn StorageFile,
    path: &Path,
    size: u64,
    base: u64,
    last_seq: u64,
) -> Result<(Vec<IndexEntry>, Vec<Damage>)> {
    if !check_header(file, path)? {
        return Err(Error::corrupt(path, 0, "segment header is truncated"));
    }
    let mut index = Vec::new();
    let mut damage = Vec::new();
    let mut start = SEGMENT_HEADER;
    let mut next = base;
    loop {
        let end = segment::scan(file, start, size, &mut |off, r| {
            if r.kind == Kind::Message {
                segment::maybe_index(&mut index, r.seq, r.time, off);
                next = next.max(r.seq + 1);
            }
            Ok(true)
        })
        .map_err(|e| scan_error(path, e))?;
        let ScanEnd::Bad { offset, reason, .. } = end else {
            index.shrink_to_fit();
            return Ok((index, damage));
        };
        let d = damage::measure(file, path, offset, size, next, last_seq, reason)?;
        warn_damage(path, &d);
        next = next.max(d.hi.saturating_add(1));
        start = d.end;
        damage.push(d);
    }
}

pub(super) fn warn_damage(path: &Path, d: &Damage) {
    tracing::warn!(segment = %path.display(), offset = d.start, end = d.end, lost = ?d.seqs(),
        reason = %d.reason, "a damaged record was stepped over; `durabus repair` records the loss");
}

/// Where [`Inner::sealed_index`] found an index.
enum Found {
    /// Shared with the cache.
    Shared(SharedIndex),
    /// In the segment's metadata (not on disk).
    Pinned,
}

impl Inner {
    /// Runs `f` on the sparse index of the segment starting at `base`: the
    /// active segment's, a sealed one's from the cache, from its `.idx`
    /// file, or rebuilt from the segment when that file is missing or bad
    /// (recovery rule 6; damage it meets is remembered as a read's would
    /// be). A missing segment has an empty index.
    pub(super) fn with_index<R>(
        &mut self,
        storage: &dyn Storage,
        base: u64,
        f: impl FnOnce(&[IndexEntry]) -> R,
    ) -> Result<R> {
        if base == self.active.base {
            return Ok(f(&self.active.index));
        }
        let i = self.sealed.partition_point(|s| s.base < base);
        let Some(seg) = self.sealed.get(i).filter(|s| s.base == base) else {
            return Err(Error::internal(format!(
                "segment {base} vanished while in use; retry"
            )));
        };
        if seg.missing {
            return Ok(f(&[]));
        }
        if !seg.indexed {
            return Ok(f(&seg.index));
        }
        if let Some(ix) = self.indexes.get(self.cache_id, base) {
            return Ok(f(&ix));
        }
        match self.sealed_index(storage, i)? {
            Found::Shared(ix) => Ok(f(&ix)),
            Found::Pinned => Ok(f(&self.sealed[i].index)),
        }
    }

    /// Loads the index of `sealed[i]` from its `.idx` file into the cache,
    /// or rebuilds it. A rebuilt index is written at once when the store
    /// may change files (not during recovery, not read-only); otherwise,
    /// or when that fails, it stays in memory until a checkpoint writes it.
    fn sealed_index(&mut self, storage: &dyn Storage, i: usize) -> Result<Found> {
        let (base, size, last_seq, path) = {
            let s = &self.sealed[i];
            (s.base, s.size, s.last_seq, s.path.clone())
        };
        if let Some(ix) = load_index(storage, &self.segdir, base, size) {
            let ix: SharedIndex = ix.into();
            self.indexes.insert(self.cache_id, base, ix.clone());
            return Ok(Found::Shared(ix));
        }
        tracing::warn!(segment = %path.display(), "segment index missing or bad: rebuilding it");
        let file = self.seg_file(storage, base)?;
        let (index, found) = rebuild_index(&*file, &path, size, base, last_seq)?;
        for d in found {
            if segment::damage_covering(&self.sealed[i].damage, d.start).is_none() {
                self.note_damage(base, d);
            }
        }
        if !self.recovering && !storage.is_read_only() {
            match segment::write_index(storage, &self.segdir, base, &index) {
                Ok(()) => {
                    let ix: SharedIndex = index.into();
                    self.indexes.insert(self.cache_id, base, ix.clone());
                    return Ok(Found::Shared(ix));
                }
                Err(e) => {
                    tracing::warn!(segment = %path.display(), error = %e,
                        "could not write a rebuilt segment index; the next checkpoint retries")
                }
            }
        }
        let seg = &mut self.sealed[i];
        seg.index = index;
        seg.indexed = false;
        self.ckpt_needed = true;
        Ok(Found::Pinned)
    }

    /// Records that the index of sealed segment `base` is on disk: its
    /// in-memory copy is dropped (a reader loads it into the cache when it
    /// needs it, so a log nobody reads costs no index memory at all).
    pub(super) fn index_written(&mut self, base: u64) {
        let i = self.sealed.partition_point(|s| s.base < base);
        let Some(seg) = self.sealed.get_mut(i).filter(|s| s.base == base) else {
            return;
        };
        seg.indexed = true;
        seg.index = Vec::new();
    }

    /// Writes the index files of sealed segments that are not on disk
    /// (after recovery; failures are logged, the next checkpoint retries).
    pub(super) fn write_pinned_indexes(&mut self, stream: &str, storage: &dyn Storage) {
        let pinned: Vec<u64> = self
            .sealed
            .iter()
            .filter(|s| !s.indexed && !s.missing)
            .map(|s| s.base)
            .collect();
        for base in pinned {
            let i = self.sealed.partition_point(|s| s.base < base);
            match segment::write_index(storage, &self.segdir, base, &self.sealed[i].index) {
                Ok(()) => self.index_written(base),
                Err(e) => {
                    tracing::warn!(stream, base, error = %e, "could not write segment index")
                }
            }
        }
    }
}
