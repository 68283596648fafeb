//! The checkpoint file (docs/design.md, "Checkpoint file"): a snapshot of a
//! stream's derived state so recovery scans only the tail. It is an
//! optimisation, never the truth (invariant 8): any doubt means a full scan.

use serde::{Deserialize, Serialize};

use crate::segment::IndexEntry;
use crate::stream::SubjectsCkpt;

/// Magic of checkpoint files.
pub(crate) const CHECKPOINT_MAGIC: &[u8; 8] = b"DBUSCKP\0";
/// Checkpoint format version. 2 (issue #15): the covered segment's index
/// is `covered_index`; segments carry none (sealed ones have `.idx` files).
/// 3 (issue #26): subjects are 24-byte keyed-hash entries, not names.
/// A checkpoint of an earlier version is not used (the open scans the segments), but
/// its `last_seq` still counts for rule 3a ([`Checkpoint::durable_last_seq`]).
pub(crate) const CHECKPOINT_VERSION: u32 = 3;
/// File name inside the stream directory.
pub(crate) const CHECKPOINT_FILE: &str = "checkpoint";

/// A segment as the checkpoint saw it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SegCkpt {
    pub(crate) base: u64,
    /// Full size of a sealed segment; covered offset of the last one.
    pub(crate) size: u64,
    pub(crate) msgs: u64,
    pub(crate) bytes: u64,
    pub(crate) last_seq: u64,
    pub(crate) first_time: i64,
    pub(crate) last_time: i64,
}

/// A stream's derived state at a covered position.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Checkpoint {
    /// The last segment it covers, and the offset up to which.
    pub(crate) covered_base: u64,
    pub(crate) covered_offset: u64,
    pub(crate) first_seq: u64,
    pub(crate) last_seq: u64,
    pub(crate) last_time: i64,
    pub(crate) messages: u64,
    pub(crate) bytes: u64,
    pub(crate) segments: Vec<SegCkpt>,
    /// Sparse index of the covered (last) segment up to the covered offset;
    /// sealed segments' indexes are in their `.idx` files only.
    pub(crate) covered_index: Vec<IndexEntry>,
    pub(crate) deleted: Vec<(u64, u64)>,
    /// Per-subject keys, counts and newest seqs (names stay in the log).
    pub(crate) subjects: SubjectsCkpt,
    /// (msg id, seq, time) inside the duplicate window.
    pub(crate) dedup: Vec<(String, u64, i64)>,
}

impl Checkpoint {
    /// Magic, version, postcard body, CRC32C of all before it.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut out = Vec::new();
        out.extend_from_slice(CHECKPOINT_MAGIC);
        out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        let mut out = postcard::to_extend(self, out)?;
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// The version and postcard body of a checkpoint file whose frame
    /// (magic, CRC) is intact, whatever its version.
    pub(crate) fn frame(b: &[u8]) -> Option<(u32, &[u8])> {
        if b.len() < 16 || &b[..8] != CHECKPOINT_MAGIC {
            return None;
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        let version = u32::from_le_bytes(body[8..12].try_into().ok()?);
        Some((version, &body[12..]))
    }

    /// `None` when the bytes are not a valid checkpoint of this version.
    pub(crate) fn decode(b: &[u8]) -> Option<Checkpoint> {
        match Self::frame(b)? {
            (CHECKPOINT_VERSION, body) => postcard::from_bytes(body).ok(),
            _ => None,
        }
    }

    /// The last sequence a valid checkpoint of this or an earlier version
    /// saw stored and synced (rule 3a). Every version so far begins its
    /// body with the same four fields.
    pub(crate) fn durable_last_seq(b: &[u8]) -> Option<u64> {
        let (version, body) = Self::frame(b)?;
        if !(1..=CHECKPOINT_VERSION).contains(&version) {
            return None;
        }
        let (prefix, _): (Prefix, _) = postcard::take_from_bytes(body).ok()?;
        Some(prefix.last_seq)
    }
}

/// The fields every checkpoint version begins with.
#[derive(Deserialize)]
struct Prefix {
    _covered_base: u64,
    _covered_offset: u64,
    _first_seq: u64,
    last_seq: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_round_trips_and_rejects_damage() {
        let c = Checkpoint {
            covered_base: 1,
            covered_offset: 100,
            first_seq: 1,
            last_seq: 3,
            last_time: 5,
            messages: 3,
            bytes: 150,
            segments: vec![SegCkpt {
                base: 1,
                size: 100,
                msgs: 3,
                bytes: 150,
                last_seq: 3,
                first_time: 1,
                last_time: 5,
            }],
            covered_index: vec![IndexEntry {
                seq: 1,
                time: 1,
                offset: 16,
            }],
            deleted: vec![(2, 2)],
            subjects: SubjectsCkpt {
                sip: (7, 9),
                table: (0..24).collect(),
                big: vec![],
                older: Some(vec![(1, 2, vec![1])]),
            },
            dedup: vec![("id".into(), 1, 1)],
        };
        let b = c.encode().unwrap();
        assert_eq!(Checkpoint::decode(&b), Some(c.clone()));
        assert_eq!(Checkpoint::durable_last_seq(&b), Some(3));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 1;
            assert_eq!(Checkpoint::decode(&d), None, "flip at {i}");
        }
    }

    #[test]
    fn a_version_1_checkpoint_is_not_used_but_its_last_seq_counts() {
        // Version 1's body: the same first fields, then segments with an
        // index each (here: none), ...
        let mut body = Vec::new();
        for v in [1u8, 100, 1, 42] {
            body.push(v); // small varints
        }
        body.extend_from_slice(&[9, 9, 9]);
        let mut b = Vec::new();
        b.extend_from_slice(CHECKPOINT_MAGIC);
        b.extend_from_slice(&1u32.to_le_bytes());
        b.extend_from_slice(&body);
        let crc = crc32c::crc32c(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(Checkpoint::decode(&b), None);
        assert_eq!(Checkpoint::durable_last_seq(&b), Some(42));
        let mut d = b.clone();
        d[14] ^= 1;
        assert_eq!(Checkpoint::durable_last_seq(&d), None);
        // A future version is not read at all.
        b[8] = (CHECKPOINT_VERSION + 1) as u8;
        let n = b.len() - 4;
        let crc = crc32c::crc32c(&b[..n]);
        b[n..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(Checkpoint::durable_last_seq(&b), None);
    }
}
