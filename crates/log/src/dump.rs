//! `durabus dump`: every record of a data directory, read-only and without
//! the lock, so the log stays as inspectable as a text file.

use std::path::Path;

use durabus_core::{Error, Result};

use crate::record::Kind;
use crate::segment::{self, HeaderCheck, ScanEnd, SEGMENT_HEADER};
use crate::storage::{FsStorage, Storage};
use crate::stream::scan_error;
use crate::{DumpRecord, TornTail};

/// See [`crate::dump`].
pub(crate) fn dump(
    dir: &Path,
    stream: Option<&str>,
    f: &mut dyn FnMut(DumpRecord),
) -> Result<Vec<TornTail>> {
    let storage = FsStorage::new();
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
                return Err(Error::Corrupt {
                    segment: path,
                    offset: 0,
                    reason: format!("bad segment header: {other:?}"),
                })
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
            return Err(Error::Corrupt {
                segment: path,
                offset,
                reason,
            });
        }
    }
    Ok(None)
}
