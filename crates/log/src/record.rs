//! Record framing (docs/design.md, "Record"): encode into a reused buffer,
//! decode into an outcome that is never a panic.

use durabus_core::HeaderMap;

/// Bytes of the `len` field.
pub(crate) const LEN_FIELD: usize = 4;
/// Fixed bytes after `len`: crc 4, kind 1, seq 8, time 8, subject_len 2,
/// headers_len 4, payload_len 4.
pub(crate) const FIXED: usize = 31;
/// Offset of the first variable byte.
pub(crate) const HEADER_SIZE: usize = LEN_FIELD + FIXED;
/// Largest record accepted (`4 + len`), the 64 MiB cap.
pub(crate) const MAX_RECORD: usize = 64 * 1024 * 1024;

/// Kind of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A stored message.
    Message = 1,
    /// Deletes the message at `seq`.
    Delete = 2,
    /// Purge: removes messages below `seq` (matching `subject` when non-empty).
    Purge = 3,
}

impl Kind {
    fn from_u8(b: u8) -> Option<Kind> {
        match b {
            1 => Some(Kind::Message),
            2 => Some(Kind::Delete),
            3 => Some(Kind::Purge),
            _ => None,
        }
    }

    /// The name `durabus dump` prints.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::Message => "msg",
            Kind::Delete => "delete",
            Kind::Purge => "purge",
        }
    }
}

/// A decoded record borrowing the buffer it was decoded from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RecordRef<'a> {
    pub(crate) kind: Kind,
    pub(crate) seq: u64,
    pub(crate) time: i64,
    pub(crate) subject: &'a str,
    /// Encoded headers (validated); empty when there are none.
    pub(crate) headers: &'a [u8],
    pub(crate) payload: &'a [u8],
    /// Bytes the record occupies on disk (`4 + len`).
    pub(crate) size: usize,
}

impl RecordRef<'_> {
    /// The headers as a map (allocates nothing when there are none).
    pub(crate) fn header_map(&self) -> HeaderMap {
        decode_headers(self.headers)
    }

    /// Value of header `name`, without building the map.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        HeaderIter::new(self.headers)
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    /// The `keep` count of a purge record.
    pub(crate) fn purge_keep(&self) -> u64 {
        match <[u8; 8]>::try_from(self.payload) {
            Ok(b) => u64::from_le_bytes(b),
            Err(_) => 0,
        }
    }
}

/// What decoding the bytes at some offset yielded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// A valid record.
    Ok(RecordRef<'a>),
    /// The bytes end before the record does, or `len` is 0.
    Torn,
    /// The bytes are a record that fails verification.
    Corrupt(String),
}

/// The total size (`4 + len`) announced by the record starting `buf`, if the
/// length field is complete.
pub(crate) fn announced_size(buf: &[u8]) -> Option<usize> {
    let b: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some(LEN_FIELD + u32::from_le_bytes(b) as usize)
}

fn u16_at(buf: &[u8], at: usize) -> usize {
    let mut b = [0u8; 2];
    b.copy_from_slice(&buf[at..at + 2]);
    u16::from_le_bytes(b) as usize
}

fn u32_at(buf: &[u8], at: usize) -> usize {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b) as usize
}

fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Whether `buf` starts with what looks like a whole record (its length,
/// kind and field lengths agree) before the CRC is checked: the cheap
/// filter of a resynchronisation search (docs/design.md "Reading past a
/// damaged record").
pub(crate) fn plausible(buf: &[u8]) -> bool {
    if buf.len() < HEADER_SIZE {
        return false;
    }
    let len = u32_at(buf, 0);
    let size = LEN_FIELD + len;
    len >= FIXED
        && size <= MAX_RECORD
        && size <= buf.len()
        && Kind::from_u8(buf[8]).is_some()
        && (HEADER_SIZE + u16_at(buf, 25)) as u64 + u32_at(buf, 27) as u64 + u32_at(buf, 31) as u64
            == size as u64
}

/// Decodes the record at the start of `buf`. Never panics, whatever the bytes.
pub(crate) fn decode(buf: &[u8]) -> Decoded<'_> {
    if buf.len() < LEN_FIELD {
        return Decoded::Torn;
    }
    let len = u32_at(buf, 0);
    if len == 0 {
        return Decoded::Torn;
    }
    let size = LEN_FIELD + len;
    if size > MAX_RECORD {
        return Decoded::Corrupt(format!(
            "record length {size} exceeds the {MAX_RECORD}-byte cap"
        ));
    }
    if len < FIXED {
        return Decoded::Corrupt(format!(
            "record length {len} is too small for its fixed fields"
        ));
    }
    if buf.len() < size {
        return Decoded::Torn;
    }
    let rec = &buf[..size];
    let crc = u32_at(rec, 4) as u32;
    if crc32c::crc32c(&rec[8..]) != crc {
        return Decoded::Corrupt("CRC mismatch".to_owned());
    }
    let Some(kind) = Kind::from_u8(rec[8]) else {
        return Decoded::Corrupt(format!("unknown record kind {}", rec[8]));
    };
    let seq = u64_at(rec, 9);
    let time = u64_at(rec, 17) as i64;
    let subject_len = u16_at(rec, 25);
    let headers_len = u32_at(rec, 27);
    let payload_len = u32_at(rec, 31);
    if HEADER_SIZE as u64 + subject_len as u64 + headers_len as u64 + payload_len as u64
        != size as u64
    {
        return Decoded::Corrupt(format!(
            "field lengths (subject {subject_len}, headers {headers_len}, payload {payload_len}) disagree with record length {len}"
        ));
    }
    let s_end = HEADER_SIZE + subject_len;
    let h_end = s_end + headers_len;
    let Ok(subject) = std::str::from_utf8(&rec[HEADER_SIZE..s_end]) else {
        return Decoded::Corrupt("subject is not UTF-8".to_owned());
    };
    let headers = &rec[s_end..h_end];
    if let Err(reason) = validate_headers(headers) {
        return Decoded::Corrupt(reason);
    }
    Decoded::Ok(RecordRef {
        kind,
        seq,
        time,
        subject,
        headers,
        payload: &rec[h_end..],
        size,
    })
}

fn put_fixed(
    buf: &mut Vec<u8>,
    kind: Kind,
    seq: u64,
    time: i64,
    subject_len: usize,
    headers_len: usize,
    payload_len: usize,
) -> usize {
    let start = buf.len();
    let len = FIXED + subject_len + headers_len + payload_len;
    buf.extend_from_slice(&(len as u32).to_le_bytes());
    buf.extend_from_slice(&[0u8; 4]); // crc, patched by `finish`
    buf.push(kind as u8);
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&time.to_le_bytes());
    buf.extend_from_slice(&(subject_len as u16).to_le_bytes());
    buf.extend_from_slice(&(headers_len as u32).to_le_bytes());
    buf.extend_from_slice(&(payload_len as u32).to_le_bytes());
    start
}

