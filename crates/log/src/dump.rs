//! `durabus dump`: every record of a data directory, read-only and without
//! the lock, so the log stays as inspectable as a text file.

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use durabus_core::{Error, Result};

use crate::consumer::DecodedConsumer;
use crate::record::{self, Decoded, Kind};
use crate::segment::{self, HeaderCheck, ScanEnd, SEGMENT_HEADER};
use crate::storage::{FsStorage, ReadOnlyStorage, Storage};
use crate::stream::scan_error;
use crate::{DumpRecord, FileProblem, Progress, TornTail};

/// The file system, opened `O_RDONLY` and refusing writes: dump and the
/// checks work on a read-only file system and can change nothing.
fn read_only_fs() -> ReadOnlyStorage {
    ReadOnlyStorage::new(std::sync::Arc::new(FsStorage::new()))
}

/// See [`crate::check_store`].
pub(crate) fn check_store(dir: &Path) -> Result<Vec<FileProblem>> {
    let storage = read_only_fs();
    let mut out = Vec::new();
    let marker = dir.join("durabus.json");
    match storage.read_file(&marker) {
        Ok(b) => match serde_json::from_slice::<serde_json::Value>(&b) {
            Ok(v) => match v.get("format").and_then(serde_json::Value::as_u64) {
                Some(f) if f >= 1 && f <= u64::from(crate::FORMAT_VERSION) => {}
                Some(f) => out.push(FileProblem {
                    path: marker,
                    problem: format!(
                        "format {f}, this build reads format {}; the store does not open",
                        crate::FORMAT_VERSION
                    ),
                    fatal: true,
                }),
                None => out.push(FileProblem {
                    path: marker,
                    problem: "format marker has no \"format\" number; the store does not open"
                        .into(),
                    fatal: true,
                }),
            },
            Err(e) => out.push(FileProblem {
                path: marker,
                problem: format!("format marker is not valid JSON ({e}); the store does not open"),
                fatal: true,
            }),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => out.push(FileProblem {
            path: marker,
            problem: "format marker is missing; the next writable open writes it".into(),
            fatal: false,
        }),
        Err(e) => out.push(FileProblem {
            path: marker,
            problem: format!("format marker cannot be read ({e}); the store does not open"),
            fatal: true,
        }),
    }
    let streams_dir = dir.join("streams");
    if storage.exists(&streams_dir).unwrap_or(false) {
        let names = storage
            .list_dir(&streams_dir)
            .map_err(|e| Error::io(format!("listing {}", streams_dir.display()), e))?;
        for n in names {
            if n.starts_with(".creating-") || n.starts_with(".deleted-") {
                continue;
            }
            let path = streams_dir.join(&n);
            if !storage.is_dir(&path).unwrap_or(false)
                || durabus_core::validate_stream_name(&n).is_err()
            {
                out.push(FileProblem {
                    path,
                    problem: "not a stream directory (not a valid stream name); open ignores it"
                        .into(),
                    fatal: false,
                });
            }
        }
    }
    Ok(out)
}

/// The streams [`dump`] reads: `stream`, or every directory of `streams/`.
fn dumped_streams(storage: &dyn Storage, dir: &Path, stream: Option<&str>) -> Result<Vec<String>> {
    let streams_dir = dir.join("streams");
    let names: Vec<String> = storage
        .list_dir(&streams_dir)
        .map_err(|e| Error::io(format!("listing {}", streams_dir.display()), e))?
        .into_iter()
        .filter(|n| !n.starts_with('.') && storage.is_dir(&streams_dir.join(n)).unwrap_or(false))
        .filter(|n| stream.is_none_or(|s| s == n.as_str()))
        .collect();
    match stream {
        Some(s) if names.is_empty() => Err(Error::StreamNotFound { name: s.to_owned() }),
        _ => Ok(names),
    }
}

/// The segment files of a stream directory, oldest first.
fn segment_files(storage: &dyn Storage, stream_dir: &Path) -> Result<Vec<(u64, PathBuf)>> {
    let segdir = stream_dir.join("segments");
    let mut bases: Vec<u64> = storage
        .list_dir(&segdir)
        .map_err(|e| Error::io(format!("listing {}", segdir.display()), e))?
        .iter()
        .filter_map(|n| segment::parse_log_name(n))
        .collect();
    bases.sort_unstable();
    Ok(bases
        .into_iter()
        .map(|b| (b, segdir.join(segment::log_name(b))))
        .collect())
}

/// See [`crate::segment_bytes`].
pub(crate) fn segment_bytes(dir: &Path, stream: Option<&str>) -> Result<u64> {
    let storage = read_only_fs();
    let mut total = 0u64;
    for name in dumped_streams(&storage, dir, stream)? {
        let stream_dir = dir.join("streams").join(name);
        if !storage
            .exists(&stream_dir.join("segments"))
            .unwrap_or(false)
        {
            continue; // holds nothing (dump reports why)
        }
        for (_, path) in segment_files(&storage, &stream_dir)? {
            match storage.open(&path).and_then(|f| f.len()) {
                Ok(len) => total += len,
                // Removed since the listing (retention on a live store).
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
            }
        }
    }
    Ok(total)
}

/// Counts segment bytes read against a total fixed up front and reports
/// [`Progress`]: `done` only ever grows and stops at the total.
pub(crate) struct Tracker<'a> {
    total: u64,
    /// Bytes of the segments begun so far, each counted whole.
    consumed: Cell<u64>,
    /// The last `done` reported.
    reported: Cell<Option<u64>>,
    report: &'a dyn Fn(Progress),
}

