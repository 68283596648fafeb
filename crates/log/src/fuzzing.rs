//! Check functions for the fuzz targets in `fuzz/` (reliability item R8), and
//! for the unit tests that replay their committed corpus under `cargo test`.
//! Hidden from the docs and not a stable API.
//!
//! Each `check_*` function takes arbitrary bytes, runs one parser of the
//! engine on them and checks its properties:
//!
//! - it returns (a panic is a bug; the fuzz targets also cap every single
//!   allocation, so a length field cannot make it allocate unboundedly);
//! - what it accepts re-encodes with the engine's own encoder into bytes that
//!   decode to the same value (byte for byte where the format is canonical).
//!
//! A violated property is returned as `Err(description)`; the fuzz targets
//! panic on it, which is the crash libFuzzer records.
//!
//! The binary decoders guard their input with a CRC, which random mutation
//! almost never gets right; each check therefore also runs on a copy of the
//! input with its length and CRC fields recomputed, so the fuzzer reaches the
//! field checks behind them.

use std::path::Path;

use durabus_core::{subject, ConsumerConfig, StreamConfig};

use crate::checkpoint::Checkpoint;
use crate::consumer::{ConsumerFile, DecodedConsumer, CONSUMER_VERSION};
use crate::record::{self, Decoded, Kind};
use crate::segment::{self, ScanEnd, ScanError};
use crate::storage::StorageFile;

/// Outcome of a check: `Err` describes the property that does not hold.
pub type Check = Result<(), String>;

fn fail<T>(what: impl Into<String>) -> Result<T, String> {
    Err(what.into())
}

/// A copy of `data` with its trailing CRC32C (of everything before it)
/// recomputed; `None` when shorter than `min`.
fn with_trailing_crc(data: &[u8], min: usize) -> Option<Vec<u8>> {
    if data.len() < min.max(4) {
        return None;
    }
    let mut v = data.to_vec();
    let at = v.len() - 4;
    let crc = crc32c::crc32c(&v[..at]);
    v[at..].copy_from_slice(&crc.to_le_bytes());
    Some(v)
}

// ---------------------------------------------------------------- records

/// Record framing (`record::decode`, `record::announced_size` and the three
/// encoders), and a segment scan of the same bytes (`segment::scan`).
///
/// Properties: a decoded record lies inside the input, within the 64 MiB cap,
/// and agrees with `announced_size`; re-encoding it gives bytes that decode
/// to the same record (the same bytes when the input's encoding is the
/// canonical one); `Torn` means the input ends before the announced size (or
/// `len` is 0); scanning the bytes as a segment body yields exactly the
/// records of decoding them one after the other, and ends where that ends.
pub fn check_record(data: &[u8]) -> Check {
    check_record_once(data)?;
    check_scan(data)?;
    if let Some(fixed) = with_record_crc(data) {
        check_record_once(&fixed)?;
        check_scan(&fixed)?;
    }
    Ok(())
}

/// `data` with the CRC of its first record recomputed, when the record's
/// announced size fits in `data`.
fn with_record_crc(data: &[u8]) -> Option<Vec<u8>> {
    let size = record::announced_size(data)?;
    if size < 8 || size > data.len() {
        return None;
    }
    let mut v = data.to_vec();
    let crc = crc32c::crc32c(&v[8..size]);
    v[4..8].copy_from_slice(&crc.to_le_bytes());
    Some(v)
}

