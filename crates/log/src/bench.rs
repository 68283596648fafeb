//! Entry points of the criterion micro-benchmarks (`benches/hot_paths.rs`)
//! into engine internals. Hidden from the docs and not a stable API.

use durabus_core::HeaderMap;

use crate::record::{self, Decoded};
use crate::segment::{self, IndexEntry};

/// Appends one message record to `buf` (cleared first); returns its size.
pub fn encode_message(
    buf: &mut Vec<u8>,
    seq: u64,
    subject: &str,
    headers: &HeaderMap,
    payload: &[u8],
) -> usize {
    buf.clear();
    record::encode_message(buf, seq, 1, subject, headers, payload)
}

/// Decodes (and CRC-checks) the record at the start of `buf`; returns its
/// sequence, or `None` if it is not a whole valid record.
pub fn decode_message(buf: &[u8]) -> Option<u64> {
    match record::decode(buf) {
        Decoded::Ok(r) => Some(r.seq),
        _ => None,
    }
}

/// A segment's sparse index as the engine builds it (an entry every
/// 4 KiB), for `messages` records of `record_size` bytes.
#[derive(Debug)]
pub struct Index(Vec<IndexEntry>);

impl Index {
    /// Builds the index.
    pub fn new(messages: u64, record_size: u64) -> Index {
        let mut entries = Vec::new();
        for i in 0..messages {
            let offset = segment::SEGMENT_HEADER + i * record_size;
            segment::maybe_index(
                &mut entries,
                i + 1,
                i64::try_from(i).unwrap_or(i64::MAX),
                offset,
            );
        }
        Index(entries)
    }

    /// Entries in the index.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The file offset a scan for `seq` starts at.
    pub fn seek(&self, seq: u64) -> u64 {
        segment::seek_seq(&self.0, seq)
    }
}
