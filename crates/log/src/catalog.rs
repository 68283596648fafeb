//! The store's catalog (docs/design.md, "Catalog"): every file stream's
//! name, routing subjects, config and creation time, and, for streams that
//! closed cleanly, a summary of their state, so a store opens without
//! opening any stream and lists streams without recovering the ones the
//! catalog can vouch for.
//!
//! Two files in the data directory: `catalog`, a snapshot replaced
//! atomically, and `catalog.journal`, the changes since it (magic
//! `DBUSCAJ\0`, version u32, the snapshot generation u64, then entries
//! framed `len u32 | crc32c u32 | postcard`), appended and fsynced before
//! the change it announces.
//!
//! The snapshot is read lazily: a header, the entries (each framed and
//! checked on its own), then an index of fixed-size records sorted by name
//! with the names after them and one CRC32C over both. Opening reads the
//! header and the index only; an entry is read and decoded when its stream
//! is first named, so the open costs the same with one stream or 10,000.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::storage::{write_atomic, Storage, StorageFile};

/// The snapshot, in the data directory.
pub(crate) const CATALOG_FILE: &str = "catalog";
/// The journal of changes since the snapshot, in the data directory.
pub(crate) const JOURNAL_FILE: &str = "catalog.journal";
const MAGIC: &[u8; 8] = b"DBUSCAT\0";
const JOURNAL_MAGIC: &[u8; 8] = b"DBUSCAJ\0";
/// Version of both files' framing and bodies (1: one postcard body, read
/// whole; 2: entries framed one by one behind an index, and `Closed`).
const VERSION: u32 = 2;
/// Snapshot header: magic, version u32, entry count u32, generation u64,
/// index offset u64, CRC32C of those.
const HEADER: usize = 36;
/// An index record: entry offset u64, entry length u32, name offset u32
/// and length u32 (in the names after the records), reserved u32, and the
/// time (unix ns) from which `max_age` may have made its summary untrue
/// (i64; `i64::MAX`: never).
const RECORD: usize = 32;
/// Journal header: magic, version u32, generation u64, CRC32C of those.
const JOURNAL_HEADER: u64 = 24;
/// The largest journal entry accepted when reading.
const MAX_ENTRY: usize = 16 << 20;
/// A journal longer than this (and than the snapshot) is folded into a new
/// snapshot.
const COMPACT_AT: u64 = 1 << 20;
/// A clean close folds a journal longer than this: the next open replays
/// the journal whole, so it is kept short where that is cheap.
const CLOSE_COMPACT_AT: u64 = 64 << 10;

/// A stream's state when it last closed cleanly: what `list_streams`
/// reports for it while it is not open (and nothing marked it since).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Summary {
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) first_seq: u64,
    pub(crate) first_time_ns: Option<i64>,
    pub(crate) last_seq: u64,
    pub(crate) last_time_ns: Option<i64>,
    pub(crate) num_deleted: u64,
    pub(crate) num_subjects: u64,
    /// Durable consumers (ephemeral ones do not outlive a close).
    pub(crate) consumer_count: u64,
}

/// One file stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) name: String,
    /// Its effective subjects (routing and overlap checks).
    pub(crate) subjects: Vec<String>,
    /// Unix nanoseconds, as in its `config.json`.
    pub(crate) created_ns: i64,
    /// Its `StreamConfig` as JSON (self-describing, as `config.json`, so a
    /// config field added later reads back with its default). Bytes on the
    /// wire as postcard writes any `[u8]`; decoded as one copy.
    #[serde(with = "serde_bytes")]
    pub(crate) config: Vec<u8>,
    /// Its state when it last closed cleanly; `None`: unknown without
    /// recovering it.
    pub(crate) summary: Option<Summary>,
}

/// A journal entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Change {
    /// A stream was (or is about to be) created or its config updated.
    Put(Entry),
    /// A stream was deleted.
    Delete(String),
    /// The stream is about to change: its summary is no longer true.
    Dirty(String),
    /// The stream's `config.json` is about to be replaced: until a `Put`
    /// follows, the file is the truth.
    Updating(String),
    /// The stream closed cleanly with this entry and its summary: the
    /// marks before it no longer hold.
    Closed(Entry),
}

