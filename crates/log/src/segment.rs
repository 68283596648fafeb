//! Segment files (`.log`) and their sparse index files (`.idx`); see
//! docs/design.md, "Segment file" and "Index file".

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::record::{self, Decoded, Kind};
use crate::storage::{Storage, StorageFile};

/// Magic at the start of every segment.
pub(crate) const SEGMENT_MAGIC: &[u8; 8] = b"DBUSLOG\0";
/// Segment format version written by this build.
pub(crate) const SEGMENT_VERSION: u32 = 1;
/// Bytes of the segment header.
pub(crate) const SEGMENT_HEADER: u64 = 16;
/// Magic of index files.
pub(crate) const INDEX_MAGIC: &[u8; 8] = b"DBUSIDX\0";
/// Index format version.
pub(crate) const INDEX_VERSION: u32 = 1;
/// One index entry per this many bytes of segment.
pub(crate) const INDEX_INTERVAL: u64 = 4096;
/// Bytes read per chunk when scanning.
pub(crate) const CHUNK: usize = 256 * 1024;

/// The 16-byte header of a segment.
pub(crate) fn header_bytes() -> [u8; 16] {
    let mut h = [0u8; 16];
    h[..8].copy_from_slice(SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_VERSION.to_le_bytes());
    h
}

/// What a segment header says.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum HeaderCheck {
    Ok,
    /// Shorter than a header (a crash during creation).
    Short,
    BadMagic,
    /// Written by a newer format.
    Version(u32),
}

pub(crate) fn check_header(bytes: &[u8]) -> HeaderCheck {
    // All zeros: the file's creation reached the disk, its header did not
    // (power loss before the fsync); as short as a torn creation.
    if bytes.len() < SEGMENT_HEADER as usize || bytes.iter().all(|b| *b == 0) {
        return HeaderCheck::Short;
    }
    if &bytes[..8] != SEGMENT_MAGIC {
        return HeaderCheck::BadMagic;
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[8..12]);
    let v = u32::from_le_bytes(v);
    if v != SEGMENT_VERSION {
        return HeaderCheck::Version(v);
    }
    HeaderCheck::Ok
}

/// File name of the segment starting at `base`.
pub(crate) fn log_name(base: u64) -> String {
    format!("{base:020}.log")
}

/// File name of the index of the segment starting at `base`.
pub(crate) fn idx_name(base: u64) -> String {
    format!("{base:020}.idx")
}

/// Parses a segment file name into its base sequence.
pub(crate) fn parse_log_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".log")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One sparse index entry: a message record's seq, time and offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    pub(crate) seq: u64,
    pub(crate) time: i64,
    pub(crate) offset: u64,
}

/// Adds an entry for a message record at `offset` when due (the first record,
/// then one per [`INDEX_INTERVAL`] bytes).
pub(crate) fn maybe_index(index: &mut Vec<IndexEntry>, seq: u64, time: i64, offset: u64) {
    let due = match index.last() {
        None => true,
        Some(last) => offset >= last.offset + INDEX_INTERVAL,
    };
    if due {
        index.push(IndexEntry { seq, time, offset });
    }
}

/// Encodes an index file.
pub(crate) fn encode_index(entries: &[IndexEntry]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + entries.len() * 24 + 4);
    b.extend_from_slice(INDEX_MAGIC);
    b.extend_from_slice(&INDEX_VERSION.to_le_bytes());
    b.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        b.extend_from_slice(&e.seq.to_le_bytes());
        b.extend_from_slice(&e.time.to_le_bytes());
        b.extend_from_slice(&e.offset.to_le_bytes());
    }
    let crc = crc32c::crc32c(&b);
    b.extend_from_slice(&crc.to_le_bytes());
    b
}