fn check_record_once(data: &[u8]) -> Check {
    let announced = record::announced_size(data);
    let r = match record::decode(data) {
        Decoded::Ok(r) => r,
        Decoded::Torn => {
            return match announced {
                None => Ok(()),
                Some(n) if n == record::LEN_FIELD || n > data.len() => Ok(()),
                Some(n) => fail(format!(
                    "Torn although the {n} announced bytes are all there ({} given)",
                    data.len()
                )),
            };
        }
        Decoded::Corrupt(_) => return Ok(()),
    };
    if announced != Some(r.size) {
        return fail(format!(
            "record size {} disagrees with announced_size {announced:?}",
            r.size
        ));
    }
    if r.size > data.len() || r.size > record::MAX_RECORD || r.size < record::HEADER_SIZE {
        return fail(format!(
            "record size {} outside [{}, min(input {}, cap {})]",
            r.size,
            record::HEADER_SIZE,
            data.len(),
            record::MAX_RECORD
        ));
    }
    let headers = r.header_map();
    for (name, _) in headers.iter() {
        if r.header(name) != headers.get(name) {
            return fail(format!("header({name:?}) disagrees with the header map"));
        }
    }
    let mut buf = Vec::new();
    let (written, canonical) = match r.kind {
        Kind::Message => {
            let n = record::encode_message(&mut buf, r.seq, r.time, r.subject, &headers, r.payload);
            if n != record::message_size(r.subject, &headers, r.payload.len()) {
                return fail("message_size disagrees with encode_message");
            }
            // A present but empty header block (count 0) re-encodes as none.
            (n, r.headers != [0, 0])
        }
        Kind::Delete => (
            record::encode_delete(&mut buf, r.seq, r.time),
            r.subject.is_empty() && r.headers.is_empty() && r.payload.is_empty(),
        ),
        Kind::Purge => (
            record::encode_purge(&mut buf, r.seq, r.time, r.subject, r.purge_keep()),
            r.headers.is_empty() && r.payload.len() == 8,
        ),
    };
    if written != buf.len() {
        return fail("encoder returned a size other than the bytes it wrote");
    }
    let Decoded::Ok(again) = record::decode(&buf) else {
        return fail(format!("re-encoded {:?} record does not decode", r.kind));
    };
    let same = again.size == buf.len()
        && (again.kind, again.seq, again.time) == (r.kind, r.seq, r.time)
        && match r.kind {
            Kind::Message => {
                again.subject == r.subject
                    && again.header_map() == headers
                    && again.payload == r.payload
            }
            Kind::Delete => true,
            Kind::Purge => again.subject == r.subject && again.purge_keep() == r.purge_keep(),
        };
    if !same {
        return fail(format!(
            "round trip changed the record: {r:?} became {again:?}"
        ));
    }
    if canonical && buf[..] != data[..r.size] {
        return fail(format!(
            "canonical {:?} record re-encodes to different bytes",
            r.kind
        ));
    }
    Ok(())
}

/// A read-only [`StorageFile`] over a byte slice.
#[derive(Debug)]
struct SliceFile<'a>(&'a [u8]);

impl StorageFile for SliceFile<'_> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.0.len());
        let n = buf.len().min(self.0.len() - start);
        buf[..n].copy_from_slice(&self.0[start..start + n]);
        Ok(n)
    }

    fn write_all_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
        Err(std::io::Error::other("read-only"))
    }

    fn len(&self) -> std::io::Result<u64> {
        Ok(self.0.len() as u64)
    }

    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }

    fn set_len(&self, _: u64) -> std::io::Result<()> {
        Err(std::io::Error::other("read-only"))
    }
}

fn check_scan(data: &[u8]) -> Check {
    // The oracle: decode the records one after the other from the whole buffer.
    let mut want = Vec::new();
    let mut pos = 0usize;
    let want_end = loop {
        if pos == data.len() {
            break None;
        }
        match record::decode(&data[pos..]) {
            Decoded::Ok(r) => {
                want.push((pos as u64, r.size, r.seq));
                pos += r.size;
            }
            Decoded::Torn => break Some((pos as u64, true, None)),
            Decoded::Corrupt(reason) => break Some((pos as u64, false, Some(reason))),
        }
    };
    let mut got = Vec::new();
    let end = segment::scan(&SliceFile(data), 0, data.len() as u64, &mut |off, r| {
        got.push((off, r.size, r.seq));
        Ok(true)
    });
    let got_end = match end {
        Ok(ScanEnd::Clean) => None,
        Ok(ScanEnd::Bad {
            offset,
            torn,
            reason,
        }) => Some((offset, torn, (!torn).then_some(reason))),
        Err(ScanError::Io(e)) => return fail(format!("scan failed: {e}")),
        Err(ScanError::Callback(e)) => return fail(format!("scan failed: {e}")),
    };
    if got != want || got_end != want_end {
        return fail(format!(
            "scan saw {got:?} ending {got_end:?}; decoding in turn saw {want:?} ending {want_end:?}"
        ));
    }
    Ok(())
}