/// One entry of a snapshot to write: its name, when `max_age` may make its
/// summary untrue, and its framed bytes (encoded now, or copied from the
/// snapshot read at open).
#[derive(Debug)]
pub(crate) struct Item {
    name: String,
    due_ns: i64,
    framed: Vec<u8>,
}

impl Item {
    /// `e`, encoded.
    pub(crate) fn new(e: &Entry, due_ns: i64) -> std::io::Result<Item> {
        Ok(Item {
            name: e.name.clone(),
            due_ns,
            framed: encode_framed(e)?,
        })
    }
}

/// A snapshot as opened: its index in memory, its entries read on demand
/// through the file it was opened from (a later snapshot replaces the
/// file's name, not what this handle reads).
pub(crate) struct Snapshot {
    file: Arc<dyn StorageFile>,
    /// Its size in bytes.
    size: u64,
    /// Where the entries end and the index starts.
    index_off: u64,
    /// The records, then the names (the CRC stripped).
    index: Vec<u8>,
    count: usize,
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("catalog::Snapshot")
            .field("count", &self.count)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

impl Snapshot {
    /// Reads the header and the index of the snapshot `file`, checking
    /// both (CRCs, bounds, names valid UTF-8 in strictly ascending order);
    /// the reason when it is not one this build reads. Never panics.
    fn open(file: Arc<dyn StorageFile>) -> Result<(Snapshot, u64), String> {
        let len = file
            .len()
            .map_err(|e| format!("reading the catalog: {e}"))?;
        if len < (HEADER + 4) as u64 {
            return Err("not a catalog (too short)".into());
        }
        let mut h = [0u8; HEADER];
        file.read_exact_at(&mut h, 0)
            .map_err(|e| format!("reading the catalog: {e}"))?;
        if &h[..8] != MAGIC {
            return Err("not a catalog (bad magic)".into());
        }
        let version = u32_at(&h, 8);
        if u32_at(&h, 32) != crc32c::crc32c(&h[..32]) {
            return Err("header checksum mismatch".into());
        }
        if version != VERSION {
            return Err(format!("version {version}, this build reads {VERSION}"));
        }
        let count = u32_at(&h, 12) as usize;
        let gen = u64_at(&h, 16);
        let index_off = u64_at(&h, 24);
        if index_off < HEADER as u64 || index_off > len - 4 {
            return Err(format!("index offset {index_off} outside the file"));
        }
        let index_len =
            usize::try_from(len - index_off).map_err(|_| "index too large".to_owned())?;
        let mut index = vec![0u8; index_len];
        file.read_exact_at(&mut index, index_off)
            .map_err(|e| format!("reading the catalog: {e}"))?;
        let crc = u32_at(&index, index_len - 4);
        index.truncate(index_len - 4);
        if crc32c::crc32c(&index) != crc {
            return Err("index checksum mismatch".into());
        }
        if count.checked_mul(RECORD).is_none_or(|n| n > index.len()) {
            return Err(format!("{count} index records do not fit the index"));
        }
        let snap = Snapshot {
            file,
            size: len,
            index_off,
            index,
            count,
        };
        let mut prev: Option<&str> = None;
        for i in 0..count {
            let r = snap.record(i);
            let (off, elen) = (u64_at(r, 0), u64::from(u32_at(r, 8)));
            if off < HEADER as u64 || off.checked_add(elen).is_none_or(|end| end > index_off) {
                return Err(format!("entry {i} outside the entries"));
            }
            let name = snap
                .checked_name(i)
                .ok_or_else(|| format!("index record {i} has no valid name"))?;
            if prev.is_some_and(|p| p >= name) {
                return Err(format!("index names out of order at {name:?}"));
            }
            prev = Some(name);
        }
        Ok((snap, gen))
    }