/// Decodes an index file; `None` when it is malformed in any way (the caller
/// rebuilds it, invariant 8).
pub(crate) fn decode_index(b: &[u8]) -> Option<Vec<IndexEntry>> {
    if b.len() < 20 || &b[..8] != INDEX_MAGIC {
        return None;
    }
    let (body, crc) = b.split_at(b.len() - 4);
    if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
        return None;
    }
    if u32::from_le_bytes(body[8..12].try_into().ok()?) != INDEX_VERSION {
        return None;
    }
    let n = u32::from_le_bytes(body[12..16].try_into().ok()?) as usize;
    let entries = &body[16..];
    if entries.len() != n.checked_mul(24)? {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for e in entries.chunks_exact(24) {
        out.push(IndexEntry {
            seq: u64::from_le_bytes(e[0..8].try_into().ok()?),
            time: i64::from_le_bytes(e[8..16].try_into().ok()?),
            offset: u64::from_le_bytes(e[16..24].try_into().ok()?),
        });
    }
    Some(out)
}

/// Writes the index of segment `base` atomically (invariant 6).
pub(crate) fn write_index(
    storage: &dyn Storage,
    dir: &Path,
    base: u64,
    entries: &[IndexEntry],
) -> std::io::Result<()> {
    crate::storage::write_atomic(storage, &dir.join(idx_name(base)), &encode_index(entries))
}

/// The entry to start a forward scan from to find `seq` (offset of the first
/// record when none is lower).
pub(crate) fn seek_seq(index: &[IndexEntry], seq: u64) -> u64 {
    let i = index.partition_point(|e| e.seq <= seq);
    if i == 0 {
        SEGMENT_HEADER
    } else {
        index[i - 1].offset
    }
}

/// Offset to start a forward scan from to find the first message with time
/// >= `t` (times never decrease, invariant 2).
pub(crate) fn seek_time(index: &[IndexEntry], t: i64) -> u64 {
    let i = index.partition_point(|e| e.time < t);
    if i == 0 {
        SEGMENT_HEADER
    } else {
        index[i - 1].offset
    }
}

/// In-memory metadata of one segment. No per-message data (W6).
#[derive(Debug, Clone)]
pub(crate) struct SegmentMeta {
    /// First sequence (the file name).
    pub(crate) base: u64,
    pub(crate) path: PathBuf,
    /// Bytes written (header included). For the active segment, the append position.
    pub(crate) size: u64,
    /// Live messages in it.
    pub(crate) msgs: u64,
    /// Bytes of its live messages.
    pub(crate) bytes: u64,
    /// Highest message seq it holds (0 if none).
    pub(crate) last_seq: u64,
    /// Time of its first and last message records (0 if none).
    pub(crate) first_time: i64,
    pub(crate) last_time: i64,
    /// Sparse seq/time index.
    pub(crate) index: Vec<IndexEntry>,
    /// A shared handle (reads for every segment; writes for the active one).
    pub(crate) file: Option<Arc<dyn StorageFile>>,
    /// Whether the index file is known to be on disk.
    pub(crate) indexed: bool,
    /// Unreadable spans found in it, by offset (reads step over them).
    pub(crate) damage: Vec<Damage>,
    /// The manifest lists it but its file is gone: every sequence it held
    /// is lost, and nothing reads it.
    pub(crate) missing: bool,
}

/// An unreadable span of a segment: bytes `start..end` hold no record that
/// verifies, and the messages `lo..=hi` (empty when `hi < lo`) were in it.
/// Reads step over it (docs/design.md "Reading past a damaged record").
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Damage {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) lo: u64,
    pub(crate) hi: u64,
    pub(crate) reason: String,
}

impl Damage {
    /// The sequences it costs, if any.
    pub(crate) fn seqs(&self) -> Option<std::ops::RangeInclusive<u64>> {
        (self.lo <= self.hi).then_some(self.lo..=self.hi)
    }
}

/// The damage span of `damage` that covers `offset`, if any.
pub(crate) fn damage_covering(damage: &[Damage], offset: u64) -> Option<&Damage> {
    damage.iter().find(|d| d.start <= offset && offset < d.end)
}