// ------------------------------------------------------ index, checkpoint

/// Index files (`segment::decode_index` / `encode_index`). The format has
/// one encoding per value, so an accepted file must re-encode to its own
/// bytes (which also bounds what decoding allocated by the input size).
pub fn check_index(data: &[u8]) -> Check {
    check_index_once(data)?;
    if let Some(fixed) = with_trailing_crc(data, 20) {
        check_index_once(&fixed)?;
    }
    Ok(())
}

fn check_index_once(data: &[u8]) -> Check {
    let Some(entries) = segment::decode_index(data) else {
        return Ok(());
    };
    if segment::encode_index(&entries) != data {
        return fail(format!(
            "index of {} entries re-encodes to different bytes",
            entries.len()
        ));
    }
    // The seek helpers answer an offset of the index (or the first record).
    for e in &entries {
        for off in [
            segment::seek_seq(&entries, e.seq),
            segment::seek_time(&entries, e.time),
        ] {
            if off != segment::SEGMENT_HEADER && !entries.iter().any(|x| x.offset == off) {
                return fail(format!("seek answered {off}, not an indexed offset"));
            }
        }
    }
    Ok(())
}

/// Checkpoint files (`Checkpoint::decode` / `encode`, postcard inside a
/// magic, version and CRC frame). An accepted checkpoint re-encodes to bytes
/// that decode to the same value and are no longer than the input (postcard
/// ignores trailing bytes and accepts over-long varints, so the bytes may
/// differ).
pub fn check_checkpoint(data: &[u8]) -> Check {
    check_checkpoint_once(data)?;
    if let Some(fixed) = with_trailing_crc(data, 16) {
        check_checkpoint_once(&fixed)?;
    }
    Ok(())
}

fn check_checkpoint_once(data: &[u8]) -> Check {
    let Some(c) = Checkpoint::decode(data) else {
        return Ok(());
    };
    let b = c
        .encode()
        .map_err(|e| format!("decoded checkpoint does not encode: {e}"))?;
    if b.len() > data.len() {
        return fail(format!(
            "checkpoint re-encodes to {} bytes, more than the {} decoded",
            b.len(),
            data.len()
        ));
    }
    if Checkpoint::decode(&b).as_ref() != Some(&c) {
        return fail(format!("checkpoint changed in a round trip: {c:?}"));
    }
    // Its subject table is taken or refused, never a panic.
    if let Some(s) = crate::stream::Subjects::from_ckpt(&c.subjects) {
        if s.len() * crate::stream::SUBJECT_ENTRY_BYTES != c.subjects.table.len() {
            return fail("a subject table loaded with another number of entries".to_owned());
        }
    }
    Ok(())
}

// ---------------------------------------------------------- consumer files

/// Consumer state files (`ConsumerFile::decode` / `encode`, JSON inside a
/// magic, version, length and CRC frame). An accepted file re-encodes to a
/// file that decodes to the same state; `Newer` names a version other than
/// this build's. The decoded configuration is also validated (must return).
pub fn check_consumer_file(data: &[u8]) -> Check {
    check_consumer_file_once(data)?;
    if let Some(fixed) = with_consumer_frame(data) {
        check_consumer_file_once(&fixed)?;
    }
    Ok(())
}