fn finish(buf: &mut [u8], start: usize) {
    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Bytes the headers take encoded (0 when there are none).
pub(crate) fn headers_size(headers: &HeaderMap) -> usize {
    if headers.is_empty() {
        0
    } else {
        2 + headers
            .iter()
            .map(|(n, v)| 2 + n.len() + 4 + v.len())
            .sum::<usize>()
    }
}

/// Size on disk of a message record.
pub(crate) fn message_size(subject: &str, headers: &HeaderMap, payload_len: usize) -> usize {
    HEADER_SIZE + subject.len() + headers_size(headers) + payload_len
}

/// Appends a message record to `buf`; returns its size. The caller checked
/// the size against [`MAX_RECORD`] and the subject length (u16).
pub(crate) fn encode_message(
    buf: &mut Vec<u8>,
    seq: u64,
    time: i64,
    subject: &str,
    headers: &HeaderMap,
    payload: &[u8],
) -> usize {
    let hlen = headers_size(headers);
    let start = put_fixed(
        buf,
        Kind::Message,
        seq,
        time,
        subject.len(),
        hlen,
        payload.len(),
    );
    buf.extend_from_slice(subject.as_bytes());
    if hlen > 0 {
        buf.extend_from_slice(&(headers.len() as u16).to_le_bytes());
        for (n, v) in headers.iter() {
            buf.extend_from_slice(&(n.len() as u16).to_le_bytes());
            buf.extend_from_slice(n.as_bytes());
            buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
            buf.extend_from_slice(v.as_bytes());
        }
    }
    buf.extend_from_slice(payload);
    finish(buf, start);
    buf.len() - start
}

/// Appends a delete record for `seq`.
pub(crate) fn encode_delete(buf: &mut Vec<u8>, seq: u64, time: i64) -> usize {
    let start = put_fixed(buf, Kind::Delete, seq, time, 0, 0, 0);
    finish(buf, start);
    buf.len() - start
}

/// Appends a purge record: removes messages below `seq` (matching `subject`
/// when non-empty), keeping the newest `keep` of them.
pub(crate) fn encode_purge(
    buf: &mut Vec<u8>,
    seq: u64,
    time: i64,
    subject: &str,
    keep: u64,
) -> usize {
    let start = put_fixed(buf, Kind::Purge, seq, time, subject.len(), 0, 8);
    buf.extend_from_slice(subject.as_bytes());
    buf.extend_from_slice(&keep.to_le_bytes());
    finish(buf, start);
    buf.len() - start
}

/// Iterates encoded headers that passed [`validate_headers`].
struct HeaderIter<'a> {
    buf: &'a [u8],
    pos: usize,
    left: usize,
}

impl<'a> HeaderIter<'a> {
    fn new(buf: &'a [u8]) -> Self {
        if buf.len() < 2 {
            return Self {
                buf,
                pos: 0,
                left: 0,
            };
        }
        Self {
            buf,
            pos: 2,
            left: u16_at(buf, 0),
        }
    }
}

impl<'a> Iterator for HeaderIter<'a> {
    type Item = (&'a str, &'a str);
    fn next(&mut self) -> Option<Self::Item> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        let b = self.buf;
        let nl = u16_at(b.get(self.pos..self.pos + 2)?, 0);
        let name = b.get(self.pos + 2..self.pos + 2 + nl)?;
        let vpos = self.pos + 2 + nl;
        let vl = u32_at(b.get(vpos..vpos + 4)?, 0);
        let value = b.get(vpos + 4..vpos + 4 + vl)?;
        self.pos = vpos + 4 + vl;
        Some((
            std::str::from_utf8(name).ok()?,
            std::str::from_utf8(value).ok()?,
        ))
    }
}

fn validate_headers(buf: &[u8]) -> Result<(), String> {
    if buf.is_empty() {
        return Ok(());
    }
    let bad = |what: &str| Err(format!("malformed headers: {what}"));
    if buf.len() < 2 {
        return bad("count truncated");
    }
    let count = u16_at(buf, 0);
    let mut pos = 2;
    for _ in 0..count {
        let Some(nl) = buf.get(pos..pos + 2).map(|b| u16_at(b, 0)) else {
            return bad("name length truncated");
        };
        pos += 2;
        let Some(name) = buf.get(pos..pos + nl) else {
            return bad("name truncated");
        };
        if std::str::from_utf8(name).is_err() {
            return bad("name is not UTF-8");
        }
        pos += nl;
        let Some(vl) = buf.get(pos..pos + 4).map(|b| u32_at(b, 0)) else {
            return bad("value length truncated");
        };
        pos += 4;
        let Some(value) = buf.get(pos..pos.saturating_add(vl)) else {
            return bad("value truncated");
        };
        if std::str::from_utf8(value).is_err() {
            return bad("value is not UTF-8");
        }
        pos += vl;
    }
    if pos != buf.len() {
        return bad("trailing bytes");
    }
    Ok(())
}

