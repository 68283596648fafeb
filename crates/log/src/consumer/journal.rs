//! The consumer journal (docs/design.md "Consumer journal"): every change
//! of a durable consumer's state since its state file was written, appended
//! as small entries, so deliveries and confirmed acks outlive a kill -9
//! without rewriting the state file. Replayed at open on top of the state
//! file; folded into it (compaction) when it grows.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use durabus_core::SequencePair;
use serde::{Deserialize, Serialize};

use crate::storage::{Storage, StorageFile};

use super::file::Pending;

/// Directory of the journals inside a stream directory (one file per
/// durable consumer, named as the consumer).
pub(crate) const JOURNALS_DIR: &str = "consumer-journals";
const MAGIC: &[u8; 8] = b"DBUSCJL\0";
const VERSION: u32 = 1;
/// Magic, version u32, generation u64.
pub(crate) const HEADER: u64 = 20;
/// A journal longer than this is folded into the state file.
pub(crate) const COMPACT_AT: u64 = 16 << 20;
/// The largest entry accepted when reading (a damaged length stops there).
const MAX_ENTRY: usize = 64 << 20;

/// One journal entry: the consumer's counters after a change, and the
/// pending entries that changed (upserted or removed) since the previous
/// entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Entry {
    pub(crate) delivered: SequencePair,
    pub(crate) ack_floor: SequencePair,
    pub(crate) next_seq: u64,
    pub(crate) upserts: Vec<(u64, Pending)>,
    pub(crate) removes: Vec<u64>,
    /// The `last_per_subject` start queue, when it changed.
    pub(crate) start_queue: Option<Vec<u64>>,
}

/// The header of a journal of generation `gen`.
pub(crate) fn header(gen: u64) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[12..20].copy_from_slice(&gen.to_le_bytes());
    h
}

/// Appends `e` to `out` framed as `len u32 | crc32c u32 | postcard body`.
pub(crate) fn encode(e: &Entry, out: &mut Vec<u8>) {
    let Ok(body) = postcard::to_stdvec(e) else {
        return;
    };
    if u32::try_from(body.len()).is_err() {
        return;
    }
    crate::framed::put(out, &body);
}

/// What reading a journal found.
#[derive(Debug, Default)]
pub(crate) struct Read {
    /// Its generation (`None`: no valid header).
    pub(crate) gen: Option<u64>,
    /// The entries that verify, in order.
    pub(crate) entries: Vec<Entry>,
    /// Where the valid entries end (an append goes there; bytes after it
    /// are a write the process did not finish).
    pub(crate) end: u64,
}

/// Decodes a journal file's bytes: entries up to the first one that does
/// not verify (a torn last write). Never panics.
pub(crate) fn decode(b: &[u8]) -> Read {
    let mut r = Read::default();
    if b.len() < HEADER as usize || &b[..8] != MAGIC || b[8..12] != VERSION.to_le_bytes() {
        return r;
    }
    let mut g = [0u8; 8];
    g.copy_from_slice(&b[12..20]);
    r.gen = Some(u64::from_le_bytes(g));
    let (entries, at) = crate::framed::read::<Entry>(b, HEADER as usize, MAX_ENTRY);
    r.entries = entries;
    r.end = at as u64;
    r
}

/// A durable consumer's journal and the changes not yet in it. Its file is
/// opened when something is written and closed again once the consumer
/// was idle for a maintenance tick ([`Journal::close_if_idle`]), so idle
/// consumers hold no file descriptor (100,000 consumers fit in any
/// descriptor limit).
#[derive(Default)]
pub(crate) struct Journal {
    /// Encoded entries not yet written.
    pub(super) buf: Vec<u8>,
    /// The journal's path (durable consumers of a store that persists).
    pub(super) path: Option<PathBuf>,
    /// Its open file, while the consumer is active.
    pub(super) file: Option<Arc<dyn StorageFile>>,
    /// Written to since the last maintenance tick.
    pub(super) recent: bool,
    /// Where the next entry is written.
    pub(super) len: u64,
    /// Its generation: the state file's `journal_gen`.
    pub(super) gen: u64,
    /// Written but not fsynced.
    pub(super) unsynced: bool,
    /// Counters and queue length of the last entry (to skip empty ones).
    pub(super) last: Option<(SequencePair, SequencePair, u64, usize)>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("len", &self.len)
            .field("gen", &self.gen)
            .field("buffered", &self.buf.len())
            .field("open", &self.file.is_some())
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Writes the buffered entries; fsyncs too when `sync` (and something
    /// was written since the last fsync). Opens the file if it is closed.
    pub(crate) fn flush(&mut self, storage: &dyn Storage, sync: bool) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            self.buf.clear();
            return Ok(());
        };
        if self.buf.is_empty() && !(sync && self.unsynced) {
            return Ok(());
        }
        let file = match &self.file {
            Some(f) => f.clone(),
            None => {
                let f = storage.open(path)?;
                self.file = Some(f.clone());
                f
            }
        };
        if !self.buf.is_empty() {
            file.write_all_at(&self.buf, self.len)?;
            self.len += self.buf.len() as u64;
            self.buf.clear();
            self.unsynced = true;
            self.recent = true;
        }
        if sync && self.unsynced {
            file.sync_data()?;
            self.unsynced = false;
        }
        Ok(())
    }

    /// Closes the file of a journal nothing was written to since the last
    /// call (what was written is with the OS; under `always` and
    /// `periodic` it was fsynced first by the same tick's flush).
    pub(crate) fn close_if_idle(&mut self) {
        if !self.recent && self.buf.is_empty() {
            self.file = None;
        }
        self.recent = false;
    }
}

/// Creates (replacing) the journal at `path` as an empty one of `gen`,
/// durably (it is opened for appends when written to).
pub(crate) fn create(
    storage: &dyn Storage,
    dir: &Path,
    path: &Path,
    gen: u64,
) -> std::io::Result<()> {
    if !storage.exists(dir).unwrap_or(false) {
        storage.create_dir_all(dir)?;
        if let Some(parent) = dir.parent() {
            storage.sync_dir(parent)?;
        }
    }
    crate::storage::write_atomic(storage, path, &header(gen))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u64) -> Entry {
        Entry {
            delivered: SequencePair {
                consumer_seq: n,
                stream_seq: n,
            },
            ack_floor: SequencePair::default(),
            next_seq: n + 1,
            upserts: vec![(
                n,
                Pending {
                    cseq: n,
                    count: 1,
                    deadline_ns: 5,
                },
            )],
            removes: vec![n.saturating_sub(1)],
            start_queue: None,
        }
    }

    #[test]
    fn entries_round_trip_and_a_torn_or_flipped_tail_ends_the_journal() {
        let mut b = header(7).to_vec();
        for n in 1..=3 {
            encode(&entry(n), &mut b);
        }
        let r = decode(&b);
        assert_eq!(r.gen, Some(7));
        assert_eq!(r.entries, vec![entry(1), entry(2), entry(3)]);
        assert_eq!(r.end, b.len() as u64);
        for cut in HEADER as usize..b.len() {
            let r = decode(&b[..cut]);
            assert!(r.entries.len() < 3, "cut {cut}");
            assert!(r.end <= cut as u64);
        }
        let mut flipped = b.clone();
        let last = flipped.len() - 2;
        flipped[last] ^= 1;
        assert_eq!(decode(&flipped).entries.len(), 2);
        assert_eq!(decode(&b[..10]).gen, None);
    }
}