impl<'a> Tracker<'a> {
    pub(crate) fn new(total: u64, report: &'a dyn Fn(Progress)) -> Self {
        Self {
            total,
            consumed: Cell::new(0),
            reported: Cell::new(None),
            report,
        }
    }

    /// Reports `done` (at most the total) when it is past the last report.
    fn at(&self, done: u64) {
        let done = done.min(self.total);
        if self.reported.get().is_none_or(|r| done > r) {
            self.reported.set(Some(done));
            (self.report)(Progress {
                done,
                total: self.total,
            });
        }
    }

    /// Begins a segment of `len` bytes: the segments before it are done.
    /// Returns where it starts in the count.
    fn begin(&self, len: u64) -> u64 {
        let start = self.consumed.get();
        self.at(start);
        self.consumed.set(start + len);
        start
    }

    /// A segment of `len` bytes was read whole.
    pub(crate) fn add(&self, len: u64) {
        let start = self.begin(len);
        self.at(start + len);
    }

    /// The end: reports `done == total` (once).
    pub(crate) fn finish(&self) {
        self.at(self.total);
    }
}

/// See [`crate::dump`] and [`crate::dump_with_progress`].
pub(crate) fn dump(
    dir: &Path,
    stream: Option<&str>,
    f: &mut dyn FnMut(DumpRecord),
    progress: Option<&dyn Fn(Progress)>,
) -> Result<Vec<TornTail>> {
    let storage = read_only_fs();
    let names = dumped_streams(&storage, dir, stream)?;
    let tracker = match progress {
        Some(report) => Some(Tracker::new(segment_bytes(dir, stream)?, report)),
        None => None,
    };
    let streams_dir = dir.join("streams");
    let lock = dir.join("LOCK");
    let mut first_err = None;
    let mut torn = Vec::new();
    for name in &names {
        match dump_stream(
            &storage,
            &streams_dir.join(name),
            name,
            &lock,
            f,
            tracker.as_ref(),
        ) {
            Ok(t) => torn.extend(t),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => {
            if let Some(t) = &tracker {
                t.finish();
            }
            Ok(torn)
        }
    }
}

/// How long a record that does not decode, with valid records after it, in
/// the last segment of a live store is re-read before it counts as damage:
/// the owner may be writing it right now (a reader can see later pages of
/// a write before earlier ones). A write of a group takes well under this.
const IN_FLIGHT_WAIT: Duration = Duration::from_secs(2);

/// Pause between two re-reads of such a record.
const IN_FLIGHT_PAUSE: Duration = Duration::from_millis(2);

/// Whether a process holds the store's lock now (see
/// [`crate::storage::lock_holder`]); when that cannot be told, not live,
/// so the reports stay those of a store at rest.
fn is_live(lock: &Path) -> bool {
    crate::storage::lock_holder(lock).is_ok_and(|h| h.is_some())
}

fn tail(name: &str, segment: &str, offset: u64, bytes: u64, in_flight: bool) -> TornTail {
    TornTail {
        stream: name.to_owned(),
        segment: segment.to_owned(),
        offset,
        bytes,
        in_flight,
    }
}

/// Reads one stream's segments in order. The store may be live (another
/// process holds the lock and writes while this reads, docs/design.md
/// "Verifying a live store"): each segment is read up to the length it had
/// when opened; in the last one, a record that does not decode with only
/// zeros or nothing valid after it is the in-flight tail (the end of the
/// log, reported as such), one with valid records after it is re-read for
/// up to [`IN_FLIGHT_WAIT`] until it decodes (it was being written) or
/// stays bad (damage). A segment that vanished after the listing was
/// removed by retention. None of this applies to a store at rest, whose
/// torn tail is reported for the next open to cut.
fn dump_stream(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    lock: &Path,
    f: &mut dyn FnMut(DumpRecord),
    tracker: Option<&Tracker<'_>>,
) -> Result<Option<TornTail>> {
    let segments = segment_files(storage, dir)?;
    for (i, (base, path)) in segments.iter().enumerate() {
        let is_last = i + 1 == segments.len();
        let seg_name = segment::log_name(*base);
        let path = path.clone();
        let file = match storage.open(&path) {
            Ok(file) => file,
            // Retention removed it after the listing: nothing lost that
            // the stream still holds.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && is_live(lock) => continue,
            Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
        };
        // Read up to this length only: a live owner may append meanwhile.
        let len = file
            .len()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let counted_from = tracker.map(|t| t.begin(len));
        let mut h = [0u8; 16];
        let n = segment::read_full(&*file, &mut h, 0)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        match segment::check_header(&h[..n]) {
            HeaderCheck::Ok => {}
            HeaderCheck::Short if is_last => {
                // Being created by a live owner, or a crash while rolling.
                return Ok(Some(tail(name, &seg_name, 0, len, is_live(lock))));
            }
            other => {
                return Err(Error::corrupt(
                    path,
                    0,
                    format!("bad segment header: {other:?}"),
                ))
            }
        }
        let mut emit = |off: u64, r: &record::RecordRef<'_>| {
            if let (Some(t), Some(from)) = (tracker, counted_from) {
                t.at(from + off + r.size as u64);
            }
            let msg = r.kind == Kind::Message;
            f(DumpRecord {
                stream: name.to_owned(),
                segment: seg_name.clone(),
                offset: off,
                kind: r.kind.name(),
                seq: r.seq,
                time_ns: r.time,
                subject: (!r.subject.is_empty()).then(|| r.subject.to_owned()),
                headers: r
                    .header_map()
                    .iter()
                    .map(|(n, v)| (n.to_owned(), v.to_owned()))
                    .collect(),
                payload: if msg {
                    bytes::Bytes::copy_from_slice(r.payload)
                } else {
                    bytes::Bytes::new()
                },
            });
            Ok::<bool, Error>(true)
        };
        let mut from = SEGMENT_HEADER;
        // The bad record being re-read, and until when.
        let mut waiting: Option<(u64, Instant)> = None;
        loop {
            let end =
                segment::scan(&*file, from, len, &mut emit).map_err(|e| scan_error(&path, e))?;
            let ScanEnd::Bad { offset, reason, .. } = end else {
                break;
            };
            if !is_last {
                // Sealed (cut and fsynced) before its successor existed.
                return Err(Error::corrupt(path, offset, reason));
            }
            let mut rest = vec![0u8; (len - offset) as usize];
            segment::read_full(&*file, &mut rest, offset)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
            if segment::is_preallocated(&rest) {
                // Zeros written ahead of the records (or a live segment
                // cut to its records while this read): the log ends here.
                return Ok(None);
            }
            let live = is_live(lock);
            // Written whole since the scan read it: read on from there.
            let now_whole = live && matches!(record::decode(&rest), Decoded::Ok(_));
            if !now_whole && !segment::valid_record_after(&rest, 0) {
                if live {
                    // Being written: the bytes up to the zeros ahead.
                    let written = rest.iter().rposition(|b| *b != 0).map_or(0, |p| p + 1);
                    return Ok(Some(tail(name, &seg_name, offset, written as u64, true)));
                }
                // A torn tail ends the dump; the next open truncates it.
                return Ok(Some(tail(name, &seg_name, offset, len - offset, false)));
            }
            if live {
                let now = Instant::now();
                let deadline = match waiting {
                    Some((at, deadline)) if at == offset => deadline,
                    _ => now + IN_FLIGHT_WAIT,
                };
                if now < deadline {
                    // Perhaps half written: read it again (the records
                    // before it were reported already).
                    waiting = Some((offset, deadline));
                    from = offset;
                    if !now_whole {
                        std::thread::sleep(IN_FLIGHT_PAUSE);
                    }
                    continue;
                }
            }
            return Err(Error::corrupt(path, offset, reason));
        }
    }
    Ok(None)
}