/// Builds a [`HeaderMap`] from validated encoded headers.
pub(crate) fn decode_headers(buf: &[u8]) -> HeaderMap {
    if buf.is_empty() {
        return HeaderMap::new();
    }
    HeaderIter::new(buf).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample_headers() -> HeaderMap {
        let mut h = HeaderMap::new();
        h.append("Nats-Msg-Id", "m-1");
        h.append("Tag", "a");
        h.append("Tag", "é");
        h
    }

    #[test]
    fn message_record_round_trips() {
        let mut buf = Vec::new();
        let h = sample_headers();
        let n = encode_message(&mut buf, 42, 1_700_000_000_000, "a.b", &h, b"payload");
        assert_eq!(n, buf.len());
        assert_eq!(n, message_size("a.b", &h, 7));
        match decode(&buf) {
            Decoded::Ok(r) => {
                assert_eq!(r.kind, Kind::Message);
                assert_eq!(r.seq, 42);
                assert_eq!(r.time, 1_700_000_000_000);
                assert_eq!(r.subject, "a.b");
                assert_eq!(r.header_map(), h);
                assert_eq!(r.header("Nats-Msg-Id"), Some("m-1"));
                assert_eq!(r.payload, b"payload");
                assert_eq!(r.size, n);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn empty_headers_encode_to_zero_bytes() {
        let mut buf = Vec::new();
        encode_message(&mut buf, 1, 0, "x", &HeaderMap::new(), b"");
        assert_eq!(buf.len(), HEADER_SIZE + 1);
        let Decoded::Ok(r) = decode(&buf) else {
            panic!()
        };
        assert!(r.headers.is_empty());
        assert!(r.header_map().is_empty());
    }

    #[test]
    fn delete_and_purge_records_round_trip() {
        let mut buf = Vec::new();
        let a = encode_delete(&mut buf, 7, 5);
        encode_purge(&mut buf, 9, 6, "a.*", 3);
        let Decoded::Ok(d) = decode(&buf) else {
            panic!()
        };
        assert_eq!((d.kind, d.seq, d.time), (Kind::Delete, 7, 5));
        let Decoded::Ok(p) = decode(&buf[a..]) else {
            panic!()
        };
        assert_eq!(
            (p.kind, p.seq, p.subject, p.purge_keep()),
            (Kind::Purge, 9, "a.*", 3)
        );
    }

    #[test]
    fn truncated_records_decode_as_torn() {
        let mut buf = Vec::new();
        encode_message(&mut buf, 1, 2, "s", &sample_headers(), b"xyz");
        for cut in 0..buf.len() {
            assert_eq!(decode(&buf[..cut]), Decoded::Torn, "cut at {cut}");
        }
        assert_eq!(decode(&[0u8; 64]), Decoded::Torn);
    }

    #[test]
    fn any_single_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode_message(&mut buf, 1, 2, "s.t", &sample_headers(), b"xyz");
        for byte in 4..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(
                    matches!(decode(&b), Decoded::Corrupt(_)),
                    "flip at {byte}:{bit} not detected"
                );
            }
        }
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes() {
        // A seeded generator keeps the test reproducible.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x9E37_79B9_7F4A_7C15);
        let mut next = || rng.random::<u64>();
        let mut valid = Vec::new();
        encode_message(&mut valid, 3, 4, "a.b.c", &sample_headers(), b"hello world");
        for _ in 0..20_000 {
            let len = (next() % 96) as usize;
            let mut b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            let _ = decode(&b);
            // Mutations of a valid record, with the CRC fixed up, exercise the
            // field checks behind the CRC.
            let mut v = valid.clone();
            let i = (next() as usize) % v.len();
            v[i] = next() as u8;
            if v.len() >= 8 {
                let crc = crc32c::crc32c(&v[8..]);
                v[4..8].copy_from_slice(&crc.to_le_bytes());
            }
            let _ = decode(&v);
            let cut = (next() as usize) % (v.len() + 1);
            let _ = decode(&v[..cut]);
            b.extend_from_slice(&v);
            let _ = decode(&b);
        }
    }

    #[test]
    fn oversized_length_is_corrupt_not_an_allocation() {
        let mut b = vec![0u8; 8];
        b[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(decode(&b), Decoded::Corrupt(_)));
    }
}