/// Where reading can go on after a record at `offset` that does not verify:
/// the offset of the next record that verifies and fits (a message's seq at
/// least `min_seq`), with that message's seq, or `limit` when none does.
/// The record's own length is tried first (only its contents are damaged);
/// otherwise every later byte offset is tried (the framing is damaged).
pub(crate) fn resume_after(
    file: &dyn StorageFile,
    offset: u64,
    limit: u64,
    min_seq: u64,
) -> std::io::Result<(u64, Option<u64>)> {
    let n = usize::try_from(limit.saturating_sub(offset)).unwrap_or(usize::MAX);
    let mut rest = vec![0u8; n];
    read_full(file, &mut rest, offset)?;
    let fits = |b: &[u8]| match record::decode(b) {
        Decoded::Ok(r) if r.kind != Kind::Message => Some(None),
        Decoded::Ok(r) if r.seq >= min_seq => Some(Some(r.seq)),
        _ => None,
    };
    if let Some(size) = record::announced_size(&rest) {
        if size >= record::HEADER_SIZE && size <= rest.len() {
            if size == rest.len() {
                return Ok((limit, None));
            }
            if let Some(seq) = fits(&rest[size..]) {
                return Ok((offset + size as u64, seq));
            }
        }
    }
    for p in 1..rest.len() {
        if record::plausible(&rest[p..]) {
            if let Some(seq) = fits(&rest[p..]) {
                return Ok((offset + p as u64, seq));
            }
        }
    }
    Ok((limit, None))
}

impl SegmentMeta {
    pub(crate) fn new(base: u64, path: PathBuf) -> Self {
        Self {
            base,
            path,
            size: SEGMENT_HEADER,
            msgs: 0,
            bytes: 0,
            last_seq: 0,
            first_time: 0,
            last_time: 0,
            index: Vec::new(),
            file: None,
            indexed: false,
            damage: Vec::new(),
            missing: false,
        }
    }

    /// Accounts a message record appended at `offset`.
    pub(crate) fn note_message(&mut self, seq: u64, time: i64, offset: u64, size: u64) {
        maybe_index(&mut self.index, seq, time, offset);
        if self.last_seq == 0 {
            self.first_time = time;
        }
        self.last_seq = seq;
        self.last_time = time;
        self.msgs += 1;
        self.bytes += size;
    }
}

/// How a forward scan of a segment ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ScanEnd {
    /// Reached `limit` exactly.
    Clean,
    /// Stopped at `offset` on a record that does not decode.
    Bad {
        offset: u64,
        torn: bool,
        reason: String,
    },
}

