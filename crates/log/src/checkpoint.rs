//! The checkpoint file (docs/design.md, "Checkpoint file"): a snapshot of a
//! stream's derived state so recovery scans only the tail. It is an
//! optimisation, never the truth (invariant 8): any doubt means a full scan.

use serde::{Deserialize, Serialize};

use crate::segment::IndexEntry;

/// Magic of checkpoint files.
pub(crate) const CHECKPOINT_MAGIC: &[u8; 8] = b"DBUSCKP\0";
/// Checkpoint format version.
pub(crate) const CHECKPOINT_VERSION: u32 = 1;
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
    /// Sparse index, kept only for the covered (last) segment; sealed ones
    /// have `.idx` files.
    pub(crate) index: Vec<IndexEntry>,
}

/// Per-subject state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct SubjCkpt {
    pub(crate) subject: String,
    pub(crate) count: u64,
    pub(crate) last: u64,
    pub(crate) seqs: Option<Vec<u64>>,
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
    pub(crate) deleted: Vec<(u64, u64)>,
    pub(crate) subjects: Vec<SubjCkpt>,
    pub(crate) track_subject_seqs: bool,
    /// (msg id, seq, time) inside the duplicate window.
    pub(crate) dedup: Vec<(String, u64, i64)>,
}

impl Checkpoint {
    /// Magic, version, postcard body, CRC32C of all before it.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut out = Vec::new();
        out.extend_from_slice(CHECKPOINT_MAGIC);
        out.extend_from_slice(&CHECKPOINT_VERSION.to_le_bytes());
        let body = postcard::to_stdvec(self)?;
        out.extend_from_slice(&body);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// `None` when the bytes are not a valid checkpoint of this version.
    pub(crate) fn decode(b: &[u8]) -> Option<Checkpoint> {
        if b.len() < 16 || &b[..8] != CHECKPOINT_MAGIC {
            return None;
        }
        let (body, crc) = b.split_at(b.len() - 4);
        if crc32c::crc32c(body) != u32::from_le_bytes(crc.try_into().ok()?) {
            return None;
        }
        if u32::from_le_bytes(body[8..12].try_into().ok()?) != CHECKPOINT_VERSION {
            return None;
        }
        postcard::from_bytes(&body[12..]).ok()
    }
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
                index: vec![IndexEntry {
                    seq: 1,
                    time: 1,
                    offset: 16,
                }],
            }],
            deleted: vec![(2, 2)],
            subjects: vec![SubjCkpt {
                subject: "a".into(),
                count: 2,
                last: 3,
                seqs: Some(vec![1, 3]),
            }],
            track_subject_seqs: true,
            dedup: vec![("id".into(), 1, 1)],
        };
        let b = c.encode().unwrap();
        assert_eq!(Checkpoint::decode(&b), Some(c));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 1;
            assert_eq!(Checkpoint::decode(&d), None, "flip at {i}");
        }
    }
}