    fn record(&self, i: usize) -> &[u8] {
        &self.index[i * RECORD..(i + 1) * RECORD]
    }

    fn checked_name(&self, i: usize) -> Option<&str> {
        let r = self.record(i);
        let at = self.count * RECORD + u32_at(r, 12) as usize;
        let end = at.checked_add(u32_at(r, 16) as usize)?;
        std::str::from_utf8(self.index.get(at..end)?).ok()
    }

    /// The number of entries.
    pub(crate) fn len(&self) -> usize {
        self.count
    }

    /// Entry `i`'s name (`i < len()`).
    pub(crate) fn name(&self, i: usize) -> &str {
        // Checked by `open`.
        self.checked_name(i).unwrap_or_default()
    }

    /// From when `max_age` may have made entry `i`'s summary untrue.
    pub(crate) fn due_ns(&self, i: usize) -> i64 {
        let mut x = [0u8; 8];
        x.copy_from_slice(&self.record(i)[24..32]);
        i64::from_le_bytes(x)
    }

    /// The index of the entry named `name`.
    pub(crate) fn find(&self, name: &str) -> Option<usize> {
        let (mut lo, mut hi) = (0, self.count);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match self.name(mid).cmp(name) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(mid),
            }
        }
        None
    }

    /// Entry `i`'s framed bytes within `region` (the entries, read from
    /// the snapshot's start), when they verify.
    fn framed_in<'a>(&self, region: &'a [u8], i: usize) -> Option<&'a [u8]> {
        let r = self.record(i);
        let off = usize::try_from(u64_at(r, 0)).ok()?;
        let b = region.get(off..off + u32_at(r, 8) as usize)?;
        crate::framed::one(b).map(|_| b)
    }

    /// Reads entry `i` (checked: its frame, CRC and name); the reason
    /// when it does not verify.
    pub(crate) fn entry(&self, i: usize) -> Result<Entry, String> {
        let r = self.record(i);
        let mut b = vec![0u8; u32_at(r, 8) as usize];
        self.file
            .read_exact_at(&mut b, u64_at(r, 0))
            .map_err(|e| format!("reading the catalog: {e}"))?;
        self.decode(i, Some(&b))
    }

    /// Entry `i` from its framed bytes `b` (`None`: not found).
    fn decode(&self, i: usize, b: Option<&[u8]>) -> Result<Entry, String> {
        let e = b
            .and_then(crate::framed::one)
            .and_then(|body| postcard::from_bytes::<Entry>(body).ok());
        match e {
            Some(e) if e.name == self.name(i) => Ok(e),
            _ => Err(format!(
                "the catalog's entry of stream {} does not verify",
                self.name(i)
            )),
        }
    }

    /// The entries (every byte before the index), in one read.
    fn region(&self) -> std::io::Result<Vec<u8>> {
        let mut region = vec![0u8; usize::try_from(self.index_off).unwrap_or(0)];
        self.file.read_exact_at(&mut region, 0)?;
        Ok(region)
    }

    /// Every entry `keep` selects, read in one go, each checked as
    /// [`Snapshot::entry`] checks it (decoded on every core).
    pub(crate) fn entries(&self, keep: impl Fn(usize) -> bool) -> Vec<Result<Entry, String>> {
        let region = self.region();
        let kept: Vec<usize> = (0..self.count).filter(|&i| keep(i)).collect();
        crate::parallel::map(&kept, |&i| match &region {
            Ok(region) => self.decode(i, self.framed_in(region, i)),
            Err(e) => Err(format!("reading the catalog: {e}")),
        })
    }

    /// The entries `keep` selects, as items of a new snapshot, copied
    /// without decoding (one read; an entry that does not verify is left
    /// out: its directory is found when `streams/` is listed).
    pub(crate) fn items(&self, keep: impl Fn(usize) -> bool) -> std::io::Result<Vec<Item>> {
        let region = self.region()?;
        let mut out = Vec::new();
        for i in (0..self.count).filter(|&i| keep(i)) {
            match self.framed_in(&region, i) {
                Some(b) => out.push(Item {
                    name: self.name(i).to_owned(),
                    due_ns: self.due_ns(i),
                    framed: b.to_vec(),
                }),
                None => tracing::warn!(stream = self.name(i),
                    "the catalog's entry of this stream does not verify: left out of the new snapshot"),
            }
        }
        Ok(out)
    }
}