/// See [`crate::check_files`].
pub(crate) fn check_files(dir: &Path, stream: &str) -> Result<Vec<FileProblem>> {
    let storage = read_only_fs();
    let sdir = dir.join("streams").join(stream);
    if !storage.is_dir(&sdir).unwrap_or(false) {
        return Err(Error::StreamNotFound {
            name: stream.to_owned(),
        });
    }
    let list = |d: &Path| -> Result<Vec<String>> {
        if !storage.exists(d).unwrap_or(false) {
            return Ok(Vec::new());
        }
        storage
            .list_dir(d)
            .map_err(|e| Error::io(format!("listing {}", d.display()), e))
    };
    // A file listed but gone when read: on a live store, removed meanwhile
    // (retention, a deleted consumer), so there is nothing to check.
    let lock = dir.join("LOCK");
    let vanished = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound && is_live(&lock);
    let read = |p: &Path| -> Result<Option<Vec<u8>>> {
        match storage.read_file(p) {
            Ok(b) => Ok(Some(b)),
            Err(e) if vanished(&e) => Ok(None),
            Err(e) => Err(Error::io(format!("reading {}", p.display()), e)),
        }
    };
    let mut out = Vec::new();
    let mut problem = |path: PathBuf, problem: String, fatal: bool| {
        out.push(FileProblem {
            path,
            problem,
            fatal,
        });
    };
    // The config: not derived; without it the stream does not open.
    if let Err(e) = crate::stream::recovery::read_config(&storage, &sdir, stream) {
        let path = sdir.join("config.json");
        let text = e.to_string();
        let text = text
            .split_once("; nothing was cut or repaired")
            .map_or(text.as_str(), |(t, _)| t)
            .to_owned();
        problem(
            path,
            format!("{text}; the stream does not open (the others do)"),
            true,
        );
    }
    // The manifest: the segments the stream holds (recovery rule 3a).
    let segdir = sdir.join("segments");
    let names = list(&segdir)?;
    let manifest_path = sdir.join(crate::manifest::MANIFEST_FILE);
    match crate::manifest::read(&storage, &sdir) {
        Err(reason) => problem(
            manifest_path,
            format!(
                "segment manifest is damaged ({reason}): the next open trusts the segment \
                 files and writes a new one, so a missing segment would go unnoticed"
            ),
            false,
        ),
        Ok(None) => {}
        Ok(Some(m)) => {
            let listed: Vec<u64> = m.bases().collect();
            for (i, &base) in listed.iter().enumerate() {
                let path = segdir.join(segment::log_name(base));
                let next = listed.get(i + 1).map_or(m.reserved, |n| n - 1);
                let written = m.sealed_size(base);
                let len = match storage.open(&path).and_then(|f| f.len()) {
                    Ok(len) => Some(len),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
                };
                // On a live store the owner may have dropped it meanwhile
                // (it rewrites the manifest first).
                let still_listed = || {
                    !is_live(&lock)
                        || crate::manifest::read(&storage, &sdir)
                            .ok()
                            .flatten()
                            .is_some_and(|m| m.bases().any(|b| b == base))
                };
                match (len, written) {
                    (None, _) if still_listed() => problem(
                        path,
                        format!(
                            "segment is missing: messages {base}..={next} are lost \
                             (the manifest lists it); repair records them as a gap"
                        ),
                        true,
                    ),
                    (Some(len), Some(w)) if len < w && still_listed() => problem(
                        path,
                        format!(
                            "segment is {len} bytes long but {w} were written: the messages \
                             after its last intact record (up to {next}) are lost; repair \
                             records them as a gap"
                        ),
                        true,
                    ),
                    _ => {}
                }
            }
        }
    }
    // Indexes of sealed segments: derived, rebuilt by the next open.
    for n in &names {
        let Some(base) = n
            .strip_suffix(".idx")
            .and_then(|b| segment::parse_log_name(&format!("{b}.log")))
        else {
            continue;
        };
        let path = segdir.join(n);
        let log = segdir.join(segment::log_name(base));
        let rebuilt = "; the next open rebuilds it";
        let Some(bytes) = read(&path)? else {
            continue;
        };
        let Some(entries) = segment::decode_index(&bytes) else {
            problem(path, format!("unreadable index{rebuilt}"), false);
            continue;
        };
        if !storage.exists(&log).unwrap_or(false) {
            problem(
                path,
                format!("index of a missing segment {}", log.display()),
                false,
            );
            continue;
        }
        let file = match storage.open(&log) {
            Ok(file) => file,
            Err(e) if vanished(&e) => continue,
            Err(e) => return Err(Error::io(format!("opening {}", log.display()), e)),
        };
        let file_len = file
            .len()
            .map_err(|e| Error::io(format!("reading {}", log.display()), e))?;
        let wrong = entries.iter().find(|e| {
            let mut len = [0u8; 4];
            let ok = segment::read_full(&*file, &mut len, e.offset).is_ok_and(|n| n == 4);
            let size = record::announced_size(&len).filter(|_| ok).unwrap_or(0);
            // Never more than the file holds, whatever the length field says.
            let room = usize::try_from(file_len.saturating_sub(e.offset)).unwrap_or(0);
            let mut rec = vec![0u8; size.min(room)];
            let full = segment::read_full(&*file, &mut rec, e.offset).is_ok_and(|n| n == rec.len());
            !(full
                && matches!(record::decode(&rec), Decoded::Ok(r) if r.seq == e.seq && r.time == e.time))
        });
        if let Some(e) = wrong {
            problem(
                path,
                format!(
                    "index entry for seq {} points at offset {} of {}, where no such record is{rebuilt}",
                    e.seq,
                    e.offset,
                    log.display()
                ),
                false,
            );
        }
    }
    // The checkpoint: derived too.
    let ckpt = sdir.join(crate::checkpoint::CHECKPOINT_FILE);
    if storage.exists(&ckpt).unwrap_or(false) {
        use crate::checkpoint::{Checkpoint, CHECKPOINT_VERSION};
        let bytes = read(&ckpt)?.unwrap_or_default();
        match Checkpoint::decode(&bytes) {
            None => {
                let what = match Checkpoint::frame(&bytes) {
                    Some((v, _)) if v < CHECKPOINT_VERSION => format!(
                        "checkpoint of an older format (version {v}); the next open scans the segments instead and writes a new one"
                    ),
                    _ => "unreadable checkpoint; the next open scans the segments instead"
                        .to_owned(),
                };
                problem(ckpt, what, false);
            }
            Some(c) if crate::stream::Subjects::from_ckpt(&c.subjects).is_none() => problem(
                ckpt,
                "checkpoint's subject table does not add up; the next open scans the segments instead"
                    .to_owned(),
                false,
            ),
            Some(_) => {}
        }
    }
    // Consumer state: not derived; the store refuses to open over damage.
    let cdir = sdir.join(crate::consumer::CONSUMERS_DIR);
    for n in list(&cdir)? {
        let path = cdir.join(&n);
        if n.ends_with(".tmp") {
            if is_live(&lock) {
                continue; // the owner replacing the file right now
            }
            problem(
                path,
                "an interrupted write; the next open removes it".into(),
                false,
            );
            continue;
        }
        let bytes = match read(&path) {
            Ok(Some(b)) => b,
            Ok(None) => continue,
            Err(e) => {
                problem(
                    path,
                    format!("{e}; this consumer does not load (the stream does)"),
                    true,
                );
                continue;
            }
        };
        match crate::consumer::ConsumerFile::decode(&bytes) {
            DecodedConsumer::Ok(f) if f.name == n => {
                // Its journal: entries up to the first that does not verify.
                let jpath = sdir.join(crate::consumer::JOURNALS_DIR).join(&n);
                let Ok(Some(j)) = read(&jpath) else {
                    continue;
                };
                let r = crate::consumer::decode_journal(&j);
                match r.gen {
                    None => problem(
                        jpath,
                        "consumer journal has no valid header; the next open starts a new one \
                         (changes since the state file was written are lost)"
                            .into(),
                        false,
                    ),
                    Some(g) if g > f.journal_gen => problem(
                        jpath,
                        format!(
                            "consumer journal generation {g} is newer than its state file's {}; \
                             this consumer does not load",
                            f.journal_gen
                        ),
                        true,
                    ),
                    Some(_) if r.end < j.len() as u64 && !is_live(&lock) => problem(
                        jpath,
                        format!(
                            "{} bytes after the last whole journal entry (a write cut off, or \
                             damage); the next open drops them",
                            j.len() as u64 - r.end
                        ),
                        false,
                    ),
                    Some(_) => {}
                }
            }
            DecodedConsumer::Ok(f) => problem(
                path,
                format!("consumer state file names consumer {:?}", f.name),
                true,
            ),
            DecodedConsumer::Newer(v) => problem(
                path,
                format!("consumer state written by a newer version (format {v})"),
                true,
            ),
            DecodedConsumer::Corrupt(r) => problem(path, format!("consumer state file: {r}"), true),
        }
    }
    Ok(out)
}
