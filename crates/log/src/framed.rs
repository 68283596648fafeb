//! Entries framed `len u32 LE | crc32c u32 LE | postcard body`, as the
//! consumer journals and the catalog journal append them: a reader takes
//! entries up to the first that does not verify (a torn last write).

use serde::de::DeserializeOwned;

/// Appends `body` framed (its length must fit in a u32: callers bound it).
pub(crate) fn put(out: &mut Vec<u8>, body: &[u8]) {
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32c::crc32c(body).to_le_bytes());
    out.extend_from_slice(body);
}

/// The entries of `b` from offset `at` up to the first that does not
/// verify (a length over `max`, past the end, a CRC or decoding
/// mismatch), and where they end. Never panics.
pub(crate) fn read<T: DeserializeOwned>(b: &[u8], mut at: usize, max: usize) -> (Vec<T>, usize) {
    let mut out = Vec::new();
    while at + 8 <= b.len() {
        let len = u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize;
        let crc = u32::from_le_bytes([b[at + 4], b[at + 5], b[at + 6], b[at + 7]]);
        if len > max || at + 8 + len > b.len() {
            break;
        }
        let body = &b[at + 8..at + 8 + len];
        if crc32c::crc32c(body) != crc {
            break;
        }
        let Ok(e) = postcard::from_bytes::<T>(body) else {
            break;
        };
        out.push(e);
        at += 8 + len;
    }
    (out, at)
}

/// The body of `b` when `b` is exactly one entry that verifies (its
/// length and CRC; the body is not decoded).
pub(crate) fn one(b: &[u8]) -> Option<&[u8]> {
    let len = u32::from_le_bytes(b.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(b.get(4..8)?.try_into().ok()?);
    let body = b.get(8..)?;
    (body.len() == len && crc32c::crc32c(body) == crc).then_some(body)
}
