//! The store's catalog (docs/design.md, "Catalog"): every file stream's
//! name, routing subjects, config and creation time, and, for streams that
//! closed cleanly, a summary of their state, so a store opens without
//! opening any stream and lists streams without recovering the ones the
//! catalog can vouch for.
//!
//! Two files in the data directory: `catalog`, a snapshot (magic
//! `DBUSCAT\0`, version u32, postcard body, CRC32C), replaced atomically,
//! and `catalog.journal`, the changes since it (magic `DBUSCAJ\0`, version
//! u32, the snapshot generation u64, then entries framed `len u32 | crc32c
//! u32 | postcard`), appended and fsynced before the change it announces.

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
/// Version of both files' framing and bodies.
const VERSION: u32 = 1;
/// Journal header: magic, version u32, generation u64, CRC32C of those.
const JOURNAL_HEADER: u64 = 24;
/// The largest journal entry accepted when reading.
const MAX_ENTRY: usize = 16 << 20;
/// A journal longer than this (and than the snapshot) is folded into a new
/// snapshot.
const COMPACT_AT: u64 = 1 << 20;

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
}

#[derive(Debug, Serialize, Deserialize)]
struct Body {
    gen: u64,
    entries: Vec<Entry>,
}

/// A catalog as read from disk.
#[derive(Debug, Default)]
pub(crate) struct Loaded {
    /// The snapshot's generation.
    pub(crate) gen: u64,
    pub(crate) entries: BTreeMap<String, Entry>,
    /// Streams marked since the snapshot (their summaries were dropped).
    pub(crate) dirty: BTreeSet<String>,
    /// Streams whose `config.json` was being replaced (no `Put` after it).
    pub(crate) updating: BTreeSet<String>,
    /// Where the journal's entries end (`None`: there is no journal of
    /// this generation; a writer starts one).
    pub(crate) journal_end: Option<u64>,
}

fn encode_change(c: &Change) -> std::io::Result<Vec<u8>> {
    let body = postcard::to_stdvec(c).map_err(std::io::Error::other)?;
    if body.len() > MAX_ENTRY {
        return Err(std::io::Error::other("catalog entry too large"));
    }
    let mut out = Vec::with_capacity(body.len() + 8);
    crate::framed::put(&mut out, &body);
    Ok(out)
}

/// Encodes a snapshot.
fn encode_snapshot(gen: u64, entries: Vec<Entry>) -> std::io::Result<Vec<u8>> {
    let body = postcard::to_stdvec(&Body { gen, entries }).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&body);
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Decodes a snapshot; the reason when it is not one this build reads.
/// Never panics.
fn decode_snapshot(b: &[u8]) -> Result<Body, String> {
    if b.len() < 16 || &b[..8] != MAGIC {
        return Err("not a catalog (bad magic or too short)".into());
    }
    let (head, crc) = b.split_at(b.len() - 4);
    let crc = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    if crc32c::crc32c(head) != crc {
        return Err("checksum mismatch".into());
    }
    let version = u32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    if version != VERSION {
        return Err(format!("version {version}, this build reads {VERSION}"));
    }
    postcard::from_bytes(&head[12..]).map_err(|e| format!("undecodable body: {e}"))
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
        let snap = match st.read_file(&snap_path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("reading {}: {e}", snap_path.display())),
        };
        let body = decode_snapshot(&snap)?;
        let journal = match st.read_file(&journal_path) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(format!("reading {}: {e}", journal_path.display())),
        };
        let mut loaded = Loaded {
            gen: body.gen,
            entries: body
                .entries
                .into_iter()
                .map(|e| (e.name.clone(), e))
                .collect(),
            ..Loaded::default()
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
                Change::Put(e) => {
                    loaded.updating.remove(&e.name);
                    // A put after a mark keeps the mark (the stream was
                    // open when its config changed).
                    let mut e = e;
                    if loaded.dirty.contains(&e.name) {
                        e.summary = None;
                    }
                    loaded.entries.insert(e.name.clone(), e);
                }
                Change::Delete(name) => {
                    loaded.entries.remove(&name);
                    loaded.dirty.remove(&name);
                    loaded.updating.remove(&name);
                }
                Change::Dirty(name) => {
                    if let Some(e) = loaded.entries.get_mut(&name) {
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
    /// Writes a new snapshot of `entries` (generation `gen`), then an empty
    /// journal of that generation, and opens it.
    pub(crate) fn create(
        st: &dyn Storage,
        dir: &Path,
        gen: u64,
        entries: Vec<Entry>,
    ) -> std::io::Result<Writer> {
        let bytes = encode_snapshot(gen, entries)?;
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
        let snapshot_len = st
            .open_read(&dir.join(CATALOG_FILE))
            .and_then(|f| f.len())?;
        Ok(Writer {
            dir: dir.to_path_buf(),
            gen: loaded.gen,
            journal,
            end,
            snapshot_len,
        })
    }

    /// Appends `changes` and fsyncs: durable when it returns.
    pub(crate) fn append(&mut self, changes: &[Change]) -> std::io::Result<()> {
        let mut buf = Vec::new();
        for c in changes {
            buf.extend_from_slice(&encode_change(c)?);
        }
        self.journal.write_all_at(&buf, self.end)?;
        self.journal.sync_data()?;
        self.end += buf.len() as u64;
        Ok(())
    }

    /// Whether the journal holds entries (changes the snapshot lacks).
    pub(crate) fn has_changes(&self) -> bool {
        self.end > JOURNAL_HEADER
    }

    /// Whether the journal has grown enough to be folded into a snapshot.
    pub(crate) fn wants_compaction(&self) -> bool {
        self.end > COMPACT_AT.max(self.snapshot_len)
    }

    /// Folds everything into a new snapshot of `entries` and starts an
    /// empty journal.
    pub(crate) fn compact(&mut self, st: &dyn Storage, entries: Vec<Entry>) -> std::io::Result<()> {
        *self = Writer::create(st, &self.dir, self.gen + 1, entries)?;
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

    #[test]
    fn snapshot_and_journal_round_trip_and_a_torn_journal_tail_ends_it() {
        let st = MemStorage::new();
        let dir = Path::new("/d");
        st.create_dir_all(dir).unwrap();
        assert!(load(&st, dir).unwrap().is_none());
        let mut w = Writer::create(&st, dir, 4, vec![entry("A", true), entry("B", true)]).unwrap();
        w.append(&[Change::Dirty("A".into())]).unwrap();
        w.append(&[Change::Put(entry("C", false)), Change::Delete("B".into())])
            .unwrap();
        let l = load(&st, dir).unwrap().unwrap();
        assert_eq!(l.gen, 4);
        assert_eq!(l.entries.keys().collect::<Vec<_>>(), ["A", "C"]);
        assert_eq!(l.entries["A"].summary, None);
        assert!(l.dirty.contains("A"));
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
        assert_eq!(l.entries.keys().collect::<Vec<_>>(), ["A", "B"]);
        assert!(l.dirty.is_empty());
    }

    #[test]
    fn every_flipped_bit_of_the_snapshot_is_refused_and_nothing_panics() {
        let bytes = encode_snapshot(1, vec![entry("A", true)]).unwrap();
        for i in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[i / 8] ^= 1 << (i % 8);
            assert!(decode_snapshot(&b).is_err(), "bit {i}");
        }
        for cut in 0..bytes.len() {
            assert!(decode_snapshot(&bytes[..cut]).is_err());
        }
        let _ = decode_journal(&bytes);
    }
}
