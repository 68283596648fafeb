//! The segment manifest of a stream (docs/design.md "Manifest file"): which
//! segments the stream holds, how long each sealed one is, and how far
//! sequences may have been assigned. Replaced atomically on every roll,
//! segment removal and reservation, it is the truth recovery checks the
//! segment files against: a listed segment that is missing or shorter is
//! damage (lost sequences), never deletions, and no sequence at or below
//! `reserved` is ever assigned again.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::record;
use crate::storage::{write_atomic, Storage};

pub(crate) const MANIFEST_FILE: &str = "manifest";
const MAGIC: &[u8; 8] = b"DBUSMAN\0";
const VERSION: u32 = 1;

/// What the manifest file holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Manifest {
    /// Sealed segments, oldest first: (base, size in bytes).
    pub(crate) sealed: Vec<(u64, u64)>,
    /// Base of the active segment.
    pub(crate) active: u64,
    /// No sequence above this was assigned: publishing above it rewrites
    /// the manifest first.
    pub(crate) reserved: u64,
    /// Lost sequence ranges `repair` recorded as gaps (deleted, inclusive).
    pub(crate) gaps: Vec<(u64, u64)>,
}

impl Manifest {
    /// Encodes: magic, version, postcard body, CRC32C of all before it.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut out = Vec::new();
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&postcard::to_stdvec(self)?);
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    /// Decodes; `Err` says what is wrong.
    pub(crate) fn decode(b: &[u8]) -> Result<Manifest, String> {
        if b.len() < 16 || &b[..8] != MAGIC {
            return Err("not a durabus manifest (bad magic or too short)".into());
        }
        let (body, crc) = b.split_at(b.len() - 4);
        let want = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
        if crc32c::crc32c(body) != want {
            return Err("CRC mismatch".into());
        }
        let version = u32::from_le_bytes([body[8], body[9], body[10], body[11]]);
        if version != VERSION {
            return Err(format!("unsupported manifest version {version}"));
        }
        postcard::from_bytes(&body[12..]).map_err(|e| format!("undecodable: {e}"))
    }

    /// The bases it lists, oldest first (the active one last).
    pub(crate) fn bases(&self) -> impl Iterator<Item = u64> + '_ {
        self.sealed
            .iter()
            .map(|(b, _)| *b)
            .chain(std::iter::once(self.active))
    }

    /// The size it records for sealed segment `base`.
    pub(crate) fn sealed_size(&self, base: u64) -> Option<u64> {
        self.sealed
            .iter()
            .find(|(b, _)| *b == base)
            .map(|(_, s)| *s)
    }
}

/// How many sequences a segment of `segment_size` bytes can hold at most
/// (every record at least a message with a one-byte subject): the
/// reservation taken when a segment starts.
pub(crate) fn reservation(segment_size: u64) -> u64 {
    segment_size / (record::HEADER_SIZE as u64 + 1) + 1
}

/// Reads the manifest of the stream in `dir`: `Ok(None)` when there is none
/// (a store written before manifests existed), `Err` naming the damage.
pub(crate) fn read(storage: &dyn Storage, dir: &Path) -> Result<Option<Manifest>, String> {
    match storage.read_file(&dir.join(MANIFEST_FILE)) {
        Ok(b) => Manifest::decode(&b).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("unreadable: {e}")),
    }
}

/// Replaces the manifest of the stream in `dir` atomically (invariant 6).
pub(crate) fn write(storage: &dyn Storage, dir: &Path, m: &Manifest) -> std::io::Result<()> {
    let b = m.encode().map_err(std::io::Error::other)?;
    write_atomic(storage, &dir.join(MANIFEST_FILE), &b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_round_trips_and_rejects_every_flipped_byte() {
        let m = Manifest {
            sealed: vec![(1, 4096), (29, 4100)],
            active: 57,
            reserved: 57 + reservation(4096),
            gaps: vec![(3, 5)],
        };
        let b = m.encode().unwrap();
        assert_eq!(Manifest::decode(&b), Ok(m.clone()));
        for i in 0..b.len() {
            let mut d = b.clone();
            d[i] ^= 0x01;
            assert!(Manifest::decode(&d).is_err(), "flip at {i}");
        }
        assert!(Manifest::decode(&b[..b.len() - 1]).is_err());
        assert_eq!(m.bases().collect::<Vec<_>>(), vec![1, 29, 57]);
    }
}