/// A catalog as read from disk.
#[derive(Debug)]
pub(crate) struct Loaded {
    /// The snapshot's generation.
    pub(crate) gen: u64,
    /// The snapshot, its entries not read yet.
    pub(crate) snapshot: Snapshot,
    /// What the journal says of streams since the snapshot: their newer
    /// entry, or `None` for a deleted one.
    pub(crate) journal: BTreeMap<String, Option<Entry>>,
    /// Streams marked since the snapshot (their summaries were dropped).
    pub(crate) dirty: BTreeSet<String>,
    /// Streams whose `config.json` was being replaced (no `Put` after it).
    pub(crate) updating: BTreeSet<String>,
    /// Where the journal's entries end (`None`: there is no journal of
    /// this generation; a writer starts one).
    pub(crate) journal_end: Option<u64>,
}

/// `v` encoded and framed (a journal change, a snapshot entry).
fn encode_framed<T: Serialize>(v: &T) -> std::io::Result<Vec<u8>> {
    let body = postcard::to_stdvec(v).map_err(std::io::Error::other)?;
    if body.len() > MAX_ENTRY {
        return Err(std::io::Error::other("catalog entry too large"));
    }
    let mut out = Vec::with_capacity(body.len() + 8);
    crate::framed::put(&mut out, &body);
    Ok(out)
}

