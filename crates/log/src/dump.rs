//! `durabus dump`: every record of a data directory, read-only and without
//! the lock, so the log stays as inspectable as a text file.

use std::path::{Path, PathBuf};

use durabus_core::{Error, Result};

use crate::consumer::DecodedConsumer;
use crate::record::{self, Decoded, Kind};
use crate::segment::{self, HeaderCheck, ScanEnd, SEGMENT_HEADER};
use crate::storage::{FsStorage, ReadOnlyStorage, Storage};
use crate::stream::scan_error;
use crate::{DumpRecord, FileProblem, TornTail};

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

/// See [`crate::dump`].
pub(crate) fn dump(
    dir: &Path,
    stream: Option<&str>,
    f: &mut dyn FnMut(DumpRecord),
) -> Result<Vec<TornTail>> {
    let storage = read_only_fs();
    let streams_dir = dir.join("streams");
    let names: Vec<String> = storage
        .list_dir(&streams_dir)
        .map_err(|e| Error::io(format!("listing {}", streams_dir.display()), e))?
        .into_iter()
        .filter(|n| !n.starts_with('.') && storage.is_dir(&streams_dir.join(n)).unwrap_or(false))
        .collect();
    if let Some(s) = stream {
        if !names.iter().any(|n| n == s) {
            return Err(Error::StreamNotFound { name: s.to_owned() });
        }
    }
    let mut first_err = None;
    let mut torn = Vec::new();
    for name in names
        .iter()
        .filter(|n| stream.is_none_or(|s| s == n.as_str()))
    {
        match dump_stream(&storage, &streams_dir.join(name), name, f) {
            Ok(t) => torn.extend(t),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(torn),
    }
}

fn dump_stream(
    storage: &dyn Storage,
    dir: &Path,
    name: &str,
    f: &mut dyn FnMut(DumpRecord),
) -> Result<Option<TornTail>> {
    let segdir = dir.join("segments");
    let mut bases: Vec<u64> = storage
        .list_dir(&segdir)
        .map_err(|e| Error::io(format!("listing {}", segdir.display()), e))?
        .iter()
        .filter_map(|n| segment::parse_log_name(n))
        .collect();
    bases.sort_unstable();
    for (i, base) in bases.iter().enumerate() {
        let is_last = i + 1 == bases.len();
        let seg_name = segment::log_name(*base);
        let path = segdir.join(&seg_name);
        let file = storage
            .open(&path)
            .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
        let len = file
            .len()
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        let mut h = [0u8; 16];
        let n = segment::read_full(&*file, &mut h, 0)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        match segment::check_header(&h[..n]) {
            HeaderCheck::Ok => {}
            HeaderCheck::Short if is_last => {
                return Ok(Some(TornTail {
                    stream: name.to_owned(),
                    segment: seg_name,
                    offset: 0,
                    bytes: len,
                }))
            }
            other => {
                return Err(Error::corrupt(
                    path,
                    0,
                    format!("bad segment header: {other:?}"),
                ))
            }
        }
        let end = segment::scan(&*file, SEGMENT_HEADER, len, &mut |off, r| {
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
            Ok(true)
        })
        .map_err(|e| scan_error(&path, e))?;
        if let ScanEnd::Bad { offset, reason, .. } = end {
            if is_last {
                let mut rest = vec![0u8; (len - offset) as usize];
                segment::read_full(&*file, &mut rest, offset)
                    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
                if segment::is_preallocated(&rest) {
                    // Zeros written ahead of the records: the log ends here.
                    return Ok(None);
                }
                if !segment::valid_record_after(&rest, 0) {
                    // A torn tail ends the dump; the next open truncates it.
                    return Ok(Some(TornTail {
                        stream: name.to_owned(),
                        segment: seg_name,
                        offset,
                        bytes: len - offset,
                    }));
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
    let read = |p: &Path| -> Result<Vec<u8>> {
        storage
            .read_file(p)
            .map_err(|e| Error::io(format!("reading {}", p.display()), e))
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
    // Indexes of sealed segments: derived, rebuilt by the next open.
    let segdir = sdir.join("segments");
    let names = list(&segdir)?;
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
        let Some(entries) = segment::decode_index(&read(&path)?) else {
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
        let file = storage
            .open(&log)
            .map_err(|e| Error::io(format!("opening {}", log.display()), e))?;
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
    if storage.exists(&ckpt).unwrap_or(false)
        && crate::checkpoint::Checkpoint::decode(&read(&ckpt)?).is_none()
    {
        problem(
            ckpt,
            "unreadable checkpoint; the next open scans the segments instead".into(),
            false,
        );
    }
    // Consumer state: not derived; the store refuses to open over damage.
    let cdir = sdir.join(crate::consumer::CONSUMERS_DIR);
    for n in list(&cdir)? {
        let path = cdir.join(&n);
        if n.ends_with(".tmp") {
            problem(
                path,
                "an interrupted write; the next open removes it".into(),
                false,
            );
            continue;
        }
        let bytes = match read(&path) {
            Ok(b) => b,
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
            DecodedConsumer::Ok(f) if f.name == n => {}
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