/// `data` with the body length (bytes 12..16) and the trailing CRC fixed.
fn with_consumer_frame(data: &[u8]) -> Option<Vec<u8>> {
    let body = data.len().checked_sub(20)?;
    let mut v = data.to_vec();
    v[12..16].copy_from_slice(&u32::try_from(body).ok()?.to_le_bytes());
    with_trailing_crc(&v, 20)
}

fn check_consumer_file_once(data: &[u8]) -> Check {
    match ConsumerFile::decode(data) {
        DecodedConsumer::Ok(f) => {
            let _ = f.config.validate();
            let b = f
                .encode()
                .map_err(|e| format!("decoded consumer state does not encode: {e}"))?;
            match ConsumerFile::decode(&b) {
                DecodedConsumer::Ok(g) if g == f => Ok(()),
                other => fail(format!(
                    "consumer state {f:?} changed in a round trip: {other:?}"
                )),
            }
        }
        DecodedConsumer::Newer(v) if v == CONSUMER_VERSION => {
            fail("Newer reported for this build's own version")
        }
        DecodedConsumer::Newer(_) | DecodedConsumer::Corrupt(_) => Ok(()),
    }
}

// ------------------------------------------------------ subjects and names

/// A reference matcher over token lists, written independently of
/// `subject::matches`.
fn reference_match(filter: &[&str], subject: &[&str]) -> bool {
    match (filter.split_first(), subject.split_first()) {
        (None, None) => true,
        (Some((&">", _)), Some(_)) => true,
        (Some((f, fr)), Some((s, sr))) => (*f == "*" || f == s) && reference_match(fr, sr),
        _ => false,
    }
}

/// Subject validation and matching (`durabus_core::subject`) and name
/// validation (`validate_stream_name`, `validate_consumer_name`,
/// `sanitize`). The input is cut at its first NUL byte into two strings
/// (invalid UTF-8 is replaced).
///
/// Properties: a valid publish subject is a valid filter without wildcards
/// (and the converse); for valid arguments `matches` agrees with a
/// reference matcher and with `is_subset`, implies `overlaps`, and
/// `overlaps` is symmetric; stream and consumer names follow one rule
/// (but for their byte limits), a
/// valid name is a valid publish subject, and `sanitize` yields a valid name
/// and leaves valid names alone.
pub fn check_subjects(data: &[u8]) -> Check {
    let text = String::from_utf8_lossy(data);
    let (a, b) = text.split_once('\0').unwrap_or((&text, ""));
    for s in [a, b] {
        let publish = subject::validate_publish(s).is_ok();
        let filter = subject::validate_filter(s).is_ok();
        let wild = subject::has_wildcards(s);
        if publish != (filter && !wild) {
            return fail(format!(
                "{s:?}: publish-valid {publish}, filter-valid {filter}, wildcards {wild}"
            ));
        }
        if filter && !(subject::matches(s, s) || wild) {
            return fail(format!("{s:?} does not match itself"));
        }
        if filter && !(subject::overlaps(s, s) && subject::is_subset(s, s)) {
            return fail(format!("{s:?} does not overlap or contain itself"));
        }
        check_name(s)?;
    }
    let (fa, fb) = (
        subject::validate_filter(a).is_ok(),
        subject::validate_filter(b).is_ok(),
    );
    if fa && fb {
        if subject::overlaps(a, b) != subject::overlaps(b, a) {
            return fail(format!("overlaps({a:?}, {b:?}) is not symmetric"));
        }
        if subject::is_subset(a, b) && !subject::overlaps(a, b) {
            return fail(format!(
                "{a:?} is a subset of {b:?} but does not overlap it"
            ));
        }
        for (f, s) in [(a, b), (b, a)] {
            if subject::validate_publish(s).is_err() {
                continue;
            }
            let m = subject::matches(f, s);
            let tf: Vec<&str> = f.split('.').collect();
            let ts: Vec<&str> = s.split('.').collect();
            if m != reference_match(&tf, &ts) {
                return fail(format!(
                    "matches({f:?}, {s:?}) = {m}, the reference disagrees"
                ));
            }
            if m != subject::is_subset(s, f) {
                return fail(format!("matches({f:?}, {s:?}) = {m}, is_subset disagrees"));
            }
            if m && !subject::overlaps(f, s) {
                return fail(format!("{f:?} matches {s:?} but does not overlap it"));
            }
        }
    }
    Ok(())
}