/// Encodes a snapshot of `items` (names unique).
fn encode_snapshot(gen: u64, mut items: Vec<Item>) -> std::io::Result<Vec<u8>> {
    items.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let count = u32::try_from(items.len()).map_err(std::io::Error::other)?;
    let too_large = || std::io::Error::other("catalog too large");
    let mut out = Vec::with_capacity(
        HEADER
            + items
                .iter()
                .map(|i| i.framed.len() + RECORD + i.name.len())
                .sum::<usize>()
            + 4,
    );
    out.resize(HEADER, 0);
    let mut records = Vec::with_capacity(items.len() * RECORD);
    let mut names = Vec::new();
    for item in &items {
        records.extend_from_slice(&(out.len() as u64).to_le_bytes());
        let len = u32::try_from(item.framed.len()).map_err(|_| too_large())?;
        records.extend_from_slice(&len.to_le_bytes());
        let name_off = u32::try_from(names.len()).map_err(|_| too_large())?;
        records.extend_from_slice(&name_off.to_le_bytes());
        records.extend_from_slice(&(item.name.len() as u32).to_le_bytes());
        records.extend_from_slice(&0u32.to_le_bytes());
        records.extend_from_slice(&item.due_ns.to_le_bytes());
        names.extend_from_slice(item.name.as_bytes());
        out.extend_from_slice(&item.framed);
    }
    let index_off = out.len() as u64;
    out[..8].copy_from_slice(MAGIC);
    out[8..12].copy_from_slice(&VERSION.to_le_bytes());
    out[12..16].copy_from_slice(&count.to_le_bytes());
    out[16..24].copy_from_slice(&gen.to_le_bytes());
    out[24..32].copy_from_slice(&index_off.to_le_bytes());
    let crc = crc32c::crc32c(&out[..32]);
    out[32..36].copy_from_slice(&crc.to_le_bytes());
    let index_start = out.len();
    out.extend_from_slice(&records);
    out.extend_from_slice(&names);
    let crc = crc32c::crc32c(&out[index_start..]);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

fn journal_header(gen: u64) -> [u8; JOURNAL_HEADER as usize] {
    let mut h = [0u8; JOURNAL_HEADER as usize];
    h[..8].copy_from_slice(JOURNAL_MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&gen.to_le_bytes());
    let crc = crc32c::crc32c(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A journal's generation and entries up to the first that does not
/// verify, with where they end. Never panics.
fn decode_journal(b: &[u8]) -> (Option<u64>, Vec<Change>, u64) {
    if b.len() < JOURNAL_HEADER as usize
        || &b[..8] != JOURNAL_MAGIC
        || b[8..12] != VERSION.to_le_bytes()
        || b[20..24] != crc32c::crc32c(&b[..20]).to_le_bytes()
    {
        return (None, Vec::new(), 0);
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&b[12..20]);
    let gen = u64::from_le_bytes(g);
    let (out, at) = crate::framed::read::<Change>(b, JOURNAL_HEADER as usize, MAX_ENTRY);
    (Some(gen), out, at as u64)
}

/// Reads the catalog of the data directory `dir`: `Ok(None)` when there is
/// none, `Err(reason)` when it cannot be used (damaged, another version,
/// or a journal that does not belong to it). A reader beside a live owner
/// that replaced both files between its two reads tries again.
pub(crate) fn load(st: &dyn Storage, dir: &Path) -> Result<Option<Loaded>, String> {
    let snap_path = dir.join(CATALOG_FILE);
    let journal_path = dir.join(JOURNAL_FILE);
    for _ in 0..5 {
        let file = match st.open_read(&snap_path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", snap_path.display())),
        };
        let (snapshot, gen) = Snapshot::open(file)?;
        let journal = match st.read_file(&journal_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("reading {}: {e}", journal_path.display())),
        };
        let mut loaded = Loaded {
            gen,
            snapshot,
            journal: BTreeMap::new(),
            dirty: BTreeSet::new(),
            updating: BTreeSet::new(),
            journal_end: None,
        };
        let Some(journal) = journal else {
            return Ok(Some(loaded));
        };
        let (gen, changes, end) = decode_journal(&journal);
        match gen {
            // No valid header: a journal whose creation was cut off (it
            // is written whole by an atomic replace, so this is damage or
            // a hand edit). Nothing in it can be trusted, nor the absence
            // of a mark.
            None => return Err("the catalog journal has no valid header".into()),
            // The owner wrote a newer snapshot after this one was read.
            Some(g) if g > loaded.gen => continue,
            // A journal the snapshot already holds (a compaction cut off
            // before the new journal was written).
            Some(g) if g < loaded.gen => return Ok(Some(loaded)),
            // (and `journal_end` stays `None`: a writer replaces it)
            Some(_) => {}
        }
        for c in changes {
            match c {
                Change::Put(mut e) => {
                    loaded.updating.remove(&e.name);
                    // A put after a mark keeps the mark (the stream was
                    // open when its config changed).
                    if loaded.dirty.contains(&e.name) {
                        e.summary = None;
                    }
                    loaded.journal.insert(e.name.clone(), Some(e));
                }
                Change::Closed(e) => {
                    loaded.dirty.remove(&e.name);
                    loaded.updating.remove(&e.name);
                    loaded.journal.insert(e.name.clone(), Some(e));
                }
                Change::Delete(name) => {
                    loaded.dirty.remove(&name);
                    loaded.updating.remove(&name);
                    loaded.journal.insert(name, None);
                }
                Change::Dirty(name) => {
                    if let Some(Some(e)) = loaded.journal.get_mut(&name) {
                        e.summary = None;
                    }
                    loaded.dirty.insert(name);
                }
                Change::Updating(name) => {
                    loaded.updating.insert(name);
                }
            }
        }
        if end != journal.len() as u64 {
            // A torn append, or damage: the entries after it (marks among
            // them) cannot be read, so none of the summaries can be trusted.
            return Err(format!(
                "the catalog journal holds {} bytes that do not verify at offset {end}",
                journal.len() as u64 - end
            ));
        }
        loaded.journal_end = Some(end);
        return Ok(Some(loaded));
    }
    Err("the catalog kept changing while it was read".into())
}

/// The writer of a store's catalog (writable file stores only).
pub(crate) struct Writer {
    dir: PathBuf,
    gen: u64,
    journal: Arc<dyn StorageFile>,
    /// Where the next journal entry goes.
    end: u64,
    /// The last snapshot's size (the journal is folded in past it).
    snapshot_len: u64,
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("catalog::Writer")
            .field("gen", &self.gen)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl Writer {
    /// Writes a new snapshot of `items` (generation `gen`), then an empty
    /// journal of that generation, and opens it.
    pub(crate) fn create(
        st: &dyn Storage,
        dir: &Path,
        gen: u64,
        items: Vec<Item>,
    ) -> std::io::Result<Writer> {
        let bytes = encode_snapshot(gen, items)?;
        write_atomic(st, &dir.join(CATALOG_FILE), &bytes)?;
        let jpath = dir.join(JOURNAL_FILE);
        write_atomic(st, &jpath, &journal_header(gen))?;
        let journal = st.open(&jpath)?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            gen,
            journal,
            end: JOURNAL_HEADER,
            snapshot_len: bytes.len() as u64,
        })
    }

    /// Continues the journal of a catalog `load` read (or starts one of its
    /// generation when it has none).
    pub(crate) fn resume(st: &dyn Storage, dir: &Path, loaded: &Loaded) -> std::io::Result<Writer> {
        let jpath = dir.join(JOURNAL_FILE);
        let end = match loaded.journal_end {
            Some(end) => end,
            None => {
                write_atomic(st, &jpath, &journal_header(loaded.gen))?;
                JOURNAL_HEADER
            }
        };
        let journal = st.open(&jpath)?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            gen: loaded.gen,
            journal,
            end,
            snapshot_len: loaded.snapshot.size,
        })
    }

    /// Appends `changes` and fsyncs: durable when it returns.
    pub(crate) fn append(&mut self, changes: &[Change]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for c in changes {
            buf.extend_from_slice(&encode_framed(c)?);
        }
        self.journal.write_all_at(&buf, self.end)?;
        self.journal.sync_data()?;
        self.end += buf.len() as u64;
        Ok(())
    }

    /// Whether the journal has grown enough to be folded into a snapshot
    /// (`closing`: at a clean close, where a shorter one is folded).
    pub(crate) fn wants_compaction(&self, closing: bool) -> bool {
        if closing {
            self.end > JOURNAL_HEADER + CLOSE_COMPACT_AT
        } else {
            self.end > COMPACT_AT.max(self.snapshot_len)
        }
    }

    /// Folds everything into a new snapshot of `items` and starts an
    /// empty journal.
    pub(crate) fn compact(&mut self, st: &dyn Storage, items: Vec<Item>) -> std::io::Result<()> {
        *self = Writer::create(st, &self.dir, self.gen + 1, items)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::MemStorage;

    fn entry(name: &str, summary: bool) -> Entry {
        Entry {
            name: name.into(),
            subjects: vec![format!("{name}.>")],
            created_ns: 7,
            config: br#"{"name":"x"}"#.to_vec(),
            summary: summary.then_some(Summary {
                messages: 3,
                bytes: 99,
                first_seq: 1,
                first_time_ns: Some(5),
                last_seq: 3,
                last_time_ns: Some(6),
                num_deleted: 0,
                num_subjects: 3,
                consumer_count: 1,
            }),
        }
    }

    fn items(entries: &[Entry]) -> Vec<Item> {
        entries.iter().map(|e| Item::new(e, 9).unwrap()).collect()
    }

    /// Every entry of the snapshot `bytes`, or why it cannot be read.
    fn read_whole(bytes: &[u8]) -> Result<Vec<Entry>, String> {
        let st = MemStorage::new();
        st.create_dir_all(Path::new("/s")).unwrap();
        write_atomic(&st, Path::new("/s/catalog"), bytes).unwrap();
        let (snap, _) = Snapshot::open(st.open_read(Path::new("/s/catalog")).unwrap())?;
        (0..snap.len()).map(|i| snap.entry(i)).collect()
    }

    #[test]
    fn snapshot_and_journal_round_trip_and_a_torn_journal_tail_ends_it() {
        let st = MemStorage::new();
        let dir = Path::new("/d");
        st.create_dir_all(dir).unwrap();
        assert!(load(&st, dir).unwrap().is_none());
        let (a, b) = (entry("A", true), entry("B", true));
        let mut w = Writer::create(&st, dir, 4, items(&[b.clone(), a.clone()])).unwrap();
        w.append(&[Change::Dirty("A".into())]).unwrap();
        w.append(&[Change::Put(entry("C", false)), Change::Delete("B".into())])
            .unwrap();
        w.append(&[Change::Dirty("C".into())]).unwrap();
        let l = load(&st, dir).unwrap().unwrap();
        assert_eq!(l.gen, 4);
        // The snapshot, sorted by name, read entry by entry.
        assert_eq!(l.snapshot.len(), 2);
        assert_eq!(
            (l.snapshot.find("A"), l.snapshot.find("B")),
            (Some(0), Some(1))
        );
        assert_eq!(l.snapshot.find("C"), None);
        assert_eq!(l.snapshot.entry(0).unwrap(), a);
        assert_eq!(l.snapshot.due_ns(1), 9);
        assert_eq!(l.journal["C"].as_ref().unwrap().summary, None);
        assert_eq!(l.journal["B"], None);
        assert!(l.dirty.contains("A") && l.dirty.contains("C"));
        // A clean close clears the marks of what it names.
        w.append(&[Change::Closed(entry("A", true))]).unwrap();
        let l = load(&st, dir).unwrap().unwrap();
        assert!(!l.dirty.contains("A") && l.dirty.contains("C"));
        assert_eq!(l.journal["A"], Some(a.clone()));
        // A journal cut anywhere but between entries, or with any bit
        // flipped, makes the catalog unusable (what was lost may be a mark).
        let jpath = dir.join(JOURNAL_FILE);
        let full = st.read_file(&jpath).unwrap();
        for cut in 0..full.len() {
            write_atomic(&st, &jpath, &full[..cut]).unwrap();
            match load(&st, dir) {
                Err(_) => {}
                Ok(l) => assert_eq!(l.unwrap().journal_end, Some(cut as u64), "cut {cut}"),
            }
        }
        for i in 0..full.len() * 8 {
            let mut b = full.clone();
            b[i / 8] ^= 1 << (i % 8);
            write_atomic(&st, &jpath, &b).unwrap();
            assert!(load(&st, dir).is_err(), "bit {i}");
        }
        // A journal older than the snapshot is already in it.
        write_atomic(&st, &jpath, &journal_header(3)).unwrap();
        let l = load(&st, dir).unwrap().unwrap();
        assert!(l.journal.is_empty() && l.dirty.is_empty());
        // Compaction copies untaken entries without decoding them.
        let copied = l.snapshot.items(|i| i == 1).unwrap();
        let mut w = Writer::resume(&st, dir, &l).unwrap();
        w.compact(&st, copied).unwrap();
        let l = load(&st, dir).unwrap().unwrap();
        assert_eq!((l.gen, l.snapshot.len()), (5, 1));
        assert_eq!((l.snapshot.entry(0).unwrap(), l.snapshot.due_ns(0)), (b, 9));
    }

    #[test]
    fn every_flipped_bit_of_the_snapshot_is_refused_and_nothing_panics() {
        let bytes = encode_snapshot(1, items(&[entry("A", true), entry("B", false)])).unwrap();
        assert_eq!(read_whole(&bytes).unwrap().len(), 2);
        // Each bit is under a checksum: the header's, an entry's (found
        // when that entry is read) or the index's.
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(read_whole(&b).is_err(), "bit {i}");
        }
        for cut in 0..bytes.len() {
            assert!(read_whole(&bytes[..cut]).is_err());
        }
        let _ = decode_journal(&bytes);
    }
}