/// Reads records of `file` from `offset` up to `limit` in big chunks, calling
/// `f(offset, record)` for each; `f` returns false to stop early.
pub(crate) fn scan(
    file: &dyn StorageFile,
    offset: u64,
    limit: u64,
    f: &mut dyn FnMut(u64, &record::RecordRef<'_>) -> Result<bool, durabus_core::Error>,
) -> Result<ScanEnd, ScanError> {
    scan_from(file, offset, limit, CHUNK, f)
}

/// Bytes a lookup reads first: an index entry is at most
/// [`INDEX_INTERVAL`] before the record wanted, so small records are found
/// in one small read.
pub(crate) const LOOKUP_CHUNK: usize = 2 * INDEX_INTERVAL as usize;

/// [`scan`] whose first read is `first` bytes (later ones [`CHUNK`]): for
/// lookups that expect to stop soon.
pub(crate) fn scan_from(
    file: &dyn StorageFile,
    offset: u64,
    limit: u64,
    first: usize,
    f: &mut dyn FnMut(u64, &record::RecordRef<'_>) -> Result<bool, durabus_core::Error>,
) -> Result<ScanEnd, ScanError> {
    scan_skipping(file, offset, limit, first, &[], f)
}

/// [`scan_from`] that steps over the known unreadable spans `skips`.
pub(crate) fn scan_skipping(
    file: &dyn StorageFile,
    mut offset: u64,
    limit: u64,
    first: usize,
    skips: &[Damage],
    f: &mut dyn FnMut(u64, &record::RecordRef<'_>) -> Result<bool, durabus_core::Error>,
) -> Result<ScanEnd, ScanError> {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = first.clamp(record::HEADER_SIZE, CHUNK);
    while offset < limit {
        if let Some(d) = damage_covering(skips, offset) {
            offset = d.end;
            continue;
        }
        let want = ((limit - offset) as usize).min(chunk);
        chunk = CHUNK;
        buf.resize(want, 0);
        read_full(file, &mut buf, offset)?;
        let mut pos = 0usize;
        loop {
            if pos == buf.len() {
                break;
            }
            if pos > 0 && damage_covering(skips, offset + pos as u64).is_some() {
                break; // step over it at the top
            }
            match record::decode(&buf[pos..]) {
                Decoded::Ok(r) => {
                    if !f(offset + pos as u64, &r).map_err(ScanError::Callback)? {
                        return Ok(ScanEnd::Clean);
                    }
                    pos += r.size;
                }
                Decoded::Torn => {
                    let abs = offset + pos as u64;
                    let avail = buf.len() - pos;
                    let rest = limit - abs;
                    let need = record::announced_size(&buf[pos..]);
                    let continues = match need {
                        Some(n) if n <= record::LEN_FIELD => false, // len 0
                        Some(n) => n as u64 <= rest && n > avail,
                        None => rest > avail as u64,
                    };
                    if !continues {
                        return Ok(ScanEnd::Bad {
                            offset: abs,
                            torn: true,
                            reason: "record ends past the end of the data".to_owned(),
                        });
                    }
                    if pos > 0 {
                        break; // re-read from this record
                    }
                    // One record bigger than a chunk: read it whole.
                    let n = need.unwrap_or(avail + 1);
                    buf.resize(n, 0);
                    read_full(file, &mut buf, offset)?;
                }
                Decoded::Corrupt(reason) => {
                    return Ok(ScanEnd::Bad {
                        offset: offset + pos as u64,
                        torn: false,
                        reason,
                    })
                }
            }
        }
        offset += pos as u64;
    }
    Ok(ScanEnd::Clean)
}

/// Failure of [`scan`].
#[derive(Debug)]
pub(crate) enum ScanError {
    Io(std::io::Error),
    Callback(durabus_core::Error),
}

impl From<std::io::Error> for ScanError {
    fn from(e: std::io::Error) -> Self {
        ScanError::Io(e)
    }
}

/// Fills `buf` from `offset`; a short file leaves zeros (decoded as torn).
pub(crate) fn read_full(
    file: &dyn StorageFile,
    buf: &mut [u8],
    offset: u64,
) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(&mut buf[done..], offset + done as u64)?;
        if n == 0 {
            break;
        }
        done += n;
    }
    if done < buf.len() {
        buf[done..].fill(0);
    }
    Ok(done)
}

/// Whether any valid record starts somewhere in `bytes` after position 0
/// (used to tell a torn tail from mid-segment corruption, recovery rule 5).
/// `min_seq`: a message found must have a seq at least this.
/// Whether the bytes after a segment's last record are the zeros that
/// preallocation wrote ahead of it (see `Inner::preallocate`): the log
/// ends there, nothing was torn.
pub(crate) fn is_preallocated(rest: &[u8]) -> bool {
    rest.iter().all(|b| *b == 0)
}

/// Disk sector size assumed for torn writes.
pub(crate) const SECTOR: u64 = 512;

/// Whether the bad record at file offset `offset` (`bytes` from there to
/// the end) shows a power loss rather than damage: a sector of it that never
/// reached the disk reads as zeros. From `offset` to the next sector
/// boundary (a whole sector when aligned), or any whole sector within the
/// record's announced size, all zeros. A flipped bit never zeroes a sector.
pub(crate) fn lost_sector_at(bytes: &[u8], offset: u64) -> bool {
    let to_boundary = usize::try_from(SECTOR - offset % SECTOR).unwrap_or(usize::MAX);
    let head = &bytes[..to_boundary.min(bytes.len())];
    if !head.is_empty() && head.iter().all(|b| *b == 0) {
        return true;
    }
    let record = record::announced_size(bytes).unwrap_or(0).min(bytes.len());
    let sector = SECTOR as usize;
    (to_boundary..record)
        .step_by(sector)
        .any(|s| s + sector <= record && bytes[s..s + sector].iter().all(|b| *b == 0))
}

pub(crate) fn valid_record_after(bytes: &[u8], min_seq: u64) -> bool {
    (1..bytes.len()).any(|p| match record::decode(&bytes[p..]) {
        Decoded::Ok(r) => r.kind != Kind::Message || r.seq >= min_seq,
        _ => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_all_zero_header_is_a_torn_creation_not_bad_magic() {
        assert!(matches!(check_header(&[0u8; 16]), HeaderCheck::Short));
        let mut h = [0u8; 16];
        h[3] = 1;
        assert!(matches!(check_header(&h), HeaderCheck::BadMagic));
    }

    #[test]
    fn a_zeroed_sector_is_a_power_loss_and_a_flipped_bit_is_not() {
        // From an unaligned offset to the sector boundary, zeros.
        assert!(lost_sector_at(&[0u8; 600], 16));
        // A bad record whose second sector is zeros.
        let mut b = vec![7u8; 1200];
        b[..4].copy_from_slice(&1100u32.to_le_bytes());
        b[496..1008].fill(0);
        assert!(lost_sector_at(&b, 16));
        // A flipped bit: no sector of zeros.
        let mut b = vec![7u8; 1200];
        b[..4].copy_from_slice(&1100u32.to_le_bytes());
        b[100] ^= 1;
        assert!(!lost_sector_at(&b, 16));
        // Zeros beyond the record's announced size do not count.
        let mut b = vec![7u8; 1200];
        b[..4].copy_from_slice(&100u32.to_le_bytes());
        b[496..1008].fill(0);
        assert!(!lost_sector_at(&b, 16));
    }

    #[test]
    fn names_round_trip_and_sort_by_sequence() {
        assert_eq!(log_name(42), "00000000000000000042.log");
        assert_eq!(parse_log_name(&log_name(u64::MAX)), Some(u64::MAX));
        assert_eq!(parse_log_name("42.log"), None);
        assert_eq!(parse_log_name("0000000000000000004x.log"), None);
        assert!(log_name(9) < log_name(10));
    }

    #[test]
    fn index_round_trips_and_rejects_damage() {
        let e: Vec<IndexEntry> = (0..10)
            .map(|i| IndexEntry {
                seq: i * 3 + 1,
                time: i as i64 * 100,
                offset: 16 + i * 4096,
            })
            .collect();
        let b = encode_index(&e);
        assert_eq!(decode_index(&b), Some(e.clone()));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x10;
            assert_eq!(decode_index(&d), None, "flip at {i}");
        }
        assert_eq!(decode_index(&b[..b.len() - 1]), None);
        assert_eq!(seek_seq(&e, 0), SEGMENT_HEADER);
        assert_eq!(seek_seq(&e, 5), e[1].offset);
        assert_eq!(seek_time(&e, 250), e[2].offset);
        assert_eq!(seek_time(&e, 0), SEGMENT_HEADER);
    }

    #[test]
    fn header_checks() {
        assert_eq!(check_header(&header_bytes()), HeaderCheck::Ok);
        assert_eq!(check_header(&header_bytes()[..10]), HeaderCheck::Short);
        let mut h = header_bytes();
        h[8] = 2;
        assert_eq!(check_header(&h), HeaderCheck::Version(2));
        h[0] = b'X';
        assert_eq!(check_header(&h), HeaderCheck::BadMagic);
    }
}