fn check_name(s: &str) -> Check {
    let stream = durabus_core::validate_stream_name(s).is_ok();
    let consumer = durabus_core::validate_consumer_name(s).is_ok();
    // One rule but the byte limit, which is longer for consumers.
    if stream != (consumer && s.len() <= durabus_core::MAX_STREAM_NAME_LEN) {
        return fail(format!("{s:?}: stream and consumer name rules disagree"));
    }
    if stream && subject::validate_publish(s).is_err() {
        return fail(format!("valid name {s:?} is not a valid subject"));
    }
    let clean = durabus_core::sanitize(s);
    if durabus_core::validate_stream_name(&clean).is_err() {
        return fail(format!("sanitize({s:?}) = {clean:?} is not a valid name"));
    }
    if stream && clean != s {
        return fail(format!(
            "sanitize changed the valid name {s:?} to {clean:?}"
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------- configs

/// Stream and consumer configurations as JSON (their serde form, as in
/// `stream.json` and consumer files). Whatever deserializes validates
/// without panicking, may always be "updated" to itself, and survives a JSON
/// round trip unchanged.
pub fn check_config(data: &[u8]) -> Check {
    if let Ok(c) = serde_json::from_slice::<StreamConfig>(data) {
        let valid = c.validate().is_ok();
        if valid {
            for s in c.effective_subjects() {
                if subject::validate_filter(&s).is_err() {
                    return fail(format!("valid stream config captures invalid {s:?}"));
                }
            }
        }
        if let Err(e) = c.validate_update(&c) {
            return fail(format!("stream config cannot be updated to itself: {e}"));
        }
        round_trip(&c)?;
    }
    if let Ok(c) = serde_json::from_slice::<ConsumerConfig>(data) {
        let _ = c.validate();
        let _ = c.effective_inactive_threshold();
        if let Err(e) = c.validate_update(&c) {
            return fail(format!("consumer config cannot be updated to itself: {e}"));
        }
        round_trip(&c)?;
    }
    Ok(())
}

fn round_trip<T>(v: &T) -> Check
where
    T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let json = serde_json::to_vec(v).map_err(|e| format!("{v:?} does not serialize: {e}"))?;
    match serde_json::from_slice::<T>(&json) {
        Ok(w) if w == *v => Ok(()),
        other => fail(format!("{v:?} changed in a JSON round trip: {other:?}")),
    }
}

// ----------------------------------------------------------------- corpus

/// Runs `check` on every file of the corpus directory `dir`; returns how
/// many files were checked. Errors name the file.
pub fn check_corpus(dir: &Path, check: fn(&[u8]) -> Check) -> Result<usize, String> {
    let mut n = 0;
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading {}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    paths.sort();
    for p in paths {
        let data = std::fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
        check(&data).map_err(|e| format!("{}: {e}", p.display()))?;
        n += 1;
    }
    Ok(n)
}

/// Seed inputs for the corpus of each target, built with the engine's own
/// encoders: `(target, file name, bytes)`.
pub fn seeds() -> Vec<(&'static str, String, Vec<u8>)> {
    use crate::checkpoint::SegCkpt;
    use crate::consumer::Pending;
    use crate::segment::IndexEntry;
    use crate::stream::SubjectsCkpt;
    use durabus_core::{DeliverPolicy, HeaderMap, SequencePair};

    let mut out = Vec::new();
    let mut h = HeaderMap::new();
    h.append("Nats-Msg-Id", "m-1");
    h.append("Tag", "é");
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push((target, format!("seed-{name}"), bytes));
    };

    let mut b = Vec::new();
    record::encode_message(
        &mut b,
        1,
        1_700_000_000_000_000_000,
        "orders.eu",
        &h,
        b"hello",
    );
    add("record", "message", b.clone());
    let mut two = b.clone();
    record::encode_delete(&mut two, 1, 1_700_000_000_000_000_001);
    record::encode_purge(&mut two, 2, 1_700_000_000_000_000_002, "orders.*", 3);
    add("record", "message-delete-purge", two.clone());
    add("record", "torn", two[..two.len() - 3].to_vec());
    let mut plain = Vec::new();
    record::encode_message(&mut plain, 7, 0, "a", &HeaderMap::new(), b"");
    add("record", "message-no-headers", plain);
    let mut del = Vec::new();
    record::encode_delete(&mut del, u64::MAX, -1);
    add("record", "delete", del);
    let mut purge = Vec::new();
    record::encode_purge(&mut purge, 10, 5, "", 0);
    add("record", "purge-all", purge);

    let entries: Vec<IndexEntry> = (0..4)
        .map(|i| IndexEntry {
            seq: 1 + i * 50,
            time: 1_700_000_000 + i as i64,
            offset: segment::SEGMENT_HEADER + i * segment::INDEX_INTERVAL,
        })
        .collect();
    add("index", "four", segment::encode_index(&entries));
    add("index", "one", segment::encode_index(&entries[..1]));
    add("index", "empty", segment::encode_index(&[]));

    let ckpt = Checkpoint {
        covered_base: 1,
        covered_offset: 4200,
        first_seq: 1,
        last_seq: 60,
        last_time: 1_700_000_000_000_000_000,
        messages: 59,
        bytes: 3000,
        segments: vec![SegCkpt {
            base: 1,
            size: 4200,
            msgs: 59,
            bytes: 3000,
            last_seq: 60,
            first_time: 1_699_999_999_000_000_000,
            last_time: 1_700_000_000_000_000_000,
        }],
        covered_index: entries[..2].to_vec(),
        deleted: vec![(5, 5)],
        subjects: {
            // Two entries: (hi, lo, count, last) as 24 little-endian bytes.
            let mut table = Vec::new();
            for (hi, lo, count, last) in [(11u64, 1u32, 40u32, 60u64), (12, 2, 19, 59)] {
                table.extend_from_slice(&hi.to_le_bytes());
                table.extend_from_slice(&lo.to_le_bytes());
                table.extend_from_slice(&count.to_le_bytes());
                table.extend_from_slice(&last.to_le_bytes());
            }
            SubjectsCkpt {
                sip: (3, 4),
                table,
                big: Vec::new(),
                older: Some(vec![(12, 2, vec![2, 3])]),
            }
        },
        dedup: vec![("m-1".into(), 60, 1_700_000_000_000_000_000)],
    };
    if let Ok(b) = ckpt.encode() {
        add("checkpoint", "full", b);
    }
    let empty = Checkpoint {
        segments: Vec::new(),
        deleted: Vec::new(),
        subjects: SubjectsCkpt {
            sip: (0, 0),
            table: Vec::new(),
            big: Vec::new(),
            older: None,
        },
        dedup: Vec::new(),
        ..ckpt
    };
    if let Ok(b) = empty.encode() {
        add("checkpoint", "empty", b);
    }

    let file = ConsumerFile {
        name: "billing".into(),
        config: ConsumerConfig::durable("billing")
            .filter_subject("orders.*")
            .max_deliver(4)
            .backoff([std::time::Duration::from_secs(1)]),
        created_ns: 1_700_000_000_000_000_000,
        delivered: SequencePair {
            consumer_seq: 5,
            stream_seq: 9,
        },
        ack_floor: SequencePair {
            consumer_seq: 2,
            stream_seq: 3,
        },
        next_seq: 10,
        start_queue: vec![12, 13],
        pending: vec![(
            7,
            Pending {
                cseq: 4,
                count: 2,
                deadline_ns: 1_700_000_030_000_000_000,
            },
        )],
        journal_gen: 3,
    };
    if let Ok(b) = file.encode() {
        add("consumer_file", "durable", b);
    }
    let start = ConsumerFile {
        name: "e1".into(),
        config: ConsumerConfig::ephemeral()
            .deliver_policy(DeliverPolicy::ByStartTime(std::time::UNIX_EPOCH)),
        start_queue: Vec::new(),
        pending: Vec::new(),
        ..file
    };
    if let Ok(b) = start.encode() {
        add("consumer_file", "ephemeral-by-time", b);
    }

    for (name, s) in [
        ("literal", "orders.eu.created\0orders.*.created"),
        ("gt", "orders.>\0orders.eu"),
        ("star", "*.b.*\0a.*.c"),
        ("bad", "a..b\0a.>.b"),
        ("name", "ORDERS_v2-eu\0orders eu/west"),
        ("unicode", "é.\u{3000}.x\0>"),
    ] {
        add("subject", name, s.as_bytes().to_vec());
    }

    let stream = StreamConfig::new("ORDERS")
        .subjects(["orders.>", "billing.*"])
        .max_age(std::time::Duration::from_secs(3600))
        .max_msgs_per_subject(10u64)
        .discard(durabus_core::DiscardPolicy::New)
        .discard_new_per_subject(true);
    if let Ok(b) = serde_json::to_vec(&stream) {
        add("config", "stream", b);
    }
    if let Ok(b) = serde_json::to_vec(&file.config) {
        add("config", "consumer", b);
    }
    let by_seq = ConsumerConfig::ephemeral().deliver_policy(DeliverPolicy::ByStartSequence(5));
    if let Ok(b) = serde_json::to_vec(&by_seq) {
        add("config", "consumer-by-seq", b);
    }
    if let Ok(b) = serde_json::to_vec(&start.config) {
        add("config", "consumer-by-time", b);
    }
    add(
        "config",
        "partial",
        br#"{"name":"S","subjects":["a.>"],"max_age":{"secs":1,"nanos":0}}"#.to_vec(),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(target: &str, check: fn(&[u8]) -> Check) {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../fuzz/corpus")
            .join(target);
        let n = check_corpus(&dir, check).unwrap();
        assert!(n > 0, "no corpus files in {}", dir.display());
    }

    #[test]
    fn record_corpus_holds_its_properties() {
        corpus("record", check_record);
    }

    #[test]
    fn index_corpus_holds_its_properties() {
        corpus("index", check_index);
    }

    #[test]
    fn checkpoint_corpus_holds_its_properties() {
        corpus("checkpoint", check_checkpoint);
    }

    #[test]
    fn consumer_file_corpus_holds_its_properties() {
        corpus("consumer_file", check_consumer_file);
    }

    #[test]
    fn subject_corpus_holds_its_properties() {
        corpus("subject", check_subjects);
    }

    #[test]
    fn config_corpus_holds_its_properties() {
        corpus("config", check_config);
    }

    #[test]
    fn seeds_hold_their_properties() {
        for (target, name, bytes) in seeds() {
            let check = match target {
                "record" => check_record,
                "index" => check_index,
                "checkpoint" => check_checkpoint,
                "consumer_file" => check_consumer_file,
                "subject" => check_subjects,
                "config" => check_config,
                other => panic!("unknown target {other}"),
            };
            check(&bytes).unwrap_or_else(|e| panic!("{target}/{name}: {e}"));
        }
    }

    /// Writes the seeds into `fuzz/corpus/<target>/`:
    /// `cargo test -p durabus-log --lib fuzzing::tests::write_seed_corpus -- --ignored`.
    #[test]
    #[ignore = "writes fuzz/corpus; run by hand when the formats change"]
    fn write_seed_corpus() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus");
        for (target, name, bytes) in seeds() {
            let dir = root.join(target);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    }
}
